//! The transactional outbox: deliveries written in the same transaction as their event,
//! claimed by dispatchers under leases one queue head at a time, and their attempt log.
//!
//! Invariants:
//! - An event and its deliveries commit together (`enqueue` runs inside `events::emit`).
//! - Only the oldest pending delivery of each (target, user) queue is ever claimed, so deliveries
//!   reach a target in the user's sequence order; the next one waits until that one is
//!   delivered or has failed for good. That oldest one carries `head = 1`: set on insert when
//!   the queue has no pending delivery, and handed to the next one when it finishes — so
//!   finding due work is an index lookup, not a scan of every queue.
//! - A queue's pending deliveries are always its newest ones: only its head is settled, a
//!   disabled endpoint fails all of them at once, and a resend adds a new row. So a new
//!   delivery heads its queue when the queue's newest delivery is not pending, and a settled
//!   head hands `head` to the delivery right after it, if pending — lookups in
//!   `deliveries_queue` (target, user_sid, id), an index that settling a delivery leaves alone
//!   (migration 6).
//! - A claim is a lease held in the row (`lease_owner`, `lease_until`, both set or both NULL;
//!   only pending heads carry one). [`claim`] runs in one write transaction: it picks due heads
//!   whose lease is absent or expired and leases them to the claiming dispatcher. Because the
//!   pick and the lease happen in one transaction (SQLite serialises write transactions, also
//!   across processes), two dispatchers never hold a live lease on the same delivery, so they
//!   never attempt it concurrently — unless an attempt outlives its lease.
//! - [`record`] changes a delivery only while the recording dispatcher still owns its lease
//!   (`WHERE id = ? AND lease_owner = ?`), and clears the lease. A dispatcher whose lease was
//!   taken over records nothing: the new owner's outcome stands.
//! - If a dispatcher dies mid-attempt, its deliveries stay pending and leased until the lease
//!   expires; then any dispatcher claims them again (at least once; the idempotency token stays
//!   the same). A graceful stop [`release`]s the leases at once.
//! - A leased head is due again when its lease expires: its `next_attempt_at` was at most the
//!   claim time, so [`next_due`] counts leased heads at `lease_until`.
//!
//! May depend on: rusqlite, serde_json, domain, db::{events, writer}.

mod fanout;

use fanout::insert;
pub use fanout::{OutboxEvent, enqueue};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::SqlResultExt;
use super::events;
use super::paging::text;
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

fn from_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    delivery_at(row, 0)
}

/// A delivery from the columns of [`COLUMNS`] starting at `at` (joined reads).
fn delivery_at(row: &Row<'_>, at: usize) -> rusqlite::Result<Delivery> {
    let status: String = row.get(at + 10)?;
    Ok(Delivery {
        id: row.get(at)?,
        event_id: row.get(at + 1)?,
        service_sid: row.get(at + 2)?,
        user_sid: row.get(at + 3)?,
        target: row.get(at + 4)?,
        format: Format::parse(&row.get::<_, String>(at + 5)?),
        url: row.get(at + 6)?,
        method: row.get(at + 7)?,
        max_attempts: row.get(at + 8)?,
        attempts: row.get(at + 9)?,
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
        next_attempt_at: row.get(at + 11)?,
        idempotency_token: row.get(at + 12)?,
        last_status: row.get(at + 13)?,
        last_error: row.get(at + 14)?,
        created_at: row.get(at + 15)?,
        updated_at: row.get(at + 16)?,
    })
}

/// Due queue heads, unleased or with an expired lease, by due time: `?1` now, `?2` the most.
///
/// The bound values are read through `(SELECT ?n)`, values the planner does not look at.
/// Written as `?n`, SQLite's planner weighs them (a bound LIMIT as a known integer, and a range
/// bound against STAT4 statistics, which are compiled in) and then prepares the statement again
/// whenever one changes: for nearly every claim (measured: 5-8 % of the writer's time under a
/// webhook burst). The plan is the same either way.
const DUE_HEADS: &str = "SELECT id, next_attempt_at FROM deliveries \
     WHERE head = 1 AND status = 'pending' AND lease_until IS NULL \
     AND next_attempt_at <= (SELECT ?1) \
     UNION ALL \
     SELECT id, next_attempt_at FROM deliveries \
     WHERE head = 1 AND status = 'pending' AND lease_until <= (SELECT ?1) \
     AND next_attempt_at <= (SELECT ?1) \
     ORDER BY 2, 1 LIMIT (SELECT ?2)";

