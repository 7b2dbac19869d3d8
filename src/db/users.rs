//! SQL for users; every write records its event.
//!
//! May depend on: rusqlite, serde_json, domain, db::{events, paging, services, writer}.

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqlResultExt;
use super::events::emit;
use super::paging::{fetch_page, text};
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

fn from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        sid: row.get(1)?,
        service_sid: row.get(2)?,
        identity: row.get(3)?,
        friendly_name: row.get(4)?,
        attributes: row.get(5)?,
        role_sid: row.get(6)?,
        joined_channels_count: row.get(7)?,
        reachability: Reachability {
            is_online: row.get(8)?,
            is_notifiable: row.get(9)?,
            sequence: row.get(12)?,
            last_seen: row.get(13)?,
            online_since: row.get(14)?,
        },
        date_created: row.get(10)?,
        date_updated: row.get(11)?,
    })
}

fn with_row(row: &Row<'_>) -> rusqlite::Result<(i64, User)> {
    Ok((row.get(0)?, from_row(row)?))
}

/// Looks a user up by SID (when the key is SID-shaped) and then by identity.
pub fn get(conn: &Connection, service_sid: &str, key: &UserKey) -> Result<Option<User>> {
    Ok(get_with_row(conn, service_sid, key)?.map(|(_, user)| user))
}

/// [`get`], with the user's row id (what the writer's update hook reports when it changes).
pub fn get_with_row(
    conn: &Connection,
    service_sid: &str,
    key: &UserKey,
) -> Result<Option<(i64, User)>> {
    // The SQL is built once: this is the user fetch's hot path.
    static BY_SID_OR_IDENTITY: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {COLUMNS} FROM users WHERE service_sid = ?1 AND (sid = ?2 OR identity = ?3) \
             ORDER BY sid = ?2 DESC LIMIT 1"
        )
    });
    static BY_IDENTITY: LazyLock<String> = LazyLock::new(|| {
        format!("SELECT {COLUMNS} FROM users WHERE service_sid = ?1 AND identity = ?2")
    });
    match key {
        UserKey::SidOrIdentity(v) => conn
            .prepare_cached(&BY_SID_OR_IDENTITY)
            .db()?
            .query_row(params![service_sid, ids::normalize(v), v], with_row),
        UserKey::Identity(v) => conn
            .prepare_cached(&BY_IDENTITY)
            .db()?
            .query_row(params![service_sid, v], with_row),
    }
    .optional()
    .db()
}

pub fn require(conn: &Connection, service_sid: &str, key: &UserKey) -> Result<User> {
    get(conn, service_sid, key)?.ok_or(Error::NotFound)
}

pub fn list(conn: &Connection, service_sid: &str, page: PageRequest) -> Result<Page<User>> {
    fetch_page(
        conn,
        &format!("SELECT {COLUMNS} FROM users"),
        "service_sid = ?",
        vec![text(service_sid)],
        page,
        from_row,
    )
}

pub fn list_online(conn: &Connection, service_sid: &str, page: PageRequest) -> Result<Page<User>> {
    fetch_page(
        conn,
        &format!("SELECT {COLUMNS} FROM users"),
        "service_sid = ? AND is_online = 1",
        vec![text(service_sid)],
        page,
        from_row,
    )
}

pub fn by_identities(
    conn: &Connection,
    service_sid: &str,
    identities: &[String],
) -> Result<Vec<User>> {
    // One statement for any number of identities, prepared once: the list is bound as one
    // JSON array (rather than one placeholder each, a new SQL text — parsed and planned —
    // for every count). The `IN` still looks each identity up in the (service, identity)
    // index.
    let list =
        serde_json::to_string(identities).map_err(|e| crate::domain::Error::Internal(e.into()))?;
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM users WHERE service_sid = ?1 \
             AND identity IN (SELECT value FROM json_each(?2)) ORDER BY id"
        ))
        .db()?;
    let rows = stmt.query_map(params![service_sid, list], from_row).db()?;
    rows.map(|row| row.db()).collect()
}

