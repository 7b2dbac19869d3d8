//! The webhook dispatcher: claims due deliveries from the outbox under leases held in storage,
//! sends them with a concurrency cap, records every attempt, and schedules retries.
//!
//! Invariants:
//! - Each dispatcher start has its own owner id. A delivery is attempted only after this
//!   dispatcher's claim has committed a lease on it (owner, expiry) in storage, and storage
//!   leases only deliveries whose lease is absent or expired. So two dispatchers — in this
//!   process or in another one on the same database — never attempt one delivery at the same
//!   time, as long as an attempt is sent and recorded within its lease: the lease
//!   (`DispatcherOptions::lease`, by default [`lease_for`]) is the longest send timeout plus a
//!   margin for recording. An attempt that outlives its lease may overlap with another
//!   dispatcher's (at least once, same idempotency token), and its outcome is then dropped.
//! - An outcome is recorded only while this dispatcher still owns the delivery's lease;
//!   recording clears the lease. A late outcome after a takeover changes nothing (logged at
//!   debug, counted in `DispatcherStats::leases_lost`).
//! - No in-memory set of deliveries in flight is needed: a leased delivery is not claimable,
//!   by this dispatcher either, until its outcome is recorded or its lease expires.
//! - On a graceful stop running attempts are abandoned, outcomes already in hand are recorded
//!   once, then every lease this dispatcher still holds is released: those deliveries are due
//!   again at once. After a crash the leases expire and any dispatcher (the restarted one
//!   included) takes the deliveries over.
//! - Storage hands out only queue heads, so per (target, user) order holds even with many
//!   attempts in flight, here and in other dispatchers.
//! - Claiming is a write (one commit through the writer): the loop claims only when a cheap
//!   indexed read (`next_delivery_due`, which counts leased heads at their expiry) says a head
//!   is due, when the last claim got all it asked for, or when storage has woken it since its
//!   last claim with nothing in hand (deliveries were queued or recorded: a head is likely
//!   due, and the read would only add its round trip to a delivery's latency); and it claims
//!   many at once — room for the free slots and three times as many again ([`LOOKAHEAD`]),
//!   and while attempts run only once a quarter of the slots' worth of room is free. One
//!   claim at a time is in flight, and the loop keeps starting attempts while it is: claimed
//!   deliveries wait in a ready queue (under their lease) until a slot frees, so a slot never
//!   waits for a claim's round trip through storage.
//! - A claimed delivery is started only if it has waited in the ready queue at most half of
//!   what its lease allows beyond the longest send; otherwise it is dropped unattempted and
//!   claimed again when its lease expires. So every attempt still fits in its lease.
//! - A slow or hanging target holds one slot for at most its timeout; the others keep flowing.
//! - The loop sleeps until the next due time, a wake-up from the writer (new deliveries), a
//!   hint from another node or a finished attempt; it never spins.
//!
//! May depend on: tokio, tokio-util, rand, domain, webhooks::{render, send}.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::network::NetworkPolicy;
use super::render;
use super::send::{Sender, TWILIO_TIMEOUT};
use crate::domain::ids;
use crate::domain::secret::Secret;
use crate::domain::store::{OutboxStore, WriteFuture};
use crate::domain::time::now_ms;
use crate::domain::webhook::{
    Attempt, AttemptOutcome, ClaimedDelivery, Format, Lease, Next, RetryPolicy, settle,
};

