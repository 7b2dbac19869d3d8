//! The presence state machine: sessions in memory, their expiries in an ordered set, and the
//! per-user aggregate that decides transitions. Pure: no IO, no clock — every method takes the
//! current time, so tests drive it directly and the runtime drives it from `tokio::time`.
//!
//! Invariants:
//! - A user's `live` count equals the number of sessions in `sessions` that belong to them.
//! - Transitions happen only on the aggregate: `Online` when `live` goes 0→1 with no offline
//!   grace pending; `Offline` when a grace period ends with `live` still 0. A reconnect inside
//!   the grace cancels it and produces nothing.
//! - `expiries` may hold stale entries (a ping only moves `Session::expires_at`); the sweep
//!   re-inserts an entry whose session lives longer, so each session has exactly one live
//!   entry and a ping costs one map lookup.
//! - A user entry exists while the user has a live session or a pending grace.
//!
//! May depend on: std, domain::presence.

mod cluster;
mod persistence;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::domain::presence::{Cause, ServicePresence, SessionEnd, Transition, Transport};
use crate::domain::time::Millis;

/// The current time: monotonic milliseconds (for deadlines) and wall-clock milliseconds (for
/// what is stored and shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: u64,
    pub wall: Millis,
}

impl Now {
    /// The wall-clock time of a monotonic instant.
    pub fn wall_of(&self, mono: u64) -> Millis {
        self.wall + (mono as i64 - self.mono as i64)
    }
}

type UserKey = (Arc<str>, Arc<str>);

struct Session {
    service: Arc<str>,
    identity: Arc<str>,
    expires_at: u64,
    last_ping: u64,
    created_at: Millis,
    transport: Transport,
    /// Which open holds the session: bumped each time an open resumes it, so the connection
    /// that held it before cannot end it for the one that holds it now (see [`Engine::release`]).
    holder: u32,
    endpoint: Option<Box<str>>,
}

#[derive(Default)]
struct UserState {
    live: u32,
    /// A pending offline report: its deadline and cause.
    grace: Option<(u64, Cause)>,
    last_seen: Millis,
}

/// A live session as the native API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub id: u64,
    pub transport: Transport,
    pub endpoint: Option<String>,
    pub created_at: Millis,
    pub last_ping_at: Millis,
    pub expires_at: Millis,
}

/// Why a session operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// No such live session for this user (expired, closed, or someone else's).
    NotFound,
    /// This node's cluster membership has lapsed: it serves no presence until it rejoins.
    Fenced,
    /// The proposed id is taken; retry with another.
    IdTaken,
}

