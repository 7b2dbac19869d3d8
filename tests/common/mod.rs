//! Test harness: starts the real server in-process on port 0 with a temporary database and
//! talks HTTP to it.
#![allow(dead_code)]

pub mod cluster;
pub mod process;
pub mod receiver;
pub mod ws;

use std::net::TcpListener;

use reachd::app::{self, Running};
use reachd::config::{Config, Secret};
use reachd::domain::store::{PresenceStore, Store};
use serde_json::Value;
use std::sync::Arc;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "test-auth-token-0123456789abcdef";

pub struct TestServer {
    pub base: String,
    pub dir: tempfile::TempDir,
    /// The configured `database`: a SQLite file in `dir`, or a PostgreSQL URL.
    pub database: std::path::PathBuf,
    pub running: Option<Running>,
    pub http: reqwest::Client,
    /// The in-process server's storage port (None for a server in another process): tests
    /// observe stored state through it, never by opening the database file — also after the
    /// server stopped.
    pub store: Option<(Arc<dyn Store>, Arc<dyn PresenceStore>)>,
}

/// A response: status and JSON body (Null when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn code(&self) -> i64 {
        self.body["code"].as_i64().unwrap_or(0)
    }
    pub fn str(&self, key: &str) -> String {
        self.body[key].as_str().unwrap_or_default().to_string()
    }
}

/// The database a test's server uses, picked by `REACHD_TEST_DATABASE` (the same variable the
/// Python and Node suites read): unset or `sqlite` is a fresh SQLite file in the test's
/// temporary folder; a `postgres://` URL names a PostgreSQL server (one that `.ci/run` started
/// with `tests/support/postgres.sh`) in which each test gets a fresh database of its own. Any
/// other value stops the suite with a message rather than testing something else than asked.
pub fn test_database(dir: &std::path::Path) -> std::path::PathBuf {
    match std::env::var("REACHD_TEST_DATABASE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => dir.join("reachd.db"),
        Ok(url) if reachd::config::is_postgres_url(url) => postgres_database_for(dir, url).into(),
        Ok(other) => panic!(
            "REACHD_TEST_DATABASE={}: give `sqlite` or a postgres:// URL",
            other.split("://").next().unwrap_or(other)
        ),
    }
}

/// The PostgreSQL database of a test folder: created on first use, the same one after (a
/// test that runs `reachd` several times in one folder sees one database, as with a file).
fn postgres_database_for(dir: &std::path::Path, url: &str) -> String {
    static DATABASES: std::sync::Mutex<Vec<(std::path::PathBuf, String)>> =
        std::sync::Mutex::new(Vec::new());
    let mut known = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, db)) = known.iter().find(|(d, _)| d == dir) {
        return db.clone();
    }
    let db = fresh_postgres_database(url);
    known.push((dir.to_path_buf(), db.clone()));
    db
}

/// Whether the suites run on PostgreSQL (`REACHD_TEST_DATABASE` is a postgres:// URL).
pub fn on_postgres() -> bool {
    std::env::var("REACHD_TEST_DATABASE").is_ok_and(|v| reachd::config::is_postgres_url(&v))
}

/// Creates an empty database on the server `url` names; its URL. Runs on a thread of its own:
/// the synchronous client may not run on the test's async runtime.
pub fn fresh_postgres_database(url: &str) -> String {
    let url = url.to_string();
    std::thread::spawn(move || {
        let name = format!("reachd_t_{}", uuid::Uuid::new_v4().simple());
        let mut client =
            postgres::Client::connect(&url, postgres::NoTls).expect("connect to PostgreSQL");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        let mut parsed = url::Url::parse(&url).expect("database URL");
        parsed.set_path(&name);
        parsed.to_string()
    })
    .join()
    .expect("creating a test database")
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::load_from(None, Vec::new()).expect("default config");
    config.database = test_database(dir);
    config.account_sid = Some(ACCOUNT_SID.to_string());
    config.auth_token = Some(Secret::new(AUTH_TOKEN));
    config.http.workers = 2;
    // Stored `/metrics` gauges follow changes within a tenth of a second.
    config.metrics.refresh_interval_ms = 100;
    // Many suites open and close one identity's sessions hundreds of times as fast as they
    // can; the tests of the per-identity write limit set their own.
    config.limits.client_write_burst = 1_000_000;
    config
}

