//! The engine's part in cluster mode: taking over a lost member's users and sessions, taking
//! in a session that moved here, letting go of one that moved away, and forgetting
//! everything when this node's membership lapses. Transitions here are this member's view
//! (storage turns them into the user's only when no other member holds the user).
//!
//! May depend on: std, domain::{cluster, presence}.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Engine, Now, Session, UserKey, UserState, transition};
use crate::domain::cluster::Takeover;
use crate::domain::presence::{Cause, PersistedSession, Transition};

impl Engine {
    /// Takes over a lost member. Sessions a member that left gracefully handed over resume
    /// here with their expiries, and sessions that expired or ended meanwhile end their users
    /// as after a restart (with the true time and cause). Every other user the member held,
    /// without a live session here, enters the offline grace now — with `node_lost` when the
    /// member died — so that a client reconnecting anywhere within it sees nothing.
    pub fn adopt(&mut self, now: Now, takeover: Takeover) -> (Vec<Transition>, Vec<u64>) {
        let (out, gone) = self.restore(now, takeover.snapshot);
        let decided: HashSet<(&str, &str)> = out
            .iter()
            .map(|t| (&*t.service_sid, &*t.identity))
            .collect();
        let cause = if takeover.graceful {
            Cause::SessionTimeout
        } else {
            Cause::NodeLost
        };
        let waiting: Vec<&(String, String)> = takeover
            .users
            .iter()
            .filter(|(s, i)| !decided.contains(&(s.as_str(), i.as_str())))
            .collect();
        for (service, identity) in waiting {
            self.enter_grace(now, service, identity, takeover.last_seen, cause);
        }
        (out, gone)
    }

    /// Users held here without a session of their own here (a takeover's, or users stored
    /// online that no member held): offline after the grace unless a session comes.
    pub fn enter_grace(
        &mut self,
        now: Now,
        service_sid: &str,
        identity: &str,
        last_seen: i64,
        cause: Cause,
    ) {
        let service: Arc<str> = self
            .services
            .get_key_value(service_sid)
            .map_or_else(|| Arc::from(service_sid), |(k, _)| k.clone());
        let key: UserKey = self.user_key(&service, identity);
        if self.users.contains_key(&key) {
            // A live session or a grace of its own here: that decides.
            return;
        }
        let deadline = now.mono + self.presence_of(&key.0).offline_grace_ms;
        self.users.insert(
            key.clone(),
            UserState {
                live: 0,
                grace: Some((deadline, cause)),
                last_seen,
            },
        );
        self.graces.insert((deadline, key));
    }

    /// A session that moved here from another member (or from a lost one): live here from
    /// now, with a fresh expiry.
    pub fn adopt_session(&mut self, now: Now, session: &PersistedSession) -> Vec<Transition> {
        if self.sessions.contains_key(&session.id) {
            return Vec::new();
        }
        let service: Arc<str> = self
            .services
            .get_key_value(session.service_sid.as_str())
            .map_or_else(
                || Arc::from(session.service_sid.as_str()),
                |(k, _)| k.clone(),
            );
        let key = self.user_key(&service, &session.identity);
        let ttl = self.presence_of(&key.0).session_ttl_ms;
        self.sessions.insert(
            session.id,
            Session {
                service: key.0.clone(),
                identity: key.1.clone(),
                expires_at: now.mono + ttl,
                last_ping: now.mono,
                created_at: session.created_at,
                transport: session.transport,
                holder: 0,
                endpoint: session.endpoint.as_deref().map(Box::from),
            },
        );
        self.expiries.insert((now.mono + ttl, session.id));
        self.session_started(now, key)
    }

    /// A session that another member took: it is theirs now (its row too). If it was the
    /// user's last here, this member lets go of the user at once — the taker holds them, so
    /// no grace is needed and storage reports nothing.
    pub fn drop_moved(&mut self, now: Now, id: u64) -> Vec<Transition> {
        let Some(session) = self.sessions.remove(&id) else {
            return Vec::new();
        };
        let key: UserKey = (session.service, session.identity);
        let Some(user) = self.users.get_mut(&key) else {
            return Vec::new();
        };
        user.live = user.live.saturating_sub(1);
        if user.live > 0 {
            return Vec::new();
        }
        let t = transition(now, &key.0, &key.1, false, Cause::SessionClosed, user);
        self.users.remove(&key);
        vec![t]
    }

    /// Drops the live sessions not in `held` (they moved while the notices of the moves may
    /// have been missed); returns the transitions, as [`Engine::drop_moved`] does.
    pub fn keep_only(&mut self, now: Now, held: &HashSet<u64>) -> Vec<Transition> {
        let moved: Vec<u64> = self
            .sessions
            .keys()
            .filter(|id| !held.contains(id))
            .copied()
            .collect();
        moved
            .into_iter()
            .flat_map(|id| self.drop_moved(now, id))
            .collect()
    }

