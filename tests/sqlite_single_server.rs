//! One server per SQLite database, and a database keeps its account: a second `reachd serve`
//! on the same file is refused while the CLI keeps working beside the first; a database URL
//! this build cannot serve is refused by name (an unreachable PostgreSQL URL fails without echoing
//! its password); configured credentials of another account are
//! refused at start, a changed auth token for the same account is a logged rotation.

mod common;

use std::process::Output;

use common::process::{Server, reachd, succeeded};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const OTHER_SID: &str = "ACfedcba9876543210fedcba9876543210";
const TOKEN: &str = "single-server-token-0123456789abcdef";

/// Runs a command that is expected to exit by itself; a server that keeps running instead is
/// killed after 20 s (and the test fails on its exit status).
fn run_to_exit(mut cmd: std::process::Command) -> Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait_with_output().expect("output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn with_account(dir: &std::path::Path, sid: &str, token: &str) -> std::process::Command {
    let mut cmd = reachd(dir);
    cmd.env("REACHD_ACCOUNT_SID", sid)
        .env("REACHD_AUTH_TOKEN", token);
    cmd
}

fn status_of(base: &str, sid: &str, token: &str) -> u16 {
    reqwest::blocking::Client::new()
        .get(format!("{base}/chat/v2/Services"))
        .basic_auth(sid, Some(token))
        .send()
        .expect("request")
        .status()
        .as_u16()
}

#[test]
fn a_second_server_on_the_same_database_is_refused_and_the_cli_still_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Server::start(with_account(dir.path(), SID, TOKEN));
    let mut second = with_account(dir.path(), SID, TOKEN);
    second.arg("serve");
    let second = run_to_exit(second);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("another reachd server is already running"),
        "{}",
        stderr(&second)
    );
    // The CLI works beside the running server.
    let service: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("{}/chat/v2/Services", first.base()))
        .basic_auth(SID, Some(TOKEN))
        .form(&[("FriendlyName", "beside")])
        .send()
        .expect("create service")
        .json()
        .expect("json");
    let service = service["sid"].as_str().unwrap_or_default().to_string();
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
    let token = succeeded(
        &reachd(dir.path())
            .args(["token", "--service", &service, "--identity", "alice"])
            .output()
            .expect("token"),
    );
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    succeeded(
        &reachd(dir.path())
            .args(["backup", "copy.db"])
            .output()
            .expect("backup"),
    );
    assert!(dir.path().join("copy.db").exists());
    succeeded(
        &reachd(dir.path())
            .arg("check-config")
            .output()
            .expect("check"),
    );
    // The first server still serves; once it is gone, another may start.
    assert_eq!(status_of(&first.base(), SID, TOKEN), 200);
    first.terminate();
    let again = Server::start(with_account(dir.path(), SID, TOKEN));
    assert_eq!(status_of(&again.base(), SID, TOKEN), 200);
}

#[test]
fn a_database_url_reachd_cannot_serve_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (url, named) in [
        ("mysql://root:hunter2@localhost/reachd", "mysql"),
        ("sqlite:./data/reachd.db", "sqlite"),
    ] {
        let mut cmd = reachd(dir.path());
        cmd.env("REACHD_DATABASE", url).arg("serve");
        let out = run_to_exit(cmd);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{url}: {err}");
        assert!(
            err.contains("database") && err.contains(named),
            "{url}: {err}"
        );
        assert!(!err.contains("hunter2"), "the password was echoed: {err}");
    }
    let created: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.map(|e| e.file_name()).expect("entry"))
        .collect();
    assert!(created.is_empty(), "created {created:?}");
}

#[test]
fn an_unreachable_postgres_url_fails_without_echoing_its_password_or_creating_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A free loopback port: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("postgres://reachd:hunter2@127.0.0.1:{port}/reachd");
    let mut cmd = reachd(dir.path());
    cmd.env("REACHD_DATABASE", &url).arg("serve");
    let out = run_to_exit(cmd);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("postgres://reachd:***@127.0.0.1:{port}/reachd")),
        "the message names the database, password hidden: {err}"
    );
    assert!(!err.contains("hunter2"), "the password was echoed: {err}");
    let created: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.map(|e| e.file_name()).expect("entry"))
        .collect();
    assert!(created.is_empty(), "created {created:?}");
}

#[test]
fn configured_credentials_of_another_account_are_refused_and_a_new_token_is_a_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(with_account(dir.path(), SID, TOKEN));
    server.terminate();

    // Another account's credentials (e.g. a fresh `reachd init` file) on this database.
    let mut cmd = with_account(dir.path(), OTHER_SID, TOKEN);
    cmd.arg("serve");
    let out = run_to_exit(cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(SID) && err.contains(OTHER_SID), "{err}");
    assert!(err.contains("new file"), "says how to fix it: {err}");

    // The stored account is untouched.
    let server = Server::start(reachd(dir.path()));
    assert_eq!(status_of(&server.base(), SID, TOKEN), 200);
    assert_eq!(status_of(&server.base(), OTHER_SID, TOKEN), 401);
    server.terminate();

    // The same account with a new auth token: an explicit, logged rotation.
    let rotated = "rotated-token-abcdef0123456789abcdef012345";
    let log = dir.path().join("rotation.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let server = Server::start_logging(with_account(dir.path(), SID, rotated), log_file);
    assert_eq!(status_of(&server.base(), SID, rotated), 200);
    assert_eq!(status_of(&server.base(), SID, TOKEN), 401);
    server.terminate();
    let logged = std::fs::read_to_string(&log).expect("read log");
    assert!(logged.contains("auth token rotated"), "{logged}");
    assert!(!logged.contains(rotated), "the token itself was logged");
}

#[test]
fn init_beside_an_existing_database_says_serving_it_would_be_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    Server::start(with_account(dir.path(), SID, TOKEN)).terminate();
    let out = reachd(dir.path())
        .env_remove("REACHD_DATABASE")
        .args(["init", "reachd.toml"])
        .output()
        .expect("init");
    let printed = succeeded(&out);
    assert!(
        printed.contains(&format!("belongs to account {SID}")),
        "{printed}"
    );
    assert!(printed.contains(".gitignore"), "{printed}");
}
