//! The one place that turns failures into Twilio's four-key error body
//! `{code, message, more_info, status}`: domain errors, bad parameters, auth failures, unknown
//! paths (404/20404, with the path in the message) and wrong methods (405/20004).
//!
//! May depend on: actix-web, serde_json, domain::Error, tracing.

use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::domain::Error;

/// The mount prefixes stripped from paths shown in 404 messages (Twilio shows product paths).
const MOUNTS: [&str; 2] = ["/chat", "/conversations"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
    /// Seconds for `Retry-After` (429 and 503 answers).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T = HttpResponse> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_param(param: &str, reason: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            20001,
            format!("Invalid parameter {param}: {reason}"),
        )
    }

    pub fn missing_param(param: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            20001,
            format!("Missing required parameter {param} in the post body"),
        )
    }

    /// The path is filled in by [`fill_not_found`].
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, 20004, "Method not allowed")
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            20001,
            format!("Request body exceeds the limit of {limit} bytes"),
        )
    }

    /// 503 / 20503 (Twilio's "Service Unavailable"), with `Retry-After`.
    pub fn unavailable() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            20503,
            "Storage is unavailable; retry later",
        );
        e.retry_after = Some(1);
        e
    }

    pub fn body(&self) -> serde_json::Value {
        json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status.as_u16(),
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::NotFound => ApiError::not_found(),
            Error::MissingParam(param) => ApiError::missing_param(&param),
            Error::InvalidParam { param, reason } => ApiError::bad_param(&param, &reason),
            Error::DuplicateIdentity(identity) => ApiError::new(
                StatusCode::CONFLICT,
                50201,
                format!("User already exists: identity {identity} is taken in this service"),
            ),
            Error::Conflict(message) => ApiError::new(StatusCode::CONFLICT, 20409, message),
            Error::LimitExceeded(message) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, 20429, message)
            }
            Error::Unavailable(reason) => {
                tracing::warn!(%reason, "storage unavailable");
                ApiError::unavailable()
            }
            Error::Fenced => ApiError::unavailable(),
            Error::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    20500,
                    "Internal server error",
                )
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"reachd\""),
            ));
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(self.body())
    }
}

/// Error-handler middleware hook: every 404 gets Twilio's body naming the requested path.
pub fn fill_not_found<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let path = res.request().path();
    let shown = MOUNTS
        .iter()
        .find_map(|m| path.strip_prefix(m).filter(|rest| rest.starts_with('/')))
        .unwrap_or(path);
    let mut error = ApiError::not_found();
    error.message = format!("The requested resource {shown} was not found");
    let (req, _) = res.into_parts();
    let response = error.error_response().map_into_right_body();
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(
        req, response,
    )))
}

/// Default handler of every resource: the path exists, the method does not.
pub async fn reject_method() -> HttpResponse {
    ApiError::method_not_allowed().error_response()
}

/// Default handler of the app: no such path.
pub async fn reject_path() -> HttpResponse {
    ApiError::not_found().error_response()
}
