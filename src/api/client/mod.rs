//! The client API (`/client/v1`) for apps and devices, authenticated by Twilio-format access
//! tokens: sessions kept alive by pings, push registration, user descriptors.
//!
//! May depend on: actix-web, serde_json, tokens, presence, domain, api::{common, errors, params}.

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

use super::resource;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/client/v1")
            .service(resource("/sessions").post(sessions::open_session))
            .service(resource("/sessions/{id}/ping").post(sessions::ping_session))
            .service(resource("/sessions/{id}").delete(sessions::close_session))
            .service(resource("/bindings").post(bindings::register_push))
            .service(resource("/bindings/{binding}").delete(bindings::unregister_push))
            .service(resource("/users/{identity}").get(users::fetch_user_descriptor))
            .service(resource("/socket").get(socket::open_socket))
            .service(resource("/sdk.js").get(serve_sdk)),
    );
}
