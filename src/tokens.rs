//! Twilio-format Access Tokens (the client SDK JWT): verification and minting.
//!
//! An Access Token is an HS256 JWT signed with the secret of an API key. Its `iss` is the key
//! SID (`SK…`), `sub` the account SID (`AC…`), and `grants` carries `identity` plus a `chat`
//! grant with `service_sid` (`IS…`) and optional `endpoint_id` / `push_credential_sid`
//! (docs/twilio-compatibility.md §9). Tokens minted by twilio-python (header `alg, cty, typ`;
//! payload with `nbf`) and by twilio-node (header `alg, typ, cty`; payload with `iat` and no
//! `nbf`) both verify. Failures map to Twilio's auth error codes 20101–20107 and 20157.
//!
//! Time checks use the `now` argument (never the system clock), with [`LEEWAY_SECS`] of slack
//! on both sides; the lifetime (`exp` minus `nbf`, `iat` or `now`) may not exceed
//! [`MAX_TTL_SECS`].
//!
//! [`VerifiedTokens`] keeps tokens already verified, re-checking what can change.
//!
//! May depend on: jsonwebtoken, serde, serde_json, thiserror, subtle, base64 (to read the
//! header and the unverified payload before the key is known), domain::chars (what an identity
//! may hold).

mod verified;

pub use verified::VerifiedTokens;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Map, Value};

/// Allowed clock skew, in seconds, for `exp` and `nbf`/`iat`.
pub const LEEWAY_SECS: u64 = 30;
/// Longest accepted token lifetime, in seconds.
pub const MAX_TTL_SECS: i64 = 24 * 3600;

/// The `cty` header Twilio's helper libraries set.
const CONTENT_TYPE: &str = "twilio-fpa;v=1";
/// Tokens longer than this are refused before any decoding.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest accepted identity, in bytes.
const MAX_IDENTITY_LEN: usize = 256;

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientGrant {
    /// `sub`: the account SID.
    pub account_sid: String,
    /// `iss`: the API key SID (`SK…`) whose secret signed the token.
    pub key_sid: String,
    /// `grants.identity`.
    pub identity: String,
    /// `grants.chat.service_sid` (`IS…`).
    pub service_sid: String,
    /// `grants.chat.endpoint_id`.
    pub endpoint_id: Option<String>,
    /// `grants.chat.push_credential_sid` (`CR…`).
    pub push_credential_sid: Option<String>,
    /// `exp`, unix seconds.
    pub expires_at: i64,
}

/// Why a token was refused; one variant per Twilio error code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// 20101: not a JWT (three base64url parts of JSON) or a malformed claim.
    #[error("Invalid Access Token")]
    InvalidToken,
    /// 20102: the header is unusable (an algorithm other than HS256, `crit`, bad `typ`).
    #[error("Invalid Access Token header")]
    InvalidHeader,
    /// 20103: `iss` is not a live API key, or `sub` is not the account.
    #[error("Invalid Access Token issuer/subject")]
    InvalidIssuer,
    /// 20104: `exp` is missing, invalid or in the past.
    #[error("Access Token expired or expiration date invalid")]
    Expired,
    /// 20105: `nbf` (or `iat`) is in the future.
    #[error("Access Token not yet valid")]
    NotYetValid,
    /// 20106: `grants.identity` or `grants.chat.service_sid` missing or invalid.
    #[error("Invalid Access Token grants")]
    InvalidGrants,
    /// 20106 too: `grants.identity` is a string but empty, too long, or holds control or
    /// invisible format characters (bidi overrides, zero-width spaces).
    #[error(
        "Invalid Access Token grants: identity must be 1 to 256 bytes without control or \
         invisible formatting characters"
    )]
    InvalidIdentity,
    /// 20107: the signature does not verify.
    #[error("Invalid Access Token signature")]
    InvalidSignature,
    /// 20157: the lifetime exceeds the 24 h maximum.
    #[error("Expiration Time Exceeds Maximum Time Allowed")]
    TtlExceeded,
    /// 20503: the API keys could not be read (the database is unreachable): the token may
    /// well be valid, so it is not refused as invalid — the caller answers 503, retry.
    #[error("Storage is unavailable; retry later")]
    KeysUnavailable,
}

impl TokenError {
    /// The Twilio error code.
    pub fn code(&self) -> u32 {
        match self {
            TokenError::InvalidToken => 20101,
            TokenError::InvalidHeader => 20102,
            TokenError::InvalidIssuer => 20103,
            TokenError::Expired => 20104,
            TokenError::NotYetValid => 20105,
            TokenError::InvalidGrants | TokenError::InvalidIdentity => 20106,
            TokenError::InvalidSignature => 20107,
            TokenError::TtlExceeded => 20157,
            TokenError::KeysUnavailable => 20503,
        }
    }
}

