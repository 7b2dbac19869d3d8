//! The log span of every request (tracing-actix-web's root span, built here): method, route
//! pattern, the path **without its query**, client address, user agent, request id, and at the
//! end the status. The query is left out because the client API accepts access tokens there
//! (`/client/v1/socket?token=…`): a token must never reach a log line.
//!
//! May depend on: actix-web, tracing, tracing-actix-web.

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

/// Builds request spans whose fields never hold credentials.
pub struct RedactedSpan;

impl RootSpanBuilder for RedactedSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        use tracing::field::{Empty, display};
        let span = tracing::info_span!(
            "HTTP request",
            http.method = Empty,
            http.route = Empty,
            http.target = Empty,
            http.client_ip = Empty,
            http.user_agent = Empty,
            http.status_code = Empty,
            otel.status_code = Empty,
            request_id = Empty,
            exception.message = Empty,
            exception.details = Empty,
        );
        // The fields cost a route match (regexes) and allocations: only a span that some
        // subscriber records gets them.
        if span.is_disabled() {
            return span;
        }
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "default".to_owned());
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        let user_agent = request
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let client_ip = request
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        span.record("http.method", display(request.method()));
        span.record("http.route", display(&route));
        span.record("http.target", display(request.path()));
        span.record("http.client_ip", display(&client_ip));
        span.record("http.user_agent", display(user_agent));
        span.record("request_id", display(&request_id));
        span
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
