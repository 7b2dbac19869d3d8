//! Layered configuration: compiled-in defaults (`config/reachd.toml`), then an optional config
//! file, then `REACHD_*` environment variables (`__` separates nested keys), validated once at
//! startup.
//!
//! May depend on: figment, serde, domain (SID validation). Secrets are wrapped in [`Secret`] so
//! that `Debug` output and logs never contain them.

mod database;
pub use database::{
    DatabaseLocation, PostgresTarget, SslRequest, is_postgres_url, postgres_target, redact_url,
};
mod render;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Serialize};

pub use crate::domain::secret::Secret;

/// The commented defaults, also shipped as `config/reachd.toml`.
pub const DEFAULTS_TOML: &str = include_str!("../config/reachd.toml");

const ENV_PREFIX: &str = "REACHD_";

/// Keys whose environment values are taken verbatim as strings (figment would otherwise turn an
/// all-digit token into a number).
const RAW_STRING_KEYS: [&str; 8] = [
    "listen",
    "cluster__node_id",
    "database",
    "public_url",
    "account_sid",
    "auth_token",
    "webhooks__proxy",
    "metrics__token",
];

/// Optional keys that hold numbers or booleans and are absent from the defaults (commented
/// out there): known to the environment provider all the same.
const OPTIONAL_VALUE_KEYS: [&str; 1] = ["presence__flush_interval_ms"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    pub workers: usize,
    /// Open connections the server accepts (shared out among the workers); more wait in the
    /// listen backlog.
    pub max_connections: usize,
    pub keep_alive_secs: u64,
    pub client_request_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub client_disconnect_timeout_ms: u64,
    pub shutdown_timeout_secs: u64,
    pub trust_forwarded_for: bool,
    pub client_cors_origins: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub failed_auth_burst: u32,
    pub failed_auth_per_minute: u32,
    pub sessions_per_identity: u32,
    pub subscriptions_per_socket: u32,
    pub subscriptions_per_identity: u32,
    pub client_write_burst: u32,
    pub client_writes_per_second: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub read_pool_size: u32,
    pub busy_timeout_ms: u64,
    pub max_batch: usize,
    /// SQLite: the write-ahead log size (MiB) at which the writer checkpoints it itself.
    pub wal_limit_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    pub ping_interval_ms: u64,
    pub session_ttl_ms: u64,
    pub offline_grace_ms: u64,
    /// Unset: derived from the TTL (see [`PresenceConfig::flush_interval_ms`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_interval_ms: Option<u64>,
}

impl PresenceConfig {
    /// How often pinged sessions' expiries are written: as configured, else the smaller of
    /// 2 s and a quarter of the session TTL (a stored expiry must stay well ahead of the
    /// flushes for a restart to resume the session).
    pub fn flush_interval_ms(&self) -> u64 {
        self.flush_interval_ms
            .unwrap_or_else(|| (self.session_ttl_ms / 4).clamp(1, 2_000))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointConfig {
    pub name: String,
    pub url: String,
    pub secret: Secret,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    pub concurrency: usize,
    pub native_timeout_ms: u64,
    pub allow_private_networks: bool,
    /// Keep response bodies from private addresses in the attempt log.
    pub store_private_responses: bool,
    /// An explicit HTTP(S) proxy for deliveries (`""` in a file or the environment: none).
    /// A Secret: its URL may carry credentials.
    pub proxy: Option<Secret>,
    pub retry_schedule_secs: Vec<u64>,
    pub twilio_retry_base_ms: u64,
    pub retention_days: u64,
    #[serde(default)]
    pub endpoints: Vec<WebhookEndpointConfig>,
}

/// `[metrics]`: the `/metrics` endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// When set, `/metrics` requires `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// How often the storage-derived gauges are read, off the request path.
    pub refresh_interval_ms: u64,
}

/// `[cluster]`: several nodes on one PostgreSQL database (ignored on SQLite).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name; empty in the file means generated at start (see [`Config::load`]).
    pub node_id: String,
    /// The lease a node renews every third of; a node that cannot renew for this long stops
    /// serving presence and another takes over its users.
    pub lease_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub database: PathBuf,
    pub public_url: Option<String>,
    pub account_sid: Option<String>,
    pub auth_token: Option<Secret>,
    pub log: String,
    pub log_format: LogFormat,
    pub http: HttpConfig,
    pub limits: LimitsConfig,
    pub storage: StorageConfig,
    pub presence: PresenceConfig,
    pub webhooks: WebhooksConfig,
    pub metrics: MetricsConfig,
    pub cluster: ClusterConfig,
}

