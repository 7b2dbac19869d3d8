//! The domain: reachd's model of accounts, services, users, push bindings and credentials,
//! the rules that validate changes to them, and the [`store::Store`] trait that storage
//! backends implement.
//!
//! May depend on: std, serde/serde_json, thiserror, rand, chrono. Never on a framework (actix),
//! a database driver (rusqlite) or an HTTP client (reqwest): everything else depends on this.

pub mod account;
pub mod admin;
pub mod binding;
pub mod chars;
pub mod cluster;
pub mod credential;
pub mod errors;
pub mod event;
pub mod fanout;
pub mod ids;
pub mod page;
pub mod presence;
pub mod reachability;
pub mod secret;
pub mod service;
pub mod store;
pub mod time;
pub mod user;
pub mod webhook;

pub use errors::{Error, Result};
