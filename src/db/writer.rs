//! The single writer: one SQLite connection on a dedicated thread, fed by a bounded channel,
//! that groups every queued write into one transaction (group commit).
//!
//! Invariants:
//! - Only this thread writes to the database (the CLI's `keys` commands excepted; SQLite's
//!   locking and the busy timeout arbitrate with another process).
//! - Each job runs inside its own SAVEPOINT: a job that fails rolls back only its own changes,
//!   so a bad request never leaves a half-written change and never spoils its batch-mates.
//! - A caller's future resolves only after the transaction holding its job has committed (or
//!   failed as a whole, in which case every job of the batch gets the error).
//! - After each commit the registered [`CommitHook`]s run on this thread, in commit order, with
//!   what the batch's jobs recorded, *before* any caller is answered; they must not block.
//! - A panicking job is caught and reported as an internal error; the writer keeps running.
//!
//! May depend on: rusqlite, tokio (channels), domain.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::map_sqlite;
use crate::domain::store::WriteFuture;
use crate::domain::{Error, Result};

/// Jobs waiting beyond this many make submitters wait (back-pressure).
const QUEUE_CAPACITY: usize = 16_384;

pub use crate::storage::commit::{CommitHook, Effects, StoredTransition, WriterStats};
use crate::storage::commit::{after_batch, job_answer};

/// A job's view of the open transaction.
pub struct Tx<'a> {
    pub conn: &'a Connection,
    effects: &'a mut Effects,
}

impl Tx<'_> {
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
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

