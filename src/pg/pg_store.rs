//! [`Store`] on PostgreSQL: reads on reader threads (`reads`), writes through the [`Writer`].
//! The same operations, in the same order, as the SQLite store: only the SQL differs.
//!
//! May depend on: postgres, domain, storage, pg submodules.

use std::collections::HashSet;
use std::sync::Arc;

use super::reads::Reads;
use super::writer::Writer;
use super::{
    PgResultExt, account, bindings, credentials, endpoints, events, keys, metrics, outbox,
    presence, services, users,
};
use crate::domain::Result;
use crate::domain::account::{Account, AccountConfigPatch, ApiKey, WebhookPatch};
use crate::domain::binding::{Binding, BindingFilter, NewBinding};
use crate::domain::credential::{Credential, CredentialPatch, NewCredential};
use crate::domain::event::Event;
use crate::domain::page::{Page, PageRequest};
use crate::domain::presence::{PresenceBatch, PresenceSnapshot};
use crate::domain::service::{PresenceOverrides, Service, ServicePatch};
use crate::domain::store::{
    MetricsSnapshot, Origin, OutboxStore, PresenceStore, ServiceStats, Store, WriteFuture,
};
use crate::domain::time::{Millis, now_ms};
use crate::domain::user::{NewUser, User, UserKey, UserPatch};
use crate::domain::webhook::{
    Attempt, AttemptOutcome, ClaimedDelivery, Delivery, DeliveryStatus, Endpoint, EndpointPatch,
    Lease, NewEndpoint,
};
use crate::storage::cache::{ApiKeyCache, ServiceCache};

pub struct PgStore {
    reads: Reads,
    writer: Writer,
    outbox: OutboxWriters,
    services: Arc<ServiceCache>,
    keys: ApiKeyCache,
}

impl PgStore {
    /// `services` must be invalidated by the writer (see
    /// [`crate::storage::cache::InvalidateServices`]).
    pub fn new(
        reads: Reads,
        writer: Writer,
        outbox: OutboxWriters,
        services: Arc<ServiceCache>,
    ) -> Self {
        PgStore {
            reads,
            writer,
            outbox,
            services,
            keys: ApiKeyCache::default(),
        }
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }
}

/// The outbox's writers: claims and records each on a connection of their own, so that
/// neither waits for the other nor for the feed writer's batches (see `writer`).
pub struct OutboxWriters {
    claims: Writer,
    records: Writer,
}

impl OutboxWriters {
    /// Starts both on connections from `pool` (two are needed).
    pub fn start(pool: &super::open::Pool) -> std::io::Result<Self> {
        Ok(OutboxWriters {
            claims: Writer::start_outbox(pool.clone(), "reachd-claims")?,
            records: Writer::start_outbox(pool.clone(), "reachd-records")?,
        })
    }
}

/// Owned copies of borrowed arguments, for closures that run on another thread.
fn owned(s: &str) -> String {
    s.to_string()
}

impl Store for PgStore {
    fn ping(&self) -> Result<()> {
        self.reads
            .run(|c| c.simple_query("SELECT 1").map(|_| ()).db())
    }

    fn check_writable(&self) -> WriteFuture<()> {
        // A real write that changes nothing visible: PostgreSQL writes a new row version for
        // any UPDATE, so the commit reaches the WAL.
        self.writer.submit(|tx| {
            tx.execute(
                "UPDATE account SET date_updated = date_updated WHERE id = 1",
                &[],
            )
            .db()?;
            Ok(())
        })
    }

    fn account(&self) -> Result<Account> {
        self.reads.run(account::get)
    }

    fn update_account_config(&self, patch: AccountConfigPatch) -> WriteFuture<Account> {
        self.writer
            .submit(move |tx| account::update_config(tx, &patch))
    }

    fn update_account_webhook(&self, patch: WebhookPatch) -> WriteFuture<Account> {
        self.writer
            .submit(move |tx| account::update_webhook(tx, &patch))
    }

    fn api_key(&self, sid: &str) -> Result<Option<ApiKey>> {
        if let Some(key) = self.keys.get(sid) {
            return Ok(Some(key));
        }
        let sid = owned(sid);
        let found = self.reads.run(move |c| keys::get_live(c, &sid))?;
        if let Some(key) = &found {
            self.keys.insert(key.clone());
        }
        Ok(found)
    }

