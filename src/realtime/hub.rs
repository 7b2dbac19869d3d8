//! The hub: who is connected to which service, who subscribes to whom, and a task that reads
//! newly committed events from storage and delivers `userUpdated` / `serviceUpdated` messages.
//!
//! Invariants:
//! - Messages come from the event table in commit order (the task follows the writer's
//!   published last event id), so a subscriber sees exactly the committed transitions, in order.
//! - A subscription starts from a snapshot that reflects exactly the events up to an id (its
//!   horizon: event ids grow in commit order, one writer). It is accepted only while the hub
//!   has published no event after the horizon, and then gets only the events after it: none
//!   falls between snapshot and updates, none the snapshot shows arrives again. The snapshot
//!   reply is queued under the lock, behind what was queued before and ahead of what follows.
//! - Every connection has a bounded mailbox; a connection that falls behind is dropped (its
//!   mailbox stops as a slow consumer and the socket closes with an error) instead of growing
//!   memory.
//! - Lock order: the hub's lock, then a mailbox's (`deliver`, `stop_all`), never the other way:
//!   a mailbox holds its own lock only inside its methods and calls nothing from there.
//!
//! May depend on: tokio, tokio-util, serde_json, domain, realtime::mailbox.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::domain::event::{Event, EventType};
use crate::domain::store::Store;

use super::mailbox::{Mailbox, Stop};

/// Most subscriptions one connection may hold unless configured (`limits.subscriptions_per_socket`).
pub const MAX_SUBSCRIPTIONS: usize = 1000;

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeRefused {
    /// The connection is gone.
    Closed,
    /// The socket holds the most subscriptions allowed (the limit).
    SocketFull(usize),
    /// The identity's sockets together hold the most allowed (the limit).
    IdentityFull(usize),
    /// The hub already published events after the snapshot's horizon: take a new snapshot.
    Stale,
}

struct Conn {
    service_sid: String,
    /// The identity of the token that opened the connection.
    owner: String,
    mailbox: Arc<Mailbox>,
    subscriptions: HashSet<String>,
}

#[derive(Default)]
struct State {
    conns: HashMap<u64, Conn>,
    /// (service, identity) → subscribed connections, each with its snapshot's horizon (events
    /// up to that id are in the snapshot and not sent again).
    subscribers: HashMap<(String, String), HashMap<u64, i64>>,
    /// The id of the newest event handed to subscribers: where the feed reads on from.
    published: i64,
    /// (service, owner identity) → subscriptions held over all the owner's connections.
    per_owner: HashMap<(String, String), usize>,
    /// Last reachability flag sent per service.
    flags: HashMap<String, bool>,
}

#[derive(Clone)]
pub struct Hub {
    state: Arc<Mutex<State>>,
    next_id: Arc<AtomicU64>,
    max_subscriptions: usize,
    max_per_identity: usize,
    pub delivered: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(MAX_SUBSCRIPTIONS, MAX_SUBSCRIPTIONS * 10)
    }
}

/// What a new connection gets: its id and its mailbox.
pub struct Registration {
    pub id: u64,
    pub mailbox: Arc<Mailbox>,
}

/// A user as a socket message shows it.
pub fn user_from_event(e: &Event) -> Value {
    let profile: Value = serde_json::from_str(&e.user_json).unwrap_or(Value::Null);
    json!({
        "identity": e.identity,
        "user_sid": e.user_sid,
        "friendly_name": profile["friendly_name"],
        "attributes": profile["attributes"],
        "is_online": e.is_online,
        "is_notifiable": e.is_notifiable,
    })
}

impl Hub {
    /// A hub whose connections may each hold `max_subscriptions` subscriptions, and all the
    /// connections of one identity (one token's subject) `max_per_identity` together.
    pub fn new(max_subscriptions: usize, max_per_identity: usize) -> Self {
        Hub {
            state: Arc::default(),
            next_id: Arc::default(),
            max_subscriptions,
            max_per_identity,
            delivered: Arc::default(),
            dropped: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, service_sid: &str, owner: &str, capacity: usize) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mailbox = Mailbox::new(capacity);
        let conn = Conn {
            service_sid: service_sid.to_string(),
            owner: owner.to_string(),
            mailbox: mailbox.clone(),
            subscriptions: HashSet::new(),
        };
        self.lock().conns.insert(id, conn);
        Registration { id, mailbox }
    }

