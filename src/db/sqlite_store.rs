//! [`Store`] on SQLite: reads on pooled connections, writes through the [`Writer`].
//!
//! May depend on: rusqlite, r2d2, domain, db submodules.

use std::sync::Arc;

use r2d2::PooledConnection;
use r2d2_sqlite::SqliteConnectionManager;

use super::open::ReadPool;
use super::user_cache::UserCache;
use super::writer::Writer;
use super::{
    SqlResultExt, account, bindings, credentials, endpoints, events, keys, map_pool, metrics,
    outbox, presence, services, users,
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
use crate::domain::time::Millis;
use crate::domain::time::now_ms;
use crate::domain::user::{NewUser, User, UserKey, UserPatch};
use crate::domain::webhook::{
    Attempt, AttemptOutcome, ClaimedDelivery, Delivery, DeliveryStatus, Endpoint, EndpointPatch,
    Lease, NewEndpoint,
};
use crate::storage::cache::{ApiKeyCache, ServiceCache};

pub struct SqliteStore {
    reads: ReadPool,
    writer: Writer,
    services: Arc<ServiceCache>,
    users: Arc<UserCache>,
    keys: ApiKeyCache,
}

impl SqliteStore {
    /// `services` and `users` must be invalidated by the writer (see
    /// [`crate::storage::cache::InvalidateServices`] and [`super::user_cache`]).
    pub fn new(
        reads: ReadPool,
        writer: Writer,
        services: Arc<ServiceCache>,
        users: Arc<UserCache>,
    ) -> Self {
        SqliteStore {
            reads,
            writer,
            services,
            users,
            keys: ApiKeyCache::default(),
        }
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    fn read(&self) -> Result<PooledConnection<SqliteConnectionManager>> {
        self.reads.get().map_err(map_pool)
    }
}

impl Store for SqliteStore {
    fn ping(&self) -> Result<()> {
        let conn = self.read()?;
        conn.query_row("SELECT 1", [], |_| Ok(()))
            .map_err(super::map_sqlite)
    }

    fn check_writable(&self) -> WriteFuture<()> {
        // A real write that changes nothing: SQLite skips rewriting a row whose bytes are
        // unchanged, so an identity UPDATE would commit without touching the disk. Changing
        // the row and changing it back dirties its page, which the commit must write.
        self.writer.submit(|tx| {
            tx.execute_batch(
                "UPDATE account SET date_updated = date_updated + 1 WHERE id = 1;
                 UPDATE account SET date_updated = date_updated - 1 WHERE id = 1;",
            )
            .map_err(super::map_sqlite)?;
            Ok(())
        })
    }

    fn account(&self) -> Result<Account> {
        account::get(&*self.read()?)
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
        let found = keys::get_live(&*self.read()?, sid)?;
        if let Some(key) = &found {
            self.keys.insert(key.clone());
        }
        Ok(found)
    }

    fn live_api_keys(&self, sids: &[String]) -> Result<std::collections::HashSet<String>> {
        keys::live_among(&*self.read()?, sids)
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
        let generation = self.services.generation();
        let found = services::get(&*self.read()?, sid)?.map(Arc::new);
        if let Some(service) = &found {
            self.services.insert(generation, service.clone());
        }
        Ok(found)
    }

    fn list_services(&self, page: PageRequest) -> Result<Page<Service>> {
        services::list(&*self.read()?, page)
    }

    fn update_service(&self, sid: &str, patch: ServicePatch) -> WriteFuture<Service> {
        let sid = sid.to_string();
        self.writer.submit(move |tx| {
            let (service, _) = services::update(tx, &sid, &patch)?;
            tx.record_service(&sid);
            Ok(service)
        })
    }

    fn delete_service(&self, sid: &str) -> WriteFuture<bool> {
        let sid = sid.to_string();
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
        let service_sid = service_sid.to_string();
        self.writer
            .submit(move |tx| users::insert(tx, &service_sid, user, origin))
    }

    fn ensure_user(&self, service_sid: &str, identity: &str) -> WriteFuture<(User, bool)> {
        // Most opens are by known users: answer from a read and skip the writer.
        let key = UserKey::Identity(identity.to_string());
        if let Ok(Some(user)) = self
            .read()
            .and_then(|conn| users::get(&conn, service_sid, &key))
        {
            return Box::pin(async move { Ok((user, false)) });
        }
        let (service_sid, identity) = (service_sid.to_string(), identity.to_string());
        self.writer
            .submit(move |tx| users::ensure(tx, &service_sid, &identity))
    }

    fn users_by_identity(&self, service_sid: &str, identities: &[String]) -> Result<Vec<User>> {
        users::by_identities(&*self.read()?, service_sid, identities)
    }

    fn list_online_users(&self, service_sid: &str, page: PageRequest) -> Result<Page<User>> {
        users::list_online(&*self.read()?, service_sid, page)
    }

    fn set_presence_settings(
        &self,
        sid: &str,
        presence: PresenceOverrides,
    ) -> WriteFuture<Service> {
        let sid = sid.to_string();
        self.writer.submit(move |tx| {
            let service = services::set_presence(tx, &sid, presence)?;
            tx.record_service(&sid);
            Ok(service)
        })
    }

    fn user(&self, service_sid: &str, key: &UserKey) -> Result<Option<User>> {
        if let Some(user) = self.users.get(service_sid, key) {
            return Ok(Some(user));
        }
        let generation = self.users.generation();
        let found = users::get_with_row(&*self.read()?, service_sid, key)?;
        Ok(found.map(|(row, user)| {
            self.users.insert(generation, row, &user);
            user
        }))
    }

    fn user_snapshot(&self, service_sid: &str, key: &UserKey) -> Result<Option<(User, i64)>> {
        let mut conn = self.read()?;
        // One read transaction: the user and the event horizon come from the same snapshot.
        let tx = conn.transaction().db()?;
        let Some(user) = users::get(&tx, service_sid, key)? else {
            return Ok(None);
        };
        Ok(Some((user, events::last_id(&tx)?)))
    }

    fn list_users(&self, service_sid: &str, page: PageRequest) -> Result<Page<User>> {
        users::list(&*self.read()?, service_sid, page)
    }

    fn update_user(
        &self,
        service_sid: &str,
        key: UserKey,
        patch: UserPatch,
        origin: Origin,
    ) -> WriteFuture<User> {
        let service_sid = service_sid.to_string();
        self.writer
            .submit(move |tx| users::update(tx, &service_sid, &key, &patch, origin))
    }

    fn delete_user(
        &self,
        service_sid: &str,
        key: UserKey,
        origin: Origin,
    ) -> WriteFuture<Option<User>> {
        let service_sid = service_sid.to_string();
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
        let service_sid = service_sid.to_string();
        self.writer
            .submit(move |tx| bindings::register(tx, &service_sid, &key, binding, origin))
    }

    fn binding(
        &self,
        service_sid: &str,
        sid: &str,
        filter: &BindingFilter,
    ) -> Result<Option<Binding>> {
        bindings::get(&*self.read()?, service_sid, sid, filter)
    }

    fn list_bindings(
        &self,
        service_sid: &str,
        filter: &BindingFilter,
        page: PageRequest,
    ) -> Result<Page<Binding>> {
        bindings::list(&*self.read()?, service_sid, filter, page)
    }

    fn delete_binding(
        &self,
        service_sid: &str,
        sid_or_endpoint: &str,
        filter: BindingFilter,
        origin: Origin,
    ) -> WriteFuture<bool> {
        let service_sid = service_sid.to_string();
        let target = sid_or_endpoint.to_string();
        self.writer.submit(move |tx| {
            Ok(bindings::delete(tx, &service_sid, &target, &filter, origin)?.is_some())
        })
    }

    fn create_credential(&self, credential: NewCredential) -> WriteFuture<Credential> {
        self.writer
            .submit(move |tx| credentials::insert(tx, &credential))
    }

    fn credential(&self, sid: &str) -> Result<Option<Credential>> {
        credentials::get(&*self.read()?, sid)
    }

    fn list_credentials(&self, page: PageRequest) -> Result<Page<Credential>> {
        credentials::list(&*self.read()?, page)
    }

    fn update_credential(&self, sid: &str, patch: CredentialPatch) -> WriteFuture<Credential> {
        let sid = sid.to_string();
        self.writer
            .submit(move |tx| credentials::update(tx, &sid, &patch))
    }

    fn delete_credential(&self, sid: &str) -> WriteFuture<bool> {
        let sid = sid.to_string();
        self.writer.submit(move |tx| credentials::delete(tx, &sid))
    }

    fn create_endpoint(
        &self,
        service_sid: &str,
        endpoint: NewEndpoint,
    ) -> WriteFuture<(Endpoint, String)> {
        let service_sid = service_sid.to_string();
        self.writer
            .submit(move |tx| endpoints::create(tx, &service_sid, &endpoint))
    }

    fn endpoint(&self, service_sid: &str, id: &str) -> Result<Option<Endpoint>> {
        endpoints::get(&*self.read()?, service_sid, id)
    }

    fn list_endpoints(&self, service_sid: &str) -> Result<Vec<Endpoint>> {
        endpoints::list(&*self.read()?, service_sid)
    }

    fn update_endpoint(
        &self,
        service_sid: &str,
        id: &str,
        patch: EndpointPatch,
    ) -> WriteFuture<Endpoint> {
        let (service_sid, id) = (service_sid.to_string(), id.to_string());
        self.writer
            .submit(move |tx| endpoints::update(tx, &service_sid, &id, &patch))
    }

    fn delete_endpoint(&self, service_sid: &str, id: &str) -> WriteFuture<bool> {
        let (service_sid, id) = (service_sid.to_string(), id.to_string());
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
        let conn = self.read()?;
        let deliveries = outbox::list(&conn, target, status, before, limit)?;
        deliveries
            .into_iter()
            .map(|d| {
                let attempts = outbox::attempts(&conn, d.id)?;
                Ok((d, attempts))
            })
            .collect()
    }

    fn delivery(&self, id: i64) -> Result<Option<(Delivery, Vec<Attempt>)>> {
        let conn = self.read()?;
        match outbox::get(&conn, id)? {
            Some(d) => {
                let attempts = outbox::attempts(&conn, d.id)?;
                Ok(Some((d, attempts)))
            }
            None => Ok(None),
        }
    }

    fn resend_delivery(&self, id: i64) -> WriteFuture<Delivery> {
        self.writer.submit(move |tx| outbox::resend(tx, id))
    }

    fn recover_deliveries(&self, target: &str, since: Millis) -> WriteFuture<usize> {
        let target = target.to_string();
        self.writer
            .submit(move |tx| outbox::recover(tx, &target, since))
    }

    fn events_after(&self, service_sid: &str, after: i64, limit: usize) -> Result<Vec<Event>> {
        events::list_after(&*self.read()?, service_sid, after, limit)
    }

    fn service_stats(&self, service_sid: &str) -> Result<ServiceStats> {
        outbox::stats(&*self.read()?, service_sid)
    }

    fn events_tail(&self, service_sid: &str, count: usize) -> Result<Vec<Event>> {
        events::tail(&*self.read()?, service_sid, count)
    }

    fn metrics_snapshot(&self) -> Result<MetricsSnapshot> {
        metrics::snapshot(&*self.read()?)
    }

    fn events_since(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        events::list_since(&*self.read()?, after, limit)
    }
}

impl OutboxStore for SqliteStore {
    fn claim_deliveries(
        &self,
        now: Millis,
        limit: usize,
        lease: Lease,
    ) -> WriteFuture<Vec<ClaimedDelivery>> {
        self.writer
            .submit(move |tx| outbox::claim(tx, now, limit, &lease))
    }

    fn record_attempts(&self, owner: &str, outcomes: Vec<AttemptOutcome>) -> WriteFuture<Vec<i64>> {
        let owner = owner.to_string();
        self.writer
            .submit(move |tx| outbox::record(tx, &owner, &outcomes))
    }

    fn release_leases(&self, owner: &str) -> WriteFuture<usize> {
        let owner = owner.to_string();
        self.writer.submit(move |tx| outbox::release(tx, &owner))
    }

    fn next_delivery_due(&self) -> Result<Option<Millis>> {
        outbox::next_due(&*self.read()?)
    }

    fn purge_before(&self, before: Millis) -> WriteFuture<usize> {
        self.writer.submit(move |tx| outbox::purge(tx, before))
    }
}

impl PresenceStore for SqliteStore {
    fn commit_presence(&self, batch: PresenceBatch) -> WriteFuture<()> {
        self.writer.submit(move |tx| presence::commit(tx, &batch))
    }

    fn load_presence(&self) -> Result<PresenceSnapshot> {
        presence::snapshot(&*self.read()?)
    }

    fn presence_services(&self) -> Result<Vec<Service>> {
        services::all(&*self.read()?)
    }
}
