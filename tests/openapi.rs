//! reachd's own OpenAPI document (`GET /api/v1/openapi.json`): it lists exactly the routes the
//! server mounts under `/api/v1` and `/client/v1`, and every route it lists answers.

mod common;

use std::collections::BTreeSet;

use common::{TestServer, spawn};
use reqwest::Method;
use serde_json::Value;

async fn document(server: &TestServer) -> Value {
    let r = server
        .send(server.http.get(server.url("/api/v1/openapi.json")))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

/// Every `(method, path template)` the document lists.
fn listed(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            out.insert((method.clone(), path.clone()));
        }
    }
    out
}

/// A concrete path: each `{name}` replaced by `values(name)`.
fn fill(template: &str, values: impl Fn(&str) -> String) -> String {
    template
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => values(name),
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.to_ascii_uppercase().as_bytes()).expect("method")
}

#[tokio::test]
async fn the_document_lists_exactly_the_mounted_routes() {
    let server = spawn().await;
    let doc = document(&server).await;
    assert_eq!(doc["openapi"], "3.0.3");
    let mounted: BTreeSet<(String, String)> = reachd::api::openapi::apis()
        .iter()
        .flat_map(|api| api.endpoints())
        .map(|(verb, path)| (verb.key().to_string(), path))
        .collect();
    assert_eq!(listed(&doc), mounted);
    for (_, path) in &mounted {
        assert!(
            path.starts_with("/api/v1/") || path.starts_with("/client/v1/"),
            "{path}"
        );
    }
    server.stop().await;
}

/// Every listed (method, path) is mounted: the path answers an unlisted method with 405 (an
/// unmounted path would answer 404), and the listed method, sent with valid credentials,
/// reaches its handler (anything but 405 and 5xx). Valid credentials keep the failed-auth
/// limiter out of the way; a sample checks that the document's security is enforced.
#[tokio::test]
async fn every_listed_route_answers() {
    let server = spawn().await;
    let service = server.service("routes").await;
    let token = server.token(&service, "alice");
    let doc = document(&server).await;
    let routes = listed(&doc);
    assert!(routes.len() >= 25, "{}", routes.len());
    for (verb, template) in &routes {
        let path = fill(template, |_| "x".to_string());
        let mut req = server.http.request(method(verb), server.url(&path));
        req = if template.starts_with("/client/") {
            req.bearer_auth(&token)
        } else {
            req.basic_auth(common::ACCOUNT_SID, Some(common::AUTH_TOKEN))
        };
        let r = server.send(req).await;
        assert!(
            r.status != 405 && r.status < 500,
            "{verb} {path}: {} {:?}",
            r.status,
            r.body
        );
        let mut allowed: Vec<String> = routes
            .iter()
            .filter(|(_, t)| t == template)
            .map(|(v, _)| v.to_ascii_uppercase())
            .collect();
        allowed.sort();
        for other in ["get", "post", "delete", "put"] {
            if !routes.contains(&(other.to_string(), template.clone())) {
                let r = server
                    .send(server.http.request(method(other), server.url(&path)))
                    .await;
                assert_eq!((r.status, r.code()), (405, 20004), "{other} {path}");
                let allow = r.headers.get("allow").and_then(|v| v.to_str().ok());
                let mut listed: Vec<String> = allow
                    .unwrap_or_default()
                    .split(", ")
                    .map(str::to_string)
                    .collect();
                listed.sort();
                assert_eq!(listed, allowed, "Allow of {path}");
            }
        }
    }
    let r = server
        .send(server.http.get(server.url("/api/v1/no-such-route")))
        .await;
    assert_eq!((r.status, r.code()), (404, 20404));
    server.stop().await;
}

