//! The transactional outbox: deliveries written in the same transaction as their event, leased
//! by the dispatcher one queue head at a time, and their attempt log.
//!
//! Invariants:
//! - An event and its deliveries commit together (`enqueue` runs inside `events::emit`).
//! - Only the oldest pending delivery of each (target, user) queue is ever claimed, so deliveries
//!   reach a target in the user's sequence order; the next one waits until that one is
//!   delivered or has failed for good.
//! - A claim is a lease: if reachd dies mid-attempt the lease expires and the delivery is
//!   attempted again (at least once; the idempotency token stays the same).
//!
//! May depend on: rusqlite, serde_json, domain, db::{events, writer}.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::SqlResultExt;
use super::events;
use super::paging::text;
use super::writer::Tx;
use crate::domain::event::{EventType, Source};
use crate::domain::ids;
use crate::domain::service::{ChatSettings, WebhookDialect};
use crate::domain::time::{Millis, now_ms};
use crate::domain::webhook::{
    Attempt, AttemptOutcome, ClaimedDelivery, Delivery, DeliveryStatus, Format, Next,
    twilio_event_name,
};
use crate::domain::{Error, Result};

const COLUMNS: &str = "id, event_id, service_sid, user_sid, target, format, url, method, max_attempts, attempts, \
     status, next_attempt_at, idempotency_token, last_status, last_error, created_at, updated_at";

/// Conversations targets retry once (API.md §3).
const CONVERSATIONS_ATTEMPTS: i64 = 2;

fn from_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let status: String = row.get(10)?;
    Ok(Delivery {
        id: row.get(0)?,
        event_id: row.get(1)?,
        service_sid: row.get(2)?,
        user_sid: row.get(3)?,
        target: row.get(4)?,
        format: Format::parse(&row.get::<_, String>(5)?),
        url: row.get(6)?,
        method: row.get(7)?,
        max_attempts: row.get(8)?,
        attempts: row.get(9)?,
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Failed),
        next_attempt_at: row.get(11)?,
        idempotency_token: row.get(12)?,
        last_status: row.get(13)?,
        last_error: row.get(14)?,
        created_at: row.get(15)?,
        updated_at: row.get(16)?,
    })
}

/// What `enqueue` needs to know about a just-written event.
pub struct OutboxEvent<'a> {
    pub id: i64,
    pub kind: EventType,
    pub service_sid: &'a str,
    pub user_sid: &'a str,
    pub source: Source,
    pub rest_webhooks: bool,
}

struct Target {
    key: String,
    format: Format,
    url: String,
    method: String,
    /// 0 for native deliveries: the dispatcher's retry policy decides.
    max_attempts: i64,
}

