//! Events: every user change and reachability transition, recorded durably in commit order.
//! The webhook outbox and the realtime feed consume them.
//!
//! The shape of an event is decided here ([`EventDraft`], [`profile_update_reasons`],
//! [`Origin::source`]); storage assigns its id and the user's next sequence.
//!
//! May depend on: serde_json, domain::{presence, store (`Origin`), time, user}.

use serde_json::json;

use super::presence::Cause;
use super::store::Origin;
use super::time::Millis;
use super::user::User;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    UserAdded,
    UserUpdated,
    UserDeleted,
    ReachabilityUpdated,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::UserAdded => "user.added",
            EventType::UserUpdated => "user.updated",
            EventType::UserDeleted => "user.deleted",
            EventType::ReachabilityUpdated => "user.reachability_updated",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            EventType::UserAdded,
            EventType::UserUpdated,
            EventType::UserDeleted,
            EventType::ReachabilityUpdated,
        ]
        .into_iter()
        .find(|t| t.as_str() == value)
    }
}

/// Who made the change: a client SDK or the REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sdk,
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Sdk => "SDK",
            Source::Api => "API",
        }
    }
}

/// Twilio's `updateReasons` for the reachability fields.
pub const REASON_ONLINE: &str = "reachabilityOnline";
pub const REASON_NOTIFIABLE: &str = "reachabilityNotifiable";

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub service_sid: String,
    pub user_sid: String,
    pub identity: String,
    pub kind: EventType,
    pub reasons: Vec<String>,
    pub cause: Option<Cause>,
    pub sequence: i64,
    pub is_online: Option<bool>,
    pub is_notifiable: Option<bool>,
    pub session_count: Option<i64>,
    pub last_seen: Option<Millis>,
    pub source: Source,
    pub rest_webhooks: bool,
    /// The user's profile when the event happened: friendly_name, attributes, role_sid,
    /// date_created, date_updated (JSON).
    pub user_json: String,
    pub created_at: Millis,
}

/// An event to record about a user, as the domain decides it. The user it is recorded with
/// already holds the new state; storage bumps the user's sequence and assigns the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDraft {
    pub kind: EventType,
    /// Twilio's `updateReasons`.
    pub reasons: Vec<&'static str>,
    pub cause: Option<Cause>,
    pub origin: Origin,
    /// Live sessions right after a presence transition.
    pub session_count: Option<u32>,
}

impl EventDraft {
    pub fn new(kind: EventType, origin: Origin) -> Self {
        EventDraft {
            kind,
            reasons: Vec::new(),
            cause: None,
            origin,
            session_count: None,
        }
    }
}

impl Origin {
    /// The event source of a change from here, and whether the REST caller asked for Twilio
    /// webhooks (`X-Twilio-Webhook-Enabled: true`).
    pub fn source(self) -> (Source, bool) {
        match self {
            Origin::Rest { webhooks } => (Source::Api, webhooks),
            Origin::Client => (Source::Sdk, false),
        }
    }
}

/// The `updateReasons` of a profile update: the fields whose values changed.
pub fn profile_update_reasons(before: &User, after: &User) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    if before.friendly_name != after.friendly_name {
        reasons.push("friendlyName");
    }
    if before.attributes != after.attributes {
        reasons.push("attributes");
    }
    if before.role_sid != after.role_sid {
        reasons.push("roleSid");
    }
    reasons
}

/// The user's profile as an event carries it (`Event::user_json`).
pub fn profile_json(user: &User) -> String {
    json!({
        "friendly_name": user.friendly_name,
        "attributes": user.attributes,
        "role_sid": user.role_sid,
        "date_created": user.date_created,
        "date_updated": user.date_updated,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::user::NewUser;

    fn alice() -> User {
        NewUser {
            identity: "alice".into(),
            ..Default::default()
        }
        .into_user("IS1", "RL1", 1_000)
    }

    #[test]
    fn update_reasons_name_exactly_the_changed_profile_fields() {
        let before = alice();
        let mut after = before.clone();
        assert!(profile_update_reasons(&before, &after).is_empty());
        after.friendly_name = Some("Alice".into());
        after.role_sid = Some("RL2".into());
        after.date_updated = 2_000;
        assert_eq!(
            profile_update_reasons(&before, &after),
            ["friendlyName", "roleSid"]
        );
        after.attributes = r#"{"a":1}"#.into();
        assert_eq!(
            profile_update_reasons(&before, &after),
            ["friendlyName", "attributes", "roleSid"]
        );
    }

    #[test]
    fn clients_are_sdk_sources_and_only_rest_asks_for_webhooks() {
        assert_eq!(Origin::Client.source(), (Source::Sdk, false));
        assert_eq!(
            Origin::Rest { webhooks: true }.source(),
            (Source::Api, true)
        );
        assert_eq!(
            Origin::Rest { webhooks: false }.source(),
            (Source::Api, false)
        );
    }

    #[test]
    fn the_profile_json_carries_the_profile_and_its_dates() {
        let profile: serde_json::Value =
            serde_json::from_str(&profile_json(&alice())).expect("JSON");
        assert_eq!(
            profile,
            json!({"friendly_name": null, "attributes": "{}", "role_sid": "RL1",
                   "date_created": 1_000, "date_updated": 1_000})
        );
    }
}
