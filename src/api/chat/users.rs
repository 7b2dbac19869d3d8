//! Chat v1 and v2 Users (`V` is the API version): create, fetch / update / delete by SID or identity, list.
//!
//! May depend on: actix-web, serde_json, api::{common, ctx, errors, params, paging}, domain.

use actix_web::web;
use serde_json::{Value, json};

use crate::api::common::users::{find_user, new_user, reachability_json, remove_user, user_patch};
use crate::api::common::{created, ok};
use crate::api::ctx::Ctx;
use crate::api::errors::ApiResult;
use crate::api::paging::{Listing, list_request};
use crate::api::params::Params;
use crate::domain::service::Service;
use crate::domain::time::twilio_date;
use crate::domain::user::{User, UserKey};

/// Chat v1 lists up to 1000 users a page, v2 up to 100.
const fn max_page_size(version: u8) -> u32 {
    if version == 1 { 1000 } else { 100 }
}

/// The Chat user JSON (v1 has no `user_bindings` link).
fn user_json<const V: u8>(ctx: &Ctx, service: &Service, u: &User, single: bool) -> Value {
    let (is_online, is_notifiable) = reachability_json(service, u, single);
    let base = format!("/v{V}/Services/{}/Users/{}", u.service_sid, u.sid);
    let mut links = json!({"user_channels": ctx.url(&format!("{base}/Channels"))});
    if V == 2 {
        links["user_bindings"] = ctx.url(&format!("{base}/Bindings")).into();
    }
    json!({
        "sid": u.sid,
        "account_sid": ctx.account_sid(),
        "service_sid": u.service_sid,
        // Chat v1 shows attributes only on single-resource reads.
        "attributes": if V == 1 && !single { None } else { Some(&u.attributes) },
        "friendly_name": u.friendly_name,
        "role_sid": u.role_sid,
        "identity": u.identity,
        "is_online": is_online,
        "is_notifiable": is_notifiable,
        "date_created": twilio_date(u.date_created),
        "date_updated": twilio_date(u.date_updated),
        "joined_channels_count": u.joined_channels_count,
        "links": links,
        "url": ctx.url(&base),
    })
}

pub async fn create_user<const V: u8>(
    ctx: Ctx,
    sid: web::Path<String>,
    params: Params,
) -> ApiResult {
    let service = ctx.service(&sid)?;
    let user = ctx
        .store()
        .create_user(&service.sid, new_user(&params)?, ctx.origin())
        .await?;
    Ok(created(user_json::<V>(&ctx, &service, &user, true)))
}

pub async fn list_users<const V: u8>(
    ctx: Ctx,
    sid: web::Path<String>,
    params: Params,
) -> ApiResult {
    let service = ctx.service(&sid)?;
    let request = list_request(&params, max_page_size(V))?;
    let page = ctx.store().list_users(&service.sid, request.page)?;
    let path = format!("/v{V}/Services/{}/Users", service.sid);
    let listing = Listing {
        path: &path,
        key: "users",
        filters: Vec::new(),
    };
    Ok(listing.respond(&ctx, &request, &page, |u| {
        user_json::<V>(&ctx, &service, u, false)
    }))
}

pub async fn fetch_user<const V: u8>(ctx: Ctx, path: web::Path<(String, String)>) -> ApiResult {
    let service = ctx.service(&path.0)?;
    let user = find_user(&ctx, &service, &path.1)?;
    Ok(ok(user_json::<V>(&ctx, &service, &user, true)))
}

pub async fn update_user<const V: u8>(
    ctx: Ctx,
    path: web::Path<(String, String)>,
    params: Params,
) -> ApiResult {
    let service = ctx.service(&path.0)?;
    let patch = user_patch(&params)?;
    let user = ctx
        .store()
        .update_user(&service.sid, UserKey::parse(&path.1), patch, ctx.origin())
        .await?;
    Ok(ok(user_json::<V>(&ctx, &service, &user, true)))
}

pub async fn delete_user<const V: u8>(ctx: Ctx, path: web::Path<(String, String)>) -> ApiResult {
    let service = ctx.service(&path.0)?;
    remove_user(&ctx, &service, &path.1).await
}
