//! User parameters and lookups shared by every dialect.
//!
//! May depend on: domain::user, usecases (through `Ctx`), api::{ctx, errors, params}.

use crate::api::ctx::Ctx;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::params::Params;
use crate::domain::service::Service;
use crate::domain::user::{NewUser, User, UserKey, UserPatch};

/// `Identity` (required), `FriendlyName`, `Attributes`, `RoleSid`.
pub fn new_user(params: &Params) -> ApiResult<NewUser> {
    let user = NewUser {
        identity: params.required("Identity")?.to_string(),
        friendly_name: params.string("FriendlyName"),
        attributes: params.string("Attributes"),
        role_sid: params.string("RoleSid"),
    };
    user.validate()?;
    Ok(user)
}

/// `FriendlyName`, `Attributes`, `RoleSid`.
pub fn user_patch(params: &Params) -> ApiResult<UserPatch> {
    let patch = UserPatch {
        friendly_name: params.string("FriendlyName"),
        attributes: params.string("Attributes"),
        role_sid: params.string("RoleSid"),
    };
    patch.validate()?;
    Ok(patch)
}

/// The user a path segment names (SID or identity); 404 when missing.
pub fn find_user(ctx: &Ctx, service: &Service, segment: &str) -> ApiResult<User> {
    ctx.store()
        .user(&service.sid, &UserKey::parse(segment))?
        .ok_or_else(ApiError::not_found)
}

/// Deletes the user a path segment names (204, or 404) and ends their live sessions.
pub async fn remove_user(ctx: &Ctx, service: &Service, segment: &str) -> ApiResult {
    let removed = ctx
        .reachability()
        .delete_user(&service.sid, UserKey::parse(segment), ctx.origin())
        .await?;
    super::deleted(removed.is_some())
}

/// `is_online` / `is_notifiable` as a single-resource response shows them: null while the
/// service has reachability disabled, the stored state otherwise. Lists always show null.
pub fn reachability_json(
    service: &Service,
    user: &User,
    single: bool,
) -> (serde_json::Value, serde_json::Value) {
    let (is_online, is_notifiable) = reachability_flags(service, user, single);
    (is_online.into(), is_notifiable.into())
}

/// [`reachability_json`] as options (`None` renders as null).
pub fn reachability_flags(
    service: &Service,
    user: &User,
    single: bool,
) -> (Option<bool>, Option<bool>) {
    if single && service.reachability_enabled {
        (user.reachability.is_online, user.reachability.is_notifiable)
    } else {
        (None, None)
    }
}
