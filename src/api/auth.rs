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
    // Split in place: the decoded buffer becomes the user, its tail the password.
    let mut user = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let colon = user.find(':')?;
    let password = user[colon + 1..].to_string();
    user.truncate(colon);
    Some((user, password))
}

/// Equal strings, compared without an early exit on the first differing byte.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        let with = |value: &str| {
            let req = actix_web::test::TestRequest::default()
                .insert_header((AUTHORIZATION, value))
                .to_http_request();
            basic_credentials(&req)
        };
        let encode = |s: &str| STANDARD.encode(s);
        assert_eq!(
            with(&format!("Basic {}", encode("AC1:tok:en"))),
            Some(("AC1".to_string(), "tok:en".to_string()))
        );
        assert_eq!(
            with(&format!("basic  {} ", encode(":"))),
            Some((String::new(), String::new()))
        );
        assert_eq!(with(&format!("Basic {}", encode("no colon"))), None);
        assert_eq!(with(&format!("Bearer {}", encode("a:b"))), None);
        assert_eq!(with("Basic !!!"), None);
    }

    #[test]
    fn constant_time_eq_matches_equality() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
