//! Tokens already verified, so that a client pinging every few seconds with the same token
//! pays for its signature once. A hit re-checks everything that can change after a token was
//! verified — its expiry against `now`, and that the key that signed it still exists (the same
//! key lookup, through the same cache, as a full verification) — so a hit accepts exactly
//! what [`verify`] would.
//!
//! Invariants:
//! - Only tokens that passed [`verify`] are stored, under the full token text: a token that
//!   differs in any byte (a forged payload with a copied signature) is never a hit.
//! - Lookups do not compare a presented token with a stored one byte by byte: the map is keyed
//!   by a keyed hash of the token (random per cache), and the stored text is compared in
//!   constant time, so response times tell nothing about a cached token's bytes.
//! - At most [`MAX_ENTRIES`] tokens are kept; when full, expired ones go first, then an
//!   arbitrary eighth.
//! - The lock is held for a lookup or an insert only, never while a token is verified.
//!
//! May depend on: std, subtle, tokens.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use subtle::ConstantTimeEq;

use super::{ClientGrant, KeySecrets, LEEWAY_SECS, TokenError, verify};

/// Tokens kept (each ~1 KB with its grant).
pub const MAX_ENTRIES: usize = 50_000;

struct Entry {
    token: Box<str>,
    grant: Arc<ClientGrant>,
}

/// A cache of verified tokens in front of [`verify`].
pub struct VerifiedTokens {
    hasher: RandomState,
    entries: Mutex<HashMap<u64, Entry>>,
    capacity: usize,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }
}

