//! The thread that turns other writers' changes into [`Invalidation`]s.
//!
//! Job: every [`POLL_EVERY`], read the `changes` rows appended since the last poll
//! (by any process on the file) and announce their hashes; now and then prune old rows.
//!
//! Invariants:
//! - `changes.seq` is gap-free (AUTOINCREMENT, serialised writers, rolled-back inserts
//!   do not consume a number), so a gap means pruned rows were missed → `All`; so does
//!   a malformed hash, a batch too full to be the whole backlog, or a failed poll.
//! - A store's poller starts at the high-water mark read before `open` returns: nothing
//!   written after `open` is missed, nothing older is replayed.
//! - The thread exits once its store is dropped (the stop channel disconnects).
//!
//! Why a thread that polls: `SQLite` has no cross-process notification, and a read of
//! an indexed table every [`POLL_EVERY`] is cheap and well within the second the
//! contract allows.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::types::Value;
use tokio::sync::broadcast;

use super::codec::invalidation_for;
use super::{OpenError, classify};
use crate::keys::Timestamp;
use crate::store::{Invalidation, StoreError};

/// How often the poller looks for other writers' changes.
pub const POLL_EVERY: Duration = Duration::from_millis(150);
/// How long a `changes` row is kept: far longer than any live poller lags.
const CHANGES_KEPT_SECS: i64 = 600;
/// How often the poller prunes old `changes` rows.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Rows read per poll; a fuller batch means the poller fell behind → `All`.
const POLL_BATCH: usize = 512;

/// The background thread turning `changes` rows into [`Invalidation`]s.
pub(super) struct Poller {
    conn: Connection,
    tx: broadcast::Sender<Invalidation>,
    /// Never sent on: disconnects when the store is dropped.
    stop: mpsc::Receiver<()>,
    /// The last `changes.seq` announced (or skipped).
    last_seq: i64,
}

impl Poller {
    /// Starts a poller thread on `conn` announcing on `tx`; dropping the returned
    /// sender stops it.
    pub(super) fn start(
        conn: Connection,
        tx: broadcast::Sender<Invalidation>,
    ) -> Result<mpsc::Sender<()>, StoreError> {
        // Start from the current high-water mark, read before `open` returns, so
        // nothing written after `open` is missed and nothing older is replayed.
        let last_seq = high_water_mark(&conn).map_err(classify)?;
        let (stop, stopped) = mpsc::channel();
        let poller = Self {
            conn,
            tx,
            stop: stopped,
            last_seq,
        };
        std::thread::Builder::new()
            .name("keygate-store-poll".to_owned())
            .spawn(move || poller.run())
            .map_err(|e| StoreError::unavailable(OpenError::Thread(e)))?;
        Ok(stop)
    }

    fn run(mut self) {
        // Pruning must not stall polling behind a busy writer for long.
        if let Err(e) = self.conn.busy_timeout(Duration::from_millis(250)) {
            tracing::warn!(error = %e, "store poller: cannot set busy timeout");
        }
        let mut failing = false;
        let mut last_prune: Option<Instant> = None;
        loop {
            match self.stop.recv_timeout(POLL_EVERY) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The store was dropped (nothing is ever sent).
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            match self.poll() {
                Ok(()) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "store poller: cannot read changes; invalidating all");
                        let _ = self.tx.send(Invalidation::All);
                    }
                    failing = true;
                }
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                if let Err(e) = self.conn.execute(
                    "DELETE FROM changes WHERE at < ?1",
                    [Timestamp::now().0.saturating_sub(CHANGES_KEPT_SECS)],
                ) {
                    // Another process may hold the write lock; prune next time.
                    tracing::debug!(error = %e, "store poller: prune skipped");
                }
            }
        }
    }

    fn poll(&mut self) -> rusqlite::Result<()> {
        let batch_limit = i64::try_from(POLL_BATCH).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, hash FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt
            .query_map((self.last_seq, batch_limit), |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Value>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        let mut all = false;
        let mut keys = Vec::with_capacity(rows.len());
        let mut expected = self.last_seq.saturating_add(1);
        for (seq, hash) in &rows {
            // A gap: rows pruned before this poller read them.
            all |= *seq != expected;
            expected = seq.saturating_add(1);
            match hash {
                Value::Blob(b) => match invalidation_for(b) {
                    Invalidation::All => all = true,
                    key @ Invalidation::Key(_) => keys.push(key),
                },
                _ => all = true,
            }
        }
        if let Some((seq, _)) = rows.last() {
            self.last_seq = *seq;
        }
        if rows.len() >= POLL_BATCH {
            // Fallen behind: skip to the end and have caches start afresh.
            all = true;
            self.last_seq = high_water_mark(&self.conn)?;
        }
        if all {
            tracing::info!("store poller: changes missed or malformed; invalidating all");
            let _ = self.tx.send(Invalidation::All);
        } else {
            for key in keys {
                let _ = self.tx.send(key);
            }
        }
        Ok(())
    }
}

/// The highest `changes.seq` ever handed out (pruned rows included).
fn high_water_mark(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), \
         (SELECT max(seq) FROM changes), 0)",
        [],
        |row| row.get(0),
    )
}
