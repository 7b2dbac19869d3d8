//! Backend-neutral pieces of storage adapters: the commit effects and hooks every writer
//! reports through, the factory that opens the backend the configured `database` names, and
//! the copy from one backend to the other (`copy-database`).
//!
//! May depend on: std, domain, config, db (SQLite), pg (PostgreSQL); `copy` also on rusqlite
//! and postgres.

pub mod cache;
pub mod commit;
pub mod copy;
pub mod server;
