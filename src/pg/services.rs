//! SQL for services on PostgreSQL (the SQLite backend's `db::services`, same answers).
//! Read-modify-write paths lock the service row (`FOR UPDATE`) so that writers of several
//! nodes apply their patches one after the other instead of losing one.
//!
//! May depend on: postgres, serde_json, domain, pg::{events, paging, users, writer}.

use std::collections::HashMap;

use postgres::Row;

use super::statements::Sql;

use super::PgResultExt;
use super::events::emit;
use super::paging::fetch_page;
use super::users;
use super::writer::Tx;
use crate::domain::binding::BindingType;
use crate::domain::event::{EventDraft, EventType, REASON_NOTIFIABLE};
use crate::domain::page::{Page, PageRequest};
use crate::domain::presence::Cause;
use crate::domain::reachability;
use crate::domain::service::{PresenceOverrides, ReachabilityToggle, Service, ServicePatch};
use crate::domain::store::Origin;
use crate::domain::time::now_ms;
use crate::domain::user::UserKey;
use crate::domain::{Error, Result};

const COLUMNS: &str = "id, sid, friendly_name, reachability_enabled, ping_interval_ms, \
     session_ttl_ms, offline_grace_ms, settings, date_created, date_updated";

fn from_row(row: &Row) -> Result<Service> {
    let settings: String = row.try_get(7).db()?;
    let settings = serde_json::from_str(&settings)
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("services.settings")))?;
    Ok(Service {
        sid: row.try_get(1).db()?,
        friendly_name: row.try_get(2).db()?,
        reachability_enabled: row.try_get(3).db()?,
        presence: PresenceOverrides {
            ping_interval_ms: millis(row, 4)?,
            session_ttl_ms: millis(row, 5)?,
            offline_grace_ms: millis(row, 6)?,
        },
        settings,
        date_created: row.try_get(8).db()?,
        date_updated: row.try_get(9).db()?,
    })
}

/// A nullable non-negative duration column.
fn millis(row: &Row, index: usize) -> Result<Option<u64>> {
    Ok(row
        .try_get::<_, Option<i64>>(index)
        .db()?
        .and_then(|v| u64::try_from(v).ok()))
}

fn as_column(value: Option<u64>) -> Option<i64> {
    value.and_then(|v| i64::try_from(v).ok())
}

fn settings_json(service: &Service) -> Result<String> {
    serde_json::to_string(&service.settings).map_err(|e| Error::Internal(e.into()))
}

pub fn get(client: &mut impl Sql, sid: &str) -> Result<Option<Service>> {
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM services WHERE sid = $1"),
            &[&sid],
        )
        .db()?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub fn require(client: &mut impl Sql, sid: &str) -> Result<Service> {
    get(client, sid)?.ok_or(Error::NotFound)
}

/// `require`, locking the row until the transaction ends (read-modify-write).
fn require_locked(client: &mut impl Sql, sid: &str) -> Result<Service> {
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM services WHERE sid = $1 FOR UPDATE"),
            &[&sid],
        )
        .db()?
        .as_ref()
        .map(from_row)
        .transpose()?
        .ok_or(Error::NotFound)
}

pub fn list(client: &mut impl Sql, page: PageRequest) -> Result<Page<Service>> {
    fetch_page(
        client,
        &format!("SELECT {COLUMNS} FROM services"),
        "TRUE",
        Vec::new(),
        page,
        from_row,
    )
}

pub fn insert(client: &mut impl Sql, service: &Service) -> Result<()> {
    client
        .execute(
            "INSERT INTO services (sid, friendly_name, reachability_enabled, ping_interval_ms, \
             session_ttl_ms, offline_grace_ms, settings, date_created, date_updated) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &service.sid,
                &service.friendly_name,
                &service.reachability_enabled,
                &as_column(service.presence.ping_interval_ms),
                &as_column(service.presence.session_ttl_ms),
                &as_column(service.presence.offline_grace_ms),
                &settings_json(service)?,
                &service.date_created,
                &service.date_updated,
            ],
        )
        .db()?;
    Ok(())
}

fn save(client: &mut impl Sql, service: &Service) -> Result<()> {
    client
        .execute(
            "UPDATE services SET friendly_name = $2, reachability_enabled = $3, \
             ping_interval_ms = $4, session_ttl_ms = $5, offline_grace_ms = $6, settings = $7, \
             date_updated = $8 WHERE sid = $1",
            &[
                &service.sid,
                &service.friendly_name,
                &service.reachability_enabled,
                &as_column(service.presence.ping_interval_ms),
                &as_column(service.presence.session_ttl_ms),
                &as_column(service.presence.offline_grace_ms),
                &settings_json(service)?,
                &service.date_updated,
            ],
        )
        .db()?;
    Ok(())
}

