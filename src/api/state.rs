//! Shared state of the HTTP layer: the use cases, the store port (for reads and single-step
//! writes) and the few settings handlers need.
//!
//! May depend on: domain, presence, realtime, usecases.

use std::sync::Arc;

use crate::domain::secret::Secret;
use crate::domain::store::Store;
use crate::presence::Presence;
use crate::realtime::Hub;
use crate::usecases::Reachability;

/// The account's Basic-auth credentials, held in memory.
#[derive(Debug, Clone)]
pub struct AccountCredentials {
    pub sid: String,
    pub auth_token: Secret,
}

/// The app state of a request (registered by `app::start`; its absence is a bug).
pub fn app_state(
    req: &actix_web::HttpRequest,
) -> Result<actix_web::web::Data<AppState>, super::errors::ApiError> {
    req.app_data::<actix_web::web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| crate::domain::Error::Internal(anyhow::anyhow!("no app state")).into())
}

pub struct AppState {
    /// Every use case that spans storage, presence and the hub: handlers call these, never
    /// the steps they are made of.
    pub reachability: Reachability,
    pub store: Arc<dyn Store>,
    pub account: AccountCredentials,
    /// Configured public base URL (no trailing slash); derived from the request when `None`.
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    pub presence: Presence,
    /// The newest committed event id; changes wake event-feed streams.
    pub events: tokio::sync::watch::Receiver<i64>,
    /// WebSocket fan-out.
    pub hub: Hub,
    /// The Prometheus recorder's handle (`None` if another recorder was installed first).
    pub metrics: Option<crate::metrics::MetricsHandle>,
    /// The storage-derived gauges of `/metrics`, refreshed in the background.
    pub gauges: Arc<super::gauges::StoredGauges>,
    /// `metrics.token`: when set, `/metrics` requires it as a Bearer token.
    pub metrics_token: Option<Secret>,
    /// Fired when a graceful shutdown begins: WebSockets close with 1001 and keep their
    /// sessions (so no one goes offline because the server restarts).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The webhook dispatcher (its liveness is part of `/readyz`).
    pub dispatcher: crate::webhooks::Dispatcher,
    /// The API keys of live WebSockets, checked for revocation (`client::revocation`).
    pub key_watch: super::client::KeyWatch,
    /// The last `/readyz` verdict, reused for a second.
    pub readiness: super::ops::ReadinessCache,
    /// Client writes (sessions, push bindings) per identity.
    pub client_writes: super::client::WriteLimiter,
    /// Access tokens already verified (a pinging client's token is verified once).
    pub verified_tokens: crate::tokens::VerifiedTokens,
}