/// Twilio targets get user events from clients always, from REST only with the
/// `X-Twilio-Webhook-Enabled: true` header, and every reachability transition; filters (when
/// any are set) must name the event.
fn twilio_wants(e: &OutboxEvent<'_>, filters: Option<&Vec<String>>) -> Option<&'static str> {
    let name = twilio_event_name(e.kind)?;
    let allowed_origin =
        e.kind == EventType::ReachabilityUpdated || e.source == Source::Sdk || e.rest_webhooks;
    let passes = filters.is_none_or(|f| f.is_empty() || f.iter().any(|x| x == name));
    (allowed_origin && passes).then_some(name)
}

fn targets(conn: &Connection, e: &OutboxEvent<'_>) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    let settings: Option<String> = conn
        .prepare_cached("SELECT settings FROM services WHERE sid = ?1")
        .db()?
        .query_row([e.service_sid], |r| r.get(0))
        .optional()
        .db()?;
    if let Some(settings) = settings {
        let s: ChatSettings =
            serde_json::from_str(&settings).map_err(|err| Error::Internal(err.into()))?;
        if let Some(url) = s
            .post_webhook_url
            .filter(|_| twilio_wants(e, s.webhook_filters.as_ref()).is_some())
        {
            let (format, max_attempts) = match s.webhook_dialect {
                WebhookDialect::Chat => (Format::Chat, 1 + s.post_webhook_retry_count),
                WebhookDialect::Conversations => (Format::Conversations, CONVERSATIONS_ATTEMPTS),
            };
            let method = s.webhook_method.unwrap_or_else(|| "POST".into());
            out.push(Target {
                key: format!("service:{}", e.service_sid),
                format,
                url,
                method,
                max_attempts,
            });
        }
    }
    let account: Option<(Option<String>, Option<String>, Option<String>, Option<String>)> = conn
        .prepare_cached("SELECT webhook_post_url, webhook_method, webhook_filters, webhook_target FROM account WHERE id = 1")
        .db()?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()
        .db()?;
    if let Some((Some(url), method, filters, target)) = account {
        let filters: Option<Vec<String>> = filters.and_then(|f| serde_json::from_str(&f).ok());
        if target.as_deref() != Some("flex") && twilio_wants(e, filters.as_ref()).is_some() {
            let method = method.unwrap_or_else(|| "POST".into());
            out.push(Target {
                key: "account".into(),
                format: Format::Conversations,
                url,
                method,
                max_attempts: CONVERSATIONS_ATTEMPTS,
            });
        }
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, url, event_types FROM webhook_endpoints \
             WHERE (service_sid = ?1 OR service_sid IS NULL) AND disabled = 0 ORDER BY seq",
        )
        .db()?;
    let endpoints = stmt
        .query_map([e.service_sid], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .db()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db()?;
    for (id, url, types) in endpoints {
        let types: Option<Vec<String>> = types.and_then(|t| serde_json::from_str(&t).ok());
        if types.is_none_or(|t| t.is_empty() || t.iter().any(|x| x == e.kind.as_str())) {
            out.push(Target {
                key: format!("endpoint:{id}"),
                format: Format::Native,
                url,
                method: "POST".into(),
                max_attempts: 0,
            });
        }
    }
    Ok(out)
}

/// Writes one pending delivery per matching target of a just-written event.
pub fn enqueue(tx: &mut Tx<'_>, e: &OutboxEvent<'_>) -> Result<usize> {
    let targets = targets(tx, e)?;
    let now = now_ms();
    for t in &targets {
        insert(tx, e.id, e.service_sid, e.user_sid, t, now)?;
    }
    if !targets.is_empty() {
        tx.record_deliveries();
    }
    Ok(targets.len())
}

fn insert(
    conn: &Connection,
    event_id: i64,
    service_sid: &str,
    user_sid: &str,
    t: &Target,
    now: Millis,
) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO deliveries (event_id, service_sid, user_sid, target, format, url, method, max_attempts, \
         status, next_attempt_at, idempotency_token, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?10, ?9, ?9) RETURNING id",
    )
    .db()?
    .query_row(
        params![event_id, service_sid, user_sid, t.key, t.format.as_str(), t.url, t.method, t.max_attempts, now, idempotency_token()],
        |r| r.get(0),
    )
    .db()
}

fn idempotency_token() -> String {
    format!("ID{}", ids::random_hex(16))
}

