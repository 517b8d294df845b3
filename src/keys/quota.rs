//! A key's quota: a number of requests per period that refills when each period ends
//! (`{limit: 10000, period: 1d}`), or credits that only an admin refills
//! (`{credits: 5000}`). What is spent is counted by `crate::quotas`, in the store.
//!
//! Periods are fixed windows aligned to the Unix epoch in UTC: a `1d` quota refills at
//! 00:00 UTC, a `1h` one on the hour. Where a key's use is counted is its record's
//! `quota_counter` (its first id; rotation keeps it, so a rotated key goes on spending
//! the same quota) plus the window, or, for credits, the moment they were set, so an
//! admin's refill starts a fresh count.
//!
//! Invariants: a [`Quota`] that loaded allows at least one request; a period is whole
//! seconds, at least one; this module is pure (no I/O).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// The longest period a quota may have.
const MAX_PERIOD: Duration = Duration::from_secs(100 * 365 * 86_400);

/// How a quota is written when set: `limit` per `period`, or credits (`period: None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaSpec {
    pub limit: u64,
    pub period: Option<Duration>,
}

/// A key's quota as its record holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Requests per period, or the credits given.
    pub limit: u64,
    /// The period in seconds; `None`: credits, refilled only by an admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_secs: Option<u64>,
    /// Credits: when they were set (ms since the epoch), so a refill counts afresh.
    #[serde(default)]
    pub set_ms: i64,
}

/// Where one window of a quota is counted, and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// `<counter>:<period>:<window start>` or `<counter>:c<set_ms>`; the store keys the
    /// count by it (the part before the first `:` decides a Redis Cluster slot).
    pub name: String,
    /// When the window refills; `None` for credits.
    pub resets_at: Option<Timestamp>,
}

impl QuotaSpec {
    /// Parses `N/PERIOD` (`1000/1d`, `50000/30d`, `100/1h`), as plans and the CLI write it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let shape = || {
            format!(
                "quota `{text}` must look like `1000/1d` (requests per period: 1h, 1d, 30d, ...)"
            )
        };
        let (count, period) = text.split_once('/').ok_or_else(shape)?;
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(shape());
        }
        let limit = count
            .parse()
            .map_err(|_| format!("quota `{text}` is too large"))?;
        let period = crate::config::parse_duration(period)?;
        Self::periodic(limit, period)
    }

    /// `limit` requests per `period`, checked.
    pub fn periodic(limit: u64, period: Duration) -> Result<Self, String> {
        if limit == 0 {
            return Err("a quota must allow at least 1 request".to_owned());
        }
        if period > MAX_PERIOD {
            return Err(format!(
                "a quota's period must be at most 100y (got {})",
                humantime::format_duration(period)
            ));
        }
        if period.as_secs() == 0 || period.subsec_nanos() != 0 {
            return Err(format!(
                "a quota's period must be whole seconds, at least 1s (got {})",
                humantime::format_duration(period)
            ));
        }
        Ok(Self {
            limit,
            period: Some(period),
        })
    }

    /// `credits` in all, checked.
    pub fn credits(credits: u64) -> Result<Self, String> {
        if credits == 0 {
            return Err(
                "credits must be at least 1 (revoke or suspend a key to stop it)".to_owned(),
            );
        }
        Ok(Self {
            limit: credits,
            period: None,
        })
    }

    /// The quota a record holds for this spec, set at `now_ms`. A periodic quota
    /// replacing one of the same period keeps counting in the same windows (`before`).
    pub fn to_quota(self, now_ms: i64, before: Option<&Quota>) -> Quota {
        let period_secs = self.period.map(|p| p.as_secs());
        let set_ms = match before {
            Some(b) if period_secs.is_some() && b.period_secs == period_secs => b.set_ms,
            _ => now_ms,
        };
        Quota {
            limit: self.limit,
            period_secs,
            set_ms,
        }
    }
}

/// The input form of a quota in admin bodies and plans: `{limit, period, refill}` or
/// `{credits}`; `{}` is no quota.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaInput {
    limit: Option<u64>,
    period: Option<String>,
    refill: Option<bool>,
    credits: Option<u64>,
}

impl QuotaInput {
    /// The spec (`None` for `{}`), or what is wrong with it (the caller names the field).
    pub fn check(&self) -> Result<Option<QuotaSpec>, String> {
        if self.limit.is_none()
            && self.period.is_none()
            && self.refill.is_none()
            && self.credits.is_none()
        {
            return Ok(None);
        }
        self.spec().map(Some)
    }

