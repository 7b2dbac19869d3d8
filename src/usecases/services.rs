//! Service use cases: a change of a service's settings or presence timings reconfigures the
//! presence engine (enabling reachability reports live users online) before it is answered;
//! a deleted service's sessions are forgotten.
//!
//! May depend on: domain, presence.

use super::Reachability;
use crate::domain::Result;
use crate::domain::service::{PresenceOverrides, Service, ServicePatch};

impl Reachability {
    /// Updates a service, then applies its settings to the presence engine and waits until
    /// the transitions that causes (reachability enabled) are committed.
    pub async fn update_service(&self, sid: &str, patch: ServicePatch) -> Result<Service> {
        let service = self.store.update_service(sid, patch).await?;
        self.presence.configure(&service).wait().await;
        Ok(service)
    }

    /// Replaces a service's presence timings, then applies them like [`Self::update_service`].
    pub async fn set_presence_settings(
        &self,
        sid: &str,
        overrides: PresenceOverrides,
    ) -> Result<Service> {
        let service = self.store.set_presence_settings(sid, overrides).await?;
        self.presence.configure(&service).wait().await;
        Ok(service)
    }

    /// Deletes a service and forgets its live sessions; `false` when there was no such service.
    pub async fn delete_service(&self, sid: &str) -> Result<bool> {
        let found = self.store.delete_service(sid).await?;
        self.presence.forget_service(sid);
        Ok(found)
    }
}
