//! A chat user of one service: identity, profile, and the stored reachability state.
//!
//! May depend on: serde_json, domain::{chars, ids, time, errors, service}.

use super::errors::{Error, Result};
use super::ids::{self, Prefix};
use super::service::{validate_friendly_name, validate_sid};
use super::time::Millis;

/// Longest identity accepted, in bytes.
pub const MAX_IDENTITY: usize = 256;
/// Longest `Attributes` JSON accepted, in bytes (Twilio's limit is 16 KiB).
pub const MAX_ATTRIBUTES: usize = 16 * 1024;

/// Stored reachability: `None` means "unknown since reachability was (last) enabled".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reachability {
    pub is_online: Option<bool>,
    pub is_notifiable: Option<bool>,
    /// Grows by one with every event about the user.
    pub sequence: i64,
    /// Last activity (last ping or session end) when known.
    pub last_seen: Option<Millis>,
    /// When the user last came online, while online.
    pub online_since: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub sid: String,
    pub service_sid: String,
    pub identity: String,
    pub friendly_name: Option<String>,
    /// A JSON document, kept as the exact string the client sent.
    pub attributes: String,
    pub role_sid: Option<String>,
    pub joined_channels_count: i64,
    pub reachability: Reachability,
    pub date_created: Millis,
    pub date_updated: Millis,
}

/// How a path addresses a user: Twilio accepts the `US…` SID or the identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserKey {
    /// A value shaped like a user SID: look it up as a SID, then as an identity.
    SidOrIdentity(String),
    Identity(String),
}

impl UserKey {
    pub fn parse(value: &str) -> Self {
        if ids::is_sid(value, Prefix::User) {
            UserKey::SidOrIdentity(value.to_string())
        } else {
            UserKey::Identity(value.to_string())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewUser {
    pub identity: String,
    pub friendly_name: Option<String>,
    pub attributes: Option<String>,
    pub role_sid: Option<String>,
}

impl NewUser {
    pub fn validate(&self) -> Result<()> {
        validate_identity(&self.identity)?;
        validate_profile(&self.friendly_name, &self.attributes, &self.role_sid)
    }

    /// The stored user, with the service's default role when none was given.
    pub fn into_user(self, service_sid: &str, default_role: &str, now: Millis) -> User {
        User {
            sid: ids::new_sid(Prefix::User),
            service_sid: service_sid.to_string(),
            identity: self.identity,
            friendly_name: self.friendly_name,
            attributes: self.attributes.unwrap_or_else(|| "{}".to_string()),
            role_sid: Some(self.role_sid.unwrap_or_else(|| default_role.to_string())),
            joined_channels_count: 0,
            reachability: Reachability::default(),
            date_created: now,
            date_updated: now,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserPatch {
    pub friendly_name: Option<String>,
    pub attributes: Option<String>,
    pub role_sid: Option<String>,
}

impl UserPatch {
    pub fn validate(&self) -> Result<()> {
        validate_profile(&self.friendly_name, &self.attributes, &self.role_sid)
    }

    pub fn apply(&self, user: &mut User, now: Millis) {
        if let Some(name) = &self.friendly_name {
            user.friendly_name = Some(name.clone());
        }
        if let Some(attributes) = &self.attributes {
            user.attributes = attributes.clone();
        }
        if let Some(role) = &self.role_sid {
            user.role_sid = Some(role.clone());
        }
        user.date_updated = now;
    }
}

pub fn validate_identity(identity: &str) -> Result<()> {
    if identity.is_empty() {
        return Err(Error::MissingParam("Identity".into()));
    }
    if identity.len() > MAX_IDENTITY {
        return Err(Error::invalid(
            "Identity",
            format!("must be at most {MAX_IDENTITY} bytes"),
        ));
    }
    if let Some(c) = super::chars::first_hidden(identity) {
        return Err(Error::invalid(
            "Identity",
            format!(
                "must not contain control or invisible formatting characters (found U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

fn validate_profile(
    friendly_name: &Option<String>,
    attributes: &Option<String>,
    role_sid: &Option<String>,
) -> Result<()> {
    if let Some(name) = friendly_name {
        validate_friendly_name("FriendlyName", name)?;
    }
    if let Some(attributes) = attributes {
        validate_attributes(attributes)?;
    }
    if let Some(role) = role_sid {
        validate_sid("RoleSid", role, Prefix::Role)?;
    }
    Ok(())
}

/// `Attributes` must be a JSON document of bounded size.
pub fn validate_attributes(attributes: &str) -> Result<()> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(Error::invalid(
            "Attributes",
            format!("must be at most {MAX_ATTRIBUTES} bytes"),
        ));
    }
    serde_json::from_str::<serde_json::Value>(attributes)
        .map(|_| ())
        .map_err(|_| Error::invalid("Attributes", "must be valid JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_sid_shapes_and_identities() {
        let sid = format!("US{}", "0".repeat(32));
        assert_eq!(UserKey::parse(&sid), UserKey::SidOrIdentity(sid.clone()));
        assert_eq!(
            UserKey::parse("bob smith+1"),
            UserKey::Identity("bob smith+1".into())
        );
    }

    #[test]
    fn new_user_validation_names_parameters() {
        let base = NewUser {
            identity: "alice".into(),
            ..Default::default()
        };
        assert!(base.validate().is_ok());
        let missing = NewUser::default().validate().unwrap_err();
        assert_eq!(missing.to_string(), "Missing required parameter Identity");
        let bad_json = NewUser {
            attributes: Some("{nope".into()),
            ..base.clone()
        };
        assert!(
            bad_json
                .validate()
                .unwrap_err()
                .to_string()
                .contains("Attributes")
        );
        let bad_role = NewUser {
            role_sid: Some("IS1".into()),
            ..base.clone()
        };
        assert!(
            bad_role
                .validate()
                .unwrap_err()
                .to_string()
                .contains("RoleSid")
        );
        let long = NewUser {
            identity: "x".repeat(MAX_IDENTITY + 1),
            ..base
        };
        assert!(
            long.validate()
                .unwrap_err()
                .to_string()
                .contains("Identity")
        );
    }

    #[test]
    fn identities_with_bidi_zero_width_or_control_characters_are_refused() {
        for bad in ["admin\u{202E}nimda", "ali\u{200B}ce", "bob\u{2066}", "a\tb"] {
            let err = validate_identity(bad).unwrap_err().to_string();
            assert!(err.contains("Identity"), "{bad:?}: {err}");
            assert!(err.contains("U+"), "{bad:?}: {err}");
        }
        assert!(validate_identity("Zoë +1 (555) ☎").is_ok());
    }

    #[test]
    fn into_user_defaults_attributes_and_role() {
        let u = NewUser {
            identity: "a".into(),
            ..Default::default()
        }
        .into_user("IS1", "RL1", 5);
        assert_eq!(u.attributes, "{}");
        assert_eq!(u.role_sid.as_deref(), Some("RL1"));
        assert_eq!(u.reachability, Reachability::default());
    }
}