/// Claims up to `limit` due queue heads whose lease is absent or expired, oldest due first,
/// leasing them to `lease.owner` until `lease.until`; returns them with their events. One
/// write job: the pick and the lease commit together.
pub fn claim(
    tx: &mut Tx<'_>,
    now: Millis,
    limit: usize,
    lease: &Lease,
) -> Result<Vec<ClaimedDelivery>> {
    // The ids first, from the due index alone (`deliveries_due`: head, status, lease_until,
    // next_attempt_at): unleased due heads, and heads whose lease has expired. Leased heads
    // (attempts running here or elsewhere) are skipped inside the index, before anything is
    // joined or decoded, so a claim's cost does not grow with the attempts in flight.
    let ids: Vec<i64> = tx
        .prepare_cached(DUE_HEADS)
        .db()?
        .query_map(params![now, limit as i64], |r| r.get(0))
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    // Then lease them and read them with their events and, for a native endpoint
    // (`endpoint:<id>`), the endpoint's secret — many per statement. Only claimed rows are
    // joined.
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&lease.owner, &lease.until];
        args.extend(chunk.iter().map(|id| id as &dyn rusqlite::ToSql));
        tx.prepare_cached(statement_for(&LEASE_IDS, chunk.len()))
            .db()?
            .execute(&*args)
            .db()?;
        let mut read = tx
            .prepare_cached(statement_for(&CLAIMED_IDS, chunk.len()))
            .db()?;
        let mut claimed = read
            .query_map(params_from_iter(chunk), |row| {
                Ok(ClaimedDelivery {
                    delivery: delivery_at(row, 0)?,
                    event: events::event_at(row, DELIVERY_COLUMNS)?,
                    // Only a native endpoint's target joins a secret.
                    secret: row.get(DELIVERY_COLUMNS + EVENT_COLUMNS)?,
                })
            })
            .db()?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db()?;
        // In the order they fell due, not the order the IN list was read in.
        claimed.sort_by_key(|c| chunk.iter().position(|id| *id == c.delivery.id));
        out.extend(claimed);
    }
    Ok(out)
}

/// Most ids (or attempt rows) one statement of a claim (or a record) names; attempt rows have
/// 7 parameters each, far below SQLite's limit.
const IDS_PER_STATEMENT: usize = 64;

/// A statement naming 1 to [`IDS_PER_STATEMENT`] ids or rows, made once per count.
struct IdsStatement {
    /// Makes the statement for `n` ids or rows.
    make: fn(usize) -> String,
    made: std::sync::OnceLock<Vec<String>>,
}

/// Leases the named deliveries: `?1` owner, `?2` until, then the ids.
static LEASE_IDS: IdsStatement = IdsStatement {
    make: |n| {
        format!(
            "UPDATE deliveries SET lease_owner = ?1, lease_until = ?2 WHERE id IN ({})",
            vec!["?"; n].join(", ")
        )
    },
    made: std::sync::OnceLock::new(),
};

/// Reads the named deliveries with their events and secrets.
static CLAIMED_IDS: IdsStatement = IdsStatement {
    make: |n| {
        format!(
            "{} WHERE d.id IN ({})",
            claimed_sql(),
            vec!["?"; n].join(", ")
        )
    },
    made: std::sync::OnceLock::new(),
};

