//! SQL for users on PostgreSQL (the SQLite backend's `db::users`, same answers); every write
//! records its event. Several nodes may write at once: creation relies on the
//! `(service_sid, identity)` unique key (`ON CONFLICT DO NOTHING`), so a first contact racing
//! another node's creates the user once; updates lock the row they rewrite.
//!
//! May depend on: postgres, domain, pg::{events, paging, services, writer}.

use postgres::Row;
use postgres::error::SqlState;

use super::statements::Sql;

use super::PgResultExt;
use super::events::emit;
use super::paging::{Arg, fetch_page, text};
use super::services;
use super::writer::Tx;
use crate::domain::event::{EventDraft, EventType, profile_update_reasons};
use crate::domain::ids;
use crate::domain::page::{Page, PageRequest};
use crate::domain::reachability::first_contact;
use crate::domain::store::Origin;
use crate::domain::time::now_ms;
use crate::domain::user::{NewUser, Reachability, User, UserKey, UserPatch};
use crate::domain::{Error, Result};

const COLUMNS: &str = "id, sid, service_sid, identity, friendly_name, attributes, role_sid, \
     joined_channels_count, is_online, is_notifiable, date_created, date_updated, sequence, \
     last_seen, online_since";

fn from_row(row: &Row) -> Result<User> {
    Ok(User {
        sid: row.try_get(1).db()?,
        service_sid: row.try_get(2).db()?,
        identity: row.try_get(3).db()?,
        friendly_name: row.try_get(4).db()?,
        attributes: row.try_get(5).db()?,
        role_sid: row.try_get(6).db()?,
        joined_channels_count: row.try_get(7).db()?,
        reachability: Reachability {
            is_online: row.try_get(8).db()?,
            is_notifiable: row.try_get(9).db()?,
            sequence: row.try_get(12).db()?,
            last_seen: row.try_get(13).db()?,
            online_since: row.try_get(14).db()?,
        },
        date_created: row.try_get(10).db()?,
        date_updated: row.try_get(11).db()?,
    })
}

/// The user `key` names; `lock` takes the row's lock until the transaction ends.
fn find(
    client: &mut impl Sql,
    service_sid: &str,
    key: &UserKey,
    lock: bool,
) -> Result<Option<User>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = match key {
        UserKey::SidOrIdentity(v) => client.query_opt(
            &format!(
                "SELECT {COLUMNS} FROM users WHERE service_sid = $1 AND (sid = $2 OR identity = $3) \
                 ORDER BY sid = $2 DESC LIMIT 1{lock}"
            ),
            &[&service_sid, &ids::normalize(v), v],
        ),
        UserKey::Identity(v) => client.query_opt(
            &format!("SELECT {COLUMNS} FROM users WHERE service_sid = $1 AND identity = $2{lock}"),
            &[&service_sid, v],
        ),
    }
    .db()?;
    row.as_ref().map(from_row).transpose()
}

/// Looks a user up by SID (when the key is SID-shaped) and then by identity.
pub fn get(client: &mut impl Sql, service_sid: &str, key: &UserKey) -> Result<Option<User>> {
    find(client, service_sid, key, false)
}

/// The users of `keys` (service SID, identity) that exist, in one statement.
pub fn get_many(client: &mut impl Sql, keys: &[(&str, &str)]) -> Result<Vec<User>> {
    let services: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let identities: Vec<&str> = keys.iter().map(|k| k.1).collect();
    client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM users WHERE (service_sid, identity) IN \
                 (SELECT * FROM unnest($1::TEXT[], $2::TEXT[]))"
            ),
            &[&services, &identities],
        )
        .db()?
        .iter()
        .map(from_row)
        .collect()
}

