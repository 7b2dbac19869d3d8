//! Restarts don't flap (docs/ARCHITECTURE.md §4): a client pinging across a restart — `kill -9`
//! or SIGTERM — never shows an offline transition, and a session that expired while reachd was
//! down ends with exactly one `session_timeout`.

mod common;

use std::time::Duration;

use common::process::{Server, reachd};
use serde_json::{Value, json};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "restart-test-token-0123456789abcd";

fn start(dir: &std::path::Path) -> Server {
    let mut cmd = reachd(dir);
    cmd.env("REACHD_ACCOUNT_SID", SID)
        .env("REACHD_AUTH_TOKEN", TOKEN)
        .env("REACHD_PRESENCE__FLUSH_INTERVAL_MS", "300");
    Server::start(cmd)
}

struct Api {
    http: reqwest::blocking::Client,
    base: String,
}

impl Api {
    fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(SID, Some(TOKEN));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().expect("request");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().unwrap_or(Value::Null)
    }

    fn client(&self, path: &str, token: &str) -> u16 {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .expect("request");
        res.status().as_u16()
    }

    fn open(&self, token: &str) -> String {
        let res = self
            .http
            .post(format!("{}/client/v1/sessions", self.base))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .expect("open");
        assert_eq!(res.status(), 201);
        res.json::<Value>().expect("json")["session_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn service(&self, ttl: u64, grace: u64) -> String {
        let svc = self.admin(
            reqwest::Method::POST,
            "/conversations/v1/Services",
            Some(json!({"FriendlyName": "restart"})),
        );
        let sid = svc["sid"].as_str().unwrap_or_default().to_string();
        self.admin(
            reqwest::Method::POST,
            &format!("/chat/v2/Services/{sid}"),
            Some(json!({"ReachabilityEnabled": "true"})),
        );
        self.admin(
            reqwest::Method::POST,
            &format!("/api/v1/services/{sid}/settings"),
            Some(
                json!({"ping_interval_ms": 200, "session_ttl_ms": ttl, "offline_grace_ms": grace}),
            ),
        );
        sid
    }

    fn is_online(&self, service: &str, identity: &str) -> Value {
        self.admin(
            reqwest::Method::GET,
            &format!("/chat/v2/Services/{service}/Users/{identity}"),
            None,
        )["is_online"]
            .clone()
    }
}

fn api(server: &Server) -> Api {
    Api {
        http: reqwest::blocking::Client::new(),
        base: server.base(),
    }
}

fn token(db: &std::path::Path, service: &str, identity: &str) -> String {
    common::mint_token(db, SID, service, identity)
}

