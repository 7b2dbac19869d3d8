//! Push bindings: a user's registration for notifications on one device endpoint.
//!
//! May depend on: sha2, domain::{ids, time, errors, service, store (`Origin`), user}.

use sha2::{Digest, Sha256};

use super::errors::{Error, Result};
use super::ids::{self, Prefix};
use super::service::validate_sid;
use super::store::Origin;
use super::time::Millis;
use super::user::User;

/// Longest device address (push token) and endpoint accepted, in bytes.
pub const MAX_ADDRESS: usize = 4096;
pub const MAX_ENDPOINT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingType {
    Apn,
    Gcm,
    Fcm,
    /// Conversations' realtime binding; listed but never makes a user notifiable.
    Twilsock,
}

impl BindingType {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingType::Apn => "apn",
            BindingType::Gcm => "gcm",
            BindingType::Fcm => "fcm",
            BindingType::Twilsock => "twilsock",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "apn" => Some(BindingType::Apn),
            "gcm" => Some(BindingType::Gcm),
            "fcm" => Some(BindingType::Fcm),
            "twilsock" => Some(BindingType::Twilsock),
            _ => None,
        }
    }

    /// Push types: the ones that make a user notifiable.
    pub fn is_push(self) -> bool {
        !matches!(self, BindingType::Twilsock)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub sid: String,
    pub service_sid: String,
    pub user_sid: String,
    pub identity: String,
    pub credential_sid: Option<String>,
    pub endpoint: String,
    pub address: String,
    pub binding_type: BindingType,
    pub date_created: Millis,
    pub date_updated: Millis,
}

/// A push registration request (server-side or from a client).
#[derive(Debug, Clone, PartialEq)]
pub struct NewBinding {
    pub binding_type: BindingType,
    pub address: String,
    pub credential_sid: Option<String>,
    /// The device endpoint; re-registering an endpoint replaces its binding.
    pub endpoint: Option<String>,
}

impl NewBinding {
    pub fn validate(&self) -> Result<()> {
        if !self.binding_type.is_push() {
            return Err(Error::invalid("binding_type", "must be apn, gcm or fcm"));
        }
        if self.address.is_empty() {
            return Err(Error::MissingParam("address".into()));
        }
        if self.address.contains('\0') {
            return Err(Error::invalid(
                "address",
                "must not contain a NUL character (U+0000)",
            ));
        }
        if self.address.len() > MAX_ADDRESS {
            return Err(Error::invalid(
                "address",
                format!("must be at most {MAX_ADDRESS} bytes"),
            ));
        }
        if let Some(endpoint) = &self.endpoint
            && (endpoint.is_empty()
                || endpoint.len() > MAX_ENDPOINT
                || endpoint.chars().any(char::is_control))
        {
            return Err(Error::invalid(
                "endpoint",
                format!("must be 1 to {MAX_ENDPOINT} printable bytes"),
            ));
        }
        if let Some(sid) = &self.credential_sid {
            validate_sid("credential_sid", sid, Prefix::Credential)?;
        }
        Ok(())
    }

    /// The endpoint this registration occupies: the given one, or one derived from the
    /// identity, type and address so that registering the same device twice replaces it.
    pub fn endpoint_for(&self, identity: &str) -> String {
        match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => {
                let digest = Sha256::digest(self.address.as_bytes());
                let short: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
                format!("{identity}:{}:{short}", self.binding_type.as_str())
            }
        }
    }

    pub fn into_binding(
        self,
        service_sid: &str,
        user_sid: &str,
        identity: &str,
        now: Millis,
    ) -> Binding {
        Binding {
            sid: ids::new_sid(Prefix::Binding),
            service_sid: service_sid.to_string(),
            user_sid: user_sid.to_string(),
            identity: identity.to_string(),
            endpoint: self.endpoint_for(identity),
            credential_sid: self.credential_sid,
            address: self.address,
            binding_type: self.binding_type,
            date_created: now,
            date_updated: now,
        }
    }
}

/// Whether a registration by `user_sid` may replace `existing`, the binding that holds its
/// endpoint. The REST API (the account) may move an endpoint to another user; a client may
/// only replace its own identity's endpoints, or naming a victim's endpoint would move the
/// victim's binding to the caller and leave the victim silently unnotifiable.
pub fn check_replace(existing: &Binding, user_sid: &str, origin: Origin) -> Result<()> {
    if origin == Origin::Client && existing.user_sid != user_sid {
        return Err(Error::Conflict(format!(
            "Invalid parameter endpoint: {} is registered to another identity; a client may \
             only replace its own endpoints",
            existing.endpoint
        )));
    }
    Ok(())
}

/// How a registration is stored, as [`plan_registration`] decides it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationPlan {
    /// The binding to write.
    pub binding: Binding,
    /// The endpoint was registered already: the binding replaces that row in place (keeping
    /// its SID and creation date) instead of being inserted.
    pub replaces: bool,
    /// Users whose notifiable state must be recomputed: the registering user, and the former
    /// holder of an endpoint that moved to them.
    pub touched_users: Vec<String>,
}