/// Inserts users a batch of first contacts created (see [`ensure`] for one), in one
/// statement, with the presence state and sequence the batch left them in (what
/// [`store_reachability`] stores): inserted and then updated in one transaction, each row was
/// written twice, with an entry in every index of `users` each time (the update changes the
/// indexed `is_online`). The caller holds the feed position (so no other writer creates users
/// meanwhile) and found none of them; if one exists after all, nothing is written and the
/// batch fails as unavailable, to be retried.
pub fn insert_first_contacts(client: &mut impl Sql, users: &[&User]) -> Result<()> {
    if users.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&User) -> &str| users.iter().map(|u| f(u)).collect::<Vec<&str>>();
    let state = PresenceColumns::of(users);
    let inserted = client
        .execute(
            "INSERT INTO users (sid, service_sid, identity, friendly_name, attributes, role_sid, \
             date_created, date_updated, is_online, last_seen, online_since, sequence) \
             SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
             $6::TEXT[], $7::BIGINT[], $8::BIGINT[], $9::BOOLEAN[], $10::BIGINT[], $11::BIGINT[], \
             $12::BIGINT[]) ON CONFLICT (service_sid, identity) DO NOTHING",
            &[
                &column(|u| &u.sid),
                &column(|u| &u.service_sid),
                &column(|u| &u.identity),
                &users
                    .iter()
                    .map(|u| u.friendly_name.as_deref())
                    .collect::<Vec<_>>(),
                &column(|u| &u.attributes),
                &users
                    .iter()
                    .map(|u| u.role_sid.as_deref())
                    .collect::<Vec<_>>(),
                &users.iter().map(|u| u.date_created).collect::<Vec<_>>(),
                &users.iter().map(|u| u.date_updated).collect::<Vec<_>>(),
                &state.online,
                &state.seen,
                &state.since,
                &state.sequence,
            ],
        )
        .db()?;
    if inserted != users.len() as u64 {
        return Err(Error::Unavailable(
            "a user was created concurrently; the batch will be retried".into(),
        ));
    }
    Ok(())
}

/// The presence state and sequence of users, a column each, as statements bind them.
struct PresenceColumns {
    online: Vec<Option<bool>>,
    seen: Vec<Option<i64>>,
    since: Vec<Option<i64>>,
    sequence: Vec<i64>,
}

impl PresenceColumns {
    fn of(users: &[&User]) -> Self {
        let state = || users.iter().map(|u| u.reachability);
        PresenceColumns {
            online: state().map(|r| r.is_online).collect(),
            seen: state().map(|r| r.last_seen).collect(),
            since: state().map(|r| r.online_since).collect(),
            sequence: state().map(|r| r.sequence).collect(),
        }
    }
}

/// Stores the presence state and sequence of each of `users` (as they are in memory), in one
/// statement.
pub fn store_reachability(client: &mut impl Sql, users: &[&User]) -> Result<()> {
    if users.is_empty() {
        return Ok(());
    }
    let state = PresenceColumns::of(users);
    client
        .execute(
            "UPDATE users SET is_online = v.online, last_seen = v.seen, online_since = v.since, \
             sequence = v.sequence \
             FROM unnest($1::TEXT[], $2::BOOLEAN[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[]) \
             AS v(sid, online, seen, since, sequence) WHERE users.sid = v.sid",
            &[
                &users.iter().map(|u| u.sid.as_str()).collect::<Vec<_>>(),
                &state.online,
                &state.seen,
                &state.since,
                &state.sequence,
            ],
        )
        .db()?;
    Ok(())
}

pub fn require(client: &mut impl Sql, service_sid: &str, key: &UserKey) -> Result<User> {
    get(client, service_sid, key)?.ok_or(Error::NotFound)
}

pub fn list(client: &mut impl Sql, service_sid: &str, page: PageRequest) -> Result<Page<User>> {
    fetch_page(
        client,
        &format!("SELECT {COLUMNS} FROM users"),
        "service_sid = $1",
        vec![text(service_sid)],
        page,
        from_row,
    )
}

pub fn list_online(
    client: &mut impl Sql,
    service_sid: &str,
    page: PageRequest,
) -> Result<Page<User>> {
    fetch_page(
        client,
        &format!("SELECT {COLUMNS} FROM users"),
        "service_sid = $1 AND is_online",
        vec![text(service_sid)],
        page,
        from_row,
    )
}

