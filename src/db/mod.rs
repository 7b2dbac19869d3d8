//! SQLite storage: opening and migrating the database file, the single group-committing
//! writer, the read pool, and the [`crate::domain::store::Store`] implementation.
//!
//! May depend on: rusqlite, r2d2, r2d2_sqlite, tokio (channels), domain. Never on actix.

mod account;
pub mod admin;
pub mod backup;
mod bindings;
pub mod checkpoint;
mod credentials;
pub mod endpoints;
pub mod events;
pub mod files;
pub mod keys;
mod metrics;
pub mod open;
pub mod outbox;
mod paging;
mod presence;
pub mod server_lock;
mod services;
mod sqlite_store;
pub mod user_cache;
mod users;
pub mod writer;

pub use open::{Database, OpenOptions};
pub use sqlite_store::SqliteStore;

use crate::domain::Error;

/// Maps a SQLite failure to the domain: a read-only or full database or a lock timeout means
/// "storage unavailable" (503); anything else is internal.
pub(crate) fn map_sqlite(err: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    match err.sqlite_error_code() {
        Some(
            ErrorCode::ReadOnly
            | ErrorCode::DiskFull
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure,
        ) => Error::Unavailable(err.to_string()),
        _ => Error::Internal(anyhow::Error::new(err)),
    }
}

pub(crate) fn map_pool(err: r2d2::Error) -> Error {
    Error::Unavailable(format!("no database connection: {err}"))
}

/// `?`-friendly conversion for rusqlite results inside the db module.
pub(crate) trait SqlResultExt<T> {
    fn db(self) -> Result<T, Error>;
}

impl<T> SqlResultExt<T> for Result<T, rusqlite::Error> {
    fn db(self) -> Result<T, Error> {
        self.map_err(map_sqlite)
    }
}
