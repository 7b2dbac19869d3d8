//! Unit tests of the reachability rules: no database, just state in and change sets out.

use std::sync::Arc;

use super::*;

fn alice(is_online: Option<bool>, is_notifiable: Option<bool>) -> User {
    let mut user = NewUser {
        identity: "alice".into(),
        ..Default::default()
    }
    .into_user("IS1", "RL1", 1_000);
    user.reachability.is_online = is_online;
    user.reachability.is_notifiable = is_notifiable;
    user.reachability.sequence = 7;
    user
}

fn transition(online: bool, cause: Cause) -> Transition {
    Transition {
        service_sid: Arc::from("IS1"),
        identity: Arc::from("alice"),
        online,
        cause,
        at: 5_000,
        last_seen: 4_000,
        session_count: u32::from(online),
    }
}

const REST: Origin = Origin::Rest { webhooks: true };

#[test]
fn a_transition_changes_the_stored_state_and_records_one_online_event() {
    let t = transition(true, Cause::SessionOpened);
    let TransitionPlan::Apply(change) = plan_transition(Some(true), Some(&alice(None, None)), &t)
    else {
        panic!("an enabled service stores the first online state");
    };
    let state = change.user.reachability;
    assert_eq!(
        (state.is_online, state.last_seen, state.online_since),
        (Some(true), Some(4_000), Some(5_000))
    );
    assert_eq!(state.sequence, 7, "storage assigns the next sequence");
    assert_eq!(change.event.kind, EventType::ReachabilityUpdated);
    assert_eq!(change.event.reasons, [REASON_ONLINE]);
    assert_eq!(change.event.cause, Some(Cause::SessionOpened));
    assert_eq!(change.event.session_count, Some(1));
    assert_eq!(change.event.origin, Origin::Client);
    assert_eq!(change.offline_since, None);
}

#[test]
fn going_offline_clears_online_since_and_reports_the_last_sign_of_life() {
    let t = transition(false, Cause::SessionTimeout);
    let TransitionPlan::Apply(change) =
        plan_transition(Some(true), Some(&alice(Some(true), None)), &t)
    else {
        panic!("online to offline is a change");
    };
    assert_eq!(change.user.reachability.is_online, Some(false));
    assert_eq!(change.user.reachability.online_since, None);
    assert_eq!(change.offline_since, Some(4_000));
    assert_eq!(change.cause, Cause::SessionTimeout);
}

#[test]
fn transitions_are_stored_only_while_reachability_is_enabled() {
    let t = transition(true, Cause::SessionOpened);
    let user = alice(None, None);
    assert_eq!(
        plan_transition(Some(false), Some(&user), &t),
        TransitionPlan::Skip
    );
    assert_eq!(plan_transition(None, Some(&user), &t), TransitionPlan::Skip);
}

#[test]
fn repeating_the_stored_state_changes_nothing() {
    let online = alice(Some(true), None);
    let t = transition(true, Cause::ReachabilityEnabled);
    assert_eq!(
        plan_transition(Some(true), Some(&online), &t),
        TransitionPlan::Skip
    );
}

#[test]
fn only_a_session_opening_creates_a_missing_user() {
    let open = transition(true, Cause::SessionOpened);
    assert_eq!(
        plan_transition(Some(true), None, &open),
        TransitionPlan::CreateUser
    );
    assert_eq!(
        plan_transition(Some(false), None, &open),
        TransitionPlan::CreateUser,
        "a disabled service still gets the user, silently"
    );
    assert_eq!(
        plan_transition(None, None, &open),
        TransitionPlan::Skip,
        "not in a deleted service"
    );
    for t in [
        transition(false, Cause::SessionClosed),
        transition(true, Cause::ReachabilityEnabled),
    ] {
        assert_eq!(plan_transition(Some(true), None, &t), TransitionPlan::Skip);
    }
    let (user, origin) = first_contact("bob");
    assert_eq!((user.identity.as_str(), origin), ("bob", Origin::Client));
}

#[test]
fn only_push_bindings_make_a_user_notifiable() {
    assert!(!is_notifiable(&[]));
    assert!(!is_notifiable(&[BindingType::Twilsock]));
    assert!(is_notifiable(&[BindingType::Twilsock, BindingType::Fcm]));
    assert!(is_notifiable(&[BindingType::Apn]));
}

#[test]
fn a_first_push_binding_makes_the_user_notifiable_with_one_event() {
    let user = alice(None, None);
    let change = plan_notifiable(true, &user, &[BindingType::Gcm], Cause::BindingAdded, REST)
        .expect("a change");
    assert_eq!(change.user.reachability.is_notifiable, Some(true));
    assert_eq!(change.event.reasons, [REASON_NOTIFIABLE]);
    assert_eq!(change.event.cause, Some(Cause::BindingAdded));
    assert_eq!(
        change.event.origin, REST,
        "the binding's origin decides the source"
    );
    assert_eq!(change.event.session_count, None);
}

#[test]
fn removing_the_last_push_binding_makes_the_user_unnotifiable() {
    let user = alice(None, Some(true));
    let change =
        plan_notifiable(true, &user, &[], Cause::BindingRemoved, Origin::Client).expect("a change");
    assert_eq!(change.user.reachability.is_notifiable, Some(false));
    assert_eq!(change.cause, Cause::BindingRemoved);
}

#[test]
fn notifiable_is_not_recomputed_while_disabled_or_when_unchanged() {
    let user = alice(None, Some(true));
    let fcm = [BindingType::Fcm];
    assert_eq!(
        plan_notifiable(true, &user, &fcm, Cause::BindingAdded, REST),
        None
    );
    let unknown = alice(None, None);
    assert_eq!(
        plan_notifiable(false, &unknown, &fcm, Cause::BindingAdded, REST),
        None
    );
}
