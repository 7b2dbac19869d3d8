//! Drives the [`Engine`] in real (tokio) time: a sweeper task that wakes at the next expiry or
//! grace deadline, a committer task that writes transitions and session changes through the
//! [`PresenceStore`] in batches, and a flusher that persists pinged sessions periodically.
//!
//! Invariants:
//! - Every engine change is queued for the committer while the engine lock is held, so the
//!   committer sees changes in exactly the engine's order (an upsert of a session can never be
//!   committed after the delete of that session).
//! - The committer retries a failed batch until it commits (or the runtime shuts down), so a
//!   transition is never dropped and never reordered.
//! - A ping takes the engine lock, updates memory and returns: it never reaches storage. The
//!   flusher writes the new expiry later, in a batch.
//! - Deadlines use `tokio::time`, so tests can pause and advance time.
//! - In cluster mode every batch carries the member its engine state belongs to, stamped
//!   under the engine lock; storage refuses a batch whose member has lapsed, and the runtime
//!   then drops it (see `cluster` for the membership's own invariants).
//!
//! May depend on: tokio, tokio-util, rand, domain, presence::engine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod cluster;
mod loops;
mod sessions;

pub use cluster::ClusterOptions;
pub use sessions::HeldSession;

use cluster::Membership;
use loops::{commit_loop, flush_loop, sweep_loop};

use super::engine::{Engine, Now, SessionView};
use crate::domain::presence::{
    PresenceBatch, PresenceDefaults, ServicePresence, SessionFlush, Transition,
};
use crate::domain::service::Service;
use crate::domain::store::PresenceStore;
use crate::domain::time::now_ms;

/// The sweeper rounds its wake-ups up to this step, batching nearby deadlines.
const SWEEP_STEP_MS: u64 = 250;
/// Most transitions merged into one storage write.
const MAX_BATCH_TRANSITIONS: usize = 4096;

/// How long a shutdown waits for the final session flush to commit.
const FINAL_FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// Counters for tests, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct PresenceStats {
    pub pings: AtomicU64,
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    /// Transitions handed to storage (before de-duplication there).
    pub transitions: AtomicU64,
    /// Batches committed.
    pub commits: AtomicU64,
}

/// Runtime settings.
#[derive(Debug, Clone, Copy)]
pub struct PresenceOptions {
    pub defaults: PresenceDefaults,
    pub flush_interval: Duration,
    /// Live sessions one identity may hold in a service; one more open is refused.
    pub max_sessions_per_identity: u32,
}

/// Monotonic and wall time from one origin.
///
/// The monotonic scale starts at [`MONO_BASE`], not at zero, so that instants before the
/// start (the last ping of a session restored after a restart) are representable: with a
/// scale starting at zero they would saturate to the start time and rewrite history.
struct Clock {
    origin: Instant,
    wall_origin: i64,
}

/// Where the monotonic scale starts: 30 days of milliseconds, longer than any session TTL
/// (sessions restored after a restart pinged at most one TTL before it).
const MONO_BASE: u64 = 30 * 24 * 3_600_000;

impl Clock {
    fn now(&self) -> Now {
        let elapsed = self.origin.elapsed().as_millis() as u64;
        Now {
            mono: MONO_BASE + elapsed,
            wall: self.wall_origin + elapsed as i64,
        }
    }

    fn instant(&self, mono: u64) -> Instant {
        self.origin + Duration::from_millis(mono.saturating_sub(MONO_BASE))
    }
}

struct Pending {
    batch: PresenceBatch,
    done: Option<oneshot::Sender<()>>,
}

struct Inner {
    engine: Mutex<Engine>,
    clock: Clock,
    options: PresenceOptions,
    store: Arc<dyn PresenceStore>,
    commits: mpsc::UnboundedSender<Pending>,
    wake: Notify,
    stop: CancellationToken,
    stats: PresenceStats,
    /// Cluster mode: this node's membership (`None` on a single-node backend).
    cluster: Option<Membership>,
}

