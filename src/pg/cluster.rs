//! [`ClusterStore`] on PostgreSQL: members and their leases (`cluster_members`), takeovers, and
//! session claims. Leases are renewed and compared on the database's clock (`now()`), never
//! on a node's. Lease work runs on its own connection (`lease`), so that a busy writer queue
//! never delays a renewal; claims go through the writer like every presence change.
//!
//! Invariants:
//! - A member's row exists while its lease is held; a takeover deletes it only once
//!   `lease_until` has passed, in the transaction that moves the member's holds and sessions,
//!   and waits for any transaction of that member still holding its row (FOR KEY SHARE, see
//!   `presence::fence`). After that, every commit of the lost member fails: it is fenced.
//! - The taker's own lease is checked (and its row held) in the takeover's transaction.
//!
//! May depend on: postgres, domain, pg::{presence, reads, writer}.

use std::collections::HashSet;

use super::PgResultExt;
use super::presence::{END_COLUMNS, SESSION_COLUMNS, end_from_row, session_from_row};
use super::reads::Reads;
use super::writer::Writer;
use crate::domain::cluster::{ClusterStore, MemberId, Renewal, Takeover, UserRef};
use crate::domain::presence::{PersistedSession, PresenceSnapshot};
use crate::domain::store::WriteFuture;
use crate::domain::{Error, Result};

pub struct PgCluster {
    lease: Reads,
    writer: Writer,
}

impl PgCluster {
    /// `lease`: a reader over connections of its own (not the store's readers).
    pub fn new(lease: Reads, writer: Writer) -> Self {
        PgCluster { lease, writer }
    }
}

const LEASE: &str = "$2::BIGINT * interval '1 millisecond'";

fn user_refs(rows: &[postgres::Row]) -> Result<Vec<UserRef>> {
    rows.iter()
        .map(|r| Ok((r.try_get(0).db()?, r.try_get(1).db()?)))
        .collect()
}

impl ClusterStore for PgCluster {
    fn join(&self, node_id: &str, lease_ms: u64) -> Result<(MemberId, Vec<UserRef>)> {
        let (node_id, lease_ms) = (node_id.to_string(), lease_ms as i64);
        self.lease.run(move |client| {
            let mut tx = client.transaction().db()?;
            let member: MemberId = tx
                .query_one(
                    &format!(
                        "INSERT INTO cluster_members (node_id, lease_until, lease_ms) \
                         VALUES ($1, now() + {LEASE}, $2) RETURNING member"
                    ),
                    &[&node_id, &lease_ms],
                )
                .db()?
                .try_get(0)
                .db()?;
            // Users stored online that nobody holds (a copied or upgraded database).
            let orphans = tx
                .query(
                    "INSERT INTO presence_holds (service_sid, identity, member) \
                     SELECT u.service_sid, u.identity, $1 FROM users u WHERE u.is_online \
                     AND NOT EXISTS (SELECT 1 FROM presence_holds h \
                                     WHERE h.service_sid = u.service_sid AND h.identity = u.identity) \
                     ON CONFLICT DO NOTHING RETURNING service_sid, identity",
                    &[&member],
                )
                .db()?;
            let orphans = user_refs(&orphans)?;
            tx.commit().db()?;
            Ok((member, orphans))
        })
    }

    fn renew(&self, member: MemberId, lease_ms: u64) -> Result<Renewal> {
        let lease_ms = lease_ms as i64;
        self.lease.run(move |client| {
            let renewed = client
                .execute(
                    &format!(
                        "UPDATE cluster_members SET lease_until = now() + {LEASE}, lease_ms = $2 \
                         WHERE member = $1 AND lease_until > now() AND NOT stopped"
                    ),
                    &[&member, &lease_ms],
                )
                .db()?;
            if renewed == 0 {
                return Ok(Renewal::Fenced);
            }
            let others = client
                .query(
                    "SELECT member, \
                     (extract(epoch FROM lease_until - clock_timestamp()) * 1000)::BIGINT \
                     FROM cluster_members WHERE member <> $1",
                    &[&member],
                )
                .db()?
                .iter()
                .map(|r| Ok((r.try_get(0).db()?, r.try_get(1).db()?)))
                .collect::<Result<Vec<_>>>()?;
            Ok(Renewal::Renewed { others })
        })
    }

    fn take_over(&self, me: MemberId, lost: MemberId) -> Result<Option<Takeover>> {
        self.lease.run(move |client| take_over(client, me, lost))
    }

    fn leave(&self, member: MemberId, sessions: Vec<PersistedSession>) -> Result<()> {
        self.lease
            .run(move |client| leave(client, member, &sessions))
    }

