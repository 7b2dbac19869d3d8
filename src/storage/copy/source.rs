//! The SQLite side of `copy-database`: the file opened read-only, and what the copy reads from
//! it inside one read transaction (one snapshot): the schema version, the tables and their
//! columns, the rows of a table and the counters SQLite keeps for `AUTOINCREMENT` ids.
//!
//! May depend on: rusqlite, postgres (types), anyhow, db::open (the schema version),
//! storage::copy::column.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use rusqlite::{Connection, OpenFlags};

use super::column::{Column, Value};

/// Opens the database at `path` read-only (never creating it).
pub fn open(path: &Path, busy_timeout: Duration) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(busy_timeout)?;
    Ok(conn)
}

/// The schema version (`PRAGMA user_version`); 0 for a file without reachd's schema.
pub fn schema_version(conn: &Connection) -> anyhow::Result<u32> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .context("reading the schema version (is this a SQLite database?)")
}

/// The tables, without SQLite's own (`sqlite_…`).
pub fn tables(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let mut statement = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         ORDER BY name",
    )?;
    let names = statement
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names)
}

/// The column names of `table`, in order.
pub fn columns(conn: &Connection, table: &str) -> anyhow::Result<Vec<String>> {
    let mut statement = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let names = statement
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names)
}

/// How many rows `table` holds.
pub fn count(conn: &Connection, table: &str) -> anyhow::Result<i64> {
    Ok(
        conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
            r.get(0)
        })?,
    )
}

/// The last id `table` ever handed out: `AUTOINCREMENT`'s counter (which rows deleted since do
/// not take back) or the largest id, whichever is higher; 0 when none was.
pub fn last_id(conn: &Connection, table: &str) -> anyhow::Result<i64> {
    let has_counters: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'",
        [],
        |r| r.get(0),
    )?;
    let counter: i64 = if has_counters {
        conn.query_row(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = ?1), 0)",
            [table],
            |r| r.get(0),
        )?
    } else {
        0
    };
    let largest: i64 = conn.query_row(
        &format!("SELECT coalesce(max(id), 0) FROM \"{table}\""),
        [],
        |r| r.get(0),
    )?;
    Ok(counter.max(largest))
}

/// Calls `each` with the values of every row of `table` (in `columns`' order, read as their
/// PostgreSQL kinds), in insertion order; the number of rows.
pub fn for_each_row(
    conn: &Connection,
    table: &str,
    columns: &[Column],
    mut each: impl FnMut(&[&(dyn postgres::types::ToSql + Sync)]) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let list: Vec<String> = columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
    let sql = format!(
        "SELECT rowid, {} FROM \"{table}\" ORDER BY rowid",
        list.join(", ")
    );
    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query([])?;
    let mut copied = 0;
    while let Some(row) = rows.next()? {
        let rowid: i64 = row.get(0)?;
        let values = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.kind
                    .read(row, i + 1)
                    .with_context(|| format!("reading {table}.{} of row {rowid}", c.name))
            })
            .collect::<anyhow::Result<Vec<Value>>>()?;
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            values.iter().map(|v| v.as_ref()).collect();
        each(&refs).with_context(|| format!("writing {table} row {rowid}"))?;
        copied += 1;
    }
    Ok(copied)
}

/// Refuses a database this reachd does not copy as it is: no schema, an older schema (to be
/// migrated first) or a newer one.
pub fn check_version(path: &Path, version: u32) -> anyhow::Result<()> {
    let latest = crate::db::open::latest_version();
    if version == 0 {
        bail!("{} holds no reachd database (no schema)", path.display());
    }
    if version < latest {
        bail!(
            "{path} is at schema version {version}; this reachd copies version {latest}. \
             Upgrade it first: REACHD_DATABASE={path} reachd migrate",
            path = path.display()
        );
    }
    if version > latest {
        bail!(
            "{} is at schema version {version}, newer than this reachd ({latest}); run a newer \
             reachd",
            path.display()
        );
    }
    Ok(())
}
