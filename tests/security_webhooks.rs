//! Webhooks as a window into the network: response bodies of private (here loopback) targets
//! stay out of the delivery log unless the operator opts in; proxies come only from
//! `webhooks.proxy`, never from `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY`.

mod common;

use std::time::Duration;

use common::process::{Server, reachd};
use common::receiver::Receiver;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// The first attempt of the endpoint's first delivery, once it is recorded.
async fn first_attempt(s: &common::TestServer, svc: &str, id: &str) -> Value {
    let path = format!("/api/v1/services/{svc}/webhooks/{id}/deliveries");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed = s.get(&path).await;
        let attempt = listed.body["deliveries"][0]["attempt_log"][0].clone();
        if !attempt.is_null() {
            return attempt;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt logged: {:?}",
            listed.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One delivery to a loopback receiver answering "ok"; returns its logged attempt.
async fn delivery_to_loopback(store_private_responses: bool) -> Value {
    let s = common::spawn_with(|c| {
        c.webhooks.allow_private_networks = true;
        c.webhooks.store_private_responses = store_private_responses;
    })
    .await;
    let receiver = Receiver::start().await;
    let svc = s.enabled_service("hooks").await;
    let id = s
        .native_endpoint(
            &svc,
            json!({"url": &receiver.url("/hook"), "description": "security"}),
        )
        .await;
    s.user(&svc, "alice").await;
    receiver.wait_for(1, WAIT).await;
    let attempt = first_attempt(&s, &svc, &id).await;
    s.stop().await;
    attempt
}

#[tokio::test]
async fn a_loopback_targets_response_body_is_not_stored_by_default() {
    let attempt = delivery_to_loopback(false).await;
    assert_eq!(attempt["status"], 200, "{attempt}");
    assert_eq!(attempt["response"], Value::Null, "{attempt}");
}

#[tokio::test]
async fn a_loopback_targets_response_body_is_stored_when_the_operator_opts_in() {
    let attempt = delivery_to_loopback(true).await;
    assert_eq!(attempt["status"], 200, "{attempt}");
    assert_eq!(attempt["response"], "ok", "{attempt}");
}

#[tokio::test]
async fn the_configured_proxy_carries_deliveries() {
    let proxy = Receiver::start().await;
    let target = "http://receiver.invalid/hook";
    let s = common::spawn_with(|c| {
        c.webhooks.proxy = Some(reachd::config::Secret::new(proxy.url("")));
    })
    .await;
    let svc = s.enabled_service("hooks").await;
    s.native_endpoint(&svc, json!({"url": target, "description": "security"}))
        .await;
    s.user(&svc, "alice").await;
    let requests = proxy.wait_for(1, WAIT).await;
    // A forward proxy gets the absolute URL as the request target.
    assert_eq!(requests[0].target, target);
    assert_eq!(requests[0].method, "POST");
    s.stop().await;
}

#[tokio::test]
async fn proxy_environment_variables_are_ignored() {
    let decoy = Receiver::start().await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = reachd(dir.path());
    cmd.env("REACHD_ACCOUNT_SID", common::ACCOUNT_SID)
        .env("REACHD_AUTH_TOKEN", common::AUTH_TOKEN)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env(var, decoy.url(""));
    }
    let server = tokio::task::spawn_blocking(move || Server::start(cmd))
        .await
        .expect("start");
    let s = common::TestServer {
        base: server.base(),
        database: common::test_database(&dir.path().join("data")),
        dir,
        running: None,
        store: None,
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
    };
    let svc = s.enabled_service("hooks").await;
    s.native_endpoint(
        &svc,
        json!({"url": &receiver.url("/direct"), "description": "security"}),
    )
    .await;
    s.user(&svc, "alice").await;
    let requests = receiver.wait_for(1, WAIT).await;
    assert_eq!(
        requests[0].target, "/direct",
        "sent directly to the receiver"
    );
    assert!(decoy.requests().is_empty(), "{:?}", decoy.requests());
    drop(server);
}
