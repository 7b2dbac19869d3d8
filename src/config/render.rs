//! `reachd check-config`'s output: the effective configuration as TOML that can be saved and
//! used as a config file. Secrets are never printed: a secret setting that is set is left out
//! and named in a comment (so a saved copy never carries a placeholder as a real value —
//! `auth_token = "[redacted]"` would rotate the account's token); the account's SID goes with
//! its token, so a saved copy serves the database's stored account. Webhook endpoint secrets,
//! which are required fields, show as `[redacted]` and must be filled in before use.
//!
//! May depend on: serde, toml.

use super::Config;

/// What a required secret is printed as.
pub const REDACTED: &str = "[redacted]";

/// Optional secret settings, as dotted paths.
const SECRET_KEYS: [&[&str]; 3] = [
    &["auth_token"],
    &["metrics", "token"],
    &["webhooks", "proxy"],
];

impl Config {
    /// The effective configuration as a TOML document, secrets left out.
    pub fn to_redacted_toml(&self) -> Result<String, toml::ser::Error> {
        let mut value = toml::Value::try_from(self)?;
        let mut hidden: Vec<String> = SECRET_KEYS
            .iter()
            .filter(|path| remove(&mut value, path))
            .map(|path| path.join("."))
            .collect();
        if hidden.iter().any(|k| k == "auth_token") && remove(&mut value, &["account_sid"]) {
            hidden.insert(0, "account_sid".to_string());
        }
        if let super::DatabaseLocation::Postgres(url) = self.database_location()
            && let Some(table) = value.as_table_mut()
        {
            let shown = super::redact_url(&url);
            if shown != url {
                // The URL's password, replaced by `***`: fill it in before use.
                hidden.push("the database URL's password".to_string());
            }
            table.insert("database".into(), toml::Value::String(shown));
        }
        if let Some(endpoints) = value
            .get_mut("webhooks")
            .and_then(|w| w.get_mut("endpoints"))
            .and_then(toml::Value::as_array_mut)
        {
            for endpoint in endpoints.iter_mut().filter_map(toml::Value::as_table_mut) {
                endpoint.insert("secret".into(), toml::Value::String(REDACTED.into()));
            }
        }
        let mut out = String::from(
            "# reachd's effective configuration (defaults, then the config file, then REACHD_*).\n",
        );
        if !hidden.is_empty() {
            out.push_str(&format!(
                "# Set but not shown (secrets): {}. Without them this file serves the\n\
                 # database's stored account; add them back to set them.\n",
                hidden.join(", ")
            ));
        }
        if self.presence.flush_interval_ms.is_none() {
            out.push_str(&format!(
                "# presence.flush_interval_ms is unset: derived from the TTL, {} ms.\n",
                self.presence.flush_interval_ms()
            ));
        }
        out.push('\n');
        out.push_str(&toml::to_string_pretty(&value)?);
        Ok(out)
    }
}

/// Removes the value at `path`; whether there was one.
fn remove(value: &mut toml::Value, path: &[&str]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for key in parents {
        match at.get_mut(*key) {
            Some(next) => at = next,
            None => return false,
        }
    }
    at.as_table_mut()
        .and_then(|table| table.remove(*last))
        .is_some()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_output_loads_back_as_the_same_configuration_without_its_secrets() {
        let env = [
            ("REACHD_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
            (
                "REACHD_AUTH_TOKEN",
                "a-very-secret-auth-token-0123456789abcdef",
            ),
            ("REACHD_PRESENCE__SESSION_TTL_MS", "2000"),
            ("REACHD_PRESENCE__PING_INTERVAL_MS", "500"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let config = Config::load_from(None, env).expect("valid");
        let text = config.to_redacted_toml().expect("render");
        assert!(!text.contains("a-very-secret"), "{text}");
        assert!(!text.contains("AC0123456789abcdef"), "{text}");
        assert!(
            text.contains("not shown (secrets): account_sid, auth_token"),
            "{text}"
        );
        assert!(text.contains("derived from the TTL, 500 ms"), "{text}");
        assert!(!text.contains("default."), "no Debug dump: {text}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("effective.toml");
        std::fs::write(&path, &text).expect("write");
        let reloaded = Config::load_from(Some(&path), Vec::new()).expect("loads back");
        assert_eq!(reloaded.presence.session_ttl_ms, 2_000);
        assert_eq!(reloaded.presence.flush_interval_ms(), 500);
        assert_eq!(reloaded.listen, config.listen);
        assert!(reloaded.auth_token.is_none() && reloaded.account_sid.is_none());
    }

    #[test]
    fn a_database_urls_password_is_not_shown() {
        let env = [(
            "REACHD_DATABASE",
            "postgres://reachd:hunter2-secret@db.internal:5432/reachd",
        )]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let config = Config::load_from(None, env.to_vec()).expect("valid");
        let text = config.to_redacted_toml().expect("render");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("database = \"postgres://reachd:***@db.internal:5432/reachd\""),
            "{text}"
        );
        assert!(text.contains("the database URL's password"), "{text}");
    }
}