/// Decides a registration by `user`, given the binding that already holds its endpoint in
/// the service (if any): a new row, or a takeover of that row — refused for a client naming
/// another identity's endpoint (see [`check_replace`]).
pub fn plan_registration(
    new: NewBinding,
    user: &User,
    existing: Option<&Binding>,
    origin: Origin,
    now: Millis,
) -> Result<RegistrationPlan> {
    let mut binding = new.into_binding(&user.service_sid, &user.sid, &user.identity, now);
    let mut touched_users = vec![user.sid.clone()];
    let Some(old) = existing else {
        return Ok(RegistrationPlan {
            binding,
            replaces: false,
            touched_users,
        });
    };
    check_replace(old, &user.sid, origin)?;
    binding.sid = old.sid.clone();
    binding.date_created = old.date_created;
    if old.user_sid != user.sid {
        touched_users.push(old.user_sid.clone());
    }
    Ok(RegistrationPlan {
        binding,
        replaces: true,
        touched_users,
    })
}

/// List filters: values of one filter are OR-ed, different filters AND-ed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BindingFilter {
    pub types: Vec<BindingType>,
    pub identities: Vec<String>,
    pub user_sid: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(endpoint: Option<&str>) -> NewBinding {
        NewBinding {
            binding_type: BindingType::Fcm,
            address: "device-token".into(),
            credential_sid: None,
            endpoint: endpoint.map(str::to_string),
        }
    }

    #[test]
    fn derived_endpoints_are_stable_per_device() {
        assert_eq!(
            reg(None).endpoint_for("alice"),
            reg(None).endpoint_for("alice")
        );
        assert_ne!(
            reg(None).endpoint_for("alice"),
            reg(None).endpoint_for("bob")
        );
        assert_eq!(
            reg(Some("app:alice:d1")).endpoint_for("alice"),
            "app:alice:d1"
        );
    }

    #[test]
    fn validation_refuses_twilsock_empty_address_and_bad_credentials() {
        assert!(reg(None).validate().is_ok());
        let mut b = reg(None);
        b.binding_type = BindingType::Twilsock;
        assert!(
            b.validate()
                .unwrap_err()
                .to_string()
                .contains("binding_type")
        );
        let mut b = reg(None);
        b.address.clear();
        assert!(b.validate().unwrap_err().to_string().contains("address"));
        let mut b = reg(None);
        b.credential_sid = Some("CRnope".into());
        assert!(
            b.validate()
                .unwrap_err()
                .to_string()
                .contains("credential_sid")
        );
    }

    #[test]
    fn clients_may_replace_only_their_own_endpoints() {
        let existing = reg(Some("shared")).into_binding("IS1", "USvictim", "victim", 0);
        let err = check_replace(&existing, "USthief", Origin::Client).unwrap_err();
        assert!(
            matches!(&err, Error::Conflict(m) if m.contains("endpoint")),
            "{err}"
        );
        assert!(check_replace(&existing, "USvictim", Origin::Client).is_ok());
        let rest = Origin::Rest { webhooks: false };
        assert!(check_replace(&existing, "USthief", rest).is_ok());
    }

    fn user(sid: &str, identity: &str) -> User {
        let mut user = crate::domain::user::NewUser {
            identity: identity.into(),
            ..Default::default()
        }
        .into_user("IS1", "RL1", 0);
        user.sid = sid.into();
        user
    }

    #[test]
    fn a_new_endpoint_is_inserted_and_touches_only_its_user() {
        let alice = user("USalice", "alice");
        let plan =
            plan_registration(reg(Some("d1")), &alice, None, Origin::Client, 5).expect("a plan");
        assert!(!plan.replaces);
        assert_eq!(plan.touched_users, ["USalice"]);
        let b = &plan.binding;
        assert_eq!(
            (
                b.user_sid.as_str(),
                b.identity.as_str(),
                b.endpoint.as_str()
            ),
            ("USalice", "alice", "d1")
        );
        assert_eq!((b.service_sid.as_str(), b.date_created), ("IS1", 5));
    }

    #[test]
    fn re_registering_an_endpoint_replaces_it_in_place() {
        let alice = user("USalice", "alice");
        let old = reg(Some("d1")).into_binding("IS1", "USalice", "alice", 1);
        let mut again = reg(Some("d1"));
        again.address = "new-token".into();
        let plan =
            plan_registration(again, &alice, Some(&old), Origin::Client, 9).expect("own endpoint");
        assert!(plan.replaces);
        assert_eq!(plan.binding.sid, old.sid, "the SID is kept");
        assert_eq!(
            (plan.binding.date_created, plan.binding.date_updated),
            (1, 9)
        );
        assert_eq!(plan.binding.address, "new-token");
        assert_eq!(plan.touched_users, ["USalice"]);
    }

    #[test]
    fn a_rest_takeover_moves_the_endpoint_and_touches_both_users() {
        let bob = user("USbob", "bob");
        let old = reg(Some("shared")).into_binding("IS1", "USalice", "alice", 1);
        let rest = Origin::Rest { webhooks: false };
        let plan = plan_registration(reg(Some("shared")), &bob, Some(&old), rest, 9)
            .expect("the account may move endpoints");
        assert!(plan.replaces);
        assert_eq!(
            (
                plan.binding.user_sid.as_str(),
                plan.binding.identity.as_str()
            ),
            ("USbob", "bob")
        );
        assert_eq!(plan.touched_users, ["USbob", "USalice"]);
    }

    #[test]
    fn a_client_takeover_of_another_identity_is_refused() {
        let mallory = user("USmallory", "mallory");
        let old = reg(Some("bob-phone")).into_binding("IS1", "USbob", "bob", 1);
        let err = plan_registration(
            reg(Some("bob-phone")),
            &mallory,
            Some(&old),
            Origin::Client,
            9,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
    }

    #[test]
    fn binding_types_parse_case_insensitively() {
        assert_eq!(BindingType::parse("APN"), Some(BindingType::Apn));
        assert_eq!(BindingType::parse("sms"), None);
    }
}
