//! Opening the database file: owner-only files (`db::files`), pragmas (WAL, foreign keys,
//! busy timeout), the baseline schema and numbered migrations tracked in `PRAGMA
//! user_version`, and the read pool.
//!
//! May depend on: rusqlite, r2d2, r2d2_sqlite, tracing, domain, db::files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use super::files;

/// The baseline schema (user_version 1).
const BASELINE: &str = include_str!("../../schema.sql");

/// Migrations after the baseline: `(version, sql)`, applied in order.
const MIGRATIONS: &[(u32, &str)] = &[
    (2, include_str!("../../migrations/0002_presence_events.sql")),
    (3, include_str!("../../migrations/0003_webhooks.sql")),
    (4, include_str!("../../migrations/0004_session_ends.sql")),
    (5, include_str!("../../migrations/0005_delivery_leases.sql")),
];

/// The schema version this binary writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(1, |(v, _)| *v)
}

#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub path: PathBuf,
    pub busy_timeout: Duration,
    pub read_pool_size: u32,
}

pub type ReadPool = r2d2::Pool<SqliteConnectionManager>;

/// An opened, migrated database: the writer's connection and the read pool.
pub struct Database {
    pub writer: Connection,
    pub reads: ReadPool,
    pub path: PathBuf,
}

impl Database {
    /// Creates the folder (0700) and file (0600) if needed, tightens looser existing files
    /// (with a warning), migrates, and opens the read pool.
    pub fn open(options: &OpenOptions) -> anyhow::Result<Self> {
        warn_tightened(&prepare_files(&options.path)?);
        let mut writer = open_connection(&options.path, options.busy_timeout)?;
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .context("enabling WAL")?;
        // The writer touches many index pages per batch: a larger page cache (16 MiB). It never
        // checkpoints itself: `db::checkpoint` does, on its own thread; the WAL file is cut
        // back to 64 MiB after each reset.
        writer
            .pragma_update(None, "cache_size", -16_384)
            .context("sizing the writer cache")?;
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .context("disabling auto-checkpoint")?;
        writer
            .pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .context("limiting the WAL")?;

        migrate(&mut writer)?;
        let scrubbed = super::credentials::fingerprint_stored(&writer)
            .context("replacing stored push-credential secrets with fingerprints")?;
        if scrubbed > 0 {
            tracing::warn!(
                credentials = scrubbed,
                "push-credential secrets were stored in plain form; replaced by fingerprints \
                 (backups taken before still hold them)"
            );
        }
        let busy = options.busy_timeout;
        let manager = SqliteConnectionManager::file(&options.path).with_init(move |c| {
            configure(c, busy)?;
            c.pragma_update(None, "query_only", true)
        });
        let reads = r2d2::Pool::builder()
            .max_size(options.read_pool_size)
            .min_idle(Some(1))
            // A checkout must not cost a query: connections are local files, not sockets.
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(5))
            .build(manager)
            .context("opening the read pool")?;
        // SQLite gave the -wal and -shm files the database's mode; make sure of it.
        let late = files::tighten(&options.path)
            .with_context(|| format!("restricting {}", options.path.display()))?;
        warn_tightened(&late);
        Ok(Database {
            writer,
            reads,
            path: options.path.clone(),
        })
    }
}

/// Creates the database's folder (0700) and file (0600) if needed and tightens looser
/// existing files, which are returned for the caller to warn about.
pub fn prepare_files(path: &Path) -> anyhow::Result<Vec<files::Tightened>> {
    files::prepare(path).with_context(|| format!("creating or restricting {}", path.display()))
}

/// Logs each database file that was made owner-only.
pub fn warn_tightened(tightened: &[files::Tightened]) {
    for t in tightened {
        tracing::warn!(
            path = %t.path.display(),
            was = format!("{:o}", t.was),
            "database file was readable beyond its owner; made owner-only (0600)"
        );
    }
}

/// A plain read-write connection with reachd's pragmas (used by the writer and the CLI).
pub fn open_connection(path: &Path, busy_timeout: Duration) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    configure(&conn, busy_timeout).context("configuring the connection")?;
    Ok(conn)
}

fn configure(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Savepoint sub-journals and sort spills stay in memory instead of temp files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(())
}

/// Brings the schema to [`latest_version`]; refuses a database written by a newer reachd.
pub fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let latest = latest_version();
    if current > latest {
        bail!(
            "the database is at schema version {current}, newer than this reachd ({latest}); \
             run a newer reachd or restore a backup"
        );
    }
    if current == latest {
        return Ok(());
    }
    let tx = conn.transaction()?;
    if current == 0 {
        tx.execute_batch(BASELINE).context("applying schema.sql")?;
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current.max(1)) {
        tx.execute_batch(sql)
            .with_context(|| format!("applying migration {version}"))?;
    }
    tx.pragma_update(None, "user_version", latest)?;
    tx.commit().context("committing migrations")?;
    Ok(())
}

/// The stored account SID and auth token, if any.
pub fn account_credentials(conn: &Connection) -> anyhow::Result<Option<(String, String)>> {
    Ok(super::account::credentials(conn)?)
}

/// Creates the account row or replaces its credentials.
pub fn store_account(conn: &Connection, sid: &str, auth_token: &str) -> anyhow::Result<()> {
    Ok(super::account::store_credentials(conn, sid, auth_token)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_gets_the_latest_version_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/reachd.db");
        let opts = OpenOptions {
            path: path.clone(),
            busy_timeout: Duration::from_secs(1),
            read_pool_size: 2,
        };
        let db = Database::open(&opts).expect("open");
        let v: u32 = db
            .writer
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(v, latest_version());
        let mode: String = db
            .writer
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        db.writer
            .pragma_update(None, "user_version", latest_version() + 1)
            .expect("bump");
        drop(db);
        let err = Database::open(&opts).err().expect("refused");
        assert!(err.to_string().contains("newer than this reachd"), "{err}");
    }
}
