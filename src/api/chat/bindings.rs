//! Chat v2 Bindings (service level) and User Bindings: list with filters, fetch, delete.
//! Bindings are created by push registration (client API or `/api/v1`), as on Twilio.
//!
//! May depend on: actix-web, serde_json, api::{common, ctx, errors, params, paging}, domain.

use actix_web::web;
use serde_json::{Value, json};

use crate::api::common::bindings::{binding_filter, filter_query};
use crate::api::common::users::find_user;
use crate::api::common::{deleted, ok, path_sid};
use crate::api::ctx::Ctx;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::paging::{Listing, list_request};
use crate::api::params::Params;
use crate::domain::binding::{Binding, BindingFilter, BindingType};
use crate::domain::ids::Prefix;
use crate::domain::time::twilio_date;

const MAX_PAGE_SIZE: u32 = 50;
const TYPES: [BindingType; 3] = [BindingType::Apn, BindingType::Gcm, BindingType::Fcm];
const MESSAGE_TYPES: [&str; 4] = [
    "removed_from_channel",
    "new_message",
    "added_to_channel",
    "invited_to_channel",
];

fn binding_fields(ctx: &Ctx, b: &Binding) -> Value {
    json!({
        "sid": b.sid,
        "account_sid": ctx.account_sid(),
        "service_sid": b.service_sid,
        "date_created": twilio_date(b.date_created),
        "date_updated": twilio_date(b.date_updated),
        "endpoint": b.endpoint,
        "identity": b.identity,
        "credential_sid": b.credential_sid,
        "binding_type": b.binding_type.as_str(),
        "message_types": MESSAGE_TYPES,
    })
}

/// Service-level binding: `links.user` uses the identity, as Twilio's fixture does.
fn binding_json(ctx: &Ctx, b: &Binding) -> Value {
    let mut v = binding_fields(ctx, b);
    let user_path = format!("/v2/Services/{}/Users/{}", b.service_sid, b.identity);
    v["url"] = ctx
        .url(&format!(
            "/v2/Services/{}/Bindings/{}",
            b.service_sid, b.sid
        ))
        .into();
    v["links"] = json!({"user": ctx.url(&user_path)});
    v
}

/// User binding: adds `user_sid`, no `links`, URL under the user.
fn user_binding_json(ctx: &Ctx, b: &Binding) -> Value {
    let mut v = binding_fields(ctx, b);
    v["user_sid"] = b.user_sid.clone().into();
    v["url"] = ctx
        .url(&format!(
            "/v2/Services/{}/Users/{}/Bindings/{}",
            b.service_sid, b.user_sid, b.sid
        ))
        .into();
    v
}

pub async fn list_bindings(ctx: Ctx, sid: web::Path<String>, params: Params) -> ApiResult {
    let service = ctx.service(&sid)?;
    let request = list_request(&params, MAX_PAGE_SIZE)?;
    let filter = binding_filter(&params, true, &TYPES)?;
    let page = ctx
        .store()
        .list_bindings(&service.sid, &filter, request.page)?;
    let path = format!("/v2/Services/{}/Bindings", service.sid);
    let listing = Listing {
        path: &path,
        key: "bindings",
        filters: filter_query(&filter),
    };
    Ok(listing.respond(&ctx, &request, &page, |b| binding_json(&ctx, b)))
}

pub async fn fetch_binding(ctx: Ctx, path: web::Path<(String, String)>) -> ApiResult {
    let service = ctx.service(&path.0)?;
    let sid = path_sid(&path.1, Prefix::Binding)?;
    let binding = ctx
        .store()
        .binding(&service.sid, &sid, &BindingFilter::default())?;
    Ok(ok(binding_json(
        &ctx,
        &binding.ok_or_else(ApiError::not_found)?,
    )))
}

pub async fn delete_binding(ctx: Ctx, path: web::Path<(String, String)>) -> ApiResult {
    let service = ctx.service(&path.0)?;
    let sid = path_sid(&path.1, Prefix::Binding)?;
    deleted(
        ctx.store()
            .delete_binding(&service.sid, &sid, BindingFilter::default(), ctx.origin())
            .await?,
    )
}

pub async fn list_user_bindings(
    ctx: Ctx,
    path: web::Path<(String, String)>,
    params: Params,
) -> ApiResult {
    let service = ctx.service(&path.0)?;
    let user = find_user(&ctx, &service, &path.1)?;
    let request = list_request(&params, MAX_PAGE_SIZE)?;
    let mut filter = binding_filter(&params, false, &TYPES)?;
    filter.user_sid = Some(user.sid.clone());
    let page = ctx
        .store()
        .list_bindings(&service.sid, &filter, request.page)?;
    let list_path = format!("/v2/Services/{}/Users/{}/Bindings", service.sid, user.sid);
    let listing = Listing {
        path: &list_path,
        key: "bindings",
        filters: filter_query(&filter),
    };
    Ok(listing.respond(&ctx, &request, &page, |b| user_binding_json(&ctx, b)))
}

fn user_scope(
    ctx: &Ctx,
    path: &(String, String, String),
) -> ApiResult<(String, String, BindingFilter)> {
    let service = ctx.service(&path.0)?;
    let user = find_user(ctx, &service, &path.1)?;
    let sid = path_sid(&path.2, Prefix::Binding)?;
    Ok((
        service.sid.clone(),
        sid,
        BindingFilter {
            user_sid: Some(user.sid),
            ..Default::default()
        },
    ))
}

pub async fn fetch_user_binding(ctx: Ctx, path: web::Path<(String, String, String)>) -> ApiResult {
    let (service_sid, sid, filter) = user_scope(&ctx, &path)?;
    let binding = ctx
        .store()
        .binding(&service_sid, &sid, &filter)?
        .ok_or_else(ApiError::not_found)?;
    Ok(ok(user_binding_json(&ctx, &binding)))
}

pub async fn delete_user_binding(ctx: Ctx, path: web::Path<(String, String, String)>) -> ApiResult {
    let (service_sid, sid, filter) = user_scope(&ctx, &path)?;
    deleted(
        ctx.store()
            .delete_binding(&service_sid, &sid, filter, ctx.origin())
            .await?,
    )
}
