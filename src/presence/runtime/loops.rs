//! The runtime's background tasks: the ordered committer, the expiry sweeper and the session
//! flusher (see the invariants in [`super`]).
//!
//! May depend on: tokio, domain, presence::engine.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Inner, MAX_BATCH_TRANSITIONS, Pending, Presence, SWEEP_STEP_MS};

/// Writes queued batches in order, merging what is waiting (of the same member), retrying
/// failures — except a fenced batch: its member has lapsed and what it says must never be
/// written, so it is dropped (its callers see their change not committed).
pub(super) async fn commit_loop(inner: Arc<Inner>, mut receiver: mpsc::UnboundedReceiver<Pending>) {
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => tokio::select! {
                pending = receiver.recv() => match pending { Some(p) => p, None => return },
                _ = inner.stop.cancelled() => return,
            },
        };
        let mut batch = first.batch;
        let mut acks: Vec<oneshot::Sender<()>> = first.done.into_iter().collect();
        while batch.transitions.len() < MAX_BATCH_TRANSITIONS {
            let Ok(next) = receiver.try_recv() else { break };
            if next.batch.member != batch.member {
                carried = Some(next);
                break;
            }
            batch.transitions.extend(next.batch.transitions);
            batch.sessions.upserts.extend(next.batch.sessions.upserts);
            batch.sessions.deletes.extend(next.batch.sessions.deletes);
            batch.sessions.ends.extend(next.batch.sessions.ends);
            acks.extend(next.done);
        }
        let mut backoff = Duration::from_millis(50);
        let committed = loop {
            match inner.store.commit_presence(batch.clone()).await {
                Ok(()) => break true,
                Err(crate::domain::Error::Fenced) => {
                    tracing::warn!(
                        transitions = batch.transitions.len(),
                        "presence batch of a lapsed cluster membership dropped"
                    );
                    break false;
                }
                Err(e) if inner.stop.is_cancelled() => {
                    tracing::error!(error = %e, "presence batch not committed before shutdown");
                    break true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "presence batch failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        if !committed {
            continue;
        }
        inner.stats.commits.fetch_add(1, Ordering::Relaxed);
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

/// Sleeps until the next deadline (rounded up to [`SWEEP_STEP_MS`]) or a wake-up, then sweeps.
pub(super) async fn sweep_loop(inner: Arc<Inner>) {
    let presence = Presence {
        inner: inner.clone(),
    };
    loop {
        let next = presence.lock().next_deadline();
        let far = inner.clock.now().mono + 3_600_000;
        let target = next.map_or(far, |d| d.div_ceil(SWEEP_STEP_MS) * SWEEP_STEP_MS);
        tokio::select! {
            _ = tokio::time::sleep_until(inner.clock.instant(target)) => {}
            _ = inner.wake.notified() => continue,
            _ = inner.stop.cancelled() => return,
        }
        drop(presence.sweep_now());
    }
}

/// Persists pinged sessions every `flush_interval`.
pub(super) async fn flush_loop(inner: Arc<Inner>) {
    let presence = Presence {
        inner: inner.clone(),
    };
    let mut ticker = tokio::time::interval(inner.options.flush_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = inner.stop.cancelled() => return,
        }
        drop(presence.flush_now());
    }
}
