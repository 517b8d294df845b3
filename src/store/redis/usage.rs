//! Request counts on Redis: each series' hours, one hash per UTC day.
//!
//! Layout: `kg:use:{<series>}:<day start>`, a hash of `<hour start>:<outcome>` → count,
//! where `<series>` is `k:<key id>` or `b:<business id>`. The hash tag is the series, so
//! all of one key's days share a Cluster slot; each day's hash expires `retention` after
//! the day ends, so old counts go by themselves (a day already past it is deleted as it
//! is written).
//!
//! Invariants: one call is independent `HINCRBY`s and `EXPIREAT`s sent at once (the
//! caller sends a flush in chunks, `usage::FLUSH_CHUNK`, so the proxy's look-ups on the
//! same connection never queue behind a whole flush); counts only grow until they
//! expire.

use std::collections::BTreeMap;
use std::time::Duration;

use super::RedisStore;
use crate::store::{StoreError, UsageSeries};
use crate::usage::Count;

const DAY: i64 = 86_400;

fn day_key(series: &str, day: i64) -> String {
    format!("kg:use:{{{series}}}:{day}")
}

impl RedisStore {
    pub(super) async fn write_usage(
        &self,
        counts: &[Count],
        retention: Duration,
    ) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        let keep = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        // Summed per (day hash, field) first: a key and its business often share a batch.
        let mut adds: BTreeMap<(String, String), u64> = BTreeMap::new();
        for c in counts {
            let day = c.hour - c.hour.rem_euclid(DAY);
            let field = format!("{}:{}", c.hour, c.outcome);
            for series in c.series() {
                *adds
                    .entry((day_key(&series, day), field.clone()))
                    .or_default() += c.n;
            }
        }
        let mut cmds = Vec::with_capacity(adds.len() * 2);
        let mut expiring = BTreeMap::new();
        for ((key, field), n) in adds {
            let day: i64 = key
                .rsplit(':')
                .next()
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            expiring.insert(key.clone(), day.saturating_add(DAY).saturating_add(keep));
            cmds.push(::redis::cmd("HINCRBY").arg(key).arg(field).arg(n).clone());
        }
        for (key, at) in expiring {
            cmds.push(::redis::cmd("EXPIREAT").arg(key).arg(at).clone());
        }
        let _: Vec<::redis::Value> = self.inner.link.batch(cmds).await?;
        Ok(())
    }

    pub(super) async fn read_usage(
        &self,
        series: &UsageSeries,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String, u64)>, StoreError> {
        let name = series.name();
        let first = from - from.rem_euclid(DAY);
        let days: Vec<i64> = (first..=to).step_by(86_400).collect();
        let cmds = days
            .iter()
            .map(|d| ::redis::cmd("HGETALL").arg(day_key(&name, *d)).clone())
            .collect();
        let replies: Vec<Vec<(String, u64)>> = self.inner.link.batch(cmds).await?;
        let mut out = Vec::new();
        for (field, n) in replies.into_iter().flatten() {
            let Some((hour, outcome)) = field.split_once(':') else {
                continue;
            };
            if let Ok(hour) = hour.parse::<i64>()
                && (from..=to).contains(&hour)
            {
                out.push((hour, outcome.to_owned(), n));
            }
        }
        Ok(out)
    }
}
