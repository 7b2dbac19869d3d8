//! SQL for push bindings, and the notifiable state they decide.
//!
//! May depend on: rusqlite, domain.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqlResultExt;
use super::events::{EventSpec, emit};
use super::paging::{fetch_page, text};
use super::writer::{StoredTransition, Tx};
use super::{services, users};
use crate::domain::Result;
use crate::domain::binding::{Binding, BindingFilter, BindingType, NewBinding, check_replace};
use crate::domain::event::{EventType, REASON_NOTIFIABLE};
use crate::domain::ids;
use crate::domain::page::{Page, PageRequest};
use crate::domain::presence::Cause;
use crate::domain::service::Service;
use crate::domain::store::Origin;
use crate::domain::time::now_ms;
use crate::domain::user::UserKey;

const COLUMNS: &str = "id, sid, service_sid, user_sid, identity, credential_sid, endpoint, \
     address, binding_type, date_created, date_updated";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Binding> {
    let kind: String = row.get(8)?;
    Ok(Binding {
        sid: row.get(1)?,
        service_sid: row.get(2)?,
        user_sid: row.get(3)?,
        identity: row.get(4)?,
        credential_sid: row.get(5)?,
        endpoint: row.get(6)?,
        address: row.get(7)?,
        binding_type: BindingType::parse(&kind).unwrap_or(BindingType::Twilsock),
        date_created: row.get(9)?,
        date_updated: row.get(10)?,
    })
}

/// `WHERE` clause and arguments for a service plus a filter.
fn filter_sql(service_sid: &str, filter: &BindingFilter) -> (String, Vec<Value>) {
    let mut sql = String::from("service_sid = ?");
    let mut args = vec![text(service_sid)];
    let mut any_of = |column: &str, values: Vec<Value>| {
        if values.is_empty() {
            return;
        }
        let marks = vec!["?"; values.len()].join(", ");
        sql.push_str(&format!(" AND {column} IN ({marks})"));
        args.extend(values);
    };
    any_of(
        "binding_type",
        filter.types.iter().map(|t| text(t.as_str())).collect(),
    );
    any_of(
        "identity",
        filter.identities.iter().map(|i| text(i)).collect(),
    );
    any_of(
        "user_sid",
        filter.user_sid.iter().map(|s| text(s)).collect(),
    );
    (sql, args)
}

pub fn get(
    conn: &Connection,
    service_sid: &str,
    sid: &str,
    filter: &BindingFilter,
) -> Result<Option<Binding>> {
    let (mut sql, mut args) = filter_sql(service_sid, filter);
    sql.push_str(" AND sid = ?");
    args.push(text(&ids::normalize(sid)));
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM bindings WHERE {sql}"))
        .db()?
        .query_row(rusqlite::params_from_iter(args), from_row)
        .optional()
        .db()
}

pub fn list(
    conn: &Connection,
    service_sid: &str,
    filter: &BindingFilter,
    page: PageRequest,
) -> Result<Page<Binding>> {
    let (sql, args) = filter_sql(service_sid, filter);
    fetch_page(
        conn,
        &format!("SELECT {COLUMNS} FROM bindings"),
        &sql,
        args,
        page,
        from_row,
    )
}

