//! The runtime in cluster mode: this node's membership and its lease, takeovers of lost
//! members, sessions that move between nodes, and what the other nodes' notices mean for
//! presence.
//!
//! Invariants:
//! - The member id and the lease's local deadline change only under the engine lock, so a
//!   batch is stamped with the member whose engine state made it (see [`super`]).
//! - A node serves presence (opens, pings, closes, claims) only before its lease's local
//!   deadline: the start of the last successful renewal plus `lease_ms`, measured on this
//!   node's monotonic clock. The database's lease ends later than that (it was renewed after
//!   the request started), so when another member may take over, this node has already
//!   stopped answering for what it held — also after a pause (SIGSTOP) it did not see.
//! - When the lease lapses (a renewal finds it gone, or the deadline passes without a
//!   renewal), the engine forgets everything and every socket is told to close; the node
//!   joins again as a new member with nothing, so it never brings back what it held.
//! - A takeover runs only while this node's own lease holds (storage checks it in the same
//!   transaction).
//!
//! May depend on: tokio, tokio-util, domain, presence::engine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Committed, Pending, Presence};
use crate::domain::cluster::{ClusterNotice, ClusterStore, MemberId, Renewal, Takeover};
use crate::domain::presence::{Cause, PresenceBatch, SessionFlush, Transition};
use crate::domain::service::Service;
use crate::domain::{Error, Result};

/// How a node takes part in a cluster.
#[derive(Clone)]
pub struct ClusterOptions {
    pub store: Arc<dyn ClusterStore>,
    pub node_id: String,
    pub lease_ms: u64,
}

/// This node's membership, as the runtime keeps it.
pub(super) struct Membership {
    options: ClusterOptions,
    /// The member id; 0 while the node is not a member.
    member: AtomicI64,
    /// The lease's local deadline on the runtime's monotonic scale (0: none).
    serving_until: AtomicU64,
    /// Fires when the membership lapses (the sockets it served close); replaced on rejoin.
    lapsed: Mutex<CancellationToken>,
    /// Wakes the lease task early (a member left).
    kick: tokio::sync::Notify,
}

impl Membership {
    pub(super) fn new(options: &ClusterOptions) -> Self {
        Membership {
            options: options.clone(),
            member: AtomicI64::new(0),
            serving_until: AtomicU64::new(0),
            lapsed: Mutex::new(CancellationToken::new()),
            kick: tokio::sync::Notify::new(),
        }
    }
}

/// Runs a blocking storage call off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Internal(anyhow::anyhow!("cluster task: {e}"))))
}

impl Presence {
    fn membership(&self) -> Option<&Membership> {
        self.inner.cluster.as_ref()
    }

    /// The member this node is (cluster mode, while it is one).
    pub(super) fn member(&self) -> Option<MemberId> {
        self.membership()
            .map(|m| m.member.load(Ordering::Acquire))
            .filter(|m| *m != 0)
    }

    /// The member id as shown to operators (`None` on a single node or between memberships).
    pub fn cluster_member(&self) -> Option<MemberId> {
        self.member()
    }

    /// Whether this node may serve presence now: always on a single node; in a cluster, only
    /// before its lease's local deadline.
    pub fn is_serving(&self) -> bool {
        match self.membership() {
            None => true,
            Some(m) => self.inner.clock.now().mono < m.serving_until.load(Ordering::Acquire),
        }
    }

    /// Fires when this node's membership lapses: every socket closes then (see `app`).
    pub fn lapsed(&self) -> CancellationToken {
        match self.membership() {
            Some(m) => m.lapsed.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            None => CancellationToken::new(),
        }
    }

    /// Joins (retrying while the database is unreachable, for at most one lease) and starts
    /// the lease task.
    pub(super) async fn join_cluster(
        &self,
        options: ClusterOptions,
    ) -> Result<(JoinHandle<()>, CancellationToken)> {
        let deadline = Instant::now() + Duration::from_millis(options.lease_ms);
        loop {
            match self.join_once(&options).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "joining the cluster failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
        // Members that left (or died) before this node started are taken over before it
        // serves: their clients' sessions resume here at once.
        if let Some(member) = self.member() {
            self.take_over_lapsed(&options, member).await;
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(lease_loop(self.clone(), stop.clone()));
        Ok((task, stop))
    }

    /// Takes over every member whose lease has already passed.
    async fn take_over_lapsed(&self, options: &ClusterOptions, member: MemberId) {
        let store = options.store.clone();
        let lease_ms = options.lease_ms;
        let Ok(Renewal::Renewed { others }) = blocking(move || store.renew(member, lease_ms)).await
        else {
            return;
        };
        for (lost, _) in others.into_iter().filter(|(_, ms)| *ms <= 0) {
            let store = options.store.clone();
            match blocking(move || store.take_over(member, lost)).await {
                Ok(Some(takeover)) => self.adopt(member, takeover),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, lost, "takeover failed; the lease task retries")
                }
            }
        }
    }

