//! What a backend's writer reports after each commit: the effects its jobs recorded (event
//! ids, deliveries, changed services, transitions), the hooks that receive them, and the
//! writer's counters. Shared by every storage backend so that the composition root wires the
//! same hooks whatever the backend.
//!
//! Invariant: hooks run on the writer's thread, in commit order, after the commit and before
//! any caller of the batch is answered; they must not block.
//!
//! May depend on: std, metrics, domain (errors).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::domain::{Error, Result};

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

/// After a batch of `jobs` ran: the counters and metrics, then — only when it committed — the
/// hooks, with what the batch recorded.
pub fn after_batch(
    stats: &WriterStats,
    hooks: &mut [Box<dyn CommitHook>],
    jobs: usize,
    elapsed: Duration,
    committed: bool,
    effects: &Effects,
) {
    stats.jobs.fetch_add(jobs as u64, Ordering::Relaxed);
    stats.last_batch.store(jobs as u64, Ordering::Relaxed);
    stats
        .last_commit_us
        .store(elapsed.as_micros() as u64, Ordering::Relaxed);
    metrics::histogram!("reachd_writer_batch_size").record(jobs as f64);
    metrics::histogram!("reachd_writer_commit_seconds").record(elapsed.as_secs_f64());
    if committed {
        stats.transactions.fetch_add(1, Ordering::Relaxed);
        for hook in hooks {
            hook.committed(effects);
        }
    } else {
        stats.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a job's caller gets: its own result if the batch committed (or the job failed on its
/// own), else the batch's failure.
pub fn job_answer<T>(
    commit: &std::result::Result<(), String>,
    result: Option<Result<T>>,
) -> Result<T> {
    match (commit, result) {
        (Ok(()), Some(result)) => result,
        (Err(e), Some(Ok(_))) => Err(Error::Unavailable(e.clone())),
        (_, Some(Err(e))) => Err(e),
        (_, None) => Err(Error::Unavailable("write was not run".into())),
    }
}
