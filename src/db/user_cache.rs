//! Users as last committed, kept in memory so that reading one (the REST user fetch, a client's
//! user descriptor) costs no SQLite read transaction.
//!
//! Exactness comes from SQLite itself, not from the writes remembering to say what they touch:
//! the writer's connection has an update hook ([`UserCache::row_changed`]) that SQLite calls for
//! every row of `users` inserted, updated or deleted — by any statement, a foreign-key cascade
//! included. After each commit, the [`InvalidateUsers`] hook drops those rows.
//!
//! Invariants:
//! - An entry is never staler than the last commit whose hooks have run. The hooks run before
//!   the writer answers its callers, so a write acknowledged to a caller is seen by that
//!   caller's next read (read-your-writes).
//! - A reader that loaded a row inserts it only if no invalidation happened since before it
//!   read (generation check under the write lock), so a row read before a commit cannot be
//!   cached after that commit's invalidation.
//! - Rows changed by a batch that did not commit stay pending and are dropped after the next
//!   commit: dropping an entry is always safe.
//! - Only users that exist are cached; a miss always reads the database.
//!
//! Only the SQLite backend uses this: there one process owns the database (the server lock),
//! so every change to `users` passes through its writer.
//!
//! May depend on: std, domain::{ids, user}, storage::commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::domain::ids;
use crate::domain::user::{User, UserKey};
use crate::storage::commit::{CommitHook, Effects};

/// Users kept before the cache is emptied (a bound on memory, not an LRU).
const MAX_USERS: usize = 50_000;
/// Bytes of user text (attributes may be 16 KiB each) kept before the cache is emptied.
const MAX_BYTES: usize = 64 * 1024 * 1024;

#[derive(Default)]
pub struct UserCache {
    entries: RwLock<Entries>,
    /// Bumped (under the write lock) by every invalidation.
    generation: AtomicU64,
    /// Row ids the update hook reported since the last invalidation (writer thread only).
    changed: Mutex<Vec<i64>>,
}

#[derive(Default)]
struct Entries {
    users: HashMap<i64, User>,
    /// User SID (unique across services) → row id.
    by_sid: HashMap<String, i64>,
    /// Service SID → identity → row id.
    by_identity: HashMap<String, HashMap<String, i64>>,
    /// Text bytes of the users kept (see [`text_bytes`]).
    bytes: usize,
}

/// What a user's strings hold, roughly what keeping it costs beyond a fixed size.
fn text_bytes(user: &User) -> usize {
    user.sid.len()
        + user.service_sid.len()
        + 2 * user.identity.len()
        + user.attributes.len()
        + user.friendly_name.as_ref().map_or(0, String::len)
        + user.role_sid.as_ref().map_or(0, String::len)
}

impl Entries {
    fn find(&self, service_sid: &str, key: &UserKey) -> Option<&User> {
        let row = match key {
            UserKey::Identity(identity) => *self.by_identity.get(service_sid)?.get(identity)?,
            // A SID-shaped key names the user with that SID in this service, else the user
            // with that identity. Only the first is answered here: a miss reads the database.
            UserKey::SidOrIdentity(value) => *self.by_sid.get(&ids::normalize(value))?,
        };
        self.users
            .get(&row)
            .filter(|user| user.service_sid == service_sid)
    }

    fn remove(&mut self, row: i64) {
        let Some(user) = self.users.remove(&row) else {
            return;
        };
        self.bytes = self.bytes.saturating_sub(text_bytes(&user));
        self.by_sid.remove(&user.sid);
        if let Some(identities) = self.by_identity.get_mut(&user.service_sid) {
            identities.remove(&user.identity);
            if identities.is_empty() {
                self.by_identity.remove(&user.service_sid);
            }
        }
    }
}

impl UserCache {
    /// The user `key` names in the service, if cached.
    pub fn get(&self, service_sid: &str, key: &UserKey) -> Option<User> {
        self.entries.read().ok()?.find(service_sid, key).cloned()
    }

    /// The generation to pass to [`UserCache::insert`], taken before reading the row.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `user` (row `row`), read after `generation` was taken.
    pub fn insert(&self, generation: u64, row: i64, user: &User) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        // Checked under the lock: an invalidation bumps the generation under the same lock.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        entries.remove(row);
        if entries.users.len() >= MAX_USERS || entries.bytes + text_bytes(user) > MAX_BYTES {
            *entries = Entries::default();
        }
        entries.bytes += text_bytes(user);
        entries.by_sid.insert(user.sid.clone(), row);
        entries
            .by_identity
            .entry(user.service_sid.clone())
            .or_default()
            .insert(user.identity.clone(), row);
        entries.users.insert(row, user.clone());
    }

    /// Called by SQLite (the writer connection's update hook) for each changed `users` row.
    pub fn row_changed(&self, row: i64) {
        // A poisoned lock still holds a usable list: losing a row here would leave it stale.
        self.changed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(row);
    }

    /// Drops the rows changed since the last call.
    fn invalidate_changed(&self) {
        let rows = std::mem::take(
            &mut *self
                .changed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if rows.is_empty() {
            return;
        }
        // Recovered from poisoning rather than skipped: an invalidation must never be lost.
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        for row in rows {
            entries.remove(row);
        }
    }
}