/// Public operations answer without credentials; the others (a sample per API) refuse with
/// Twilio's 401 body.
#[tokio::test]
async fn the_documented_security_is_enforced() {
    let server = spawn().await;
    let doc = document(&server).await;
    let mut sampled = BTreeSet::new();
    for (verb, template) in listed(&doc) {
        let op = &doc["paths"][&template][&verb];
        let public = op["security"].as_array().is_some_and(Vec::is_empty);
        let api = template.split('/').nth(1).unwrap_or_default().to_string();
        if !public && !sampled.insert(api) {
            continue;
        }
        let path = fill(&template, |_| "x".to_string());
        let r = server
            .send(server.http.request(method(&verb), server.url(&path)))
            .await;
        if public {
            assert_eq!(r.status, 200, "{verb} {path}");
        } else {
            assert_eq!(r.status, 401, "{verb} {path}: {:?}", r.body);
            assert_eq!(r.body["status"], 401, "{:?}", r.body);
            assert!(r.body["code"].as_i64().is_some(), "{:?}", r.body);
        }
    }
    assert_eq!(sampled.len(), 2);
    server.stop().await;
}

/// With credentials and real path values, every native read answers 200 and every client read
/// with a token answers 200.
#[tokio::test]
async fn listed_reads_answer_with_credentials() {
    let server = spawn().await;
    let service = server.service("openapi").await;
    let user = server.user(&service, "alice").await;
    let r = server
        .post_json(
            &format!("/api/v1/services/{service}/webhooks"),
            serde_json::json!({"url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let endpoint = r.str("id");
    let token = server.token(&service, "alice");
    let doc = document(&server).await;
    let values = |name: &str| match name {
        "sid" => service.clone(),
        "user" => user.clone(),
        "identity" => "alice".to_string(),
        _ => endpoint.clone(),
    };
    for (verb, template) in listed(&doc) {
        if verb != "get" || template.ends_with("/socket") {
            continue;
        }
        let mut path = fill(&template, values);
        if template.ends_with("/reachability") {
            path.push_str("?online=true");
        }
        let r = if template.starts_with("/client/") {
            server.client(Method::GET, &path, &token, None).await
        } else {
            server.get(&path).await
        };
        assert_eq!(r.status, 200, "GET {path}: {:?}", r.body);
    }
    server.stop().await;
}

// Bugs schemathesis found (tests/fuzz): each stays fixed.

/// An empty `Last-Event-ID` header is no cursor: `after` still applies (and is validated).
#[tokio::test]
async fn an_empty_last_event_id_does_not_hide_after() {
    let server = spawn().await;
    let service = server.service("feed").await;
    server.user(&service, "alice").await;
    let url = server.url(&format!("/api/v1/services/{service}/events?after=null"));
    let r = server
        .send(
            server
                .http
                .get(&url)
                .header("Last-Event-ID", "")
                .basic_auth(common::ACCOUNT_SID, Some(common::AUTH_TOKEN)),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, 20001), "{:?}", r.body);
    assert!(r.str("message").contains("after"), "{:?}", r.body);
    let url = server.url(&format!("/api/v1/services/{service}/events?after=0"));
    let r = server
        .send(
            server
                .http
                .get(&url)
                .header("Last-Event-ID", " ")
                .basic_auth(common::ACCOUNT_SID, Some(common::AUTH_TOKEN)),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["events"].as_array().map(Vec::len), Some(1));
    server.stop().await;
}

/// Repeated event types are one subscription; `[]` in JSON subscribes to every type again.
#[tokio::test]
async fn webhook_event_types_ignore_repeats_and_clear_with_an_empty_list() {
    let server = spawn().await;
    let service = server.service("hooks").await;
    let url = format!("/api/v1/services/{service}/webhooks");
    let r = server
        .post(
            &url,
            &[
                ("url", "http://127.0.0.1:9/hook"),
                ("event_types", "user.added"),
                ("event_types", "user.added"),
                ("event_types", "user.deleted"),
                ("event_types", "user.added"),
                ("event_types", "user.added"),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        r.body["event_types"],
        serde_json::json!(["user.added", "user.deleted"])
    );
    let id = r.str("id");
    let r = server
        .post_json(
            &format!("{url}/{id}"),
            serde_json::json!({"event_types": []}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["event_types"], Value::Null);
    server.stop().await;
}
