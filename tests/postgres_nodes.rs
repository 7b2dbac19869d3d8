//! Several servers on one PostgreSQL database are nodes of one deployment: a second
//! `reachd serve` joins beside the first (each under its node id), the command line works
//! beside them, a killed node does not keep the others from serving, and `backup` names
//! `pg_dump`. Runs when `REACHD_TEST_DATABASE` is a postgres:// URL (as in `.ci/run`); the
//! cluster suite (`cluster.rs`) tests what the nodes do together. On SQLite, one server per
//! database is tested by `sqlite_single_server.rs`.

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

/// A node named `name` of the deployment on `dir`'s database.
fn node(dir: &std::path::Path, name: &str) -> std::process::Command {
    let mut cmd = with_account(dir);
    cmd.env("REACHD_CLUSTER__NODE_ID", name);
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

/// Members of the deployment as the database lists them: (node_id, lease still held).
fn members(dir: &std::path::Path) -> Vec<(String, bool)> {
    let url = common::test_database(&dir.join("data"));
    let out = std::process::Command::new("psql")
        .args([
            url.to_string_lossy().as_ref(),
            "-Atc",
            "SELECT node_id, lease_until > now() FROM cluster_members ORDER BY member",
        ])
        .output()
        .expect("psql");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(node, live)| (node.to_string(), live == "t"))
        .collect()
}

#[test]
fn servers_on_one_postgres_database_are_nodes_and_the_cli_works_beside_them() {
    if !common::on_postgres() {
        eprintln!("skipped: REACHD_TEST_DATABASE is not a postgres:// URL");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Server::start(node(dir.path(), "alpha"));
    let second = Server::start(node(dir.path(), "beta"));
    assert_eq!(services_status(&first.base()), 200);
    assert_eq!(services_status(&second.base()), 200);
    assert_eq!(
        members(dir.path()),
        vec![("alpha".to_string(), true), ("beta".to_string(), true)]
    );
    // The command line works beside the running nodes.
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
    // kill -9 of one node: the other serves on, and a new node joins.
    first.kill();
    assert_eq!(services_status(&second.base()), 200);
    let again = Server::start(node(dir.path(), "gamma"));
    assert_eq!(services_status(&again.base()), 200);
    // A graceful stop ends the node's lease at once.
    second.terminate();
    let listed = members(dir.path());
    assert!(listed.contains(&("gamma".to_string(), true)), "{listed:?}");
    assert!(
        !listed.contains(&("beta".to_string(), true)),
        "a stopped node holds no lease: {listed:?}"
    );
    again.terminate();
}
