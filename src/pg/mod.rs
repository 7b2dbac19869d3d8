//! PostgreSQL storage: opening and migrating the database a `postgres://` URL names, the
//! group-committing writer, the reader threads, and the [`crate::domain::store::Store`]
//! implementation. The same rows, SIDs, dates and paging keys as the SQLite backend (`db`), so
//! that both answer byte for byte alike.
//!
//! Why the synchronous `postgres` client: the storage port's reads are synchronous and its
//! writes are jobs run by one writer thread per node that groups them into one transaction
//! (group commit), as on SQLite. The synchronous client keeps this adapter's code shaped like
//! the SQLite one (a job is a closure over a transaction). It may not run on an async worker
//! thread (it drives its own runtime), so reads hop to reader threads (`reads`).
//!
//! May depend on: postgres, r2d2, r2d2_postgres, tokio (channels), domain, storage, config
//! (the database URL helpers). Never on
//! actix or on `db`.

pub mod admin;
pub mod cluster;
pub mod listen;
pub mod open;
pub mod reads;
pub mod statements;
pub mod tls;
pub mod writer;

pub use admin::PgAdmin;
pub use pg_store::{OutboxWriters, PgStore};

mod account;
mod bindings;
mod credentials;
mod endpoints;
mod events;
mod keys;
mod metrics;
mod outbox;
mod paging;
mod pg_store;
mod presence;
mod services;
mod transitions;
mod users;

use crate::domain::Error;

/// Maps a PostgreSQL failure to the domain: a lost or refused connection, a server shutting
/// down, a read-only server or a serialization failure mean "storage unavailable" (503);
/// anything else is internal.
pub(crate) fn map_pg(err: postgres::Error) -> Error {
    use postgres::error::SqlState;
    let unavailable = err.is_closed()
        || err.code().is_some_and(|code| {
            code.code().starts_with("08") // connection exceptions
                || code.code().starts_with("57P") // operator intervention (shutdown)
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::DISK_FULL
                || *code == SqlState::TOO_MANY_CONNECTIONS
        })
        || err.code().is_none();
    if unavailable {
        Error::Unavailable(err.to_string())
    } else {
        Error::Internal(anyhow::Error::new(err))
    }
}

pub(crate) fn map_pool(err: r2d2::Error) -> Error {
    Error::Unavailable(format!("no database connection: {err}"))
}

/// `?`-friendly conversion for postgres results inside the pg module.
pub(crate) trait PgResultExt<T> {
    fn db(self) -> Result<T, Error>;
}

impl<T> PgResultExt<T> for Result<T, postgres::Error> {
    fn db(self) -> Result<T, Error> {
        self.map_err(map_pg)
    }
}

pub use crate::config::{is_postgres_url, redact_url};

/// Runs `f` here, or on a scoped thread when this thread drives an async runtime.
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}
