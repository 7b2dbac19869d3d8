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
    (6, include_str!("../../migrations/0006_queue_by_id.sql")),
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
    /// The write-ahead log size at which the writer checkpoints it (see [`Database::open`]).
    pub wal_limit_bytes: u64,
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
        // The writer touches many index pages per batch: a larger page cache (16 MiB).
        //
        // Checkpoints normally run on their own thread (`db::checkpoint`), passive, every
        // 250 ms, so a burst of commits is not stalled copying pages. But the log starts over
        // from its beginning only when a checkpoint has copied all of it, and under sustained
        // writes a checkpoint beside the writer never catches up: commits keep appending, and
        // the file grew past 3 GB in 30 s of webhook traffic. So once the log reaches
        // `wal_limit_bytes` the writer checkpoints it itself after a commit (SQLite's
        // auto-checkpoint, passive): nothing is appended meanwhile, the next transaction
        // starts the log over, and the file is cut back to the limit.
        writer
            .pragma_update(None, "cache_size", -16_384)
            .context("sizing the writer cache")?;
        writer
            .pragma_update(
                None,
                "wal_autocheckpoint",
                wal_limit_pages(&writer, options)?,
            )
            .context("setting the writer's checkpoint threshold")?;
        writer
            .pragma_update(
                None,
                "journal_size_limit",
                i64::try_from(options.wal_limit_bytes).unwrap_or(i64::MAX),
            )
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

/// The log limit in pages of the database (SQLite counts the auto-checkpoint threshold in
/// pages).
fn wal_limit_pages(conn: &Connection, options: &OpenOptions) -> anyhow::Result<i64> {
    let page: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .context("reading the page size")?;
    let pages = options
        .wal_limit_bytes
        .div_ceil(page.max(512) as u64)
        .max(1);
    Ok(i64::try_from(pages).unwrap_or(i64::MAX))
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
            wal_limit_bytes: 64 * 1024 * 1024,
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

    /// Commits back to back while readers keep reading and the background checkpointer runs:
    /// the log must start over instead of growing with every commit.
    #[test]
    fn the_write_ahead_log_stays_bounded_under_sustained_writes_and_reads() {
        const LIMIT: u64 = 256 * 1024;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("reachd.db");
        let opts = OpenOptions {
            path: path.clone(),
            busy_timeout: Duration::from_secs(5),
            read_pool_size: 2,
            wal_limit_bytes: LIMIT,
        };
        let db = Database::open(&opts).expect("open");
        let checkpointer = crate::db::checkpoint::Checkpointer::start(
            &path,
            opts.busy_timeout,
            Duration::from_millis(20),
        )
        .expect("checkpointer");
        db.writer
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
            .expect("table");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (reads, stop) = (db.reads.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let conn = reads.get().expect("read connection");
                        let _: i64 = conn
                            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                            .expect("read");
                        drop(conn);
                        std::thread::sleep(Duration::from_micros(100));
                    }
                })
            })
            .collect();
        let wal = path.with_extension("db-wal");
        let mut largest = 0;
        // ~16 MiB of pages in all: 64 times the limit.
        for i in 0..4_000 {
            db.writer
                .execute(
                    "INSERT INTO t (id, v) VALUES (?1 % 50, zeroblob(4000)) \
                     ON CONFLICT (id) DO UPDATE SET v = zeroblob(4000 + ?1 % 7)",
                    [i],
                )
                .expect("write");
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            reader.join().expect("reader");
        }
        checkpointer.stop();
        // A reader inside the log can delay its restart by a few commits (0.3–0.8 MB seen
        // here, more on a loaded machine); without the writer's own checkpoint the log holds
        // every commit (~17 MB here).
        assert!(
            largest <= 16 * LIMIT,
            "the log grew to {largest} bytes (limit {LIMIT})"
        );
    }
}
