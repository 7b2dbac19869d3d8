//! reachd's native backend API (`/api/v1`, Basic auth, JSON in and out, snake_case).
//!
//! May depend on: actix-web, api::{common, ctx, errors, openapi, params}, domain.

mod bindings;
mod events;
mod reachability;
mod settings;
mod stats;
pub(crate) mod views;
mod webhooks;

use actix_web::web;

use super::errors::{ApiError, ApiResult};
use super::openapi::{self, Api, route};
use super::paging::{decode_cursor, encode_cursor};
use super::params::Params;
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

/// Every route of the native API: what the router mounts and the OpenAPI document lists.
pub(crate) static API: Api = Api {
    prefix: "/api/v1",
    routes: &[
        route!(Get "/openapi.json" => openapi::fetch_openapi),
        route!(Post "/services/{sid}/users/{user}/bindings" => bindings::register_binding),
        route!(Get "/services/{sid}/users/{user}/sessions" => reachability::list_sessions),
        route!(Get "/services/{sid}/reachability" => reachability::read_reachability),
        route!(Get "/services/{sid}/settings" => settings::fetch_settings),
        route!(Post "/services/{sid}/settings" => settings::update_settings),
        route!(Get "/services/{sid}/events" => events::read_events),
        route!(Get "/services/{sid}/stats" => stats::fetch_stats),
        route!(Get "/services/{sid}/users" => stats::list_user_reachability),
        route!(Get "/services/{sid}/webhooks" => webhooks::list_endpoints),
        route!(Post "/services/{sid}/webhooks" => webhooks::create_endpoint),
        route!(Get "/services/{sid}/webhooks/{id}" => webhooks::fetch_endpoint),
        route!(Post "/services/{sid}/webhooks/{id}" => webhooks::update_endpoint),
        route!(Delete "/services/{sid}/webhooks/{id}" => webhooks::delete_endpoint),
        route!(Get "/services/{sid}/webhooks/{id}/deliveries" => webhooks::list_deliveries),
        route!(Post "/services/{sid}/webhooks/{id}/recover" => webhooks::recover_deliveries),
        route!(Post "/deliveries/{id}/resend" => webhooks::resend_delivery),
    ],
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(API.scope());
}
