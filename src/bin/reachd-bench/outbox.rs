//! Outbox benchmark: the storage half of webhook delivery alone, in this process — claims and
//! recorded outcomes for deliveries due at once, with no HTTP — so that a change to the outbox
//! can be weighed without the noise of a network burst. Reports the storage's time per
//! delivery, and the writer thread's CPU time per delivery (on PostgreSQL the server's own
//! processes do most of the work and are not counted). Under
//! `valgrind --tool=callgrind`, a run with `--setup-only` subtracted from a full one counts the
//! instructions the claims and records cost, the same from run to run.
//!
//! May depend on: the bench's shared helpers (`super`), reachd's storage and domain, tokio.

use super::*;
use reachd::domain::store::Origin;
use reachd::domain::time::now_ms;
use reachd::domain::user::NewUser;
use reachd::domain::webhook::{Attempt, AttemptOutcome, Lease, NewEndpoint, Next, settle};
use reachd::storage::cache::ServiceCache;
use reachd::storage::server::open_server;

/// Deliveries claimed per claim (the dispatcher's room at its default concurrency).
const CLAIM: usize = 256;

/// What one outbox run measures.
pub struct OutboxRun {
    /// Deliveries due at once.
    pub deliveries: usize,
    /// Stop once they are due, before claiming any (the baseline of an instruction count).
    pub setup_only: bool,
}

pub async fn bench_outbox(
    databases: &mut database::Databases,
    plan: OutboxRun,
) -> anyhow::Result<()> {
    let mut config = Config::load_from(None, Vec::new())?;
    config.database = databases.fresh("outbox")?.into();
    let opening = config.clone();
    let (storage, ()) = tokio::task::spawn_blocking(move || {
        open_server(
            &opening,
            Arc::new(ServiceCache::default()),
            Box::new(|_: &()| Vec::new()),
            |_| Ok(()),
        )
    })
    .await??;
    let store = storage.store.clone();
    let outbox = storage.outbox.clone();
    let service = store.create_service("outbox bench".into()).await?;
    store
        .create_endpoint(
            &service.sid,
            NewEndpoint {
                url: "http://127.0.0.1:9/hook".into(),
                description: None,
                event_types: Some(vec!["user.added".into()]),
            },
        )
        .await?;
    // Every user added makes one delivery due now; added concurrently so that they share
    // the writer's transactions.
    let mut pending = Vec::new();
    for i in 0..plan.deliveries {
        pending.push(store.create_user(
            &service.sid,
            NewUser {
                identity: format!("hook{i}"),
                friendly_name: None,
                attributes: None,
                role_sid: None,
            },
            Origin::Rest { webhooks: false },
        ));
        if pending.len() == 512 {
            futures_util::future::try_join_all(pending.drain(..)).await?;
        }
    }
    futures_util::future::try_join_all(pending).await?;
    println!(
        "reachd-bench: {} deliveries due on {}",
        plan.deliveries,
        config.database_description()
    );
    if plan.setup_only {
        storage.close().await?;
        return Ok(());
    }
    let owner = "bench-dispatcher".to_string();
    // The threads that write the outbox: SQLite's one writer; on PostgreSQL the claims' and
    // the records' writers (the server's own processes, which do most of the work there, are
    // not counted).
    let writers: &[&str] = if databases.is_postgres() {
        &["reachd-claims", "reachd-records"]
    } else {
        &["reachd-writer"]
    };
    let writer_time = || {
        writers
            .iter()
            .map(|t| cpu::thread_time(t))
            .sum::<Duration>()
    };
    let writer_before = writer_time();
    let started = Instant::now();
    let (mut claimed_total, mut recorded) = (0, None);
    loop {
        let lease = Lease {
            owner: owner.clone(),
            until: now_ms() + 60_000,
        };
        // One claim and the previous claim's outcomes in flight together, as in the
        // dispatcher: they may share a transaction.
        let claim = outbox.claim_deliveries(now_ms(), CLAIM, lease);
        let (claimed, lost) = match recorded.take() {
            Some(outcomes) => {
                let (claimed, lost) = tokio::join!(claim, outbox.record_attempts(&owner, outcomes));
                (claimed?, lost?)
            }
            None => (claim.await?, Vec::new()),
        };
        anyhow::ensure!(lost.is_empty(), "{} outcomes lost their lease", lost.len());
        if claimed.is_empty() {
            break;
        }
        claimed_total += claimed.len();
        let now = now_ms();
        recorded = Some(
            claimed
                .iter()
                .map(|c| AttemptOutcome {
                    delivery_id: c.delivery.id,
                    attempt: Attempt {
                        attempt: c.delivery.attempts + 1,
                        started_at: now,
                        status_code: Some(200),
                        latency_ms: 1,
                        response_body: Some(String::new()),
                        error: None,
                    },
                    settlement: settle(&c.delivery.target, Next::Delivered, now),
                })
                .collect(),
        );
    }
    let elapsed = started.elapsed();
    let writer = writer_time().saturating_sub(writer_before);
    anyhow::ensure!(
        claimed_total == plan.deliveries,
        "claimed {claimed_total} of {} deliveries",
        plan.deliveries
    );
    let per = |d: Duration| d.as_secs_f64() * 1e6 / plan.deliveries as f64;
    println!(
        "outbox: {:.1} µs per delivery claimed and recorded ({:.0}/s); writer threads ({}) on a CPU {:.1} µs per delivery",
        per(elapsed),
        plan.deliveries as f64 / elapsed.as_secs_f64(),
        writers.join(", "),
        per(writer)
    );
    storage.close().await?;
    Ok(())
}
