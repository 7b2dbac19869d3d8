//! Per-service presence settings: `GET/POST /api/v1/services/{sid}/settings` with
//! `ping_interval_ms`, `session_ttl_ms`, `offline_grace_ms` (JSON `null` or an empty form value
//! resets one to the server default).
//!
//! May depend on: actix-web, domain, presence, usecases, api::{common, ctx, errors, params}.

use actix_web::web;

use super::views::settings_json;
use crate::api::common::ok;
use crate::api::ctx::Ctx;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::params::Params;
use crate::domain::presence::ServicePresence;
use crate::domain::service::PresenceOverrides;

const MAX_MS: i64 = 24 * 3600 * 1000;

pub async fn fetch_settings(ctx: Ctx, sid: web::Path<String>) -> ApiResult {
    let service = ctx.service(&sid)?;
    let effective = ServicePresence::of(&service, ctx.state.presence.defaults());
    Ok(ok(settings_json(&service, &effective)))
}

/// Reads one override: absent keeps it, empty resets it, otherwise a bounded integer.
fn override_of(
    params: &Params,
    name: &str,
    min: i64,
    current: Option<u64>,
) -> ApiResult<Option<u64>> {
    match params.get(name) {
        None => Ok(current),
        Some("") | Some("null") => Ok(None),
        Some(_) => match params.int(name)? {
            Some(v) if (min..=MAX_MS).contains(&v) => Ok(Some(v as u64)),
            _ => Err(ApiError::bad_param(
                name,
                &format!("must be between {min} and {MAX_MS} milliseconds"),
            )),
        },
    }
}

pub async fn update_settings(ctx: Ctx, sid: web::Path<String>, params: Params) -> ApiResult {
    let service = ctx.service(&sid)?;
    let o = service.presence;
    let overrides = PresenceOverrides {
        ping_interval_ms: override_of(&params, "ping_interval_ms", 100, o.ping_interval_ms)?,
        session_ttl_ms: override_of(&params, "session_ttl_ms", 200, o.session_ttl_ms)?,
        offline_grace_ms: override_of(&params, "offline_grace_ms", 0, o.offline_grace_ms)?,
    };
    let effective =
        ServicePresence::with_overrides(&service, overrides, ctx.state.presence.defaults())?;
    let updated = ctx
        .reachability()
        .set_presence_settings(&service.sid, overrides)
        .await?;
    Ok(ok(settings_json(&updated, &effective)))
}
