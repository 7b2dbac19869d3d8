//! SQL for the account row on PostgreSQL (the SQLite backend's `db::account`, same answers):
//! credentials bootstrap, Conversations configuration, account webhook. Read-modify-write
//! paths lock the row (`FOR UPDATE`), so that nodes writing at once apply their changes one
//! after the other (and create the default service once).
//!
//! May depend on: postgres, serde_json, domain, pg::services.

use postgres::Row;

use super::statements::Sql;

use super::PgResultExt;
use super::services;
use crate::domain::account::{Account, AccountConfigPatch, AccountWebhook, WebhookPatch};
use crate::domain::service::Service;
use crate::domain::time::now_ms;
use crate::domain::{Error, Result};

/// The account's SID and auth token, if the account row exists.
pub fn credentials(client: &mut impl Sql) -> Result<Option<(String, String)>> {
    client
        .query_opt("SELECT sid, auth_token FROM account WHERE id = 1", &[])
        .db()?
        .map(|r| Ok((r.try_get(0).db()?, r.try_get(1).db()?)))
        .transpose()
}

/// Creates the account row, or replaces its credentials.
pub fn store_credentials(client: &mut impl Sql, sid: &str, auth_token: &str) -> Result<()> {
    let now = now_ms();
    client
        .execute(
            "INSERT INTO account (id, sid, auth_token, date_created, date_updated) \
             VALUES (1, $1, $2, $3, $3) \
             ON CONFLICT (id) DO UPDATE SET sid = excluded.sid, auth_token = excluded.auth_token, \
             date_updated = excluded.date_updated",
            &[&sid, &auth_token, &now],
        )
        .db()?;
    Ok(())
}

const COLUMNS: &str = "sid, default_chat_service_sid, default_messaging_service_sid, \
     default_inactive_timer, default_closed_timer, webhook_method, webhook_filters, \
     webhook_pre_url, webhook_post_url, webhook_target";

fn from_row(r: &Row) -> Result<Account> {
    let filters: Option<String> = r.try_get(6).db()?;
    Ok(Account {
        sid: r.try_get(0).db()?,
        default_chat_service_sid: r.try_get(1).db()?,
        default_messaging_service_sid: r.try_get(2).db()?,
        default_inactive_timer: r.try_get(3).db()?,
        default_closed_timer: r.try_get(4).db()?,
        webhook: AccountWebhook {
            method: r.try_get(5).db()?,
            filters: filters.and_then(|f| serde_json::from_str(&f).ok()),
            pre_webhook_url: r.try_get(7).db()?,
            post_webhook_url: r.try_get(8).db()?,
            target: r.try_get(9).db()?,
        },
    })
}

/// The account; `lock` takes the row's lock until the transaction ends.
fn fetch(client: &mut impl Sql, lock: bool) -> Result<Account> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM account WHERE id = 1{lock}"),
            &[],
        )
        .db()?
        .as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("the account row is missing")))
}

pub fn get(client: &mut impl Sql) -> Result<Account> {
    fetch(client, false)
}

fn save(client: &mut impl Sql, a: &Account) -> Result<()> {
    let filters = a
        .webhook
        .filters
        .as_ref()
        .map(|f| serde_json::Value::from(f.clone()).to_string());
    client
        .execute(
            "UPDATE account SET default_chat_service_sid = $1, default_messaging_service_sid = $2, \
             default_inactive_timer = $3, default_closed_timer = $4, webhook_method = $5, \
             webhook_filters = $6, webhook_pre_url = $7, webhook_post_url = $8, \
             webhook_target = $9, date_updated = $10 WHERE id = 1",
            &[
                &a.default_chat_service_sid,
                &a.default_messaging_service_sid,
                &a.default_inactive_timer,
                &a.default_closed_timer,
                &a.webhook.method,
                &filters,
                &a.webhook.pre_webhook_url,
                &a.webhook.post_webhook_url,
                &a.webhook.target,
                &now_ms(),
            ],
        )
        .db()?;
    Ok(())
}

