//! SQL for users.
//!
//! May depend on: rusqlite, domain.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqlResultExt;
use super::paging::{fetch_page, text};
use super::services;
use crate::domain::ids;
use crate::domain::page::{Page, PageRequest};
use crate::domain::time::now_ms;
use crate::domain::user::{NewUser, Reachability, User, UserKey, UserPatch};
use crate::domain::{Error, Result};

const COLUMNS: &str = "id, sid, service_sid, identity, friendly_name, attributes, role_sid, \
     joined_channels_count, is_online, is_notifiable, date_created, date_updated";

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
        },
        date_created: row.get(10)?,
        date_updated: row.get(11)?,
    })
}

/// Looks a user up by SID (when the key is SID-shaped) and then by identity.
pub fn get(conn: &Connection, service_sid: &str, key: &UserKey) -> Result<Option<User>> {
    match key {
        UserKey::SidOrIdentity(v) => conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM users WHERE service_sid = ?1 AND (sid = ?2 OR identity = ?3) \
                 ORDER BY sid = ?2 DESC LIMIT 1"
            ))
            .db()?
            .query_row(params![service_sid, ids::normalize(v), v], from_row),
        UserKey::Identity(v) => conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE service_sid = ?1 AND identity = ?2"))
            .db()?
            .query_row(params![service_sid, v], from_row),
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

/// Inserts a user into an existing service; a taken identity is `DuplicateIdentity`.
pub fn insert(conn: &Connection, service_sid: &str, new: NewUser) -> Result<User> {
    new.validate()?;
    let service = services::require(conn, service_sid)?;
    if get(conn, service_sid, &UserKey::Identity(new.identity.clone()))?.is_some() {
        return Err(Error::DuplicateIdentity(new.identity));
    }
    let user = new.into_user(
        service_sid,
        &service.settings.default_service_role_sid,
        now_ms(),
    );
    conn.prepare_cached(
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
    Ok(user)
}

pub fn update(
    conn: &Connection,
    service_sid: &str,
    key: &UserKey,
    patch: &UserPatch,
) -> Result<User> {
    patch.validate()?;
    let mut user = require(conn, service_sid, key)?;
    patch.apply(&mut user, now_ms());
    conn.prepare_cached(
        "UPDATE users SET friendly_name = ?2, attributes = ?3, role_sid = ?4, date_updated = ?5 WHERE sid = ?1",
    )
    .db()?
    .execute(params![user.sid, user.friendly_name, user.attributes, user.role_sid, user.date_updated])
    .db()?;
    Ok(user)
}

/// Deletes the user (and, by cascade, their bindings); returns the deleted user.
pub fn delete(conn: &Connection, service_sid: &str, key: &UserKey) -> Result<Option<User>> {
    let Some(user) = get(conn, service_sid, key)? else {
        return Ok(None);
    };
    conn.prepare_cached("DELETE FROM users WHERE sid = ?1")
        .db()?
        .execute([&user.sid])
        .db()?;
    Ok(Some(user))
}

/// Stores a new notifiable state (only meaningful while reachability is enabled).
pub fn set_notifiable(conn: &Connection, user_sid: &str, notifiable: bool) -> Result<()> {
    conn.prepare_cached("UPDATE users SET is_notifiable = ?2 WHERE sid = ?1")
        .db()?
        .execute(params![user_sid, notifiable])
        .db()?;
    Ok(())
}
