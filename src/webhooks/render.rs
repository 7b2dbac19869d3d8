//! Webhook requests from stored events: Twilio form parameters (Chat and Conversations
//! flavours, docs/twilio-compatibility.md §8) and reachd's native JSON, with their signing
//! headers.
//!
//! May depend on: serde, serde_json, url, domain, webhooks::sign.

use serde::Serialize;
use serde_json::Value;

use super::sign::{standard_signature, twilio_signature};
use crate::domain::event::Event;
use crate::domain::time::{Millis, rfc3339_ms, twilio_date};
use crate::domain::webhook::{ClaimedDelivery, Format, twilio_event_name};

pub const USER_AGENT: &str = concat!("reachd/", env!("CARGO_PKG_VERSION"));

/// A request ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// The user's profile stored with the event.
struct Profile {
    friendly_name: Option<String>,
    attributes: String,
    role_sid: Option<String>,
    date_created: Millis,
    date_updated: Millis,
}

fn profile(event: &Event) -> Profile {
    let v: Value = serde_json::from_str(&event.user_json).unwrap_or(Value::Null);
    Profile {
        friendly_name: v["friendly_name"].as_str().map(str::to_string),
        attributes: v["attributes"].as_str().unwrap_or("{}").to_string(),
        role_sid: v["role_sid"].as_str().map(str::to_string),
        date_created: v["date_created"].as_i64().unwrap_or(event.created_at),
        date_updated: v["date_updated"].as_i64().unwrap_or(event.created_at),
    }
}

fn flag(value: bool) -> String {
    if value { "true" } else { "false" }.to_string()
}

/// Twilio's post-event parameters for an event (`retry_count` counts earlier attempts).
pub fn twilio_params(
    event: &Event,
    format: Format,
    account_sid: &str,
    retry_count: i64,
) -> Vec<(String, String)> {
    let p = profile(event);
    let date = |ms: Millis| {
        if format == Format::Chat {
            twilio_date(ms)
        } else {
            rfc3339_ms(ms)
        }
    };
    let mut out: Vec<(&str, String)> = vec![
        (
            "EventType",
            twilio_event_name(event.kind)
                .unwrap_or("onUserUpdated")
                .to_string(),
        ),
        ("AccountSid", account_sid.to_string()),
        ("UserSid", event.user_sid.clone()),
        ("Identity", event.identity.clone()),
        ("Attributes", p.attributes),
        ("DateCreated", date(p.date_created)),
        ("DateUpdated", date(p.date_updated)),
        ("Source", event.source.as_str().to_string()),
        ("RetryCount", retry_count.to_string()),
        ("Sequence", event.sequence.to_string()),
    ];
    if format == Format::Chat {
        out.push(("InstanceSid", event.service_sid.clone()));
        out.push(("ServiceSid", event.service_sid.clone()));
    } else {
        out.push(("ChatServiceSid", event.service_sid.clone()));
    }
    if let Some(name) = p.friendly_name {
        out.push(("FriendlyName", name));
    }
    if let Some(role) = p.role_sid {
        out.push(("RoleSid", role));
    }
    if let Some(online) = event.is_online {
        out.push(("IsOnline", flag(online)));
    }
    if let Some(notifiable) = event.is_notifiable {
        out.push(("IsNotifiable", flag(notifiable)));
    }
    if let Some(cause) = event.cause {
        out.push(("Reason", cause.as_str().to_string()));
    }
    if event.source == crate::domain::event::Source::Sdk {
        out.push(("ClientIdentity", event.identity.clone()));
    }
    out.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The native JSON of an event (also the event feed's `data`).
pub fn native_json(event: &Event, account_sid: &str) -> Value {
    serde_json::to_value(NativeBody::of(event, account_sid)).unwrap_or(Value::Null)
}

/// The native JSON of an event, serialized straight from the event: the body of every native
/// delivery, written without building a map first. Fields in key order, as a JSON map of
/// them prints (`native_json`), so both give the same bytes.
#[derive(Serialize)]
struct NativeBody<'a> {
    data: NativeData<'a>,
    timestamp: String,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct NativeData<'a> {
    account_sid: &'a str,
    identity: &'a str,
    is_notifiable: Option<bool>,
    is_online: Option<bool>,
    last_seen: Option<String>,
    reason: Option<&'a str>,
    sequence: i64,
    service_sid: &'a str,
    session_count: Option<i64>,
    source: &'a str,
    update_reasons: &'a [String],
    user_sid: &'a str,
}

impl<'a> NativeBody<'a> {
    fn of(event: &'a Event, account_sid: &'a str) -> NativeBody<'a> {
        NativeBody {
            data: NativeData {
                account_sid,
                identity: &event.identity,
                is_notifiable: event.is_notifiable,
                is_online: event.is_online,
                last_seen: event.last_seen.map(rfc3339_ms),
                reason: event.cause.map(|c| c.as_str()),
                sequence: event.sequence,
                service_sid: &event.service_sid,
                session_count: event.session_count,
                source: event.source.as_str(),
                update_reasons: &event.reasons,
                user_sid: &event.user_sid,
            },
            timestamp: rfc3339_ms(event.created_at),
            kind: event.kind.as_str(),
        }
    }
}

