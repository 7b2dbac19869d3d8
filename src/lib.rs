//! reachd: a self-hosted reachability server, wire-compatible with Twilio's Reachability
//! Indicator (Programmable Chat v1/v2 and Conversations v1), on an embedded SQLite file.
//!
//! Layers (DESIGN.md §3): `domain` (model, rules, storage port) ← `db` (SQLite) and `api`
//! (actix-web); `app` wires them; `main` is the CLI.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod domain;
pub mod logging;
pub mod metrics;
pub mod presence;
pub mod realtime;
pub mod tokens;
pub mod webhooks;
