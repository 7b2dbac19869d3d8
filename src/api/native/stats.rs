//! What the dashboard reads: per-service counts and users with their reachability.
//!
//! May depend on: actix-web, serde_json, domain, presence, api::{common, ctx, errors, params, paging}.

use actix_web::web;
use serde_json::json;

use super::views::reachability_json;
use crate::api::common::ok;
use crate::api::ctx::Ctx;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::paging::{decode_cursor, encode_cursor};
use crate::api::params::Params;
use crate::domain::page::{Cursor, PageRequest};
use crate::domain::time::now_ms;

/// `GET /api/v1/services/{sid}/stats`.
pub async fn fetch_stats(ctx: Ctx, sid: web::Path<String>) -> ApiResult {
    let service = ctx.service(&sid)?;
    let stats = ctx.store().service_stats(&service.sid)?;
    Ok(ok(json!({
        "service_sid": service.sid,
        "friendly_name": service.friendly_name,
        "reachability_enabled": service.reachability_enabled,
        "users": stats.users,
        "online_users": if service.reachability_enabled { stats.online_users } else { 0 },
        "live_sessions": ctx.state.presence.service_sessions(&service.sid),
        "deliveries": {
            "pending": stats.pending,
            "delivered": stats.delivered,
            "failed": stats.failed,
            "oldest_pending_age_ms": stats.oldest_pending.map(|t| (now_ms() - t).max(0)),
        },
    })))
}

/// `GET /api/v1/services/{sid}/users?limit=200&page_token=`: users with reachability.
pub async fn list_user_reachability(ctx: Ctx, sid: web::Path<String>, params: Params) -> ApiResult {
    let service = ctx.service(&sid)?;
    let limit = params.int("limit")?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_param("limit", "must be between 1 and 1000"));
    }
    let cursor = match params.get("page_token").filter(|t| !t.is_empty()) {
        Some(token) => decode_cursor(token).ok_or_else(|| {
            ApiError::bad_param("page_token", "is not a token this server issued")
        })?,
        None => Cursor::Offset(0),
    };
    let page = ctx.store().list_users(
        &service.sid,
        PageRequest {
            cursor,
            size: limit as u32,
        },
    )?;
    let presence = &ctx.state.presence;
    let users: Vec<_> = page
        .items
        .iter()
        .map(|(_, u)| {
            let mut v =
                reachability_json(&service, u, presence.live_count(&service.sid, &u.identity));
            v["friendly_name"] = u.friendly_name.clone().into();
            v
        })
        .collect();
    let next = match (page.has_more_after, page.last_key()) {
        (true, Some(last)) => Some(encode_cursor(Cursor::After(last))),
        _ => None,
    };
    Ok(ok(json!({"users": users, "next_page_token": next})))
}
