//! Conversations Configuration singletons: the service's (roles, reachability) and the
//! account's (default service, messaging service, timers).
//!
//! May depend on: actix-web, serde_json, api::{common, ctx, errors, params}, domain, usecases
//! (through `Ctx`).

use actix_web::web;
use serde_json::{Value, json};

use crate::api::common::ok;
use crate::api::common::services::conversations_config_patch;
use crate::api::ctx::Ctx;
use crate::api::errors::ApiResult;
use crate::api::params::Params;
use crate::domain::account::{Account, AccountConfigPatch};
use crate::domain::service::Service;

/// Service Configuration JSON; it has no `account_sid`.
fn service_configuration_json(ctx: &Ctx, s: &Service) -> Value {
    let base = format!("/v1/Services/{}/Configuration", s.sid);
    json!({
        "chat_service_sid": s.sid,
        "default_conversation_creator_role_sid": s.settings.default_channel_creator_role_sid,
        "default_conversation_role_sid": s.settings.default_channel_role_sid,
        "default_chat_service_role_sid": s.settings.default_service_role_sid,
        "reachability_enabled": s.reachability_enabled,
        "url": ctx.url(&base),
        "links": {
            "notifications": ctx.url(&format!("{base}/Notifications")),
            "webhooks": ctx.url(&format!("{base}/Webhooks")),
        },
    })
}

fn account_configuration_json(ctx: &Ctx, a: &Account) -> Value {
    let service_link = a
        .default_chat_service_sid
        .as_ref()
        .map(|sid| ctx.url(&format!("/v1/Services/{sid}/Configuration")));
    json!({
        "account_sid": ctx.account_sid(),
        "default_chat_service_sid": a.default_chat_service_sid,
        "default_messaging_service_sid": a.default_messaging_service_sid,
        "default_inactive_timer": a.default_inactive_timer,
        "default_closed_timer": a.default_closed_timer,
        "url": ctx.url("/v1/Configuration"),
        "links": {
            "service": service_link,
            "webhooks": ctx.url("/v1/Configuration/Webhooks"),
        },
    })
}

pub async fn fetch_service_configuration(ctx: Ctx, sid: web::Path<String>) -> ApiResult {
    Ok(ok(service_configuration_json(&ctx, &*ctx.service(&sid)?)))
}

pub async fn update_service_configuration(
    ctx: Ctx,
    sid: web::Path<String>,
    params: Params,
) -> ApiResult {
    let sid = ctx.service(&sid)?.sid.clone();
    let service = ctx
        .reachability()
        .update_service(&sid, conversations_config_patch(&params)?)
        .await?;
    Ok(ok(service_configuration_json(&ctx, &service)))
}

pub async fn fetch_account_configuration(ctx: Ctx) -> ApiResult {
    Ok(ok(account_configuration_json(
        &ctx,
        &ctx.store().account()?,
    )))
}

pub async fn update_account_configuration(ctx: Ctx, params: Params) -> ApiResult {
    let patch = AccountConfigPatch {
        default_chat_service_sid: params.string("DefaultChatServiceSid"),
        default_messaging_service_sid: params.string("DefaultMessagingServiceSid"),
        default_inactive_timer: params.string("DefaultInactiveTimer"),
        default_closed_timer: params.string("DefaultClosedTimer"),
    };
    patch.validate()?;
    let account = ctx.store().update_account_config(patch).await?;
    Ok(ok(account_configuration_json(&ctx, &account)))
}
