//! Storage for the presence runtime on PostgreSQL: applying transitions (with their events)
//! and keeping the sessions table, and the snapshot a restart resumes from.
//!
//! Session ids are random `u64`s; they are stored in the BIGINT `id` column by two's-complement
//! reinterpretation ([`u64::cast_signed`], undone by [`i64::cast_unsigned`]) — lossless both
//! ways and the same stored value as the SQLite backend.
//!
//! May depend on: postgres, domain, pg::{transitions, writer}.

use super::statements::Sql;

use std::collections::{HashMap, HashSet};

use super::PgResultExt;
use super::transitions;
use super::writer::Tx;
use crate::domain::cluster::MemberId;
use crate::domain::presence::{
    Cause, PersistedSession, PresenceBatch, PresenceSnapshot, SessionEnd, Transition, Transport,
};
use crate::domain::{Error, Result};

/// Applies a batch: the session-table changes, then the transitions in order (an offline
/// transition removes the rows its user's ended sessions kept, so those go after the marks).
/// Each step is one set-based statement (or a few), whatever the batch's size.
///
/// In cluster mode (`batch.member`), only while the member's lease holds (else
/// [`Error::Fenced`], nothing written): the member's row is held FOR KEY SHARE until commit,
/// so a takeover (which deletes it) waits for this transaction or makes it fail. Session rows
/// are written only where the member holds them (a session that moved is another member's),
/// and transitions are decided across members on `presence_holds` (see [`decide_held`]).
pub fn commit(tx: &mut Tx<'_, '_>, batch: &PresenceBatch) -> Result<()> {
    let member = batch.member;
    if let Some(member) = member {
        fence(tx, member)?;
    }
    upsert_sessions(tx, &batch.sessions.upserts, member)?;
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
    end_sessions(tx, &batch.sessions.ends, member)?;
    let theirs: Vec<&Transition> = match member {
        Some(member) => decide_held(tx, member, &batch.transitions)?,
        None => batch.transitions.iter().collect(),
    };
    // The ended sessions of users going offline (this member's, or a lost member's) go with
    // them.
    let offline: Vec<&Transition> = theirs.iter().copied().filter(|t| !t.online).collect();
    if !offline.is_empty() {
        tx.execute(
            "DELETE FROM sessions USING unnest($1::TEXT[], $2::TEXT[]) AS u(s, i) \
             WHERE sessions.service_sid = u.s AND sessions.identity = u.i \
             AND (sessions.ended_at IS NOT NULL OR sessions.member IS NULL) \
             AND ($3::BIGINT IS NULL OR sessions.member IS NULL OR sessions.member = $3)",
            &[
                &offline.iter().map(|t| &*t.service_sid).collect::<Vec<_>>(),
                &offline.iter().map(|t| &*t.identity).collect::<Vec<_>>(),
                &member,
            ],
        )
        .db()?;
    }
    transitions::store(tx, &theirs)
}

/// The last of each session's entries in `items` (a batch may carry one session twice, and
/// one statement may change a row only once), in the order of their first entries.
fn last_of_each<T>(items: &[T], id: impl Fn(&T) -> u64) -> Vec<&T> {
    let mut last: HashMap<u64, usize> = HashMap::with_capacity(items.len());
    for (at, item) in items.iter().enumerate() {
        last.insert(id(item), at);
    }
    let mut kept: Vec<usize> = last.into_values().collect();
    kept.sort_unstable();
    kept.into_iter().map(|at| &items[at]).collect()
}

/// Inserts the batch's new sessions and stores the expiries of its pinged ones, in one
/// statement; a row another member holds now is left alone.
fn upsert_sessions(
    tx: &mut Tx<'_, '_>,
    upserts: &[PersistedSession],
    member: Option<MemberId>,
) -> Result<()> {
    if upserts.is_empty() {
        return Ok(());
    }
    let rows = last_of_each(upserts, |s| s.id);
    tx.execute(
        "INSERT INTO sessions (id, service_sid, identity, transport, endpoint, created_at, last_ping_at, expires_at, member) \
         SELECT u.*, $9 FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
         $6::BIGINT[], $7::BIGINT[], $8::BIGINT[]) AS u \
         ON CONFLICT (id) DO UPDATE SET \
         last_ping_at = excluded.last_ping_at, expires_at = excluded.expires_at \
         WHERE sessions.member IS NOT DISTINCT FROM excluded.member",
        &[
            &rows.iter().map(|s| s.id.cast_signed()).collect::<Vec<_>>(),
            &rows.iter().map(|s| s.service_sid.as_str()).collect::<Vec<_>>(),
            &rows.iter().map(|s| s.identity.as_str()).collect::<Vec<_>>(),
            &rows.iter().map(|s| s.transport.as_str()).collect::<Vec<_>>(),
            &rows.iter().map(|s| s.endpoint.as_deref()).collect::<Vec<_>>(),
            &rows.iter().map(|s| s.created_at).collect::<Vec<_>>(),
            &rows.iter().map(|s| s.last_ping_at).collect::<Vec<_>>(),
            &rows.iter().map(|s| s.expires_at).collect::<Vec<_>>(),
            &member,
        ],
    )
    .db()?;
    Ok(())
}

