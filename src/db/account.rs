//! SQL for the account row: credentials bootstrap, Conversations configuration, account webhook.
//!
//! May depend on: rusqlite, serde_json, domain.

use rusqlite::{Connection, OptionalExtension, params};

use super::SqlResultExt;
use super::services;
use crate::domain::account::{Account, AccountConfigPatch, AccountWebhook, WebhookPatch};
use crate::domain::service::Service;
use crate::domain::time::now_ms;
use crate::domain::{Error, Result};

/// The account's SID and auth token, if the account row exists.
pub fn credentials(conn: &Connection) -> Result<Option<(String, String)>> {
    conn.query_row(
        "SELECT sid, auth_token FROM account WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .db()
}

/// Creates the account row, or replaces its credentials.
pub fn store_credentials(conn: &Connection, sid: &str, auth_token: &str) -> Result<()> {
    let now = now_ms();
    conn.execute(
        "INSERT INTO account (id, sid, auth_token, date_created, date_updated) VALUES (1, ?1, ?2, ?3, ?3) \
         ON CONFLICT (id) DO UPDATE SET sid = excluded.sid, auth_token = excluded.auth_token, \
         date_updated = excluded.date_updated",
        params![sid, auth_token, now],
    )
    .db()?;
    Ok(())
}

pub fn get(conn: &Connection) -> Result<Account> {
    conn.prepare_cached(
        "SELECT sid, default_chat_service_sid, default_messaging_service_sid, default_inactive_timer, \
         default_closed_timer, webhook_method, webhook_filters, webhook_pre_url, webhook_post_url, \
         webhook_target FROM account WHERE id = 1",
    )
    .db()?
    .query_row([], |r| {
        let filters: Option<String> = r.get(6)?;
        Ok(Account {
            sid: r.get(0)?,
            default_chat_service_sid: r.get(1)?,
            default_messaging_service_sid: r.get(2)?,
            default_inactive_timer: r.get(3)?,
            default_closed_timer: r.get(4)?,
            webhook: AccountWebhook {
                method: r.get(5)?,
                filters: filters.and_then(|f| serde_json::from_str(&f).ok()),
                pre_webhook_url: r.get(7)?,
                post_webhook_url: r.get(8)?,
                target: r.get(9)?,
            },
        })
    })
    .optional()
    .db()?
    .ok_or_else(|| Error::Internal(anyhow::anyhow!("the account row is missing")))
}

fn save(conn: &Connection, a: &Account) -> Result<()> {
    let filters = a
        .webhook
        .filters
        .as_ref()
        .map(|f| serde_json::Value::from(f.clone()).to_string());
    conn.prepare_cached(
        "UPDATE account SET default_chat_service_sid = ?1, default_messaging_service_sid = ?2, \
         default_inactive_timer = ?3, default_closed_timer = ?4, webhook_method = ?5, webhook_filters = ?6, \
         webhook_pre_url = ?7, webhook_post_url = ?8, webhook_target = ?9, date_updated = ?10 WHERE id = 1",
    )
    .db()?
    .execute(params![
        a.default_chat_service_sid,
        a.default_messaging_service_sid,
        a.default_inactive_timer,
        a.default_closed_timer,
        a.webhook.method,
        filters,
        a.webhook.pre_webhook_url,
        a.webhook.post_webhook_url,
        a.webhook.target,
        now_ms(),
    ])
    .db()?;
    Ok(())
}

pub fn update_config(conn: &Connection, patch: &AccountConfigPatch) -> Result<Account> {
    patch.validate()?;
    if let Some(sid) = &patch.default_chat_service_sid {
        services::get(conn, sid)?
            .ok_or_else(|| Error::invalid("DefaultChatServiceSid", "no such service"))?;
    }
    let mut account = get(conn)?;
    patch.apply(&mut account);
    save(conn, &account)?;
    Ok(account)
}

pub fn update_webhook(conn: &Connection, patch: &WebhookPatch) -> Result<Account> {
    patch.validate()?;
    let mut account = get(conn)?;
    patch.apply(&mut account.webhook);
    save(conn, &account)?;
    Ok(account)
}

/// The default Conversations service, created and recorded on first use.
pub fn default_service(conn: &Connection) -> Result<Service> {
    let mut account = get(conn)?;
    if let Some(sid) = &account.default_chat_service_sid
        && let Some(service) = services::get(conn, sid)?
    {
        return Ok(service);
    }
    let service = Service::new("Default Conversations Service", now_ms())?;
    services::insert(conn, &service)?;
    account.default_chat_service_sid = Some(service.sid.clone());
    save(conn, &account)?;
    Ok(service)
}
