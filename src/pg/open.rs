//! Connecting to PostgreSQL: the connection pool a `postgres://` URL names, and the numbered
//! migrations in `migrations/postgres/`, applied in one transaction under an advisory lock (so
//! that nodes starting together migrate once) and recorded in `schema_migrations`.
//!
//! May depend on: postgres, r2d2, r2d2_postgres, anyhow, tracing, pg::tls.

use std::time::Duration;

use anyhow::{Context, bail};
use r2d2_postgres::PostgresConnectionManager;

use super::tls::{self, Tls};

/// A pool of connections to the deployment's database.
pub type Pool = r2d2::Pool<PostgresConnectionManager<Tls>>;

/// A connection checked out of a [`Pool`].
pub type Pooled = r2d2::PooledConnection<PostgresConnectionManager<Tls>>;

/// Migrations: `(version, sql)`, applied in order.
const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        include_str!("../../migrations/postgres/0001_baseline.sql"),
    ),
    (
        2,
        include_str!("../../migrations/postgres/0002_cluster.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_due_heads.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_pending_indexes.sql"),
    ),
];

/// Key of the advisory lock held while migrating ("reachd" in ASCII).
const MIGRATION_LOCK: i64 = 0x7265_6163_6864;

/// The schema version this binary writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// How long PostgreSQL lets a connection sit idle inside a transaction before ending it: a
/// node frozen mid-transaction (SIGSTOP, a long pause) must not hold the rows every writer
/// needs (the feed position, its member row) for longer than this. reachd's own transactions
/// never wait on their client for anything near it.
const IDLE_IN_TRANSACTION_MS: u64 = 2_000;

/// The connection settings and TLS connector `url` names (see `tls`), with reachd's settings:
/// `application_name` (`reachd/<node>`, so an operator can tell the nodes' connections apart)
/// and the idle-in-transaction limit.
pub fn connect_config(
    url: &str,
    node_id: &str,
    connect_timeout: Duration,
) -> anyhow::Result<(postgres::Config, Tls)> {
    let (mut config, tls) = tls::settings(url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(connect_timeout);
    }
    config.application_name(&format!("reachd/{node_id}"));
    let options = format!("-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}");
    let options = match config.get_options() {
        Some(theirs) => format!("{theirs} {options}"),
        None => options,
    };
    config.options(&options);
    Ok((config, tls))
}

/// A pool of `size` connections to `url` for node `node_id` (connections are made lazily,
/// checked on checkout).
pub fn pool(
    url: &str,
    node_id: &str,
    size: u32,
    connect_timeout: Duration,
) -> anyhow::Result<Pool> {
    let (config, tls) = connect_config(url, node_id, connect_timeout)?;
    let manager = PostgresConnectionManager::new(config, tls);
    r2d2::Pool::builder()
        .max_size(size.max(2))
        .min_idle(Some(1))
        .connection_timeout(connect_timeout.max(Duration::from_secs(1)))
        .build(manager)
        .with_context(|| format!("connecting to {}", super::redact_url(url)))
}

/// The schema version the database is at (0: empty).
pub fn schema_version(client: &mut postgres::Client) -> anyhow::Result<u32> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let version: Option<i32> = client
        .query_one("SELECT max(version) FROM schema_migrations", &[])?
        .get(0);
    Ok(version.unwrap_or(0).max(0) as u32)
}

/// Applies the migrations this database lacks, in one transaction; refuses a database newer
/// than this binary. Returns the version reached.
pub fn migrate(client: &mut postgres::Client) -> anyhow::Result<u32> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .context("waiting for the migration lock")?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at BIGINT  NOT NULL
         )",
    )?;
    let current: Option<i32> = tx
        .query_one("SELECT max(version) FROM schema_migrations", &[])?
        .get(0);
    let current = current.unwrap_or(0).max(0) as u32;
    if current > latest_version() {
        bail!(
            "the database is at schema version {current}, newer than this reachd \
             (version {}); run a newer reachd",
            latest_version()
        );
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)
            .with_context(|| format!("applying migration {version}"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&(*version as i32), &crate::domain::time::now_ms()],
        )?;
        tracing::info!(version, "migrated the PostgreSQL schema");
    }
    tx.commit().context("committing migrations")?;
    Ok(latest_version())
}
