//! Dialect-neutral request handling shared by Chat v1, Chat v2 and Conversations: turning
//! Twilio parameters into domain patches, resolving users, and rendering pieces every dialect
//! shares.
//!
//! May depend on: actix-web, serde_json, domain, api::{ctx, errors, params}.

pub mod bindings;
pub mod credentials;
pub mod services;
pub mod users;

use actix_web::HttpResponse;
use serde_json::Value;

use crate::domain::ids::{self, Prefix};

use super::errors::{ApiError, ApiResult};

/// 201 with a JSON body.
pub fn created(body: Value) -> HttpResponse {
    HttpResponse::Created().json(body)
}

/// 200 with a JSON body.
pub fn ok(body: Value) -> HttpResponse {
    HttpResponse::Ok().json(body)
}

/// 204 when something was deleted, 404 otherwise.
pub fn deleted(found: bool) -> ApiResult {
    if found {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found())
    }
}

/// A path SID of the given kind, normalized; 404 when malformed.
pub fn path_sid(value: &str, prefix: Prefix) -> ApiResult<String> {
    if ids::is_sid(value, prefix) {
        Ok(ids::normalize(value))
    } else {
        Err(ApiError::not_found())
    }
}

/// `NewMessage` → `new_message`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn snake_case_converts_pascal_names() {
        assert_eq!(super::snake_case("NewMessage"), "new_message");
        assert_eq!(super::snake_case("OnMessageSend"), "on_message_send");
        assert_eq!(super::snake_case("LogEnabled"), "log_enabled");
    }
}
