//! Chat v1 and v2 Users (`V` is the API version): create, fetch / update / delete by SID or identity, list.
//!
//! May depend on: actix-web, serde_json, api::{common, ctx, errors, params, paging}, domain.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::Value;

use crate::api::common::users::{find_user, new_user, reachability_flags, remove_user, user_patch};
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

/// The Chat user JSON, serialized straight from borrowed fields (no intermediate
/// `serde_json::Value`). Fields are declared in alphabetical order: the order a `Value` object
/// has, so the bytes are those Twilio's shape always had here.
#[derive(Serialize)]
struct ChatUser<'a> {
    account_sid: &'a str,
    /// Chat v1 shows attributes only on single-resource reads.
    attributes: Option<&'a str>,
    date_created: String,
    date_updated: String,
    friendly_name: Option<&'a str>,
    identity: &'a str,
    is_notifiable: Option<bool>,
    is_online: Option<bool>,
    joined_channels_count: i64,
    links: ChatUserLinks,
    role_sid: Option<&'a str>,
    service_sid: &'a str,
    sid: &'a str,
    url: String,
}

#[derive(Serialize)]
struct ChatUserLinks {
    /// Chat v2 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    user_bindings: Option<String>,
    user_channels: String,
}

/// The Chat user view of `u` (v1 has no `user_bindings` link).
fn user_view<'a, const V: u8>(
    ctx: &'a Ctx,
    service: &Service,
    u: &'a User,
    single: bool,
) -> ChatUser<'a> {
    render::<V>(ctx.account_sid(), |path| ctx.url(path), service, u, single)
}

/// [`user_view`] with the account and the URL builder given.
fn render<'a, const V: u8>(
    account_sid: &'a str,
    url: impl Fn(&str) -> String,
    service: &Service,
    u: &'a User,
    single: bool,
) -> ChatUser<'a> {
    let (is_online, is_notifiable) = reachability_flags(service, u, single);
    let base = format!("/v{V}/Services/{}/Users/{}", u.service_sid, u.sid);
    ChatUser {
        account_sid,
        attributes: (V != 1 || single).then_some(u.attributes.as_str()),
        date_created: twilio_date(u.date_created),
        date_updated: twilio_date(u.date_updated),
        friendly_name: u.friendly_name.as_deref(),
        identity: &u.identity,
        is_notifiable,
        is_online,
        joined_channels_count: u.joined_channels_count,
        links: ChatUserLinks {
            user_bindings: (V == 2).then(|| url(&format!("{base}/Bindings"))),
            user_channels: url(&format!("{base}/Channels")),
        },
        role_sid: u.role_sid.as_deref(),
        service_sid: &u.service_sid,
        sid: &u.sid,
        url: url(&base),
    }
}

/// The Chat user JSON as a value (list pages).
fn user_json<const V: u8>(ctx: &Ctx, service: &Service, u: &User, single: bool) -> Value {
    serde_json::to_value(user_view::<V>(ctx, service, u, single)).unwrap_or(Value::Null)
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
    Ok(HttpResponse::Created().json(user_view::<V>(&ctx, &service, &user, true)))
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
    Ok(HttpResponse::Ok().json(user_view::<V>(&ctx, &service, &user, true)))
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
    Ok(HttpResponse::Ok().json(user_view::<V>(&ctx, &service, &user, true)))
}

pub async fn delete_user<const V: u8>(ctx: Ctx, path: web::Path<(String, String)>) -> ApiResult {
    let service = ctx.service(&path.0)?;
    remove_user(&ctx, &service, &path.1).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::common::users::reachability_json;
    use crate::domain::service::Service;

    /// The rendering this module had before it serialized a struct: a `json!` value.
    fn as_value<const V: u8>(
        account: &str,
        base: &str,
        service: &Service,
        u: &User,
        single: bool,
    ) -> Value {
        let url = |path: &str| format!("{base}{path}");
        let (is_online, is_notifiable) = reachability_json(service, u, single);
        let path = format!("/v{V}/Services/{}/Users/{}", u.service_sid, u.sid);
        let mut links = json!({"user_channels": url(&format!("{path}/Channels"))});
        if V == 2 {
            links["user_bindings"] = url(&format!("{path}/Bindings")).into();
        }
        json!({
            "sid": u.sid,
            "account_sid": account,
            "service_sid": u.service_sid,
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
            "url": url(&path),
        })
    }

    fn check<const V: u8>(service: &Service, u: &User, single: bool) {
        let (account, base) = ("AC00000000000000000000000000000001", "http://h/chat");
        let view = render::<V>(account, |p| format!("{base}{p}"), service, u, single);
        let expected = as_value::<V>(account, base, service, u, single).to_string();
        assert_eq!(serde_json::to_string(&view).expect("json"), expected);
    }

    #[test]
    fn the_struct_renders_the_bytes_the_value_rendered() {
        let mut service = Service::new("s", 0).expect("service");
        let mut user = User {
            sid: "US00000000000000000000000000000001".into(),
            service_sid: service.sid.clone(),
            identity: "alice \"quoted\" é@example.com".into(),
            friendly_name: Some("Alice\n".into()),
            attributes: "{\"a\":1}".into(),
            role_sid: Some("RL00000000000000000000000000000001".into()),
            joined_channels_count: 3,
            reachability: Default::default(),
            date_created: 1_438_286_400_123,
            date_updated: 1_438_286_401_999,
        };
        for enabled in [false, true] {
            service.reachability_enabled = enabled;
            for online in [None, Some(true), Some(false)] {
                user.reachability.is_online = online;
                user.reachability.is_notifiable = online.map(|o| !o);
                for single in [false, true] {
                    check::<1>(&service, &user, single);
                    check::<2>(&service, &user, single);
                }
            }
        }
        user.friendly_name = None;
        user.role_sid = None;
        check::<1>(&service, &user, true);
        check::<2>(&service, &user, false);
    }
}
