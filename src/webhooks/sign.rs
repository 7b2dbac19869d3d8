//! Webhook signatures: Twilio's `X-Twilio-Signature` (HMAC-SHA1 over the URL and the sorted
//! parameters, keyed by the account auth token; docs/twilio-compatibility.md §8.4) and the
//! Standard Webhooks `v1` signature (HMAC-SHA256 over `id.timestamp.body`, keyed by the
//! `whsec_` secret).
//!
//! May depend on: hmac, sha1, sha2, base64.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// `X-Twilio-Signature` of a form request: the full URL, then each parameter name in byte
/// order followed by each of its values sorted with duplicates removed.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut data = url.to_string();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    hmac_base64::<Hmac<Sha1>>(auth_token.as_bytes(), data.as_bytes())
}

/// `X-Twilio-Signature` of a JSON request: the URL with `bodySHA256=<hex>` appended, no params.
pub fn twilio_json_signature(auth_token: &str, url: &str, body: &[u8]) -> (String, String) {
    let digest: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let separator = if url.contains('?') { '&' } else { '?' };
    let signed_url = format!("{url}{separator}bodySHA256={digest}");
    let signature = twilio_signature(auth_token, &signed_url, &[]);
    (signed_url, signature)
}

/// `webhook-signature` value (`v1,<base64>`) for a Standard Webhooks secret (`whsec_…`).
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let mut data = format!("{id}.{timestamp}.").into_bytes();
    data.extend_from_slice(body);
    Some(format!("v1,{}", hmac_base64::<Hmac<Sha256>>(&key, &data)))
}

fn hmac_base64<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> String {
    match <M as hmac::digest::KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            STANDARD.encode(mac.finalize().into_bytes())
        }
        // HMAC accepts keys of any length; this arm cannot be reached.
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "test_auth_token_0123456789abcdef";
    const URL: &str = "https://hooks.example.com/twilio/chat?src=reach";

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn twilio_compat_vector_user_updated() {
        let params = pairs(&[
            ("EventType", "onUserUpdated"),
            ("AccountSid", &format!("AC{}", "a".repeat(32))),
            ("InstanceSid", &format!("IS{}", "b".repeat(32))),
            ("UserSid", &format!("US{}", "c".repeat(32))),
            ("Identity", "alice"),
            ("IsOnline", "true"),
            ("IsNotifiable", "false"),
            ("Source", "SDK"),
            ("RetryCount", "0"),
        ]);
        assert_eq!(
            twilio_signature(TOKEN, URL, &params),
            "N3QwwWGUtZgIEYFY3CwN1LcZLMk="
        );
    }

    #[test]
    fn twilio_compat_vector_sorted_without_duplicates() {
        let params = pairs(&[
            ("Filters", "b"),
            ("Filters", "a"),
            ("Filters", "a"),
            ("X", "1"),
        ]);
        assert_eq!(
            twilio_signature(TOKEN, URL, &params),
            "RBHy8eXvhE0LK+xK6j44+l68NM4="
        );
    }

    #[test]
    fn twilio_compat_vector_json_body() {
        let (url, signature) = twilio_json_signature(
            TOKEN,
            "https://hooks.example.com/es",
            br#"{"type":"com.twilio.conversations.user.updated"}"#,
        );
        assert_eq!(
            url,
            "https://hooks.example.com/es?bodySHA256=ce82dfeb737c11fd68c2390e94fef23b7c7cb45568404be730530f51102e964d"
        );
        assert_eq!(signature, "yEVDNd5+PjYghPacOHsLLwuraGo=");
    }

    #[test]
    fn standard_webhooks_signature_matches_the_spec_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let signature =
            standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(
            signature.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(standard_signature("whsec_!!!", "id", 1, b""), None);
    }
}
