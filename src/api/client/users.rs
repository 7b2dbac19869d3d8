//! User descriptors for clients: another user's profile and reachability, same service only.
//!
//! May depend on: actix-web, serde_json, domain, api::{client::auth, common, errors, native::views}.

use actix_web::web;

use super::ClientCtx;
use crate::api::common::ok;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::native::views::descriptor_json;
use crate::domain::user::UserKey;

/// `GET /client/v1/users/{identity}`.
pub async fn fetch_user_descriptor(ctx: ClientCtx, identity: web::Path<String>) -> ApiResult {
    let user = ctx
        .store()
        .user(&ctx.service.sid, &UserKey::Identity(identity.into_inner()))?
        .ok_or_else(ApiError::not_found)?;
    Ok(ok(descriptor_json(&ctx.service, &user)))
}
