//! Two webhook dispatchers on one SQLite database: claims are leases held in storage, so they
//! never attempt the same delivery at once, per-user order holds across them, and a claim
//! whose owner dies is taken over when its lease expires.
//!
//! The first node is the real server (`app::start`); the second is built from the same public
//! constructors the composition root uses (`Database::open`, `Writer::start`,
//! `SqliteStore::new`, `Dispatcher::start`). The one-server lock is taken by `app::start`
//! only, so opening the storage directly beside a running server is allowed.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::receiver::{Behavior, Receiver, Recorded};
use reachd::api::state::AccountCredentials;
use reachd::app;
use reachd::config::{Config, Secret};
use reachd::db::user_cache::{InvalidateUsers, UserCache, watch_users};
use reachd::db::writer::{CommitHook, Effects, Writer};
use reachd::db::{Database, SqliteStore};
use reachd::domain::store::{Origin, OutboxStore, Store};
use reachd::domain::time::now_ms;
use reachd::domain::user::NewUser;
use reachd::domain::webhook::{
    Attempt, AttemptOutcome, DeliveryStatus, Lease, Next, endpoint_target, settle,
};
use reachd::storage::cache::{InvalidateServices, ServiceCache};
use reachd::webhooks::{Dispatcher, DispatcherTasks};
use serde_json::json;
use tokio::sync::Notify;

/// Wakes a node's dispatcher when its writer commits deliveries (as `app::start` does).
struct WakeDispatcher(Arc<Notify>);

impl CommitHook for WakeDispatcher {
    fn committed(&mut self, effects: &Effects) {
        if effects.deliveries {
            self.0.notify_one();
        }
    }
}

/// A second node's storage (its own writer and read pool on the same file), and optionally
/// its dispatcher.
struct Node {
    store: Arc<SqliteStore>,
    writer: Writer,
    writer_thread: std::thread::JoinHandle<()>,
    wake: Arc<Notify>,
    config: Config,
    dispatcher: Option<(Dispatcher, DispatcherTasks)>,
}

impl Node {
    fn open(config: Config) -> Node {
        let db = Database::open(&reachd::storage::server::sqlite_options(&config))
            .expect("open the database");
        let services = Arc::new(ServiceCache::default());
        let users = Arc::new(UserCache::default());
        watch_users(&db.writer, users.clone()).expect("watch users");
        let wake = Arc::new(Notify::new());
        let hooks: Vec<Box<dyn CommitHook>> = vec![
            Box::new(InvalidateServices(services.clone())),
            Box::new(InvalidateUsers(users.clone())),
            Box::new(WakeDispatcher(wake.clone())),
        ];
        let (writer, writer_thread) =
            Writer::start(db.writer, config.storage.max_batch, hooks).expect("writer");
        let store = Arc::new(SqliteStore::new(db.reads, writer.clone(), services, users));
        Node {
            store,
            writer,
            writer_thread,
            wake,
            config,
            dispatcher: None,
        }
    }

    fn start_dispatcher(&mut self) -> Dispatcher {
        let account = AccountCredentials {
            sid: common::ACCOUNT_SID.into(),
            auth_token: Secret::new(common::AUTH_TOKEN),
        };
        let options = app::dispatcher_options(&self.config, &account);
        let (dispatcher, tasks) =
            Dispatcher::start(self.store.clone(), options, self.wake.clone(), true)
                .expect("second dispatcher");
        self.dispatcher = Some((dispatcher.clone(), tasks));
        dispatcher
    }

    async fn stop(self) {
        if let Some((dispatcher, tasks)) = self.dispatcher {
            dispatcher.shutdown(tasks).await;
        }
        drop(self.store);
        self.writer.stop().await;
        tokio::task::spawn_blocking(move || self.writer_thread.join())
            .await
            .expect("join")
            .expect("the writer thread ended cleanly");
    }
}

fn adjust(c: &mut Config) {
    c.webhooks.allow_private_networks = true;
    c.webhooks.concurrency = 4;
}

