//! Request parameters the Twilio way: the query string plus, on POST, a form body (repeated
//! keys for lists, dotted keys for nested settings, `+` as space) or a JSON object (for the
//! native API). Typed getters name the parameter in their 400 errors.
//!
//! Decoding is bounded by the body: a request's parameters hold at most [`MAX_PAIRS`] pairs,
//! and a JSON body flattens to at most [`FLAT_BYTES_PER_BODY_BYTE`] times its own size (an
//! array under a long nested key would otherwise copy that key once per element).
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
/// Most `(key, value)` pairs one request's query plus body may decode to.
pub const MAX_PAIRS: usize = 10 * MAX_LIST_VALUES;
/// Bytes of keys and values a JSON body may flatten to, per byte of body.
pub const FLAT_BYTES_PER_BODY_BYTE: usize = 4;
/// Flattened bytes always allowed, however small the body.
const MIN_FLAT_BYTES: usize = 64 * 1024;

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
    if input.iter().filter(|&&b| b == b'&').count() >= MAX_PAIRS {
        return Err(too_many_pairs(what));
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode(input).collect();
    std::str::from_utf8(&decoded).map_err(|_| invalid())?;
    serde_html_form::from_bytes::<Vec<(String, String)>>(input).map_err(|_| invalid())
}

fn too_many_pairs(what: &str) -> ApiError {
    ApiError::bad_param(
        what,
        &format!("holds more than {MAX_PAIRS} parameters (counting each list value)"),
    )
}

/// What flattening one JSON body may still produce: pairs, and bytes over every key built
/// (nested ones included, even when they lead nowhere) and every value copied.
#[derive(Debug)]
struct FlatBudget {
    pairs: usize,
    bytes: usize,
}

impl FlatBudget {
    /// The budget of a body of `body_len` bytes, when `used` pairs are already decoded.
    fn for_body(body_len: usize, used: usize) -> Self {
        FlatBudget {
            pairs: MAX_PAIRS.saturating_sub(used),
            bytes: body_len
                .saturating_mul(FLAT_BYTES_PER_BODY_BYTE)
                .max(MIN_FLAT_BYTES),
        }
    }

    /// Takes `bytes` and `pairs` from the budget, or refuses the body.
    fn spend(&mut self, bytes: usize, pairs: usize) -> Result<(), ApiError> {
        if pairs > self.pairs {
            return Err(too_many_pairs("body"));
        }
        if bytes > self.bytes {
            return Err(ApiError::bad_param(
                "body",
                &format!(
                    "expands to too many bytes of parameters (at most \
                     {FLAT_BYTES_PER_BODY_BYTE} per byte of body): repeat shorter keys"
                ),
            ));
        }
        self.pairs -= pairs;
        self.bytes -= bytes;
        Ok(())
    }
}

/// Flattens a JSON object into pairs: scalars become strings, arrays repeat their key (an
/// empty one, like `null`, gives one empty value), nested objects use dotted keys. Every key
/// built and pair pushed is paid for from `budget` before it is allocated.
fn flatten_json(
    prefix: &str,
    value: &serde_json::Value,
    out: &mut Vec<(String, String)>,
    budget: &mut FlatBudget,
) -> Result<(), ApiError> {
    use serde_json::Value;
    let mut push = |text: std::borrow::Cow<'_, str>, budget: &mut FlatBudget| {
        budget.spend(prefix.len() + text.len(), 1)?;
        out.push((prefix.to_string(), text.into_owned()));
        Ok(())
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    budget.spend(k.len(), 0)?;
                    k.clone()
                } else {
                    budget.spend(prefix.len() + 1 + k.len(), 0)?;
                    format!("{prefix}.{k}")
                };
                flatten_json(&key, v, out, budget)?;
            }
            Ok(())
        }
        // An empty array clears a list, like one empty form value.
        Value::Array(items) if items.is_empty() => push("".into(), budget),
        Value::Array(items) => items
            .iter()
            .try_for_each(|v| flatten_json(prefix, v, out, budget)),
        // null clears a value, like an empty form field.
        Value::Null => push("".into(), budget),
        Value::String(s) => push(s.as_str().into(), budget),
        other => push(other.to_string().into(), budget),
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
                refuse_nul(&pairs)?;
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
                let mut budget = FlatBudget::for_body(body.len(), pairs.len());
                flatten_json("", &value, &mut pairs, &mut budget)?;
            } else if !body.is_empty() {
                pairs.extend(parse_form(&body, "body")?);
            }
            refuse_nul(&pairs)?;
            Ok(Params { pairs })
        })
    }
}

