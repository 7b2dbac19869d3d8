//! Conversations Users, service-scoped (`/v1/Services/{sid}/Users`) and through the
//! default-service shortcut (`/v1/Users`), which acts on the account's
//! `default_chat_service_sid`. That service is created by the first user created through the
//! shortcut, never by a read: until then the shortcut lists no users and finds none (404), so
//! a GET never writes.
//!
//! May depend on: actix-web, serde_json, api::{common, ctx, errors, params, paging}, domain.

use std::sync::Arc;

use actix_web::web;
use serde_json::{Value, json};

use crate::api::common::users::{find_user, new_user, reachability_json, remove_user, user_patch};
use crate::api::common::{created, ok};
use crate::api::ctx::Ctx;
use crate::api::errors::{ApiError, ApiResult};
use crate::api::paging::{Listing, list_request};
use crate::api::params::Params;
use crate::domain::page::Page;
use crate::domain::service::Service;
use crate::domain::time::twilio_date;
use crate::domain::user::{User, UserKey};

const MAX_PAGE_SIZE: u32 = 50;

/// The service a request acts on and the collection path its URLs use.
struct Scope {
    service: Arc<Service>,
    path: String,
}

impl Scope {
    fn service(ctx: &Ctx, sid: &str) -> ApiResult<Self> {
        let service = ctx.service(sid)?;
        let path = format!("/v1/Services/{}/Users", service.sid);
        Ok(Scope { service, path })
    }

    /// The default service, created if missing: only for creating a user.
    async fn default_for_create(ctx: &Ctx) -> ApiResult<Self> {
        let service = match Self::existing_default(ctx)? {
            Some(scope) => return Ok(scope),
            None => Arc::new(ctx.store().default_conversations_service().await?),
        };
        Ok(Self::of_default(service))
    }

    /// The default service if it exists (reads, updates and deletes never create it).
    fn existing_default(ctx: &Ctx) -> ApiResult<Option<Self>> {
        let existing = match ctx.store().account()?.default_chat_service_sid {
            Some(sid) => ctx.store().service_current(&sid)?,
            None => None,
        };
        Ok(existing.map(Self::of_default))
    }

    /// The default service, or 404 when it does not exist yet (so neither does any user).
    fn existing_default_or_404(ctx: &Ctx) -> ApiResult<Self> {
        Self::existing_default(ctx)?.ok_or_else(ApiError::not_found)
    }

    fn of_default(service: Arc<Service>) -> Self {
        Scope {
            service,
            path: "/v1/Users".to_string(),
        }
    }

    fn user_json(&self, ctx: &Ctx, u: &User, single: bool) -> Value {
        let (is_online, is_notifiable) = reachability_json(&self.service, u, single);
        let url = format!("{}/{}", self.path, u.sid);
        json!({
            "sid": u.sid,
            "account_sid": ctx.account_sid(),
            "chat_service_sid": u.service_sid,
            "role_sid": u.role_sid,
            "identity": u.identity,
            "friendly_name": u.friendly_name,
            "attributes": u.attributes,
            "is_online": is_online,
            "is_notifiable": is_notifiable,
            "date_created": twilio_date(u.date_created),
            "date_updated": twilio_date(u.date_updated),
            "url": ctx.url(&url),
            "links": {"user_conversations": ctx.url(&format!("{url}/Conversations"))},
        })
    }

    async fn create(self, ctx: Ctx, params: Params) -> ApiResult {
        let user = ctx
            .store()
            .create_user(&self.service.sid, new_user(&params)?, ctx.origin())
            .await?;
        Ok(created(self.user_json(&ctx, &user, true)))
    }

    fn list(self, ctx: Ctx, params: Params) -> ApiResult {
        let request = list_request(&params, MAX_PAGE_SIZE)?;
        let page = ctx.store().list_users(&self.service.sid, request.page)?;
        let listing = Listing {
            path: &self.path,
            key: "users",
            filters: Vec::new(),
        };
        Ok(listing.respond(&ctx, &request, &page, |u| self.user_json(&ctx, u, false)))
    }
}

/// `GET /v1/Users` before the default service exists: an empty page.
fn list_no_default_users(ctx: Ctx, params: Params) -> ApiResult {
    let request = list_request(&params, MAX_PAGE_SIZE)?;
    let page: Page<User> = Page {
        items: Vec::new(),
        has_more_after: false,
        has_more_before: false,
    };
    let listing = Listing {
        path: "/v1/Users",
        key: "users",
        filters: Vec::new(),
    };
    Ok(listing.respond(&ctx, &request, &page, |_| Value::Null))
}

impl Scope {
    fn fetch(self, ctx: Ctx, segment: &str) -> ApiResult {
        let user = find_user(&ctx, &self.service, segment)?;
        Ok(ok(self.user_json(&ctx, &user, true)))
    }

    async fn update(self, ctx: Ctx, segment: &str, params: Params) -> ApiResult {
        let patch = user_patch(&params)?;
        let user = ctx
            .store()
            .update_user(
                &self.service.sid,
                UserKey::parse(segment),
                patch,
                ctx.origin(),
            )
            .await?;
        Ok(ok(self.user_json(&ctx, &user, true)))
    }

    async fn delete(self, ctx: Ctx, segment: &str) -> ApiResult {
        remove_user(&ctx, &self.service, segment).await
    }
}

pub async fn create_service_user(ctx: Ctx, sid: web::Path<String>, params: Params) -> ApiResult {
    Scope::service(&ctx, &sid)?.create(ctx, params).await
}

pub async fn list_service_users(ctx: Ctx, sid: web::Path<String>, params: Params) -> ApiResult {
    Scope::service(&ctx, &sid)?.list(ctx, params)
}

pub async fn fetch_service_user(ctx: Ctx, path: web::Path<(String, String)>) -> ApiResult {
    Scope::service(&ctx, &path.0)?.fetch(ctx, &path.1)
}

pub async fn update_service_user(
    ctx: Ctx,
    path: web::Path<(String, String)>,
    params: Params,
) -> ApiResult {
    Scope::service(&ctx, &path.0)?
        .update(ctx, &path.1, params)
        .await
}

pub async fn delete_service_user(ctx: Ctx, path: web::Path<(String, String)>) -> ApiResult {
    Scope::service(&ctx, &path.0)?.delete(ctx, &path.1).await
}

pub async fn create_default_user(ctx: Ctx, params: Params) -> ApiResult {
    Scope::default_for_create(&ctx)
        .await?
        .create(ctx, params)
        .await
}

pub async fn list_default_users(ctx: Ctx, params: Params) -> ApiResult {
    match Scope::existing_default(&ctx)? {
        Some(scope) => scope.list(ctx, params),
        None => list_no_default_users(ctx, params),
    }
}

pub async fn fetch_default_user(ctx: Ctx, user: web::Path<String>) -> ApiResult {
    Scope::existing_default_or_404(&ctx)?.fetch(ctx, &user)
}

pub async fn update_default_user(ctx: Ctx, user: web::Path<String>, params: Params) -> ApiResult {
    Scope::existing_default_or_404(&ctx)?
        .update(ctx, &user, params)
        .await
}

pub async fn delete_default_user(ctx: Ctx, user: web::Path<String>) -> ApiResult {
    Scope::existing_default_or_404(&ctx)?
        .delete(ctx, &user)
        .await
}
