//! The transactional outbox on PostgreSQL: deliveries written in the same transaction as their
//! event, claimed by dispatchers (of any node) under leases one queue head at a time, and
//! their attempt log.
//!
//! Invariants:
//! - An event and its deliveries commit together (`enqueue_all` runs inside `events::emit_all`).
//! - Only the oldest pending delivery of each (target, user) queue is ever claimed, so
//!   deliveries reach a target in the user's sequence order; the next one waits until that one
//!   is delivered or has failed for good. That oldest one carries `head = TRUE`: set on insert
//!   when the queue has no pending delivery, and handed to the next one when it finishes — so
//!   finding due work is an index lookup, not a scan of every queue.
//! - Head bookkeeping is serialized per queue: the writers of several nodes may insert into
//!   and finish deliveries of the same queue concurrently, and under READ COMMITTED each would
//!   decide "is there a pending delivery?" on its own snapshot (two heads, or none). So
//!   [`fanout::insert`] and [`record`] first take the queue's transaction-scoped advisory
//!   lock (`lock_queue`), in a statement of its own, so that the statements after it see
//!   every committed change to that queue. The lock is held until commit. (Rare lock-order
//!   cycles between nodes — a queue lock and the feed row, see `events` — are broken by
//!   PostgreSQL's deadlock detector: one batch fails as "unavailable".)
//! - A claim is a lease held in the row (`lease_owner`, `lease_until`, both set or both NULL;
//!   only pending heads carry one). [`claim`] picks due heads whose lease is absent or expired
//!   with `FOR UPDATE SKIP LOCKED` and leases them in the same transaction: a head another
//!   claim (of this or another node) is taking is skipped rather than waited for, and once that
//!   claim commits, its lease excludes the row (PostgreSQL re-checks the condition on the
//!   locked row). So two dispatchers never hold a live lease on the same delivery, and never
//!   attempt it concurrently — unless an attempt outlives its lease.
//! - [`claim`] and [`record`] run on outbox writers (see `writer`), beside the feed writers:
//!   a claim never waits for a row (`SKIP LOCKED`), a record waits only for its queues' locks
//!   and its own deliveries' rows, under a lock timeout. Only a record that disables an
//!   endpoint takes the feed position's lock (first), since it changes what enqueueing reads.
//! - [`record`] changes a delivery only while the recording dispatcher still owns its lease
//!   (`WHERE id = $1 AND lease_owner = $2`), and clears the lease. A dispatcher whose lease was
//!   taken over records nothing: the new owner's outcome stands.
//! - If a dispatcher dies mid-attempt, its deliveries stay pending and leased until the lease
//!   expires; then any dispatcher claims them again (at least once; the idempotency token stays
//!   the same). A graceful stop [`release`]s the leases at once.
//! - A leased head is due again when its lease expires: its `next_attempt_at` was at most the
//!   claim time, so [`next_due`] counts leased heads at `lease_until`.
//!
//! May depend on: postgres, serde_json, domain, pg::{events, paging, writer}.

use std::collections::HashSet;

mod fanout;

use fanout::insert;
pub use fanout::{OutboxEvent, enqueue_all};

use postgres::Row;
use postgres::types::ToSql;

use super::statements::Sql;

use super::PgResultExt;
use super::events::{self, limit_arg};
use super::paging::{Arg, text};
use super::writer::Tx;
use crate::domain::event::{EventType, Source};
use crate::domain::fanout::NewDelivery;
use crate::domain::ids;
use crate::domain::service::ChatSettings;
use crate::domain::store::ServiceStats;
use crate::domain::time::{Millis, now_ms};
use crate::domain::webhook::{
    Attempt, AttemptOutcome, ClaimedDelivery, Delivery, DeliveryStatus, Format, Lease,
    endpoint_target,
};
use crate::domain::{Error, Result};

const COLUMNS: &str = "id, event_id, service_sid, user_sid, target, format, url, method, max_attempts, attempts, \
     status, next_attempt_at, idempotency_token, last_status, last_error, created_at, updated_at";

/// The first key of the queue locks (two-key advisory locks, a key space apart from the
/// one-key migration lock): "outb".
const QUEUE_LOCK_CLASS: i32 = 0x6f75_7462;

fn from_row(row: &Row) -> Result<Delivery> {
    delivery_at(row, 0)
}

/// A delivery from the columns of [`COLUMNS`] starting at `at` (joined reads).
fn delivery_at(row: &Row, at: usize) -> Result<Delivery> {
    let format: String = row.try_get(at + 5).db()?;
    let status: String = row.try_get(at + 10).db()?;
    Ok(Delivery {
        id: row.try_get(at).db()?,
        event_id: row.try_get(at + 1).db()?,
        service_sid: row.try_get(at + 2).db()?,
        user_sid: row.try_get(at + 3).db()?,
        target: row.try_get(at + 4).db()?,
        format: Format::parse(&format),
        url: row.try_get(at + 6).db()?,
        method: row.try_get(at + 7).db()?,
        max_attempts: row.try_get(at + 8).db()?,
        attempts: row.try_get(at + 9).db()?,
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
        next_attempt_at: row.try_get(at + 11).db()?,
        idempotency_token: row.try_get(at + 12).db()?,
        last_status: row.try_get(at + 13).db()?,
        last_error: row.try_get(at + 14).db()?,
        created_at: row.try_get(at + 15).db()?,
        updated_at: row.try_get(at + 16).db()?,
    })
}

