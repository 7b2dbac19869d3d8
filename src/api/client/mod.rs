//! The client API (`/client/v1`) for apps and devices, authenticated by Twilio-format access
//! tokens: sessions kept alive by pings, push registration, user descriptors.
//!
//! May depend on: actix-web, serde_json, tokens, presence, domain,
//! api::{common, errors, openapi, params}.

mod auth;
mod bindings;
mod sessions;
mod socket;
mod users;

pub use auth::ClientCtx;

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

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(API.scope());
}
