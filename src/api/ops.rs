//! Operations endpoints without authentication: `/healthz`.
//!
//! May depend on: actix-web, serde_json, api::state.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::state::AppState;

/// 200 when the database answers a query, 503 otherwise.
pub async fn check_health(state: web::Data<AppState>) -> HttpResponse {
    match state.store.ping() {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ok"})),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            HttpResponse::ServiceUnavailable().json(json!({"status": "unavailable"}))
        }
    }
}
