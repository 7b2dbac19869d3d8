//! Regressions of the attack run's findings on input handling: small bodies that flatten into
//! huge parameter lists, push binding takeover, write floods from one token, framing of the
//! dashboard, tokens in query strings, invisible characters in identities.

mod common;

#[tokio::test]
async fn the_dashboard_refuses_to_be_framed() {
    let s = common::spawn().await;
    let page = s.get("/dashboard").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["x-frame-options"], "DENY");
    let csp = page.headers["content-security-policy"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let script = s.get("/dashboard/app.js").await;
    assert_eq!(script.headers["x-frame-options"], "DENY");
    s.stop().await;
}
