//! Cross-site request forgery guard. A browser that has opened `/dashboard` caches the
//! account's Basic credentials and attaches them to every later request to this server, also
//! to a form another site submits. So a state-changing request (any method but GET, HEAD and
//! OPTIONS) is refused with 403/20403 when the browser says it comes from another site:
//!
//! - `Sec-Fetch-Site` is `cross-site` or `same-site` (`same-origin` and `none` are fine), or
//! - `Origin` names an origin other than the server's own (`Origin: null` included). The own
//!   origin is the configured `public_url`'s, or the request's `Host` (with the port the
//!   Origin's scheme implies), so a deployment behind a proxy that rewrites `Host` should set
//!   `public_url`.
//!
//! Requests carrying neither header (twilio-python, twilio-node, curl, any server-side client)
//! pass. So do requests whose credentials a browser never attaches by itself — an access token
//! in `Authorization: Bearer` or `X-Twilio-Token` — and the whole client API (`/client/v1`),
//! which accepts nothing else: browser apps on other origins keep using it through CORS.
//!
//! This is a middleware rather than part of the Basic-auth extractor so that it also covers
//! handlers added later and answers before any body is read.
//!
//! May depend on: actix-web, url, api::{errors, state}.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, HOST, ORIGIN};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};

use super::errors::ApiError;
use super::state::AppState;

/// Twilio's "Forbidden" code, used for every refusal of this guard.
pub const CROSS_SITE_CODE: u32 = 20403;

/// Paths served only to access-token holders (never Basic credentials or cookies).
const TOKEN_ONLY_PREFIX: &str = "/client/v1/";

/// The middleware: refuses cross-site state-changing requests, passes everything else.
pub async fn refuse_cross_site(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let public_url = req
        .app_data::<web::Data<AppState>>()
        .and_then(|s| s.public_url.clone());
    if let Some(reason) = cross_site_reason(&req, public_url.as_deref()) {
        let error = ApiError::new(
            StatusCode::FORBIDDEN,
            CROSS_SITE_CODE,
            format!(
                "Cross-site request refused: {reason}. Send state-changing requests from this \
                 server's own origin, or from a server-side client (no Origin header)"
            ),
        );
        tracing::warn!(path = req.path(), %reason, "cross-site request refused");
        let response = error.error_response().map_into_right_body();
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// Why `req` is a forged cross-site request, or `None` when it may proceed.
fn cross_site_reason(req: &ServiceRequest, public_url: Option<&str>) -> Option<String> {
    if is_safe(req.method()) || req.path().starts_with(TOKEN_ONLY_PREFIX) || carries_token(req) {
        return None;
    }
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        let site = site.trim().to_ascii_lowercase();
        if site == "cross-site" || site == "same-site" {
            return Some(format!("the browser reports Sec-Fetch-Site: {site}"));
        }
    }
    let origin = headers.get(ORIGIN)?;
    let Ok(origin) = origin.to_str() else {
        return Some("the Origin header is not readable".to_string());
    };
    let host = headers.get(HOST).and_then(|v| v.to_str().ok());
    if same_origin(origin.trim(), public_url, host.or(req.uri().host())) {
        None
    } else {
        Some(format!(
            "Origin {} is not this server's origin",
            origin.trim()
        ))
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// An access token in a header: something a page must add itself, never ambient.
fn carries_token(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
    bearer || headers.contains_key("x-twilio-token")
}

/// `origin` (scheme://host[:port]) equals the configured public URL's origin, or names the
/// host and port the request was sent to. `null` and unparsable origins match nothing.
fn same_origin(origin: &str, public_url: Option<&str>, host: Option<&str>) -> bool {
    let Ok(origin) = url::Url::parse(origin) else {
        return false;
    };
    if !matches!(origin.scheme(), "http" | "https") || origin.host_str().is_none() {
        return false;
    }
    if let Some(public) = public_url.and_then(|p| url::Url::parse(p).ok())
        && public.origin() == origin.origin()
    {
        return true;
    }
    let Some(host) = host else {
        return false;
    };
    // The Host header, read with the Origin's scheme so that default ports compare equal.
    match url::Url::parse(&format!("{}://{}", origin.scheme(), host.trim())) {
        Ok(own) => {
            own.host_str() == origin.host_str()
                && own.port_or_known_default() == origin.port_or_known_default()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn reason(req: TestRequest) -> Option<String> {
        cross_site_reason(&req.to_srv_request(), None)
    }

    #[test]
    fn origins_match_by_scheme_host_and_effective_port() {
        assert!(same_origin("http://h:8080", None, Some("h:8080")));
        assert!(same_origin("http://h", None, Some("h:80")));
        assert!(same_origin("https://h", None, Some("h")));
        assert!(!same_origin("http://h:8081", None, Some("h:8080")));
        assert!(!same_origin("http://evil", None, Some("h")));
        assert!(!same_origin("null", None, Some("h")));
        assert!(!same_origin("http://evil", None, None));
        assert!(same_origin(
            "https://reach.example",
            Some("https://reach.example"),
            Some("10.0.0.1:8080")
        ));
        assert!(!same_origin(
            "http://reach.example",
            Some("https://reach.example"),
            Some("10.0.0.1:8080")
        ));
    }

    #[test]
    fn only_unsafe_browser_requests_from_elsewhere_are_refused() {
        let post = || {
            TestRequest::post()
                .uri("/chat/v2/Services")
                .insert_header((HOST, "h:1"))
        };
        assert_eq!(
            reason(post()),
            None,
            "no browser headers: a server-side client"
        );
        assert!(reason(post().insert_header((ORIGIN, "http://evil"))).is_some());
        assert!(reason(post().insert_header((ORIGIN, "null"))).is_some());
        assert!(reason(post().insert_header(("sec-fetch-site", "same-site"))).is_some());
        assert_eq!(
            reason(post().insert_header(("sec-fetch-site", "same-origin"))),
            None
        );
        assert_eq!(reason(post().insert_header((ORIGIN, "http://h:1"))), None);
        let get = TestRequest::get()
            .uri("/chat/v2/Services")
            .insert_header((ORIGIN, "http://evil"));
        assert_eq!(reason(get), None, "reads change nothing");
        let bearer = post()
            .insert_header((ORIGIN, "http://evil"))
            .insert_header((AUTHORIZATION, "Bearer abc"));
        assert_eq!(reason(bearer), None, "tokens are never ambient");
        let client = TestRequest::post()
            .uri("/client/v1/sessions?token=x")
            .insert_header((ORIGIN, "http://evil"));
        assert_eq!(reason(client), None, "the client API takes tokens only");
    }
}
