//! Twilio list envelopes: `PageSize` / `Page` / `PageToken` in, `{<key>: [...], meta: {...}}`
//! out, with absolute `url`, `first_page_url`, `next_page_url` and `previous_page_url`.
//! `PageToken` is an opaque keyset cursor; `Page` is echoed; `Page>0` without a token is an
//! offset; `PageSize` is clamped to the resource's maximum.
//!
//! May depend on: actix-web, base64, serde_json, url, domain::page, api::{ctx, errors, params}.

use actix_web::HttpResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::ctx::Ctx;
use super::errors::{ApiError, ApiResult};
use super::params::Params;
use crate::domain::page::{Cursor, Page, PageRequest};

pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// A parsed list request.
#[derive(Debug, Clone, Copy)]
pub struct ListRequest {
    pub page: PageRequest,
    pub number: u64,
}

/// Reads the paging parameters of a list whose maximum page size is `max`.
pub fn list_request(params: &Params, max: u32) -> ApiResult<ListRequest> {
    let size = match params.int("PageSize")? {
        None => DEFAULT_PAGE_SIZE.min(max),
        Some(n) if n < 1 => return Err(ApiError::bad_param("PageSize", "must be at least 1")),
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX).min(max),
    };
    let number = match params.int("Page")? {
        None => 0,
        Some(n) if n < 0 => return Err(ApiError::bad_param("Page", "must not be negative")),
        Some(n) => n as u64,
    };
    let cursor = match params.get("PageToken").filter(|t| !t.is_empty()) {
        Some(token) => decode_cursor(token)
            .ok_or_else(|| ApiError::bad_param("PageToken", "is not a token this server issued"))?,
        None => Cursor::Offset(number.saturating_mul(u64::from(size))),
    };
    Ok(ListRequest {
        page: PageRequest { cursor, size },
        number,
    })
}

/// An opaque page token for `cursor` (also used by the native API).
pub fn encode_cursor(cursor: Cursor) -> String {
    let raw = match cursor {
        Cursor::After(k) => format!("a{k}"),
        Cursor::Before(k) => format!("b{k}"),
        Cursor::Offset(o) => format!("o{o}"),
    };
    format!("PT{}", URL_SAFE_NO_PAD.encode(raw))
}

/// The cursor of a token issued by [`encode_cursor`].
pub fn decode_cursor(token: &str) -> Option<Cursor> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token.strip_prefix("PT")?).ok()?).ok()?;
    let (kind, number) = raw.split_at_checked(1)?;
    match kind {
        "a" => number.parse().ok().map(Cursor::After),
        "b" => number.parse().ok().map(Cursor::Before),
        "o" => number.parse().ok().map(Cursor::Offset),
        _ => None,
    }
}

/// One list endpoint: its path under the mount, envelope key and the filters to repeat in
/// every paging URL.
pub struct Listing<'a> {
    pub path: &'a str,
    pub key: &'a str,
    pub filters: Vec<(&'a str, String)>,
}

impl Listing<'_> {
    fn page_url(&self, ctx: &Ctx, size: u32, number: u64, cursor: Option<Cursor>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.filters {
            query.append_pair(k, v);
        }
        query.append_pair("PageSize", &size.to_string());
        query.append_pair("Page", &number.to_string());
        if let Some(c) = cursor {
            query.append_pair("PageToken", &encode_cursor(c));
        }
        ctx.url(&format!("{}?{}", self.path, query.finish()))
    }

    /// The 200 envelope for `page`, each item rendered by `render`.
    pub fn respond<T>(
        &self,
        ctx: &Ctx,
        request: &ListRequest,
        page: &Page<T>,
        render: impl Fn(&T) -> Value,
    ) -> HttpResponse {
        let size = request.page.size;
        let number = request.number;
        let current = match request.page.cursor {
            Cursor::Offset(_) => None,
            other => Some(other),
        };
        let next = match (page.has_more_after, page.last_key()) {
            (true, Some(last)) => {
                Some(self.page_url(ctx, size, number + 1, Some(Cursor::After(last))))
            }
            _ => None,
        };
        let previous = match (page.has_more_before && number > 0, page.first_key()) {
            (true, Some(first)) => {
                Some(self.page_url(ctx, size, number - 1, Some(Cursor::Before(first))))
            }
            _ => None,
        };
        let items: Vec<Value> = page.items.iter().map(|(_, item)| render(item)).collect();
        HttpResponse::Ok().json(json!({
            self.key: items,
            "meta": {
                "page": number,
                "page_size": size,
                "first_page_url": self.page_url(ctx, size, 0, None),
                "previous_page_url": previous,
                "url": self.page_url(ctx, size, number, current),
                "next_page_url": next,
                "key": self.key,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn page_size_is_clamped_and_validated() {
        assert_eq!(list_request(&params(&[]), 100).expect("ok").page.size, 50);
        assert_eq!(
            list_request(&params(&[("PageSize", "5000")]), 100)
                .expect("ok")
                .page
                .size,
            100
        );
        for bad in ["0", "-1", "x"] {
            let e = list_request(&params(&[("PageSize", bad)]), 100).unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.contains("PageSize"));
        }
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        for c in [Cursor::After(42), Cursor::Before(7), Cursor::Offset(100)] {
            assert_eq!(decode_cursor(&encode_cursor(c)), Some(c));
        }
        assert!(list_request(&params(&[("PageToken", "PTnope!")]), 50).is_err());
        let r = list_request(&params(&[("Page", "2"), ("PageSize", "10")]), 50).expect("ok");
        assert_eq!(r.page.cursor, Cursor::Offset(20));
    }
}
