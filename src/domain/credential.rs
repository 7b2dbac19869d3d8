//! Push credentials (`CR…`, account level): APNs certificates, GCM/FCM keys. Secrets are
//! write-only: stored, never rendered.
//!
//! May depend on: domain::{ids, time, errors}.

use super::errors::{Error, Result};
use super::ids::{self, Prefix};
use super::time::Millis;

pub const MAX_CREDENTIAL_NAME: usize = 64;
/// Longest certificate, key or secret accepted, in bytes.
pub const MAX_SECRET: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialType {
    Apn,
    Gcm,
    Fcm,
}

impl CredentialType {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialType::Apn => "apn",
            CredentialType::Gcm => "gcm",
            CredentialType::Fcm => "fcm",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "apn" => Some(CredentialType::Apn),
            "gcm" => Some(CredentialType::Gcm),
            "fcm" => Some(CredentialType::Fcm),
            _ => None,
        }
    }
}

/// The write-only parts of a credential; `None` leaves a stored value as it is.
#[derive(Clone, Default, PartialEq)]
pub struct CredentialSecrets {
    pub certificate: Option<String>,
    pub private_key: Option<String>,
    pub api_key: Option<String>,
    pub secret: Option<String>,
}

impl std::fmt::Debug for CredentialSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialSecrets([redacted])")
    }
}

impl CredentialSecrets {
    fn validate(&self) -> Result<()> {
        for (param, value) in [
            ("Certificate", &self.certificate),
            ("PrivateKey", &self.private_key),
            ("ApiKey", &self.api_key),
            ("Secret", &self.secret),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_SECRET) {
                return Err(Error::invalid(
                    param,
                    format!("must be at most {MAX_SECRET} bytes"),
                ));
            }
        }
        Ok(())
    }
}

/// A credential as rendered (no secrets).
#[derive(Debug, Clone, PartialEq)]
pub struct Credential {
    pub sid: String,
    pub friendly_name: Option<String>,
    pub kind: CredentialType,
    pub sandbox: Option<bool>,
    pub date_created: Millis,
    pub date_updated: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewCredential {
    pub kind: CredentialType,
    pub friendly_name: Option<String>,
    pub sandbox: Option<bool>,
    pub secrets: CredentialSecrets,
}

impl NewCredential {
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.friendly_name)?;
        self.secrets.validate()
    }

    pub fn to_credential(&self, now: Millis) -> Credential {
        Credential {
            sid: ids::new_sid(Prefix::Credential),
            friendly_name: self.friendly_name.clone(),
            kind: self.kind,
            sandbox: self.sandbox,
            date_created: now,
            date_updated: now,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CredentialPatch {
    pub kind: Option<CredentialType>,
    pub friendly_name: Option<String>,
    pub sandbox: Option<bool>,
    pub secrets: CredentialSecrets,
}

impl CredentialPatch {
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.friendly_name)?;
        self.secrets.validate()
    }

    pub fn apply(&self, credential: &mut Credential, now: Millis) {
        if let Some(kind) = self.kind {
            credential.kind = kind;
        }
        if let Some(name) = &self.friendly_name {
            credential.friendly_name = Some(name.clone());
        }
        if let Some(sandbox) = self.sandbox {
            credential.sandbox = Some(sandbox);
        }
        credential.date_updated = now;
    }
}

fn validate_name(name: &Option<String>) -> Result<()> {
    match name {
        Some(n) if n.chars().count() > MAX_CREDENTIAL_NAME => Err(Error::invalid(
            "FriendlyName",
            format!("must be at most {MAX_CREDENTIAL_NAME} characters"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let s = CredentialSecrets {
            private_key: Some("TOPSECRET".into()),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("TOPSECRET"));
    }

    #[test]
    fn names_longer_than_64_are_refused() {
        let c = NewCredential {
            kind: CredentialType::Apn,
            friendly_name: Some("x".repeat(65)),
            sandbox: None,
            secrets: CredentialSecrets::default(),
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("FriendlyName")
        );
    }
}