/// Looks up the secret of a live (not revoked) API key by SID; None when unknown or revoked.
pub trait KeySecrets {
    /// The key's secret, or None when the key is unknown or revoked.
    fn secret(&self, key_sid: &str) -> Option<String>;
    /// Like [`KeySecrets::secret`], telling a failed lookup (the keys could not be read) from
    /// an unknown key.
    fn lookup(&self, key_sid: &str) -> Result<Option<String>, KeysUnreadable> {
        Ok(self.secret(key_sid))
    }
}

/// The API keys could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysUnreadable;

/// Whether `s` is `prefix` followed by 32 hex digits.
fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34
        && s.starts_with(prefix)
        && s.as_bytes()[2..].iter().all(|b| b.is_ascii_hexdigit())
}

fn is_valid_identity(identity: &str) -> bool {
    !identity.is_empty()
        && identity.len() <= MAX_IDENTITY_LEN
        && crate::domain::chars::first_hidden(identity).is_none()
}

/// Base64url-decodes one JWT part into a JSON object.
fn decode_part(part: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::InvalidToken)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::InvalidToken),
    }
}

/// A NumericDate claim: absent → Ok(None); a number → Ok(Some(seconds)); otherwise Err.
fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, ()> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                match n.as_f64() {
                    // RFC 7519 NumericDate may carry a fraction; truncate it.
                    Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.trunc() as i64)),
                    _ => Err(()),
                }
            }
        }
        Some(_) => Err(()),
    }
}

/// An optional string grant field: absent, null or "" → None; a string → Some; else Err.
fn optional_string(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, TokenError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::InvalidGrants),
    }
}

fn map_jwt_error(err: &jsonwebtoken::errors::Error) -> TokenError {
    match err.kind() {
        // The header and payload were already decoded, so a base64 failure is the signature's.
        ErrorKind::InvalidSignature | ErrorKind::Base64(_) => TokenError::InvalidSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => TokenError::InvalidHeader,
        _ => TokenError::InvalidToken,
    }
}

/// Verifies `token` at time `now` (unix seconds) for `account_sid`.
pub fn verify(
    token: &str,
    account_sid: &str,
    keys: &dyn KeySecrets,
    now: i64,
) -> Result<ClientGrant, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::InvalidToken);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::InvalidToken);
    };

    // Header: only HS256, read before anything else so `alg: none` & co. get 20102.
    let header = decode_part(header_b64)?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "HS256" => {}
        _ => return Err(TokenError::InvalidHeader),
    }
    if let Some(typ) = header.get("typ")
        && !matches!(typ, Value::String(t) if t.eq_ignore_ascii_case("JWT"))
    {
        return Err(TokenError::InvalidHeader);
    }
    if header.contains_key("crit") {
        // We understand no extension, so RFC 7515 §4.1.11 says refuse.
        return Err(TokenError::InvalidHeader);
    }

    // The payload, decoded once: before the signature is checked only `iss` is read, to pick
    // the key that must have signed it.
    let unverified = decode_part(payload_b64)?;
    let key_sid = match unverified.get("iss") {
        Some(Value::String(iss)) if is_sid(iss, "SK") => iss.clone(),
        _ => return Err(TokenError::InvalidIssuer),
    };
    let secret = keys
        .lookup(&key_sid)
        .map_err(|_| TokenError::KeysUnavailable)?
        .ok_or(TokenError::InvalidIssuer)?;

    // Signature: HMAC-SHA256 over `header.payload`, compared in constant time by
    // jsonwebtoken's verifier. The header and the claims were decoded once, above; only an
    // authentic token gets past this point, so from here on every claim is authenticated.
    let signed_len = header_b64.len() + 1 + payload_b64.len();
    let verified = jsonwebtoken::crypto::verify(
        signature_b64,
        &token.as_bytes()[..signed_len],
        &DecodingKey::from_secret(secret.as_bytes()),
        Algorithm::HS256,
    )
    .map_err(|e| map_jwt_error(&e))?;
    if !verified {
        return Err(TokenError::InvalidSignature);
    }
    let claims = unverified;
    let sub = claims.get("sub").and_then(Value::as_str);
    if sub != Some(account_sid) {
        return Err(TokenError::InvalidIssuer);
    }

    // Time.
    let leeway = LEEWAY_SECS as i64;
    let exp = match numeric_claim(&claims, "exp") {
        Ok(Some(exp)) => exp,
        _ => return Err(TokenError::Expired),
    };
    let nbf = numeric_claim(&claims, "nbf").map_err(|()| TokenError::InvalidToken)?;
    let iat = numeric_claim(&claims, "iat").map_err(|()| TokenError::InvalidToken)?;
    // twilio-python sets `nbf`; twilio-node sets `iat` (and `nbf` only when asked).
    let start = nbf.or(iat);
    if exp.saturating_add(leeway) < now {
        return Err(TokenError::Expired);
    }
    if let Some(start) = start {
        if start > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
        if exp <= start {
            return Err(TokenError::Expired);
        }
    }
    if exp.saturating_sub(start.unwrap_or(now)) > MAX_TTL_SECS {
        return Err(TokenError::TtlExceeded);
    }

    // Grants. Other grants (video, voice, …) are ignored.
    let grants = match claims.get("grants") {
        Some(Value::Object(g)) => g,
        _ => return Err(TokenError::InvalidGrants),
    };
    let identity = match grants.get("identity") {
        Some(Value::String(id)) if is_valid_identity(id) => id.clone(),
        Some(Value::String(_)) => return Err(TokenError::InvalidIdentity),
        _ => return Err(TokenError::InvalidGrants),
    };
    let chat = match grants.get("chat") {
        Some(Value::Object(c)) => c,
        _ => return Err(TokenError::InvalidGrants),
    };
    let service_sid = match chat.get("service_sid") {
        Some(Value::String(s)) if is_sid(s, "IS") => s.clone(),
        _ => return Err(TokenError::InvalidGrants),
    };
    let endpoint_id = optional_string(chat, "endpoint_id")?;
    let push_credential_sid = optional_string(chat, "push_credential_sid")?;
    if let Some(cr) = &push_credential_sid
        && !is_sid(cr, "CR")
    {
        return Err(TokenError::InvalidGrants);
    }

    Ok(ClientGrant {
        account_sid: account_sid.to_owned(),
        key_sid,
        identity,
        service_sid,
        endpoint_id,
        push_credential_sid,
        expires_at: exp,
    })
}

