//! Events: every user change and reachability transition, recorded durably in commit order.
//! The webhook outbox and the realtime feed consume them.
//!
//! May depend on: domain::{presence, time, user}.

use super::presence::Cause;
use super::time::Millis;

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
