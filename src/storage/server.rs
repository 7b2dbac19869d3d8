//! Opening the configured backend: for a server (the three storage ports over one store, the
//! writer with the composition root's commit hooks, and what must happen when it stops) and
//! for the command line's maintenance commands. The only place that chooses a backend from
//! the `database` setting.
//!
//! May depend on: config, domain, storage::{cache, commit}, db (SQLite), pg (PostgreSQL).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use super::cache::ServiceCache;
use super::commit::{CommitHook, WriterStats};
use crate::config::{Config, DatabaseLocation};
use crate::db::admin::SqliteAdmin;
use crate::db::checkpoint::Checkpointer;
use crate::db::server_lock::{ServerLock, lock_for_server};
use crate::db::user_cache::{InvalidateUsers, UserCache, watch_users};
use crate::db::{Database, OpenOptions, SqliteStore};
use crate::domain::admin::{AdminStore, Opening};
use crate::domain::cluster::{ClusterNotice, ClusterStore};
use crate::domain::store::{OutboxStore, PresenceStore, Store};
use crate::pg::cluster::PgCluster;
use crate::pg::{PgAdmin, PgStore};

/// How often the SQLite checkpointer runs. Once the log reaches its limit the writer copies
/// whatever the checkpointer has not yet: at 1 s that stalled a webhook burst for 30-45 ms.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// A server's storage: one store seen through each port, and how to stop it.
pub struct ServerStorage {
    pub store: Arc<dyn Store>,
    pub outbox: Arc<dyn OutboxStore>,
    pub presence: Arc<dyn PresenceStore>,
    pub writer_stats: Arc<WriterStats>,
    /// A backend that serves several nodes: its cluster port, and the notices of what other
    /// nodes commit (taken once by the composition root).
    pub cluster: Option<ClusterStorage>,
    closer: Closer,
}

/// The cluster side of a backend shared by several nodes.
pub struct ClusterStorage {
    pub store: Arc<dyn ClusterStore>,
    pub notices: mpsc::UnboundedReceiver<ClusterNotice>,
    /// What this node's own notices carry as their origin.
    pub origin: String,
}

enum Closer {
    Sqlite {
        writer: crate::db::writer::Writer,
        writer_thread: std::thread::JoinHandle<()>,
        checkpointer: Checkpointer,
        /// Released after the final checkpoint.
        lock: ServerLock,
    },
    Postgres {
        writer: crate::pg::writer::Writer,
        writer_thread: std::thread::JoinHandle<()>,
        /// Stopped once the writer has.
        listener: crate::pg::listen::Listener,
    },
}

impl ServerStorage {
    /// One store seen through each port.
    fn over<S>(
        store: Arc<S>,
        writer_stats: Arc<WriterStats>,
        cluster: Option<ClusterStorage>,
        closer: Closer,
    ) -> Self
    where
        S: Store + OutboxStore + PresenceStore,
    {
        ServerStorage {
            store: store.clone(),
            outbox: store.clone(),
            presence: store,
            writer_stats,
            cluster,
            closer,
        }
    }

    /// Commits what is queued, stops the writer (and on SQLite checkpoints and releases the
    /// file's lock). Call once nothing submits writes any more.
    pub async fn close(self) -> anyhow::Result<()> {
        let join = |thread: std::thread::JoinHandle<()>| async move {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .context("joining the writer")?
                .map_err(|_| anyhow::anyhow!("the writer thread panicked"))
        };
        match self.closer {
            Closer::Sqlite {
                writer,
                writer_thread,
                checkpointer,
                lock,
            } => {
                writer.stop().await;
                join(writer_thread).await?;
                tokio::task::spawn_blocking(move || checkpointer.stop())
                    .await
                    .context("final checkpoint")?;
                drop(lock);
            }
            Closer::Postgres {
                writer,
                writer_thread,
                listener,
            } => {
                writer.stop().await;
                join(writer_thread).await?;
                listener.stop();
            }
        }
        Ok(())
    }
}

/// The commit hooks, made once `prepare` has answered (they may need what it read).
pub type HooksFor<'a, B> = Box<dyn FnOnce(&B) -> Vec<Box<dyn CommitHook>> + Send + 'a>;

/// Opens (creating and migrating as needed) the configured database for a server. `prepare`
/// runs on the maintenance port before the writer starts (account bootstrap, config
/// endpoints, the feed's position); the hooks `hooks` makes from its answer receive every
/// commit. Blocks: call it off the async worker threads.
pub fn open_server<B>(
    config: &Config,
    services: Arc<ServiceCache>,
    hooks: HooksFor<'_, B>,
    prepare: impl FnOnce(&dyn AdminStore) -> anyhow::Result<B>,
) -> anyhow::Result<(ServerStorage, B)> {
    match config.database_location() {
        DatabaseLocation::Sqlite(_) => open_sqlite_server(config, services, hooks, prepare),
        DatabaseLocation::Postgres(url) => {
            open_postgres_server(config, &url, services, hooks, prepare)
        }
    }
}

