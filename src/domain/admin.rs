//! The storage port of the command line's maintenance commands (`keys`, `token`, `migrate`,
//! `backup`, `init`'s account check) and of a server's start (account bootstrap, config
//! endpoints, the event feed's position): what is done to a deployment's database outside the
//! request path, possibly while servers run on it. Each backend implements it; `main.rs` and
//! the start-up only ever see this trait. Its methods block (never call them on an async
//! worker thread).
//!
//! May depend on: std, domain.

use std::path::Path;

use super::Result;
use super::account::ApiKey;
use super::webhook::ConfigEndpoint;

/// How to open the database for a maintenance command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The database must exist (`keys`, `token`, `backup`): a missing file means the
    /// configuration points elsewhere than the server's, not "start a new one".
    Existing,
    /// Create and migrate it if needed (`migrate`).
    CreateOrMigrate,
}

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
    fn account_sid(&self) -> Result<Option<String>> {
        Ok(self.account_credentials()?.map(|(sid, _)| sid))
    }
    /// The stored account's SID and auth token, if the account exists yet.
    fn account_credentials(&self) -> Result<Option<(String, String)>>;
    /// Creates the account row, or replaces its credentials.
    fn store_account(&self, sid: &str, auth_token: &str) -> Result<()>;
    /// Makes the stored config-file endpoints match `entries` (ids derive from names).
    fn sync_config_endpoints(&self, entries: &[ConfigEndpoint]) -> Result<()>;
    /// The id of the newest committed event (0: none), where the event feed starts.
    fn last_event_id(&self) -> Result<i64>;
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