/// Refuses a NUL character (U+0000) in any parameter, naming it: no stored text may hold one
/// (PostgreSQL's text cannot, and no identity, name or address needs one), so both backends
/// answer the same 400 instead of one storing it and the other failing.
fn refuse_nul(pairs: &[(String, String)]) -> Result<(), ApiError> {
    match pairs
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        Some((key, _)) if !key.contains('\0') => Err(ApiError::bad_param(
            key,
            "must not contain a NUL character (U+0000)",
        )),
        Some(_) => Err(ApiError::bad_param(
            "body",
            "holds a parameter name with a NUL character (U+0000)",
        )),
        None => Ok(()),
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
            &mut FlatBudget::for_body(100, 0),
        )
        .expect("within the budget");
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

    /// `{"k…": {"k…": [0, 0, …]}}`: a long nested key over a big array, as JSON text.
    fn nested_key_over_array(key_len: usize, depth: usize, items: usize) -> String {
        let key = "k".repeat(key_len);
        let array = vec!["0"; items].join(",");
        let open = format!("{{\"{key}\":").repeat(depth);
        format!("{open}[{array}]{}", "}".repeat(depth))
    }

    fn flatten_text(text: &str) -> Result<Vec<(String, String)>, ApiError> {
        let value: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
        let mut out = Vec::new();
        let mut budget = FlatBudget::for_body(text.len(), 0);
        flatten_json("", &value, &mut out, &mut budget).map(|()| out)
    }

    #[test]
    fn a_long_key_over_a_big_array_exceeds_the_byte_budget() {
        let body = nested_key_over_array(1000, 4, 5000);
        let err = flatten_text(&body).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (400, 20001));
        assert!(err.message.contains("body"), "{}", err.message);
        assert!(err.message.contains("bytes"), "{}", err.message);
    }

    #[test]
    fn deep_long_keys_are_charged_even_without_values() {
        // 100 levels of 2 KB keys: each level's key holds every key above it.
        let body = format!(
            "{}{{}}{}",
            format!("{{\"{}\":", "k".repeat(2000)).repeat(100),
            "}".repeat(100)
        );
        let value: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        let mut budget = FlatBudget::for_body(body.len(), 0);
        let err = flatten_json("", &value, &mut Vec::new(), &mut budget).unwrap_err();
        assert!(err.message.contains("bytes"), "{}", err.message);
    }

    #[test]
    fn more_pairs_than_the_limit_are_refused_in_json_and_forms() {
        let err = flatten_text(&nested_key_over_array(1, 1, MAX_PAIRS + 1)).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (400, 20001));
        assert!(err.message.contains("10000 parameters"), "{}", err.message);
        let ok = flatten_text(&nested_key_over_array(1, 1, MAX_PAIRS)).expect("at the limit");
        assert_eq!(ok.len(), MAX_PAIRS);
        let form = vec!["a=1"; MAX_PAIRS + 1].join("&");
        let err = parse_form(form.as_bytes(), "body").unwrap_err();
        assert!(err.message.contains("body"), "{}", err.message);
        let form = vec!["a=1"; MAX_PAIRS].join("&");
        assert_eq!(
            parse_form(form.as_bytes(), "body").expect("ok").len(),
            MAX_PAIRS
        );
    }

    #[test]
    fn ordinary_bodies_fit_the_budget() {
        let filters: Vec<String> = (0..MAX_LIST_VALUES).map(|i| format!("f{i}")).collect();
        let body = serde_json::json!({
            "WebhookFilters": filters,
            "Notifications": {"NewMessage": {"Enabled": true, "Template": "x".repeat(500)}},
        })
        .to_string();
        assert_eq!(
            flatten_text(&body).expect("fits").len(),
            MAX_LIST_VALUES + 2
        );
    }

    #[test]
    fn a_nul_character_is_refused_naming_its_parameter() {
        let pairs = vec![
            ("Identity".to_string(), "alice".to_string()),
            ("Endpoint".to_string(), "a\0b".to_string()),
        ];
        let err = refuse_nul(&pairs).expect_err("refused");
        assert_eq!((err.status.as_u16(), err.code), (400, 20001));
        assert!(err.message.contains("Endpoint"), "{}", err.message);
        assert!(refuse_nul(&pairs[..1]).is_ok());
        let bad_key = vec![("a\0".to_string(), "x".to_string())];
        assert!(refuse_nul(&bad_key).is_err());
    }

    #[test]
    fn invalid_utf8_is_a_400() {
        assert_eq!(
            parse_form(b"a=%ff", "body").unwrap_err().status.as_u16(),
            400
        );
    }
}
