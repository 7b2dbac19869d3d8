//! The composition root: opens storage (`storage::server` picks the backend), bootstraps the
//! account, starts the writer and the
//! HTTP server on a given listener, and stops them in order. The only module that knows every
//! concrete type. Tests call [`start`] with a port-0 listener and a temporary database.
//!
//! May depend on: everything in the crate.

mod cluster;
mod http;
mod open_files;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web;
use anyhow::Context;

use crate::api::gauges::StoredGauges;
use crate::api::state::{AccountCredentials, AppState};
use crate::config::Config;
use crate::domain::admin::AdminStore;
pub use crate::domain::admin::Opening as AdminOpening;
use crate::domain::ids::{self, Prefix};
use crate::domain::presence::PresenceDefaults;
use crate::domain::secret::Secret;
use crate::domain::store::{PresenceStore, Store};
use crate::domain::webhook::ConfigEndpoint;
use crate::domain::webhook::RetryPolicy;
use crate::presence::{ClusterOptions, Presence, PresenceOptions, PresenceTasks};
use crate::realtime::Hub;
use crate::storage::cache::{InvalidateServices, ServiceCache};
use crate::storage::commit::{CommitHook, Effects, WriterStats};
use crate::storage::server::{HooksFor, ServerStorage, open_server};
use crate::usecases::Reachability;
use crate::webhooks::network::NetworkPolicy;
use crate::webhooks::{Dispatcher, DispatcherOptions, DispatcherTasks};
pub use open_files::raise_open_file_limit;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Credentials generated on the first start, to be shown once.
pub struct FirstRun {
    pub account_sid: String,
    pub auth_token: String,
    pub api_key_sid: String,
    pub api_key_secret: String,
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub first_run: Option<FirstRun>,
    pub account: AccountCredentials,
    pub store: Arc<dyn Store>,
    /// The same storage as the presence runtime sees it (stored sessions, for tests).
    pub presence_store: Arc<dyn PresenceStore>,
    pub presence: Presence,
    pub writer_stats: Arc<WriterStats>,
    /// The `/metrics` gauges read from storage (tests count its refreshes).
    pub gauges: Arc<StoredGauges>,
    presence_tasks: PresenceTasks,
    http: ServerHandle,
    http_task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The backend, stopped last (its writer drains what presence and the dispatcher queued).
    storage: ServerStorage,
    pub dispatcher: Dispatcher,
    dispatcher_tasks: DispatcherTasks,
    pub hub: Hub,
    hub_stop: CancellationToken,
    hub_task: tokio::task::JoinHandle<()>,
    /// Fired as a graceful stop begins (see [`AppState::shutdown`]).
    shutdown: CancellationToken,
}

impl Running {
    /// Graceful stop: stop accepting, finish in-flight requests, write live sessions (no user
    /// is reported offline by a shutdown), then commit what is queued and stop the writer.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.http.clone().stop(true).await;
        self.finish().await
    }

    /// Serves until SIGINT/SIGTERM (listened for from `signals`, taken before the server
    /// announced itself, so a signal right after the announcement is never missed), then stops
    /// as [`Running::stop`] does.
    pub async fn wait(self, signals: ShutdownSignals) -> anyhow::Result<()> {
        let (http, shutdown) = (self.http.clone(), self.shutdown.clone());
        let stop_on_signal = tokio::spawn(async move {
            signals.received().await;
            tracing::info!("shutdown signal received; stopping");
            shutdown.cancel();
            http.stop(true).await;
        });
        let finished = self.finish().await;
        stop_on_signal.abort();
        finished
    }

    /// Once the HTTP server has ended: stop the hub and the dispatcher, then storage.
    async fn finish(self) -> anyhow::Result<()> {
        let Running {
            http_task,
            presence,
            presence_tasks,
            storage,
            dispatcher,
            dispatcher_tasks,
            hub_stop,
            hub_task,
            ..
        } = self;
        http_task
            .await
            .context("joining the HTTP server")?
            .context("HTTP server")?;
        hub_stop.cancel();
        let _ = hub_task.await;
        dispatcher.shutdown(dispatcher_tasks).await;
        finish_storage(presence, presence_tasks, storage).await
    }
}

