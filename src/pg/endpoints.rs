//! SQL for native webhook endpoints on PostgreSQL, and syncing the config file's endpoints at
//! startup.
//!
//! May depend on: postgres, serde_json, base64, sha2, domain, pg::writer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use postgres::Row;

use super::statements::Sql;

use super::PgResultExt;
use super::writer::Tx;
use crate::domain::time::now_ms;
use crate::domain::webhook::{
    ConfigEndpoint, Endpoint, EndpointPatch, NewEndpoint, endpoint_target,
};
use crate::domain::{Error, Result, ids};

const COLUMNS: &str = "id, service_sid, url, description, event_types, disabled, disabled_reason, from_config, created_at, updated_at";

fn from_row(row: &Row) -> Result<Endpoint> {
    let types: Option<String> = row.try_get(4).db()?;
    Ok(Endpoint {
        id: row.try_get(0).db()?,
        service_sid: row.try_get(1).db()?,
        url: row.try_get(2).db()?,
        description: row.try_get(3).db()?,
        event_types: types.and_then(|t| serde_json::from_str(&t).ok()),
        disabled: row.try_get(5).db()?,
        disabled_reason: row.try_get(6).db()?,
        from_config: row.try_get(7).db()?,
        created_at: row.try_get(8).db()?,
        updated_at: row.try_get(9).db()?,
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

fn next_seq(client: &mut impl Sql) -> Result<i64> {
    client
        .query_one(
            "SELECT coalesce(max(seq), 0) + 1 FROM webhook_endpoints",
            &[],
        )
        .db()?
        .try_get(0)
        .db()
}

/// Creates an endpoint of a service; returns it with its secret (shown once).
pub fn create(
    client: &mut impl Sql,
    service_sid: &str,
    new: &NewEndpoint,
) -> Result<(Endpoint, String)> {
    new.validate()?;
    let id = format!("WH{}", ids::random_hex(16));
    let secret = new_secret();
    let now = now_ms();
    let seq = next_seq(client)?;
    client
        .execute(
            "INSERT INTO webhook_endpoints (id, service_sid, url, description, secret, event_types, created_at, updated_at, seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
            &[
                &id,
                &service_sid,
                &new.url,
                &new.description,
                &secret,
                &types_json(&new.event_types),
                &now,
                &seq,
            ],
        )
        .db()?;
    Ok((
        get(client, service_sid, &id)?.ok_or(Error::NotFound)?,
        secret,
    ))
}

/// An endpoint visible to a service (its own, or a config endpoint).
pub fn get(client: &mut impl Sql, service_sid: &str, id: &str) -> Result<Option<Endpoint>> {
    client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1 AND (service_sid = $2 OR service_sid IS NULL)"
            ),
            &[&id, &service_sid],
        )
        .db()?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub fn list(client: &mut impl Sql, service_sid: &str) -> Result<Vec<Endpoint>> {
    client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM webhook_endpoints WHERE service_sid = $1 OR service_sid IS NULL ORDER BY seq"
            ),
            &[&service_sid],
        )
        .db()?
        .iter()
        .map(from_row)
        .collect()
}

/// Updates a service's own endpoint (config endpoints are changed in the config file). A
/// change the domain says redirects pending deliveries (a new URL) points them at the new URL
/// and makes them due at once.
pub fn update(
    tx: &mut Tx<'_, '_>,
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
    tx.execute(
        "UPDATE webhook_endpoints SET url = $2, description = $3, event_types = $4, disabled = $5, \
         disabled_reason = $6, updated_at = $7 WHERE id = $1",
        &[
            &e.id,
            &e.url,
            &e.description,
            &types_json(&e.event_types),
            &e.disabled,
            &e.disabled_reason,
            &e.updated_at,
        ],
    )
    .db()?;
    if reschedule {
        let due = tx
            .execute(
                "UPDATE deliveries SET url = $3, next_attempt_at = LEAST(next_attempt_at, $2), updated_at = $2 \
                 WHERE target = $1 AND status = 'pending'",
                &[&endpoint_target(&e.id), &e.updated_at, &e.url],
            )
            .db()?;
        if due > 0 {
            tx.record_deliveries();
        }
    }
    Ok(e)
}

pub fn delete(client: &mut impl Sql, service_sid: &str, id: &str) -> Result<bool> {
    let n = client
        .execute(
            "DELETE FROM webhook_endpoints WHERE id = $1 AND service_sid = $2",
            &[&id, &service_sid],
        )
        .db()?;
    Ok(n > 0)
}

