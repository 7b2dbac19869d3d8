//! The binary as a user runs it: configuration errors exit 2, the first start prints
//! credentials once, and `reachd keys` works against a running server's database.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_reachd");

fn reachd(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("REACHD_ACCOUNT_SID")
        .env_remove("REACHD_AUTH_TOKEN")
        .env("REACHD_DATABASE", dir.join("data/reachd.db"))
        .env("REACHD_LISTEN", "127.0.0.1:0")
        .env("REACHD_LOG", "warn");
    cmd
}

/// A running `reachd serve`, killed and reaped on drop (also when a test panics).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve`, returns the process, the stdout lines up to "listening", and the address.
fn serve(dir: &std::path::Path) -> (Server, Vec<String>, String) {
    let mut server = Server(
        reachd(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let stdout = server.0.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reader = BufReader::new(stdout);
    loop {
        assert!(Instant::now() < deadline, "server did not start: {lines:?}");
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read") == 0 {
            panic!("server exited: {lines:?}");
        }
        let line = line.trim_end().to_string();
        if let Some(addr) = line.strip_prefix("reachd listening on ") {
            let addr = addr.to_string();
            lines.push(line);
            return (server, lines, addr);
        }
        lines.push(line);
    }
}

fn value_of(lines: &[String], key: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{key} not printed: {lines:?}"))
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
        dir.path().join("data/reachd.db").exists(),
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
