//! Session use cases: an HTTP session open or close is answered only once committed; a
//! WebSocket connection is a session plus a registration with the realtime hub, made and
//! undone together.
//!
//! May depend on: tokio, domain, presence, realtime.

use super::{COMMIT_WAIT, Reachability};
use crate::domain::presence::Transport;
use crate::domain::service::Service;
use crate::domain::{Error, Result};
use crate::presence::engine::SessionError;
use crate::presence::{Committed, HeldSession};
use crate::realtime::hub::Registration;

/// A WebSocket's session and its hub registration, as [`Reachability::connect_socket`] made
/// them.
pub struct SocketConnection {
    pub held: HeldSession,
    pub registration: Registration,
}

/// Waits at most [`COMMIT_WAIT`] for a commit; storage counts as unavailable otherwise.
async fn committed_in_time(committed: Committed) -> Result<()> {
    match tokio::time::timeout(COMMIT_WAIT, committed.wait()).await {
        Ok(true) => Ok(()),
        _ => Err(Error::Unavailable("session change not committed".into())),
    }
}

fn session_error(e: SessionError) -> Error {
    match e {
        SessionError::Fenced => Error::Fenced,
        SessionError::NotFound | SessionError::IdTaken => Error::NotFound,
    }
}

impl Reachability {
    /// Opens (or resumes) an HTTP session; the user goes online (and is created on this first
    /// contact when missing) in the commit this waits for. `LimitExceeded` when the identity
    /// holds the most sessions allowed; `Unavailable` when the commit does not come in time.
    pub async fn open_session(
        &self,
        service: &Service,
        identity: &str,
        endpoint: Option<&str>,
        resume: Option<u64>,
    ) -> Result<HeldSession> {
        self.claim_resumed(service, identity, resume).await?;
        let (held, committed) =
            self.presence
                .open(service, identity, Transport::Http, endpoint, resume)?;
        committed_in_time(committed).await?;
        Ok(held)
    }

    /// Closes a session once its end is committed, so an acknowledged close survives a crash.
    /// `NotFound` for a session that is not this identity's or has ended. In a cluster, a
    /// session another node holds moves here first.
    pub async fn close_session(&self, service: &Service, identity: &str, id: u64) -> Result<()> {
        let committed = match self.presence.close(&service.sid, identity, id) {
            Err(SessionError::NotFound) if self.presence.claim(service, identity, id).await? => {
                self.presence.close(&service.sid, identity, id)
            }
            other => other,
        };
        committed_in_time(committed.map_err(session_error)?).await
    }

    /// Keeps a session alive (memory only). In a cluster, a session another node holds moves
    /// here first (one write; the pings after it stay here).
    pub async fn ping_session(&self, service: &Service, identity: &str, id: u64) -> Result<()> {
        match self.presence.ping(&service.sid, identity, id) {
            Err(SessionError::NotFound) if self.presence.claim(service, identity, id).await? => {
                self.presence.ping(&service.sid, identity, id)
            }
            other => other,
        }
        .map_err(session_error)
    }

    /// In a cluster, brings a session to resume here from the node holding it (nothing when
    /// it is here already, or gone: the open then starts a new one).
    async fn claim_resumed(
        &self,
        service: &Service,
        identity: &str,
        resume: Option<u64>,
    ) -> Result<()> {
        if let Some(id) = resume {
            self.presence.claim(service, identity, id).await?;
        }
        Ok(())
    }

    /// Opens (or resumes) a WebSocket's session, waits for its commit, and registers the
    /// connection with the hub (with a queue of `capacity` messages).
    pub async fn connect_socket(
        &self,
        service: &Service,
        identity: &str,
        endpoint: Option<&str>,
        resume: Option<u64>,
        capacity: usize,
    ) -> Result<SocketConnection> {
        self.claim_resumed(service, identity, resume).await?;
        let (held, committed) =
            self.presence
                .open(service, identity, Transport::WebSocket, endpoint, resume)?;
        committed.wait().await;
        self.hub
            .note_service(&service.sid, service.reachability_enabled);
        let registration = self.hub.register(&service.sid, identity, capacity);
        Ok(SocketConnection { held, registration })
    }

    /// Leaves the hub and, unless the session must outlive the connection (a server restart,
    /// so that the client resumes it), ends the session it held — unless a later connection
    /// resumed it.
    pub fn disconnect_socket(
        &self,
        conn: u64,
        service_sid: &str,
        identity: &str,
        held: HeldSession,
        keep_session: bool,
    ) {
        self.hub.unregister(conn);
        if !keep_session {
            let _ = self.presence.release(service_sid, identity, held);
        }
    }
}