pub async fn spawn() -> TestServer {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    adjust(&mut config);
    let database = config.database.clone();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let running = app::start(config, listener).await.expect("server starts");
    let base = format!("http://{}", running.addr);
    let store = Some((running.store.clone(), running.presence_store.clone()));
    TestServer {
        base,
        dir,
        database,
        store,
        running: Some(running),
        http: reqwest::Client::new(),
    }
}

/// Encodes pairs as a form body (repeated keys allowed).
pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            headers,
        }
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.authed(self.http.get(self.url(path)))).await
    }

    pub async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> Reply {
        let req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(pairs));
        self.send(self.authed(req)).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> Reply {
        self.send(self.authed(self.http.post(self.url(path)).json(&body)))
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.authed(self.http.delete(self.url(path))))
            .await
    }

    /// Creates a Chat v2 service and returns its SID.
    pub async fn service(&self, name: &str) -> String {
        let r = self
            .post("/chat/v2/Services", &[("FriendlyName", name)])
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.str("sid")
    }

    /// Creates a user and returns its SID.
    pub async fn user(&self, service: &str, identity: &str) -> String {
        let r = self
            .post(
                &format!("/chat/v2/Services/{service}/Users"),
                &[("Identity", identity)],
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.str("sid")
    }

    /// Registers a push binding through the native API.
    pub async fn binding(&self, service: &str, user: &str, kind: &str, address: &str) -> Value {
        let r = self
            .post_json(
                &format!("/api/v1/services/{service}/users/{user}/bindings"),
                serde_json::json!({"binding_type": kind, "address": address}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("clean stop");
        }
    }
}

/// A reachability event row, read straight from the database.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub identity: String,
    pub kind: String,
    pub cause: Option<String>,
    pub sequence: i64,
    pub is_online: Option<bool>,
    pub is_notifiable: Option<bool>,
}

/// The maintenance port (what `reachd keys` uses) on the database at `path`.
pub fn admin(path: &std::path::Path) -> Box<dyn reachd::domain::admin::AdminStore> {
    let mut config = Config::load_from(None, Vec::new()).expect("default config");
    config.database = path.to_path_buf();
    app::open_admin(&config, app::AdminOpening::Existing).expect("open the database")
}

/// A one-hour access token for `identity` in `service`, signed by the oldest live key of the
/// database at `path` (created if there is none).
pub fn mint_token(
    path: &std::path::Path,
    account_sid: &str,
    service: &str,
    identity: &str,
) -> String {
    let admin = admin(path);
    let key = match admin.first_live_api_key().expect("keys") {
        Some(key) => key,
        None => admin.create_api_key(None).expect("create a key"),
    };
    mint_with(account_sid, &key, service, identity)
}

/// A one-hour access token for `identity` in `service` of `account_sid`, signed by `key`.
pub fn mint_with(
    account_sid: &str,
    key: &reachd::domain::account::ApiKey,
    service: &str,
    identity: &str,
) -> String {
    reachd::tokens::mint(
        account_sid,
        &key.sid,
        &key.secret,
        service,
        identity,
        3600,
        None,
        chrono::Utc::now().timestamp(),
    )
    .expect("mint")
}

impl TestServer {
    /// The configured `database` (a file path, or a PostgreSQL URL).
    pub fn db_path(&self) -> std::path::PathBuf {
        self.database.clone()
    }

    fn port(&self) -> &(Arc<dyn Store>, Arc<dyn PresenceStore>) {
        self.store
            .as_ref()
            .expect("the server runs in this process")
    }

