//! TLS to PostgreSQL: a server of its own with `ssl=on` and a certificate from a test CA
//! (for `localhost` only), and reachd connecting to it as each `sslmode` says — the server
//! itself on `verify-full`, with every one of its connections encrypted, and the refusals
//! (an unknown CA, a certificate for another name) named. Runs where the PostgreSQL suites
//! run (`REACHD_TEST_DATABASE` set: the package is installed).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A test CA's certificate (PEM) and the issuer to sign with.
fn certificate_authority(name: &str) -> (String, CertifiedIssuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    (ca.pem(), ca)
}

/// A PostgreSQL server serving TLS with `server.crt`/`server.key` from `tls`; stopped on drop.
struct TlsServer {
    dir: tempfile::TempDir,
    port: u16,
}

impl TlsServer {
    fn start(tls: &Path) -> TlsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("bash")
            .args(["tests/support/postgres.sh", "start"])
            .arg(dir.path().join("pg"))
            .env("REACHD_PG_TLS", tls)
            .output()
            .expect("run postgres.sh");
        assert!(
            out.status.success(),
            "PostgreSQL with TLS did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let port = url::Url::parse(&url)
            .ok()
            .and_then(|u| u.port())
            .expect("the server's port");
        TlsServer { dir, port }
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args(["tests/support/postgres.sh", "stop"])
            .arg(self.dir.path().join("pg"))
            .status();
    }
}

/// Connects as reachd would to `url` and answers whether the connection is encrypted; the
/// error (with its causes) when it cannot connect.
fn encrypted(url: &str) -> Result<bool, String> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let (config, tls) = reachd::pg::tls::settings(&url).map_err(|e| format!("{e:#}"))?;
        let mut client = config.connect(tls).map_err(|e| with_causes(&e))?;
        client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .map(|row| row.get::<_, bool>(0))
            .map_err(|e| with_causes(&e))
    })
    .join()
    .expect("connecting thread")
}

/// An error and its causes, outermost first.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write PEM");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reachd_speaks_tls_to_postgres_as_sslmode_says() {
    if !on_postgres() {
        eprintln!("note: REACHD_TEST_DATABASE is not a postgres:// URL; skipping");
        return;
    }
    let files = tempfile::tempdir().expect("tempdir");
    let (ca_pem, ca) = certificate_authority("reachd test CA");
    let (other_ca_pem, _) = certificate_authority("another CA");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    write(files.path(), "server.crt", &cert.pem());
    write(files.path(), "server.key", &key.serialize_pem());
    let root = write(files.path(), "root.crt", &ca_pem);
    let other_root = write(files.path(), "other.crt", &other_ca_pem);
    let server = TlsServer::start(files.path());
    let (root, other_root) = (root.display(), other_root.display());

    // What each mode does with a certificate for `localhost` from the test CA.
    let full = format!("sslmode=verify-full&sslrootcert={root}");
    assert_eq!(encrypted(&server.url("localhost", &full)), Ok(true));
    assert_eq!(
        encrypted(&server.url("localhost", "sslmode=require")),
        Ok(true)
    );
    assert_eq!(encrypted(&server.url("localhost", "")), Ok(true), "prefer");
    assert_eq!(
        encrypted(&server.url("localhost", "sslmode=disable")),
        Ok(false)
    );
    // The name is checked by verify-full only.
    let refused = encrypted(&server.url("127.0.0.1", &full)).expect_err("another name");
    assert!(refused.contains("not valid for name"), "{refused}");
    let chain_only = format!("sslmode=verify-ca&sslrootcert={root}");
    assert_eq!(encrypted(&server.url("127.0.0.1", &chain_only)), Ok(true));
    // A CA that did not sign it: refused by every checking mode, `require` included once a
    // root is given (libpq's meaning).
    for mode in ["verify-full", "verify-ca", "require"] {
        let query = format!("sslmode={mode}&sslrootcert={other_root}");
        let refused = encrypted(&server.url("localhost", &query)).expect_err("unknown CA");
        assert!(refused.contains("UnknownIssuer"), "{mode}: {refused}");
    }
    // Without sslrootcert, verify-full trusts the public web CAs, which did not sign it.
    let refused =
        encrypted(&server.url("localhost", "sslmode=verify-full")).expect_err("public CAs");
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    // The command line takes the URL too (its settings are validated first).
    let out = Command::new(env!("CARGO_BIN_EXE_reachd"))
        .arg("migrate")
        .env("REACHD_DATABASE", server.url("localhost", &full))
        .output()
        .expect("reachd migrate");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("schema version"),
        "{said} {out:?}"
    );

    // The server on verify-full: it serves, and every connection it holds is encrypted.
    let database = server.url("localhost", &full);
    let s = spawn_with(|c| c.database = database.clone().into()).await;
    let sid = s.service("over TLS").await;
    assert_eq!(s.get(&format!("/chat/v2/Services/{sid}")).await.status, 200);
    let check = server.url("localhost", &full);
    let connections = tokio::task::spawn_blocking(move || {
        let (config, tls) = reachd::pg::tls::settings(&check).expect("settings");
        let mut client = config.connect(tls).expect("connect");
        client
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.application_name LIKE 'reachd/%'",
                &[],
            )
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
            .expect("connections")
    })
    .await
    .expect("check");
    assert!(
        connections.0 >= 3,
        "pool, lease and listener: {connections:?}"
    );
    assert_eq!(connections.1, 0, "no plaintext connection");
    s.stop().await;

    // The server on a CA that did not sign the certificate does not start, and says why.
    let refused = format!("sslmode=verify-full&sslrootcert={other_root}");
    let database = server.url("localhost", &refused);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.database = database.into();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let error = reachd::app::start(config, listener)
        .await
        .err()
        .expect("refused");
    let message = format!("{error:#}");
    assert!(message.contains("UnknownIssuer"), "{message}");
}