    fn live_api_keys(&self, sids: &[String]) -> Result<HashSet<String>> {
        let sids = sids.to_vec();
        self.reads.run(move |c| keys::live_among(c, &sids))
    }

    fn create_service(&self, friendly_name: String) -> WriteFuture<Service> {
        self.writer.submit(move |tx| {
            let service = Service::new(&friendly_name, now_ms())?;
            services::insert(tx, &service)?;
            tx.record_service(&service.sid);
            Ok(service)
        })
    }

    fn service(&self, sid: &str) -> Result<Option<Arc<Service>>> {
        if let Some(cached) = self.services.get(sid) {
            return Ok(Some(cached));
        }
        self.service_current(sid)
    }

    /// Read from the database (other nodes' changes reach this node's cache only when their
    /// notification arrives), and cached for the client paths.
    fn service_current(&self, sid: &str) -> Result<Option<Arc<Service>>> {
        let generation = self.services.generation();
        let key = owned(sid);
        let found = self
            .reads
            .run(move |c| services::get(c, &key))?
            .map(Arc::new);
        if let Some(service) = &found {
            self.services.insert(generation, service.clone());
        }
        Ok(found)
    }

    fn list_services(&self, page: PageRequest) -> Result<Page<Service>> {
        self.reads.run(move |c| services::list(c, page))
    }

    fn update_service(&self, sid: &str, patch: ServicePatch) -> WriteFuture<Service> {
        let sid = owned(sid);
        self.writer.submit(move |tx| {
            let (service, _) = services::update(tx, &sid, &patch)?;
            tx.record_service(&sid);
            Ok(service)
        })
    }

    fn delete_service(&self, sid: &str) -> WriteFuture<bool> {
        let sid = owned(sid);
        self.writer.submit(move |tx| {
            tx.record_service(&sid);
            services::delete(tx, &sid)
        })
    }

    fn default_conversations_service(&self) -> WriteFuture<Service> {
        self.writer.submit(|tx| {
            let service = account::default_service(tx)?;
            tx.record_service(&service.sid);
            Ok(service)
        })
    }

    fn create_user(&self, service_sid: &str, user: NewUser, origin: Origin) -> WriteFuture<User> {
        let service_sid = owned(service_sid);
        self.writer
            .submit(move |tx| users::insert(tx, &service_sid, user, origin))
    }

    fn ensure_user(&self, service_sid: &str, identity: &str) -> WriteFuture<(User, bool)> {
        // Most opens are by known users: answer from a read and skip the writer.
        let (service, key) = (owned(service_sid), UserKey::Identity(owned(identity)));
        if let Ok(Some(user)) = self.reads.run(move |c| users::get(c, &service, &key)) {
            return Box::pin(async move { Ok((user, false)) });
        }
        let (service_sid, identity) = (owned(service_sid), owned(identity));
        self.writer
            .submit(move |tx| users::ensure(tx, &service_sid, &identity))
    }

    fn users_by_identity(&self, service_sid: &str, identities: &[String]) -> Result<Vec<User>> {
        let (service_sid, identities) = (owned(service_sid), identities.to_vec());
        self.reads
            .run(move |c| users::by_identities(c, &service_sid, &identities))
    }

    fn list_online_users(&self, service_sid: &str, page: PageRequest) -> Result<Page<User>> {
        let service_sid = owned(service_sid);
        self.reads
            .run(move |c| users::list_online(c, &service_sid, page))
    }

    fn set_presence_settings(
        &self,
        sid: &str,
        presence: PresenceOverrides,
    ) -> WriteFuture<Service> {
        let sid = owned(sid);
        self.writer.submit(move |tx| {
            let service = services::set_presence(tx, &sid, presence)?;
            tx.record_service(&sid);
            Ok(service)
        })
    }

    fn user(&self, service_sid: &str, key: &UserKey) -> Result<Option<User>> {
        let (service_sid, key) = (owned(service_sid), key.clone());
        self.reads.run(move |c| users::get(c, &service_sid, &key))
    }

