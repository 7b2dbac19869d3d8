//! API keys on PostgreSQL: created, listed and revoked by the CLI (also against a running
//! server's database) and looked up by the server for Basic auth and access tokens.
//!
//! May depend on: postgres, domain.

use std::collections::HashSet;

use postgres::Row;

use super::statements::Sql;

use super::PgResultExt;
use crate::domain::Result;
use crate::domain::account::ApiKey;
use crate::domain::ids::{self, Prefix};
use crate::domain::time::now_ms;

/// Creates a key with a fresh random secret (32 bytes, hex).
pub fn create(client: &mut impl Sql, friendly_name: Option<&str>) -> Result<ApiKey> {
    let key = ApiKey {
        sid: ids::new_sid(Prefix::ApiKey),
        friendly_name: friendly_name.map(str::to_string),
        secret: ids::random_hex(32),
        date_created: now_ms(),
    };
    client
        .execute(
            "INSERT INTO api_keys (sid, friendly_name, secret, date_created) VALUES ($1, $2, $3, $4)",
            &[&key.sid, &key.friendly_name, &key.secret, &key.date_created],
        )
        .db()?;
    Ok(key)
}

fn from_row(r: &Row) -> Result<ApiKey> {
    Ok(ApiKey {
        sid: r.try_get(0).db()?,
        friendly_name: r.try_get(1).db()?,
        secret: r.try_get(2).db()?,
        date_created: r.try_get(3).db()?,
    })
}

/// A key that exists and is not revoked.
pub fn get_live(client: &mut impl Sql, sid: &str) -> Result<Option<ApiKey>> {
    client
        .query_opt(
            "SELECT sid, friendly_name, secret, date_created FROM api_keys WHERE sid = $1 AND revoked_at IS NULL",
            &[&sid],
        )
        .db()?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Which of `sids` are live keys: one statement whatever their number (the SIDs travel as
/// one array).
pub fn live_among(client: &mut impl Sql, sids: &[String]) -> Result<HashSet<String>> {
    client
        .query(
            "SELECT sid FROM api_keys WHERE revoked_at IS NULL AND sid = ANY($1)",
            &[&sids],
        )
        .db()?
        .iter()
        .map(|r| r.try_get(0).db())
        .collect()
}

/// The oldest live key (with its secret).
pub fn first_live(client: &mut impl Sql) -> Result<Option<ApiKey>> {
    client
        .query_opt(
            "SELECT sid, friendly_name, secret, date_created FROM api_keys WHERE revoked_at IS NULL ORDER BY id LIMIT 1",
            &[],
        )
        .db()?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Every key, oldest first, with whether it is revoked; secrets blanked.
pub fn list(client: &mut impl Sql) -> Result<Vec<(ApiKey, bool)>> {
    client
        .query(
            "SELECT sid, friendly_name, date_created, revoked_at IS NOT NULL FROM api_keys ORDER BY id",
            &[],
        )
        .db()?
        .iter()
        .map(|r| {
            let key = ApiKey {
                sid: r.try_get(0).db()?,
                friendly_name: r.try_get(1).db()?,
                secret: String::new(),
                date_created: r.try_get(2).db()?,
            };
            Ok((key, r.try_get::<_, bool>(3).db()?))
        })
        .collect()
}

/// Revokes a key; false when no live key has this SID.
pub fn revoke(client: &mut impl Sql, sid: &str) -> Result<bool> {
    let n = client
        .execute(
            "UPDATE api_keys SET revoked_at = $2 WHERE sid = $1 AND revoked_at IS NULL",
            &[&sid, &now_ms()],
        )
        .db()?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::events::test_db::fresh_database;

    #[test]
    fn keys_are_created_looked_up_and_revoked() {
        let Some(db) = fresh_database() else { return };
        let mut client = db.client();
        let client = &mut *client;
        assert!(first_live(client).expect("first").is_none());
        let a = create(client, Some("first")).expect("create");
        let b = create(client, None).expect("create");
        assert_eq!(a.secret.len(), 64);
        let live = get_live(client, &a.sid).expect("get").expect("live");
        assert_eq!(
            (live.secret, live.friendly_name),
            (a.secret.clone(), Some("first".into()))
        );
        assert_eq!(
            first_live(client).expect("first").map(|k| k.sid),
            Some(a.sid.clone())
        );
        let among =
            live_among(client, &[a.sid.clone(), b.sid.clone(), "SKnone".into()]).expect("among");
        assert_eq!(among, HashSet::from([a.sid.clone(), b.sid.clone()]));
        assert!(revoke(client, &a.sid).expect("revoke"));
        assert!(
            !revoke(client, &a.sid).expect("revoke twice"),
            "already revoked"
        );
        assert!(get_live(client, &a.sid).expect("get").is_none());
        assert_eq!(
            first_live(client).expect("first").map(|k| k.sid),
            Some(b.sid.clone())
        );
        assert_eq!(
            live_among(client, std::slice::from_ref(&a.sid)).expect("among"),
            HashSet::new()
        );
        let listed = list(client).expect("list");
        assert_eq!(
            listed
                .iter()
                .map(|(k, revoked)| (k.sid.clone(), k.secret.clone(), *revoked))
                .collect::<Vec<_>>(),
            vec![(a.sid, String::new(), true), (b.sid, String::new(), false)]
        );
    }
}