/// Takes the (target, user) queue's advisory lock until the transaction ends.
fn lock_queue(client: &mut impl Sql, target: &str, user_sid: &str) -> Result<()> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2::text || ' ' || $3::text))",
            &[&QUEUE_LOCK_CLASS, &target, &user_sid],
        )
        .db()?;
    Ok(())
}

/// Takes the advisory locks of the queues of `delivery_ids` (those that exist), in one
/// statement, in the queues' order (so that two takers never wait on each other in a cycle).
fn lock_queues_of(client: &mut impl Sql, delivery_ids: &[i64]) -> Result<()> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock($1, hashtext(q.target || ' ' || q.user_sid)) \
             FROM (SELECT DISTINCT target, user_sid FROM deliveries WHERE id = ANY($2) \
                   ORDER BY target, user_sid) AS q",
            &[&QUEUE_LOCK_CLASS, &delivery_ids],
        )
        .db()?;
    Ok(())
}

/// Claims up to `limit` due queue heads whose lease is absent or expired, oldest due first,
/// leasing them to `lease.owner` until `lease.until`; returns them with their events. One
/// write job and one statement: the pick (`FOR UPDATE SKIP LOCKED`: rows another transaction
/// is claiming or recording right now are skipped, not waited for), the lease, and the read.
pub fn claim(
    tx: &mut Tx<'_, '_>,
    now: Millis,
    limit: usize,
    lease: &Lease,
) -> Result<Vec<ClaimedDelivery>> {
    // Planned once (see `claim_sql` on why its plan cannot depend on the values): planning
    // it for every claim cost a sixth of the claim (0.37 ms, `pg_stat_statements`).
    let rows = tx.with_generic_plans(|tx| {
        tx.query(
            claim_sql(),
            &[&now, &limit_arg(limit), &lease.owner, &lease.until],
        )
        .db()
    })?;
    rows.iter()
        .map(|row| {
            Ok(ClaimedDelivery {
                delivery: delivery_at(row, 0)?,
                event: events::event_at(row, DELIVERY_COLUMNS)?,
                // Only a native endpoint's target joins a secret.
                secret: row.try_get(DELIVERY_COLUMNS + EVENT_COLUMNS).db()?,
            })
        })
        .collect()
}

/// Releases every lease `owner` holds: its deliveries are due again at once (their
/// `next_attempt_at` was at most their claim time). Returns how many.
pub fn release(client: &mut impl Sql, owner: &str) -> Result<usize> {
    let n = client
        .execute(
            "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL \
             WHERE head AND status = 'pending' AND lease_until IS NOT NULL AND lease_owner = $1",
            &[&owner],
        )
        .db()?;
    Ok(count(n))
}

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Columns of a delivery row and of an event row, as [`claim_sql`] selects them.
const DELIVERY_COLUMNS: usize = 17;
const EVENT_COLUMNS: usize = 16;

/// The claim: heads whose lease expired (from `deliveries_leased`) and unleased due heads
/// (walking `deliveries_due` in due order), the oldest `$2` of them leased to `$3` until
/// `$4`, returned with their events and, for a native endpoint (`endpoint:<id>`), the
/// endpoint's secret.
///
/// "Due by now" compares with `(SELECT $1)`, a value the planner does not see, on purpose:
/// planned for the value itself (the writer plans each execution for its values), "due by now"
/// is estimated from statistics taken while those deliveries were due later — a few rows,
/// when a burst or a rescheduled endpoint has made thousands due — and the planner then read
/// every due head and sorted them (a bitmap scan: 24,765 rows and 1,841 buffers for a claim
/// of 64). Unknown, the comparison gets the default estimate, and the index is walked in due
/// order and left at the claim's limit.
///
/// Each claimed delivery's event is read by its key, in a lateral subquery the planner cannot
/// flatten (`OFFSET 0`). Joined as a table, it was hashed whole for every claim: a sequential
/// scan of all 5,062 events for a claim of two (measured with `auto_explain`), a cost that
/// grows with the feed's retention rather than with the claim.
fn claim_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let prefixed = |alias: &str, columns: &str| {
            columns
                .split(',')
                .map(|c| format!("{alias}.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "WITH expired AS (SELECT id, next_attempt_at FROM deliveries \
               WHERE head AND status = 'pending' AND lease_until <= (SELECT $1::bigint) \
               ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED), \
             unleased AS (SELECT id, next_attempt_at FROM deliveries \
               WHERE head AND status = 'pending' AND lease_until IS NULL \
               AND next_attempt_at <= (SELECT $1::bigint) \
               ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED), \
             chosen AS (SELECT id FROM (SELECT * FROM expired UNION ALL SELECT * FROM unleased) AS due \
               ORDER BY next_attempt_at, id LIMIT $2), \
             leased AS (UPDATE deliveries SET lease_owner = $3, lease_until = $4 \
               FROM chosen WHERE deliveries.id = chosen.id RETURNING deliveries.*) \
             SELECT {}, {}, w.secret FROM leased d \
             CROSS JOIN LATERAL (SELECT * FROM events WHERE events.id = d.event_id OFFSET 0) AS e \
             LEFT JOIN webhook_endpoints w \
             ON substr(d.target, 1, 9) = 'endpoint:' AND w.id = substr(d.target, 10) \
             ORDER BY d.next_attempt_at, d.id",
            prefixed("d", COLUMNS),
            prefixed("e", events::COLUMNS),
        )
    })
}

