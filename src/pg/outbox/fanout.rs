//! Fan-out, the storage half on PostgreSQL: loads an event's candidate targets (the service's
//! Chat settings, the account's Conversations webhook, the enabled native endpoints of the
//! service and from the config file), lets the domain route the event
//! ([`crate::domain::fanout::route`]), and inserts the deliveries it returns with the event,
//! marked queue head when their queue is empty. Which targets get what is decided in the
//! domain, not here.
//!
//! May depend on: postgres, serde_json, domain, pg::writer.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use super::*;
use crate::domain::account::AccountWebhook;
use crate::domain::fanout::{
    Candidates, EndpointCandidate, NewDelivery, RoutedEvent, ServiceWebhook, route,
};

/// What `enqueue_all` needs to know about a just-written event.
pub struct OutboxEvent<'a> {
    pub id: i64,
    pub kind: EventType,
    pub service_sid: &'a str,
    pub user_sid: &'a str,
    pub source: Source,
    pub rest_webhooks: bool,
}

/// Every target the event's service may send to, as stored.
fn candidates(client: &mut impl Sql, service_sid: &str) -> Result<Candidates> {
    let settings: Option<String> = client
        .query_opt(
            "SELECT settings FROM services WHERE sid = $1",
            &[&service_sid],
        )
        .db()?
        .map(|r| r.try_get(0))
        .transpose()
        .db()?;
    let service = match settings {
        Some(settings) => {
            let s: ChatSettings =
                serde_json::from_str(&settings).map_err(|err| Error::Internal(err.into()))?;
            Some(ServiceWebhook::of(&s))
        }
        None => None,
    };
    let account = client
        .query_opt(
            "SELECT webhook_post_url, webhook_method, webhook_filters, webhook_target FROM account WHERE id = 1",
            &[],
        )
        .db()?
        .map(|r| -> Result<AccountWebhook> {
            let filters: Option<String> = r.try_get(2).db()?;
            Ok(AccountWebhook {
                post_webhook_url: r.try_get(0).db()?,
                method: r.try_get(1).db()?,
                filters: filters.and_then(|f| serde_json::from_str(&f).ok()),
                target: r.try_get(3).db()?,
                pre_webhook_url: None,
            })
        })
        .transpose()?;
    let endpoints = client
        .query(
            "SELECT id, url, event_types FROM webhook_endpoints \
             WHERE (service_sid = $1 OR service_sid IS NULL) AND NOT disabled ORDER BY seq",
            &[&service_sid],
        )
        .db()?
        .iter()
        .map(|r| {
            let types: Option<String> = r.try_get(2).db()?;
            Ok(EndpointCandidate {
                id: r.try_get(0).db()?,
                url: r.try_get(1).db()?,
                event_types: types.and_then(|t| serde_json::from_str(&t).ok()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Candidates {
        service,
        account,
        endpoints,
    })
}

/// Writes one pending delivery per target the domain routes each just-written event to, in
/// the events' order, with a fixed handful of
/// statements: each service's candidates once, then every queue's lock (in one statement, in
/// sorted order), the queues that already have a pending delivery, and the inserts. A new
/// delivery is its queue's head when the queue had no pending delivery and no earlier new one.
pub fn enqueue_all(tx: &mut Tx<'_, '_>, events: &[OutboxEvent<'_>]) -> Result<usize> {
    let mut candidates_of: HashMap<&str, Candidates> = HashMap::new();
    let mut rows: Vec<(&OutboxEvent<'_>, NewDelivery)> = Vec::new();
    for e in events {
        let candidates = match candidates_of.entry(e.service_sid) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => slot.insert(candidates(tx, e.service_sid)?),
        };
        let routed = RoutedEvent {
            kind: e.kind,
            service_sid: e.service_sid,
            source: e.source,
            rest_webhooks: e.rest_webhooks,
        };
        rows.extend(route(&routed, candidates).into_iter().map(|d| (e, d)));
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let mut queues: Vec<(&str, &str)> = rows
        .iter()
        .map(|(e, d)| (d.target.as_str(), e.user_sid))
        .collect();
    queues.sort_unstable();
    queues.dedup();
    let targets: Vec<&str> = queues.iter().map(|q| q.0).collect();
    let users: Vec<&str> = queues.iter().map(|q| q.1).collect();
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(q.t || ' ' || q.u)) \
         FROM unnest($2::TEXT[], $3::TEXT[]) WITH ORDINALITY AS q(t, u, n) ORDER BY q.n",
        &[&QUEUE_LOCK_CLASS, &targets, &users],
    )
    .db()?;
    let mut busy: HashSet<(String, String)> = tx
        .query(
            "SELECT DISTINCT d.target, d.user_sid FROM unnest($1::TEXT[], $2::TEXT[]) AS q(t, u) \
             JOIN deliveries d ON d.target = q.t AND d.user_sid = q.u AND d.status = 'pending'",
            &[&targets, &users],
        )
        .db()?
        .iter()
        .map(|r| Ok((r.try_get(0).db()?, r.try_get(1).db()?)))
        .collect::<Result<_>>()?;
    let heads: Vec<bool> = rows
        .iter()
        .map(|(e, d)| busy.insert((d.target.clone(), e.user_sid.to_string())))
        .collect();
    let now = now_ms();
    tx.execute(
        "INSERT INTO deliveries (event_id, service_sid, user_sid, target, format, url, method, \
         max_attempts, status, head, next_attempt_at, idempotency_token, created_at, updated_at) \
         SELECT r.e, r.s, r.u, r.t, r.f, r.url, r.m, r.a, 'pending', r.h, $11, r.token, $11, $11 \
         FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], \
         $7::TEXT[], $8::BIGINT[], $9::BOOLEAN[], $10::TEXT[]) \
         WITH ORDINALITY AS r(e, s, u, t, f, url, m, a, h, token, n) ORDER BY r.n",
        &[
            &rows.iter().map(|(e, _)| e.id).collect::<Vec<i64>>(),
            &rows
                .iter()
                .map(|(e, _)| e.service_sid)
                .collect::<Vec<&str>>(),
            &rows.iter().map(|(e, _)| e.user_sid).collect::<Vec<&str>>(),
            &rows
                .iter()
                .map(|(_, d)| d.target.as_str())
                .collect::<Vec<&str>>(),
            &rows
                .iter()
                .map(|(_, d)| d.format.as_str())
                .collect::<Vec<&str>>(),
            &rows
                .iter()
                .map(|(_, d)| d.url.as_str())
                .collect::<Vec<&str>>(),
            &rows
                .iter()
                .map(|(_, d)| d.method.as_str())
                .collect::<Vec<&str>>(),
            &rows
                .iter()
                .map(|(_, d)| d.max_attempts)
                .collect::<Vec<i64>>(),
            &heads,
            &rows
                .iter()
                .map(|_| idempotency_token())
                .collect::<Vec<String>>(),
            &now,
        ],
    )
    .db()?;
    tx.record_deliveries();
    Ok(rows.len())
}

/// Inserts a pending, unleased delivery, the head of its (target, user) queue when the queue
/// has no other pending delivery. The queue's lock is taken first, in its own statement, so
/// that the head test below reads a snapshot in which no other transaction is changing this
/// queue's head (see the module doc of `outbox`).
pub(super) fn insert(
    client: &mut impl Sql,
    event_id: i64,
    service_sid: &str,
    user_sid: &str,
    d: &NewDelivery,
    now: Millis,
) -> Result<i64> {
    lock_queue(client, &d.target, user_sid)?;
    client
        .query_one(
            "INSERT INTO deliveries (event_id, service_sid, user_sid, target, format, url, method, max_attempts, \
             status, head, next_attempt_at, idempotency_token, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', NOT EXISTS (SELECT 1 FROM deliveries \
             WHERE target = $4 AND user_sid = $3 AND status = 'pending'), $9, $10, $9, $9) RETURNING id",
            &[
                &event_id,
                &service_sid,
                &user_sid,
                &d.target,
                &d.format.as_str(),
                &d.url,
                &d.method,
                &d.max_attempts,
                &now,
                &idempotency_token(),
            ],
        )
        .db()?
        .try_get(0)
        .db()
}

fn idempotency_token() -> String {
    format!("ID{}", ids::random_hex(16))
}
