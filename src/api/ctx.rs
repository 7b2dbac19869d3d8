//! `Ctx`, the extractor every authenticated REST handler takes: it authenticates the request
//! and knows the public base URL (with the dialect's mount prefix) for `url`/`links`.
//!
//! May depend on: actix-web, domain, usecases, api::{auth, errors, state}.

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};

use super::auth::{Principal, authenticate};
use super::errors::{ApiError, ApiResult};
use super::state::{AppState, app_state};
use crate::domain::ids::{self, Prefix};
use crate::domain::service::Service;
use crate::domain::store::{Origin, Store};
use crate::usecases::Reachability;

pub struct Ctx {
    pub state: web::Data<AppState>,
    pub principal: Principal,
    /// Public base URL plus the mount prefix (`/chat`, `/conversations` or nothing).
    base: String,
    /// `X-Twilio-Webhook-Enabled: true` was sent.
    webhooks_enabled: bool,
}

impl Ctx {
    pub fn store(&self) -> &dyn Store {
        self.state.store.as_ref()
    }

    /// The use cases (any write that also touches presence or the hub).
    pub fn reachability(&self) -> &Reachability {
        &self.state.reachability
    }

    pub fn account_sid(&self) -> &str {
        &self.state.account.sid
    }

    /// An absolute URL for a path under this dialect's mount.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The origin of REST-made changes.
    pub fn origin(&self) -> Origin {
        Origin::Rest {
            webhooks: self.webhooks_enabled,
        }
    }

    /// The service named by a path segment; 404 when malformed or missing.
    pub fn service(&self, sid: &str) -> ApiResult<Arc<Service>> {
        if !ids::is_sid(sid, Prefix::Service) {
            return Err(ApiError::not_found());
        }
        self.store()
            .service_current(&ids::normalize(sid))?
            .ok_or_else(ApiError::not_found)
    }
}

/// The request's public base: configured, or from Host / X-Forwarded-* headers.
pub fn public_base(state: &AppState, req: &HttpRequest) -> String {
    match &state.public_url {
        Some(url) => url.clone(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

fn mount_prefix(path: &str) -> &'static str {
    ["/chat", "/conversations"]
        .into_iter()
        .find(|m| {
            path.strip_prefix(m)
                .is_some_and(|rest| rest.starts_with('/'))
        })
        .unwrap_or("")
}

impl FromRequest for Ctx {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready((|| {
            let state = app_state(req)?;
            let principal = authenticate(&state, req)?;
            let base = format!("{}{}", public_base(&state, req), mount_prefix(req.path()));
            let webhooks_enabled = req
                .headers()
                .get("X-Twilio-Webhook-Enabled")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
            Ok(Ctx {
                state,
                principal,
                base,
                webhooks_enabled,
            })
        })())
    }
}