/// The HTTP request of a claimed delivery's next attempt.
pub fn request(
    claimed: &ClaimedDelivery,
    account_sid: &str,
    auth_token: &str,
    now: Millis,
) -> Request {
    let d = &claimed.delivery;
    let mut headers = vec![("User-Agent", USER_AGENT.to_string())];
    if d.format == Format::Native {
        let body =
            serde_json::to_vec(&NativeBody::of(&claimed.event, account_sid)).unwrap_or_default();
        let id = format!("msg_{}", d.idempotency_token);
        let timestamp = now / 1000;
        let signature = claimed
            .secret
            .as_deref()
            .and_then(|s| standard_signature(s, &id, timestamp, &body))
            .unwrap_or_default();
        headers.extend([
            ("Content-Type", "application/json".to_string()),
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ]);
        return Request {
            method: "POST".into(),
            url: d.url.clone(),
            headers,
            body,
        };
    }
    let params = twilio_params(&claimed.event, d.format, account_sid, d.attempts);
    headers.push(("I-Twilio-Idempotency-Token", d.idempotency_token.clone()));
    if d.method.eq_ignore_ascii_case("GET") {
        let mut url = url::Url::parse(&d.url)
            .map(|u| u.to_string())
            .unwrap_or_else(|_| d.url.clone());
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&query);
        headers.push((
            "X-Twilio-Signature",
            twilio_signature(auth_token, &url, &[]),
        ));
        return Request {
            method: "GET".into(),
            url,
            headers,
            body: Vec::new(),
        };
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish()
        .into_bytes();
    headers.push((
        "Content-Type",
        "application/x-www-form-urlencoded; charset=utf-8".to_string(),
    ));
    headers.push((
        "X-Twilio-Signature",
        twilio_signature(auth_token, &d.url, &params),
    ));
    Request {
        method: "POST".into(),
        url: d.url.clone(),
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{EventType, Source};
    use crate::domain::presence::Cause;
    use crate::domain::webhook::{Delivery, DeliveryStatus};
    use serde_json::json;

    fn claimed(format: Format, method: &str) -> ClaimedDelivery {
        let event = Event {
            id: 7,
            service_sid: "IS1".into(),
            user_sid: "US1".into(),
            identity: "alice".into(),
            kind: EventType::ReachabilityUpdated,
            reasons: vec!["reachabilityOnline".into()],
            cause: Some(Cause::SessionOpened),
            sequence: 3,
            is_online: Some(true),
            is_notifiable: None,
            session_count: Some(1),
            last_seen: Some(1_000),
            source: Source::Sdk,
            rest_webhooks: false,
            user_json: r#"{"friendly_name":"Alice","attributes":"{}","role_sid":"RL1","date_created":0,"date_updated":0}"#.into(),
            created_at: 1_000,
        };
        let delivery = Delivery {
            id: 1,
            event_id: 7,
            service_sid: "IS1".into(),
            user_sid: "US1".into(),
            target: "service:IS1".into(),
            format,
            url: "https://hooks.example.com/x?a=1".into(),
            method: method.into(),
            max_attempts: 1,
            attempts: 2,
            status: DeliveryStatus::Pending,
            next_attempt_at: 0,
            idempotency_token: "IDabc".into(),
            last_status: None,
            last_error: None,
            created_at: 0,
            updated_at: 0,
        };
        ClaimedDelivery {
            delivery,
            event,
            secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        }
    }

    fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn chat_posts_are_signed_forms_with_instance_sid() {
        let r = request(&claimed(Format::Chat, "POST"), "AC1", "token", 5_000);
        let body = String::from_utf8(r.body.clone()).expect("utf8");
        let params: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert!(params.contains(&("InstanceSid".into(), "IS1".into())));
        assert!(params.contains(&("IsOnline".into(), "true".into())));
        assert!(params.contains(&("RetryCount".into(), "2".into())));
        assert!(params.contains(&("Reason".into(), "session_opened".into())));
        assert!(
            !params.iter().any(|(k, _)| k == "IsNotifiable"),
            "null is omitted"
        );
        assert_eq!(
            header(&r, "X-Twilio-Signature"),
            Some(twilio_signature("token", "https://hooks.example.com/x?a=1", &params).as_str())
        );
        assert_eq!(header(&r, "I-Twilio-Idempotency-Token"), Some("IDabc"));
    }

    #[test]
    fn get_puts_parameters_in_the_query_and_signs_the_full_url() {
        let r = request(
            &claimed(Format::Conversations, "GET"),
            "AC1",
            "token",
            5_000,
        );
        assert!(r.body.is_empty());
        assert!(
            r.url.starts_with("https://hooks.example.com/x?a=1&")
                && r.url.contains("ChatServiceSid=IS1")
        );
        assert_eq!(
            header(&r, "X-Twilio-Signature"),
            Some(twilio_signature("token", &r.url, &[]).as_str())
        );
    }

    #[test]
    fn native_requests_carry_standard_webhooks_headers() {
        let mut c = claimed(Format::Native, "POST");
        c.delivery.target = "endpoint:WH1".into();
        let r = request(&c, "AC1", "token", 1_614_265_330_000);
        let body: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(body["type"], "user.reachability_updated");
        assert_eq!(
            body["data"]["update_reasons"],
            json!(["reachabilityOnline"])
        );
        assert_eq!(header(&r, "webhook-id"), Some("msg_IDabc"));
        assert_eq!(header(&r, "webhook-timestamp"), Some("1614265330"));
        let expected = standard_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_IDabc",
            1_614_265_330,
            &r.body,
        );
        assert_eq!(header(&r, "webhook-signature"), expected.as_deref());
    }

    /// The map the native body used to be built as: the serialized struct must print the
    /// same bytes (signatures are over them).
    fn native_map(event: &Event, account_sid: &str) -> Value {
        json!({
            "type": event.kind.as_str(),
            "timestamp": rfc3339_ms(event.created_at),
            "data": {
                "account_sid": account_sid,
                "service_sid": event.service_sid,
                "user_sid": event.user_sid,
                "identity": event.identity,
                "is_online": event.is_online,
                "is_notifiable": event.is_notifiable,
                "update_reasons": event.reasons,
                "reason": event.cause.map(|c| c.as_str()),
                "sequence": event.sequence,
                "last_seen": event.last_seen.map(rfc3339_ms),
                "session_count": event.session_count,
                "source": event.source.as_str(),
            },
        })
    }

    #[test]
    fn the_native_body_prints_the_bytes_of_its_map() {
        let full = claimed(Format::Native, "POST").event;
        let mut sparse = full.clone();
        sparse.identity = "al\"ice\u{e9}\n".into();
        sparse.reasons = Vec::new();
        sparse.cause = None;
        sparse.is_online = None;
        sparse.is_notifiable = Some(false);
        sparse.session_count = None;
        sparse.last_seen = None;
        for event in [full, sparse] {
            let body = serde_json::to_vec(&NativeBody::of(&event, "AC1")).expect("body");
            let map = native_map(&event, "AC1");
            assert_eq!(String::from_utf8_lossy(&body), map.to_string());
            assert_eq!(native_json(&event, "AC1"), map);
        }
    }
}
