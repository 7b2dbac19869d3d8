//! Writing and reading events on PostgreSQL: each event bumps the user's sequence and inserts
//! one row in the same transaction as the change it describes, and registers the row for the
//! post-commit hooks. What an event says is decided in `domain` ([`EventDraft`]); this module
//! persists it.
//!
//! Event ids and commit order: an identity sequence hands out numbers at insert time, not at
//! commit, so with several writers (nodes) id 7 could commit before id 6 and a reader tailing
//! the feed (`list_since`, `last_id`) would skip 6 for good. So `events.id` has no default:
//! [`emit`] takes the next id from the single `feed_position` row
//! (`UPDATE feed_position SET last = last + 1 … RETURNING last`) inside the writing
//! transaction. That row lock is held until the transaction commits or rolls back, so every
//! event-writing transaction (of any node) is serialized on it and ids grow in commit order: a
//! transaction can take id N only after the one that took N - 1 has ended, and PostgreSQL
//! makes a transaction visible before releasing its locks. Hence a reader that sees id N (or
//! `last = N` through [`last_id`]) also sees every id below N. (A job that fails rolls its
//! savepoint back, taking its id back with it; the next id is then reused, never skipped
//! by a reader.) Under READ COMMITTED a transaction waiting on the row re-reads it after the
//! holder commits, so it continues from the committed `last`.
//!
//! May depend on: postgres, serde_json, domain, pg::{outbox, writer}.

use postgres::Row;

use super::statements::Sql;

use super::PgResultExt;
use super::outbox::{self, OutboxEvent};
use super::writer::Tx;
use crate::domain::event::{Event, EventDraft, EventType, Source, profile_json};
use crate::domain::presence::Cause;
use crate::domain::reachability::ReachabilityChange;
use crate::domain::time::now_ms;
use crate::domain::user::User;
use crate::domain::{Error, Result};
use crate::storage::commit::StoredTransition;

/// An event about to be stored: every column but its id, as `spec` describes `user` (whose
/// `reachability`, sequence included, already holds the new state).
pub struct EventRow {
    pub kind: EventType,
    pub service_sid: String,
    pub user_sid: String,
    pub identity: String,
    reasons: String,
    cause: Option<&'static str>,
    sequence: i64,
    is_online: Option<bool>,
    is_notifiable: Option<bool>,
    session_count: Option<i64>,
    last_seen: Option<i64>,
    pub source: Source,
    pub rest_webhooks: bool,
    user_json: String,
    created_at: i64,
}

impl EventRow {
    pub fn of(user: &User, spec: &EventDraft) -> EventRow {
        let (source, rest_webhooks) = spec.origin.source();
        EventRow {
            kind: spec.kind,
            service_sid: user.service_sid.clone(),
            user_sid: user.sid.clone(),
            identity: user.identity.clone(),
            reasons: serde_json::Value::from(spec.reasons.clone()).to_string(),
            cause: spec.cause.map(Cause::as_str),
            sequence: user.reachability.sequence,
            is_online: user.reachability.is_online,
            is_notifiable: user.reachability.is_notifiable,
            session_count: spec.session_count.map(i64::from),
            last_seen: user.reachability.last_seen,
            source,
            rest_webhooks,
            user_json: profile_json(user),
            created_at: now_ms(),
        }
    }

    fn outbox(&self, id: i64) -> OutboxEvent<'_> {
        OutboxEvent {
            id,
            kind: self.kind,
            service_sid: &self.service_sid,
            user_sid: &self.user_sid,
            source: self.source,
            rest_webhooks: self.rest_webhooks,
        }
    }
}

