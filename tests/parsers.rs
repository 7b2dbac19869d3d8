//! Property tests of the two parsers that read untrusted input before anything else does:
//! the request-parameter parser (`api::params`: form bodies, query strings, JSON bodies, through
//! the real actix extractor) and the access-token parser (`tokens::verify`, with `mint`).
//!
//! Properties: arbitrary input never panics and is either accepted or refused with a Twilio
//! error code; what a standard encoder writes is what the parser reads back (repeated keys in
//! order); invalid UTF-8 is refused; minted tokens verify to the grant they were minted with,
//! and any single-byte change to a valid token makes it invalid.

use std::collections::BTreeMap;

use actix_web::FromRequest;
use actix_web::test::TestRequest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use reachd::api::errors::ApiError;
use reachd::api::params::{Params, parse_form};
use reachd::tokens::{self, KeySecrets, TokenError};
use serde_json::{Value, json};

/// Cases per property (the proptest default); `PROPTEST_CASES` overrides it.
const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------------------------------------
// Parameters
// ------------------------------------------------------------------------------------------

/// Standard form encoding (what twilio-python and twilio-node send): `+` for space,
/// percent-escapes for everything outside the unreserved set.
fn encode(pairs: &[(String, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Every pair of `params`, in order.
fn all_pairs(params: &Params) -> Vec<(String, String)> {
    params
        .with_prefix("")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs the real extractor on a request.
fn extract(req: TestRequest) -> Result<Params, ApiError> {
    let (req, mut payload) = req.to_http_parts();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(Params::from_request(&req, &mut payload))
}

/// A refusal of input is always Twilio's generic 400/20001 naming a parameter.
fn assert_bad_request(e: &ApiError) {
    assert_eq!((e.status.as_u16(), e.code), (400, 20001), "{e}");
    assert!(e.message.starts_with("Invalid parameter "), "{e}");
}

/// NUL is refused in every parameter (its own property below): valid input never holds one.
fn without_nul(s: String) -> String {
    s.replace('\0', "\u{1}")
}

/// Strings with the characters form encoding must escape, non-ASCII text and plain words.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._-]{0,12}",
        "[ &=+%;?#/\\\\\"'.a-c]{0,12}",
        "\\PC{0,12}",
        any::<String>().prop_map(without_nul),
    ]
}

/// A non-empty key (a form field with an empty name is not a parameter).
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z][A-Za-z0-9.]{0,15}",
        "\\PC{1,8}",
        ".{1,8}".prop_map(without_nul)
    ]
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    // Few distinct keys, so repeated keys are common.
    let keys = prop::collection::vec(key(), 1..4);
    keys.prop_flat_map(|keys| {
        let n = keys.len();
        prop::collection::vec((0..n, text()), 0..12).prop_map(move |picks| {
            picks
                .into_iter()
                .map(|(i, v)| (keys[i].clone(), v))
                .collect()
        })
    })
}

