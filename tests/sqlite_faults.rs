//! Fault tests against the real server (port 0, temporary database, real HTTP):
//!
//! - 500 concurrent REST writers across several services: every answer is 2xx or an expected
//!   409, never a 5xx or a leaked SQLite lock error, and the stored state adds up exactly.
//! - A webhook receiver that accepts connections and never answers: another endpoint of the
//!   same service keeps getting every delivery promptly, while the hung delivery is retried
//!   and failed per the retry policy, and its queue resumes once the receiver answers again.
//! - A database that refuses writes while serving (a write lock held by another process; the
//!   files made immutable, which stops root too): `/readyz` and every write answer 503 in
//!   Twilio's format, reads keep working, nothing is half written, and once writes are
//!   possible again everything recovers without a restart.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::receiver::{Behavior, Receiver, Recorded};
use common::{Reply, TestServer};
use serde_json::{Value, json};

/// Polls `probe` every 50 ms until it returns `Some`, panicking with `what` after `timeout`.
async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a reply leaks SQLite's lock errors.
fn mentions_sqlite_locking(reply: &Reply) -> bool {
    let text = reply.body.to_string().to_ascii_lowercase();
    text.contains("sqlite") || text.contains("database is locked") || text.contains("busy")
}

// ------------------------------------------------------------------------------------------
// 500 concurrent writers
// ------------------------------------------------------------------------------------------

/// One planned write and the answer it must get.
enum Write {
    CreateUser {
        svc: usize,
        identity: String,
    },
    /// A user that already exists: 409 / 50201.
    DuplicateUser {
        svc: usize,
        identity: String,
    },
    /// One of two racing creates of the same identity: exactly one wins.
    RacingUser {
        svc: usize,
        identity: String,
    },
    RenameUser {
        svc: usize,
        user: usize,
    },
    UserAttributes {
        svc: usize,
        user: usize,
    },
    RenameService {
        svc: usize,
        name: String,
    },
    Binding {
        svc: usize,
        user: usize,
        endpoint: String,
    },
}

const SERVICES: usize = 4;
const EXISTING_USERS: usize = 10;

fn plan() -> Vec<Write> {
    let mut plan = Vec::new();
    for i in 0..260 {
        plan.push(Write::CreateUser {
            svc: i % SERVICES,
            identity: format!("writer-{i}"),
        });
    }
    for i in 0..20 {
        plan.push(Write::DuplicateUser {
            svc: i % SERVICES,
            identity: format!("existing-{}", i % EXISTING_USERS),
        });
    }
    for i in 0..20 {
        plan.push(Write::RacingUser {
            svc: (i / 2) % SERVICES,
            identity: format!("racer-{}", i / 2),
        });
    }
    for i in 0..SERVICES * EXISTING_USERS {
        plan.push(Write::RenameUser {
            svc: i % SERVICES,
            user: i / SERVICES,
        });
        plan.push(Write::UserAttributes {
            svc: i % SERVICES,
            user: i / SERVICES,
        });
    }
    for i in 0..40 {
        plan.push(Write::RenameService {
            svc: i % SERVICES,
            name: format!("service-{}-v{}", i % SERVICES, i / SERVICES),
        });
    }
    for i in 0..80 {
        plan.push(Write::Binding {
            svc: i % SERVICES,
            user: (i / SERVICES) % EXISTING_USERS,
            endpoint: format!("endpoint-{i}"),
        });
    }
    plan
}

fn friendly_name(svc: usize, user: usize) -> String {
    format!("Existing {user} of {svc}")
}

fn attributes(svc: usize, user: usize) -> String {
    json!({"svc": svc, "user": user}).to_string()
}

