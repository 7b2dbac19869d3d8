//! TEMPORARY STAND-IN for the PostgreSQL events module (ported in another worktree): just
//! enough of `emit` and `emit_reachability_change` for the services/users/bindings ports and
//! their tests to compile and run. Drop this file's commit at merge.
//!
//! May depend on: postgres, serde_json, domain, storage::commit, pg::writer.

use super::PgResultExt;
use super::writer::Tx;
use crate::domain::Result;
use crate::domain::event::{EventDraft, profile_json};
use crate::domain::presence::Cause;
use crate::domain::reachability::ReachabilityChange;
use crate::domain::time::now_ms;
use crate::domain::user::User;
use crate::storage::commit::StoredTransition;

/// Bumps the user's sequence (stored and in `user`) and records the event row; its id comes
/// from the `feed_position` row.
pub fn emit(tx: &mut Tx<'_, '_>, user: &mut User, spec: &EventDraft) -> Result<i64> {
    let sequence: i64 = tx
        .query_one(
            "UPDATE users SET sequence = sequence + 1 WHERE sid = $1 RETURNING sequence",
            &[&user.sid],
        )
        .db()?
        .try_get(0)
        .db()?;
    user.reachability.sequence = sequence;
    let id: i64 = tx
        .query_one(
            "UPDATE feed_position SET last = last + 1 WHERE id = 1 RETURNING last",
            &[],
        )
        .db()?
        .try_get(0)
        .db()?;
    let u = &*user;
    let (source, rest_webhooks) = spec.origin.source();
    let reasons = serde_json::Value::from(spec.reasons.clone()).to_string();
    let session_count = spec.session_count.map(i64::from);
    tx.execute(
        "INSERT INTO events (id, service_sid, user_sid, identity, type, reasons, cause, sequence, \
         is_online, is_notifiable, session_count, last_seen, source, rest_webhooks, user_json, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        &[
            &id,
            &u.service_sid,
            &u.sid,
            &u.identity,
            &spec.kind.as_str(),
            &reasons,
            &spec.cause.map(Cause::as_str),
            &sequence,
            &u.reachability.is_online,
            &u.reachability.is_notifiable,
            &session_count,
            &u.reachability.last_seen,
            &source.as_str(),
            &rest_webhooks,
            &profile_json(u),
            &now_ms(),
        ],
    )
    .db()?;
    tx.record_event(id);
    Ok(id)
}

/// Records a reachability change the domain decided: its event and the stored transition.
pub fn emit_reachability_change(tx: &mut Tx<'_, '_>, change: ReachabilityChange) -> Result<()> {
    let ReachabilityChange {
        mut user,
        event,
        cause,
        offline_since,
    } = change;
    emit(tx, &mut user, &event)?;
    tx.record_transition(StoredTransition {
        cause: cause.as_str(),
        offline_since,
    });
    Ok(())
}
