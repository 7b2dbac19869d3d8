//! Storage for the presence runtime on PostgreSQL: applying transitions (with their events)
//! and keeping the sessions table, and the snapshot a restart resumes from.
//!
//! Session ids are random `u64`s; they are stored in the BIGINT `id` column by two's-complement
//! reinterpretation ([`u64::cast_signed`], undone by [`i64::cast_unsigned`]) — lossless both
//! ways and the same stored value as the SQLite backend.
//!
//! May depend on: postgres, domain, pg::{events, users, writer}.

use super::statements::Sql;

use super::PgResultExt;
use super::events::emit_reachability_change;
use super::users;
use super::writer::Tx;
use crate::domain::cluster::MemberId;
use crate::domain::presence::{
    Cause, PersistedSession, PresenceBatch, PresenceSnapshot, SessionEnd, Transition, Transport,
};
use crate::domain::reachability::{TransitionPlan, plan_transition};
use crate::domain::user::UserKey;
use crate::domain::{Error, Result};

/// Applies a batch: the session-table changes, then the transitions in order (an offline
/// transition removes the rows its user's ended sessions kept, so those go after the marks).
///
/// In cluster mode (`batch.member`), only while the member's lease holds (else
/// [`Error::Fenced`], nothing written): the member's row is held FOR KEY SHARE until commit,
/// so a takeover (which deletes it) waits for this transaction or makes it fail. Session rows
/// are written only where the member holds them (a session that moved is another member's),
/// and transitions are decided across members on `presence_holds` (see [`apply_held`]).
pub fn commit(tx: &mut Tx<'_, '_>, batch: &PresenceBatch) -> Result<()> {
    let member = batch.member;
    if let Some(member) = member {
        fence(tx, member)?;
    }
    for s in &batch.sessions.upserts {
        tx.execute(
            "INSERT INTO sessions (id, service_sid, identity, transport, endpoint, created_at, last_ping_at, expires_at, member) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO UPDATE SET \
             last_ping_at = excluded.last_ping_at, expires_at = excluded.expires_at \
             WHERE sessions.member IS NOT DISTINCT FROM excluded.member",
            &[
                &s.id.cast_signed(),
                &s.service_sid,
                &s.identity,
                &s.transport.as_str(),
                &s.endpoint,
                &s.created_at,
                &s.last_ping_at,
                &s.expires_at,
                &member,
            ],
        )
        .db()?;
    }
    if !batch.sessions.deletes.is_empty() {
        let ids: Vec<i64> = batch
            .sessions
            .deletes
            .iter()
            .map(|id| id.cast_signed())
            .collect();
        tx.execute(
            "DELETE FROM sessions WHERE id = ANY($1) AND ($2::BIGINT IS NULL OR member = $2)",
            &[&ids, &member],
        )
        .db()?;
    }
    for end in &batch.sessions.ends {
        tx.execute(
            "UPDATE sessions SET ended_at = $2, end_cause = $3 \
             WHERE id = $1 AND ($4::BIGINT IS NULL OR member = $4)",
            &[&end.id.cast_signed(), &end.at, &end.cause.as_str(), &member],
        )
        .db()?;
    }
    for transition in &batch.transitions {
        if let Some(member) = member
            && !apply_held(tx, member, transition)?
        {
            continue;
        }
        if !transition.online {
            // The user's ended sessions (this member's, or a lost member's) go with them.
            tx.execute(
                "DELETE FROM sessions WHERE service_sid = $1 AND identity = $2 \
                 AND (ended_at IS NOT NULL OR member IS NULL) \
                 AND ($3::BIGINT IS NULL OR member IS NULL OR member = $3)",
                &[&&*transition.service_sid, &&*transition.identity, &member],
            )
            .db()?;
        }
        apply_transition(tx, transition)?;
    }
    Ok(())
}

/// Holds the member's row until commit, if its lease has not passed; else [`Error::Fenced`].
pub fn fence(tx: &mut Tx<'_, '_>, member: MemberId) -> Result<()> {
    let holds = tx
        .query_opt(
            "SELECT 1 FROM cluster_members WHERE member = $1 AND lease_until > now() FOR KEY SHARE",
            &[&member],
        )
        .db()?
        .is_some();
    if holds { Ok(()) } else { Err(Error::Fenced) }
}

/// A member's view of a user's transition becomes the user's only when it changes whether
/// any member holds the user: online takes (keeps) this member's hold, offline gives it up.
/// Returns whether the transition is the user's (online: always, storage skips a repeat;
/// offline: only when no other member holds the user). Writers' transactions are serialized
/// by the feed position row (see `writer`), so two members never decide on one user at once.
fn apply_held(tx: &mut Tx<'_, '_>, member: MemberId, t: &Transition) -> Result<bool> {
    let (service, identity) = (&*t.service_sid, &*t.identity);
    if t.online {
        tx.execute(
            "INSERT INTO presence_holds (service_sid, identity, member) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[&service, &identity, &member],
        )
        .db()?;
        return Ok(true);
    }
    tx.execute(
        "DELETE FROM presence_holds WHERE service_sid = $1 AND identity = $2 AND member = $3",
        &[&service, &identity, &member],
    )
    .db()?;
    let held_elsewhere: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM presence_holds WHERE service_sid = $1 AND identity = $2)",
            &[&service, &identity],
        )
        .db()?
        .try_get(0)
        .db()?;
    Ok(!held_elsewhere)
}

