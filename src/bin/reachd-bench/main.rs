//! `reachd-bench`: measures reachd in-process against a baseline in the same run, so results
//! are ratios that survive noisy machines.
//!
//! Scenarios: `rest` (fetch a user by identity vs `/healthz`), `ping` (session pings vs
//! `/healthz`), `http` (a bare actix-web hello server, `/healthz`, the user fetch and pings in
//! one run), `ping-backends` (pings on PostgreSQL vs the same build on SQLite), `memory`
//! (engine bytes per session), `burst` (N sessions opened at once, time until all are
//! committed online), `sockets`, `webhooks`, `node-loss` (two nodes on PostgreSQL, one killed
//! with SIGKILL: time until its users are offline).
//!
//! HTTP load comes from `wrk` when it is installed (`--client`), with the Lua scripts in
//! `bench/`. `--database` picks the storage: a scratch SQLite file (default), a PostgreSQL the
//! bench starts itself (`postgres`), or a server given by URL.
//!
//! Run with `cargo run --release --bin reachd-bench -- [options] <scenario>`.
//!
//! May depend on: reachd's public API, actix-web (the hello server), tokio, reqwest, clap.

#![forbid(unsafe_code)]

mod child;
mod cluster;
mod cpu;
mod database;
mod hello;
mod load;
mod outbox;
mod presence;
mod sockets;
mod webhooks;

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
    /// HTTP load generator.
    #[arg(long, value_enum, default_value_t = load::Client::Auto)]
    client: load::Client,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    wrk_threads: usize,
    /// Storage: `sqlite` (a scratch file), `postgres` (start a scratch PostgreSQL with
    /// tests/support/postgres.sh) or a postgres:// URL of a server to create databases on.
    #[arg(long, default_value = "sqlite")]
    database: database::Choice,
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
    /// In one run: a bare actix-web hello server, GET /healthz, the user fetch and session
    /// pings (hello vs healthz, user fetch vs healthz, ping vs healthz).
    Http {
        /// Open sessions, pinged round-robin.
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
    },
    /// Session pings on PostgreSQL vs the same build on SQLite, two servers in one run (on
    /// `--database`'s PostgreSQL, or one the bench starts).
    PingBackends {
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
    },
    /// Two nodes (child processes) on one PostgreSQL database: N users online on node A,
    /// A killed with SIGKILL, per-user time until the offline (`node_lost`) event is in the
    /// feed read through node B.
    NodeLoss {
        #[arg(long, default_value_t = 1_000)]
        users: usize,
        #[arg(long, default_value_t = 2_000)]
        lease_ms: u64,
        #[arg(long, default_value_t = 1_000)]
        grace_ms: u64,
        /// Kills (each with a new node A and the same users).
        #[arg(long, default_value_t = 3)]
        kills: usize,
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
    /// Idle WebSocket sessions on one node (reachd runs as a child process): time to connect
    /// them, server RSS per session, one transition to 1,000 subscribers while all are
    /// connected, ping throughput with all connected vs none. Raises the open-file limit
    /// (run as root for more than the hard limit allows).
    Sockets {
        #[arg(long, default_value_t = 100_000)]
        sockets: usize,
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        /// Sessions pinged round-robin for the ping throughput.
        #[arg(long, default_value_t = 1_000)]
        ping_sessions: usize,
    },
    /// The outbox alone, in this process: claims and recorded outcomes of deliveries due at
    /// once, no HTTP (storage time and writer CPU per delivery).
    Outbox {
        #[arg(long, default_value_t = 30_000)]
        deliveries: usize,
        /// Stop once the deliveries are due (the baseline for an instruction count).
        #[arg(long)]
        setup_only: bool,
    },
    /// Webhook deliveries/s vs a raw reqwest client posting a small fixed body to the same
    /// receiver, and latency from a transition to its receipt at low load.
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
#[derive(Debug, Clone, Default)]
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

/// Runs every target once per round (`args.rounds` rounds, the order rotating each round) and
/// returns each target's median rate.
async fn measure(args: &Args, run: &Run, targets: &[load::Target]) -> Vec<f64> {
    let mut rates = vec![Vec::new(); targets.len()];
    for round in 0..args.rounds {
        println!("round {}:", round + 1);
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let stats = load::run(args, run.client, &targets[i], &run.scratch).await;
            print_stats(&targets[i].name, &stats);
            rates[i].push(stats.per_second);
        }
    }
    rates.into_iter().map(median).collect()
}

/// Prints `subject / base` against its target.
fn print_ratio(subject: (&str, f64), base: (&str, f64), target: f64) -> f64 {
    let ratio = subject.1 / base.1.max(f64::MIN_POSITIVE);
    let verdict = if ratio >= target { "met" } else { "NOT met" };
    println!(
        "median: {} {:.0} req/s / {} {:.0} req/s = {ratio:.2} (target ≥ {target:.2}: {verdict})",
        subject.0, subject.1, base.0, base.1
    );
    ratio
}

