//! Webhooks: native endpoints, deliveries (the outbox) and their attempts, the leases under
//! which dispatchers attempt them, and the pure rules of what an attempt leads to: the retry
//! rules of each target format (docs/twilio-compatibility.md §8.5 for Twilio targets) and the
//! stored state an outcome settles into ([`settle`]: delivered, retry at a time, failed, or the
//! endpoint disabled by a 410). Which targets an event goes to is in [`super::fanout`].
//!
//! May depend on: serde_json, sha2, domain::{errors, ids, service, time, event}.

use super::errors::{Error, Result};
use super::event::{Event, EventType};
use super::service::validate_webhook_url;
use super::time::Millis;

/// How a delivery is encoded and retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Twilio Chat post-event webhook (form, `InstanceSid`, `X-Twilio-Signature`).
    Chat,
    /// Twilio Conversations post-event webhook (form, `ChatServiceSid`).
    Conversations,
    /// reachd's JSON with Standard Webhooks signatures.
    Native,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Chat => "chat",
            Format::Conversations => "conversations",
            Format::Native => "native",
        }
    }

    pub fn parse(value: &str) -> Self {
        match value {
            "chat" => Format::Chat,
            "conversations" => Format::Conversations,
            _ => Format::Native,
        }
    }

    pub fn is_twilio(self) -> bool {
        !matches!(self, Format::Native)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// The target key of a service's post-event webhook.
pub fn service_target(service_sid: &str) -> String {
    format!("service:{service_sid}")
}

/// The target key of the account's Conversations webhook.
pub const ACCOUNT_TARGET: &str = "account";

/// The target key of a native endpoint.
pub fn endpoint_target(endpoint_id: &str) -> String {
    format!("{ENDPOINT_PREFIX}{endpoint_id}")
}

/// The native endpoint a target key names, if it names one.
pub fn endpoint_of(target: &str) -> Option<&str> {
    target.strip_prefix(ENDPOINT_PREFIX)
}

const ENDPOINT_PREFIX: &str = "endpoint:";

/// An endpoint from the config file (`[[webhooks.endpoints]]`): it receives every service's
/// events and is changed only in the config file.
#[derive(Clone, PartialEq)]
pub struct ConfigEndpoint {
    pub name: String,
    pub url: String,
    pub secret: String,
    pub event_types: Option<Vec<String>>,
}

impl ConfigEndpoint {
    /// The stored id, derived from the name, so that an entry keeps its id (and its delivery
    /// log) across restarts: `WH` and the first 16 bytes of the name's SHA-256, in hex.
    pub fn id(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.name.as_bytes());
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("WH{hex}")
    }
}

/// A native webhook endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: String,
    /// `None` for config-file endpoints, which receive every service's events.
    pub service_sid: Option<String>,
    pub url: String,
    pub description: Option<String>,
    /// `None` means every event type.
    pub event_types: Option<Vec<String>>,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub from_config: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// The event types a native endpoint can subscribe to.
pub const EVENT_TYPES: [EventType; 4] = [
    EventType::UserAdded,
    EventType::UserUpdated,
    EventType::UserDeleted,
    EventType::ReachabilityUpdated,
];

