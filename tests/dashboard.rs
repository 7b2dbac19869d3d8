//! The dashboard's page and the APIs it reads: Basic auth, stats, users with reachability, the
//! event tail.

mod common;

use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn the_dashboard_needs_the_account_and_its_apis_count_correctly() {
    let s = common::spawn().await;
    let anonymous = s.send(s.http.get(s.url("/dashboard"))).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.headers["www-authenticate"],
        "Basic realm=\"reachd\""
    );
    let page = s
        .http
        .get(s.url("/dashboard"))
        .basic_auth(common::ACCOUNT_SID, Some(common::AUTH_TOKEN))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );

    let svc = s.service("dash").await;
    s.post(
        &format!("/chat/v2/Services/{svc}"),
        &[("ReachabilityEnabled", "true")],
    )
    .await;
    for who in ["alice", "bob", "carol"] {
        s.user(&svc, who).await;
    }
    let token = s.token(&svc, "alice");
    s.open_session(&token).await;
    s.client(Method::POST, "/client/v1/sessions", &token, Some(json!({})))
        .await;
    let stats = s.get(&format!("/api/v1/services/{svc}/stats")).await;
    assert_eq!(stats.status, 200, "{:?}", stats.body);
    assert_eq!(
        (
            stats.body["users"].as_i64(),
            stats.body["online_users"].as_i64(),
            stats.body["live_sessions"].as_i64()
        ),
        (Some(3), Some(1), Some(2))
    );
    assert_eq!(stats.body["deliveries"]["pending"], 0);
    assert!(stats.body["deliveries"]["oldest_pending_age_ms"].is_null());

    let users = s
        .get(&format!("/api/v1/services/{svc}/users?limit=2"))
        .await;
    let first = users.body["users"].as_array().cloned().unwrap_or_default();
    assert_eq!(first.len(), 2);
    assert_eq!(
        (
            first[0]["identity"].as_str(),
            first[0]["is_online"].clone(),
            first[0]["session_count"].clone()
        ),
        (Some("alice"), json!(true), json!(2))
    );
    let token = users.str("next_page_token");
    let rest = s
        .get(&format!(
            "/api/v1/services/{svc}/users?limit=2&page_token={token}"
        ))
        .await;
    assert_eq!(rest.body["users"][0]["identity"], "carol");
    assert!(rest.body["next_page_token"].is_null());

    let tail = s
        .get(&format!("/api/v1/services/{svc}/events?tail=2"))
        .await;
    let events = tail.body["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1]["type"], "user.reachability_updated",
        "the newest last"
    );
    assert_eq!(tail.body["next_cursor"], events[1]["id"]);
    s.stop().await;
}
