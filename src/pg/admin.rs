//! The PostgreSQL side of [`AdminStore`]: one connection for the command line's maintenance
//! commands and a server's start, beside (or without) running servers. PostgreSQL's own
//! transactions make that safe. The synchronous client may not run on an async worker thread,
//! so when called from one, each operation runs on a scoped thread of its own (maintenance is
//! rare; the hop costs nothing that matters).
//!
//! May depend on: postgres, tokio (runtime detection), tracing, domain, pg::{open, account,
//! credentials, keys, endpoints, events}.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use super::{PgResultExt, account, credentials, endpoints, events, keys, off_runtime, open};
use crate::domain::account::ApiKey;
use crate::domain::admin::{AdminStore, BackupReport, Opening};
use crate::domain::webhook::ConfigEndpoint;
use crate::domain::{Error, Result};

/// A PostgreSQL database opened for maintenance.
pub struct PgAdmin {
    /// Always `Some` until dropped (taken then, to close it off any async thread).
    client: Mutex<Option<postgres::Client>>,
    described: String,
}

impl PgAdmin {
    /// Connects to `url`; with [`Opening::CreateOrMigrate`] applies missing migrations, with
    /// [`Opening::Existing`] requires reachd's schema to be there already.
    pub fn open(url: &str, connect_timeout: Duration, opening: Opening) -> anyhow::Result<Self> {
        off_runtime(|| Self::connect(url, connect_timeout, opening))
    }

    fn connect(url: &str, connect_timeout: Duration, opening: Opening) -> anyhow::Result<Self> {
        let described = super::redact_url(url);
        let (mut config, tls) = super::tls::settings(url)?;
        config.connect_timeout(connect_timeout);
        config.application_name("reachd");
        let mut client = config
            .connect(tls)
            // The causes (a refused certificate, say) travel with it: `{:#}` shows them.
            .map_err(|e| anyhow::Error::new(e).context(format!("connecting to {described}")))?;
        match opening {
            Opening::CreateOrMigrate => {
                open::migrate(&mut client)?;
                let scrubbed = credentials::fingerprint_stored(&mut client)?;
                if scrubbed > 0 {
                    tracing::warn!(
                        credentials = scrubbed,
                        "push-credential secrets were stored in plain form; replaced by \
                         fingerprints (dumps taken before still hold them)"
                    );
                }
            }
            Opening::Existing => {
                let version = open::schema_version(&mut client)?;
                if version == 0 {
                    anyhow::bail!(
                        "no reachd schema in {described} (is this the server's configuration? \
                         start the server once or run `reachd migrate` to create it)"
                    );
                }
                if version > open::latest_version() {
                    anyhow::bail!(
                        "{described} is at schema version {version}, newer than this reachd \
                         (version {}); run a newer reachd",
                        open::latest_version()
                    );
                }
            }
        }
        Ok(PgAdmin {
            client: Mutex::new(Some(client)),
            described,
        })
    }

    fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T> + Send,
    ) -> Result<T> {
        let mut client = self
            .client
            .lock()
            .map_err(|_| Error::Internal(anyhow::anyhow!("admin connection poisoned")))?;
        let client: &mut postgres::Client = client
            .as_mut()
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("admin connection closed")))?;
        off_runtime(|| f(client))
    }
}

impl Drop for PgAdmin {
    /// Closing a connection runs the client's own runtime: never on an async worker thread.
    fn drop(&mut self) {
        let client = self.client.get_mut().ok().and_then(Option::take);
        off_runtime(move || drop(client));
    }
}

impl AdminStore for PgAdmin {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn schema_version(&self) -> Result<u32> {
        self.with(|c| open::schema_version(c).map_err(Error::Internal))
    }

    fn account_credentials(&self) -> Result<Option<(String, String)>> {
        self.with(account::credentials)
    }

    fn store_account(&self, sid: &str, auth_token: &str) -> Result<()> {
        self.with(|c| account::store_credentials(c, sid, auth_token))
    }

    fn sync_config_endpoints(&self, entries: &[ConfigEndpoint]) -> Result<()> {
        self.with(|c| {
            let mut tx = c.transaction().db()?;
            endpoints::sync_config(&mut tx, entries)?;
            tx.commit().db()
        })
    }

    fn last_event_id(&self) -> Result<i64> {
        self.with(events::last_id)
    }

    fn create_api_key(&self, friendly_name: Option<&str>) -> Result<ApiKey> {
        self.with(|c| keys::create(c, friendly_name))
    }

    fn list_api_keys(&self) -> Result<Vec<(ApiKey, bool)>> {
        self.with(keys::list)
    }

    fn revoke_api_key(&self, sid: &str) -> Result<bool> {
        self.with(|c| keys::revoke(c, sid))
    }

    fn live_api_key(&self, sid: &str) -> Result<Option<ApiKey>> {
        self.with(|c| keys::get_live(c, sid))
    }

    fn first_live_api_key(&self) -> Result<Option<ApiKey>> {
        self.with(keys::first_live)
    }

    fn backup(&self, _dest: &Path) -> anyhow::Result<BackupReport> {
        anyhow::bail!(
            "`reachd backup` copies SQLite files; for PostgreSQL ({}) use pg_dump, e.g. \
             `pg_dump --format=custom --file=reachd.dump '<database URL>'`, and pg_restore to \
             restore it",
            self.described
        )
    }
}
