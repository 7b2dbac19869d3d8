//! SQL for push credentials on PostgreSQL (the SQLite backend's `db::credentials`, same
//! answers). Secrets are written, never read back: reachd keeps push credentials for API
//! compatibility but sends no push notifications, so nothing needs their plain value. Only a
//! SHA-256 fingerprint (`sha256:<hex>`) of each certificate, private key, API key and secret
//! is stored; plain values (from a database filled by other means) are replaced at start.
//! PostgreSQL has no secure delete: the replaced values' old row versions stay on disk until
//! vacuum reuses their space.
//!
//! May depend on: postgres, sha2, domain, pg::paging.

use postgres::Row;

use super::statements::Sql;
use sha2::{Digest, Sha256};

use super::PgResultExt;
use super::paging::fetch_page;
use crate::domain::credential::{Credential, CredentialPatch, CredentialType, NewCredential};
use crate::domain::ids;
use crate::domain::page::{Page, PageRequest};
use crate::domain::time::now_ms;
use crate::domain::{Error, Result};

const COLUMNS: &str = "id, sid, friendly_name, type, sandbox, date_created, date_updated";

fn from_row(row: &Row) -> Result<Credential> {
    let kind: String = row.try_get(3).db()?;
    Ok(Credential {
        sid: row.try_get(1).db()?,
        friendly_name: row.try_get(2).db()?,
        kind: CredentialType::parse(&kind).unwrap_or(CredentialType::Apn),
        sandbox: row.try_get(4).db()?,
        date_created: row.try_get(5).db()?,
        date_updated: row.try_get(6).db()?,
    })
}

/// The credential `sid` names; `lock` takes the row's lock until the transaction ends.
fn find(client: &mut impl Sql, sid: &str, lock: bool) -> Result<Option<Credential>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM credentials WHERE sid = $1{lock}"),
            &[&ids::normalize(sid)],
        )
        .db()?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub fn get(client: &mut impl Sql, sid: &str) -> Result<Option<Credential>> {
    find(client, sid, false)
}

pub fn list(client: &mut impl Sql, page: PageRequest) -> Result<Page<Credential>> {
    fetch_page(
        client,
        &format!("SELECT {COLUMNS} FROM credentials"),
        "TRUE",
        Vec::new(),
        page,
        from_row,
    )
}

pub fn insert(client: &mut impl Sql, new: &NewCredential) -> Result<Credential> {
    new.validate()?;
    let credential = new.to_credential(now_ms());
    let s = &new.secrets;
    client
        .execute(
            "INSERT INTO credentials (sid, friendly_name, type, sandbox, certificate, \
             private_key, api_key, secret, date_created, date_updated) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &credential.sid,
                &credential.friendly_name,
                &credential.kind.as_str(),
                &credential.sandbox,
                &fingerprint(s.certificate.as_deref()),
                &fingerprint(s.private_key.as_deref()),
                &fingerprint(s.api_key.as_deref()),
                &fingerprint(s.secret.as_deref()),
                &credential.date_created,
                &credential.date_updated,
            ],
        )
        .db()?;
    Ok(credential)
}

pub fn update(client: &mut impl Sql, sid: &str, patch: &CredentialPatch) -> Result<Credential> {
    patch.validate()?;
    let mut credential = find(client, sid, true)?.ok_or(Error::NotFound)?;
    patch.apply(&mut credential, now_ms());
    let s = &patch.secrets;
    client
        .execute(
            "UPDATE credentials SET friendly_name = $2, type = $3, sandbox = $4, \
             certificate = coalesce($5, certificate), private_key = coalesce($6, private_key), \
             api_key = coalesce($7, api_key), secret = coalesce($8, secret), date_updated = $9 \
             WHERE sid = $1",
            &[
                &credential.sid,
                &credential.friendly_name,
                &credential.kind.as_str(),
                &credential.sandbox,
                &fingerprint(s.certificate.as_deref()),
                &fingerprint(s.private_key.as_deref()),
                &fingerprint(s.api_key.as_deref()),
                &fingerprint(s.secret.as_deref()),
                &credential.date_updated,
            ],
        )
        .db()?;
    Ok(credential)
}

