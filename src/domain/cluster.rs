//! The cluster port: what several reachd nodes on one database need from it. Each running node
//! is a *member* with a lease renewed on the database's clock; a member whose lease passes is
//! taken over by another, and a member that has been taken over can no longer commit presence
//! (the fence). Implemented by the PostgreSQL backend only; SQLite is one node by design.
//!
//! Lease operations block (they run on the caller's thread, which must not be an async
//! worker); session claims go through the writer like every other write.
//!
//! May depend on: std, domain::{presence, store, time}.

use std::collections::HashSet;

use super::Result;
use super::presence::{PersistedSession, PresenceSnapshot};
use super::store::WriteFuture;
use super::time::Millis;

/// One process's membership (a restarted node joins again as a new member).
pub type MemberId = i64;

/// A user by service and identity.
pub type UserRef = (String, String);

/// What a renewal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed for another lease; `others`: every other member, with the milliseconds until
    /// its lease passes (zero or less: passed).
    Renewed { others: Vec<(MemberId, i64)> },
    /// The member's row is gone or its lease had passed: it has been (or may be) taken over.
    Fenced,
}

/// What a takeover hands the member that made it.
#[derive(Debug, Clone, Default)]
pub struct Takeover {
    pub lost: MemberId,
    /// The lost member left gracefully: its sessions come back live (`snapshot.sessions`).
    pub graceful: bool,
    /// Users the lost member held; now held by the taker.
    pub users: Vec<UserRef>,
    /// The lost member's last renewal: its users' last sign of life.
    pub last_seen: Millis,
    /// Sessions to resume (graceful only) and sessions that had ended inside their user's
    /// grace period.
    pub snapshot: PresenceSnapshot,
}

pub trait ClusterStore: Send + Sync + 'static {
    /// Joins as a new member named `node_id`, with a lease of `lease_ms` from now. Users stored
    /// online that no member holds (a database copied or upgraded from a single server) are
    /// held by the new member and returned, to go offline unless a client comes back.
    fn join(&self, node_id: &str, lease_ms: u64) -> Result<(MemberId, Vec<UserRef>)>;
    /// Extends the lease by `lease_ms` from now, if it has not passed.
    fn renew(&self, member: MemberId, lease_ms: u64) -> Result<Renewal>;
    /// Takes over `lost` if its lease has passed (`None`: it renewed, or another member took
    /// it first). Its users are held by `me` from then on; its sessions are resumable.
    fn take_over(&self, me: MemberId, lost: MemberId) -> Result<Option<Takeover>>;
    /// Leaves gracefully: stores the live sessions' expiries and ends the lease now, so that
    /// another member takes over at once and resumes them.
    fn leave(&self, member: MemberId, sessions: Vec<PersistedSession>) -> Result<()>;
    /// Moves a live session of this user held by another (or a lost) member to `me`; the
    /// session as stored, or `None` when there is no such session.
    fn claim_session(
        &self,
        me: MemberId,
        id: u64,
        service_sid: &str,
        identity: &str,
    ) -> WriteFuture<Option<PersistedSession>>;
    /// The sessions stored as held by `member` (to drop those that moved while notices of
    /// the moves may have been missed).
    fn held_sessions(&self, member: MemberId) -> Result<HashSet<u64>>;
}

/// What other members' commits tell this node, through the database's notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterNotice {
    /// Events up to this id are committed.
    Events(i64),
    /// A service changed (or was deleted) by the node whose writer has this origin.
    Service { origin: String, sid: String },
    /// Deliveries were queued.
    Deliveries,
    /// A session moved from member `from` to another.
    SessionMoved { id: u64, from: MemberId },
    /// A member left: look for a takeover now.
    MemberLeft,
    /// Notifications may have been missed (the listening connection was re-established):
    /// re-read what they would have said.
    Resync,
}

impl ClusterNotice {
    /// Channels the notices travel on.
    pub const CHANNELS: [&'static str; 5] = [
        "reachd_events",
        "reachd_services",
        "reachd_deliveries",
        "reachd_sessions",
        "reachd_members",
    ];

    /// The notice a notification on `channel` with `payload` stands for.
    pub fn parse(channel: &str, payload: &str) -> Option<Self> {
        match channel {
            "reachd_events" => payload.parse().ok().map(ClusterNotice::Events),
            "reachd_services" => {
                let (origin, sid) = payload.split_once(' ')?;
                Some(ClusterNotice::Service {
                    origin: origin.to_string(),
                    sid: sid.to_string(),
                })
            }
            "reachd_deliveries" => Some(ClusterNotice::Deliveries),
            "reachd_sessions" => {
                let (id, from) = payload.split_once(' ')?;
                Some(ClusterNotice::SessionMoved {
                    id: id.parse().ok()?,
                    from: from.parse().ok()?,
                })
            }
            "reachd_members" => Some(ClusterNotice::MemberLeft),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_parse_from_their_channels() {
        assert_eq!(
            ClusterNotice::parse("reachd_events", "42"),
            Some(ClusterNotice::Events(42))
        );
        assert_eq!(
            ClusterNotice::parse("reachd_sessions", "18446744073709551615 7"),
            Some(ClusterNotice::SessionMoved {
                id: u64::MAX,
                from: 7
            })
        );
        assert_eq!(ClusterNotice::parse("reachd_sessions", "x 7"), None);
        assert_eq!(
            ClusterNotice::parse("reachd_services", "ab12 IS1"),
            Some(ClusterNotice::Service {
                origin: "ab12".into(),
                sid: "IS1".into()
            })
        );
        assert_eq!(ClusterNotice::parse("elsewhere", ""), None);
    }
}