pub fn by_identities(
    client: &mut impl Sql,
    service_sid: &str,
    identities: &[String],
) -> Result<Vec<User>> {
    let mut out = Vec::with_capacity(identities.len());
    // The same chunks as the SQLite backend (its parameter limit), so that the order of the
    // answer (by id within each chunk) is the same.
    for chunk in identities.chunks(500) {
        let args: Vec<Arg> = vec![text(service_sid), Box::new(chunk.to_vec())];
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn postgres::types::ToSql + Sync))
            .collect();
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM users WHERE service_sid = $1 AND identity = ANY($2) \
                     ORDER BY id"
                ),
                &params,
            )
            .db()?;
        for row in &rows {
            out.push(from_row(row)?);
        }
    }
    Ok(out)
}

/// Validates `new` and writes its row and `user.added` event; `None` when the identity is
/// taken (by a committed user, or by one another node is creating: PostgreSQL waits for its
/// transaction, and the caller's next statement sees it).
fn create(
    tx: &mut Tx<'_, '_>,
    service_sid: &str,
    new: NewUser,
    origin: Origin,
) -> Result<Option<User>> {
    new.validate()?;
    let default_role = services::default_role(tx, service_sid)?;
    let mut user = new.into_user(service_sid, &default_role, now_ms());
    let inserted = tx
        .query_opt(
            "INSERT INTO users (sid, service_sid, identity, friendly_name, attributes, role_sid, \
             date_created, date_updated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (service_sid, identity) DO NOTHING RETURNING id",
            &[
                &user.sid,
                &user.service_sid,
                &user.identity,
                &user.friendly_name,
                &user.attributes,
                &user.role_sid,
                &user.date_created,
                &user.date_updated,
            ],
        )
        .map_err(|e| match e.code() {
            // The service went away meanwhile (another node): what `default_role` says.
            Some(code) if *code == SqlState::FOREIGN_KEY_VIOLATION => Error::NotFound,
            _ => super::map_pg(e),
        })?;
    if inserted.is_none() {
        return Ok(None);
    }
    emit(
        tx,
        &mut user,
        &EventDraft::new(EventType::UserAdded, origin),
    )?;
    Ok(Some(user))
}

/// Inserts a user into an existing service and records `user.added`; a taken identity is
/// `DuplicateIdentity`.
pub fn insert(
    tx: &mut Tx<'_, '_>,
    service_sid: &str,
    new: NewUser,
    origin: Origin,
) -> Result<User> {
    let identity = new.identity.clone();
    create(tx, service_sid, new, origin)?.ok_or(Error::DuplicateIdentity(identity))
}

/// The user with this identity, created by a client's first contact when missing (once, even
/// when several nodes see the first contact at the same time).
pub fn ensure(tx: &mut Tx<'_, '_>, service_sid: &str, identity: &str) -> Result<(User, bool)> {
    let key = UserKey::Identity(identity.to_string());
    if let Some(user) = get(tx, service_sid, &key)? {
        return Ok((user, false));
    }
    let (new, origin) = first_contact(identity);
    match create(tx, service_sid, new, origin)? {
        Some(user) => Ok((user, true)),
        None => Ok((require(tx, service_sid, &key)?, false)),
    }
}

pub fn update(
    tx: &mut Tx<'_, '_>,
    service_sid: &str,
    key: &UserKey,
    patch: &UserPatch,
    origin: Origin,
) -> Result<User> {
    patch.validate()?;
    let mut user = find(tx, service_sid, key, true)?.ok_or(Error::NotFound)?;
    let before = user.clone();
    patch.apply(&mut user, now_ms());
    tx.execute(
        "UPDATE users SET friendly_name = $2, attributes = $3, role_sid = $4, date_updated = $5 \
         WHERE sid = $1",
        &[
            &user.sid,
            &user.friendly_name,
            &user.attributes,
            &user.role_sid,
            &user.date_updated,
        ],
    )
    .db()?;
    let spec = EventDraft {
        reasons: profile_update_reasons(&before, &user),
        ..EventDraft::new(EventType::UserUpdated, origin)
    };
    emit(tx, &mut user, &spec)?;
    Ok(user)
}

