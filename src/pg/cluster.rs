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
        self.lease.run(move |client| {
            let mut tx = client.transaction().db()?;
            for s in &sessions {
                tx.execute(
                    "UPDATE sessions SET last_ping_at = $2, expires_at = $3 \
                     WHERE id = $1 AND member = $4",
                    &[&s.id.cast_signed(), &s.last_ping_at, &s.expires_at, &member],
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
        })
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
}