    fn claim_session(
        &self,
        me: MemberId,
        id: u64,
        service_sid: &str,
        identity: &str,
    ) -> WriteFuture<Option<PersistedSession>> {
        let (service_sid, identity) = (service_sid.to_string(), identity.to_string());
        self.writer.submit(move |tx| {
            super::presence::fence(tx, me)?;
            let moved = tx
                .query_opt(
                    &format!(
                        "WITH old AS (SELECT id, member FROM sessions \
                           WHERE id = $1 AND service_sid = $2 AND identity = $3 \
                           AND ended_at IS NULL AND member IS DISTINCT FROM $4 FOR UPDATE) \
                         UPDATE sessions s SET member = $4 FROM old WHERE s.id = old.id \
                         RETURNING {}, old.member",
                        qualified("s", SESSION_COLUMNS)
                    ),
                    &[&id.cast_signed(), &service_sid, &identity, &me],
                )
                .db()?;
            let Some(row) = moved else { return Ok(None) };
            let session = session_from_row(&row)?;
            let from: Option<MemberId> = row.try_get(8).db()?;
            // Held here before the old holder lets go: the user stays online throughout.
            tx.execute(
                "INSERT INTO presence_holds (service_sid, identity, member) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&service_sid, &identity, &me],
            )
            .db()?;
            if let Some(from) = from {
                tx.execute(
                    "SELECT pg_notify('reachd_sessions', $1)",
                    &[&format!("{id} {from}")],
                )
                .db()?;
            }
            Ok(Some(session))
        })
    }

    fn held_sessions(&self, member: MemberId) -> Result<HashSet<u64>> {
        self.lease.run(move |client| {
            client
                .query(
                    "SELECT id FROM sessions WHERE member = $1 AND ended_at IS NULL",
                    &[&member],
                )
                .db()?
                .iter()
                .map(|r| Ok(r.try_get::<_, i64>(0).db()?.cast_unsigned()))
                .collect()
        })
    }
}

/// Most sessions stored by one statement when a member leaves.
const LEAVE_CHUNK: usize = 10_000;

/// A graceful leave, in one transaction: `member`'s live sessions keep their last pings and
/// expiries (to be resumed through another member), then its lease ends and the other members
/// are told. The sessions are stored set-based, [`LEAVE_CHUNK`] per statement: one statement
/// per session cost 0.33 ms each, 33 s for a node holding 100,000, beyond a supervisor's
/// patience with a stopping process.
fn leave(
    client: &mut postgres::Client,
    member: MemberId,
    sessions: &[PersistedSession],
) -> Result<()> {
    let mut tx = client.transaction().db()?;
    for chunk in sessions.chunks(LEAVE_CHUNK) {
        let ids: Vec<i64> = chunk.iter().map(|s| s.id.cast_signed()).collect();
        let pings: Vec<i64> = chunk.iter().map(|s| s.last_ping_at).collect();
        let expiries: Vec<i64> = chunk.iter().map(|s| s.expires_at).collect();
        tx.execute(
            "UPDATE sessions s SET last_ping_at = v.ping, expires_at = v.expiry \
             FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[]) AS v(id, ping, expiry) \
             WHERE s.id = v.id AND s.member = $4",
            &[&ids, &pings, &expiries, &member],
        )
        .db()?;
    }
    tx.execute(
        "UPDATE cluster_members SET lease_until = now(), stopped = TRUE WHERE member = $1",
        &[&member],
    )
    .db()?;
    tx.execute(
        "SELECT pg_notify('reachd_members', $1)",
        &[&member.to_string()],
    )
    .db()?;
    tx.commit().db()
}

