//! `reachd copy-database`: a deployment built on SQLite through the HTTP API, copied into a
//! fresh PostgreSQL database, answers every read the same from PostgreSQL (services, paged
//! users, a user, bindings, credentials, webhook endpoints and their delivery log, the event
//! feed with its cursors and `Last-Event-ID`), new SIDs and event ids continue after the copied
//! ones, and the copy is refused beside a running server and into a database that holds data.
//! Runs when `REACHD_TEST_DATABASE` is a postgres:// URL; the argument checks run always.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::process::{Server, reachd_on, succeeded};
use serde_json::{Value, json};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "copy-database-token-0123456789abcdef";
/// Both servers render the same URLs (links, paging) whatever port they listen on.
const PUBLIC: &str = "http://reachd.test";
/// Appears in the target URL given to the command, never in what it prints.
const PASSWORD: &str = "pw-that-must-not-show";

/// A server (or command) on `database` with the test's account, public URL and a one-hour
/// retry delay (a failed delivery stays pending, untouched, across the move).
fn on(dir: &Path, database: &OsStr) -> Command {
    let mut cmd = reachd_on(dir, database);
    cmd.env("REACHD_ACCOUNT_SID", SID)
        .env("REACHD_AUTH_TOKEN", TOKEN)
        .env("REACHD_PUBLIC_URL", PUBLIC)
        .env("REACHD_WEBHOOKS__RETRY_SCHEDULE_SECS", "[3600]");
    cmd
}

struct Api {
    base: String,
    http: reqwest::blocking::Client,
}

