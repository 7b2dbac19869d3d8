//! Owner-only database files: the folders reachd creates for the database are 0700, and the
//! database with its `-wal`, `-shm` and `-journal` files is 0600 whatever the umask, because
//! they hold the auth token, API key secrets, webhook secrets and push credentials' private
//! keys in plain form. Existing files with looser modes are tightened and reported, so the
//! caller can warn.
//!
//! May depend on: std.

use std::io;
use std::path::{Path, PathBuf};

/// Mode of the database and every file beside it that holds its pages.
pub const FILE_MODE: u32 = 0o600;
/// Mode of a folder reachd creates for the database.
pub const FOLDER_MODE: u32 = 0o700;

/// Suffixes of the files SQLite keeps beside a database.
const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// A file whose mode let others read or write it, and that is now owner-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    pub path: PathBuf,
    /// The permission bits it had (e.g. 0o644).
    pub was: u32,
}

impl std::fmt::Display for Tightened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} was mode {:o}, readable beyond its owner; changed to {:o}",
            self.path.display(),
            self.was,
            FILE_MODE
        )
    }
}

/// Before SQLite opens `db`: creates its missing folders (0700) and the database file itself
/// (empty, 0600) so that SQLite never creates it with the umask's mode, and tightens an
/// existing database and its side files. SQLite gives the `-wal`, `-shm` and `-journal` files
/// it creates the database file's mode, so they start owner-only too.
pub fn prepare(db: &Path) -> io::Result<Vec<Tightened>> {
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_folders(dir)?;
    }
    create_owner_only(db)?;
    tighten(db)
}

/// Tightens `db` and its side files that exist (a safety net after opening).
pub fn tighten(db: &Path) -> io::Result<Vec<Tightened>> {
    let mut tightened = Vec::new();
    for path in std::iter::once(db.to_path_buf()).chain(side_files(db)) {
        if let Some(t) = tighten_file(&path)? {
            tightened.push(t);
        }
    }
    Ok(tightened)
}

/// `db` with each side-file suffix appended.
pub fn side_files(db: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    SIDE_FILES.iter().map(move |suffix| {
        let mut name = db.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// Creates `dir` and its missing parents; each folder created here is made 0700 (folders
/// that already existed keep their mode: the operator chose it).
fn create_folders(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    for folder in missing.into_iter().filter(|d| !d.as_os_str().is_empty()) {
        set_mode(folder, FOLDER_MODE)?;
    }
    Ok(())
}

/// Creates an empty owner-only file at `path` unless something is there already.
fn create_owner_only(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    match options.open(path) {
        // The umask can only clear bits; set the mode exactly in case it cleared the owner's.
        Ok(_) => set_mode(path, FILE_MODE),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn tighten_file(path: &Path) -> io::Result<Option<Tightened>> {
    use std::os::unix::fs::PermissionsExt;
    // Only regular files: a symlink's target is not ours to change.
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let was = meta.permissions().mode() & 0o777;
    if was & 0o077 == 0 {
        return Ok(None);
    }
    set_mode(path, FILE_MODE)?;
    Ok(Some(Tightened {
        path: path.to_path_buf(),
        was,
    }))
}

#[cfg(not(unix))]
fn tighten_file(_path: &Path) -> io::Result<Option<Tightened>> {
    Ok(None)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn new_folders_and_the_database_are_owner_only_and_loose_files_are_tightened() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let db = dir.path().join("a/b/reachd.db");
        assert_eq!(prepare(&db).expect("prepare"), Vec::new());
        assert_eq!(mode(&dir.path().join("a")), FOLDER_MODE);
        assert_eq!(mode(&dir.path().join("a/b")), FOLDER_MODE);
        assert_eq!(mode(dir.path()), 0o755, "an existing folder keeps its mode");
        assert_eq!(mode(&db), FILE_MODE);

        let wal = dir.path().join("a/b/reachd.db-wal");
        std::fs::write(&wal, b"").expect("wal");
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let tightened = prepare(&db).expect("again");
        assert_eq!(
            tightened,
            vec![
                Tightened {
                    path: db.clone(),
                    was: 0o640
                },
                Tightened {
                    path: wal.clone(),
                    was: 0o644
                }
            ]
        );
        assert_eq!((mode(&db), mode(&wal)), (FILE_MODE, FILE_MODE));
    }
}
