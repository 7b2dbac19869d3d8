//! Persistence of the engine: which sessions a flush must write, the snapshot a restart
//! restores from, and restoring it (sessions that expired while the server was down end once,
//! with `session_timeout`).
//!
//! May depend on: std, domain::presence.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Engine, Now, Session, UserKey, UserState, transition};
use crate::domain::presence::{
    Cause, PersistedSession, PresenceSnapshot, SessionFlush, Transition,
};
use crate::domain::time::Millis;

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
            ..self.take_ended()
        }
    }

    /// Sessions ended since the last call: rows to delete and rows to mark ended.
    pub fn take_ended(&mut self) -> SessionFlush {
        SessionFlush {
            upserts: Vec::new(),
            deletes: std::mem::take(&mut self.ended),
            ends: std::mem::take(&mut self.ends),
        }
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
        // Users of sessions that ended before the restart (inside a grace period) or expired
        // during the downtime, with their true last sign of life and cause — not the restart.
        let mut ended_users: Vec<(UserKey, Millis, Cause)> = Vec::new();
        for end in snapshot.ended {
            expired.push(end.id);
            ended_users.push((
                (
                    Arc::from(end.service_sid.as_str()),
                    Arc::from(end.identity.as_str()),
                ),
                end.at,
                end.cause,
            ));
        }
        for s in snapshot.sessions {
            if s.expires_at <= now.wall || self.sessions.contains_key(&s.id) {
                expired.push(s.id);
                ended_users.push((
                    (
                        Arc::from(s.service_sid.as_str()),
                        Arc::from(s.identity.as_str()),
                    ),
                    s.last_ping_at,
                    Cause::SessionTimeout,
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
            .map(|(s, i)| (Arc::from(s.as_str()), Arc::from(i.as_str())));
        // The latest end of each user without a live session decides the time and cause.
        let mut last_end: BTreeMap<UserKey, (Millis, Cause)> = BTreeMap::new();
        for (key, at, cause) in ended_users {
            if !self.users.contains_key(&key) {
                let entry = last_end.entry(key).or_insert((at, cause));
                if at > entry.0 {
                    *entry = (at, cause);
                }
            }
        }
        for key in stale_online {
            if !self.users.contains_key(&key) {
                last_end
                    .entry(key)
                    .or_insert((now.wall, Cause::SessionTimeout));
            }
        }
        for ((service, identity), (at, cause)) in last_end {
            let user = UserState {
                last_seen: at,
                ..Default::default()
            };
            out.push(transition(now, &service, &identity, false, cause, &user));
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
