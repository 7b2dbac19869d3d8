//! `GET /metrics` (Prometheus text format) and the middleware that times every request by
//! route pattern and status. A scrape never reads storage: it renders the recorder, memory
//! gauges and the latest background reading of the stored ones (`api::gauges`). With
//! `metrics.token` set it requires `Authorization: Bearer <token>` (401 otherwise); without,
//! it needs no credentials (bind to loopback or protect it at the proxy).
//!
//! May depend on: actix-web, metrics, sha2, subtle, api::{errors, gauges, state}, domain.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use super::errors::ApiError;
use super::state::AppState;
use crate::domain::time::now_ms;

/// Times a request under its route pattern (`/chat/v2/Services/{sid}`), never its raw path,
/// so the label set stays bounded whatever clients send.
pub async fn record_request_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    let result = next.call(req).await;
    let (route, status) = match &result {
        Ok(response) => (
            response
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned()),
            response.status(),
        ),
        // An answer prepared as an error (a timeout): the request went down with its handler.
        Err(e) => ("unknown".to_owned(), e.as_response_error().status_code()),
    };
    request_histogram(method, &route, status).record(started.elapsed().as_secs_f64());
    result
}

/// Histogram handles by (method, status), then by route pattern.
type HistogramsByLabels =
    HashMap<(&'static str, StatusCode), HashMap<Box<str>, metrics::Histogram>>;

thread_local! {
    /// This worker's histogram handles: building a labelled key and looking it up in the
    /// recorder's registry costs more than recording. Bounded like the label set (methods ×
    /// statuses × route patterns).
    static REQUEST_HISTOGRAMS: std::cell::RefCell<HistogramsByLabels> =
        std::cell::RefCell::new(HashMap::new());
}

/// The request-duration histogram of one label set.
fn request_histogram(method: &'static str, route: &str, status: StatusCode) -> metrics::Histogram {
    REQUEST_HISTOGRAMS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let routes = cache.entry((method, status)).or_default();
        if let Some(histogram) = routes.get(route) {
            return histogram.clone();
        }
        let histogram = metrics::histogram!(
            "reachd_http_request_duration_seconds",
            "method" => method,
            "route" => route.to_owned(),
            "status" => status.as_u16().to_string(),
        );
        routes.insert(route.into(), histogram.clone());
        histogram
    })
}

/// The method as a label: the standard ones by name, anything else (clients may send any
/// token) as `other`, so the label set stays bounded.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics`: the recorded series, then gauges from memory and the latest stored reading.
pub async fn render_metrics(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if let Some(token) = &state.metrics_token
        && !bearer_matches(&req, token.expose())
    {
        let error = ApiError::new(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authenticate: /metrics requires Authorization: Bearer <metrics.token>",
        );
        let mut response = error.error_response();
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"reachd metrics\""),
        );
        return response;
    }
    let mut body = match &state.metrics {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    };
    append_live_gauges(&mut body, &state);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}

/// The request's Bearer token equals `expected`, compared in constant time (of equal-length
/// digests, so not even the length leaks).
fn bearer_matches(req: &HttpRequest, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let Some(given) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
    else {
        return false;
    };
    let (given, expected) = (Sha256::digest(given), Sha256::digest(expected));
    given.ct_eq(&expected).into()
}

fn append_live_gauges(body: &mut String, state: &AppState) {
    let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(body, "{name}{labels} {value}");
        }
        body.push('\n');
    };
    let connections = state.hub.connections() as f64;
    gauge(
        "reachd_websocket_connections",
        "Open client WebSocket connections.",
        &[(String::new(), connections)],
    );
    let reading = state.gauges.latest();
    gauge(
        "reachd_storage_up",
        "1 when the latest background reading of the stored gauges succeeded, 0 otherwise.",
        &[(
            String::new(),
            if reading.snapshot.is_some() { 1.0 } else { 0.0 },
        )],
    );
    gauge(
        "reachd_metrics_reading_age_seconds",
        "Age of the stored gauges' reading (refreshed every metrics.refresh_interval_ms).",
        &[(
            String::new(),
            (now_ms() - reading.read_at).max(0) as f64 / 1000.0,
        )],
    );
    if let Some(snapshot) = &reading.snapshot {
        let sessions = state.presence.session_counts();
        let per_service = |value: &dyn Fn(&str, i64) -> f64| -> Vec<(String, f64)> {
            snapshot
                .online_users
                .iter()
                .map(|(sid, online)| (format!("{{service=\"{sid}\"}}"), value(sid, *online)))
                .collect()
        };
        gauge(
            "reachd_users_online",
            "Users with at least one live session, by service.",
            &per_service(&|_, online| online as f64),
        );
        gauge(
            "reachd_sessions_live",
            "Live client sessions (HTTP and WebSocket), by service.",
            &per_service(&|sid, _| sessions.get(sid).copied().unwrap_or(0) as f64),
        );
        gauge(
            "reachd_webhook_pending",
            "Webhook deliveries waiting for an attempt.",
            &[(String::new(), snapshot.pending_deliveries as f64)],
        );
        let oldest = snapshot
            .oldest_pending
            .map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
        gauge(
            "reachd_webhook_oldest_pending_seconds",
            "Age of the oldest pending webhook delivery (0 when none).",
            &[(String::new(), oldest)],
        );
    }
}
