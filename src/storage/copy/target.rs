//! The PostgreSQL side of `copy-database`, inside the copy's one transaction: the columns and
//! types of a table (from the catalog), what the database already holds, the rows written with
//! `COPY … FROM STDIN (FORMAT binary)`, and the counters that make new ids continue after the
//! copied ones (identity sequences, the event feed's position).
//!
//! May depend on: postgres, anyhow, storage::copy::{column, tables}.

use anyhow::{Context, bail};
use postgres::Transaction;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::ToSql;

use super::column::{Column, Kind};
use super::tables::{COPIED, SESSIONS};

/// The columns of `table` in the current schema, in order; an error when it is missing.
pub fn columns(tx: &mut Transaction<'_>, table: &str) -> anyhow::Result<Vec<Column>> {
    let rows = tx.query(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        &[&table],
    )?;
    if rows.is_empty() {
        bail!("the target has no table {table} after migrating");
    }
    rows.iter()
        .map(|row| {
            let name: String = row.try_get(0)?;
            let data_type: String = row.try_get(1)?;
            let kind = Kind::from_pg(table, &name, &data_type)?;
            Ok(Column { name, kind })
        })
        .collect()
}

/// What the database holds already: each non-empty table with its row count, and the event
/// feed's position when it has moved.
pub fn holdings(tx: &mut Transaction<'_>) -> anyhow::Result<Vec<String>> {
    let mut held = Vec::new();
    for table in COPIED.iter().chain([&SESSIONS]) {
        let count: i64 = tx
            .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])?
            .try_get(0)?;
        if count > 0 {
            held.push(format!("{table}: {count}"));
        }
    }
    let position: i64 = tx
        .query_one("SELECT coalesce(max(last), 0) FROM feed_position", &[])?
        .try_get(0)?;
    if position > 0 {
        held.push(format!("event feed position: {position}"));
    }
    Ok(held)
}

/// Streams rows into `table`: `fill` gets a writer for one row at a time. The number of rows.
pub fn copy_in(
    tx: &mut Transaction<'_>,
    table: &str,
    columns: &[Column],
    fill: impl FnOnce(
        &mut dyn FnMut(&[&(dyn ToSql + Sync)]) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64>,
) -> anyhow::Result<u64> {
    let list: Vec<String> = columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
    let types: Vec<_> = columns.iter().map(|c| c.kind.pg_type()).collect();
    let sql = format!(
        "COPY \"{table}\" ({}) FROM STDIN (FORMAT binary)",
        list.join(", ")
    );
    let mut writer = BinaryCopyInWriter::new(tx.copy_in(&sql)?, &types);
    let sent = fill(&mut |values| {
        // The values come from `columns`, one each: `write` panics only on a count mismatch.
        debug_assert_eq!(values.len(), columns.len());
        writer.write(values).map_err(anyhow::Error::from)
    })?;
    let stored = writer.finish().context("finishing the COPY")?;
    if stored != sent {
        bail!("PostgreSQL stored {stored} rows of {table} out of {sent}");
    }
    Ok(stored)
}

/// The identity sequence behind `table.id`, if that column has one.
pub fn id_sequence(tx: &mut Transaction<'_>, table: &str) -> anyhow::Result<Option<String>> {
    Ok(tx
        .query_one("SELECT pg_get_serial_sequence($1, 'id')", &[&table])?
        .try_get(0)?)
}

/// Makes `sequence` hand out `last_id + 1` next.
pub fn continue_ids(tx: &mut Transaction<'_>, sequence: &str, last_id: i64) -> anyhow::Result<()> {
    // setval(…, 1, false): the next value is 1, as on a table that never had rows.
    let (value, called) = if last_id > 0 {
        (last_id, true)
    } else {
        (1, false)
    };
    tx.execute(
        "SELECT setval($1::text::regclass, $2, $3)",
        &[&sequence, &value, &called],
    )?;
    Ok(())
}

/// Sets the event feed's position: the next event gets `last + 1`.
pub fn set_feed_position(tx: &mut Transaction<'_>, last: i64) -> anyhow::Result<()> {
    let updated = tx.execute("UPDATE feed_position SET last = $1 WHERE id = 1", &[&last])?;
    if updated != 1 {
        bail!("the target has no feed_position row after migrating");
    }
    Ok(())
}
