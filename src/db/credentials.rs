//! SQL for push credentials. Secrets are written, never read back: reachd keeps push
//! credentials for API compatibility but sends no push notifications, so nothing needs their
//! plain value. Only a SHA-256 fingerprint (`sha256:<hex>`) of each certificate, private key,
//! API key and secret is stored; plain values left by older versions are replaced at start.
//!
//! May depend on: rusqlite, sha2, domain.

use rusqlite::{Connection, OptionalExtension, Row, params};
use sha2::{Digest, Sha256};

use super::SqlResultExt;
use super::paging::fetch_page;
use crate::domain::credential::{Credential, CredentialPatch, CredentialType, NewCredential};
use crate::domain::ids;
use crate::domain::page::{Page, PageRequest};
use crate::domain::time::now_ms;
use crate::domain::{Error, Result};

const COLUMNS: &str = "id, sid, friendly_name, type, sandbox, date_created, date_updated";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Credential> {
    let kind: String = row.get(3)?;
    Ok(Credential {
        sid: row.get(1)?,
        friendly_name: row.get(2)?,
        kind: CredentialType::parse(&kind).unwrap_or(CredentialType::Apn),
        sandbox: row.get(4)?,
        date_created: row.get(5)?,
        date_updated: row.get(6)?,
    })
}

pub fn get(conn: &Connection, sid: &str) -> Result<Option<Credential>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM credentials WHERE sid = ?1"))
        .db()?
        .query_row([ids::normalize(sid)], from_row)
        .optional()
        .db()
}

pub fn list(conn: &Connection, page: PageRequest) -> Result<Page<Credential>> {
    fetch_page(
        conn,
        &format!("SELECT {COLUMNS} FROM credentials"),
        "1",
        Vec::new(),
        page,
        from_row,
    )
}

pub fn insert(conn: &Connection, new: &NewCredential) -> Result<Credential> {
    new.validate()?;
    let credential = new.to_credential(now_ms());
    let s = &new.secrets;
    conn.prepare_cached(
        "INSERT INTO credentials (sid, friendly_name, type, sandbox, certificate, private_key, api_key, \
         secret, date_created, date_updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .db()?
    .execute(params![
        credential.sid,
        credential.friendly_name,
        credential.kind.as_str(),
        credential.sandbox,
        fingerprint(s.certificate.as_deref()),
        fingerprint(s.private_key.as_deref()),
        fingerprint(s.api_key.as_deref()),
        fingerprint(s.secret.as_deref()),
        credential.date_created,
        credential.date_updated,
    ])
    .db()?;
    Ok(credential)
}

pub fn update(conn: &Connection, sid: &str, patch: &CredentialPatch) -> Result<Credential> {
    patch.validate()?;
    let mut credential = get(conn, sid)?.ok_or(Error::NotFound)?;
    patch.apply(&mut credential, now_ms());
    let s = &patch.secrets;
    conn.prepare_cached(
        "UPDATE credentials SET friendly_name = ?2, type = ?3, sandbox = ?4, \
         certificate = coalesce(?5, certificate), private_key = coalesce(?6, private_key), \
         api_key = coalesce(?7, api_key), secret = coalesce(?8, secret), date_updated = ?9 WHERE sid = ?1",
    )
    .db()?
    .execute(params![
        credential.sid,
        credential.friendly_name,
        credential.kind.as_str(),
        credential.sandbox,
        fingerprint(s.certificate.as_deref()),
        fingerprint(s.private_key.as_deref()),
        fingerprint(s.api_key.as_deref()),
        fingerprint(s.secret.as_deref()),
        credential.date_updated,
    ])
    .db()?;
    Ok(credential)
}

pub fn delete(conn: &Connection, sid: &str) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM credentials WHERE sid = ?1")
        .db()?
        .execute([ids::normalize(sid)])
        .db()?;
    Ok(n > 0)
}

/// Marks a stored fingerprint (a plain value never starts with it in practice: PEM starts
/// with `-----`, keys are base64 or hex).
const FINGERPRINT: &str = "sha256:";

/// What is stored in place of a credential secret.
fn fingerprint(value: Option<&str>) -> Option<String> {
    value.map(|v| {
        let digest = Sha256::digest(v.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{FINGERPRINT}{hex}")
    })
}

/// Replaces plain secrets written by older versions with their fingerprints (with SQLite's
/// secure delete on, so the old cells are zeroed); returns how many credentials changed.
pub fn fingerprint_stored(conn: &Connection) -> Result<usize> {
    let plain = |c: &str| format!("({c} IS NOT NULL AND substr({c}, 1, 7) <> '{FINGERPRINT}')");
    let filter = ["certificate", "private_key", "api_key", "secret"].map(plain);
    let rows: Vec<(i64, [Option<String>; 4])> = conn
        .prepare(&format!(
            "SELECT id, certificate, private_key, api_key, secret FROM credentials WHERE {}",
            filter.join(" OR ")
        ))
        .db()?
        .query_map([], |r| {
            Ok((r.get(0)?, [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?]))
        })
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    if rows.is_empty() {
        return Ok(0);
    }
    let keep = |v: &Option<String>| match v.as_deref() {
        Some(v) if !v.starts_with(FINGERPRINT) => fingerprint(Some(v)),
        other => other.map(str::to_string),
    };
    conn.pragma_update(None, "secure_delete", true).db()?;
    let tx = conn.unchecked_transaction().db()?;
    for (id, [certificate, private_key, api_key, secret]) in &rows {
        tx.execute(
            "UPDATE credentials SET certificate = ?2, private_key = ?3, api_key = ?4, secret = ?5 \
             WHERE id = ?1",
            params![
                id,
                keep(certificate),
                keep(private_key),
                keep(api_key),
                keep(secret)
            ],
        )
        .db()?;
    }
    tx.commit().db()?;
    conn.pragma_update(None, "secure_delete", false).db()?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_secrets_of_older_versions_become_fingerprints() {
        let mut conn = Connection::open_in_memory().expect("open");
        crate::db::open::migrate(&mut conn).expect("schema");
        conn.execute(
            "INSERT INTO credentials (sid, type, private_key, secret, date_created, date_updated) \
             VALUES ('CR1', 'apn', 'PLAIN-KEY', NULL, 0, 0)",
            [],
        )
        .expect("legacy row");
        assert_eq!(fingerprint_stored(&conn).expect("scrub"), 1);
        assert_eq!(fingerprint_stored(&conn).expect("again"), 0, "idempotent");
        let (key, secret): (String, Option<String>) = conn
            .query_row(
                "SELECT private_key, secret FROM credentials WHERE sid = 'CR1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("row");
        assert_eq!(Some(key), fingerprint(Some("PLAIN-KEY")));
        assert_eq!(secret, None);
    }
}
