//! `reachd copy-database`: copies a SQLite deployment into an empty PostgreSQL database, so a
//! team can move from the single-node default to PostgreSQL. Every durable table is copied
//! value for value (SIDs, dates, ids and with them paging tokens and event cursors), then the
//! counters are carried over so that new ids continue after the copied ones. Live sessions are
//! not copied: clients reconnect to the new server.
//!
//! Consistency: the SQLite file is read in one read transaction (one snapshot) while this
//! command holds the file's server lock (`db::server_lock`), so no server runs on it during
//! the copy — a server still writing would lose what it wrote after the snapshot. PostgreSQL is
//! migrated first, then filled in one transaction: all or nothing, and only when it holds no
//! reachd data yet (a server that ever ran on it left its account and first API key there).
//!
//! May depend on: rusqlite, postgres, anyhow, config (URL helpers), db::server_lock,
//! pg::{open, off_runtime}.

mod column;
mod source;
mod tables;
mod target;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::{is_postgres_url, redact_url};

pub use tables::SESSIONS;

/// What a finished copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// The source's SQLite schema version.
    pub source_version: u32,
    /// The target's PostgreSQL schema version.
    pub target_version: u32,
    /// Rows copied per table, in copy order.
    pub tables: Vec<(&'static str, u64)>,
    /// The event feed's position: the last event id handed out.
    pub feed_position: i64,
    /// Rows of [`SESSIONS`] left behind.
    pub sessions_left: i64,
}

/// Copies the SQLite database at `from` into the empty PostgreSQL database `to` names.
/// Blocks (on a thread of its own when called from an async runtime).
pub fn sqlite_to_postgres(from: &Path, to: &str, timeout: Duration) -> anyhow::Result<CopyReport> {
    crate::pg::off_runtime(|| copy(from, to, timeout))
}

fn copy(from: &Path, to: &str, timeout: Duration) -> anyhow::Result<CopyReport> {
    if !is_postgres_url(to) {
        bail!("the target must be a postgres:// or postgresql:// URL");
    }
    if !from.is_file() {
        bail!("no SQLite database at {}", from.display());
    }
    let described = redact_url(to);
    // Held until the SQLite connection is closed (see `lock_existing`).
    let Some(file_lock) = crate::db::server_lock::lock_existing(from)? else {
        bail!(
            "a reachd server is running on {}; stop it first (what it writes after the copy \
             would be missing from PostgreSQL), then copy",
            from.display()
        );
    };
    let conn = source::open(from, timeout)?;
    let snapshot = conn.unchecked_transaction()?;
    let source_version = source::schema_version(&snapshot)?;
    source::check_version(from, source_version)?;
    let present = source::tables(&snapshot)?;
    let unknown = tables::unknown(&present);
    if !unknown.is_empty() {
        bail!(
            "{} has tables this copy does not know: {}",
            from.display(),
            unknown.join(", ")
        );
    }
    let sessions_left = source::count(&snapshot, SESSIONS)?;

    let mut client = connect(to, timeout)?;
    let target_version =
        crate::pg::open::migrate(&mut client).with_context(|| format!("migrating {described}"))?;
    let mut tx = client.transaction()?;
    let held = target::holdings(&mut tx)?;
    if !held.is_empty() {
        bail!(
            "{described} already holds reachd data (rows: {}); copy-database fills only \
             an empty database: give it a new one (createdb). Nothing was copied",
            held.join(", ")
        );
    }
    let mut copied = Vec::new();
    for &table in tables::COPIED {
        let rows =
            copy_table(&snapshot, &mut tx, table).with_context(|| format!("copying {table}"))?;
        copied.push((table, rows));
    }
    let feed_position = source::last_id(&snapshot, tables::EVENTS)?;
    target::set_feed_position(&mut tx, feed_position)?;
    tx.commit()
        .with_context(|| format!("committing the copy into {described}"))?;
    drop(client);
    drop(snapshot);
    drop(conn);
    drop(file_lock);
    Ok(CopyReport {
        source_version,
        target_version,
        tables: copied,
        feed_position,
        sessions_left,
    })
}

/// Copies the rows of `table` and makes its ids continue after theirs; the number of rows.
fn copy_table(
    snapshot: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
    table: &str,
) -> anyhow::Result<u64> {
    let columns = target::columns(tx, table)?;
    let mut names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let mut source_names = source::columns(snapshot, table)?;
    names.sort_unstable();
    source_names.sort_unstable();
    if names != source_names {
        bail!(
            "its columns differ: SQLite has {}, PostgreSQL has {}",
            source_names.join(", "),
            names.join(", ")
        );
    }
    let rows = target::copy_in(tx, table, &columns, |write| {
        source::for_each_row(snapshot, table, &columns, write)
    })?;
    if let Some(sequence) = target::id_sequence(tx, table)? {
        let last_id = source::last_id(snapshot, table).context("reading the last id")?;
        target::continue_ids(tx, &sequence, last_id).context("continuing the ids")?;
    }
    Ok(rows)
}

/// A connection for the copy (the URL's password never appears in its errors).
fn connect(url: &str, timeout: Duration) -> anyhow::Result<postgres::Client> {
    let described = redact_url(url);
    let (mut config, tls) =
        crate::pg::tls::settings(url).map_err(|e| anyhow::anyhow!("{described}: {e}"))?;
    config.connect_timeout(timeout);
    config.application_name("reachd copy-database");
    config
        .connect(tls)
        .with_context(|| format!("connecting to {described}"))
}