pub fn delete(client: &mut impl Sql, sid: &str) -> Result<bool> {
    let n = client
        .execute(
            "DELETE FROM credentials WHERE sid = $1",
            &[&ids::normalize(sid)],
        )
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

/// Replaces plain secrets with their fingerprints, in one transaction (a savepoint when
/// `client` is a transaction already); returns how many credentials changed.
pub fn fingerprint_stored(client: &mut impl postgres::GenericClient) -> Result<usize> {
    let plain = |c: &str| format!("({c} IS NOT NULL AND substr({c}, 1, 7) <> '{FINGERPRINT}')");
    let filter = ["certificate", "private_key", "api_key", "secret"].map(plain);
    let mut tx = client.transaction().db()?;
    // Locked, so that nodes starting together scrub each row once.
    let found = tx
        .query(
            &format!(
                "SELECT id, certificate, private_key, api_key, secret FROM credentials WHERE {} \
                 ORDER BY id FOR UPDATE",
                filter.join(" OR ")
            ),
            &[],
        )
        .db()?;
    let mut rows: Vec<(i64, [Option<String>; 4])> = Vec::with_capacity(found.len());
    for r in &found {
        rows.push((
            r.try_get(0).db()?,
            [
                r.try_get(1).db()?,
                r.try_get(2).db()?,
                r.try_get(3).db()?,
                r.try_get(4).db()?,
            ],
        ));
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let keep = |v: &Option<String>| match v.as_deref() {
        Some(v) if !v.starts_with(FINGERPRINT) => fingerprint(Some(v)),
        other => other.map(str::to_string),
    };
    for (id, [certificate, private_key, api_key, secret]) in &rows {
        tx.execute(
            "UPDATE credentials SET certificate = $2, private_key = $3, api_key = $4, \
             secret = $5 WHERE id = $1",
            &[
                id,
                &keep(certificate),
                &keep(private_key),
                &keep(api_key),
                &keep(secret),
            ],
        )
        .db()?;
    }
    tx.commit().db()?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::super::services::test_db::fresh_database;
    use super::*;
    use crate::domain::credential::CredentialSecrets;
    use crate::domain::page::Cursor;

    fn stored_secrets(client: &mut postgres::Client, sid: &str) -> [Option<String>; 4] {
        let r = client
            .query_one(
                "SELECT certificate, private_key, api_key, secret FROM credentials WHERE sid = $1",
                &[&sid],
            )
            .expect("row");
        [r.get(0), r.get(1), r.get(2), r.get(3)]
    }

    #[test]
    fn credentials_are_created_read_listed_updated_and_deleted() {
        let Some(mut db) = fresh_database() else {
            return;
        };
        let new = NewCredential {
            kind: CredentialType::Apn,
            friendly_name: Some("ios".into()),
            sandbox: Some(true),
            secrets: CredentialSecrets {
                certificate: Some("-----BEGIN CERTIFICATE-----".into()),
                private_key: Some("-----BEGIN KEY-----".into()),
                ..Default::default()
            },
        };
        let apn = insert(&mut db.client, &new).expect("insert");
        assert_eq!(
            get(&mut db.client, &apn.sid).expect("get"),
            Some(apn.clone())
        );
        assert_eq!(
            stored_secrets(&mut db.client, &apn.sid),
            [
                fingerprint(Some("-----BEGIN CERTIFICATE-----")),
                fingerprint(Some("-----BEGIN KEY-----")),
                None,
                None
            ]
        );
        let fcm = insert(
            &mut db.client,
            &NewCredential {
                kind: CredentialType::Fcm,
                friendly_name: None,
                sandbox: None,
                secrets: CredentialSecrets {
                    secret: Some("server-key".into()),
                    ..Default::default()
                },
            },
        )
        .expect("insert fcm");
        let page = list(
            &mut db.client,
            PageRequest {
                cursor: Cursor::Offset(0),
                size: 1,
            },
        )
        .expect("list");
        assert_eq!(page.items[0].1, apn);
        assert!(page.has_more_after);
        let next = list(
            &mut db.client,
            PageRequest {
                cursor: Cursor::After(page.items[0].0),
                size: 1,
            },
        )
        .expect("next");
        assert_eq!(next.items[0].1, fcm);
        assert!(!next.has_more_after);

        let patch = CredentialPatch {
            friendly_name: Some("renamed".into()),
            sandbox: Some(false),
            secrets: CredentialSecrets {
                private_key: Some("NEW KEY".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let updated = update(&mut db.client, &apn.sid, &patch).expect("update");
        assert_eq!(updated.friendly_name.as_deref(), Some("renamed"));
        assert_eq!(updated.sandbox, Some(false));
        assert_eq!(get(&mut db.client, &apn.sid).expect("get"), Some(updated));
        assert_eq!(
            stored_secrets(&mut db.client, &apn.sid),
            [
                fingerprint(Some("-----BEGIN CERTIFICATE-----")),
                fingerprint(Some("NEW KEY")),
                None,
                None
            ],
            "omitted secrets are kept"
        );
        assert!(matches!(
            update(&mut db.client, &format!("CR{}", "0".repeat(32)), &patch),
            Err(Error::NotFound)
        ));

        assert!(delete(&mut db.client, &apn.sid).expect("delete"));
        assert!(!delete(&mut db.client, &apn.sid).expect("again"));
        assert_eq!(get(&mut db.client, &apn.sid).expect("get"), None);
    }

    #[test]
    fn plain_secrets_become_fingerprints() {
        let Some(mut db) = fresh_database() else {
            return;
        };
        db.client
            .execute(
                "INSERT INTO credentials (sid, type, private_key, secret, date_created, \
                 date_updated) VALUES ('CR1', 'apn', 'PLAIN-KEY', NULL, 0, 0)",
                &[],
            )
            .expect("legacy row");
        let hashed = fingerprint(Some("x"));
        db.client
            .execute(
                "INSERT INTO credentials (sid, type, api_key, date_created, date_updated) \
                 VALUES ('CR2', 'fcm', $1, 0, 0)",
                &[&hashed],
            )
            .expect("scrubbed row");
        assert_eq!(fingerprint_stored(&mut db.client).expect("scrub"), 1);
        assert_eq!(
            fingerprint_stored(&mut db.client).expect("again"),
            0,
            "idempotent"
        );
        assert_eq!(
            stored_secrets(&mut db.client, "CR1"),
            [None, fingerprint(Some("PLAIN-KEY")), None, None]
        );
        assert_eq!(
            stored_secrets(&mut db.client, "CR2"),
            [None, None, hashed, None]
        );
    }
}
