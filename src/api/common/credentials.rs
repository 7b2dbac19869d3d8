//! Credential parameters and the credential JSON, identical across Chat v1, Chat v2 and
//! Conversations except for the URL prefix.
//!
//! May depend on: actix-web, serde_json, domain, api::{ctx, errors, params, paging}.

use actix_web::web;
use serde_json::{Value, json};

use super::{created, deleted, ok, path_sid};
use crate::api::ctx::Ctx;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::paging::{Listing, list_request};
use crate::api::params::Params;
use crate::api::resource;
use crate::domain::credential::{
    Credential, CredentialPatch, CredentialSecrets, CredentialType, NewCredential,
};
use crate::domain::ids::Prefix;
use crate::domain::time::twilio_date;

fn kind(params: &Params) -> ApiResult<Option<CredentialType>> {
    params
        .get("Type")
        .map(|t| {
            CredentialType::parse(t)
                .ok_or_else(|| ApiError::bad_param("Type", "must be apn, gcm or fcm"))
        })
        .transpose()
}

fn secrets(params: &Params) -> CredentialSecrets {
    CredentialSecrets {
        certificate: params.string("Certificate"),
        private_key: params.string("PrivateKey"),
        api_key: params.string("ApiKey"),
        secret: params.string("Secret"),
    }
}

pub fn new_credential(params: &Params) -> ApiResult<NewCredential> {
    params.required("Type")?;
    let credential = NewCredential {
        kind: kind(params)?.ok_or_else(|| ApiError::missing_param("Type"))?,
        friendly_name: params.string("FriendlyName"),
        sandbox: params.bool("Sandbox")?,
        secrets: secrets(params),
    };
    credential.validate()?;
    Ok(credential)
}

/// `allow_type`: Conversations accepts `Type` on update, Chat does not (ignored there).
pub fn credential_patch(params: &Params, allow_type: bool) -> ApiResult<CredentialPatch> {
    let patch = CredentialPatch {
        kind: if allow_type { kind(params)? } else { None },
        friendly_name: params.string("FriendlyName"),
        sandbox: params.bool("Sandbox")?,
        secrets: secrets(params),
    };
    patch.validate()?;
    Ok(patch)
}

/// The credential JSON; `path` is the collection path (`/v2/Credentials`).
pub fn credential_json(ctx: &Ctx, path: &str, c: &Credential) -> Value {
    json!({
        "sid": c.sid,
        "account_sid": ctx.account_sid(),
        "friendly_name": c.friendly_name,
        "type": c.kind.as_str(),
        "sandbox": c.sandbox.map(|s| if s { "true" } else { "false" }),
        "date_created": twilio_date(c.date_created),
        "date_updated": twilio_date(c.date_updated),
        "url": ctx.url(&format!("{path}/{}", c.sid)),
    })
}

/// Where a dialect mounts Credentials and how it differs.
pub trait CredentialMount: 'static {
    /// The collection path under the mount, e.g. `/v2/Credentials`.
    const PATH: &'static str;
    const MAX_PAGE_SIZE: u32;
    /// Whether update accepts `Type` (Conversations does).
    const TYPE_ON_UPDATE: bool;
}

pub async fn create_credential<M: CredentialMount>(ctx: Ctx, params: Params) -> ApiResult {
    let credential = ctx
        .store()
        .create_credential(new_credential(&params)?)
        .await?;
    Ok(created(credential_json(&ctx, M::PATH, &credential)))
}

pub async fn list_credentials<M: CredentialMount>(ctx: Ctx, params: Params) -> ApiResult {
    let request = list_request(&params, M::MAX_PAGE_SIZE)?;
    let page = ctx.store().list_credentials(request.page)?;
    let listing = Listing {
        path: M::PATH,
        key: "credentials",
        filters: Vec::new(),
    };
    Ok(listing.respond(&ctx, &request, &page, |c| credential_json(&ctx, M::PATH, c)))
}

pub async fn fetch_credential<M: CredentialMount>(ctx: Ctx, sid: web::Path<String>) -> ApiResult {
    let sid = path_sid(&sid, Prefix::Credential)?;
    let credential = ctx
        .store()
        .credential(&sid)?
        .ok_or_else(ApiError::not_found)?;
    Ok(ok(credential_json(&ctx, M::PATH, &credential)))
}

pub async fn update_credential<M: CredentialMount>(
    ctx: Ctx,
    sid: web::Path<String>,
    params: Params,
) -> ApiResult {
    let sid = path_sid(&sid, Prefix::Credential)?;
    let credential = ctx
        .store()
        .update_credential(&sid, credential_patch(&params, M::TYPE_ON_UPDATE)?)
        .await?;
    Ok(ok(credential_json(&ctx, M::PATH, &credential)))
}

pub async fn delete_credential<M: CredentialMount>(ctx: Ctx, sid: web::Path<String>) -> ApiResult {
    deleted(
        ctx.store()
            .delete_credential(&path_sid(&sid, Prefix::Credential)?)
            .await?,
    )
}

/// Registers `/Credentials` and `/Credentials/{sid}` for a mount.
pub fn configure_credentials<M: CredentialMount>(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .service(
            resource("/Credentials")
                .get(list_credentials::<M>)
                .post(create_credential::<M>),
        )
        .service(
            resource("/Credentials/{sid}")
                .get(fetch_credential::<M>)
                .post(update_credential::<M>)
                .delete(delete_credential::<M>),
        )
}
