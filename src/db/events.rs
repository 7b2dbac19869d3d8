//! Writing events: each bumps the user's sequence and inserts one row in the same transaction
//! as the change it describes, and registers the row for the post-commit hooks.
//!
//! May depend on: rusqlite, serde_json, domain, db::writer.

use rusqlite::params;
use serde_json::json;

use super::SqlResultExt;
use super::writer::Tx;
use crate::domain::Result;
use crate::domain::event::{EventType, Source};
use crate::domain::presence::Cause;
use crate::domain::store::Origin;
use crate::domain::time::now_ms;
use crate::domain::user::User;

/// What happened to a user (whose `reachability` already holds the new state).
pub struct EventSpec<'a> {
    pub kind: EventType,
    pub reasons: &'a [&'a str],
    pub cause: Option<Cause>,
    pub origin: Origin,
    pub session_count: Option<u32>,
}

impl<'a> EventSpec<'a> {
    pub fn new(kind: EventType, origin: Origin) -> Self {
        EventSpec {
            kind,
            reasons: &[],
            cause: None,
            origin,
            session_count: None,
        }
    }
}

/// Source and webhook flag of a change's origin.
fn source_of(origin: Origin) -> (Source, bool) {
    match origin {
        Origin::Rest { webhooks } => (Source::Api, webhooks),
        Origin::Client => (Source::Sdk, false),
    }
}

/// Bumps the user's sequence (stored and in `user`) and records the event; the user row must
/// still exist (record a deletion before deleting).
pub fn emit(tx: &mut Tx<'_>, user: &mut User, spec: EventSpec<'_>) -> Result<i64> {
    let sequence: i64 = tx
        .prepare_cached(
            "UPDATE users SET sequence = sequence + 1 WHERE sid = ?1 RETURNING sequence",
        )
        .db()?
        .query_row([&user.sid], |r| r.get(0))
        .db()?;
    user.reachability.sequence = sequence;
    let u = &*user;
    let (source, rest_webhooks) = source_of(spec.origin);
    let profile = json!({
        "friendly_name": u.friendly_name,
        "attributes": u.attributes,
        "role_sid": u.role_sid,
        "date_created": u.date_created,
        "date_updated": u.date_updated,
    });
    let id = tx
        .prepare_cached(
            "INSERT INTO events (service_sid, user_sid, identity, type, reasons, cause, sequence, is_online, \
             is_notifiable, session_count, last_seen, source, rest_webhooks, user_json, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) RETURNING id",
        )
        .db()?
        .query_row(
            params![
                u.service_sid,
                u.sid,
                u.identity,
                spec.kind.as_str(),
                serde_json::Value::from(spec.reasons.to_vec()).to_string(),
                spec.cause.map(Cause::as_str),
                sequence,
                u.reachability.is_online,
                u.reachability.is_notifiable,
                spec.session_count,
                u.reachability.last_seen,
                source.as_str(),
                rest_webhooks,
                profile.to_string(),
                now_ms(),
            ],
            |r| r.get(0),
        )
        .db()?;
    tx.record_event(id);
    Ok(id)
}
