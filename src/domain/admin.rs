//! The storage port of the command line's maintenance commands (`keys`, `token`, `migrate`,
//! `backup`, `init`'s account check): what an operator does to a deployment's database from
//! outside the server, possibly while a server runs on it. Each backend implements it;
//! `main.rs` only ever sees this trait.
//!
//! May depend on: std, domain.

use std::path::Path;

use super::Result;
use super::account::ApiKey;

/// What a finished backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub bytes: u64,
    pub schema_version: u32,
    pub users: i64,
    pub events: i64,
}

/// Maintenance access to a deployment's database.
pub trait AdminStore {
    /// Where the database is, for messages (never holds a password).
    fn describe(&self) -> String;
    /// The schema version the database is at (after any migration this opening applied).
    fn schema_version(&self) -> Result<u32>;
    /// The stored account's SID, if the account exists yet.
    fn account_sid(&self) -> Result<Option<String>>;
    /// Creates an API key with a fresh secret (returned once, here).
    fn create_api_key(&self, friendly_name: Option<&str>) -> Result<ApiKey>;
    /// Every key with whether it is revoked, oldest first.
    fn list_api_keys(&self) -> Result<Vec<(ApiKey, bool)>>;
    /// Revokes a live key; false when there is no such live key.
    fn revoke_api_key(&self, sid: &str) -> Result<bool>;
    /// A live key by SID.
    fn live_api_key(&self, sid: &str) -> Result<Option<ApiKey>>;
    /// The oldest live key.
    fn first_live_api_key(&self) -> Result<Option<ApiKey>>;
    /// A consistent copy of the database into `dest` (which must not exist), or why this
    /// backend does not make one.
    fn backup(&self, dest: &Path) -> anyhow::Result<BackupReport>;
}
