//! The writer on PostgreSQL: one connection on a dedicated thread, fed by a bounded channel,
//! that groups every queued write into one transaction (group commit) — the SQLite writer's
//! contract on a server database.
//!
//! Invariants:
//! - Only the node's feed writer ([`Writer::start`]) writes through this node's store, but for
//!   the webhook outbox's claims and records. Other nodes have their own writers: every feed
//!   writer's transaction first locks the `feed_position` row, so the feed writers of all
//!   nodes commit one after another. That gives the event feed one order (ids in commit
//!   order, see `events`), lets presence decide a user's transition across nodes without a
//!   race (`presence::apply_held`), and, since every other lock is taken after that one, keeps
//!   feed writers from deadlocking on each other.
//! - Outbox writers ([`Writer::start_outbox`]) run the dispatcher's claims and records on
//!   connections of their own, beside the feed writers and each other, without the feed lock:
//!   those jobs keep the outbox's invariants with their own locks (see `outbox`). A lock
//!   cycle between an outbox job and a feed writer is broken within the outbox job's lock
//!   timeout, by failing the outbox job (its dispatcher retries it), never the feed writer.
//! - Before committing, a transaction notifies the other nodes of what it did (events up to
//!   an id, changed services, queued deliveries); the notification is delivered with the
//!   commit or not at all, and a node that missed some re-reads (see `listen`).
//! - Each job runs inside its own SAVEPOINT: a job that fails rolls back only its own changes
//!   (and clears PostgreSQL's aborted-transaction state), so a bad request never leaves a
//!   half-written change and never spoils its batch-mates.
//! - A caller's future resolves only after the transaction holding its job has committed (or
//!   failed as a whole, in which case every job of the batch gets the error).
//! - After each commit the [`CommitHook`]s run on this thread, in commit order, with what the
//!   batch's jobs recorded, *before* any caller is answered; they must not block.
//! - A lost connection fails the batch it was running (503 to its callers) and is replaced
//!   from the pool for the next batch; a panicking job is caught and reported as internal.
//! - The writer keeps one connection from batch to batch, with the statements it prepared on
//!   it ([`StatementCache`]): a job's `tx.execute(sql, …)` costs one round trip once `sql`
//!   has been seen. A failed batch gives the connection back and drops its cache with it.
//!
//! May depend on: postgres, r2d2, r2d2_postgres, tokio (channels), domain, storage.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::open::Pool;
use super::statements::{Params, Sql, StatementCache};
use super::{map_pg, map_pool};
use crate::domain::store::WriteFuture;
use crate::domain::{Error, Result};
use crate::storage::commit::{
    CommitHook, Effects, StoredTransition, WriterStats, after_batch, job_answer,
};

/// Jobs waiting beyond this many make submitters wait (back-pressure).
const QUEUE_CAPACITY: usize = 16_384;

/// A job's view of the open transaction (its savepoint) and of the batch's effects.
pub struct Tx<'a, 'b> {
    conn: &'a mut postgres::Transaction<'b>,
    effects: &'a mut Effects,
    statements: &'a mut StatementCache,
}

