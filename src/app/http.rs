//! The HTTP server of [`super::start`]: the middleware stack around the routes and the
//! connection limits from `[http]` and `[limits]`.
//!
//! May depend on: actix-web, tracing-actix-web, config, api.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::{KeepAlive, StatusCode};
use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::api::csrf::refuse_cross_site;
use crate::api::metrics::record_request_metrics;
use crate::api::rate_limit::{AuthLimiter, limit_failed_auth};
use crate::api::request_span::RedactedSpan;
use crate::api::request_timeout::{RequestTimeout, limit_request_time};
use crate::api::state::AppState;
use crate::api::{self, errors};
use crate::config::Config;

/// Builds the server on `listener` (it runs once spawned).
pub fn server(
    config: &Config,
    state: web::Data<AppState>,
    listener: TcpListener,
) -> anyhow::Result<Server> {
    let limiter = web::Data::new(AuthLimiter::new(
        config.limits.failed_auth_burst,
        config.limits.failed_auth_per_minute,
        config.http.trust_forwarded_for,
    ));
    let http = &config.http;
    let request_timeout = web::Data::new(RequestTimeout(Duration::from_millis(
        http.request_timeout_ms,
    )));
    let cors_origins = http.client_cors_origins.clone();
    let mut server = HttpServer::new(move || {
        // The last `wrap` is outermost: the request id and log span cover everything, the
        // timing sees the final status (429s and 408s included), the limiter sees 401s after
        // the 404 filler; cross-site refusals (403) come before any credential is checked.
        App::new()
            .app_data(state.clone())
            .app_data(limiter.clone())
            .app_data(request_timeout.clone())
            .wrap(ErrorHandlers::new().handler(StatusCode::NOT_FOUND, errors::fill_not_found))
            .wrap(from_fn(refuse_cross_site))
            .wrap(from_fn(limit_request_time))
            .wrap(from_fn(limit_failed_auth))
            .wrap(from_fn(record_request_metrics))
            .wrap(TracingLogger::<RedactedSpan>::new())
            .configure(|cfg| api::configure(cfg, &cors_origins))
            .default_service(web::to(errors::reject_path))
    })
    .disable_signals()
    .keep_alive(match http.keep_alive_secs {
        0 => KeepAlive::Disabled,
        secs => KeepAlive::Timeout(Duration::from_secs(secs)),
    })
    .client_request_timeout(Duration::from_millis(http.client_request_timeout_ms))
    .client_disconnect_timeout(Duration::from_millis(http.client_disconnect_timeout_ms))
    .shutdown_timeout(http.shutdown_timeout_secs);
    let workers = match http.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // actix-web counts connections per worker: each gets its share of the total.
    server = server
        .workers(workers)
        .max_connections(http.max_connections.div_ceil(workers));
    Ok(server.listen(listener).context("listening")?.run())
}
