//! HTTP Basic authentication for the REST dialects and the native API: the account SID with
//! its auth token, or an API key SID with its secret, compared in constant time.
//!
//! May depend on: actix-web, base64, subtle, domain, api::{errors, state}.

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

use super::errors::ApiError;
use super::state::AppState;
use crate::domain::ids::{self, Prefix};

/// Who made an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Account,
    ApiKey(String),
}

/// Checks the request's Basic credentials; anything else is 401/20003.
pub fn authenticate(state: &AppState, req: &HttpRequest) -> Result<Principal, ApiError> {
    let (user, password) = basic_credentials(req).ok_or_else(ApiError::unauthorized)?;
    if ids::is_sid(&user, Prefix::ApiKey) {
        let key = state.store.api_key(&user).map_err(ApiError::from)?;
        return match key {
            Some(key) if constant_time_eq(&key.secret, &password) => Ok(Principal::ApiKey(key.sid)),
            _ => Err(ApiError::unauthorized()),
        };
    }
    let account = &state.account;
    let sid_ok = constant_time_eq(&account.sid, &user);
    let token_ok = constant_time_eq(account.auth_token.expose(), &password);
    if sid_ok & token_ok {
        Ok(Principal::Account)
    } else {
        Err(ApiError::unauthorized())
    }
}

fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let header = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Equal strings, compared without an early exit on the first differing byte.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_matches_equality() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