fn open_sqlite_server<B>(
    config: &Config,
    services: Arc<ServiceCache>,
    hooks: HooksFor<'_, B>,
    prepare: impl FnOnce(&dyn AdminStore) -> anyhow::Result<B>,
) -> anyhow::Result<(ServerStorage, B)> {
    let options = sqlite_options(config);
    // The folder (0700) and file (0600) exist before the lock is taken on the file.
    crate::db::open::warn_tightened(&crate::db::open::prepare_files(&options.path)?);
    let lock = lock_for_server(&options.path)?;
    let db = Database::open(&options)?;
    let checkpointer =
        Checkpointer::start(&options.path, options.busy_timeout, CHECKPOINT_INTERVAL)?;
    let prepared = {
        let admin = SqliteAdmin::open(&options.path, options.busy_timeout, Opening::Existing)?;
        prepare(&admin)?
    };
    let Database { writer, reads, .. } = db;
    let users = Arc::new(UserCache::default());
    watch_users(&writer, users.clone()).context("watching the users table")?;
    let mut hooks = hooks(&prepared);
    hooks.push(Box::new(InvalidateUsers(users.clone())));
    let (writer, writer_thread) =
        crate::db::writer::Writer::start(writer, config.storage.max_batch, hooks)
            .context("starting the writer")?;
    let writer_stats = writer.stats().clone();
    let store = Arc::new(SqliteStore::new(reads, writer.clone(), services, users));
    let closer = Closer::Sqlite {
        writer,
        writer_thread,
        checkpointer,
        lock,
    };
    Ok((
        ServerStorage::over(store, writer_stats, None, closer),
        prepared,
    ))
}

/// PostgreSQL: any number of servers (nodes) on one database, each a cluster member.
fn open_postgres_server<B>(
    config: &Config,
    url: &str,
    services: Arc<ServiceCache>,
    hooks: HooksFor<'_, B>,
    prepare: impl FnOnce(&dyn AdminStore) -> anyhow::Result<B>,
) -> anyhow::Result<(ServerStorage, B)> {
    let timeout = Duration::from_millis(config.storage.busy_timeout_ms.max(1_000));
    let node = &config.cluster.node_id;
    let prepared = {
        let admin = PgAdmin::open(url, timeout, Opening::CreateOrMigrate)?;
        prepare(&admin)?
    };
    let readers = config.storage.read_pool_size.max(1);
    // The readers (each keeps one), the writer, and one spare.
    let pool = crate::pg::open::pool(url, node, readers + 2, timeout)?;
    let reads = crate::pg::reads::Reads::start(pool.clone(), readers as usize)
        .context("starting the reader threads")?;
    // The lease's own connection: a renewal never queues behind the writer or the readers.
    let lease_pool = crate::pg::open::pool(url, node, 2, timeout)?;
    let lease =
        crate::pg::reads::Reads::start(lease_pool, 1).context("starting the lease thread")?;
    let (writer, writer_thread) =
        crate::pg::writer::Writer::start(pool, config.storage.max_batch, hooks(&prepared))
            .context("starting the writer")?;
    let writer_stats = writer.stats().clone();
    let (notices_tx, notices) = mpsc::unbounded_channel();
    let listener = crate::pg::listen::Listener::start(
        crate::pg::open::connect_config(url, node, timeout)?,
        notices_tx,
    )
    .context("starting the cluster listener")?;
    let cluster = ClusterStorage {
        store: Arc::new(PgCluster::new(lease, writer.clone())),
        notices,
        origin: writer.origin().to_string(),
    };
    // The outbox writers' own connections (claims and records, see `pg::writer`).
    let outbox_pool = crate::pg::open::pool(url, node, 2, timeout)?;
    let outbox =
        crate::pg::OutboxWriters::start(&outbox_pool).context("starting the outbox writers")?;
    let store = Arc::new(PgStore::new(reads, writer.clone(), outbox, services));
    let closer = Closer::Postgres {
        writer,
        writer_thread,
        listener,
    };
    Ok((
        ServerStorage::over(store, writer_stats, Some(cluster), closer),
        prepared,
    ))
}

/// Opens the configured database for a maintenance command of the command line (never
/// taking a server's lock: these work beside running servers).
pub fn open_admin(config: &Config, opening: Opening) -> anyhow::Result<Box<dyn AdminStore>> {
    let timeout = Duration::from_millis(config.storage.busy_timeout_ms);
    Ok(match config.database_location() {
        DatabaseLocation::Sqlite(path) => Box::new(SqliteAdmin::open(&path, timeout, opening)?),
        DatabaseLocation::Postgres(url) => Box::new(PgAdmin::open(
            &url,
            timeout.max(Duration::from_secs(1)),
            opening,
        )?),
    })
}

/// The account SID of the database the configuration names, if one exists there (read only:
/// nothing is created or migrated).
pub fn stored_account_sid(config: &Config) -> Option<String> {
    let timeout = Duration::from_millis(config.storage.busy_timeout_ms);
    match config.database_location() {
        DatabaseLocation::Sqlite(path) => SqliteAdmin::peek_account_sid(&path, timeout),
        DatabaseLocation::Postgres(url) => {
            PgAdmin::open(&url, timeout.max(Duration::from_secs(1)), Opening::Existing)
                .ok()?
                .account_sid()
                .ok()?
        }
    }
}

/// The SQLite backend's options.
pub fn sqlite_options(config: &Config) -> OpenOptions {
    OpenOptions {
        path: config.database.clone(),
        busy_timeout: Duration::from_millis(config.storage.busy_timeout_ms),
        read_pool_size: config.storage.read_pool_size,
        wal_limit_bytes: config.storage.wal_limit_mb.saturating_mul(1024 * 1024),
    }
}
