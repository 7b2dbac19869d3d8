//! Reads on PostgreSQL from any thread. The synchronous client drives its own runtime, which
//! may not run inside an async worker thread, so each read is handed to one of a few reader
//! threads; the caller waits for the answer (a short, bounded query: a point lookup or a page).
//!
//! Each reader thread keeps one pooled connection checked out, with the statements it
//! prepared on it ([`ReadConnection`]): a read is then one round trip, where taking a
//! connection per read cost three (the pool's check on checkout, then prepare, then execute).
//!
//! Invariants:
//! - A read closure owns what it needs (`'static`); the caller gets exactly one answer, or
//!   "unavailable" when the reader threads are gone or no connection can be had.
//! - After a read that failed in storage (an unavailable or internal error), or when found
//!   closed, a connection goes back to the pool and its statements are dropped; the next read
//!   checks one out again, as every read did before readers kept theirs (the pool discards a
//!   closed one and checks the others). A read answered with a domain error (not found,
//!   fenced) keeps the connection, so requests cannot make a reader go through the pool.
//! - A read that failed in storage because its connection had closed under it (the server
//!   restarted, a failover) is run once more on a fresh connection, so a connection that died
//!   while idle costs no caller an error; any other failure is answered as it failed.
//!
//! May depend on: postgres, r2d2, r2d2_postgres, domain.

use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use super::map_pool;
use super::open::{Pool, Pooled};
use super::statements::CachedClient;
use crate::domain::{Error, Result};

/// A reader thread's connection, with the statements prepared on it.
pub type ReadConnection = CachedClient<Pooled>;

/// Whether this is the job's last chance to answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// May be run again on a fresh connection when its own closed under it.
    First,
    /// Answers, whatever happens.
    Last,
}

/// What one attempt of a read did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Answered; the connection serves the next read.
    Answered,
    /// Answered with a storage failure; the connection goes back to the pool.
    Failed,
    /// Answered nothing: a first attempt whose connection had closed under it.
    RunAgain,
}

/// Runs a read on a connection and answers its caller, or, on a first attempt whose
/// connection closed under it, does not.
type ReadJob = Box<dyn FnMut(&mut ReadConnection, Attempt) -> Outcome + Send>;

/// Reader threads over a connection pool. Only the threads hold the pool: dropping a
/// connection closes it through the client's own runtime, which must not happen on an async
/// worker thread, so the pool goes when the last reader thread ends (its channel closed).
#[derive(Clone)]
pub struct Reads {
    jobs: Sender<ReadJob>,
}

impl Reads {
    /// Starts `threads` reader threads on `pool` (each keeps one of its connections).
    pub fn start(pool: Pool, threads: usize) -> std::io::Result<Reads> {
        let (jobs, receiver) = channel::<ReadJob>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..threads.max(1) {
            let (receiver, pool) = (receiver.clone(), pool.clone());
            std::thread::Builder::new()
                .name(format!("reachd-pg-read-{n}"))
                .spawn(move || serve(&receiver, &pool))?;
        }
        Ok(Reads { jobs })
    }