    async fn join_once(&self, options: &ClusterOptions) -> Result<()> {
        let started = self.inner.clock.now().mono;
        let (store, node_id, lease_ms) = (
            options.store.clone(),
            options.node_id.clone(),
            options.lease_ms,
        );
        let (member, orphans) = blocking(move || store.join(&node_id, lease_ms)).await?;
        let Some(membership) = self.membership() else {
            return Ok(());
        };
        let mut engine = self.lock();
        let now = self.inner.clock.now();
        membership.member.store(member, Ordering::Release);
        membership
            .serving_until
            .store(started + options.lease_ms, Ordering::Release);
        for (service, identity) in &orphans {
            engine.enter_grace(now, service, identity, now.wall, Cause::NodeLost);
        }
        drop(engine);
        self.inner.wake.notify_one();
        tracing::info!(
            node = %options.node_id,
            member,
            held_for_nobody = orphans.len(),
            "joined the cluster"
        );
        Ok(())
    }

    /// The membership lapsed: forget everything, close the sockets, stop serving.
    fn lapse(&self, member: MemberId) {
        let Some(membership) = self.membership() else {
            return;
        };
        let mut engine = self.lock();
        if membership.member.load(Ordering::Acquire) != member {
            return;
        }
        membership.member.store(0, Ordering::Release);
        membership.serving_until.store(0, Ordering::Release);
        let sessions = engine.session_count();
        engine.forget_all();
        let mut lapsed = membership.lapsed.lock().unwrap_or_else(|p| p.into_inner());
        lapsed.cancel();
        *lapsed = CancellationToken::new();
        drop(lapsed);
        drop(engine);
        tracing::error!(
            member,
            sessions,
            "this node's cluster lease lapsed: its sessions are another node's now; rejoining"
        );
    }

    /// Takes in what a takeover of a lost member brought.
    fn adopt(&self, member: MemberId, takeover: Takeover) {
        let mut engine = self.lock();
        if self.member() != Some(member) {
            return;
        }
        let (lost, users) = (takeover.lost, takeover.users.len());
        let now = self.inner.clock.now();
        let (transitions, gone) = engine.adopt(now, takeover);
        let batch = PresenceBatch {
            transitions,
            sessions: SessionFlush {
                deletes: gone,
                ..Default::default()
            },
            member: None,
        };
        drop(self.queue(&engine, batch, false));
        drop(engine);
        self.inner.wake.notify_one();
        tracing::warn!(lost, users, "took over a lost cluster member");
    }

    /// Moves session `id` of this user here from the member holding it (or a lost one), so
    /// that a ping, resume or close reaching this node works. `Ok(true)` once the session is
    /// live here; `Ok(false)` when there is no such session anywhere (or on a single node).
    pub async fn claim(&self, service: &Service, identity: &str, id: u64) -> Result<bool> {
        let Some(membership) = self.membership() else {
            return Ok(false);
        };
        if self.lock().is_session_of(id, &service.sid, identity) {
            return Ok(true);
        }
        if !self.is_serving() {
            return Err(Error::Fenced);
        }
        let member = self.member().ok_or(Error::Fenced)?;
        let claimed = membership
            .options
            .store
            .claim_session(member, id, &service.sid, identity)
            .await?;
        let Some(session) = claimed else {
            return Ok(false);
        };
        let settings = crate::domain::presence::ServicePresence::of(service, self.defaults());
        let committed = {
            let mut engine = self.lock();
            if self.member() != Some(member) {
                return Err(Error::Fenced);
            }
            let now = self.inner.clock.now();
            let mut transitions = engine.configure(now, &service.sid, settings);
            transitions.extend(engine.adopt_session(now, &session));
            self.queue(
                &engine,
                PresenceBatch {
                    transitions,
                    ..Default::default()
                },
                true,
            )
        };
        self.inner.wake.notify_one();
        if committed.wait().await {
            Ok(true)
        } else {
            Err(Error::Fenced)
        }
    }

    /// Acts on what another node's commit said, as far as presence is concerned.
    pub async fn on_notice(&self, notice: &ClusterNotice) {
        let Some(membership) = self.membership() else {
            return;
        };
        match notice {
            ClusterNotice::SessionMoved { id, from } if self.member() == Some(*from) => {
                self.let_go(|engine, now| engine.drop_moved(now, *id));
            }
            ClusterNotice::MemberLeft => membership.kick.notify_one(),
            ClusterNotice::Resync => self.drop_moved_away().await,
            _ => {}
        }
    }

    /// Queues what letting go of sessions produced.
    fn let_go(
        &self,
        change: impl FnOnce(&mut crate::presence::engine::Engine, super::Now) -> Vec<Transition>,
    ) {
        let mut engine = self.lock();
        let transitions = change(&mut engine, self.inner.clock.now());
        let batch = PresenceBatch {
            transitions,
            ..Default::default()
        };
        drop(self.queue(&engine, batch, false));
    }

