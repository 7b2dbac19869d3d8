//! WebSocket benchmark: reachd as a child process on the run's database holds N idle WebSocket
//! sessions opened by this process (100,000 by default); measured are the time to connect
//! them, the server's RSS per session, the time for one transition to reach 1,000 subscribers
//! while all are connected, and ping throughput with all connected against none.
//!
//! May depend on: the bench's shared helpers (`super`), reachd's public API, tokio, reqwest.

mod clients;

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::*;

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

/// What the socket scenario holds and measures.
pub struct SocketRun {
    pub sockets: usize,
    pub subscribers: usize,
    /// Sessions pinged round-robin for the ping throughput.
    pub ping_sessions: usize,
}

pub async fn bench_sockets(
    args: &Args,
    run: &Run,
    databases: &mut database::Databases,
    plan: SocketRun,
) -> anyhow::Result<()> {
    let SocketRun {
        sockets,
        subscribers,
        ping_sessions,
    } = plan;
    let limit = clients::raise_open_file_limit(sockets)?;
    let database = databases.fresh("sockets")?;
    let limits = [
        // The fan-out opens and closes one identity's session many times a second: above the
        // per-identity client write limit a real client would meet.
        ("REACHD_LIMITS__CLIENT_WRITE_BURST", "100000".to_string()),
        (
            "REACHD_LIMITS__CLIENT_WRITES_PER_SECOND",
            "100000".to_string(),
        ),
        // The sockets, the ping load's connections and the fan-out's client.
        (
            "REACHD_HTTP__MAX_CONNECTIONS",
            (sockets as u64 + clients::SPARE_DESCRIPTORS).to_string(),
        ),
    ];
    let child = child::Child::start(&database, &limits, run.scratch.join("reachd-sockets.log"))?;
    let base = child.base.clone();
    println!(
        "reachd-bench: reachd (pid {}) on {base}, open-file limit {limit}",
        child.pid()
    );
    let key = child.api_key()?;
    let ping = presence::ping_target(&base, &key, ping_sessions).await?;
    let service = service(&base, true).await?;
    let users = format!("/chat/v2/Services/{service}/Users");
    admin_post(&base, &users, &[("Identity", "target")]).await?;
    // No offline grace: each measured flip's offline half arrives at once.
    let settings = format!("/api/v1/services/{service}/settings");
    admin_post(&base, &settings, &[("offline_grace_ms", "0")]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!("ping throughput with no socket open:");
    let idle_pings = ping_rate(args, run, &ping).await;

    let before = rss_of(child.pid());
    let (arrived, mut arrivals) = unbounded_channel::<Instant>();
    let clients = clients::Sockets {
        base: &base,
        key: &key,
        service: &service,
        subscribers,
        arrived,
    };
    let started = Instant::now();
    let readers = clients.open(sockets).await?;
    let took = started.elapsed();
    println!(
        "{sockets} WebSocket sessions connected in {:.1} s ({:.0} per second)",
        took.as_secs_f64(),
        sockets as f64 / took.as_secs_f64()
    );
    // The opens' backlog (online events, the first flush of the new sessions) is committed
    // before anything is measured with the sockets open.
    let settled = settle(child.pid()).await;
    println!(
        "reachd settled {:.1} s after the last open",
        settled.as_secs_f64()
    );
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
        "one transition to {subscribers} subscribers with {sockets} sockets open (time until the last receives it, {ROUNDS} runs): p50 {:.1} ms, p99 {:.1} ms (target p99 ≤ 100 ms)",
        worst[worst.len() / 2] as f64 / 1000.0,
        worst[worst.len() * 99 / 100] as f64 / 1000.0
    );

    println!("ping throughput with {sockets} sockets open:");
    let busy_pings = ping_rate(args, run, &ping).await;
    print_ratio(
        (&format!("ping with {sockets} sockets"), busy_pings),
        ("ping with none", idle_pings),
        0.90,
    );
    let open = readers.iter().filter(|r| !r.is_finished()).count();
    println!("{open} of {sockets} sockets still open at the end");
    for reader in readers {
        reader.abort();
    }
    Ok(())
}

/// CPU time a process has used (user + system), in clock ticks (Linux).
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| load::stat_ticks(&s))
        .unwrap_or(0)
}

/// Waits (at most a minute) until `pid` uses under a tenth of a core over a second; returns
/// how long that took.
async fn settle(pid: u32) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let before = cpu_ticks(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        if cpu_ticks(pid).saturating_sub(before) < load::TICKS_PER_SECOND / 10 {
            break;
        }
    }
    started.elapsed()
}

/// The median ping rate over `args.rounds` rounds.
async fn ping_rate(args: &Args, run: &Run, ping: &load::Target) -> f64 {
    measure(args, run, std::slice::from_ref(ping)).await[0]
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