/// Applies `patch`. Enabling reachability forgets every user's previous state (unknown until
/// the next transition), except that users with push bindings become notifiable at once, each
/// with an event (cause `reachability_enabled`).
pub fn update(
    tx: &mut Tx<'_, '_>,
    sid: &str,
    patch: &ServicePatch,
) -> Result<(Service, ReachabilityToggle)> {
    let mut service = require_locked(tx, sid)?;
    let toggle = service.apply(patch, now_ms())?;
    save(tx, &service)?;
    if toggle == ReachabilityToggle::Enabled {
        tx.execute(
            "UPDATE users SET is_online = NULL, is_notifiable = NULL, online_since = NULL \
             WHERE service_sid = $1",
            &[&sid],
        )
        .db()?;
        // Every user's binding types; the domain says which make a user notifiable.
        let rows = tx
            .query(
                "SELECT u.sid, b.binding_type FROM users u JOIN bindings b ON b.user_sid = u.sid \
                 WHERE u.service_sid = $1 ORDER BY u.id",
                &[&sid],
            )
            .db()?;
        let mut with_bindings: Vec<(String, Vec<BindingType>)> = Vec::new();
        for row in &rows {
            let user_sid: String = row.try_get(0).db()?;
            let kind: String = row.try_get(1).db()?;
            let kind = BindingType::parse(&kind).into_iter();
            match with_bindings.last_mut() {
                Some((last, kinds)) if *last == user_sid => kinds.extend(kind),
                _ => with_bindings.push((user_sid, kind.collect())),
            }
        }
        let notifiable = with_bindings
            .into_iter()
            .filter(|(_, kinds)| reachability::is_notifiable(kinds))
            .map(|(user_sid, _)| user_sid);
        for user_sid in notifiable {
            let mut user = users::require(tx, sid, &UserKey::SidOrIdentity(user_sid.clone()))?;
            tx.execute(
                "UPDATE users SET is_notifiable = TRUE WHERE sid = $1",
                &[&user_sid],
            )
            .db()?;
            user.reachability.is_notifiable = Some(true);
            let spec = EventDraft {
                reasons: vec![REASON_NOTIFIABLE],
                cause: Some(Cause::ReachabilityEnabled),
                ..EventDraft::new(
                    EventType::ReachabilityUpdated,
                    Origin::Rest { webhooks: false },
                )
            };
            emit(tx, &mut user, &spec)?;
        }
    }
    Ok((service, toggle))
}

/// Replaces the presence overrides.
pub fn set_presence(
    client: &mut impl Sql,
    sid: &str,
    presence: PresenceOverrides,
) -> Result<Service> {
    let mut service = require_locked(client, sid)?;
    service.presence = presence;
    service.date_updated = now_ms();
    save(client, &service)?;
    Ok(service)
}

/// What a presence batch needs to know of each of `sids` that exists: whether reachability
/// is enabled, and the default role for the users a first contact creates.
pub fn presence_facts(
    client: &mut impl Sql,
    sids: &[&str],
) -> Result<HashMap<String, (bool, Option<String>)>> {
    client
        .query(
            "SELECT sid, reachability_enabled, settings::json ->> 'default_service_role_sid' \
             FROM services WHERE sid = ANY($1)",
            &[&sids],
        )
        .db()?
        .iter()
        .map(|r| Ok((r.try_get(0).db()?, (r.try_get(1).db()?, r.try_get(2).db()?))))
        .collect()
}

/// A service's default role for new users, without decoding its settings; `NotFound` when the
/// service does not exist.
pub fn default_role(client: &mut impl Sql, sid: &str) -> Result<String> {
    let row = client
        .query_opt(
            "SELECT settings::json ->> 'default_service_role_sid' FROM services WHERE sid = $1",
            &[&sid],
        )
        .db()?;
    match row {
        Some(row) => row.try_get::<_, Option<String>>(0).db()?,
        None => None,
    }
    .ok_or(Error::NotFound)
}

/// Every service (for the presence engine at startup).
pub fn all(client: &mut impl Sql) -> Result<Vec<Service>> {
    client
        .query(&format!("SELECT {COLUMNS} FROM services ORDER BY id"), &[])
        .db()?
        .iter()
        .map(from_row)
        .collect()
}

pub fn delete(client: &mut impl Sql, sid: &str) -> Result<bool> {
    let deleted = client
        .execute("DELETE FROM services WHERE sid = $1", &[&sid])
        .db()?;
    client
        .execute(
            "UPDATE account SET default_chat_service_sid = NULL \
             WHERE default_chat_service_sid = $1",
            &[&sid],
        )
        .db()?;
    Ok(deleted > 0)
}

/// Throwaway databases for this module's and its siblings' tests.
#[cfg(test)]
pub(crate) mod test_db {
    use std::future::Future;
    use std::str::FromStr;
    use std::time::Duration;

