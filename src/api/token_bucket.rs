//! Token buckets keyed by whoever is being limited (an address, an identity): `burst` tokens,
//! refilled at `per_second`. The rate limiters ([`super::rate_limit`], the client write limit)
//! decide what a token pays for; this module only keeps the counts.
//!
//! Concurrency: one mutex around the map, held only for a lookup or an update (no I/O, no
//! await). The map is bounded: when it reaches `max_tracked` keys, buckets that have refilled
//! completely (equivalent to absent) are dropped; if every tracked key is still short, new
//! keys are not tracked until some refill (fail open rather than let an attacker grow memory
//! without bound).
//!
//! May depend on: std only.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
pub struct Buckets<K> {
    burst: f64,
    per_second: f64,
    max_tracked: usize,
    map: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// `burst` and `per_second` are raised to a minimum of 1 token and 1 token a minute.
    pub fn new(burst: u32, per_second: f64, max_tracked: usize) -> Self {
        Buckets {
            burst: f64::from(burst.max(1)),
            per_second: per_second.max(1.0 / 60.0),
            max_tracked,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<K, Bucket>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tokens `bucket` holds at `now`.
    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }

    fn wait_for_one(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64((1.0 - tokens).max(0.0) / self.per_second)
    }

    /// How long `key` must wait for a token, if it has none now.
    pub fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let bucket = *self.map().get(key)?;
        let tokens = self.refilled(bucket, now);
        (tokens < 1.0).then(|| self.wait_for_one(tokens))
    }

    /// Spends one of `key`'s tokens, going no lower than empty.
    pub fn spend(&self, key: &K, now: Instant) {
        let _ = self.update(key, now, true);
    }

    /// Takes one of `key`'s tokens, or tells how long until one is there.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.update(key, now, false)
    }

    /// Spends a token of `key` when it has one (or `always`, flooring at zero).
    fn update(&self, key: &K, now: Instant, always: bool) -> Result<(), Duration> {
        let mut map = self.map();
        if !map.contains_key(key) && map.len() >= self.max_tracked {
            map.retain(|_, b| self.refilled(*b, now) < self.burst);
            if map.len() >= self.max_tracked {
                return Ok(());
            }
        }
        let bucket = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let tokens = self.refilled(*bucket, now);
        bucket.updated = now;
        if tokens >= 1.0 || always {
            bucket.tokens = (tokens - 1.0).max(0.0);
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(self.wait_for_one(tokens))
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_taken_then_callers_wait_for_the_refill() {
        let buckets = Buckets::new(3, 2.0, 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(buckets.take(&"a", t0), Ok(()));
        }
        let wait = buckets.take(&"a", t0).expect_err("empty");
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        assert_eq!(buckets.take(&"b", t0), Ok(()), "other keys unaffected");
        let later = t0 + Duration::from_millis(501);
        assert_eq!(buckets.take(&"a", later), Ok(()), "one token after 0.5 s");
        assert!(buckets.take(&"a", later).is_err());
    }

    #[test]
    fn spending_floors_at_empty_and_refills_to_the_burst_only() {
        let buckets = Buckets::new(2, 1.0, 10);
        let t0 = Instant::now();
        for _ in 0..5 {
            buckets.spend(&1, t0);
        }
        let wait = buckets.wait(&1, t0).expect("empty");
        assert!((wait.as_secs_f64() - 1.0).abs() < 0.01, "{wait:?}");
        let much_later = t0 + Duration::from_secs(60);
        assert_eq!(buckets.wait(&1, much_later), None);
        buckets.spend(&1, much_later);
        buckets.spend(&1, much_later);
        assert!(
            buckets.wait(&1, much_later).is_some(),
            "refilled to 2, not 60"
        );
    }

    #[test]
    fn the_map_is_bounded_and_forgets_full_buckets_first() {
        let buckets = Buckets::new(1, 1.0, 2);
        let t0 = Instant::now();
        buckets.spend(&"a", t0);
        buckets.spend(&"b", t0);
        assert_eq!(buckets.take(&"c", t0), Ok(()), "untracked: fail open");
        assert_eq!(buckets.tracked(), 2);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(buckets.take(&"c", later), Ok(()));
        assert!(
            buckets.take(&"c", later).is_err(),
            "tracked once others refilled"
        );
        assert_eq!(buckets.tracked(), 1);
    }
}