/// Deletes the user (and, by cascade, their bindings) after recording `user.deleted`.
pub fn delete(
    tx: &mut Tx<'_, '_>,
    service_sid: &str,
    key: &UserKey,
    origin: Origin,
) -> Result<Option<User>> {
    let Some(mut user) = find(tx, service_sid, key, true)? else {
        return Ok(None);
    };
    emit(
        tx,
        &mut user,
        &EventDraft::new(EventType::UserDeleted, origin),
    )?;
    tx.execute("DELETE FROM users WHERE sid = $1", &[&user.sid])
        .db()?;
    Ok(Some(user))
}

#[cfg(test)]
mod tests {
    use super::super::services::test_db::fresh_database;
    use super::*;
    use crate::domain::page::Cursor;
    use crate::domain::service::Service;

    fn rest() -> Origin {
        Origin::Rest { webhooks: false }
    }

    fn new_user(identity: &str) -> NewUser {
        NewUser {
            identity: identity.into(),
            ..Default::default()
        }
    }

    #[test]
    fn users_are_inserted_read_listed_updated_and_deleted() {
        let Some(mut db) = fresh_database() else {
            return;
        };
        let service = Service::new("users", 1).expect("service");
        services::insert(&mut db.client, &service).expect("service row");
        let ss = service.sid.clone();
        let mut created = Vec::new();
        for identity in ["alice", "bob", "carol"] {
            let s = ss.clone();
            let user = db
                .write(move |tx| insert(tx, &s, new_user(identity), rest()))
                .expect("insert");
            assert_eq!(
                user.reachability.sequence, 1,
                "user.added bumps the sequence"
            );
            assert_eq!(
                user.role_sid.as_deref(),
                Some(service.settings.default_service_role_sid.as_str())
            );
            created.push(user);
        }
        let s = ss.clone();
        assert!(matches!(
            db.write(move |tx| insert(tx, &s, new_user("alice"), rest())),
            Err(Error::DuplicateIdentity(i)) if i == "alice"
        ));
        assert!(matches!(
            db.write(|tx| insert(tx, "ISnope", new_user("x"), rest())),
            Err(Error::NotFound)
        ));

        let alice = &created[0];
        let by_sid = get(
            &mut db.client,
            &ss,
            &UserKey::SidOrIdentity(alice.sid.clone()),
        )
        .expect("get")
        .expect("exists");
        assert_eq!(&by_sid, alice);
        let by_identity = get(&mut db.client, &ss, &UserKey::SidOrIdentity("bob".into()))
            .expect("get")
            .expect("exists");
        assert_eq!(by_identity, created[1]);
        assert_eq!(
            require(&mut db.client, &ss, &UserKey::Identity("carol".into())).expect("carol"),
            created[2]
        );
        assert!(matches!(
            require(&mut db.client, &ss, &UserKey::Identity("dave".into())),
            Err(Error::NotFound)
        ));

        let p1 = list(
            &mut db.client,
            &ss,
            PageRequest {
                cursor: Cursor::Offset(0),
                size: 2,
            },
        )
        .expect("list");
        assert_eq!(p1.items.len(), 2);
        assert!(p1.has_more_after);
        let p2 = list(
            &mut db.client,
            &ss,
            PageRequest {
                cursor: Cursor::After(p1.items[1].0),
                size: 2,
            },
        )
        .expect("list");
        assert_eq!(p2.items[0].1, created[2]);
        assert!(!p2.has_more_after);

        db.client
            .execute(
                "UPDATE users SET is_online = TRUE WHERE identity = 'bob'",
                &[],
            )
            .expect("online");
        let online = list_online(
            &mut db.client,
            &ss,
            PageRequest {
                cursor: Cursor::Offset(0),
                size: 10,
            },
        )
        .expect("online");
        let identities: Vec<&str> = online
            .items
            .iter()
            .map(|(_, u)| u.identity.as_str())
            .collect();
        assert_eq!(identities, ["bob"]);

        let wanted = ["carol", "nobody", "alice"].map(String::from);
        let found = by_identities(&mut db.client, &ss, &wanted).expect("by identities");
        let identities: Vec<&str> = found.iter().map(|u| u.identity.as_str()).collect();
        assert_eq!(identities, ["alice", "carol"]);

        let s = ss.clone();
        let updated = db
            .write(move |tx| {
                update(
                    tx,
                    &s,
                    &UserKey::SidOrIdentity("alice".into()),
                    &UserPatch {
                        friendly_name: Some("Alice".into()),
                        attributes: Some(r#"{"a":1}"#.into()),
                        ..Default::default()
                    },
                    rest(),
                )
            })
            .expect("update");
        assert_eq!(updated.friendly_name.as_deref(), Some("Alice"));
        assert_eq!(updated.reachability.sequence, 2);
        let stored = require(&mut db.client, &ss, &UserKey::Identity("alice".into())).expect("get");
        assert_eq!(stored, updated);
        let reasons: String = db
            .client
            .query_one("SELECT reasons FROM events ORDER BY id DESC LIMIT 1", &[])
            .expect("event")
            .get(0);
        assert_eq!(
            reasons,
            serde_json::Value::from(profile_update_reasons(alice, &updated)).to_string()
        );

        let s = ss.clone();
        let deleted = db
            .write(move |tx| delete(tx, &s, &UserKey::Identity("alice".into()), rest()))
            .expect("delete")
            .expect("existed");
        assert_eq!(deleted.sid, alice.sid);
        assert_eq!(deleted.reachability.sequence, 3);
        let s = ss.clone();
        assert!(
            db.write(move |tx| delete(tx, &s, &UserKey::Identity("alice".into()), rest()))
                .expect("delete again")
                .is_none()
        );
        let events: Vec<String> = db
            .client
            .query("SELECT type FROM events ORDER BY id", &[])
            .expect("events")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let added = EventType::UserAdded.as_str();
        assert_eq!(
            events,
            [
                added,
                added,
                added,
                EventType::UserUpdated.as_str(),
                EventType::UserDeleted.as_str(),
            ]
        );
    }

    #[test]
    fn ensure_creates_once_even_when_two_nodes_race() {
        let Some(mut db) = fresh_database() else {
            return;
        };
        let service = Service::new("ensure", 1).expect("service");
        services::insert(&mut db.client, &service).expect("service row");
        let s = service.sid.clone();
        let (first, created) = db.write(move |tx| ensure(tx, &s, "zoe")).expect("ensure");
        assert!(created);
        let s = service.sid.clone();
        let (again, created) = db.write(move |tx| ensure(tx, &s, "zoe")).expect("again");
        assert!(!created);
        assert_eq!(again, first);

        // Node A creates "yan" and holds its transaction open; node B's ensure meanwhile
        // waits (on the feed position every writer locks first), then finds A's user. On a
        // loaded machine B's writer may get there first: then A finds B's. Either way, once.
        let other = db.other_writer();
        let s = service.sid.clone();
        let a = db.writer.submit(move |tx| {
            let out = ensure(tx, &s, "yan")?;
            std::thread::sleep(std::time::Duration::from_millis(400));
            Ok(out)
        });
        let s = service.sid.clone();
        let b = other.submit(move |tx| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            ensure(tx, &s, "yan")
        });
        let (a, b) = db.block_on(async { tokio::join!(a, b) });
        let ((ua, ca), (ub, cb)) = (a.expect("node A"), b.expect("node B"));
        assert!(ca != cb, "created once: {ca} {cb}");
        assert_eq!(ua.sid, ub.sid);
        let count: i64 = db
            .client
            .query_one("SELECT count(*) FROM users WHERE identity = 'yan'", &[])
            .expect("count")
            .get(0);
        assert_eq!(count, 1);
        let added: i64 = db
            .client
            .query_one(
                "SELECT count(*) FROM events WHERE identity = 'yan' AND type = $1",
                &[&EventType::UserAdded.as_str()],
            )
            .expect("count")
            .get(0);
        assert_eq!(added, 1);
    }
}