/// Bytes that are not valid UTF-8 once percent-decoded: a stray continuation byte, a lead
/// byte without continuation, an overlong encoding, a surrogate, or a byte above F4.
fn bad_utf8_escape() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "%80",
        "%BF",
        "%C3",
        "%C3%28",
        "%C0%AF",
        "%ED%A0%80",
        "%F5%80%80%80",
        "%FF",
        "%E2%82",
    ])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_and_errors_are_400s(input in prop::collection::vec(any::<u8>(), 0..256)) {
        match parse_form(&input, "body") {
            Ok(pairs) => {
                // Accepted input decodes to valid UTF-8 as a whole.
                let decoded: Vec<u8> = percent_encoding::percent_decode(&input).collect();
                prop_assert!(std::str::from_utf8(&decoded).is_ok());
                prop_assert!(pairs.len() <= input.len() + 1);
            }
            Err(e) => assert_bad_request(&e),
        }
    }

    #[test]
    fn form_shaped_noise_never_panics(parts in prop::collection::vec(
        prop_oneof![
            Just("&".to_string()), Just("=".to_string()), Just("+".to_string()),
            Just("%".to_string()), Just("%2".to_string()), Just("%zz".to_string()),
            "%[0-9A-Fa-f]{2}", "[a-z]{1,3}", "\\PC{1,2}",
        ],
        0..40,
    )) {
        let input = parts.concat();
        if let Err(e) = parse_form(input.as_bytes(), "query string") {
            assert_bad_request(&e);
        }
    }

    #[test]
    fn encoded_pairs_round_trip_in_order(pairs in pairs()) {
        let encoded = encode(&pairs);
        let parsed = parse_form(encoded.as_bytes(), "body").expect("standard encoding parses");
        prop_assert_eq!(&parsed, &pairs);
        // Typed access agrees: `list` keeps every value of a repeated key, in order.
        let params = Params::from_pairs(parsed);
        for (k, _) in &pairs {
            let expected: Vec<String> =
                pairs.iter().filter(|(kk, _)| kk == k).map(|(_, v)| v.clone()).collect();
            if expected.len() <= reachd::api::params::MAX_LIST_VALUES {
                prop_assert_eq!(params.list(k).expect("list"), expected.clone());
            }
            prop_assert_eq!(params.get(k), expected.first().map(String::as_str));
        }
    }

    #[test]
    fn invalid_utf8_is_refused_not_replaced(
        pairs in pairs(),
        escape in bad_utf8_escape(),
        at in any::<prop::sample::Index>(),
    ) {
        let encoded = encode(&pairs);
        // Insert the escape at a position that does not split an existing escape.
        let boundaries: Vec<usize> = (0..=encoded.len())
            .filter(|&i| {
                encoded.is_char_boundary(i)
                    && !encoded[..i].ends_with('%')
                    && !(i >= 2 && encoded.as_bytes()[i - 2] == b'%')
            })
            .collect();
        let i = boundaries[at.index(boundaries.len())];
        let bad = format!("{}{escape}{}", &encoded[..i], &encoded[i..]);
        let e = parse_form(bad.as_bytes(), "body").expect_err("invalid UTF-8 is refused");
        assert_bad_request(&e);
        prop_assert!(e.message.contains("body"));
        // Raw (unescaped) invalid bytes are refused as well.
        let mut raw = encoded.clone().into_bytes();
        raw.insert(i, 0xFF);
        let e = parse_form(&raw, "body").expect_err("a raw 0xFF is refused");
        assert_bad_request(&e);
    }

    #[test]
    fn the_extractor_reads_query_then_form_body_in_order(query in pairs(), body in pairs()) {
        let uri = format!("/x?{}", encode(&query));
        let req = TestRequest::post()
            .uri(&uri)
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .set_payload(encode(&body));
        let params = extract(req).expect("valid request");
        let expected: Vec<_> = query.iter().chain(body.iter()).cloned().collect();
        prop_assert_eq!(all_pairs(&params), expected);
        // A GET ignores any body.
        let get = TestRequest::get().uri(&uri).set_payload(encode(&body));
        prop_assert_eq!(all_pairs(&extract(get).expect("valid GET")), query);
    }

    #[test]
    fn a_nul_anywhere_is_a_400_naming_its_parameter(
        name in "[A-Za-z][A-Za-z0-9]{0,10}",
        value in text(),
        at in any::<prop::sample::Index>(),
        json in any::<bool>(),
    ) {
        let chars: Vec<char> = value.chars().collect();
        let cut = at.index(chars.len() + 1);
        let poisoned: String = chars[..cut].iter().chain(['\0'].iter()).chain(chars[cut..].iter()).collect();
        let req = if json {
            TestRequest::post()
                .uri("/x")
                .insert_header(("content-type", "application/json"))
                .set_payload(serde_json::json!({ name.clone(): poisoned }).to_string())
        } else {
            TestRequest::post()
                .uri("/x")
                .insert_header(("content-type", "application/x-www-form-urlencoded"))
                .set_payload(encode(&[(name.clone(), poisoned)]))
        };
        let err = extract(req).expect_err("a NUL is refused");
        prop_assert_eq!((err.status.as_u16(), err.code), (400, 20001));
        prop_assert!(err.message.contains(&name), "{}", err.message);
    }

    #[test]
    fn arbitrary_bodies_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..300),
        content_type in prop::sample::select(vec![
            "application/x-www-form-urlencoded", "application/json",
            "application/json; charset=utf-8", "text/plain", "",
        ]),
    ) {
        let mut req = TestRequest::post().uri("/x").set_payload(body);
        if !content_type.is_empty() {
            req = req.insert_header(("content-type", content_type));
        }
        if let Err(e) = extract(req) {
            assert_bad_request(&e);
        }
    }

    #[test]
    fn json_objects_keep_repeated_values_in_order(
        object in prop::collection::btree_map(
            key(),
            prop_oneof![
                text().prop_map(Value::String),
                prop::collection::vec(text(), 0..5)
                    .prop_map(|v| Value::Array(v.into_iter().map(Value::String).collect())),
                any::<i64>().prop_map(Value::from),
                any::<bool>().prop_map(Value::from),
                Just(Value::Null),
            ],
            0..6,
        ),
    ) {
        let body = serde_json::to_vec(&object).expect("json");
        let req = TestRequest::post()
            .uri("/x")
            .insert_header(("content-type", "application/json"))
            .set_payload(body);
        let params = extract(req).expect("a JSON object is accepted");
        // Dotted keys of other entries could collide with a key containing a dot only through
        // nested objects, which this strategy does not generate: each key maps to its own values.
        let mut expected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (k, v) in &object {
            let values = match v {
                Value::String(s) => vec![s.clone()],
                // An empty array clears a list, like `null` and one empty form value.
                Value::Array(items) if items.is_empty() => vec![String::new()],
                Value::Array(items) => {
                    items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect()
                }
                Value::Null => vec![String::new()],
                other => vec![other.to_string()],
            };
            expected.insert(k, values);
        }
        for (k, values) in expected {
            prop_assert_eq!(params.list(k).expect("list"), values);
        }
    }

    #[test]
    fn json_that_is_not_an_object_is_a_400(value in prop_oneof![
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::String),
        prop::collection::vec(text(), 0..3).prop_map(|v| json!(v)),
        Just(Value::Null),
    ]) {
        let req = TestRequest::post()
            .uri("/x")
            .insert_header(("content-type", "application/json"))
            .set_payload(serde_json::to_vec(&value).expect("json"));
        let e = extract(req).expect_err("not an object");
        assert_bad_request(&e);
    }
}

