//! Twilio Conversations v1 (`/conversations/v1`): Services, service Configuration and its
//! Webhooks, account Configuration and its Webhooks, Users (service-scoped and the `/v1/Users`
//! default-service shortcut), Bindings and Credentials.
//!
//! May depend on: actix-web, api::{common, ctx, errors, params, paging}, domain.

mod bindings;
mod configuration;
mod credentials;
mod services;
mod users;
mod webhooks;

use actix_web::web;

use super::common::credentials::configure_credentials;
use super::resource;
use credentials::ConversationsCredentials;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let scope = web::scope("/conversations/v1")
        .service(
            resource("/Services")
                .get(services::list_services)
                .post(services::create_service),
        )
        .service(
            resource("/Services/{sid}")
                .get(services::fetch_service)
                .delete(services::delete_service),
        )
        .service(
            resource("/Services/{sid}/Configuration")
                .get(configuration::fetch_service_configuration)
                .post(configuration::update_service_configuration),
        )
        .service(
            resource("/Services/{sid}/Configuration/Webhooks")
                .get(webhooks::fetch_service_webhooks)
                .post(webhooks::update_service_webhooks),
        )
        .service(
            resource("/Configuration")
                .get(configuration::fetch_account_configuration)
                .post(configuration::update_account_configuration),
        )
        .service(
            resource("/Configuration/Webhooks")
                .get(webhooks::fetch_account_webhooks)
                .post(webhooks::update_account_webhooks),
        )
        .service(
            resource("/Services/{sid}/Users")
                .get(users::list_service_users)
                .post(users::create_service_user),
        )
        .service(
            resource("/Services/{sid}/Users/{user}")
                .get(users::fetch_service_user)
                .post(users::update_service_user)
                .delete(users::delete_service_user),
        )
        .service(
            resource("/Users")
                .get(users::list_default_users)
                .post(users::create_default_user),
        )
        .service(
            resource("/Users/{user}")
                .get(users::fetch_default_user)
                .post(users::update_default_user)
                .delete(users::delete_default_user),
        )
        .service(resource("/Services/{sid}/Bindings").get(bindings::list_bindings))
        .service(
            resource("/Services/{sid}/Bindings/{binding}")
                .get(bindings::fetch_binding)
                .delete(bindings::delete_binding),
        );
    cfg.service(configure_credentials::<ConversationsCredentials>(scope));
}
