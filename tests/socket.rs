//! The client WebSocket over real sockets: snapshots and `userUpdated` in order, scoping,
//! bad messages, oversized frames, slow readers, `serviceUpdated`, auth before the upgrade.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use common::ws::{connect, next, send};

async fn enabled_service(s: &common::TestServer) -> String {
    let svc = s.service("ws").await;
    s.post(
        &format!("/chat/v2/Services/{svc}"),
        &[("ReachabilityEnabled", "true")],
    )
    .await;
    s.timings(&svc, 1_000, 5_000, 0).await;
    svc
}

#[tokio::test]
async fn subscribers_get_snapshots_and_ordered_updates() {
    let s = common::spawn().await;
    let svc = enabled_service(&s).await;
    let alice_token = s.token(&svc, "alice");
    let mut alice = connect(&s, &alice_token).await;
    let ready = next(&mut alice).await.expect("ready");
    assert_eq!(
        (ready["type"].as_str(), ready["identity"].as_str()),
        (Some("ready"), Some("alice"))
    );
    assert!(
        ready["session_id"]
            .as_str()
            .unwrap_or_default()
            .starts_with("SE")
    );
    assert_eq!(ready["reachability_enabled"], true);
    s.user(&svc, "bob").await;
    send(
        &mut alice,
        json!({"type": "subscribe", "identities": ["bob"], "id": 7}),
    )
    .await;
    let snapshot = next(&mut alice).await.expect("snapshot");
    assert_eq!(
        (snapshot["type"].as_str(), snapshot["id"].clone()),
        (Some("user"), json!(7))
    );
    assert_eq!(snapshot["user"]["identity"], "bob");
    assert!(snapshot["user"]["is_online"].is_null(), "bob never online");

    // The socket itself is a session: alice is online.
    assert_eq!(
        s.get(&format!("/chat/v2/Services/{svc}/Users/alice"))
            .await
            .body["is_online"],
        true
    );

    let bob_token = s.token(&svc, "bob");
    for _ in 0..3 {
        let id = s.open_session(&bob_token).await;
        s.close_session(&bob_token, &id).await;
    }
    let push = s
        .client(
            Method::POST,
            "/client/v1/bindings",
            &bob_token,
            Some(json!({"binding_type": "apn", "address": "t"})),
        )
        .await;
    assert_eq!(push.status, 201);
    let mut seen = Vec::new();
    for _ in 0..7 {
        let m = next(&mut alice).await.expect("update");
        assert_eq!(m["type"], "userUpdated");
        seen.push((
            m["user"]["is_online"].clone(),
            m["updateReasons"][0]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    let online = |v: bool| (json!(v), "reachabilityOnline".to_string());
    assert_eq!(
        seen[..6],
        [
            online(true),
            online(false),
            online(true),
            online(false),
            online(true),
            online(false)
        ]
    );
    assert_eq!(
        seen[6],
        (json!(false), "reachabilityNotifiable".to_string()),
        "offline user, notifiable update"
    );

    send(&mut alice, json!({"type": "ping", "id": "p"})).await;
    assert_eq!(next(&mut alice).await.expect("pong")["type"], "pong");
    // Closing the socket ends the session (grace 0: offline at once).
    alice.close(None).await.expect("close");
    s.until_online(&svc, "alice", false).await;
    s.stop().await;
}

#[tokio::test]
async fn a_socket_that_drops_after_its_session_was_resumed_elsewhere_leaves_it_live() {
    let s = common::spawn().await;
    let svc = enabled_service(&s).await; // grace 0: a wrongly ended session shows at once
    let token = s.token(&svc, "alice");
    let mut first = connect(&s, &token).await;
    let ready = next(&mut first).await.expect("ready");
    let id = ready["session_id"]
        .as_str()
        .expect("session id")
        .to_string();
    s.until_online(&svc, "alice", true).await;

    // The client reconnects with `resume` before the server has seen its first socket go.
    let mut second = connect(&s, &format!("{token}&resume={id}")).await;
    let resumed = next(&mut second).await.expect("ready");
    assert_eq!(
        (resumed["session_id"].as_str(), &resumed["resumed"]),
        (Some(id.as_str()), &json!(true))
    );
    first.close(None).await.expect("close");
    while next(&mut first).await.is_some() {}
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.is_online(&svc, "alice").await,
        json!(true),
        "the old socket's end ended the resumed session"
    );
    let sessions = s
        .get(&format!("/api/v1/services/{svc}/users/alice/sessions"))
        .await;
    assert_eq!(sessions.status, 200, "{:?}", sessions.body);
    let listed = sessions.body.to_string();
    assert!(listed.contains(&id), "session {id} still live: {listed}");
    send(&mut second, json!({"type": "ping", "id": "p"})).await;
    assert_eq!(next(&mut second).await.expect("pong")["type"], "pong");

    second.close(None).await.expect("close");
    s.until_online(&svc, "alice", false).await;
    s.stop().await;
}

#[tokio::test]
async fn bad_messages_get_errors_and_the_socket_stays_usable() {
    let s = common::spawn().await;
    let svc = enabled_service(&s).await;
    let other = enabled_service(&s).await;
    s.user(&other, "stranger").await;
    let token = s.token(&svc, "alice");
    let mut ws = connect(&s, &token).await;
    next(&mut ws).await.expect("ready");
    ws.send(Message::Text("{not json".into()))
        .await
        .expect("send");
    let e = next(&mut ws).await.expect("error");
    assert_eq!(
        (e["type"].as_str(), e["code"].as_i64()),
        (Some("error"), Some(20001))
    );
    send(&mut ws, json!({"type": "explode", "id": 1})).await;
    let e = next(&mut ws).await.expect("error");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("explode")
    );
    assert_eq!(e["id"], 1);
    send(
        &mut ws,
        json!({"type": "subscribe", "identities": ["stranger"]}),
    )
    .await;
    let e = next(&mut ws)
        .await
        .expect("cross-service subscribe refused");
    assert_eq!(
        (e["type"].as_str(), e["code"].as_i64()),
        (Some("error"), Some(20404))
    );
    send(&mut ws, json!({"type": "subscribe", "identities": []})).await;
    assert_eq!(next(&mut ws).await.expect("error")["code"], 20001);
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await.expect("still usable")["type"], "pong");
    // Push registration over the socket.
    send(
        &mut ws,
        json!({"type": "register_push", "binding_type": "fcm", "address": "tok", "id": "r"}),
    )
    .await;
    let r = next(&mut ws).await.expect("registered");
    assert_eq!(
        (r["type"].as_str(), r["binding"]["identity"].as_str()),
        (Some("push_registered"), Some("alice"))
    );
    // An oversized frame closes the socket cleanly with an error first.
    let huge = json!({"type": "ping", "pad": "x".repeat(70 * 1024)});
    let _ = ws.send(Message::Text(huge.to_string().into())).await;
    let mut closed = false;
    for _ in 0..5 {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1009));
                closed = true;
                break;
            }
            Ok(Some(Ok(Message::Text(t)))) => assert!(t.contains("frame larger")),
            Ok(None) | Ok(Some(Err(_))) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "the socket closed");
    s.stop().await;
}