fn statement_for(statement: &'static IdsStatement, n: usize) -> &'static str {
    let all = statement
        .made
        .get_or_init(|| (1..=IDS_PER_STATEMENT).map(statement.make).collect());
    &all[n.clamp(1, IDS_PER_STATEMENT) - 1]
}

/// Releases every lease `owner` holds: its deliveries are due again at once (their
/// `next_attempt_at` was at most their claim time). Returns how many.
pub fn release(conn: &Connection, owner: &str) -> Result<usize> {
    conn.prepare_cached(
        "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL \
         WHERE head = 1 AND status = 'pending' AND lease_until IS NOT NULL AND lease_owner = ?1",
    )
    .db()?
    .execute([owner])
    .db()
}

/// Columns of a delivery row and of an event row, as [`claimed_sql`] selects them.
const DELIVERY_COLUMNS: usize = 17;
const EVENT_COLUMNS: usize = 16;

fn claimed_sql() -> &'static str {
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
            "SELECT {}, {}, w.secret FROM deliveries d \
             JOIN events e ON e.id = d.event_id \
             LEFT JOIN webhook_endpoints w \
             ON substr(d.target, 1, 9) = 'endpoint:' AND w.id = substr(d.target, 10)",
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
pub fn record(tx: &mut Tx<'_>, owner: &str, outcomes: &[AttemptOutcome]) -> Result<Vec<i64>> {
    let now = now_ms();
    let mut lost = Vec::new();
    // Prepared once for the batch: taking a statement from the cache and handing it back
    // hashes its text each time (measured: ~3 % of a record's instructions when per outcome).
    let mut settle = tx
        .prepare_cached(
            "UPDATE deliveries SET attempts = ?3, status = ?4, next_attempt_at = ?5, \
             last_status = ?6, last_error = ?7, updated_at = ?8, head = (?4 = 'pending'), \
             lease_owner = NULL, lease_until = NULL WHERE id = ?1 AND lease_owner = ?2",
        )
        .db()?;
    // The attempts are logged after the loop, many per statement.
    let mut logged = Vec::with_capacity(outcomes.len());
    let mut promote = tx.prepare_cached(PROMOTE_NEXT).db()?;
    for o in outcomes {
        let (a, s) = (&o.attempt, &o.settlement);
        let status = s.status.as_str();
        let updated = settle
            .execute(params![
                o.delivery_id,
                owner,
                a.attempt,
                status,
                s.next_attempt_at,
                a.status_code,
                a.error,
                now
            ])
            .db()?;
        if updated == 0 {
            lost.push(o.delivery_id);
            continue;
        }
        logged.push(o);
        if s.status != DeliveryStatus::Pending {
            promote.execute([o.delivery_id]).db()?;
        }
        if let Some(gone) = &s.disable_endpoint {
            tx.prepare_cached("UPDATE webhook_endpoints SET disabled = 1, disabled_reason = ?2, updated_at = ?3 WHERE id = ?1")
                .db()?
                .execute(params![gone.endpoint_id, gone.reason, now])
                .db()?;
            // Leases are cleared too: an attempt still running elsewhere must not bring a
            // delivery to a disabled endpoint back to pending.
            tx.prepare_cached(
                "UPDATE deliveries SET status = 'failed', head = 0, last_error = ?2, updated_at = ?3, \
                 lease_owner = NULL, lease_until = NULL WHERE target = ?1 AND status = 'pending'",
            )
            .db()?
            .execute(params![endpoint_target(&gone.endpoint_id), gone.pending_error, now])
            .db()?;
        }
    }
    drop((settle, promote));
    log_attempts(tx, &logged)?;
    tx.record_deliveries();
    Ok(lost)
}

/// Logs 1 to [`IDS_PER_STATEMENT`] attempts: `INSERT INTO delivery_attempts … VALUES (…), (…)`.
static INSERT_ATTEMPTS: IdsStatement = IdsStatement {
    make: |n| {
        format!(
            "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, status_code, \
             latency_ms, response_body, error) VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, ?)"; n].join(", ")
        )
    },
    made: std::sync::OnceLock::new(),
};

/// Logs the attempts of recorded outcomes, up to [`IDS_PER_STATEMENT`] rows per statement:
/// an `INSERT` into a table with `AUTOINCREMENT` reads and writes back its counter in
/// `sqlite_sequence` once per statement, and a statement run costs its setup once, so one
/// row per statement paid both for every attempt.
fn log_attempts(conn: &Connection, logged: &[&AttemptOutcome]) -> Result<()> {
    for chunk in logged.chunks(IDS_PER_STATEMENT) {
        let mut args: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 7);
        for o in chunk {
            let a = &o.attempt;
            args.extend([
                &o.delivery_id as &dyn rusqlite::ToSql,
                &a.attempt,
                &a.started_at,
                &a.status_code,
                &a.latency_ms,
                &a.response_body,
                &a.error,
            ]);
        }
        conn.prepare_cached(statement_for(&INSERT_ATTEMPTS, chunk.len()))
            .db()?
            .execute(&*args)
            .db()?;
    }
    Ok(())
}

