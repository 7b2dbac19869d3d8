//! The binary as a user runs it: configuration errors exit 2, the first start prints
//! credentials once, and `reachd keys` works against a running server's database.

mod common;

use common::process::{Server, reachd};

fn serve(dir: &std::path::Path) -> (Server, Vec<String>, String) {
    let server = Server::start(reachd(dir));
    let (lines, addr) = (server.lines.clone(), server.addr.clone());
    (server, lines, addr)
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

#[test]
fn check_config_and_migrate_report_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = reachd(dir.path())
        .env("REACHD_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef")
        .env("REACHD_AUTH_TOKEN", "very-secret-token")
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
        !printed.contains("very-secret-token"),
        "secrets are redacted"
    );
    let bad = reachd(dir.path())
        .env("REACHD_LISTEN", "nope")
        .arg("check-config")
        .output()
        .expect("check-config");
    assert_eq!(bad.status.code(), Some(2));

    let out = reachd(dir.path()).arg("migrate").output().expect("migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!(
            "schema version {}",
            reachd::db::open::latest_version()
        )),
        "{printed}"
    );
    assert!(dir.path().join("data/reachd.db").exists());
}
