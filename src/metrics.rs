//! Process-wide Prometheus metrics: installs the `metrics` recorder once, with histogram
//! buckets and help texts for every series reachd records. Code anywhere records through the
//! `metrics` facade (`metrics::counter!` …); `/metrics` renders the handle returned here and
//! appends the gauges read at scrape time.
//!
//! Counters are exported at zero from the start, for every label value they can take, so that
//! `rate()` and absence alerts work before the first event.
//!
//! May depend on: metrics, metrics-exporter-prometheus, domain::presence (the causes).

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Renders what the installed recorder holds.
pub type MetricsHandle = PrometheusHandle;

/// Latency buckets in seconds: sub-millisecond handlers up to slow webhook receivers.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Offline detection and delivery lag: TTL + grace is typically tens of seconds.
const DELAY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
];
/// Jobs per write transaction (1 up to the largest batch).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Outcomes of `reachd_webhook_attempts_total` (see `webhooks::dispatcher`).
pub const WEBHOOK_OUTCOMES: [&str; 4] = ["delivered", "retry", "failed", "gone"];

static HANDLE: OnceLock<Option<MetricsHandle>> = OnceLock::new();

/// The global recorder's handle, installing it on first use. `None` when another recorder was
/// installed first (an embedding program's): then `/metrics` shows only scrape-time gauges.
pub fn handle() -> Option<MetricsHandle> {
    HANDLE
        .get_or_init(|| match install() {
            Ok(handle) => {
                describe();
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        })
        .clone()
}

fn install() -> Result<MetricsHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("reachd_http_request_duration_seconds".into()),
            LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("reachd_writer_commit_seconds".into()),
            LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("reachd_offline_detection_seconds".into()),
            DELAY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("reachd_webhook_delivery_lag_seconds".into()),
            DELAY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("reachd_writer_batch_size".into()),
            BATCH_BUCKETS,
        )?
        .install_recorder()
}

fn describe() {
    describe_counter!(
        "reachd_transitions_total",
        "Committed online/offline transitions, by cause."
    );
    describe_histogram!(
        "reachd_offline_detection_seconds",
        Unit::Seconds,
        "From a user's last ping (or session end) to their offline state being committed."
    );
    describe_histogram!(
        "reachd_writer_batch_size",
        "Writes grouped into one SQLite transaction."
    );
    describe_histogram!(
        "reachd_writer_commit_seconds",
        Unit::Seconds,
        "Time to run and commit one write transaction."
    );
    describe_counter!(
        "reachd_webhook_attempts_total",
        "Webhook attempts, by outcome (delivered, retry, failed, gone)."
    );
    describe_histogram!(
        "reachd_webhook_delivery_lag_seconds",
        Unit::Seconds,
        "From an event's commit to its webhook being delivered."
    );
    describe_histogram!(
        "reachd_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request duration, by method, route pattern and status."
    );
    describe_counter!(
        "reachd_auth_failures_total",
        "Requests refused for bad credentials or tokens."
    );
    describe_counter!(
        "reachd_rate_limited_total",
        "Requests refused with 429 after too many failed authentications."
    );
    describe_counter!(
        "reachd_client_writes_limited_total",
        "Client writes (sessions, push bindings) refused with 429 by the per-identity limit."
    );
    describe_gauge!(
        "reachd_info",
        "Always 1; the `version` label carries the server version."
    );
    metrics::gauge!("reachd_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    register_counters_at_zero();
}

/// Creates every counter series (an increment of 0), so each is rendered from the first scrape.
fn register_counters_at_zero() {
    for cause in crate::domain::presence::Cause::ALL {
        metrics::counter!("reachd_transitions_total", "cause" => cause.as_str()).increment(0);
    }
    for outcome in WEBHOOK_OUTCOMES {
        metrics::counter!("reachd_webhook_attempts_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("reachd_rate_limited_total").increment(0);
    metrics::counter!("reachd_auth_failures_total").increment(0);
}
