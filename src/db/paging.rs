//! Keyset paging over a table's `id` column, shared by every list query.
//!
//! May depend on: rusqlite, domain::page.

use rusqlite::types::Value;
use rusqlite::{Connection, Row, params_from_iter};

use super::SqlResultExt;
use crate::domain::Result;
use crate::domain::page::{Cursor, Page, PageRequest};

/// Runs `SELECT id, <columns> FROM <from> WHERE <filter>` one page at a time. `select` must
/// start with the `id` column; `filter` may use `?` placeholders bound from `args`.
pub fn fetch_page<T>(
    conn: &Connection,
    select: &str,
    filter: &str,
    mut args: Vec<Value>,
    request: PageRequest,
    map: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Page<T>> {
    let size = i64::from(request.size.max(1));
    let (cursor_clause, order, offset) = match request.cursor {
        Cursor::Offset(offset) => ("", "ASC", offset),
        Cursor::After(key) => {
            args.push(Value::Integer(key));
            (" AND id > ?", "ASC", 0)
        }
        Cursor::Before(key) => {
            args.push(Value::Integer(key));
            (" AND id < ?", "DESC", 0)
        }
    };
    args.push(Value::Integer(size + 1));
    args.push(Value::Integer(i64::try_from(offset).unwrap_or(i64::MAX)));
    let sql =
        format!("{select} WHERE ({filter}){cursor_clause} ORDER BY id {order} LIMIT ? OFFSET ?");
    let mut stmt = conn.prepare_cached(&sql).db()?;
    let rows: Vec<(i64, T)> = stmt
        .query_map(params_from_iter(args), |row| {
            Ok((row.get::<_, i64>(0)?, map(row)?))
        })
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    Ok(Page::from_window(rows, &request))
}

/// A text value for a dynamic filter's arguments.
pub fn text(value: &str) -> Value {
    Value::Text(value.to_string())
}
