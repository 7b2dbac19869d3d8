//! Operations details: counters exported at zero on a fresh server, a browser's credential-less
//! first request not counted as a failed authentication, `/favicon.ico`, JSON-only output with
//! `log_format = "json"`, resending a pending delivery, and the `/metrics` snapshot and token.

mod common;

use std::time::Duration;

use common::process::{Server, reachd};
use common::receiver::{Behavior, Receiver};
use serde_json::json;

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn scrape_blocking(base: &str) -> String {
    let res = reqwest::blocking::get(format!("{base}/metrics")).expect("scrape");
    assert_eq!(res.status(), 200);
    res.text().expect("text")
}

/// Lines of a file that are not empty.
fn lines_of(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn a_fresh_server_exports_every_counter_at_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(reachd(dir.path()));
    let text = scrape_blocking(&server.base());
    let causes = [
        "session_opened",
        "session_closed",
        "session_timeout",
        "binding_added",
        "binding_removed",
        "reachability_enabled",
    ];
    for cause in causes {
        let series = format!("reachd_transitions_total{{cause=\"{cause}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{series}\n{text}");
    }
    for outcome in ["delivered", "retry", "failed", "gone"] {
        let series = format!("reachd_webhook_attempts_total{{outcome=\"{outcome}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{series}\n{text}");
    }
    assert_eq!(sample(&text, "reachd_rate_limited_total"), Some(0.0));
    assert_eq!(sample(&text, "reachd_auth_failures_total"), Some(0.0));
    server.terminate();
}

#[test]
fn a_request_without_credentials_is_a_challenge_not_an_auth_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("stderr.log");
    let logs = std::fs::File::create(&log_path).expect("log file");
    let server = Server::start_logging(reachd(dir.path()), logs);
    let http = reqwest::blocking::Client::new();
    let base = server.base();

    let anonymous = http.get(format!("{base}/dashboard")).send().expect("get");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"reachd\""
    );
    let body: serde_json::Value = anonymous.json().expect("json");
    assert_eq!(body["code"], 20003);
    let favicon = http.get(format!("{base}/favicon.ico")).send().expect("get");
    assert_eq!(favicon.status(), 204);

    let text = scrape_blocking(&base);
    assert_eq!(sample(&text, "reachd_auth_failures_total"), Some(0.0));
    let warnings = lines_of(&log_path);
    assert!(
        warnings.iter().all(|l| !l.contains("401")),
        "no warning for a challenge: {warnings:?}"
    );

    let wrong = http
        .get(format!("{base}/dashboard"))
        .basic_auth(common::ACCOUNT_SID, Some("wrong"))
        .send()
        .expect("get");
    assert_eq!(wrong.status(), 401);
    let text = scrape_blocking(&base);
    assert_eq!(sample(&text, "reachd_auth_failures_total"), Some(1.0));
    server.terminate();
    let warnings = lines_of(&log_path);
    assert!(
        warnings.iter().any(|l| l.contains("401")),
        "wrong credentials are still reported: {warnings:?}"
    );
}

#[test]
fn in_json_mode_every_output_line_is_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("stderr.log");
    let logs = std::fs::File::create(&log_path).expect("log file");
    let mut cmd = reachd(dir.path());
    cmd.env("REACHD_LOG", "info")
        .env("REACHD_LOG_FORMAT", "json");
    // A first start: the generated credentials are printed too.
    let server = Server::start_logging(cmd, logs);
    let stdout = server.lines.clone();
    assert!(stdout.len() >= 2, "credentials and address: {stdout:?}");
    // A request first: it is logged too, and the server has settled before SIGTERM.
    let health = reqwest::blocking::get(format!("{}/healthz", server.base())).expect("healthz");
    assert_eq!(health.status(), 200);
    server.terminate();
    let stderr = lines_of(&log_path);
    assert!(!stderr.is_empty());
    for line in stdout.iter().chain(&stderr) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(value["message"].is_string(), "{line}");
    }
    let listening: serde_json::Value =
        serde_json::from_str(stdout.last().expect("a line")).expect("json");
    assert!(
        listening["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("reachd listening on 127.0.0.1:"),
        "{listening}"
    );
    let first: serde_json::Value = serde_json::from_str(&stdout[0]).expect("json");
    assert!(
        first["account_sid"]
            .as_str()
            .unwrap_or_default()
            .starts_with("AC"),
        "{first}"
    );
}