    /// Stops every connection's mailbox for `reason` (their sockets close).
    pub fn stop_all(&self, reason: Stop) -> usize {
        let state = self.lock();
        for conn in state.conns.values() {
            conn.mailbox.stop(reason);
        }
        state.conns.len()
    }

    pub fn unregister(&self, id: u64) {
        Self::remove(&mut self.lock(), id);
    }

    fn remove(state: &mut State, id: u64) {
        if let Some(conn) = state.conns.remove(&id) {
            let owner = (conn.service_sid.clone(), conn.owner.clone());
            Self::release_owned(state, owner, conn.subscriptions.len());
            for identity in conn.subscriptions {
                Self::drop_subscriber(state, (conn.service_sid.clone(), identity), id);
            }
        }
    }

    fn drop_subscriber(state: &mut State, key: (String, String), id: u64) {
        if let Some(set) = state.subscribers.get_mut(&key) {
            set.remove(&id);
            if set.is_empty() {
                state.subscribers.remove(&key);
            }
        }
    }

    fn release_owned(state: &mut State, owner: (String, String), count: usize) {
        if let Some(held) = state.per_owner.get_mut(&owner) {
            *held = held.saturating_sub(count);
            if *held == 0 {
                state.per_owner.remove(&owner);
            }
        }
    }

    /// Subscribes connection `id` to `identity` from a snapshot that reflects the events up
    /// to `horizon`, and queues `reply` (the snapshot message) for the connection. Refused with
    /// [`SubscribeRefused::Stale`] when events after `horizon` were already published (they
    /// are in neither the snapshot nor the feed). Subscribing again to one identity moves its
    /// horizon and is still one subscription.
    pub fn subscribe(
        &self,
        id: u64,
        identity: &str,
        horizon: i64,
        reply: &Arc<str>,
    ) -> Result<(), SubscribeRefused> {
        let mut state = self.lock();
        let state = &mut *state;
        if horizon < state.published {
            return Err(SubscribeRefused::Stale);
        }
        let Some(conn) = state.conns.get_mut(&id) else {
            return Err(SubscribeRefused::Closed);
        };
        if !conn.subscriptions.contains(identity) {
            if conn.subscriptions.len() >= self.max_subscriptions {
                return Err(SubscribeRefused::SocketFull(self.max_subscriptions));
            }
            let owner = (conn.service_sid.clone(), conn.owner.clone());
            let held = state.per_owner.entry(owner).or_default();
            if *held >= self.max_per_identity {
                return Err(SubscribeRefused::IdentityFull(self.max_per_identity));
            }
            *held += 1;
            conn.subscriptions.insert(identity.to_string());
        }
        let key = (conn.service_sid.clone(), identity.to_string());
        state
            .subscribers
            .entry(key)
            .or_default()
            .insert(id, horizon);
        self.deliver(state, id, reply);
        Ok(())
    }

    /// Queues a message for one connection, in order with its updates.
    pub fn send(&self, id: u64, message: &Arc<str>) {
        self.deliver(&mut self.lock(), id, message);
    }

    pub fn unsubscribe(&self, id: u64, identity: &str) {
        let mut state = self.lock();
        let Some(conn) = state.conns.get_mut(&id) else {
            return;
        };
        if !conn.subscriptions.remove(identity) {
            return;
        }
        let owner = (conn.service_sid.clone(), conn.owner.clone());
        let key = (conn.service_sid.clone(), identity.to_string());
        Self::release_owned(&mut state, owner, 1);
        Self::drop_subscriber(&mut state, key, id);
    }

    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    /// Queues a message; a full queue drops the connection.
    fn deliver(&self, state: &mut State, id: u64, message: &Arc<str>) {
        let Some(conn) = state.conns.get(&id) else {
            return;
        };
        match conn.mailbox.push(message.clone()) {
            Ok(()) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                // Too slow (the mailbox stopped itself) or already stopping: forget the
                // connection now (its subscriptions go with it) and let its socket task
                // close it.
                if conn.mailbox.stopped() == Some(Stop::SlowConsumer) {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Self::remove(state, id);
            }
        }
    }

