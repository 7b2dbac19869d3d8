//! Revoking an API key ends the WebSockets whose token it signed: `reachd keys revoke` (another
//! process writing the database) closes them with 4003 within seconds, their sessions end (the
//! user goes offline), and sockets signed by other keys are untouched.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use common::ws::{Ws, connect, next_within};

/// The next text message, skipping control frames; `None` on close or after 10 s.
async fn next_text(ws: &mut Ws) -> Option<Value> {
    next_within(ws, Duration::from_secs(10)).await
}

/// Reads until the server's close frame; its code and reason (panics after 10 s).
async fn close_frame(ws: &mut Ws) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no close frame within 10 s");
        match frame {
            Some(Ok(Message::Close(Some(close)))) => {
                return (u16::from(close.code), close.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                panic!("closed without a close code")
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// A live token signed by `key`.
fn token(key: &reachd::domain::account::ApiKey, service: &str, identity: &str) -> String {
    common::mint_with(common::ACCOUNT_SID, key, service, identity)
}

/// `reachd keys revoke` — another process — revokes `key` in the server's database.
fn revoke(s: &common::TestServer, key: &reachd::domain::account::ApiKey) {
    let out = std::process::Command::new(common::process::BIN)
        .args(["keys", "revoke", &key.sid])
        .env_remove("REACHD_ACCOUNT_SID")
        .env_remove("REACHD_AUTH_TOKEN")
        .env("REACHD_DATABASE", s.db_path())
        .output()
        .expect("reachd keys revoke");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn revoking_a_key_closes_its_sockets_with_4003_and_ends_their_sessions() {
    let s = common::spawn().await;
    let svc = s.enabled_service("revoked").await;
    s.timings(&svc, 1_000, 60_000, 0).await;
    let doomed = s.api_key();
    let kept = s.api_key();

    let mut alice = connect(&s, &token(&doomed, &svc, "alice")).await;
    assert_eq!(next_text(&mut alice).await.expect("ready")["type"], "ready");
    let mut bob = connect(&s, &token(&kept, &svc, "bob")).await;
    assert_eq!(next_text(&mut bob).await.expect("ready")["type"], "ready");
    s.until_online(&svc, "alice", true).await;

    // The CLI, another process, revokes the key in the server's database.
    revoke(&s, &doomed);

    let (code, reason) = close_frame(&mut alice).await;
    assert_eq!((code, reason.as_str()), (4003, "credentials revoked"));
    s.until_online(&svc, "alice", false).await;
    let sessions = s
        .get(&format!("/api/v1/services/{svc}/users/alice/sessions"))
        .await;
    assert_eq!(sessions.body["sessions"], json!([]), "{:?}", sessions.body);

    // Another key's socket lives on.
    bob.send(Message::Text(
        json!({"type": "ping", "id": 1}).to_string().into(),
    ))
    .await
    .expect("send");
    assert_eq!(next_text(&mut bob).await.expect("pong")["type"], "pong");
    assert_eq!(s.is_online(&svc, "bob").await, json!(true));
    s.stop().await;
}

/// A token already verified (and kept by the server so that pings skip its signature) stops
/// working over HTTP once its key is revoked, as a token seen for the first time would.
#[tokio::test]
async fn revoking_a_key_refuses_its_tokens_over_http_even_those_already_used() {
    let s = common::spawn().await;
    let svc = s.enabled_service("revoked-http").await;
    let doomed = s.api_key();
    let alice = token(&doomed, &svc, "alice");
    let id = s.open_session(&alice).await;
    let ping = format!("/client/v1/sessions/{id}/ping");
    for _ in 0..3 {
        let r = s.client(reqwest::Method::POST, &ping, &alice, None).await;
        assert_eq!(r.status, 204, "{:?}", r.body);
    }

    revoke(&s, &doomed);

    // The server learns of the revocation through its key cache (about a second).
    common::eventually("the revoked key's token to be refused", || async {
        let r = s.client(reqwest::Method::POST, &ping, &alice, None).await;
        r.status == 401
    })
    .await;
    let r = s.client(reqwest::Method::POST, &ping, &alice, None).await;
    assert_eq!((r.status, r.code()), (401, 20103), "{:?}", r.body);
    s.stop().await;
}
