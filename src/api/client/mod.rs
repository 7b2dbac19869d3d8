//! The client API (`/client/v1`) for apps and devices, authenticated by Twilio-format access
//! tokens: sessions kept alive by pings, push registration, user descriptors. Writes are
//! rate-limited per identity ([`WriteLimiter`]).
//!
//! May depend on: actix-web, serde_json, metrics, tokens, presence, domain,
//! api::{common, errors, openapi, params, token_bucket}.

mod auth;
mod bindings;
pub mod revocation;
mod sessions;
mod socket;
mod users;
mod write_limit;

pub use auth::ClientCtx;
pub use revocation::KeyWatch;
pub use write_limit::WriteLimiter;

/// The JS SDK (`sdk/reachd.js`), embedded in the binary.
const SDK: &str = include_str!("../../../sdk/reachd.js");

/// `GET /client/v1/sdk.js`.
async fn serve_sdk() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(SDK)
}

use actix_web::web;

use super::openapi::{Api, route};

/// Every route of the client API: what the router mounts and the OpenAPI document lists.
pub(crate) static API: Api = Api {
    prefix: "/client/v1",
    routes: &[
        route!(Post "/sessions" => sessions::open_session),
        route!(Post "/sessions/{id}/ping" => sessions::ping_session),
        route!(Delete "/sessions/{id}" => sessions::close_session),
        route!(Post "/bindings" => bindings::register_push),
        route!(Delete "/bindings/{binding}" => bindings::unregister_push),
        route!(Get "/users/{identity}" => users::fetch_user_descriptor),
        route!(Get "/socket" => socket::open_socket),
        route!(Get "/sdk.js" => serve_sdk),
    ],
};

/// Mounts the client API; with `cors_origins` non-empty, browsers on those origins (`*`: any)
/// may load the SDK and call it. Tokens travel in a header (or, on the socket upgrade, the
/// query), never in cookies, so credentials are not allowed and a wildcard is safe.
pub fn configure(cfg: &mut web::ServiceConfig, cors_origins: &[String]) {
    if cors_origins.is_empty() {
        cfg.service(API.scope());
    } else {
        cfg.service(API.scope().wrap(cors(cors_origins)));
    }
}

fn cors(origins: &[String]) -> actix_cors::Cors {
    use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE};
    let cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "DELETE"])
        .allowed_headers([AUTHORIZATION, CONTENT_TYPE])
        .allowed_header("x-twilio-token")
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        cors.allow_any_origin().send_wildcard()
    } else {
        origins
            .iter()
            .fold(cors, |cors, origin| cors.allowed_origin(origin))
    }
}