async fn send_write(
    s: &TestServer,
    services: &[String],
    users: &[Vec<String>],
    write: &Write,
) -> Reply {
    match write {
        Write::CreateUser { svc, identity }
        | Write::DuplicateUser { svc, identity }
        | Write::RacingUser { svc, identity } => {
            s.post(
                &format!("/chat/v2/Services/{}/Users", services[*svc]),
                &[("Identity", identity)],
            )
            .await
        }
        Write::RenameUser { svc, user } => {
            s.post(
                &format!("/chat/v2/Services/{}/Users/{}", services[*svc], users[*svc][*user]),
                &[("FriendlyName", &friendly_name(*svc, *user))],
            )
            .await
        }
        Write::UserAttributes { svc, user } => {
            s.post(
                &format!("/chat/v2/Services/{}/Users/{}", services[*svc], users[*svc][*user]),
                &[("Attributes", &attributes(*svc, *user))],
            )
            .await
        }
        Write::RenameService { svc, name } => {
            s.post(
                &format!("/chat/v2/Services/{}", services[*svc]),
                &[("FriendlyName", name)],
            )
            .await
        }
        Write::Binding {
            svc,
            user,
            endpoint,
        } => {
            s.post_json(
                &format!(
                    "/api/v1/services/{}/users/{}/bindings",
                    services[*svc], users[*svc][*user]
                ),
                json!({"binding_type": "fcm", "address": format!("token-{endpoint}"), "endpoint": endpoint}),
            )
            .await
        }
    }
}

