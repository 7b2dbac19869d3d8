//! Cluster benchmark (`node-loss`): two nodes as child processes on one PostgreSQL database,
//! a short lease and offline grace; N users online through node A only; node A killed with
//! SIGKILL; per user, the time from the kill until its offline event (cause `node_lost`) is
//! in the event feed read through node B. Reported against the bound `lease_ms` + grace + 1 s.
//!
//! May depend on: the bench's shared helpers (`super`), tokio, reqwest, chrono.

use std::collections::HashMap;
use std::time::SystemTime;

use super::*;

pub struct NodeLoss {
    pub users: usize,
    pub lease_ms: u64,
    pub grace_ms: u64,
    pub kills: usize,
}

/// An offline event as node B's feed shows it.
struct Offline {
    identity: String,
    reason: String,
    /// When the poll that returned it came back.
    observed: Instant,
    /// The event's own timestamp, in ms since the epoch: stamped when the writer wrote it,
    /// inside its transaction (it is visible from the commit on).
    stamped_ms: i64,
}

fn millis_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(sorted.len() - 1)]
}

pub async fn bench_node_loss(
    databases: &mut database::Databases,
    scratch: &Path,
    options: NodeLoss,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        databases.is_postgres(),
        "node-loss needs PostgreSQL (--database postgres or a URL)"
    );
    let database = databases.fresh("node_loss")?;
    let env = |node: &str| {
        vec![
            ("REACHD_CLUSTER__NODE_ID", node.to_string()),
            ("REACHD_CLUSTER__LEASE_MS", options.lease_ms.to_string()),
            (
                "REACHD_PRESENCE__OFFLINE_GRACE_MS",
                options.grace_ms.to_string(),
            ),
        ]
    };
    let b = child::Child::start(&database, &env("bench-b"), scratch.join("node-b.log"))?;
    let service = service(&b.base, true).await?;
    let key = b.api_key()?;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..options.users)
            .map(|i| mint(&key, &service, &format!("lost{i}")))
            .collect::<anyhow::Result<_>>()?,
    );
    let bound_ms = (options.lease_ms + options.grace_ms + 1_000) as f64;
    println!(
        "node-loss: {} users on node A, lease {} ms, offline grace {} ms; bound lease + grace + 1 s = {bound_ms:.0} ms",
        options.users, options.lease_ms, options.grace_ms
    );
    let (mut observed, mut stamped) = (Vec::new(), Vec::new());
    for kill in 1..=options.kills {
        let name = format!("bench-a{kill}");
        let mut a =
            child::Child::start(&database, &env(&name), scratch.join(format!("{name}.log")))?;
        open_sessions(&a.base, &tokens).await?;
        wait_online(&b.base, &service, options.users).await?;
        let cursor = feed_position(&b.base, &service).await?;
        let stop = tokio_util::sync::CancellationToken::new();
        let poller = tokio::spawn(poll_offline(
            b.base.clone(),
            service.clone(),
            cursor,
            stop.clone(),
        ));
        // Kill at a random point of A's renewal cycle (it renews every third of the lease).
        let jitter = rand::random::<u64>() % (options.lease_ms / 3).max(1);
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        let (killed, killed_wall) = (Instant::now(), millis_since_epoch(SystemTime::now()));
        a.kill();
        let deadline = killed + Duration::from_millis(bound_ms as u64) + Duration::from_secs(15);
        loop {
            let seen = stats(&b.base, &service).await?["online_users"]
                .as_i64()
                .unwrap_or(-1);
            if seen == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the poller read the last page.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
        let events = poller.await??;
        let mut per_user: HashMap<&str, usize> = HashMap::new();
        let mut other_causes = 0;
        let (mut round_observed, mut round_stamped) = (Vec::new(), Vec::new());
        for e in &events {
            *per_user.entry(e.identity.as_str()).or_default() += 1;
            if e.reason != "node_lost" {
                other_causes += 1;
            }
            round_observed.push(e.observed.duration_since(killed).as_secs_f64() * 1000.0);
            round_stamped.push((e.stamped_ms - killed_wall) as f64);
        }
        let repeated = per_user.values().filter(|&&n| n > 1).count();
        round_observed.sort_by(f64::total_cmp);
        round_stamped.sort_by(f64::total_cmp);
        println!(
            "kill {kill}: {}/{} users offline once ({repeated} repeated, {other_causes} with a cause other than node_lost); \
             from the kill: in the feed p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; event timestamps p50 {:.0} ms, p99 {:.0} ms",
            per_user.len(),
            options.users,
            percentile(&round_observed, 0.50),
            percentile(&round_observed, 0.99),
            round_observed.last().copied().unwrap_or(f64::NAN),
            percentile(&round_stamped, 0.50),
            percentile(&round_stamped, 0.99),
        );
        anyhow::ensure!(
            per_user.len() == options.users,
            "only {} of {} users went offline (node logs in {})",
            per_user.len(),
            options.users,
            scratch.display()
        );
        observed.extend(round_observed);
        stamped.extend(round_stamped);
    }
    observed.sort_by(f64::total_cmp);
    stamped.sort_by(f64::total_cmp);
    let p99 = percentile(&observed, 0.99);
    println!(
        "all {} kills: kill → offline in the feed p50 {:.0} ms, p99 {p99:.0} ms (event timestamps: p50 {:.0} ms, p99 {:.0} ms); bound {bound_ms:.0} ms: {}",
        options.kills,
        percentile(&observed, 0.50),
        percentile(&stamped, 0.50),
        percentile(&stamped, 0.99),
        if p99 <= bound_ms { "met" } else { "NOT met" }
    );
    Ok(())
}

