//! The HTTP surface: Twilio dialects (Chat v1/v2, Conversations v1), the native API and ops
//! endpoints, with Twilio-format errors everywhere.
//!
//! May depend on: actix-web, serde, serde_json, domain. Never on rusqlite or db: storage is
//! reached through `domain::store::Store` only.

pub mod auth;
mod chat;
pub mod client;
pub mod common;
mod conversations_v1;
pub mod csrf;
pub mod ctx;
mod dashboard;
pub mod errors;
pub mod gauges;
pub mod metrics;
pub mod native;
pub mod openapi;
pub mod ops;
pub mod paging;
pub mod params;
pub mod rate_limit;
pub mod request_span;
pub mod request_timeout;
pub mod state;
pub mod token_bucket;

use actix_web::web;

/// A resource whose unsupported methods answer 405/20004.
pub(crate) fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(errors::reject_method))
}

/// Registers every route; `client_cors_origins` opens the client API to browsers on those
/// origins (validated by the configuration).
pub fn configure(cfg: &mut web::ServiceConfig, client_cors_origins: &[String]) {
    cfg.service(resource("/healthz").get(ops::check_health));
    cfg.service(resource("/readyz").get(ops::check_readiness));
    cfg.service(resource("/metrics").get(metrics::render_metrics));
    chat::configure(cfg);
    conversations_v1::configure(cfg);
    native::configure(cfg);
    client::configure(cfg, client_cors_origins);
    dashboard::configure(cfg);
}
