//! Fan-out, the storage half: loads an event's candidate targets (the service's Chat settings,
//! the account's Conversations webhook, the enabled native endpoints of the service and from
//! the config file), lets the domain route the event ([`crate::domain::fanout::route`]), and
//! inserts the deliveries it returns with the event, marked queue head when their queue is
//! empty. Which targets get what is decided in the domain, not here.
//!
//! May depend on: rusqlite, serde_json, domain, db::writer.

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
fn candidates(conn: &Connection, service_sid: &str) -> Result<Candidates> {
    let settings: Option<String> = conn
        .prepare_cached("SELECT settings FROM services WHERE sid = ?1")
        .db()?
        .query_row([service_sid], |r| r.get(0))
        .optional()
        .db()?;
    let service = match settings {
        Some(settings) => {
            let s: ChatSettings =
                serde_json::from_str(&settings).map_err(|err| Error::Internal(err.into()))?;
            Some(ServiceWebhook::of(&s))
        }
        None => None,
    };
    let account = conn
        .prepare_cached(
            "SELECT webhook_post_url, webhook_method, webhook_filters, webhook_target FROM account WHERE id = 1",
        )
        .db()?
        .query_row([], |r| {
            let filters: Option<String> = r.get(2)?;
            Ok(AccountWebhook {
                post_webhook_url: r.get(0)?,
                method: r.get(1)?,
                filters: filters.and_then(|f| serde_json::from_str(&f).ok()),
                target: r.get(3)?,
                pre_webhook_url: None,
            })
        })
        .optional()
        .db()?;
    let endpoints = conn
        .prepare_cached(
            "SELECT id, url, event_types FROM webhook_endpoints \
             WHERE (service_sid = ?1 OR service_sid IS NULL) AND disabled = 0 ORDER BY seq",
        )
        .db()?
        .query_map([service_sid], |r| {
            let types: Option<String> = r.get(2)?;
            Ok(EndpointCandidate {
                id: r.get(0)?,
                url: r.get(1)?,
                event_types: types.and_then(|t| serde_json::from_str(&t).ok()),
            })
        })
        .db()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db()?;
    Ok(Candidates {
        service,
        account,
        endpoints,
    })
}

/// Writes one pending delivery per target the domain routes a just-written event to.
pub fn enqueue(tx: &mut Tx<'_>, e: &OutboxEvent<'_>) -> Result<usize> {
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
/// has no other pending delivery.
pub(super) fn insert(
    conn: &Connection,
    event_id: i64,
    service_sid: &str,
    user_sid: &str,
    d: &NewDelivery,
    now: Millis,
) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO deliveries (event_id, service_sid, user_sid, target, format, url, method, max_attempts, \
         status, head, next_attempt_at, idempotency_token, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', coalesce((SELECT status != 'pending' FROM deliveries \
         WHERE target = ?4 AND user_sid = ?3 ORDER BY id DESC LIMIT 1), 1), ?9, ?10, ?9, ?9) RETURNING id",
    )
    .db()?
    .query_row(
        params![event_id, service_sid, user_sid, d.target, d.format.as_str(), d.url, d.method, d.max_attempts, now, idempotency_token()],
        |r| r.get(0),
    )
    .db()
}

fn idempotency_token() -> String {
    format!("ID{}", ids::random_hex(16))
}
