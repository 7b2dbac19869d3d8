//! WebSocket benchmark: server RSS per idle session (reachd as a child process) and the time
//! for one transition to reach 1,000 subscribers.
//!
//! May depend on: the bench's shared helpers (`super`), reachd's public API, tokio, reqwest.

use super::*;

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

pub async fn bench_sockets(sockets: usize, subscribers: usize) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use std::io::BufRead;
    use tokio_tungstenite::tungstenite::Message;
    let dir = std::env::temp_dir().join(format!("reachd-bench-ws-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?.with_file_name("reachd");
    let env = [
        ("REACHD_LISTEN", "127.0.0.1:0".to_string()),
        (
            "REACHD_DATABASE",
            dir.join("bench.db").display().to_string(),
        ),
        ("REACHD_ACCOUNT_SID", ACCOUNT_SID.to_string()),
        ("REACHD_AUTH_TOKEN", AUTH_TOKEN.to_string()),
        ("REACHD_LOG", "warn".to_string()),
    ];
    let mut child = std::process::Command::new(&exe)
        .envs(env.iter().cloned())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("start reachd (build it with --release first)")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut addr = String::new();
    for line in std::io::BufReader::new(stdout).lines() {
        if let Some(a) = line?.strip_prefix("reachd listening on ") {
            addr = a.to_string();
            break;
        }
    }
    let base = format!("http://{addr}");
    let result = async {
        let service = service(&base, true).await?;
        let keys = std::process::Command::new(&exe).envs(env.iter().cloned()).args(["keys", "create"]).output()?;
        let key: serde_json::Value = serde_json::from_slice(&keys.stdout)?;
        let key = ApiKey { sid: key["sid"].as_str().unwrap_or_default().into(), friendly_name: None, secret: key["secret"].as_str().unwrap_or_default().into(), date_created: 0 };
                admin_post(&base, &format!("/chat/v2/Services/{service}/Users"), &[("Identity", "target")]).await?;
        // No offline grace: each measured flip's offline half arrives at once.
        admin_post(&base, &format!("/api/v1/services/{service}/settings"), &[("offline_grace_ms", "0")]).await?;
        let ws_base = base.replace("http://", "ws://");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_of(child.id());
        let (arrivals_tx, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let mut tasks = Vec::new();
        for chunk in 0..sockets.div_ceil(250) {
            let mut opening = Vec::new();
            for i in chunk * 250..((chunk + 1) * 250).min(sockets) {
                let url = format!("{ws_base}/client/v1/socket?token={}", mint(&key, &service, &format!("ws{i}"))?);
                opening.push(tokio::spawn(async move { tokio_tungstenite::connect_async(url).await.map(|(ws, _)| ws) }));
            }
            for (offset, handle) in opening.into_iter().enumerate() {
                let mut ws = handle.await??;
                let _ready = ws.next().await;
                let subscriber = chunk * 250 + offset < subscribers;
                if subscriber {
                    ws.send(Message::Text(serde_json::json!({"type": "subscribe", "identities": ["target"]}).to_string().into())).await?;
                    let _snapshot = ws.next().await;
                }
                let tx = arrivals_tx.clone();
                tasks.push(tokio::spawn(async move {
                    while let Some(Ok(message)) = ws.next().await {
                                                if let Message::Text(t) = message
                            && t.contains("userUpdated")
                        {
                            let _ = tx.send(Instant::now());
                        }
                    }
                }));
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_of(child.id());
        let per = after.saturating_sub(before) as f64 / sockets as f64;
        println!("{sockets} idle WebSocket sessions: server RSS +{:.1} MiB = {:.1} KB per session (target ≤ 20 KB)", after.saturating_sub(before) as f64 / 1_048_576.0, per / 1000.0);

                let target = mint(&key, &service, "target")?;
        let http = reqwest::Client::new();
        let mut worst = Vec::new();
        let fan_out = async {
        for _ in 0..30 {
                        let sent = Instant::now();
            let opened: serde_json::Value = tokio::time::timeout(
                Duration::from_secs(10),
                http.post(format!("{base}/client/v1/sessions")).bearer_auth(&target).json(&serde_json::json!({})).send(),
            )
            .await
            .context("opening the target's session timed out")??
            .json()
            .await?;
            let mut last = sent;
            for _ in 0..subscribers {
                let at = tokio::time::timeout(Duration::from_secs(10), arrivals.recv()).await?.context("arrival")?;
                last = last.max(at);
            }
            worst.push(last.duration_since(sent).as_micros() as u64);
            let id = opened["session_id"].as_str().unwrap_or_default();
            http.delete(format!("{base}/client/v1/sessions/{id}")).bearer_auth(&target).send().await?;
                        for _ in 0..subscribers {
                tokio::time::timeout(Duration::from_secs(10), arrivals.recv()).await?.context("arrival")?;
            }
        }
        anyhow::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(120), fan_out).await.context("the fan-out measurement did not finish")??;
        worst.sort_unstable();
        println!(
            "one transition to {subscribers} subscribers (time until the last receives it, 30 runs): p50 {:.1} ms, p99 {:.1} ms (target p99 ≤ 100 ms)",
            worst[worst.len() / 2] as f64 / 1000.0,
            worst[worst.len() * 99 / 100] as f64 / 1000.0
        );
        for t in tasks {
            t.abort();
        }
        anyhow::Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