    /// After notices may have been missed: drops the sessions stored as another member's.
    /// Everything queued before is committed first, so a session opened here a moment ago
    /// is in storage when storage is read.
    async fn drop_moved_away(&self) {
        let (Some(membership), Some(member)) = (self.membership(), self.member()) else {
            return;
        };
        // Taken together under the engine lock: every session in `known` was queued (its row
        // written) before the barrier.
        let (known, barrier) = {
            let engine = self.lock();
            (engine.session_ids(), self.barrier())
        };
        if !barrier.wait().await {
            return;
        }
        let store = membership.options.store.clone();
        let held = match blocking(move || store.held_sessions(member)).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "could not read this node's sessions");
                return;
            }
        };
        let moved: std::collections::HashSet<u64> =
            known.into_iter().filter(|id| !held.contains(id)).collect();
        if moved.is_empty() || self.member() != Some(member) {
            return;
        }
        self.let_go(|engine, now| {
            moved
                .iter()
                .flat_map(|id| engine.drop_moved(now, *id))
                .collect()
        });
    }

    /// Resolves once everything queued so far is committed.
    fn barrier(&self) -> Committed {
        let (done, rx) = tokio::sync::oneshot::channel();
        let pending = Pending {
            batch: PresenceBatch {
                member: self.member(),
                ..Default::default()
            },
            done: Some(done),
        };
        if self.inner.commits.send(pending).is_err() {
            return Committed(None);
        }
        Committed(Some(rx))
    }

    /// A graceful stop: everything queued committed, then the live sessions' expiries stored
    /// and the lease ended, for another member to take them over at once.
    pub(super) async fn leave_cluster(&self) {
        let (Some(membership), Some(member)) = (self.membership(), self.member()) else {
            return;
        };
        let _ = tokio::time::timeout(super::FINAL_FLUSH_DEADLINE, self.barrier().wait()).await;
        let sessions = {
            let engine = self.lock();
            engine.all_sessions(self.inner.clock.now())
        };
        let count = sessions.len();
        let store = membership.options.store.clone();
        match blocking(move || store.leave(member, sessions)).await {
            Ok(()) => tracing::info!(member, sessions = count, "left the cluster"),
            Err(e) => {
                tracing::error!(error = %e, "could not leave the cluster; its lease will lapse")
            }
        }
    }
}

/// Renews the lease every third of it, takes over members whose lease passed (at the moment
/// it passes), and rejoins after a lapse.
async fn lease_loop(presence: Presence, stop: CancellationToken) {
    let Some(membership) = presence.membership() else {
        return;
    };
    let options = membership.options.clone();
    let lease = Duration::from_millis(options.lease_ms);
    let renew_every = lease / 3;
    // At once: the leases of the other members are not known yet.
    let mut next_renew = Instant::now();
    // Other members and when their leases pass, as last read.
    let mut others: HashMap<MemberId, Instant> = HashMap::new();
    loop {
        let Some(member) = presence.member() else {
            // Not a member: join again (with nothing), retrying while the database is away.
            tokio::select! {
                joined = presence.join_once(&options) => if let Err(e) = joined {
                    tracing::warn!(error = %e, "rejoining the cluster failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stop.cancelled() => return,
                    }
                } else {
                    next_renew = Instant::now() + renew_every;
                },
                _ = stop.cancelled() => return,
            }
            continue;
        };
        let now = Instant::now();
        let due: Vec<MemberId> = others
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(m, _)| *m)
            .collect();
        for lost in due {
            others.remove(&lost);
            let store = options.store.clone();
            match blocking(move || store.take_over(member, lost)).await {
                Ok(Some(takeover)) => presence.adopt(member, takeover),
                // It renewed (or another member took it): read the leases again now.
                Ok(None) => next_renew = Instant::now(),
                Err(Error::Fenced) => {
                    presence.lapse(member);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, lost, "takeover failed; retrying");
                    others.insert(lost, Instant::now() + Duration::from_millis(200));
                }
            }
        }
        if presence.member() != Some(member) {
            continue;
        }
        let wake_at = others.values().copied().fold(next_renew, Instant::min);
        tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = membership.kick.notified() => next_renew = Instant::now(),
            _ = stop.cancelled() => return,
        }
        if Instant::now() < next_renew {
            continue;
        }
        let started = presence.inner.clock.now().mono;
        let store = options.store.clone();
        let lease_ms = options.lease_ms;
        // A renewal that hangs (a database that stopped answering) counts as failed.
        let renewal = tokio::time::timeout(lease, blocking(move || store.renew(member, lease_ms)))
            .await
            .unwrap_or_else(|_| Err(Error::Unavailable("lease renewal timed out".into())));
        match renewal {
            Ok(Renewal::Renewed { others: read }) => {
                {
                    let _engine = presence.lock();
                    if presence.member() == Some(member) {
                        membership
                            .serving_until
                            .store(started + lease_ms, Ordering::Release);
                    }
                }
                let read_at = Instant::now();
                others = read
                    .into_iter()
                    .map(|(m, ms)| {
                        let wait = Duration::from_millis(ms.max(0) as u64 + 5);
                        (m, read_at + wait)
                    })
                    .collect();
                next_renew = read_at + renew_every;
            }
            Ok(Renewal::Fenced) => presence.lapse(member),
            Err(e) => {
                tracing::warn!(error = %e, "renewing the cluster lease failed; retrying");
                if !presence.is_serving() {
                    presence.lapse(member);
                }
                next_renew = Instant::now() + Duration::from_millis(200);
            }
        }
    }
}
