//! Operations surface over real HTTP: `/metrics` series with real values, the per-IP limit on
//! failed authentication, the per-identity session cap and the slow-client request timeout.

mod common;

use std::time::Duration;

use common::receiver::Receiver;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(s: &common::TestServer) -> String {
    let res = reqwest::get(s.url("/metrics")).await.expect("scrape");
    assert_eq!(res.status(), 200);
    let kind = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    res.text().await.expect("text")
}

/// The value of the first sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_report_presence_storage_webhooks_and_http() {
    let s = common::spawn_with(|c| c.webhooks.retry_schedule_secs = vec![1]).await;
    let svc = s.enabled_service("metrics").await;
    let quiet = s.enabled_service("quiet").await;
    let receiver = Receiver::start().await;
    let r = s
        .post_json(
            &format!("/api/v1/services/{svc}/webhooks"),
            json!({"url": receiver.url("/hook")}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);

    let alice = s.token(&svc, "alice");
    s.open_session(&alice).await;
    s.open_session(&alice).await;
    s.open_session(&s.token(&svc, "bob")).await;
    s.binding(&svc, "alice", "fcm", "device-token-1").await;
    receiver.wait_for(2, Duration::from_secs(10)).await;
    // The dispatcher counts an attempt once it has read the response, after the receiver saw it.
    common::eventually("both deliveries counted", || async {
        let text = scrape(&s).await;
        let count = |prefix: &str| sample(&text, prefix).unwrap_or(0.0);
        count("reachd_webhook_attempts_total{outcome=\"delivered\"}") >= 2.0
            && count("reachd_webhook_delivery_lag_seconds_count") >= 2.0
    })
    .await;

    // The stored gauges are read in the background (every 100 ms in tests).
    let online = format!("reachd_users_online{{service=\"{svc}\"}}");
    common::eventually("users online in the stored gauges", || async {
        sample(&scrape(&s).await, &online) == Some(2.0)
    })
    .await;
    let text = scrape(&s).await;
    assert_eq!(
        sample(&text, &format!("reachd_users_online{{service=\"{svc}\"}}")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("reachd_sessions_live{{service=\"{svc}\"}}")),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("reachd_users_online{{service=\"{quiet}\"}}")
        ),
        Some(0.0)
    );
    assert_eq!(sample(&text, "reachd_websocket_connections "), Some(0.0));
    assert_eq!(sample(&text, "reachd_storage_up "), Some(1.0));
    assert!(sample(&text, "reachd_webhook_pending ").is_some());
    assert!(sample(&text, "reachd_webhook_oldest_pending_seconds ").is_some());
    // The recorder is process-wide (other tests in this binary add to it): lower bounds only.
    let at_least = |prefix: &str, min: f64| {
        let value = sample(&text, prefix).unwrap_or(0.0);
        assert!(value >= min, "{prefix} = {value}, expected ≥ {min}\n{text}");
    };
    at_least("reachd_transitions_total{cause=\"session_opened\"}", 2.0);
    at_least("reachd_transitions_total{cause=\"binding_added\"}", 1.0);
    at_least("reachd_webhook_attempts_total{outcome=\"delivered\"}", 2.0);
    at_least("reachd_webhook_delivery_lag_seconds_count", 2.0);
    at_least("reachd_writer_batch_size_count", 1.0);
    at_least("reachd_writer_commit_seconds_bucket{le=\"+Inf\"}", 1.0);
    // Routes are labelled by pattern, never by raw path.
    at_least(
        "reachd_http_request_duration_seconds_count{method=\"POST\",route=\"/chat/v2/Services/{sid}\",status=\"200\"}",
        2.0,
    );
    at_least(
        "reachd_http_request_duration_seconds_count{method=\"POST\",route=\"/client/v1/sessions\",status=\"201\"}",
        3.0,
    );
    assert!(!text.contains(&format!("route=\"/chat/v2/Services/{svc}\"")));

    // Offline detection is recorded once someone goes offline.
    let bob_session = s.open_session(&s.token(&svc, "carol")).await;
    let r = s.close_session(&s.token(&svc, "carol"), &bob_session).await;
    assert!(r.status < 300, "{:?}", r.body);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = scrape(&s).await;
        if sample(&text, "reachd_offline_detection_seconds_count").unwrap_or(0.0) >= 1.0 {
            assert!(sample(&text, "reachd_transitions_total{cause=\"session_closed\"}").is_some());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no offline recorded\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn failed_authentication_is_rate_limited_per_address_with_retry_after() {
    let s = common::spawn_with(|c| {
        c.limits.failed_auth_burst = 3;
        c.limits.failed_auth_per_minute = 6;
    })
    .await;
    let bad = |path: &str| {
        s.http
            .get(s.url(path))
            .basic_auth(common::ACCOUNT_SID, Some("wrong-token"))
    };
    for _ in 0..3 {
        let r = s.send(bad("/chat/v2/Services")).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.code(), 20003);
    }
    let r = s.send(bad("/chat/v2/Services")).await;
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert_eq!(r.code(), 20429);
    assert_eq!(r.body["status"], 429);
    let wait: u64 = r.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=10).contains(&wait), "{wait}");
    // While limited, even correct credentials wait (the address is what is limited)…
    assert_eq!(s.get("/chat/v2/Services").await.status, 429);
    // …but what takes no credentials (probes, scrapes) is never limited.
    for open in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        assert_eq!(s.get(open).await.status, 200, "{open}");
    }
    // …and bad access tokens are charged the same way.
    let r = s
        .client(
            reqwest::Method::GET,
            "/client/v1/users/alice",
            "garbage",
            None,
        )
        .await;
    assert_eq!(r.status, 429);
    // 6 per minute: one token back within ~10 s.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let r = s.get("/chat/v2/Services").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let text = scrape(&s).await;
    assert!(sample(&text, "reachd_rate_limited_total").unwrap_or(0.0) >= 3.0);
    assert!(sample(&text, "reachd_auth_failures_total").unwrap_or(0.0) >= 3.0);
    s.stop().await;
}

