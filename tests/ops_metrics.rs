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