impl VerifiedTokens {
    pub fn with_capacity(capacity: usize) -> Self {
        VerifiedTokens {
            hasher: RandomState::new(),
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (every change is
        // one insert or removal), so a poisoned lock is used as is.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`verify`], answered from the cache when `token` was verified before; a token verified
    /// now is kept for the next time.
    pub fn verify(
        &self,
        token: &str,
        account_sid: &str,
        keys: &dyn KeySecrets,
        now: i64,
    ) -> Result<Arc<ClientGrant>, TokenError> {
        self.verify_and(token, account_sid, keys, now, true)
    }

    /// [`verify`], answered from the cache when `token` was verified before, but a token
    /// verified now is not kept: for a token presented once for a long time (a WebSocket's),
    /// whose text would otherwise take about 1 KB of the cache for as long as it lives.
    pub fn verify_once(
        &self,
        token: &str,
        account_sid: &str,
        keys: &dyn KeySecrets,
        now: i64,
    ) -> Result<Arc<ClientGrant>, TokenError> {
        self.verify_and(token, account_sid, keys, now, false)
    }

    fn verify_and(
        &self,
        token: &str,
        account_sid: &str,
        keys: &dyn KeySecrets,
        now: i64,
        remember: bool,
    ) -> Result<Arc<ClientGrant>, TokenError> {
        let hash = self.hasher.hash_one(token);
        let cached = self
            .lock()
            .get(&hash)
            .and_then(|entry| same_token(&entry.token, token).then(|| entry.grant.clone()));
        if let Some(grant) = cached {
            if grant.account_sid == account_sid
                && grant.expires_at.saturating_add(LEEWAY_SECS as i64) >= now
            {
                return match keys.lookup(&grant.key_sid) {
                    Ok(Some(_)) => Ok(grant),
                    Ok(None) => {
                        self.lock().remove(&hash);
                        Err(TokenError::InvalidIssuer)
                    }
                    Err(_) => Err(TokenError::KeysUnavailable),
                };
            }
            self.lock().remove(&hash);
        }
        let grant = Arc::new(verify(token, account_sid, keys, now)?);
        if remember {
            self.insert(hash, token, grant.clone(), now);
        }
        Ok(grant)
    }

    fn insert(&self, hash: u64, token: &str, grant: Arc<ClientGrant>, now: i64) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&hash) {
            let leeway = LEEWAY_SECS as i64;
            entries.retain(|_, e| e.grant.expires_at.saturating_add(leeway) >= now);
            if entries.len() >= self.capacity {
                let evicted: Vec<u64> = entries
                    .keys()
                    .take((self.capacity / 8).max(1))
                    .copied()
                    .collect();
                for key in evicted {
                    entries.remove(&key);
                }
            }
        }
        entries.insert(
            hash,
            Entry {
                token: token.into(),
                grant,
            },
        );
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether two tokens are equal, in time that depends on their length only: compared eight
/// bytes at a time with `subtle` (a byte-by-byte `ct_eq` costs as much as the rest of a hit).
fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = a_words.remainder().ct_eq(b_words.remainder());
    let word = |w: &[u8]| u64::from_le_bytes(w.try_into().unwrap_or_default());
    a_words
        .zip(b_words)
        .fold(tail, |same, (x, y)| same & word(x).ct_eq(&word(y)))
        .into()
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use super::*;
    use crate::tokens::{KeysUnreadable, mint};

    const ACCOUNT: &str = "AC00000000000000000000000000000001";
    const KEY: &str = "SK00000000000000000000000000000001";
    const SERVICE: &str = "IS00000000000000000000000000000001";
    const NOW: i64 = 1_800_000_000;

    /// Keys in memory, counting lookups; `unreadable` makes every lookup fail.
    #[derive(Default)]
    struct Keys {
        secrets: RefCell<HashMap<String, String>>,
        lookups: Cell<usize>,
        unreadable: Cell<bool>,
    }

    impl Keys {
        fn with_key() -> Keys {
            let keys = Keys::default();
            keys.secrets
                .borrow_mut()
                .insert(KEY.into(), "a secret of thirty-two bytes ok!".into());
            keys
        }
    }

    impl KeySecrets for Keys {
        fn secret(&self, key_sid: &str) -> Option<String> {
            self.lookup(key_sid).ok().flatten()
        }
        fn lookup(&self, key_sid: &str) -> Result<Option<String>, KeysUnreadable> {
            self.lookups.set(self.lookups.get() + 1);
            if self.unreadable.get() {
                return Err(KeysUnreadable);
            }
            Ok(self.secrets.borrow().get(key_sid).cloned())
        }
    }

    fn token(keys: &Keys, identity: &str, ttl: i64) -> String {
        let secret = keys.secret(KEY).expect("key");
        mint(ACCOUNT, KEY, &secret, SERVICE, identity, ttl, None, NOW).expect("mint")
    }

    #[test]
    fn a_cached_token_is_answered_without_a_second_verification_but_with_the_key_check() {
        let keys = Keys::with_key();
        let cache = VerifiedTokens::default();
        let alice = token(&keys, "alice", 3_600);
        keys.lookups.set(0);
        let first = cache.verify(&alice, ACCOUNT, &keys, NOW).expect("verified");
        assert_eq!(first.identity, "alice");
        assert_eq!(cache.len(), 1);
        let again = cache.verify(&alice, ACCOUNT, &keys, NOW + 10).expect("hit");
        assert!(Arc::ptr_eq(&first, &again), "the same grant, not a new one");
        assert_eq!(keys.lookups.get(), 2, "every use checks the key");
    }

    #[test]
    fn a_token_verified_once_is_not_kept_but_a_kept_one_still_answers() {
        let keys = Keys::with_key();
        let cache = VerifiedTokens::default();
        let (alice, bob) = (token(&keys, "alice", 3_600), token(&keys, "bob", 3_600));
        let grant = cache
            .verify_once(&alice, ACCOUNT, &keys, NOW)
            .expect("verified");
        assert_eq!(grant.identity, "alice");
        assert!(
            cache.is_empty(),
            "a socket's token takes no place in the cache"
        );
        let kept = cache.verify(&bob, ACCOUNT, &keys, NOW).expect("verified");
        let again = cache.verify_once(&bob, ACCOUNT, &keys, NOW).expect("hit");
        assert!(Arc::ptr_eq(&kept, &again), "answered from the cache");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_revoked_key_refuses_its_cached_tokens_and_unreadable_keys_answer_unavailable() {
        let keys = Keys::with_key();
        let cache = VerifiedTokens::default();
        let alice = token(&keys, "alice", 3_600);
        cache.verify(&alice, ACCOUNT, &keys, NOW).expect("verified");
        keys.unreadable.set(true);
        assert_eq!(
            cache.verify(&alice, ACCOUNT, &keys, NOW).err(),
            Some(TokenError::KeysUnavailable)
        );
        keys.unreadable.set(false);
        keys.secrets.borrow_mut().clear();
        assert_eq!(
            cache.verify(&alice, ACCOUNT, &keys, NOW).err(),
            Some(TokenError::InvalidIssuer)
        );
        assert!(cache.is_empty(), "the refused token left the cache");
    }

    #[test]
    fn a_cached_token_expires_like_any_other() {
        let keys = Keys::with_key();
        let cache = VerifiedTokens::default();
        let alice = token(&keys, "alice", 60);
        cache.verify(&alice, ACCOUNT, &keys, NOW).expect("verified");
        let late = NOW + 60 + LEEWAY_SECS as i64 + 1;
        assert_eq!(
            cache.verify(&alice, ACCOUNT, &keys, late).err(),
            Some(TokenError::Expired)
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn a_forged_payload_with_a_cached_tokens_signature_is_refused() {
        let keys = Keys::with_key();
        let cache = VerifiedTokens::default();
        let alice = token(&keys, "alice", 3_600);
        let mallory = token(&keys, "mallory", 3_600);
        cache.verify(&alice, ACCOUNT, &keys, NOW).expect("verified");
        // Mallory's header and payload with Alice's signature.
        let alice_signature = alice.rsplit('.').next().expect("signature");
        let (unsigned, _) = mallory.rsplit_once('.').expect("parts");
        let forged = format!("{unsigned}.{alice_signature}");
        assert_eq!(
            cache.verify(&forged, ACCOUNT, &keys, NOW).err(),
            Some(TokenError::InvalidSignature)
        );
        assert_eq!(cache.len(), 1, "only verified tokens are kept");
    }

    #[test]
    fn tokens_are_equal_only_when_every_byte_is() {
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJBQyJ9.c2lnbmF0dXJl";
        assert!(same_token(token, token));
        for i in 0..token.len() {
            let mut other = token.as_bytes().to_vec();
            other[i] ^= 1;
            let other = String::from_utf8(other).expect("ascii");
            assert!(!same_token(token, &other), "byte {i} differs");
        }
        assert!(!same_token(token, &token[..token.len() - 1]));
        assert!(same_token("", ""));
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let keys = Keys::with_key();
        let cache = VerifiedTokens::with_capacity(16);
        for i in 0..100 {
            let t = token(&keys, &format!("user{i}"), 3_600);
            assert_eq!(
                cache.verify(&t, ACCOUNT, &keys, NOW).expect("ok").identity,
                format!("user{i}")
            );
            assert!(cache.len() <= 16, "{} entries", cache.len());
        }
    }
}