/// Inserts a user into an existing service and records `user.added`; a taken identity is
/// `DuplicateIdentity`.
pub fn insert(tx: &mut Tx<'_>, service_sid: &str, new: NewUser, origin: Origin) -> Result<User> {
    new.validate()?;
    let default_role = services::default_role(tx, service_sid)?;
    if get(tx, service_sid, &UserKey::Identity(new.identity.clone()))?.is_some() {
        return Err(Error::DuplicateIdentity(new.identity));
    }
    let mut user = new.into_user(service_sid, &default_role, now_ms());
    tx.prepare_cached(
        "INSERT INTO users (sid, service_sid, identity, friendly_name, attributes, role_sid, \
         date_created, date_updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .db()?
    .execute(params![
        user.sid,
        user.service_sid,
        user.identity,
        user.friendly_name,
        user.attributes,
        user.role_sid,
        user.date_created,
        user.date_updated,
    ])
    .db()?;
    emit(
        tx,
        &mut user,
        &EventDraft::new(EventType::UserAdded, origin),
    )?;
    Ok(user)
}

/// The user with this identity, created by a client's first contact when missing.
pub fn ensure(tx: &mut Tx<'_>, service_sid: &str, identity: &str) -> Result<(User, bool)> {
    if let Some(user) = get(tx, service_sid, &UserKey::Identity(identity.to_string()))? {
        return Ok((user, false));
    }
    let (new, origin) = first_contact(identity);
    Ok((insert(tx, service_sid, new, origin)?, true))
}

pub fn update(
    tx: &mut Tx<'_>,
    service_sid: &str,
    key: &UserKey,
    patch: &UserPatch,
    origin: Origin,
) -> Result<User> {
    patch.validate()?;
    let mut user = require(tx, service_sid, key)?;
    let before = user.clone();
    patch.apply(&mut user, now_ms());
    tx.prepare_cached(
        "UPDATE users SET friendly_name = ?2, attributes = ?3, role_sid = ?4, date_updated = ?5 WHERE sid = ?1",
    )
    .db()?
    .execute(params![user.sid, user.friendly_name, user.attributes, user.role_sid, user.date_updated])
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
    tx: &mut Tx<'_>,
    service_sid: &str,
    key: &UserKey,
    origin: Origin,
) -> Result<Option<User>> {
    let Some(mut user) = get(tx, service_sid, key)? else {
        return Ok(None);
    };
    emit(
        tx,
        &mut user,
        &EventDraft::new(EventType::UserDeleted, origin),
    )?;
    tx.prepare_cached("DELETE FROM users WHERE sid = ?1")
        .db()?
        .execute([&user.sid])
        .db()?;
    Ok(Some(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_identities_finds_any_number_once_each_in_id_order() {
        let mut conn = Connection::open_in_memory().expect("memory database");
        crate::db::open::migrate(&mut conn).expect("schema");
        conn.execute(
            "INSERT INTO services (sid, friendly_name, settings, date_created, date_updated) \
             VALUES ('IS1', 's', '{}', 0, 0), ('IS2', 't', '{}', 0, 0)",
            [],
        )
        .expect("services");
        for i in 0..1_200 {
            for service in ["IS1", "IS2"] {
                conn.execute(
                    "INSERT INTO users (sid, service_sid, identity, date_created, date_updated) \
                     VALUES (?1, ?2, ?3, 0, 0)",
                    params![format!("US{service}{i}"), service, format!("u{i}")],
                )
                .expect("user");
            }
        }
        // More identities than one statement could bind placeholders for, in reverse,
        // with a repeat and unknown ones.
        let mut asked: Vec<String> = (0..1_000).rev().map(|i| format!("u{i}")).collect();
        asked.extend([
            "u7".to_string(),
            "nobody".to_string(),
            "it's \"quoted\"".to_string(),
        ]);
        let found = by_identities(&conn, "IS1", &asked).expect("read");
        assert_eq!(found.len(), 1_000);
        assert!(found.iter().all(|u| u.service_sid == "IS1"));
        let identities: Vec<&str> = found.iter().map(|u| u.identity.as_str()).collect();
        assert_eq!(identities[..3], ["u0", "u1", "u2"], "in id order");
        assert_eq!(identities[999], "u999");
        assert!(by_identities(&conn, "IS1", &[]).expect("read").is_empty());
    }
}
