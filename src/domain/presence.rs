//! Presence vocabulary shared by the engine and storage: causes, transitions, persisted
//! sessions, and per-service timings.
//!
//! May depend on: std, domain::{service, time}.

use std::sync::Arc;

use super::service::{PresenceOverrides, Service};
use super::time::Millis;

/// Why a user's reachability changed (docs/ARCHITECTURE.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    SessionOpened,
    SessionClosed,
    SessionTimeout,
    BindingAdded,
    BindingRemoved,
    ReachabilityEnabled,
    /// The node that held the user's only sessions stopped renewing its lease (cluster mode).
    NodeLost,
}

impl Cause {
    /// Every cause (what `reachd_transitions_total` is exported with from the start).
    pub const ALL: [Cause; 7] = [
        Cause::SessionOpened,
        Cause::SessionClosed,
        Cause::SessionTimeout,
        Cause::BindingAdded,
        Cause::BindingRemoved,
        Cause::ReachabilityEnabled,
        Cause::NodeLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::SessionOpened => "session_opened",
            Cause::SessionClosed => "session_closed",
            Cause::SessionTimeout => "session_timeout",
            Cause::BindingAdded => "binding_added",
            Cause::BindingRemoved => "binding_removed",
            Cause::ReachabilityEnabled => "reachability_enabled",
            Cause::NodeLost => "node_lost",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Cause::ALL.into_iter().find(|c| c.as_str() == value)
    }
}

/// A change of a user's aggregated online state, as decided by the presence engine. Storage
/// applies it only if it changes the stored state and the service has reachability enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub service_sid: Arc<str>,
    pub identity: Arc<str>,
    pub online: bool,
    pub cause: Cause,
    /// Wall-clock time of the change.
    pub at: Millis,
    /// Wall-clock time of the user's last activity (last ping or session end).
    pub last_seen: Millis,
    /// Live sessions right after the change.
    pub session_count: u32,
}

/// How a session reaches reachd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    WebSocket,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::WebSocket => "websocket",
        }
    }

    pub fn parse(value: &str) -> Self {
        if value == "websocket" {
            Transport::WebSocket
        } else {
            Transport::Http
        }
    }
}

/// A session as stored so that a restart can recover it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedSession {
    pub id: u64,
    pub service_sid: String,
    pub identity: String,
    pub transport: Transport,
    pub endpoint: Option<String>,
    pub created_at: Millis,
    pub last_ping_at: Millis,
    pub expires_at: Millis,
}

/// A session that ended and left its user's offline transition waiting for the grace period.
/// Its row is kept, marked ended, until that transition is committed, so that a restart in
/// between still reports the user offline with the true cause and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    pub id: u64,
    pub service_sid: String,
    pub identity: String,
    /// The user's last sign of life: the close, or the last ping of a session that timed out.
    pub at: Millis,
    pub cause: Cause,
}

/// What the engine needs at startup: stored sessions and the users stored as online.
#[derive(Debug, Clone, Default)]
pub struct PresenceSnapshot {
    pub sessions: Vec<PersistedSession>,
    /// `(service_sid, identity)` of users whose stored `is_online` is true.
    pub online_users: Vec<(String, String)>,
    /// Sessions that ended inside their user's grace period before the server stopped.
    pub ended: Vec<SessionEnd>,
}

/// A batch of session-table changes.
#[derive(Debug, Clone, Default)]
pub struct SessionFlush {
    pub upserts: Vec<PersistedSession>,
    pub deletes: Vec<u64>,
    /// Rows to keep, marked ended (see [`SessionEnd`]); removed with the user's offline
    /// transition.
    pub ends: Vec<SessionEnd>,
}

/// What the presence runtime commits in one write: transitions (applied in order), and the
/// session-table changes that go with them.
#[derive(Debug, Clone, Default)]
pub struct PresenceBatch {
    pub transitions: Vec<Transition>,
    pub sessions: SessionFlush,
    /// In cluster mode, the membership whose engine made the batch: storage commits it only
    /// while that member's lease holds (the fence), and decides transitions across members.
    pub member: Option<super::cluster::MemberId>,
}