impl Api {
    fn new(server: &Server) -> Api {
        Api {
            base: server.base(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    /// A path, or a URL rendered with the public base, on this server.
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path.strip_prefix(PUBLIC).unwrap_or(path))
    }

    fn get(&self, path: &str) -> Value {
        let res = self
            .http
            .get(self.url(path))
            .basic_auth(SID, Some(TOKEN))
            .send()
            .expect("request");
        assert_eq!(res.status().as_u16(), 200, "GET {path}");
        res.json().expect("JSON")
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let res = self
            .http
            .post(self.url(path))
            .basic_auth(SID, Some(TOKEN))
            .form(form)
            .send()
            .expect("request");
        assert!(res.status().is_success(), "POST {path}: {}", res.status());
        res.json().expect("JSON")
    }

    fn post_json(&self, path: &str, body: Value) -> Value {
        let res = self
            .http
            .post(self.url(path))
            .basic_auth(SID, Some(TOKEN))
            .json(&body)
            .send()
            .expect("request");
        assert_eq!(res.status().as_u16(), 201, "POST {path}");
        res.json().expect("JSON")
    }

    fn delete(&self, path: &str) {
        let res = self
            .http
            .delete(self.url(path))
            .basic_auth(SID, Some(TOKEN))
            .send()
            .expect("request");
        assert_eq!(res.status().as_u16(), 204, "DELETE {path}");
    }

    /// Every page of a Twilio-style list, following `meta.next_page_url`.
    fn pages(&self, first: &str) -> Vec<Value> {
        let mut pages = vec![self.get(first)];
        while let Some(next) = pages
            .last()
            .and_then(|p| p["meta"]["next_page_url"].as_str())
        {
            let next = next.to_string();
            pages.push(self.get(&next));
        }
        pages
    }

    /// Every page of a service's event feed, `limit` events at a time, following
    /// `next_cursor` while `has_more`.
    fn feed(&self, service: &str, limit: usize) -> Vec<Value> {
        let mut pages = vec![self.get(&format!("/api/v1/services/{service}/events?limit={limit}"))];
        while pages.last().is_some_and(|p| p["has_more"] == json!(true)) {
            let cursor = pages.last().map(|p| p["next_cursor"].clone());
            let cursor = cursor.and_then(|c| c.as_str().map(str::to_string));
            let cursor = cursor.expect("a cursor when there is more");
            pages.push(self.get(&format!(
                "/api/v1/services/{service}/events?limit={limit}&after={cursor}"
            )));
        }
        pages
    }

    /// The id of the first event the stream sends after `last_event_id`.
    fn streamed_after(&self, service: &str, last_event_id: i64) -> i64 {
        let res = self
            .http
            .get(self.url(&format!("/api/v1/services/{service}/events")))
            .basic_auth(SID, Some(TOKEN))
            .header("accept", "text/event-stream")
            .header("last-event-id", last_event_id.to_string())
            .send()
            .expect("stream");
        assert_eq!(res.status().as_u16(), 200);
        for line in BufReader::new(res).lines() {
            let line = line.expect("a stream line");
            if let Some(id) = line.strip_prefix("id:") {
                return id.trim().parse().expect("a numeric event id");
            }
        }
        panic!("the stream ended without an event");
    }
}

/// Ids of a service's events, in feed order.
fn event_ids(pages: &[Value]) -> Vec<i64> {
    pages
        .iter()
        .flat_map(|p| p["events"].as_array().cloned().unwrap_or_default())
        .map(|e| e["id"].as_str().expect("id").parse().expect("numeric id"))
        .collect()
}

/// Everything the deployment answers, by request.
fn reads(api: &Api, a: &str, b: &str, alice: &str, endpoint: &str) -> BTreeMap<String, Value> {
    let mut answers = BTreeMap::new();
    let mut one = |path: String| {
        let value = api.get(&path);
        answers.insert(path, value);
    };
    one("/chat/v2/Services".into());
    one(format!("/chat/v2/Services/{a}"));
    one(format!("/chat/v2/Services/{b}"));
    one(format!("/chat/v2/Services/{a}/Users/{alice}"));
    one(format!("/chat/v2/Services/{a}/Users/bob"));
    one(format!("/chat/v1/Services/{a}/Users/{alice}"));
    one(format!("/chat/v2/Services/{a}/Bindings"));
    one(format!("/chat/v2/Services/{a}/Users/{alice}/Bindings"));
    one("/chat/v2/Credentials".into());
    one(format!("/api/v1/services/{a}/webhooks"));
    one(format!(
        "/api/v1/services/{a}/webhooks/{endpoint}/deliveries"
    ));
    for (i, page) in api
        .pages(&format!("/chat/v2/Services/{a}/Users?PageSize=2"))
        .into_iter()
        .enumerate()
    {
        answers.insert(format!("users page {i:02}"), page);
    }
    for (i, page) in api.feed(a, 3).into_iter().enumerate() {
        answers.insert(format!("events page {i:02}"), page);
    }
    answers
}

/// The rows-per-table lines of the command's report.
fn copied_rows(stdout: &str) -> BTreeMap<String, u64> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (table, rows) = (words.next()?, words.next()?.parse().ok()?);
            words.next().is_none().then(|| (table.to_string(), rows))
        })
        .collect()
}

fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The deliveries of the endpoint's log, once each queue head has made its (failing) first
/// attempt and waits an hour for the next.
fn settled_deliveries(api: &Api, a: &str, endpoint: &str, users: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = api.get(&format!(
            "/api/v1/services/{a}/webhooks/{endpoint}/deliveries"
        ));
        let deliveries = log["deliveries"].as_array().cloned().unwrap_or_default();
        let attempted = deliveries
            .iter()
            .filter(|d| d["attempts"].as_i64() == Some(1))
            .count();
        if attempted == users {
            return deliveries;
        }
        assert!(
            Instant::now() < deadline,
            "the first attempts did not happen: {log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_sqlite_deployment_copied_to_postgres_answers_the_same_and_continues() {
    if !common::on_postgres() {
        eprintln!("skipped: REACHD_TEST_DATABASE is not a postgres:// URL");
        return;
    }
    let server_url = std::env::var("REACHD_TEST_DATABASE").expect("checked");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = dir.path().join("reachd.db");

    // A deployment on SQLite, built through the API.
    let server = Server::start(on(dir.path(), sqlite.as_os_str()));
    let api = Api::new(&server);
    let a = api.post("/chat/v2/Services", &[("FriendlyName", "alpha")])["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    let b = api.post("/chat/v2/Services", &[("FriendlyName", "beta")])["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    let endpoint = api.post_json(
        &format!("/api/v1/services/{a}/webhooks"),
        json!({"url": "http://127.0.0.1:1/hook", "description": "unreachable"}),
    )["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut sids = Vec::new();
    for identity in ["alice", "bob", "carol", "dave", "eve"] {
        let user = api.post(
            &format!("/chat/v2/Services/{a}/Users"),
            &[
                ("Identity", identity),
                ("FriendlyName", &format!("{identity} in alpha")),
                ("Attributes", &format!("{{\"n\":\"{identity}\"}}")),
            ],
        );
        sids.push(user["sid"].as_str().expect("sid").to_string());
    }
    sids.push(
        api.post(
            &format!("/chat/v2/Services/{b}/Users"),
            &[("Identity", "zed")],
        )["sid"]
            .as_str()
            .expect("sid")
            .to_string(),
    );
    let alice = sids[0].clone();
    api.post(
        &format!("/chat/v2/Services/{a}/Users/bob"),
        &[("FriendlyName", "Bob B.")],
    );
    api.delete(&format!("/chat/v2/Services/{a}/Users/eve"));
    api.post(
        &format!("/chat/v2/Services/{a}"),
        &[("ReachabilityEnabled", "true")],
    );
    api.post(
        "/chat/v2/Credentials",
        &[
            ("Type", "fcm"),
            ("FriendlyName", "push"),
            ("Secret", "fcm-server-key"),
        ],
    );
    for (user, kind, address) in [("alice", "fcm", "token-a"), ("bob", "apn", "token-b")] {
        api.post_json(
            &format!("/api/v1/services/{a}/users/{user}/bindings"),
            json!({"binding_type": kind, "address": address}),
        );
    }
    let key: Value = serde_json::from_str(
        succeeded(
            &on(dir.path(), sqlite.as_os_str())
                .args(["keys", "create", "--friendly-name", "backend"])
                .output()
                .expect("keys create"),
        )
        .trim(),
    )
    .expect("key JSON");
    // alice..eve each have a queue at the endpoint; each head fails once and waits an hour.
    let deliveries = settled_deliveries(&api, &a, &endpoint, 5);
    let before = reads(&api, &a, &b, &alice, &endpoint);
    let feed = api.feed(&a, 100);
    let ids = event_ids(&feed);
    let last = *ids.last().expect("events");
    let cursor = feed[feed.len() - 1]["next_cursor"]
        .as_str()
        .expect("the feed's cursor")
        .to_string();
    assert_eq!(
        ids,
        (1..=last).filter(|id| *id != 6).collect::<Vec<_>>(),
        "zed's user.added (6) is in beta"
    );
    assert_eq!(
        before["users page 00"]["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| u["identity"].as_str().expect("identity"))
            .collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert!(before.contains_key("users page 01") && !before.contains_key("users page 02"));
    let keys_before = succeeded(
        &on(dir.path(), sqlite.as_os_str())
            .args(["keys", "list"])
            .output()
            .expect("keys list"),
    );

    // Refused while the server runs on the file.
    let target = common::fresh_postgres_database(&server_url);
    let mut with_password = url::Url::parse(&target).expect("URL");
    with_password
        .set_password(Some(PASSWORD))
        .expect("password");
    let copy = || {
        on(dir.path(), sqlite.as_os_str())
            .args(["copy-database", "--to", with_password.as_str()])
            .output()
            .expect("copy-database")
    };
    let err = failed(&copy());
    assert!(err.contains("a reachd server is running on"), "{err}");
    server.terminate();

    let out = copy();
    let stdout = succeeded(&out);
    assert!(
        !stdout.contains(PASSWORD) && stdout.contains(":***@"),
        "{stdout}"
    );
    let attempts: usize = deliveries
        .iter()
        .map(|d| d["attempt_log"].as_array().map_or(0, Vec::len))
        .sum();
    let expected: BTreeMap<String, u64> = [
        ("account", 1),
        ("api_keys", 1),
        ("services", 2),
        ("users", 5),
        ("bindings", 2),
        ("credentials", 1),
        ("events", last as u64),
        ("webhook_endpoints", 1),
        ("deliveries", deliveries.len() as u64),
        ("delivery_attempts", attempts as u64),
    ]
    .into_iter()
    .map(|(t, n)| (t.to_string(), n))
    .collect();
    assert_eq!(copied_rows(&stdout), expected, "{stdout}");
    assert!(
        stdout.contains(&format!("the next event id is {}", last + 1)),
        "{stdout}"
    );
    assert!(stdout.contains("not copied: sessions (0 rows)"), "{stdout}");

    // The same answers from PostgreSQL.
    let server = Server::start(on(dir.path(), OsStr::new(&target)));
    let api = Api::new(&server);
    let after = reads(&api, &a, &b, &alice, &endpoint);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (request, answer) in &before {
        assert_eq!(&after[request], answer, "{request}");
    }
    let keys_after = succeeded(
        &on(dir.path(), OsStr::new(&target))
            .args(["keys", "list"])
            .output()
            .expect("keys list"),
    );
    assert_eq!(keys_after, keys_before);
    assert!(keys_after.contains(key["sid"].as_str().expect("key sid")));
    assert_eq!(
        api.streamed_after(&a, last - 1),
        last,
        "Last-Event-ID resumes"
    );

    // New rows continue after the copied ones.
    let frank = api.post(
        &format!("/chat/v2/Services/{a}/Users"),
        &[("Identity", "frank")],
    );
    let frank_sid = frank["sid"].as_str().expect("sid");
    assert!(frank_sid.starts_with("US") && !sids.iter().any(|s| s == frank_sid));
    let newer = api.get(&format!("/api/v1/services/{a}/events?after={cursor}"));
    assert_eq!(newer["events"][0]["id"], json!((last + 1).to_string()));
    assert_eq!(newer["events"][0]["type"], json!("user.added"));
    assert_eq!(newer["events"][0]["data"]["user_sid"], json!(frank_sid));
    let users = api.pages(&format!("/chat/v2/Services/{a}/Users?PageSize=2"));
    let identities: Vec<&str> = users
        .iter()
        .flat_map(|p| p["users"].as_array().expect("users"))
        .map(|u| u["identity"].as_str().expect("identity"))
        .collect();
    assert_eq!(identities, ["alice", "bob", "carol", "dave", "frank"]);
    server.terminate();

    // A second copy into the now non-empty database is refused, and changes nothing.
    let err = failed(&copy());
    assert!(err.contains("already holds reachd data"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    let server = Server::start(on(dir.path(), OsStr::new(&target)));
    let api = Api::new(&server);
    let users = api.get(&format!("/chat/v2/Services/{a}/Users"));
    assert_eq!(users["users"].as_array().map(Vec::len), Some(5));
    server.terminate();
}

#[test]
fn copy_database_refuses_what_it_cannot_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.db");
    let url = format!("postgres://reachd:{PASSWORD}@127.0.0.1:1/reachd");

    let not_a_url = failed(
        &on(dir.path(), missing.as_os_str())
            .args(["copy-database", "--to", "other.db"])
            .output()
            .expect("run"),
    );
    assert!(
        not_a_url.contains("postgres:// or postgresql:// URL"),
        "{not_a_url}"
    );

    let no_file = failed(
        &on(dir.path(), missing.as_os_str())
            .args(["copy-database", "--to", &url])
            .output()
            .expect("run"),
    );
    assert!(no_file.contains("no SQLite database at"), "{no_file}");
    assert!(!missing.exists(), "the source is never created");

    let from_postgres = failed(
        &on(dir.path(), OsStr::new(&url))
            .args(["copy-database", "--to", &url])
            .output()
            .expect("run"),
    );
    assert!(from_postgres.contains("--from FILE"), "{from_postgres}");
    assert!(!from_postgres.contains(PASSWORD), "{from_postgres}");

    // Through the environment, the URL stays off the command line.
    let from_env = failed(
        &on(dir.path(), missing.as_os_str())
            .arg("copy-database")
            .env("REACHD_COPY_TO", "mysql://x")
            .output()
            .expect("run"),
    );
    assert!(
        from_env.contains("postgres:// or postgresql:// URL"),
        "{from_env}"
    );
}
