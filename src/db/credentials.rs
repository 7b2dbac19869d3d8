//! SQL for push credentials. Secrets are written, never read back.
//!
//! May depend on: rusqlite, domain.

use rusqlite::{Connection, OptionalExtension, Row, params};

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
        s.certificate,
        s.private_key,
        s.api_key,
        s.secret,
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
        s.certificate,
        s.private_key,
        s.api_key,
        s.secret,
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
