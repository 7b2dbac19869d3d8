//! Presence: who is online. `engine` is the pure state machine; `runtime` drives it with
//! `tokio::time` (the expiry sweeper), commits its transitions through the storage port in
//! batches, and flushes sessions so a restart does not flap.
//!
//! May depend on: tokio, domain. Never on a database driver or a web framework.

pub mod engine;
pub mod runtime;

pub use engine::{SessionError, SessionView};
pub use runtime::{
    ClusterOptions, Committed, HeldSession, Presence, PresenceOptions, PresenceStats, PresenceTasks,
};