impl PresenceBatch {
    pub fn is_empty(&self) -> bool {
        self.transitions.is_empty()
            && self.sessions.upserts.is_empty()
            && self.sessions.deletes.is_empty()
            && self.sessions.ends.is_empty()
    }
}

/// Server-wide presence defaults (config `[presence]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceDefaults {
    pub ping_interval_ms: u64,
    pub session_ttl_ms: u64,
    pub offline_grace_ms: u64,
}

/// Effective timings and reachability flag of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePresence {
    pub reachability_enabled: bool,
    pub ping_interval_ms: u64,
    pub session_ttl_ms: u64,
    pub offline_grace_ms: u64,
}

impl ServicePresence {
    /// The timings `service` would have with `overrides`, if they are consistent: a session's
    /// TTL must exceed the ping interval clients are told, or sessions expire between pings.
    pub fn with_overrides(
        service: &Service,
        overrides: PresenceOverrides,
        defaults: &PresenceDefaults,
    ) -> crate::domain::Result<Self> {
        let mut candidate = service.clone();
        candidate.presence = overrides;
        let effective = ServicePresence::of(&candidate, defaults);
        if effective.session_ttl_ms <= effective.ping_interval_ms {
            return Err(crate::domain::Error::InvalidParam {
                param: "session_ttl_ms".into(),
                reason: "must be greater than ping_interval_ms".into(),
            });
        }
        Ok(effective)
    }

    pub fn of(service: &Service, defaults: &PresenceDefaults) -> Self {
        let o: &PresenceOverrides = &service.presence;
        ServicePresence {
            reachability_enabled: service.reachability_enabled,
            ping_interval_ms: o.ping_interval_ms.unwrap_or(defaults.ping_interval_ms),
            session_ttl_ms: o.session_ttl_ms.unwrap_or(defaults.session_ttl_ms),
            offline_grace_ms: o.offline_grace_ms.unwrap_or(defaults.offline_grace_ms),
        }
    }
}

/// Session ids travel as `SE` followed by 16 hex digits.
pub fn format_session_id(id: u64) -> String {
    format!("SE{id:016x}")
}

pub fn parse_session_id(value: &str) -> Option<u64> {
    let hex = value.strip_prefix("SE")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_must_keep_the_ttl_above_the_ping_interval() {
        let service = Service::new("Svc", 1).expect("valid");
        let defaults = PresenceDefaults {
            ping_interval_ms: 20_000,
            session_ttl_ms: 60_000,
            offline_grace_ms: 3_000,
        };
        let ttl_only = PresenceOverrides {
            session_ttl_ms: Some(10_000),
            ..Default::default()
        };
        let err = ServicePresence::with_overrides(&service, ttl_only, &defaults).unwrap_err();
        assert!(
            matches!(&err, crate::domain::Error::InvalidParam { param, .. } if param == "session_ttl_ms"),
            "{err:?}"
        );
        let both = PresenceOverrides {
            ping_interval_ms: Some(5_000),
            session_ttl_ms: Some(10_000),
            offline_grace_ms: None,
        };
        let effective = ServicePresence::with_overrides(&service, both, &defaults).expect("valid");
        assert_eq!(
            (
                effective.ping_interval_ms,
                effective.session_ttl_ms,
                effective.offline_grace_ms
            ),
            (5_000, 10_000, 3_000)
        );
    }

    #[test]
    fn session_ids_round_trip() {
        assert_eq!(
            parse_session_id(&format_session_id(0xdead_beef)),
            Some(0xdead_beef)
        );
        assert_eq!(parse_session_id("SE123"), None);
        assert_eq!(parse_session_id("XX00000000deadbeef"), None);
    }

    #[test]
    fn causes_round_trip() {
        for c in [
            Cause::SessionOpened,
            Cause::BindingRemoved,
            Cause::ReachabilityEnabled,
        ] {
            assert_eq!(Cause::parse(c.as_str()), Some(c));
        }
    }
}
