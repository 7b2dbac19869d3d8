//! Webhook benchmark: sustained deliveries/s against a raw reqwest client posting the same
//! bodies (taken just before and just after reachd's burst; the ratio is against their mean),
//! where the CPU went during the burst, and transition-to-receipt latency at low load. reachd
//! runs as a child process, as in production: the receiver and the raw client share this
//! process's runtime, not the server's.
//!
//! May depend on: the bench's shared helpers (`super`), reachd's public API, tokio, reqwest.

use super::*;

/// A minimal HTTP receiver: answers 200 and counts requests, noting when each arrived.
async fn receiver(listener: tokio::net::TcpListener) -> Arc<std::sync::Mutex<Vec<Instant>>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shared = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16384];
                loop {
                    let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
                    else {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < head + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head + length);
                    if let Ok(mut a) = shared.lock() {
                        a.push(Instant::now());
                    }
                    if socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    arrivals
}

/// How many requests the receiver has answered so far.
fn received(arrivals: &std::sync::Mutex<Vec<Instant>>) -> usize {
    arrivals.lock().map(|a| a.len()).unwrap_or(0)
}

/// Deliveries/s of a raw reqwest client posting `count` small bodies to `url` with
/// `concurrency` tasks (a client each), counted at the receiver.
async fn raw_rate(
    arrivals: &std::sync::Mutex<Vec<Instant>>,
    url: &str,
    concurrency: usize,
    count: usize,
) -> f64 {
    let body: Arc<Vec<u8>> = Arc::new(
        br#"{"type":"user.added","timestamp":"2026-01-01T00:00:00.000Z","data":{"identity":"x"}}"#
            .to_vec(),
    );
    let before = received(arrivals);
    let started = Instant::now();
    let per_task = count.div_ceil(concurrency);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (url, body) = (url.to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for _ in 0..per_task {
                let _ = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.to_vec())
                    .send()
                    .await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (received(arrivals) - before) as f64 / started.elapsed().as_secs_f64()
}

/// What one webhook run measures.
pub struct WebhookRun {
    /// Deliveries due at once.
    pub deliveries: usize,
    /// The dispatcher's concurrency, and the raw client's.
    pub concurrency: usize,
    /// The ratio to reach.
    pub target: f64,
}

pub async fn bench_webhooks(
    run: &Run,
    databases: &mut database::Databases,
    plan: WebhookRun,
) -> anyhow::Result<()> {
    let WebhookRun {
        deliveries,
        concurrency,
        target,
    } = plan;
    let database = databases.fresh("webhooks")?;
    let env = [
        ("REACHD_WEBHOOKS__CONCURRENCY", concurrency.to_string()),
        // A failed first attempt waits an hour: phase 1 below parks every delivery.
        ("REACHD_WEBHOOKS__RETRY_SCHEDULE_SECS", "[3600]".to_string()),
    ];
    let child = child::Child::start(&database, &env, run.scratch.join("reachd-webhooks.log"))?;
    println!(
        "reachd-bench: reachd (pid {}) on {}",
        child.pid(),
        child.base
    );
    let base = child.base.as_str();
    let service = service(base, true).await?;
    // Phase 1: the endpoint's receiver is down; every delivery fails once and waits out its
    // backoff (schedule: 1 h).
    let closed_port = || -> anyhow::Result<u16> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        Ok(listener.local_addr()?.port())
    };
    let http = reqwest::Client::new();
    let endpoint: serde_json::Value = http
        .post(format!("{base}/api/v1/services/{service}/webhooks"))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .json(&serde_json::json!({
            "url": format!("http://127.0.0.1:{}/hook", closed_port()?),
            "event_types": ["user.added"],
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let endpoint = endpoint["id"].as_str().context("endpoint id")?.to_string();
    for i in 0..deliveries {
        admin_post(
            base,
            &format!("/chat/v2/Services/{service}/Users"),
            &[("Identity", format!("hook{i}").as_str())],
        )
        .await?;
    }
    while stats(base, &service).await?["deliveries"]["retrying"]
        .as_u64()
        .unwrap_or(0)
        < deliveries as u64
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Phase 2: the receiver comes up on a new URL; pointing the endpoint there makes every
    // waiting delivery due at once (and wakes the dispatcher). The raw client's baseline is
    // taken just before and just after, against the same receiver: the machine's speed drifts
    // within a run, and the mean of the two brackets reachd's phase.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let arrivals = receiver(listener).await;
    let baseline = deliveries.max(20_000);
    let raw_before = raw_rate(&arrivals, &url, concurrency, baseline).await;
    let first = received(&arrivals);
    let cpu_before = cpu::Snapshot::take(child.pid());
    let started = Instant::now();
    http.post(format!(
        "{base}/api/v1/services/{service}/webhooks/{endpoint}"
    ))
    .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
    .json(&serde_json::json!({"url": url}))
    .send()
    .await?
    .error_for_status()?;
    while received(&arrivals) < first + deliveries {
        tokio::time::sleep(Duration::from_millis(5)).await;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "deliveries stalled"
        );
    }
    let cpu_after = cpu::Snapshot::take(child.pid());
    // Sustained rate: first receipt to last.
    let reachd_rate = {
        let a = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let span = a[first + deliveries - 1]
            .duration_since(a[first])
            .as_secs_f64();
        (deliveries - 1) as f64 / span
    };
    let raw_after = raw_rate(&arrivals, &url, concurrency, baseline).await;
    let raw = (raw_before + raw_after) / 2.0;
    println!(
        "sustained deliveries: reachd {reachd_rate:.0}/s, raw reqwest {raw:.0}/s (before {raw_before:.0}, after {raw_after:.0}), ratio {:.2} (target ≥ {target:.2})",
        reachd_rate / raw
    );
    for line in cpu_after.report_since(&cpu_before, "reachd") {
        println!("  during reachd's deliveries: {line}");
    }

    // Latency at low load: a session opens (a transition), its webhook arrives.
    http.post(format!("{base}/api/v1/services/{service}/webhooks"))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .json(&serde_json::json!({"url": url, "event_types": ["user.reachability_updated"]}))
        .send()
        .await?
        .error_for_status()?;
    let key = child.api_key()?;
    let mut latencies = Vec::new();
    for i in 0..50 {
        let token = mint(&key, &service, &format!("latency{i}"))?;
        let count = received(&arrivals);
        let sent = Instant::now();
        http.post(format!("{base}/client/v1/sessions"))
            .bearer_auth(&token)
            .json(&serde_json::json!({}))
            .send()
            .await?
            .error_for_status()?;
        loop {
            let arrived = arrivals.lock().ok().and_then(|a| a.get(count).copied());
            if let Some(at) = arrived {
                latencies.push(at.duration_since(sent).as_micros() as u64);
                break;
            }
            anyhow::ensure!(
                sent.elapsed() < Duration::from_secs(10),
                "latency sample lost"
            );
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort_unstable();
    println!(
        "transition → receipt at low load: p50 {:.1} ms, p99 {:.1} ms (target p50 < 10 ms)",
        latencies[latencies.len() / 2] as f64 / 1000.0,
        latencies[latencies.len() * 99 / 100] as f64 / 1000.0
    );
    Ok(())
}
