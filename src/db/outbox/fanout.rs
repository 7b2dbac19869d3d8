//! Fan-out: the deliveries an event gets, one per matching target (the service's Twilio
//! webhook, the account's Conversations webhook, native endpoints of the service and from the
//! config file), inserted with the event and marked queue head when their queue is empty.
//!
//! May depend on: rusqlite, serde_json, domain, db::writer.

use super::*;

/// What `enqueue` needs to know about a just-written event.
pub struct OutboxEvent<'a> {
    pub id: i64,
    pub kind: EventType,
    pub service_sid: &'a str,
    pub user_sid: &'a str,
    pub source: Source,
    pub rest_webhooks: bool,
}

pub(super) struct Target {
    pub(super) key: String,
    pub(super) format: Format,
    pub(super) url: String,
    pub(super) method: String,
    /// 0 for native deliveries: the dispatcher's retry policy decides.
    pub(super) max_attempts: i64,
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

/// The account-level Conversations webhook as stored.
struct AccountHook {
    url: Option<String>,
    method: Option<String>,
    filters: Option<String>,
    target: Option<String>,
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
    let account = conn
        .prepare_cached("SELECT webhook_post_url, webhook_method, webhook_filters, webhook_target FROM account WHERE id = 1")
        .db()?
        .query_row([], |r| {
            Ok(AccountHook { url: r.get(0)?, method: r.get(1)?, filters: r.get(2)?, target: r.get(3)? })
        })
        .optional()
        .db()?;
    if let Some(AccountHook {
        url: Some(url),
        method,
        filters,
        target,
    }) = account
    {
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

pub(super) fn insert(
    conn: &Connection,
    event_id: i64,
    service_sid: &str,
    user_sid: &str,
    t: &Target,
    now: Millis,
) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO deliveries (event_id, service_sid, user_sid, target, format, url, method, max_attempts, \
         status, head, next_attempt_at, idempotency_token, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', NOT EXISTS (SELECT 1 FROM deliveries \
         WHERE target = ?4 AND user_sid = ?3 AND status = 'pending'), ?9, ?10, ?9, ?9) RETURNING id",
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
