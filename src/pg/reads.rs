//! Reads on PostgreSQL from any thread. The synchronous client drives its own runtime, which
//! may not run inside an async worker thread, so each read is handed to one of a few reader
//! threads that take a pooled connection; the caller waits for the answer (a short, bounded
//! query: a point lookup or a page).
//!
//! Invariants: a read closure owns what it needs (`'static`); the caller gets exactly one
//! answer, or "unavailable" when the reader threads are gone.
//!
//! May depend on: postgres, r2d2, r2d2_postgres, domain.

use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use super::map_pool;
use super::open::Pool;
use crate::domain::{Error, Result};

type ReadJob = Box<dyn FnOnce(&mut postgres::Client) + Send>;

/// Reader threads over a connection pool. Only the threads hold the pool: dropping a
/// connection closes it through the client's own runtime, which must not happen on an async
/// worker thread, so the pool goes when the last reader thread ends (its channel closed).
#[derive(Clone)]
pub struct Reads {
    jobs: Sender<ReadJob>,
}

impl Reads {
    /// Starts `threads` reader threads on `pool`.
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

    /// Runs `read` on a reader thread with a pooled connection and returns its answer.
    pub fn run<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut postgres::Client) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = sync_channel(1);
        let job: ReadJob = Box::new(move |client| {
            let _ = reply.send(read(client));
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
    loop {
        let job = match receiver.lock() {
            Ok(receiver) => match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        match pool.get() {
            Ok(mut client) => job(&mut client),
            // Dropping the job drops its reply sender: the caller sees "unavailable".
            Err(e) => {
                tracing::warn!(error = %map_pool(e), "no connection for a read");
                drop(job);
            }
        }
    }
}
