//! Native reachability reads: bulk by identity, paging through online users, a user's live
//! sessions.
//!
//! May depend on: actix-web, serde_json, presence, domain, api::{common, ctx, errors, params}.

use actix_web::web;
use serde_json::json;

use super::views::{reachability_json, session_json};
use super::{next_page_token, page_request};
use crate::api::common::ok;
use crate::api::common::users::find_user;
use crate::api::ctx::Ctx;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::params::{MAX_LIST_VALUES, Params};
use crate::domain::page::Page;

const DEFAULT_LIMIT: i64 = 100;

/// `GET /api/v1/services/{sid}/reachability?identity=a&identity=b` (≤ 1000 identities), or
/// `?online=true[&limit=][&page_token=]` to page through online users.
pub async fn read_reachability(ctx: Ctx, sid: web::Path<String>, params: Params) -> ApiResult {
    let service = ctx.service(&sid)?;
    let presence = &ctx.state.presence;
    let identities = params.list("identity")?;
    if !identities.is_empty() {
        if identities.len() > MAX_LIST_VALUES {
            return Err(ApiError::bad_param("identity", "at most 1000 identities"));
        }
        let users = ctx.store().users_by_identity(&service.sid, &identities)?;
        let found: Vec<&str> = users.iter().map(|u| u.identity.as_str()).collect();
        let missing: Vec<&String> = identities
            .iter()
            .filter(|i| !found.contains(&i.as_str()))
            .collect();
        let views: Vec<_> = users
            .iter()
            .map(|u| reachability_json(&service, u, presence.live_count(&service.sid, &u.identity)))
            .collect();
        return Ok(ok(json!({"users": views, "not_found": missing})));
    }
    if params.bool("online")? != Some(true) {
        return Err(ApiError::missing_param("identity (or online=true)"));
    }
    let request = page_request(&params, DEFAULT_LIMIT)?;
    let page = if service.reachability_enabled {
        ctx.store().list_online_users(&service.sid, request)?
    } else {
        Page {
            items: Vec::new(),
            has_more_after: false,
            has_more_before: false,
        }
    };
    let next = next_page_token(&page);
    let views: Vec<_> = page
        .items
        .iter()
        .map(|(_, u)| {
            reachability_json(&service, u, presence.live_count(&service.sid, &u.identity))
        })
        .collect();
    Ok(ok(json!({"users": views, "next_page_token": next})))
}

/// `GET /api/v1/services/{sid}/users/{sid or identity}/sessions`.
pub async fn list_sessions(ctx: Ctx, path: web::Path<(String, String)>) -> ApiResult {
    let service = ctx.service(&path.0)?;
    let user = find_user(&ctx, &service, &path.1)?;
    let sessions: Vec<_> = ctx
        .state
        .presence
        .sessions(&service.sid, &user.identity)
        .iter()
        .map(session_json)
        .collect();
    Ok(ok(
        json!({"identity": user.identity, "user_sid": user.sid, "sessions": sessions}),
    ))
}
