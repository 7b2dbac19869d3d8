//! At-least-once across a crash: with the receiver down, 200 transitions are committed, reachd
//! is killed with SIGKILL and restarted, the receiver comes up — and every event arrives, each
//! user's in order.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::process::{Server, reachd};
use common::receiver::Receiver;
use serde_json::{Value, json};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "crash-test-token-0123456789abcdef";

fn start(dir: &std::path::Path) -> Server {
    let config = dir.join("reachd.toml");
    // Retries every second for two minutes: the heads keep failing through the setup requests,
    // the kill and the restart, however slow the machine, until the receiver comes up.
    let schedule = vec!["1"; 120].join(", ");
    std::fs::write(
        &config,
        format!(
            "[webhooks]\nconcurrency = 16\nretry_schedule_secs = [{schedule}]\nnative_timeout_ms = 10000\n\
             allow_private_networks = true\ntwilio_retry_base_ms = 100\nretention_days = 7\n"
        ),
    )
    .expect("config");
    let mut cmd = reachd(dir);
    cmd.env("REACHD_ACCOUNT_SID", SID)
        .env("REACHD_AUTH_TOKEN", TOKEN)
        .arg("--config")
        .arg(&config);
    Server::start(cmd)
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Value,
) -> Value {
    let req = http.request(method, url).json(&body);
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req.basic_auth(SID, Some(TOKEN)),
    };
    let res = req.send().await.expect("request");
    assert!(res.status().is_success(), "{}", res.status());
    res.json().await.unwrap_or(Value::Null)
}

/// Creates a Chat v2 service; its SID.
async fn create_service(http: &reqwest::Client, base: &str, name: &str) -> String {
    let svc = call(
        http,
        reqwest::Method::POST,
        format!("{base}/chat/v2/Services"),
        None,
        json!({"FriendlyName": name}),
    )
    .await;
    svc["sid"].as_str().unwrap_or_default().to_string()
}

/// Adds a native webhook endpoint for `event_type` to the service.
async fn add_endpoint(http: &reqwest::Client, base: &str, svc: &str, url: &str, event_type: &str) {
    call(
        http,
        reqwest::Method::POST,
        format!("{base}/api/v1/services/{svc}/webhooks"),
        None,
        json!({"url": url, "event_types": [event_type]}),
    )
    .await;
}

#[tokio::test]
async fn every_committed_event_arrives_after_a_kill_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = common::test_database(&dir.path().join("data"));
    // A port nobody listens on yet: the receiver is "down".
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let server = start(dir.path());
    let base = server.base();
    let http = reqwest::Client::new();
    let svc = create_service(&http, &base, "crash").await;
    call(
        &http,
        reqwest::Method::POST,
        format!("{base}/chat/v2/Services/{svc}"),
        None,
        json!({"ReachabilityEnabled": "true"}),
    )
    .await;
    call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/services/{svc}/settings"),
        None,
        json!({"offline_grace_ms": 0}),
    )
    .await;
    let hook = format!("http://127.0.0.1:{port}/hook");
    add_endpoint(&http, &base, &svc, &hook, "user.reachability_updated").await;

    let key = common::admin(&db).create_api_key(None).expect("key");
    let now = chrono::Utc::now().timestamp();
    for user in 0..20 {
        let token = reachd::tokens::mint(
            SID,
            &key.sid,
            &key.secret,
            &svc,
            &format!("user{user}"),
            3600,
            None,
            now,
        )
        .expect("mint");
        for _ in 0..5 {
            let opened = call(
                &http,
                reqwest::Method::POST,
                format!("{base}/client/v1/sessions"),
                Some(&token),
                json!({}),
            )
            .await;
            let id = opened["session_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let res = http
                .delete(format!("{base}/client/v1/sessions/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("close");
            assert_eq!(res.status(), 204);
        }
    }
    // Wait until the 200 transitions are committed, then crash.
    let feed = format!("{base}/api/v1/services/{svc}/events?limit=1000");
    let committed = || async {
        let events = call(&http, reqwest::Method::GET, feed.clone(), None, Value::Null).await;
        events["events"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter(|e| e["type"] == "user.reachability_updated")
                    .count()
            })
            .unwrap_or(0)
    };
    for _ in 0..100 {
        if committed().await >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(committed().await, 200);
    server.kill();

    let server = start(dir.path());
    let receiver = Receiver::start_on(port).await;
    // Count distinct events, not requests: an attempt cut by the kill may arrive twice.
    let distinct = |requests: &[common::receiver::Recorded]| {
        requests
            .iter()
            .filter_map(|r| r.header("webhook-id").map(str::to_string))
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    common::eventually_within("200 distinct events", Duration::from_secs(90), || async {
        distinct(&receiver.requests()) >= 200
    })
    .await;
    let requests = receiver.requests();
    let mut per_user: HashMap<String, Vec<i64>> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for r in &requests {
        let body = r.json();
        if ids.insert(r.header("webhook-id").unwrap_or_default().to_string()) {
            per_user
                .entry(
                    body["data"]["identity"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
                .or_default()
                .push(body["data"]["sequence"].as_i64().unwrap_or(0));
        }
    }
    assert_eq!(ids.len(), 200, "every committed transition arrived");
    assert_eq!(per_user.len(), 20);
    for (user, sequences) in &per_user {
        assert_eq!(sequences.len(), 10, "{user}");
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{user} out of order: {sequences:?}"
        );
    }
    drop(server);
}

/// A delivery in flight when reachd is killed is attempted again as soon as it restarts, not
/// after its lease (native timeout + 15 s): the server's dispatcher owns its leases under a
/// stable id and releases what a crashed run left. (On PostgreSQL, after the lease.)
#[tokio::test]
async fn a_delivery_in_flight_at_a_kill_is_retried_at_once_after_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start().await;
    receiver.plan(&[common::receiver::Behavior::Hang]);
    receiver.set_default(common::receiver::Behavior::Status(200));
    let server = start(dir.path());
    let base = server.base();
    let http = reqwest::Client::new();
    let svc = create_service(&http, &base, "in flight").await;
    add_endpoint(&http, &base, &svc, &receiver.url("/hook"), "user.added").await;
    call(
        &http,
        reqwest::Method::POST,
        format!("{base}/chat/v2/Services/{svc}/Users"),
        None,
        json!({"Identity": "alice"}),
    )
    .await;
    // The first attempt hangs (the native timeout is 10 s, so its lease is 25 s): kill now.
    let first = receiver.wait_for(1, Duration::from_secs(20)).await;
    server.kill();
    let restarted = std::time::Instant::now();
    let server = start(dir.path());
    let again = receiver.wait_for(2, Duration::from_secs(30)).await;
    let waited = restarted.elapsed();
    assert_eq!(
        again[1].header("webhook-id"),
        first[0].header("webhook-id"),
        "the same delivery, attempted again"
    );
    if common::on_postgres() {
        // Cluster nodes lease under owners of their own: a node that only seems dead (paused,
        // cut off) may still be sending, so its deliveries wait for their lease (native
        // timeout + 15 s from the claim) — at most one node attempts a delivery at a time.
        assert!(
            waited < Duration::from_secs(28),
            "retried {waited:?} after the restart: later than the crashed node's lease"
        );
    } else {
        assert!(
            waited < Duration::from_secs(12),
            "retried {waited:?} after the restart: it waited for the crashed run's lease"
        );
    }
    drop(server);
}
