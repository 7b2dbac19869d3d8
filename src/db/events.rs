//! Writing events: each bumps the user's sequence and inserts one row in the same transaction
//! as the change it describes, and registers the row for the post-commit hooks. What an event
//! says is decided in `domain` ([`EventDraft`]); this module persists it.
//!
//! May depend on: rusqlite, serde_json, domain, db::writer.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqlResultExt;
use super::outbox::{self, OutboxEvent};
use super::writer::{StoredTransition, Tx};
use crate::domain::Result;
use crate::domain::event::{Event, EventDraft, EventType, Source, profile_json};
use crate::domain::presence::Cause;
use crate::domain::reachability::ReachabilityChange;
use crate::domain::time::now_ms;
use crate::domain::user::User;

/// Bumps the user's sequence (stored and in `user`, whose `reachability` already holds the new
/// state) and records the event; the user row must still exist (record a deletion before
/// deleting).
pub fn emit(tx: &mut Tx<'_>, user: &mut User, spec: &EventDraft) -> Result<i64> {
    let sequence: i64 = tx
        .prepare_cached(
            "UPDATE users SET sequence = sequence + 1 WHERE sid = ?1 RETURNING sequence",
        )
        .db()?
        .query_row([&user.sid], |r| r.get(0))
        .db()?;
    user.reachability.sequence = sequence;
    let u = &*user;
    let (source, rest_webhooks) = spec.origin.source();
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
                serde_json::Value::from(spec.reasons.clone()).to_string(),
                spec.cause.map(Cause::as_str),
                sequence,
                u.reachability.is_online,
                u.reachability.is_notifiable,
                spec.session_count,
                u.reachability.last_seen,
                source.as_str(),
                rest_webhooks,
                profile_json(u),
                now_ms(),
            ],
            |r| r.get(0),
        )
        .db()?;
    tx.record_event(id);
    let outbox = OutboxEvent {
        id,
        kind: spec.kind,
        service_sid: &u.service_sid,
        user_sid: &u.sid,
        source,
        rest_webhooks,
    };
    outbox::enqueue(tx, &outbox)?;
    Ok(id)
}

/// Records a reachability change the domain decided: its event (the caller has written the
/// user's new state), and the stored transition for the post-commit hooks (metrics).
pub fn emit_reachability_change(tx: &mut Tx<'_>, change: ReachabilityChange) -> Result<()> {
    let ReachabilityChange {
        mut user,
        event,
        cause,
        offline_since,
    } = change;
    emit(tx, &mut user, &event)?;
    tx.record_transition(StoredTransition {
        cause: cause.as_str(),
        offline_since,
    });
    Ok(())
}

pub(super) const COLUMNS: &str = "id, service_sid, user_sid, identity, type, reasons, cause, sequence, is_online, is_notifiable, \
     session_count, last_seen, source, rest_webhooks, user_json, created_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    event_at(row, 0)
}

/// An event from the columns of [`COLUMNS`] starting at `at` (joined reads).
pub(super) fn event_at(row: &Row<'_>, at: usize) -> rusqlite::Result<Event> {
    let kind: String = row.get(at + 4)?;
    let reasons: String = row.get(at + 5)?;
    let cause: Option<String> = row.get(at + 6)?;
    let source: String = row.get(at + 12)?;
    Ok(Event {
        id: row.get(at)?,
        service_sid: row.get(at + 1)?,
        user_sid: row.get(at + 2)?,
        identity: row.get(at + 3)?,
        kind: EventType::parse(&kind).unwrap_or(EventType::UserUpdated),
        reasons: serde_json::from_str(&reasons).unwrap_or_default(),
        cause: cause.as_deref().and_then(Cause::parse),
        sequence: row.get(at + 7)?,
        is_online: row.get(at + 8)?,
        is_notifiable: row.get(at + 9)?,
        session_count: row.get(at + 10)?,
        last_seen: row.get(at + 11)?,
        source: if source == "SDK" {
            Source::Sdk
        } else {
            Source::Api
        },
        rest_webhooks: row.get(at + 13)?,
        user_json: row.get(at + 14)?,
        created_at: row.get(at + 15)?,
    })
}

pub fn get(conn: &Connection, id: i64) -> Result<Option<Event>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE id = ?1"))
        .db()?
        .query_row([id], from_row)
        .optional()
        .db()
}

/// A service's events with an id above `after`, oldest first.
pub fn list_after(
    conn: &Connection,
    service_sid: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<Event>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM events WHERE service_sid = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
    ))
    .db()?
    .query_map(params![service_sid, after, limit as i64], from_row)
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

/// A service's newest `count` events, oldest first.
pub fn tail(conn: &Connection, service_sid: &str, count: usize) -> Result<Vec<Event>> {
    let mut events: Vec<Event> = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM events WHERE service_sid = ?1 ORDER BY id DESC LIMIT ?2"
        ))
        .db()?
        .query_map(params![service_sid, count as i64], from_row)
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    events.reverse();
    Ok(events)
}

/// Every service's events with an id above `after`, oldest first.
pub fn list_since(conn: &Connection, after: i64, limit: usize) -> Result<Vec<Event>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"
    ))
    .db()?
    .query_map(params![after, limit as i64], from_row)
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

/// The newest event id ever assigned (0 before the first): from `sqlite_sequence`, so the
/// retention purge emptying the table does not take it back.
pub fn last_id(conn: &Connection) -> Result<i64> {
    conn.query_row(
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)",
        [],
        |r| r.get(0),
    )
    .db()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_id_survives_the_purge_emptying_the_table() {
        let mut conn = Connection::open_in_memory().expect("memory database");
        crate::db::open::migrate(&mut conn).expect("schema");
        assert_eq!(last_id(&conn).expect("last id"), 0);
        for identity in ["a", "b"] {
            conn.execute(
                "INSERT INTO events (service_sid, user_sid, identity, type, reasons, sequence, source, user_json, created_at) \
                 VALUES ('IS1', 'US1', ?1, 'user.added', '[]', 1, 'API', '{}', 0)",
                [identity],
            )
            .expect("insert");
        }
        conn.execute("DELETE FROM events", []).expect("purge");
        assert_eq!(
            last_id(&conn).expect("last id"),
            2,
            "ids are never taken back"
        );
    }
}
