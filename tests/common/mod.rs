//! Test harness: starts the real server in-process on port 0 with a temporary database and
//! talks HTTP to it.
#![allow(dead_code)]

use std::net::TcpListener;

use reachd::app::{self, Running};
use reachd::config::{Config, Secret};
use serde_json::Value;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "test-auth-token-0123456789";

pub struct TestServer {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub http: reqwest::Client,
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

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::load_from(None, Vec::new()).expect("default config");
    config.database = dir.join("reachd.db");
    config.account_sid = Some(ACCOUNT_SID.to_string());
    config.auth_token = Some(Secret::new(AUTH_TOKEN));
    config.http.workers = 2;
    config
}

pub async fn spawn() -> TestServer {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    adjust(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let running = app::start(config, listener).await.expect("server starts");
    let base = format!("http://{}", running.addr);
    TestServer {
        base,
        dir,
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
