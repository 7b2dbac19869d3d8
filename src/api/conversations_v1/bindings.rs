//! Conversations Bindings: list (with `twilsock` among the types), fetch, delete.
//!
//! May depend on: actix-web, serde_json, api::{common, ctx, errors, params, paging}, domain.

use actix_web::web;
use serde_json::{Value, json};

use crate::api::common::bindings::{binding_filter, filter_query};
use crate::api::common::{deleted, ok, path_sid};
use crate::api::ctx::Ctx;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::paging::{Listing, list_request};
use crate::api::params::Params;
use crate::domain::binding::{Binding, BindingFilter, BindingType};
use crate::domain::ids::Prefix;
use crate::domain::time::twilio_date;

const MAX_PAGE_SIZE: u32 = 100;
const TYPES: [BindingType; 4] = [
    BindingType::Apn,
    BindingType::Gcm,
    BindingType::Fcm,
    BindingType::Twilsock,
];
const MESSAGE_TYPES: [&str; 3] = [
    "removed_from_conversation",
    "new_message",
    "added_to_conversation",
];

/// Conversations binding JSON: `chat_service_sid`, no `links`, no `user_sid`.
fn binding_json(ctx: &Ctx, b: &Binding) -> Value {
    json!({
        "sid": b.sid,
        "account_sid": ctx.account_sid(),
        "chat_service_sid": b.service_sid,
        "credential_sid": b.credential_sid,
        "date_created": twilio_date(b.date_created),
        "date_updated": twilio_date(b.date_updated),
        "endpoint": b.endpoint,
        "identity": b.identity,
        "binding_type": b.binding_type.as_str(),
        "message_types": MESSAGE_TYPES,
        "url": ctx.url(&format!("/v1/Services/{}/Bindings/{}", b.service_sid, b.sid)),
    })
}

pub async fn list_bindings(ctx: Ctx, sid: web::Path<String>, params: Params) -> ApiResult {
    let service = ctx.service(&sid)?;
    let request = list_request(&params, MAX_PAGE_SIZE)?;
    let filter = binding_filter(&params, true, &TYPES)?;
    let page = ctx
        .store()
        .list_bindings(&service.sid, &filter, request.page)?;
    let path = format!("/v1/Services/{}/Bindings", service.sid);
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
