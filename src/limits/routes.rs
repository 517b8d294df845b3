//! Per-route, per-rate state, shared by [`super::local`] and [`super::fleet`].
//!
//! One route counts at more than one rate when keys override it (a key's `limits`, its
//! plan), and a reload may change a route's own rate. Each rate gets its own state, so
//! neither a key at another rate nor a reload disturbs the buckets of the others; state
//! nobody uses is swept.
//!
//! Invariant: the common case (a route at one rate) is one keyed look-up by the route's
//! borrowed name and one comparison, with no allocation: the first rate a route is seen
//! at is held inline; others are in a map beside it.

use std::sync::Arc;

use dashmap::DashMap;

use super::Seeded;
use crate::keys::RateLimit;

/// `X` for each (route, rate), created on first use.
pub struct Routes<X> {
    by_route: DashMap<Arc<str>, Arc<Rated<X>>, Seeded>,
}

struct Rated<X> {
    first: (RateLimit, Arc<X>),
    others: DashMap<RateLimit, Arc<X>, Seeded>,
}

impl<X> Default for Routes<X> {
    fn default() -> Self {
        Self {
            by_route: DashMap::default(),
        }
    }
}

impl<X> Routes<X> {
    /// The state of `route` at `rate`; `make` builds it on first use.
    pub fn get(&self, route: &str, rate: RateLimit, make: impl Fn(RateLimit) -> X) -> Arc<X> {
        let rated = match self.by_route.get(route) {
            Some(r) => Arc::clone(&r),
            None => Arc::clone(&self.by_route.entry(Arc::from(route)).or_insert_with(|| {
                Arc::new(Rated {
                    first: (rate, Arc::new(make(rate))),
                    others: DashMap::default(),
                })
            })),
        };
        if rated.first.0 == rate {
            return Arc::clone(&rated.first.1);
        }
        if let Some(x) = rated.others.get(&rate) {
            return Arc::clone(&x);
        }
        Arc::clone(
            &rated
                .others
                .entry(rate)
                .or_insert_with(|| Arc::new(make(rate))),
        )
    }

    /// Keeps the states `keep` says are in use (after letting it tidy them), and the
    /// routes that still have one.
    pub fn sweep(&self, keep: impl Fn(&X) -> bool) {
        self.by_route.retain(|_, rated| {
            rated.others.retain(|_, x| keep(x));
            rated.others.shrink_to_fit();
            let first = keep(&rated.first.1);
            first || !rated.others.is_empty()
        });
    }

    /// The sum of `count` over every state.
    pub fn total(&self, count: impl Fn(&X) -> usize) -> usize {
        self.by_route
            .iter()
            .map(|r| count(&r.first.1) + r.others.iter().map(|x| count(x.value())).sum::<usize>())
            .sum()
    }
}
