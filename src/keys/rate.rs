//! A rate: `N/s`, `N/m` or `N/h`, the one form a route's `rate_limit`, a plan's `rate`
//! and a key's per-route `limits` are written in.
//!
//! Invariants: a [`RateLimit`] that parsed allows at least one request per period; it
//! prints as it was written, and (de)serialises as that text, so the admin API, import
//! lines and both stores read and write a key's `limits` one way.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

impl Serialize for RateLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RateLimit::parse(&text).map_err(serde::de::Error::custom)
    }
}
