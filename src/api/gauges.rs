//! The storage-derived gauges of `/metrics` (users online per service, the webhook backlog),
//! read off the request path: a background task refreshes one reading every
//! `metrics.refresh_interval_ms`, and a scrape only renders the latest reading. However many
//! scrapers there are and however large the tables grow, scraping costs storage nothing.
//!
//! Concurrency: the reading is an `Arc` behind a `RwLock`, replaced whole by the one refresh
//! task and cloned by scrapes. The lock is held only for that swap or clone, never across the
//! storage read, which runs on the blocking pool.
//!
//! May depend on: tokio, tokio-util, tracing, domain.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::store::{MetricsSnapshot, Store};
use crate::domain::time::{Millis, now_ms};

/// One refresh's outcome.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// `None` when storage could not be read (or before the first refresh).
    pub snapshot: Option<MetricsSnapshot>,
    /// When it was read.
    pub read_at: Millis,
}

/// The latest reading, shared by the refresh task and the scrapes.
#[derive(Debug, Default)]
pub struct StoredGauges {
    latest: RwLock<Arc<Reading>>,
    refreshes: AtomicU64,
}

impl StoredGauges {
    /// The latest reading (cheap: an `Arc` clone).
    pub fn latest(&self) -> Arc<Reading> {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many refreshes have run (storage reads made for `/metrics`).
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Reads storage now and publishes the reading. Blocking: call it off the async workers.
    pub fn refresh(&self, store: &dyn Store) {
        let snapshot = match store.metrics_snapshot() {
            Ok(snapshot) => Some(snapshot),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: storage gauges unavailable");
                None
            }
        };
        let reading = Arc::new(Reading {
            snapshot,
            read_at: now_ms(),
        });
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) = reading;
        self.refreshes.fetch_add(1, Ordering::Relaxed);
    }

    /// Refreshes every `every` until `stop` fires (the first refresh is the caller's).
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        every: Duration,
        stop: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let (gauges, store) = (self.clone(), store.clone());
            if let Err(e) =
                tokio::task::spawn_blocking(move || gauges.refresh(store.as_ref())).await
            {
                tracing::error!(error = %e, "metrics refresh panicked");
            }
        }
    }
}