#[derive(Default)]
pub struct Engine {
    services: HashMap<Arc<str>, ServicePresence>,
    users: HashMap<UserKey, UserState>,
    sessions: HashMap<u64, Session>,
    expiries: BTreeSet<(u64, u64)>,
    graces: BTreeSet<(u64, UserKey)>,
    /// Sessions ended since the last flush, whose rows go.
    ended: Vec<u64>,
    /// Sessions ended since the last flush that started their user's grace period: their rows
    /// stay, marked ended, until the user's offline transition (see [`SessionEnd`]).
    ends: Vec<SessionEnd>,
    last_flush: u64,
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The earliest expiry or grace deadline, for the sweeper's sleep.
    pub fn next_deadline(&self) -> Option<u64> {
        let expiry = self.expiries.first().map(|(d, _)| *d);
        let grace = self.graces.first().map(|(d, _)| *d);
        match (expiry, grace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Records a service's timings and flag. Turning reachability on reports every user with
    /// a live session (or a pending grace) online, with cause `reachability_enabled`.
    pub fn configure(
        &mut self,
        now: Now,
        service_sid: &str,
        presence: ServicePresence,
    ) -> Vec<Transition> {
        let key: Arc<str> = Arc::from(service_sid);
        let was_enabled = self
            .services
            .get(&key)
            .is_some_and(|p| p.reachability_enabled);
        self.services.insert(key.clone(), presence);
        if was_enabled || !presence.reachability_enabled {
            return Vec::new();
        }
        let mut out = Vec::new();
        for ((service, identity), user) in &self.users {
            if **service == *service_sid && (user.live > 0 || user.grace.is_some()) {
                out.push(transition(
                    now,
                    service,
                    identity,
                    true,
                    Cause::ReachabilityEnabled,
                    user,
                ));
            }
        }
        out
    }

    fn presence_of(&self, service: &str) -> ServicePresence {
        self.services
            .get(service)
            .copied()
            .unwrap_or(ServicePresence {
                reachability_enabled: false,
                ping_interval_ms: 20_000,
                session_ttl_ms: 60_000,
                offline_grace_ms: 3_000,
            })
    }

    /// Opens a session (or, with `resume` naming a live session of this user, keeps that one
    /// alive). Returns the session id and any transition.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        now: Now,
        service_sid: &str,
        identity: &str,
        transport: Transport,
        endpoint: Option<&str>,
        resume: Option<u64>,
        new_id: u64,
    ) -> Result<(u64, Vec<Transition>), SessionError> {
        if let Some(id) = resume
            && self.ping(now, id, service_sid, identity).is_ok()
        {
            if let Some(session) = self.sessions.get_mut(&id) {
                session.holder = session.holder.wrapping_add(1);
            }
            return Ok((id, Vec::new()));
        }
        if new_id == 0 || self.sessions.contains_key(&new_id) {
            return Err(SessionError::IdTaken);
        }
        let service: Arc<str> = self
            .services
            .get_key_value(service_sid)
            .map_or_else(|| Arc::from(service_sid), |(k, _)| k.clone());
        let user_key = self.user_key(&service, identity);
        let ttl = self.presence_of(&service).session_ttl_ms;
        self.sessions.insert(
            new_id,
            Session {
                service: user_key.0.clone(),
                identity: user_key.1.clone(),
                expires_at: now.mono + ttl,
                last_ping: now.mono,
                created_at: now.wall,
                transport,
                holder: 0,
                endpoint: endpoint.map(Box::from),
            },
        );
        self.expiries.insert((now.mono + ttl, new_id));
        Ok((new_id, self.session_started(now, user_key)))
    }

    /// Reuses the `Arc`s of an existing user entry so that sessions share them.
    fn user_key(&self, service: &Arc<str>, identity: &str) -> UserKey {
        let probe: UserKey = (service.clone(), Arc::from(identity));
        match self.users.get_key_value(&probe) {
            Some((key, _)) => key.clone(),
            None => probe,
        }
    }

    fn session_started(&mut self, now: Now, key: UserKey) -> Vec<Transition> {
        let user = self.users.entry(key.clone()).or_default();
        user.live += 1;
        user.last_seen = now.wall;
        if user.live > 1 {
            return Vec::new();
        }
        if let Some((deadline, _)) = user.grace.take() {
            // A reconnect inside the grace period: still online, nothing to report.
            self.graces.remove(&(deadline, key));
            return Vec::new();
        }
        vec![transition(
            now,
            &key.0,
            &key.1,
            true,
            Cause::SessionOpened,
            user,
        )]
    }

    /// Keeps a session alive. Never produces a transition.
    pub fn ping(
        &mut self,
        now: Now,
        id: u64,
        service_sid: &str,
        identity: &str,
    ) -> Result<(), SessionError> {
        if !self.is_session_of(id, service_sid, identity) {
            return Err(SessionError::NotFound);
        }
        let ttl = self.presence_of(service_sid).session_ttl_ms;
        if let Some(session) = self.sessions.get_mut(&id) {
            session.expires_at = now.mono + ttl;
            session.last_ping = now.mono;
        }
        Ok(())
    }

    /// Ends a session explicitly; the user goes offline after the grace period.
    pub fn close(
        &mut self,
        now: Now,
        id: u64,
        service_sid: &str,
        identity: &str,
    ) -> Result<Vec<Transition>, SessionError> {
        if !self.is_session_of(id, service_sid, identity) {
            return Err(SessionError::NotFound);
        }
        Ok(self.end_session(now, id, Cause::SessionClosed))
    }

    /// Which open holds a live session now (see [`Engine::release`]).
    pub fn holder(&self, id: u64) -> Option<u32> {
        self.sessions.get(&id).map(|s| s.holder)
    }

    /// Ends a session on behalf of the connection that opened or resumed it as `holder`.
    /// When a later open has resumed the session since (a client that reconnected before the
    /// server noticed its old connection drop), the session is theirs now: nothing ends.
    pub fn release(
        &mut self,
        now: Now,
        id: u64,
        service_sid: &str,
        identity: &str,
        holder: u32,
    ) -> Result<Vec<Transition>, SessionError> {
        if self.holder(id) != Some(holder) {
            return Ok(Vec::new());
        }
        self.close(now, id, service_sid, identity)
    }

    fn end_session(&mut self, now: Now, id: u64, cause: Cause) -> Vec<Transition> {
        let Some(session) = self.sessions.remove(&id) else {
            return Vec::new();
        };
        let key: UserKey = (session.service, session.identity);
        let grace = self.presence_of(&key.0).offline_grace_ms;
        let Some(user) = self.users.get_mut(&key) else {
            self.ended.push(id);
            return Vec::new();
        };
        user.live = user.live.saturating_sub(1);
        // Last activity: the close itself, or the last ping of a session that timed out.
        user.last_seen = if cause == Cause::SessionClosed {
            now.wall
        } else {
            now.wall_of(session.last_ping)
        };
        if user.live > 0 {
            self.ended.push(id);
            return Vec::new();
        }
        if grace == 0 {
            self.ended.push(id);
            let t = transition(now, &key.0, &key.1, false, cause, user);
            self.users.remove(&key);
            return vec![t];
        }
        let deadline = now.mono + grace;
        user.grace = Some((deadline, cause));
        self.ends.push(SessionEnd {
            id,
            service_sid: key.0.to_string(),
            identity: key.1.to_string(),
            at: user.last_seen,
            cause,
        });
        self.graces.insert((deadline, key));
        Vec::new()
    }

    /// Expires sessions and ends grace periods that are due.
    pub fn sweep(&mut self, now: Now) -> Vec<Transition> {
        let mut out = Vec::new();
        while let Some(&(deadline, id)) = self.expiries.first() {
            if deadline > now.mono {
                break;
            }
            self.expiries.pop_first();
            let Some(expires_at) = self.sessions.get(&id).map(|s| s.expires_at) else {
                continue;
            };
            if expires_at > now.mono {
                self.expiries.insert((expires_at, id));
            } else {
                out.extend(self.end_session(now, id, Cause::SessionTimeout));
            }
        }
        while let Some((deadline, _)) = self.graces.first() {
            if *deadline > now.mono {
                break;
            }
            let Some((deadline, key)) = self.graces.pop_first() else {
                break;
            };
            let due = self
                .users
                .get(&key)
                .and_then(|u| u.grace)
                .filter(|(d, _)| *d == deadline);
            if let Some((_, cause)) = due
                && let Some(user) = self.users.remove(&key)
            {
                out.push(transition(now, &key.0, &key.1, false, cause, &user));
            }
        }
        out
    }

    /// Live sessions of one user.
    pub fn sessions_of(&self, now: Now, service_sid: &str, identity: &str) -> Vec<SessionView> {
        let mut views: Vec<SessionView> = self
            .sessions
            .iter()
            .filter(|(_, s)| *s.service == *service_sid && *s.identity == *identity)
            .map(|(id, s)| view(now, *id, s))
            .collect();
        views.sort_by_key(|v| (v.created_at, v.id));
        views
    }

    /// Live sessions of a service.
    /// Live sessions per service, in one pass (a metrics scrape).
    pub fn session_counts(&self) -> HashMap<Arc<str>, usize> {
        let mut counts: HashMap<Arc<str>, usize> = HashMap::new();
        for session in self.sessions.values() {
            *counts.entry(session.service.clone()).or_default() += 1;
        }
        counts
    }

    pub fn service_session_count(&self, service_sid: &str) -> usize {
        self.sessions
            .values()
            .filter(|s| *s.service == *service_sid)
            .count()
    }

    /// Whether session `id` is live and belongs to this user.
    pub fn is_session_of(&self, id: u64, service_sid: &str, identity: &str) -> bool {
        self.sessions
            .get(&id)
            .is_some_and(|s| *s.service == *service_sid && *s.identity == *identity)
    }

    /// Live sessions of a user, counted without allocating.
    pub fn live_count(&self, service_sid: &str, identity: &str) -> u32 {
        let key: UserKey = (Arc::from(service_sid), Arc::from(identity));
        self.users.get(&key).map_or(0, |u| u.live)
    }

    /// Ends a deleted user's sessions without reporting anything (the user is gone); a client
    /// that reconnects afterwards starts afresh, online again.
    pub fn forget_user(&mut self, service_sid: &str, identity: &str) {
        let ids: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| *s.service == *service_sid && *s.identity == *identity)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.sessions.remove(&id);
            self.ended.push(id);
        }
        let key: UserKey = (Arc::from(service_sid), Arc::from(identity));
        if let Some(user) = self.users.remove(&key)
            && let Some((deadline, _)) = user.grace
        {
            self.graces.remove(&(deadline, key));
        }
    }

    /// Drops everything about a deleted service.
    pub fn forget_service(&mut self, service_sid: &str) {
        let ids: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| *s.service == *service_sid)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.sessions.remove(&id);
            self.ended.push(id);
        }
        self.users
            .retain(|(service, _), _| **service != *service_sid);
        self.graces
            .retain(|(_, (service, _))| **service != *service_sid);
        self.services.remove(service_sid);
    }
}

