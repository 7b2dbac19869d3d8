//! The SQLite side of [`AdminStore`]: one plain connection with reachd's pragmas, opened by the
//! command line beside (or without) a running server. SQLite's own locking makes that safe;
//! the server's exclusive lock (`server_lock`) is never taken here.
//!
//! May depend on: rusqlite, domain, db::{open, keys, backup, account, endpoints, events}.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rusqlite::Connection;

use super::{backup, keys, open};
use crate::domain::Result;
use crate::domain::account::ApiKey;
use crate::domain::admin::{AdminStore, BackupReport, Opening};
use crate::domain::webhook::ConfigEndpoint;

/// A SQLite database opened for maintenance.
pub struct SqliteAdmin {
    conn: Connection,
    path: PathBuf,
    busy_timeout: Duration,
}

impl SqliteAdmin {
    pub fn open(path: &Path, busy_timeout: Duration, opening: Opening) -> anyhow::Result<Self> {
        if opening == Opening::Existing && !path.exists() {
            anyhow::bail!(
                "no database at {} (is this the server's configuration? start the server once \
                 or run `reachd migrate` to create it)",
                path.display()
            );
        }
        for tightened in open::prepare_files(path)? {
            eprintln!("reachd: warning: {tightened}");
        }
        let mut conn = open::open_connection(path, busy_timeout)?;
        open::migrate(&mut conn)?;
        Ok(SqliteAdmin {
            conn,
            path: path.to_path_buf(),
            busy_timeout,
        })
    }

    /// The account SID stored in an existing database, without creating or migrating
    /// anything (`init`'s check); None when there is no readable database there.
    pub fn peek_account_sid(path: &Path, busy_timeout: Duration) -> Option<String> {
        if !path.exists() {
            return None;
        }
        let conn = open::open_connection(path, busy_timeout).ok()?;
        open::account_credentials(&conn).ok()?.map(|(sid, _)| sid)
    }
}

impl AdminStore for SqliteAdmin {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn schema_version(&self) -> Result<u32> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(super::map_sqlite)
    }

    fn account_credentials(&self) -> Result<Option<(String, String)>> {
        super::account::credentials(&self.conn)
    }

    fn store_account(&self, sid: &str, auth_token: &str) -> Result<()> {
        super::account::store_credentials(&self.conn, sid, auth_token)
    }

    fn sync_config_endpoints(&self, entries: &[ConfigEndpoint]) -> Result<()> {
        super::endpoints::sync_config(&self.conn, entries)
    }

    fn last_event_id(&self) -> Result<i64> {
        super::events::last_id(&self.conn)
    }

    fn create_api_key(&self, friendly_name: Option<&str>) -> Result<ApiKey> {
        keys::create(&self.conn, friendly_name)
    }

    fn list_api_keys(&self) -> Result<Vec<(ApiKey, bool)>> {
        keys::list(&self.conn)
    }

    fn revoke_api_key(&self, sid: &str) -> Result<bool> {
        keys::revoke(&self.conn, sid)
    }

    fn live_api_key(&self, sid: &str) -> Result<Option<ApiKey>> {
        keys::get_live(&self.conn, sid)
    }

    fn first_live_api_key(&self) -> Result<Option<ApiKey>> {
        keys::first_live(&self.conn)
    }

    fn backup(&self, dest: &Path) -> anyhow::Result<BackupReport> {
        backup::backup(&self.path, dest, self.busy_timeout)
            .with_context(|| format!("backing up {}", self.path.display()))
    }
}