    use postgres::{Client, NoTls};

    use super::super::open;
    use super::super::writer::{Tx, Writer};
    use crate::domain::Result;

    /// A fresh, migrated database, with a plain client for reads and a writer for jobs.
    pub(crate) struct TestDb {
        pub client: Client,
        pub url: String,
        pub writer: Writer,
        runtime: tokio::runtime::Runtime,
    }

    impl TestDb {
        /// Runs `work` as a write job and waits for its commit.
        pub fn write<T, F>(&self, work: F) -> Result<T>
        where
            T: Send + 'static,
            F: for<'a, 'b> FnOnce(&mut Tx<'a, 'b>) -> Result<T> + Send + 'static,
        {
            self.block_on(self.writer.submit(work))
        }

        pub fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
            self.runtime.block_on(future)
        }

        /// Another node's writer on the same database.
        pub fn other_writer(&self) -> Writer {
            writer_on(&self.url)
        }
    }

    fn writer_on(url: &str) -> Writer {
        let pool = open::pool(url, "test", 2, Duration::from_secs(10)).expect("test pool");
        let (writer, _thread) = Writer::start(pool, 64, Vec::new()).expect("test writer");
        writer
    }

    /// `None` (the test then returns early) unless `REACHD_TEST_DATABASE` holds a
    /// `postgres://` URL; otherwise a new database `t_<random hex>` on that server.
    pub(crate) fn fresh_database() -> Option<TestDb> {
        let server = std::env::var("REACHD_TEST_DATABASE").ok()?;
        if !super::super::is_postgres_url(&server) {
            return None;
        }
        let name = format!("t_{}", crate::domain::ids::random_hex(8));
        let mut admin = Client::connect(&server, NoTls).expect("connect to the test server");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the test database");
        let mut config = postgres::Config::from_str(&server).expect("test URL");
        config.dbname(&name);
        let mut client = config.connect(NoTls).expect("connect to the test database");
        open::migrate(&mut client).expect("migrate");
        let mut url = url::Url::parse(&server).expect("test URL");
        url.set_path(&format!("/{name}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime");
        Some(TestDb {
            client,
            writer: writer_on(url.as_str()),
            url: url.into(),
            runtime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::test_db::fresh_database;
    use super::*;
    use crate::domain::page::Cursor;

    fn page(cursor: Cursor, size: u32) -> PageRequest {
        PageRequest { cursor, size }
    }

    #[test]
    fn services_are_created_read_listed_updated_and_deleted() {
        let Some(mut db) = fresh_database() else {
            return;
        };
        let mut created = Vec::new();
        for n in 0..5 {
            let service = Service::new(&format!("service {n}"), 1_000 + n).expect("service");
            insert(&mut db.client, &service).expect("insert");
            created.push(service);
        }
        let first = &created[0];
        let got = get(&mut db.client, &first.sid)
            .expect("get")
            .expect("exists");
        assert_eq!(&got, first);
        assert!(
            get(&mut db.client, "IS00000000000000000000000000000000")
                .expect("get")
                .is_none()
        );
        assert!(matches!(
            require(&mut db.client, "ISnope"),
            Err(Error::NotFound)
        ));
        assert_eq!(
            default_role(&mut db.client, &first.sid).expect("role"),
            first.settings.default_service_role_sid
        );
        assert!(matches!(
            default_role(&mut db.client, "ISnope"),
            Err(Error::NotFound)
        ));

        // Keyset paging, both ways.
        let p1 = list(&mut db.client, page(Cursor::Offset(0), 2)).expect("page 1");
        let sids = |p: &Page<Service>| -> Vec<String> {
            p.items.iter().map(|(_, s)| s.sid.clone()).collect()
        };
        assert_eq!(sids(&p1), [created[0].sid.clone(), created[1].sid.clone()]);
        assert!(p1.has_more_after && !p1.has_more_before);
        let last_key = p1.items[1].0;
        let p2 = list(&mut db.client, page(Cursor::After(last_key), 2)).expect("page 2");
        assert_eq!(sids(&p2), [created[2].sid.clone(), created[3].sid.clone()]);
        let p3 = list(&mut db.client, page(Cursor::After(p2.items[1].0), 2)).expect("page 3");
        assert_eq!(sids(&p3), [created[4].sid.clone()]);
        assert!(!p3.has_more_after);
        let back = list(&mut db.client, page(Cursor::Before(p3.items[0].0), 3)).expect("back");
        assert_eq!(
            sids(&back),
            created[1..4]
                .iter()
                .map(|s| s.sid.clone())
                .collect::<Vec<_>>()
        );
        assert!(back.has_more_before);
        assert_eq!(all(&mut db.client).expect("all").len(), 5);

        // Update through the writer.
        let sid = first.sid.clone();
        let patch = ServicePatch {
            friendly_name: Some("renamed".into()),
            ..Default::default()
        };
        let (updated, toggle) = db
            .write(move |tx| update(tx, &sid, &patch))
            .expect("update");
        assert_eq!(toggle, ReachabilityToggle::Unchanged);
        assert_eq!(updated.friendly_name, "renamed");
        assert_eq!(
            get(&mut db.client, &first.sid)
                .expect("get")
                .expect("exists"),
            updated
        );
        let sid = "ISnope".to_string();
        assert!(matches!(
            db.write(move |tx| update(tx, &sid, &ServicePatch::default())),
            Err(Error::NotFound)
        ));

        // Presence overrides.
        let presence = PresenceOverrides {
            ping_interval_ms: Some(5_000),
            session_ttl_ms: None,
            offline_grace_ms: Some(0),
        };
        let with = set_presence(&mut db.client, &first.sid, presence).expect("presence");
        assert_eq!(with.presence, presence);
        assert_eq!(
            get(&mut db.client, &first.sid)
                .expect("get")
                .expect("exists")
                .presence,
            presence
        );

        // Delete cascades to users and bindings, and forgets the default service.
        let second = created[1].sid.clone();
        let s2 = second.clone();
        db.write(move |tx| {
            users::insert(
                tx,
                &s2,
                crate::domain::user::NewUser {
                    identity: "alice".into(),
                    ..Default::default()
                },
                Origin::Rest { webhooks: false },
            )
        })
        .expect("user");
        super::super::account::store_credentials(&mut db.client, "ACx", "token").expect("acct");
        db.client
            .execute(
                "UPDATE account SET default_chat_service_sid = $1",
                &[&second],
            )
            .expect("default");
        assert!(delete(&mut db.client, &second).expect("delete"));
        assert!(!delete(&mut db.client, &second).expect("again"));
        let left: i64 = db
            .client
            .query_one(
                "SELECT count(*) FROM users WHERE service_sid = $1",
                &[&second],
            )
            .expect("count")
            .get(0);
        assert_eq!(left, 0);
        let default: Option<String> = db
            .client
            .query_one("SELECT default_chat_service_sid FROM account", &[])
            .expect("account")
            .get(0);
        assert_eq!(default, None);
    }

    #[test]
    fn enabling_reachability_resets_users_and_marks_push_users_notifiable() {
        let Some(mut db) = fresh_database() else {
            return;
        };
        let service = Service::new("reach", 1).expect("service");
        insert(&mut db.client, &service).expect("insert");
        for identity in ["push", "plain"] {
            let sid = service.sid.clone();
            db.write(move |tx| {
                users::insert(
                    tx,
                    &sid,
                    crate::domain::user::NewUser {
                        identity: identity.into(),
                        ..Default::default()
                    },
                    Origin::Rest { webhooks: false },
                )
            })
            .expect("user");
        }
        db.client
            .execute(
                "UPDATE users SET is_online = TRUE, online_since = 5 WHERE service_sid = $1",
                &[&service.sid],
            )
            .expect("online");
        let push_user = users::get(
            &mut db.client,
            &service.sid,
            &UserKey::Identity("push".into()),
        )
        .expect("get")
        .expect("exists");
        db.client
            .execute(
                "INSERT INTO bindings (sid, service_sid, user_sid, identity, endpoint, address, \
                 binding_type, date_created, date_updated) \
                 VALUES ('BS1', $1, $2, 'push', 'e1', 'tok', 'fcm', 1, 1)",
                &[&service.sid, &push_user.sid],
            )
            .expect("binding");
        let sid = service.sid.clone();
        let patch = ServicePatch {
            reachability_enabled: Some(true),
            ..Default::default()
        };
        let (updated, toggle) = db
            .write(move |tx| update(tx, &sid, &patch))
            .expect("enable");
        assert!(updated.reachability_enabled);
        assert_eq!(toggle, ReachabilityToggle::Enabled);
        let rows = db
            .client
            .query(
                "SELECT identity, is_online, is_notifiable, online_since, sequence FROM users \
                 ORDER BY id",
                &[],
            )
            .expect("users");
        type State = (String, Option<bool>, Option<bool>, Option<i64>, i64);
        let states: Vec<State> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect();
        assert_eq!(
            states,
            [
                ("push".to_string(), None, Some(true), None, 2),
                ("plain".to_string(), None, None, None, 1),
            ]
        );
        let (kind, cause): (String, Option<String>) = db
            .client
            .query_one(
                "SELECT type, cause FROM events ORDER BY id DESC LIMIT 1",
                &[],
            )
            .map(|r| (r.get(0), r.get(1)))
            .expect("event");
        assert_eq!(kind, EventType::ReachabilityUpdated.as_str());
        assert_eq!(cause.as_deref(), Some(Cause::ReachabilityEnabled.as_str()));
    }
}
