//! Twilio Programmable Chat (`/chat/v1`, `/chat/v2`): Services, Users and Credentials in both
//! versions; Bindings and User Bindings in v2. Handlers are generic over the version where the
//! two differ only in JSON shape.
//!
//! May depend on: actix-web, api::{common, ctx, errors, params, paging}, domain.

mod bindings;
mod credentials;
mod services;
mod users;

use actix_web::{Scope, web};

use super::common::credentials::configure_credentials;
use super::resource;
use credentials::{ChatV1Credentials, ChatV2Credentials};

/// Services and Users, identical routes in both versions.
///
/// A scope tries its resources in registration order, each dynamic one with a regex capture,
/// and no two of these patterns match the same path (a segment never holds a `/`): the user
/// fetch, the hottest REST route, is registered first so that it costs one match, not four.
fn services_and_users<const V: u8>(scope: Scope) -> Scope {
    scope
        .service(
            resource("/Services/{sid}/Users/{user}")
                .get(users::fetch_user::<V>)
                .post(users::update_user::<V>)
                .delete(users::delete_user::<V>),
        )
        .service(
            resource("/Services")
                .get(services::list_services::<V>)
                .post(services::create_service::<V>),
        )
        .service(
            resource("/Services/{sid}")
                .get(services::fetch_service::<V>)
                .post(services::update_service::<V>)
                .delete(services::delete_service::<V>),
        )
        .service(
            resource("/Services/{sid}/Users")
                .get(users::list_users::<V>)
                .post(users::create_user::<V>),
        )
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    let v1 = services_and_users::<1>(web::scope("/chat/v1"));
    cfg.service(configure_credentials::<ChatV1Credentials>(v1));

    let v2 = services_and_users::<2>(web::scope("/chat/v2"))
        .service(
            resource("/Services/{sid}/Users/{user}/Bindings").get(bindings::list_user_bindings),
        )
        .service(
            resource("/Services/{sid}/Users/{user}/Bindings/{binding}")
                .get(bindings::fetch_user_binding)
                .delete(bindings::delete_user_binding),
        )
        .service(resource("/Services/{sid}/Bindings").get(bindings::list_bindings))
        .service(
            resource("/Services/{sid}/Bindings/{binding}")
                .get(bindings::fetch_binding)
                .delete(bindings::delete_binding),
        );
    cfg.service(configure_credentials::<ChatV2Credentials>(v2));
}