#[tokio::test]
async fn resending_a_pending_delivery_attempts_it_at_once() {
    // The first attempt fails; the retry would come only an hour later.
    let s = common::spawn_with(|c| c.webhooks.retry_schedule_secs = vec![3600]).await;
    let svc = s.service("resend").await;
    let receiver = Receiver::start().await;
    receiver.plan(&[Behavior::Status(500)]);
    receiver.set_default(Behavior::Status(200));
    let r = s
        .post_json(
            &format!("/api/v1/services/{svc}/webhooks"),
            json!({"url": receiver.url("/hook")}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let endpoint = r.str("id");
    s.user(&svc, "alice").await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let deliveries = format!("/api/v1/services/{svc}/webhooks/{endpoint}/deliveries");
    common::eventually("the failed attempt recorded", || async {
        s.get(&deliveries).await.body["deliveries"][0]["attempts"] == json!(1)
    })
    .await;
    let pending = s.get(&deliveries).await.body["deliveries"][0].clone();
    assert_eq!(pending["status"], "pending", "{pending}");

    let resent = s
        .post_json(
            &format!("/api/v1/deliveries/{}/resend", pending["id"]),
            json!({}),
        )
        .await;
    assert_eq!(resent.status, 202, "{:?}", resent.body);
    assert_eq!(
        resent.body["id"], pending["id"],
        "the same delivery, now due"
    );
    let requests = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert!(requests[0].header("webhook-id").is_some());
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id"),
        "the same delivery, attempted again"
    );
    common::eventually("the delivery delivered", || async {
        let list = s.get(&deliveries).await.body["deliveries"].clone();
        list.as_array().map(Vec::len) == Some(1) && list[0]["status"] == "delivered"
    })
    .await;
    s.stop().await;
}

async fn scrape_with(s: &common::TestServer, auth: Option<&str>) -> (u16, String) {
    let mut req = s.http.get(s.url("/metrics"));
    if let Some(value) = auth {
        req = req.header("authorization", value);
    }
    let res = req.send().await.expect("scrape");
    (res.status().as_u16(), res.text().await.expect("text"))
}

#[tokio::test]
async fn with_a_metrics_token_scrapes_need_it_as_a_bearer_token() {
    let s = common::spawn_with(|c| {
        c.metrics.token = Some(reachd::config::Secret::new("scrape-secret-1"));
    })
    .await;
    let (status, body) = scrape_with(&s, None).await;
    assert_eq!(status, 401, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("twilio error");
    assert_eq!(
        (error["code"].as_i64(), error["status"].as_i64()),
        (Some(20003), Some(401))
    );
    assert_eq!(scrape_with(&s, Some("Bearer wrong")).await.0, 401);
    assert_eq!(scrape_with(&s, Some("Bearer scrape-secret-")).await.0, 401);
    let basic = format!("Basic {}", "c2NyYXBlLXNlY3JldC0x");
    assert_eq!(scrape_with(&s, Some(&basic)).await.0, 401, "Bearer only");
    let (status, body) = scrape_with(&s, Some("Bearer scrape-secret-1")).await;
    assert_eq!(status, 200);
    assert!(body.contains("reachd_storage_up 1"), "{body}");
    // Health checks stay open.
    assert_eq!(s.send(s.http.get(s.url("/healthz"))).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_scrape_renders_the_background_reading_and_never_reads_storage() {
    // One reading at start, the next an hour later: scrapes must not read on their own.
    let s = common::spawn_with(|c| c.metrics.refresh_interval_ms = 3_600_000).await;
    let gauges = s.running.as_ref().expect("running").gauges.clone();
    assert_eq!(gauges.refreshes(), 1, "the reading taken at start");
    let svc = s.service("late").await;
    s.user(&svc, "alice").await;
    let online = format!("reachd_users_online{{service=\"{svc}\"}}");
    for _ in 0..5 {
        let (status, text) = scrape_with(&s, None).await;
        assert_eq!(status, 200);
        assert_eq!(sample(&text, &online), None, "{text}");
        assert_eq!(sample(&text, "reachd_storage_up"), Some(1.0));
        assert_eq!(sample(&text, "reachd_webhook_pending"), Some(0.0));
    }
    assert_eq!(gauges.refreshes(), 1, "scrapes read nothing from storage");
    // A refresh (what the background task does) is what brings the service in.
    let store = s.running.as_ref().expect("running").store.clone();
    gauges.refresh(store.as_ref());
    let (_, text) = scrape_with(&s, None).await;
    assert_eq!(sample(&text, &online), Some(0.0), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn the_background_task_refreshes_the_reading() {
    let s = common::spawn_with(|c| c.metrics.refresh_interval_ms = 100).await;
    let svc = s.enabled_service("refreshed").await;
    s.open_session(&s.token(&svc, "alice")).await;
    let online = format!("reachd_users_online{{service=\"{svc}\"}}");
    common::eventually("alice online in the gauges", || async {
        sample(&scrape_with(&s, None).await.1, &online) == Some(1.0)
    })
    .await;
    let gauges = s.running.as_ref().expect("running").gauges.clone();
    assert!(gauges.refreshes() > 1, "{}", gauges.refreshes());
    s.stop().await;
}