/// Makes the oldest pending delivery of a finished delivery's (`?1`) queue its new head.
const PROMOTE_NEXT: &str = "UPDATE deliveries SET head = 1 WHERE id = (SELECT n.id FROM deliveries d \
     JOIN deliveries n ON n.target = d.target AND n.user_sid = d.user_sid AND n.id > d.id \
     WHERE d.id = ?1 ORDER BY n.id LIMIT 1) AND status = 'pending'";

/// When the next queue head falls due, if any: an unleased head at its `next_attempt_at`, a
/// leased one when its lease expires. Deliveries waiting behind a head do not count: they
/// cannot be claimed before it. Two lookups at the ends of `deliveries_due` ranges.
pub fn next_due(conn: &Connection) -> Result<Option<Millis>> {
    conn.prepare_cached(
        "SELECT min(due) FROM ( \
         SELECT min(next_attempt_at) AS due FROM deliveries \
         WHERE head = 1 AND status = 'pending' AND lease_until IS NULL \
         UNION ALL \
         SELECT min(lease_until) FROM deliveries \
         WHERE head = 1 AND status = 'pending' AND lease_until IS NOT NULL)",
    )
    .db()?
    .query_row([], |r| r.get(0))
    .db()
}

pub fn get(conn: &Connection, id: i64) -> Result<Option<Delivery>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM deliveries WHERE id = ?1"))
        .db()?
        .query_row([id], from_row)
        .optional()
        .db()
}