fn query_count(conn: &rusqlite::Connection, sql: &str, sid: &str) -> usize {
    conn.query_row(sql, [sid], |r| r.get::<_, i64>(0))
        .expect("count") as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_writers_all_succeed_and_the_state_adds_up() {
    let s = common::spawn().await;
    let mut services = Vec::new();
    let mut users = Vec::new();
    for svc in 0..SERVICES {
        let sid = s.service(&format!("service-{svc}")).await;
        let mut existing = Vec::new();
        for user in 0..EXISTING_USERS {
            existing.push(s.user(&sid, &format!("existing-{user}")).await);
        }
        services.push(sid);
        users.push(existing);
    }
    let plan = plan();
    assert_eq!(plan.len(), 500);

    let started = Instant::now();
    let replies = futures_util::future::join_all(
        plan.iter()
            .map(|write| send_write(&s, &services, &users, write)),
    )
    .await;
    let elapsed = started.elapsed();
    let stats = &s.running.as_ref().expect("running").writer_stats;
    eprintln!(
        "500 concurrent writes answered in {elapsed:?}; writer: {} transactions, {} jobs so far",
        stats
            .transactions
            .load(std::sync::atomic::Ordering::Relaxed),
        stats.jobs.load(std::sync::atomic::Ordering::Relaxed),
    );

    // Every answer is the expected one; no 5xx, no leaked lock error.
    let mut racing: HashMap<(usize, &str), Vec<u16>> = HashMap::new();
    for (write, reply) in plan.iter().zip(&replies) {
        assert!(
            reply.status < 500,
            "a write answered {}: {}",
            reply.status,
            reply.body
        );
        assert!(!mentions_sqlite_locking(reply), "{}", reply.body);
        match write {
            Write::CreateUser { .. } | Write::Binding { .. } => {
                assert_eq!(reply.status, 201, "{}", reply.body)
            }
            Write::DuplicateUser { .. } => {
                assert_eq!((reply.status, reply.code()), (409, 50201), "{}", reply.body)
            }
            Write::RacingUser { svc, identity } => {
                assert!(
                    reply.status == 201 || (reply.status, reply.code()) == (409, 50201),
                    "{}",
                    reply.body
                );
                racing
                    .entry((*svc, identity.as_str()))
                    .or_default()
                    .push(reply.status);
            }
            Write::RenameUser { .. }
            | Write::UserAttributes { .. }
            | Write::RenameService { .. } => {
                assert_eq!(reply.status, 200, "{}", reply.body)
            }
        }
    }
    assert_eq!(racing.len(), 10);
    for (key, mut statuses) in racing {
        statuses.sort_unstable();
        assert_eq!(statuses, vec![201, 409], "racing creates of {key:?}");
    }

    // The stored state: straight from the database file.
    let conn = rusqlite::Connection::open(s.db_path()).expect("open db");
    for (svc, sid) in services.iter().enumerate() {
        let created = plan
            .iter()
            .filter(|w| matches!(w, Write::CreateUser { svc: v, .. } if *v == svc))
            .count();
        let raced: BTreeSet<&str> = plan
            .iter()
            .filter_map(|w| match w {
                Write::RacingUser { svc: v, identity } if *v == svc => Some(identity.as_str()),
                _ => None,
            })
            .collect();
        let users_now = query_count(
            &conn,
            "SELECT count(*) FROM users WHERE service_sid = ?1",
            sid,
        );
        assert_eq!(
            users_now,
            EXISTING_USERS + created + raced.len(),
            "users of service {svc}"
        );
        let bindings = plan
            .iter()
            .filter(|w| matches!(w, Write::Binding { svc: v, .. } if *v == svc))
            .count();
        assert_eq!(
            query_count(
                &conn,
                "SELECT count(*) FROM bindings WHERE service_sid = ?1",
                sid
            ),
            bindings,
            "bindings of service {svc}"
        );
        // Both concurrent partial updates of each existing user landed.
        for (user, user_sid) in users[svc].iter().enumerate() {
            let (name, attrs): (Option<String>, String) = conn
                .query_row(
                    "SELECT friendly_name, attributes FROM users WHERE sid = ?1",
                    [user_sid],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .expect("user row");
            assert_eq!(name, Some(friendly_name(svc, user)));
            assert_eq!(
                serde_json::from_str::<Value>(&attrs).expect("attributes json"),
                serde_json::from_str::<Value>(&attributes(svc, user)).expect("json")
            );
        }
        // The service's name is one that was written to it.
        let written: BTreeSet<String> = plan
            .iter()
            .filter_map(|w| match w {
                Write::RenameService { svc: v, name } if *v == svc => Some(name.clone()),
                _ => None,
            })
            .collect();
        let name: String = conn
            .query_row(
                "SELECT friendly_name FROM services WHERE sid = ?1",
                [sid],
                |r| r.get(0),
            )
            .expect("service row");
        assert!(written.contains(&name), "{name} was never written");
        // And the API reads the same.
        let fetched = s.get(&format!("/chat/v2/Services/{sid}")).await;
        assert_eq!(fetched.str("friendly_name"), name);
    }
    let total: i64 = conn
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .expect("count");
    assert_eq!(total, (SERVICES * EXISTING_USERS + 260 + 10) as i64);
    s.stop().await;
}

// ------------------------------------------------------------------------------------------
// A hanging webhook receiver
// ------------------------------------------------------------------------------------------

const NATIVE_TIMEOUT_MS: u64 = 2_000;
/// Native retries after 1 s and 1 s: three attempts in all.
const RETRY_SCHEDULE: [u64; 2] = [1, 1];

async fn native_endpoint(s: &TestServer, svc: &str, url: &str) -> String {
    let r = s
        .post_json(
            &format!("/api/v1/services/{svc}/webhooks"),
            json!({"url": url, "description": "faults"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.str("id")
}

fn webhook_id(r: &Recorded) -> String {
    r.header("webhook-id").unwrap_or_default().to_string()
}

fn native_sequence(r: &Recorded) -> i64 {
    r.json()["data"]["sequence"].as_i64().unwrap_or(-1)
}

/// Distinct webhook ids in arrival order.
fn distinct_ids(requests: &[Recorded]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    requests
        .iter()
        .map(webhook_id)
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

async fn deliveries(s: &TestServer, svc: &str, endpoint: &str, status: &str) -> Vec<Value> {
    let r = s
        .get(&format!(
            "/api/v1/services/{svc}/webhooks/{endpoint}/deliveries?status={status}&limit=100"
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["deliveries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_hanging_receiver_holds_up_nobody_and_its_deliveries_fail_per_policy() {
    let s = common::spawn_with(|c| {
        c.webhooks.native_timeout_ms = NATIVE_TIMEOUT_MS;
        c.webhooks.retry_schedule_secs = RETRY_SCHEDULE.to_vec();
        c.webhooks.twilio_retry_base_ms = 50;
    })
    .await;
    let svc = s.service("hanging").await;
    s.post(
        &format!("/chat/v2/Services/{svc}"),
        &[("ReachabilityEnabled", "true")],
    )
    .await;
    s.timings(&svc, 1_000, 5_000, 0).await;

    let hanging = Receiver::start().await;
    hanging.set_default(Behavior::Hang);
    let hung_endpoint = native_endpoint(&s, &svc, &hanging.url("/hang")).await;
    let healthy = Receiver::start().await;
    native_endpoint(&s, &svc, &healthy.url("/ok")).await;
    let chat = Receiver::start().await;
    let chat_url = chat.url("/chat");
    let r = s
        .post(
            &format!("/chat/v2/Services/{svc}"),
            &[("PostWebhookUrl", chat_url.as_str())],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // user.added, then 20 online/offline transitions.
    let token = s.token(&svc, "flipper");
    let started = Instant::now();
    s.flip(&token, 10).await;
    // Were the dispatcher held up by the hanging endpoint, each of the 21 deliveries would
    // wait for at least one 2 s timeout (42 s in all); the generous 20 s deadline still
    // tells the two apart.
    let native = healthy.wait_for(21, Duration::from_secs(20)).await;
    let twilio = chat.wait_for(21, Duration::from_secs(20)).await;
    let healthy_after = started.elapsed();
    let hung_so_far = hanging.requests().len();
    eprintln!(
        "21 deliveries reached both healthy receivers {healthy_after:?} after the first \
         transition; the hanging receiver had {hung_so_far} request(s) by then"
    );
    let mut last = 0;
    for r in &native {
        let seq = native_sequence(r);
        assert!(seq >= last, "native order: {last} then {seq}");
        last = seq;
    }
    assert_eq!(distinct_ids(&native).len(), 21);
    let twilio_events: Vec<String> = twilio.iter().filter_map(|r| r.param("EventType")).collect();
    assert_eq!(twilio_events.len(), 21);
    assert_eq!(twilio_events[0], "onUserAdded");

    // The hung delivery: attempted 1 + len(schedule) times, each abandoned at the timeout,
    // then failed; meanwhile its queue (same endpoint, same user) waits, in order.
    let attempts = 1 + RETRY_SCHEDULE.len();
    let failed = eventually(
        Duration::from_secs(60),
        "the hung delivery to fail",
        || async {
            let failed = deliveries(&s, &svc, &hung_endpoint, "failed").await;
            (!failed.is_empty()).then_some(failed)
        },
    )
    .await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    let log = failed[0]["attempt_log"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(log.len(), attempts, "{log:?}");
    assert_eq!(failed[0]["attempts"], attempts);
    for attempt in &log {
        assert_eq!(attempt["status"], Value::Null, "no answer: {attempt}");
        let latency = attempt["latency_ms"].as_u64().unwrap_or(0);
        assert!(
            latency >= NATIVE_TIMEOUT_MS * 9 / 10,
            "abandoned at the timeout, not before: {attempt}"
        );
        assert!(
            attempt["error"]
                .as_str()
                .is_some_and(|e| e.to_ascii_lowercase().contains("timed out")),
            "{attempt}"
        );
    }
    let hung = hanging.requests();
    let first_id = webhook_id(&hung[0]);
    assert_eq!(
        hung.iter().filter(|r| webhook_id(r) == first_id).count(),
        attempts,
        "every attempt of the first delivery reached the receiver"
    );
    assert_eq!(native_sequence(&hung[0]), native_sequence(&native[0]));

    // The receiver recovers: the rest of its queue follows, in order.
    hanging.set_default(Behavior::Status(200));
    let all = eventually(
        Duration::from_secs(60),
        "the rest of the hung queue",
        || async {
            let requests = hanging.requests();
            (distinct_ids(&requests).len() == 21).then_some(requests)
        },
    )
    .await;
    let mut last = 0;
    for r in &all {
        let seq = native_sequence(r);
        assert!(seq >= last, "hung queue order: {last} then {seq}");
        last = seq;
    }
    let delivered = eventually(Duration::from_secs(20), "20 delivered", || async {
        let d = deliveries(&s, &svc, &hung_endpoint, "delivered").await;
        (d.len() == 20).then_some(d)
    })
    .await;
    assert!(
        delivered.iter().all(|d| d["id"] != failed[0]["id"]),
        "the failed delivery stays failed"
    );
    let stats = s.running.as_ref().expect("running").dispatcher.stats();
    assert!(stats.failed.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    s.stop().await;
}

// ------------------------------------------------------------------------------------------
// A database that refuses writes
// ------------------------------------------------------------------------------------------

/// What exists before the outage.
struct Before {
    svc: String,
    user_sid: String,
    users: usize,
}

async fn before_outage(s: &TestServer) -> Before {
    let svc = s.service("outage").await;
    let user_sid = s.user(&svc, "steady").await;
    let r = s
        .post(
            &format!("/chat/v2/Services/{svc}/Users/{user_sid}"),
            &[("FriendlyName", "Before")],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(s.get("/readyz").await.status, 200);
    Before {
        svc,
        user_sid,
        users: 1,
    }
}

fn assert_twilio_503(r: &Reply, what: &str) {
    assert_eq!(r.status, 503, "{what}: {:?}", r.body);
    assert_eq!(r.code(), 20503, "{what}: {:?}", r.body);
    assert_eq!(r.body["status"], 503, "{what}");
    assert!(
        r.str("more_info").ends_with("/20503"),
        "{what}: {:?}",
        r.body
    );
    assert!(!r.str("message").is_empty(), "{what}");
    assert!(!mentions_sqlite_locking(r), "{what}: {:?}", r.body);
    assert!(
        r.headers.get("retry-after").is_some(),
        "{what}: 503 says when to retry"
    );
}

/// While writes are refused: readiness and every kind of write answer 503, reads answer.
async fn during_outage(s: &TestServer, b: &Before) {
    let ready = eventually(Duration::from_secs(15), "/readyz to report 503", || async {
        let r = s.send(s.http.get(s.url("/readyz"))).await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(ready.body["database_readable"], true, "{:?}", ready.body);
    assert_eq!(ready.body["database_writable"], false, "{:?}", ready.body);
    let health = s.send(s.http.get(s.url("/healthz"))).await;
    assert_eq!(health.status, 200, "the database still answers reads");

    let create = s
        .post(
            &format!("/chat/v2/Services/{}/Users", b.svc),
            &[("Identity", "during")],
        )
        .await;
    assert_twilio_503(&create, "create a user");
    let update = s
        .post(
            &format!("/chat/v2/Services/{}/Users/{}", b.svc, b.user_sid),
            &[("FriendlyName", "During")],
        )
        .await;
    assert_twilio_503(&update, "rename a user");
    let service = s
        .post(
            &format!("/chat/v2/Services/{}", b.svc),
            &[("FriendlyName", "During")],
        )
        .await;
    assert_twilio_503(&service, "rename a service");
    let native = s
        .post_json(
            &format!("/api/v1/services/{}/settings", b.svc),
            json!({"ping_interval_ms": 2_000}),
        )
        .await;
    assert_twilio_503(&native, "native settings");
    let delete = s
        .delete(&format!("/chat/v2/Services/{}/Users/{}", b.svc, b.user_sid))
        .await;
    assert_twilio_503(&delete, "delete a user");

    // Reads keep working and show the state from before.
    let user = s
        .get(&format!("/chat/v2/Services/{}/Users/{}", b.svc, b.user_sid))
        .await;
    assert_eq!(user.status, 200, "{:?}", user.body);
    assert_eq!(user.str("friendly_name"), "Before");
    let list = s.get(&format!("/chat/v2/Services/{}/Users", b.svc)).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    assert_eq!(
        list.body["users"].as_array().map(Vec::len),
        Some(b.users),
        "{:?}",
        list.body
    );
}

/// Once writes are possible again: ready, and the refused writes can be made (none of them
/// was half done: the create is not a duplicate, the rename is not already there).
async fn after_outage(s: &TestServer, b: &Before) {
    eventually(Duration::from_secs(20), "/readyz to recover", || async {
        let r = s.send(s.http.get(s.url("/readyz"))).await;
        (r.status == 200).then_some(())
    })
    .await;
    let user = s
        .get(&format!("/chat/v2/Services/{}/Users/{}", b.svc, b.user_sid))
        .await;
    assert_eq!(
        user.str("friendly_name"),
        "Before",
        "no half-written rename"
    );
    let create = s
        .post(
            &format!("/chat/v2/Services/{}/Users", b.svc),
            &[("Identity", "during")],
        )
        .await;
    assert_eq!(create.status, 201, "{:?}", create.body);
    let update = s
        .post(
            &format!("/chat/v2/Services/{}/Users/{}", b.svc, b.user_sid),
            &[("FriendlyName", "After")],
        )
        .await;
    assert_eq!(update.status, 200, "{:?}", update.body);
    assert_eq!(update.str("friendly_name"), "After");
    let list = s.get(&format!("/chat/v2/Services/{}/Users", b.svc)).await;
    assert_eq!(
        list.body["users"].as_array().map(Vec::len),
        Some(b.users + 1)
    );
    let native = s
        .post_json(
            &format!("/api/v1/services/{}/settings", b.svc),
            json!({"ping_interval_ms": 2_000}),
        )
        .await;
    assert_eq!(native.status, 200, "{:?}", native.body);
}

/// SQLite's write lock held by another connection (on its own thread) until released.
struct WriteLock {
    release: std::sync::mpsc::Sender<()>,
    holder: std::thread::JoinHandle<()>,
}

impl WriteLock {
    fn take(path: &Path) -> WriteLock {
        let path = path.to_path_buf();
        let (locked, lock_taken) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&path).expect("open");
            conn.execute_batch("BEGIN IMMEDIATE")
                .expect("take the write lock");
            locked.send(()).expect("signal");
            let _ = release_rx.recv();
            conn.execute_batch("ROLLBACK").expect("release");
        });
        lock_taken.recv().expect("lock taken");
        WriteLock { release, holder }
    }

    fn release(self) {
        self.release.send(()).expect("release");
        self.holder.join().expect("lock holder");
    }
}

/// Another process holds SQLite's write lock (as a backup tool or `reachd keys` can): the
/// writer's busy timeout runs out and the writes are refused, not queued forever.
#[tokio::test]
async fn a_write_lock_held_elsewhere_answers_503_and_recovers() {
    let s = common::spawn_with(|c| c.storage.busy_timeout_ms = 300).await;
    let b = before_outage(&s).await;

    let lock = WriteLock::take(&s.db_path());
    during_outage(&s, &b).await;
    lock.release();
    after_outage(&s, &b).await;
    s.stop().await;
}

/// A graceful stop while storage refuses writes: the final session flush cannot commit, and
/// the stop still ends within its deadline instead of retrying for ever.
#[tokio::test]
async fn a_graceful_stop_ends_even_when_storage_refuses_writes() {
    let mut s = common::spawn_with(|c| c.storage.busy_timeout_ms = 300).await;
    let svc = s.service("stuck").await;
    s.post(
        &format!("/chat/v2/Services/{svc}"),
        &[("ReachabilityEnabled", "true")],
    )
    .await;
    s.open_session(&s.token(&svc, "alice")).await;

    let lock = WriteLock::take(&s.db_path());

    let running = s.running.take().expect("running");
    let started = std::time::Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(40), running.stop()).await;
    let took = started.elapsed();
    lock.release();
    assert!(
        stopped.is_ok(),
        "the stop hung while the database was locked"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}

/// Makes files immutable (`chattr +i`), which refuses writes even to root and even through
/// descriptors opened before; undone on drop.
struct Immutable {
    paths: Vec<PathBuf>,
}

impl Immutable {
    fn chattr(flag: &str, path: &Path) -> bool {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Whether this machine refuses a write through an open descriptor to an immutable file
    /// (needs `chattr`, a filesystem with the attribute, and the capability to set it).
    fn supported(dir: &Path) -> bool {
        use std::io::Write;
        let probe = dir.join("immutable-probe");
        let Ok(mut file) = std::fs::File::create(&probe) else {
            return false;
        };
        if !Self::chattr("+i", &probe) {
            return false;
        }
        let refused = file.write_all(b"x").and_then(|()| file.sync_all()).is_err();
        Self::chattr("-i", &probe);
        let _ = std::fs::remove_file(&probe);
        refused
    }

    fn set(paths: Vec<PathBuf>) -> Immutable {
        for path in &paths {
            assert!(Self::chattr("+i", path), "chattr +i {}", path.display());
        }
        Immutable { paths }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.paths {
            Self::chattr("-i", path);
        }
    }
}

/// The disk refuses writes: the database file and its WAL become immutable while serving.
/// (The shared-memory index stays writable: it is memory-mapped, and a refused write there
/// is a SIGBUS, not an error — a read-only mount keeps it in memory as well.)
#[tokio::test]
async fn a_disk_that_refuses_writes_answers_503_and_recovers() {
    let s = common::spawn().await;
    if !Immutable::supported(s.dir.path()) {
        eprintln!("skipped: this machine cannot make a file immutable (chattr +i)");
        s.stop().await;
        return;
    }
    let b = before_outage(&s).await;
    let wal = PathBuf::from(format!("{}-wal", s.db_path().display()));
    assert!(wal.exists(), "WAL mode");
    let guard = Immutable::set(vec![s.db_path(), wal]);

    during_outage(&s, &b).await;
    // Still refused a while later: nothing got stuck in a state that pretends otherwise.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = s
        .post(
            &format!("/chat/v2/Services/{}/Users", b.svc),
            &[("Identity", "during")],
        )
        .await;
    assert_twilio_503(&again, "a later create");

    drop(guard);
    after_outage(&s, &b).await;
    s.stop().await;
}