    fn user_snapshot(&self, service_sid: &str, key: &UserKey) -> Result<Option<(User, i64)>> {
        let (service_sid, key) = (owned(service_sid), key.clone());
        self.reads.run(move |c| {
            // One REPEATABLE READ transaction: the user and the event horizon come from the
            // same snapshot.
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .db()?;
            let Some(user) = users::get(&mut tx, &service_sid, &key)? else {
                return Ok(None);
            };
            let horizon = events::last_id(&mut tx)?;
            tx.commit().db()?;
            Ok(Some((user, horizon)))
        })
    }

    fn list_users(&self, service_sid: &str, page: PageRequest) -> Result<Page<User>> {
        let service_sid = owned(service_sid);
        self.reads.run(move |c| users::list(c, &service_sid, page))
    }

    fn update_user(
        &self,
        service_sid: &str,
        key: UserKey,
        patch: UserPatch,
        origin: Origin,
    ) -> WriteFuture<User> {
        let service_sid = owned(service_sid);
        self.writer
            .submit(move |tx| users::update(tx, &service_sid, &key, &patch, origin))
    }

    fn delete_user(
        &self,
        service_sid: &str,
        key: UserKey,
        origin: Origin,
    ) -> WriteFuture<Option<User>> {
        let service_sid = owned(service_sid);
        self.writer
            .submit(move |tx| users::delete(tx, &service_sid, &key, origin))
    }

    fn register_binding(
        &self,
        service_sid: &str,
        key: UserKey,
        binding: NewBinding,
        origin: Origin,
    ) -> WriteFuture<Binding> {
        let service_sid = owned(service_sid);
        self.writer
            .submit(move |tx| bindings::register(tx, &service_sid, &key, binding, origin))
    }

    fn binding(
        &self,
        service_sid: &str,
        sid: &str,
        filter: &BindingFilter,
    ) -> Result<Option<Binding>> {
        let (service_sid, sid, filter) = (owned(service_sid), owned(sid), filter.clone());
        self.reads
            .run(move |c| bindings::get(c, &service_sid, &sid, &filter))
    }

    fn list_bindings(
        &self,
        service_sid: &str,
        filter: &BindingFilter,
        page: PageRequest,
    ) -> Result<Page<Binding>> {
        let (service_sid, filter) = (owned(service_sid), filter.clone());
        self.reads
            .run(move |c| bindings::list(c, &service_sid, &filter, page))
    }

    fn delete_binding(
        &self,
        service_sid: &str,
        sid_or_endpoint: &str,
        filter: BindingFilter,
        origin: Origin,
    ) -> WriteFuture<bool> {
        let (service_sid, target) = (owned(service_sid), owned(sid_or_endpoint));
        self.writer.submit(move |tx| {
            Ok(bindings::delete(tx, &service_sid, &target, &filter, origin)?.is_some())
        })
    }

    fn create_credential(&self, credential: NewCredential) -> WriteFuture<Credential> {
        self.writer
            .submit(move |tx| credentials::insert(tx, &credential))
    }

    fn credential(&self, sid: &str) -> Result<Option<Credential>> {
        let sid = owned(sid);
        self.reads.run(move |c| credentials::get(c, &sid))
    }

    fn list_credentials(&self, page: PageRequest) -> Result<Page<Credential>> {
        self.reads.run(move |c| credentials::list(c, page))
    }

    fn update_credential(&self, sid: &str, patch: CredentialPatch) -> WriteFuture<Credential> {
        let sid = owned(sid);
        self.writer
            .submit(move |tx| credentials::update(tx, &sid, &patch))
    }

    fn delete_credential(&self, sid: &str) -> WriteFuture<bool> {
        let sid = owned(sid);
        self.writer.submit(move |tx| credentials::delete(tx, &sid))
    }

    fn create_endpoint(
        &self,
        service_sid: &str,
        endpoint: NewEndpoint,
    ) -> WriteFuture<(Endpoint, String)> {
        let service_sid = owned(service_sid);
        self.writer
            .submit(move |tx| endpoints::create(tx, &service_sid, &endpoint))
    }

    fn endpoint(&self, service_sid: &str, id: &str) -> Result<Option<Endpoint>> {
        let (service_sid, id) = (owned(service_sid), owned(id));
        self.reads
            .run(move |c| endpoints::get(c, &service_sid, &id))
    }

    fn list_endpoints(&self, service_sid: &str) -> Result<Vec<Endpoint>> {
        let service_sid = owned(service_sid);
        self.reads.run(move |c| endpoints::list(c, &service_sid))
    }

