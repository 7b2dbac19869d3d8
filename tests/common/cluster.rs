//! Cluster harness: several real `reachd serve` processes on one fresh PostgreSQL database,
//! each behind a TCP proxy of its own so a test can cut one node from the database, plus the
//! HTTP, WebSocket and event-feed helpers the cluster suite needs. Signals go through the
//! `kill` command; every process started here is killed when its handle drops.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::process::{BIN, Server};
use super::receiver::read_request;
use super::{ACCOUNT_SID, AUTH_TOKEN, Reply};

/// One test at a time: every scenario starts several debug servers and measures lease
/// timings, which parallel scenarios on a two-core machine would starve.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs an async scenario on a multi-threaded runtime of its own, holding the suite's lock.
pub fn run<F: std::future::Future<Output = ()>>(scenario: F) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(scenario);
}

/// Whether to skip: the cluster suite needs `REACHD_TEST_DATABASE=postgres://…`.
pub fn skip() -> bool {
    if super::on_postgres() {
        return false;
    }
    eprintln!(
        "skipped: REACHD_TEST_DATABASE is not a postgres:// URL (cluster mode needs PostgreSQL)"
    );
    true
}

/// Runs a blocking closure on a thread of its own (the synchronous PostgreSQL client may not
/// run on a runtime thread).
pub fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().expect("blocking helper")
}

// ------------------------------------------------------------------------------------ proxy

/// A TCP proxy in front of PostgreSQL on a thread and runtime of its own (so a test that
/// blocks never stalls a node's database traffic). `cut` drops every open connection and
/// refuses new ones (accepted and closed at once) until `restore`.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: String) -> Proxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let stop = CancellationToken::new();
        let (c, k, s) = (cut.clone(), conns.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                loop {
                    let accepted = tokio::select! {
                        _ = s.cancelled() => break,
                        a = listener.accept() => a,
                    };
                    let Ok((mut client, _)) = accepted else {
                        continue;
                    };
                    if c.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    let mut all = k.lock().unwrap_or_else(|e| e.into_inner());
                    all.retain(|h| !h.is_finished());
                    all.push(task.abort_handle());
                }
                for h in k.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                    h.abort();
                }
            });
        });
        Proxy {
            port,
            cut,
            conns,
            stop,
            thread: Some(thread),
        }
    }

    /// Drops every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for h in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------------------------------ nodes