/// Marks the batch's ended sessions (the member's own rows only), in one statement.
fn end_sessions(tx: &mut Tx<'_, '_>, ends: &[SessionEnd], member: Option<MemberId>) -> Result<()> {
    if ends.is_empty() {
        return Ok(());
    }
    let rows = last_of_each(ends, |e| e.id);
    tx.execute(
        "UPDATE sessions SET ended_at = e.at, end_cause = e.cause \
         FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[]) AS e(id, at, cause) \
         WHERE sessions.id = e.id AND ($4::BIGINT IS NULL OR sessions.member = $4)",
        &[
            &rows.iter().map(|e| e.id.cast_signed()).collect::<Vec<_>>(),
            &rows.iter().map(|e| e.at).collect::<Vec<_>>(),
            &rows.iter().map(|e| e.cause.as_str()).collect::<Vec<_>>(),
            &member,
        ],
    )
    .db()?;
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

/// Which of a member's transitions are their users' own. A member's view of a user's
/// transition becomes the user's only when it changes whether any member holds the user:
/// online takes (keeps) this member's hold and is the user's (storage skips a repeat);
/// offline gives the hold up and is the user's only when no other member holds the user.
/// Writers' transactions are serialized by the feed position row (see `writer`), so two
/// members never decide on one user at once.
///
/// Set-based, in rounds: round k takes each user's k-th transition of the batch (a user's
/// transitions must be decided in their order; different users' are independent), with one
/// statement for the round's online transitions and two for its offline ones. Returns the
/// user's transitions in the batch's order.
fn decide_held<'t>(
    tx: &mut Tx<'_, '_>,
    member: MemberId,
    transitions: &'t [Transition],
) -> Result<Vec<&'t Transition>> {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    let round_of: Vec<usize> = transitions
        .iter()
        .map(|t| {
            let count = seen.entry((&*t.service_sid, &*t.identity)).or_insert(0);
            *count += 1;
            *count - 1
        })
        .collect();
    let rounds = round_of.iter().max().map_or(0, |last| last + 1);
    let mut theirs = vec![false; transitions.len()];
    for round in 0..rounds {
        let in_round = |online: bool| -> Vec<usize> {
            (0..transitions.len())
                .filter(|&i| round_of[i] == round && transitions[i].online == online)
                .collect()
        };
        let (online, offline) = (in_round(true), in_round(false));
        let services = |at: &[usize]| -> Vec<&str> {
            at.iter().map(|&i| &*transitions[i].service_sid).collect()
        };
        let identities =
            |at: &[usize]| -> Vec<&str> { at.iter().map(|&i| &*transitions[i].identity).collect() };
        if !online.is_empty() {
            tx.execute(
                "INSERT INTO presence_holds (service_sid, identity, member) \
                 SELECT s, i, $3 FROM unnest($1::TEXT[], $2::TEXT[]) AS u(s, i) ON CONFLICT DO NOTHING",
                &[&services(&online), &identities(&online), &member],
            )
            .db()?;
            for &i in &online {
                theirs[i] = true;
            }
        }
        if offline.is_empty() {
            continue;
        }
        let (s, i) = (services(&offline), identities(&offline));
        tx.execute(
            "DELETE FROM presence_holds h USING unnest($1::TEXT[], $2::TEXT[]) AS u(s, i) \
             WHERE h.service_sid = u.s AND h.identity = u.i AND h.member = $3",
            &[&s, &i, &member],
        )
        .db()?;
        let held_elsewhere: HashSet<(String, String)> = tx
            .query(
                "SELECT DISTINCT h.service_sid, h.identity FROM unnest($1::TEXT[], $2::TEXT[]) AS u(s, i) \
                 JOIN presence_holds h ON h.service_sid = u.s AND h.identity = u.i",
                &[&s, &i],
            )
            .db()?
            .iter()
            .map(|r| Ok((r.try_get(0).db()?, r.try_get(1).db()?)))
            .collect::<Result<_>>()?;
        for &at in &offline {
            let t = &transitions[at];
            let key = (t.service_sid.to_string(), t.identity.to_string());
            theirs[at] = !held_elsewhere.contains(&key);
        }
    }
    Ok(transitions
        .iter()
        .zip(theirs)
        .filter_map(|(t, mine)| mine.then_some(t))
        .collect())
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

    /// Two members of a deployment on `db`: this one (whose batches are committed) and
    /// another that already holds `held_elsewhere`.
    fn members(db: &TestDb, service: &str, held_elsewhere: &[&str]) -> MemberId {
        let mut client = db.client();
        let mut join = |node: &str| -> MemberId {
            client
                .query_one(
                    "INSERT INTO cluster_members (node_id, lease_until, lease_ms) \
                     VALUES ($1, now() + interval '1 hour', 10000) RETURNING member",
                    &[&node],
                )
                .expect("member")
                .get(0)
        };
        let (mine, other) = (join("mine"), join("other"));
        for identity in held_elsewhere {
            client
                .execute(
                    "INSERT INTO presence_holds (service_sid, identity, member) VALUES ($1, $2, $3)",
                    &[&service, identity, &other],
                )
                .expect("hold");
        }
        mine
    }

    /// What the database says after a run, without the values that differ between two
    /// databases (SIDs, clocks, tokens): events, users, deliveries and holds, in order.
    fn outcome(db: &TestDb) -> Vec<String> {
        let mut client = db.client();
        let mut rows = |sql: &str| -> Vec<String> {
            client
                .query(sql, &[])
                .expect("read")
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| format!("{:?}", r.get::<_, Option<String>>(i)))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect()
        };
        let mut all = rows(
            "SELECT identity, type, reasons, cause, sequence::TEXT, is_online::TEXT, \
             session_count::TEXT, last_seen::TEXT, source FROM events ORDER BY id",
        );
        all.extend(rows(
            "SELECT identity, is_online::TEXT, sequence::TEXT, last_seen::TEXT, online_since::TEXT \
             FROM users ORDER BY identity",
        ));
        all.extend(rows(
            "SELECT e.identity, e.sequence::TEXT, d.format, d.head::TEXT, d.status FROM deliveries d \
             JOIN events e ON e.id = d.event_id ORDER BY d.id",
        ));
        all.extend(rows(
            "SELECT identity, member::TEXT FROM presence_holds ORDER BY identity, member",
        ));
        all
    }

    #[test]
    fn a_batch_of_many_transitions_stores_what_one_at_a_time_does() {
        let (Some(together), Some(apart)) = (fresh_database(), fresh_database()) else {
            return;
        };
        let identities = ["u0", "u1", "u2", "u3", "u4", "u5"];
        // A user's transitions alternate, as the engine makes them; every user starts with
        // an opening (a first contact) except u5, whose offline transition must be silent.
        let mut state = 0x2545_f491_u64;
        let mut online = [false; 6];
        let mut transitions = vec![transition("S", "u5", false, Cause::SessionTimeout)];
        for step in 0..80 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let who = (state >> 33) as usize % 5;
            online[who] = !online[who];
            let cause = if online[who] {
                Cause::SessionOpened
            } else {
                Cause::SessionClosed
            };
            let mut t = transition("S", identities[who], online[who], cause);
            t.at = 1_000 + step;
            t.last_seen = 900 + step;
            transitions.push(t);
        }
        let run = |db: &TestDb, one_at_a_time: bool| {
            let service = db.service(true, Some("http://127.0.0.1:9/hook"));
            let member = members(db, &service, &["u0", "u1"]);
            let mine: Vec<Transition> = transitions
                .iter()
                .map(|t| Transition {
                    service_sid: Arc::from(service.as_str()),
                    ..t.clone()
                })
                .collect();
            let batches: Vec<Vec<Transition>> = if one_at_a_time {
                mine.into_iter().map(|t| vec![t]).collect()
            } else {
                vec![mine]
            };
            for transitions in batches {
                let batch = PresenceBatch {
                    member: Some(member),
                    transitions,
                    sessions: SessionFlush::default(),
                };
                commit_batch(db, batch);
            }
            outcome(db)
        };
        let (batched, single) = (run(&together, false), run(&apart, true));
        assert!(
            batched.len() > 80,
            "events, users and deliveries were written"
        );
        assert!(
            batched
                .iter()
                .any(|row| row.contains("\"true\"") && row.contains("\"u0\""))
        );
        assert_eq!(batched, single);
        // Every user, inserted by the batch or not, is stored as its last event left it.
        let stale: Vec<String> = together
            .client()
            .query(
                "SELECT u.identity FROM users u WHERE u.sequence IS DISTINCT FROM \
                 (SELECT max(e.sequence) FROM events e WHERE e.user_sid = u.sid) \
                 OR u.is_online IS DISTINCT FROM (SELECT e.is_online FROM events e \
                 WHERE e.user_sid = u.sid AND e.type = 'user.reachability_updated' \
                 ORDER BY e.id DESC LIMIT 1)",
                &[],
            )
            .expect("users")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(stale.is_empty(), "users not as their last event: {stale:?}");
        // Each queue's head is its oldest pending delivery, and the only one.
        let misplaced: i64 = together
            .client()
            .query_one(
                "SELECT count(*) FROM deliveries d WHERE d.head <> (d.id = (SELECT min(o.id) \
                 FROM deliveries o WHERE o.target = d.target AND o.user_sid = d.user_sid))",
                &[],
            )
            .expect("heads")
            .get(0);
        assert_eq!(misplaced, 0);
    }
}