/// Bumps the user's sequence (stored and in `user`, whose `reachability` already holds the new
/// state) and records the event with the next feed id; the user row must still exist (record a
/// deletion before deleting).
pub fn emit(tx: &mut Tx<'_, '_>, user: &mut User, spec: &EventDraft) -> Result<i64> {
    let sequence: i64 = tx
        .query_one(
            "UPDATE users SET sequence = sequence + 1 WHERE sid = $1 RETURNING sequence",
            &[&user.sid],
        )
        .db()?
        .try_get(0)
        .db()?;
    user.reachability.sequence = sequence;
    let ids = emit_all(tx, &[EventRow::of(user, spec)])?;
    ids.first()
        .copied()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("no event id was assigned")))
}

/// Records `rows` (their users' rows already hold their sequences) with the next feed ids, in
/// order, and their deliveries: a fixed handful of statements however many rows there are.
/// Returns the ids.
pub fn emit_all(tx: &mut Tx<'_, '_>, rows: &[EventRow]) -> Result<Vec<i64>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let count = i64::try_from(rows.len()).map_err(|e| Error::Internal(e.into()))?;
    let last: i64 = tx
        .query_one(
            "UPDATE feed_position SET last = last + $1 WHERE id = 1 RETURNING last",
            &[&count],
        )
        .db()?
        .try_get(0)
        .db()?;
    let ids: Vec<i64> = (last - count + 1..=last).collect();
    let column = |f: fn(&EventRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    tx.execute(
        &format!(
            "INSERT INTO events ({COLUMNS}) SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], \
             $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::BIGINT[], \
             $9::BOOLEAN[], $10::BOOLEAN[], $11::BIGINT[], $12::BIGINT[], $13::TEXT[], \
             $14::BOOLEAN[], $15::TEXT[], $16::BIGINT[])"
        ),
        &[
            &ids,
            &column(|r| &r.service_sid),
            &column(|r| &r.user_sid),
            &column(|r| &r.identity),
            &column(|r| r.kind.as_str()),
            &column(|r| &r.reasons),
            &rows.iter().map(|r| r.cause).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.is_online).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.is_notifiable).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.session_count).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.last_seen).collect::<Vec<_>>(),
            &column(|r| r.source.as_str()),
            &rows.iter().map(|r| r.rest_webhooks).collect::<Vec<_>>(),
            &column(|r| &r.user_json),
            &rows.iter().map(|r| r.created_at).collect::<Vec<_>>(),
        ],
    )
    .db()?;
    for id in &ids {
        tx.record_event(*id);
    }
    let outbox: Vec<OutboxEvent<'_>> = rows.iter().zip(&ids).map(|(r, id)| r.outbox(*id)).collect();
    outbox::enqueue_all(tx, &outbox)?;
    Ok(ids)
}

/// Records a reachability change the domain decided: its event (the caller has written the
/// user's new state), and the stored transition for the post-commit hooks (metrics).
pub fn emit_reachability_change(tx: &mut Tx<'_, '_>, change: ReachabilityChange) -> Result<()> {
    let ReachabilityChange {
        mut user,
        event,
        cause,
        offline_since,
    } = change;
    emit(tx, &mut user, &event)?;
    tx.record_transition(StoredTransition {
        cause: cause.as_str(),
        offline_since,
    });
    Ok(())
}

pub(super) const COLUMNS: &str = "id, service_sid, user_sid, identity, type, reasons, cause, sequence, is_online, is_notifiable, \
     session_count, last_seen, source, rest_webhooks, user_json, created_at";

fn from_row(row: &Row) -> Result<Event> {
    event_at(row, 0)
}

