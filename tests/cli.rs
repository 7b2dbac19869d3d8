//! The binary as a user runs it: configuration errors exit 2, the first start prints
//! credentials once, and `reachd keys` works against a running server's database.

mod common;

use common::process::{Server, reachd, succeeded, value_of};

fn serve(dir: &std::path::Path) -> (Server, Vec<String>, String) {
    let server = Server::start(reachd(dir));
    let (lines, addr) = (server.lines.clone(), server.addr.clone());
    (server, lines, addr)
}

#[test]
fn invalid_configuration_exits_with_code_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = reachd(dir.path())
        .env("REACHD_LISTEN", "not-an-address")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
    let out = reachd(dir.path())
        .env("REACHD_PRESENCE__SESSION_TTL_MS", "5")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = reachd(dir.path())
        .env("REACHD_HTTP__MAX_CONNECTIONS", "0")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.max_connections"));
    std::fs::write(dir.path().join("bad.toml"), "log_format = \"xml\"\n").expect("write");
    let out = reachd(dir.path())
        .args(["--config", "bad.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log_format"));
    let out = reachd(dir.path())
        .args(["--config", "missing.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn first_start_prints_credentials_once_and_keys_work_against_the_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, lines, addr) = serve(dir.path());
    let sid = value_of(&lines, "account_sid");
    let token = value_of(&lines, "auth_token");
    assert!(sid.starts_with("AC") && sid.len() == 34);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("client.chat.base_url = \"http://") && l.contains("/chat\"")),
        "{lines:?}"
    );
    assert!(
        common::on_postgres() || dir.path().join("data/reachd.db").exists(),
        "the data folder is created"
    );

    let http = reqwest::blocking::Client::new();
    let services = format!("http://{addr}/chat/v2/Services");
    assert_eq!(
        http.get(&services)
            .basic_auth(&sid, Some(&token))
            .send()
            .expect("get")
            .status(),
        200
    );

    // keys create against the running server's database.
    let out = reachd(dir.path())
        .args(["keys", "create", "--friendly-name", "ci"])
        .output()
        .expect("keys create");
    succeeded(&out);
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let (ksid, secret) = (
        key["sid"].as_str().unwrap_or_default(),
        key["secret"].as_str().unwrap_or_default(),
    );
    assert!(ksid.starts_with("SK"));
    assert_eq!(
        http.get(&services)
            .basic_auth(ksid, Some(secret))
            .send()
            .expect("get")
            .status(),
        200
    );
    let list = reachd(dir.path())
        .args(["keys", "list"])
        .output()
        .expect("keys list");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains(ksid) && !listed.contains(secret),
        "{listed}"
    );
    let revoke = reachd(dir.path())
        .args(["keys", "revoke", ksid])
        .output()
        .expect("revoke");
    assert!(revoke.status.success());
    assert_eq!(
        http.get(&services)
            .basic_auth(ksid, Some(secret))
            .send()
            .expect("get")
            .status(),
        401
    );
    let again = reachd(dir.path())
        .args(["keys", "revoke", ksid])
        .output()
        .expect("revoke");
    assert!(!again.status.success());
    drop(first);

    // Second start: same credentials, nothing printed.
    let (second, lines, addr) = serve(dir.path());
    assert!(!lines.iter().any(|l| l.contains("auth_token")), "{lines:?}");
    let services = format!("http://{addr}/chat/v2/Services");
    assert_eq!(
        http.get(&services)
            .basic_auth(&sid, Some(&token))
            .send()
            .expect("get")
            .status(),
        200
    );
    drop(second);
}

#[test]
fn check_config_and_migrate_report_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = reachd(dir.path())
        .env("REACHD_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef")
        .env("REACHD_AUTH_TOKEN", "very-secret-token-0123456789abcdef")
        .arg("check-config")
        .output()
        .expect("check-config");
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("configuration is valid") && printed.contains("session_ttl_ms"),
        "{printed}"
    );
    assert!(
        !printed.contains("very-secret-token-0123456789abcdef"),
        "secrets are redacted"
    );
    let bad = reachd(dir.path())
        .env("REACHD_LISTEN", "nope")
        .arg("check-config")
        .output()
        .expect("check-config");
    assert_eq!(bad.status.code(), Some(2));

    let out = reachd(dir.path()).arg("migrate").output().expect("migrate");
    let printed = succeeded(&out);
    assert!(
        printed.contains(&format!(
            "schema version {}",
            if common::on_postgres() {
                reachd::pg::open::latest_version()
            } else {
                reachd::db::open::latest_version()
            }
        )),
        "{printed}"
    );
    assert!(common::on_postgres() || dir.path().join("data/reachd.db").exists());
}

