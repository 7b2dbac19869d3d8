//! SQL for native webhook endpoints, and syncing the config file's endpoints at startup.
//!
//! May depend on: rusqlite, serde_json, base64, domain, db::writer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqlResultExt;
use super::writer::Tx;
use crate::domain::time::now_ms;
use crate::domain::webhook::{
    ConfigEndpoint, Endpoint, EndpointPatch, NewEndpoint, endpoint_target,
};
use crate::domain::{Error, Result, ids};

const COLUMNS: &str = "id, service_sid, url, description, event_types, disabled, disabled_reason, from_config, created_at, updated_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Endpoint> {
    let types: Option<String> = row.get(4)?;
    Ok(Endpoint {
        id: row.get(0)?,
        service_sid: row.get(1)?,
        url: row.get(2)?,
        description: row.get(3)?,
        event_types: types.and_then(|t| serde_json::from_str(&t).ok()),
        disabled: row.get(5)?,
        disabled_reason: row.get(6)?,
        from_config: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
    })
}

fn types_json(types: &Option<Vec<String>>) -> Option<String> {
    types
        .as_ref()
        .map(|t| serde_json::Value::from(t.clone()).to_string())
}

/// A fresh Standard Webhooks secret: `whsec_` and 24 random bytes in base64.
pub fn new_secret() -> String {
    format!("whsec_{}", STANDARD.encode(ids::random_bytes(24)))
}

fn next_seq(conn: &Connection) -> Result<i64> {
    conn.query_row(
        "SELECT coalesce(max(seq), 0) + 1 FROM webhook_endpoints",
        [],
        |r| r.get(0),
    )
    .db()
}

/// Creates an endpoint of a service; returns it with its secret (shown once).
pub fn create(
    conn: &Connection,
    service_sid: &str,
    new: &NewEndpoint,
) -> Result<(Endpoint, String)> {
    new.validate()?;
    let id = format!("WH{}", ids::random_hex(16));
    let secret = new_secret();
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO webhook_endpoints (id, service_sid, url, description, secret, event_types, created_at, updated_at, seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
    )
    .db()?
    .execute(params![id, service_sid, new.url, new.description, secret, types_json(&new.event_types), now, next_seq(conn)?])
    .db()?;
    Ok((get(conn, service_sid, &id)?.ok_or(Error::NotFound)?, secret))
}

/// An endpoint visible to a service (its own, or a config endpoint).
pub fn get(conn: &Connection, service_sid: &str, id: &str) -> Result<Option<Endpoint>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = ?1 AND (service_sid = ?2 OR service_sid IS NULL)"
    ))
    .db()?
    .query_row(params![id, service_sid], from_row)
    .optional()
    .db()
}

pub fn list(conn: &Connection, service_sid: &str) -> Result<Vec<Endpoint>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE service_sid = ?1 OR service_sid IS NULL ORDER BY seq"
    ))
    .db()?
    .query_map([service_sid], from_row)
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

/// Updates a service's own endpoint (config endpoints are changed in the config file).
pub fn update(
    tx: &mut Tx<'_>,
    service_sid: &str,
    id: &str,
    patch: &EndpointPatch,
) -> Result<Endpoint> {
    patch.validate()?;
    let mut e = get(tx, service_sid, id)?.ok_or(Error::NotFound)?;
    let reschedule = patch.redirects_pending_deliveries(&e);
    if e.from_config {
        return Err(Error::Conflict(
            "endpoints from the config file are changed in the config file".into(),
        ));
    }
    if let Some(url) = &patch.url {
        e.url = url.clone();
    }
    if let Some(description) = &patch.description {
        e.description = Some(description.clone());
    }
    if let Some(types) = &patch.event_types {
        e.event_types = types.clone();
    }
    if let Some(disabled) = patch.disabled {
        e.disabled = disabled;
        e.disabled_reason = if disabled {
            Some("disabled through the API".into())
        } else {
            None
        };
    }
    e.updated_at = now_ms();
    tx.prepare_cached(
        "UPDATE webhook_endpoints SET url = ?2, description = ?3, event_types = ?4, disabled = ?5, disabled_reason = ?6, \
         updated_at = ?7 WHERE id = ?1",
    )
    .db()?
    .execute(params![e.id, e.url, e.description, types_json(&e.event_types), e.disabled, e.disabled_reason, e.updated_at])
    .db()?;
    if reschedule {
        let due = tx
            .prepare_cached(
                "UPDATE deliveries SET url = ?3, next_attempt_at = min(next_attempt_at, ?2), updated_at = ?2 \
                 WHERE target = ?1 AND status = 'pending'",
            )
            .db()?
            .execute(params![endpoint_target(&e.id), e.updated_at, e.url])
            .db()?;
        if due > 0 {
            tx.record_deliveries();
        }
    }
    Ok(e)
}

pub fn delete(conn: &Connection, service_sid: &str, id: &str) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM webhook_endpoints WHERE id = ?1 AND service_sid = ?2")
        .db()?
        .execute(params![id, service_sid])
        .db()?;
    Ok(n > 0)
}

/// Makes the stored config endpoints match the config file: ids derive from the names, so an
/// entry keeps its id (and its delivery log) across restarts.
pub fn sync_config(conn: &Connection, entries: &[ConfigEndpoint]) -> Result<()> {
    let now = now_ms();
    let mut keep = Vec::new();
    for entry in entries {
        let id = entry.id();
        conn.execute(
            "INSERT INTO webhook_endpoints (id, service_sid, url, description, secret, event_types, from_config, created_at, updated_at, seq) \
             VALUES (?1, NULL, ?2, ?3, ?4, ?5, 1, ?6, ?6, ?7) ON CONFLICT (id) DO UPDATE SET url = excluded.url, \
             description = excluded.description, secret = excluded.secret, event_types = excluded.event_types, \
             disabled = 0, disabled_reason = NULL, updated_at = excluded.updated_at",
            params![id, entry.url, entry.name, entry.secret, types_json(&entry.event_types), now, next_seq(conn)?],
        )
        .db()?;
        keep.push(id);
    }
    let stored: Vec<String> = conn
        .prepare("SELECT id FROM webhook_endpoints WHERE from_config = 1")
        .db()?
        .query_map([], |r| r.get(0))
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    for id in stored.into_iter().filter(|id| !keep.contains(id)) {
        conn.execute("DELETE FROM webhook_endpoints WHERE id = ?1", [id])
            .db()?;
    }
    Ok(())
}