/// An event from the columns of [`COLUMNS`] starting at `at` (joined reads).
pub(super) fn event_at(row: &Row, at: usize) -> Result<Event> {
    let kind: String = row.try_get(at + 4).db()?;
    let reasons: String = row.try_get(at + 5).db()?;
    let cause: Option<String> = row.try_get(at + 6).db()?;
    let source: String = row.try_get(at + 12).db()?;
    Ok(Event {
        id: row.try_get(at).db()?,
        service_sid: row.try_get(at + 1).db()?,
        user_sid: row.try_get(at + 2).db()?,
        identity: row.try_get(at + 3).db()?,
        kind: EventType::parse(&kind).unwrap_or(EventType::UserUpdated),
        reasons: serde_json::from_str(&reasons).unwrap_or_default(),
        cause: cause.as_deref().and_then(Cause::parse),
        sequence: row.try_get(at + 7).db()?,
        is_online: row.try_get(at + 8).db()?,
        is_notifiable: row.try_get(at + 9).db()?,
        session_count: row.try_get(at + 10).db()?,
        last_seen: row.try_get(at + 11).db()?,
        source: if source == "SDK" {
            Source::Sdk
        } else {
            Source::Api
        },
        rest_webhooks: row.try_get(at + 13).db()?,
        user_json: row.try_get(at + 14).db()?,
        created_at: row.try_get(at + 15).db()?,
    })
}

/// A row limit as PostgreSQL's BIGINT (a `usize` beyond it means "no limit").
pub(super) fn limit_arg(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn decode_all(rows: Vec<Row>) -> Result<Vec<Event>> {
    rows.iter().map(from_row).collect()
}

#[cfg(test)]
pub fn get(client: &mut impl Sql, id: i64) -> Result<Option<Event>> {
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM events WHERE id = $1"),
            &[&id],
        )
        .db()?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// A service's events with an id above `after`, oldest first.
pub fn list_after(
    client: &mut impl Sql,
    service_sid: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<Event>> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM events WHERE service_sid = $1 AND id > $2 ORDER BY id LIMIT $3"
            ),
            &[&service_sid, &after, &limit_arg(limit)],
        )
        .db()?;
    decode_all(rows)
}

/// A service's newest `count` events, oldest first.
pub fn tail(client: &mut impl Sql, service_sid: &str, count: usize) -> Result<Vec<Event>> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM events WHERE service_sid = $1 ORDER BY id DESC LIMIT $2"
            ),
            &[&service_sid, &limit_arg(count)],
        )
        .db()?;
    let mut events = decode_all(rows)?;
    events.reverse();
    Ok(events)
}

/// Every service's events with an id above `after`, oldest first.
pub fn list_since(client: &mut impl Sql, after: i64, limit: usize) -> Result<Vec<Event>> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2"),
            &[&after, &limit_arg(limit)],
        )
        .db()?;
    decode_all(rows)
}

/// The newest event id ever assigned (0 before the first): from `feed_position`, so the
/// retention purge emptying the table does not take it back. Only committed positions are
/// visible, and every id below a committed position is committed too (see the module doc).
pub fn last_id(client: &mut impl Sql) -> Result<i64> {
    client
        .query_one("SELECT last FROM feed_position WHERE id = 1", &[])
        .db()?
        .try_get(0)
        .db()
}

/// Throwaway databases for the PostgreSQL tests: each test gets a fresh, migrated database in
/// the server `REACHD_TEST_DATABASE` names (tests return early when it is unset).
#[cfg(test)]
pub(crate) mod test_db {
    use std::str::FromStr;
    use std::time::Duration;

    use postgres::{Client, NoTls};

    use super::super::open::{self, Pool};
    use super::super::writer::{Tx, Writer};
    use crate::domain::Result;
    use crate::domain::event::{EventDraft, EventType};
    use crate::domain::service::Service;
    use crate::domain::store::Origin;
    use crate::domain::time::now_ms;
    use crate::domain::user::{Reachability, User};

    pub struct TestDb {
        pub url: String,
        pub pool: Pool,
        pub writer: Writer,
        runtime: tokio::runtime::Runtime,
    }

    impl TestDb {
        /// A pooled connection (for reads and direct seeding).
        pub fn client(&self) -> open::Pooled {
            self.pool.get().expect("a test connection")
        }

        /// Runs one write job through the group-commit writer and waits for its commit.
        pub fn write<T, F>(&self, work: F) -> Result<T>
        where
            T: Send + 'static,
            F: for<'a, 'b> FnOnce(&mut Tx<'a, 'b>) -> Result<T> + Send + 'static,
        {
            self.runtime.block_on(self.writer.submit(work))
        }

