//! Session use cases: an HTTP session open or close is answered only once committed; a
//! WebSocket connection is a session plus a registration with the realtime hub, made and
//! undone together.
//!
//! May depend on: tokio, domain, presence, realtime.

use super::{COMMIT_WAIT, Reachability};
use crate::domain::presence::Transport;
use crate::domain::service::Service;
use crate::domain::{Error, Result};
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
        let (held, committed) =
            self.presence
                .open(service, identity, Transport::Http, endpoint, resume)?;
        committed_in_time(committed).await?;
        Ok(held)
    }

    /// Closes a session once its end is committed, so an acknowledged close survives a crash.
    /// `NotFound` for a session that is not this identity's or has ended.
    pub async fn close_session(&self, service_sid: &str, identity: &str, id: u64) -> Result<()> {
        let committed = self
            .presence
            .close(service_sid, identity, id)
            .map_err(|_| Error::NotFound)?;
        committed_in_time(committed).await
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
