//! Ends WebSockets whose access token was signed by an API key that has since been revoked (or
//! deleted). Each HTTP request verifies its token against the key table, but a socket was
//! verified once, at its upgrade. Revocation may happen in another process (`reachd keys
//! revoke` writes the database), so the server notices it by itself: every
//! [`CHECK_INTERVAL`] one query asks which of the key SIDs in use by live sockets are no longer
//! live, and every socket signed by such a key is told to close with [`CLOSE_REVOKED`]; the
//! socket then ends its session as a closed socket does (the user goes offline after the grace).
//!
//! Concurrency: one mutex around the map key SID → (watch id → the socket's mailbox), held
//! only to update or read the map — never across the storage query or an await. A socket
//! registers when its session starts and unregisters when it ends (and moves to the new key
//! when `updateToken` changes it). A key found revoked is removed with all its sockets, whose
//! mailboxes are stopped ([`Stop::Revoked`]); a socket registering with it between the query
//! and the removal is stopped too (revocation is final), and one registering later is caught
//! by the next check.
//!
//! May depend on: tokio, tokio-util, tracing, domain::store, realtime::mailbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::store::Store;
use crate::realtime::{Mailbox, Stop};

/// WebSocket close code for "the API key that signed your token was revoked". The JS SDK
/// treats it as terminal (no reconnect with the same token) until `updateToken`.
pub const CLOSE_REVOKED: u16 = 4003;
/// How often the keys of live sockets are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// One socket's registration: its mailbox is stopped when its key is revoked.
#[derive(Debug)]
pub struct Watched {
    id: u64,
    key_sid: String,
}

impl Watched {
    pub fn key_sid(&self) -> &str {
        &self.key_sid
    }
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    by_key: HashMap<String, HashMap<u64, Arc<Mailbox>>>,
}

/// The key SIDs of live sockets, and how to reach those sockets.
#[derive(Clone, Default)]
pub struct KeyWatch {
    inner: Arc<Mutex<Inner>>,
}

impl KeyWatch {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a socket whose token `key_sid` signed, by its mailbox.
    pub fn watch(&self, key_sid: &str, mailbox: &Arc<Mailbox>) -> Watched {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner
            .by_key
            .entry(key_sid.to_string())
            .or_default()
            .insert(id, mailbox.clone());
        Watched {
            id,
            key_sid: key_sid.to_string(),
        }
    }

    /// Removes a socket's registration (it ended, or moved to another key).
    pub fn unwatch(&self, watched: &Watched) {
        let mut inner = self.lock();
        if let Some(sockets) = inner.by_key.get_mut(&watched.key_sid) {
            sockets.remove(&watched.id);
            if sockets.is_empty() {
                inner.by_key.remove(&watched.key_sid);
            }
        }
    }

    /// Key SIDs with at least one registered socket.
    pub fn keys_in_use(&self) -> Vec<String> {
        self.lock().by_key.keys().cloned().collect()
    }

    /// Stops the mailbox of every socket signed by one of `key_sids`; returns how many.
    pub fn revoke(&self, key_sids: &[String]) -> usize {
        let mut fired = 0;
        let mut inner = self.lock();
        for sid in key_sids {
            for (_, mailbox) in inner.by_key.remove(sid).unwrap_or_default() {
                mailbox.stop(Stop::Revoked);
                fired += 1;
            }
        }
        fired
    }

    /// One check: the keys in use that are no longer live, in one storage query; their sockets
    /// are told to close. Returns how many sockets were.
    pub fn check(&self, store: &dyn Store) -> crate::domain::Result<usize> {
        let in_use = self.keys_in_use();
        if in_use.is_empty() {
            return Ok(0);
        }
        let live = store.live_api_keys(&in_use)?;
        let gone: Vec<String> = in_use.into_iter().filter(|k| !live.contains(k)).collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let fired = self.revoke(&gone);
        tracing::info!(keys = ?gone, sockets = fired, "API keys revoked: closing their sockets");
        Ok(fired)
    }

    /// Checks every `every` until `stop` fires. The query runs on the blocking pool.
    pub async fn run(self, store: Arc<dyn Store>, every: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let (watch, store) = (self.clone(), store.clone());
            match tokio::task::spawn_blocking(move || watch.check(store.as_ref())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "checking API keys of live sockets"),
                Err(e) => tracing::error!(error = %e, "the API key check panicked"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoking_a_key_fires_its_sockets_only() {
        let watch = KeyWatch::default();
        let mailboxes = [Mailbox::new(4), Mailbox::new(4), Mailbox::new(4)];
        let [a1, a2, b] = &mailboxes;
        let _ = (watch.watch("SKa", a1), watch.watch("SKa", a2));
        let watched_b = watch.watch("SKb", b);
        let mut keys = watch.keys_in_use();
        keys.sort();
        assert_eq!(keys, ["SKa", "SKb"]);
        assert_eq!(watch.revoke(&["SKa".to_string()]), 2);
        assert_eq!(a1.stopped(), Some(Stop::Revoked));
        assert_eq!(a2.stopped(), Some(Stop::Revoked));
        assert_eq!(b.stopped(), None);
        watch.unwatch(&watched_b);
        assert!(watch.keys_in_use().is_empty());
    }
}
