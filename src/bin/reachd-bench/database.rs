//! The databases a bench run serves from: a scratch SQLite file per server (the default), or a
//! fresh database per server on a PostgreSQL server — one given by URL, or one the bench
//! starts itself with `tests/support/postgres.sh` (into a scratch folder, stopped and removed
//! at the end of the run).
//!
//! May depend on: std (processes, files), anyhow; `psql` and `tests/support/postgres.sh` at
//! run time.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// Where servers get their databases (`--database`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// A scratch SQLite file per server.
    Sqlite,
    /// A PostgreSQL server the bench starts and stops (`tests/support/postgres.sh`).
    StartPostgres,
    /// An existing PostgreSQL server (its URL names any database the bench may connect to
    /// for `CREATE DATABASE`).
    Postgres(String),
}

impl std::str::FromStr for Choice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sqlite" => Ok(Choice::Sqlite),
            "postgres" | "postgresql" => Ok(Choice::StartPostgres),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Choice::Postgres(url.to_string()))
            }
            other => Err(format!(
                "{other}: expected sqlite, postgres (start one) or a postgres:// URL"
            )),
        }
    }
}

/// Hands out databases; stops the PostgreSQL server it started when dropped.
pub struct Databases {
    scratch: PathBuf,
    /// The PostgreSQL server's URL (to its maintenance database), when on PostgreSQL.
    server: Option<String>,
    /// The folder of the PostgreSQL server this run started.
    started: Option<PathBuf>,
    created: Vec<String>,
}

fn postgres_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/postgres.sh")
}

impl Databases {
    /// Prepares `choice`; scratch files go under `scratch`.
    pub fn open(choice: &Choice, scratch: &Path) -> anyhow::Result<Databases> {
        let mut databases = Databases {
            scratch: scratch.to_path_buf(),
            server: None,
            started: None,
            created: Vec::new(),
        };
        match choice {
            Choice::Sqlite => {}
            Choice::Postgres(url) => databases.server = Some(url.clone()),
            Choice::StartPostgres => {
                let dir =
                    std::env::temp_dir().join(format!("reachd-bench-pg-{}", std::process::id()));
                let out = Command::new("bash")
                    .arg(postgres_script())
                    .arg("start")
                    .arg(&dir)
                    .output()
                    .context("running tests/support/postgres.sh")?;
                databases.started = Some(dir);
                anyhow::ensure!(
                    out.status.success(),
                    "starting PostgreSQL failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
                println!("reachd-bench: started PostgreSQL at {url}");
                databases.server = Some(url);
            }
        }
        Ok(databases)
    }

    pub fn is_postgres(&self) -> bool {
        self.server.is_some()
    }

    /// A new, empty database named after `name`: a file path, or a postgres:// URL.
    pub fn fresh(&mut self, name: &str) -> anyhow::Result<String> {
        let Some(server) = &self.server else {
            return Ok(self
                .scratch
                .join(format!("{name}.db"))
                .display()
                .to_string());
        };
        let database = format!("reachd_bench_{}_{name}", std::process::id()).replace('-', "_");
        psql(server, &format!("CREATE DATABASE {database}"))?;
        self.created.push(database.clone());
        Ok(with_database(server, &database))
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        if let Some(dir) = self.started.take() {
            let _ = Command::new("bash")
                .arg(postgres_script())
                .arg("stop")
                .arg(&dir)
                .output();
            let _ = std::fs::remove_dir_all(&dir);
        } else if let Some(server) = &self.server {
            // A server that outlives the run keeps no scratch databases.
            for database in &self.created {
                let _ = psql(server, &format!("DROP DATABASE IF EXISTS {database}"));
            }
        }
    }
}

fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .context("running psql (Debian package: postgresql-client)")?;
    anyhow::ensure!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `url` with its database (the last path segment) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (url, None),
    };
    let scheme_end = main.find("://").map_or(0, |i| i + 3);
    let authority_end = main[scheme_end..]
        .find('/')
        .map_or(main.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &main[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b"),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "b"),
            "postgresql://u:p@h/b?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "b"), "postgres://h:1/b");
    }

    #[test]
    fn choices_parse() {
        assert_eq!("sqlite".parse::<Choice>(), Ok(Choice::Sqlite));
        assert_eq!("postgres".parse::<Choice>(), Ok(Choice::StartPostgres));
        assert!("mysql://x".parse::<Choice>().is_err());
    }
}