// ------------------------------------------------------------------------------------------
// Access tokens
// ------------------------------------------------------------------------------------------

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const KEY: &str = "SK0123456789abcdef0123456789abcdef";
const SECRET: &str = "key-secret-for-property-tests-0123456789";
const SERVICE: &str = "IS0123456789abcdef0123456789abcdef";
const NOW: i64 = 1_750_000_000;

/// The Twilio codes a token refusal may carry.
const TOKEN_CODES: [u32; 8] = [20101, 20102, 20103, 20104, 20105, 20106, 20107, 20157];

struct OneKey;

impl KeySecrets for OneKey {
    fn secret(&self, key_sid: &str) -> Option<String> {
        (key_sid == KEY).then(|| SECRET.to_string())
    }
}

fn verify(token: &str) -> Result<tokens::ClientGrant, TokenError> {
    tokens::verify(token, ACCOUNT, &OneKey, NOW)
}

fn assert_token_refused(result: Result<tokens::ClientGrant, TokenError>, what: &str) {
    match result {
        Ok(grant) => panic!("{what} verified: {grant:?}"),
        Err(e) => assert!(TOKEN_CODES.contains(&e.code()), "{what}: code {}", e.code()),
    }
}

/// A valid identity: non-empty, at most 256 bytes, no control characters.
fn identity() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9@._-]{1,40}", "\\PC{1,30}"]
        .prop_filter("at most 256 bytes", |s| s.len() <= 256)
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::String),
        Just(json!(KEY)),
        Just(json!(ACCOUNT)),
        Just(json!(SERVICE)),
        Just(json!("HS256")),
        Just(json!(NOW)),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "alg",
                        "typ",
                        "cty",
                        "crit",
                        "iss",
                        "sub",
                        "exp",
                        "nbf",
                        "iat",
                        "grants",
                        "identity",
                        "chat",
                        "service_sid",
                        "endpoint_id",
                        "push_credential_sid",
                    ])
                    .prop_map(str::to_string),
                    text(),
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