/// Post-commit hook that drops the users the batch changed.
pub struct InvalidateUsers(pub Arc<UserCache>);

impl CommitHook for InvalidateUsers {
    fn committed(&mut self, _effects: &Effects) {
        self.0.invalidate_changed();
    }
}

/// Installs the update hook that reports changed `users` rows to `cache` on `conn` (the
/// writer's connection).
pub fn watch_users(conn: &rusqlite::Connection, cache: Arc<UserCache>) -> rusqlite::Result<()> {
    conn.update_hook(Some(move |_action, _db: &str, table: &str, row: i64| {
        if table == "users" {
            cache.row_changed(row);
        }
    }))
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::domain::user::Reachability;

    fn user(sid: &str, service: &str, identity: &str) -> User {
        User {
            sid: sid.into(),
            service_sid: service.into(),
            identity: identity.into(),
            friendly_name: None,
            attributes: "{}".into(),
            role_sid: None,
            joined_channels_count: 0,
            reachability: Reachability::default(),
            date_created: 0,
            date_updated: 0,
        }
    }

    const SID: &str = "US0123456789abcdef0123456789abcdef";

    #[test]
    fn finds_by_identity_and_by_sid_within_the_service_only() {
        let cache = UserCache::default();
        cache.insert(cache.generation(), 7, &user(SID, "IS1", "alice"));
        let by_identity = UserKey::Identity("alice".into());
        assert_eq!(
            cache.get("IS1", &by_identity).map(|u| u.sid),
            Some(SID.into())
        );
        assert!(cache.get("IS2", &by_identity).is_none());
        // The SID in upper-case hex is the same SID.
        let by_sid = UserKey::parse("US0123456789ABCDEF0123456789ABCDEF");
        assert_eq!(
            cache.get("IS1", &by_sid).map(|u| u.identity),
            Some("alice".into())
        );
        assert!(cache.get("IS2", &by_sid).is_none());
    }

    #[test]
    fn a_changed_row_is_dropped_after_the_commit_not_before() {
        let cache = Arc::new(UserCache::default());
        cache.insert(cache.generation(), 7, &user(SID, "IS1", "alice"));
        let key = UserKey::Identity("alice".into());
        cache.row_changed(7);
        assert!(
            cache.get("IS1", &key).is_some(),
            "uncommitted: still the committed row"
        );
        InvalidateUsers(cache.clone()).committed(&Effects::default());
        assert!(cache.get("IS1", &key).is_none());
        assert!(cache.get("IS1", &UserKey::parse(SID)).is_none());
    }

    #[test]
    fn large_attributes_are_bounded_by_bytes_not_only_by_count() {
        let cache = UserCache::default();
        let mut big = user(SID, "IS1", "alice");
        big.attributes = "x".repeat(16 * 1024);
        for row in 0..(MAX_BYTES / (16 * 1024) + 10) as i64 {
            big.sid = format!("US{row:032x}");
            big.identity = format!("u{row}");
            cache.insert(cache.generation(), row, &big);
        }
        let entries = cache.entries.read().expect("lock");
        assert!(entries.bytes <= MAX_BYTES, "{} bytes kept", entries.bytes);
        assert!(entries.users.len() < MAX_BYTES / (16 * 1024));
    }

    #[test]
    fn a_read_that_straddles_an_invalidation_is_not_cached() {
        let cache = Arc::new(UserCache::default());
        let before = cache.generation();
        cache.row_changed(7);
        InvalidateUsers(cache.clone()).committed(&Effects::default());
        cache.insert(before, 7, &user(SID, "IS1", "alice"));
        assert!(
            cache
                .get("IS1", &UserKey::Identity("alice".into()))
                .is_none()
        );
    }

    #[test]
    fn the_update_hook_reports_every_users_row_a_statement_touches_cascades_included() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE services (sid TEXT PRIMARY KEY);
             CREATE TABLE users (id INTEGER PRIMARY KEY, service_sid TEXT NOT NULL
                 REFERENCES services (sid) ON DELETE CASCADE, n INTEGER);
             CREATE TABLE other (id INTEGER PRIMARY KEY);
             INSERT INTO services VALUES ('IS1');
             INSERT INTO users VALUES (1, 'IS1', 0), (2, 'IS1', 0);",
        )
        .expect("schema");
        let cache = Arc::new(UserCache::default());
        watch_users(&conn, cache.clone()).expect("hook");
        conn.execute_batch(
            "INSERT INTO other VALUES (9);
             UPDATE users SET n = 1 WHERE id = 1;
             DELETE FROM services WHERE sid = 'IS1';",
        )
        .expect("writes");
        let changed = cache.changed.lock().expect("lock").clone();
        assert_eq!(changed, vec![1, 1, 2]);
    }
}
