//! Buckets each gateway counts on its own (`scope: gateway`, the embedded store, and the
//! fallback while Redis cannot be reached): a token bucket per route and bucket, GCRA
//! via `governor`.
//!
//! Invariants: each rate of a route counts in its own buckets ([`Routes`]);
//! state for buckets idle longer than their period is reclaimed by [`Local::sweep`], so
//! memory follows active buckets, not all ever seen. Checking takes no global lock
//! (dashmap shards, atomic state).

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::routes::Routes;
use super::{Bucket, Exceeded, Seeded, Standing};
use crate::policy::RateLimit;

type Buckets = RateLimiter<
    Bucket,
    DefaultKeyedStateStore<Bucket, Seeded>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// Every route's buckets, per rate, created on first use.
#[derive(Default)]
pub struct Local {
    routes: Routes<Buckets>,
}

impl Local {
    /// Takes one token of `bucket` for `route`, or says how long until there is one.
    pub fn check(
        &self,
        route: &str,
        rate: RateLimit,
        bucket: &Bucket,
    ) -> Result<Standing, Exceeded> {
        let buckets = self.routes.get(route, rate, |rate| {
            RateLimiter::dashmap_with_hasher(quota(rate), Seeded::default()).with_middleware()
        });
        match buckets.check_key(bucket) {
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

    /// Forgets buckets that are full again, and routes nobody uses.
    pub fn sweep(&self) {
        self.routes.sweep(|b| {
            b.retain_recent();
            b.shrink_to_fit();
            !b.is_empty()
        });
    }

    /// Buckets with live state, across routes.
    pub fn tracked(&self) -> usize {
        self.routes.total(Buckets::len)
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
    fn another_rate_counts_in_its_own_buckets() {
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
            "a reloaded or overridden rate is counted afresh"
        );
        assert!(
            local.check("r", one, &a).is_err(),
            "and leaves the first rate's alone"
        );
        assert_eq!(local.tracked(), 2);
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
