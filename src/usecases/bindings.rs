//! Push binding use cases: a server-side registration for an existing user, and a client's
//! own registration, which is a first contact (it creates the user when missing).
//!
//! May depend on: domain.

use super::Reachability;
use crate::domain::Result;
use crate::domain::binding::{Binding, NewBinding};
use crate::domain::store::Origin;
use crate::domain::user::UserKey;

impl Reachability {
    /// Registers (or replaces, by endpoint) a push binding of an existing user.
    pub async fn register_binding(
        &self,
        service_sid: &str,
        key: UserKey,
        binding: NewBinding,
        origin: Origin,
    ) -> Result<Binding> {
        self.store
            .register_binding(service_sid, key, binding, origin)
            .await
    }

    /// A client registers push for its own identity: the user is created on this first
    /// contact when missing, then the binding is registered with the client's rights (it may
    /// replace only its own endpoints).
    pub async fn register_client_push(
        &self,
        service_sid: &str,
        identity: &str,
        binding: NewBinding,
    ) -> Result<Binding> {
        self.store.ensure_user(service_sid, identity).await?;
        let key = UserKey::Identity(identity.to_string());
        self.store
            .register_binding(service_sid, key, binding, Origin::Client)
            .await
    }
}
