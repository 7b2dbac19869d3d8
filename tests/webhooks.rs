//! Webhooks end to end: a real receiver on a random port, Twilio-format and native targets,
//! order under failures, the webhook-enabled header, 410, replay, and the event feed.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::receiver::{Behavior, Receiver, Recorded};
use serde_json::json;

async fn server() -> common::TestServer {
    common::spawn_with(|c| {
        c.webhooks.retry_schedule_secs = vec![1; 10];
        c.webhooks.twilio_retry_base_ms = 50;
    })
    .await
}

async fn enabled_service(s: &common::TestServer) -> String {
    let svc = s.service("hooks").await;
    s.post(
        &format!("/chat/v2/Services/{svc}"),
        &[("ReachabilityEnabled", "true")],
    )
    .await;
    s.timings(&svc, 1_000, 5_000, 0).await;
    svc
}

async fn native_endpoint(
    s: &common::TestServer,
    svc: &str,
    url: &str,
    types: Option<Vec<&str>>,
) -> (String, String) {
    let mut body = json!({"url": url, "description": "test"});
    if let Some(types) = types {
        body["event_types"] = json!(types);
    }
    let r = s
        .post_json(&format!("/api/v1/services/{svc}/webhooks"), body)
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(r.str("secret").starts_with("whsec_"));
    (r.str("id"), r.str("secret"))
}

/// Checks requests arrived in sequence order, every sequence once at least, and that repeats
/// are retries of one delivery (same token).
fn assert_ordered(
    requests: &[Recorded],
    sequence: impl Fn(&Recorded) -> i64,
    token: impl Fn(&Recorded) -> String,
    expected: usize,
) {
    let mut last = 0;
    let mut tokens: HashMap<i64, String> = HashMap::new();
    for r in requests {
        let seq = sequence(r);
        assert!(seq >= last, "sequence went back from {last} to {seq}");
        if let Some(t) = tokens.get(&seq) {
            assert_eq!(
                t,
                &token(r),
                "a repeat of sequence {seq} is a retry with the same token"
            );
        }
        tokens.insert(seq, token(r));
        last = seq;
    }
    assert_eq!(tokens.len(), expected, "every event arrived");
}

