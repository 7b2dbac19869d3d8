//! `reachd-bench`: measures reachd in-process against a baseline in the same run, so results
//! are ratios that survive noisy machines. Scenarios: `rest` (fetch a user by identity vs
//! `/healthz`).
//!
//! Run with `cargo run --release --bin reachd-bench -- rest`.

#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use reachd::app;
use reachd::config::{Config, Secret};

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
}

/// Results of one load run.
#[derive(Debug, Clone)]
struct Stats {
    requests: u64,
    errors: u64,
    per_second: f64,
    p50_us: u64,
    p99_us: u64,
}

/// Keeps `connections` keep-alive connections busy with `request` for `duration`.
async fn load(
    connections: usize,
    duration: Duration,
    request: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync>,
) -> Stats {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .http1_only()
                .build()
                .unwrap_or_default();
            let mut latencies = Vec::with_capacity(16_384);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match request(&client).send().await {
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
    let mut all = Vec::new();
    let mut errors = 0;
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

async fn bench_rest(args: &Args, base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{base}/chat/v2/Services"))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .form(&[("FriendlyName", "bench")])
        .send()
        .await?
        .json()
        .await?;
    let service = created["sid"].as_str().context("service sid")?.to_string();
    for i in 0..1000 {
        let identity = if i == 500 {
            "alice@example.com".to_string()
        } else {
            format!("user{i}")
        };
        http.post(format!("{base}/chat/v2/Services/{service}/Users"))
            .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
            .form(&[("Identity", identity.as_str())])
            .send()
            .await?
            .error_for_status()?;
    }
    let health_url = format!("{base}/healthz");
    let user_url = format!("{base}/chat/v2/Services/{service}/Users/alice@example.com");
    let health: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync> =
        Arc::new(move |c: &reqwest::Client| c.get(&health_url));
    let user: Arc<dyn Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync> =
        Arc::new(move |c: &reqwest::Client| {
            c.get(&user_url).basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        });
    let duration = Duration::from_secs_f64(args.seconds);
    let (mut base_rates, mut subject_rates) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        println!("round {round}:");
        let h = load(args.connections, duration, health.clone()).await;
        print_stats("GET /healthz", &h);
        let u = load(args.connections, duration, user.clone()).await;
        print_stats("GET user by identity", &u);
        base_rates.push(h.per_second);
        subject_rates.push(u.per_second);
    }
    let (b, s) = (median(base_rates), median(subject_rates));
    println!(
        "median: healthz {b:.0} req/s, user fetch {s:.0} req/s, ratio {:.2} (target ≥ 0.50)",
        s / b
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile_dir()?;
        let mut config = Config::load_from(None, Vec::new())?;
        config.database = dir.join("bench.db");
        config.account_sid = Some(ACCOUNT_SID.into());
        config.auth_token = Some(Secret::new(AUTH_TOKEN));
        config.log = "warn".into();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let running = app::start(config, listener).await?;
        let base = format!("http://{}", running.addr);
        println!(
            "reachd-bench: server on {base}, {} connections, {}s × {} rounds",
            args.connections, args.seconds, args.rounds
        );
        let result = match args.scenario {
            Scenario::Rest => bench_rest(&args, &base).await,
        };
        running.stop().await?;
        let _ = std::fs::remove_dir_all(&dir);
        result
    })
}

/// A fresh folder for the benchmark's database.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("reachd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
