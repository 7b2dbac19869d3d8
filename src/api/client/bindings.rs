//! Client push registration: register (defaults from the token's chat grant) and unregister.
//!
//! May depend on: actix-web, domain, usecases, api::{client::auth, common, errors, native::views,
//! params}.

use actix_web::web;

use super::ClientCtx;
use crate::api::common::bindings::new_binding;
use crate::api::common::{created, deleted};
use crate::api::errors::ApiResult;
use crate::api::native::views::binding_json;
use crate::api::params::Params;
use crate::domain::binding::BindingFilter;
use crate::domain::store::Origin;

/// `POST /client/v1/bindings`: `binding_type`, `address`, optional `credential_sid` (default:
/// the grant's `push_credential_sid`) and `endpoint` (default: the grant's `endpoint_id`).
pub async fn register_push(ctx: ClientCtx, params: Params) -> ApiResult {
    ctx.charge_write()?;
    let binding = new_binding(
        &params,
        ctx.grant.push_credential_sid.as_deref(),
        ctx.grant.endpoint_id.as_deref(),
    )?;
    let binding = ctx
        .reachability()
        .register_client_push(&ctx.service.sid, ctx.identity(), binding)
        .await?;
    Ok(created(binding_json(&binding)))
}

/// `DELETE /client/v1/bindings/{sid or endpoint}`: only the caller's own bindings.
pub async fn unregister_push(ctx: ClientCtx, target: web::Path<String>) -> ApiResult {
    ctx.charge_write()?;
    let filter = BindingFilter {
        identities: vec![ctx.identity().to_string()],
        ..Default::default()
    };
    deleted(
        ctx.store()
            .delete_binding(&ctx.service.sid, &target, filter, Origin::Client)
            .await?,
    )
}