    fn spec(&self) -> Result<QuotaSpec, String> {
        match (self.credits, self.limit, &self.period) {
            (Some(c), None, None) if self.refill.is_none() => QuotaSpec::credits(c),
            (Some(_), None, None) => Err(
                "`refill` does not apply to credits (only an admin refills them): drop it, or \
                 write `{limit: N, period: 1d}` for a quota that refills"
                    .to_owned(),
            ),
            (Some(_), ..) => Err(
                "write either `{credits: N}` (admins refill it) or `{limit: N, period: 1d}`, not both"
                    .to_owned(),
            ),
            (None, Some(limit), Some(period)) => {
                if self.refill == Some(false) {
                    return Err("`refill: false` is what credits are: write `{credits: N}`".to_owned());
                }
                QuotaSpec::periodic(limit, crate::config::parse_duration(period)?)
            }
            (None, None, _) => Err("needs `limit` and `period` (or `credits`)".to_owned()),
            (None, Some(_), None) => Err("needs a `period` such as 1h, 1d or 30d".to_owned()),
        }
    }
}

impl Quota {
    /// What it was set as.
    pub fn spec(&self) -> QuotaSpec {
        QuotaSpec {
            limit: self.limit,
            period: self.period_secs.map(Duration::from_secs),
        }
    }

    /// Credits, refilled only by an admin.
    pub fn is_credits(&self) -> bool {
        self.period_secs.is_none()
    }

    /// The window `now` falls in, counted under `counter`.
    pub fn window(&self, counter: &str, now: Timestamp) -> Window {
        match self.period_secs {
            Some(p) => {
                let p = i64::try_from(p).unwrap_or(i64::MAX).max(1);
                let start = now.0 - now.0.rem_euclid(p);
                Window {
                    name: format!("{counter}:{p}:{start}"),
                    resets_at: Some(Timestamp(start.saturating_add(p))),
                }
            }
            None => Window {
                name: format!("{counter}:c{}", self.set_ms),
                resets_at: None,
            },
        }
    }

    /// The quota as the admin API shows it: `{limit, period, refill: true}` or
    /// `{credits}`.
    pub fn to_json(&self) -> serde_json::Value {
        match self.period_secs {
            Some(p) => serde_json::json!({
                "limit": self.limit,
                "period": period_text(p),
                "refill": true,
            }),
            None => serde_json::json!({ "credits": self.limit }),
        }
    }

    /// The quota as the CLI writes it: `1000/1d` or `credits 5000`.
    pub fn text(&self) -> String {
        match self.period_secs {
            Some(p) => format!("{}/{}", self.limit, period_text(p)),
            None => format!("credits {}", self.limit),
        }
    }
}

/// Milliseconds since the Unix epoch, for [`Quota::set_ms`].
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A period in its largest whole unit: `30d`, `12h`, `5m`, `90s`.
fn period_text(secs: u64) -> String {
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn periods_are_utc_windows_and_credits_count_from_their_setting() {
        let q = QuotaSpec::parse("1000/1d").unwrap().to_quota(5, None);
        let w = q.window("kid_a", Timestamp(86_400 * 3 + 7));
        assert_eq!(w.name, "kid_a:86400:259200");
        assert_eq!(w.resets_at, Some(Timestamp(86_400 * 4)));
        assert_eq!(q.to_json()["period"], "1d");
        let c = QuotaSpec::credits(50).unwrap().to_quota(1234, Some(&q));
        assert_eq!(c.window("kid_a", Timestamp(9)).name, "kid_a:c1234");
        assert_eq!(c.window("kid_a", Timestamp(9)).resets_at, None);
        // A refill of credits counts afresh; a new limit of the same period does not.
        let again = QuotaSpec::credits(60).unwrap().to_quota(2000, Some(&c));
        assert_eq!(again.set_ms, 2000);
        let wider = QuotaSpec::parse("2000/1d")
            .unwrap()
            .to_quota(9999, Some(&q));
        assert_eq!(wider.set_ms, q.set_ms);
    }

    #[test]
    fn bad_quotas_say_what_to_write() {
        for (text, says) in [
            ("1000", "must look like"),
            ("0/1d", "at least 1 request"),
            ("10/0s", "at least 1s"),
            ("10/1.5s", "whole seconds"),
            ("x/1d", "must look like"),
            ("10/1q", "unknown unit"),
            ("10/300000000y", "at most 100y"),
        ] {
            let e = QuotaSpec::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        let input = |j: &str| serde_json::from_str::<QuotaInput>(j).unwrap().check();
        assert_eq!(input(r#"{"credits":5}"#).unwrap().unwrap().period, None);
        assert_eq!(input("{}").unwrap(), None);
        assert!(
            input(r#"{"credits":5,"limit":3}"#)
                .unwrap_err()
                .contains("not both")
        );
        assert!(
            input(r#"{"limit":3,"period":"1d","refill":false}"#)
                .unwrap_err()
                .contains("credits")
        );
        assert!(input(r#"{"limit":3}"#).unwrap_err().contains("period"));
        assert!(
            input(r#"{"credits":0}"#)
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(serde_json::from_str::<QuotaInput>(r#"{"limt":3}"#).is_err());
    }
}