/// How often finished deliveries and old events are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// The longest the loop sleeps without checking for due deliveries.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// How long the recorder waits for more outcomes while other attempts are running.
const RECORD_LINGER: Duration = Duration::from_millis(2);
/// Most outcomes recorded in one write.
const MAX_RECORD_BATCH: usize = 512;
/// Deliveries claimed ahead of free slots, in multiples of the concurrency: they wait in the
/// ready queue, so a freed slot starts the next attempt at once rather than after a claim's
/// trip through storage (the pipeline was bound by that latency, not by the writer's CPU).
/// One slot's worth ahead still left slots waiting behind a claim queued after a batch of
/// outcomes; three made 30,000 due deliveries 10-30 % faster on SQLite and PostgreSQL
/// (docs/benchmarks.md); six, no faster than three.
const LOOKAHEAD: usize = 3;
/// Most deliveries [`Dispatcher::run_once`] claims.
const RUN_ONCE_LIMIT: usize = 1_000;
/// What a lease allows beyond the longest send: the outcome's trip through the recorder and
/// the writer, and clock differences between nodes.
pub const LEASE_MARGIN: Duration = Duration::from_secs(15);
/// The longest a graceful stop waits for its leases to be released (they expire anyway).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// The lease a dispatcher takes on the deliveries it claims: the longest send (the native
/// timeout or Twilio's) plus [`LEASE_MARGIN`].
pub fn lease_for(native_timeout: Duration) -> Duration {
    native_timeout.max(TWILIO_TIMEOUT) + LEASE_MARGIN
}

#[derive(Debug, Clone)]
pub struct DispatcherOptions {
    pub concurrency: usize,
    pub native_timeout: Duration,
    pub network: NetworkPolicy,
    pub policy: RetryPolicy,
    pub account_sid: String,
    pub auth_token: Secret,
    pub retention: Duration,
    /// How long a claim holds a delivery (see [`lease_for`]); must exceed the longest send.
    pub lease: Duration,
    /// A lease owner id that stays the same across restarts of this node, when the caller can
    /// guarantee that no other live dispatcher uses it (the SQLite server's exclusive lock
    /// does). Leases a crashed predecessor held under it are released when the dispatcher
    /// starts, so its in-flight deliveries are retried at once instead of after their lease.
    /// None: a fresh random owner per start (a crashed predecessor's leases then expire).
    pub stable_owner: Option<String>,
}

/// Counters for tests, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct DispatcherStats {
    pub attempts: AtomicU64,
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    /// Outcomes not recorded because another dispatcher had taken the delivery over.
    pub leases_lost: AtomicU64,
}

struct Inner {
    store: Arc<dyn OutboxStore>,
    /// This dispatcher start's lease owner id.
    owner: String,
    sender: Sender,
    options: DispatcherOptions,
    wake: Arc<Notify>,
    /// Notified when deliveries may have become due without a commit of this node saying so
    /// (another node's notice, possibly this node's own commit echoed back): the loop reads
    /// the due time before claiming, as after a timer.
    hint: Arc<Notify>,
    /// Notified when an attempt ends and frees a slot (before its outcome is recorded).
    slot_freed: Notify,
    stop: CancellationToken,
    stats: DispatcherStats,
    /// Deliveries claimed and not yet recorded (only a hint for the recorder's batching).
    unrecorded: AtomicUsize,
    /// Background loops that have ended (returned or panicked); `/readyz` reports the
    /// dispatcher dead when any has ended before a stop was asked for.
    ended_loops: Arc<AtomicU64>,
}

/// Counts its loop as ended when dropped: on return and when a panic unwinds the task.
struct EndedOnDrop(Arc<AtomicU64>);

impl Drop for EndedOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Spawns a background loop whose end (normal or panic) is counted.
fn spawn_watched(
    ended: &Arc<AtomicU64>,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let guard = EndedOnDrop(ended.clone());
    tokio::spawn(async move {
        let _guard = guard;
        task.await
    })
}

impl Inner {
    /// A lease for a claim made now.
    fn lease(&self) -> Lease {
        let millis = i64::try_from(self.options.lease.as_millis()).unwrap_or(i64::MAX);
        Lease {
            owner: self.owner.clone(),
            until: now_ms().saturating_add(millis),
        }
    }

