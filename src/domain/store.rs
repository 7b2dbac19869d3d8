//! The storage port: what the API and the engines need from durable storage. `db` implements it
//! on SQLite; another backend (PostgreSQL, say) would implement the same traits
//! (docs/ARCHITECTURE.md §7.3 lists the contracts it must keep).
//!
//! Reads are synchronous and short (point lookups and bounded pages). Writes return a future
//! that resolves once the change is committed, so that callers can answer only after a
//! durable commit; an implementation may group several callers' writes in one transaction.
//!
//! May depend on: domain types only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::account::{Account, AccountConfigPatch, ApiKey, WebhookPatch};
use super::binding::{Binding, BindingFilter, NewBinding};
use super::credential::{Credential, CredentialPatch, NewCredential};
use super::errors::Result;
use super::event::Event;
use super::page::{Page, PageRequest};
use super::presence::{PresenceBatch, PresenceSnapshot};
use super::service::{PresenceOverrides, Service, ServicePatch};
use super::time::Millis;
use super::user::{NewUser, User, UserKey, UserPatch};
use super::webhook::{
    Attempt, AttemptOutcome, ClaimedDelivery, Delivery, DeliveryStatus, Endpoint, EndpointPatch,
    Lease, NewEndpoint,
};

/// A committed write's result.
pub type WriteFuture<T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'static>>;

/// Where a change came from; decides which events it emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The REST API; `webhooks` is the `X-Twilio-Webhook-Enabled: true` header.
    Rest { webhooks: bool },
    /// A client SDK (access token).
    Client,
}

pub trait Store: Send + Sync + 'static {
    // --- health ---------------------------------------------------------------------------
    /// Answers when the database does.
    fn ping(&self) -> Result<()>;
    /// Commits a no-op write through the writer: the database is writable and the writer runs.
    fn check_writable(&self) -> WriteFuture<()>;

    // --- account --------------------------------------------------------------------------
    fn account(&self) -> Result<Account>;
    fn update_account_config(&self, patch: AccountConfigPatch) -> WriteFuture<Account>;
    fn update_account_webhook(&self, patch: WebhookPatch) -> WriteFuture<Account>;
    /// A live (not revoked) API key.
    fn api_key(&self, sid: &str) -> Result<Option<ApiKey>>;
    /// Which of `sids` name live (existing, not revoked) API keys, read from storage now
    /// (uncached): one query however many SIDs.
    fn live_api_keys(&self, sids: &[String]) -> Result<std::collections::HashSet<String>>;

    // --- services -------------------------------------------------------------------------
    fn create_service(&self, friendly_name: String) -> WriteFuture<Service>;
    /// A service, shared (services are read on almost every request).
    fn service(&self, sid: &str) -> Result<Option<Arc<Service>>>;
    /// A service as stored now, even if another node changed it a moment ago — what a REST
    /// request reads, so that a write through one node is what the next request through any
    /// node answers. A backend that serves one node answers from its cache ([`Store::service`]).
    fn service_current(&self, sid: &str) -> Result<Option<Arc<Service>>> {
        self.service(sid)
    }
    fn list_services(&self, page: PageRequest) -> Result<Page<Service>>;
    fn update_service(&self, sid: &str, patch: ServicePatch) -> WriteFuture<Service>;
    fn delete_service(&self, sid: &str) -> WriteFuture<bool>;
    /// The account's default Conversations service, created (and recorded) on first use.
    fn default_conversations_service(&self) -> WriteFuture<Service>;

    // --- users ----------------------------------------------------------------------------
    fn create_user(&self, service_sid: &str, user: NewUser, origin: Origin) -> WriteFuture<User>;
    /// The user with this identity, created (as by a client SDK) when missing; `true` when
    /// it was created.
    fn ensure_user(&self, service_sid: &str, identity: &str) -> WriteFuture<(User, bool)>;
    /// Users of a service by identity (unknown identities are skipped).
    fn users_by_identity(&self, service_sid: &str, identities: &[String]) -> Result<Vec<User>>;
    /// Users stored as online, oldest first.
    fn list_online_users(&self, service_sid: &str, page: PageRequest) -> Result<Page<User>>;
    /// Replaces a service's presence timings.
    fn set_presence_settings(&self, sid: &str, presence: PresenceOverrides)
    -> WriteFuture<Service>;
    fn user(&self, service_sid: &str, key: &UserKey) -> Result<Option<User>>;
    /// A user read in one transaction with the id of the newest committed event, so that the
    /// user's state reflects exactly the events up to that id (the realtime hub's snapshot).
    fn user_snapshot(&self, service_sid: &str, key: &UserKey) -> Result<Option<(User, i64)>>;
    fn list_users(&self, service_sid: &str, page: PageRequest) -> Result<Page<User>>;
    fn update_user(
        &self,
        service_sid: &str,
        key: UserKey,
        patch: UserPatch,
        origin: Origin,
    ) -> WriteFuture<User>;
    /// Deletes the user; returns them as they were, or `None` when there was no such user.
    fn delete_user(
        &self,
        service_sid: &str,
        key: UserKey,
        origin: Origin,
    ) -> WriteFuture<Option<User>>;

    // --- bindings -------------------------------------------------------------------------
    /// Registers (or, for a known endpoint, replaces) a push binding of an existing user.
    fn register_binding(
        &self,
        service_sid: &str,
        key: UserKey,
        binding: NewBinding,
        origin: Origin,
    ) -> WriteFuture<Binding>;
    fn binding(
        &self,
        service_sid: &str,
        sid: &str,
        filter: &BindingFilter,
    ) -> Result<Option<Binding>>;
    fn list_bindings(
        &self,
        service_sid: &str,
        filter: &BindingFilter,
        page: PageRequest,
    ) -> Result<Page<Binding>>;
    /// Deletes the binding with this SID, or with this endpoint, within the filter's scope.
    fn delete_binding(
        &self,
        service_sid: &str,
        sid_or_endpoint: &str,
        filter: BindingFilter,
        origin: Origin,
    ) -> WriteFuture<bool>;

    // --- credentials ----------------------------------------------------------------------
    fn create_credential(&self, credential: NewCredential) -> WriteFuture<Credential>;
    fn credential(&self, sid: &str) -> Result<Option<Credential>>;
    fn list_credentials(&self, page: PageRequest) -> Result<Page<Credential>>;
    fn update_credential(&self, sid: &str, patch: CredentialPatch) -> WriteFuture<Credential>;
    fn delete_credential(&self, sid: &str) -> WriteFuture<bool>;

    // --- native webhook endpoints, delivery log, event feed ------------------------------
    /// Creates an endpoint; returns it with its secret (shown only here).
    fn create_endpoint(
        &self,
        service_sid: &str,
        endpoint: NewEndpoint,
    ) -> WriteFuture<(Endpoint, String)>;
    fn endpoint(&self, service_sid: &str, id: &str) -> Result<Option<Endpoint>>;
    fn list_endpoints(&self, service_sid: &str) -> Result<Vec<Endpoint>>;
    fn update_endpoint(
        &self,
        service_sid: &str,
        id: &str,
        patch: EndpointPatch,
    ) -> WriteFuture<Endpoint>;
    fn delete_endpoint(&self, service_sid: &str, id: &str) -> WriteFuture<bool>;
    /// Deliveries to a target (`endpoint:WH…`), newest first, with their attempts.
    fn list_deliveries(
        &self,
        target: &str,
        status: Option<DeliveryStatus>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(Delivery, Vec<Attempt>)>>;
    fn delivery(&self, id: i64) -> Result<Option<(Delivery, Vec<Attempt>)>>;
    /// Queues a fresh copy of a delivery.
    fn resend_delivery(&self, id: i64) -> WriteFuture<Delivery>;
    /// Resends every failed delivery to `target` created since `since`.
    fn recover_deliveries(&self, target: &str, since: Millis) -> WriteFuture<usize>;
    /// A service's events after an event id, oldest first.
    fn events_after(&self, service_sid: &str, after: i64, limit: usize) -> Result<Vec<Event>>;
    /// Counts for the dashboard.
    fn service_stats(&self, service_sid: &str) -> Result<ServiceStats>;
    /// The newest `count` events of a service, oldest first.
    fn events_tail(&self, service_sid: &str, count: usize) -> Result<Vec<Event>>;
    /// Every service's events after an event id, oldest first (the realtime hub's feed).
    fn events_since(&self, after: i64, limit: usize) -> Result<Vec<Event>>;
    /// Stored gauges for `/metrics`.
    fn metrics_snapshot(&self) -> Result<MetricsSnapshot>;
}

