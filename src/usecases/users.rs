//! User use cases: a deleted user's live sessions end with them (a reconnect creates the user
//! again, online).
//!
//! May depend on: domain, presence.

use super::Reachability;
use crate::domain::Result;
use crate::domain::store::Origin;
use crate::domain::user::{User, UserKey};

impl Reachability {
    /// Deletes a user and ends their sessions; returns the user as they were, or `None`.
    pub async fn delete_user(
        &self,
        service_sid: &str,
        key: UserKey,
        origin: Origin,
    ) -> Result<Option<User>> {
        let removed = self.store.delete_user(service_sid, key, origin).await?;
        if let Some(user) = &removed {
            self.presence.forget_user(service_sid, &user.identity);
        }
        Ok(removed)
    }
}