/// Settings of one cluster.
#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    pub lease_ms: u64,
    /// Extra `REACHD_*` variables for every node.
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn new(nodes: usize, lease_ms: u64) -> Options {
        Options {
            nodes,
            lease_ms,
            env: Vec::new(),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Options {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// One `reachd serve` of the cluster (its process may be stopped and started again).
pub struct Node {
    pub name: String,
    pub proxy: Proxy,
    pub server: Option<Server>,
    /// `http://ADDR` of the running (or last) process.
    pub base: String,
    pub log: PathBuf,
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.server.as_ref().expect("node runs").child.id()
    }
}

/// N nodes on one fresh database.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// The database's own URL (the nodes reach it through their proxies).
    pub database: String,
    pub options: Options,
    pub nodes: Vec<Node>,
    pub api: Api,
    key: Option<reachd::domain::account::ApiKey>,
}

impl Cluster {
    /// Starts `options.nodes` nodes on a fresh database of the `REACHD_TEST_DATABASE` server.
    pub fn start(options: Options) -> Cluster {
        let server = std::env::var("REACHD_TEST_DATABASE").expect("REACHD_TEST_DATABASE");
        Self::start_on(&server, options)
    }

    /// Starts the nodes on a fresh database of the PostgreSQL server `server_url`.
    pub fn start_on(server_url: &str, options: Options) -> Cluster {
        let url = server_url.to_string();
        let database = off_runtime(move || super::fresh_postgres_database(&url));
        let dir = tempfile::tempdir().expect("tempdir");
        let parsed = url::Url::parse(&database).expect("database URL");
        let upstream = format!(
            "{}:{}",
            parsed.host_str().unwrap_or("127.0.0.1"),
            parsed.port().unwrap_or(5432)
        );
        let mut nodes = Vec::new();
        for i in 0..options.nodes {
            let name = format!("node{i}");
            let node = Node {
                proxy: Proxy::start(upstream.clone()),
                server: None,
                base: String::new(),
                log: dir.path().join(format!("{name}.log")),
                name,
            };
            nodes.push(node);
        }
        let mut cluster = Cluster {
            dir,
            database: database.clone(),
            options,
            nodes,
            api: Api::new(),
            key: None,
        };
        // The first node creates the schema; the others join it.
        for i in 0..cluster.nodes.len() {
            cluster.start_node(i);
        }
        let db = PathBuf::from(database);
        cluster.key = Some(off_runtime(move || {
            super::admin(&db)
                .create_api_key(Some("cluster"))
                .expect("create a key")
        }));
        cluster
    }

    /// The command that runs node `i` (through its proxy).
    fn command(&self, i: usize) -> Command {
        let node = &self.nodes[i];
        let mut url = url::Url::parse(&self.database).expect("database URL");
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(node.proxy.port)).expect("port");
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("REACHD_DATABASE", url.as_str())
            .env("REACHD_LISTEN", "127.0.0.1:0")
            .env("REACHD_LOG", "warn")
            .env("REACHD_ACCOUNT_SID", ACCOUNT_SID)
            .env("REACHD_AUTH_TOKEN", AUTH_TOKEN)
            .env("REACHD_CLUSTER__NODE_ID", &node.name)
            .env(
                "REACHD_CLUSTER__LEASE_MS",
                self.options.lease_ms.to_string(),
            )
            .env("REACHD_HTTP__WORKERS", "2")
            .env("REACHD_HTTP__SHUTDOWN_TIMEOUT_SECS", "5")
            .env("REACHD_STORAGE__READ_POOL_SIZE", "3")
            .env("REACHD_STORAGE__BUSY_TIMEOUT_MS", "1000")
            .env("REACHD_LIMITS__CLIENT_WRITE_BURST", "1000000")
            .env("REACHD_LIMITS__CLIENT_WRITES_PER_SECOND", "1000000")
            .env("REACHD_WEBHOOKS__ALLOW_PRIVATE_NETWORKS", "true");
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts (or starts again) node `i`, logging to its log file; waits until it listens.
    pub fn start_node(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.nodes[i].log)
            .expect("log file");
        let cmd = self.command(i);
        let server = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Server::start_logging(cmd, log)
        }))
        .unwrap_or_else(|_| {
            panic!(
                "{} did not start; its log:\n{}",
                self.nodes[i].name,
                std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
            )
        });
        self.nodes[i].base = server.base();
        self.nodes[i].server = Some(server);
    }

    pub fn base(&self, i: usize) -> &str {
        &self.nodes[i].base
    }

    /// `kill -9` of node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(server) = self.nodes[i].server.take() {
            server.kill();
        }
    }

    /// SIGTERM of node `i`, waiting for its clean exit.
    pub fn terminate(&mut self, i: usize) {
        if let Some(server) = self.nodes[i].server.take() {
            server.terminate();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to node `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.nodes[i].pid().to_string())
            .stdin(Stdio::null())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The last lines of every node's log (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!("--- {} ---\n{}\n", node.name, tail.join("\n")));
        }
        out
    }

    /// A one-hour access token for `identity` in `service`.
    pub fn token(&self, service: &str, identity: &str) -> String {
        let key = self.key.as_ref().expect("the cluster's API key");
        super::mint_with(ACCOUNT_SID, key, service, identity)
    }

    /// A service with reachability enabled and the given timings (created through node 0
    /// before any other node reads it); its SID.
    pub async fn service(&self, ping_ms: u64, ttl_ms: u64, grace_ms: u64) -> String {
        let base = self.base(0);
        let r = self
            .api
            .admin_form(base, "/chat/v2/Services", &[("FriendlyName", "cluster")])
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let sid = r.str("sid");
        let r = self
            .api
            .admin_form(
                base,
                &format!("/chat/v2/Services/{sid}"),
                &[("ReachabilityEnabled", "true")],
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let r = self
            .api
            .admin_json(
                base,
                Method::POST,
                &format!("/api/v1/services/{sid}/settings"),
                json!({"ping_interval_ms": ping_ms, "session_ttl_ms": ttl_ms, "offline_grace_ms": grace_ms}),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        sid
    }
}

// -------------------------------------------------------------------------------------- HTTP

/// HTTP calls to any node; a transport failure (refused, reset, timeout) is status 0.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
}

impl Default for Api {
    fn default() -> Self {
        Self::new()
    }
}

impl Api {
    pub fn new() -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .build()
                .expect("client"),
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = match req.send().await {
            Ok(res) => res,
            Err(e) => {
                return Reply {
                    status: 0,
                    body: Value::String(e.to_string()),
                    headers: Default::default(),
                };
            }
        };
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap_or_default();
        Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        }
    }

    pub async fn admin_form(&self, base: &str, path: &str, pairs: &[(&str, &str)]) -> Reply {
        let req = self
            .http
            .post(format!("{base}{path}"))
            .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(super::form(pairs));
        self.send(req).await
    }

    pub async fn admin_json(&self, base: &str, method: Method, path: &str, body: Value) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN));
        if !body.is_null() {
            req = req.json(&body);
        }
        self.send(req).await
    }

    pub async fn get(&self, base: &str, path: &str) -> Reply {
        self.admin_json(base, Method::GET, path, Value::Null).await
    }

    pub async fn client(
        &self,
        base: &str,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    /// `POST /client/v1/sessions` (optionally resuming `resume`).
    pub async fn open(&self, base: &str, token: &str, resume: Option<&str>) -> Reply {
        let body = match resume {
            Some(id) => json!({ "resume": id }),
            None => json!({}),
        };
        self.client(base, Method::POST, "/client/v1/sessions", token, Some(body))
            .await
    }

    /// Opens a session that must succeed; its id.
    pub async fn open_ok(&self, base: &str, token: &str) -> String {
        let r = self.open(base, token, None).await;
        assert_eq!(r.status, 201, "open on {base}: {:?}", r.body);
        r.str("session_id")
    }

    pub async fn ping(&self, base: &str, token: &str, id: &str) -> u16 {
        self.client(
            base,
            Method::POST,
            &format!("/client/v1/sessions/{id}/ping"),
            token,
            Some(json!({})),
        )
        .await
        .status
    }

    pub async fn close(&self, base: &str, token: &str, id: &str) -> u16 {
        self.client(
            base,
            Method::DELETE,
            &format!("/client/v1/sessions/{id}"),
            token,
            None,
        )
        .await
        .status
    }

    /// A user's `is_online` through the Chat API of one node.
    pub async fn is_online(&self, base: &str, svc: &str, identity: &str) -> Value {
        let r = self
            .get(base, &format!("/chat/v2/Services/{svc}/Users/{identity}"))
            .await;
        r.body["is_online"].clone()
    }

    /// Waits until `identity`'s `is_online` is `want` on the node at `base`.
    pub async fn until_online(&self, base: &str, svc: &str, identity: &str, want: bool) {
        super::eventually(
            &format!("{identity} is_online == {want} on {base}"),
            || async move { self.is_online(base, svc, identity).await == Value::Bool(want) },
        )
        .await;
    }

    /// One page of the event feed after `after`; None when the node did not answer 200.
    pub async fn feed_page(&self, base: &str, svc: &str, after: i64) -> Option<(Vec<Ev>, bool)> {
        let r = self
            .get(
                base,
                &format!("/api/v1/services/{svc}/events?after={after}&limit=1000"),
            )
            .await;
        if r.status != 200 {
            return None;
        }
        let events = r.body["events"]
            .as_array()
            .map(|all| all.iter().map(Ev::from_json).collect())
            .unwrap_or_default();
        Some((events, r.body["has_more"].as_bool().unwrap_or(false)))
    }

    /// The whole event feed after `after` (every page), or None when a page failed.
    pub async fn try_feed(&self, base: &str, svc: &str, after: i64) -> Option<Vec<Ev>> {
        let mut all: Vec<Ev> = Vec::new();
        let mut cursor = after;
        loop {
            let (page, more) = self.feed_page(base, svc, cursor).await?;
            if let Some(last) = page.last() {
                cursor = last.id;
            }
            let empty = page.is_empty();
            all.extend(page);
            if !more || empty {
                return Some(all);
            }
        }
    }

    /// The whole event feed after `after`; panics if the node does not answer.
    pub async fn feed(&self, base: &str, svc: &str, after: i64) -> Vec<Ev> {
        self.try_feed(base, svc, after)
            .await
            .unwrap_or_else(|| panic!("event feed of {base} did not answer"))
    }

    /// The id of the newest event of the service (0 if none).
    pub async fn cursor(&self, base: &str, svc: &str) -> i64 {
        self.feed(base, svc, 0).await.last().map_or(0, |e| e.id)
    }
}

/// One event of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub id: i64,
    pub kind: String,
    pub identity: String,
    pub online: Option<bool>,
    pub reason: String,
    pub sequence: i64,
}

impl Ev {
    pub fn from_json(v: &Value) -> Ev {
        Ev {
            id: v["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| v["id"].as_i64())
                .unwrap_or(-1),
            kind: v["type"].as_str().unwrap_or_default().to_string(),
            identity: v["data"]["identity"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            online: v["data"]["is_online"].as_bool(),
            reason: v["data"]["reason"].as_str().unwrap_or_default().to_string(),
            sequence: v["data"]["sequence"].as_i64().unwrap_or(-1),
        }
    }

    pub fn is_reachability(&self) -> bool {
        self.kind == "user.reachability_updated"
    }
}

/// The `(is_online, reason)` of `identity`'s reachability events among `events`.
pub fn transitions(events: &[Ev], identity: &str) -> Vec<(bool, String)> {
    events
        .iter()
        .filter(|e| e.is_reachability() && e.identity == identity)
        .map(|e| (e.online.unwrap_or(false), e.reason.clone()))
        .collect()
}

/// When each of `identities` first showed an offline event in the feed of the node at
/// `base` after `cursor`, polled every 50 ms from `since`: `(first seen, start of the last
/// poll that did not show it)`, both measured from `since`. The event was committed after the
/// second instant and no later than the first. Panics after `timeout`.
pub async fn watch_offline(
    api: &Api,
    base: &str,
    svc: &str,
    cursor: i64,
    identities: &[String],
    since: Instant,
    timeout: Duration,
) -> std::collections::HashMap<String, (Duration, Duration)> {
    let mut found = std::collections::HashMap::new();
    let mut last_miss = Duration::ZERO;
    loop {
        let started = since.elapsed();
        if let Some(events) = api.try_feed(base, svc, cursor).await {
            let seen_at = since.elapsed();
            for who in identities {
                if found.contains_key(who) {
                    continue;
                }
                let offline = events
                    .iter()
                    .any(|e| e.is_reachability() && &e.identity == who && e.online == Some(false));
                if offline {
                    found.insert(who.clone(), (seen_at, last_miss));
                }
            }
            if found.len() == identities.len() {
                return found;
            }
            last_miss = started;
        }
        assert!(
            since.elapsed() < timeout,
            "after {timeout:?} only {:?} of {identities:?} went offline",
            found.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --------------------------------------------------------------------------------- WebSocket

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/client/v1/socket` on the node at `base` (optionally resuming `resume`).
pub async fn ws_connect(base: &str, token: &str, resume: Option<&str>) -> Result<Ws, String> {
    let mut url = format!(
        "{}/client/v1/socket?token={token}",
        base.replace("http://", "ws://")
    );
    if let Some(id) = resume {
        url.push_str(&format!("&resume={id}"));
    }
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("upgrade timed out".into()),
    }
}

/// The next JSON message (skipping control frames); Err(true) when the socket closed or
/// failed, Err(false) when nothing arrived within `wait`.
pub async fn ws_next(ws: &mut Ws, wait: Duration) -> Result<Value, bool> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str(&t) {
                Ok(v) => return Ok(v),
                Err(_) => continue,
            },
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => return Err(true),
            Ok(Some(Ok(_))) => continue,
            Err(_) => return Err(false),
        }
    }
}

/// Connects a socket and reads its `ready`; `(socket, session id, resumed)`.
pub async fn ws_session(
    base: &str,
    token: &str,
    resume: Option<&str>,
) -> Result<(Ws, String, bool), String> {
    let mut ws = ws_connect(base, token, resume).await?;
    match ws_next(&mut ws, Duration::from_secs(10)).await {
        Ok(ready) if ready["type"] == "ready" => {
            let id = ready["session_id"].as_str().unwrap_or_default().to_string();
            let resumed = ready["resumed"].as_bool().unwrap_or(false);
            Ok((ws, id, resumed))
        }
        Ok(other) => Err(format!("expected ready, got {other}")),
        Err(_) => Err("socket closed before ready".into()),
    }
}

pub async fn ws_send(ws: &mut Ws, v: Value) -> bool {
    futures_util::SinkExt::send(ws, Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

/// Whether the server closes the socket within `wait` (messages before the close ignored).
pub async fn ws_closed_within(ws: &mut Ws, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match ws_next(ws, left).await {
            Ok(_) => continue,
            Err(closed) => return closed,
        }
    }
}

/// The close code the server closes the socket with within `wait` (messages before the close
/// ignored): `None` if it stays open, `Some(0)` if it goes without a close frame.
pub async fn ws_close_code_within(ws: &mut Ws, wait: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Some(frame.map_or(0, |f| u16::from(f.code)));
            }
            Ok(Some(Err(_))) | Ok(None) => return Some(0),
            Ok(Some(Ok(_))) => continue,
            Err(_) => return None,
        }
    }
}

// -------------------------------------------------------------------------------- processes

/// The local TCP ports of the sockets process `pid` holds open (from /proc), to tell which
/// node a receiver's connection comes from.
pub fn tcp_ports_of(pid: u32) -> HashSet<u16> {
    let mut inodes = HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy().into_owned();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.insert(inode.to_string());
                }
            }
        }
    }
    let mut ports = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || !inodes.contains(cols[9]) {
                continue;
            }
            if let Some(port) = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                ports.insert(port);
            }
        }
    }
    ports
}

// ------------------------------------------------------------------------ a private server

/// A PostgreSQL server of the test's own (`tests/support/postgres.sh`), for a scenario that
/// restarts it: the shared server must stay up for everything else. Stopped on drop.
pub struct OwnPostgres {
    pub url: String,
    dir: tempfile::TempDir,
}

fn postgres_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/postgres.sh")
}

impl OwnPostgres {
    pub fn start() -> OwnPostgres {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("bash")
            .arg(postgres_script())
            .arg("start")
            .arg(dir.path().join("pg"))
            .output()
            .expect("postgres.sh start");
        assert!(
            out.status.success(),
            "postgres.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        OwnPostgres { url, dir }
    }

    /// Stops the server (`-m fast`: every connection is dropped), keeps it down for `down`,
    /// and starts it again on the same port; it is up when this returns.
    pub fn restart(&self, down: Duration) {
        let out = Command::new("bash")
            .arg(postgres_script())
            .arg("restart")
            .arg(self.dir.path().join("pg"))
            .arg(format!("{:.3}", down.as_secs_f64()))
            .output()
            .expect("postgres.sh restart");
        assert!(
            out.status.success(),
            "postgres.sh restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(postgres_script())
            .arg("stop")
            .arg(self.dir.path().join("pg"))
            .output();
    }
}

// ------------------------------------------------------------------------- a slow receiver

/// One request at the [`SlowReceiver`]: who sent it (the sender's port), its Twilio
/// idempotency token and form parameters, when it arrived and when it was answered.
#[derive(Debug, Clone)]
pub struct Hit {
    pub peer_port: u16,
    pub token: String,
    pub params: Vec<(String, String)>,
    pub started: Instant,
    pub finished: Option<Instant>,
}

impl Hit {
    pub fn param(&self, name: &str) -> String {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    pub fn identity(&self) -> String {
        self.param("Identity")
    }

    pub fn sequence(&self) -> i64 {
        self.param("Sequence").parse().unwrap_or(-1)
    }

    /// `(identity, EventType, Sequence)`: which event this request carries.
    pub fn key(&self) -> (String, String, i64) {
        (self.identity(), self.param("EventType"), self.sequence())
    }
}

/// A Twilio-format webhook receiver that answers 200 after `delay`, recording each request's
/// sender port so a test can tell which node sent it.
#[derive(Clone)]
pub struct SlowReceiver {
    pub addr: std::net::SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl SlowReceiver {
    pub async fn start(delay: Duration) -> SlowReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let shared = hits.clone();
        tokio::spawn(async move {
            while let Ok((socket, peer)) = listener.accept().await {
                tokio::spawn(serve_slowly(socket, peer.port(), shared.clone(), delay));
            }
        });
        SlowReceiver { addr, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

async fn serve_slowly(
    mut socket: TcpStream,
    peer_port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    delay: Duration,
) {
    use tokio::io::AsyncWriteExt;
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut socket, &mut buf).await {
        let index = {
            let mut all = hits.lock().unwrap_or_else(|e| e.into_inner());
            all.push(Hit {
                peer_port,
                token: request
                    .header("I-Twilio-Idempotency-Token")
                    .unwrap_or_default()
                    .to_string(),
                params: request.params(),
                started: request.at,
                finished: None,
            });
            all.len() - 1
        };
        tokio::time::sleep(delay).await;
        let response = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        hits.lock().unwrap_or_else(|e| e.into_inner())[index].finished = Some(Instant::now());
    }
}