/// Claims that almost verify: right key, account and times, with some parts replaced.
fn claims() -> impl Strategy<Value = Value> {
    (
        identity(),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
    )
        .prop_map(|(identity, grants, exp, nbf, extra)| {
            let mut claims = json!({
                "jti": format!("{KEY}-{NOW}"),
                "iss": KEY,
                "sub": ACCOUNT,
                "nbf": NOW,
                "exp": NOW + 3600,
                "grants": {"identity": identity, "chat": {"service_sid": SERVICE}},
            });
            if let Some(g) = grants {
                claims["grants"] = g;
            }
            if let Some(e) = exp {
                claims["exp"] = e;
            }
            if let Some(n) = nbf {
                claims["nbf"] = n;
            }
            if let Some(x) = extra {
                claims["x"] = x;
            }
            claims
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_strings_are_refused_with_a_twilio_code(token in prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_.-]{0,200}",
        "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,60}",
    ]) {
        assert_token_refused(verify(&token), "an arbitrary string");
    }

    #[test]
    fn arbitrary_json_parts_are_refused_with_a_twilio_code(
        header in json_value(),
        payload in json_value(),
        signature in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let token = format!(
            "{}.{}.{}",
            b64(&header),
            b64(&payload),
            URL_SAFE_NO_PAD.encode(signature)
        );
        assert_token_refused(verify(&token), "a token with a random signature");
    }

    #[test]
    fn correctly_signed_arbitrary_claims_never_panic(claims in claims(), header in prop::option::of(json_value())) {
        let mut h = json!({"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1"});
        if let Some(Value::Object(extra)) = header {
            for (k, v) in extra {
                h[k] = v;
            }
        }
        let signing_input = format!("{}.{}", b64(&h), b64(&claims));
        let signature = sign(SECRET.as_bytes(), signing_input.as_bytes());
        let token = format!("{signing_input}.{signature}");
        match verify(&token) {
            Ok(grant) => {
                // Only what the claims say can come out.
                prop_assert_eq!(Some(grant.identity.as_str()), claims["grants"]["identity"].as_str());
                prop_assert_eq!(grant.service_sid.as_str(), SERVICE);
                prop_assert_eq!(grant.key_sid.as_str(), KEY);
            }
            Err(e) => prop_assert!(TOKEN_CODES.contains(&e.code())),
        }
    }

    #[test]
    fn minted_tokens_verify_to_their_grant(
        identity in identity(),
        ttl in 1..=tokens::MAX_TTL_SECS,
        endpoint in prop::option::of("[a-z0-9:._-]{1,30}"),
    ) {
        let token = tokens::mint(ACCOUNT, KEY, SECRET, SERVICE, &identity, ttl, endpoint.as_deref(), NOW)
            .expect("mint");
        let grant = verify(&token).expect("a minted token verifies");
        prop_assert_eq!(grant.identity, identity);
        prop_assert_eq!(grant.service_sid.as_str(), SERVICE);
        prop_assert_eq!(grant.account_sid.as_str(), ACCOUNT);
        prop_assert_eq!(grant.key_sid.as_str(), KEY);
        prop_assert_eq!(grant.endpoint_id, endpoint);
        prop_assert_eq!(grant.expires_at, NOW + ttl);
        // Another account or an unknown key never accepts it.
        let other = tokens::verify(&token, "AC00000000000000000000000000000000", &OneKey, NOW);
        prop_assert_eq!(other.err(), Some(TokenError::InvalidIssuer));
    }

    #[test]
    fn any_single_byte_change_invalidates_a_token(
        identity in identity(),
        at in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let token = tokens::mint(ACCOUNT, KEY, SECRET, SERVICE, &identity, 3600, None, NOW)
            .expect("mint");
        prop_assert!(verify(&token).is_ok());
        let mut bytes = token.clone().into_bytes();
        let i = at.index(bytes.len());
        let replacement = if replacement == bytes[i] { replacement.wrapping_add(1) } else { replacement };
        bytes[i] = replacement;
        // A token arrives as text: a change that breaks UTF-8 cannot reach `verify`.
        if let Ok(mutated) = String::from_utf8(bytes) {
            assert_token_refused(verify(&mutated), &format!("byte {i} set to {replacement:#04x}"));
        }
    }
}

/// Every position of one token, each changed to every base64url character: exhaustive where
/// the property above samples (a changed last signature character must not slip through as
/// "only padding bits").
#[test]
fn every_position_changed_to_every_base64url_character_is_refused() {
    let token =
        tokens::mint(ACCOUNT, KEY, SECRET, SERVICE, "alice", 3600, None, NOW).expect("mint");
    verify(&token).expect("valid");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    let mut checked = 0;
    for i in 0..token.len() {
        for &c in alphabet {
            if token.as_bytes()[i] == c {
                continue;
            }
            let mut bytes = token.clone().into_bytes();
            bytes[i] = c;
            let mutated = String::from_utf8(bytes).expect("ascii");
            assert_token_refused(
                verify(&mutated),
                &format!("byte {i} set to {:?}", c as char),
            );
            checked += 1;
        }
    }
    assert!(checked > 10_000, "checked {checked} mutations");
}

/// The base64url HS256 signature of `message`, as a key holder computes it (jsonwebtoken's own
/// signer, so arbitrary claims can be signed).
fn sign(key: &[u8], message: &[u8]) -> String {
    jsonwebtoken::crypto::sign(
        message,
        &jsonwebtoken::EncodingKey::from_secret(key),
        jsonwebtoken::Algorithm::HS256,
    )
    .expect("sign")
}