#[test]
fn init_writes_a_private_config_the_server_runs_with_and_never_overwrites_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = reachd(dir.path())
        .args(["init", "reachd.toml"])
        .output()
        .expect("init");
    succeeded(&out);
    let path = dir.path().join("reachd.toml");
    let text = std::fs::read_to_string(&path).expect("written");
    let sid = text
        .lines()
        .find_map(|l| l.strip_prefix("account_sid = \""))
        .map(|v| v.trim_end_matches('"').to_string())
        .expect("account_sid set");
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("auth_token = \""))
        .map(|v| v.trim_end_matches('"').to_string())
        .expect("auth_token set");
    assert!(sid.starts_with("AC") && sid.len() == 34 && token.len() == 32);
    // A PostgreSQL database named by the environment goes into the file; a file path does not.
    let database = text
        .lines()
        .find_map(|l| l.strip_prefix("database = \""))
        .map(|v| v.trim_end_matches('"').to_string())
        .expect("database set");
    if common::on_postgres() {
        let url = common::test_database(&dir.path().join("data"));
        assert_eq!(database, url.to_string_lossy());
    } else {
        assert_eq!(database, "./data/reachd.db");
    }
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&token),
        "the token stays in the file"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = reachd(dir.path())
        .args(["init", "reachd.toml"])
        .output()
        .expect("init again");
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&path).expect("kept"), text);

    // The server takes the account from the file and prints no generated credentials.
    let mut cmd = reachd(dir.path());
    cmd.args(["--config", "reachd.toml"]);
    let server = Server::start(cmd);
    assert!(!server.lines.iter().any(|l| l.contains("auth_token")));
    let status = reqwest::blocking::Client::new()
        .get(format!("http://{}/chat/v2/Services", server.addr))
        .basic_auth(&sid, Some(&token))
        .send()
        .expect("get")
        .status();
    assert_eq!(status, 200);
}

#[test]
fn keys_and_token_refuse_a_database_that_does_not_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        vec!["keys", "list"],
        vec!["keys", "create"],
        vec![
            "token",
            "--service",
            "IS0123456789abcdef0123456789abcdef",
            "--identity",
            "a",
        ],
    ] {
        let out = reachd(dir.path()).args(&args).output().expect("run");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let missing = if common::on_postgres() {
            "no reachd schema in"
        } else {
            "no database at"
        };
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(missing),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        !dir.path().join("data/reachd.db").exists(),
        "nothing created"
    );
}

#[test]
fn logs_written_to_a_file_are_plain_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("stderr.log");
    let logs = std::fs::File::create(&log_path).expect("log file");
    let mut cmd = reachd(dir.path());
    cmd.env("REACHD_LOG", "info");
    let server = Server::start_logging(cmd, logs);
    server.terminate();
    let text = std::fs::read_to_string(&log_path).expect("read logs");
    assert!(text.contains("INFO"), "the server logged: {text}");
    assert!(!text.contains('\x1b'), "no terminal escape codes: {text:?}");
}

#[test]
fn json_logs_carry_request_ids_and_never_an_access_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("stderr.log");
    let logs = std::fs::File::create(&log_path).expect("log file");
    let mut cmd = reachd(dir.path());
    cmd.env("REACHD_LOG", "info")
        .env("REACHD_LOG_FORMAT", "json");
    let server = Server::start_logging(cmd, logs);
    let secret_token =
        "eyJhbGciOiJIUzI1NiJ9.eyJzZWNyZXQiOiJ0b2tlbi1tYXJrZXIifQ.c2lnbmF0dXJlLW1hcmtlcg";
    let http = reqwest::blocking::Client::new();
    for path in [
        format!("/client/v1/socket?token={secret_token}"),
        format!("/client/v1/users/alice?token={secret_token}"),
    ] {
        let status = http
            .get(format!("http://{}{path}", server.addr))
            .send()
            .expect("get")
            .status();
        assert!(status.is_client_error(), "{status}");
    }
    server.terminate();
    let text = std::fs::read_to_string(&log_path).expect("read logs");
    assert!(
        text.contains("request_id"),
        "request spans are logged: {text}"
    );
    assert!(
        text.contains("/client/v1/socket"),
        "the path is logged: {text}"
    );
    assert!(
        !text.contains("token-marker") && !text.contains(secret_token),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    }
}

/// `reachd` started through `sh` with the given `ulimit` commands run first (`exec` keeps the
/// process id), its logs in `log_path`.
fn serve_with_limits(dir: &std::path::Path, ulimits: &str, log_path: &std::path::Path) -> Server {
    let template = reachd(dir);
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        &format!("{ulimits} && exec \"$0\""),
        common::process::BIN,
    ])
    .current_dir(dir);
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let logs = std::fs::File::create(log_path).expect("log file");
    Server::start_logging(cmd, logs)
}

/// The soft and hard "Max open files" of a running process.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit_and_a_short_one_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("stderr.log");
    let server = serve_with_limits(dir.path(), "ulimit -Sn 256 && ulimit -Hn 4096", &log_path);
    assert_eq!(open_file_limits(server.child.id()), (4096, 4096));
    server.terminate();
    let text = std::fs::read_to_string(&log_path).expect("read logs");
    assert!(
        text.contains("http.max_connections") && text.contains("101024"),
        "4,096 descriptors cannot hold the default 100,000 connections: {text}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("stderr.log");
    let server = serve_with_limits(
        dir.path(),
        "export REACHD_HTTP__MAX_CONNECTIONS=3000 && ulimit -Sn 256 && ulimit -Hn 4096",
        &log_path,
    );
    assert_eq!(open_file_limits(server.child.id()), (4096, 4096));
    server.terminate();
    let text = std::fs::read_to_string(&log_path).expect("read logs");
    assert!(
        !text.contains("open-file limit"),
        "3,000 connections fit in 4,096 descriptors: {text}"
    );
}
