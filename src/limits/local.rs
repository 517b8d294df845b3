//! Buckets each gateway counts on its own (`scope: gateway`, the embedded store, and the
//! fallback while Redis cannot be reached): a token bucket per route and bucket, GCRA
//! via `governor`.
//!
//! Invariants: a policy reload that changes a route's rate starts a fresh bucket set;
//! state for buckets idle longer than their period is reclaimed by [`Local::sweep`], so
//! memory follows active buckets, not all ever seen. Checking takes no global lock
//! (dashmap shards, atomic state).

use std::num::NonZeroU32;
use std::sync::Arc;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::{Bucket, Exceeded, Seeded, Standing};
use crate::policy::RateLimit;

type Buckets = RateLimiter<
    Bucket,
    DefaultKeyedStateStore<Bucket, Seeded>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// A route's buckets, for the rate they were made for.
struct RouteBuckets {
    rate: RateLimit,
    buckets: Buckets,
}

/// Every route's buckets by route name, created on first use.
#[derive(Default)]
pub struct Local {
    by_route: DashMap<Arc<str>, Arc<RouteBuckets>, Seeded>,
}

impl Local {
    /// Takes one token of `bucket` for `route`, or says how long until there is one.
    pub fn check(
        &self,
        route: &str,
        rate: RateLimit,
        bucket: &Bucket,
    ) -> Result<Standing, Exceeded> {
        let limiter = self.route(route, rate);
        match limiter.buckets.check_key(bucket) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity().min(rate.count);
                Ok(Standing {
                    limit: rate.count,
                    remaining,
                    reset: rate.interval() * (rate.count - remaining),
                })
            }
            Err(not_until) => Err(Exceeded::after(
                rate.count,
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
        }
    }

    /// The route's buckets: one keyed look-up by borrowed name (no allocation) in the
    /// common case; a first use, or a reload that changed the rate, starts afresh.
    fn route(&self, route: &str, rate: RateLimit) -> Arc<RouteBuckets> {
        if let Some(l) = self.by_route.get(route)
            && l.rate == rate
        {
            return Arc::clone(&l);
        }
        let fresh = || {
            Arc::new(RouteBuckets {
                rate,
                buckets: RateLimiter::dashmap_with_hasher(quota(rate), Seeded::default())
                    .with_middleware(),
            })
        };
        let mut entry = self.by_route.entry(Arc::from(route)).or_insert_with(fresh);
        if entry.rate != rate {
            *entry = fresh();
        }
        Arc::clone(&entry)
    }

    /// Forgets buckets that are full again, and routes nobody uses.
    pub fn sweep(&self) {
        self.by_route.retain(|_, l| {
            l.buckets.retain_recent();
            l.buckets.shrink_to_fit();
            !l.buckets.is_empty()
        });
    }

    /// Buckets with live state, across routes.
    pub fn tracked(&self) -> usize {
        self.by_route.iter().map(|l| l.value().buckets.len()).sum()
    }
}

/// N per period with a burst of N: one token back every period / N.
fn quota(rate: RateLimit) -> Quota {
    let n = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(rate.interval())
        .unwrap_or_else(|| Quota::per_second(n))
        .allow_burst(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys::KeyHash;
    use std::time::Duration;

    fn per_minute(count: u32) -> RateLimit {
        RateLimit {
            count,
            per: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_burst_of_n_then_refusal_with_a_wait_then_recovery() {
        let local = Local::default();
        let limit = per_minute(3);
        let a = Bucket::Key(KeyHash([1; 32]));
        let b = Bucket::Key(KeyHash([2; 32]));
        let remaining: Vec<u32> = (0..3)
            .map(|_| local.check("r", limit, &a).unwrap().remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let over = local.check("r", limit, &a).unwrap_err();
        assert!(
            over.wait > Duration::from_secs(15) && over.wait <= Duration::from_secs(20),
            "{over:?}"
        );
        assert_eq!((over.standing.limit, over.standing.remaining), (3, 0));
        assert!(local.check("r", limit, &b).is_ok(), "limits are per bucket");
        assert!(local.check("other", limit, &a).is_ok(), "and per route");
        assert_eq!(local.tracked(), 3);
    }

    #[test]
    fn a_changed_rate_starts_a_fresh_bucket_set() {
        let local = Local::default();
        let a = Bucket::Key(KeyHash([7; 32]));
        let one = RateLimit {
            count: 1,
            per: Duration::from_secs(3600),
        };
        assert!(local.check("r", one, &a).is_ok());
        assert!(local.check("r", one, &a).is_err());
        let two = RateLimit { count: 2, ..one };
        assert!(
            local.check("r", two, &a).is_ok(),
            "the reloaded rate is counted afresh"
        );
        assert_eq!(local.tracked(), 1, "the old buckets are gone");
    }

    #[test]
    fn idle_buckets_are_reclaimed() {
        let local = Local::default();
        let limit = RateLimit {
            count: 1000,
            per: Duration::from_millis(1),
        };
        for i in 0..100u8 {
            let _ = local.check("r", limit, &Bucket::Key(KeyHash([i; 32])));
        }
        assert_eq!(local.tracked(), 100);
        std::thread::sleep(Duration::from_millis(5));
        local.sweep();
        assert_eq!(local.tracked(), 0);
    }
}