pub fn validate_event_types(types: &[String]) -> Result<()> {
    if types.len() > EVENT_TYPES.len() || types.iter().any(|t| EventType::parse(t).is_none()) {
        return Err(Error::invalid(
            "event_types",
            "must list user.added, user.updated, user.deleted or user.reachability_updated",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewEndpoint {
    pub url: String,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
}

impl NewEndpoint {
    pub fn validate(&self) -> Result<()> {
        if self.url.is_empty() {
            return Err(Error::MissingParam("url".into()));
        }
        validate_webhook_url("url", &self.url)?;
        validate_description(&self.description)?;
        if let Some(types) = &self.event_types {
            validate_event_types(types)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    /// `Some(None)` subscribes to every type again.
    pub event_types: Option<Option<Vec<String>>>,
    /// `Some(false)` re-enables an endpoint disabled by a 410.
    pub disabled: Option<bool>,
}

impl EndpointPatch {
    pub fn validate(&self) -> Result<()> {
        if let Some(url) = &self.url {
            validate_webhook_url("url", url)?;
        }
        validate_description(&self.description)?;
        if let Some(Some(types)) = &self.event_types {
            validate_event_types(types)?;
        }
        Ok(())
    }

    /// Whether applying this patch to `before` redirects the endpoint's pending deliveries to
    /// the new URL, due at once: a new URL is how an operator fixes a broken receiver, and its
    /// backlog should neither go to the old address nor sit out the rest of its backoff.
    pub fn redirects_pending_deliveries(&self, before: &Endpoint) -> bool {
        self.url.as_ref().is_some_and(|url| *url != before.url)
    }
}

fn validate_description(description: &Option<String>) -> Result<()> {
    match description {
        Some(d) if d.chars().count() > 256 => Err(Error::invalid(
            "description",
            "must be at most 256 characters",
        )),
        _ => Ok(()),
    }
}

/// One delivery of one event to one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub event_id: i64,
    pub service_sid: String,
    pub user_sid: String,
    /// `service:IS…`, `account` or `endpoint:WH…`.
    pub target: String,
    pub format: Format,
    pub url: String,
    pub method: String,
    pub max_attempts: i64,
    pub attempts: i64,
    pub status: DeliveryStatus,
    pub next_attempt_at: Millis,
    pub idempotency_token: String,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One logged attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub attempt: i64,
    pub started_at: Millis,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

/// A dispatcher's claim on deliveries, held in storage: `owner` (one id per dispatcher start)
/// may attempt them until `until`; after that another dispatcher may take them over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub until: Millis,
}

/// A delivery claimed for an attempt (leased to the claiming dispatcher in storage), with
/// what sending it needs.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery: Delivery,
    pub event: Event,
    /// The endpoint's `whsec_` secret (native deliveries).
    pub secret: Option<String>,
}

/// The result of one attempt, to be recorded (by the owner of the delivery's lease only).
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub delivery_id: i64,
    pub attempt: Attempt,
    pub settlement: Settlement,
}

/// What an attempt's outcome does to stored state: decided by [`settle`], written as is by
/// storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub status: DeliveryStatus,
    /// Pending: when to attempt again. Delivered or failed: when that was decided.
    pub next_attempt_at: Millis,
    /// The delivery's native endpoint answered 410 Gone: disable it.
    pub disable_endpoint: Option<EndpointGone>,
}

/// A native endpoint to disable, and what to say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointGone {
    pub endpoint_id: String,
    /// The endpoint's `disabled_reason`.
    pub reason: &'static str,
    /// The `last_error` of its other pending deliveries, which fail with it.
    pub pending_error: &'static str,
}

/// The stored state a delivery to `target` settles into after an attempt whose policy
/// decision was `next`, at `now`. A 410 from a native endpoint fails the delivery and disables
/// the endpoint (which fails its other pending deliveries); on any other target it only fails
/// the delivery.
pub fn settle(target: &str, next: Next, now: Millis) -> Settlement {
    let (status, next_attempt_at) = match next {
        Next::Delivered => (DeliveryStatus::Delivered, now),
        Next::RetryAt(at) => (DeliveryStatus::Pending, at),
        Next::Failed | Next::DisableEndpoint => (DeliveryStatus::Failed, now),
    };
    let disable_endpoint = match next {
        Next::DisableEndpoint => endpoint_of(target).map(|id| EndpointGone {
            endpoint_id: id.to_string(),
            reason: "the endpoint answered 410 Gone",
            pending_error: "endpoint disabled (410 Gone)",
        }),
        _ => None,
    };
    Settlement {
        status,
        next_attempt_at,
        disable_endpoint,
    }
}

/// What came back from one HTTP attempt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendResult {
    pub status: Option<u16>,
    pub timed_out: bool,
    /// Connection refused, reset, DNS failure, refused private address…
    pub failed_to_connect: bool,
    /// `Retry-After` in seconds, when the response had one.
    pub retry_after_secs: Option<u64>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    RetryAt(Millis),
    Failed,
    /// The endpoint answered 410 Gone: fail this delivery and disable the endpoint.
    DisableEndpoint,
}

