//! `reachd backup FILE`: a consistent copy of the database while the server keeps serving,
//! through SQLite's online backup API. The copy is taken in a single step inside one read
//! transaction: in WAL mode that snapshot never blocks the writer, and the writer's commits
//! during the copy cannot restart it. It is written next to FILE and linked into place only
//! after an integrity check (never replacing a file), so FILE is either absent or a complete
//! database. The copy holds every secret the database does: the temporary file gets an
//! unpredictable name, is created exclusively (never through an existing file or symlink)
//! with mode 0600, and SQLite opens it without following symlinks, so another local user who
//! can write FILE's folder can neither prepare nor capture it.
//!
//! May depend on: rusqlite, rand, std, domain::admin (the report), db::files (modes).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

pub use crate::domain::admin::BackupReport;

/// Copies the database at `source` to `dest` (which must not exist).
pub fn backup(source: &Path, dest: &Path, busy_timeout: Duration) -> anyhow::Result<BackupReport> {
    if !source.exists() {
        bail!("no database at {}", source.display());
    }
    if dest.exists() {
        bail!("{} already exists; choose a new file name", dest.display());
    }
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", source.display()))?;
    src.busy_timeout(busy_timeout)?;
    let (partial, created) = create_partial(dest)?;
    let result = copy(&src, &partial).and_then(|report| {
        ensure_same_file(&partial, &created)?;
        // A hard link never replaces an existing file (unlike a rename): a FILE created
        // meanwhile by someone else is kept, and this backup fails instead.
        std::fs::hard_link(&partial, dest)
            .with_context(|| format!("moving the copy to {}", dest.display()))?;
        sync_folder(dest);
        Ok(report)
    });
    let _ = std::fs::remove_file(&partial);
    result
}

fn copy(src: &Connection, partial: &Path) -> anyhow::Result<BackupReport> {
    // The file exists (created by `create_partial`): no CREATE, and never through a symlink.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NOFOLLOW
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut dst = Connection::open_with_flags(partial, flags)
        .with_context(|| format!("opening {}", partial.display()))?;
    {
        let backup = Backup::new(src, &mut dst)?;
        // -1: every page in one step, so the copy is one snapshot. Busy or locked means a
        // lock could not be had this instant (e.g. a checkpoint): try again shortly.
        let mut waits = 0;
        loop {
            match backup.step(-1).context("copying the database")? {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked if waits < 200 => {
                    waits += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => bail!("the copy did not finish ({other:?} after {waits} retries)"),
            }
        }
    }
    // A standalone file: no WAL beside it.
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    let check: String = dst.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if check != "ok" {
        bail!("the copy failed its integrity check: {check}");
    }
    let schema_version: u32 = dst.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let count = |table: &str| -> anyhow::Result<i64> {
        let exists: bool = dst.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(0);
        }
        Ok(dst.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    };
    let (users, events) = (count("users")?, count("events")?);
    drop(dst);
    let bytes = std::fs::metadata(partial)?.len();
    Ok(BackupReport {
        bytes,
        schema_version,
        users,
        events,
    })
}

/// Creates the temporary copy beside `dest`: a random name (nobody can prepare a file or a
/// symlink under it in advance), created exclusively (an existing entry, symlinks included, is
/// never opened) and owner-only whatever the umask. Returns its path and the created file.
fn create_partial(dest: &Path) -> anyhow::Result<(PathBuf, std::fs::File)> {
    let mut last_error = None;
    for _ in 0..16 {
        let mut name = dest.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".partial-{:016x}", rand::random::<u64>()));
        let path = dest.with_file_name(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(super::files::FILE_MODE);
        }
        match options.open(&path) {
            Ok(file) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::Permissions::from_mode(super::files::FILE_MODE);
                    file.set_permissions(mode)
                        .with_context(|| format!("restricting {}", path.display()))?;
                }
                return Ok((path, file));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => {
                return Err(e).with_context(|| format!("creating {}", path.display()));
            }
        }
    }
    let error = last_error.unwrap_or_else(|| std::io::ErrorKind::AlreadyExists.into());
    Err(error).context("no free temporary name beside the backup")
}

/// Fails unless `path` is still the file created as `created` (not replaced meanwhile by
/// someone who can write the folder), so that what gets linked is the copy written here.
fn ensure_same_file(path: &Path, created: &std::fs::File) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let now = std::fs::symlink_metadata(path)?;
        let ours = created.metadata()?;
        if !now.is_file() || now.dev() != ours.dev() || now.ino() != ours.ino() {
            bail!("{} was replaced during the backup", path.display());
        }
    }
    #[cfg(not(unix))]
    let _ = (path, created);
    Ok(())
}

/// Makes the new directory entry durable (best effort: not every platform can open a folder).
fn sync_folder(file: &Path) {
    let folder = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = std::fs::File::open(folder) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_a_wal_database_while_another_connection_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("live.db");
        let writer = Connection::open(&source).expect("open");
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE users (v); PRAGMA user_version = 7;",
            )
            .expect("schema");
        for v in 0..100 {
            writer
                .execute("INSERT INTO users VALUES (?1)", [v])
                .expect("insert");
        }
        // An open read transaction elsewhere does not stop the copy.
        let dest = dir.path().join("copy.db");
        let report = backup(&source, &dest, Duration::from_secs(1)).expect("backup");
        assert_eq!(report.users, 100);
        assert_eq!(report.schema_version, 7);
        writer
            .execute("INSERT INTO users VALUES (100)", [])
            .expect("the writer goes on");
        let copy = Connection::open(&dest).expect("open copy");
        let n: i64 = copy
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 100, "the copy is the snapshot, not later writes");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let again = backup(&source, &dest, Duration::from_secs(1));
        assert!(again.is_err(), "never overwrites an existing file");
    }
}