        /// Waits for a job submitted with `self.writer.submit` (to put several in one batch).
        pub fn wait<T>(&self, job: crate::domain::store::WriteFuture<T>) -> Result<T> {
            self.runtime.block_on(job)
        }

        /// A service row (reachability as given, Chat settings with `post_webhook_url`).
        pub fn service(&self, reachability: bool, post_webhook_url: Option<&str>) -> String {
            let mut service = Service::new("test", now_ms()).expect("service");
            service.settings.post_webhook_url = post_webhook_url.map(str::to_string);
            let settings = serde_json::to_string(&service.settings).expect("settings");
            self.client()
                .execute(
                    "INSERT INTO services (sid, friendly_name, reachability_enabled, settings, date_created, date_updated) \
                     VALUES ($1, 'test', $2, $3, 0, 0)",
                    &[&service.sid, &reachability, &settings],
                )
                .expect("insert service");
            service.sid
        }

        /// A user row of `service_sid`; returns its SID.
        pub fn user(&self, service_sid: &str, identity: &str) -> String {
            let sid = crate::domain::ids::new_sid(crate::domain::ids::Prefix::User);
            self.client()
                .execute(
                    "INSERT INTO users (sid, service_sid, identity, role_sid, date_created, date_updated) \
                     VALUES ($1, $2, $3, 'RL1', 0, 0)",
                    &[&sid, &service_sid, &identity],
                )
                .expect("insert user");
            sid
        }

        /// A stored user, as the users module would decode it.
        pub fn load_user(&self, service_sid: &str, identity: &str) -> User {
            let row = self
                .client()
                .query_one(
                    "SELECT sid, friendly_name, attributes, role_sid, date_created, date_updated, \
                     is_online, is_notifiable, sequence, last_seen, online_since \
                     FROM users WHERE service_sid = $1 AND identity = $2",
                    &[&service_sid, &identity],
                )
                .expect("user");
            User {
                sid: row.get(0),
                service_sid: service_sid.into(),
                identity: identity.into(),
                friendly_name: row.get(1),
                attributes: row.get(2),
                role_sid: row.get(3),
                joined_channels_count: 0,
                reachability: Reachability {
                    is_online: row.get(6),
                    is_notifiable: row.get(7),
                    sequence: row.get(8),
                    last_seen: row.get(9),
                    online_since: row.get(10),
                },
                date_created: row.get(4),
                date_updated: row.get(5),
            }
        }

        /// Emits a `user.updated` event from a client about a stored user; returns its id.
        pub fn emit_update(&self, service_sid: &str, identity: &str) -> i64 {
            let mut user = self.load_user(service_sid, identity);
            self.write(move |tx| {
                super::emit(
                    tx,
                    &mut user,
                    &EventDraft::new(EventType::UserUpdated, Origin::Client),
                )
            })
            .expect("emit")
        }
    }

