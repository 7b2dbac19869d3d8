//! Configuration as a new user meets it: a short session TTL alone is accepted (the flush
//! interval follows it), a bad flush interval is named as such, and `check-config` prints the
//! effective configuration as TOML that loads back, without secrets.

mod common;

use common::process::reachd;

#[test]
fn a_short_ttl_alone_is_accepted_and_the_flush_interval_follows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = reachd(dir.path())
        .env("REACHD_PRESENCE__SESSION_TTL_MS", "2000")
        .env("REACHD_PRESENCE__PING_INTERVAL_MS", "500")
        .arg("check-config")
        .output()
        .expect("check-config");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("derived from the TTL, 500 ms"),
        "{printed}"
    );

    let out = reachd(dir.path())
        .env("REACHD_PRESENCE__SESSION_TTL_MS", "2000")
        .env("REACHD_PRESENCE__PING_INTERVAL_MS", "500")
        .env("REACHD_PRESENCE__FLUSH_INTERVAL_MS", "3000")
        .arg("check-config")
        .output()
        .expect("check-config");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("presence.flush_interval_ms"), "{err}");
}

#[test]
fn check_config_prints_toml_that_loads_back_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "check-config-secret-token-0123456789abcdef";
    let out = reachd(dir.path())
        .env("REACHD_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef")
        .env("REACHD_AUTH_TOKEN", token)
        .env("REACHD_LISTEN", "127.0.0.1:9191")
        .arg("check-config")
        .output()
        .expect("check-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!printed.contains(token), "{printed}");
    assert!(!printed.contains("default."), "a Debug dump: {printed}");
    assert!(printed.contains("listen = \"127.0.0.1:9191\""), "{printed}");
    let saved = dir.path().join("effective.toml");
    std::fs::write(&saved, &printed).expect("save");
    let reloaded = reachd(dir.path())
        .env_remove("REACHD_LISTEN")
        .args(["--config", "effective.toml", "check-config"])
        .output()
        .expect("reload");
    assert!(
        reloaded.status.success(),
        "{}",
        String::from_utf8_lossy(&reloaded.stderr)
    );
    assert!(String::from_utf8_lossy(&reloaded.stdout).contains("127.0.0.1:9191"));
}
