//! Storing a presence batch's transitions on PostgreSQL in a fixed handful of statements,
//! however many transitions the batch holds: a burst of first contacts or a lost node's
//! users going offline must not cost a round trip per statement per user.
//!
//! The batch is decided in memory, in the transitions' order, with the domain's own rules
//! ([`plan_transition`], [`first_contact`]) and then written set-based:
//! 1. read the batch's services and users (two statements);
//! 2. decide each transition on the users as the earlier ones left them, creating first
//!    contacts and drafting their events with the sequences they take;
//! 3. insert the new users with the state the batch left them in, store every other touched
//!    user's state, and record the events with consecutive feed ids (events, then their
//!    deliveries).
//!
//! This gives what applying the transitions one by one gives (same users, same events in the
//! same order, same sequences), because nothing else changes these rows meanwhile: every
//! writer's transaction holds the feed position first (see `writer`), and users, services
//! and events are written only by writers.
//!
//! May depend on: postgres, domain, pg::{events, services, users, writer}.

use std::collections::HashMap;

use super::events::{EventRow, emit_all};
use super::services;
use super::users;
use super::writer::Tx;
use crate::domain::event::{EventDraft, EventType};
use crate::domain::presence::Transition;
use crate::domain::reachability::{
    ReachabilityChange, TransitionPlan, first_contact, plan_transition,
};
use crate::domain::time::now_ms;
use crate::domain::user::User;
use crate::domain::{Error, Result};
use crate::storage::commit::StoredTransition;

/// A user the batch read or created, as the transitions so far left it.
struct Touched {
    user: User,
    created: bool,
    changed: bool,
}

/// Stores `transitions` as [`plan_transition`] decides each, in order (see the module doc).
pub fn store(tx: &mut Tx<'_, '_>, transitions: &[&Transition]) -> Result<()> {
    if transitions.is_empty() {
        return Ok(());
    }
    let mut sids: Vec<&str> = transitions.iter().map(|t| &*t.service_sid).collect();
    sids.sort_unstable();
    sids.dedup();
    let services = services::presence_facts(tx, &sids)?;
    let mut keys: Vec<(&str, &str)> = transitions
        .iter()
        .map(|t| (&*t.service_sid, &*t.identity))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut touched: HashMap<(String, String), Touched> = users::get_many(tx, &keys)?
        .into_iter()
        .map(|user| {
            let key = (user.service_sid.clone(), user.identity.clone());
            let entry = Touched {
                user,
                created: false,
                changed: false,
            };
            (key, entry)
        })
        .collect();
    let mut order: Vec<(String, String)> = Vec::new();
    let mut events: Vec<EventRow> = Vec::new();
    for t in transitions {
        let key = (t.service_sid.to_string(), t.identity.to_string());
        let facts = services.get(&key.0);
        let change = loop {
            let user = touched.get(&key).map(|entry| &entry.user);
            match plan_transition(facts.map(|f| f.0), user, t) {
                TransitionPlan::Skip => break None,
                TransitionPlan::Apply(change) => break Some(*change),
                TransitionPlan::CreateUser if user.is_none() => {
                    let role = facts.and_then(|f| f.1.as_deref()).ok_or(Error::NotFound)?;
                    let (new, origin) = first_contact(&t.identity);
                    new.validate()?;
                    let mut user = new.into_user(&t.service_sid, role, now_ms());
                    events.push(next_event(
                        &mut user,
                        &EventDraft::new(EventType::UserAdded, origin),
                    ));
                    order.push(key.clone());
                    let entry = Touched {
                        user,
                        created: true,
                        changed: true,
                    };
                    touched.insert(key.clone(), entry);
                }
                // Unreachable (the plan asks for a user only when there is none); never loop.
                TransitionPlan::CreateUser => break None,
            }
        };
        let Some(ReachabilityChange {
            mut user,
            event,
            cause,
            offline_since,
        }) = change
        else {
            continue;
        };
        events.push(next_event(&mut user, &event));
        tx.record_transition(StoredTransition {
            cause: cause.as_str(),
            offline_since,
        });
        if let Some(entry) = touched.get_mut(&key) {
            if !entry.changed {
                order.push(key.clone());
            }
            entry.user = user;
            entry.changed = true;
        }
    }
    let written: Vec<&Touched> = order.iter().filter_map(|k| touched.get(k)).collect();
    let created: Vec<&User> = written
        .iter()
        .filter(|e| e.created)
        .map(|e| &e.user)
        .collect();
    // New users are inserted as the batch left them; only existing ones need an update.
    users::insert_first_contacts(tx, &created)?;
    let changed: Vec<&User> = written
        .iter()
        .filter(|e| !e.created)
        .map(|e| &e.user)
        .collect();
    users::store_reachability(tx, &changed)?;
    emit_all(tx, &events)?;
    Ok(())
}

/// Takes the user's next sequence number and drafts the event that carries it.
fn next_event(user: &mut User, spec: &EventDraft) -> EventRow {
    user.reachability.sequence += 1;
    EventRow::of(user, spec)
}