    /// Delivers one committed event to its subscribers.
    pub fn publish_event(&self, event: &Event) {
        let mut state = self.lock();
        state.published = state.published.max(event.id);
        if event.kind != EventType::ReachabilityUpdated {
            return;
        }
        let key = (event.service_sid.clone(), event.identity.clone());
        let ids: Vec<u64> = state
            .subscribers
            .get(&key)
            .map(|s| {
                s.iter()
                    .filter(|(_, horizon)| event.id > **horizon)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        if ids.is_empty() {
            return;
        }
        let message: Arc<str> = json!({"type": "userUpdated", "user": user_from_event(event), "updateReasons": event.reasons})
            .to_string()
            .into();
        for id in ids {
            self.deliver(&mut state, id, &message);
        }
    }

    /// Tells a service's connections its reachability flag, when it changed.
    pub fn publish_service(&self, service_sid: &str, reachability_enabled: bool) {
        let mut state = self.lock();
        let previous = state
            .flags
            .insert(service_sid.to_string(), reachability_enabled);
        if previous == Some(reachability_enabled) {
            return;
        }
        let message: Arc<str> =
            json!({"type": "serviceUpdated", "reachability_enabled": reachability_enabled})
                .to_string()
                .into();
        let ids: Vec<u64> = state
            .conns
            .iter()
            .filter(|(_, c)| c.service_sid == service_sid)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.deliver(&mut state, id, &message);
        }
    }

    /// Remembers a service's flag without telling anyone (the state a socket starts from).
    pub fn note_service(&self, service_sid: &str, reachability_enabled: bool) {
        self.lock()
            .flags
            .entry(service_sid.to_string())
            .or_insert(reachability_enabled);
    }

    /// Follows committed events and service changes until `stop`.
    pub async fn run(
        self,
        store: Arc<dyn Store>,
        mut events: watch::Receiver<i64>,
        mut services: mpsc::UnboundedReceiver<String>,
        stop: CancellationToken,
    ) {
        // The feed starts after what was committed before the server started serving.
        {
            let mut state = self.lock();
            state.published = state.published.max(*events.borrow());
        }
        loop {
            tokio::select! {
                changed = events.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    loop {
                        let after = self.lock().published;
                        // A batch of up to 500 rows: read on the blocking pool, never on a
                        // runtime worker.
                        let reader = store.clone();
                        let read = tokio::task::spawn_blocking(move || reader.events_since(after, 500))
                            .await
                            .unwrap_or_else(|e| Err(crate::domain::Error::Internal(e.into())));
                        match read {
                            Ok(batch) if !batch.is_empty() => {
                                for event in &batch {
                                    self.publish_event(event);
                                }
                            }
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "realtime feed read failed");
                                break;
                            }
                        }
                    }
                }
                Some(sid) = services.recv() => {
                    if let Ok(Some(service)) = store.service(&sid) {
                        self.publish_service(&sid, service.reachability_enabled);
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::Source;

    /// Subscribes with a snapshot at horizon 0, dropping the snapshot reply.
    fn sub(hub: &Hub, id: u64, identity: &str) -> Result<(), SubscribeRefused> {
        hub.subscribe(id, identity, 0, &Arc::from("{}"))
    }

    fn event(identity: &str, kind: EventType, id: i64) -> Event {
        Event {
            id,
            service_sid: "IS1".into(),
            user_sid: "US1".into(),
            identity: identity.into(),
            kind,
            reasons: vec!["reachabilityOnline".into()],
            cause: None,
            sequence: id,
            is_online: Some(id % 2 == 1),
            is_notifiable: None,
            session_count: None,
            last_seen: None,
            source: Source::Sdk,
            rest_webhooks: false,
            user_json: "{}".into(),
            created_at: 0,
        }
    }

    /// What a connection has queued: `type` of each message, with `is_online` for updates.
    fn drain(mailbox: &Mailbox) -> Vec<String> {
        use crate::realtime::mailbox::Next;
        let mut seen = Vec::new();
        while let Some(next) = mailbox.try_next() {
            let text = match next {
                Next::Message(text) => text,
                // A stopped mailbox answers its reason every time: the last word.
                Next::Stop(reason) => {
                    seen.push(format!("{reason:?}"));
                    break;
                }
            };
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            seen.push(match v["type"].as_str() {
                Some("userUpdated") => format!("online={}", v["user"]["is_online"]),
                other => other.unwrap_or("?").to_string(),
            });
        }
        seen
    }

    #[test]
    fn a_subscriber_gets_exactly_the_events_after_its_snapshot() {
        let hub = Hub::default();
        let conn = hub.register("IS1", "bob", 8);
        let reply: Arc<str> = Arc::from(r#"{"type":"user"}"#);
        // Events 1–2 are committed and in the snapshot, but the hub's feed has not reached them.
        assert_eq!(hub.subscribe(conn.id, "alice", 2, &reply), Ok(()));
        for id in 1..=4 {
            hub.publish_event(&event("alice", EventType::ReachabilityUpdated, id));
        }
        assert_eq!(
            drain(&conn.mailbox),
            ["user", "online=true", "online=false"]
        );
        // The feed is at 4 now: a snapshot from before event 4 would miss it.
        assert_eq!(
            hub.subscribe(conn.id, "carol", 3, &reply),
            Err(SubscribeRefused::Stale)
        );
        assert!(
            !hub.lock()
                .subscribers
                .contains_key(&("IS1".into(), "carol".into()))
        );
        // Subscribing again queues the fresh snapshot behind the update queued before it, and
        // moves the horizon: event 6 is in the snapshot, event 7 is not.
        hub.publish_event(&event("alice", EventType::ReachabilityUpdated, 5));
        assert_eq!(hub.subscribe(conn.id, "alice", 6, &reply), Ok(()));
        hub.publish_event(&event("alice", EventType::UserDeleted, 6));
        hub.publish_event(&event("alice", EventType::ReachabilityUpdated, 7));
        assert_eq!(drain(&conn.mailbox), ["online=true", "user", "online=true"]);
    }

    #[test]
    fn subscriptions_are_capped_per_socket_and_per_identity_and_released() {
        let hub = Hub::new(3, 4);
        let registrations = [
            hub.register("IS1", "alice", 8),
            hub.register("IS1", "alice", 8),
            hub.register("IS1", "bob", 8),
        ];
        let [a, b, other] = registrations.each_ref().map(|r| r.id);
        for target in ["u1", "u2", "u3"] {
            assert_eq!(sub(&hub, a, target), Ok(()));
        }
        assert_eq!(
            sub(&hub, a, "u1"),
            Ok(()),
            "a repeat is not a new subscription"
        );
        assert_eq!(sub(&hub, a, "u4"), Err(SubscribeRefused::SocketFull(3)));
        assert_eq!(sub(&hub, b, "u4"), Ok(()));
        assert_eq!(
            sub(&hub, b, "u5"),
            Err(SubscribeRefused::IdentityFull(4)),
            "alice's sockets hold 4 together"
        );
        assert_eq!(sub(&hub, other, "u5"), Ok(()), "bob has his own budget");
        hub.unsubscribe(a, "u1");
        assert_eq!(sub(&hub, b, "u5"), Ok(()), "an unsubscribe gives one back");
        hub.unregister(a);
        assert_eq!(sub(&hub, b, "u6"), Ok(()), "a closed socket gives all back");
        hub.unregister(b);
        hub.unregister(other);
        let state = hub.lock();
        assert!(state.per_owner.is_empty() && state.subscribers.is_empty());
        drop(state);
        assert_eq!(sub(&hub, a, "u1"), Err(SubscribeRefused::Closed));
    }

    #[test]
    fn a_full_mailbox_drops_its_connection_and_stop_all_reaches_every_one() {
        let hub = Hub::default();
        let slow = hub.register("IS1", "bob", 2);
        let quick = hub.register("IS1", "carol", 8);
        for id in [slow.id, quick.id] {
            assert_eq!(sub(&hub, id, "alice"), Ok(()));
        }
        for id in 1..=3 {
            hub.publish_event(&event("alice", EventType::ReachabilityUpdated, id));
        }
        // bob's mailbox held the snapshot and one update; the next one overflowed it.
        assert_eq!(drain(&slow.mailbox), ["SlowConsumer"]);
        assert_eq!(hub.connections(), 1);
        assert_eq!(hub.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(
            drain(&quick.mailbox),
            ["?", "online=true", "online=false", "online=true"]
        );
        assert_eq!(hub.stop_all(Stop::Lapsed), 1);
        assert_eq!(quick.mailbox.stopped(), Some(Stop::Lapsed));
        assert_eq!(slow.mailbox.stopped(), Some(Stop::SlowConsumer));
    }
}
