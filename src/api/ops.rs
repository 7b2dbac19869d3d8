//! Operations endpoints without authentication: `/healthz` (the database answers) and
//! `/readyz` (it also takes writes).
//!
//! May depend on: actix-web, serde_json, api::state.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::state::AppState;

/// `/readyz`: 200 when the database answers, takes a write through the writer (within 2 s) and
/// the webhook dispatcher's loops are running; 503 naming what failed otherwise.
pub async fn check_readiness(state: web::Data<AppState>) -> HttpResponse {
    let read = state.store.ping().map_err(|e| e.to_string());
    let write = match tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.store.check_writable(),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the writer did not answer within 2 s".to_string()),
    };
    let dispatcher_alive = state.dispatcher.is_alive();
    match (read, write, dispatcher_alive) {
        (Ok(()), Ok(()), true) => HttpResponse::Ok().json(json!({"status": "ready"})),
        (read, write, dispatcher_alive) => {
            tracing::warn!(read = ?read.as_ref().err(), write = ?write.as_ref().err(), dispatcher_alive, "not ready");
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "database_readable": read.is_ok(),
                "database_writable": write.is_ok(),
                "dispatcher_alive": dispatcher_alive,
            }))
        }
    }
}

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