/// The text `reachd init` writes: the commented defaults with fresh account credentials
/// filled in (so the account no longer depends on what the database generated), and the
/// PostgreSQL database URL when one is configured (`REACHD_DATABASE`).
pub fn init_file_text(account_sid: &str, auth_token: &str, postgres_url: Option<&str>) -> String {
    let header = "# reachd configuration — the compiled-in defaults.";
    let text = match postgres_url {
        Some(url) => DEFAULTS_TOML.replacen(
            "database = \"./data/reachd.db\"",
            &format!(
                "database = \"{}\"",
                url.replace('\\', "\\\\").replace('"', "\\\"")
            ),
            1,
        ),
        None => DEFAULTS_TOML.to_string(),
    };
    text.replacen(
        header,
        "# reachd configuration, written by `reachd init`. It holds the account's auth token:\n\
             # keep it readable by the server's user only.",
        1,
    )
    .replacen(
        "# account_sid = \"AC0123456789abcdef0123456789abcdef\"",
        &format!("account_sid = \"{account_sid}\""),
        1,
    )
    .replacen(
        "# auth_token = \"...\"",
        &format!("auth_token = \"{auth_token}\""),
        1,
    )
}

/// Why a configuration was refused; the CLI prints it and exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("configuration: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("configuration: file {0} not found")]
    MissingFile(PathBuf),
}

impl Config {
    /// Loads defaults, then `file` (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (used by tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file(path));
        }
        let vars = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        figment = figment.merge(EnvVars {
            vars,
            known: known_keys(),
        });
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.normalize();
        config.validate()?;
        Ok(config)
    }

    /// Treats empty strings as unset, so `REACHD_PUBLIC_URL=` clears a value; names an
    /// unnamed cluster node.
    fn normalize(&mut self) {
        if self.cluster.node_id.is_empty() {
            self.cluster.node_id = format!("node-{}", crate::domain::ids::random_hex(4));
        }
        if self.public_url.as_deref().is_some_and(str::is_empty) {
            self.public_url = None;
        }
        if self.account_sid.as_deref().is_some_and(str::is_empty) {
            self.account_sid = None;
        }
        if self
            .auth_token
            .as_ref()
            .is_some_and(|t| t.expose().is_empty())
        {
            self.auth_token = None;
        }
        if self
            .webhooks
            .proxy
            .as_ref()
            .is_some_and(|p| p.expose().is_empty())
        {
            self.webhooks.proxy = None;
        }
        if self
            .metrics
            .token
            .as_ref()
            .is_some_and(|t| t.expose().is_empty())
        {
            self.metrics.token = None;
        }
        if let Some(url) = &mut self.public_url {
            while url.ends_with('/') {
                url.pop();
            }
        }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        // Validated in `validate`; fall back to loopback for a hand-built Config.
        self.listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }
}

/// `REACHD_*` variables as a figment provider. Figment's own `Env` reads the process
/// environment; this one takes the variables it is given so that tests neither depend on nor
/// mutate the real environment, and it keeps [`RAW_STRING_KEYS`] as verbatim strings.
///
/// Variables that name no configuration key (`REACHD_CONFIG`, read by the CLI, or a wrapper's
/// own `REACHD_BIN`) are ignored; unknown keys in a config file are still refused.
struct EnvVars {
    vars: Vec<(String, String)>,
    known: Vec<String>,
}

impl figment::Provider for EnvVars {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("REACHD_* environment variable(s)")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (key, value) in &self.vars {
            let Some(stripped) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let lowered = stripped.to_ascii_lowercase();
            let path: Vec<&str> = lowered.split("__").collect();
            if path.iter().any(|part| part.is_empty()) || !self.known.contains(&lowered) {
                continue;
            }
            let parsed = if RAW_STRING_KEYS.contains(&lowered.as_str()) {
                figment::value::Value::from(value.clone())
            } else {
                value.parse().unwrap_or_else(|_| value.clone().into())
            };
            insert_path(&mut dict, &path, parsed);
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

/// Every configuration key as its environment spelling without the prefix, lowercased
/// (`presence__session_ttl_ms`): the keys of the defaults plus the optional top-level ones.
fn known_keys() -> Vec<String> {
    fn walk(prefix: &str, dict: &figment::value::Dict, out: &mut Vec<String>) {
        for (key, value) in dict {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}__{key}")
            };
            match value {
                figment::value::Value::Dict(_, child) => walk(&path, child, out),
                _ => out.push(path),
            }
        }
    }
    let mut out: Vec<String> = RAW_STRING_KEYS
        .iter()
        .chain(OPTIONAL_VALUE_KEYS.iter())
        .map(|k| k.to_string())
        .collect();
    if let Ok(data) = figment::Provider::data(&Toml::string(DEFAULTS_TOML)) {
        for dict in data.values() {
            walk("", dict, &mut out);
        }
    }
    out
}