/// Leases up to `limit` due queue heads until `lease_until`.
pub fn claim(
    tx: &mut Tx<'_>,
    now: Millis,
    limit: usize,
    lease_until: Millis,
) -> Result<Vec<ClaimedDelivery>> {
    let ids: Vec<i64> = tx
        .prepare_cached(
            "SELECT d.id FROM deliveries d \
             WHERE d.status = 'pending' AND d.next_attempt_at <= ?1 AND (d.lease_until IS NULL OR d.lease_until <= ?1) \
             AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.target = d.target AND p.user_sid = d.user_sid \
                             AND p.status = 'pending' AND p.id < d.id) \
             ORDER BY d.next_attempt_at, d.id LIMIT ?2",
        )
        .db()?
        .query_map(params![now, limit as i64], |r| r.get(0))
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        tx.prepare_cached("UPDATE deliveries SET lease_until = ?2 WHERE id = ?1")
            .db()?
            .execute(params![id, lease_until])
            .db()?;
        let delivery = get(tx, id)?.ok_or(Error::NotFound)?;
        let event = events::get(tx, delivery.event_id)?.ok_or(Error::NotFound)?;
        let secret = match delivery.target.strip_prefix("endpoint:") {
            Some(endpoint) => tx
                .prepare_cached("SELECT secret FROM webhook_endpoints WHERE id = ?1")
                .db()?
                .query_row([endpoint], |r| r.get(0))
                .optional()
                .db()?,
            None => None,
        };
        out.push(ClaimedDelivery {
            delivery,
            event,
            secret,
        });
    }
    Ok(out)
}

/// Logs attempts and moves their deliveries on; a 410 disables the endpoint and fails what
/// was still pending for it.
pub fn record(tx: &mut Tx<'_>, outcomes: &[AttemptOutcome]) -> Result<()> {
    let now = now_ms();
    for o in outcomes {
        let a = &o.attempt;
        tx.prepare_cached(
            "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, status_code, latency_ms, response_body, error) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .db()?
        .execute(params![o.delivery_id, a.attempt, a.started_at, a.status_code, a.latency_ms, a.response_body, a.error])
        .db()?;
        let (status, next_at) = match o.next {
            Next::Delivered => ("delivered", now),
            Next::RetryAt(at) => ("pending", at),
            Next::Failed | Next::DisableEndpoint => ("failed", now),
        };
        tx.prepare_cached(
            "UPDATE deliveries SET attempts = ?2, status = ?3, next_attempt_at = ?4, lease_until = NULL, \
             last_status = ?5, last_error = ?6, updated_at = ?7 WHERE id = ?1",
        )
        .db()?
        .execute(params![o.delivery_id, a.attempt, status, next_at, a.status_code, a.error, now])
        .db()?;
        if o.next == Next::DisableEndpoint {
            let target: String = tx
                .prepare_cached("SELECT target FROM deliveries WHERE id = ?1")
                .db()?
                .query_row([o.delivery_id], |r| r.get(0))
                .db()?;
            if let Some(endpoint) = target.strip_prefix("endpoint:") {
                tx.prepare_cached("UPDATE webhook_endpoints SET disabled = 1, disabled_reason = ?2, updated_at = ?3 WHERE id = ?1")
                    .db()?
                    .execute(params![endpoint, "the endpoint answered 410 Gone", now])
                    .db()?;
                tx.prepare_cached(
                    "UPDATE deliveries SET status = 'failed', last_error = 'endpoint disabled (410 Gone)', \
                     lease_until = NULL, updated_at = ?2 WHERE target = ?1 AND status = 'pending'",
                )
                .db()?
                .execute(params![target, now])
                .db()?;
            }
        }
    }
    tx.record_deliveries();
    Ok(())
}

/// When the next queue head can be claimed (its retry time, or the end of its lease), if any.
/// Deliveries waiting behind a head do not count: they cannot be claimed before it.
pub fn next_due(conn: &Connection) -> Result<Option<Millis>> {
    conn.prepare_cached(
        "SELECT min(max(d.next_attempt_at, coalesce(d.lease_until, 0))) FROM deliveries d \
         WHERE d.status = 'pending' AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.target = d.target \
         AND p.user_sid = d.user_sid AND p.status = 'pending' AND p.id < d.id)",
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

/// A fresh pending copy of a delivery (new id and token, attempts from zero).
pub fn resend(tx: &mut Tx<'_>, id: i64) -> Result<Delivery> {
    let old = get(tx, id)?.ok_or(Error::NotFound)?;
    let target = Target {
        key: old.target.clone(),
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
