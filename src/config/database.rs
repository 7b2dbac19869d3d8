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

#[cfg(test)]
mod tests {
    use super::*;

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
