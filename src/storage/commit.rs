//! What a backend's writer reports after each commit: the effects its jobs recorded (event
//! ids, deliveries, changed services, transitions), the hooks that receive them, and the
//! writer's counters. Shared by every storage backend so that the composition root wires the
//! same hooks whatever the backend.
//!
//! Invariant: hooks run on the writer's thread, in commit order, after the commit and before
//! any caller of the batch is answered; they must not block.
//!
//! May depend on: std.

use std::sync::atomic::AtomicU64;

/// Counters read by tests, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Committed transactions.
    pub transactions: AtomicU64,
    /// Jobs run (committed or not).
    pub jobs: AtomicU64,
    /// Jobs in the most recent batch.
    pub last_batch: AtomicU64,
    /// Microseconds the most recent commit took.
    pub last_commit_us: AtomicU64,
    /// Failed transactions (begin or commit failed).
    pub failures: AtomicU64,
}

/// Runs after every commit with the effects the batch's jobs recorded.
pub trait CommitHook: Send + 'static {
    fn committed(&mut self, effects: &Effects);
}

/// What committed jobs leave for the post-commit hooks (events, wake-ups).
#[derive(Debug, Default)]
pub struct Effects {
    /// Ids of event rows written by the batch, in commit order.
    pub event_ids: Vec<i64>,
    /// The batch wrote webhook deliveries.
    pub deliveries: bool,
    /// SIDs of services the batch created, changed or deleted.
    pub services: Vec<String>,
    /// Reachability transitions the batch stored (state changes, not repeats).
    pub transitions: Vec<StoredTransition>,
}

/// One stored reachability change (online/offline or notifiable), for metrics.
#[derive(Debug, Clone, Copy)]
pub struct StoredTransition {
    pub cause: &'static str,
    /// For a change to offline: the user's last sign of life (last ping or session end),
    /// wall-clock ms.
    pub offline_since: Option<i64>,
}

impl Effects {
    /// Adds what a committed job recorded to its batch's effects.
    pub fn absorb(&mut self, other: Effects) {
        self.event_ids.extend(other.event_ids);
        self.deliveries |= other.deliveries;
        self.services.extend(other.services);
        self.transitions.extend(other.transitions);
    }
}