/// Persists the outcomes of attempts made under `owner`'s leases, each as its settlement
/// says: the attempt is logged, the delivery moves on and its lease is cleared; a finished head
/// hands `head` to the next delivery of its queue; a gone endpoint is disabled and its other
/// pending deliveries fail. An outcome whose delivery `owner` no longer leases (the lease
/// expired and another dispatcher took it over, or an endpoint's 410 failed it) changes
/// nothing; their ids are returned.
///
/// Set-based: a handful of statements for all the outcomes up to (and including) one that
/// disables an endpoint, then the same for the next ones — what recording them one by one
/// does, since only a disabled endpoint changes what a later outcome finds.
pub fn record(tx: &mut Tx<'_, '_>, owner: &str, outcomes: &[AttemptOutcome]) -> Result<Vec<i64>> {
    let now = now_ms();
    let disables_endpoint = |o: &AttemptOutcome| o.settlement.disable_endpoint.is_some();
    if outcomes.iter().any(disables_endpoint) {
        // Disabling an endpoint must not run beside a feed writer that is enqueueing for it
        // (that writer read the endpoint as enabled, and its new delivery would stay pending
        // to a disabled endpoint).
        tx.lock_feed()?;
    }
    let mut lost = Vec::new();
    for chunk in outcomes.split_inclusive(disables_endpoint) {
        lost.extend(record_chunk(tx, owner, chunk, now)?);
    }
    tx.record_deliveries();
    Ok(lost)
}

fn record_chunk(
    tx: &mut Tx<'_, '_>,
    owner: &str,
    outcomes: &[AttemptOutcome],
    now: Millis,
) -> Result<Vec<i64>> {
    // A delivery's second outcome in one go finds its lease cleared by the first: lost.
    let mut seen = HashSet::new();
    let (firsts, repeats): (Vec<&AttemptOutcome>, Vec<&AttemptOutcome>) =
        outcomes.iter().partition(|o| seen.insert(o.delivery_id));
    let ids: Vec<i64> = firsts.iter().map(|o| o.delivery_id).collect();
    lock_queues_of(tx, &ids)?;
    let updated: HashSet<i64> = tx
        .query(
            "UPDATE deliveries SET attempts = v.attempt, status = v.status, \
             next_attempt_at = v.next_at, last_status = v.code, last_error = v.error, \
             updated_at = $3, head = (v.status = 'pending'), lease_owner = NULL, lease_until = NULL \
             FROM unnest($1::BIGINT[], $4::BIGINT[], $5::TEXT[], $6::BIGINT[], $7::BIGINT[], $8::TEXT[]) \
             AS v(id, attempt, status, next_at, code, error) \
             WHERE deliveries.id = v.id AND deliveries.lease_owner = $2 RETURNING deliveries.id",
            &[
                &ids,
                &owner,
                &now,
                &firsts.iter().map(|o| o.attempt.attempt).collect::<Vec<_>>(),
                &firsts
                    .iter()
                    .map(|o| o.settlement.status.as_str())
                    .collect::<Vec<_>>(),
                &firsts
                    .iter()
                    .map(|o| o.settlement.next_attempt_at)
                    .collect::<Vec<_>>(),
                &firsts.iter().map(|o| o.attempt.status_code).collect::<Vec<_>>(),
                &firsts
                    .iter()
                    .map(|o| o.attempt.error.as_deref())
                    .collect::<Vec<_>>(),
            ],
        )
        .db()?
        .iter()
        .map(|r| r.try_get(0).db())
        .collect::<Result<_>>()?;
    let (done, lost): (Vec<&AttemptOutcome>, Vec<&AttemptOutcome>) = firsts
        .into_iter()
        .partition(|o| updated.contains(&o.delivery_id));
    // The insert checks each row's foreign key with a statement of PostgreSQL's own; a generic
    // plan spares planning that check again for every row (the insert's own plan does not
    // depend on its values either).
    tx.with_generic_plans(|tx| {
        tx.execute(
            "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, status_code, latency_ms, response_body, error) \
             SELECT a.d, a.n, a.s, a.c, a.l, a.b, a.e FROM unnest($1::BIGINT[], $2::BIGINT[], \
             $3::BIGINT[], $4::BIGINT[], $5::BIGINT[], $6::TEXT[], $7::TEXT[]) WITH ORDINALITY AS a(d, n, s, c, l, b, e, o) ORDER BY a.o",
            &[
                &done.iter().map(|o| o.delivery_id).collect::<Vec<_>>(),
                &done.iter().map(|o| o.attempt.attempt).collect::<Vec<_>>(),
                &done.iter().map(|o| o.attempt.started_at).collect::<Vec<_>>(),
                &done.iter().map(|o| o.attempt.status_code).collect::<Vec<_>>(),
                &done.iter().map(|o| o.attempt.latency_ms).collect::<Vec<_>>(),
                &done
                    .iter()
                    .map(|o| o.attempt.response_body.as_deref())
                    .collect::<Vec<_>>(),
                &done
                    .iter()
                    .map(|o| o.attempt.error.as_deref())
                    .collect::<Vec<_>>(),
            ],
        )
        .db()
    })?;
    let finished: Vec<i64> = done
        .iter()
        .filter(|o| o.settlement.status != DeliveryStatus::Pending)
        .map(|o| o.delivery_id)
        .collect();
    promote_next(tx, &finished)?;
    for gone in done
        .iter()
        .filter_map(|o| o.settlement.disable_endpoint.as_ref())
    {
        tx.execute(
            "UPDATE webhook_endpoints SET disabled = TRUE, disabled_reason = $2, updated_at = $3 WHERE id = $1",
            &[&gone.endpoint_id, &gone.reason, &now],
        )
        .db()?;
        // Leases are cleared too: an attempt still running elsewhere must not bring a
        // delivery to a disabled endpoint back to pending.
        tx.execute(
            "UPDATE deliveries SET status = 'failed', head = FALSE, last_error = $2, updated_at = $3, \
             lease_owner = NULL, lease_until = NULL WHERE target = $1 AND status = 'pending'",
            &[&endpoint_target(&gone.endpoint_id), &gone.pending_error, &now],
        )
        .db()?;
    }
    Ok(lost.iter().chain(&repeats).map(|o| o.delivery_id).collect())
}