    /// A new service with reachability enabled; its SID.
    pub async fn enabled_service(&self, name: &str) -> String {
        let svc = self.service(name).await;
        let r = self
            .post(
                &format!("/chat/v2/Services/{svc}"),
                &[("ReachabilityEnabled", "true")],
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        svc
    }

    /// A native webhook endpoint of `svc` (JSON `spec`: url, event_types, …); its id.
    pub async fn native_endpoint(&self, svc: &str, spec: Value) -> String {
        let r = self
            .post_json(&format!("/api/v1/services/{svc}/webhooks"), spec)
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.str("id")
    }

    /// Events so far, oldest first, read through the storage port.
    pub fn events(&self) -> Vec<EventRow> {
        self.port()
            .0
            .events_since(0, 1_000_000)
            .expect("read events")
            .into_iter()
            .map(|e| EventRow {
                identity: e.identity,
                kind: e.kind.as_str().to_string(),
                cause: e.cause.map(|c| c.as_str().to_string()),
                sequence: e.sequence,
                is_online: e.is_online,
                is_notifiable: e.is_notifiable,
            })
            .collect()
    }

    /// Stored (resumable) sessions of `identity`, read through the storage port.
    pub fn stored_sessions(&self, identity: &str) -> usize {
        self.port()
            .1
            .load_presence()
            .expect("read sessions")
            .sessions
            .iter()
            .filter(|s| s.identity == identity)
            .count()
    }

    /// Creates an API key in the server's database.
    pub fn api_key(&self) -> reachd::domain::account::ApiKey {
        admin(&self.db_path())
            .create_api_key(Some("test"))
            .expect("key")
    }

    /// A valid access token for `identity` in `service`.
    pub fn token(&self, service: &str, identity: &str) -> String {
        mint_with(ACCOUNT_SID, &self.api_key(), service, identity)
    }

    /// A request to the client API with a bearer token.
    pub async fn client(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    /// Opens a client session and returns its id.
    pub async fn open_session(&self, token: &str) -> String {
        let r = self
            .client(
                reqwest::Method::POST,
                "/client/v1/sessions",
                token,
                Some(serde_json::json!({})),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.str("session_id")
    }

    /// Closes a client session (`DELETE /client/v1/sessions/{id}`).
    pub async fn close_session(&self, token: &str, id: &str) -> Reply {
        let path = format!("/client/v1/sessions/{id}");
        self.client(reqwest::Method::DELETE, &path, token, None)
            .await
    }

    /// Opens and closes a session `times` times (with no grace: two transitions each).
    pub async fn flip(&self, token: &str, times: usize) {
        for _ in 0..times {
            let id = self.open_session(token).await;
            assert_eq!(self.close_session(token, &id).await.status, 204);
        }
    }

    /// Sets a service's presence timings through the native API.
    pub async fn timings(&self, service: &str, ping: u64, ttl: u64, grace: u64) {
        let r = self
            .post_json(
                &format!("/api/v1/services/{service}/settings"),
                serde_json::json!({"ping_interval_ms": ping, "session_ttl_ms": ttl, "offline_grace_ms": grace}),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }

    /// A user's `is_online` as the Chat API shows it (`null` when reachability is off).
    pub async fn is_online(&self, service: &str, identity: &str) -> Value {
        self.get(&format!("/chat/v2/Services/{service}/Users/{identity}"))
            .await
            .body["is_online"]
            .clone()
    }

    /// Waits until the user's `is_online` is `want`: ending a session commits asynchronously.
    pub async fn until_online(&self, service: &str, identity: &str, want: bool) {
        let what = format!("{identity} is_online == {want}");
        eventually(&what, || async {
            self.is_online(service, identity).await == Value::Bool(want)
        })
        .await;
    }
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after 10 s (generous: the
/// suites run in debug builds on loaded machines).
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, std::time::Duration::from_secs(10), check).await;
}

/// [`eventually`] with its own deadline.
pub async fn eventually_within<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