/// Stores a transition as [`plan_transition`] decides: only if it changes the user's stored
/// state in a service with reachability enabled (disabled services are silent, repeats are
/// idempotent).
///
/// A session opening is a client's first contact: a user that does not exist yet is created
/// first (with its `user.added` event), in the same transaction — so a burst of first contacts
/// costs one batched write, not one write per user.
fn apply_transition(tx: &mut Tx<'_, '_>, t: &Transition) -> Result<()> {
    let enabled: Option<bool> = tx
        .query_opt(
            "SELECT reachability_enabled FROM services WHERE sid = $1",
            &[&&*t.service_sid],
        )
        .db()?
        .map(|r| r.try_get(0))
        .transpose()
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
    tx.execute(
        "UPDATE users SET is_online = $2, last_seen = $3, online_since = $4 WHERE sid = $1",
        &[
            &change.user.sid,
            &state.is_online,
            &state.last_seen,
            &state.online_since,
        ],
    )
    .db()?;
    emit_reachability_change(tx, change)
}

/// The columns [`session_from_row`] reads, in its order.
pub const SESSION_COLUMNS: &str =
    "id, service_sid, identity, transport, endpoint, created_at, last_ping_at, expires_at";

pub fn session_from_row(r: &postgres::Row) -> Result<PersistedSession> {
    let transport: String = r.try_get(3).db()?;
    Ok(PersistedSession {
        id: r.try_get::<_, i64>(0).db()?.cast_unsigned(),
        service_sid: r.try_get(1).db()?,
        identity: r.try_get(2).db()?,
        transport: Transport::parse(&transport),
        endpoint: r.try_get(4).db()?,
        created_at: r.try_get(5).db()?,
        last_ping_at: r.try_get(6).db()?,
        expires_at: r.try_get(7).db()?,
    })
}

/// The columns [`end_from_row`] reads, in its order.
pub const END_COLUMNS: &str = "id, service_sid, identity, ended_at, end_cause";

pub fn end_from_row(r: &postgres::Row) -> Result<SessionEnd> {
    let cause: Option<String> = r.try_get(4).db()?;
    Ok(SessionEnd {
        id: r.try_get::<_, i64>(0).db()?.cast_unsigned(),
        service_sid: r.try_get(1).db()?,
        identity: r.try_get(2).db()?,
        at: r.try_get(3).db()?,
        cause: cause
            .as_deref()
            .and_then(Cause::parse)
            .unwrap_or(Cause::SessionTimeout),
    })
}

