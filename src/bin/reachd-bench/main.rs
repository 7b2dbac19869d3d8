//! `reachd-bench`: measures reachd in-process against a baseline in the same run, so results
//! are ratios that survive noisy machines.
//!
//! Scenarios: `rest` (fetch a user by identity vs `/healthz`), `ping` (session pings vs
//! `/healthz`), `memory` (engine bytes per session), `burst` (N sessions opened at once, time
//! until all are committed online).
//!
//! Run with `cargo run --release --bin reachd-bench -- <scenario>`.

#![forbid(unsafe_code)]

mod presence;
mod sockets;
mod webhooks;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use reachd::app;
use reachd::config::{Config, Secret};
use reachd::domain::account::ApiKey;

const ACCOUNT_SID: &str = "ACbe0c4bebe0c4bebe0c4bebe0c4bebe0c";
const AUTH_TOKEN: &str = "bench-token-0123456789abcdef0123";

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

/// A fresh API key, made the way an operator makes one (`reachd keys create`): through the
/// configured backend's maintenance port, beside the running server.
fn api_key(config: &Config) -> anyhow::Result<ApiKey> {
    let admin = app::open_admin(config, app::AdminOpening::Existing)?;
    Ok(admin.create_api_key(Some("bench"))?)
}

async fn admin_get(base: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    Ok(reqwest::Client::new()
        .get(format!("{base}{path}"))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// A service's stored counts (`GET /api/v1/services/{sid}/stats`).
async fn stats(base: &str, service: &str) -> anyhow::Result<serde_json::Value> {
    admin_get(base, &format!("/api/v1/services/{service}/stats")).await
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
        return runtime.block_on(sockets::bench_sockets(sockets, subscribers));
    }
    if let Scenario::Memory { sessions } = args.scenario {
        presence::bench_memory(sessions);
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
        let running = app::start(config.clone(), listener).await?;
        let base = format!("http://{}", running.addr);
        println!(
            "reachd-bench: server on {base}, {} connections, {}s × {} rounds",
            args.connections, args.seconds, args.rounds
        );
        let result = match args.scenario {
            Scenario::Rest => bench_rest(&args, &base).await,
            Scenario::Ping { sessions } => {
                presence::bench_ping(&args, &base, &config, sessions).await
            }
            Scenario::Burst { sessions } => {
                let stats = running.writer_stats.clone();
                let (tx0, jobs0) = (stats.transactions.load(Relaxed), stats.jobs.load(Relaxed));
                let result = presence::bench_burst(&args, &base, &config, sessions).await;
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
            } => webhooks::bench_webhooks(&base, &config, deliveries, concurrency).await,
            Scenario::Memory { .. } | Scenario::Sockets { .. } => Ok(()),
        };
        running.stop().await?;
        let _ = std::fs::remove_dir_all(&dir);
        result
    })
}
