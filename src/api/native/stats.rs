//! What the dashboard reads: per-service counts and users with their reachability.
//!
//! May depend on: actix-web, serde_json, domain, presence, api::{common, ctx, errors, params, paging}.

use actix_web::web;
use serde_json::json;

use super::views::reachability_json;
use super::{next_page_token, page_request};
use crate::api::common::ok;
use crate::api::ctx::Ctx;
use crate::api::errors::ApiResult;
use crate::api::params::Params;
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
            "retrying": stats.retrying,
            "delivered": stats.delivered,
            "failed": stats.failed,
            "oldest_pending_age_ms": stats.oldest_pending.map(|t| (now_ms() - t).max(0)),
        },
    })))
}

/// `GET /api/v1/services/{sid}/users?limit=200&page_token=`: users with reachability.
pub async fn list_user_reachability(ctx: Ctx, sid: web::Path<String>, params: Params) -> ApiResult {
    let service = ctx.service(&sid)?;
    let request = page_request(&params, 100)?;
    let page = ctx.store().list_users(&service.sid, request)?;
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
    let next = next_page_token(&page);
    Ok(ok(json!({"users": users, "next_page_token": next})))
}
