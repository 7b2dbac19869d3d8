//! What the `database` setting names: a SQLite file path (the default) or a PostgreSQL server
//! (`postgres://` or `postgresql://` URL), and how to show it without its password.
//!
//! May depend on: std, url.

use super::Config;

/// The backend a configuration names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    Sqlite(std::path::PathBuf),
    /// A libpq-style URL (may hold a password: never log it, use [`redact_url`]).
    Postgres(String),
}

impl Config {
    pub fn database_location(&self) -> DatabaseLocation {
        let text = self.database.to_string_lossy();
        if is_postgres_url(&text) {
            DatabaseLocation::Postgres(text.into_owned())
        } else {
            DatabaseLocation::Sqlite(self.database.clone())
        }
    }

    /// Where the database is, for messages and logs (a URL's password is hidden).
    pub fn database_description(&self) -> String {
        match self.database_location() {
            DatabaseLocation::Sqlite(path) => path.display().to_string(),
            DatabaseLocation::Postgres(url) => redact_url(&url),
        }
    }
}

/// Whether a configured `database` names a PostgreSQL server rather than a SQLite file.
pub fn is_postgres_url(database: &str) -> bool {
    let lower = database.get(..13).unwrap_or(database).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// A connection URL with its password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "a PostgreSQL URL".into(),
    }
}

/// How a PostgreSQL URL asks for TLS (libpq's `sslmode`; see `pg::tls` for what each means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslRequest {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A PostgreSQL URL split into the TLS parameters reachd handles itself (`sslmode`,
/// `sslrootcert`) and the rest, which the `postgres` crate parses (it knows neither
/// `verify-ca`/`verify-full` nor `sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresTarget {
    /// The URL without `sslmode` and `sslrootcert`.
    pub url: String,
    pub ssl: SslRequest,
    pub root_cert: Option<String>,
}

pub fn postgres_target(url: &str) -> Result<PostgresTarget, String> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("database URL: {e}"))?;
    let mut mode: Option<String> = None;
    let mut root_cert: Option<String> = None;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(k, v)| match &*k {
            "sslmode" => {
                mode = Some(v.into_owned());
                None
            }
            "sslrootcert" => {
                root_cert = Some(v.into_owned());
                None
            }
            _ => Some((k.into_owned(), v.into_owned())),
        })
        .collect();
    let url = if mode.is_none() && root_cert.is_none() {
        url.to_string()
    } else {
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        parsed.into()
    };
    let ssl = match mode.as_deref() {
        Some("disable") => SslRequest::Disable,
        None | Some("prefer") => SslRequest::Prefer,
        Some("require") => SslRequest::Require,
        Some("verify-ca") => SslRequest::VerifyCa,
        Some("verify-full") => SslRequest::VerifyFull,
        Some(other) => {
            return Err(format!(
                "database URL: sslmode={other} is not one of disable, prefer, require, \
                 verify-ca, verify-full"
            ));
        }
    };
    Ok(PostgresTarget {
        url,
        ssl,
        root_cert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_gives_up_its_tls_parameters_and_keeps_the_rest() {
        let t = postgres_target(
            "postgres://u:p@db:5432/x?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=a",
        )
        .expect("parses");
        assert_eq!(t.url, "postgres://u:p@db:5432/x?application_name=a");
        assert_eq!(t.ssl, SslRequest::VerifyFull);
        assert_eq!(t.root_cert.as_deref(), Some("/etc/ca.pem"));
        let t = postgres_target("postgres://db/x").expect("parses");
        assert_eq!(
            (t.url.as_str(), t.ssl),
            ("postgres://db/x", SslRequest::Prefer)
        );
        let e = postgres_target("postgres://db/x?sslmode=allow").expect_err("refused");
        assert!(e.contains("sslmode=allow"), "{e}");
    }

    #[test]
    fn urls_are_recognised_and_redacted() {
        assert!(is_postgres_url("postgres://u:p@localhost/db"));
        assert!(is_postgres_url("PostgreSQL://localhost/db"));
        assert!(!is_postgres_url("/var/lib/reachd/reachd.db"));
        assert!(!is_postgres_url("./postgres"));
        assert_eq!(
            redact_url("postgres://reachd:hunter2@db.internal:5432/reachd"),
            "postgres://reachd:***@db.internal:5432/reachd"
        );
        assert_eq!(
            redact_url("postgres://localhost/x"),
            "postgres://localhost/x"
        );
    }
}
