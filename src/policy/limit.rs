//! A route's rate limit as the policy states it: how many requests per period
//! ([`RateLimit`]), whose requests share one bucket ([`Per`]), and whether the bucket is
//! counted by each gateway or by the whole fleet ([`Scope`]).
//!
//! Invariants: a [`RouteLimit`] that loaded is valid (count ≥ 1, a known period, `per`
//! other than `key` only on routes that need a key); it is `Copy` and small, so a
//! [`super::Permitted`] carries it without allocating. Counting is not done here
//! (`crate::limits` does it): the policy only says what to count.

use std::fmt;
use std::time::Duration;

/// `count` requests per `per`, with a burst of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl RateLimit {
    /// Parses `N/s`, `N/m` or `N/h` with N ≥ 1.
    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let shape = || format!("rate limit `{text}` must look like `100/s`, `10/m` or `1000/h`");
        let (count, unit) = text.split_once('/').ok_or_else(shape)?;
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(shape()),
        };
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(shape());
        }
        let count: u32 = count
            .parse()
            .map_err(|_| format!("rate limit `{text}` is too large"))?;
        if count == 0 {
            return Err(format!(
                "rate limit `{text}` must allow at least 1 request per period"
            ));
        }
        Ok(RateLimit { count, per })
    }

    /// The time one token takes to come back: `per / count`, at least a nanosecond.
    pub fn interval(self) -> Duration {
        (self.per / self.count.max(1)).max(Duration::from_nanos(1))
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            3600 => "h",
            other => return write!(f, "{}/{other}s", self.count),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

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
    /// Only a rate: per key, scope by the store.
    pub fn of(rate: RateLimit) -> Self {
        Self {
            rate,
            per: Per::Key,
            scope: None,
        }
    }
}