/// Makes the oldest pending delivery of each finished delivery's queue its new head (the
/// caller holds the queues' locks).
fn promote_next(client: &mut impl Sql, finished: &[i64]) -> Result<()> {
    if finished.is_empty() {
        return Ok(());
    }
    client
        .execute(
            "UPDATE deliveries SET head = TRUE WHERE id IN (SELECT (SELECT n.id FROM deliveries n \
             WHERE n.target = d.target AND n.user_sid = d.user_sid AND n.status = 'pending' \
             ORDER BY n.id LIMIT 1) FROM deliveries d WHERE d.id = ANY($1))",
            &[&finished],
        )
        .db()?;
    Ok(())
}

/// When the next queue head falls due, if any: an unleased head at its `next_attempt_at`, a
/// leased one when its lease expires. Deliveries waiting behind a head do not count: they
/// cannot be claimed before it. The first entry of `deliveries_due`, and only when that is
/// not due yet the first of `deliveries_leased` (an initPlan runs when first needed): while
/// deliveries flow, leases are taken and cleared all the time and the start of that index is
/// mostly entries of dead row versions (`LEAST` ignores a NULL side). Written as each index's
/// order with `LIMIT 1`, not `min()`, so that the plan is the index's first entry even while
/// the table's statistics are those of an empty table.
pub fn next_due(client: &mut impl Sql) -> Result<Option<Millis>> {
    client
        .query_one(
            "SELECT CASE WHEN due.at <= $1 THEN due.at ELSE LEAST(due.at, \
               (SELECT lease_until FROM deliveries \
                WHERE head AND status = 'pending' AND lease_until IS NOT NULL \
                ORDER BY lease_until LIMIT 1)) END \
             FROM (SELECT (SELECT next_attempt_at FROM deliveries \
                   WHERE head AND status = 'pending' AND lease_until IS NULL \
                   ORDER BY next_attempt_at, id LIMIT 1) AS at) AS due",
            &[&now_ms()],
        )
        .db()?
        .try_get(0)
        .db()
}

pub fn get(client: &mut impl Sql, id: i64) -> Result<Option<Delivery>> {
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM deliveries WHERE id = $1"),
            &[&id],
        )
        .db()?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub fn attempts(client: &mut impl Sql, delivery_id: i64) -> Result<Vec<Attempt>> {
    client
        .query(
            "SELECT attempt, started_at, status_code, latency_ms, response_body, error FROM delivery_attempts \
             WHERE delivery_id = $1 ORDER BY attempt",
            &[&delivery_id],
        )
        .db()?
        .iter()
        .map(|r| {
            Ok(Attempt {
                attempt: r.try_get(0).db()?,
                started_at: r.try_get(1).db()?,
                status_code: r.try_get(2).db()?,
                latency_ms: r.try_get(3).db()?,
                response_body: r.try_get(4).db()?,
                error: r.try_get(5).db()?,
            })
        })
        .collect()
}

