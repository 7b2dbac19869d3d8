//! The rules that decide a stored user's reachability (docs/ARCHITECTURE.md §4): which
//! presence transitions and binding changes become stored changes, and the change set each
//! one is (the user's new state, and the event that records it). Storage reads the current
//! state, asks these functions, and persists what they return.
//!
//! May depend on: domain::{binding, event, presence, store (`Origin`), time, user}.

use super::binding::BindingType;
use super::event::{EventDraft, EventType, REASON_NOTIFIABLE, REASON_ONLINE};
use super::presence::{Cause, Transition};
use super::store::Origin;
use super::time::Millis;
use super::user::{NewUser, User};

/// A change of a stored user's reachability: the user with the new state (the row to write)
/// and the event to emit with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReachabilityChange {
    pub user: User,
    pub event: EventDraft,
    /// Why the state changed (also the event's cause).
    pub cause: Cause,
    /// For a change to offline: the user's last sign of life (wall-clock ms).
    pub offline_since: Option<Millis>,
}

/// What storage does with a presence transition.
#[derive(Debug, Clone, PartialEq)]
pub enum TransitionPlan {
    /// Nothing: the service is gone, the user is gone (and this is no first contact), the
    /// service has reachability disabled, or the stored state already matches.
    Skip,
    /// The user does not exist and this is a client's first contact: create the user (see
    /// [`first_contact`]), then plan the transition again with the new user.
    CreateUser,
    /// Store this change.
    Apply(Box<ReachabilityChange>),
}

/// Whether a transition is a client's first contact, which creates a missing user: a session
/// opening. (An offline transition for a deleted user must not bring the user back.)
pub fn is_first_contact(t: &Transition) -> bool {
    t.online && t.cause == Cause::SessionOpened
}

/// The user a client's first contact creates (with its `user.added` event from the SDK).
pub fn first_contact(identity: &str) -> (NewUser, Origin) {
    let user = NewUser {
        identity: identity.to_string(),
        ..Default::default()
    };
    (user, Origin::Client)
}

/// Decides a presence transition. `reachability_enabled` is `None` when the service no longer
/// exists; `user` is the stored user, if any.
pub fn plan_transition(
    reachability_enabled: Option<bool>,
    user: Option<&User>,
    t: &Transition,
) -> TransitionPlan {
    let Some(enabled) = reachability_enabled else {
        return TransitionPlan::Skip;
    };
    let Some(user) = user else {
        return if is_first_contact(t) {
            TransitionPlan::CreateUser
        } else {
            TransitionPlan::Skip
        };
    };
    if !enabled || user.reachability.is_online == Some(t.online) {
        return TransitionPlan::Skip;
    }
    let mut user = user.clone();
    let state = &mut user.reachability;
    state.is_online = Some(t.online);
    state.last_seen = Some(t.last_seen);
    state.online_since = t.online.then_some(t.at);
    let event = EventDraft {
        reasons: vec![REASON_ONLINE],
        cause: Some(t.cause),
        session_count: Some(t.session_count),
        ..EventDraft::new(EventType::ReachabilityUpdated, Origin::Client)
    };
    TransitionPlan::Apply(Box::new(ReachabilityChange {
        user,
        event,
        cause: t.cause,
        offline_since: (!t.online).then_some(t.last_seen),
    }))
}

/// A user is notifiable while they hold at least one push binding (`apn`, `gcm`, `fcm`).
pub fn is_notifiable(binding_types: &[BindingType]) -> bool {
    binding_types.iter().any(|t| t.is_push())
}

/// Recomputes a user's notifiable state after their bindings changed (`cause` is
/// `BindingAdded` or `BindingRemoved`); `None` while the service has reachability disabled or
/// when the state does not change.
pub fn plan_notifiable(
    reachability_enabled: bool,
    user: &User,
    binding_types: &[BindingType],
    cause: Cause,
    origin: Origin,
) -> Option<ReachabilityChange> {
    let notifiable = is_notifiable(binding_types);
    if !reachability_enabled || user.reachability.is_notifiable == Some(notifiable) {
        return None;
    }
    let mut user = user.clone();
    user.reachability.is_notifiable = Some(notifiable);
    let event = EventDraft {
        reasons: vec![REASON_NOTIFIABLE],
        cause: Some(cause),
        ..EventDraft::new(EventType::ReachabilityUpdated, origin)
    };
    Some(ReachabilityChange {
        user,
        event,
        cause,
        offline_since: None,
    })
}

#[cfg(test)]
#[path = "reachability/tests.rs"]
mod tests;
