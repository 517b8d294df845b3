//! The key-event outbox in `SQLite`: the `events`, `event_once`, `event_deliveries`,
//! `event_cursors` and `leases` tables behind
//! [`KeyStore::push_event`](crate::store::KeyStore::push_event) and its kin.
//!
//! Invariants: a push (the once check, the insert, the trim of events and their
//! deliveries every cursor has passed beyond [`EVENTS_KEPT`], and of any beyond
//! [`EVENTS_HELD`]) is one `BEGIN IMMEDIATE` transaction, so processes sharing the file
//! never queue one once-event twice; `AUTOINCREMENT` numbers never repeat, even after a
//! trim; a cursor only moves forward.

use std::time::Duration;

use rusqlite::OptionalExtension;

use super::{EmbeddedStore, classify};
use crate::events::{Delivery, Event, Once, Page, Stored};
use crate::keys::now_ms;
use crate::store::{EVENTS_HELD, EVENTS_KEPT, StoreError};

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn seq_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn sql_seq(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Rows of `(seq, body)` into a page: the readable events, the highest number.
fn page(rows: Vec<(i64, String)>) -> Page {
    let last = rows.iter().map(|(seq, _)| seq_of(*seq)).max();
    Page {
        events: decode(rows),
        last,
    }
}

/// Rows of `(seq, body)` into events; an unreadable body is skipped with a warning.
fn decode(rows: Vec<(i64, String)>) -> Vec<Stored> {
    rows.into_iter()
        .filter_map(|(seq, body)| {
            let Ok(event) = serde_json::from_str::<Event>(&body) else {
                tracing::warn!(seq, "skipping an unreadable row of the events table");
                return None;
            };
            Some(Stored {
                seq: seq_of(seq),
                event,
                deliveries: Vec::new(),
            })
        })
        .collect()
}

impl EmbeddedStore {
    pub(super) async fn push_event_to_log(
        &self,
        event: &Event,
        once: Option<&Once>,
    ) -> Result<Option<u64>, StoreError> {
        let body = serde_json::to_string(event).map_err(StoreError::unavailable)?;
        let business = event.business_id.clone();
        let once = once.cloned();
        self.write(move |tx| {
            let now = now_ms();
            if let Some(o) = &once {
                tx.execute(
                    "DELETE FROM event_once WHERE name = ?1 AND until <= ?2",
                    rusqlite::params![o.name, now],
                )
                .map_err(classify)?;
                let fresh = tx
                    .execute(
                        "INSERT OR IGNORE INTO event_once (name, until) VALUES (?1, ?2)",
                        rusqlite::params![o.name, now.saturating_add(ms(o.ttl))],
                    )
                    .map_err(classify)?;
                if fresh == 0 {
                    return Ok((None, Vec::new()));
                }
                tx.execute("DELETE FROM event_once WHERE until <= ?1", [now])
                    .map_err(classify)?;
            }
            tx.execute(
                "INSERT INTO events (business_id, body) VALUES (?1, ?2)",
                rusqlite::params![business, body],
            )
            .map_err(classify)?;
            let seq = tx.last_insert_rowid();
            // What every cursor has passed, beyond the kept; anything beyond the held.
            let kept = seq - i64::try_from(EVENTS_KEPT).unwrap_or(i64::MAX);
            let held = seq - i64::try_from(EVENTS_HELD).unwrap_or(i64::MAX);
            let floor: i64 = tx
                .query_row(
                    "SELECT max(?2, min(?1, coalesce((SELECT min(seq) FROM event_cursors), ?1)))",
                    [kept, held],
                    |r| r.get(0),
                )
                .map_err(classify)?;
            tx.execute("DELETE FROM events WHERE seq <= ?1", [floor])
                .map_err(classify)?;
            tx.execute("DELETE FROM event_deliveries WHERE seq <= ?1", [floor])
                .map_err(classify)?;
            Ok((Some(seq_of(seq)), Vec::new()))
        })
        .await
    }

    pub(super) async fn log_after(&self, after: u64, limit: usize) -> Result<Page, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut q = conn
                .prepare_cached("SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .map_err(classify)?;
            let rows = q
                .query_map(rusqlite::params![sql_seq(after), limit], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(classify)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(classify)?;
            Ok(page(rows))
        })
        .await
    }

    pub(super) async fn log_recent(
        &self,
        business_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let business = business_id.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            // One query for both: a NULL business matches every row.
            let mut q = conn
                .prepare_cached(
                    "SELECT seq, body FROM events WHERE ?1 IS NULL OR business_id = ?1 \
                     ORDER BY seq DESC LIMIT ?2",
                )
                .map_err(classify)?;
            let rows: Vec<(i64, String)> = q
                .query_map(rusqlite::params![business, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(classify)?
                .collect::<Result<_, _>>()
                .map_err(classify)?;
            let mut found = decode(rows);
            let mut q = conn
                .prepare_cached("SELECT state FROM event_deliveries WHERE seq = ?1 ORDER BY url")
                .map_err(classify)?;
            for stored in &mut found {
                stored.deliveries = q
                    .query_map([sql_seq(stored.seq)], |r| r.get::<_, String>(0))
                    .map_err(classify)?
                    .filter_map(|r| r.ok().and_then(|j| serde_json::from_str(&j).ok()))
                    .collect();
            }
            Ok(found)
        })
        .await
    }

    pub(super) async fn cursor_of(&self, url: &str) -> Result<Option<u64>, StoreError> {
        let url = url.to_owned();
        self.read(move |conn| {
            conn.query_row(
                "SELECT seq FROM event_cursors WHERE url = ?1",
                [&url],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(classify)
            .map(|s| s.map(seq_of))
        })
        .await
    }

    pub(super) async fn move_cursor(&self, url: &str, seq: u64) -> Result<(), StoreError> {
        let url = url.to_owned();
        self.write(move |tx| {
            set_cursor(tx, &url, seq)?;
            Ok(((), Vec::new()))
        })
        .await
    }

    pub(super) async fn write_delivery(
        &self,
        seq: u64,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        let state = serde_json::to_string(delivery).map_err(StoreError::unavailable)?;
        let delivery = delivery.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO event_deliveries (seq, url, state) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (seq, url) DO UPDATE SET state = excluded.state",
                rusqlite::params![sql_seq(seq), delivery.url, state],
            )
            .map_err(classify)?;
            if delivery.is_final() {
                set_cursor(tx, &delivery.url, seq)?;
            }
            Ok(((), Vec::new()))
        })
        .await
    }

    pub(super) async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |tx| {
            let now = now_ms();
            tx.execute(
                "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
                 WHERE leases.holder = excluded.holder OR leases.until <= ?4",
                rusqlite::params![name, holder, now.saturating_add(ms(ttl)), now],
            )
            .map_err(classify)?;
            let now_holder: String = tx
                .query_row("SELECT holder FROM leases WHERE name = ?1", [&name], |r| {
                    r.get(0)
                })
                .map_err(classify)?;
            Ok((now_holder == holder, Vec::new()))
        })
        .await
    }
}

fn set_cursor(tx: &rusqlite::Transaction<'_>, url: &str, seq: u64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO event_cursors (url, seq) VALUES (?1, ?2) \
         ON CONFLICT (url) DO UPDATE SET seq = max(seq, excluded.seq)",
        rusqlite::params![url, sql_seq(seq)],
    )
    .map_err(classify)?;
    Ok(())
}