/// Resolves once the changes it stands for are committed.
pub struct Committed(Option<oneshot::Receiver<()>>);

impl Committed {
    /// Waits for the commit; false when the runtime stopped first.
    pub async fn wait(self) -> bool {
        match self.0 {
            Some(rx) => rx.await.is_ok(),
            None => true,
        }
    }
}

/// Handle to the presence runtime; cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

/// The runtime's tasks, joined on shutdown.
pub struct PresenceTasks {
    tasks: Vec<JoinHandle<()>>,
    /// The cluster lease's task, stopped first (before the member leaves).
    lease: Option<(JoinHandle<()>, CancellationToken)>,
}

impl Presence {
    /// Configures every stored service, resumes stored sessions (committing the offline
    /// transitions of sessions that expired while reachd was down), and starts the tasks. In
    /// cluster mode, joins the cluster instead of resuming: other members' sessions are
    /// theirs, and a lost member's come here by takeover.
    pub async fn start(
        store: Arc<dyn PresenceStore>,
        options: PresenceOptions,
        cluster: Option<ClusterOptions>,
    ) -> crate::domain::Result<(Presence, PresenceTasks)> {
        let (commits, receiver) = mpsc::unbounded_channel();
        let clock = Clock {
            origin: Instant::now(),
            wall_origin: now_ms(),
        };
        let inner = Arc::new(Inner {
            engine: Mutex::new(Engine::new()),
            clock,
            options,
            store: store.clone(),
            commits,
            wake: Notify::new(),
            stop: CancellationToken::new(),
            stats: PresenceStats::default(),
            cluster: cluster.as_ref().map(Membership::new),
        });
        let presence = Presence { inner };
        let services = store.presence_services()?;
        let snapshot = if cluster.is_some() {
            Default::default()
        } else {
            store.load_presence()?
        };
        let batch = {
            let mut engine = presence.lock();
            let now = presence.inner.clock.now();
            for service in &services {
                engine.configure(
                    now,
                    &service.sid,
                    ServicePresence::of(service, &options.defaults),
                );
            }
            let (transitions, expired) = engine.restore(now, snapshot);
            PresenceBatch {
                transitions,
                sessions: SessionFlush {
                    deletes: expired,
                    ..Default::default()
                },
                member: None,
            }
        };
        if !batch.is_empty() {
            store.commit_presence(batch).await?;
        }
        let mut tasks = vec![
            tokio::spawn(commit_loop(presence.inner.clone(), receiver)),
            tokio::spawn(sweep_loop(presence.inner.clone())),
        ];
        // Pings never reach a cluster's database: a session's expiry lives here only.
        if cluster.is_none() {
            tasks.push(tokio::spawn(flush_loop(presence.inner.clone())));
        }
        let lease = match cluster {
            Some(options) => Some(presence.join_cluster(options).await?),
            None => None,
        };
        Ok((presence, PresenceTasks { tasks, lease }))
    }

    fn lock(&self) -> MutexGuard<'_, Engine> {
        // A panic while holding the lock cannot leave the engine half-updated in a way that
        // matters more than stopping presence altogether; keep serving.
        self.inner
            .engine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn stats(&self) -> &PresenceStats {
        &self.inner.stats
    }

    pub fn defaults(&self) -> &PresenceDefaults {
        &self.inner.options.defaults
    }