#[tokio::test]
async fn an_identity_cannot_hold_more_sessions_than_the_cap() {
    let s = common::spawn_with(|c| c.limits.sessions_per_identity = 3).await;
    let svc = s.enabled_service("capped").await;
    let alice = s.token(&svc, "alice");
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(s.open_session(&alice).await);
    }
    let open = |token: String| {
        let s = &s;
        async move {
            s.client(
                reqwest::Method::POST,
                "/client/v1/sessions",
                &token,
                Some(json!({})),
            )
            .await
        }
    };
    let r = open(alice.clone()).await;
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert_eq!(r.code(), 20429);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("3 live sessions")
    );
    // A WebSocket is refused before the upgrade.
    let ws = s.url(&format!("/client/v1/socket?token={alice}"));
    let err = tokio_tungstenite::connect_async(ws.replacen("http", "ws", 1)).await;
    match err {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429)
        }
        other => panic!("expected a 429 refusal, got {other:?}"),
    }
    // Other identities are unaffected; closing one makes room.
    assert_eq!(open(s.token(&svc, "bob")).await.status, 201);
    let r = s.close_session(&alice, &sessions[0]).await;
    assert!(r.status < 300, "{:?}", r.body);
    assert_eq!(open(alice.clone()).await.status, 201);
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    // 2 s: short beside the 10 s the test waits, long enough that a normal client's head
    // (below) is never cut off on a loaded CI machine (at 500 ms it once was: 408).
    let s = common::spawn_with(|c| c.http.client_request_timeout_ms = 2_000).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("partial head");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a slow client for 10 s");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let head = String::from_utf8_lossy(&buf);
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 408"),
        "{head}"
    );
    // Normal clients are unaffected.
    assert_eq!(
        reqwest::get(s.url("/healthz")).await.expect("get").status(),
        200
    );
    s.stop().await;
}

#[tokio::test]
async fn a_request_whose_body_trickles_gets_408_and_the_connection_is_closed() {
    let s = common::spawn_with(|c| c.http.request_timeout_ms = 500).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            common::ACCOUNT_SID,
            common::AUTH_TOKEN
        ))
    };
    let head = format!(
        "POST /chat/v2/Services HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nFriendlyName=sl"
    );
    slow.write_all(head.as_bytes()).await.expect("head");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server waited 10 s for the body");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":20408"), "{answer}");
    let text = scrape(&s).await;
    assert!(
        sample(
            &text,
            "reachd_http_request_duration_seconds_count{method=\"POST\",route=\"unknown\",status=\"408\"}"
        )
        .is_some(),
        "{text}"
    );
    // Nothing was created from the partial body.
    let r = s.get("/chat/v2/Services").await;
    assert_eq!(r.body["services"].as_array().map(Vec::len), Some(0));
    s.stop().await;
}

#[tokio::test]
async fn a_graceful_stop_ends_event_streams_instead_of_waiting_for_them() {
    let mut s = common::spawn().await;
    let svc = s.service("stream").await;
    let response = s
        .http
        .get(s.url(&format!("/api/v1/services/{svc}/events")))
        .basic_auth(common::ACCOUNT_SID, Some(common::AUTH_TOKEN))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    let running = s.running.take().expect("running");
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(running.stop());
    let body = tokio::time::timeout(Duration::from_secs(10), response.bytes()).await;
    assert!(body.is_ok(), "the stream did not end on the stop");
    stopping.await.expect("join").expect("clean stop");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
