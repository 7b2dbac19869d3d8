//! Operations endpoints without authentication: `/healthz` (the process serves HTTP) and
//! `/readyz` (the database answers and takes writes, the webhook dispatcher runs).
//!
//! May depend on: actix-web, serde_json, api::state.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::state::AppState;

/// How long a `/readyz` verdict is reused: probes from several balancers (or a flood of
/// unauthenticated requests) cost at most one real write per interval.
const READINESS_REUSE: Duration = Duration::from_secs(1);

/// The last `/readyz` verdict and when it was reached.
#[derive(Debug, Default)]
pub struct ReadinessCache(Mutex<Option<(Instant, Readiness)>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    pub dispatcher_alive: bool,
}

/// `/readyz`: 200 when the database answers, takes a write through the writer (within 2 s),
/// the webhook dispatcher's loops are running and (in a cluster) the node holds its lease; 503
/// naming what failed otherwise.
pub async fn check_readiness(state: web::Data<AppState>) -> HttpResponse {
    let cached = *state.readiness.0.lock().unwrap_or_else(|p| p.into_inner());
    let verdict = match cached {
        Some((at, verdict)) if at.elapsed() < READINESS_REUSE => verdict,
        _ => {
            let verdict = probe_readiness(&state).await;
            *state.readiness.0.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), verdict));
            verdict
        }
    };
    // Not cached: a node whose lease lapsed must leave the balancer's rotation at once.
    let serving_presence = state.presence.is_serving();
    if verdict.readable && verdict.writable && verdict.dispatcher_alive && serving_presence {
        return HttpResponse::Ok().json(json!({"status": "ready"}));
    }
    HttpResponse::ServiceUnavailable().json(json!({
        "status": "unavailable",
        "database_readable": verdict.readable,
        "database_writable": verdict.writable,
        "dispatcher_alive": verdict.dispatcher_alive,
        "serving_presence": serving_presence,
    }))
}

async fn probe_readiness(state: &AppState) -> Readiness {
    let read = state.store.ping().map_err(|e| e.to_string());
    let write =
        match tokio::time::timeout(Duration::from_secs(2), state.store.check_writable()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the writer did not answer within 2 s".to_string()),
        };
    let dispatcher_alive = state.dispatcher.is_alive();
    if read.is_err() || write.is_err() || !dispatcher_alive {
        tracing::warn!(read = ?read.as_ref().err(), write = ?write.as_ref().err(), dispatcher_alive, "not ready");
    }
    Readiness {
        readable: read.is_ok(),
        writable: write.is_ok(),
        dispatcher_alive,
    }
}

/// `/healthz` (liveness): the process is up and serving HTTP. Storage trouble is `/readyz`'s
/// business: a liveness probe must not restart a server whose disk is full.
pub async fn check_health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}