/// Closes every socket when this node's cluster membership lapses (their sessions are another
/// node's now, and their clients reconnect elsewhere). The membership's signal is a new one
/// after each lapse, so this waits on the current one each time round; without a cluster it
/// never fires.
async fn close_sockets_on_lapse(presence: Presence, hub: Hub, shutdown: CancellationToken) {
    loop {
        let lapsed = presence.lapsed();
        tokio::select! {
            _ = lapsed.cancelled() => {
                let sockets = hub.stop_all(crate::realtime::Stop::Lapsed);
                tracing::warn!(sockets, "cluster lease lapsed: closing this node's sockets");
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Wakes the dispatcher when a batch wrote deliveries.
struct WakeDispatcher(Arc<Notify>);

impl CommitHook for WakeDispatcher {
    fn committed(&mut self, effects: &Effects) {
        if effects.deliveries {
            self.0.notify_one();
        }
    }
}

/// Counts stored reachability transitions by cause, and for each offline one how long after the
/// user's last sign of life it was committed (TTL + grace + sweep delay for a timeout).
struct CountTransitions;

impl CommitHook for CountTransitions {
    fn committed(&mut self, effects: &Effects) {
        let committed_at = crate::domain::time::now_ms();
        for t in &effects.transitions {
            metrics::counter!("reachd_transitions_total", "cause" => t.cause).increment(1);
            if let Some(last_seen) = t.offline_since {
                let delay_ms = committed_at.saturating_sub(last_seen).max(0);
                metrics::histogram!("reachd_offline_detection_seconds")
                    .record(delay_ms as f64 / 1000.0);
            }
        }
    }
}

/// Tells the realtime hub which services a batch changed.
struct PublishServices(mpsc::UnboundedSender<String>);

impl CommitHook for PublishServices {
    fn committed(&mut self, effects: &Effects) {
        for sid in &effects.services {
            let _ = self.0.send(sid.clone());
        }
    }
}

/// Publishes the newest committed event id (the event feed's live edge).
struct PublishEvents(watch::Sender<i64>);

impl CommitHook for PublishEvents {
    fn committed(&mut self, effects: &Effects) {
        if let Some(last) = effects.event_ids.iter().max() {
            self.0.send_replace(*last);
        }
    }
}

pub fn dispatcher_options(config: &Config, account: &AccountCredentials) -> DispatcherOptions {
    let w = &config.webhooks;
    DispatcherOptions {
        concurrency: w.concurrency,
        native_timeout: Duration::from_millis(w.native_timeout_ms),
        network: NetworkPolicy {
            allow_private: w.allow_private_networks,
            store_private_responses: w.store_private_responses,
            proxy: w.proxy.as_ref().map(|p| p.expose().to_string()),
        },
        policy: RetryPolicy {
            schedule_secs: w.retry_schedule_secs.clone(),
            twilio_base_ms: w.twilio_retry_base_ms,
            ..RetryPolicy::default()
        },
        account_sid: account.sid.clone(),
        auth_token: account.auth_token.clone(),
        retention: Duration::from_secs(w.retention_days * 86_400),
        lease: crate::webhooks::lease_for(Duration::from_millis(w.native_timeout_ms)),
        stable_owner: None,
    }
}

/// What a server reads from storage before its writer starts.
struct Prepared {
    account: AccountCredentials,
    first_run: Option<FirstRun>,
    last_event_id: i64,
}

/// The lease owner of a single node's dispatcher. Stable across restarts, and safe: the
/// server's exclusive lock on its SQLite file means at most one live server uses it, so
/// leases under it after a crash belong to nobody and are released at start.
const SERVER_LEASE_OWNER: &str = "reachd-server";

fn config_endpoints(config: &Config) -> Vec<ConfigEndpoint> {
    config
        .webhooks
        .endpoints
        .iter()
        .map(|e| ConfigEndpoint {
            name: e.name.clone(),
            url: e.url.clone(),
            secret: e.secret.expose().to_string(),
            event_types: e.event_types.clone(),
        })
        .collect()
}

/// After the HTTP server is gone: flush presence, then drain and stop the writer. Explicit,
/// so a stray handle held elsewhere cannot keep the writer alive.
async fn finish_storage(
    presence: Presence,
    presence_tasks: PresenceTasks,
    storage: ServerStorage,
) -> anyhow::Result<()> {
    presence.shutdown(presence_tasks).await;
    storage.close().await
}

/// SIGINT and SIGTERM, listened for from creation on: a signal that arrives before anyone
/// awaits [`ShutdownSignals::received`] is kept, not lost to the default action (exit without
/// the graceful stop).
pub struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers (needs a Tokio runtime).
    pub fn listen() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    async fn received(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

pub fn presence_options(config: &Config) -> PresenceOptions {
    let p = &config.presence;
    PresenceOptions {
        defaults: PresenceDefaults {
            ping_interval_ms: p.ping_interval_ms,
            session_ttl_ms: p.session_ttl_ms,
            offline_grace_ms: p.offline_grace_ms,
        },
        flush_interval: Duration::from_millis(p.flush_interval_ms()),
        max_sessions_per_identity: config.limits.sessions_per_identity,
    }
}

pub use crate::storage::server::{open_admin, stored_account_sid};

/// The configuration names another account than the one the database belongs to.
#[derive(Debug, thiserror::Error)]
#[error(
    "the database {database} belongs to account {stored}, but the configuration names account \
     {configured}. A database serves one account: remove account_sid and auth_token from the \
     configuration (or set them to {stored}'s) to serve the stored account, or point `database` \
     at a new file to start account {configured} afresh"
)]
pub struct AccountMismatch {
    pub database: String,
    pub stored: String,
    pub configured: String,
}

/// Uses the configured account credentials (storing them on a new database; a changed auth
/// token for the stored account is a logged rotation), else the stored ones, else generates a
/// fresh account and API key. Configured credentials of another account are refused: a
/// database belongs to one account, and taking it over silently would lock its clients out.
fn bootstrap_account(
    admin: &dyn AdminStore,
    config: &Config,
) -> anyhow::Result<(AccountCredentials, Option<FirstRun>)> {
    if let (Some(sid), Some(token)) = (&config.account_sid, &config.auth_token) {
        match admin.account_credentials()? {
            Some((stored, _)) if stored != *sid => {
                return Err(AccountMismatch {
                    database: config.database_description(),
                    stored,
                    configured: sid.clone(),
                }
                .into());
            }
            Some((_, stored_token)) if stored_token == token.expose() => {}
            Some(_) => {
                admin.store_account(sid, token.expose())?;
                tracing::warn!(
                    account_sid = %sid,
                    "auth token rotated: the configured auth_token replaces the stored one; \
                     the old one is refused from now on"
                );
            }
            None => admin.store_account(sid, token.expose())?,
        }
        return Ok((
            AccountCredentials {
                sid: sid.clone(),
                auth_token: token.clone(),
            },
            None,
        ));
    }
    if let Some((sid, token)) = admin.account_credentials()? {
        return Ok((
            AccountCredentials {
                sid,
                auth_token: Secret::new(token),
            },
            None,
        ));
    }
    let sid = ids::new_sid(Prefix::Account);
    let token = ids::random_hex(16);
    admin.store_account(&sid, &token)?;
    let key = admin.create_api_key(Some("generated at first start"))?;
    let first = FirstRun {
        account_sid: sid.clone(),
        auth_token: token.clone(),
        api_key_sid: key.sid,
        api_key_secret: key.secret,
    };
    Ok((
        AccountCredentials {
            sid,
            auth_token: Secret::new(token),
        },
        Some(first),
    ))
}

/// Opens storage and serves on `listener` until stopped.
pub async fn start(config: Config, listener: TcpListener) -> anyhow::Result<Running> {
    let services = Arc::new(ServiceCache::default());
    let wake = Arc::new(Notify::new());
    let (services_tx, services_rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = watch::channel(0);
    let (notice_events, notice_services) = (events_tx.clone(), services_tx.clone());
    let hooks: HooksFor<'static, Prepared> = {
        let (services, wake) = (services.clone(), wake.clone());
        Box::new(move |prepared: &Prepared| {
            events_tx.send_replace(prepared.last_event_id);
            vec![
                Box::new(InvalidateServices(services)) as Box<dyn CommitHook>,
                Box::new(WakeDispatcher(wake)),
                Box::new(PublishEvents(events_tx)),
                Box::new(PublishServices(services_tx)),
                Box::new(CountTransitions),
            ]
        })
    };
    let opening = config.clone();
    let cache = services.clone();
    let (mut storage, prepared) = tokio::task::spawn_blocking(move || {
        open_server(&opening, services, hooks, |admin| {
            let (account, first_run) = bootstrap_account(admin, &opening)?;
            admin.sync_config_endpoints(&config_endpoints(&opening))?;
            Ok(Prepared {
                account,
                first_run,
                last_event_id: admin.last_event_id()?,
            })
        })
    })
    .await
    .context("opening storage")??;
    let Prepared {
        account, first_run, ..
    } = prepared;
    let writer_stats = storage.writer_stats.clone();
    let store = storage.store.clone();
    let presence_store = storage.presence.clone();
    let cluster = storage.cluster.take();
    let cluster_options = cluster.as_ref().map(|c| ClusterOptions {
        store: c.store.clone(),
        node_id: config.cluster.node_id.clone(),
        lease_ms: config.cluster.lease_ms,
    });
    let (presence, presence_tasks) = Presence::start(
        presence_store.clone(),
        presence_options(&config),
        cluster_options,
    )
    .await
    .context("resuming presence")?;
    let (dispatcher, dispatcher_tasks) = Dispatcher::start(
        storage.outbox.clone(),
        DispatcherOptions {
            // Alone on its database (the file's lock), a single node's stable owner lets a
            // restart release a crashed predecessor's leases at once. Cluster nodes lease
            // under owners of their own: a lost node's leases expire.
            stable_owner: cluster.is_none().then(|| SERVER_LEASE_OWNER.to_string()),
            ..dispatcher_options(&config, &account)
        },
        wake.clone(),
        true,
    )?;
    let shutdown = CancellationToken::new();
    if let Some(cluster) = cluster {
        let targets = cluster::NoticeTargets {
            presence: presence.clone(),
            store: store.clone(),
            services: cache,
            events: notice_events,
            hub_services: notice_services,
            dispatcher: dispatcher.hint(),
            origin: cluster.origin,
        };
        tokio::spawn(cluster::route_notices(
            targets,
            cluster.notices,
            shutdown.clone(),
        ));
    }
    let hub = Hub::new(
        config.limits.subscriptions_per_socket as usize,
        config.limits.subscriptions_per_identity as usize,
    );
    let hub_stop = CancellationToken::new();
    let hub_task = tokio::spawn(hub.clone().run(
        store.clone(),
        events_rx.clone(),
        services_rx,
        hub_stop.clone(),
    ));
    tokio::spawn(close_sockets_on_lapse(
        presence.clone(),
        hub.clone(),
        shutdown.clone(),
    ));
    let gauges = Arc::new(StoredGauges::default());
    {
        let (gauges, store) = (gauges.clone(), store.clone());
        tokio::task::spawn_blocking(move || gauges.refresh(store.as_ref()))
            .await
            .context("first metrics reading")?;
    }
    tokio::spawn(gauges.clone().run(
        store.clone(),
        Duration::from_millis(config.metrics.refresh_interval_ms),
        shutdown.clone(),
    ));
    let key_watch = crate::api::client::KeyWatch::default();
    // Ends with the graceful stop (sockets then close for the restart, not for their keys).
    tokio::spawn(key_watch.clone().run(
        store.clone(),
        crate::api::client::revocation::CHECK_INTERVAL,
        shutdown.clone(),
    ));
    let state = web::Data::new(AppState {
        reachability: Reachability::new(store.clone(), presence.clone(), hub.clone()),
        store: store.clone(),
        account: account.clone(),
        public_url: config.public_url.clone(),
        max_body_bytes: config.http.max_body_bytes,
        presence: presence.clone(),
        events: events_rx.clone(),
        hub: hub.clone(),
        metrics: crate::metrics::handle(),
        gauges: gauges.clone(),
        metrics_token: config.metrics.token.clone(),
        shutdown: shutdown.clone(),
        dispatcher: dispatcher.clone(),
        key_watch: key_watch.clone(),
        readiness: Default::default(),
        client_writes: crate::api::client::WriteLimiter::new(
            config.limits.client_write_burst,
            config.limits.client_writes_per_second,
        ),
        verified_tokens: Default::default(),
    });
    let addr = listener
        .local_addr()
        .context("reading the listener address")?;
    let server = http::server(&config, state, listener)?;
    let http = server.handle();
    let http_task = tokio::spawn(server);
    Ok(Running {
        addr,
        first_run,
        account,
        store,
        presence_store,
        presence,
        presence_tasks,
        writer_stats,
        gauges,
        http,
        http_task,
        storage,
        dispatcher,
        dispatcher_tasks,
        hub,
        hub_stop,
        hub_task,
        shutdown,
    })
}
