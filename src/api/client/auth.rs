//! `ClientCtx`: the extractor of every client request. It reads the access token
//! (`Authorization: Bearer` or `X-Twilio-Token`), verifies it (Twilio's access token format,
//! docs/twilio-compatibility.md §9) and loads the token's service — the only service the
//! caller can touch.
//!
//! `?token=` is read only by the WebSocket upgrade (browsers cannot set headers there): in
//! any other URL a token would end up in proxy logs, browser history and `Referer` headers.
//!
//! May depend on: actix-web, tokens, domain, usecases, api::{errors, state}.

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
use crate::tokens::{ClientGrant, KeySecrets, KeysUnreadable, TokenError};
use crate::usecases::Reachability;

pub struct ClientCtx {
    pub state: web::Data<AppState>,
    pub grant: Arc<ClientGrant>,
    pub service: Arc<Service>,
}

impl ClientCtx {
    pub fn store(&self) -> &dyn Store {
        self.state.store.as_ref()
    }
    /// The use cases (any write that also touches presence or the hub).
    pub fn reachability(&self) -> &Reachability {
        &self.state.reachability
    }
    pub fn identity(&self) -> &str {
        &self.grant.identity
    }
    /// Charges one write to the caller's identity, or refuses it with 429/20429.
    pub fn charge_write(&self) -> Result<(), ApiError> {
        self.state.client_writes.charge(
            &self.service.sid,
            self.identity(),
            std::time::Instant::now(),
        )
    }
}

/// API key secrets from the store (revoked keys are absent).
struct StoreKeys<'a>(&'a dyn Store);

impl KeySecrets for StoreKeys<'_> {
    fn secret(&self, key_sid: &str) -> Option<String> {
        self.lookup(key_sid).ok().flatten()
    }
    fn lookup(&self, key_sid: &str) -> Result<Option<String>, KeysUnreadable> {
        match self.0.api_key(key_sid) {
            Ok(key) => Ok(key.map(|k| k.secret)),
            Err(e) => {
                tracing::warn!(error = %e, "API keys unreadable; a token cannot be checked");
                Err(KeysUnreadable)
            }
        }
    }
}

/// 401 with the token error's code — except when the keys could not be read: 503, retry.
pub fn token_error(e: TokenError) -> ApiError {
    if e == TokenError::KeysUnavailable {
        return ApiError::unavailable();
    }
    ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
}

/// The raw token of a request's `Authorization: Bearer` or `X-Twilio-Token` header.
pub fn header_token(req: &HttpRequest) -> Option<&str> {
    let headers = req.headers();
    if let Some(bearer) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    {
        return Some(bearer.trim());
    }
    if let Some(token) = headers.get("X-Twilio-Token").and_then(|v| v.to_str().ok()) {
        return Some(token.trim());
    }
    None
}

/// The `?token=` of a request's query string.
pub fn query_token(req: &HttpRequest) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// 401/20101: no token where one is read; a token in the query is named as the reason.
fn token_required(req: &HttpRequest) -> ApiError {
    let message = if query_token(req).is_some() {
        "Access Token required: send it in the Authorization (Bearer) or X-Twilio-Token header; \
         ?token= is accepted only on the WebSocket upgrade /client/v1/socket"
    } else {
        "Access Token required"
    };
    ApiError::new(StatusCode::UNAUTHORIZED, 20101, message)
}

/// Verifies a token (kept in the verified-token cache for the next request) and loads its
/// service.
pub fn authenticate(
    state: &AppState,
    token: &str,
) -> Result<(Arc<ClientGrant>, Arc<Service>), ApiError> {
    authenticate_and(state, token, true)
}

/// [`authenticate`] for a token presented once for a long time — a WebSocket's, at its upgrade
/// or `updateToken` — which is not kept in the cache (see `VerifiedTokens::verify_once`).
pub fn authenticate_once(
    state: &AppState,
    token: &str,
) -> Result<(Arc<ClientGrant>, Arc<Service>), ApiError> {
    authenticate_and(state, token, false)
}

fn authenticate_and(
    state: &AppState,
    token: &str,
    remember: bool,
) -> Result<(Arc<ClientGrant>, Arc<Service>), ApiError> {
    let now = chrono::Utc::now().timestamp();
    let (cache, keys) = (&state.verified_tokens, StoreKeys(state.store.as_ref()));
    let grant = if remember {
        cache.verify(token, &state.account.sid, &keys, now)
    } else {
        cache.verify_once(token, &state.account.sid, &keys, now)
    }
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
            let token = header_token(req).ok_or_else(|| token_required(req))?;
            let (grant, service) = authenticate(&state, token)?;
            Ok(ClientCtx {
                state,
                grant,
                service,
            })
        })())
    }
}