/// Alternates `/healthz` and `subject` for `args.rounds` rounds and prints the median ratio.
async fn compare(args: &Args, run: &Run, base: &str, subject: load::Target, target: f64) {
    let health = load::Target::get("GET /healthz", base, "/healthz");
    let medians = measure(args, run, &[health, subject.clone()]).await;
    print_ratio((&subject.name, medians[1]), ("healthz", medians[0]), target);
}

/// What every scenario of a run shares.
struct Run {
    client: load::Client,
    /// Scratch files (SQLite databases, wrk request lists, child logs).
    scratch: std::path::PathBuf,
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
/// Runs on the blocking pool: the PostgreSQL client must not run on an async worker.
async fn api_key(config: &Config) -> anyhow::Result<ApiKey> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let admin = app::open_admin(&config, app::AdminOpening::Existing)?;
        Ok(admin.create_api_key(Some("bench"))?)
    })
    .await?
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

/// Creates 1,000 users (one of them `alice@example.com`) and returns the target fetching
/// alice with Basic auth.
async fn user_target(base: &str) -> anyhow::Result<load::Target> {
    Ok(users_service(base).await?.1)
}

/// A service with 1,000 users (one of them `alice@example.com`), and the target fetching
/// alice with Basic auth.
async fn users_service(base: &str) -> anyhow::Result<(String, load::Target)> {
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
    let path = format!("/chat/v2/Services/{service}/Users/alice@example.com");
    let target = basic_gets("GET user by identity", base, vec![path]);
    Ok((service, target))
}

/// Basic-auth GETs of `paths`, rotated over (the user-fetch script sends any such list).
fn basic_gets(name: &str, base: &str, paths: Vec<String>) -> load::Target {
    load::Target {
        name: name.into(),
        base: base.into(),
        script: "user-fetch",
        requests: Arc::new(
            paths
                .into_iter()
                .map(|path| load::Request {
                    post: false,
                    path,
                    auth: load::Auth::Basic(ACCOUNT_SID.into(), AUTH_TOKEN.into()),
                })
                .collect(),
        ),
    }
}

/// Bulk reachability of 100 identities at a time, over ten different sets of the service's
/// users.
fn bulk_reachability_target(base: &str, service: &str) -> load::Target {
    let paths = (0..10)
        .map(|set| {
            let query: Vec<String> = (0..100)
                .map(|i| format!("identity=user{}", set * 100 + i))
                .collect();
            format!(
                "/api/v1/services/{service}/reachability?{}",
                query.join("&")
            )
        })
        .collect();
    basic_gets("GET bulk reachability (100)", base, paths)
}

/// Pages of 100 events of the service's feed, rotating over every page of its 1,000.
async fn event_feed_target(base: &str, service: &str) -> anyhow::Result<load::Target> {
    let feed = format!("/api/v1/services/{service}/events?limit=100");
    let mut paths = vec![feed.clone()];
    while paths.len() < 10 {
        let page = admin_get(base, &paths[paths.len() - 1]).await?;
        let Some(cursor) = page["next_cursor"]
            .as_str()
            .filter(|_| page["has_more"] == true)
        else {
            break;
        };
        paths.push(format!("{feed}&after={cursor}"));
    }
    Ok(basic_gets("GET event feed page (100)", base, paths))
}

/// `rest`: the authenticated reads against `/healthz` — the user fetch (target ≥ 0.50), and,
/// for the record, bulk reachability of 100 identities and a page of 100 feed events.
async fn bench_rest(args: &Args, run: &Run, base: &str) -> anyhow::Result<()> {
    let (service, user) = users_service(base).await?;
    let targets = [
        load::Target::get("GET /healthz", base, "/healthz"),
        user,
        bulk_reachability_target(base, &service),
        event_feed_target(base, &service).await?,
    ];
    let m = measure(args, run, &targets).await;
    print_ratio(("user fetch", m[1]), ("healthz", m[0]), 0.50);
    for (name, rate) in [("bulk reachability", m[2]), ("event feed page", m[3])] {
        println!(
            "median: {name} {rate:.0} req/s / healthz {:.0} req/s = {:.3}",
            m[0],
            rate / m[0].max(f64::MIN_POSITIVE)
        );
    }
    Ok(())
}

/// `http`: the hello server, `/healthz`, the user fetch and pings, in one run.
async fn bench_http(
    args: &Args,
    run: &Run,
    base: &str,
    config: &Config,
    sessions: usize,
) -> anyhow::Result<()> {
    let hello = hello::Hello::start(config.http.workers)?;
    let user = user_target(base).await?;
    let ping = presence::ping_target(base, &api_key(config).await?, sessions).await?;
    let targets = [
        load::Target::get("hello (bare actix-web)", &hello.base, "/"),
        load::Target::get("GET /healthz", base, "/healthz"),
        user,
        ping,
    ];
    let m = measure(args, run, &targets).await;
    print_ratio(("healthz", m[1]), ("hello", m[0]), 0.80);
    print_ratio(("user fetch", m[2]), ("healthz", m[1]), 0.50);
    print_ratio(("ping", m[3]), ("healthz", m[1]), 0.75);
    hello.stop().await;
    Ok(())
}

