//! Conversations webhook configuration singletons: per service (`Configuration/Webhooks`,
//! the same post-event webhook Chat calls `post_webhook_url`) and per account.
//!
//! May depend on: actix-web, serde_json, api::{common, ctx, errors, params}, domain.

use actix_web::web;
use serde_json::{Value, json};

use crate::api::common::ok;
use crate::api::common::services::conversations_webhook_patch;
use crate::api::ctx::Ctx;
use crate::api::errors::ApiResult;
use crate::api::params::Params;
use crate::domain::account::{Account, WebhookPatch};
use crate::domain::service::Service;

fn service_webhooks_json(ctx: &Ctx, s: &Service) -> Value {
    let st = &s.settings;
    json!({
        "account_sid": ctx.account_sid(),
        "chat_service_sid": s.sid,
        "pre_webhook_url": st.pre_webhook_url,
        "post_webhook_url": st.post_webhook_url,
        "filters": st.webhook_filters,
        "method": st.webhook_method,
        "url": ctx.url(&format!("/v1/Services/{}/Configuration/Webhooks", s.sid)),
    })
}

fn account_webhooks_json(ctx: &Ctx, a: &Account) -> Value {
    let w = &a.webhook;
    json!({
        "account_sid": ctx.account_sid(),
        "method": w.method,
        "filters": w.filters,
        "pre_webhook_url": w.pre_webhook_url,
        "post_webhook_url": w.post_webhook_url,
        "target": w.target,
        "url": ctx.url("/v1/Configuration/Webhooks"),
    })
}

pub async fn fetch_service_webhooks(ctx: Ctx, sid: web::Path<String>) -> ApiResult {
    Ok(ok(service_webhooks_json(&ctx, &*ctx.service(&sid)?)))
}

pub async fn update_service_webhooks(
    ctx: Ctx,
    sid: web::Path<String>,
    params: Params,
) -> ApiResult {
    let sid = ctx.service(&sid)?.sid.clone();
    let service = ctx
        .reachability()
        .update_service(&sid, conversations_webhook_patch(&params)?)
        .await?;
    Ok(ok(service_webhooks_json(&ctx, &service)))
}

pub async fn fetch_account_webhooks(ctx: Ctx) -> ApiResult {
    Ok(ok(account_webhooks_json(&ctx, &ctx.store().account()?)))
}

pub async fn update_account_webhooks(ctx: Ctx, params: Params) -> ApiResult {
    let patch = WebhookPatch {
        method: params.string("Method"),
        filters: params.opt_list("Filters")?,
        pre_webhook_url: params.clearable("PreWebhookUrl"),
        post_webhook_url: params.clearable("PostWebhookUrl"),
        target: params.string("Target"),
    };
    patch.validate()?;
    let account = ctx.store().update_account_webhook(patch).await?;
    Ok(ok(account_webhooks_json(&ctx, &account)))
}