pub fn attempts(conn: &Connection, delivery_id: i64) -> Result<Vec<Attempt>> {
    conn.prepare_cached(
        "SELECT attempt, started_at, status_code, latency_ms, response_body, error FROM delivery_attempts \
         WHERE delivery_id = ?1 ORDER BY attempt",
    )
    .db()?
    .query_map([delivery_id], |r| {
        Ok(Attempt {
            attempt: r.get(0)?,
            started_at: r.get(1)?,
            status_code: r.get(2)?,
            latency_ms: r.get(3)?,
            response_body: r.get(4)?,
            error: r.get(5)?,
        })
    })
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

/// Deliveries to one target, newest first, optionally by status, before a cursor id.
pub fn list(
    conn: &Connection,
    target: &str,
    status: Option<DeliveryStatus>,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<Delivery>> {
    let mut sql = format!("SELECT {COLUMNS} FROM deliveries WHERE target = ?");
    let mut args: Vec<Value> = vec![text(target)];
    if let Some(status) = status {
        sql.push_str(" AND status = ?");
        args.push(text(status.as_str()));
    }
    if let Some(before) = before {
        sql.push_str(" AND id < ?");
        args.push(Value::Integer(before));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(Value::Integer(limit as i64));
    let mut stmt = conn.prepare_cached(&sql).db()?;
    let rows = stmt
        .query_map(params_from_iter(args), from_row)
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    Ok(rows)
}

/// Resends a delivery. A pending one (waiting for its next retry, or behind its queue's head)
/// is made due now: the same row, id and token, attempted as soon as it heads its queue — a
/// copy would only wait behind it — and not leased (an attempt running now settles it first). A finished one (delivered or failed) gets a fresh pending
/// copy (new id and token, attempts from zero).
pub fn resend(tx: &mut Tx<'_>, id: i64) -> Result<Delivery> {
    let old = get(tx, id)?.ok_or(Error::NotFound)?;
    if old.status == DeliveryStatus::Pending {
        let now = now_ms();
        tx.prepare_cached(
            "UPDATE deliveries SET next_attempt_at = min(next_attempt_at, ?2), updated_at = ?2 \
             WHERE id = ?1 AND status = 'pending'",
        )
        .db()?
        .execute(params![id, now])
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
pub fn recover(tx: &mut Tx<'_>, target: &str, since: Millis) -> Result<usize> {
    let ids: Vec<i64> = tx
        .prepare_cached("SELECT id FROM deliveries WHERE target = ?1 AND status = 'failed' AND created_at >= ?2 ORDER BY id")
        .db()?
        .query_map(params![target, since], |r| r.get(0))
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    for id in &ids {
        resend(tx, *id)?;
    }
    Ok(ids.len())
}

/// User and delivery counts of a service (the dashboard).
pub fn stats(conn: &Connection, service_sid: &str) -> Result<ServiceStats> {
    let (users, online_users): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(sum(is_online = 1), 0) FROM users WHERE service_sid = ?1",
        )
        .db()?
        .query_row([service_sid], |r| Ok((r.get(0)?, r.get(1)?)))
        .db()?;
    let mut stats = ServiceStats {
        users,
        online_users,
        ..Default::default()
    };
    let mut stmt = conn
        .prepare_cached("SELECT status, count(*), min(created_at), coalesce(sum(attempts > 0), 0) FROM deliveries WHERE service_sid = ?1 GROUP BY status")
        .db()?;
    let rows = stmt
        .query_map([service_sid], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .db()?;
    for row in rows {
        let (status, count, oldest, attempted) = row.db()?;
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
pub fn purge(conn: &Connection, before: Millis) -> Result<usize> {
    let deliveries = conn
        .execute(
            "DELETE FROM deliveries WHERE created_at < ?1 AND status != 'pending'",
            [before],
        )
        .db()?;
    let events = conn
        .execute(
            "DELETE FROM events WHERE created_at < ?1 AND id NOT IN (SELECT event_id FROM deliveries WHERE status = 'pending')",
            [before],
        )
        .db()?;
    Ok(deliveries + events)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated database in a temporary folder (kept while the folder lives).
    fn scratch_database() -> (tempfile::TempDir, crate::db::Database) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::db::Database::open(&crate::db::open::OpenOptions {
            path: dir.path().join("reachd.db"),
            busy_timeout: std::time::Duration::from_secs(1),
            read_pool_size: 1,
            wal_limit_bytes: 64 * 1024 * 1024,
        })
        .expect("open");
        (dir, db)
    }

    #[test]
    fn the_due_heads_lookup_is_not_prepared_again_for_new_values() {
        let (_dir, db) = scratch_database();
        let mut due = db.writer.prepare_cached(DUE_HEADS).expect("prepare");
        for (now, limit) in [(1_000_i64, 3_i64), (2_000, 5), (3_000, 64)] {
            let ids: Vec<i64> = due
                .query_map(params![now, limit], |r| r.get(0))
                .expect("query")
                .collect::<rusqlite::Result<_>>()
                .expect("rows");
            assert!(ids.is_empty());
        }
        assert_eq!(
            due.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "prepared again for new values"
        );
    }

    #[test]
    fn a_queue_hands_its_head_on_in_id_order_and_a_new_delivery_heads_a_settled_queue() {
        let (_dir, db) = scratch_database();
        let conn = &db.writer;
        let to = NewDelivery {
            target: "endpoint:WH0".into(),
            format: Format::Native,
            url: "http://127.0.0.1:9/hook".into(),
            method: "POST".into(),
            max_attempts: 1,
        };
        let put = |user: &str| insert(conn, 1, "IS0", user, &to, 1_000).expect("insert");
        let head = |id: i64| -> bool {
            conn.query_row("SELECT head FROM deliveries WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .expect("head")
        };
        let settle = |id: i64| {
            conn.execute(
                "UPDATE deliveries SET status = 'delivered', head = 0 WHERE id = ?1",
                [id],
            )
            .expect("settle");
            conn.execute(PROMOTE_NEXT, [id]).expect("promote");
        };
        let (a1, a2, b1, a3) = (put("USa"), put("USa"), put("USb"), put("USa"));
        assert_eq!(
            [head(a1), head(a2), head(b1), head(a3)],
            [true, false, true, false]
        );
        settle(a1);
        assert_eq!([head(a2), head(a3), head(b1)], [true, false, true]);
        settle(a2);
        settle(a3);
        assert!(!head(a3), "a settled queue has no head");
        let a4 = put("USa");
        assert!(head(a4), "a delivery to a settled queue heads it");
        let a5 = put("USa");
        assert!(!head(a5), "a delivery behind a pending one waits");
        // A disabled endpoint fails every pending delivery at once: the queue is settled.
        conn.execute(
            "UPDATE deliveries SET status = 'failed', head = 0 WHERE status = 'pending'",
            [],
        )
        .expect("fail");
        assert!(head(put("USa")));
        assert!(head(put("USb")));
    }

    #[test]
    fn the_joined_read_counts_the_columns_it_selects() {
        assert_eq!(COLUMNS.split(',').count(), DELIVERY_COLUMNS);
        assert_eq!(events::COLUMNS.split(',').count(), EVENT_COLUMNS);
    }
}