/// A server started in this process on a fresh database named `name`.
async fn start_server(
    databases: &mut database::Databases,
    name: &str,
) -> anyhow::Result<(app::Running, Config, String)> {
    let mut config = Config::load_from(None, Vec::new())?;
    config.database = databases.fresh(name)?.into();
    config.account_sid = Some(ACCOUNT_SID.into());
    config.auth_token = Some(Secret::new(AUTH_TOKEN));
    config.log = "warn".into();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let running = app::start(config.clone(), listener).await?;
    let base = format!("http://{}", running.addr);
    Ok((running, config, base))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Scenario::Memory { sessions } = args.scenario {
        presence::bench_memory(sessions);
        return Ok(());
    }
    let scratch = std::env::temp_dir().join(format!("reachd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let run = Run {
        client: load::resolve(args.client)?,
        scratch: scratch.clone(),
    };
    // Scenarios that need PostgreSQL start one when the run names none.
    let needs_postgres = matches!(
        args.scenario,
        Scenario::PingBackends { .. } | Scenario::NodeLoss { .. }
    );
    let choice = match &args.database {
        database::Choice::Sqlite if needs_postgres => database::Choice::StartPostgres,
        other => other.clone(),
    };
    let mut databases = database::Databases::open(&choice, &scratch)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(scenario(&args, &run, &mut databases));
    drop(runtime);
    drop(databases);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn scenario(
    args: &Args,
    run: &Run,
    databases: &mut database::Databases,
) -> anyhow::Result<()> {
    let storage = if databases.is_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let http = matches!(
        args.scenario,
        Scenario::Rest
            | Scenario::Ping { .. }
            | Scenario::Http { .. }
            | Scenario::PingBackends { .. }
            | Scenario::Sockets { .. }
    );
    if http {
        println!(
            "reachd-bench: {storage}, load from {}, {} connections, {}s × {} rounds",
            match run.client {
                load::Client::Wrk => format!("wrk ({} threads)", args.wrk_threads),
                _ => "the bench's own client".to_string(),
            },
            args.connections,
            args.seconds,
            args.rounds
        );
    } else {
        println!("reachd-bench: {storage}");
    }
    match args.scenario {
        Scenario::Sockets {
            sockets,
            subscribers,
            ping_sessions,
        } => {
            let plan = sockets::SocketRun {
                sockets,
                subscribers,
                ping_sessions,
            };
            return sockets::bench_sockets(args, run, databases, plan).await;
        }
        Scenario::NodeLoss {
            users,
            lease_ms,
            grace_ms,
            kills,
        } => {
            let options = cluster::NodeLoss {
                users,
                lease_ms,
                grace_ms,
                kills,
            };
            return cluster::bench_node_loss(databases, &run.scratch, options).await;
        }
        Scenario::PingBackends { sessions } => {
            return presence::bench_ping_backends(args, run, databases, sessions).await;
        }
        Scenario::Outbox {
            deliveries,
            setup_only,
        } => {
            let plan = outbox::OutboxRun {
                deliveries,
                setup_only,
            };
            return outbox::bench_outbox(databases, plan).await;
        }
        Scenario::Webhooks {
            deliveries,
            concurrency,
        } => {
            let target = if databases.is_postgres() { 0.20 } else { 0.35 };
            let plan = webhooks::WebhookRun {
                deliveries,
                concurrency,
                target,
            };
            return webhooks::bench_webhooks(run, databases, plan).await;
        }
        _ => {}
    }
    let (running, config, base) = start_server(databases, "bench").await?;
    println!("reachd-bench: server on {base}");
    let result = match args.scenario {
        Scenario::Rest => bench_rest(args, run, &base).await,
        Scenario::Http { sessions } => bench_http(args, run, &base, &config, sessions).await,
        Scenario::Ping { sessions } => {
            presence::bench_ping(args, run, &base, &config, sessions).await
        }
        Scenario::Burst { sessions } => {
            let stats = running.writer_stats.clone();
            let (tx0, jobs0) = (stats.transactions.load(Relaxed), stats.jobs.load(Relaxed));
            let result = presence::bench_burst(args, &base, &config, sessions).await;
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
        Scenario::Memory { .. }
        | Scenario::Webhooks { .. }
        | Scenario::Outbox { .. }
        | Scenario::Sockets { .. }
        | Scenario::NodeLoss { .. }
        | Scenario::PingBackends { .. } => Ok(()),
    };
    running.stop().await?;
    result
}
