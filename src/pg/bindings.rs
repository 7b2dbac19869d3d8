//! SQL for push bindings on PostgreSQL (the SQLite backend's `db::bindings`, same answers),
//! and persisting the notifiable state they decide (the decisions — endpoint takeover,
//! notifiable recompute — are `domain::binding::plan_registration` and
//! `domain::reachability::plan_notifiable`).
//!
//! Several nodes may write at once: a registration locks the binding holding its endpoint;
//! an insert that loses a race for the endpoint (`ON CONFLICT DO NOTHING`) plans again
//! against the winner's row, as if it had come second on one writer; the notifiable
//! recompute locks the users it recomputes (in SID order, so that two recomputes never wait
//! on each other in a circle).
//!
//! May depend on: postgres, domain, pg::{events, paging, services, users, writer}.

use postgres::Row;
use postgres::types::ToSql;

use super::statements::Sql;

use super::PgResultExt;
use super::events::emit_reachability_change;
use super::paging::{Arg, fetch_page, text};
use super::writer::Tx;
use super::{services, users};
use crate::domain::binding::{
    Binding, BindingFilter, BindingType, NewBinding, RegistrationPlan, plan_registration,
};
use crate::domain::ids;
use crate::domain::page::{Page, PageRequest};
use crate::domain::presence::Cause;
use crate::domain::reachability::plan_notifiable;
use crate::domain::service::Service;
use crate::domain::store::Origin;
use crate::domain::time::now_ms;
use crate::domain::user::UserKey;
use crate::domain::{Error, Result};

const COLUMNS: &str = "id, sid, service_sid, user_sid, identity, credential_sid, endpoint, \
     address, binding_type, date_created, date_updated";

/// Times a registration plans again after losing its endpoint to another node's insert.
const REGISTER_ATTEMPTS: usize = 5;

fn from_row(row: &Row) -> Result<Binding> {
    let kind: String = row.try_get(8).db()?;
    Ok(Binding {
        sid: row.try_get(1).db()?,
        service_sid: row.try_get(2).db()?,
        user_sid: row.try_get(3).db()?,
        identity: row.try_get(4).db()?,
        credential_sid: row.try_get(5).db()?,
        endpoint: row.try_get(6).db()?,
        address: row.try_get(7).db()?,
        binding_type: BindingType::parse(&kind).unwrap_or(BindingType::Twilsock),
        date_created: row.try_get(9).db()?,
        date_updated: row.try_get(10).db()?,
    })
}

