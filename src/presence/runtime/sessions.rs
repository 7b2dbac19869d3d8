//! Session operations of the runtime: open (with the per-identity cap), ping, close. Each
//! takes the engine lock, applies the change and queues its commit before releasing it (see
//! the invariants in [`super`]).
//!
//! May depend on: tokio, rand, domain, presence::engine.

use std::sync::atomic::Ordering;

use rand::RngCore;

use super::{Committed, Presence};
use crate::domain::Error;
use crate::domain::presence::{
    PresenceBatch, ServicePresence, SessionFlush, Transition, Transport,
};
use crate::domain::service::Service;
use crate::presence::engine::{Engine, Now, SessionError};

impl Presence {
    /// Opens a session for `identity` (or resumes `resume` if it is still live), returning the
    /// session as this open holds it (what [`Presence::release`] takes) and the commit of the
    /// resulting transition and session row. Refused with [`Error::LimitExceeded`] when the
    /// identity already holds the most live sessions allowed (resuming one of them is always
    /// allowed).
    pub fn open(
        &self,
        service: &Service,
        identity: &str,
        transport: Transport,
        endpoint: Option<&str>,
        resume: Option<u64>,
    ) -> crate::domain::Result<(HeldSession, Committed)> {
        if !self.is_serving() {
            return Err(Error::Fenced);
        }
        let settings = ServicePresence::of(service, &self.inner.options.defaults);
        let mut engine = self.lock();
        let now = self.inner.clock.now();
        self.check_room_in(&engine, &service.sid, identity, resume)?;
        let mut transitions = engine.configure(now, &service.sid, settings);
        let (id, opened) = loop {
            let candidate = rand::rng().next_u64();
            match engine.open(
                now,
                &service.sid,
                identity,
                transport,
                endpoint,
                resume,
                candidate,
            ) {
                Ok(done) => break done,
                Err(SessionError::IdTaken | SessionError::NotFound | SessionError::Fenced) => {
                    continue;
                }
            }
        };
        let holder = engine.holder(id).unwrap_or_default();
        transitions.extend(opened);
        let upserts = engine.persisted_session(now, id).into_iter().collect();
        let batch = PresenceBatch {
            transitions,
            sessions: SessionFlush {
                upserts,
                ..Default::default()
            },
            member: None,
        };
        let committed = self.queue(&engine, batch, true);
        drop(engine);
        self.inner.stats.opened.fetch_add(1, Ordering::Relaxed);
        self.inner.wake.notify_one();
        Ok((HeldSession { id, holder }, committed))
    }

    /// Whether `identity` may open one more session (or resume `resume`): the check
    /// [`Presence::open`] makes, for callers that must refuse before doing other work (a
    /// WebSocket upgrade).
    pub fn check_room(
        &self,
        service_sid: &str,
        identity: &str,
        resume: Option<u64>,
    ) -> crate::domain::Result<()> {
        self.check_room_in(&self.lock(), service_sid, identity, resume)
    }

    fn check_room_in(
        &self,
        engine: &Engine,
        service_sid: &str,
        identity: &str,
        resume: Option<u64>,
    ) -> crate::domain::Result<()> {
        let max = self.inner.options.max_sessions_per_identity;
        let resuming = resume.is_some_and(|id| engine.is_session_of(id, service_sid, identity));
        if !resuming && engine.live_count(service_sid, identity) >= max {
            return Err(Error::LimitExceeded(format!(
                "identity {identity} already holds {max} live sessions in this service"
            )));
        }
        Ok(())
    }

    /// Keeps a session alive: memory only.
    pub fn ping(&self, service_sid: &str, identity: &str, id: u64) -> Result<(), SessionError> {
        if !self.is_serving() {
            return Err(SessionError::Fenced);
        }
        let now = self.inner.clock.now();
        self.lock().ping(now, id, service_sid, identity)?;
        self.inner.stats.pings.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Closes a session; the user goes offline after the service's grace period.
    pub fn close(
        &self,
        service_sid: &str,
        identity: &str,
        id: u64,
    ) -> Result<Committed, SessionError> {
        if !self.is_serving() {
            return Err(SessionError::Fenced);
        }
        self.end(|engine, now| engine.close(now, id, service_sid, identity))
    }

    /// Ends a session a connection held when the connection goes away — unless a later open
    /// resumed it (the client reconnected before this connection was seen to drop).
    pub fn release(
        &self,
        service_sid: &str,
        identity: &str,
        held: HeldSession,
    ) -> Result<Committed, SessionError> {
        self.end(|engine, now| engine.release(now, held.id, service_sid, identity, held.holder))
    }

    fn end(
        &self,
        change: impl FnOnce(&mut Engine, Now) -> Result<Vec<Transition>, SessionError>,
    ) -> Result<Committed, SessionError> {
        let mut engine = self.lock();
        let now = self.inner.clock.now();
        let live = engine.session_count();
        let transitions = change(&mut engine, now)?;
        // A release that found the session resumed elsewhere (or gone) ended nothing.
        let ended = engine.session_count() < live;
        let committed = self.queue_with_ended(&mut engine, transitions, true);
        drop(engine);
        if ended {
            self.inner.stats.closed.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.wake.notify_one();
        Ok(committed)
    }
}

/// A session as one connection holds it: its id, and which open of it that connection made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldSession {
    pub id: u64,
    pub holder: u32,
}