    /// Queues a batch while the engine lock is held (see the module invariants).
    fn queue(
        &self,
        _engine: &MutexGuard<'_, Engine>,
        mut batch: PresenceBatch,
        want_ack: bool,
    ) -> Committed {
        if batch.is_empty() {
            return Committed(None);
        }
        batch.member = self.member();
        self.inner
            .stats
            .transitions
            .fetch_add(batch.transitions.len() as u64, Ordering::Relaxed);
        let (done, rx) = if want_ack {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        if self.inner.commits.send(Pending { batch, done }).is_err() {
            return Committed(None);
        }
        Committed(rx)
    }

    /// Queues `transitions` with the deletes of every session that has ended since the last
    /// batch (under the engine lock, like every queueing).
    fn queue_with_ended(
        &self,
        engine: &mut MutexGuard<'_, Engine>,
        transitions: Vec<Transition>,
        want_ack: bool,
    ) -> Committed {
        let batch = PresenceBatch {
            transitions,
            sessions: engine.take_ended(),
            member: None,
        };
        self.queue(engine, batch, want_ack)
    }

    /// Applies a service's (possibly changed) settings; enabling reachability reports live
    /// users online. Resolves after those transitions are committed.
    pub fn configure(&self, service: &Service) -> Committed {
        let settings = ServicePresence::of(service, &self.inner.options.defaults);
        let mut engine = self.lock();
        let transitions = engine.configure(self.inner.clock.now(), &service.sid, settings);
        self.queue(
            &engine,
            PresenceBatch {
                transitions,
                ..Default::default()
            },
            true,
        )
    }

    /// Ends a deleted user's sessions (nothing is reported: the user is gone).
    pub fn forget_user(&self, service_sid: &str, identity: &str) {
        let mut engine = self.lock();
        engine.forget_user(service_sid, identity);
        self.queue_with_ended(&mut engine, Vec::new(), false);
    }

    /// Forgets a deleted service's sessions.
    pub fn forget_service(&self, service_sid: &str) {
        let mut engine = self.lock();
        engine.forget_service(service_sid);
        self.queue_with_ended(&mut engine, Vec::new(), false);
    }

    pub fn sessions(&self, service_sid: &str, identity: &str) -> Vec<SessionView> {
        let now = self.inner.clock.now();
        self.lock().sessions_of(now, service_sid, identity)
    }

    /// Whether session `id` is live (one lookup: a socket's keepalive asks this for each
    /// socket every ping interval).
    pub fn is_live(&self, id: u64) -> bool {
        self.lock().holder(id).is_some()
    }

    pub fn live_count(&self, service_sid: &str, identity: &str) -> u32 {
        self.lock().live_count(service_sid, identity)
    }

    /// Live sessions per service, counted in one pass under the lock.
    pub fn session_counts(&self) -> std::collections::HashMap<Arc<str>, usize> {
        self.lock().session_counts()
    }

    pub fn service_sessions(&self, service_sid: &str) -> usize {
        self.lock().service_session_count(service_sid)
    }

    pub fn session_total(&self) -> usize {
        self.lock().session_count()
    }

    /// Runs one sweep now (tests call this after advancing paused time).
    pub fn sweep_now(&self) -> Committed {
        let mut engine = self.lock();
        let now = self.inner.clock.now();
        let transitions = engine.sweep(now);
        self.queue_with_ended(&mut engine, transitions, true)
    }

    /// Persists pinged sessions now (the flusher does this every `flush_interval`).
    pub fn flush_now(&self) -> Committed {
        let mut engine = self.lock();
        let sessions = engine.pending_flush(self.inner.clock.now());
        self.queue(
            &engine,
            PresenceBatch {
                sessions,
                ..Default::default()
            },
            true,
        )
    }

    /// Stops the tasks after writing every live session's expiry; no session is closed and no
    /// user is reported offline by a shutdown.
    pub async fn shutdown(&self, mut tasks: PresenceTasks) {
        if let Some((task, stop)) = tasks.lease.take() {
            stop.cancel();
            let _ = task.await;
            self.leave_cluster().await;
            self.inner.stop.cancel();
            for task in tasks.tasks {
                let _ = task.await;
            }
            return;
        }
        let final_flush = {
            let mut engine = self.lock();
            let now = self.inner.clock.now();
            let sessions = SessionFlush {
                upserts: engine.all_sessions(now),
                ..engine.take_ended()
            };
            self.queue(
                &engine,
                PresenceBatch {
                    sessions,
                    ..Default::default()
                },
                true,
            )
        };
        // Storage that refuses writes (a lock held elsewhere, a full disk) must not hold the
        // stop for ever: after the deadline the sessions are given up (clients re-open them).
        if tokio::time::timeout(FINAL_FLUSH_DEADLINE, final_flush.wait())
            .await
            .is_err()
        {
            tracing::error!(
                deadline_secs = FINAL_FLUSH_DEADLINE.as_secs(),
                "live sessions could not be written before shutdown; stopping without them"
            );
        }
        self.inner.stop.cancel();
        for task in tasks.tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Error;
    use crate::domain::presence::{Cause, PresenceSnapshot, Transition, Transport};
    use crate::domain::store::WriteFuture;

    /// Records what the runtime commits.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<PresenceBatch>>,
        service: Mutex<Option<Service>>,
    }

    impl Recorder {
        fn transitions(&self) -> Vec<(String, bool, Cause)> {
            let batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
            batches
                .iter()
                .flat_map(|b| {
                    b.transitions
                        .iter()
                        .map(|t: &Transition| (t.identity.to_string(), t.online, t.cause))
                })
                .collect()
        }
        fn commits(&self) -> usize {
            self.batches.lock().unwrap_or_else(|p| p.into_inner()).len()
        }
    }

    impl PresenceStore for Recorder {
        fn commit_presence(&self, batch: PresenceBatch) -> WriteFuture<()> {
            self.batches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(batch);
            Box::pin(async { Ok(()) })
        }
        fn load_presence(&self) -> crate::domain::Result<PresenceSnapshot> {
            Ok(PresenceSnapshot::default())
        }
        fn presence_services(&self) -> crate::domain::Result<Vec<Service>> {
            Ok(self
                .service
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect())
        }
    }

    fn service() -> Service {
        let mut s = Service::new("svc", 0).expect("valid");
        s.reachability_enabled = true;
        s
    }

    async fn start(recorder: Arc<Recorder>) -> (Presence, PresenceTasks) {
        let options = PresenceOptions {
            defaults: PresenceDefaults {
                ping_interval_ms: 1_000,
                session_ttl_ms: 5_000,
                offline_grace_ms: 2_000,
            },
            flush_interval: Duration::from_secs(3_600),
            max_sessions_per_identity: 100,
        };
        Presence::start(recorder, options, None)
            .await
            .expect("start")
    }

    #[tokio::test(start_paused = true)]
    async fn an_identity_holds_at_most_the_configured_sessions_but_may_resume_one() {
        let recorder = Arc::new(Recorder::default());
        let (presence, tasks) = start(recorder.clone()).await;
        let svc = service();
        let mut ids = Vec::new();
        for _ in 0..100 {
            let (HeldSession { id, .. }, _) = presence
                .open(&svc, "alice", Transport::Http, None, None)
                .expect("under the cap");
            ids.push(id);
        }
        let refused = presence.open(&svc, "alice", Transport::Http, None, None);
        assert!(matches!(refused, Err(Error::LimitExceeded(_))));
        let (HeldSession { id: resumed, .. }, _) = presence
            .open(&svc, "alice", Transport::Http, None, Some(ids[0]))
            .expect("resuming a live session is not a new one");
        assert_eq!(resumed, ids[0]);
        presence
            .open(&svc, "bob", Transport::Http, None, None)
            .expect("other identities are unaffected");
        presence.close(&svc.sid, "alice", ids[1]).expect("close");
        presence
            .open(&svc, "alice", Transport::Http, None, None)
            .expect("room again after a close");
        presence.shutdown(tasks).await;
    }

    #[tokio::test(start_paused = true)]
    async fn silence_goes_offline_within_ttl_plus_grace_plus_one_second() {
        let recorder = Arc::new(Recorder::default());
        let (presence, tasks) = start(recorder.clone()).await;
        let svc = service();
        let (HeldSession { id, .. }, committed) = presence
            .open(&svc, "alice", Transport::Http, None, None)
            .expect("open");
        assert!(committed.wait().await);
        assert_eq!(
            recorder.transitions(),
            vec![("alice".into(), true, Cause::SessionOpened)]
        );
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            presence.ping(&svc.sid, "alice", id).expect("ping");
        }
        assert_eq!(recorder.transitions().len(), 1, "pings produce nothing");
        // Last ping at t=10 s: TTL 5 s + grace 2 s → offline by t=18 s.
        tokio::time::sleep(Duration::from_millis(6_900)).await;
        assert_eq!(recorder.transitions().len(), 1, "still inside TTL + grace");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        tokio::task::yield_now().await;
        assert_eq!(
            recorder.transitions()[1],
            ("alice".into(), false, Cause::SessionTimeout)
        );
        presence.shutdown(tasks).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_inside_the_grace_is_invisible_and_pings_never_commit() {
        let recorder = Arc::new(Recorder::default());
        let (presence, tasks) = start(recorder.clone()).await;
        let svc = service();
        let (HeldSession { id: first, .. }, c) = presence
            .open(&svc, "alice", Transport::WebSocket, None, None)
            .expect("open");
        c.wait().await;
        presence
            .close(&svc.sid, "alice", first)
            .expect("close")
            .wait()
            .await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let (HeldSession { id: second, .. }, c) = presence
            .open(&svc, "alice", Transport::WebSocket, None, None)
            .expect("open");
        c.wait().await;
        let commits = recorder.commits();
        for _ in 0..1_000 {
            presence.ping(&svc.sid, "alice", second).expect("ping");
        }
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        presence.ping(&svc.sid, "alice", second).expect("ping");
        assert_eq!(
            recorder.commits(),
            commits,
            "1,000 pings and a passed grace wrote nothing"
        );
        assert_eq!(
            recorder.transitions(),
            vec![("alice".into(), true, Cause::SessionOpened)]
        );
        assert_eq!(presence.stats().pings.load(Ordering::Relaxed), 1_001);
        presence.shutdown(tasks).await;
        let last = recorder
            .batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .cloned()
            .expect("final flush");
        assert_eq!(
            last.sessions.upserts.len(),
            1,
            "shutdown writes live sessions"
        );
        assert!(
            last.transitions.is_empty(),
            "shutdown reports nobody offline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn batches_merged_by_the_committer_keep_every_session_end() {
        let recorder = Arc::new(Recorder::default());
        let (presence, tasks) = start(recorder.clone()).await;
        let svc = service();
        let mut held = Vec::new();
        for identity in ["alice", "bob"] {
            let (session, committed) = presence
                .open(&svc, identity, Transport::WebSocket, None, None)
                .expect("open");
            assert!(committed.wait().await);
            held.push((identity, session.id));
        }
        // Both closes are queued before the committer runs: it merges them into one batch.
        let closes: Vec<Committed> = held
            .iter()
            .map(|(identity, id)| presence.close(&svc.sid, identity, *id).expect("close"))
            .collect();
        for committed in closes {
            assert!(committed.wait().await);
        }
        let ends: Vec<u64> = recorder
            .batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|b| b.sessions.ends.iter().map(|e| e.id))
            .collect();
        assert_eq!(
            ends,
            held.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
            "each close inside the grace keeps its row, marked ended"
        );
        presence.shutdown(tasks).await;
    }

    #[tokio::test(start_paused = true)]
    async fn enabling_reports_live_users_and_waits_for_the_commit() {
        let recorder = Arc::new(Recorder::default());
        let (presence, tasks) = start(recorder.clone()).await;
        let mut svc = service();
        svc.reachability_enabled = false;
        presence
            .open(&svc, "alice", Transport::Http, None, None)
            .expect("open")
            .1
            .wait()
            .await;
        svc.reachability_enabled = true;
        assert!(presence.configure(&svc).wait().await);
        let t = recorder.transitions();
        assert_eq!(
            t.last(),
            Some(&("alice".into(), true, Cause::ReachabilityEnabled))
        );
        presence.shutdown(tasks).await;
    }
}