    /// A fresh migrated database with a writer, or `None` (with a note) when
    /// `REACHD_TEST_DATABASE` names no PostgreSQL server.
    pub fn fresh_database() -> Option<TestDb> {
        let Some(server) = std::env::var("REACHD_TEST_DATABASE")
            .ok()
            .filter(|url| super::super::is_postgres_url(url))
        else {
            eprintln!("note: REACHD_TEST_DATABASE is not a postgres:// URL; skipping");
            return None;
        };
        let name = format!("t_{}", crate::domain::ids::random_hex(8));
        let mut admin = Client::connect(&server, NoTls).expect("connect to the test server");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        let mut config = postgres::Config::from_str(&server).expect("test URL");
        config.dbname(&name);
        let mut client = config.connect(NoTls).expect("connect to the test database");
        open::migrate(&mut client).expect("migrate");
        let url = match server.rfind('/') {
            Some(slash) => format!("{}/{name}", &server[..slash]),
            None => server.clone(),
        };
        let pool = open::pool(&url, "test", 4, Duration::from_secs(10)).expect("pool");
        let (writer, _thread) = Writer::start(pool.clone(), 64, Vec::new()).expect("writer");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Some(TestDb {
            url,
            pool,
            writer,
            runtime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::test_db::fresh_database;
    use super::*;
    use crate::domain::store::Origin;

    #[test]
    fn emit_assigns_commit_ordered_ids_and_the_reads_return_them() {
        let Some(db) = fresh_database() else { return };
        let service = db.service(true, None);
        let other = db.service(true, None);
        db.user(&service, "alice");
        db.user(&other, "bob");
        assert_eq!(last_id(&mut *db.client()).expect("last id"), 0);
        let mut ids = Vec::new();
        for (svc, identity) in [(&service, "alice"), (&other, "bob"), (&service, "alice")] {
            let mut user = db.load_user(svc, identity);
            let id = db
                .write(move |tx| {
                    emit(
                        tx,
                        &mut user,
                        &EventDraft::new(EventType::UserUpdated, Origin::Client),
                    )
                })
                .expect("emit");
            ids.push(id);
        }
        assert_eq!(ids, vec![1, 2, 3]);
        let mut client = db.client();
        assert_eq!(last_id(&mut *client).expect("last id"), 3);
        let mine = list_after(&mut *client, &service, 0, 10).expect("list");
        assert_eq!(mine.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(mine[0].sequence, 1);
        assert_eq!(mine[1].sequence, 2, "the user's sequence grows per event");
        assert_eq!(mine[0].source, Source::Sdk);
        assert_eq!(mine[0].kind, EventType::UserUpdated);
        assert_eq!(
            list_after(&mut *client, &service, 1, 10).expect("list")[0].id,
            3
        );
        let all = list_since(&mut *client, 1, 10).expect("since");
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(list_since(&mut *client, 0, 1).expect("since").len(), 1);
        let tail = tail(&mut *client, &service, 1).expect("tail");
        assert_eq!(tail.iter().map(|e| e.id).collect::<Vec<_>>(), vec![3]);
        assert_eq!(
            get(&mut *client, 2).expect("get").map(|e| e.identity),
            Some("bob".into())
        );
        assert!(get(&mut *client, 99).expect("get").is_none());
        // The purge emptying the table does not take the position back.
        client.execute("DELETE FROM events", &[]).expect("purge");
        assert_eq!(last_id(&mut *client).expect("last id"), 3);
    }

    #[test]
    fn concurrent_writers_get_ids_in_commit_order() {
        let Some(db) = fresh_database() else { return };
        let service = db.service(true, None);
        db.user(&service, "alice");
        // Transaction A takes id 1 and holds the feed row; B must wait, then take 2.
        let mut a = postgres::Client::connect(&db.url, postgres::NoTls).expect("a");
        let mut b = postgres::Client::connect(&db.url, postgres::NoTls).expect("b");
        let mut tx_a = a.transaction().expect("tx a");
        let first: i64 = tx_a
            .query_one(
                "UPDATE feed_position SET last = last + 1 WHERE id = 1 RETURNING last",
                &[],
            )
            .expect("take")
            .get(0);
        let waiter = std::thread::spawn(move || {
            let mut tx_b = b.transaction().expect("tx b");
            let second: i64 = tx_b
                .query_one(
                    "UPDATE feed_position SET last = last + 1 WHERE id = 1 RETURNING last",
                    &[],
                )
                .expect("take")
                .get(0);
            tx_b.commit().expect("commit b");
            second
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        // B is blocked: nothing above A's uncommitted id is visible.
        assert_eq!(last_id(&mut *db.client()).expect("last"), 0);
        tx_a.commit().expect("commit a");
        assert_eq!(waiter.join().expect("b"), first + 1);
        assert_eq!(last_id(&mut *db.client()).expect("last"), 2);
    }
}