#[derive(Serialize)]
struct MintChatGrant<'a> {
    service_sid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_id: Option<&'a str>,
}

/// Same key order as twilio-python: `chat` before `identity`.
#[derive(Serialize)]
struct MintGrants<'a> {
    chat: MintChatGrant<'a>,
    identity: &'a str,
}

/// Same key order as twilio-python.
#[derive(Serialize)]
struct MintClaims<'a> {
    jti: String,
    grants: MintGrants<'a>,
    iss: &'a str,
    exp: i64,
    nbf: i64,
    sub: &'a str,
}

/// Mints a token the way twilio-python's AccessToken + ChatGrant does (header alg HS256, typ JWT,
/// cty "twilio-fpa;v=1"; payload jti "<SK>-<now>", grants {identity, chat {service_sid, endpoint_id?, push_credential_sid?}}, iss, sub, nbf = now, exp = now + ttl).
///
/// Refuses what [`verify`] would refuse: a malformed `SK`/`AC`/`IS` SID, an invalid identity,
/// or a `ttl_secs` outside `1..=MAX_TTL_SECS`. No `push_credential_sid` is set.
#[allow(clippy::too_many_arguments)] // the signature is fixed by the callers
pub fn mint(
    account_sid: &str,
    key_sid: &str,
    key_secret: &str,
    service_sid: &str,
    identity: &str,
    ttl_secs: i64,
    endpoint_id: Option<&str>,
    now: i64,
) -> Result<String, TokenError> {
    if !is_sid(key_sid, "SK") || !is_sid(account_sid, "AC") {
        return Err(TokenError::InvalidIssuer);
    }
    if !is_sid(service_sid, "IS") {
        return Err(TokenError::InvalidGrants);
    }
    if !is_valid_identity(identity) {
        return Err(TokenError::InvalidIdentity);
    }
    if ttl_secs > MAX_TTL_SECS {
        return Err(TokenError::TtlExceeded);
    }
    if ttl_secs <= 0 {
        return Err(TokenError::Expired);
    }
    let mut header = Header::new(Algorithm::HS256);
    header.cty = Some(CONTENT_TYPE.to_owned());
    let claims = MintClaims {
        jti: format!("{key_sid}-{now}"),
        grants: MintGrants {
            chat: MintChatGrant {
                service_sid,
                endpoint_id: endpoint_id.filter(|e| !e.is_empty()),
            },
            identity,
        },
        iss: key_sid,
        exp: now.saturating_add(ttl_secs),
        nbf: now,
        sub: account_sid,
    };
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(key_secret.as_bytes()),
    )
    .map_err(|_| TokenError::InvalidToken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    const AC: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SK: &str = "SK11111111111111111111111111111111";
    const IS: &str = "ISbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const CR: &str = "CRcccccccccccccccccccccccccccccccc";
    const SECRET: &str = "s3cr3t-key-secret-0123456789abcd";

    /// Minted by twilio-python 9.13.0 with `time.time` pinned to 1795315134.25:
    /// `AccessToken(AC, SK, SECRET, identity="alice@example.com", ttl=3600)` plus
    /// `ChatGrant(service_sid=IS, endpoint_id="app:alice:device1", push_credential_sid=CR)`
    /// and `VideoGrant(room="room1")`.
    /// Header `{"alg":"HS256","cty":"twilio-fpa;v=1","typ":"JWT"}`; payload has `nbf`, no `iat`.
    const PY_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsImN0eSI6InR3aWxpby1mcGE7dj0xIiwidHlwIjoiSldUIn0.eyJqdGkiOiJTSzExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExLTE3OTUzMTUxMzQiLCJncmFudHMiOnsiY2hhdCI6eyJzZXJ2aWNlX3NpZCI6IklTYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmIiLCJlbmRwb2ludF9pZCI6ImFwcDphbGljZTpkZXZpY2UxIiwicHVzaF9jcmVkZW50aWFsX3NpZCI6IkNSY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2MifSwidmlkZW8iOnsicm9vbSI6InJvb20xIn0sImlkZW50aXR5IjoiYWxpY2VAZXhhbXBsZS5jb20ifSwiaXNzIjoiU0sxMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMSIsImV4cCI6MTc5NTMxODczNCwibmJmIjoxNzk1MzE1MTM0LCJzdWIiOiJBQ2FhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhIn0.z_sCRii7o5aon-SG4JAdSne0edN0QD6IZfttBS0MJ-Q";

    /// Minted by twilio-node 6.2.0 with `Date.now` pinned to 1795315134250:
    /// `new AccessToken(AC, SK, SECRET, {identity: "bob", ttl: 3600})` plus
    /// `new AccessToken.ChatGrant({serviceSid: IS})`.
    /// Header `{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1"}`; payload has `iat`, no `nbf`.
    const NODE_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImN0eSI6InR3aWxpby1mcGE7dj0xIn0.eyJqdGkiOiJTSzExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExLTE3OTUzMTUxMzQiLCJncmFudHMiOnsiaWRlbnRpdHkiOiJib2IiLCJjaGF0Ijp7InNlcnZpY2Vfc2lkIjoiSVNiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYiJ9fSwiaWF0IjoxNzk1MzE1MTM0LCJleHAiOjE3OTUzMTg3MzQsImlzcyI6IlNLMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTEiLCJzdWIiOiJBQ2FhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhIn0.Iym6rGolG67Fl1lnFfQ5V2uc3ubJDqBoNclRKBXq_9E";

    /// The same node token minted with `toJwt("HS512")` (twilio-node allows HS256/384/512).
    const NODE_TOKEN_HS512: &str = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCIsImN0eSI6InR3aWxpby1mcGE7dj0xIn0.eyJqdGkiOiJTSzExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExLTE3OTUzMTUxMzQiLCJncmFudHMiOnsiaWRlbnRpdHkiOiJib2IiLCJjaGF0Ijp7InNlcnZpY2Vfc2lkIjoiSVNiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYiJ9fSwiaWF0IjoxNzk1MzE1MTM0LCJleHAiOjE3OTUzMTg3MzQsImlzcyI6IlNLMTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTEiLCJzdWIiOiJBQ2FhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhIn0._8I7UWTP_cYvOsIAb5zIW2bLdgJEjQT_VxbD7rNzxjoha9qwLPYyHIaTYdehAfL2iuLPwHGBmxiDaQvl-bQhkA";

    /// `nbf`/`iat` of the fixtures.
    const FIXTURE_START: i64 = 1_795_315_134;
    /// `exp` of the fixtures.
    const FIXTURE_EXP: i64 = 1_795_318_734;
    /// A time inside the fixtures' window.
    const FIXTURE_NOW: i64 = FIXTURE_START + 600;

    struct Keys(HashMap<String, String>);

    impl KeySecrets for Keys {
        fn secret(&self, key_sid: &str) -> Option<String> {
            self.0.get(key_sid).cloned()
        }
    }

    fn keys() -> Keys {
        Keys(HashMap::from([(SK.to_owned(), SECRET.to_owned())]))
    }

    /// A key store where every key is revoked.
    struct Revoked;

    impl KeySecrets for Revoked {
        fn secret(&self, _key_sid: &str) -> Option<String> {
            None
        }
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// Signs arbitrary claims with `alg` and the Twilio `cty`.
    fn sign(claims: &Value, secret: &str, alg: Algorithm) -> String {
        let mut header = Header::new(alg);
        header.cty = Some(CONTENT_TYPE.to_owned());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    /// Python-shaped claims valid at `now`, with a one-hour lifetime.
    fn claims(now: i64) -> Value {
        json!({
            "jti": format!("{SK}-{now}"),
            "grants": {"identity": "alice", "chat": {"service_sid": IS}},
            "iss": SK, "sub": AC, "nbf": now, "exp": now + 3600,
        })
    }

    fn verify_claims(c: &Value, now: i64) -> Result<ClientGrant, TokenError> {
        verify(&sign(c, SECRET, Algorithm::HS256), AC, &keys(), now)
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn codes_are_twilios() {
        let all = [
            (TokenError::InvalidToken, 20101),
            (TokenError::InvalidHeader, 20102),
            (TokenError::InvalidIssuer, 20103),
            (TokenError::Expired, 20104),
            (TokenError::NotYetValid, 20105),
            (TokenError::InvalidGrants, 20106),
            (TokenError::InvalidIdentity, 20106),
            (TokenError::InvalidSignature, 20107),
            (TokenError::TtlExceeded, 20157),
        ];
        for (err, code) in all {
            assert_eq!(err.code(), code);
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn python_token_verifies() {
        let grant = verify(PY_TOKEN, AC, &keys(), FIXTURE_NOW).unwrap();
        assert_eq!(
            grant,
            ClientGrant {
                account_sid: AC.to_owned(),
                key_sid: SK.to_owned(),
                identity: "alice@example.com".to_owned(),
                service_sid: IS.to_owned(),
                endpoint_id: Some("app:alice:device1".to_owned()),
                push_credential_sid: Some(CR.to_owned()),
                expires_at: FIXTURE_EXP,
            }
        );
    }

    #[test]
    fn node_token_verifies() {
        let grant = verify(NODE_TOKEN, AC, &keys(), FIXTURE_NOW).unwrap();
        assert_eq!(
            grant,
            ClientGrant {
                account_sid: AC.to_owned(),
                key_sid: SK.to_owned(),
                identity: "bob".to_owned(),
                service_sid: IS.to_owned(),
                endpoint_id: None,
                push_credential_sid: None,
                expires_at: FIXTURE_EXP,
            }
        );
    }

    #[test]
    fn real_tokens_respect_their_window() {
        for token in [PY_TOKEN, NODE_TOKEN] {
            // Edges, with the leeway.
            assert!(verify(token, AC, &keys(), FIXTURE_START - 30).is_ok());
            assert!(verify(token, AC, &keys(), FIXTURE_EXP + 30).is_ok());
            assert_eq!(
                verify(token, AC, &keys(), FIXTURE_START - 31),
                Err(TokenError::NotYetValid)
            );
            assert_eq!(
                verify(token, AC, &keys(), FIXTURE_EXP + 31),
                Err(TokenError::Expired)
            );
        }
    }

    #[test]
    fn real_tokens_with_wrong_secret_fail_signature() {
        let other = Keys(HashMap::from([(
            SK.to_owned(),
            "not-the-secret".to_owned(),
        )]));
        for token in [PY_TOKEN, NODE_TOKEN] {
            assert_eq!(
                verify(token, AC, &other, FIXTURE_NOW),
                Err(TokenError::InvalidSignature)
            );
        }
    }

    #[test]
    fn real_node_hs512_token_is_refused_as_bad_header() {
        assert_eq!(
            verify(NODE_TOKEN_HS512, AC, &keys(), FIXTURE_NOW),
            Err(TokenError::InvalidHeader)
        );
    }

    #[test]
    fn mint_then_verify() {
        let token = mint(AC, SK, SECRET, IS, "carol", 3600, Some("app:carol:d1"), NOW).unwrap();
        let grant = verify(&token, AC, &keys(), NOW).unwrap();
        assert_eq!(
            grant,
            ClientGrant {
                account_sid: AC.to_owned(),
                key_sid: SK.to_owned(),
                identity: "carol".to_owned(),
                service_sid: IS.to_owned(),
                endpoint_id: Some("app:carol:d1".to_owned()),
                push_credential_sid: None,
                expires_at: NOW + 3600,
            }
        );
    }

    #[test]
    fn minted_token_has_python_shape() {
        let token = mint(AC, SK, SECRET, IS, "carol", 3600, None, NOW).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode_part(parts[0]).unwrap();
        assert_eq!(
            Value::Object(header),
            json!({"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1"})
        );
        let payload = decode_part(parts[1]).unwrap();
        assert_eq!(
            Value::Object(payload),
            json!({
                "jti": format!("{SK}-{NOW}"),
                "grants": {"chat": {"service_sid": IS}, "identity": "carol"},
                "iss": SK, "exp": NOW + 3600, "nbf": NOW, "sub": AC,
            })
        );
        // Key order follows twilio-python.
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert!(raw.starts_with(r#"{"jti":"#), "{raw}");
        assert!(raw.contains(r#""grants":{"chat":{"#), "{raw}");
    }

    #[test]
    fn mint_refuses_what_verify_would() {
        assert_eq!(
            mint(AC, SK, SECRET, IS, "admin\u{202E}", 60, None, NOW),
            Err(TokenError::InvalidIdentity)
        );
        assert_eq!(
            mint(AC, SK, SECRET, IS, "a", MAX_TTL_SECS + 1, None, NOW),
            Err(TokenError::TtlExceeded)
        );
        assert!(mint(AC, SK, SECRET, IS, "a", MAX_TTL_SECS, None, NOW).is_ok());
        assert_eq!(
            mint(AC, SK, SECRET, IS, "a", 0, None, NOW),
            Err(TokenError::Expired)
        );
        assert_eq!(
            mint(AC, SK, SECRET, IS, "", 60, None, NOW),
            Err(TokenError::InvalidIdentity)
        );
        assert_eq!(
            mint(AC, SK, SECRET, "IS123", "a", 60, None, NOW),
            Err(TokenError::InvalidGrants)
        );
        assert_eq!(
            mint(AC, "SKnope", SECRET, IS, "a", 60, None, NOW),
            Err(TokenError::InvalidIssuer)
        );
    }

    #[test]
    fn alg_none_is_bad_header() {
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims(NOW))
        );
        assert_eq!(
            verify(&token, AC, &keys(), NOW),
            Err(TokenError::InvalidHeader)
        );
        // Even with a signature part, and with the HS256 signature of the same payload.
        let real = sign(&claims(NOW), SECRET, Algorithm::HS256);
        let sig = real.rsplit('.').next().unwrap();
        let token = format!("{token}{sig}");
        assert_eq!(
            verify(&token, AC, &keys(), NOW),
            Err(TokenError::InvalidHeader)
        );
    }

    #[test]
    fn other_algorithms_are_bad_header() {
        for alg in [Algorithm::HS512, Algorithm::HS384] {
            let token = sign(&claims(NOW), SECRET, alg);
            assert_eq!(
                verify(&token, AC, &keys(), NOW),
                Err(TokenError::InvalidHeader)
            );
        }
        // RS256 / ES256 headers (signature irrelevant: refused before any key is used).
        for alg in ["RS256", "ES256", "PS256", "EdDSA", "hs256", ""] {
            let token = format!(
                "{}.{}.c2ln",
                b64(&json!({"alg": alg, "typ": "JWT"})),
                b64(&claims(NOW))
            );
            assert_eq!(
                verify(&token, AC, &keys(), NOW),
                Err(TokenError::InvalidHeader),
                "{alg}"
            );
        }
        // Missing alg, non-string alg.
        for header in [json!({"typ": "JWT"}), json!({"alg": 256})] {
            let token = format!("{}.{}.c2ln", b64(&header), b64(&claims(NOW)));
            assert_eq!(
                verify(&token, AC, &keys(), NOW),
                Err(TokenError::InvalidHeader)
            );
        }
    }

    #[test]
    fn header_typ_and_crit() {
        // Signs `claims(NOW)` under an arbitrary (HS256) header.
        let signed = |header: Value| {
            let h: Header = serde_json::from_value(header).unwrap();
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            let token = jsonwebtoken::encode(&h, &claims(NOW), &key).unwrap();
            verify(&token, AC, &keys(), NOW)
        };
        // No typ and no cty, or an extra `twr` (region): tolerated.
        assert!(signed(json!({"alg": "HS256"})).is_ok());
        assert!(signed(json!({"alg": "HS256", "typ": "JWT", "twr": "ie1"})).is_ok());
        assert_eq!(
            signed(json!({"alg": "HS256", "typ": "JWE"})),
            Err(TokenError::InvalidHeader)
        );
        assert_eq!(
            signed(json!({"alg": "HS256", "crit": ["exp"]})),
            Err(TokenError::InvalidHeader)
        );
    }

    #[test]
    fn unknown_key_is_bad_issuer() {
        let mut c = claims(NOW);
        c["iss"] = json!("SK22222222222222222222222222222222");
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidIssuer));
        for iss in [
            json!("SK1"),
            json!("AC11111111111111111111111111111111"),
            json!(5),
        ] {
            c["iss"] = iss;
            assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidIssuer));
        }
        c.as_object_mut().unwrap().remove("iss");
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidIssuer));
    }

    #[test]
    fn revoked_key_is_bad_issuer() {
        let token = sign(&claims(NOW), SECRET, Algorithm::HS256);
        assert_eq!(
            verify(&token, AC, &Revoked, NOW),
            Err(TokenError::InvalidIssuer)
        );
        assert_eq!(
            verify(PY_TOKEN, AC, &Revoked, FIXTURE_NOW),
            Err(TokenError::InvalidIssuer)
        );
    }

    /// A key store that cannot be read (its database is unreachable).
    struct Unreadable;

    impl KeySecrets for Unreadable {
        fn secret(&self, _key_sid: &str) -> Option<String> {
            None
        }
        fn lookup(&self, _key_sid: &str) -> Result<Option<String>, KeysUnreadable> {
            Err(KeysUnreadable)
        }
    }

    #[test]
    fn unreadable_keys_are_not_an_invalid_token() {
        let token = sign(&claims(NOW), SECRET, Algorithm::HS256);
        assert_eq!(
            verify(&token, AC, &Unreadable, NOW),
            Err(TokenError::KeysUnavailable)
        );
        assert_eq!(TokenError::KeysUnavailable.code(), 20503);
    }

    #[test]
    fn other_account_is_bad_issuer() {
        let other = "ACdddddddddddddddddddddddddddddddd";
        assert_eq!(
            verify(PY_TOKEN, other, &keys(), FIXTURE_NOW),
            Err(TokenError::InvalidIssuer)
        );
        let mut c = claims(NOW);
        c["sub"] = json!(other);
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidIssuer));
        c.as_object_mut().unwrap().remove("sub");
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidIssuer));
    }

    #[test]
    fn tampered_payload_is_bad_signature() {
        for (token, now) in [
            (PY_TOKEN.to_owned(), FIXTURE_NOW),
            (NODE_TOKEN.to_owned(), FIXTURE_NOW),
            (sign(&claims(NOW), SECRET, Algorithm::HS256), NOW),
        ] {
            let parts: Vec<&str> = token.split('.').collect();
            let mut payload: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            payload["grants"]["identity"] = json!("mallory");
            let forged = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
            assert_eq!(
                verify(&forged, AC, &keys(), now),
                Err(TokenError::InvalidSignature)
            );
        }
    }

    #[test]
    fn reencoded_header_is_bad_signature() {
        // The signature covers the header's bytes, not what they mean: the same header
        // written with other spacing must not verify under the original signature.
        let good = sign(&claims(NOW), SECRET, Algorithm::HS256);
        let (header, rest) = good.split_once('.').unwrap();
        let decoded = String::from_utf8(URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        let spaced = decoded.replace(':', ": ");
        assert_ne!(spaced, decoded);
        let forged = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(spaced));
        assert_eq!(
            verify(&forged, AC, &keys(), NOW),
            Err(TokenError::InvalidSignature)
        );
        assert!(verify(&good, AC, &keys(), NOW).is_ok());
    }

    #[test]
    fn extra_part_is_invalid_token() {
        let good = sign(&claims(NOW), SECRET, Algorithm::HS256);
        assert_eq!(
            verify(&format!("{good}.x"), AC, &keys(), NOW),
            Err(TokenError::InvalidToken)
        );
    }

    #[test]
    fn bad_signature() {
        let token = sign(&claims(NOW), "some-other-secret", Algorithm::HS256);
        assert_eq!(
            verify(&token, AC, &keys(), NOW),
            Err(TokenError::InvalidSignature)
        );
        // Flipped, truncated, empty and non-base64 signatures.
        let good = sign(&claims(NOW), SECRET, Algorithm::HS256);
        let (msg, sig) = good.rsplit_once('.').unwrap();
        let flipped: String = sig
            .chars()
            .enumerate()
            .map(|(i, ch)| {
                if i == 3 {
                    if ch == 'A' { 'B' } else { 'A' }
                } else {
                    ch
                }
            })
            .collect();
        for bad in [flipped.as_str(), &sig[..10], "", "!!!!"] {
            assert_eq!(
                verify(&format!("{msg}.{bad}"), AC, &keys(), NOW),
                Err(TokenError::InvalidSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn expired() {
        let c = claims(NOW - 7200); // exp = NOW - 3600
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::Expired));
        let mut c = claims(NOW - 3600);
        c["exp"] = json!(NOW - 31);
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::Expired));
    }

    #[test]
    fn missing_or_invalid_exp() {
        let mut c = claims(NOW);
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::Expired));
        c["exp"] = json!("tomorrow");
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::Expired));
        // exp not after nbf.
        c["exp"] = json!(NOW);
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::Expired));
        // A fractional exp is accepted (RFC 7519 NumericDate).
        c["exp"] = json!((NOW + 60) as f64 + 0.5);
        assert_eq!(verify_claims(&c, NOW).map(|g| g.expires_at), Ok(NOW + 60));
    }

    #[test]
    fn not_yet_valid() {
        let c = claims(NOW + 31);
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::NotYetValid));
        // Node shape: iat in the future, no nbf.
        let mut c = claims(NOW + 120);
        let obj = c.as_object_mut().unwrap();
        obj.remove("nbf");
        obj.insert("iat".into(), json!(NOW + 120));
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::NotYetValid));
        // Malformed nbf.
        let mut c = claims(NOW);
        c["nbf"] = json!("soon");
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidToken));
    }

    #[test]
    fn leeway_accepted_on_both_sides() {
        // nbf 30 s in the future.
        assert!(verify_claims(&claims(NOW + 30), NOW).is_ok());
        // iat 30 s in the future (node shape).
        let mut c = claims(NOW + 30);
        let obj = c.as_object_mut().unwrap();
        obj.remove("nbf");
        obj.insert("iat".into(), json!(NOW + 30));
        assert!(verify_claims(&c, NOW).is_ok());
        // exp 30 s in the past.
        let mut c = claims(NOW - 3600);
        c["exp"] = json!(NOW - 30);
        assert!(verify_claims(&c, NOW).is_ok());
    }

    #[test]
    fn ttl_over_24h() {
        let mut c = claims(NOW);
        c["exp"] = json!(NOW + 25 * 3600);
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::TtlExceeded));
        // Exactly 24 h is fine.
        c["exp"] = json!(NOW + MAX_TTL_SECS);
        assert!(verify_claims(&c, NOW).is_ok());
        // Node shape: measured from iat.
        let mut c = claims(NOW);
        let obj = c.as_object_mut().unwrap();
        obj.remove("nbf");
        obj.insert("iat".into(), json!(NOW - 3600));
        obj.insert("exp".into(), json!(NOW - 3600 + 25 * 3600));
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::TtlExceeded));
        // Neither nbf nor iat: measured from now.
        let obj = c.as_object_mut().unwrap();
        obj.remove("iat");
        obj.insert("exp".into(), json!(NOW + 25 * 3600));
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::TtlExceeded));
        c["exp"] = json!(NOW + 3600);
        assert!(verify_claims(&c, NOW).is_ok());
    }

    #[test]
    fn missing_identity() {
        let mut c = claims(NOW);
        c["grants"].as_object_mut().unwrap().remove("identity");
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidGrants));
        // Top-level identity does not count: it lives inside grants.
        c["identity"] = json!("alice");
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidGrants));
    }

    #[test]
    fn invalid_identity() {
        let long = "x".repeat(257);
        for bad in [
            "",
            &long,
            "a\nb",
            "a\u{7f}",
            "admin\u{202E}nimda",
            "ali\u{200B}ce",
            "\u{FEFF}bob",
        ] {
            let mut c = claims(NOW);
            c["grants"]["identity"] = json!(bad);
            assert_eq!(
                verify_claims(&c, NOW),
                Err(TokenError::InvalidIdentity),
                "{bad:?}"
            );
        }
        let mut c = claims(NOW);
        c["grants"]["identity"] = json!(42);
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidGrants));
        let mut c = claims(NOW);
        c["grants"]["identity"] = json!("x".repeat(256));
        assert!(verify_claims(&c, NOW).is_ok());
        c["grants"]["identity"] = json!("Zoë +1 (555) ☎");
        assert!(verify_claims(&c, NOW).is_ok());
    }

    #[test]
    fn missing_or_invalid_service_sid() {
        let mut c = claims(NOW);
        c["grants"]["chat"]
            .as_object_mut()
            .unwrap()
            .remove("service_sid");
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidGrants));
        for bad in [
            json!("IS123"),
            json!("CRbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
            json!("ISgggggggggggggggggggggggggggggggg"),
            json!(7),
        ] {
            c["grants"]["chat"]["service_sid"] = bad;
            assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidGrants));
        }
        // No chat grant at all, or no grants.
        let mut c = claims(NOW);
        c["grants"].as_object_mut().unwrap().remove("chat");
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidGrants));
        c.as_object_mut().unwrap().remove("grants");
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidGrants));
    }

    #[test]
    fn optional_chat_fields() {
        let mut c = claims(NOW);
        c["grants"]["chat"]["endpoint_id"] = json!("");
        c["grants"]["chat"]["push_credential_sid"] = json!(CR);
        c["grants"]["video"] = json!({"room": "r"});
        c["grants"]["chat"]["deployment_role_sid"] = json!("RLxx");
        let g = verify_claims(&c, NOW).unwrap();
        assert_eq!(g.endpoint_id, None);
        assert_eq!(g.push_credential_sid.as_deref(), Some(CR));
        c["grants"]["chat"]["push_credential_sid"] = json!("CR1");
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidGrants));
        c["grants"]["chat"]["push_credential_sid"] = json!(CR);
        c["grants"]["chat"]["endpoint_id"] = json!(["x"]);
        assert_eq!(verify_claims(&c, NOW), Err(TokenError::InvalidGrants));
    }

    #[test]
    fn garbage_is_invalid_token() {
        let h = b64(&json!({"alg": "HS256", "typ": "JWT"}));
        let p = b64(&claims(NOW));
        let not_json = URL_SAFE_NO_PAD.encode(b"not json");
        let array = b64(&json!([1, 2]));
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        for bad in [
            String::new(),
            "garbage".to_owned(),
            "a.b".to_owned(),
            "a.b.c".to_owned(),
            "a.b.c.d".to_owned(),
            format!("{h}.{p}"),
            format!("{h}.{p}.sig.extra"),
            format!("{not_json}.{p}.sig"),
            format!("{h}.{not_json}.sig"),
            format!("{array}.{p}.sig"),
            format!("{h}.{array}.sig"),
            format!("{h}=.{p}.sig"),
            format!("{h}.{p}=.sig"),
            huge,
        ] {
            assert_eq!(
                verify(&bad, AC, &keys(), NOW),
                Err(TokenError::InvalidToken),
                "{bad}"
            );
        }
    }
}