fn params(args: &[Arg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// `WHERE` clause (placeholders `$1…$n`) and arguments for a service plus a filter.
fn filter_sql(service_sid: &str, filter: &BindingFilter) -> (String, Vec<Arg>) {
    let mut sql = String::from("service_sid = $1");
    let mut args = vec![text(service_sid)];
    let mut any_of = |column: &str, values: Vec<String>| {
        if values.is_empty() {
            return;
        }
        args.push(Box::new(values));
        sql.push_str(&format!(" AND {column} = ANY(${})", args.len()));
    };
    any_of(
        "binding_type",
        filter
            .types
            .iter()
            .map(|t| t.as_str().to_string())
            .collect(),
    );
    any_of("identity", filter.identities.clone());
    any_of("user_sid", filter.user_sid.iter().cloned().collect());
    (sql, args)
}

pub fn get(
    client: &mut impl Sql,
    service_sid: &str,
    sid: &str,
    filter: &BindingFilter,
) -> Result<Option<Binding>> {
    let (mut sql, mut args) = filter_sql(service_sid, filter);
    args.push(text(&ids::normalize(sid)));
    sql.push_str(&format!(" AND sid = ${}", args.len()));
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM bindings WHERE {sql}"),
            &params(&args),
        )
        .db()?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub fn list(
    client: &mut impl Sql,
    service_sid: &str,
    filter: &BindingFilter,
    page: PageRequest,
) -> Result<Page<Binding>> {
    let (sql, args) = filter_sql(service_sid, filter);
    fetch_page(
        client,
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
    tx: &mut Tx<'_, '_>,
    service_sid: &str,
    key: &UserKey,
    new: NewBinding,
    origin: Origin,
) -> Result<Binding> {
    new.validate()?;
    let service = services::require(tx, service_sid)?;
    let user = users::require(tx, service_sid, key)?;
    let endpoint = new.endpoint_for(&user.identity);
    let mut stored: Option<RegistrationPlan> = None;
    for _ in 0..REGISTER_ATTEMPTS {
        let existing = tx
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM bindings WHERE service_sid = $1 AND endpoint = $2 \
                     FOR UPDATE"
                ),
                &[&service_sid, &endpoint],
            )
            .db()?
            .as_ref()
            .map(from_row)
            .transpose()?;
        let plan = plan_registration(new.clone(), &user, existing.as_ref(), origin, now_ms())?;
        if write_plan(tx, &plan)? {
            stored = Some(plan);
            break;
        }
        // Another node inserted this endpoint meanwhile: plan again against its row.
    }
    let plan = stored.ok_or_else(|| {
        Error::Unavailable(format!(
            "endpoint {endpoint} is being registered concurrently"
        ))
    })?;
    refresh_notifiable(
        tx,
        &service,
        &plan.touched_users,
        Cause::BindingAdded,
        origin,
    )?;
    Ok(plan.binding)
}

/// Stores a planned registration; `false` when its insert lost the endpoint to another
/// node's.
fn write_plan(tx: &mut Tx<'_, '_>, plan: &RegistrationPlan) -> Result<bool> {
    let binding = &plan.binding;
    if plan.replaces {
        tx.execute(
            "UPDATE bindings SET user_sid = $2, identity = $3, credential_sid = $4, address = $5, \
             binding_type = $6, date_updated = $7 WHERE sid = $1",
            &[
                &binding.sid,
                &binding.user_sid,
                &binding.identity,
                &binding.credential_sid,
                &binding.address,
                &binding.binding_type.as_str(),
                &binding.date_updated,
            ],
        )
        .db()?;
        return Ok(true);
    }
    let inserted = tx
        .execute(
            "INSERT INTO bindings (sid, service_sid, user_sid, identity, credential_sid, \
             endpoint, address, binding_type, date_created, date_updated) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (service_sid, endpoint) DO NOTHING",
            &[
                &binding.sid,
                &binding.service_sid,
                &binding.user_sid,
                &binding.identity,
                &binding.credential_sid,
                &binding.endpoint,
                &binding.address,
                &binding.binding_type.as_str(),
                &binding.date_created,
                &binding.date_updated,
            ],
        )
        .db()?;
    Ok(inserted > 0)
}

/// Deletes the binding named by SID or endpoint within the filter's scope.
pub fn delete(
    tx: &mut Tx<'_, '_>,
    service_sid: &str,
    sid_or_endpoint: &str,
    filter: &BindingFilter,
    origin: Origin,
) -> Result<Option<Binding>> {
    let (mut sql, mut args) = filter_sql(service_sid, filter);
    let sid = ids::normalize(sid_or_endpoint);
    args.push(text(&sid));
    let sid_at = args.len();
    args.push(text(sid_or_endpoint));
    let endpoint_at = args.len();
    sql.push_str(&format!(
        " AND (sid = ${sid_at} OR endpoint = ${endpoint_at}) ORDER BY sid = ${sid_at} DESC \
         LIMIT 1 FOR UPDATE"
    ));
    let found = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM bindings WHERE {sql}"),
            &params(&args),
        )
        .db()?
        .as_ref()
        .map(from_row)
        .transpose()?;
    let Some(binding) = found else {
        return Ok(None);
    };
    tx.execute("DELETE FROM bindings WHERE sid = $1", &[&binding.sid])
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
    tx: &mut Tx<'_, '_>,
    service: &Service,
    user_sids: &[String],
    cause: Cause,
    origin: Origin,
) -> Result<()> {
    if !service.reachability_enabled {
        // `plan_notifiable` would refuse every user: skip reading them.
        return Ok(());
    }
    // Lock the users first (another node's recompute then waits, and reads what this one
    // wrote), in one statement and SID order.
    let mut sorted = user_sids.to_vec();
    sorted.sort();
    tx.execute(
        "SELECT 1 FROM users WHERE sid = ANY($1) ORDER BY sid FOR UPDATE",
        &[&sorted],
    )
    .db()?;
    for user_sid in user_sids {
        let user = users::require(tx, &service.sid, &UserKey::SidOrIdentity(user_sid.clone()))?;
        let types = binding_types_of(tx, user_sid)?;
        let Some(change) =
            plan_notifiable(service.reachability_enabled, &user, &types, cause, origin)
        else {
            continue;
        };
        tx.execute(
            "UPDATE users SET is_notifiable = $2 WHERE sid = $1",
            &[user_sid, &change.user.reachability.is_notifiable],
        )
        .db()?;
        emit_reachability_change(tx, change)?;
    }
    Ok(())
}

