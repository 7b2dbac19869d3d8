//! Realtime fan-out: committed events (never uncommitted engine state) pushed to WebSocket
//! subscribers, so socket events agree with REST and webhooks.
//!
//! May depend on: tokio, tokio-util, serde_json, domain, webhooks::render (event JSON).

pub mod hub;
pub mod mailbox;

pub use hub::Hub;
pub use mailbox::{Mailbox, Stop};
