//! reachd's native backend API (`/api/v1`, Basic auth, JSON in and out, snake_case).
//!
//! May depend on: actix-web, api::{common, ctx, errors, params}, domain.

mod bindings;
mod reachability;
mod settings;
pub(crate) mod views;

use actix_web::web;

use super::resource;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .service(
                resource("/services/{sid}/users/{user}/bindings").post(bindings::register_binding),
            )
            .service(
                resource("/services/{sid}/users/{user}/sessions").get(reachability::list_sessions),
            )
            .service(resource("/services/{sid}/reachability").get(reachability::read_reachability))
            .service(
                resource("/services/{sid}/settings")
                    .get(settings::fetch_settings)
                    .post(settings::update_settings),
            ),
    );
}
