//! Persistence of the engine: which sessions a flush must write, the snapshot a restart
//! restores from, and restoring it (sessions that expired while the server was down end once,
//! with `session_timeout`).
//!
//! May depend on: std, domain::presence.

use std::sync::Arc;

use super::{Engine, Now, Session, UserKey, UserState, transition};
use crate::domain::presence::{
    Cause, PersistedSession, PresenceSnapshot, SessionFlush, Transition,
};

impl Engine {
    /// Sessions pinged or opened since the last flush, plus those that ended; marks them
    /// flushed (the runtime retries a failed commit, so nothing is dropped).
    pub fn pending_flush(&mut self, now: Now) -> SessionFlush {
        let since = self.last_flush;
        self.last_flush = now.mono;
        let upserts = self
            .sessions
            .iter()
            .filter(|(_, s)| s.last_ping >= since)
            .map(|(id, s)| persisted(now, *id, s))
            .collect();
        SessionFlush {
            upserts,
            deletes: self.take_ended(),
        }
    }

    /// Ids of sessions ended since the last call.
    pub fn take_ended(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.ended)
    }

    /// One live session as stored.
    pub fn persisted_session(&self, now: Now, id: u64) -> Option<PersistedSession> {
        self.sessions.get(&id).map(|s| persisted(now, id, s))
    }

    /// Every live session, for a final flush on shutdown.
    pub fn all_sessions(&self, now: Now) -> Vec<PersistedSession> {
        self.sessions
            .iter()
            .map(|(id, s)| persisted(now, *id, s))
            .collect()
    }

    /// Rebuilds state after a restart. Sessions still within their expiry come back live (and
    /// their users online, which storage ignores when already stored); sessions that expired
    /// during the downtime, and users stored online without any live session, go offline with
    /// `session_timeout`. Call [`Engine::configure`] for the services first.
    pub fn restore(&mut self, now: Now, snapshot: PresenceSnapshot) -> (Vec<Transition>, Vec<u64>) {
        let mut out = Vec::new();
        let mut expired = Vec::new();
        // Users of sessions that expired during the downtime, with the session's last ping
        // (their true last sign of life, not the restart time).
        let mut expired_users: Vec<(UserKey, i64)> = Vec::new();
        for s in snapshot.sessions {
            if s.expires_at <= now.wall || self.sessions.contains_key(&s.id) {
                expired.push(s.id);
                expired_users.push((
                    (
                        Arc::from(s.service_sid.as_str()),
                        Arc::from(s.identity.as_str()),
                    ),
                    s.last_ping_at,
                ));
                continue;
            }
            let service: Arc<str> = self
                .services
                .get_key_value(s.service_sid.as_str())
                .map_or_else(|| Arc::from(s.service_sid.as_str()), |(k, _)| k.clone());
            let key = self.user_key(&service, &s.identity);
            let expires_at = now.mono + (s.expires_at - now.wall) as u64;
            let last_ping = now
                .mono
                .saturating_sub((now.wall - s.last_ping_at).max(0) as u64);
            self.sessions.insert(
                s.id,
                Session {
                    service: key.0.clone(),
                    identity: key.1.clone(),
                    expires_at,
                    last_ping,
                    created_at: s.created_at,
                    transport: s.transport,
                    holder: 0,
                    endpoint: s.endpoint.map(String::into_boxed_str),
                },
            );
            self.expiries.insert((expires_at, s.id));
            out.extend(self.session_started(now, key));
        }
        // Users stored online without any stored session: their last sign of life is
        // unknown, so the restart time stands for it.
        let stale_online = snapshot
            .online_users
            .into_iter()
            .map(|(s, i)| ((Arc::from(s.as_str()), Arc::from(i.as_str())), now.wall));
        let mut last_seen: std::collections::BTreeMap<UserKey, i64> = Default::default();
        for (key, seen) in expired_users {
            if !self.users.contains_key(&key) {
                let entry = last_seen.entry(key).or_insert(seen);
                *entry = (*entry).max(seen);
            }
        }
        for (key, seen) in stale_online {
            if !self.users.contains_key(&key) {
                last_seen.entry(key).or_insert(seen);
            }
        }
        for ((service, identity), seen) in last_seen {
            let user = UserState {
                last_seen: seen,
                ..Default::default()
            };
            out.push(transition(
                now,
                &service,
                &identity,
                false,
                Cause::SessionTimeout,
                &user,
            ));
        }
        (out, expired)
    }
}

fn persisted(now: Now, id: u64, s: &Session) -> PersistedSession {
    PersistedSession {
        id,
        service_sid: s.service.to_string(),
        identity: s.identity.to_string(),
        transport: s.transport,
        endpoint: s.endpoint.as_deref().map(str::to_string),
        created_at: s.created_at,
        last_ping_at: now.wall_of(s.last_ping),
        expires_at: now.wall_of(s.expires_at),
    }
}
