//! Usage as it is asked for: a time range at an hour's or a day's granularity, every
//! bucket of it (empty ones too, so a chart has no gaps), allowed and refused, and the
//! refusals by code. Shared by the admin API and `keygate keys usage`.
//!
//! Invariants: buckets are UTC hours or days; a range holds at most [`MAX_BUCKETS`]
//! buckets; a bad parameter is an error naming it and saying what to write. Pure: no I/O.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::keys::Timestamp;

/// The most buckets one answer holds (a month of hours, more than a year of days).
pub const MAX_BUCKETS: i64 = 24 * 31;

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// Hours or days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    fn secs(self) -> i64 {
        match self {
            Self::Hour => HOUR,
            Self::Day => DAY,
        }
    }
}

/// The buckets asked for: `from` and `to` are the first and the last bucket's starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
    pub granularity: Granularity,
}

/// One bucket of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// RFC 3339, the bucket's start.
    pub start: String,
    pub allowed: u64,
    pub refused: u64,
    /// Refusals by code (only codes that occurred).
    pub refusals: BTreeMap<String, u64>,
}

impl Range {
    /// `from`/`to` as RFC 3339 (default: the last 7 days up to now), `granularity`
    /// `hour` (default) or `day`; `Err((field, why))`.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        granularity: Option<&str>,
        now: Timestamp,
    ) -> Result<Self, (&'static str, String)> {
        let granularity = match granularity.unwrap_or("hour") {
            "hour" => Granularity::Hour,
            "day" => Granularity::Day,
            other => {
                return Err((
                    "granularity",
                    format!("`{other}` is not a granularity: use hour or day"),
                ));
            }
        };
        let time = |field: &'static str, text: &str| {
            Timestamp::parse_rfc3339(text).ok_or_else(|| {
                (
                    field,
                    format!("`{text}` is not an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"),
                )
            })
        };
        let g = granularity.secs();
        let to = to.map(|t| time("to", t)).transpose()?.unwrap_or(now).0;
        let to = to - to.rem_euclid(g);
        // By default, the 7 days up to and including `to`'s bucket.
        let from = from
            .map(|t| time("from", t))
            .transpose()?
            .map_or(to - 7 * DAY + g, |t| t.0);
        if from > to + g - 1 {
            return Err(("from", "is after `to`".to_owned()));
        }
        let range = Self {
            from: from - from.rem_euclid(g),
            to,
            granularity,
        };
        if range.len() > MAX_BUCKETS {
            return Err((
                "from",
                format!(
                    "the range holds {} {}s; at most {MAX_BUCKETS} are answered at once \
                     (ask for granularity=day, or a shorter range)",
                    range.len(),
                    serde_json::to_value(granularity)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                ),
            ));
        }
        Ok(range)
    }

    /// Buckets in the range.
    pub fn len(&self) -> i64 {
        (self.to - self.from) / self.granularity.secs() + 1
    }

    /// Whether the range is empty (it never is: a range holds at least one bucket).
    pub fn is_empty(&self) -> bool {
        self.len() <= 0
    }

    /// The store's hours this range reads: from the first bucket's start to the last
    /// hour of the last bucket.
    pub fn hours(&self) -> (i64, i64) {
        (self.from, self.to + self.granularity.secs() - HOUR)
    }

    /// Every bucket of the range, from the store's `(hour, outcome, n)` rows.
    pub fn buckets(&self, rows: &[(i64, String, u64)]) -> Vec<Bucket> {
        let g = self.granularity.secs();
        let mut out: Vec<Bucket> = (0..self.len())
            .map(|i| Bucket {
                start: Timestamp(self.from + i * g).to_rfc3339(),
                allowed: 0,
                refused: 0,
                refusals: BTreeMap::new(),
            })
            .collect();
        for (hour, outcome, n) in rows {
            let Ok(i) = usize::try_from((hour - self.from).div_euclid(g)) else {
                continue;
            };
            let Some(b) = out.get_mut(i) else { continue };
            if outcome == "allowed" {
                b.allowed += n;
            } else {
                b.refused += n;
                *b.refusals.entry(outcome.clone()).or_default() += n;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn buckets_cover_the_range_and_add_up_by_day() {
        let now = Timestamp::parse_rfc3339("2026-12-07T13:20:00Z").unwrap();
        let r = Range::parse(None, None, Some("day"), now).unwrap();
        assert_eq!(r.len(), 7);
        assert_eq!(Timestamp(r.to).to_rfc3339(), "2026-12-07T00:00:00Z");
        let h = r.to + 13 * HOUR;
        let rows = [
            (h, "allowed".to_owned(), 5),
            (h - HOUR, "rate_limited".to_owned(), 2),
            (r.from, "allowed".to_owned(), 1),
            (r.from - HOUR, "allowed".to_owned(), 100), // before the range
        ];
        let b = r.buckets(&rows);
        assert_eq!((b[0].allowed, b[0].refused), (1, 0));
        assert_eq!((b[6].allowed, b[6].refused), (5, 2));
        assert_eq!(b[6].refusals["rate_limited"], 2);
        assert_eq!(b.iter().map(|b| b.allowed).sum::<u64>(), 6);
        let hourly = Range::parse(Some("2026-12-07T10:30:00Z"), None, None, now).unwrap();
        assert_eq!(hourly.len(), 4, "10:00, 11:00, 12:00, 13:00");
        assert_eq!(hourly.hours(), (hourly.from, hourly.to));
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let now = Timestamp(1_800_000_000);
        let e = |f, t, g| Range::parse(f, t, g, now).unwrap_err();
        assert_eq!(e(None, None, Some("week")).0, "granularity");
        assert_eq!(e(Some("yesterday"), None, None).0, "from");
        assert_eq!(e(None, Some("2026-13-01"), None).0, "to");
        let (field, why) = e(Some("2020-01-01T00:00:00Z"), None, None);
        assert_eq!(field, "from");
        assert!(why.contains("granularity=day"), "{why}");
        let (field, why) = e(
            Some("2030-01-01T00:00:00Z"),
            Some("2029-01-01T00:00:00Z"),
            None,
        );
        assert_eq!((field, why.as_str()), ("from", "is after `to`"));
    }
}
