//! One server per PostgreSQL database (until cluster mode exists): a second `reachd serve` on
//! the same database is refused while the command line keeps working beside the first, a
//! killed server's lock is released by PostgreSQL, and `backup` names `pg_dump`. Runs when
//! `REACHD_TEST_DATABASE` is a postgres:// URL (as in `.ci/run`); on SQLite the same rules
//! are tested by `sqlite_single_server.rs`.

mod common;

use common::process::{Server, reachd, succeeded};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "single-server-token-0123456789abcdef";

fn with_account(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = reachd(dir);
    cmd.env("REACHD_ACCOUNT_SID", SID)
        .env("REACHD_AUTH_TOKEN", TOKEN);
    cmd
}

fn services_status(base: &str) -> u16 {
    reqwest::blocking::Client::new()
        .get(format!("{base}/chat/v2/Services"))
        .basic_auth(SID, Some(TOKEN))
        .send()
        .expect("request")
        .status()
        .as_u16()
}

#[test]
fn a_second_server_on_the_same_postgres_database_is_refused_and_the_cli_still_works() {
    if !common::on_postgres() {
        eprintln!("skipped: REACHD_TEST_DATABASE is not a postgres:// URL");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Server::start(with_account(dir.path()));
    let second = with_account(dir.path())
        .arg("serve")
        .output()
        .expect("second server");
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another reachd server is already running on the database"),
        "{err}"
    );
    // The command line works beside the running server.
    succeeded(
        &reachd(dir.path())
            .args(["keys", "create"])
            .output()
            .expect("keys"),
    );
    assert!(
        succeeded(
            &reachd(dir.path())
                .args(["keys", "list"])
                .output()
                .expect("list")
        )
        .contains("SK")
    );
    let backup = reachd(dir.path())
        .args(["backup", "copy.db"])
        .output()
        .expect("backup");
    assert_eq!(backup.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&backup.stderr).contains("pg_dump"),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    assert!(!dir.path().join("copy.db").exists());
    assert_eq!(services_status(&first.base()), 200);
    // kill -9: PostgreSQL ends the lock's session, and another server may start.
    first.kill();
    let again = Server::start(with_account(dir.path()));
    assert_eq!(services_status(&again.base()), 200);
    again.terminate();
}
