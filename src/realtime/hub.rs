//! The hub: who is connected to which service, who subscribes to whom, and a task that reads
//! newly committed events from storage and delivers `userUpdated` / `serviceUpdated` messages.
//!
//! Invariants:
//! - Messages come from the event table in commit order (the task follows the writer's
//!   published last event id), so a subscriber sees exactly the committed transitions, in order.
//! - A subscription starts from a snapshot read under the hub's lock, when no event can be
//!   published; it records the snapshot's per-user sequence and gets only the events after it.
//!   No event falls between snapshot and updates, and none the snapshot shows arrives again.
//! - Every connection has a bounded queue; a connection that falls behind is dropped (its
//!   overflow token fires and the socket closes with an error) instead of growing memory.
//!
//! May depend on: tokio, tokio-util, serde_json, domain.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::domain::event::{Event, EventType};
use crate::domain::store::Store;

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
}

/// A message for one connection: JSON text, serialized once and shared by every subscriber it
/// goes to (a queue slot is two words).
#[derive(Debug, Clone)]
pub struct Outbound(pub Arc<str>);

struct Conn {
    service_sid: String,
    /// The identity of the token that opened the connection.
    owner: String,
    queue: mpsc::Sender<Outbound>,
    overflow: CancellationToken,
    subscriptions: HashSet<String>,
}

#[derive(Default)]
struct State {
    conns: HashMap<u64, Conn>,
    /// (service, identity) → subscribed connections, each with the per-user sequence its
    /// snapshot showed (events up to it are not sent again).
    subscribers: HashMap<(String, String), HashMap<u64, i64>>,
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

/// What a new connection gets: its id, its queue and the token that fires on overflow.
pub struct Registration {
    pub id: u64,
    pub queue: mpsc::Receiver<Outbound>,
    pub overflow: CancellationToken,
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
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let overflow = CancellationToken::new();
        let conn = Conn {
            service_sid: service_sid.to_string(),
            owner: owner.to_string(),
            queue: tx,
            overflow: overflow.clone(),
            subscriptions: HashSet::new(),
        };
        self.lock().conns.insert(id, conn);
        Registration {
            id,
            queue: rx,
            overflow,
        }
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

    /// Subscribes connection `id` to `identity` from a snapshot: `snapshot` reads the user and
    /// returns it with its per-user sequence (or `None`: no such user, nothing subscribed). It
    /// runs under the hub's lock, so no event is published meanwhile: the connection gets
    /// exactly the events after its snapshot. Subscribing again to one identity takes a fresh
    /// snapshot and is still one subscription. Keep `snapshot` short: it holds up delivery.
    pub fn subscribe<T>(
        &self,
        id: u64,
        identity: &str,
        snapshot: impl FnOnce() -> Option<(T, i64)>,
    ) -> Result<Option<T>, SubscribeRefused> {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(conn) = state.conns.get_mut(&id) else {
            return Err(SubscribeRefused::Closed);
        };
        let again = conn.subscriptions.contains(identity);
        if !again && conn.subscriptions.len() >= self.max_subscriptions {
            return Err(SubscribeRefused::SocketFull(self.max_subscriptions));
        }
        let owner = (conn.service_sid.clone(), conn.owner.clone());
        if !again && state.per_owner.get(&owner).copied().unwrap_or(0) >= self.max_per_identity {
            return Err(SubscribeRefused::IdentityFull(self.max_per_identity));
        }
        let Some((user, sequence)) = snapshot() else {
            return Ok(None);
        };
        if !again {
            *state.per_owner.entry(owner).or_default() += 1;
            conn.subscriptions.insert(identity.to_string());
        }
        let key = (conn.service_sid.clone(), identity.to_string());
        state
            .subscribers
            .entry(key)
            .or_default()
            .insert(id, sequence);
        Ok(Some(user))
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
        match conn.queue.try_send(Outbound(message.clone())) {
            Ok(()) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                // Too slow: forget the connection now (its queue and subscriptions go with
                // it) and let its socket task close it.
                self.dropped.fetch_add(1, Ordering::Relaxed);
                conn.overflow.cancel();
                Self::remove(state, id);
            }
        }
    }