    /// Forgets every session and user (this node's membership lapsed: another member took
    /// them over, or will). Services' settings stay.
    pub fn forget_all(&mut self) {
        self.sessions.clear();
        self.users.clear();
        self.expiries.clear();
        self.graces.clear();
        self.ended.clear();
        self.ends.clear();
    }

    /// The ids of the live sessions.
    pub fn session_ids(&self) -> Vec<u64> {
        self.sessions.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{SVC, at, kinds};
    use super::*;
    use crate::domain::presence::{SessionEnd, Transport};

    /// Like the engine tests' engine, with a 2 s grace.
    fn engine() -> Engine {
        super::super::tests::engine(2_000)
    }

    fn stored(id: u64, identity: &str, expires_at: i64) -> PersistedSession {
        PersistedSession {
            id,
            service_sid: SVC.into(),
            identity: identity.into(),
            transport: Transport::WebSocket,
            endpoint: None,
            created_at: 0,
            last_ping_at: 0,
            expires_at,
        }
    }

    #[test]
    fn a_lost_members_users_go_offline_once_after_the_grace_with_node_lost() {
        let mut e = engine();
        // "bob" also has a session here: the takeover changes nothing for him.
        e.open(at(0), SVC, "bob", Transport::Http, None, None, 9)
            .expect("open");
        let takeover = Takeover {
            lost: 3,
            graceful: false,
            users: vec![(SVC.into(), "alice".into()), (SVC.into(), "bob".into())],
            last_seen: at(500).wall,
            ..Default::default()
        };
        let (out, gone) = e.adopt(at(1_000), takeover);
        assert!(out.is_empty() && gone.is_empty());
        assert!(e.sweep(at(2_999)).is_empty(), "inside the grace");
        let out = e.sweep(at(3_000));
        assert_eq!(kinds(&out), vec![("alice".into(), false, Cause::NodeLost)]);
        assert_eq!(out[0].last_seen, at(500).wall);
        assert!(e.sweep(at(10_000)).iter().all(|t| *t.identity != *"alice"));
    }

    #[test]
    fn a_session_resumed_inside_the_grace_keeps_the_user_online_silently() {
        let mut e = engine();
        e.adopt(
            at(0),
            Takeover {
                users: vec![(SVC.into(), "alice".into())],
                ..Default::default()
            },
        );
        let moved = e.adopt_session(at(500), &stored(7, "alice", 0));
        assert!(moved.is_empty(), "the grace absorbs the reconnect");
        assert!(e.sweep(at(4_000)).is_empty());
        assert_eq!(e.live_count(SVC, "alice"), 1);
    }

    #[test]
    fn a_graceful_leave_hands_live_sessions_over_and_ends_keep_their_cause() {
        let mut e = engine();
        let takeover = Takeover {
            lost: 3,
            graceful: true,
            users: vec![(SVC.into(), "alice".into()), (SVC.into(), "carol".into())],
            last_seen: at(0).wall,
            snapshot: crate::domain::presence::PresenceSnapshot {
                sessions: vec![stored(1, "alice", at(1_000).wall + 4_000)],
                online_users: Vec::new(),
                ended: vec![SessionEnd {
                    id: 2,
                    service_sid: SVC.into(),
                    identity: "carol".into(),
                    at: at(900).wall,
                    cause: Cause::SessionClosed,
                }],
            },
        };
        let (out, gone) = e.adopt(at(1_000), takeover);
        // Carol's session ended before the leave: she goes offline at once, as closed, at
        // the time of the close.
        assert_eq!(
            kinds(&out),
            vec![
                ("alice".into(), true, Cause::SessionOpened),
                ("carol".into(), false, Cause::SessionClosed)
            ]
        );
        assert_eq!(out[1].last_seen, at(900).wall);
        assert_eq!(gone, vec![2]);
        assert!(e.sweep(at(3_000)).is_empty(), "nobody waits for a grace");
        assert_eq!(e.live_count(SVC, "alice"), 1);
    }

    #[test]
    fn a_session_that_moved_away_lets_go_of_its_user_without_a_grace() {
        let mut e = engine();
        e.open(at(0), SVC, "alice", Transport::Http, None, None, 1)
            .expect("open");
        e.open(at(0), SVC, "alice", Transport::Http, None, None, 2)
            .expect("open");
        assert!(e.drop_moved(at(10), 1).is_empty(), "one session left here");
        let held: HashSet<u64> = HashSet::new();
        let out = e.keep_only(at(20), &held);
        assert_eq!(
            kinds(&out),
            vec![("alice".into(), false, Cause::SessionClosed)]
        );
        assert_eq!(e.session_count(), 0);
        assert!(e.sweep(at(10_000)).is_empty(), "no grace was left behind");
    }
}
