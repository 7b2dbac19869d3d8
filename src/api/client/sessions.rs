//! Client sessions over HTTP: open (creating the user on first contact), ping, close.
//!
//! May depend on: actix-web, serde_json, presence, domain, usecases, api::{client::auth, errors,
//! params}.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;

use super::ClientCtx;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::params::Params;
use crate::domain::Error;
use crate::domain::presence::{ServicePresence, format_session_id, parse_session_id};

fn session_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        20404,
        "Session not found or expired; open a new one",
    )
}

/// The session a path names, as a number; malformed ids are simply unknown.
fn session_id(segment: &str) -> ApiResult<u64> {
    parse_session_id(segment).ok_or_else(session_not_found)
}

/// `POST /client/v1/sessions` (optional `resume`, `endpoint`).
pub async fn open_session(ctx: ClientCtx, params: Params) -> ApiResult {
    ctx.charge_write()?;
    let resume = params.get("resume").and_then(parse_session_id);
    let endpoint = params
        .string("endpoint")
        .or_else(|| ctx.grant.endpoint_id.clone());
    if endpoint.as_ref().is_some_and(|e| e.len() > 256) {
        return Err(ApiError::bad_param("endpoint", "must be at most 256 bytes"));
    }
    // The user is created with the session's online transition (one batched write).
    let id = ctx
        .reachability()
        .open_session(&ctx.service, ctx.identity(), endpoint.as_deref(), resume)
        .await?
        .id;
    let settings = ServicePresence::of(&ctx.service, ctx.state.presence.defaults());
    Ok(HttpResponse::Created().json(json!({
        "session_id": format_session_id(id),
        "identity": ctx.identity(),
        "service_sid": ctx.service.sid,
        "reachability_enabled": ctx.service.reachability_enabled,
        "ping_interval": settings.ping_interval_ms,
        "session_ttl": settings.session_ttl_ms,
        "resumed": resume == Some(id),
    })))
}

/// `POST /client/v1/sessions/{id}/ping`: memory only, so never charged to the write limit.
pub async fn ping_session(ctx: ClientCtx, id: web::Path<String>) -> ApiResult {
    let id = session_id(&id)?;
    match ctx
        .reachability()
        .ping_session(&ctx.service, ctx.identity(), id)
        .await
    {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(Error::NotFound) => Err(session_not_found()),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /client/v1/sessions/{id}`: answered once the session's end is committed, so an
/// acknowledged close survives a crash right after it (as an acknowledged open does).
pub async fn close_session(ctx: ClientCtx, id: web::Path<String>) -> ApiResult {
    ctx.charge_write()?;
    let id = session_id(&id)?;
    match ctx
        .reachability()
        .close_session(&ctx.service, ctx.identity(), id)
        .await
    {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(Error::NotFound) => Err(session_not_found()),
        Err(e) => Err(e.into()),
    }
}
