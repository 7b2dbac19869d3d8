//! A WebSocket's mailbox: the messages queued for one connection (bounded) and, once set,
//! the reason it must close — behind one wakeup, so that an idle socket waits on one future
//! for both instead of a channel and a signal per reason.
//!
//! Why not a channel and cancellation tokens: an idle socket costs memory for as long as it
//! is connected, and a bounded tokio channel allocates its shared state and a 32-slot block
//! up front, each cancellation token a tree node, and each wait on them a future in the
//! socket's task — about 1.5 KB per socket for what this does in about 100 bytes (see
//! `docs/benchmarks.md`, "Where an idle socket's bytes go"). Nothing is allocated for messages
//! until the first one.
//!
//! Invariants (one consumer, the socket's task; any number of producers):
//! - Messages come out in the order they went in. A full mailbox refuses the message and
//!   stops with [`Stop::SlowConsumer`] (the hub then forgets the connection): memory per
//!   connection is bounded by its capacity.
//! - The first stop reason wins and stays; once stopped, no message is accepted and [`next`]
//!   returns the reason before any message still queued.
//! - No wakeup is lost: producers change the state under the lock and then call
//!   `notify_one`, which leaves a permit when the consumer is not waiting yet; the consumer
//!   checks the state under the lock before every wait.
//!
//! [`next`]: Mailbox::next
//!
//! May depend on: tokio (sync).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Why a socket must close (set by someone other than the socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its mailbox overflowed: the client reads too slowly.
    SlowConsumer,
    /// The API key that signed its token was revoked.
    Revoked,
    /// This node's cluster membership lapsed: its sessions are another node's.
    Lapsed,
}

/// What the consumer gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Message(Arc<str>),
    Stop(Stop),
}

/// The mailbox was stopped or full: the message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

#[derive(Debug)]
struct State {
    messages: VecDeque<Arc<str>>,
    stop: Option<Stop>,
}

#[derive(Debug)]
pub struct Mailbox {
    capacity: usize,
    state: Mutex<State>,
    changed: Notify,
}

impl Mailbox {
    /// A mailbox holding at most `capacity` (at least 1) undelivered messages.
    pub fn new(capacity: usize) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            capacity: capacity.max(1),
            state: Mutex::new(State {
                messages: VecDeque::new(),
                stop: None,
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a message. A full mailbox stops with [`Stop::SlowConsumer`] and refuses it; a
    /// stopped one refuses it.
    pub fn push(&self, message: Arc<str>) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.stop.is_some() {
            return Err(Refused);
        }
        if state.messages.len() >= self.capacity {
            state.stop = Some(Stop::SlowConsumer);
            state.messages = VecDeque::new();
        } else {
            state.messages.push_back(message);
        }
        let accepted = state.stop.is_none();
        drop(state);
        self.changed.notify_one();
        if accepted { Ok(()) } else { Err(Refused) }
    }

    /// Tells the consumer to close for `reason`, unless an earlier reason was set.
    pub fn stop(&self, reason: Stop) {
        let mut state = self.lock();
        if state.stop.is_none() {
            state.stop = Some(reason);
            // What was not delivered never will be: free it now.
            state.messages = VecDeque::new();
        }
        drop(state);
        self.changed.notify_one();
    }

    /// The stop reason, if set.
    pub fn stopped(&self) -> Option<Stop> {
        self.lock().stop
    }

    /// The stop reason if set, else the oldest message, without waiting.
    pub fn try_next(&self) -> Option<Next> {
        let mut state = self.lock();
        if let Some(reason) = state.stop {
            return Some(Next::Stop(reason));
        }
        state.messages.pop_front().map(Next::Message)
    }

    /// Waits for the stop reason or the oldest message (the reason first).
    pub async fn next(&self) -> Next {
        loop {
            if let Some(next) = self.try_next() {
                return next;
            }
            self.changed.notified().await;
        }
    }

    /// Waits until a stop reason is set (messages are left for [`Mailbox::next`]).
    pub async fn until_stopped(&self) -> Stop {
        loop {
            if let Some(reason) = self.stopped() {
                return reason;
            }
            self.changed.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn messages_come_out_in_order() {
        let mailbox = Mailbox::new(4);
        for m in ["a", "b", "c"] {
            assert_eq!(mailbox.push(text(m)), Ok(()));
        }
        let got: Vec<Next> = std::iter::from_fn(|| mailbox.try_next()).collect();
        assert_eq!(
            got,
            vec![
                Next::Message(text("a")),
                Next::Message(text("b")),
                Next::Message(text("c"))
            ]
        );
    }

    #[test]
    fn a_full_mailbox_stops_as_a_slow_consumer_and_refuses_more() {
        let mailbox = Mailbox::new(2);
        assert_eq!(mailbox.push(text("a")), Ok(()));
        assert_eq!(mailbox.push(text("b")), Ok(()));
        assert_eq!(mailbox.push(text("c")), Err(Refused));
        assert_eq!(mailbox.stopped(), Some(Stop::SlowConsumer));
        assert_eq!(mailbox.push(text("d")), Err(Refused));
        // The reason comes before what was queued, which is dropped.
        assert_eq!(mailbox.try_next(), Some(Next::Stop(Stop::SlowConsumer)));
    }

    #[test]
    fn the_first_stop_reason_stays() {
        let mailbox = Mailbox::new(2);
        mailbox.stop(Stop::Revoked);
        mailbox.stop(Stop::Lapsed);
        assert_eq!(mailbox.stopped(), Some(Stop::Revoked));
        assert_eq!(mailbox.push(text("a")), Err(Refused));
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_for_a_message_and_for_a_stop() {
        let mailbox = Mailbox::new(8);
        let waiter = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move { mailbox.next().await })
        };
        tokio::task::yield_now().await;
        assert_eq!(mailbox.push(text("hello")), Ok(()));
        assert_eq!(waiter.await.ok(), Some(Next::Message(text("hello"))));

        let waiter = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move { mailbox.until_stopped().await })
        };
        tokio::task::yield_now().await;
        assert_eq!(mailbox.push(text("not a stop")), Ok(()));
        mailbox.stop(Stop::Lapsed);
        assert_eq!(waiter.await.ok(), Some(Stop::Lapsed));
    }

    #[tokio::test]
    async fn no_wakeup_is_lost_between_producers_and_the_consumer() {
        let mailbox = Mailbox::new(100_000);
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let mailbox = mailbox.clone();
                tokio::spawn(async move {
                    for i in 0..1000 {
                        let _ = mailbox.push(text(&format!("{p}-{i}")));
                        if i % 50 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        let mut received = 0;
        while received < 4000 {
            match tokio::time::timeout(std::time::Duration::from_secs(10), mailbox.next()).await {
                Ok(Next::Message(_)) => received += 1,
                other => panic!("expected a message, got {other:?}"),
            }
        }
        for p in producers {
            assert!(p.await.is_ok());
        }
        assert_eq!(received, 4000);
        assert_eq!(mailbox.try_next(), None);
    }
}
