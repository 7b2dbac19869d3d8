//! Rate limit on client writes, per identity of a service: opening and closing sessions
//! (HTTP or WebSocket), registering and unregistering push bindings. Each write emits events
//! and webhook deliveries, so one token's holder could otherwise flood the event table and
//! every webhook receiver. Each write spends one token of the identity's bucket
//! (`client_write_burst` tokens, refilled at `client_writes_per_second`); an empty bucket is
//! answered 429/20429 with `Retry-After`. Pings are memory-only and never charged.
//!
//! May depend on: metrics, actix-web (status codes), api::{errors, token_bucket}.

use std::time::Instant;

use actix_web::http::StatusCode;

use crate::api::errors::ApiError;
use crate::api::token_bucket::Buckets;

/// Most identities tracked at once.
const MAX_TRACKED: usize = 100_000;

/// Write budgets per `(service SID, identity)`.
#[derive(Debug)]
pub struct WriteLimiter {
    buckets: Buckets<(String, String)>,
}

impl WriteLimiter {
    pub fn new(burst: u32, per_second: u32) -> Self {
        WriteLimiter {
            buckets: Buckets::new(burst, f64::from(per_second.max(1)), MAX_TRACKED),
        }
    }

    /// Charges one write of `identity` in `service_sid`, or refuses it with 429/20429.
    pub fn charge(&self, service_sid: &str, identity: &str, now: Instant) -> Result<(), ApiError> {
        let key = (service_sid.to_string(), identity.to_string());
        self.buckets.take(&key, now).map_err(|wait| {
            metrics::counter!("reachd_client_writes_limited_total").increment(1);
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                20429,
                format!(
                    "Too many writes (sessions, push bindings) for this identity; retry in \
                     {seconds} s"
                ),
            );
            error.retry_after = Some(seconds);
            error
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_of_each_service_has_its_own_budget() {
        let limiter = WriteLimiter::new(2, 10);
        let t0 = Instant::now();
        assert!(limiter.charge("IS1", "alice", t0).is_ok());
        assert!(limiter.charge("IS1", "alice", t0).is_ok());
        let refused = limiter.charge("IS1", "alice", t0).unwrap_err();
        assert_eq!((refused.status.as_u16(), refused.code), (429, 20429));
        assert_eq!(refused.retry_after, Some(1));
        assert!(limiter.charge("IS1", "bob", t0).is_ok());
        assert!(limiter.charge("IS2", "alice", t0).is_ok());
        let later = t0 + std::time::Duration::from_millis(100);
        assert!(limiter.charge("IS1", "alice", later).is_ok());
    }
}
