//! Request counts in `SQLite`: the `usage` table, one row per series, hour and outcome.
//!
//! Invariants: a flush is one transaction (all its counts land or none); hours older
//! than the retention are deleted by the same transaction.

use std::time::Duration;

use super::{EmbeddedStore, classify};
use crate::keys::Timestamp;
use crate::store::{StoreError, UsageSeries};
use crate::usage::Count;

impl EmbeddedStore {
    pub(super) async fn write_usage(
        &self,
        counts: &[Count],
        retention: Duration,
    ) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        let counts = counts.to_vec();
        let keep = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        self.write(move |tx| {
            let cutoff = Timestamp::now().0.saturating_sub(keep);
            {
                let mut add = tx
                    .prepare_cached(
                        "INSERT INTO usage (series, hour, outcome, n) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (series, hour, outcome) DO UPDATE SET n = n + excluded.n",
                    )
                    .map_err(classify)?;
                for c in counts.iter().filter(|c| c.hour + 3600 > cutoff) {
                    let n = i64::try_from(c.n).unwrap_or(i64::MAX);
                    for series in c.series() {
                        add.execute(rusqlite::params![series, c.hour, c.outcome, n])
                            .map_err(classify)?;
                    }
                }
            }
            tx.execute("DELETE FROM usage WHERE hour + 3600 <= ?1", [cutoff])
                .map_err(classify)?;
            Ok(((), Vec::new()))
        })
        .await
    }

    pub(super) async fn read_usage(
        &self,
        series: &UsageSeries,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String, u64)>, StoreError> {
        let name = series.name();
        self.read(move |conn| {
            let mut q = conn
                .prepare_cached(
                    "SELECT hour, outcome, n FROM usage WHERE series = ?1 AND hour BETWEEN ?2 AND ?3",
                )
                .map_err(classify)?;
            let rows = q
                .query_map(rusqlite::params![name, from, to], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                })
                .map_err(classify)?;
            rows.map(|r| {
                r.map(|(h, o, n)| (h, o, u64::try_from(n).unwrap_or(0)))
                    .map_err(classify)
            })
            .collect()
        })
        .await
    }
}
