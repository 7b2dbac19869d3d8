//! Storage for the presence runtime: applying transitions (with their events) and keeping the
//! sessions table, and the snapshot a restart resumes from.
//!
//! May depend on: rusqlite, domain, db::{events, users, writer}.

use rusqlite::{Connection, OptionalExtension, params};

use super::SqlResultExt;
use super::events::emit_reachability_change;
use super::users;
use super::writer::Tx;
use crate::domain::Result;
use crate::domain::presence::{
    Cause, PersistedSession, PresenceBatch, PresenceSnapshot, SessionEnd, Transition, Transport,
};
use crate::domain::reachability::{TransitionPlan, plan_transition};
use crate::domain::user::UserKey;

/// Applies a batch: the session-table changes, then the transitions in order (an offline
/// transition removes the rows its user's ended sessions kept, so those go after the marks).
pub fn commit(tx: &mut Tx<'_>, batch: &PresenceBatch) -> Result<()> {
    for s in &batch.sessions.upserts {
        tx.prepare_cached(
            "INSERT INTO sessions (id, service_sid, identity, transport, endpoint, created_at, last_ping_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO UPDATE SET \
             last_ping_at = excluded.last_ping_at, expires_at = excluded.expires_at",
        )
        .db()?
        .execute(params![
            s.id as i64,
            s.service_sid,
            s.identity,
            s.transport.as_str(),
            s.endpoint,
            s.created_at,
            s.last_ping_at,
            s.expires_at,
        ])
        .db()?;
    }
    for id in &batch.sessions.deletes {
        tx.prepare_cached("DELETE FROM sessions WHERE id = ?1")
            .db()?
            .execute([*id as i64])
            .db()?;
    }
    for end in &batch.sessions.ends {
        tx.prepare_cached("UPDATE sessions SET ended_at = ?2, end_cause = ?3 WHERE id = ?1")
            .db()?
            .execute(params![end.id as i64, end.at, end.cause.as_str()])
            .db()?;
    }
    for transition in &batch.transitions {
        if !transition.online {
            tx.prepare_cached(
                "DELETE FROM sessions WHERE service_sid = ?1 AND identity = ?2 AND ended_at IS NOT NULL",
            )
            .db()?
            .execute(params![&*transition.service_sid, &*transition.identity])
            .db()?;
        }
        apply_transition(tx, transition)?;
    }
    Ok(())
}

/// Stores a transition as [`plan_transition`] decides: only if it changes the user's stored
/// state in a service with reachability enabled (disabled services are silent, repeats are
/// idempotent).
///
/// A session opening is a client's first contact: a user that does not exist yet is created
/// first (with its `user.added` event), in the same transaction — so a burst of first contacts
/// costs one batched write, not one write per user.
fn apply_transition(tx: &mut Tx<'_>, t: &Transition) -> Result<()> {
    let enabled: Option<bool> = tx
        .prepare_cached("SELECT reachability_enabled FROM services WHERE sid = ?1")
        .db()?
        .query_row([&*t.service_sid], |r| r.get(0))
        .optional()
        .db()?;
    let key = UserKey::Identity(t.identity.to_string());
    let mut user = users::get(tx, &t.service_sid, &key)?;
    let change = loop {
        match plan_transition(enabled, user.as_ref(), t) {
            TransitionPlan::Skip => return Ok(()),
            TransitionPlan::Apply(change) => break *change,
            TransitionPlan::CreateUser if user.is_none() => {
                user = Some(users::ensure(tx, &t.service_sid, &t.identity)?.0);
            }
            // Unreachable (the plan asks for a user only when there is none); never loop.
            TransitionPlan::CreateUser => return Ok(()),
        }
    };
    let state = &change.user.reachability;
    tx.prepare_cached(
        "UPDATE users SET is_online = ?2, last_seen = ?3, online_since = ?4 WHERE sid = ?1",
    )
    .db()?
    .execute(params![
        change.user.sid,
        state.is_online,
        state.last_seen,
        state.online_since
    ])
    .db()?;
    emit_reachability_change(tx, change)
}

pub fn snapshot(conn: &Connection) -> Result<PresenceSnapshot> {
    let sessions = conn
        .prepare("SELECT id, service_sid, identity, transport, endpoint, created_at, last_ping_at, expires_at FROM sessions WHERE ended_at IS NULL")
        .db()?
        .query_map([], |r| {
            Ok(PersistedSession {
                id: r.get::<_, i64>(0)? as u64,
                service_sid: r.get(1)?,
                identity: r.get(2)?,
                transport: Transport::parse(&r.get::<_, String>(3)?),
                endpoint: r.get(4)?,
                created_at: r.get(5)?,
                last_ping_at: r.get(6)?,
                expires_at: r.get(7)?,
            })
        })
        .db()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db()?;
    let online_users = conn
        .prepare("SELECT service_sid, identity FROM users WHERE is_online = 1")
        .db()?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .db()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db()?;
    let ended = conn
        .prepare(
            "SELECT id, service_sid, identity, ended_at, end_cause FROM sessions WHERE ended_at IS NOT NULL",
        )
        .db()?
        .query_map([], |r| {
            Ok(SessionEnd {
                id: r.get::<_, i64>(0)? as u64,
                service_sid: r.get(1)?,
                identity: r.get(2)?,
                at: r.get(3)?,
                cause: Cause::parse(&r.get::<_, String>(4)?).unwrap_or(Cause::SessionTimeout),
            })
        })
        .db()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db()?;
    Ok(PresenceSnapshot {
        sessions,
        online_users,
        ended,
    })
}
