//! A copied column: its name and its PostgreSQL type (read from the target's catalog), and how
//! a SQLite value is read for it — strictly, so that PostgreSQL stores the same value: an
//! integer column holding text, or a number out of range, is an error, never a conversion.
//!
//! May depend on: rusqlite, postgres (types), anyhow.

use anyhow::bail;
use postgres::types::{ToSql, Type};

/// A PostgreSQL column type reachd's schema uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int4,
    Int8,
    Text,
    Bool,
}

/// A column of a copied table, in the target's column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

/// A value on its way to PostgreSQL.
pub type Value = Box<dyn ToSql + Sync>;

impl Kind {
    /// The kind of an `information_schema.columns.data_type`.
    pub fn from_pg(table: &str, column: &str, data_type: &str) -> anyhow::Result<Kind> {
        Ok(match data_type {
            "integer" => Kind::Int4,
            "bigint" => Kind::Int8,
            "text" => Kind::Text,
            "boolean" => Kind::Bool,
            other => bail!("{table}.{column} has the type {other}, which this copy does not know"),
        })
    }

    pub fn pg_type(self) -> Type {
        match self {
            Kind::Int4 => Type::INT4,
            Kind::Int8 => Type::INT8,
            Kind::Text => Type::TEXT,
            Kind::Bool => Type::BOOL,
        }
    }

    /// Column `at` of a SQLite row as this kind (NULL stays NULL; booleans are stored as
    /// integers, any non-zero one being true, as the SQLite backend reads them).
    pub fn read(self, row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Value> {
        Ok(match self {
            Kind::Int4 => Box::new(row.get::<_, Option<i32>>(at)?),
            Kind::Int8 => Box::new(row.get::<_, Option<i64>>(at)?),
            Kind::Text => Box::new(row.get::<_, Option<String>>(at)?),
            Kind::Bool => Box::new(row.get::<_, Option<bool>>(at)?),
        })
    }
}
