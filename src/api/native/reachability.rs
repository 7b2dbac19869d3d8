//! Native reachability reads: bulk by identity, paging through online users, a user's live
//! sessions.
//!
//! May depend on: actix-web, serde_json, presence, domain, api::{common, ctx, errors, params}.

use actix_web::web;
use serde_json::json;

use super::views::{reachability_json, session_json};
use crate::api::common::ok;
use crate::api::common::users::find_user;
use crate::api::ctx::Ctx;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::paging::{decode_cursor, encode_cursor};
use crate::api::params::{MAX_LIST_VALUES, Params};
use crate::domain::page::{Cursor, PageRequest};

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
    let limit = params.int("limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_param("limit", "must be between 1 and 1000"));
    }
    let cursor = match params.get("page_token").filter(|t| !t.is_empty()) {
        Some(token) => decode_cursor(token).ok_or_else(|| {
            ApiError::bad_param("page_token", "is not a token this server issued")
        })?,
        None => Cursor::Offset(0),
    };
    let page = if service.reachability_enabled {
        ctx.store().list_online_users(
            &service.sid,
            PageRequest {
                cursor,
                size: limit as u32,
            },
        )?
    } else {
        crate::domain::page::Page {
            items: Vec::new(),
            has_more_after: false,
            has_more_before: false,
        }
    };
    let next = match (page.has_more_after, page.last_key()) {
        (true, Some(last)) => Some(encode_cursor(Cursor::After(last))),
        _ => None,
    };
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