/// `columns` prefixed with `table.`.
fn qualified(table: &str, columns: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn take_over(
    client: &mut postgres::Client,
    me: MemberId,
    lost: MemberId,
) -> Result<Option<Takeover>> {
    let mut tx = client.transaction().db()?;
    let mine = tx
        .query_opt(
            "SELECT 1 FROM cluster_members WHERE member = $1 AND lease_until > now() FOR KEY SHARE",
            &[&me],
        )
        .db()?;
    if mine.is_none() {
        return Err(Error::Fenced);
    }
    let Some(row) = tx
        .query_opt(
            "DELETE FROM cluster_members WHERE member = $1 AND lease_until <= now() \
             RETURNING stopped, \
             (extract(epoch FROM lease_until) * 1000)::BIGINT - lease_ms",
            &[&lost],
        )
        .db()?
    else {
        return Ok(None);
    };
    let graceful: bool = row.try_get(0).db()?;
    let last_renewal: i64 = row.try_get(1).db()?;
    let users = tx
        .query(
            "DELETE FROM presence_holds WHERE member = $1 RETURNING service_sid, identity",
            &[&lost],
        )
        .db()?;
    let users = user_refs(&users)?;
    tx.execute(
        "INSERT INTO presence_holds (service_sid, identity, member) \
         SELECT s, i, $3 FROM unnest($1::TEXT[], $2::TEXT[]) AS u(s, i) ON CONFLICT DO NOTHING",
        &[
            &users.iter().map(|u| u.0.as_str()).collect::<Vec<_>>(),
            &users.iter().map(|u| u.1.as_str()).collect::<Vec<_>>(),
            &me,
        ],
    )
    .db()?;
    // Ended sessions (inside their user's grace) come here, for their end's time and cause.
    let ended = tx
        .query(
            &format!(
                "UPDATE sessions SET member = $2 WHERE member = $1 AND ended_at IS NOT NULL \
                 RETURNING {END_COLUMNS}"
            ),
            &[&lost, &me],
        )
        .db()?
        .iter()
        .map(end_from_row)
        .collect::<Result<Vec<_>>>()?;
    // Live sessions: a member that left wrote their expiries, and they resume here; a lost
    // member's are stale (its pings lived in its memory): anyone may resume them until their
    // user goes offline.
    let sessions = if graceful {
        tx.query(
            &format!(
                "UPDATE sessions SET member = $2 WHERE member = $1 RETURNING {SESSION_COLUMNS}"
            ),
            &[&lost, &me],
        )
        .db()?
        .iter()
        .map(session_from_row)
        .collect::<Result<Vec<_>>>()?
    } else {
        tx.execute(
            "UPDATE sessions SET member = NULL WHERE member = $1",
            &[&lost],
        )
        .db()?;
        Vec::new()
    };
    tx.commit().db()?;
    Ok(Some(Takeover {
        lost,
        graceful,
        users,
        last_seen: last_renewal,
        snapshot: PresenceSnapshot {
            sessions,
            online_users: Vec::new(),
            ended,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_qualified_one_by_one() {
        assert_eq!(qualified("s", "id, identity"), "s.id, s.identity");
    }

    fn session(id: u64, last_ping_at: i64) -> PersistedSession {
        PersistedSession {
            id,
            service_sid: "IS0123456789abcdef0123456789abcdef".into(),
            identity: format!("user{id}"),
            transport: crate::domain::presence::Transport::Http,
            endpoint: None,
            created_at: 1_000,
            last_ping_at,
            expires_at: last_ping_at + 60_000,
        }
    }

    #[test]
    fn leaving_stores_its_own_sessions_expiries_and_ends_its_lease() {
        let Some(mut db) = super::super::services::test_db::fresh_database() else {
            return;
        };
        let c = &mut db.client;
        let mut members = Vec::new();
        for node in ["leaving", "staying"] {
            let row = c
                .query_one(
                    "INSERT INTO cluster_members (node_id, lease_until, lease_ms) \
                     VALUES ($1, now() + interval '1 minute', 60000) RETURNING member",
                    &[&node],
                )
                .expect("member");
            members.push(row.get::<_, i64>(0));
        }
        let (leaving, staying) = (members[0], members[1]);
        // More sessions than one statement stores: all held by the leaving member but the
        // last one, held by the other; all last pinged at 2,000 as stored.
        let count = LEAVE_CHUNK + 2;
        c.execute(
            "INSERT INTO sessions (id, service_sid, identity, transport, created_at, \
             last_ping_at, expires_at, member) \
             SELECT g, 'IS0', 'u' || g, 'http', 1000, 2000, 62000, \
                    CASE WHEN g = $1 THEN $3::BIGINT ELSE $2::BIGINT END \
             FROM generate_series(1, $1::BIGINT) AS g",
            &[&(count as i64), &leaving, &staying],
        )
        .expect("sessions");
        // What the leaving member holds in memory: later pings, and a session it believes
        // it holds that the other member has (it must not be written).
        let sessions: Vec<_> = (1..=count as u64)
            .map(|id| session(id, 5_000 + id as i64))
            .collect();
        leave(c, leaving, &sessions).expect("leave");
        let rows = c
            .query(
                "SELECT id, last_ping_at, expires_at FROM sessions ORDER BY id",
                &[],
            )
            .expect("sessions");
        assert_eq!(rows.len(), count);
        for row in &rows {
            let (id, ping, expiry): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            if id as usize == count {
                assert_eq!((ping, expiry), (2_000, 62_000), "another member's session");
            } else {
                assert_eq!((ping, expiry), (5_000 + id, 65_000 + id), "session {id}");
            }
        }
        let ended = c
            .query(
                "SELECT member FROM cluster_members WHERE stopped AND lease_until <= now() \
                 ORDER BY member",
                &[],
            )
            .expect("members");
        let ended: Vec<i64> = ended.iter().map(|r| r.get(0)).collect();
        assert_eq!(ended, vec![leaving]);
    }
}