/// Opens one session per token on `base`, 64 at a time.
async fn open_sessions(base: &str, tokens: &Arc<Vec<String>>) -> anyhow::Result<()> {
    const WORKERS: usize = 64;
    let url = format!("{base}/client/v1/sessions");
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let (tokens, url) = (tokens.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let client = keep_alive_client();
            for token in tokens.iter().skip(worker).step_by(WORKERS) {
                client
                    .post(&url)
                    .bearer_auth(token)
                    .json(&serde_json::json!({}))
                    .send()
                    .await?
                    .error_for_status()?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn wait_online(base: &str, service: &str, users: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let online = stats(base, service).await?["online_users"]
            .as_i64()
            .unwrap_or(0);
        if online as usize >= users {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "only {online} of {users} users online"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The newest event's position in the service's feed.
async fn feed_position(base: &str, service: &str) -> anyhow::Result<String> {
    let page = admin_get(base, &format!("/api/v1/services/{service}/events?tail=1")).await?;
    Ok(page["next_cursor"].as_str().unwrap_or("0").to_string())
}

/// Pages through the feed after `cursor` until stopped, keeping the offline transitions.
async fn poll_offline(
    base: String,
    service: String,
    mut cursor: String,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Vec<Offline>> {
    let http = reqwest::Client::new();
    let mut found = Vec::new();
    loop {
        let page: serde_json::Value = http
            .get(format!(
                "{base}/api/v1/services/{service}/events?after={cursor}&limit=1000"
            ))
            .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let observed = Instant::now();
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for e in &events {
            let data = &e["data"];
            if e["type"] == "user.reachability_updated" && data["is_online"] == false {
                let stamped_ms = e["timestamp"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map_or(0, |t| t.timestamp_millis());
                found.push(Offline {
                    identity: data["identity"].as_str().unwrap_or_default().to_string(),
                    reason: data["reason"].as_str().unwrap_or_default().to_string(),
                    observed,
                    stamped_ms,
                });
            }
        }
        if let Some(next) = page["next_cursor"].as_str() {
            cursor = next.to_string();
        }
        if events.is_empty() {
            if stop.is_cancelled() {
                return Ok(found);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
