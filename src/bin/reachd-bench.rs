//! `reachd-bench`: measures reachd in-process against a baseline in the same run, so results
//! are ratios that survive noisy machines.
//!
//! Scenarios: `rest` (fetch a user by identity vs `/healthz`), `ping` (session pings vs
//! `/healthz`), `memory` (engine bytes per session), `burst` (N sessions opened at once, time
//! until all are committed online).
//!
//! Run with `cargo run --release --bin reachd-bench -- <scenario>`.

#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use reachd::app;
use reachd::config::{Config, Secret};
use reachd::domain::account::ApiKey;

const ACCOUNT_SID: &str = "ACbe0c4bebe0c4bebe0c4bebe0c4bebe0c";
const AUTH_TOKEN: &str = "bench-token";

#[derive(Parser)]
#[command(about = "reachd benchmarks (ratios against a baseline in the same run)")]
struct Args {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds per measurement round.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Rounds (baseline and subject alternate; medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// GET a Chat v2 user by identity vs GET /healthz.
    Rest,
    /// POST /client/v1/sessions/{id}/ping vs GET /healthz.
    Ping {
        /// Open sessions, pinged round-robin.
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
    },
    /// RSS cost per session in the presence engine.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        sessions: usize,
    },
    /// Open N sessions as fast as the connections allow; time until all are committed online.
    Burst {
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
    },
    /// Server RSS per idle WebSocket session (reachd runs as a child process), and the time
    /// for one transition to reach 1,000 subscribers.
    Sockets {
        #[arg(long, default_value_t = 10_000)]
        sockets: usize,
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
    },
    /// Webhook deliveries/s vs a raw reqwest client posting the same bodies, and latency from
    /// a transition to its receipt at low load.
    Webhooks {
        #[arg(long, default_value_t = 5_000)]
        deliveries: usize,
        /// Dispatcher concurrency, and the raw client's.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
}

/// Builds the request a worker sends on its `iteration`-th turn.
type RequestFn = Arc<dyn Fn(&reqwest::Client, usize, u64) -> reqwest::RequestBuilder + Send + Sync>;

/// Results of one load run.
#[derive(Debug, Clone)]
struct Stats {
    requests: u64,
    errors: u64,
    per_second: f64,
    p50_us: u64,
    p99_us: u64,
}

fn keep_alive_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .http1_only()
        .build()
        .unwrap_or_default()
}