/// The cached calls, as inherent methods so that `tx.execute(…)` finds them before the
/// transaction's own (uncached) ones behind `Deref`.
impl Tx<'_, '_> {
    pub fn execute(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> std::result::Result<u64, postgres::Error> {
        self.statements
            .with(self.conn, sql, |c, s| c.execute(s, params))
    }
    pub fn query(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> std::result::Result<Vec<postgres::Row>, postgres::Error> {
        self.statements
            .with(self.conn, sql, |c, s| c.query(s, params))
    }
    pub fn query_one(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> std::result::Result<postgres::Row, postgres::Error> {
        self.statements
            .with(self.conn, sql, |c, s| c.query_one(s, params))
    }
    pub fn query_opt(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> std::result::Result<Option<postgres::Row>, postgres::Error> {
        self.statements
            .with(self.conn, sql, |c, s| c.query_opt(s, params))
    }
}

impl Sql for Tx<'_, '_> {
    fn execute(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> std::result::Result<u64, postgres::Error> {
        Tx::execute(self, sql, params)
    }
    fn query(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> std::result::Result<Vec<postgres::Row>, postgres::Error> {
        Tx::query(self, sql, params)
    }
    fn query_one(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> std::result::Result<postgres::Row, postgres::Error> {
        Tx::query_one(self, sql, params)
    }
    fn query_opt(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> std::result::Result<Option<postgres::Row>, postgres::Error> {
        Tx::query_opt(self, sql, params)
    }
}

impl Tx<'_, '_> {
    /// Records an event row for the post-commit hooks.
    pub fn record_event(&mut self, id: i64) {
        self.effects.event_ids.push(id);
    }
    pub fn record_deliveries(&mut self) {
        self.effects.deliveries = true;
    }
    /// Records a stored reachability transition for the post-commit hooks.
    pub fn record_transition(&mut self, transition: StoredTransition) {
        self.effects.transitions.push(transition);
    }
    /// Records that a service row changed (its cached copy must go).
    pub fn record_service(&mut self, sid: &str) {
        self.effects.services.push(sid.to_string());
    }

    /// Takes the feed position's lock, which a feed writer's batch holds from its first
    /// statement ([`BEGIN_BATCH`]): for an outbox job that must be ordered with the feed
    /// writers. Taken before any other lock, as in their batches; a no-op on a feed writer.
    pub fn lock_feed(&mut self) -> Result<()> {
        self.execute("SELECT 1 FROM feed_position WHERE id = 1 FOR UPDATE", &[])
            .map_err(map_pg)?;
        Ok(())
    }

    /// Runs `job` under PostgreSQL's own plan choice (a generic plan once five executions
    /// show it is no dearer) instead of the batch's custom plans ([`BEGIN_BATCH`]).
    ///
    /// For statements whose plans do not depend on their values: under custom plans, the
    /// foreign-key check of every row a statement inserts is planned again for that row
    /// (measured on the outbox's attempt log: 34 µs per row, most of the insert's time). Only
    /// around such statements: a generic plan chosen while a table is filling up can be far
    /// worse (the outbox's recording `UPDATE` took five times as long under one). The setting
    /// comes back when `job` succeeds; when it fails, rolling back its savepoint restores it.
    pub fn with_generic_plans<T>(&mut self, job: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.execute(GENERIC_PLANS, &[]).map_err(map_pg)?;
        let out = job(self)?;
        self.execute(CUSTOM_PLANS, &[]).map_err(map_pg)?;
        Ok(out)
    }
}

const GENERIC_PLANS: &str = "SELECT set_config('plan_cache_mode', 'auto', true)";
const CUSTOM_PLANS: &str = "SELECT set_config('plan_cache_mode', 'force_custom_plan', true)";

impl<'b> std::ops::Deref for Tx<'_, 'b> {
    type Target = postgres::Transaction<'b>;
    fn deref(&self) -> &postgres::Transaction<'b> {
        self.conn
    }
}

impl<'b> std::ops::DerefMut for Tx<'_, 'b> {
    fn deref_mut(&mut self) -> &mut postgres::Transaction<'b> {
        self.conn
    }
}

trait Job: Send {
    fn run(
        &mut self,
        tx: &mut postgres::Transaction<'_>,
        effects: &mut Effects,
        statements: &mut StatementCache,
    );
    fn finish(self: Box<Self>, commit: &std::result::Result<(), String>);
}

struct TypedJob<T, F> {
    work: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: for<'a, 'b> FnOnce(&mut Tx<'a, 'b>) -> Result<T> + Send + 'static,
{
    fn run(
        &mut self,
        tx: &mut postgres::Transaction<'_>,
        effects: &mut Effects,
        statements: &mut StatementCache,
    ) {
        let Some(work) = self.work.take() else { return };
        let outcome = (|| {
            let mut savepoint = tx.transaction().map_err(map_pg)?;
            let mut local = Effects::default();
            let result = catch_unwind(AssertUnwindSafe(|| {
                work(&mut Tx {
                    conn: &mut savepoint,
                    effects: &mut local,
                    statements: &mut *statements,
                })
            }))
            .unwrap_or_else(|_| Err(Error::Internal(anyhow::anyhow!("write job panicked"))));
            if result.is_ok() {
                savepoint.commit().map_err(map_pg)?;
                effects.absorb(local);
            }
            // Dropped without commit: rolled back to the savepoint.
            result
        })();
        self.result = Some(outcome);
    }

    fn finish(self: Box<Self>, commit: &std::result::Result<(), String>) {
        let _ = self.reply.send(job_answer(commit, self.result));
    }
}

#[derive(Clone)]
pub struct Writer {
    sender: mpsc::Sender<Message>,
    stats: Arc<WriterStats>,
    origin: Arc<str>,
}

enum Message {
    Job(Box<dyn Job>),
    Stop,
}

impl Writer {
    /// Starts the writer thread. Its notifications to the other nodes are signed with a new
    /// random origin ([`Writer::origin`]), so that this node can tell its own apart.
    pub fn start(
        pool: Pool,
        max_batch: usize,
        hooks: Vec<Box<dyn CommitHook>>,
    ) -> std::io::Result<(Writer, JoinHandle<()>)> {
        Self::start_named(Role::Feed, pool, max_batch, hooks, "reachd-pg-writer")
    }

    /// Starts a writer for the outbox's claims or records ([`Role::Outbox`]) on a connection
    /// of its own, named `thread` (its thread ends when the last handle is dropped).
    pub fn start_outbox(pool: Pool, thread: &str) -> std::io::Result<Writer> {
        Ok(Self::start_named(Role::Outbox, pool, OUTBOX_MAX_BATCH, Vec::new(), thread)?.0)
    }

    fn start_named(
        role: Role,
        pool: Pool,
        max_batch: usize,
        hooks: Vec<Box<dyn CommitHook>>,
        thread: &str,
    ) -> std::io::Result<(Writer, JoinHandle<()>)> {
        let (sender, receiver) = mpsc::channel::<Message>(QUEUE_CAPACITY);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let origin: Arc<str> = Arc::from(crate::domain::ids::random_hex(8));
        let thread_origin = origin.clone();
        let handle = std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                run(
                    role,
                    &pool,
                    receiver,
                    max_batch.max(1),
                    hooks,
                    &thread_stats,
                    &thread_origin,
                )
            })?;
        Ok((
            Writer {
                sender,
                stats,
                origin,
            },
            handle,
        ))
    }

    pub fn submit<T, F>(&self, work: F) -> WriteFuture<T>
    where
        T: Send + 'static,
        F: for<'a, 'b> FnOnce(&mut Tx<'a, 'b>) -> Result<T> + Send + 'static,
    {
        let sender = self.sender.clone();
        Box::pin(async move {
            let (reply, result) = oneshot::channel();
            let job: Box<dyn Job> = Box::new(TypedJob {
                work: Some(work),
                result: None,
                reply,
            });
            sender
                .send(Message::Job(job))
                .await
                .map_err(|_| Error::Unavailable("the writer has stopped".into()))?;
            result
                .await
                .map_err(|_| Error::Unavailable("the writer has stopped".into()))?
        })
    }

    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }

    /// What this writer's notifications of changed services carry as their origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub async fn stop(&self) {
        let _ = self.sender.send(Message::Stop).await;
    }
}

fn run(
    role: Role,
    pool: &Pool,
    mut receiver: mpsc::Receiver<Message>,
    max_batch: usize,
    mut hooks: Vec<Box<dyn CommitHook>>,
    stats: &WriterStats,
    origin: &str,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    let mut connection: Option<Connection> = None;
    let mut stopping = false;
    while !stopping {
        match receiver.blocking_recv() {
            Some(Message::Job(job)) => batch.push(job),
            Some(Message::Stop) | None => break,
        }
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(Message::Job(job)) => batch.push(job),
                Ok(Message::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut effects = Effects::default();
        let commit = commit_batch(
            role,
            pool,
            &mut connection,
            &mut batch,
            &mut effects,
            origin,
        );
        if commit.is_err() {
            // Maybe lost: the next batch starts from a fresh connection and an empty cache.
            connection = None;
        }
        // Hooks before replies: a caller that sees its write acknowledged must also see its
        // effects (e.g. an invalidated cache) — read-your-writes. An outbox writer has no
        // hooks, and its batches are not the writer's metrics (the dispatcher counts them).
        if role == Role::Feed {
            after_batch(
                stats,
                &mut hooks,
                batch.len(),
                started.elapsed(),
                commit.is_ok(),
                &effects,
            );
        }
        for job in batch.drain(..) {
            job.finish(&commit);
        }
    }
}

/// A batch's first statement: the feed position's lock (see the invariants above), and, for
/// this transaction only, a plan made for each execution's values rather than one generic
/// plan per prepared statement.
///
/// PostgreSQL switches a prepared statement to a generic plan after five executions when
/// that plan looks no dearer, and keeps it until the table's statistics change. On a
/// deployment that is filling up (a burst of first contacts, autovacuum's statistics at most
/// a minute old, at first those of an empty table) every plan looks equally cheap, and the
/// user lookup by service and identity was frozen, in about half the runs, on the
/// `users_online` index filtered by identity: it then read every user of the service (572
/// blocks per call, measured with `pg_stat_statements`, 16 s of a 36 s burst, against 7
/// blocks through the unique index). Custom plans see the values and the table's real size.
const BEGIN_BATCH: &str = "SELECT last, set_config('plan_cache_mode', 'force_custom_plan', true) \
     FROM feed_position WHERE id = 1 FOR UPDATE";

/// An outbox writer's first statement: custom plans (as [`BEGIN_BATCH`]) and a lock timeout
/// shorter than PostgreSQL's deadlock timeout (1 s), without the feed position's lock.
///
/// Its jobs (claims, records) lock only deliveries and their queues, and may wait for a feed
/// writer that holds those while waiting for them in turn (a record holds a queue's lock and
/// waits for a delivery row that a feed writer's batch updated earlier, and that batch then
/// waits for the queue's lock to enqueue into it). The timeout makes the outbox's job the one
/// that gives way, at once and every time: its caller retries it, while the feed writer's batch
/// (requests waiting for their answer) goes on.
const BEGIN_OUTBOX_BATCH: &str = "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), \
     set_config('lock_timeout', '500ms', true)";

/// Most jobs in one outbox batch: claims and records come one at a time from each dispatcher.
const OUTBOX_MAX_BATCH: usize = 8;

/// What a writer's transactions hold first, and so which jobs it may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The node's writer: every batch first locks the feed position (see the invariants
    /// above). Runs every kind of job.
    Feed,
    /// An outbox writer: runs only the outbox's claims and records
    /// ([`crate::pg::outbox::claim`], [`crate::pg::outbox::record`]), which keep their own
    /// invariants with row locks, `SKIP LOCKED` and the queues' locks, so they need not wait
    /// for the feed's order — and the feed's writers need not wait for them. A record that
    /// disables an endpoint takes the feed position's lock itself, first.
    Outbox,
}

/// The writer's connection and the statements prepared on it.
struct Connection {
    conn: super::open::Pooled,
    statements: StatementCache,
}

fn commit_batch(
    role: Role,
    pool: &Pool,
    connection: &mut Option<Connection>,
    batch: &mut [Box<dyn Job>],
    effects: &mut Effects,
    origin: &str,
) -> std::result::Result<(), String> {
    let connection = match connection {
        Some(connection) => connection,
        None => connection.insert(Connection {
            conn: pool.get().map_err(|e| map_pool(e).to_string())?,
            statements: StatementCache::default(),
        }),
    };
    let Connection { conn, statements } = connection;
    let mut tx = conn.transaction().map_err(|e| e.to_string())?;
    let begin = match role {
        Role::Feed => BEGIN_BATCH,
        Role::Outbox => BEGIN_OUTBOX_BATCH,
    };
    statements
        .with(&mut tx, begin, |c, s| c.execute(s, &[]))
        .map_err(|e| e.to_string())?;
    for job in batch.iter_mut() {
        job.run(&mut tx, effects, statements);
    }
    notify_nodes(&mut tx, statements, effects, origin).map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())
}

