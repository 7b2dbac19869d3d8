//! Request parameters the Twilio way: the query string plus, on POST, a form body (repeated
//! keys for lists, dotted keys for nested settings, `+` as space) or a JSON object (for the
//! native API). Typed getters name the parameter in their 400 errors.
//!
//! May depend on: actix-web, serde_html_form, serde_json, futures-util, api::errors.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::Method;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::StreamExt;

use super::errors::ApiError;
use super::state::AppState;

/// Most values one repeated parameter may carry.
pub const MAX_LIST_VALUES: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Params { pairs }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A required non-empty value.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::missing_param(name))
    }

    /// An optional string; an empty value counts as given (it may clear a field).
    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_string)
    }

    /// An optional string where empty means "clear": `Some(None)`.
    pub fn clearable(&self, name: &str) -> Option<Option<String>> {
        self.get(name).map(|v| {
            if v.is_empty() {
                None
            } else {
                Some(v.to_string())
            }
        })
    }

    /// Every value of a repeated parameter (`Key=a&Key=b`), bounded.
    pub fn list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let values: Vec<String> = self
            .pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect();
        if values.len() > MAX_LIST_VALUES {
            return Err(ApiError::bad_param(
                name,
                &format!("at most {MAX_LIST_VALUES} values"),
            ));
        }
        Ok(values)
    }

    /// A repeated parameter, or `None` when absent.
    pub fn opt_list(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        let values = self.list(name)?;
        Ok(if values.is_empty() {
            None
        } else {
            Some(values)
        })
    }

    /// `true`/`false`, case-insensitively.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|v| {
                parse_bool(v).ok_or_else(|| ApiError::bad_param(name, "must be true or false"))
            })
            .transpose()
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| ApiError::bad_param(name, "must be an integer"))
            })
            .transpose()
    }

    /// Every `(key, value)` whose key starts with `prefix`.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.pairs
            .iter()
            .filter_map(move |(k, v)| k.strip_prefix(prefix).map(|rest| (rest, v.as_str())))
    }
}

pub fn parse_bool(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("true") {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Decodes `a=1&b=2&b=3` (`+` is a space).
/// Invalid UTF-8 is refused rather than stored as U+FFFD. Checking the whole decoded input is
/// enough: separators are ASCII, so it is valid exactly when every key and value is.
pub fn parse_form(input: &[u8], what: &str) -> Result<Vec<(String, String)>, ApiError> {
    let invalid =
        || ApiError::bad_param(what, "is not valid form encoding (UTF-8, percent-encoded)");
    let decoded: Vec<u8> = percent_encoding::percent_decode(input).collect();
    std::str::from_utf8(&decoded).map_err(|_| invalid())?;
    serde_html_form::from_bytes::<Vec<(String, String)>>(input).map_err(|_| invalid())
}

/// Flattens a JSON object into pairs: scalars become strings, arrays repeat their key (an
/// empty one, like `null`, gives one empty value), nested objects use dotted keys.
fn flatten_json(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_json(&key, v, out);
            }
        }
        // An empty array clears a list, like one empty form value.
        Value::Array(items) if items.is_empty() => out.push((prefix.to_string(), String::new())),
        Value::Array(items) => items.iter().for_each(|v| flatten_json(prefix, v, out)),
        // null clears a value, like an empty form field.
        Value::Null => out.push((prefix.to_string(), String::new())),
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// Reads the whole body, refusing more than `limit` bytes with 413.
pub async fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_param("body", "could not be read"))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl FromRequest for Params {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let mut pairs = parse_form(req.query_string().as_bytes(), "query string")?;
            if req.method() == Method::GET || req.method() == Method::HEAD {
                return Ok(Params { pairs });
            }
            let limit = req
                .app_data::<web::Data<AppState>>()
                .map_or(1 << 20, |s| s.max_body_bytes);
            let body = read_body(&req, &mut payload, limit).await?;
            let content_type = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            if content_type.starts_with("application/json") {
                let value: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|_| ApiError::bad_param("body", "is not valid JSON"))?;
                if !value.is_object() {
                    return Err(ApiError::bad_param("body", "must be a JSON object"));
                }
                flatten_json("", &value, &mut pairs);
            } else if !body.is_empty() {
                pairs.extend(parse_form(&body, "body")?);
            }
            Ok(Params { pairs })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_repeated_dotted_and_plus_keys() {
        let pairs = parse_form(
            b"FriendlyName=Probe+Svc&WebhookFilters=a&WebhookFilters=b&Notifications.NewMessage.Enabled=TRUE&Identity=alice%40example.com",
            "body",
        )
        .expect("valid");
        let p = Params::from_pairs(pairs);
        assert_eq!(p.get("FriendlyName"), Some("Probe Svc"));
        assert_eq!(p.list("WebhookFilters").expect("list"), vec!["a", "b"]);
        assert_eq!(
            p.bool("Notifications.NewMessage.Enabled").expect("bool"),
            Some(true)
        );
        assert_eq!(p.get("Identity"), Some("alice@example.com"));
    }

    #[test]
    fn typed_getters_name_the_parameter() {
        let p = Params::from_pairs(vec![
            ("ReachabilityEnabled".into(), "maybe".into()),
            ("PageSize".into(), "x".into()),
        ]);
        let e = p.bool("ReachabilityEnabled").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, 20001));
        assert!(e.message.contains("ReachabilityEnabled"));
        assert!(p.int("PageSize").unwrap_err().message.contains("PageSize"));
        assert!(
            p.required("Identity")
                .unwrap_err()
                .message
                .contains("Identity")
        );
    }

    #[test]
    fn json_objects_flatten_to_pairs() {
        let mut out = Vec::new();
        flatten_json(
            "",
            &serde_json::json!({"a": 1, "b": [true, "x"], "c": {"d": null, "e": "f"}, "g": []}),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "true".to_string()),
                ("b".to_string(), "x".to_string()),
                ("c.d".to_string(), String::new()),
                ("c.e".to_string(), "f".to_string()),
                ("g".to_string(), String::new()),
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_a_400() {
        assert_eq!(
            parse_form(b"a=%ff", "body").unwrap_err().status.as_u16(),
            400
        );
    }
}