#[tokio::test]
async fn tokens_are_checked_before_the_upgrade_and_service_flags_are_pushed() {
    let s = common::spawn().await;
    let svc = enabled_service(&s).await;
    let url = format!(
        "{}/client/v1/socket?token=garbage",
        s.base.replace("http://", "ws://")
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected a 401 before the upgrade, got {other:?}"),
    }
    let token = s.token(&svc, "alice");
    let mut ws = connect(&s, &token).await;
    next(&mut ws).await.expect("ready");
    s.post(
        &format!("/chat/v2/Services/{svc}"),
        &[("ReachabilityEnabled", "false")],
    )
    .await;
    let m = next(&mut ws).await.expect("serviceUpdated");
    assert_eq!(
        (m["type"].as_str(), m["reachability_enabled"].clone()),
        (Some("serviceUpdated"), json!(false))
    );
    s.post(
        &format!("/chat/v2/Services/{svc}"),
        &[("ReachabilityEnabled", "true")],
    )
    .await;
    assert_eq!(
        next(&mut ws).await.expect("serviceUpdated")["reachability_enabled"],
        true
    );
    // updateToken with another identity is refused; with the same identity accepted.
    let other = s.token(&svc, "mallory");
    send(&mut ws, json!({"type": "updateToken", "token": other})).await;
    assert_eq!(next(&mut ws).await.expect("error")["code"], 20103);
    let fresh = s.token(&svc, "alice");
    send(&mut ws, json!({"type": "updateToken", "token": fresh})).await;
    assert_eq!(next(&mut ws).await.expect("ok")["type"], "tokenUpdated");
    s.stop().await;
}