fn transition(
    now: Now,
    service: &Arc<str>,
    identity: &Arc<str>,
    online: bool,
    cause: Cause,
    user: &UserState,
) -> Transition {
    Transition {
        service_sid: service.clone(),
        identity: identity.clone(),
        online,
        cause,
        at: now.wall,
        last_seen: if online { now.wall } else { user.last_seen },
        session_count: user.live,
    }
}

fn view(now: Now, id: u64, s: &Session) -> SessionView {
    SessionView {
        id,
        transport: s.transport,
        endpoint: s.endpoint.as_deref().map(str::to_string),
        created_at: s.created_at,
        last_ping_at: now.wall_of(s.last_ping),
        expires_at: now.wall_of(s.expires_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::presence::{PersistedSession, PresenceSnapshot};

    pub(super) const SVC: &str = "IS00000000000000000000000000000001";

    pub(super) fn at(mono: u64) -> Now {
        Now {
            mono,
            wall: 1_700_000_000_000 + mono as i64,
        }
    }

    pub(super) fn engine(grace: u64) -> Engine {
        let mut e = Engine::new();
        let p = ServicePresence {
            reachability_enabled: true,
            ping_interval_ms: 1_000,
            session_ttl_ms: 5_000,
            offline_grace_ms: grace,
        };
        assert!(e.configure(at(0), SVC, p).is_empty());
        e
    }

    pub(super) fn kinds(ts: &[Transition]) -> Vec<(String, bool, Cause)> {
        ts.iter()
            .map(|t| (t.identity.to_string(), t.online, t.cause))
            .collect()
    }

    #[test]
    fn pings_keep_a_session_alive_and_silence_expires_it_after_ttl_plus_grace() {
        let mut e = engine(1_000);
        let (id, t) = e
            .open(at(0), SVC, "alice", Transport::Http, None, None, 7)
            .expect("open");
        assert_eq!(
            kinds(&t),
            vec![("alice".into(), true, Cause::SessionOpened)]
        );
        for ms in (1_000..=20_000).step_by(1_000) {
            e.ping(at(ms), id, SVC, "alice").expect("ping");
            assert!(e.sweep(at(ms)).is_empty());
        }
        // Last ping at 20 s: expires at 25 s, offline reported at 26 s.
        assert!(e.sweep(at(24_999)).is_empty());
        assert!(
            e.sweep(at(25_000)).is_empty(),
            "expired but inside the grace"
        );
        assert_eq!(e.next_deadline(), Some(26_000));
        let t = e.sweep(at(26_000));
        assert_eq!(
            kinds(&t),
            vec![("alice".into(), false, Cause::SessionTimeout)]
        );
        assert_eq!(t[0].last_seen, at(20_000).wall);
        assert_eq!(
            e.ping(at(26_001), id, SVC, "alice"),
            Err(SessionError::NotFound)
        );
        assert_eq!(e.next_deadline(), None);
    }

    #[test]
    fn a_connection_that_drops_after_its_session_was_resumed_elsewhere_ends_nothing() {
        let mut e = engine(0);
        let (id, _) = e
            .open(at(0), SVC, "alice", Transport::WebSocket, None, None, 9)
            .expect("open");
        let old = e.holder(id).expect("live");
        // The client reconnected (resume) before the server saw its first socket drop.
        let (resumed, t) = e
            .open(
                at(100),
                SVC,
                "alice",
                Transport::WebSocket,
                None,
                Some(id),
                10,
            )
            .expect("resume");
        assert_eq!((resumed, t.len()), (id, 0));
        let new = e.holder(id).expect("live");
        assert_ne!(old, new);
        assert!(
            e.release(at(200), id, SVC, "alice", old)
                .expect("release")
                .is_empty()
        );
        assert_eq!(
            e.live_count(SVC, "alice"),
            1,
            "the new connection's session lives"
        );
        let t = e.release(at(300), id, SVC, "alice", new).expect("release");
        assert_eq!(
            kinds(&t),
            vec![("alice".into(), false, Cause::SessionClosed)]
        );
        assert_eq!(e.holder(id), None);
    }

    #[test]
    fn a_reconnect_inside_the_grace_produces_no_transition() {
        let mut e = engine(3_000);
        let (a, _) = e
            .open(at(0), SVC, "alice", Transport::Http, None, None, 1)
            .expect("open");
        assert!(
            e.close(at(1_000), a, SVC, "alice")
                .expect("close")
                .is_empty()
        );
        let (_, t) = e
            .open(at(2_500), SVC, "alice", Transport::WebSocket, None, None, 2)
            .expect("reopen");
        assert!(t.is_empty(), "reconnect inside grace: {t:?}");
        assert!(
            e.sweep(at(4_500)).is_empty(),
            "the stale grace entry does nothing"
        );
        assert_eq!(e.live_count(SVC, "alice"), 1);
    }

    #[test]
    fn closing_reports_offline_after_the_grace_with_cause_session_closed() {
        let mut e = engine(3_000);
        let (a, _) = e
            .open(at(0), SVC, "alice", Transport::Http, None, None, 1)
            .expect("open");
        e.close(at(1_000), a, SVC, "alice").expect("close");
        assert!(e.sweep(at(3_999)).is_empty());
        assert_eq!(
            kinds(&e.sweep(at(4_000))),
            vec![("alice".into(), false, Cause::SessionClosed)]
        );
        assert_eq!(
            e.close(at(4_001), a, SVC, "alice"),
            Err(SessionError::NotFound)
        );
    }

    #[test]
    fn a_user_is_online_while_any_device_lives() {
        let mut e = engine(0);
        let (phone, t1) = e
            .open(at(0), SVC, "alice", Transport::Http, None, None, 1)
            .expect("phone");
        let (laptop, t2) = e
            .open(at(100), SVC, "alice", Transport::WebSocket, None, None, 2)
            .expect("laptop");
        assert_eq!(
            t1.len() + t2.len(),
            1,
            "one online transition for two devices"
        );
        assert!(
            e.close(at(200), phone, SVC, "alice")
                .expect("close")
                .is_empty()
        );
        assert_eq!(e.sessions_of(at(200), SVC, "alice").len(), 1);
        let t = e.close(at(300), laptop, SVC, "alice").expect("close");
        assert_eq!(
            kinds(&t),
            vec![("alice".into(), false, Cause::SessionClosed)],
            "grace 0 is immediate"
        );
    }

    #[test]
    fn sessions_belong_to_their_user_and_ids_are_unique() {
        let mut e = engine(0);
        let (id, _) = e
            .open(at(0), SVC, "alice", Transport::Http, None, None, 1)
            .expect("open");
        assert_eq!(
            e.ping(at(1), id, SVC, "mallory"),
            Err(SessionError::NotFound)
        );
        assert_eq!(
            e.ping(at(1), id, "ISother", "alice"),
            Err(SessionError::NotFound)
        );
        assert_eq!(
            e.close(at(1), id, SVC, "mallory"),
            Err(SessionError::NotFound)
        );
        assert_eq!(
            e.open(at(1), SVC, "bob", Transport::Http, None, None, id)
                .err(),
            Some(SessionError::IdTaken)
        );
        // Resuming a live session keeps its id; resuming someone else's opens a new one.
        assert_eq!(
            e.open(at(2), SVC, "alice", Transport::Http, None, Some(id), 9)
                .expect("resume")
                .0,
            id
        );
        assert_eq!(
            e.open(at(2), SVC, "bob", Transport::Http, None, Some(id), 10)
                .expect("new")
                .0,
            10
        );
    }

    #[test]
    fn a_forgotten_user_comes_back_online_on_reconnect() {
        let mut e = engine(1_000);
        let (id, _) = e
            .open(at(0), SVC, "zed", Transport::Http, None, None, 1)
            .expect("open");
        e.forget_user(SVC, "zed");
        assert_eq!(e.ping(at(1), id, SVC, "zed"), Err(SessionError::NotFound));
        assert_eq!(e.take_ended().deletes, vec![1]);
        let (_, t) = e
            .open(at(2), SVC, "zed", Transport::Http, None, None, 2)
            .expect("reopen");
        assert_eq!(kinds(&t), vec![("zed".into(), true, Cause::SessionOpened)]);
    }

    #[test]
    fn enabling_reports_live_users_online_and_disabled_services_still_track() {
        let mut e = Engine::new();
        let off = ServicePresence {
            reachability_enabled: false,
            ping_interval_ms: 1_000,
            session_ttl_ms: 5_000,
            offline_grace_ms: 0,
        };
        e.configure(at(0), SVC, off);
        e.open(at(0), SVC, "alice", Transport::Http, None, None, 1)
            .expect("open");
        e.open(at(0), SVC, "bob", Transport::Http, None, None, 2)
            .expect("open");
        e.close(at(1), 2, SVC, "bob").expect("close");
        let on = ServicePresence {
            reachability_enabled: true,
            ..off
        };
        let t = e.configure(at(5), SVC, on);
        assert_eq!(
            kinds(&t),
            vec![("alice".into(), true, Cause::ReachabilityEnabled)]
        );
        assert!(e.configure(at(6), SVC, on).is_empty(), "already enabled");
    }

    #[test]
    fn restore_keeps_live_sessions_and_times_out_the_rest_once() {
        let mut e = engine(1_000);
        let now = at(100_000);
        let live = PersistedSession {
            id: 1,
            service_sid: SVC.into(),
            identity: "alice".into(),
            transport: Transport::Http,
            endpoint: None,
            created_at: now.wall - 50_000,
            last_ping_at: now.wall - 2_000,
            expires_at: now.wall + 3_000,
        };
        let dead = PersistedSession {
            id: 2,
            identity: "bob".into(),
            expires_at: now.wall - 1,
            ..live.clone()
        };
        let dead_too = PersistedSession {
            id: 3,
            identity: "bob".into(),
            expires_at: now.wall - 5,
            ..live.clone()
        };
        let snapshot = PresenceSnapshot {
            sessions: vec![live, dead, dead_too],
            online_users: vec![
                (SVC.into(), "alice".into()),
                (SVC.into(), "bob".into()),
                (SVC.into(), "carol".into()),
            ],
            ended: Vec::new(),
        };
        let (t, expired) = e.restore(now, snapshot);
        let mut k = kinds(&t);
        k.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            k,
            vec![
                ("alice".into(), true, Cause::SessionOpened),
                ("bob".into(), false, Cause::SessionTimeout),
                ("carol".into(), false, Cause::SessionTimeout),
            ]
        );
        assert_eq!(expired, vec![2, 3]);
        // Offline users keep their true last sign of life: bob's last ping, not the restart;
        // carol (no stored session) gets the restart time.
        let seen = |who: &str| t.iter().find(|t| &*t.identity == who).map(|t| t.last_seen);
        assert_eq!(seen("bob"), Some(now.wall - 2_000));
        assert_eq!(seen("carol"), Some(now.wall));
        assert_eq!(
            e.sessions_of(now, SVC, "alice")[0].last_ping_at,
            now.wall - 2_000
        );
        // The restored session keeps pinging and expires on its own schedule.
        e.ping(at(101_000), 1, SVC, "alice")
            .expect("ping after restart");
        assert!(e.sweep(at(105_999)).is_empty());
        assert!(e.sweep(at(106_000)).is_empty(), "expired; grace running");
        assert_eq!(
            kinds(&e.sweep(at(107_000))),
            vec![("alice".into(), false, Cause::SessionTimeout)]
        );
    }

    #[test]
    fn a_close_inside_the_grace_is_kept_marked_and_a_restart_reports_it_closed() {
        let mut e = engine(3_000);
        let (id, _) = e
            .open(at(0), SVC, "dora", Transport::Http, None, None, 7)
            .expect("open");
        assert!(
            e.close(at(1_000), id, SVC, "dora")
                .expect("close")
                .is_empty()
        );
        let ended = e.take_ended();
        assert!(
            ended.deletes.is_empty(),
            "the row stays until the offline commit"
        );
        assert_eq!(
            ended.ends,
            vec![SessionEnd {
                id,
                service_sid: SVC.into(),
                identity: "dora".into(),
                at: at(1_000).wall,
                cause: Cause::SessionClosed,
            }]
        );
        // The server dies inside the grace; a fresh engine restores from what was stored.
        let mut restarted = engine(3_000);
        let now = at(60_000);
        let (t, expired) = restarted.restore(
            now,
            PresenceSnapshot {
                sessions: Vec::new(),
                online_users: vec![(SVC.into(), "dora".into())],
                ended: ended.ends,
            },
        );
        assert_eq!(expired, vec![id]);
        assert_eq!(
            kinds(&t),
            vec![("dora".into(), false, Cause::SessionClosed)]
        );
        assert_eq!(t[0].last_seen, at(1_000).wall);
    }

    #[test]
    fn flushes_carry_pinged_sessions_and_ended_ids_once() {
        let mut e = engine(0);
        e.open(
            at(0),
            SVC,
            "alice",
            Transport::Http,
            Some("app:a:1"),
            None,
            1,
        )
        .expect("open");
        e.open(at(0), SVC, "bob", Transport::Http, None, None, 2)
            .expect("open");
        let f = e.pending_flush(at(10));
        assert_eq!(f.upserts.len(), 2);

        assert!(
            e.pending_flush(at(20)).upserts.is_empty(),
            "nothing pinged since"
        );
        e.ping(at(30), 1, SVC, "alice").expect("ping");
        e.close(at(31), 2, SVC, "bob").expect("close");
        let f = e.pending_flush(at(40));
        assert_eq!(f.upserts.iter().map(|s| s.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(f.upserts[0].endpoint.as_deref(), Some("app:a:1"));
        assert_eq!(f.deletes, vec![2]);
        assert!(
            e.pending_flush(at(50)).deletes.is_empty(),
            "ended ids are handed out once"
        );
    }
}
