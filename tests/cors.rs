//! CORS on the client API: pages on other origins may load the SDK and call `/client/v1` with
//! access tokens; the Basic-auth APIs stay closed to cross-origin browsers.

mod common;

use reqwest::Method;

async fn preflight(s: &common::TestServer, path: &str, origin: &str) -> reqwest::Response {
    s.http
        .request(Method::OPTIONS, s.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight")
}

fn allow_origin(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test]
async fn any_origin_may_call_the_client_api_by_default_but_not_the_native_api() {
    let s = common::spawn().await;
    let r = preflight(&s, "/client/v1/sessions", "https://app.example").await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(allow_origin(&r).as_deref(), Some("*"));
    let methods = r
        .headers()
        .get("access-control-allow-methods")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(methods.contains("POST"), "{methods}");
    assert!(
        r.headers()
            .get("access-control-allow-credentials")
            .is_none(),
        "tokens, never cookies"
    );

    let sdk = s
        .http
        .get(s.url("/client/v1/sdk.js"))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("sdk");
    assert_eq!(sdk.status(), 200);
    assert_eq!(allow_origin(&sdk).as_deref(), Some("*"));

    let svc = s.service("cors").await;
    let token = s.token(&svc, "alice");
    let opened = s
        .http
        .post(s.url("/client/v1/sessions"))
        .header("origin", "https://app.example")
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("open");
    assert_eq!(opened.status(), 201);
    assert_eq!(allow_origin(&opened).as_deref(), Some("*"));

    let native = s
        .http
        .get(s.url(&format!("/api/v1/services/{svc}/stats")))
        .header("origin", "https://app.example")
        .basic_auth(common::ACCOUNT_SID, Some(common::AUTH_TOKEN))
        .send()
        .await
        .expect("native");
    assert_eq!(native.status(), 200);
    assert_eq!(
        allow_origin(&native),
        None,
        "Basic-auth APIs are not opened"
    );
    let r = preflight(
        &s,
        &format!("/chat/v2/Services/{svc}"),
        "https://app.example",
    )
    .await;
    assert_eq!(allow_origin(&r), None);
    s.stop().await;
}

#[tokio::test]
async fn configured_origins_are_the_only_ones_allowed() {
    let s = common::spawn_with(|c| {
        c.http.client_cors_origins = vec!["https://app.example".into()];
    })
    .await;
    let r = preflight(&s, "/client/v1/sessions", "https://app.example").await;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(allow_origin(&r).as_deref(), Some("https://app.example"));
    let r = preflight(&s, "/client/v1/sessions", "https://evil.example").await;
    assert_eq!(allow_origin(&r), None);
    s.stop().await;
}

#[tokio::test]
async fn an_empty_list_turns_cors_off() {
    let s = common::spawn_with(|c| c.http.client_cors_origins = Vec::new()).await;
    let r = preflight(&s, "/client/v1/sessions", "https://app.example").await;
    assert_eq!(allow_origin(&r), None);
    s.stop().await;
}