pub fn snapshot(client: &mut impl Sql) -> Result<PresenceSnapshot> {
    let sessions = client
        .query(
            &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE ended_at IS NULL"),
            &[],
        )
        .db()?
        .iter()
        .map(session_from_row)
        .collect::<Result<Vec<_>>>()?;
    let online_users = client
        .query(
            "SELECT service_sid, identity FROM users WHERE is_online",
            &[],
        )
        .db()?
        .iter()
        .map(|r| Ok((r.try_get(0).db()?, r.try_get(1).db()?)))
        .collect::<Result<Vec<_>>>()?;
    let ended = client
        .query(
            &format!("SELECT {END_COLUMNS} FROM sessions WHERE ended_at IS NOT NULL"),
            &[],
        )
        .db()?
        .iter()
        .map(end_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(PresenceSnapshot {
        sessions,
        online_users,
        ended,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::presence::SessionFlush;
    use crate::pg::events::test_db::{TestDb, fresh_database};

    fn session(service_sid: &str, identity: &str, id: u64) -> PersistedSession {
        PersistedSession {
            id,
            service_sid: service_sid.into(),
            identity: identity.into(),
            transport: Transport::WebSocket,
            endpoint: None,
            created_at: 10,
            last_ping_at: 20,
            expires_at: 30,
        }
    }

    fn transition(service_sid: &str, identity: &str, online: bool, cause: Cause) -> Transition {
        Transition {
            service_sid: Arc::from(service_sid),
            identity: Arc::from(identity),
            online,
            cause,
            at: 100,
            last_seen: 90,
            session_count: u32::from(online),
        }
    }

    fn commit_batch(db: &TestDb, batch: PresenceBatch) {
        db.write(move |tx| commit(tx, &batch)).expect("commit");
    }

    fn event_count(db: &TestDb) -> i64 {
        db.client()
            .query_one("SELECT count(*) FROM events", &[])
            .expect("count")
            .get(0)
    }

    #[test]
    fn a_transition_applies_once_and_a_repeat_changes_nothing() {
        let Some(db) = fresh_database() else { return };
        let service = db.service(true, None);
        // Large ids survive the BIGINT column.
        let id = u64::MAX - 7;
        let opened = PresenceBatch {
            member: None,
            transitions: vec![transition(&service, "carol", true, Cause::SessionOpened)],
            sessions: SessionFlush {
                upserts: vec![session(&service, "carol", id)],
                ..Default::default()
            },
        };
        commit_batch(&db, opened.clone());
        // First contact created the user (user.added) and then brought it online.
        let user = db.load_user(&service, "carol");
        assert_eq!(user.reachability.is_online, Some(true));
        assert_eq!(user.reachability.online_since, Some(100));
        assert_eq!(user.reachability.sequence, 2);
        assert_eq!(event_count(&db), 2);
        let snap = snapshot(&mut *db.client()).expect("snapshot");
        assert_eq!(snap.sessions, vec![session(&service, "carol", id)]);
        assert_eq!(snap.online_users, vec![(service.clone(), "carol".into())]);
        // The same transition again: stored state unchanged, no event.
        commit_batch(&db, opened);
        assert_eq!(db.load_user(&service, "carol").reachability.sequence, 2);
        assert_eq!(event_count(&db), 2);
        // The session ends; its row is kept, marked, until the offline transition.
        commit_batch(
            &db,
            PresenceBatch {
                member: None,
                transitions: Vec::new(),
                sessions: SessionFlush {
                    ends: vec![SessionEnd {
                        id,
                        service_sid: service.clone(),
                        identity: "carol".into(),
                        at: 95,
                        cause: Cause::SessionClosed,
                    }],
                    ..Default::default()
                },
            },
        );
        let snap = snapshot(&mut *db.client()).expect("snapshot");
        assert!(snap.sessions.is_empty());
        assert_eq!(snap.ended.len(), 1);
        assert_eq!(
            (snap.ended[0].id, snap.ended[0].cause),
            (id, Cause::SessionClosed)
        );
        let offline = PresenceBatch {
            member: None,
            transitions: vec![transition(&service, "carol", false, Cause::SessionClosed)],
            sessions: SessionFlush::default(),
        };
        commit_batch(&db, offline.clone());
        let user = db.load_user(&service, "carol");
        assert_eq!(user.reachability.is_online, Some(false));
        assert_eq!(user.reachability.online_since, None);
        assert_eq!(user.reachability.last_seen, Some(90));
        assert_eq!(event_count(&db), 3);
        let snap = snapshot(&mut *db.client()).expect("snapshot");
        assert!(snap.ended.is_empty() && snap.online_users.is_empty());
        commit_batch(&db, offline);
        assert_eq!(event_count(&db), 3, "a repeat changes nothing");
        let last = db
            .client()
            .query_one(
                "SELECT type, cause, is_online, session_count FROM events ORDER BY id DESC LIMIT 1",
                &[],
            )
            .expect("event");
        assert_eq!(last.get::<_, String>(0), "user.reachability_updated");
        assert_eq!(
            last.get::<_, Option<String>>(1).as_deref(),
            Some("session_closed")
        );
        assert_eq!(last.get::<_, Option<bool>>(2), Some(false));
        assert_eq!(last.get::<_, Option<i64>>(3), Some(0));
    }

    #[test]
    fn disabled_services_and_unknown_users_are_silent() {
        let Some(db) = fresh_database() else { return };
        let disabled = db.service(false, None);
        db.user(&disabled, "dave");
        let enabled = db.service(true, None);
        commit_batch(
            &db,
            PresenceBatch {
                member: None,
                transitions: vec![
                    transition(&disabled, "dave", true, Cause::SessionOpened),
                    // Not a first contact: no user is created.
                    transition(&enabled, "erin", false, Cause::SessionTimeout),
                ],
                sessions: SessionFlush {
                    upserts: vec![session(&disabled, "dave", 1)],
                    deletes: vec![2],
                    ..Default::default()
                },
            },
        );
        assert_eq!(event_count(&db), 0);
        assert_eq!(db.load_user(&disabled, "dave").reachability.is_online, None);
        let mut client = db.client();
        let users: i64 = client
            .query_one("SELECT count(*) FROM users", &[])
            .expect("count")
            .get(0);
        assert_eq!(users, 1);
        drop(client);
        commit_batch(
            &db,
            PresenceBatch {
                member: None,
                transitions: Vec::new(),
                sessions: SessionFlush {
                    deletes: vec![1],
                    ..Default::default()
                },
            },
        );
        assert!(
            snapshot(&mut *db.client())
                .expect("snapshot")
                .sessions
                .is_empty()
        );
    }
}
