//! A deadline from a request's head to its response head (`http.request_timeout_ms`): a client
//! that trickles its body, or a handler stuck behind storage, gets 408/20408 instead of holding
//! a worker's connection for ever. Streaming responses (the event feed, WebSocket upgrades)
//! are not cut: their response head is produced at once and the deadline ends there.
//!
//! A write already handed to the writer when the deadline passes still commits; the client
//! only loses the answer (as with any timeout), and Twilio-style clients retry idempotently.
//!
//! May depend on: actix-web, tokio, api::errors.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};

use super::errors::ApiError;

/// The configured deadline, registered as app data.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeout(pub Duration);

/// The middleware: answers 408 when the inner service has not produced a response in time.
/// The answer travels as an error (the request itself went down with the dropped handler
/// future), which actix turns into the prepared response.
pub async fn limit_request_time(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(limit) = req.app_data::<web::Data<RequestTimeout>>().map(|t| t.0) else {
        return next.call(req).await;
    };
    // A shared handle on the request's URI (no copy), for the log line of a timeout.
    let uri = req.uri().clone();
    match tokio::time::timeout(limit, next.call(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                path = uri.path(),
                limit_ms = limit.as_millis() as u64,
                "request timed out"
            );
            let error = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                20408,
                format!(
                    "The request was not completed within {} ms",
                    limit.as_millis()
                ),
            );
            let mut response = error.error_response();
            // The rest of a trickled body is never read: do not reuse the connection.
            response
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
            Err(InternalError::from_response("request timed out", response).into())
        }
    }
}
