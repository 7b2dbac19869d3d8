//! SQL for push bindings, and persisting the notifiable state they decide (the decisions —
//! endpoint takeover, notifiable recompute — are `domain::binding::plan_registration` and
//! `domain::reachability::plan_notifiable`).
//!
//! May depend on: rusqlite, domain, db::{events, paging, services, users, writer}.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqlResultExt;
use super::events::emit_reachability_change;
use super::paging::{fetch_page, text};
use super::writer::Tx;
use super::{services, users};
use crate::domain::Result;
use crate::domain::binding::{Binding, BindingFilter, BindingType, NewBinding, plan_registration};
use crate::domain::ids;
use crate::domain::page::{Page, PageRequest};
use crate::domain::presence::Cause;
use crate::domain::reachability::plan_notifiable;
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
/// asks (see `domain::binding::plan_registration`).
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
    let endpoint = new.endpoint_for(&user.identity);
    let existing: Option<Binding> = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM bindings WHERE service_sid = ?1 AND endpoint = ?2"
        ))
        .db()?
        .query_row(params![service_sid, endpoint], from_row)
        .optional()
        .db()?;
    let plan = plan_registration(new, &user, existing.as_ref(), origin, now_ms())?;
    let binding = plan.binding;
    if plan.replaces {
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
            binding.date_updated,
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
    refresh_notifiable(
        tx,
        &service,
        &plan.touched_users,
        Cause::BindingAdded,
        origin,
    )?;
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

/// Recomputes `is_notifiable` for these users as `plan_notifiable` decides (only while
/// reachability is enabled); each change is a reachability event with `cause`.
fn refresh_notifiable(
    tx: &mut Tx<'_>,
    service: &Service,
    user_sids: &[String],
    cause: Cause,
    origin: Origin,
) -> Result<()> {
    if !service.reachability_enabled {
        // `plan_notifiable` would refuse every user: skip reading them.
        return Ok(());
    }
    for user_sid in user_sids {
        let user = users::require(tx, &service.sid, &UserKey::SidOrIdentity(user_sid.clone()))?;
        let types = binding_types_of(tx, user_sid)?;
        let Some(change) =
            plan_notifiable(service.reachability_enabled, &user, &types, cause, origin)
        else {
            continue;
        };
        tx.prepare_cached("UPDATE users SET is_notifiable = ?2 WHERE sid = ?1")
            .db()?
            .execute(params![user_sid, change.user.reachability.is_notifiable])
            .db()?;
        emit_reachability_change(tx, change)?;
    }
    Ok(())
}

/// The types of a user's bindings (unknown stored types are skipped).
fn binding_types_of(tx: &Tx<'_>, user_sid: &str) -> Result<Vec<BindingType>> {
    let kinds = tx
        .prepare_cached("SELECT binding_type FROM bindings WHERE user_sid = ?1")
        .db()?
        .query_map([user_sid], |r| r.get::<_, String>(0))
        .db()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db()?;
    Ok(kinds.iter().filter_map(|k| BindingType::parse(k)).collect())
}
