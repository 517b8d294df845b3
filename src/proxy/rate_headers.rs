//! The `RateLimit-Limit`, `-Remaining` and `-Reset` headers (IETF draft
//! httpapi-ratelimit-headers) on every answer of a rate-limited route, refused or not.
//!
//! Values: the bucket's size, what is left in it, and the seconds (rounded up) until it is
//! full again, or, when refused, until the next token (then equal to `Retry-After`).
//!
//! Why a table: `HeaderValue::from(u32)` allocates, so three headers cost three
//! allocations and frees per limited request. The values are nearly always small, so
//! numbers below [`TABLE`] come from values built once over one static string (a clone
//! copies two words and touches no counter); larger ones are formatted as before.
//! Measured with `benches/compare.sh --instructions` (the `…-limited` rows, see
//! docs/performance.md, "Fleet rate limits").

use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::limits::Standing;

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Numbers below this have a prebuilt value.
const TABLE: u64 = 1024;

/// `0123…10231023`: every number below [`TABLE`], written one after another.
static DIGITS: LazyLock<String> = LazyLock::new(|| (0..TABLE).map(|n| n.to_string()).collect());

static SMALL: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    let digits: &'static str = LazyLock::force(&DIGITS).as_str();
    let mut at = 0;
    (0..TABLE)
        .map(|n| {
            let len = n.to_string().len();
            let v = HeaderValue::from_static(&digits[at..at + len]);
            at += len;
            v
        })
        .collect()
});

/// Sets the three headers for `s`.
pub fn write(h: &mut HeaderMap, s: Standing) {
    let reset = s.reset.as_secs() + u64::from(s.reset.subsec_nanos() > 0);
    h.insert(LIMIT, number(u64::from(s.limit)));
    h.insert(REMAINING, number(u64::from(s.remaining)));
    h.insert(RESET, number(reset));
}

fn number(n: u64) -> HeaderValue {
    usize::try_from(n)
        .ok()
        .and_then(|i| SMALL.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_number_reads_as_itself_in_the_table_and_past_it() {
        for n in (0..2 * TABLE).chain([u64::from(u32::MAX)]) {
            assert_eq!(number(n).to_str().ok(), Some(n.to_string().as_str()), "{n}");
        }
    }

    #[test]
    fn reset_is_rounded_up_to_whole_seconds() {
        let mut h = HeaderMap::new();
        let s = Standing {
            limit: 100_000,
            remaining: 7,
            reset: Duration::from_millis(1_001),
        };
        write(&mut h, s);
        assert_eq!(h["ratelimit-limit"], "100000");
        assert_eq!(h["ratelimit-remaining"], "7");
        assert_eq!(h["ratelimit-reset"], "2");
    }
}