/// Deliveries to one target, newest first, optionally by status, before a cursor id.
pub fn list(
    client: &mut impl Sql,
    target: &str,
    status: Option<DeliveryStatus>,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<Delivery>> {
    let mut sql = format!("SELECT {COLUMNS} FROM deliveries WHERE target = $1");
    let mut args: Vec<Arg> = vec![text(target)];
    if let Some(status) = status {
        args.push(text(status.as_str()));
        sql.push_str(&format!(" AND status = ${}", args.len()));
    }
    if let Some(before) = before {
        args.push(Box::new(before));
        sql.push_str(&format!(" AND id < ${}", args.len()));
    }
    args.push(Box::new(limit_arg(limit)));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    client
        .query(&sql, &params)
        .db()?
        .iter()
        .map(from_row)
        .collect()
}

/// Resends a delivery. A pending one (waiting for its next retry, or behind its queue's head)
/// is made due now: the same row, id and token, attempted as soon as it heads its queue — a
/// copy would only wait behind it — and not leased (an attempt running now settles it first).
/// A finished one (delivered or failed) gets a fresh pending copy (new id and token, attempts
/// from zero).
pub fn resend(tx: &mut Tx<'_, '_>, id: i64) -> Result<Delivery> {
    let old = get(tx, id)?.ok_or(Error::NotFound)?;
    if old.status == DeliveryStatus::Pending {
        let now = now_ms();
        tx.execute(
            "UPDATE deliveries SET next_attempt_at = LEAST(next_attempt_at, $2), updated_at = $2 \
             WHERE id = $1 AND status = 'pending'",
            &[&id, &now],
        )
        .db()?;
        tx.record_deliveries();
        return get(tx, id)?.ok_or(Error::NotFound);
    }
    let target = NewDelivery {
        target: old.target.clone(),
        format: old.format,
        url: old.url.clone(),
        method: old.method.clone(),
        max_attempts: old.max_attempts,
    };
    let new_id = insert(
        tx,
        old.event_id,
        &old.service_sid,
        &old.user_sid,
        &target,
        now_ms(),
    )?;
    tx.record_deliveries();
    get(tx, new_id)?.ok_or(Error::NotFound)
}

/// Resends every failed delivery to `target` created since `since`; returns how many.
pub fn recover(tx: &mut Tx<'_, '_>, target: &str, since: Millis) -> Result<usize> {
    let ids: Vec<i64> = tx
        .query(
            "SELECT id FROM deliveries WHERE target = $1 AND status = 'failed' AND created_at >= $2 ORDER BY id",
            &[&target, &since],
        )
        .db()?
        .iter()
        .map(|r| r.try_get(0).db())
        .collect::<Result<_>>()?;
    for id in &ids {
        resend(tx, *id)?;
    }
    Ok(ids.len())
}

/// User and delivery counts of a service (the dashboard).
pub fn stats(client: &mut impl Sql, service_sid: &str) -> Result<ServiceStats> {
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE is_online) FROM users WHERE service_sid = $1",
            &[&service_sid],
        )
        .db()?;
    let mut stats = ServiceStats {
        users: row.try_get(0).db()?,
        online_users: row.try_get(1).db()?,
        ..Default::default()
    };
    let rows = client
        .query(
            "SELECT status, count(*), min(created_at), count(*) FILTER (WHERE attempts > 0) \
             FROM deliveries WHERE service_sid = $1 GROUP BY status",
            &[&service_sid],
        )
        .db()?;
    for r in &rows {
        let status: String = r.try_get(0).db()?;
        let count: i64 = r.try_get(1).db()?;
        let oldest: Option<i64> = r.try_get(2).db()?;
        let attempted: i64 = r.try_get(3).db()?;
        match status.as_str() {
            "pending" => {
                stats.pending = count;
                stats.retrying = attempted;
                stats.oldest_pending = oldest;
            }
            "delivered" => stats.delivered = count,
            _ => stats.failed += count,
        }
    }
    Ok(stats)
}