/// Retry rules: Twilio targets retry only timeouts, connection failures, 429, 503 and 504, up to
/// their attempt limit, with a doubling delay (docs/twilio-compatibility.md §8.5); native
/// targets retry any failure on the schedule with jitter, honour a bounded `Retry-After`, and
/// are disabled by a 410.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Native schedule: delay before retry n (seconds); attempts = 1 + its length.
    pub schedule_secs: Vec<u64>,
    /// Twilio targets: delay before the first retry, doubling after.
    pub twilio_base_ms: u64,
    /// Bounds for a native `Retry-After`.
    pub retry_after_max_secs: u64,
}

impl RetryPolicy {
    /// Attempts allowed for a native delivery.
    pub fn native_attempts(&self) -> i64 {
        1 + self.schedule_secs.len() as i64
    }

    /// Decides after attempt number `attempt` (1-based) of `max_attempts`; `jitter` in
    /// [0.8, 1.2] scales native delays.
    pub fn decide(
        &self,
        format: Format,
        attempt: i64,
        max_attempts: i64,
        result: &SendResult,
        now: Millis,
        jitter: f64,
    ) -> Next {
        if result.status.is_some_and(|s| (200..300).contains(&s)) {
            return Next::Delivered;
        }
        let more = attempt < max_attempts;
        if format.is_twilio() {
            let retryable = result.timed_out
                || result.failed_to_connect
                || matches!(result.status, Some(429 | 503 | 504));
            if retryable && more {
                let delay = self
                    .twilio_base_ms
                    .saturating_mul(1 << (attempt - 1).clamp(0, 16));
                return Next::RetryAt(now + delay as i64);
            }
            return Next::Failed;
        }
        if result.status == Some(410) {
            return Next::DisableEndpoint;
        }
        if !more {
            return Next::Failed;
        }
        let scheduled = self
            .schedule_secs
            .get((attempt - 1) as usize)
            .copied()
            .unwrap_or(0) as f64
            * 1000.0
            * jitter;
        let delay = match result.retry_after_secs {
            Some(secs) => (secs.clamp(1, self.retry_after_max_secs) * 1000) as f64,
            None => scheduled,
        };
        Next::RetryAt(now + delay as i64)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            schedule_secs: vec![5, 30, 120, 600, 1800, 3600, 10_800, 21_600, 43_200, 86_400],
            twilio_base_ms: 1_000,
            retry_after_max_secs: 3_600,
        }
    }
}