    /// Delivers one committed event to its subscribers.
    pub fn publish_event(&self, event: &Event) {
        if event.kind == EventType::UserDeleted {
            // A user created again under this identity numbers its events from the start.
            let key = (event.service_sid.clone(), event.identity.clone());
            if let Some(subscribers) = self.lock().subscribers.get_mut(&key) {
                subscribers.values_mut().for_each(|shown| *shown = 0);
            }
            return;
        }
        if event.kind != EventType::ReachabilityUpdated {
            return;
        }
        let mut state = self.lock();
        let key = (event.service_sid.clone(), event.identity.clone());
        let ids: Vec<u64> = state
            .subscribers
            .get(&key)
            .map(|s| {
                s.iter()
                    .filter(|(_, shown)| event.sequence > **shown)
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
        let mut cursor = *events.borrow();
        loop {
            tokio::select! {
                changed = events.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    loop {
                        match store.events_since(cursor, 500) {
                            Ok(batch) if !batch.is_empty() => {
                                for event in &batch {
                                    self.publish_event(event);
                                }
                                cursor = batch.last().map_or(cursor, |e| e.id);
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

    /// Subscribes with a snapshot at sequence 0.
    fn sub(hub: &Hub, id: u64, identity: &str) -> Result<Option<()>, SubscribeRefused> {
        hub.subscribe(id, identity, || Some(((), 0)))
    }

    fn event(identity: &str, kind: EventType, sequence: i64) -> Event {
        Event {
            id: sequence,
            service_sid: "IS1".into(),
            user_sid: "US1".into(),
            identity: identity.into(),
            kind,
            reasons: vec!["reachabilityOnline".into()],
            cause: None,
            sequence,
            is_online: Some(sequence % 2 == 1),
            is_notifiable: None,
            session_count: None,
            last_seen: None,
            source: Source::Sdk,
            rest_webhooks: false,
            user_json: "{}".into(),
            created_at: 0,
        }
    }

    fn drain(queue: &mut mpsc::Receiver<Outbound>) -> Vec<Value> {
        std::iter::from_fn(|| queue.try_recv().ok())
            .map(|Outbound(text)| {
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                v["user"]["is_online"].clone()
            })
            .collect()
    }

    #[test]
    fn a_subscriber_gets_exactly_the_events_after_its_snapshot() {
        let hub = Hub::default();
        let mut conn = hub.register("IS1", "bob", 8);
        // Events 1–2 were committed before the snapshot (which shows sequence 2), but the
        // hub's feed had not reached them yet.
        let shown = hub.subscribe(conn.id, "alice", || Some(("snapshot", 2)));
        assert_eq!(shown, Ok(Some("snapshot")));
        for sequence in 1..=4 {
            hub.publish_event(&event("alice", EventType::ReachabilityUpdated, sequence));
        }
        assert_eq!(
            drain(&mut conn.queue),
            vec![json!(true), json!(false)],
            "only 3 and 4"
        );
        assert_eq!(
            hub.subscribe(conn.id, "ghost", || None::<((), i64)>),
            Ok(None)
        );
        assert!(
            !hub.lock()
                .subscribers
                .contains_key(&("IS1".into(), "ghost".into()))
        );
        // Deleted and created again: the new user's events count from 1.
        hub.publish_event(&event("alice", EventType::UserDeleted, 5));
        hub.publish_event(&event("alice", EventType::ReachabilityUpdated, 1));
        assert_eq!(drain(&mut conn.queue), vec![json!(true)]);
    }

    #[test]
    fn subscriptions_are_capped_per_socket_and_per_identity_and_released() {
        let hub = Hub::new(3, 4);
        let a = hub.register("IS1", "alice", 8).id;
        let b = hub.register("IS1", "alice", 8).id;
        let other = hub.register("IS1", "bob", 8).id;
        for target in ["u1", "u2", "u3"] {
            assert_eq!(sub(&hub, a, target), Ok(Some(())));
        }
        assert_eq!(
            sub(&hub, a, "u1"),
            Ok(Some(())),
            "a repeat is not a new subscription"
        );
        assert_eq!(sub(&hub, a, "u4"), Err(SubscribeRefused::SocketFull(3)));
        assert_eq!(sub(&hub, b, "u4"), Ok(Some(())));
        assert_eq!(
            sub(&hub, b, "u5"),
            Err(SubscribeRefused::IdentityFull(4)),
            "alice's sockets hold 4 together"
        );
        assert_eq!(
            sub(&hub, other, "u5"),
            Ok(Some(())),
            "bob has his own budget"
        );
        hub.unsubscribe(a, "u1");
        assert_eq!(
            sub(&hub, b, "u5"),
            Ok(Some(())),
            "an unsubscribe gives one back"
        );
        hub.unregister(a);
        assert_eq!(
            sub(&hub, b, "u6"),
            Ok(Some(())),
            "a closed socket gives all back"
        );
        hub.unregister(b);
        hub.unregister(other);
        let state = hub.lock();
        assert!(state.per_owner.is_empty() && state.subscribers.is_empty());
        drop(state);
        assert_eq!(sub(&hub, a, "u1"), Err(SubscribeRefused::Closed));
    }
}
