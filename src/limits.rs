//! Per-route rate limits: `rate_limit: N/s|N/m|N/h` on a route allows each key N requests
//! per period on this gateway, with a burst of N (a token bucket, GCRA via `governor`).
//!
//! Invariants: limits are counted per route (for its current limit) and per key hash (per client
//! address on public routes, which have no key); a policy reload that changes a
//! route's limit starts a fresh bucket set; state for keys idle longer than their
//! period is reclaimed by [`Limits::sweep`], so memory follows active keys, not all
//! keys ever seen. Checking takes no global lock (dashmap shards, atomic state).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::keys::KeyHash;
use crate::policy::RateLimit;

/// Whose bucket a request takes its token from. (Not the admin API's
/// `admin::auth::Caller`, who is authenticated; this is only what a limit counts by.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    Key(KeyHash),
    /// Public routes: the client's address.
    Address(IpAddr),
}

/// A route's buckets, for the limit they were made for.
struct RouteLimiter {
    limit: RateLimit,
    buckets: DefaultKeyedRateLimiter<Bucket>,
}

/// Every route's limiter by route name, created on first use.
#[derive(Default)]
pub struct Limits {
    by_route: DashMap<Arc<str>, Arc<RouteLimiter>>,
}

impl Limits {
    /// `Ok` if `bucket` may take one more request to `route`; else how long to wait.
    pub fn check(&self, route: &str, limit: RateLimit, bucket: Bucket) -> Result<(), Duration> {
        self.limiter(route, limit)
            .buckets
            .check_key(&bucket)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// The route's limiter: one keyed look-up by borrowed name (no allocation) in the
    /// common case; a first use, or a reload that changed the limit, starts afresh.
    fn limiter(&self, route: &str, limit: RateLimit) -> Arc<RouteLimiter> {
        if let Some(l) = self.by_route.get(route)
            && l.limit == limit
        {
            return Arc::clone(&l);
        }
        let fresh = || {
            Arc::new(RouteLimiter {
                limit,
                buckets: RateLimiter::keyed(quota(limit)),
            })
        };
        let mut entry = self.by_route.entry(Arc::from(route)).or_insert_with(fresh);
        if entry.limit != limit {
            *entry = fresh();
        }
        Arc::clone(&entry)
    }

    /// Forgets buckets that are full again, and limiters nobody uses.
    pub fn sweep(&self) {
        self.by_route.retain(|_, l| {
            l.buckets.retain_recent();
            l.buckets.shrink_to_fit();
            !l.buckets.is_empty()
        });
    }

    /// Buckets with live state, across routes (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.by_route.iter().map(|l| l.value().buckets.len()).sum()
    }
}

/// N per period with a burst of N: one token back every period / N.
fn quota(limit: RateLimit) -> Quota {
    let n = NonZeroU32::new(limit.count).unwrap_or(NonZeroU32::MIN);
    let every = limit.per / limit.count.max(1);
    Quota::with_period(every.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(n))
        .allow_burst(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_burst_of_n_then_refusal_with_a_wait_then_recovery() {
        let limits = Limits::default();
        let limit = RateLimit {
            count: 3,
            per: Duration::from_secs(60),
        };
        let a = Bucket::Key(KeyHash([1; 32]));
        let b = Bucket::Key(KeyHash([2; 32]));
        for _ in 0..3 {
            assert!(limits.check("r", limit, a).is_ok());
        }
        let wait = limits.check("r", limit, a).unwrap_err();
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(limits.check("r", limit, b).is_ok(), "limits are per key");
        assert!(limits.check("other", limit, a).is_ok(), "and per route");
        assert_eq!(limits.tracked(), 3);
    }

    #[test]
    fn a_changed_limit_starts_a_fresh_bucket_set() {
        let limits = Limits::default();
        let a = Bucket::Key(KeyHash([7; 32]));
        let one = RateLimit {
            count: 1,
            per: Duration::from_secs(3600),
        };
        assert!(limits.check("r", one, a).is_ok());
        assert!(limits.check("r", one, a).is_err());
        let two = RateLimit {
            count: 2,
            per: Duration::from_secs(3600),
        };
        assert!(
            limits.check("r", two, a).is_ok(),
            "the reloaded limit is counted afresh"
        );
        assert_eq!(limits.tracked(), 1, "the old buckets are gone");
    }

    #[test]
    fn idle_buckets_are_reclaimed() {
        let limits = Limits::default();
        let limit = RateLimit {
            count: 1000,
            per: Duration::from_millis(1),
        };
        for i in 0..100u8 {
            let _ = limits.check("r", limit, Bucket::Key(KeyHash([i; 32])));
        }
        assert_eq!(limits.tracked(), 100);
        std::thread::sleep(Duration::from_millis(5));
        limits.sweep();
        assert_eq!(limits.tracked(), 0);
    }
}
