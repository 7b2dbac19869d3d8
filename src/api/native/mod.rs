//! reachd's native backend API (`/api/v1`, Basic auth, JSON in and out, snake_case).
//!
//! May depend on: actix-web, api::{common, ctx, errors, params}, domain.

mod bindings;
mod events;
mod reachability;
mod settings;
mod stats;
pub(crate) mod views;
mod webhooks;

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
            )
            .service(resource("/services/{sid}/events").get(events::read_events))
            .service(resource("/services/{sid}/stats").get(stats::fetch_stats))
            .service(resource("/services/{sid}/users").get(stats::list_user_reachability))
            .service(
                resource("/services/{sid}/webhooks")
                    .get(webhooks::list_endpoints)
                    .post(webhooks::create_endpoint),
            )
            .service(
                resource("/services/{sid}/webhooks/{id}")
                    .get(webhooks::fetch_endpoint)
                    .post(webhooks::update_endpoint)
                    .delete(webhooks::delete_endpoint),
            )
            .service(
                resource("/services/{sid}/webhooks/{id}/deliveries").get(webhooks::list_deliveries),
            )
            .service(
                resource("/services/{sid}/webhooks/{id}/recover")
                    .post(webhooks::recover_deliveries),
            )
            .service(resource("/deliveries/{id}/resend").post(webhooks::resend_delivery)),
    );
}
