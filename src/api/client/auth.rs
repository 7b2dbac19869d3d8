//! `ClientCtx`: the extractor of every client request. It reads the access token
//! (`Authorization: Bearer`, `X-Twilio-Token`, or `?token=`, which WebSocket upgrades from
//! browsers need), verifies it (docs/twilio-compatibility.md §9) and loads the token's
//! service — the only service the caller can touch.
//!
//! May depend on: actix-web, tokens, domain, api::{errors, state}.

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};

use crate::api::errors::ApiError;
use crate::api::state::{AppState, app_state};
use crate::domain::service::Service;
use crate::domain::store::Store;
use crate::tokens::{self, ClientGrant, KeySecrets, TokenError};

pub struct ClientCtx {
    pub state: web::Data<AppState>,
    pub grant: ClientGrant,
    pub service: Arc<Service>,
}

impl ClientCtx {
    pub fn store(&self) -> &dyn Store {
        self.state.store.as_ref()
    }
    pub fn identity(&self) -> &str {
        &self.grant.identity
    }
}

/// API key secrets from the store (revoked keys are absent).
struct StoreKeys<'a>(&'a dyn Store);

impl KeySecrets for StoreKeys<'_> {
    fn secret(&self, key_sid: &str) -> Option<String> {
        self.0.api_key(key_sid).ok().flatten().map(|k| k.secret)
    }
}

pub fn token_error(e: TokenError) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
}

/// The raw token of a request, from the headers or the query string.
pub fn token_of(req: &HttpRequest) -> Option<String> {
    let headers = req.headers();
    if let Some(bearer) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    {
        return Some(bearer.trim().to_string());
    }
    if let Some(token) = headers.get("X-Twilio-Token").and_then(|v| v.to_str().ok()) {
        return Some(token.trim().to_string());
    }
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// Verifies a token and loads its service.
pub fn authenticate(
    state: &AppState,
    token: &str,
) -> Result<(ClientGrant, Arc<Service>), ApiError> {
    let now = chrono::Utc::now().timestamp();
    let grant = tokens::verify(
        token,
        &state.account.sid,
        &StoreKeys(state.store.as_ref()),
        now,
    )
    .map_err(token_error)?;
    let service = state.store.service(&grant.service_sid)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            20106,
            "Invalid Access Token grants: the chat service does not exist",
        )
    })?;
    Ok((grant, service))
}

impl FromRequest for ClientCtx {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready((|| {
            let state = app_state(req)?;
            let token = token_of(req).ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, 20101, "Access Token required")
            })?;
            let (grant, service) = authenticate(&state, &token)?;
            Ok(ClientCtx {
                state,
                grant,
                service,
            })
        })())
    }
}
