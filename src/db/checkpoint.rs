//! WAL checkpoints off the writer thread, so that a burst of commits is not stalled copying
//! pages into the database file: this thread runs a PASSIVE checkpoint every interval (which
//! never blocks the writer or readers) and a TRUNCATE one on shutdown. The writer checkpoints
//! itself only once the log has reached `storage.wal_limit_mb` (see `db::open`): under
//! sustained writes a checkpoint beside the writer never catches up with it.
//!
//! May depend on: rusqlite, std.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// Handle of the checkpoint thread; dropping it stops the thread after a final checkpoint.
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub fn start(path: &Path, busy_timeout: Duration, interval: Duration) -> anyhow::Result<Self> {
        let conn = super::open::open_connection(path, busy_timeout)?;
        let (stop, signal) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("reachd-checkpoint".into())
            .spawn(move || {
                // Checkpoint on every timeout; a message or a dropped sender means stop.
                while let Err(RecvTimeoutError::Timeout) = signal.recv_timeout(interval) {
                    checkpoint(&conn, "PASSIVE");
                }
                checkpoint(&conn, "TRUNCATE");
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs a final checkpoint and waits for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn checkpoint(conn: &Connection, mode: &str) {
    let result = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, mode, "WAL checkpoint failed");
    }
}
