//! The hub: who is connected to which service, who subscribes to whom, and a task that reads
//! newly committed events from storage and delivers `userUpdated` / `serviceUpdated` messages.
//!
//! Invariants:
//! - Messages come from the event table in commit order (the task follows the writer's
//!   published last event id), so a subscriber sees exactly the committed transitions, in order.
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

/// A message for one connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    Json(Value),
}

struct Conn {
    service_sid: String,
    queue: mpsc::Sender<Outbound>,
    overflow: CancellationToken,
    subscriptions: HashSet<String>,
}

#[derive(Default)]
struct State {
    conns: HashMap<u64, Conn>,
    /// (service, identity) → subscribed connections.
    subscribers: HashMap<(String, String), HashSet<u64>>,
    /// Last reachability flag sent per service.
    flags: HashMap<String, bool>,
}

#[derive(Clone)]
pub struct Hub {
    state: Arc<Mutex<State>>,
    next_id: Arc<AtomicU64>,
    max_subscriptions: usize,
    pub delivered: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(MAX_SUBSCRIPTIONS)
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
    /// A hub whose connections may each hold `max_subscriptions` subscriptions.
    pub fn new(max_subscriptions: usize) -> Self {
        Hub {
            state: Arc::default(),
            next_id: Arc::default(),
            max_subscriptions,
            delivered: Arc::default(),
            dropped: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, service_sid: &str, capacity: usize) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let overflow = CancellationToken::new();
        let conn = Conn {
            service_sid: service_sid.to_string(),
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
            for identity in conn.subscriptions {
                let key = (conn.service_sid.clone(), identity);
                if let Some(set) = state.subscribers.get_mut(&key) {
                    set.remove(&id);
                    if set.is_empty() {
                        state.subscribers.remove(&key);
                    }
                }
            }
        }
    }

    /// Adds a subscription; false when the connection holds too many.
    pub fn subscribe(&self, id: u64, identity: &str) -> bool {
        let mut state = self.lock();
        let Some(conn) = state.conns.get_mut(&id) else {
            return false;
        };
        if conn.subscriptions.len() >= self.max_subscriptions
            && !conn.subscriptions.contains(identity)
        {
            return false;
        }
        conn.subscriptions.insert(identity.to_string());
        let key = (conn.service_sid.clone(), identity.to_string());
        state.subscribers.entry(key).or_default().insert(id);
        true
    }

    pub fn unsubscribe(&self, id: u64, identity: &str) {
        let mut state = self.lock();
        let Some(conn) = state.conns.get_mut(&id) else {
            return;
        };
        conn.subscriptions.remove(identity);
        let key = (conn.service_sid.clone(), identity.to_string());
        if let Some(set) = state.subscribers.get_mut(&key) {
            set.remove(&id);
        }
    }

    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    /// Queues a message; a full queue drops the connection.
    fn deliver(&self, state: &mut State, id: u64, message: &Value) {
        let Some(conn) = state.conns.get(&id) else {
            return;
        };
        match conn.queue.try_send(Outbound::Json(message.clone())) {
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
        if event.kind != EventType::ReachabilityUpdated {
            return;
        }
        let message = json!({"type": "userUpdated", "user": user_from_event(event), "updateReasons": event.reasons});
        let mut state = self.lock();
        let key = (event.service_sid.clone(), event.identity.clone());
        let ids: Vec<u64> = state
            .subscribers
            .get(&key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
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
        let message =
            json!({"type": "serviceUpdated", "reachability_enabled": reachability_enabled});
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
