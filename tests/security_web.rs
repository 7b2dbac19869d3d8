//! Browser-facing security over real HTTP: cross-site state-changing requests that carry the
//! account's Basic credentials are refused (403/20403) and change nothing, while same-origin
//! pages, server-side clients and access-token clients keep working; reads never write.

mod common;

use common::{ACCOUNT_SID, AUTH_TOKEN, TestServer};
use serde_json::json;

const WEBHOOKS: &str = "/conversations/v1/Configuration/Webhooks";
const GOOD_URL: &str = "https://hooks.good.example/reachd";
const EVIL_URL: &str = "https://evil.example/steal";

/// A form POST setting the account webhook, with Basic credentials and extra headers.
async fn set_webhook(s: &TestServer, url: &str, headers: &[(&str, &str)]) -> common::Reply {
    let mut req = s
        .http
        .post(s.url(WEBHOOKS))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(common::form(&[("PostWebhookUrl", url), ("Method", "POST")]));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    s.send(req).await
}

async fn webhook_url(s: &TestServer) -> String {
    let r = s.get(WEBHOOKS).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.str("post_webhook_url")
}

#[tokio::test]
async fn cross_site_posts_with_basic_credentials_are_refused_and_change_nothing() {
    let s = common::spawn().await;
    let r = set_webhook(&s, GOOD_URL, &[]).await;
    assert_eq!(
        r.status, 200,
        "a server-side client (no Origin): {:?}",
        r.body
    );
    assert_eq!(webhook_url(&s).await, GOOD_URL);

    let forged: [&[(&str, &str)]; 5] = [
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
        // Same host, other port: another origin.
        &[("origin", "http://127.0.0.1:1")],
    ];
    for headers in forged {
        let r = set_webhook(&s, EVIL_URL, headers).await;
        assert_eq!(r.status, 403, "{headers:?}: {:?}", r.body);
        assert_eq!(r.code(), 20403, "{:?}", r.body);
        assert_eq!(r.body["status"], 403);
        assert!(
            r.str("message").starts_with("Cross-site request refused"),
            "{:?}",
            r.body
        );
        assert!(r.body["more_info"].is_string());
        assert_eq!(webhook_url(&s).await, GOOD_URL, "changed by {headers:?}");
    }

    // The server's own origin (the dashboard's page) may change things.
    let own = s.base.clone();
    let r = set_webhook(
        &s,
        "https://hooks.good.example/v2",
        &[("origin", &own), ("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(r.status, 200, "same origin: {:?}", r.body);
    assert_eq!(webhook_url(&s).await, "https://hooks.good.example/v2");
    s.stop().await;
}

#[tokio::test]
async fn the_configured_public_url_is_the_servers_own_origin() {
    let s = common::spawn_with(|c| c.public_url = Some("https://reach.example".into())).await;
    let r = set_webhook(&s, GOOD_URL, &[("origin", "https://reach.example")]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = set_webhook(&s, EVIL_URL, &[("origin", "http://reach.example")]).await;
    assert_eq!(
        r.status, 403,
        "another scheme is another origin: {:?}",
        r.body
    );
    assert_eq!(webhook_url(&s).await, GOOD_URL);
    s.stop().await;
}

#[tokio::test]
async fn access_token_clients_on_other_origins_keep_working() {
    let s = common::spawn().await;
    let svc = s.service("tokens").await;
    let token = s.token(&svc, "alice");
    let r = s
        .send(
            s.http
                .post(s.url("/client/v1/sessions"))
                .bearer_auth(&token)
                .header("origin", "https://app.example")
                .header("sec-fetch-site", "cross-site")
                .json(&json!({})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = s
        .send(
            s.http
                .post(s.url("/client/v1/sessions"))
                .header("x-twilio-token", &token)
                .header("origin", "https://app.example")
                .json(&json!({})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    s.stop().await;
}

#[tokio::test]
async fn reading_the_default_service_users_creates_no_service() {
    let s = common::spawn().await;
    let r = s.get("/conversations/v1/Users").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["users"], json!([]));
    assert_eq!(r.body["meta"]["key"], "users");
    let r = s.get("/conversations/v1/Users/alice").await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = s.delete("/conversations/v1/Users/alice").await;
    assert_eq!(r.status, 404, "{:?}", r.body);

    let r = s.get("/conversations/v1/Services").await;
    assert_eq!(r.body["services"], json!([]), "{:?}", r.body);
    let r = s.get("/chat/v2/Services").await;
    assert_eq!(r.body["services"], json!([]), "{:?}", r.body);
    let r = s.get("/conversations/v1/Configuration").await;
    assert_eq!(r.body["default_chat_service_sid"], serde_json::Value::Null);

    // The first write creates it, and reads then see its users.
    let r = s
        .post("/conversations/v1/Users", &[("Identity", "alice")])
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = s.get("/conversations/v1/Users").await;
    assert_eq!(r.body["users"][0]["identity"], "alice", "{:?}", r.body);
    let r = s.get("/conversations/v1/Services").await;
    assert_eq!(r.body["services"].as_array().map(Vec::len), Some(1));
    s.stop().await;
}