/// Stored gauges for `/metrics`, read by its background refresh (never by a scrape).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// `(service sid, users online)` for every service.
    pub online_users: Vec<(String, i64)>,
    /// Deliveries waiting for a (first or next) attempt.
    pub pending_deliveries: i64,
    /// Creation time of the oldest pending delivery.
    pub oldest_pending: Option<Millis>,
}

/// Stored counts of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub users: i64,
    pub online_users: i64,
    pub pending: i64,
    /// Pending deliveries that were attempted at least once (waiting out a backoff).
    pub retrying: i64,
    pub delivered: i64,
    pub failed: i64,
    /// Creation time of the oldest pending delivery.
    pub oldest_pending: Option<Millis>,
}

/// What the webhook dispatcher needs from storage. Claims are leases held in storage, so
/// several dispatchers (one per node) may share one store: a delivery is leased to at most one
/// dispatcher at a time, and only the lease's owner records its outcome.
pub trait OutboxStore: Send + Sync + 'static {
    /// Claims up to `limit` due (target, user) queue heads whose lease is absent or expired
    /// (oldest due first) and leases them to `lease.owner` until `lease.until`, in one write
    /// (claim many at once: each claim is a commit).
    fn claim_deliveries(
        &self,
        now: Millis,
        limit: usize,
        lease: Lease,
    ) -> WriteFuture<Vec<ClaimedDelivery>>;
    /// Records outcomes of attempts made under `owner`'s leases and clears those leases. An
    /// outcome whose delivery `owner` no longer leases changes nothing (another dispatcher took
    /// it over); their delivery ids are returned.
    fn record_attempts(&self, owner: &str, outcomes: Vec<AttemptOutcome>) -> WriteFuture<Vec<i64>>;
    /// Releases every lease `owner` holds (a graceful stop): those deliveries are due at once.
    fn release_leases(&self, owner: &str) -> WriteFuture<usize>;
    /// When the next queue head falls due (a leased one when its lease expires).
    fn next_delivery_due(&self) -> Result<Option<Millis>>;
    /// Drops finished deliveries and unreferenced events older than `before`.
    fn purge_before(&self, before: Millis) -> WriteFuture<usize>;
}

/// What the presence runtime needs from storage.
pub trait PresenceStore: Send + Sync + 'static {
    /// Applies transitions (each only if it changes the stored state of a user in a service
    /// with reachability enabled, recording an event) and session-table changes, atomically.
    fn commit_presence(&self, batch: PresenceBatch) -> WriteFuture<()>;
    /// Stored sessions and online users, for a restart.
    fn load_presence(&self) -> Result<PresenceSnapshot>;
    /// Every service's SID with its reachability flag and overrides.
    fn presence_services(&self) -> Result<Vec<Service>>;
}