/// Stops the server's process side (and its dispatcher); its database stays.
async fn stop_server(s: &mut common::TestServer) {
    s.running
        .take()
        .expect("running")
        .stop()
        .await
        .expect("clean stop");
}

/// A second node's storage on the server's database file.
fn node_beside(s: &common::TestServer) -> Node {
    let mut config = common::test_config(s.dir.path());
    adjust(&mut config);
    Node::open(config)
}

/// The stored deliveries: `(id, status, lease_owner)`.
fn deliveries(db: &std::path::Path) -> Vec<(i64, String, Option<String>)> {
    let conn = reachd::db::open::open_connection(db, Duration::from_secs(5)).expect("db");
    let mut stmt = conn
        .prepare("SELECT id, status, lease_owner FROM deliveries ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn token(r: &Recorded) -> String {
    r.header("webhook-id").unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_dispatchers_on_one_database_attempt_every_delivery_once_and_in_order() {
    const USERS: usize = 20;
    const UPDATES: usize = 10;
    const N: usize = USERS * UPDATES;
    let receiver = Receiver::start().await;
    // Slow enough that one dispatcher's four slots cannot keep up: the other one gets work.
    receiver.set_default(Behavior::Slow(200, 100));
    let s = common::spawn_with(adjust).await;
    let svc = s.service("two").await;
    s.native_endpoint(
        &svc,
        json!({"url": receiver.url("/hook"), "event_types": ["user.updated"]}),
    )
    .await;

    let mut second = node_beside(&s);
    let b = second.start_dispatcher();
    let a = s.running.as_ref().expect("running").dispatcher.clone();
    assert_ne!(
        a.owner(),
        b.owner(),
        "each dispatcher start has its own owner"
    );

    for user in 0..USERS {
        s.user(&svc, &format!("user{user}")).await;
    }
    // Updates of different users interleave, so heads of many queues are due at once.
    for round in 0..UPDATES {
        for user in 0..USERS {
            let r = s
                .post(
                    &format!("/chat/v2/Services/{svc}/Users/user{user}"),
                    &[("FriendlyName", &format!("round {round}"))],
                )
                .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
    }

    let requests = receiver.wait_for(N, Duration::from_secs(90)).await;
    // Anything attempted twice would arrive within a few more receiver delays.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let requests = receiver.requests().len().max(requests.len());
    let all = receiver.requests();
    assert_eq!(requests, N, "every delivery is attempted exactly once");
    let tokens: HashSet<String> = all.iter().map(token).collect();
    assert_eq!(tokens.len(), N, "no idempotency token arrives twice");

    let mut per_user: HashMap<String, Vec<i64>> = HashMap::new();
    for r in &all {
        let body = r.json();
        let identity = body["data"]["identity"].as_str().unwrap_or_default();
        let sequence = body["data"]["sequence"].as_i64().unwrap_or(-1);
        per_user
            .entry(identity.to_string())
            .or_default()
            .push(sequence);
    }
    assert_eq!(per_user.len(), USERS);
    for (identity, sequences) in &per_user {
        assert_eq!(sequences.len(), UPDATES, "{identity}");
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{identity}'s webhooks arrive in sequence order: {sequences:?}"
        );
    }

    let attempts = |d: &Dispatcher| {
        d.stats()
            .attempts
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let lost = |d: &Dispatcher| {
        d.stats()
            .leases_lost
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // The outcome of the last request may still be on its way to storage.
    common::eventually("every delivery recorded as delivered", || async {
        deliveries(&s.db_path())
            .iter()
            .all(|(_, status, lease)| status == "delivered" && lease.is_none())
    })
    .await;
    assert_eq!(deliveries(&s.db_path()).len(), N);
    assert_eq!(attempts(&a) + attempts(&b), N as u64);
    assert!(
        attempts(&a) > 0 && attempts(&b) > 0,
        "both dispatchers took part: {} and {}",
        attempts(&a),
        attempts(&b)
    );
    assert_eq!(lost(&a) + lost(&b), 0, "no lease was taken over");

    second.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_whose_owner_dies_is_taken_over_when_its_lease_expires() {
    let receiver = Receiver::start().await;
    let mut s = common::spawn_with(adjust).await;
    let svc = s.service("dead").await;
    let endpoint = s
        .native_endpoint(
            &svc,
            json!({"url": receiver.url("/hook"), "event_types": ["user.added"]}),
        )
        .await;
    // The server (and its dispatcher) stops; its database stays.
    stop_server(&mut s).await;

    let mut node = node_beside(&s);
    node.store
        .create_user(
            &svc,
            NewUser {
                identity: "alice".into(),
                ..Default::default()
            },
            Origin::Rest { webhooks: false },
        )
        .await
        .expect("user");
    // A dispatcher claims the delivery with a short lease, then dies without a word.
    let dead = "dead-dispatcher".to_string();
    let lease_ms = 1_500;
    let claimed_at = now_ms();
    let claimed = node
        .store
        .claim_deliveries(
            claimed_at,
            10,
            Lease {
                owner: dead.clone(),
                until: claimed_at + lease_ms,
            },
        )
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let delivery = claimed[0].delivery.clone();
    assert_eq!(delivery.target, endpoint_target(&endpoint));
    let again = node
        .store
        .claim_deliveries(
            now_ms(),
            10,
            Lease {
                owner: "someone-else".into(),
                until: now_ms() + 60_000,
            },
        )
        .await
        .expect("claim again");
    assert!(again.is_empty(), "a live lease is not claimable");
    assert_eq!(
        node.store.next_delivery_due().expect("next due"),
        Some(claimed_at + lease_ms),
        "a leased head falls due when its lease expires"
    );

    let started = Instant::now();
    let alive = node.start_dispatcher();
    let requests = receiver.wait_for(1, Duration::from_secs(15)).await;
    let waited = now_ms() - claimed_at;
    assert!(
        waited >= lease_ms,
        "taken over only after the lease expired ({waited} ms)"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "taken over soon after"
    );
    assert_eq!(
        token(&requests[0]),
        format!("msg_{}", delivery.idempotency_token)
    );
    common::eventually("the takeover recorded as delivered", || async {
        node.store
            .delivery(delivery.id)
            .ok()
            .flatten()
            .is_some_and(|(d, _)| d.status == DeliveryStatus::Delivered)
    })
    .await;

    // The dead owner comes back with a late outcome: it matches no row and changes nothing.
    let late = AttemptOutcome {
        delivery_id: delivery.id,
        attempt: Attempt {
            attempt: 1,
            started_at: claimed_at,
            status_code: Some(500),
            latency_ms: 1,
            response_body: None,
            error: Some("late".into()),
        },
        settlement: settle(&delivery.target, Next::Failed, now_ms()),
    };
    let lost = node
        .store
        .record_attempts(&dead, vec![late])
        .await
        .expect("record");
    assert_eq!(lost, vec![delivery.id]);
    let (stored, attempts) = node
        .store
        .delivery(delivery.id)
        .expect("read")
        .expect("delivery");
    assert_eq!(stored.status, DeliveryStatus::Delivered);
    assert_eq!(attempts.len(), 1, "only the new owner's attempt is logged");
    assert_eq!(attempts[0].status_code, Some(200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), 1, "attempted once");
    assert_eq!(
        alive
            .stats()
            .attempts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_releases_its_leases_so_a_restart_retries_at_once() {
    let receiver = Receiver::start().await;
    // The first attempt hangs past the stop.
    receiver.plan(&[Behavior::Hang]);
    let mut s = common::spawn_with(adjust).await;
    let svc = s.service("release").await;
    s.native_endpoint(
        &svc,
        json!({"url": receiver.url("/hook"), "event_types": ["user.added"]}),
    )
    .await;
    s.user(&svc, "alice").await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let owner = s
        .running
        .as_ref()
        .expect("running")
        .dispatcher
        .owner()
        .to_string();
    let held = deliveries(&s.db_path());
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0].2.as_deref(),
        Some(owner.as_str()),
        "leased while sent"
    );
    stop_server(&mut s).await;
    let released = deliveries(&s.db_path());
    assert_eq!(released[0].1, "pending");
    assert_eq!(released[0].2, None, "the stop released the lease");

    let mut node = node_beside(&s);
    let started = Instant::now();
    node.start_dispatcher();
    let requests = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "retried at once, not after the lease"
    );
    assert_eq!(
        token(&requests[0]),
        token(&requests[1]),
        "the same delivery"
    );
    node.stop().await;
}

/// A claim of more deliveries than one statement names (64), and their outcomes recorded
/// together: every one is leased once, comes back in due order with its event, and has its
/// attempt logged; none is lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_claim_and_its_outcomes_span_several_statements_without_loss() {
    let mut s = common::spawn_with(adjust).await;
    let svc = s.service("large").await;
    let endpoint = s
        .native_endpoint(
            &svc,
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["user.added"]}),
        )
        .await;
    stop_server(&mut s).await;
    let node = node_beside(&s);
    let users = 150;
    for i in 0..users {
        node.store
            .create_user(
                &svc,
                NewUser {
                    identity: format!("u{i:03}"),
                    ..Default::default()
                },
                Origin::Rest { webhooks: false },
            )
            .await
            .expect("user");
    }
    let owner = "large-claim".to_string();
    let claimed = node
        .store
        .claim_deliveries(
            now_ms(),
            1_000,
            Lease {
                owner: owner.clone(),
                until: now_ms() + 60_000,
            },
        )
        .await
        .expect("claim");
    assert_eq!(claimed.len(), users);
    let ids: Vec<i64> = claimed.iter().map(|c| c.delivery.id).collect();
    let mut due = claimed
        .iter()
        .map(|c| (c.delivery.next_attempt_at, c.delivery.id))
        .collect::<Vec<_>>();
    due.sort_unstable();
    assert_eq!(
        due.iter().map(|&(_, id)| id).collect::<Vec<_>>(),
        ids,
        "in due order"
    );
    let identities: HashSet<&str> = claimed.iter().map(|c| c.event.identity.as_str()).collect();
    assert_eq!(identities.len(), users, "each with its own event");
    assert!(
        claimed
            .iter()
            .all(|c| c.delivery.target == endpoint_target(&endpoint)
                && c.secret.as_deref().is_some_and(|s| s.starts_with("whsec_"))),
        "each with its endpoint's secret"
    );
    let leased = deliveries(&s.dir.path().join("reachd.db"));
    assert!(
        leased.iter().all(
            |(_, status, lease)| status == "pending" && lease.as_deref() == Some("large-claim")
        ),
        "every delivery leased to the claim"
    );
    let now = now_ms();
    let outcomes = claimed
        .iter()
        .map(|c| AttemptOutcome {
            delivery_id: c.delivery.id,
            attempt: Attempt {
                attempt: c.delivery.attempts + 1,
                started_at: now,
                status_code: Some(200),
                latency_ms: 3,
                response_body: Some(format!("ok {}", c.delivery.id)),
                error: None,
            },
            settlement: settle(&c.delivery.target, Next::Delivered, now),
        })
        .collect();
    let lost = node
        .store
        .record_attempts(&owner, outcomes)
        .await
        .expect("record");
    assert!(lost.is_empty());
    for id in [ids[0], ids[63], ids[64], ids[users - 1]] {
        let (delivery, attempts) = node.store.delivery(id).expect("read").expect("delivery");
        assert_eq!(delivery.status, DeliveryStatus::Delivered);
        assert_eq!(attempts.len(), 1, "delivery {id}");
        assert_eq!(attempts[0].status_code, Some(200));
        assert_eq!(
            attempts[0].response_body.as_deref(),
            Some(format!("ok {id}").as_str())
        );
    }
    let settled = deliveries(&s.dir.path().join("reachd.db"));
    assert!(
        settled
            .iter()
            .all(|(_, status, lease)| status == "delivered" && lease.is_none())
    );
    node.stop().await;
    s.stop().await;
}