#[tokio::test]
async fn a_slow_reader_is_disconnected_instead_of_buffering_forever() {
    let s = common::spawn().await;
    let svc = enabled_service(&s).await;
    // Large attributes make every update ~15 KiB, so kernel socket buffers fill quickly.
    let attributes = json!({"bio": "x".repeat(15_000)}).to_string();
    let r = s
        .post(
            &format!("/chat/v2/Services/{svc}/Users"),
            &[("Identity", "bob"), ("Attributes", attributes.as_str())],
        )
        .await;
    assert_eq!(r.status, 201);
    let token = s.token(&svc, "reader");
    let mut ws = connect(&s, &token).await;
    next(&mut ws).await.expect("ready");
    send(&mut ws, json!({"type": "subscribe", "identities": ["bob"]})).await;
    next(&mut ws).await.expect("snapshot");
    // Stop reading; bob flips far more often than the socket's queue holds.
    let bob = s.token(&svc, "bob");
    let hub = s.running.as_ref().map(|r| r.hub.clone()).expect("running");
    for _ in 0..2_000 {
        let id = s.open_session(&bob).await;
        s.close_session(&bob, &id).await;
        if hub.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            break;
        }
    }
    assert!(
        hub.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the queue overflowed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hub.connections(), 0, "the slow connection was dropped");
    drop(ws);
    s.stop().await;
}

#[tokio::test]
async fn a_graceful_stop_closes_sockets_with_1001_and_reports_no_one_offline() {
    let mut s = common::spawn().await;
    let svc = enabled_service(&s).await;
    let mut ws = connect(&s, &s.token(&svc, "alice")).await;
    let ready = next(&mut ws).await.expect("ready");
    assert_eq!(ready["type"], "ready");
    let running = s.running.take().expect("running");
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(running.stop());
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let frame = close.expect("a close frame with a code");
    assert_eq!(u16::from(frame.code), 1001, "{frame:?}");
    drop(ws);
    stopping.await.expect("join").expect("clean stop");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "open sockets do not hold the stop for the whole deadline: {:?}",
        started.elapsed()
    );
    let events = s.events();
    assert!(
        events
            .iter()
            .all(|e| !(e.identity == "alice" && e.is_online == Some(false))),
        "no offline event from the shutdown: {events:?}"
    );
    let kept = s.stored_sessions("alice");
    assert_eq!(
        kept, 1,
        "the session is kept for a resume after the restart"
    );
}

#[tokio::test]
async fn subscriptions_taken_while_a_user_flips_never_miss_or_repeat_a_change() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let s = common::spawn().await;
    let svc = enabled_service(&s).await; // grace 0: every open and close is a transition
    s.user(&svc, "target").await;
    let target = s.token(&svc, "target");
    let mut ws = connect(&s, &s.token(&svc, "watcher")).await;
    next(&mut ws).await.expect("ready");
    let done = AtomicBool::new(false);
    let flips = async {
        s.flip(&target, 150).await;
        done.store(true, Ordering::SeqCst);
    };
    // Subscribes again and again while the target flips; records what arrives about it.
    let watch = async {
        let mut seen: Vec<(String, Value)> = Vec::new();
        let mut subscribes = 0;
        while !done.load(Ordering::SeqCst) {
            subscribes += 1;
            let subscribe =
                json!({"type": "subscribe", "id": subscribes, "identities": ["target"]});
            send(&mut ws, subscribe).await;
            loop {
                let m = next(&mut ws).await.expect("a message");
                let kind = m["type"].as_str().unwrap_or_default().to_string();
                assert!(kind == "user" || kind == "userUpdated", "{m}");
                seen.push((kind.clone(), m["user"]["is_online"].clone()));
                if kind == "user" && m["id"] == json!(subscribes) {
                    break;
                }
            }
        }
        (seen, subscribes)
    };
    let ((), (mut seen, subscribes)) = tokio::join!(flips, watch);
    s.until_online(&svc, "target", false).await;
    // Whatever is still queued arrives within a moment of the last commit.
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), next(&mut ws)).await {
        seen.push((
            m["type"].as_str().unwrap_or_default().into(),
            m["user"]["is_online"].clone(),
        ));
    }
    assert!(
        subscribes > 5,
        "only {subscribes} subscriptions overlapped the flips"
    );
    // Transitions alternate: an update equal to the state before it was either a repeat of
    // what a snapshot showed or one that replaced a lost change.
    for pair in seen.windows(2) {
        if pair[1].0 == "userUpdated" {
            assert_ne!(
                pair[0].1, pair[1].1,
                "a repeated or missed change in {seen:?}"
            );
        }
    }
    assert_eq!(
        seen.last().map(|m| &m.1),
        Some(&json!(false)),
        "ends on the current state"
    );
    s.stop().await;
}