/// The Twilio event name of an event type, if Twilio targets receive it.
pub fn twilio_event_name(kind: EventType) -> Option<&'static str> {
    match kind {
        EventType::UserAdded => Some("onUserAdded"),
        EventType::UserUpdated | EventType::ReachabilityUpdated => Some("onUserUpdated"),
        EventType::UserDeleted => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> SendResult {
        SendResult {
            status: Some(code),
            ..Default::default()
        }
    }

    #[test]
    fn twilio_targets_retry_only_timeouts_connection_failures_429_503_504() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(Format::Chat, 1, 3, &status(204), 0, 1.0),
            Next::Delivered
        );
        for s in [429, 503, 504] {
            assert_eq!(
                p.decide(Format::Chat, 1, 3, &status(s), 0, 1.0),
                Next::RetryAt(1_000)
            );
        }
        assert_eq!(
            p.decide(Format::Chat, 2, 3, &status(503), 0, 1.0),
            Next::RetryAt(2_000)
        );
        assert_eq!(
            p.decide(Format::Chat, 3, 3, &status(503), 0, 1.0),
            Next::Failed,
            "retry count exhausted"
        );
        assert_eq!(
            p.decide(Format::Chat, 1, 3, &status(500), 0, 1.0),
            Next::Failed,
            "500 is final"
        );
        let timeout = SendResult {
            timed_out: true,
            ..Default::default()
        };
        assert!(matches!(
            p.decide(Format::Conversations, 1, 2, &timeout, 0, 1.0),
            Next::RetryAt(_)
        ));
        assert_eq!(
            p.decide(Format::Chat, 1, 1, &timeout, 0, 1.0),
            Next::Failed,
            "retry count 0"
        );
    }

    #[test]
    fn native_targets_follow_the_schedule_retry_after_and_410() {
        let p = RetryPolicy::default();
        let max = p.native_attempts();
        assert_eq!(max, 11);
        assert_eq!(
            p.decide(Format::Native, 1, max, &status(500), 0, 1.0),
            Next::RetryAt(5_000)
        );
        assert_eq!(
            p.decide(Format::Native, 2, max, &status(500), 0, 1.2),
            Next::RetryAt(36_000)
        );
        assert_eq!(
            p.decide(Format::Native, 11, max, &status(500), 0, 1.0),
            Next::Failed
        );
        assert_eq!(
            p.decide(Format::Native, 1, max, &status(410), 0, 1.0),
            Next::DisableEndpoint
        );
        let later = SendResult {
            status: Some(429),
            retry_after_secs: Some(90_000),
            ..Default::default()
        };
        assert_eq!(
            p.decide(Format::Native, 1, max, &later, 0, 1.0),
            Next::RetryAt(3_600_000),
            "bounded"
        );
    }

    #[test]
    fn outcomes_settle_into_delivered_retry_failed_or_a_disabled_endpoint() {
        let at = |next| settle("endpoint:WH1", next, 7);
        assert_eq!(
            at(Next::Delivered),
            Settlement {
                status: DeliveryStatus::Delivered,
                next_attempt_at: 7,
                disable_endpoint: None
            }
        );
        assert_eq!(
            at(Next::RetryAt(5_000)),
            Settlement {
                status: DeliveryStatus::Pending,
                next_attempt_at: 5_000,
                disable_endpoint: None
            }
        );
        assert_eq!(at(Next::Failed).status, DeliveryStatus::Failed);
        assert_eq!(at(Next::Failed).disable_endpoint, None);
        let gone = at(Next::DisableEndpoint);
        assert_eq!(gone.status, DeliveryStatus::Failed);
        assert_eq!(gone.next_attempt_at, 7);
        assert_eq!(
            gone.disable_endpoint.map(|g| g.endpoint_id),
            Some("WH1".to_string())
        );
        let twilio = settle(&service_target("IS1"), Next::DisableEndpoint, 7);
        assert_eq!(twilio.status, DeliveryStatus::Failed);
        assert_eq!(
            twilio.disable_endpoint, None,
            "only native endpoints are disabled"
        );
        assert_eq!(
            settle(ACCOUNT_TARGET, Next::DisableEndpoint, 7).disable_endpoint,
            None
        );
    }

    #[test]
    fn target_keys_name_services_the_account_and_endpoints() {
        assert_eq!(service_target("IS1"), "service:IS1");
        assert_eq!(endpoint_target("WH1"), "endpoint:WH1");
        assert_eq!(endpoint_of("endpoint:WH1"), Some("WH1"));
        assert_eq!(endpoint_of("service:IS1"), None);
        assert_eq!(endpoint_of(ACCOUNT_TARGET), None);
    }

    #[test]
    fn endpoints_validate_urls_and_event_types() {
        let ok = NewEndpoint {
            url: "https://hooks.example.com/x".into(),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let bad = NewEndpoint {
            url: "ftp://x".into(),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("url"));
        let types = NewEndpoint {
            event_types: Some(vec!["user.exploded".into()]),
            ..ok
        };
        assert!(
            types
                .validate()
                .unwrap_err()
                .to_string()
                .contains("event_types")
        );
    }
}
