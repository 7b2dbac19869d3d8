//! Secrets at rest: the data folder reachd creates is 0700; the database, its `-wal` and
//! `-shm` files and backups are 0600 under a permissive umask; looser existing files are
//! tightened with a warning; a backup never writes through a file prepared at its temporary
//! name.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::process::{BIN, Server, reachd};

/// `reachd ARGS` (with the harness's environment for `dir`) under `umask 022`.
fn under_umask(dir: &Path, args: &[&str]) -> Command {
    let base = reachd(dir);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022; exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(args)
        .current_dir(dir);
    for (key, value) in base.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run reachd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_data_folder_database_wal_shm_and_backups_are_owner_only_under_umask_022() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let db = data.join("reachd.db");
    let server = Server::start(under_umask(dir.path(), &["serve"]));
    // The first start stored generated credentials: the WAL holds them.
    wait_for_file(&data.join("reachd.db-wal"));
    wait_for_file(&data.join("reachd.db-shm"));
    assert_eq!(mode(&data), 0o700, "the data folder");
    assert_eq!(mode(&db), 0o600, "the database");
    assert_eq!(mode(&data.join("reachd.db-wal")), 0o600, "the WAL");
    assert_eq!(
        mode(&data.join("reachd.db-shm")),
        0o600,
        "the shared-memory file"
    );

    run(&mut under_umask(dir.path(), &["backup", "copy.db"]));
    assert_eq!(mode(&dir.path().join("copy.db")), 0o600, "the backup");

    run(&mut under_umask(dir.path(), &["init", "reachd.toml"]));
    assert_eq!(
        mode(&dir.path().join("reachd.toml")),
        0o600,
        "the init file"
    );
    server.terminate();
}

#[test]
fn an_existing_database_with_loose_modes_is_tightened_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data/reachd.db");
    // Killed, so its -wal and -shm stay behind too.
    Server::start(reachd(dir.path())).kill();
    let mut loose = vec![db.clone()];
    for suffix in ["-wal", "-shm"] {
        let side = dir.path().join(format!("data/reachd.db{suffix}"));
        if side.exists() {
            loose.push(side);
        }
    }
    for path in &loose {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }

    let log_path = dir.path().join("stderr.log");
    let logs = std::fs::File::create(&log_path).expect("log file");
    let server = Server::start_logging(under_umask(dir.path(), &["serve"]), logs);
    for path in &loose {
        assert_eq!(mode(path), 0o600, "{} tightened", path.display());
    }
    wait_for_file(&dir.path().join("data/reachd.db-wal"));
    assert_eq!(mode(&dir.path().join("data/reachd.db-wal")), 0o600);
    // The warning was logged before the server said it was listening.
    server.kill();
    let text = std::fs::read_to_string(&log_path).expect("read logs");
    assert!(
        text.contains("WARN") && text.contains("made owner-only") && text.contains("reachd.db"),
        "a warning names the file: {text}"
    );
}

#[test]
fn a_backup_never_writes_through_a_symlink_at_the_old_temporary_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("live.db");
    let writer = rusqlite::Connection::open(&source).expect("open");
    writer
        .execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE users (v); INSERT INTO users VALUES (1), (2);",
        )
        .expect("schema");
    // The attacker's file, and a symlink to it at the name the backup used to write to.
    let attacker = dir.path().join("attacker-owned");
    std::fs::write(&attacker, b"").expect("attacker file");
    let dest = dir.path().join("copy.db");
    let old_name = dir
        .path()
        .join(format!("copy.db.partial-{}", std::process::id()));
    symlink(&attacker, &old_name).expect("symlink");

    let report = reachd::db::backup::backup(&source, &dest, Duration::from_secs(5))
        .expect("the backup neither fails nor uses the prepared name");
    assert_eq!(report.users, 2);
    assert_eq!(
        std::fs::metadata(&attacker).expect("attacker file").len(),
        0,
        "nothing was written through the symlink"
    );
    let link = std::fs::symlink_metadata(&dest).expect("backup");
    assert!(link.is_file(), "the backup is a regular file, not a link");
    assert_eq!(mode(&dest), 0o600, "the backup is owner-only");
    let copy = rusqlite::Connection::open(&dest).expect("open copy");
    let n: i64 = copy
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 2);
}