/// Makes the stored config endpoints match the config file: ids derive from the names, so an
/// entry keeps its id (and its delivery log) across restarts.
pub fn sync_config(client: &mut impl Sql, entries: &[ConfigEndpoint]) -> Result<()> {
    let now = now_ms();
    let mut keep = Vec::new();
    for entry in entries {
        let id = entry.id();
        let seq = next_seq(client)?;
        client
            .execute(
                "INSERT INTO webhook_endpoints (id, service_sid, url, description, secret, event_types, from_config, \
                 created_at, updated_at, seq) \
                 VALUES ($1, NULL, $2, $3, $4, $5, TRUE, $6, $6, $7) ON CONFLICT (id) DO UPDATE SET url = excluded.url, \
                 description = excluded.description, secret = excluded.secret, event_types = excluded.event_types, \
                 disabled = FALSE, disabled_reason = NULL, updated_at = excluded.updated_at",
                &[
                    &id,
                    &entry.url,
                    &entry.name,
                    &entry.secret,
                    &types_json(&entry.event_types),
                    &now,
                    &seq,
                ],
            )
            .db()?;
        keep.push(id);
    }
    client
        .execute(
            "DELETE FROM webhook_endpoints WHERE from_config AND NOT (id = ANY($1))",
            &[&keep],
        )
        .db()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::events::test_db::fresh_database;

    #[test]
    fn endpoints_are_created_updated_and_deleted() {
        let Some(db) = fresh_database() else { return };
        let service = db.service(true, None);
        let other = db.service(true, None);
        db.user(&service, "a");
        let new = NewEndpoint {
            url: "https://example.com/one".into(),
            description: Some("first".into()),
            event_types: Some(vec!["user.updated".into()]),
        };
        let (endpoint, secret) = create(&mut *db.client(), &service, &new).expect("create");
        assert!(secret.starts_with("whsec_"));
        assert_eq!(endpoint.url, new.url);
        assert_eq!(endpoint.event_types, new.event_types);
        assert!(!endpoint.disabled && !endpoint.from_config);
        assert!(
            create(&mut *db.client(), &service, &NewEndpoint::default()).is_err(),
            "the domain's validation runs"
        );
        let mut client = db.client();
        assert!(
            get(&mut *client, &other, &endpoint.id)
                .expect("get")
                .is_none()
        );
        assert_eq!(
            list(&mut *client, &service).expect("list"),
            vec![endpoint.clone()]
        );
        drop(client);
        // A pending delivery, due later: a new URL redirects it and makes it due now.
        db.emit_update(&service, "a");
        db.client()
            .execute("UPDATE deliveries SET next_attempt_at = 9000000000000", &[])
            .expect("later");
        let (id, sid) = (endpoint.id.clone(), service.clone());
        let patch = EndpointPatch {
            url: Some("https://example.com/two".into()),
            description: Some("second".into()),
            ..Default::default()
        };
        let updated = db
            .write(move |tx| update(tx, &sid, &id, &patch))
            .expect("update");
        assert_eq!(updated.url, "https://example.com/two");
        assert_eq!(updated.description.as_deref(), Some("second"));
        let row = db
            .client()
            .query_one("SELECT url, next_attempt_at FROM deliveries", &[])
            .expect("delivery");
        assert_eq!(row.get::<_, String>(0), "https://example.com/two");
        assert!(row.get::<_, i64>(1) <= now_ms());
        // Disabling keeps the URL and the delivery's schedule alone.
        let (id, sid) = (endpoint.id.clone(), service.clone());
        let disabled = db
            .write(move |tx| {
                let patch = EndpointPatch {
                    disabled: Some(true),
                    ..Default::default()
                };
                update(tx, &sid, &id, &patch)
            })
            .expect("disable");
        assert!(disabled.disabled);
        assert_eq!(
            disabled.disabled_reason.as_deref(),
            Some("disabled through the API")
        );
        let stored = get(&mut *db.client(), &service, &endpoint.id)
            .expect("get")
            .expect("stored");
        assert_eq!(stored, disabled);
        let (id, sid) = (endpoint.id.clone(), other.clone());
        let missing = db.write(move |tx| update(tx, &sid, &id, &EndpointPatch::default()));
        assert!(matches!(missing, Err(Error::NotFound)));
        let mut client = db.client();
        assert!(!delete(&mut *client, &other, &endpoint.id).expect("delete"));
        assert!(delete(&mut *client, &service, &endpoint.id).expect("delete"));
        assert!(list(&mut *client, &service).expect("list").is_empty());
    }

    #[test]
    fn config_endpoints_follow_the_config_file() {
        let Some(db) = fresh_database() else { return };
        let service = db.service(true, None);
        let entry = |name: &str, url: &str| ConfigEndpoint {
            name: name.into(),
            url: url.into(),
            secret: "whsec_c2VjcmV0".into(),
            event_types: None,
        };
        let mut client = db.client();
        sync_config(
            &mut *client,
            &[
                entry("a", "https://example.com/a"),
                entry("b", "https://example.com/b"),
            ],
        )
        .expect("sync");
        let first = list(&mut *client, &service).expect("list");
        assert_eq!(first.len(), 2);
        assert!(
            first
                .iter()
                .all(|e| e.from_config && e.service_sid.is_none())
        );
        sync_config(&mut *client, &[entry("a", "https://example.com/a2")]).expect("sync");
        let second = list(&mut *client, &service).expect("list");
        assert_eq!(second.len(), 1);
        assert_eq!(
            (second[0].id.as_str(), second[0].url.as_str()),
            (first[0].id.as_str(), "https://example.com/a2")
        );
        drop(client);
        let (id, sid) = (second[0].id.clone(), service.clone());
        let refused = db.write(move |tx| update(tx, &sid, &id, &EndpointPatch::default()));
        assert!(matches!(refused, Err(Error::Conflict(_))));
    }
}