#[tokio::test]
async fn fifty_flips_arrive_in_order_at_every_target_despite_failures() {
    let s = server().await;
    let svc = enabled_service(&s).await;
    let chat = Receiver::start().await;
    chat.plan(&[
        Behavior::Status(503),
        Behavior::Status(503),
        Behavior::Close,
    ]);
    let url = chat.url("/chat?src=reach");
    let r = s
        .post(
            &format!("/chat/v2/Services/{svc}"),
            &[
                ("PostWebhookUrl", url.as_str()),
                ("PostWebhookRetryCount", "3"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let native = Receiver::start().await;
    native.plan(&[Behavior::Status(500), Behavior::RetryAfter(429, 1)]);
    native_endpoint(&s, &svc, &native.url("/native"), None).await;

    let token = s.token(&svc, "flipper");
    s.flip(&token, 50).await;
    // user.added + 100 transitions; the Twilio target also failed three times, the native twice.
    let chat_requests = chat.wait_for(104, Duration::from_secs(30)).await;
    let native_requests = native.wait_for(103, Duration::from_secs(30)).await;
    let seq = |r: &Recorded| {
        r.param("Sequence")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let token_of = |r: &Recorded| {
        r.header("I-Twilio-Idempotency-Token")
            .unwrap_or_default()
            .to_string()
    };
    assert_ordered(&chat_requests, seq, token_of, 101);
    assert_eq!(
        chat_requests[0].param("EventType").as_deref(),
        Some("onUserAdded")
    );
    assert_eq!(chat_requests[0].param("RetryCount").as_deref(), Some("0"));
    assert_eq!(
        chat_requests[1].param("RetryCount").as_deref(),
        Some("1"),
        "the retry says so"
    );
    let online: Vec<_> = chat_requests
        .iter()
        .filter_map(|r| r.param("IsOnline"))
        .collect();
    assert!(
        online.windows(2).all(|w| w[0] != w[1] || w[0] == online[0]),
        "alternating online/offline"
    );
    let nseq = |r: &Recorded| r.json()["data"]["sequence"].as_i64().unwrap_or(0);
    let nid = |r: &Recorded| r.header("webhook-id").unwrap_or_default().to_string();
    assert_ordered(&native_requests, nseq, nid, 101);
    assert_eq!(
        native_requests
            .last()
            .map(|r| r.json()["data"]["reason"].clone()),
        Some(json!("session_closed"))
    );
    s.stop().await;
}

#[tokio::test]
async fn rest_changes_reach_twilio_targets_only_with_the_webhook_header() {
    let s = server().await;
    let svc = enabled_service(&s).await;
    let chat = Receiver::start().await;
    let url = chat.url("/chat");
    s.post(
        &format!("/chat/v2/Services/{svc}"),
        &[("PostWebhookUrl", url.as_str())],
    )
    .await;
    let native = Receiver::start().await;
    native_endpoint(
        &s,
        &svc,
        &native.url("/n"),
        Some(vec!["user.added", "user.updated"]),
    )
    .await;

    s.post(
        &format!("/chat/v2/Services/{svc}/Users"),
        &[("Identity", "quiet")],
    )
    .await;
    let loud = s
        .http
        .post(s.url(&format!("/chat/v2/Services/{svc}/Users")))
        .basic_auth(common::ACCOUNT_SID, Some(common::AUTH_TOKEN))
        .header("X-Twilio-Webhook-Enabled", "true")
        .form(&[("Identity", "loud"), ("FriendlyName", "Loud")]);
    assert_eq!(s.send(loud).await.status, 201);
    let natives = native.wait_for(2, Duration::from_secs(10)).await;
    // The Twilio target is its own queue: wait for its delivery, then for anything extra.
    chat.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let twilio = chat.requests();
    assert_eq!(
        twilio.len(),
        1,
        "only the request with the header fired: {twilio:?}"
    );
    assert_eq!(twilio[0].param("EventType").as_deref(), Some("onUserAdded"));
    assert_eq!(twilio[0].param("Identity").as_deref(), Some("loud"));
    assert_eq!(twilio[0].param("FriendlyName").as_deref(), Some("Loud"));
    assert_eq!(twilio[0].param("Source").as_deref(), Some("API"));
    assert_eq!(
        twilio[0].param("InstanceSid").as_deref(),
        Some(svc.as_str())
    );
    let expected =
        reachd::webhooks::sign::twilio_signature(common::AUTH_TOKEN, &url, &twilio[0].params());
    assert_eq!(
        twilio[0].header("X-Twilio-Signature"),
        Some(expected.as_str())
    );
    assert_eq!(
        natives
            .iter()
            .map(|r| r.json()["data"]["identity"].clone())
            .collect::<Vec<_>>(),
        vec![json!("quiet"), json!("loud")]
    );
    s.stop().await;
}

#[tokio::test]
async fn gone_endpoints_are_disabled_and_failed_deliveries_can_be_replayed() {
    let s = server().await;
    let svc = enabled_service(&s).await;
    let gone = Receiver::start().await;
    gone.plan(&[Behavior::Status(410)]);
    let (id, _) = native_endpoint(&s, &svc, &gone.url("/gone"), None).await;
    s.user(&svc, "a").await;
    gone.wait_for(1, Duration::from_secs(10)).await;
    let path = format!("/api/v1/services/{svc}/webhooks/{id}");
    // The 410 is recorded (and the endpoint disabled) by the dispatcher after the response.
    common::eventually("the endpoint disabled", || async {
        s.get(&path).await.body["disabled"] == json!(true)
    })
    .await;
    let endpoint = s.get(&path).await;
    assert_eq!(endpoint.body["disabled"], true);
    assert!(
        endpoint.body.get("secret").is_none(),
        "the secret is shown only at creation"
    );
    s.user(&svc, "b").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gone.requests().len(),
        1,
        "a disabled endpoint gets nothing more"
    );

    let failed = s
        .get(&format!(
            "/api/v1/services/{svc}/webhooks/{id}/deliveries?status=failed"
        ))
        .await;
    let deliveries = failed.body["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["attempt_log"][0]["status"], 410);
    // Re-enable, resend the failed one, recover everything failed since the start.
    let r = s
        .post_json(
            &format!("/api/v1/services/{svc}/webhooks/{id}"),
            json!({"disabled": false}),
        )
        .await;
    assert_eq!(r.body["disabled"], false);
    let resent = s
        .post_json(
            &format!("/api/v1/deliveries/{}/resend", deliveries[0]["id"]),
            json!({}),
        )
        .await;
    assert_eq!(resent.status, 202);
    gone.wait_for(2, Duration::from_secs(10)).await;
    let recovered = s
        .post_json(
            &format!("/api/v1/services/{svc}/webhooks/{id}/recover?since=2000-01-01T00:00:00Z"),
            json!({}),
        )
        .await;
    assert_eq!(
        (recovered.status, recovered.body["resent"].as_i64()),
        (202, Some(1))
    );
    gone.wait_for(3, Duration::from_secs(10)).await;
    let identities: Vec<_> = gone
        .requests()
        .iter()
        .map(|r| r.json()["data"]["identity"].clone())
        .collect();
    assert_eq!(identities, vec![json!("a"), json!("a"), json!("a")]);
    let bad = s
        .post_json(
            &format!("/api/v1/services/{svc}/webhooks"),
            json!({"url": "ftp://x"}),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (400, 20001));
    s.stop().await;
}

#[tokio::test]
async fn the_event_feed_pages_and_resumes_without_loss() {
    let s = server().await;
    let svc = enabled_service(&s).await;
    for i in 0..5 {
        s.user(&svc, &format!("u{i}")).await;
    }
    let page = s
        .get(&format!("/api/v1/services/{svc}/events?limit=3"))
        .await;
    assert_eq!(page.body["events"].as_array().map(Vec::len), Some(3));
    assert_eq!(page.body["has_more"], true);
    let cursor = page.str("next_cursor");
    let rest = s
        .get(&format!("/api/v1/services/{svc}/events?after={cursor}"))
        .await;
    let ids: Vec<_> = rest.body["events"]
        .as_array()
        .map(|a| a.iter().map(|e| e["data"]["identity"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![json!("u3"), json!("u4")]);

    // SSE: read two frames, disconnect, create more users, resume with Last-Event-ID.
    let mut seen = Vec::new();
    let mut last_id = String::new();
    for round in 0..2 {
        let mut req = s
            .http
            .get(s.url(&format!("/api/v1/services/{svc}/events")))
            .basic_auth(common::ACCOUNT_SID, Some(common::AUTH_TOKEN))
            .header("Accept", "text/event-stream");
        if !last_id.is_empty() {
            req = req.header("Last-Event-ID", &last_id);
        }
        let mut response = req.send().await.expect("stream");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut buffer = String::new();
        let want = if round == 0 { 2 } else { 6 };
        while buffer.matches("\n\n").count() < want {
            let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
                .await
                .expect("frame in time")
                .expect("chunk")
                .expect("open");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
        for frame in buffer
            .split("\n\n")
            .filter(|f| f.starts_with("id: "))
            .take(want)
        {
            let id = frame
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("id: "))
                .unwrap_or_default()
                .to_string();
            let data: serde_json::Value = frame
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default();
            seen.push(
                data["data"]["identity"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            last_id = id;
        }
        drop(response);
        if round == 0 {
            for i in 5..8 {
                s.user(&svc, &format!("u{i}")).await;
            }
        } else {
            break;
        }
    }
    // Round two also follows a live event created while streaming? It read u2..u7 (6 frames).
    let expected: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
    assert_eq!(seen, expected, "no loss, no duplicate across the reconnect");
    s.stop().await;
}

#[tokio::test]
async fn a_new_endpoint_url_redirects_waiting_deliveries_at_once() {
    // Backoff of an hour: without the redirect nothing would arrive during this test.
    let s = common::spawn_with(|c| c.webhooks.retry_schedule_secs = vec![3_600]).await;
    let svc = enabled_service(&s).await;
    let broken = Receiver::start().await;
    broken.set_default(Behavior::Status(500));
    let (id, _) = native_endpoint(&s, &svc, &broken.url("/old"), Some(vec!["user.added"])).await;
    for identity in ["a", "b", "c"] {
        s.user(&svc, identity).await;
    }
    broken.wait_for(3, Duration::from_secs(10)).await;
    let stats_path = format!("/api/v1/services/{svc}/stats");
    common::eventually("three deliveries waiting out their backoff", || async {
        s.get(&stats_path).await.body["deliveries"]["retrying"] == json!(3)
    })
    .await;
    assert_eq!(s.get(&stats_path).await.body["deliveries"]["pending"], 3);

    let fixed = Receiver::start().await;
    let r = s
        .post_json(
            &format!("/api/v1/services/{svc}/webhooks/{id}"),
            json!({"url": fixed.url("/new")}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let arrived = fixed.wait_for(3, Duration::from_secs(10)).await;
    let identities: Vec<_> = arrived
        .iter()
        .map(|r| r.json()["data"]["identity"].clone())
        .collect();
    assert_eq!(identities, vec![json!("a"), json!("b"), json!("c")]);
    assert_eq!(
        broken.requests().len(),
        3,
        "nothing more went to the old URL"
    );
    common::eventually("no delivery left waiting", || async {
        let stats = s.get(&stats_path).await.body;
        stats["deliveries"]["pending"] == json!(0) && stats["deliveries"]["delivered"] == json!(3)
    })
    .await;
    s.stop().await;
}
