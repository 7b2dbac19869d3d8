//! API keys: created, listed and revoked by the CLI (also against a running server's database)
//! and looked up by the server for Basic auth and access tokens.
//!
//! May depend on: rusqlite, serde_json, domain.

use rusqlite::{Connection, OptionalExtension, params};

use super::SqlResultExt;
use crate::domain::Result;
use crate::domain::account::ApiKey;
use crate::domain::ids::{self, Prefix};
use crate::domain::time::now_ms;

/// Creates a key with a fresh random secret (32 bytes, hex).
pub fn create(conn: &Connection, friendly_name: Option<&str>) -> Result<ApiKey> {
    let key = ApiKey {
        sid: ids::new_sid(Prefix::ApiKey),
        friendly_name: friendly_name.map(str::to_string),
        secret: ids::random_hex(32),
        date_created: now_ms(),
    };
    conn.execute(
        "INSERT INTO api_keys (sid, friendly_name, secret, date_created) VALUES (?1, ?2, ?3, ?4)",
        params![key.sid, key.friendly_name, key.secret, key.date_created],
    )
    .db()?;
    Ok(key)
}

/// A key that exists and is not revoked.
pub fn get_live(conn: &Connection, sid: &str) -> Result<Option<ApiKey>> {
    conn.prepare_cached(
        "SELECT sid, friendly_name, secret, date_created FROM api_keys WHERE sid = ?1 AND revoked_at IS NULL",
    )
    .db()?
    .query_row([sid], |r| {
        Ok(ApiKey { sid: r.get(0)?, friendly_name: r.get(1)?, secret: r.get(2)?, date_created: r.get(3)? })
    })
    .optional()
    .db()
}

/// Which of `sids` are live keys: one statement whatever their number (the SIDs travel as
/// one JSON array).
pub fn live_among(conn: &Connection, sids: &[String]) -> Result<std::collections::HashSet<String>> {
    let list = serde_json::to_string(sids).map_err(|e| crate::domain::Error::Internal(e.into()))?;
    conn.prepare_cached(
        "SELECT sid FROM api_keys WHERE revoked_at IS NULL AND sid IN (SELECT value FROM json_each(?1))",
    )
    .db()?
    .query_map([list], |r| r.get(0))
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

/// The oldest live key (with its secret).
pub fn first_live(conn: &Connection) -> Result<Option<ApiKey>> {
    conn.query_row(
        "SELECT sid, friendly_name, secret, date_created FROM api_keys WHERE revoked_at IS NULL ORDER BY id LIMIT 1",
        [],
        |r| Ok(ApiKey { sid: r.get(0)?, friendly_name: r.get(1)?, secret: r.get(2)?, date_created: r.get(3)? }),
    )
    .optional()
    .db()
}

/// Every key, oldest first, with whether it is revoked; secrets blanked.
pub fn list(conn: &Connection) -> Result<Vec<(ApiKey, bool)>> {
    let mut stmt = conn
        .prepare("SELECT sid, friendly_name, date_created, revoked_at IS NOT NULL FROM api_keys ORDER BY id")
        .db()?;
    let rows = stmt
        .query_map([], |r| {
            let key = ApiKey {
                sid: r.get(0)?,
                friendly_name: r.get(1)?,
                secret: String::new(),
                date_created: r.get(2)?,
            };
            Ok((key, r.get::<_, bool>(3)?))
        })
        .db()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db()?;
    Ok(rows)
}

/// Revokes a key; false when no live key has this SID.
pub fn revoke(conn: &Connection, sid: &str) -> Result<bool> {
    let n = conn
        .execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE sid = ?1 AND revoked_at IS NULL",
            params![sid, now_ms()],
        )
        .db()?;
    Ok(n > 0)
}
