//! Twilio-style SIDs (a two-letter prefix and 32 lowercase hex digits) and secrets.
//!
//! May depend on: rand.

use rand::RngCore;

/// The resource a SID names, by its two-letter prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Account,
    Service,
    User,
    Binding,
    Credential,
    Role,
    ApiKey,
    MessagingService,
}

impl Prefix {
    pub const fn as_str(self) -> &'static str {
        match self {
            Prefix::Account => "AC",
            Prefix::Service => "IS",
            Prefix::User => "US",
            Prefix::Binding => "BS",
            Prefix::Credential => "CR",
            Prefix::Role => "RL",
            Prefix::ApiKey => "SK",
            Prefix::MessagingService => "MG",
        }
    }
}

/// A fresh random SID with the given prefix, lowercase as Twilio issues them.
pub fn new_sid(prefix: Prefix) -> String {
    format!("{}{}", prefix.as_str(), random_hex(16))
}

/// `count` random bytes.
pub fn random_bytes(count: usize) -> Vec<u8> {
    let mut buf = vec![0u8; count];
    rand::rng().fill_bytes(&mut buf);
    buf
}

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    random_bytes(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// True when `value` is `prefix` followed by 32 hex digits (either case, as Twilio's patterns
/// accept).
pub fn is_sid(value: &str, prefix: Prefix) -> bool {
    value.len() == 34
        && value.starts_with(prefix.as_str())
        && value.as_bytes()[2..].iter().all(u8::is_ascii_hexdigit)
}

/// A SID with its hex digits lowercased (as stored); other strings are returned unchanged.
pub fn normalize(value: &str) -> String {
    match value.get(..2) {
        Some(prefix) if value.len() == 34 && value.is_char_boundary(2) => {
            format!("{prefix}{}", value[2..].to_ascii_lowercase())
        }
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_sids_match_their_pattern() {
        for prefix in [Prefix::Service, Prefix::User, Prefix::ApiKey] {
            let sid = new_sid(prefix);
            assert!(is_sid(&sid, prefix), "{sid}");
            assert_eq!(
                sid,
                sid.to_ascii_lowercase().replacen(
                    &prefix.as_str().to_ascii_lowercase(),
                    prefix.as_str(),
                    1
                )
            );
        }
        assert_ne!(new_sid(Prefix::User), new_sid(Prefix::User));
    }

    #[test]
    fn is_sid_rejects_wrong_prefix_length_and_digits() {
        let good = format!("IS{}", "a".repeat(32));
        assert!(is_sid(&good, Prefix::Service));
        assert!(is_sid(&format!("IS{}", "A".repeat(32)), Prefix::Service));
        assert!(!is_sid(&good, Prefix::User));
        assert!(!is_sid(&format!("IS{}", "a".repeat(31)), Prefix::Service));
        assert!(!is_sid(&format!("IS{}", "g".repeat(32)), Prefix::Service));
        assert!(!is_sid("IS", Prefix::Service));
    }
}