fn insert_path(dict: &mut figment::value::Dict, path: &[&str], value: figment::value::Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_string(), value);
        }
        [head, rest @ ..] => {
            let entry = dict
                .entry((*head).to_string())
                .or_insert_with(|| figment::value::Dict::new().into());
            if let figment::value::Value::Dict(_, child) = entry {
                insert_path(child, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_validate() {
        let c = Config::load_from(None, env(&[])).expect("defaults are valid");
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.database, PathBuf::from("./data/reachd.db"));
        assert_eq!(c.presence.session_ttl_ms, 60_000);
        assert_eq!(
            (
                c.limits.client_write_burst,
                c.limits.client_writes_per_second
            ),
            (20, 10)
        );
        assert!(c.public_url.is_none());
        assert_eq!(c.log_format, LogFormat::Pretty);
    }

    #[test]
    fn the_init_file_loads_with_its_credentials_and_every_default() {
        let sid = "AC0123456789abcdef0123456789abcdef";
        let text = init_file_text(sid, "0123456789abcdef0123456789abcdef", None);
        let dir = std::env::temp_dir().join(format!("reachd-init-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("reachd.toml");
        std::fs::write(&path, &text).expect("write");
        let c = Config::load_from(Some(&path), env(&[])).expect("valid");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(c.account_sid.as_deref(), Some(sid));
        assert_eq!(
            c.auth_token.as_ref().map(|t| t.expose().to_string()),
            Some("0123456789abcdef0123456789abcdef".to_string())
        );
        assert_eq!(c.limits.sessions_per_identity, 100);
        assert_eq!(c.http.shutdown_timeout_secs, 30);
        assert!(text.contains("# Log level filter"), "comments are kept");
    }

    #[test]
    fn an_init_file_for_postgres_names_its_database() {
        let url = r#"postgres://reachd:se"cr\et@db:5432/reachd"#;
        let token = "0123456789abcdef0123456789abcdef";
        let text = init_file_text("AC0123456789abcdef0123456789abcdef", token, Some(url));
        let dir = std::env::temp_dir().join(format!("reachd-init-pg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("reachd.toml");
        std::fs::write(&path, &text).expect("write");
        let c = Config::load_from(Some(&path), env(&[])).expect("valid");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(c.database.to_string_lossy(), url);
        assert_eq!(c.cluster.lease_ms, 10_000);
        assert!(c.cluster.node_id.starts_with("node-"), "generated");
    }

    #[test]
    fn cors_origins_must_be_origins() {
        for bad in [
            "https://app.example/",
            "https://app.example/path",
            "app.example",
            "ftp://x",
        ] {
            let value = format!("[\"{bad}\"]");
            let refused =
                Config::load_from(None, env(&[("REACHD_HTTP__CLIENT_CORS_ORIGINS", &value)]));
            assert!(
                matches!(
                    refused,
                    Err(ConfigError::Invalid {
                        key: "http.client_cors_origins",
                        ..
                    })
                ),
                "{bad}: {refused:?}"
            );
        }
        let ok = Config::load_from(
            None,
            env(&[(
                "REACHD_HTTP__CLIENT_CORS_ORIGINS",
                "[\"https://app.example:8443\"]",
            )]),
        )
        .expect("an origin with a port is valid");
        assert_eq!(
            ok.http.client_cors_origins,
            vec!["https://app.example:8443"]
        );
    }

    #[test]
    fn environment_overrides_nested_keys_and_keeps_digit_strings() {
        let c = Config::load_from(
            None,
            env(&[
                ("REACHD_PRESENCE__SESSION_TTL_MS", "90000"),
                ("REACHD_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
                ("REACHD_AUTH_TOKEN", "01234567890123456789012345678901"),
                ("REACHD_LOG_FORMAT", "json"),
                ("REACHD_PUBLIC_URL", "https://reach.example.com/"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.presence.session_ttl_ms, 90_000);
        assert_eq!(
            c.auth_token.as_ref().map(Secret::expose),
            Some("01234567890123456789012345678901")
        );
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.public_url.as_deref(), Some("https://reach.example.com"));
    }

    #[test]
    fn invalid_values_are_refused_with_the_key_named() {
        let err = Config::load_from(None, env(&[("REACHD_LISTEN", "nonsense")])).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let err =
            Config::load_from(None, env(&[("REACHD_PRESENCE__SESSION_TTL_MS", "10")])).unwrap_err();
        assert!(err.to_string().contains("presence"), "{err}");
        let err = Config::load_from(None, env(&[("REACHD_LOG_FORMAT", "xml")])).unwrap_err();
        assert!(err.to_string().contains("log_format"), "{err}");
        let err = Config::load_from(None, env(&[("REACHD_ACCOUNT_SID", "AC1")])).unwrap_err();
        assert!(err.to_string().contains("auth_token"), "{err}");
        let err = Config::load_from(
            None,
            env(&[
                ("REACHD_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
                ("REACHD_AUTH_TOKEN", "0123456789abcdef0123456789abcde"),
            ]),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key: "auth_token", reason } if reason.contains("at least 32")),
            "{err}"
        );
    }

    #[test]
    fn unknown_environment_variables_are_ignored_but_unknown_file_keys_are_not() {
        let c = Config::load_from(
            None,
            env(&[("REACHD_CONFIG", "x.toml"), ("REACHD_BIN", "/bin/reachd")]),
        );
        assert!(c.is_ok(), "{c:?}");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").expect("write");
        let err = Config::load_from(Some(&file), env(&[])).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = Config::load_from(
            None,
            env(&[
                ("REACHD_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
                ("REACHD_AUTH_TOKEN", "supersecrettoken-0123456789abcdef"),
            ]),
        )
        .expect("valid");
        assert!(!format!("{c:?}").contains("supersecrettoken-0123456789abcdef"));
    }
}