/// Keeps `connections` keep-alive connections busy with `request` for `duration`.
async fn load(connections: usize, duration: Duration, request: RequestFn) -> Stats {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(connections);
    for worker in 0..connections {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let client = keep_alive_client();
            let mut latencies = Vec::with_capacity(16_384);
            let (mut errors, mut iteration) = (0u64, 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                iteration += 1;
                match request(&client, worker, iteration).send().await {
                    Ok(res) if res.status().is_success() => {
                        let _ = res.bytes().await;
                        latencies.push(t.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        if let Ok((latencies, e)) = task.await {
            all.extend(latencies);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Stats {
        requests: all.len() as u64,
        errors,
        per_second: all.len() as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn print_stats(name: &str, s: &Stats) {
    println!(
        "  {name:<28} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  ({} requests, {} errors)",
        s.per_second, s.p50_us, s.p99_us, s.requests, s.errors
    );
}

/// Alternates `/healthz` and `subject` for `args.rounds` rounds and prints the median ratio.
async fn compare(args: &Args, base: &str, name: &str, subject: RequestFn, target: f64) {
    let health_url = format!("{base}/healthz");
    let health: RequestFn = Arc::new(move |c: &reqwest::Client, _, _| c.get(&health_url));
    let duration = Duration::from_secs_f64(args.seconds);
    let (mut base_rates, mut subject_rates) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        println!("round {round}:");
        let h = load(args.connections, duration, health.clone()).await;
        print_stats("GET /healthz", &h);
        let u = load(args.connections, duration, subject.clone()).await;
        print_stats(name, &u);
        base_rates.push(h.per_second);
        subject_rates.push(u.per_second);
    }
    let (b, s) = (median(base_rates), median(subject_rates));
    println!(
        "median: healthz {b:.0} req/s, {name} {s:.0} req/s, ratio {:.2} (target ≥ {target:.2})",
        s / b
    );
}

async fn admin_post(
    base: &str,
    path: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<serde_json::Value> {
    Ok(reqwest::Client::new()
        .post(format!("{base}{path}"))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .form(form)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// A new service (reachability enabled when asked) and its SID.
async fn service(base: &str, reachability: bool) -> anyhow::Result<String> {
    let created = admin_post(base, "/chat/v2/Services", &[("FriendlyName", "bench")]).await?;
    let sid = created["sid"].as_str().context("service sid")?.to_string();
    if reachability {
        admin_post(
            base,
            &format!("/chat/v2/Services/{sid}"),
            &[("ReachabilityEnabled", "true")],
        )
        .await?;
    }
    Ok(sid)
}

fn api_key(db: &Path) -> anyhow::Result<ApiKey> {
    let conn = reachd::db::open::open_connection(db, Duration::from_secs(5))?;
    Ok(reachd::db::keys::create(&conn, Some("bench"))?)
}

fn mint(key: &ApiKey, service: &str, identity: &str) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    reachd::tokens::mint(
        ACCOUNT_SID,
        &key.sid,
        &key.secret,
        service,
        identity,
        3600,
        None,
        now,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

async fn bench_rest(args: &Args, base: &str) -> anyhow::Result<()> {
    let service = service(base, false).await?;
    for i in 0..1000 {
        let identity = if i == 500 {
            "alice@example.com".to_string()
        } else {
            format!("user{i}")
        };
        admin_post(
            base,
            &format!("/chat/v2/Services/{service}/Users"),
            &[("Identity", identity.as_str())],
        )
        .await?;
    }
    let user_url = format!("{base}/chat/v2/Services/{service}/Users/alice@example.com");
    let user: RequestFn = Arc::new(move |c: &reqwest::Client, _, _| {
        c.get(&user_url).basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
    });
    compare(args, base, "GET user by identity", user, 0.50).await;
    Ok(())
}

async fn bench_ping(args: &Args, base: &str, db: &Path, sessions: usize) -> anyhow::Result<()> {
    let service = service(base, true).await?;
    let key = api_key(db)?;
    let http = reqwest::Client::new();
    let mut targets = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let token = mint(&key, &service, &format!("user{i}"))?;
        let opened: serde_json::Value = http
            .post(format!("{base}/client/v1/sessions"))
            .bearer_auth(&token)
            .json(&serde_json::json!({}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = opened["session_id"]
            .as_str()
            .context("session id")?
            .to_string();
        targets.push((format!("{base}/client/v1/sessions/{id}/ping"), token));
    }
    let targets = Arc::new(targets);
    let connections = args.connections;
    let ping: RequestFn = Arc::new(move |c: &reqwest::Client, worker, i| {
        let (url, token) = &targets[(worker + connections * i as usize) % targets.len()];
        c.post(url).bearer_auth(token)
    });
    compare(args, base, "POST session ping", ping, 0.70).await;
    Ok(())
}

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn bench_memory(sessions: usize) {
    use reachd::domain::presence::{ServicePresence, Transport};
    use reachd::presence::engine::{Engine, Now};
    let service = "IS00000000000000000000000000000001";
    let presence = ServicePresence {
        reachability_enabled: true,
        ping_interval_ms: 20_000,
        session_ttl_ms: 60_000,
        offline_grace_ms: 3_000,
    };
    let identities: Vec<String> = (0..sessions)
        .map(|i| format!("user-{i:07}@example.com"))
        .collect();
    let mut engine = Engine::new();
    engine.configure(Now { mono: 0, wall: 0 }, service, presence);
    let before = rss_bytes();
    for (i, identity) in identities.iter().enumerate() {
        let now = Now {
            mono: i as u64,
            wall: i as i64,
        };
        let _ = engine.open(
            now,
            service,
            identity,
            Transport::WebSocket,
            None,
            None,
            i as u64 + 1,
        );
    }
    let after = rss_bytes();
    let delta = after.saturating_sub(before);
    println!(
        "{} sessions, one user each (24-byte identities): RSS +{:.1} MiB = {:.0} bytes per session (target ≤ 300)",
        engine.session_count(),
        delta as f64 / 1_048_576.0,
        delta as f64 / sessions as f64
    );
}

async fn bench_burst(args: &Args, base: &str, db: &Path, sessions: usize) -> anyhow::Result<()> {
    let service = service(base, true).await?;
    let key = api_key(db)?;
    let tokens: Vec<String> = (0..sessions)
        .map(|i| mint(&key, &service, &format!("burst{i}")))
        .collect::<anyhow::Result<_>>()?;
    let tokens = Arc::new(tokens);
    let per_worker = sessions.div_ceil(args.connections);
    let url = format!("{base}/client/v1/sessions");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.connections {
        let (tokens, url) = (tokens.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let client = keep_alive_client();
            let mut ok = 0usize;
            for token in tokens.iter().skip(worker * per_worker).take(per_worker) {
                if let Ok(res) = client
                    .post(&url)
                    .bearer_auth(token)
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                {
                    ok += usize::from(res.status().as_u16() == 201);
                }
            }
            ok
        }));
    }
    let mut opened = 0;
    for task in tasks {
        opened += task.await.unwrap_or(0);
    }
    let issued = started.elapsed();
    let conn = rusqlite::Connection::open(db)?;
    let online = loop {
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM users WHERE service_sid = ?1 AND is_online = 1",
            [&service],
            |r| r.get(0),
        )?;
        if n as usize >= sessions || started.elapsed() > Duration::from_secs(30) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "{opened}/{sessions} opens answered in {:.2} s ({:.0}/s, each after its commit); {online} users committed online after {:.2} s",
        issued.as_secs_f64(),
        opened as f64 / issued.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

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

async fn bench_webhooks(
    base: &str,
    db: &Path,
    deliveries: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let service = service(base, true).await?;
    // Phase 1: the receiver is down; every delivery fails once and waits (schedule: 1 h).
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}/hook");
    let http = reqwest::Client::new();
    http.post(format!("{base}/api/v1/services/{service}/webhooks"))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .json(&serde_json::json!({"url": url, "event_types": ["user.added"]}))
        .send()
        .await?
        .error_for_status()?;
    for i in 0..deliveries {
        admin_post(
            base,
            &format!("/chat/v2/Services/{service}/Users"),
            &[("Identity", format!("hook{i}").as_str())],
        )
        .await?;
    }
    let conn = rusqlite::Connection::open(db)?;
    let attempted = || -> anyhow::Result<i64> {
        Ok(conn.query_row(
            "SELECT count(*) FROM deliveries WHERE attempts > 0",
            [],
            |r| r.get(0),
        )?)
    };
    while (attempted()? as usize) < deliveries {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Phase 2: the receiver comes up and every delivery is due at once.
    let arrivals = receiver(tokio::net::TcpListener::bind(("127.0.0.1", port)).await?).await;
    let started = Instant::now();
    conn.execute(
        "UPDATE deliveries SET next_attempt_at = 0 WHERE status = 'pending'",
        [],
    )?;
    while arrivals.lock().map(|a| a.len()).unwrap_or(0) < deliveries {
        tokio::time::sleep(Duration::from_millis(5)).await;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "deliveries stalled"
        );
    }
    // Sustained rate: first receipt to last (the direct database update above wakes nothing,
    // so the dispatcher notices it at its next idle check, up to a second later).
    let reachd_rate = {
        let a = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let span = a[deliveries - 1].duration_since(a[0]).as_secs_f64();
        (deliveries - 1) as f64 / span
    };

    // Baseline: a raw reqwest client posting the same bodies with the same concurrency.
    let deliveries = deliveries.max(20_000);
    let body: Arc<Vec<u8>> = Arc::new(
        br#"{"type":"user.added","timestamp":"2026-01-01T00:00:00.000Z","data":{"identity":"x"}}"#
            .to_vec(),
    );
    let before = arrivals.lock().map(|a| a.len()).unwrap_or(0);
    let started = Instant::now();
    let per_task = deliveries.div_ceil(concurrency);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (url, body) = (url.clone(), body.clone());
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
    let raw = (arrivals.lock().map(|a| a.len()).unwrap_or(0) - before) as f64
        / started.elapsed().as_secs_f64();
    println!(
        "sustained deliveries: reachd {reachd_rate:.0}/s, raw reqwest {raw:.0}/s, ratio {:.2} (target ≥ 0.25)",
        reachd_rate / raw
    );

    // Latency at low load: a session opens (a transition), its webhook arrives.
    http.post(format!("{base}/api/v1/services/{service}/webhooks"))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .json(&serde_json::json!({"url": url, "event_types": ["user.reachability_updated"]}))
        .send()
        .await?
        .error_for_status()?;
    let key = api_key(db)?;
    let mut latencies = Vec::new();
    for i in 0..50 {
        let token = mint(&key, &service, &format!("latency{i}"))?;
        let count = arrivals.lock().map(|a| a.len()).unwrap_or(0);
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

/// Resident set size of another process, in bytes (Linux).
fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

async fn bench_sockets(sockets: usize, subscribers: usize) -> anyhow::Result<()> {
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Scenario::Sockets {
        sockets,
        subscribers,
    } = args.scenario
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(bench_sockets(sockets, subscribers));
    }
    if let Scenario::Memory { sessions } = args.scenario {
        bench_memory(sessions);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("reachd-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let db = dir.join("bench.db");
        let mut config = Config::load_from(None, Vec::new())?;
        config.database = db.clone();
        config.account_sid = Some(ACCOUNT_SID.into());
        config.auth_token = Some(Secret::new(AUTH_TOKEN));
        config.log = "warn".into();
        config.webhooks.retry_schedule_secs = vec![3_600];
        if let Scenario::Webhooks { concurrency, .. } = args.scenario {
            config.webhooks.concurrency = concurrency;
        }
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let running = app::start(config, listener).await?;
        let base = format!("http://{}", running.addr);
        println!(
            "reachd-bench: server on {base}, {} connections, {}s × {} rounds",
            args.connections, args.seconds, args.rounds
        );
        let result = match args.scenario {
            Scenario::Rest => bench_rest(&args, &base).await,
            Scenario::Ping { sessions } => bench_ping(&args, &base, &db, sessions).await,
            Scenario::Burst { sessions } => {
                let stats = running.writer_stats.clone();
                let (tx0, jobs0) = (stats.transactions.load(Relaxed), stats.jobs.load(Relaxed));
                let result = bench_burst(&args, &base, &db, sessions).await;
                let (tx, jobs) = (
                    stats.transactions.load(Relaxed) - tx0,
                    stats.jobs.load(Relaxed) - jobs0,
                );
                println!(
                    "writer: {jobs} jobs in {tx} transactions ({:.1} jobs per commit)",
                    jobs as f64 / tx.max(1) as f64
                );
                result
            }
            Scenario::Webhooks {
                deliveries,
                concurrency,
            } => bench_webhooks(&base, &db, deliveries, concurrency).await,
            Scenario::Memory { .. } | Scenario::Sockets { .. } => Ok(()),
        };
        running.stop().await?;
        let _ = std::fs::remove_dir_all(&dir);
        result
    })
}
