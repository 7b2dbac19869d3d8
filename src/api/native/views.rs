//! JSON views of the native API (RFC 3339 timestamps, snake_case).
//!
//! May depend on: serde_json, domain.

use serde_json::{Value, json};

use crate::domain::binding::Binding;
use crate::domain::event::Event;
use crate::domain::presence::{ServicePresence, format_session_id};
use crate::domain::service::Service;
use crate::domain::time::rfc3339_ms;
use crate::domain::user::User;
use crate::domain::webhook::{Attempt, Delivery, DeliveryStatus, Endpoint};
use crate::presence::SessionView;

pub fn binding_json(b: &Binding) -> Value {
    json!({
        "sid": b.sid,
        "service_sid": b.service_sid,
        "user_sid": b.user_sid,
        "identity": b.identity,
        "binding_type": b.binding_type.as_str(),
        "endpoint": b.endpoint,
        "credential_sid": b.credential_sid,
        "date_created": rfc3339_ms(b.date_created),
        "date_updated": rfc3339_ms(b.date_updated),
    })
}

/// `is_online` / `is_notifiable` with real values (unlike Twilio lists); null while the
/// service has reachability disabled or the state is unknown since enabling.
fn reach(service: &Service, user: &User) -> (Option<bool>, Option<bool>) {
    if service.reachability_enabled {
        (user.reachability.is_online, user.reachability.is_notifiable)
    } else {
        (None, None)
    }
}

/// The native reachability view.
pub fn reachability_json(service: &Service, user: &User, session_count: u32) -> Value {
    let (is_online, is_notifiable) = reach(service, user);
    let r = &user.reachability;
    json!({
        "identity": user.identity,
        "user_sid": user.sid,
        "is_online": is_online,
        "is_notifiable": is_notifiable,
        "last_seen": r.last_seen.map(rfc3339_ms),
        "online_since": if is_online == Some(true) { r.online_since.map(rfc3339_ms) } else { None },
        "session_count": if service.reachability_enabled { Some(session_count) } else { None },
        "sequence": r.sequence,
    })
}

/// What a client sees of another user.
pub fn descriptor_json(service: &Service, user: &User) -> Value {
    let (is_online, is_notifiable) = reach(service, user);
    json!({
        "identity": user.identity,
        "user_sid": user.sid,
        "friendly_name": user.friendly_name,
        "attributes": user.attributes,
        "is_online": is_online,
        "is_notifiable": is_notifiable,
        "reachability_enabled": service.reachability_enabled,
    })
}

pub fn session_json(s: &SessionView) -> Value {
    json!({
        "id": format_session_id(s.id),
        "transport": s.transport.as_str(),
        "endpoint": s.endpoint,
        "created": rfc3339_ms(s.created_at),
        "last_ping": rfc3339_ms(s.last_ping_at),
        "expires": rfc3339_ms(s.expires_at),
    })
}

pub fn settings_json(service: &Service, effective: &ServicePresence) -> Value {
    let o = &service.presence;
    json!({
        "service_sid": service.sid,
        "reachability_enabled": service.reachability_enabled,
        "ping_interval_ms": effective.ping_interval_ms,
        "session_ttl_ms": effective.session_ttl_ms,
        "offline_grace_ms": effective.offline_grace_ms,
        "overrides": {
            "ping_interval_ms": o.ping_interval_ms,
            "session_ttl_ms": o.session_ttl_ms,
            "offline_grace_ms": o.offline_grace_ms,
        },
    })
}

pub fn endpoint_json(e: &Endpoint, secret: Option<&str>) -> Value {
    let mut v = json!({
        "id": e.id,
        "service_sid": e.service_sid,
        "url": e.url,
        "description": e.description,
        "event_types": e.event_types,
        "disabled": e.disabled,
        "disabled_reason": e.disabled_reason,
        "from_config": e.from_config,
        "created": rfc3339_ms(e.created_at),
        "updated": rfc3339_ms(e.updated_at),
    });
    if let Some(secret) = secret {
        v["secret"] = secret.into();
    }
    v
}

pub fn delivery_json(d: &Delivery, attempts: &[Attempt]) -> Value {
    let log: Vec<Value> = attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "at": rfc3339_ms(a.started_at),
                "status": a.status_code,
                "latency_ms": a.latency_ms,
                "response": a.response_body,
                "error": a.error,
            })
        })
        .collect();
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "service_sid": d.service_sid,
        "user_sid": d.user_sid,
        "target": d.target,
        "format": d.format.as_str(),
        "url": d.url,
        "method": d.method,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "next_attempt": if d.status == DeliveryStatus::Pending { Some(rfc3339_ms(d.next_attempt_at)) } else { None },
        "idempotency_token": d.idempotency_token,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created": rfc3339_ms(d.created_at),
        "updated": rfc3339_ms(d.updated_at),
        "attempt_log": log,
    })
}

/// An event of the feed: the native webhook body plus its id.
pub fn event_json(event: &Event, account_sid: &str) -> Value {
    let mut v = crate::webhooks::render::native_json(event, account_sid);
    v["id"] = event.id.to_string().into();
    v
}
