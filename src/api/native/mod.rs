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

use super::errors::{ApiError, ApiResult};
use super::paging::{decode_cursor, encode_cursor};
use super::params::Params;
use super::resource;
use crate::domain::page::{Cursor, Page, PageRequest};

/// `limit` (1–1000, default `default_limit`) and `page_token` of a native list.
pub(crate) fn page_request(params: &Params, default_limit: i64) -> ApiResult<PageRequest> {
    let limit = params.int("limit")?.unwrap_or(default_limit);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_param("limit", "must be between 1 and 1000"));
    }
    let cursor = match params.get("page_token").filter(|t| !t.is_empty()) {
        Some(token) => decode_cursor(token).ok_or_else(|| {
            ApiError::bad_param("page_token", "is not a token this server issued")
        })?,
        None => Cursor::Offset(0),
    };
    Ok(PageRequest {
        cursor,
        size: limit as u32,
    })
}

/// The `next_page_token` after `page`, if more rows follow.
pub(crate) fn next_page_token<T>(page: &Page<T>) -> Option<String> {
    match (page.has_more_after, page.last_key()) {
        (true, Some(last)) => Some(encode_cursor(Cursor::After(last))),
        _ => None,
    }
}

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