    /// Runs `read` on a reader thread's connection and returns its answer. `read` may run
    /// twice: again on a fresh connection when its first connection closed under it.
    pub fn run<T, F>(&self, mut read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut ReadConnection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = sync_channel(1);
        let job: ReadJob = Box::new(move |connection, attempt| {
            let result = read(connection);
            let failed = matches!(result, Err(Error::Unavailable(_) | Error::Internal(_)));
            if failed && attempt == Attempt::First && is_broken(connection) {
                return Outcome::RunAgain;
            }
            let _ = reply.send(result);
            if failed {
                Outcome::Failed
            } else {
                Outcome::Answered
            }
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Unavailable("the reader threads have stopped".into()))?;
        answer
            .recv()
            .map_err(|_| Error::Unavailable("no database connection for a read".into()))?
    }
}

fn serve(receiver: &Mutex<Receiver<ReadJob>>, pool: &Pool) {
    let mut held: Option<ReadConnection> = None;
    loop {
        let mut job = match receiver.lock() {
            Ok(receiver) => match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let mut attempt = Attempt::First;
        loop {
            let connection = match held.take() {
                Some(connection) => connection,
                None => match fresh_connection(pool) {
                    Ok(connection) => connection,
                    // Dropping the job drops its reply sender: the caller sees "unavailable".
                    Err(e) => {
                        tracing::warn!(error = %e, "no connection for a read");
                        break;
                    }
                },
            };
            let connection = held.insert(connection);
            let outcome = job(connection, attempt);
            if outcome != Outcome::Answered || connection.is_closed() {
                held = None;
            }
            if outcome != Outcome::RunAgain || attempt == Attempt::Last {
                break;
            }
            attempt = Attempt::Last;
        }
    }
}

/// Whether a read that failed in storage failed because its connection is gone. A server that
/// ends a session (a restart, `pg_terminate_backend`, a failover) first sends an error, which
/// the next read on that connection receives as its answer while the client still counts the
/// connection as open; an empty query tells (a round trip, paid only after a failure).
fn is_broken(connection: &mut ReadConnection) -> bool {
    connection.is_closed() || connection.simple_query("").is_err()
}

/// A pooled connection for a reader thread, planning every execution for its values.
///
/// A statement prepared once gets, after a few executions, a generic plan that ignores its
/// values; for the reads' `= ANY($n)` lookups of a list that plan was measured slower than
/// the statement it replaced (bulk reachability of 100 identities: 1,050–1,080 requests/s
/// with unnamed statements, which are always planned for their values, 640–650 with a
/// generic plan). The writer's transactions plan the same way (`pg::writer`).
fn fresh_connection(pool: &Pool) -> Result<ReadConnection> {
    let mut client = pool.get().map_err(map_pool)?;
    client
        .batch_execute("SET plan_cache_mode = force_custom_plan")
        .map_err(super::map_pg)?;
    Ok(CachedClient::new(client))
}

#[cfg(test)]
mod tests {
    use super::super::PgResultExt as _;
    use super::super::events::test_db::fresh_database;
    use super::*;
    use crate::pg::statements::Sql;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;

    /// A pool of `size` connections to the fresh database `url`.
    fn pool(url: &str, size: u32) -> Pool {
        crate::pg::open::pool(url, "reads-test", size, std::time::Duration::from_secs(5))
            .expect("pool")
    }

    #[test]
    fn a_reader_keeps_its_connection_and_prepares_a_statement_once() {
        let Some(db) = fresh_database() else { return };
        let reads = Reads::start(pool(&db.url, 2), 1).expect("start");
        let sql = "SELECT pg_backend_pid(), $1::BIGINT";
        let mut seen = Vec::new();
        for i in 0..3_i64 {
            let (pid, echoed, prepared) = reads
                .run(move |c| {
                    let row = c.query_one(sql, &[&i]).db()?;
                    Ok((row.get::<_, i32>(0), row.get::<_, i64>(1), c.prepared()))
                })
                .expect("read");
            assert_eq!(echoed, i);
            seen.push((pid, prepared));
        }
        assert!(
            seen.iter().all(|s| *s == (seen[0].0, 1)),
            "one connection, one prepared statement: {seen:?}"
        );
    }

    #[test]
    fn a_reader_plans_every_execution_for_its_values() {
        let Some(db) = fresh_database() else { return };
        let reads = Reads::start(pool(&db.url, 2), 1).expect("start");
        let mode: String = reads
            .run(|c| {
                Ok(
                    c.query_one("SELECT current_setting('plan_cache_mode')", &[])
                        .db()?
                        .get(0),
                )
            })
            .expect("read");
        assert_eq!(mode, "force_custom_plan");
    }

    #[test]
    fn a_read_whose_connection_was_closed_runs_again_on_a_fresh_one() {
        let Some(db) = fresh_database() else { return };
        let reads = Reads::start(pool(&db.url, 3), 1).expect("start");
        let first: i32 = reads
            .run(|c| Ok(c.query_one("SELECT pg_backend_pid()", &[]).db()?.get(0)))
            .expect("first read");
        // What a server restart or a failover does to an idle connection.
        let mut admin = db.client();
        let ended: bool = admin
            .query_one("SELECT pg_terminate_backend($1, 5000)", &[&first])
            .expect("terminate")
            .get(0);
        assert!(ended, "the backend ended within 5 s");
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let second: i32 = reads
            .run(move |c| {
                counted.fetch_add(1, SeqCst);
                Ok(c.query_one("SELECT pg_backend_pid()", &[]).db()?.get(0))
            })
            .expect("the caller sees no error");
        assert_ne!(second, first, "a fresh connection");
        assert_eq!(runs.load(SeqCst), 2);
    }

    /// The backend serving the reader threads' next read.
    fn backend(reads: &Reads) -> i32 {
        reads
            .run(|c| Ok(c.query_one("SELECT pg_backend_pid()", &[]).db()?.get(0)))
            .expect("read")
    }

    /// Statements prepared on the connection the reader threads' next read runs on.
    fn prepared(reads: &Reads) -> usize {
        reads.run(|c| Ok(c.prepared())).expect("read")
    }

    #[test]
    fn a_read_that_fails_in_storage_is_answered_once_and_its_connection_given_back() {
        let Some(db) = fresh_database() else { return };
        let reads = Reads::start(pool(&db.url, 3), 1).expect("start");
        backend(&reads);
        assert_eq!(prepared(&reads), 1, "kept with its statement");
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let failed = reads.run(move |c| {
            counted.fetch_add(1, SeqCst);
            c.query_one("SELECT 1 / $1::INTEGER", &[&0_i32]).db()?;
            Ok(())
        });
        assert!(
            matches!(failed, Err(Error::Internal(_))),
            "division by zero: {failed:?}"
        );
        assert_eq!(runs.load(SeqCst), 1);
        assert_eq!(prepared(&reads), 0, "checked out again, with no statements");
    }

    #[test]
    fn a_read_answered_with_a_domain_error_keeps_its_connection() {
        let Some(db) = fresh_database() else { return };
        let reads = Reads::start(pool(&db.url, 3), 1).expect("start");
        let before = backend(&reads);
        let missing: Result<()> = reads.run(|_| Err(Error::NotFound));
        assert!(matches!(missing, Err(Error::NotFound)));
        assert_eq!(
            prepared(&reads),
            1,
            "the same connection, its statement kept"
        );
        assert_eq!(backend(&reads), before);
    }
}