/// Pings every 200 ms for `millis`.
fn keep_pinging(api: &Api, session: &str, token: &str, millis: u64) {
    for _ in 0..millis / 200 {
        assert_eq!(
            api.client(&format!("/client/v1/sessions/{session}/ping"), token),
            204
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn restarts_do_not_flap_and_downtime_expiries_time_out_once() {
    if common::on_postgres() {
        // On PostgreSQL pings live in the node's memory only: a killed node's users go
        // offline once its lease lapses (`node_lost`), tested by the cluster suite.
        eprintln!("skipped: single-node kill -9 semantics (SQLite)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = common::test_database(&dir.path().join("data"));
    let server = start(dir.path());
    let a = api(&server);
    // The pinger's TTL outlasts the time from its last flushed expiry through the downtime and
    // a debug binary's start, with room to spare on a loaded machine.
    let steady = a.service(8_000, 500);
    let brief = a.service(1_000, 0);
    let pinger_token = token(&db, &steady, "pinger");
    let sleeper_token = token(&db, &brief, "sleeper");
    let pinger = a.open(&pinger_token);
    let sleeper = a.open(&sleeper_token);
    assert_eq!(a.is_online(&brief, "sleeper"), true);
    keep_pinging(&a, &pinger, &pinger_token, 600);

    // kill -9, stay down past the sleeper's expiry but inside the pinger's TTL.
    server.kill();
    std::thread::sleep(Duration::from_millis(1_500));
    let server = start(dir.path());
    let a = api(&server);
    keep_pinging(&a, &pinger, &pinger_token, 1_000);
    assert_eq!(a.is_online(&steady, "pinger"), true);
    assert_eq!(
        a.reachability_feed(&steady, "pinger"),
        vec![(true, "session_opened".to_string())],
        "no flap across kill -9"
    );
    assert_eq!(a.is_online(&brief, "sleeper"), false);
    assert_eq!(
        a.reachability_feed(&brief, "sleeper"),
        vec![
            (true, "session_opened".into()),
            (false, "session_timeout".into())
        ]
    );
    assert_eq!(
        a.client(
            &format!("/client/v1/sessions/{sleeper}/ping"),
            &sleeper_token
        ),
        404
    );

    // A graceful restart (SIGTERM) flushes sessions and reports nobody offline either.
    server.terminate();
    let server = start(dir.path());
    let a = api(&server);
    keep_pinging(&a, &pinger, &pinger_token, 1_000);
    assert_eq!(a.is_online(&steady, "pinger"), true);
    assert_eq!(
        a.reachability_feed(&steady, "pinger").len(),
        1,
        "no flap across SIGTERM"
    );
    // A second restart does not time the sleeper out again.
    assert_eq!(a.reachability_feed(&brief, "sleeper").len(), 2);
    drop(server);
}

fn parse_time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{value} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

/// The `last_ping` of `identity`'s one live session, from the sessions API.
fn last_ping(api: &Api, service: &str, identity: &str) -> chrono::DateTime<chrono::Utc> {
    let sessions = api.admin(
        reqwest::Method::GET,
        &format!("/api/v1/services/{service}/users/{identity}/sessions"),
        None,
    );
    let list = sessions["sessions"]
        .as_array()
        .cloned()
        .or_else(|| sessions.as_array().cloned())
        .unwrap_or_default();
    assert_eq!(list.len(), 1, "{sessions}");
    parse_time(&list[0]["last_ping"])
}

#[test]
fn restarts_keep_the_true_last_ping_and_last_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = common::test_database(&dir.path().join("data"));
    let server = start(dir.path());
    let a = api(&server);
    let steady = a.service(20_000, 0);
    let brief = a.service(1_000, 0);
    let pinger_token = token(&db, &steady, "pinger");
    let sleeper_token = token(&db, &brief, "sleeper");
    let pinger = a.open(&pinger_token);
    let sleeper = a.open(&sleeper_token);
    assert_eq!(
        a.client(&format!("/client/v1/sessions/{pinger}/ping"), &pinger_token),
        204
    );
    assert_eq!(
        a.client(
            &format!("/client/v1/sessions/{sleeper}/ping"),
            &sleeper_token
        ),
        204
    );
    let pinged = last_ping(&a, &steady, "pinger");
    let sleeper_pinged = last_ping(&a, &brief, "sleeper");

    // Down for longer than the sleeper's TTL, then up again: nobody pings meanwhile.
    server.terminate();
    std::thread::sleep(Duration::from_millis(2_000));
    let restarted = chrono::Utc::now();
    let server = start(dir.path());
    let a = api(&server);

    let after = last_ping(&a, &steady, "pinger");
    assert!(
        (after - pinged).num_milliseconds().abs() <= 5,
        "last_ping {after} changed across the restart (was {pinged})"
    );
    assert!(after < restarted, "last_ping {after} is the restart time");
    if common::on_postgres() {
        // Pings never reach PostgreSQL: what a killed node knew is lost with it (its users go
        // offline with `node_lost`, tested by the cluster suite).
        return;
    }
    // A flush after the restart writes the true value back, not the restart time: after it,
    // kill -9 and look again.
    std::thread::sleep(Duration::from_millis(1_000));
    server.kill();
    let server = start(dir.path());
    let a = api(&server);
    let reflushed = last_ping(&a, &steady, "pinger");
    assert!(
        (reflushed - pinged).num_milliseconds().abs() <= 5,
        "the first flush after the restart wrote {reflushed}, not {pinged}"
    );

    // The sleeper expired during the downtime: last seen is its last ping.
    assert_eq!(a.is_online(&brief, "sleeper"), false);
    let view = a.admin(
        reqwest::Method::GET,
        &format!("/api/v1/services/{brief}/reachability?identity=sleeper"),
        None,
    );
    let seen = parse_time(&view["users"][0]["last_seen"]);
    assert!(
        (seen - sleeper_pinged).num_milliseconds().abs() <= 5,
        "last_seen {seen} is not the last ping {sleeper_pinged} ({view})"
    );
    drop(server);
}

impl Api {
    /// `(is_online, reason)` of `identity`'s reachability events, from the event feed.
    fn reachability_feed(&self, service: &str, identity: &str) -> Vec<(bool, String)> {
        let feed = self.admin(
            reqwest::Method::GET,
            &format!("/api/v1/services/{service}/events?limit=1000"),
            None,
        );
        feed["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|e| e["type"] == "user.reachability_updated")
            .filter(|e| e["data"]["identity"] == identity)
            .map(|e| {
                (
                    e["data"]["is_online"].as_bool().unwrap_or(false),
                    e["data"]["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn close(&self, session: &str, token: &str) -> u16 {
        self.http
            .delete(format!("{}/client/v1/sessions/{session}", self.base))
            .bearer_auth(token)
            .send()
            .expect("close")
            .status()
            .as_u16()
    }
}

/// An acknowledged close is durable: `kill -9` right after the 204 never brings the session
/// back, and the user goes offline as closed (inside the grace, the offline transition was not
/// committed yet: the restart commits it with the close's cause).
#[test]
fn an_acknowledged_close_survives_kill_9() {
    if common::on_postgres() {
        // On PostgreSQL pings live in the node's memory only: a killed node's users go
        // offline once its lease lapses (`node_lost`), tested by the cluster suite.
        eprintln!("skipped: single-node kill -9 semantics (SQLite)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = common::test_database(&dir.path().join("data"));
    let mut server = start(dir.path());
    let a = api(&server);
    let service = a.service(60_000, 3_000);
    for trial in 0..3 {
        let a = api(&server);
        let identity = format!("closer{trial}");
        let token = token(&db, &service, &identity);
        let session = a.open(&token);
        assert_eq!(a.close(&session, &token), 204);
        server.kill();
        server = start(dir.path());
        let a = api(&server);
        assert_eq!(
            a.client(&format!("/client/v1/sessions/{session}/ping"), &token),
            404,
            "trial {trial}: the closed session came back"
        );
        assert_eq!(a.is_online(&service, &identity), false, "trial {trial}");
        assert_eq!(
            a.reachability_feed(&service, &identity),
            vec![
                (true, "session_opened".to_string()),
                (false, "session_closed".to_string())
            ],
            "trial {trial}"
        );
    }
    drop(server);
}
