//! reachd: a self-hosted reachability server, wire-compatible with Twilio's Reachability
//! Indicator (Programmable Chat v1/v2 and Conversations v1), on an embedded SQLite file.
//!
//! Layers (docs/ARCHITECTURE.md §2): `domain` (model, rules, storage port) ← `db` (SQLite),
//! `presence`, `webhooks`, `realtime` ← `usecases` (one operation per use case) ← `api`
//! (actix-web); `app` wires them; `main` and `cli` are the command line.

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
pub mod pg;
pub mod presence;
pub mod realtime;
pub mod storage;
pub mod tokens;
pub mod usecases;
pub mod webhooks;
