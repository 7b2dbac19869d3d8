//! WebSocket benchmark: server RSS per idle session (reachd as a child process, on the run's
//! database) and the time for one transition to reach 1,000 subscribers.
//!
//! May depend on: the bench's shared helpers (`super`), reachd's public API, tokio, reqwest.

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// Sockets opened at once, then awaited, per round.
const OPEN_AT_ONCE: usize = 250;
/// Measured fan-out rounds (one online and one offline transition each).
const ROUNDS: usize = 30;
/// The longest any single step may take before the bench gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Resident set size of a process, in bytes (Linux).
pub fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

pub async fn bench_sockets(
    databases: &mut database::Databases,
    scratch: &std::path::Path,
    sockets: usize,
    subscribers: usize,
) -> anyhow::Result<()> {
    let database = databases.fresh("sockets")?;
    // The fan-out opens and closes one identity's session many times a second: above the
    // per-identity client write limit a real client would meet.
    let limits = [
        ("REACHD_LIMITS__CLIENT_WRITE_BURST", "100000".to_string()),
        (
            "REACHD_LIMITS__CLIENT_WRITES_PER_SECOND",
            "100000".to_string(),
        ),
    ];
    let child = child::Child::start(&database, &limits, scratch.join("reachd-sockets.log"))?;
    let base = child.base.clone();
    let service = service(&base, true).await?;
    let key = child.api_key()?;
    let users = format!("/chat/v2/Services/{service}/Users");
    admin_post(&base, &users, &[("Identity", "target")]).await?;
    // No offline grace: each measured flip's offline half arrives at once.
    let settings = format!("/api/v1/services/{service}/settings");
    admin_post(&base, &settings, &[("offline_grace_ms", "0")]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = rss_of(child.pid());
    let (arrived, mut arrivals) = unbounded_channel::<Instant>();
    let readers = open_idle_sockets(&base, &key, &service, sockets, subscribers, arrived).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = rss_of(child.pid()).saturating_sub(before);
    println!(
        "{sockets} idle WebSocket sessions: server RSS +{:.1} MiB = {:.1} KB per session (target ≤ 20 KB)",
        grown as f64 / 1_048_576.0,
        grown as f64 / sockets as f64 / 1000.0
    );

    let target = mint(&key, &service, "target")?;
    let fan_out = measure_fan_out(&base, &target, subscribers, &mut arrivals);
    let mut worst = tokio::time::timeout(Duration::from_secs(120), fan_out)
        .await
        .context("the fan-out measurement did not finish")??;
    worst.sort_unstable();
    println!(
        "one transition to {subscribers} subscribers (time until the last receives it, {ROUNDS} runs): p50 {:.1} ms, p99 {:.1} ms (target p99 ≤ 100 ms)",
        worst[worst.len() / 2] as f64 / 1000.0,
        worst[worst.len() * 99 / 100] as f64 / 1000.0
    );
    for reader in readers {
        reader.abort();
    }
    Ok(())
}

/// Opens `sockets` sockets (`OPEN_AT_ONCE` at a time), the first `subscribers` of them
/// subscribed to "target"; each socket's reader reports when a `userUpdated` arrives.
async fn open_idle_sockets(
    base: &str,
    key: &ApiKey,
    service: &str,
    sockets: usize,
    subscribers: usize,
    arrived: UnboundedSender<Instant>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let ws_base = base.replace("http://", "ws://");
    let mut readers = Vec::with_capacity(sockets);
    for first in (0..sockets).step_by(OPEN_AT_ONCE) {
        let mut opening = Vec::new();
        for i in first..(first + OPEN_AT_ONCE).min(sockets) {
            let token = mint(key, service, &format!("ws{i}"))?;
            let url = format!("{ws_base}/client/v1/socket?token={token}");
            opening.push((
                i,
                tokio::spawn(async move {
                    tokio_tungstenite::connect_async(url)
                        .await
                        .map(|(ws, _)| ws)
                }),
            ));
        }
        for (i, handle) in opening {
            let mut ws = handle.await??;
            let _ready = ws.next().await;
            if i < subscribers {
                let subscribe = serde_json::json!({"type": "subscribe", "identities": ["target"]});
                ws.send(Message::Text(subscribe.to_string().into())).await?;
                let _snapshot = ws.next().await;
            }
            let arrived = arrived.clone();
            readers.push(tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Text(text) = message
                        && text.contains("userUpdated")
                    {
                        let _ = arrived.send(Instant::now());
                    }
                }
            }));
        }
    }
    Ok(readers)
}

/// `ROUNDS` times: opens the target's session (online) and closes it (offline); returns, per
/// round, the microseconds from the open request until the last subscriber had the update.
async fn measure_fan_out(
    base: &str,
    target: &str,
    subscribers: usize,
    arrivals: &mut UnboundedReceiver<Instant>,
) -> anyhow::Result<Vec<u64>> {
    let http = reqwest::Client::new();
    let mut worst = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let sent = Instant::now();
        let open = http
            .post(format!("{base}/client/v1/sessions"))
            .bearer_auth(target)
            .json(&serde_json::json!({}))
            .send();
        let opened: serde_json::Value = tokio::time::timeout(STEP_TIMEOUT, open)
            .await
            .context("opening the target's session timed out")??
            .error_for_status()?
            .json()
            .await?;
        let last = last_arrival(arrivals, subscribers).await?.max(sent);
        worst.push(last.duration_since(sent).as_micros() as u64);
        let id = opened["session_id"].as_str().unwrap_or_default();
        http.delete(format!("{base}/client/v1/sessions/{id}"))
            .bearer_auth(target)
            .send()
            .await?;
        last_arrival(arrivals, subscribers).await?;
    }
    Ok(worst)
}

/// Waits for `count` arrivals and returns the latest.
async fn last_arrival(
    arrivals: &mut UnboundedReceiver<Instant>,
    count: usize,
) -> anyhow::Result<Instant> {
    let mut last = None;
    for _ in 0..count {
        let at = tokio::time::timeout(STEP_TIMEOUT, arrivals.recv())
            .await?
            .context("arrival")?;
        last = Some(last.map_or(at, |l: Instant| l.max(at)));
    }
    last.context("no subscribers")
}
