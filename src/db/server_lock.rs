//! One server per database: `reachd serve` holds an exclusive advisory lock (`flock`) on the
//! SQLite file for its whole life, so a second server on the same file — which would run a
//! second presence engine and webhook dispatcher and send every webhook twice — is refused at
//! start. `copy-database` takes it too (through [`lock_existing`]), so that it never copies a
//! database a server is still changing and no server starts on it mid-copy. The CLI's other
//! commands (`keys`, `token`, `backup`, `check-config`) never take it: they work beside a
//! running server through SQLite's own locking.
//!
//! The lock is on the database file itself (its inode), so two paths to one file (a symlink, a
//! relative and an absolute path) still meet. It is released when the holder exits, however it
//! exits: the kernel drops it with the process's file descriptors. SQLite's own locks are
//! POSIX record locks, which on Linux are independent of `flock`.
//!
//! May depend on: std, anyhow.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;

/// The held lock; dropping it releases the database for another server.
#[derive(Debug)]
pub struct ServerLock {
    _file: File,
}

/// A second server was refused: another process holds the database.
#[derive(Debug, thiserror::Error)]
#[error(
    "another reachd server is already running on the database {path}; stop it first, or give \
     this server a database of its own (`database` in the configuration, REACHD_DATABASE). \
     `reachd keys`, `token`, `backup` and `check-config` work beside the running server"
)]
pub struct AlreadyServed {
    pub path: String,
}

/// Takes the database's server lock, creating the (empty) file owner-only if it is missing.
pub fn lock_for_server(path: &Path) -> anyhow::Result<ServerLock> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(ServerLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(AlreadyServed {
            path: path.display().to_string(),
        }
        .into()),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Takes the server lock of an existing database file without creating it, for a command that
/// must not run beside a server. `Ok(None)`: a server (or another such command) holds it.
///
/// Keep the returned lock until every SQLite connection this process opened on the file is
/// closed: closing any descriptor of a file drops the process's POSIX record locks on it,
/// SQLite's included.
pub fn lock_existing(path: &Path) -> anyhow::Result<Option<ServerLock>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(ServerLock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("reachd.db");
        let first = lock_for_server(&path).expect("first");
        let err = lock_for_server(&path).expect_err("second refused");
        assert!(err.downcast_ref::<AlreadyServed>().is_some(), "{err:#}");
        // Another path to the same file meets the same lock.
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(lock_for_server(&link).is_err());
        drop(first);
        lock_for_server(&link).expect("free again");
    }

    #[test]
    fn locking_an_existing_file_never_creates_one_and_meets_a_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("reachd.db");
        assert!(lock_existing(&path).is_err(), "a missing file is an error");
        assert!(!path.exists(), "and is not created");
        let server = lock_for_server(&path).expect("server");
        assert!(lock_existing(&path).expect("checked").is_none());
        drop(server);
        let held = lock_existing(&path).expect("checked").expect("free");
        assert!(lock_for_server(&path).is_err(), "a server waits for it");
        drop(held);
    }
}