    /// Records outcomes under this dispatcher's leases; counts and logs those it lost.
    async fn record(&self, outcomes: Vec<AttemptOutcome>) -> crate::domain::Result<()> {
        let lost = self.store.record_attempts(&self.owner, outcomes).await?;
        for id in &lost {
            tracing::debug!(
                delivery = id,
                owner = %self.owner,
                "webhook outcome not recorded: the delivery's lease was taken over"
            );
        }
        self.stats
            .leases_lost
            .fetch_add(lost.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

pub struct DispatcherTasks {
    tasks: Vec<JoinHandle<()>>,
}

impl Dispatcher {
    /// A dispatcher woken by `wake` (notified by the writer when deliveries commit). With
    /// `background` false no task runs: tests drive it with [`Dispatcher::run_once`].
    pub fn start(
        store: Arc<dyn OutboxStore>,
        options: DispatcherOptions,
        wake: Arc<Notify>,
        background: bool,
    ) -> anyhow::Result<(Dispatcher, DispatcherTasks)> {
        let sender = Sender::new(options.native_timeout, options.network.clone())?;
        let inner = Arc::new(Inner {
            store,
            owner: options
                .stable_owner
                .clone()
                .unwrap_or_else(|| ids::random_hex(16)),
            sender,
            options,
            wake,
            hint: Arc::default(),
            slot_freed: Notify::new(),
            stop: CancellationToken::new(),
            stats: DispatcherStats::default(),
            unrecorded: AtomicUsize::new(0),
            ended_loops: Arc::default(),
        });
        let dispatcher = Dispatcher { inner };
        let mut tasks = Vec::new();
        if background {
            let (outcomes, receiver) = mpsc::unbounded_channel();
            let ended = &dispatcher.inner.ended_loops;
            tasks.push(spawn_watched(
                ended,
                claim_loop(dispatcher.clone(), outcomes),
            ));
            tasks.push(spawn_watched(
                ended,
                record_loop(dispatcher.inner.clone(), receiver),
            ));
            tasks.push(spawn_watched(ended, purge_loop(dispatcher.inner.clone())));
        }
        Ok((dispatcher, DispatcherTasks { tasks }))
    }

    pub fn stats(&self) -> &DispatcherStats {
        &self.inner.stats
    }

    /// What other nodes' notices of deliveries notify (see `Inner::hint`): unlike `wake`,
    /// which this node's own commits notify, it does not make the loop claim before reading
    /// the due time, so an echo of this node's own commit costs a read, not an empty claim.
    pub fn hint(&self) -> Arc<Notify> {
        self.inner.hint.clone()
    }

    /// The owner id of this dispatcher's leases.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// False once a background loop has ended without a stop being asked for (a bug: it
    /// panicked), so `/readyz` can take the instance out of rotation.
    pub fn is_alive(&self) -> bool {
        self.inner.stop.is_cancelled() || self.inner.ended_loops.load(Ordering::Relaxed) == 0
    }

    /// Sends one claimed delivery and decides what happens next.
    async fn attempt(&self, claimed: ClaimedDelivery) -> AttemptOutcome {
        let o = &self.inner.options;
        let started_at = now_ms();
        let request = render::request(&claimed, &o.account_sid, o.auth_token.expose(), started_at);
        let d = &claimed.delivery;
        let sent = self.inner.sender.send(request, d.format.is_twilio()).await;
        let number = d.attempts + 1;
        let max = if d.format == Format::Native {
            o.policy.native_attempts()
        } else {
            d.max_attempts
        };
        let jitter = rand::rng().random_range(0.8..=1.2);
        let next = o
            .policy
            .decide(d.format, number, max, &sent.result, now_ms(), jitter);
        let stats = &self.inner.stats;
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        let counter = match next {
            Next::Delivered => &stats.delivered,
            Next::RetryAt(_) => &stats.retried,
            Next::Failed | Next::DisableEndpoint => &stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        record_attempt_metrics(next, d.created_at);
        let settlement = settle(&d.target, next, now_ms());
        let attempt = Attempt {
            attempt: number,
            started_at,
            status_code: sent.result.status.map(i64::from),
            latency_ms: sent.latency_ms,
            response_body: sent.response,
            error: sent.error,
        };
        AttemptOutcome {
            delivery_id: d.id,
            attempt,
            settlement,
        }
    }

    /// Claims every due queue head, sends them, records the outcomes; returns how many were
    /// attempted. Tests call this (with `background` off) instead of sleeping.
    pub async fn run_once(&self) -> crate::domain::Result<usize> {
        let claimed = self
            .inner
            .store
            .claim_deliveries(now_ms(), RUN_ONCE_LIMIT, self.inner.lease())
            .await?;
        let n = claimed.len();
        let outcomes =
            futures_util::future::join_all(claimed.into_iter().map(|c| self.attempt(c))).await;
        if !outcomes.is_empty() {
            self.inner.record(outcomes).await?;
        }
        Ok(n)
    }

    /// Runs [`Dispatcher::run_once`] until nothing is due (retries scheduled later stay put).
    pub async fn drain(&self) -> crate::domain::Result<usize> {
        let mut total = 0;
        loop {
            let n = self.run_once().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Stops the tasks (attempts in flight are abandoned; outcomes already in hand are
    /// recorded), then releases this dispatcher's remaining leases: those deliveries are still
    /// pending and due at once, for a restart or another dispatcher (with the same idempotency
    /// token). Storage must still accept writes: the composition root stops the dispatcher
    /// before the writer.
    pub async fn shutdown(&self, tasks: DispatcherTasks) {
        self.inner.stop.cancel();
        for task in tasks.tasks {
            let _ = task.await;
        }
        let release = self.inner.store.release_leases(&self.inner.owner);
        match tokio::time::timeout(RELEASE_TIMEOUT, release).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(deliveries = n, "released webhook delivery leases"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "releasing webhook delivery leases failed; they will expire")
            }
            Err(_) => {
                tracing::warn!("releasing webhook delivery leases timed out; they will expire")
            }
        }
    }
}

/// A claimed delivery waiting in the ready queue for a free slot.
struct Ready {
    delivery: ClaimedDelivery,
    claimed_at: Instant,
}

/// What woke the claim loop.
enum Woke {
    Claimed(crate::domain::Result<Vec<ClaimedDelivery>>),
    /// Storage queued or recorded deliveries.
    Storage,
    Other,
    Stop,
}

/// The claim in flight, if any; pending forever when there is none.
async fn claim_in_flight(
    claiming: &mut Option<WriteFuture<Vec<ClaimedDelivery>>>,
) -> crate::domain::Result<Vec<ClaimedDelivery>> {
    match claiming {
        Some(claim) => claim.await,
        None => std::future::pending().await,
    }
}

async fn claim_loop(dispatcher: Dispatcher, outcomes: mpsc::UnboundedSender<AttemptOutcome>) {
    let inner = dispatcher.inner.clone();
    let concurrency = inner.options.concurrency.max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    if inner.options.stable_owner.is_some() {
        // Whatever this owner leased before a crash is not being attempted by anyone now.
        match inner.store.release_leases(&inner.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "released leases left by a crash; retrying"),
            Err(e) => tracing::warn!(error = %e, "could not release leases left by a crash"),
        }
    }
    // How long a claimed delivery may wait for a slot: half of what its lease allows beyond
    // the longest send, so that it is still sent and recorded within the lease.
    let longest_send = inner.options.native_timeout.max(TWILIO_TIMEOUT);
    let max_wait = inner.options.lease.saturating_sub(longest_send) / 2;
    let mut ready: VecDeque<Ready> = VecDeque::new();
    let mut claiming: Option<WriteFuture<Vec<ClaimedDelivery>>> = None;
    // What the claim in flight asked for, and whether the last one got all of it.
    let (mut asked, mut more_due) = (0, false);
    // Whether storage has woken the loop since the last claim started.
    let mut woken = false;
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        // Fill every free slot from the ready queue.
        while !ready.is_empty() {
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break;
            };
            let Some(next) = ready.pop_front() else {
                break;
            };
            if next.claimed_at.elapsed() > max_wait {
                // Its lease may not cover a send any more: left to expire, then claimed again.
                inner.unrecorded.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(
                    delivery = next.delivery.delivery.id,
                    "claimed delivery waited too long for a slot"
                );
                continue;
            }
            spawn_attempt(&dispatcher, next.delivery, permit, &outcomes);
        }
        let running = concurrency - slots.available_permits();
        // Room for the slots and LOOKAHEAD times as many waiting in the ready queue. Claimed
        // in batches (a quarter of the slots) while attempts run or wait; when nothing does,
        // whatever is due.
        let room = (concurrency * (1 + LOOKAHEAD)).saturating_sub(running + ready.len());
        let nothing_in_hand = running == 0 && ready.is_empty();
        let worth_claiming =
            claiming.is_none() && room > 0 && (room >= (concurrency / 4).max(1) || nothing_in_hand);
        // Claiming is a write: only when a cheaper indexed read says a queue head is due —
        // or when the last claim filled all the room it asked for, or storage has woken an
        // idle loop since (more are likely due, and the read would only add its round trip to
        // a delivery's latency: a claim that finds none leaves `more_due` false, and the next
        // turn reads). Under load the wake-ups come with every recorded batch; then the read
        // decides, as it did before.
        let due = if worth_claiming && (more_due || (woken && nothing_in_hand)) {
            Some(now_ms())
        } else if worth_claiming {
            inner.store.next_delivery_due().unwrap_or(None)
        } else {
            None
        };
        if worth_claiming && due.is_some_and(|d| d <= now_ms()) {
            // One commit leases the whole batch; nothing else claims it until the outcomes are
            // recorded or the leases expire. The loop goes on starting attempts meanwhile.
            claiming = Some(inner.store.claim_deliveries(now_ms(), room, inner.lease()));
            asked = room;
            woken = false;
        }
        let idle = match due {
            Some(due) if due > now_ms() => {
                Duration::from_millis((due - now_ms()).min(MAX_IDLE.as_millis() as i64) as u64)
            }
            // Due heads that were not claimed wait for room (a finished attempt wakes the
            // loop) or were just claimed by another dispatcher.
            _ => MAX_IDLE,
        };
        let woke = tokio::select! {
            taken = claim_in_flight(&mut claiming) => Woke::Claimed(taken),
            _ = inner.wake.notified() => Woke::Storage,
            _ = inner.hint.notified() => Woke::Other,
            _ = inner.slot_freed.notified() => Woke::Other,
            _ = tokio::time::sleep(idle.max(Duration::from_millis(5))) => Woke::Other,
            _ = inner.stop.cancelled() => Woke::Stop,
        };
        match woke {
            Woke::Claimed(taken) => {
                claiming = None;
                match taken {
                    Ok(batch) => {
                        more_due = batch.len() >= asked;
                        inner.unrecorded.fetch_add(batch.len(), Ordering::Relaxed);
                        let claimed_at = Instant::now();
                        ready.extend(batch.into_iter().map(|delivery| Ready {
                            delivery,
                            claimed_at,
                        }));
                    }
                    Err(e) => {
                        more_due = false;
                        tracing::warn!(error = %e, "claiming due webhook deliveries failed");
                    }
                }
            }
            Woke::Storage => woken = true,
            Woke::Other => {}
            Woke::Stop => return,
        }
    }
}

/// Attempts one claimed delivery in its own task, holding a slot until the attempt ends.
fn spawn_attempt(
    dispatcher: &Dispatcher,
    delivery: ClaimedDelivery,
    permit: OwnedSemaphorePermit,
    outcomes: &mpsc::UnboundedSender<AttemptOutcome>,
) {
    let (dispatcher, outcomes) = (dispatcher.clone(), outcomes.clone());
    tokio::spawn(async move {
        let outcome = tokio::select! {
            outcome = dispatcher.attempt(delivery) => outcome,
            // A stop abandons the attempt; `shutdown` releases its lease.
            _ = dispatcher.inner.stop.cancelled() => return,
        };
        let _ = outcomes.send(outcome);
        drop(permit);
        // Other queues' heads need not wait for this outcome's record.
        dispatcher.inner.slot_freed.notify_one();
    });
}

/// Counts an attempt by outcome; a delivered one also records its lag since the event was
/// committed (the delivery row is written in the event's transaction).
fn record_attempt_metrics(next: Next, created_at: crate::domain::time::Millis) {
    let outcome = match next {
        Next::Delivered => "delivered",
        Next::RetryAt(_) => "retry",
        Next::Failed => "failed",
        Next::DisableEndpoint => "gone",
    };
    metrics::counter!("reachd_webhook_attempts_total", "outcome" => outcome).increment(1);
    if next == Next::Delivered {
        let lag_ms = now_ms().saturating_sub(created_at).max(0);
        metrics::histogram!("reachd_webhook_delivery_lag_seconds").record(lag_ms as f64 / 1000.0);
    }
}

/// Records outcomes in batches (retrying storage errors) and wakes the claim loop: a finished
/// delivery may have unblocked the next one of its queue. On a stop, records what has already
/// arrived once and ends.
async fn record_loop(inner: Arc<Inner>, mut receiver: mpsc::UnboundedReceiver<AttemptOutcome>) {
    loop {
        let first = tokio::select! {
            o = receiver.recv() => match o { Some(o) => o, None => return },
            _ = inner.stop.cancelled() => {
                let mut rest = Vec::new();
                while let Ok(o) = receiver.try_recv() {
                    rest.push(o);
                }
                if !rest.is_empty()
                    && let Err(e) = inner.record(rest).await
                {
                    tracing::warn!(error = %e, "recording webhook attempts at stop failed");
                }
                return;
            }
        };
        let mut batch = vec![first];
        // While other attempts are still running, wait a moment for them: one commit for
        // many outcomes. With nothing else in flight, record at once.
        let linger_until = tokio::time::Instant::now() + RECORD_LINGER;
        while batch.len() < MAX_RECORD_BATCH {
            if inner.unrecorded.load(Ordering::Relaxed) <= batch.len() {
                while let Ok(more) = receiver.try_recv() {
                    batch.push(more);
                }
                break;
            }
            match tokio::time::timeout_at(linger_until, receiver.recv()).await {
                Ok(Some(more)) => batch.push(more),
                _ => break,
            }
        }
        let recorded = batch.len();
        let mut backoff = Duration::from_millis(50);
        while let Err(e) = inner.record(batch.clone()).await {
            if inner.stop.is_cancelled() {
                return;
            }
            tracing::warn!(error = %e, "recording webhook attempts failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        inner.unrecorded.fetch_sub(recorded, Ordering::Relaxed);
        inner.wake.notify_one();
    }
}

async fn purge_loop(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(PURGE_EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = inner.stop.cancelled() => return,
        }
        let before = now_ms() - inner.options.retention.as_millis() as i64;
        match inner.store.purge_before(before).await {
            Ok(n) if n > 0 => tracing::info!(rows = n, "purged old events and deliveries"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging old events failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::secret::Secret;
    use crate::domain::store::WriteFuture;
    use crate::domain::time::Millis;

    fn options() -> DispatcherOptions {
        DispatcherOptions {
            concurrency: 4,
            native_timeout: Duration::from_secs(1),
            network: NetworkPolicy {
                allow_private: true,
                ..NetworkPolicy::default()
            },
            policy: RetryPolicy::default(),
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            auth_token: Secret::new("token"),
            retention: Duration::from_secs(3600),
            lease: lease_for(Duration::from_secs(1)),
            stable_owner: None,
        }
    }

    #[tokio::test]
    async fn a_loop_that_dies_makes_the_dispatcher_not_alive_but_a_stop_does_not() {
        let wake = Arc::new(Notify::new());
        let (dispatcher, tasks) = Dispatcher::start(
            Arc::new(CallLog::panicking()),
            options(),
            wake.clone(),
            true,
        )
        .expect("start");
        wake.notify_one();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while dispatcher.is_alive() {
            assert!(tokio::time::Instant::now() < deadline, "still alive");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        dispatcher.shutdown(tasks).await;
        assert!(
            dispatcher.is_alive(),
            "a stopped dispatcher is not reported dead"
        );
    }

    /// Storage that hands out `total` native deliveries to `url`, as many as each claim asks
    /// for, and keeps the ids of the outcomes recorded.
    struct HandingOutStore {
        url: String,
        total: i64,
        handed: std::sync::Mutex<i64>,
        recorded: std::sync::Mutex<Vec<i64>>,
    }

    impl HandingOutStore {
        fn delivery(&self, id: i64) -> ClaimedDelivery {
            let now = now_ms();
            ClaimedDelivery {
                delivery: crate::domain::webhook::Delivery {
                    id,
                    event_id: id,
                    service_sid: "IS0123456789abcdef0123456789abcdef".into(),
                    user_sid: format!("US{id:032x}"),
                    target: "endpoint:WH0".into(),
                    format: Format::Native,
                    url: self.url.clone(),
                    method: "POST".into(),
                    max_attempts: 1,
                    attempts: 0,
                    status: crate::domain::webhook::DeliveryStatus::Pending,
                    next_attempt_at: now,
                    idempotency_token: format!("token{id}"),
                    last_status: None,
                    last_error: None,
                    created_at: now,
                    updated_at: now,
                },
                event: crate::domain::event::Event {
                    id,
                    service_sid: "IS0123456789abcdef0123456789abcdef".into(),
                    user_sid: format!("US{id:032x}"),
                    identity: format!("user{id}"),
                    kind: crate::domain::event::EventType::UserAdded,
                    reasons: Vec::new(),
                    cause: None,
                    sequence: 1,
                    is_online: None,
                    is_notifiable: None,
                    session_count: None,
                    last_seen: None,
                    source: crate::domain::event::Source::Api,
                    rest_webhooks: true,
                    user_json: "{}".into(),
                    created_at: now,
                },
                secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            }
        }
    }

    impl OutboxStore for HandingOutStore {
        fn claim_deliveries(
            &self,
            _now: Millis,
            limit: usize,
            _lease: Lease,
        ) -> WriteFuture<Vec<ClaimedDelivery>> {
            let mut handed = self.handed.lock().expect("lock");
            let first = *handed + 1;
            let last = (*handed + limit as i64).min(self.total);
            *handed = last.max(*handed);
            let batch = (first..=last).map(|id| self.delivery(id)).collect();
            Box::pin(async move { Ok(batch) })
        }
        fn record_attempts(
            &self,
            _owner: &str,
            outcomes: Vec<AttemptOutcome>,
        ) -> WriteFuture<Vec<i64>> {
            let mut recorded = self.recorded.lock().expect("lock");
            recorded.extend(outcomes.iter().map(|o| o.delivery_id));
            Box::pin(async { Ok(Vec::new()) })
        }
        fn release_leases(&self, _owner: &str) -> WriteFuture<usize> {
            Box::pin(async { Ok(0) })
        }
        fn next_delivery_due(&self) -> crate::domain::Result<Option<Millis>> {
            let handed = *self.handed.lock().expect("lock");
            Ok((handed < self.total).then(now_ms))
        }
        fn purge_before(&self, _before: Millis) -> WriteFuture<usize> {
            Box::pin(async { Ok(0) })
        }
    }

    #[tokio::test]
    async fn a_claimed_delivery_that_waits_past_its_lease_margin_is_not_attempted() {
        // A target that accepts and never answers: the one slot stays busy for the native
        // timeout (1 s), while the second delivery waits in the ready queue.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let store = Arc::new(HandingOutStore {
            url,
            total: 2,
            handed: std::sync::Mutex::new(0),
            recorded: std::sync::Mutex::new(Vec::new()),
        });
        let mut options = options();
        options.concurrency = 1;
        // 200 ms beyond the longest send: a delivery may wait 100 ms for a slot.
        options.lease = TWILIO_TIMEOUT + Duration::from_millis(200);
        let wake = Arc::new(Notify::new());
        let (dispatcher, tasks) =
            Dispatcher::start(store.clone(), options, wake.clone(), true).expect("start");
        wake.notify_one();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.recorded.lock().expect("lock").is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no outcome recorded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Time for the second one to be attempted (1 s), had it not been dropped.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(*store.handed.lock().expect("lock"), 2, "both were claimed");
        assert_eq!(*store.recorded.lock().expect("lock"), vec![1]);
        assert_eq!(dispatcher.stats().attempts.load(Ordering::Relaxed), 1);
        dispatcher.shutdown(tasks).await;
        held.abort();
    }

    /// Storage whose due-time read always says nothing is due (or panics, as a bug in the
    /// claim path would), and which logs the order of due-time reads and claims (claims find
    /// nothing).
    #[derive(Default)]
    struct CallLog {
        calls: std::sync::Mutex<Vec<&'static str>>,
        due_panics: bool,
    }

    impl CallLog {
        fn panicking() -> Self {
            CallLog {
                due_panics: true,
                ..CallLog::default()
            }
        }
        fn log(&self, call: &'static str) {
            self.calls.lock().expect("lock").push(call);
        }
        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().expect("lock").clone()
        }
    }

    impl OutboxStore for CallLog {
        fn claim_deliveries(
            &self,
            _now: Millis,
            _limit: usize,
            _lease: Lease,
        ) -> WriteFuture<Vec<ClaimedDelivery>> {
            self.log("claim");
            Box::pin(async { Ok(Vec::new()) })
        }
        fn record_attempts(
            &self,
            _owner: &str,
            _outcomes: Vec<AttemptOutcome>,
        ) -> WriteFuture<Vec<i64>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn release_leases(&self, _owner: &str) -> WriteFuture<usize> {
            Box::pin(async { Ok(0) })
        }
        fn next_delivery_due(&self) -> crate::domain::Result<Option<Millis>> {
            assert!(!self.due_panics, "a bug in the claim path");
            self.log("due");
            Ok(None)
        }
        fn purge_before(&self, _before: Millis) -> WriteFuture<usize> {
            Box::pin(async { Ok(0) })
        }
    }

    #[tokio::test]
    async fn a_wake_from_storage_claims_at_once_and_a_hint_reads_the_due_time_first() {
        let store = Arc::new(CallLog::default());
        let wake = Arc::new(Notify::new());
        let (dispatcher, tasks) =
            Dispatcher::start(store.clone(), options(), wake.clone(), true).expect("start");
        // Idle: the loop reads the due time (nothing) and sleeps for up to a second.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.calls().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the loop never read"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(store.calls(), vec!["due"]);
        wake.notify_one();
        while !store.calls().contains(&"claim") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a wake did not claim: {:?}",
                store.calls()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The claim came straight after the wake; the read came back only once it found none.
        assert_eq!(store.calls()[..2], ["due", "claim"]);
        while store.calls().len() < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no read after the claim"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(store.calls(), ["due", "claim", "due"]);
        // Another node's hint reads first: nothing is due, so nothing is claimed.
        dispatcher.hint().notify_one();
        while store.calls().len() < 4 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a hint did not read"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.calls(), ["due", "claim", "due", "due"]);
        dispatcher.shutdown(tasks).await;
    }
}