trait Job: Send {
    /// Runs the work inside a savepoint of `tx`, keeping its result for `finish`.
    fn run(&mut self, tx: &mut rusqlite::Transaction<'_>, effects: &mut Effects);
    /// Sends the result (or the batch's commit error) to the caller.
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
    F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
{
    fn run(&mut self, tx: &mut rusqlite::Transaction<'_>, effects: &mut Effects) {
        let Some(work) = self.work.take() else { return };
        let outcome = (|| {
            // SQLite rolls the whole transaction back by itself after some failures (an I/O
            // error, a full disk). A savepoint opened now would start a transaction of its own
            // and commit alone, and the caller would then hear the batch's commit error for a
            // change that was in fact written. Refuse instead: nothing of this batch commits.
            if tx.is_autocommit() {
                return Err(Error::Unavailable(
                    "the batch's transaction was rolled back by a storage failure".into(),
                ));
            }
            let savepoint = tx.savepoint().map_err(map_sqlite)?;
            let mut local = Effects::default();
            let result = catch_unwind(AssertUnwindSafe(|| {
                work(&mut Tx {
                    conn: &savepoint,
                    effects: &mut local,
                })
            }))
            .unwrap_or_else(|_| Err(Error::Internal(anyhow::anyhow!("write job panicked"))));
            if result.is_ok() {
                savepoint.commit().map_err(map_sqlite)?;
                effects.absorb(local);
            }
            // On error the savepoint is dropped, which rolls it back.
            result
        })();
        self.result = Some(outcome);
    }

    fn finish(self: Box<Self>, commit: &std::result::Result<(), String>) {
        // The caller may have gone away (request cancelled); nothing to do then.
        let _ = self.reply.send(job_answer(commit, self.result));
    }
}

/// Handle for submitting writes; cheap to clone. The thread stops when every handle is dropped
/// and the queue is drained.
#[derive(Clone)]
pub struct Writer {
    sender: mpsc::Sender<Message>,
    stats: Arc<WriterStats>,
}

enum Message {
    Job(Box<dyn Job>),
    /// Commit what is queued before this, then exit (later submits fail as unavailable).
    Stop,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn start(
        conn: Connection,
        max_batch: usize,
        hooks: Vec<Box<dyn CommitHook>>,
    ) -> std::io::Result<(Writer, JoinHandle<()>)> {
        let (sender, receiver) = mpsc::channel::<Message>(QUEUE_CAPACITY);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("reachd-writer".into())
            .spawn(move || run(conn, receiver, max_batch.max(1), hooks, &thread_stats))?;
        Ok((Writer { sender, stats }, handle))
    }

    /// Queues `work`; the future resolves after its transaction commits.
    pub fn submit<T, F>(&self, work: F) -> WriteFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
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

    /// True while the writer thread is receiving.
    pub fn is_alive(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Asks the thread to commit everything queued so far and exit, whoever still holds a
    /// handle; join the thread afterwards.
    pub async fn stop(&self) {
        let _ = self.sender.send(Message::Stop).await;
    }
}

fn run(
    mut conn: Connection,
    mut receiver: mpsc::Receiver<Message>,
    max_batch: usize,
    mut hooks: Vec<Box<dyn CommitHook>>,
    stats: &WriterStats,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
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
        let commit = commit_batch(&mut conn, &mut batch, &mut effects);
        // Hooks before replies: a caller that sees its write acknowledged must also see its
        // effects (e.g. an invalidated cache) — read-your-writes.
        after_batch(
            stats,
            &mut hooks,
            batch.len(),
            started.elapsed(),
            commit.is_ok(),
            &effects,
        );
        for job in batch.drain(..) {
            job.finish(&commit);
        }
    }
}

fn commit_batch(
    conn: &mut Connection,
    batch: &mut [Box<dyn Job>],
    effects: &mut Effects,
) -> std::result::Result<(), String> {
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    for job in batch.iter_mut() {
        job.run(&mut tx, effects);
    }
    tx.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn writer() -> (Writer, JoinHandle<()>) {
        let conn = Connection::open_in_memory().expect("memory db");
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL UNIQUE)")
            .expect("schema");
        Writer::start(conn, 64, Vec::new()).expect("start")
    }

    async fn rows(w: &Writer) -> i64 {
        w.submit(|tx| {
            tx.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .map_err(map_sqlite)
        })
        .await
        .expect("count")
    }

    fn insert(v: i64) -> impl FnOnce(&mut Tx<'_>) -> Result<i64> + Send + 'static {
        move |tx| {
            tx.execute("INSERT INTO t (v) VALUES (?1)", [v])
                .map_err(map_sqlite)?;
            Ok(v)
        }
    }

    #[tokio::test]
    async fn a_failing_job_rolls_back_alone_and_others_commit() {
        let (w, _h) = writer();
        let results = futures_util::future::join_all(vec![
            w.submit(insert(1)),
            w.submit(insert(1)), // unique violation
            w.submit(insert(2)),
            w.submit(|_tx: &mut Tx<'_>| -> Result<i64> { panic!("boom") }),
        ])
        .await;
        assert_eq!(results[0].as_ref().ok(), Some(&1));
        assert!(results[1].is_err());
        assert_eq!(results[2].as_ref().ok(), Some(&2));
        assert!(matches!(results[3], Err(Error::Internal(_))));
        let count = rows(&w).await;
        assert_eq!(count, 2);
    }

    #[tokio::test]
    async fn queued_jobs_share_transactions() {
        let (w, _h) = writer();
        let futures: Vec<_> = (0..500).map(|v| w.submit(insert(v))).collect();
        let results = futures_util::future::join_all(futures).await;
        assert!(results.iter().all(Result::is_ok));
        let tx = w.stats().transactions.load(Ordering::Relaxed);
        assert!(tx < 500, "500 concurrent writes took {tx} transactions");
        assert_eq!(w.stats().jobs.load(Ordering::Relaxed), 500);
    }

    #[tokio::test]
    async fn jobs_after_an_automatic_rollback_do_not_commit_on_their_own() {
        let (w, _h) = writer();
        // A first batch holds the writer until the two jobs below are both queued, so that
        // they share the next batch whatever the scheduling.
        let queue = w.sender.clone();
        let (started, running) = tokio::sync::oneshot::channel();
        let hold = tokio::spawn(w.submit(move |_tx: &mut Tx<'_>| -> Result<i64> {
            let _ = started.send(());
            let deadline = Instant::now() + std::time::Duration::from_secs(10);
            while queue.max_capacity() - queue.capacity() < 2 && Instant::now() < deadline {
                std::thread::yield_now();
            }
            Ok(0)
        }));
        running.await.expect("the holding job runs");
        // What SQLite does by itself after an I/O error or a full disk mid-batch.
        let rollback = w.submit(|tx: &mut Tx<'_>| -> Result<i64> {
            tx.execute_batch("ROLLBACK").map_err(map_sqlite)?;
            Err(Error::Unavailable("disk I/O error".into()))
        });
        let results = futures_util::future::join_all(vec![rollback, w.submit(insert(5))]).await;
        let held = hold.await.expect("join");
        assert_eq!(held.ok(), Some(0));
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(Error::Unavailable(_)))),
            "{results:?}"
        );
        let count = rows(&w).await;
        assert_eq!(count, 0, "a write reported as failed was not committed");
    }
}
