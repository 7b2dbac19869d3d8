//! Chat v1 and v2 Services (`V` is the API version).
//!
//! May depend on: actix-web, serde_json, api::{common, ctx, errors, params, paging}, domain,
//! usecases (through `Ctx`).

use actix_web::web;
use serde_json::{Value, json};

use crate::api::common::services::{ChatVersion, chat_patch};
use crate::api::common::{created, deleted, ok, path_sid};
use crate::api::ctx::Ctx;
use crate::api::errors::ApiResult;
use crate::api::paging::{Listing, list_request};
use crate::api::params::Params;
use crate::domain::ids::Prefix;
use crate::domain::service::Service;
use crate::domain::time::twilio_date;

const MAX_PAGE_SIZE: u32 = 100;

/// The service JSON of Chat `v1` or `v2`.
fn service_json<const V: u8>(ctx: &Ctx, s: &Service) -> Value {
    let st = &s.settings;
    let base = format!("/v{V}/Services/{}", s.sid);
    let mut value = json!({
        "sid": s.sid,
        "account_sid": ctx.account_sid(),
        "friendly_name": s.friendly_name,
        "date_created": twilio_date(s.date_created),
        "date_updated": twilio_date(s.date_updated),
        "default_service_role_sid": st.default_service_role_sid,
        "default_channel_role_sid": st.default_channel_role_sid,
        "default_channel_creator_role_sid": st.default_channel_creator_role_sid,
        "read_status_enabled": st.read_status_enabled,
        "reachability_enabled": s.reachability_enabled,
        "typing_indicator_timeout": st.typing_indicator_timeout,
        "consumption_report_interval": st.consumption_report_interval,
        "limits": {"channel_members": st.limits.channel_members, "user_channels": st.limits.user_channels},
        "pre_webhook_url": st.pre_webhook_url,
        "post_webhook_url": st.post_webhook_url,
        "webhook_method": st.webhook_method.as_deref().unwrap_or("POST"),
        "webhook_filters": st.webhook_filters.clone().unwrap_or_default(),
        "notifications": st.notifications,
        "url": ctx.url(&base),
        "links": {
            "channels": ctx.url(&format!("{base}/Channels")),
            "roles": ctx.url(&format!("{base}/Roles")),
            "users": ctx.url(&format!("{base}/Users")),
        },
    });
    if V == 1 {
        value["webhooks"] = st.v1_webhooks.clone();
    } else {
        value["pre_webhook_retry_count"] = st.pre_webhook_retry_count.into();
        value["post_webhook_retry_count"] = st.post_webhook_retry_count.into();
        value["media"] = json!({"size_limit_mb": st.media_size_limit_mb, "compatibility_message": st.media_compatibility_message});
        value["links"]["bindings"] = ctx.url(&format!("{base}/Bindings")).into();
    }
    value
}

fn chat_version<const V: u8>() -> ChatVersion {
    if V == 1 {
        ChatVersion::V1
    } else {
        ChatVersion::V2
    }
}

pub async fn create_service<const V: u8>(ctx: Ctx, params: Params) -> ApiResult {
    let name = params.required("FriendlyName")?.to_string();
    let service = ctx.store().create_service(name).await?;
    Ok(created(service_json::<V>(&ctx, &service)))
}

pub async fn list_services<const V: u8>(ctx: Ctx, params: Params) -> ApiResult {
    let request = list_request(&params, MAX_PAGE_SIZE)?;
    let page = ctx.store().list_services(request.page)?;
    let listing = Listing {
        path: &format!("/v{V}/Services"),
        key: "services",
        filters: Vec::new(),
    };
    Ok(listing.respond(&ctx, &request, &page, |s| service_json::<V>(&ctx, s)))
}

pub async fn fetch_service<const V: u8>(ctx: Ctx, sid: web::Path<String>) -> ApiResult {
    Ok(ok(service_json::<V>(&ctx, &*ctx.service(&sid)?)))
}

pub async fn update_service<const V: u8>(
    ctx: Ctx,
    sid: web::Path<String>,
    params: Params,
) -> ApiResult {
    let sid = ctx.service(&sid)?.sid.clone();
    let service = ctx
        .reachability()
        .update_service(&sid, chat_patch(&params, chat_version::<V>())?)
        .await?;
    Ok(ok(service_json::<V>(&ctx, &service)))
}

pub async fn delete_service<const V: u8>(ctx: Ctx, sid: web::Path<String>) -> ApiResult {
    let sid = path_sid(&sid, Prefix::Service)?;
    deleted(ctx.reachability().delete_service(&sid).await?)
}
