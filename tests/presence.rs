//! Presence end to end over real HTTP: sessions, pings, grace, bindings, reachability flag,
//! token scoping, and the proof that pings never write.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

async fn enabled_service(s: &common::TestServer) -> String {
    let svc = s.service("presence").await;
    let r = s
        .post(
            &format!("/chat/v2/Services/{svc}"),
            &[("ReachabilityEnabled", "true")],
        )
        .await;
    assert_eq!(r.status, 200);
    svc
}

async fn online(s: &common::TestServer, svc: &str, identity: &str) -> serde_json::Value {
    s.get(&format!("/chat/v2/Services/{svc}/Users/{identity}"))
        .await
        .body["is_online"]
        .clone()
}

#[tokio::test]
async fn a_silent_client_goes_offline_within_ttl_plus_grace_plus_one_second() {
    let s = common::spawn().await;
    let svc = enabled_service(&s).await;
    s.timings(&svc, 500, 1_500, 500).await;
    let token = s.token(&svc, "alice");
    let opened = s
        .client(Method::POST, "/client/v1/sessions", &token, Some(json!({})))
        .await;
    assert_eq!(opened.status, 201);
    assert_eq!(
        (
            opened.body["ping_interval"].as_u64(),
            opened.body["session_ttl"].as_u64()
        ),
        (Some(500), Some(1_500))
    );
    assert_eq!(opened.body["reachability_enabled"], true);
    let session = opened.str("session_id");
    assert_eq!(
        online(&s, &svc, "alice").await,
        true,
        "online as soon as the open returns"
    );

    // Keep pinging past several TTLs: stays online.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = s
            .client(
                Method::POST,
                &format!("/client/v1/sessions/{session}/ping"),
                &token,
                None,
            )
            .await;
        assert_eq!(r.status, 204);
    }
    assert_eq!(online(&s, &svc, "alice").await, true);
    let last_ping = Instant::now();
    let went_offline = loop {
        if online(&s, &svc, "alice").await == false {
            break last_ping.elapsed();
        }
        assert!(
            last_ping.elapsed() < Duration::from_millis(3_500),
            "still online 3.5 s after the last ping"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        went_offline >= Duration::from_millis(1_500),
        "offline before the TTL: {went_offline:?}"
    );
    let r = s
        .client(
            Method::POST,
            &format!("/client/v1/sessions/{session}/ping"),
            &token,
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (404, 20404),
        "an expired session cannot be pinged"
    );
    let events = s.events();
    let causes: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "user.reachability_updated")
        .map(|e| e.cause.clone())
        .collect();
    assert_eq!(
        causes,
        vec![
            Some("session_opened".into()),
            Some("session_timeout".into())
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn close_reports_offline_after_the_grace_and_reconnects_inside_it_are_invisible() {
    let s = common::spawn().await;
    let svc = enabled_service(&s).await;
    // The grace leaves room for the checks inside it on a loaded machine.
    s.timings(&svc, 1_000, 5_000, 2_000).await;
    let token = s.token(&svc, "bob");
    let first = s.open_session(&token).await;
    let r = s.close_session(&token, &first).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        online(&s, &svc, "bob").await,
        true,
        "still online inside the grace"
    );
    let second = s.open_session(&token).await;
    // Past the first close's grace deadline (grace + the sweeper's 250 ms rounding).
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    assert_eq!(
        online(&s, &svc, "bob").await,
        true,
        "the reconnect cancelled the offline report"
    );
    s.close_session(&token, &second).await;
    s.until_online(&svc, "bob", false).await;
    let transitions: Vec<_> = s
        .events()
        .into_iter()
        .filter(|e| e.kind == "user.reachability_updated")
        .collect();
    assert_eq!(transitions.len(), 2, "{transitions:?}");
    assert_eq!(transitions[1].cause.as_deref(), Some("session_closed"));
    assert!(transitions[1].sequence > transitions[0].sequence);
    s.stop().await;
}

#[tokio::test]
async fn pings_never_touch_sqlite() {
    // The periodic session flush (a batch write, by design) must not fall inside the window:
    // on a loaded machine 1,000 pings can take longer than the default 2 s interval.
    let s = common::spawn_with(|c| c.presence.flush_interval_ms = Some(50_000)).await;
    let svc = enabled_service(&s).await;
    let token = s.token(&svc, "carol");
    let session = s.open_session(&token).await;
    let stats = s
        .running
        .as_ref()
        .map(|r| r.writer_stats.clone())
        .expect("running");
    let before = stats.transactions.load(Ordering::Relaxed);
    for _ in 0..1_000 {
        let r = s
            .client(
                Method::POST,
                &format!("/client/v1/sessions/{session}/ping"),
                &token,
                None,
            )
            .await;
        assert_eq!(r.status, 204);
    }
    assert_eq!(
        stats.transactions.load(Ordering::Relaxed),
        before,
        "1,000 pings committed a transaction"
    );
    let presence = s
        .running
        .as_ref()
        .map(|r| r.presence.clone())
        .expect("running");
    assert!(presence.stats().pings.load(Ordering::Relaxed) >= 1_000);
    // The next flush writes the new expiry once, in one transaction.
    assert!(presence.flush_now().wait().await);
    assert_eq!(stats.transactions.load(Ordering::Relaxed), before + 1);
    s.stop().await;
}

#[tokio::test]
async fn push_registration_decides_notifiable() {
    let s = common::spawn().await;
    let svc = enabled_service(&s).await;
    let token = s.token(&svc, "dave");
    let reg = s
        .client(
            Method::POST,
            "/client/v1/bindings",
            &token,
            Some(json!({"binding_type": "fcm", "address": "tok", "endpoint": "app:dave:1"})),
        )
        .await;
    assert_eq!(reg.status, 201, "{:?}", reg.body);
    assert_eq!(
        reg.body["identity"], "dave",
        "the user is created on first contact"
    );
    let user = format!("/chat/v2/Services/{svc}/Users/dave");
    assert_eq!(s.get(&user).await.body["is_notifiable"], true);
    let r = s
        .client(
            Method::DELETE,
            "/client/v1/bindings/app:dave:1",
            &token,
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(s.get(&user).await.body["is_notifiable"], false);
    assert_eq!(
        s.client(
            Method::DELETE,
            "/client/v1/bindings/app:dave:1",
            &token,
            None
        )
        .await
        .status,
        404
    );
    let kinds: Vec<_> = s
        .events()
        .iter()
        .map(|e| (e.kind.clone(), e.cause.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("user.added".into(), None),
            (
                "user.reachability_updated".into(),
                Some("binding_added".into())
            ),
            (
                "user.reachability_updated".into(),
                Some("binding_removed".into())
            ),
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn disabled_services_track_silently_and_enabling_reports_live_users_at_once() {
    let s = common::spawn().await;
    let svc = s.service("off").await;
    let token = s.token(&svc, "erin");
    let session = s.open_session(&token).await;
    let user = format!("/chat/v2/Services/{svc}/Users/erin");
    let fetched = s.get(&user).await;
    assert!(fetched.body["is_online"].is_null() && fetched.body["is_notifiable"].is_null());
    let descriptor = s
        .client(Method::GET, "/client/v1/users/erin", &token, None)
        .await;
    assert!(descriptor.body["is_online"].is_null());
    assert!(
        s.events()
            .iter()
            .all(|e| e.kind != "user.reachability_updated"),
        "disabled: no transitions"
    );

    s.post(
        &format!("/conversations/v1/Services/{svc}/Configuration"),
        &[("ReachabilityEnabled", "true")],
    )
    .await;
    assert_eq!(
        online(&s, &svc, "erin").await,
        true,
        "online at once on enabling"
    );
    let last = s.events().pop().expect("event");
    assert_eq!(last.cause.as_deref(), Some("reachability_enabled"));
    // Lists stay null.
    assert!(
        s.get(&format!("/chat/v2/Services/{svc}/Users")).await.body["users"][0]["is_online"]
            .is_null()
    );
    let r = s
        .client(
            Method::POST,
            &format!("/client/v1/sessions/{session}/ping"),
            &token,
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    s.stop().await;
}

#[tokio::test]
async fn tokens_are_scoped_to_their_service_and_account() {
    let s = common::spawn().await;
    let a = enabled_service(&s).await;
    let b = enabled_service(&s).await;
    s.user(&b, "bob").await;
    let token_a = s.token(&a, "alice");
    let session = s.open_session(&token_a).await;
    assert_eq!(
        s.client(Method::GET, "/client/v1/users/bob", &token_a, None)
            .await
            .status,
        404,
        "B's user is invisible from A"
    );
    let token_b = s.token(&b, "alice");
    let r = s
        .client(
            Method::POST,
            &format!("/client/v1/sessions/{session}/ping"),
            &token_b,
            None,
        )
        .await;
    assert_eq!(r.status, 404, "A's session cannot be pinged with B's token");
    assert_eq!(s.close_session(&token_b, &session).await.status, 404);
    assert_eq!(
        s.get(&format!("/chat/v2/Services/{b}/Users")).await.body["users"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let key = s.api_key();
    let now = chrono::Utc::now().timestamp();
    let missing = reachd::tokens::mint(
        common::ACCOUNT_SID,
        &key.sid,
        &key.secret,
        "ISffffffffffffffffffffffffffffffff",
        "x",
        60,
        None,
        now,
    )
    .expect("mint");
    let r = s
        .client(
            Method::POST,
            "/client/v1/sessions",
            &missing,
            Some(json!({})),
        )
        .await;
    assert_eq!((r.status, r.code()), (401, 20106));
    let expired = reachd::tokens::mint(
        common::ACCOUNT_SID,
        &key.sid,
        &key.secret,
        &a,
        "x",
        60,
        None,
        now - 3_600,
    )
    .expect("mint");
    assert_eq!(
        s.client(
            Method::POST,
            "/client/v1/sessions",
            &expired,
            Some(json!({}))
        )
        .await
        .code(),
        20104
    );
    let mut parts: Vec<String> = token_a.split('.').map(str::to_string).collect();
    parts[2] = parts[2].chars().rev().collect();
    let tampered = parts.join(".");
    assert_eq!(
        s.client(
            Method::POST,
            "/client/v1/sessions",
            &tampered,
            Some(json!({}))
        )
        .await
        .code(),
        20107
    );
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        token_a.split('.').nth(1).unwrap_or_default()
    );
    let r = s
        .client(Method::POST, "/client/v1/sessions", &none, Some(json!({})))
        .await;
    assert_eq!((r.status, r.code()), (401, 20102));
    let anonymous = s.send(s.http.post(s.url("/client/v1/sessions"))).await;
    assert_eq!((anonymous.status, anonymous.code()), (401, 20101));
    // X-Twilio-Token works too; Basic credentials do not.
    let r = s
        .send(
            s.http
                .get(s.url("/client/v1/users/alice"))
                .header("X-Twilio-Token", &token_a),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .send(
            s.http
                .get(s.url("/client/v1/users/alice"))
                .basic_auth(common::ACCOUNT_SID, Some(common::AUTH_TOKEN)),
        )
        .await;
    assert_eq!(r.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn native_reads_show_real_values_sessions_and_sequences() {
    let s = common::spawn().await;
    let svc = enabled_service(&s).await;
    let alice = s.token(&svc, "alice");
    let phone = s
        .client(
            Method::POST,
            "/client/v1/sessions",
            &alice,
            Some(json!({"endpoint": "app:alice:phone"})),
        )
        .await
        .str("session_id");
    let laptop = s.open_session(&alice).await;
    let bob = s.token(&svc, "bob");
    s.open_session(&bob).await;
    s.user(&svc, "carol").await;

    let bulk = s
        .get(&format!(
            "/api/v1/services/{svc}/reachability?identity=alice&identity=carol&identity=nobody"
        ))
        .await;
    assert_eq!(bulk.status, 200, "{:?}", bulk.body);
    let users = bulk.body["users"].as_array().cloned().unwrap_or_default();
    assert_eq!(users.len(), 2);
    assert_eq!(
        (
            users[0]["is_online"].clone(),
            users[0]["session_count"].clone()
        ),
        (json!(true), json!(2))
    );
    assert!(users[0]["online_since"].is_string() && users[0]["sequence"].as_i64() >= Some(2));
    assert!(users[1]["is_online"].is_null(), "carol was never online");
    assert_eq!(bulk.body["not_found"], json!(["nobody"]));

    let page1 = s
        .get(&format!(
            "/api/v1/services/{svc}/reachability?online=true&limit=1"
        ))
        .await;
    assert_eq!(page1.body["users"][0]["identity"], "alice");
    let token = page1.str("next_page_token");
    let page2 = s
        .get(&format!(
            "/api/v1/services/{svc}/reachability?online=true&limit=1&page_token={token}"
        ))
        .await;
    assert_eq!(page2.body["users"][0]["identity"], "bob");
    assert!(page2.body["next_page_token"].is_null());

    let sessions = s
        .get(&format!("/api/v1/services/{svc}/users/alice/sessions"))
        .await;
    let ids: Vec<_> = sessions.body["sessions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids, vec![phone.clone(), laptop]);
    assert_eq!(sessions.body["sessions"][0]["endpoint"], "app:alice:phone");
    assert_eq!(sessions.body["sessions"][0]["transport"], "http");

    // Resuming a live session keeps its id.
    let resumed = s
        .client(
            Method::POST,
            "/client/v1/sessions",
            &alice,
            Some(json!({"resume": phone})),
        )
        .await;
    assert_eq!(
        (resumed.str("session_id"), resumed.body["resumed"].clone()),
        (phone, json!(true))
    );
    let too_many = (0..1_001)
        .map(|i| format!("identity=u{i}"))
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(
        s.get(&format!("/api/v1/services/{svc}/reachability?{too_many}"))
            .await
            .status,
        400
    );
    s.stop().await;
}

#[tokio::test]
async fn presence_settings_are_validated_and_fall_back_to_defaults() {
    let s = common::spawn().await;
    let svc = s.service("settings").await;
    let path = format!("/api/v1/services/{svc}/settings");
    let fresh = s.get(&path).await;
    assert_eq!(
        (
            fresh.body["ping_interval_ms"].as_u64(),
            fresh.body["session_ttl_ms"].as_u64(),
            fresh.body["offline_grace_ms"].as_u64()
        ),
        (Some(20_000), Some(60_000), Some(3_000))
    );
    assert!(fresh.body["overrides"]["session_ttl_ms"].is_null());
    let bad = s
        .post_json(
            &path,
            json!({"ping_interval_ms": 30_000, "session_ttl_ms": 20_000}),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (400, 20001));
    assert!(bad.str("message").contains("session_ttl_ms"));
    let bad = s.post_json(&path, json!({"offline_grace_ms": -1})).await;
    assert_eq!(bad.status, 400);
    let ok = s
        .post_json(
            &path,
            json!({"offline_grace_ms": 0, "session_ttl_ms": 90_000}),
        )
        .await;
    assert_eq!(
        (
            ok.body["offline_grace_ms"].as_u64(),
            ok.body["session_ttl_ms"].as_u64()
        ),
        (Some(0), Some(90_000))
    );
    let reset = s.post_json(&path, json!({"session_ttl_ms": null})).await;
    assert_eq!(reset.body["session_ttl_ms"].as_u64(), Some(60_000));
    assert_eq!(
        reset.body["offline_grace_ms"].as_u64(),
        Some(0),
        "other overrides stay"
    );
    s.stop().await;
}
