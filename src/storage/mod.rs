//! Backend-neutral pieces of storage adapters: the commit effects and hooks every writer
//! reports through, and the factory that opens the backend the configured `database` names.
//!
//! May depend on: std, domain, config, db (SQLite), pg (PostgreSQL).

pub mod cache;
pub mod commit;
pub mod server;
