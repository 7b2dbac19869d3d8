//! SQL for services.
//!
//! May depend on: rusqlite, serde_json, domain.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqlResultExt;
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

fn from_row(row: &Row<'_>) -> rusqlite::Result<Service> {
    let settings: String = row.get(7)?;
    let settings = serde_json::from_str(&settings).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Service {
        sid: row.get(1)?,
        friendly_name: row.get(2)?,
        reachability_enabled: row.get(3)?,
        presence: PresenceOverrides {
            ping_interval_ms: millis(row, 4)?,
            session_ttl_ms: millis(row, 5)?,
            offline_grace_ms: millis(row, 6)?,
        },
        settings,
        date_created: row.get(8)?,
        date_updated: row.get(9)?,
    })
}

/// A nullable non-negative duration column.
fn millis(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<u64>> {
    Ok(row
        .get::<_, Option<i64>>(index)?
        .and_then(|v| u64::try_from(v).ok()))
}

fn as_column(value: Option<u64>) -> Option<i64> {
    value.and_then(|v| i64::try_from(v).ok())
}

fn settings_json(service: &Service) -> Result<String> {
    serde_json::to_string(&service.settings).map_err(|e| Error::Internal(e.into()))
}

pub fn get(conn: &Connection, sid: &str) -> Result<Option<Service>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM services WHERE sid = ?1"))
        .db()?
        .query_row([sid], from_row)
        .optional()
        .db()
}

pub fn require(conn: &Connection, sid: &str) -> Result<Service> {
    get(conn, sid)?.ok_or(Error::NotFound)
}

pub fn list(conn: &Connection, page: PageRequest) -> Result<Page<Service>> {
    fetch_page(
        conn,
        &format!("SELECT {COLUMNS} FROM services"),
        "1",
        Vec::new(),
        page,
        from_row,
    )
}

pub fn insert(conn: &Connection, service: &Service) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO services (sid, friendly_name, reachability_enabled, ping_interval_ms, \
         session_ttl_ms, offline_grace_ms, settings, date_created, date_updated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .db()?
    .execute(params![
        service.sid,
        service.friendly_name,
        service.reachability_enabled,
        as_column(service.presence.ping_interval_ms),
        as_column(service.presence.session_ttl_ms),
        as_column(service.presence.offline_grace_ms),
        settings_json(service)?,
        service.date_created,
        service.date_updated,
    ])
    .db()?;
    Ok(())
}

fn save(conn: &Connection, service: &Service) -> Result<()> {
    conn.prepare_cached(
        "UPDATE services SET friendly_name = ?2, reachability_enabled = ?3, ping_interval_ms = ?4, \
         session_ttl_ms = ?5, offline_grace_ms = ?6, settings = ?7, date_updated = ?8 WHERE sid = ?1",
    )
    .db()?
    .execute(params![
        service.sid,
        service.friendly_name,
        service.reachability_enabled,
        as_column(service.presence.ping_interval_ms),
        as_column(service.presence.session_ttl_ms),
        as_column(service.presence.offline_grace_ms),
        settings_json(service)?,
        service.date_updated,
    ])
    .db()?;
    Ok(())
}

/// Applies `patch`. Enabling reachability forgets every user's previous state (unknown until
/// the next transition), except that users with push bindings become notifiable at once, each
/// with an event (cause `reachability_enabled`).
pub fn update(
    tx: &mut Tx<'_>,
    sid: &str,
    patch: &ServicePatch,
) -> Result<(Service, ReachabilityToggle)> {
    let mut service = require(tx, sid)?;
    let toggle = service.apply(patch, now_ms())?;
    save(tx, &service)?;
    if toggle == ReachabilityToggle::Enabled {
        tx.prepare_cached("UPDATE users SET is_online = NULL, is_notifiable = NULL, online_since = NULL WHERE service_sid = ?1")
            .db()?
            .execute([sid])
            .db()?;
        // Every user's binding types; the domain says which make a user notifiable.
        let typed: Vec<(String, String)> = tx
            .prepare_cached(
                "SELECT u.sid, b.binding_type FROM users u JOIN bindings b ON b.user_sid = u.sid \
                 WHERE u.service_sid = ?1 ORDER BY u.id",
            )
            .db()?
            .query_map([sid], |r| Ok((r.get(0)?, r.get(1)?)))
            .db()?
            .collect::<rusqlite::Result<_>>()
            .db()?;
        let mut with_bindings: Vec<(String, Vec<BindingType>)> = Vec::new();
        for (user_sid, kind) in typed {
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
            tx.prepare_cached("UPDATE users SET is_notifiable = 1 WHERE sid = ?1")
                .db()?
                .execute([&user_sid])
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
pub fn set_presence(conn: &Connection, sid: &str, presence: PresenceOverrides) -> Result<Service> {
    let mut service = require(conn, sid)?;
    service.presence = presence;
    service.date_updated = now_ms();
    save(conn, &service)?;
    Ok(service)
}

/// A service's default role for new users, without decoding its settings; `NotFound` when the
/// service does not exist.
pub fn default_role(conn: &Connection, sid: &str) -> Result<String> {
    conn.prepare_cached(
        "SELECT json_extract(settings, '$.default_service_role_sid') FROM services WHERE sid = ?1",
    )
    .db()?
    .query_row([sid], |r| r.get::<_, Option<String>>(0))
    .optional()
    .db()?
    .flatten()
    .ok_or(Error::NotFound)
}

/// Every service (for the presence engine at startup).
pub fn all(conn: &Connection) -> Result<Vec<Service>> {
    let mut stmt = conn
        .prepare(&format!("SELECT {COLUMNS} FROM services ORDER BY id"))
        .db()?;
    let rows = stmt
        .query_map([], from_row)
        .db()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db()?;
    Ok(rows)
}

pub fn delete(conn: &Connection, sid: &str) -> Result<bool> {
    let deleted = conn
        .prepare_cached("DELETE FROM services WHERE sid = ?1")
        .db()?
        .execute([sid])
        .db()?;
    conn.prepare_cached(
        "UPDATE account SET default_chat_service_sid = NULL WHERE default_chat_service_sid = ?1",
    )
    .db()?
    .execute([sid])
    .db()?;
    Ok(deleted > 0)
}
