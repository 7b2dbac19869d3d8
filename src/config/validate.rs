//! Validation of a loaded configuration: every value checked once at startup, the offending
//! key named in the error (the CLI prints it and exits with code 2).
//!
//! May depend on: url, domain, webhooks::sign (secret format).

use std::net::SocketAddr;

use super::{Config, ConfigError, LogFormat};
use crate::domain::ids::{self, Prefix};

/// Shortest auth token accepted: it is the account's password.
pub const MIN_AUTH_TOKEN_CHARS: usize = 32;
/// Largest `storage.wal_limit_mb` accepted (1 TiB).
pub const MAX_WAL_LIMIT_MB: u64 = 1 << 20;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
        self.listen
            .parse::<SocketAddr>()
            .map_err(|_| invalid("listen", "must be host:port, e.g. 127.0.0.1:8080"))?;
        if self.database.as_os_str().is_empty() {
            return Err(invalid("database", "must be a file path"));
        }
        let database = self.database.to_string_lossy();
        match url_scheme(&database).as_deref() {
            None => {}
            Some("postgres" | "postgresql") => {
                let parsed = super::database::postgres_target(&database)
                    .and_then(|t| t.url.parse::<postgres::Config>().map_err(|e| e.to_string()));
                if let Err(e) = parsed {
                    return Err(invalid(
                        "database",
                        &format!("is not a valid PostgreSQL URL: {e}"),
                    ));
                }
            }
            Some(scheme) => return Err(invalid("database", &unsupported_database(scheme))),
        }
        if self.cluster.lease_ms < 1_000 {
            return Err(invalid("cluster.lease_ms", "must be at least 1000"));
        }
        if self.cluster.node_id.len() > 64
            || !self
                .cluster
                .node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                "cluster.node_id",
                "must be at most 64 letters, digits, '-', '_' or '.'",
            ));
        }
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url)
                .map_err(|_| invalid("public_url", "must be an absolute http(s) URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
                return Err(invalid(
                    "public_url",
                    "must be an absolute http(s) URL without query",
                ));
            }
        }
        match (&self.account_sid, &self.auth_token) {
            (Some(sid), Some(_)) if !ids::is_sid(sid, Prefix::Account) => {
                return Err(invalid(
                    "account_sid",
                    "must be AC followed by 32 hex digits",
                ));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "auth_token",
                    "account_sid and auth_token must be set together",
                ));
            }
            _ => {}
        }
        if !(100..=3_600_000).contains(&self.metrics.refresh_interval_ms) {
            return Err(invalid(
                "metrics.refresh_interval_ms",
                "must be between 100 and 3600000",
            ));
        }
        if let Some(token) = &self.auth_token
            && token.expose().chars().count() < MIN_AUTH_TOKEN_CHARS
        {
            return Err(ConfigError::Invalid {
                key: "auth_token",
                reason: format!(
                    "must be at least {MIN_AUTH_TOKEN_CHARS} characters (32 random hex digits, \
                     as `reachd init` writes, will do)"
                ),
            });
        }
        if self.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        if self.http.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be positive"));
        }
        if self.http.client_request_timeout_ms == 0
            || self.http.request_timeout_ms == 0
            || self.http.shutdown_timeout_secs == 0
        {
            return Err(invalid(
                "http",
                "client_request_timeout_ms, request_timeout_ms and shutdown_timeout_secs must be positive",
            ));
        }
        for origin in &self.http.client_cors_origins {
            let valid = origin == "*"
                || url::Url::parse(origin).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.path() == "/"
                        && !origin.ends_with('/')
                        && u.query().is_none()
                });
            if !valid {
                return Err(ConfigError::Invalid {
                    key: "http.client_cors_origins",
                    reason: format!(
                        "{origin:?} is not an origin: use scheme://host[:port] (no path) or \"*\""
                    ),
                });
            }
        }
        let l = &self.limits;
        if l.failed_auth_burst == 0
            || l.failed_auth_per_minute == 0
            || l.sessions_per_identity == 0
            || l.subscriptions_per_socket == 0
            || l.subscriptions_per_identity == 0
            || l.client_write_burst == 0
            || l.client_writes_per_second == 0
        {
            return Err(invalid("limits", "every limit must be positive"));
        }
        if self.storage.read_pool_size == 0 || self.storage.max_batch == 0 {
            return Err(invalid(
                "storage",
                "read_pool_size and max_batch must be positive",
            ));
        }
        if !(1..=MAX_WAL_LIMIT_MB).contains(&self.storage.wal_limit_mb) {
            return Err(invalid(
                "storage.wal_limit_mb",
                &format!("must be between 1 and {MAX_WAL_LIMIT_MB}"),
            ));
        }
        if !matches!(self.log_format, LogFormat::Pretty | LogFormat::Json) {
            return Err(invalid("log_format", "must be pretty or json"));
        }
        let w = &self.webhooks;
        if w.concurrency == 0 || w.native_timeout_ms == 0 || w.retention_days == 0 {
            return Err(invalid(
                "webhooks",
                "concurrency, native_timeout_ms and retention_days must be positive",
            ));
        }
        if let Some(proxy) = &w.proxy {
            // The reason never quotes the URL: it may carry credentials.
            let valid = url::Url::parse(proxy.expose())
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !valid {
                return Err(invalid(
                    "webhooks.proxy",
                    "must be an http:// or https:// proxy URL, or \"\" for none",
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for e in &w.endpoints {
            let bad = |reason: &str| ConfigError::Invalid {
                key: "webhooks.endpoints",
                reason: format!("{}: {reason}", e.name),
            };
            if e.name.is_empty() || !names.insert(e.name.clone()) {
                return Err(bad("each endpoint needs a unique name"));
            }
            crate::domain::service::validate_webhook_url("url", &e.url)
                .map_err(|_| bad("url must be an absolute http(s) URL"))?;
            if crate::webhooks::sign::standard_signature(e.secret.expose(), "id", 0, b"").is_none()
                || !e.secret.expose().starts_with("whsec_")
            {
                return Err(bad("secret must be whsec_ followed by base64"));
            }
            if let Some(types) = &e.event_types {
                crate::domain::webhook::validate_event_types(types)
                    .map_err(|err| bad(&err.to_string()))?;
            }
        }
        let p = &self.presence;
        if p.flush_interval_ms
            .is_some_and(|f| f == 0 || f >= p.session_ttl_ms)
        {
            return Err(invalid(
                "presence.flush_interval_ms",
                "must be positive and below presence.session_ttl_ms (leave it unset to derive \
                 it from the TTL)",
            ));
        }
        if p.ping_interval_ms == 0 || p.session_ttl_ms <= p.ping_interval_ms {
            return Err(invalid(
                "presence",
                "session_ttl_ms must be greater than ping_interval_ms, which must be positive",
            ));
        }
        Ok(())
    }
}

/// The scheme of a database setting written as a URL (`postgres://…`, `sqlite:…`), if it is
/// one: such a value is never a file path (it would create a folder named `postgres:`).
fn url_scheme(database: &str) -> Option<String> {
    let (scheme, rest) = database.split_once(':')?;
    let is_scheme = scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (is_scheme && (rest.starts_with("//") || scheme.eq_ignore_ascii_case("sqlite")))
        .then(|| scheme.to_ascii_lowercase())
}

/// Why a database URL is refused, by name (the URL itself may hold a password: not echoed).
fn unsupported_database(scheme: &str) -> String {
    match scheme {
        "sqlite" => "must be a plain file path (e.g. ./data/reachd.db), not a sqlite: URL".into(),
        other => format!(
            "names an unsupported database ({other}:…); give the path of a SQLite file (e.g. \
             ./data/reachd.db) or a postgres:// URL"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_from(None, env.collect::<Vec<_>>())
    }

    #[test]
    fn the_wal_limit_defaults_to_64_mib_and_must_be_positive() {
        assert_eq!(load(&[]).expect("defaults").storage.wal_limit_mb, 64);
        let err = load(&[("REACHD_STORAGE__WAL_LIMIT_MB", "0")]).expect_err("refused");
        assert!(err.to_string().contains("storage.wal_limit_mb"), "{err}");
    }

    #[test]
    fn webhook_network_settings_default_to_no_proxy_and_no_private_responses() {
        let c = load(&[]).expect("defaults");
        assert!(c.webhooks.allow_private_networks);
        assert!(!c.webhooks.store_private_responses);
        assert!(c.webhooks.proxy.is_none());
        let c = load(&[
            (
                "REACHD_WEBHOOKS__PROXY",
                "http://user:pw@egress.internal:3128",
            ),
            ("REACHD_WEBHOOKS__STORE_PRIVATE_RESPONSES", "true"),
        ])
        .expect("a proxy");
        assert_eq!(
            c.webhooks.proxy.as_ref().map(|p| p.expose()),
            Some("http://user:pw@egress.internal:3128")
        );
        assert!(c.webhooks.store_private_responses);
        assert!(
            !format!("{c:?}").contains("pw@"),
            "the proxy URL is redacted"
        );
        for bad in ["socks5://egress:1080", "egress:3128", "http://"] {
            let err = load(&[("REACHD_WEBHOOKS__PROXY", bad)]).expect_err(bad);
            assert!(err.to_string().contains("webhooks.proxy"), "{bad}: {err}");
        }
    }
}