/// Every notification of a transaction, in the order of the arrays, in one prepared
/// statement: one round trip, where a `pg_notify` call each, prepared anew, took two apiece
/// (four of the ~20 round trips of a typical presence batch).
const NOTIFY_ALL: &str = "SELECT pg_notify(n.channel, n.payload) \
     FROM unnest($1::TEXT[], $2::TEXT[]) WITH ORDINALITY AS n(channel, payload, i) ORDER BY n.i";

/// Tells the other nodes (and this one's listener) what the transaction did, delivered when
/// it commits. A changed service is announced with the writer's origin: this node applied
/// it already (before answering), and must not apply it again behind its callers' backs.
fn notify_nodes(
    tx: &mut postgres::Transaction<'_>,
    statements: &mut StatementCache,
    effects: &Effects,
    origin: &str,
) -> std::result::Result<(), postgres::Error> {
    let notices = notices(effects, origin);
    if notices.is_empty() {
        return Ok(());
    }
    let (channels, payloads): (Vec<&str>, Vec<String>) = notices.into_iter().unzip();
    statements.with(tx, NOTIFY_ALL, |c, s| c.execute(s, &[&channels, &payloads]))?;
    Ok(())
}

/// The notifications (channel, payload) a transaction's effects call for, in order: the last
/// event id, each changed service once, and whether deliveries were queued.
fn notices(effects: &Effects, origin: &str) -> Vec<(&'static str, String)> {
    let mut notices = Vec::new();
    if let Some(last) = effects.event_ids.iter().max() {
        notices.push(("reachd_events", last.to_string()));
    }
    let mut services: Vec<&String> = effects.services.iter().collect();
    services.sort();
    services.dedup();
    for sid in services {
        notices.push(("reachd_services", format!("{origin} {sid}")));
    }
    if effects.deliveries {
        notices.push(("reachd_deliveries", String::new()));
    }
    notices
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use postgres::fallible_iterator::FallibleIterator;

    use crate::domain::Error;
    use crate::pg::events::test_db::fresh_database;

    fn plan_mode(tx: &mut super::Tx<'_, '_>) -> String {
        tx.query_one("SELECT current_setting('plan_cache_mode')", &[])
            .and_then(|row| row.try_get(0))
            .expect("plan_cache_mode")
    }

    fn txid(tx: &mut super::Tx<'_, '_>) -> i64 {
        tx.query_one("SELECT txid_current()", &[])
            .and_then(|row| row.try_get(0))
            .expect("txid")
    }

    #[test]
    fn generic_plans_last_as_long_as_their_job() {
        let Some(db) = fresh_database() else { return };
        let seen = db
            .write(|tx| {
                let before = plan_mode(tx);
                let inside = tx.with_generic_plans(|tx| Ok(plan_mode(tx)))?;
                Ok((before, inside, plan_mode(tx)))
            })
            .expect("a batch");
        let expected = ("force_custom_plan", "auto", "force_custom_plan");
        assert_eq!(
            (seen.0.as_str(), seen.1.as_str(), seen.2.as_str()),
            expected
        );
    }

    #[test]
    fn a_failed_job_under_generic_plans_leaves_its_batch_mates_custom_plans() {
        let Some(db) = fresh_database() else { return };
        // The first job holds the writer while the next two queue: they share the next batch.
        let hold = db.writer.submit(|_| {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        });
        let (report, failed_in) = std::sync::mpsc::channel();
        let failing = db.writer.submit(move |tx| {
            let _ = report.send(txid(tx));
            tx.with_generic_plans(|tx| -> crate::domain::Result<()> {
                assert_eq!(plan_mode(tx), "auto");
                Err(Error::Conflict("the job fails".into()))
            })
        });
        let next = db.writer.submit(|tx| Ok((plan_mode(tx), txid(tx))));
        let (held, (failed, next)) = db
            .wait(Box::pin(async move {
                let queued_later = async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    tokio::join!(failing, next)
                };
                Ok(tokio::join!(hold, queued_later))
            }))
            .expect("jobs");
        held.expect("hold");
        assert!(failed.is_err(), "the job's error is its caller's");
        let (mode, next_txid) = next.expect("the next job");
        assert_eq!(failed_in.recv().ok(), Some(next_txid), "one batch");
        assert_eq!(mode, "force_custom_plan");
    }

    #[test]
    fn a_batch_notifies_the_other_nodes_of_what_it_did_in_order_once_committed() {
        let Some(db) = fresh_database() else { return };
        let mut listener = postgres::Client::connect(&db.url, postgres::NoTls).expect("listener");
        listener
            .batch_execute("LISTEN reachd_events; LISTEN reachd_services; LISTEN reachd_deliveries")
            .expect("listen");
        db.write(|tx| {
            tx.record_event(7);
            tx.record_event(9);
            tx.record_service("ISb");
            tx.record_service("ISa");
            tx.record_service("ISb");
            tx.record_deliveries();
            Ok(())
        })
        .expect("batch");
        // A batch with nothing to tell sends nothing.
        db.write(|_| Ok(())).expect("empty batch");
        let origin = db.writer.origin().to_string();
        let mut notices = listener.notifications();
        let mut iter = notices.timeout_iter(Duration::from_secs(2));
        let mut received = Vec::new();
        while let Some(n) = iter.next().expect("notifications") {
            received.push((n.channel().to_string(), n.payload().to_string()));
        }
        let expected = [
            ("reachd_events", "9".to_string()),
            ("reachd_services", format!("{origin} ISa")),
            ("reachd_services", format!("{origin} ISb")),
            ("reachd_deliveries", String::new()),
        ]
        .map(|(c, p)| (c.to_string(), p));
        assert_eq!(received, expected);
    }
}
