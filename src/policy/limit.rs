//! A route's rate limit as the policy states it: how many requests per period
//! ([`RateLimit`]), whose requests share one bucket ([`Per`]), and whether the bucket is
//! counted by each gateway or by the whole fleet ([`Scope`]).
//!
//! Invariants: a [`RouteLimit`] that loaded is valid (count ≥ 1, a known period, `per`
//! other than `key` only on routes that need a key); it is `Copy` and small, so a
//! [`super::Permitted`] carries it without allocating. Counting is not done here
//! (`crate::limits` does it): the policy only says what to count.

pub use crate::keys::RateLimit;

/// Whose requests share a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Per {
    /// Each key its own (each client address on a public route).
    #[default]
    Key,
    /// Every key of the same user of the same business.
    User,
    /// Every key of the same business.
    Business,
}

impl Per {
    pub const NAMES: [&'static str; 3] = ["key", "user", "business"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "key" => Some(Self::Key),
            "user" => Some(Self::User),
            "business" => Some(Self::Business),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::User => "user",
            Self::Business => "business",
        }
    }
}

/// Who counts a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Each gateway on its own: N gateways let N times the rate through.
    Gateway,
    /// All gateways sharing the Redis registry, together.
    Fleet,
}

impl Scope {
    pub const NAMES: [&'static str; 2] = ["gateway", "fleet"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "gateway" => Some(Self::Gateway),
            "fleet" => Some(Self::Fleet),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Fleet => "fleet",
        }
    }
}

/// A policy plan (`plans:`): the rates its keys get instead of the routes' own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    /// Every route's rate for the plan's keys (routes without `rate_limit` included).
    pub rate: Option<RateLimit>,
    /// Per route name, before `rate`.
    pub limits: Vec<(String, RateLimit)>,
    /// Each of the plan's keys' quota, unless the key has its own.
    pub quota: Option<crate::keys::Quota>,
}

impl Plan {
    /// The plan's rate on `route`, if it sets one.
    pub fn rate_on(&self, route: &str) -> Option<RateLimit> {
        self.limits
            .iter()
            .find(|(r, _)| r == route)
            .map(|(_, l)| *l)
            .or(self.rate)
    }
}

/// A route's `rate_limit:` whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteLimit {
    pub rate: RateLimit,
    pub per: Per,
    /// `None`: not written; the store decides (fleet on Redis, gateway on the embedded
    /// store).
    pub scope: Option<Scope>,
}

impl RouteLimit {
    /// The limit a key meets on a route whose own limit is `route`: the key's own rate
    /// for the route (counted per key), else its plan's (counted as the route says),
    /// else the route's.
    pub fn for_key(
        route: Option<RouteLimit>,
        own: Option<RateLimit>,
        plan: Option<RateLimit>,
    ) -> Option<RouteLimit> {
        match (own, plan, route) {
            (Some(rate), _, Some(r)) => Some(RouteLimit {
                rate,
                per: Per::Key,
                ..r
            }),
            (Some(rate), _, None) | (None, Some(rate), None) => Some(RouteLimit::of(rate)),
            (None, Some(rate), Some(r)) => Some(RouteLimit { rate, ..r }),
            (None, None, r) => r,
        }
    }

    /// Only a rate: per key, scope by the store.
    pub fn of(rate: RateLimit) -> Self {
        Self {
            rate,
            per: Per::Key,
            scope: None,
        }
    }
}

#[cfg(test)]
mod tests;
