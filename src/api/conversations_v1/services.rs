//! Conversations Services: create, list, fetch, delete (there is no update; settings live in
//! the Configuration singletons).
//!
//! May depend on: actix-web, serde_json, api::{common, ctx, errors, params, paging}, domain,
//! usecases (through `Ctx`).

use actix_web::web;
use serde_json::{Value, json};

use crate::api::common::{created, deleted, ok, path_sid};
use crate::api::ctx::Ctx;
use crate::api::errors::ApiResult;
use crate::api::paging::{Listing, list_request};
use crate::api::params::Params;
use crate::domain::ids::Prefix;
use crate::domain::service::Service;
use crate::domain::time::twilio_date;

const MAX_PAGE_SIZE: u32 = 100;

fn service_json(ctx: &Ctx, s: &Service) -> Value {
    let base = format!("/v1/Services/{}", s.sid);
    let link = |sub: &str| ctx.url(&format!("{base}/{sub}"));
    json!({
        "account_sid": ctx.account_sid(),
        "sid": s.sid,
        "friendly_name": s.friendly_name,
        "date_created": twilio_date(s.date_created),
        "date_updated": twilio_date(s.date_updated),
        "url": ctx.url(&base),
        "links": {
            "conversations": link("Conversations"),
            "users": link("Users"),
            "roles": link("Roles"),
            "bindings": link("Bindings"),
            "configuration": link("Configuration"),
            "participant_conversations": link("ParticipantConversations"),
        },
    })
}

pub async fn create_service(ctx: Ctx, params: Params) -> ApiResult {
    let name = params.required("FriendlyName")?.to_string();
    let service = ctx.store().create_service(name).await?;
    Ok(created(service_json(&ctx, &service)))
}

pub async fn list_services(ctx: Ctx, params: Params) -> ApiResult {
    let request = list_request(&params, MAX_PAGE_SIZE)?;
    let page = ctx.store().list_services(request.page)?;
    let listing = Listing {
        path: "/v1/Services",
        key: "services",
        filters: Vec::new(),
    };
    Ok(listing.respond(&ctx, &request, &page, |s| service_json(&ctx, s)))
}

pub async fn fetch_service(ctx: Ctx, sid: web::Path<String>) -> ApiResult {
    Ok(ok(service_json(&ctx, &*ctx.service(&sid)?)))
}

pub async fn delete_service(ctx: Ctx, sid: web::Path<String>) -> ApiResult {
    let sid = path_sid(&sid, Prefix::Service)?;
    deleted(ctx.reachability().delete_service(&sid).await?)
}