/// Deletes finished deliveries and unreferenced events older than `before`.
pub fn purge(client: &mut impl Sql, before: Millis) -> Result<usize> {
    let deliveries = client
        .execute(
            "DELETE FROM deliveries WHERE created_at < $1 AND status <> 'pending'",
            &[&before],
        )
        .db()?;
    let events = client
        .execute(
            "DELETE FROM events e WHERE e.created_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = 'pending')",
            &[&before],
        )
        .db()?;
    Ok(count(deliveries).saturating_add(count(events)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::webhook::{EndpointGone, NewEndpoint, Settlement};
    use crate::pg::endpoints;
    use crate::pg::events::test_db::{TestDb, fresh_database};

    const HOOK: &str = "https://example.com/hook";

    fn lease(owner: &str, until: Millis) -> Lease {
        Lease {
            owner: owner.into(),
            until,
        }
    }

    fn claim_as(db: &TestDb, owner: &str, now: Millis, limit: usize) -> Vec<i64> {
        let lease = lease(owner, now + 30_000);
        db.write(move |tx| claim(tx, now, limit, &lease))
            .expect("claim")
            .into_iter()
            .map(|c| c.delivery.id)
            .collect()
    }

    fn outcome(id: i64, status: DeliveryStatus) -> AttemptOutcome {
        AttemptOutcome {
            delivery_id: id,
            attempt: Attempt {
                attempt: 1,
                started_at: now_ms(),
                status_code: Some(200),
                latency_ms: 5,
                response_body: Some("ok".into()),
                error: None,
            },
            settlement: Settlement {
                status,
                next_attempt_at: now_ms(),
                disable_endpoint: None,
            },
        }
    }

    fn record_as(db: &TestDb, owner: &str, outcomes: Vec<AttemptOutcome>) -> Vec<i64> {
        let owner = owner.to_string();
        db.write(move |tx| record(tx, &owner, &outcomes))
            .expect("record")
    }

    /// `(id, target, head, status)` of every delivery, by id.
    fn queue(db: &TestDb) -> Vec<(i64, String, bool, String)> {
        db.client()
            .query(
                "SELECT id, target, head, status FROM deliveries ORDER BY id",
                &[],
            )
            .expect("deliveries")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    #[test]
    fn fan_out_enqueues_deliveries_with_queue_heads() {
        let Some(db) = fresh_database() else { return };
        let service = db.service(true, Some(HOOK));
        db.user(&service, "alice");
        db.user(&service, "bob");
        let endpoint = NewEndpoint {
            url: "https://example.com/native".into(),
            ..Default::default()
        };
        let (endpoint, secret) =
            endpoints::create(&mut *db.client(), &service, &endpoint).expect("endpoint");
        let e1 = db.emit_update(&service, "alice");
        let e2 = db.emit_update(&service, "alice");
        db.emit_update(&service, "bob");
        let service_target = format!("service:{service}");
        let native = endpoint_target(&endpoint.id);
        let rows = queue(&db);
        let heads: Vec<(String, bool)> = rows.iter().map(|r| (r.1.clone(), r.2)).collect();
        assert_eq!(
            heads,
            vec![
                (service_target.clone(), true),
                (native.clone(), true),
                (service_target.clone(), false),
                (native.clone(), false),
                (service_target.clone(), true),
                (native.clone(), true),
            ],
            "one head per (target, user) queue"
        );
        let mut client = db.client();
        let first = get(&mut *client, rows[0].0)
            .expect("get")
            .expect("delivery");
        assert_eq!((first.event_id, first.url.as_str()), (e1, HOOK));
        assert_eq!(first.status, DeliveryStatus::Pending);
        assert!(first.idempotency_token.starts_with("ID"));
        assert_eq!(
            get(&mut *client, rows[2].0)
                .expect("get")
                .map(|d| d.event_id),
            Some(e2)
        );
        let listed = list(
            &mut *client,
            &native,
            Some(DeliveryStatus::Pending),
            None,
            10,
        )
        .expect("list");
        assert_eq!(listed.len(), 3);
        assert!(listed[0].id > listed[1].id, "newest first");
        let before = list(&mut *client, &native, None, Some(listed[0].id), 1).expect("list");
        assert_eq!(
            before.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![listed[1].id]
        );
        let stats = stats(&mut *client, &service).expect("stats");
        assert_eq!((stats.users, stats.pending, stats.delivered), (2, 6, 0));
        drop(client);
        // A claim hands over the native endpoint's secret with the event.
        let now = now_ms() + 1;
        let claimed = db
            .write(move |tx| claim(tx, now, 10, &lease("a", now + 30_000)))
            .expect("claim");
        assert_eq!(claimed.len(), 4, "only heads are claimed");
        let native_claim = claimed
            .iter()
            .find(|c| c.delivery.target == native)
            .expect("native claim");
        assert_eq!(native_claim.secret.as_deref(), Some(secret.as_str()));
        assert_eq!(native_claim.event.id, native_claim.delivery.event_id);
        assert!(
            claimed
                .iter()
                .filter(|c| c.delivery.target == service_target)
                .all(|c| c.secret.is_none())
        );
    }

    #[test]
    fn claims_never_share_a_delivery_and_expired_leases_are_taken_over() {
        let Some(db) = fresh_database() else { return };
        let service = db.service(true, Some(HOOK));
        for identity in ["a", "b", "c", "d"] {
            db.user(&service, identity);
            db.emit_update(&service, identity);
        }
        let ids: Vec<i64> = queue(&db).iter().map(|r| r.0).collect();
        let now = now_ms() + 1;
        let first = claim_as(&db, "one", now, 1);
        assert_eq!(first, vec![ids[0]], "oldest due first");
        // A head another transaction holds (a claim in flight elsewhere) is skipped, not
        // waited for.
        let mut other = postgres::Client::connect(&db.url, postgres::NoTls).expect("connect");
        let mut held = other.transaction().expect("tx");
        held.execute(
            "SELECT 1 FROM deliveries WHERE id = $1 FOR UPDATE",
            &[&ids[1]],
        )
        .expect("lock");
        let second = claim_as(&db, "two", now, 10);
        assert_eq!(second, vec![ids[2], ids[3]]);
        held.rollback().expect("rollback");
        assert_eq!(claim_as(&db, "two", now, 10), vec![ids[1]]);
        assert!(claim_as(&db, "three", now, 10).is_empty(), "all leased");
        // Two writers (two nodes) claiming at once never get the same delivery.
        let db2 = fresh_database().expect("second database");
        let svc2 = db2.service(true, Some(HOOK));
        for n in 0..40 {
            let identity = format!("u{n}");
            db2.user(&svc2, &identity);
            db2.emit_update(&svc2, &identity);
        }
        let now2 = now_ms() + 1;
        let pool = db2.pool.clone();
        let (writer_b, _thread) =
            crate::pg::writer::Writer::start(pool, 8, Vec::new()).expect("second writer");
        let mut futures = Vec::new();
        for n in 0..20 {
            let owner = format!("node{}", n % 2);
            let lease = lease(&owner, now2 + 30_000);
            let writer = if n % 2 == 0 { &db2.writer } else { &writer_b };
            futures.push(writer.submit(move |tx| claim(tx, now2, 3, &lease)));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut seen = std::collections::HashSet::new();
        for f in futures {
            for c in runtime.block_on(f).expect("claim") {
                assert!(
                    seen.insert(c.delivery.id),
                    "claimed twice: {}",
                    c.delivery.id
                );
            }
        }
        assert_eq!(seen.len(), 40);
        // An expired lease is taken over; the old owner then records nothing.
        let later = now + 60_000;
        let taken = claim_as(&db, "four", later, 10);
        assert_eq!(taken, ids, "every lease expired");
        let lost = record_as(&db, "one", vec![outcome(ids[0], DeliveryStatus::Delivered)]);
        assert_eq!(lost, vec![ids[0]]);
        let lost = record_as(
            &db,
            "four",
            vec![outcome(ids[0], DeliveryStatus::Delivered)],
        );
        assert!(lost.is_empty());
        let mut client = db.client();
        let d = get(&mut *client, ids[0]).expect("get").expect("delivery");
        assert_eq!(
            (d.status, d.attempts, d.last_status),
            (DeliveryStatus::Delivered, 1, Some(200))
        );
        let log = attempts(&mut *client, ids[0]).expect("attempts");
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].response_body.as_deref(), Some("ok"));
    }

    #[test]
    fn outcomes_recorded_together_act_as_recorded_one_by_one() {
        let Some(db) = fresh_database() else { return };
        let service = db.service(true, Some(HOOK));
        for user in ["a", "b", "c"] {
            db.user(&service, user);
            db.emit_update(&service, user);
            db.emit_update(&service, user);
        }
        let heads: Vec<i64> = queue(&db).iter().filter(|r| r.2).map(|r| r.0).collect();
        assert_eq!(heads.len(), 3);
        let now = now_ms() + 1;
        assert_eq!(claim_as(&db, "a", now, 10), heads);
        let mut retry = outcome(heads[1], DeliveryStatus::Pending);
        retry.settlement.next_attempt_at = now + 5;
        let mut failed = outcome(heads[2], DeliveryStatus::Failed);
        failed.settlement.disable_endpoint = None;
        // The first head's outcome twice: the second finds the lease gone.
        let outcomes = vec![
            outcome(heads[0], DeliveryStatus::Delivered),
            retry,
            outcome(heads[0], DeliveryStatus::Delivered),
            failed,
        ];
        assert_eq!(record_as(&db, "a", outcomes), vec![heads[0]]);
        let states: Vec<(bool, String)> = queue(&db).iter().map(|r| (r.2, r.3.clone())).collect();
        assert_eq!(
            states,
            vec![
                (false, "delivered".into()),
                (true, "pending".into()),
                (true, "pending".into()),
                (false, "pending".into()),
                (false, "failed".into()),
                (true, "pending".into()),
            ]
        );
        let logged: i64 = db
            .client()
            .query_one("SELECT count(*) FROM delivery_attempts", &[])
            .expect("attempts")
            .get(0);
        assert_eq!(logged, 3, "one attempt logged per recorded outcome");
    }

    #[test]
    fn record_hands_the_head_on_and_release_frees_leases() {
        let Some(db) = fresh_database() else { return };
        let service = db.service(true, Some(HOOK));
        db.user(&service, "a");
        for _ in 0..3 {
            db.emit_update(&service, "a");
        }
        let ids: Vec<i64> = queue(&db).iter().map(|r| r.0).collect();
        let now = now_ms() + 1;
        let mut client = db.client();
        assert!(
            next_due(&mut *client)
                .expect("due")
                .is_some_and(|due| due <= now)
        );
        drop(client);
        assert_eq!(claim_as(&db, "a", now, 10), vec![ids[0]]);
        let mut client = db.client();
        assert_eq!(
            next_due(&mut *client).expect("due"),
            Some(now + 30_000),
            "leased head"
        );
        // A graceful stop releases the lease: due again at once, for anyone.
        assert_eq!(release(&mut *client, "someone else").expect("release"), 0);
        assert_eq!(release(&mut *client, "a").expect("release"), 1);
        drop(client);
        assert_eq!(claim_as(&db, "b", now, 10), vec![ids[0]]);
        // A retry keeps the head; delivering it hands the head to the next one.
        let mut retry = outcome(ids[0], DeliveryStatus::Pending);
        retry.settlement.next_attempt_at = now + 5;
        assert!(record_as(&db, "b", vec![retry]).is_empty());
        let heads: Vec<bool> = queue(&db).iter().map(|r| r.2).collect();
        assert_eq!(heads, vec![true, false, false]);
        assert!(
            claim_as(&db, "b", now, 10).is_empty(),
            "not due before its retry time"
        );
        assert_eq!(claim_as(&db, "b", now + 5, 10), vec![ids[0]]);
        let mut done = outcome(ids[0], DeliveryStatus::Delivered);
        done.attempt.attempt = 2;
        assert!(record_as(&db, "b", vec![done]).is_empty());
        let states: Vec<(bool, String)> = queue(&db).iter().map(|r| (r.2, r.3.clone())).collect();
        assert_eq!(
            states,
            vec![
                (false, "delivered".into()),
                (true, "pending".into()),
                (false, "pending".into())
            ]
        );
        let mut client = db.client();
        let s = stats(&mut *client, &service).expect("stats");
        assert_eq!((s.pending, s.retrying, s.delivered, s.failed), (2, 0, 1, 0));
        drop(client);
        // Resending the delivered one makes a fresh pending copy behind the queue's head.
        let delivered = ids[0];
        let copy = db.write(move |tx| resend(tx, delivered)).expect("resend");
        assert_ne!(copy.id, ids[0]);
        assert_eq!((copy.status, copy.attempts), (DeliveryStatus::Pending, 0));
        let last = queue(&db).pop().expect("copy");
        assert_eq!((last.0, last.2), (copy.id, false));
        // Failing the head (410 from nowhere in particular) hands the head on too.
        assert_eq!(claim_as(&db, "c", now + 5, 10), vec![ids[1]]);
        let mut fail = outcome(ids[1], DeliveryStatus::Failed);
        fail.settlement.disable_endpoint = None;
        assert!(record_as(&db, "c", vec![fail]).is_empty());
        assert_eq!(
            db.write(move |tx| recover(tx, &format!("service:{}", "nothing"), 0))
                .expect("recover"),
            0
        );
        let mut client = db.client();
        assert_eq!(purge(&mut *client, 0).expect("purge"), 0);
        assert_eq!(
            purge(&mut *client, now_ms() + 1_000).expect("purge"),
            3,
            "the two finished deliveries and the event no pending delivery needs go"
        );
    }

    #[test]
    fn a_gone_endpoint_is_disabled_and_its_pending_deliveries_fail() {
        let Some(db) = fresh_database() else { return };
        let service = db.service(true, None);
        db.user(&service, "a");
        let new = NewEndpoint {
            url: "https://example.com/native".into(),
            ..Default::default()
        };
        let (endpoint, _) = endpoints::create(&mut *db.client(), &service, &new).expect("create");
        db.emit_update(&service, "a");
        db.emit_update(&service, "a");
        let ids: Vec<i64> = queue(&db).iter().map(|r| r.0).collect();
        let now = now_ms() + 1;
        assert_eq!(claim_as(&db, "a", now, 10), vec![ids[0]]);
        let mut gone = outcome(ids[0], DeliveryStatus::Failed);
        gone.settlement.disable_endpoint = Some(EndpointGone {
            endpoint_id: endpoint.id.clone(),
            reason: "gone",
            pending_error: "endpoint disabled",
        });
        assert!(record_as(&db, "a", vec![gone]).is_empty());
        let states: Vec<(bool, String)> = queue(&db).iter().map(|r| (r.2, r.3.clone())).collect();
        assert_eq!(
            states,
            vec![(false, "failed".into()), (false, "failed".into())]
        );
        let stored = endpoints::get(&mut *db.client(), &service, &endpoint.id)
            .expect("get")
            .expect("endpoint");
        assert!(stored.disabled);
        assert_eq!(stored.disabled_reason.as_deref(), Some("gone"));
        let target = endpoint_target(&endpoint.id);
        let recovered = db
            .write(move |tx| recover(tx, &target, 0))
            .expect("recover");
        assert_eq!(recovered, 2);
        let heads: Vec<bool> = queue(&db).iter().map(|r| r.2).collect();
        assert_eq!(heads, vec![false, false, true, false]);
    }

    #[test]
    fn an_outbox_writer_needs_no_feed_lock_and_gives_way_on_a_held_row() {
        let Some(db) = fresh_database() else { return };
        let service = db.service(true, Some(HOOK));
        for user in ["a", "b"] {
            db.user(&service, user);
            db.emit_update(&service, user);
        }
        let outbox = crate::pg::writer::Writer::start_outbox(db.pool.clone(), "t-outbox")
            .expect("outbox writer");
        // Another node's feed writer is in the middle of a batch: it holds the feed's lock.
        let mut other = postgres::Client::connect(&db.url, postgres::NoTls).expect("connect");
        let mut feed_batch = other.transaction().expect("tx");
        feed_batch
            .execute("SELECT 1 FROM feed_position WHERE id = 1 FOR UPDATE", &[])
            .expect("feed lock");
        let now = now_ms() + 1;
        let claimed: Vec<i64> = db
            .wait(outbox.submit(move |tx| claim(tx, now, 10, &lease("o", now + 30_000))))
            .expect("a claim beside a feed batch")
            .into_iter()
            .map(|c| c.delivery.id)
            .collect();
        assert_eq!(claimed.len(), 2);
        // A record that disables an endpoint changes what enqueueing reads: it waits for the
        // feed's lock, and gives way.
        let mut gone = outcome(claimed[0], DeliveryStatus::Failed);
        gone.settlement.disable_endpoint = Some(EndpointGone {
            endpoint_id: "no-such-endpoint".into(),
            reason: "gone",
            pending_error: "endpoint disabled",
        });
        let disabling = db.wait(outbox.submit(move |tx| record(tx, "o", &[gone])));
        assert!(
            disabling.is_err(),
            "disabled an endpoint beside a feed batch"
        );
        // It also holds the first delivery's row (as a batch that repoints an endpoint does):
        // recording it gives way after the lock timeout, and commits nothing.
        feed_batch
            .execute(
                "SELECT 1 FROM deliveries WHERE id = $1 FOR UPDATE",
                &[&claimed[0]],
            )
            .expect("row lock");
        let both = vec![
            outcome(claimed[1], DeliveryStatus::Delivered),
            outcome(claimed[0], DeliveryStatus::Delivered),
        ];
        let started = std::time::Instant::now();
        let retry = both.clone();
        let gave_way = db.wait(outbox.submit(move |tx| record(tx, "o", &retry)));
        assert!(gave_way.is_err(), "waited past its lock timeout");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        feed_batch.rollback().expect("rollback");
        let statuses: Vec<String> = queue(&db).into_iter().map(|r| r.3).collect();
        assert_eq!(statuses, ["pending", "pending"], "nothing half-recorded");
        // Retried once the feed writer is done: recorded.
        let lost = db
            .wait(outbox.submit(move |tx| record(tx, "o", &both)))
            .expect("record");
        assert!(lost.is_empty());
        let statuses: Vec<String> = queue(&db).into_iter().map(|r| r.3).collect();
        assert_eq!(statuses, ["delivered", "delivered"]);
    }
}