    fn update_endpoint(
        &self,
        service_sid: &str,
        id: &str,
        patch: EndpointPatch,
    ) -> WriteFuture<Endpoint> {
        let (service_sid, id) = (owned(service_sid), owned(id));
        self.writer
            .submit(move |tx| endpoints::update(tx, &service_sid, &id, &patch))
    }

    fn delete_endpoint(&self, service_sid: &str, id: &str) -> WriteFuture<bool> {
        let (service_sid, id) = (owned(service_sid), owned(id));
        self.writer
            .submit(move |tx| endpoints::delete(tx, &service_sid, &id))
    }

    fn list_deliveries(
        &self,
        target: &str,
        status: Option<DeliveryStatus>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(Delivery, Vec<Attempt>)>> {
        let target = owned(target);
        self.reads.run(move |c| {
            let deliveries = outbox::list(c, &target, status, before, limit)?;
            deliveries
                .into_iter()
                .map(|d| {
                    let attempts = outbox::attempts(c, d.id)?;
                    Ok((d, attempts))
                })
                .collect()
        })
    }

    fn delivery(&self, id: i64) -> Result<Option<(Delivery, Vec<Attempt>)>> {
        self.reads.run(move |c| match outbox::get(c, id)? {
            Some(d) => {
                let attempts = outbox::attempts(c, d.id)?;
                Ok(Some((d, attempts)))
            }
            None => Ok(None),
        })
    }

    fn resend_delivery(&self, id: i64) -> WriteFuture<Delivery> {
        self.writer.submit(move |tx| outbox::resend(tx, id))
    }

    fn recover_deliveries(&self, target: &str, since: Millis) -> WriteFuture<usize> {
        let target = owned(target);
        self.writer
            .submit(move |tx| outbox::recover(tx, &target, since))
    }

    fn events_after(&self, service_sid: &str, after: i64, limit: usize) -> Result<Vec<Event>> {
        let service_sid = owned(service_sid);
        self.reads
            .run(move |c| events::list_after(c, &service_sid, after, limit))
    }

    fn service_stats(&self, service_sid: &str) -> Result<ServiceStats> {
        let service_sid = owned(service_sid);
        self.reads.run(move |c| outbox::stats(c, &service_sid))
    }

    fn events_tail(&self, service_sid: &str, count: usize) -> Result<Vec<Event>> {
        let service_sid = owned(service_sid);
        self.reads
            .run(move |c| events::tail(c, &service_sid, count))
    }

    fn events_since(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        self.reads.run(move |c| events::list_since(c, after, limit))
    }

    fn metrics_snapshot(&self) -> Result<MetricsSnapshot> {
        self.reads.run(metrics::snapshot)
    }
}

impl OutboxStore for PgStore {
    fn claim_deliveries(
        &self,
        now: Millis,
        limit: usize,
        lease: Lease,
    ) -> WriteFuture<Vec<ClaimedDelivery>> {
        self.outbox
            .claims
            .submit(move |tx| outbox::claim(tx, now, limit, &lease))
    }

    fn record_attempts(&self, owner: &str, outcomes: Vec<AttemptOutcome>) -> WriteFuture<Vec<i64>> {
        let owner = owned(owner);
        self.outbox
            .records
            .submit(move |tx| outbox::record(tx, &owner, &outcomes))
    }

    fn release_leases(&self, owner: &str) -> WriteFuture<usize> {
        let owner = owned(owner);
        self.writer.submit(move |tx| outbox::release(tx, &owner))
    }

    fn next_delivery_due(&self) -> Result<Option<Millis>> {
        self.reads.run(outbox::next_due)
    }

    fn purge_before(&self, before: Millis) -> WriteFuture<usize> {
        self.writer.submit(move |tx| outbox::purge(tx, before))
    }
}

impl PresenceStore for PgStore {
    fn commit_presence(&self, batch: PresenceBatch) -> WriteFuture<()> {
        self.writer.submit(move |tx| presence::commit(tx, &batch))
    }

    fn load_presence(&self) -> Result<PresenceSnapshot> {
        self.reads.run(presence::snapshot)
    }

    fn presence_services(&self) -> Result<Vec<Service>> {
        self.reads.run(services::all)
    }
}