pub fn update_config(client: &mut impl Sql, patch: &AccountConfigPatch) -> Result<Account> {
    patch.validate()?;
    if let Some(sid) = &patch.default_chat_service_sid {
        services::get(client, sid)?
            .ok_or_else(|| Error::invalid("DefaultChatServiceSid", "no such service"))?;
    }
    let mut account = fetch(client, true)?;
    patch.apply(&mut account);
    save(client, &account)?;
    Ok(account)
}

pub fn update_webhook(client: &mut impl Sql, patch: &WebhookPatch) -> Result<Account> {
    patch.validate()?;
    let mut account = fetch(client, true)?;
    patch.apply(&mut account.webhook);
    save(client, &account)?;
    Ok(account)
}

/// The default Conversations service, created and recorded on first use.
pub fn default_service(client: &mut impl Sql) -> Result<Service> {
    let mut account = fetch(client, true)?;
    if let Some(sid) = &account.default_chat_service_sid
        && let Some(service) = services::get(client, sid)?
    {
        return Ok(service);
    }
    let service = Service::new("Default Conversations Service", now_ms())?;
    services::insert(client, &service)?;
    account.default_chat_service_sid = Some(service.sid.clone());
    save(client, &account)?;
    Ok(service)
}

#[cfg(test)]
mod tests {
    use super::super::services::test_db::fresh_database;
    use super::*;

    #[test]
    fn the_account_is_stored_read_and_updated() {
        let Some(mut db) = fresh_database() else {
            return;
        };
        assert_eq!(credentials(&mut db.client).expect("none yet"), None);
        assert!(matches!(get(&mut db.client), Err(Error::Internal(_))));
        store_credentials(&mut db.client, "AC1", "t1").expect("store");
        store_credentials(&mut db.client, "AC2", "t2").expect("replace");
        assert_eq!(
            credentials(&mut db.client).expect("stored"),
            Some(("AC2".to_string(), "t2".to_string()))
        );
        let account = get(&mut db.client).expect("account");
        assert_eq!(account.sid, "AC2");
        assert_eq!(account.default_chat_service_sid, None);
        assert_eq!(account.webhook, AccountWebhook::default());

        // The default service: created once, then the same.
        let service = default_service(&mut db.client).expect("default service");
        assert_eq!(service.friendly_name, "Default Conversations Service");
        assert_eq!(
            default_service(&mut db.client).expect("again").sid,
            service.sid
        );
        assert_eq!(
            get(&mut db.client)
                .expect("account")
                .default_chat_service_sid,
            Some(service.sid.clone())
        );

        // Configuration.
        let missing = AccountConfigPatch {
            default_chat_service_sid: Some(format!("IS{}", "0".repeat(32))),
            ..Default::default()
        };
        assert!(matches!(
            update_config(&mut db.client, &missing),
            Err(Error::InvalidParam { param, .. }) if param == "DefaultChatServiceSid"
        ));
        let patch = AccountConfigPatch {
            default_inactive_timer: Some("PT1H".into()),
            ..Default::default()
        };
        let updated = update_config(&mut db.client, &patch).expect("config");
        assert_eq!(updated.default_inactive_timer.as_deref(), Some("PT1H"));
        assert_eq!(updated.default_chat_service_sid, Some(service.sid.clone()));
        assert_eq!(get(&mut db.client).expect("account"), updated);

        // Webhook: filters are stored as SQLite stores them (JSON text).
        let patch = WebhookPatch {
            method: Some("POST".into()),
            filters: Some(vec!["onMessageAdded".into(), "onConversationAdded".into()]),
            pre_webhook_url: Some(Some("https://example.com/pre".into())),
            ..Default::default()
        };
        let updated = update_webhook(&mut db.client, &patch).expect("webhook");
        assert_eq!(get(&mut db.client).expect("account"), updated);
        let stored: Option<String> = db
            .client
            .query_one("SELECT webhook_filters FROM account", &[])
            .expect("row")
            .get(0);
        assert_eq!(
            stored.as_deref(),
            Some(r#"["onMessageAdded","onConversationAdded"]"#)
        );

        // Deleting the default service forgets it; the next use creates another.
        assert!(services::delete(&mut db.client, &service.sid).expect("delete"));
        let next = default_service(&mut db.client).expect("recreated");
        assert_ne!(next.sid, service.sid);
    }
}
