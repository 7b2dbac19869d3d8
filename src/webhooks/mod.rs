//! Webhooks that never lose an event: requests rendered from the durable outbox (Twilio form
//! and native JSON formats), signed, sent with retries by the dispatcher.
//!
//! May depend on: reqwest, tokio, domain. Never on a database driver or a web framework.

pub mod dispatcher;
pub mod network;
pub mod render;
pub mod send;
pub mod sign;

pub use dispatcher::{
    Dispatcher, DispatcherOptions, DispatcherStats, DispatcherTasks, LEASE_MARGIN, lease_for,
};