/// The types of a user's bindings (unknown stored types are skipped).
fn binding_types_of(client: &mut impl Sql, user_sid: &str) -> Result<Vec<BindingType>> {
    let mut types = Vec::new();
    for row in client
        .query(
            "SELECT binding_type FROM bindings WHERE user_sid = $1",
            &[&user_sid],
        )
        .db()?
    {
        let kind: String = row.try_get(0).db()?;
        types.extend(BindingType::parse(&kind));
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::super::services::test_db::{TestDb, fresh_database};
    use super::*;
    use crate::domain::event::EventType;
    use crate::domain::page::Cursor;
    use crate::domain::user::{NewUser, User};

    const REST: Origin = Origin::Rest { webhooks: false };

    fn push(kind: BindingType, address: &str, endpoint: Option<&str>) -> NewBinding {
        NewBinding {
            binding_type: kind,
            address: address.into(),
            credential_sid: None,
            endpoint: endpoint.map(String::from),
        }
    }

    fn setup(db: &mut TestDb) -> (String, User, User) {
        let mut service = Service::new("bindings", 1).expect("service");
        service.reachability_enabled = true;
        services::insert(&mut db.client, &service).expect("service row");
        let mut made = Vec::new();
        for identity in ["alice", "bob"] {
            let s = service.sid.clone();
            let new = NewUser {
                identity: identity.into(),
                ..Default::default()
            };
            made.push(
                db.write(move |tx| users::insert(tx, &s, new, REST))
                    .expect("user"),
            );
        }
        let bob = made.pop().expect("bob");
        let alice = made.pop().expect("alice");
        (service.sid, alice, bob)
    }

    fn register_as(
        db: &TestDb,
        service_sid: &str,
        identity: &str,
        new: NewBinding,
        origin: Origin,
    ) -> Result<Binding> {
        let (s, key) = (service_sid.to_string(), UserKey::Identity(identity.into()));
        db.write(move |tx| register(tx, &s, &key, new, origin))
    }

    fn notifiable(db: &mut TestDb, user_sid: &str) -> Option<bool> {
        db.client
            .query_one(
                "SELECT is_notifiable FROM users WHERE sid = $1",
                &[&user_sid],
            )
            .expect("user")
            .get(0)
    }

    fn reachability_events(db: &mut TestDb) -> Vec<(String, Option<bool>, Option<String>)> {
        db.client
            .query(
                "SELECT identity, is_notifiable, cause FROM events WHERE type = $1 ORDER BY id",
                &[&EventType::ReachabilityUpdated.as_str()],
            )
            .expect("events")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    #[test]
    fn registration_takes_endpoints_over_and_recomputes_notifiable() {
        let Some(mut db) = fresh_database() else {
            return;
        };
        let (ss, alice, bob) = setup(&mut db);
        let first = register_as(
            &db,
            &ss,
            "alice",
            push(BindingType::Fcm, "tok1", Some("dev1")),
            REST,
        )
        .expect("register");
        assert_eq!(first.user_sid, alice.sid);
        assert_eq!(first.endpoint, "dev1");
        assert_eq!(notifiable(&mut db, &alice.sid), Some(true));
        let stored = get(&mut db.client, &ss, &first.sid, &BindingFilter::default())
            .expect("get")
            .expect("exists");
        assert_eq!(stored, first);

        // The same device again: replaced in place, no new reachability event.
        let again = register_as(
            &db,
            &ss,
            "alice",
            push(BindingType::Fcm, "tok2", Some("dev1")),
            REST,
        )
        .expect("again");
        assert_eq!(again.sid, first.sid);
        assert_eq!(again.address, "tok2");
        assert_eq!(again.date_created, first.date_created);

        // A client may not take another identity's endpoint.
        assert!(matches!(
            register_as(
                &db,
                &ss,
                "bob",
                push(BindingType::Fcm, "tok3", Some("dev1")),
                Origin::Client
            ),
            Err(Error::Conflict(_))
        ));
        // The REST API may: the endpoint moves to bob, alice is no longer notifiable.
        let moved = register_as(
            &db,
            &ss,
            "bob",
            push(BindingType::Apn, "tok3", Some("dev1")),
            REST,
        )
        .expect("takeover");
        assert_eq!(moved.sid, first.sid);
        assert_eq!(moved.user_sid, bob.sid);
        assert_eq!(moved.identity, "bob");
        assert_eq!(moved.binding_type, BindingType::Apn);
        assert_eq!(notifiable(&mut db, &bob.sid), Some(true));
        assert_eq!(notifiable(&mut db, &alice.sid), Some(false));
        let binding_added = Some(Cause::BindingAdded.as_str().to_string());
        assert_eq!(
            reachability_events(&mut db),
            [
                ("alice".to_string(), Some(true), binding_added.clone()),
                ("bob".to_string(), Some(true), binding_added.clone()),
                ("alice".to_string(), Some(false), binding_added.clone()),
            ]
        );
        let count: i64 = db
            .client
            .query_one("SELECT count(*) FROM bindings", &[])
            .expect("count")
            .get(0);
        assert_eq!(count, 1);

        // Unknown user, unknown service, bad request.
        assert!(matches!(
            register_as(&db, &ss, "carol", push(BindingType::Fcm, "t", None), REST),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            register_as(
                &db,
                "ISnope",
                "alice",
                push(BindingType::Fcm, "t", None),
                REST
            ),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            register_as(&db, &ss, "alice", push(BindingType::Twilsock, "t", None), REST),
            Err(Error::InvalidParam { param, .. }) if param == "binding_type"
        ));
    }

    #[test]
    fn bindings_are_listed_with_filters_and_deleted() {
        let Some(mut db) = fresh_database() else {
            return;
        };
        let (ss, alice, bob) = setup(&mut db);
        let a1 =
            register_as(&db, &ss, "alice", push(BindingType::Fcm, "a1", None), REST).expect("a1");
        let a2 =
            register_as(&db, &ss, "alice", push(BindingType::Apn, "a2", None), REST).expect("a2");
        let b1 = register_as(
            &db,
            &ss,
            "bob",
            push(BindingType::Gcm, "b1", Some("bob-dev")),
            REST,
        )
        .expect("b1");
        assert!(a1.endpoint.starts_with("alice:fcm:"));

        let all = |db: &mut TestDb, filter: &BindingFilter| -> Vec<String> {
            list(
                &mut db.client,
                &ss,
                filter,
                PageRequest {
                    cursor: Cursor::Offset(0),
                    size: 50,
                },
            )
            .expect("list")
            .items
            .into_iter()
            .map(|(_, b)| b.sid)
            .collect()
        };
        assert_eq!(
            all(&mut db, &BindingFilter::default()),
            [a1.sid.as_str(), a2.sid.as_str(), b1.sid.as_str()]
        );
        let by_type = BindingFilter {
            types: vec![BindingType::Apn, BindingType::Gcm],
            ..Default::default()
        };
        assert_eq!(all(&mut db, &by_type), [a2.sid.as_str(), b1.sid.as_str()]);
        let by_identity = BindingFilter {
            identities: vec!["bob".into(), "nobody".into()],
            ..Default::default()
        };
        assert_eq!(all(&mut db, &by_identity), [b1.sid.as_str()]);
        let by_user = BindingFilter {
            types: vec![BindingType::Fcm],
            user_sid: Some(alice.sid.clone()),
            ..Default::default()
        };
        assert_eq!(all(&mut db, &by_user), [a1.sid.as_str()]);
        let page = list(
            &mut db.client,
            &ss,
            &BindingFilter::default(),
            PageRequest {
                cursor: Cursor::Offset(0),
                size: 2,
            },
        )
        .expect("page");
        assert!(page.has_more_after);
        let next = list(
            &mut db.client,
            &ss,
            &BindingFilter::default(),
            PageRequest {
                cursor: Cursor::After(page.items[1].0),
                size: 2,
            },
        )
        .expect("next");
        assert_eq!(next.items[0].1, b1);
        assert!(!next.has_more_after);
        assert!(
            get(&mut db.client, &ss, &b1.sid, &by_user)
                .expect("get")
                .is_none(),
            "outside the filter"
        );

        // Delete by endpoint, then by SID; outside the filter nothing is deleted.
        let del = |db: &TestDb, target: &str, filter: &BindingFilter| {
            let (s, t, f) = (ss.clone(), target.to_string(), filter.clone());
            db.write(move |tx| delete(tx, &s, &t, &f, REST))
                .expect("delete")
        };
        assert_eq!(del(&db, "bob-dev", &by_user), None);
        assert_eq!(
            del(&db, "bob-dev", &BindingFilter::default()),
            Some(b1.clone())
        );
        assert_eq!(notifiable(&mut db, &bob.sid), Some(false));
        assert_eq!(
            del(&db, &a1.sid, &BindingFilter::default()),
            Some(a1.clone())
        );
        assert_eq!(notifiable(&mut db, &alice.sid), Some(true), "a2 is left");
        assert_eq!(del(&db, &a1.sid, &BindingFilter::default()), None);
        assert_eq!(all(&mut db, &BindingFilter::default()), [a2.sid.as_str()]);
        let removed = Some(Cause::BindingRemoved.as_str().to_string());
        assert_eq!(
            reachability_events(&mut db).last(),
            Some(&("bob".to_string(), Some(false), removed))
        );
    }

    #[test]
    fn an_endpoint_registered_by_two_nodes_at_once_is_stored_once() {
        let Some(mut db) = fresh_database() else {
            return;
        };
        let (ss, _alice, bob) = setup(&mut db);
        // Two nodes register one endpoint at once. Writers of all nodes commit one after
        // another (the feed position lock), so whichever comes second finds the first's row
        // and takes it over, as a second registration would: one row, never two.
        let other = db.other_writer();
        let (s, key) = (ss.clone(), UserKey::Identity("alice".into()));
        let a = db.writer.submit(move |tx| {
            let out = register(
                tx,
                &s,
                &key,
                push(BindingType::Fcm, "ta", Some("dev")),
                REST,
            )?;
            std::thread::sleep(std::time::Duration::from_millis(400));
            Ok(out)
        });
        let (s, key) = (ss.clone(), UserKey::Identity("bob".into()));
        let b = other.submit(move |tx| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            register(
                tx,
                &s,
                &key,
                push(BindingType::Fcm, "tb", Some("dev")),
                REST,
            )
        });
        let (a, b) = db.block_on(async { tokio::join!(a, b) });
        let (a, b) = (a.expect("node A"), b.expect("node B"));
        assert_eq!(a.sid, b.sid, "one binding");
        let users = [a.user_sid.clone(), b.user_sid.clone()];
        assert!(users.contains(&bob.sid), "{users:?}");
        let rows: Vec<(String, String)> = db
            .client
            .query("SELECT sid, user_sid FROM bindings", &[])
            .expect("bindings")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].0, a.sid);
        assert!(users.contains(&rows[0].1), "{rows:?}");
    }
}
