//! In-memory caches of what almost every request reads.
//!
//! Services are kept exact by the writer: every committed change to a service invalidates its
//! entry from the writer thread's post-commit hook.
//!
//! API keys change outside this process (`reachd keys revoke` writes the database directly, and other nodes may), so
//! live keys are cached for at most [`API_KEY_TTL`]; `keys revoke` waits that long before it
//! returns, so a revoked key is refused by every running server once the command has finished.
//!
//! Invariant: an entry is never newer-than-committed nor stale after a commit. A reader that
//! loaded a row inserts it only if no invalidation happened since it started (generation
//! check), so a row read before a commit cannot be cached after that commit's invalidation.
//!
//! May depend on: domain, storage::commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use std::time::{Duration, Instant};

use super::commit::{CommitHook, Effects};
use crate::domain::account::ApiKey;
use crate::domain::service::Service;

/// Entries kept before the cache is cleared (a bound on memory, not an LRU).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct ServiceCache {
    entries: RwLock<HashMap<String, Arc<Service>>>,
    generation: AtomicU64,
}

impl ServiceCache {
    pub fn get(&self, sid: &str) -> Option<Arc<Service>> {
        self.entries.read().ok()?.get(sid).cloned()
    }

    /// The generation to pass to [`ServiceCache::insert`], taken before reading the row.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn insert(&self, generation: u64, service: Arc<Service>) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        // Checked under the lock: invalidate() bumps the generation under the same lock.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(service.sid.clone(), service);
    }

    /// Drops every entry (another node's changes may have been missed).
    pub fn invalidate_all(&self) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    pub fn invalidate<'a>(&self, sids: impl IntoIterator<Item = &'a String>) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        for sid in sids {
            entries.remove(sid);
        }
    }
}

/// How long a live API key is trusted without re-reading the database.
pub const API_KEY_TTL: Duration = Duration::from_secs(1);

/// Live API keys, each trusted for [`API_KEY_TTL`]. Unknown keys are not cached, so a new key
/// works at once.
#[derive(Default)]
pub struct ApiKeyCache {
    entries: RwLock<HashMap<String, (ApiKey, Instant)>>,
}

impl ApiKeyCache {
    pub fn get(&self, sid: &str) -> Option<ApiKey> {
        let entries = self.entries.read().ok()?;
        let (key, loaded) = entries.get(sid)?;
        (loaded.elapsed() < API_KEY_TTL).then(|| key.clone())
    }

    pub fn insert(&self, key: ApiKey) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, loaded)| loaded.elapsed() < API_KEY_TTL);
        }
        entries.insert(key.sid.clone(), (key, Instant::now()));
    }
}

/// Post-commit hook that invalidates changed services.
pub struct InvalidateServices(pub Arc<ServiceCache>);

impl CommitHook for InvalidateServices {
    fn committed(&mut self, effects: &Effects) {
        if !effects.services.is_empty() {
            self.0.invalidate(&effects.services);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_straddles_an_invalidation_is_not_cached() {
        let cache = ServiceCache::default();
        let service = Arc::new(Service::new("s", 0).expect("valid"));
        let before = cache.generation();
        cache.invalidate([&service.sid]);
        cache.insert(before, service.clone());
        assert!(cache.get(&service.sid).is_none());
        cache.insert(cache.generation(), service.clone());
        assert!(cache.get(&service.sid).is_some());
        cache.invalidate([&service.sid]);
        assert!(cache.get(&service.sid).is_none());
    }
}
