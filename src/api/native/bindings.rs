//! Server-side push registration: `POST /api/v1/services/{sid}/users/{sid_or_identity}/bindings`
//! (JSON or form: `binding_type`, `address`, `credential_sid`, `endpoint`); re-registering an
//! endpoint replaces it.
//!
//! May depend on: actix-web, api::{common, ctx, errors, params}, domain, usecases.

use actix_web::web;

use super::views::binding_json;
use crate::api::common::bindings::new_binding;
use crate::api::common::created;
use crate::api::ctx::Ctx;
use crate::api::errors::ApiResult;
use crate::api::params::Params;
use crate::domain::user::UserKey;

pub async fn register_binding(
    ctx: Ctx,
    path: web::Path<(String, String)>,
    params: Params,
) -> ApiResult {
    let service = ctx.service(&path.0)?;
    let binding = new_binding(&params, None, None)?;
    let binding = ctx
        .reachability()
        .register_binding(&service.sid, UserKey::parse(&path.1), binding, ctx.origin())
        .await?;
    Ok(created(binding_json(&binding)))
}
