//! `reachd backup` (SQLite only): a consistent copy taken while the server keeps writing,
//! checked with SQLite's own integrity check, refused over an existing file, and served as the
//! database of a new server after a restore.

mod common;

use common::process::{Server, reachd, succeeded, value_of};

fn serve(dir: &std::path::Path) -> (Server, Vec<String>, String) {
    let server = Server::start(reachd(dir));
    let (lines, addr) = (server.lines.clone(), server.addr.clone());
    (server, lines, addr)
}

#[test]
fn backup_copies_a_consistent_database_while_the_server_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, lines, addr) = serve(dir.path());
    let (sid, token) = (
        value_of(&lines, "account_sid"),
        value_of(&lines, "auth_token"),
    );
    let http = reqwest::blocking::Client::new();
    let created = http
        .post(format!("http://{addr}/chat/v2/Services"))
        .basic_auth(&sid, Some(&token))
        .form(&[("FriendlyName", "backup")])
        .send()
        .expect("create service");
    let service: serde_json::Value = created.json().expect("json");
    let svc = service["sid"].as_str().expect("sid").to_string();
    let users = format!("http://{addr}/chat/v2/Services/{svc}/Users");
    for i in 0..50 {
        let status = http
            .post(&users)
            .basic_auth(&sid, Some(&token))
            .form(&[("Identity", format!("before-{i}"))])
            .send()
            .expect("user")
            .status();
        assert_eq!(status, 201);
    }
    // Keep writing from another thread while the backup runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, http, users, sid, token) = (
            stop.clone(),
            http.clone(),
            users.clone(),
            sid.clone(),
            token.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ok = http
                    .post(&users)
                    .basic_auth(&sid, Some(&token))
                    .form(&[("Identity", format!("during-{n}"))])
                    .send()
                    .map(|r| r.status() == 201)
                    .unwrap_or(false);
                assert!(ok, "writes keep working during the backup");
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = reachd(dir.path())
        .args(["backup", "copy.db"])
        .output()
        .expect("backup");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written_during = writer.join().expect("writer thread");
    let printed = succeeded(&out);
    assert!(
        printed.contains("backed up") && printed.contains("users"),
        "{printed}"
    );
    assert!(written_during > 0);

    let copy = rusqlite::Connection::open(dir.path().join("copy.db")).expect("open copy");
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(check, "ok");
    let before: i64 = copy
        .query_row(
            "SELECT count(*) FROM users WHERE identity LIKE 'before-%'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(
        before, 50,
        "everything committed before the backup is in it"
    );
    let refused = reachd(dir.path())
        .args(["backup", "copy.db"])
        .output()
        .expect("backup again");
    assert_eq!(refused.status.code(), Some(1));
    drop(server);

    // Restore: the copy serves as the database of a new server.
    let restored = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(restored.path().join("data")).expect("data dir");
    std::fs::copy(
        dir.path().join("copy.db"),
        restored.path().join("data/reachd.db"),
    )
    .expect("restore");
    let (_server, lines, addr) = serve(restored.path());
    assert!(
        !lines.iter().any(|l| l.contains("auth_token")),
        "same account"
    );
    let listed: serde_json::Value = http
        .get(format!(
            "http://{addr}/chat/v2/Services/{svc}/Users?PageSize=100"
        ))
        .basic_auth(&sid, Some(&token))
        .send()
        .expect("list")
        .json()
        .expect("json");
    let n = listed["users"].as_array().map_or(0, Vec::len);
    assert!(n >= 50, "{n} users after restore");
}
