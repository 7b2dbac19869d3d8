//! Keyset paging over a table's `id` column, shared by every list query (the SQLite backend's
//! paging, with PostgreSQL's numbered placeholders).
//!
//! May depend on: postgres, domain::page.

use super::statements::Sql;
use postgres::types::ToSql;

use super::PgResultExt;
use crate::domain::Result;
use crate::domain::page::{Cursor, Page, PageRequest};

/// A boxed query argument (filters are built at run time).
pub type Arg = Box<dyn ToSql + Sync + Send>;

/// Runs `SELECT id, <columns> FROM <from> WHERE <filter>` one page at a time. `select` must
/// start with the `id` column (a BIGINT); `filter` uses `$1…$n` for the `n` values in `args`.
pub fn fetch_page<T>(
    client: &mut impl Sql,
    select: &str,
    filter: &str,
    mut args: Vec<Arg>,
    request: PageRequest,
    map: impl Fn(&postgres::Row) -> Result<T>,
) -> Result<Page<T>> {
    let size = i64::from(request.size.max(1));
    let (cursor_clause, order, offset) = match request.cursor {
        Cursor::Offset(offset) => (String::new(), "ASC", offset),
        Cursor::After(key) => {
            args.push(Box::new(key));
            (format!(" AND id > ${}", args.len()), "ASC", 0)
        }
        Cursor::Before(key) => {
            args.push(Box::new(key));
            (format!(" AND id < ${}", args.len()), "DESC", 0)
        }
    };
    args.push(Box::new(size + 1));
    args.push(Box::new(i64::try_from(offset).unwrap_or(i64::MAX)));
    let (limit, skip) = (args.len() - 1, args.len());
    let sql = format!(
        "{select} WHERE ({filter}){cursor_clause} ORDER BY id {order} LIMIT ${limit} OFFSET ${skip}"
    );
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let mut rows = Vec::new();
    for row in client.query(&sql, &params).db()? {
        rows.push((row.try_get::<_, i64>(0).db()?, map(&row)?));
    }
    Ok(Page::from_window(rows, &request))
}

/// A text value for a dynamic filter's arguments.
pub fn text(value: &str) -> Arg {
    Box::new(value.to_string())
}
