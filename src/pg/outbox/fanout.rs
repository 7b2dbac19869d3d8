//! Fan-out, the storage half on PostgreSQL: loads an event's candidate targets (the service's
//! Chat settings, the account's Conversations webhook, the enabled native endpoints of the
//! service and from the config file), lets the domain route the event
//! ([`crate::domain::fanout::route`]), and inserts the deliveries it returns with the event,
//! marked queue head when their queue is empty. Which targets get what is decided in the
//! domain, not here.
//!
//! May depend on: postgres, serde_json, domain, pg::writer.

use super::*;
use crate::domain::account::AccountWebhook;
use crate::domain::fanout::{
    Candidates, EndpointCandidate, NewDelivery, RoutedEvent, ServiceWebhook, route,
};

/// What `enqueue` needs to know about a just-written event.
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

/// Writes one pending delivery per target the domain routes a just-written event to.
pub fn enqueue(tx: &mut Tx<'_, '_>, e: &OutboxEvent<'_>) -> Result<usize> {
    let routed = RoutedEvent {
        kind: e.kind,
        service_sid: e.service_sid,
        source: e.source,
        rest_webhooks: e.rest_webhooks,
    };
    let deliveries = route(&routed, &candidates(tx, e.service_sid)?);
    let now = now_ms();
    for d in &deliveries {
        insert(tx, e.id, e.service_sid, e.user_sid, d, now)?;
    }
    if !deliveries.is_empty() {
        tx.record_deliveries();
    }
    Ok(deliveries.len())
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