/// Registers a binding for an existing user; an endpoint already registered in the service is
/// replaced in place (keeping its SID), even if it belonged to another user — unless a client
/// asks (see [`check_replace`]).
pub fn register(
    tx: &mut Tx<'_>,
    service_sid: &str,
    key: &UserKey,
    new: NewBinding,
    origin: Origin,
) -> Result<Binding> {
    new.validate()?;
    let service = services::require(tx, service_sid)?;
    let user = users::require(tx, service_sid, key)?;
    let now = now_ms();
    let endpoint = new.endpoint_for(&user.identity);
    let existing: Option<Binding> = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM bindings WHERE service_sid = ?1 AND endpoint = ?2"
        ))
        .db()?
        .query_row(params![service_sid, endpoint], from_row)
        .optional()
        .db()?;
    let mut binding = new.into_binding(service_sid, &user.sid, &user.identity, now);
    let mut touched = vec![user.sid.clone()];
    if let Some(old) = existing {
        check_replace(&old, &user.sid, origin)?;
        binding.sid = old.sid;
        binding.date_created = old.date_created;
        if old.user_sid != user.sid {
            touched.push(old.user_sid);
        }
        tx.prepare_cached(
            "UPDATE bindings SET user_sid = ?2, identity = ?3, credential_sid = ?4, address = ?5, \
             binding_type = ?6, date_updated = ?7 WHERE sid = ?1",
        )
        .db()?
        .execute(params![
            binding.sid,
            binding.user_sid,
            binding.identity,
            binding.credential_sid,
            binding.address,
            binding.binding_type.as_str(),
            now,
        ])
        .db()?;
    } else {
        tx.prepare_cached(
            "INSERT INTO bindings (sid, service_sid, user_sid, identity, credential_sid, endpoint, \
             address, binding_type, date_created, date_updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .db()?
        .execute(params![
            binding.sid,
            binding.service_sid,
            binding.user_sid,
            binding.identity,
            binding.credential_sid,
            binding.endpoint,
            binding.address,
            binding.binding_type.as_str(),
            binding.date_created,
            binding.date_updated,
        ])
        .db()?;
    }
    refresh_notifiable(tx, &service, &touched, Cause::BindingAdded, origin)?;
    Ok(binding)
}

/// Deletes the binding named by SID or endpoint within the filter's scope.
pub fn delete(
    tx: &mut Tx<'_>,
    service_sid: &str,
    sid_or_endpoint: &str,
    filter: &BindingFilter,
    origin: Origin,
) -> Result<Option<Binding>> {
    let (mut sql, mut args) = filter_sql(service_sid, filter);
    sql.push_str(" AND (sid = ? OR endpoint = ?) ORDER BY sid = ? DESC LIMIT 1");
    let sid = ids::normalize(sid_or_endpoint);
    args.extend([text(&sid), text(sid_or_endpoint), text(&sid)]);
    let found = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM bindings WHERE {sql}"))
        .db()?
        .query_row(rusqlite::params_from_iter(args), from_row)
        .optional()
        .db()?;
    let Some(binding) = found else {
        return Ok(None);
    };
    tx.prepare_cached("DELETE FROM bindings WHERE sid = ?1")
        .db()?
        .execute([&binding.sid])
        .db()?;
    let service = services::require(tx, service_sid)?;
    refresh_notifiable(
        tx,
        &service,
        std::slice::from_ref(&binding.user_sid),
        Cause::BindingRemoved,
        origin,
    )?;
    Ok(Some(binding))
}

/// Recomputes `is_notifiable` for these users (while reachability is enabled); each change is
/// a reachability event with `cause`.
fn refresh_notifiable(
    tx: &mut Tx<'_>,
    service: &Service,
    user_sids: &[String],
    cause: Cause,
    origin: Origin,
) -> Result<()> {
    if !service.reachability_enabled {
        return Ok(());
    }
    for user_sid in user_sids {
        let mut user = users::require(tx, &service.sid, &UserKey::SidOrIdentity(user_sid.clone()))?;
        let push_count: i64 = tx
            .prepare_cached(
                "SELECT count(*) FROM bindings WHERE user_sid = ?1 AND binding_type != 'twilsock'",
            )
            .db()?
            .query_row([user_sid], |r| r.get(0))
            .db()?;
        let notifiable = push_count > 0;
        if user.reachability.is_notifiable != Some(notifiable) {
            tx.prepare_cached("UPDATE users SET is_notifiable = ?2 WHERE sid = ?1")
                .db()?
                .execute(params![user_sid, notifiable])
                .db()?;
            user.reachability.is_notifiable = Some(notifiable);
            let spec = EventSpec {
                reasons: &[REASON_NOTIFIABLE],
                cause: Some(cause),
                ..EventSpec::new(EventType::ReachabilityUpdated, origin)
            };
            emit(tx, &mut user, spec)?;
            tx.record_transition(StoredTransition {
                cause: cause.as_str(),
                offline_since: None,
            });
        }
    }
    Ok(())
}
