//! Presence benchmarks: session pings vs `/healthz` and on PostgreSQL vs SQLite, engine memory
//! per session, and a burst of first-contact session opens.
//!
//! May depend on: the bench's shared helpers (`super`), reachd's public API, tokio, reqwest.

use super::*;

/// Opens `sessions` sessions (one user each) in a new service and returns the target pinging
/// them round-robin, each with its own access token.
pub async fn ping_target(
    base: &str,
    key: &ApiKey,
    sessions: usize,
) -> anyhow::Result<load::Target> {
    let service = service(base, true).await?;
    let http = reqwest::Client::new();
    let mut requests = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let token = mint(key, &service, &format!("user{i}"))?;
        let opened: serde_json::Value = http
            .post(format!("{base}/client/v1/sessions"))
            .bearer_auth(&token)
            .json(&serde_json::json!({}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = opened["session_id"].as_str().context("session id")?;
        requests.push(load::Request {
            post: true,
            path: format!("/client/v1/sessions/{id}/ping"),
            auth: load::Auth::Bearer(token),
        });
    }
    Ok(load::Target {
        name: "POST session ping".into(),
        base: base.into(),
        script: "ping",
        requests: Arc::new(requests),
    })
}

pub async fn bench_ping(
    args: &Args,
    run: &Run,
    base: &str,
    config: &Config,
    sessions: usize,
) -> anyhow::Result<()> {
    let ping = ping_target(base, &api_key(config).await?, sessions).await?;
    compare(args, run, base, ping, 0.75).await;
    Ok(())
}

/// Pings on a PostgreSQL server vs a SQLite server of the same build, both in this process,
/// the same load generator alternating between them.
pub async fn bench_ping_backends(
    args: &Args,
    run: &Run,
    databases: &mut database::Databases,
    sessions: usize,
) -> anyhow::Result<()> {
    let mut sqlite = database::Databases::open(&database::Choice::Sqlite, &run.scratch)?;
    let (on_sqlite, sqlite_config, sqlite_base) = start_server(&mut sqlite, "ping-sqlite").await?;
    let (on_pg, pg_config, pg_base) = start_server(databases, "ping_pg").await?;
    println!("reachd-bench: SQLite server on {sqlite_base}, PostgreSQL server on {pg_base}");
    let mut sqlite_ping =
        ping_target(&sqlite_base, &api_key(&sqlite_config).await?, sessions).await?;
    sqlite_ping.name = "ping on SQLite".into();
    let mut pg_ping = ping_target(&pg_base, &api_key(&pg_config).await?, sessions).await?;
    pg_ping.name = "ping on PostgreSQL".into();
    let m = measure(args, run, &[sqlite_ping, pg_ping]).await;
    print_ratio(("PostgreSQL", m[1]), ("SQLite", m[0]), 0.95);
    on_pg.stop().await?;
    on_sqlite.stop().await?;
    Ok(())
}

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    super::sockets::rss_of(std::process::id())
}

pub fn bench_memory(sessions: usize) {
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

pub async fn bench_burst(
    args: &Args,
    base: &str,
    config: &Config,
    sessions: usize,
) -> anyhow::Result<()> {
    let service = service(base, true).await?;
    let key = api_key(config).await?;
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
    let online = loop {
        let n = stats(base, &service).await?["online_users"]
            .as_i64()
            .unwrap_or(0);
        if n as usize >= sessions || started.elapsed() > Duration::from_secs(30) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let committed = started.elapsed().as_secs_f64();
    println!(
        "{opened}/{sessions} opens answered in {:.2} s ({:.0}/s, each after its commit); {online} users committed online after {committed:.2} s (target ≤ 3 s: {})",
        issued.as_secs_f64(),
        opened as f64 / issued.as_secs_f64(),
        if online as usize >= sessions && committed <= 3.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
