//! The single-node key registry: one `SQLite` file, shared by the server and the CLI.
//!
//! Job: implement [`KeyStore`] on a local file (`store.kind: embedded`), created with
//! its parent folder on first start. The pieces, one idea each:
//! - `embedded/schema.rs`: tables, indexes, [`SCHEMA_VERSION`], creating them;
//! - `embedded/connections.rs`: the writer and reader connections and their settings;
//! - `embedded/codec.rs`: rows ↔ records, on the shared `store::codec`;
//! - `embedded/listing.rs`: [`KeyStore::list`] as one indexed query;
//! - `embedded/poller.rs`: other processes' changes → [`Invalidation`]s;
//! - this file: opening, the read and write paths, and the [`KeyStore`] calls.
//!
//! Invariants:
//! - Only hashes are stored (a 32-byte BLOB); lists are JSON text; times are integer
//!   Unix seconds. A row that does not decode is [`StoreError::Corrupt`].
//! - Every mutation that changes what a hash maps to appends that hash to the
//!   `changes` table in the same transaction. Each open store runs a poller thread that
//!   turns new `changes` rows into [`Invalidation`]s every [`POLL_EVERY`], so a revoke
//!   by another process (the CLI) reaches this process's cache well within a second.
//!   `changes.seq` is gap-free (AUTOINCREMENT, serialised writers, rolled-back inserts
//!   do not consume a number), so a gap means pruned rows were missed → `All`.
//! - No lock is held across an `.await`: each call runs on `spawn_blocking` and takes
//!   one connection's `std::sync::Mutex` only inside that blocking closure.
//!
//! Why this shape: WAL mode lets the readers and the one writer work at once, and
//! lets other processes (the CLI) write while the server reads; `busy_timeout` makes
//! concurrent writers wait instead of failing. Indexes make `by_hash` one lookup and
//! keep filtered listings off a full scan at a million keys (a `search` is a
//! substring match, so it walks the ordered index until the page is full).

mod codec;
mod connections;
mod events;
mod listing;
mod poller;
mod quotas;
mod schema;
#[cfg(test)]
mod tests;
mod usage;

pub use poller::POLL_EVERY;
pub use schema::SCHEMA_VERSION;

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use tokio::sync::broadcast;

use self::codec::{decode_audit, decode_key, invalidation_for, raw_hash, raw_key_row};
use self::connections::{Connections, open_connection};
use self::listing::list_page;
use self::poller::Poller;
use self::schema::KEY_COLUMNS;
use super::codec::JsonLists;
use super::{
    AuditEvent, CHANNEL_CAPACITY, Cursor, Invalidation, KeyStore, ListQuery, Page, QuotaGrant,
    StoreError,
};
use crate::keys::{KeyHash, KeyRecord, Timestamp};

/// The `SQLite`-backed [`KeyStore`]. Dropping it stops its poller thread.
pub struct EmbeddedStore {
    conns: Arc<Connections>,
    invalidations: broadcast::Sender<Invalidation>,
    /// Dropped with the store: the poller sees the disconnect and exits.
    _stop_poller: mpsc::Sender<()>,
}

impl EmbeddedStore {
    /// Opens (creating on first start, with its parent folder) the registry at `path`
    /// and starts the invalidation poller.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::unavailable(OpenError::CreateDir {
                    path: parent.to_owned(),
                    source: e,
                })
            })?;
        }
        let conns = Connections::open(path)?;
        let (invalidations, _) = broadcast::channel(CHANNEL_CAPACITY);
        let stop = Poller::start(open_connection(path, false)?, invalidations.clone())?;
        Ok(Self {
            conns: Arc::new(conns),
            invalidations,
            _stop_poller: stop,
        })
    }

    /// The file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.conns.path
    }

    /// Runs `f` on a free reader connection, on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conns = Arc::clone(&self.conns);
        tokio::task::spawn_blocking(move || f(&conns.reader()))
            .await
            .map_err(StoreError::unavailable)?
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the writer; commits if it
    /// returns `Ok`. `f` returns the hashes whose records changed, which are also
    /// appended to `changes` and announced to this process's subscribers at once.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<(T, Vec<Vec<u8>>), StoreError>
            + Send
            + 'static,
    {
        let conns = Arc::clone(&self.conns);
        let (value, changed) = tokio::task::spawn_blocking(move || {
            let mut conn = conns.writer();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(classify)?;
            let (value, changed) = f(&tx)?;
            if !changed.is_empty() {
                let mut append = tx
                    .prepare_cached("INSERT INTO changes (hash, at) VALUES (?1, ?2)")
                    .map_err(classify)?;
                let now = Timestamp::now().0;
                for hash in &changed {
                    append.execute((hash, now)).map_err(classify)?;
                }
            }
            tx.commit().map_err(classify)?;
            Ok::<_, StoreError>((value, changed))
        })
        .await
        .map_err(StoreError::unavailable)??;
        for hash in changed {
            // The poller will announce these again; a duplicate is harmless, and
            // this process's cache learns at once instead of at the next poll.
            let _ = self.invalidations.send(invalidation_for(&hash));
        }
        Ok(value)
    }
}

#[async_trait::async_trait]
impl KeyStore for EmbeddedStore {
    async fn by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let hash = hash.0;
        self.read(move |conn| {
            let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE hash = ?1");
            let mut stmt = conn.prepare_cached(&sql).map_err(classify)?;
            let raw = stmt
                .query_row([&hash[..]], raw_key_row)
                .optional()
                .map_err(classify)?;
            raw.map(decode_key).transpose()
        })
        .await
    }

    async fn by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| select_by_id(conn, &id)).await
    }

    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.write(move |tx| {
            insert_key(tx, &record)?;
            Ok(((), vec![record.hash.0.to_vec()]))
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let cursor = query.cursor.as_deref().map(Cursor::decode).transpose()?;
        let query = query.clone();
        self.read(move |conn| list_page(conn, &query, cursor.as_ref()))
            .await
    }

    async fn revoke(&self, id: &str, at: Timestamp) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_owned();
        // The revocation commits even if the row no longer decodes: a corrupt key
        // must still be stoppable. Decoding happens after, for the reply.
        let raw = self
            .write(move |tx| {
                let sql = format!(
                    "UPDATE keys SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1 \
                     RETURNING {KEY_COLUMNS}"
                );
                let raw = tx
                    .prepare_cached(&sql)
                    .and_then(|mut stmt| stmt.query_row((&id, at.0), raw_key_row).optional())
                    .map_err(classify)?;
                let changed = raw.as_ref().map(raw_hash).into_iter().collect();
                Ok((raw, changed))
            })
            .await?;
        raw.map(decode_key).transpose()
    }

    async fn rotate(
        &self,
        old_id: &str,
        new: &KeyRecord,
        old_expires_at: Timestamp,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let old_id = old_id.to_owned();
        let new = new.clone();
        let raw = self
            .write(move |tx| {
                // min(existing, given): rotation ends the old key, never extends it.
                let sql = format!(
                    "UPDATE keys SET expires_at = min(coalesce(expires_at, ?2), ?2) \
                     WHERE id = ?1 RETURNING {KEY_COLUMNS}"
                );
                let raw = tx
                    .prepare_cached(&sql)
                    .and_then(|mut stmt| {
                        stmt.query_row((&old_id, old_expires_at.0), raw_key_row)
                            .optional()
                    })
                    .map_err(classify)?;
                let Some(raw) = raw else {
                    return Ok((None, Vec::new())); // unknown old id: nothing changes
                };
                // A conflict here returns Err, and the whole transaction rolls back.
                insert_key(tx, &new)?;
                let changed = vec![raw_hash(&raw), new.hash.0.to_vec()];
                Ok((Some(raw), changed))
            })
            .await?;
        raw.map(decode_key).transpose()
    }

    async fn replace(
        &self,
        before: &KeyRecord,
        after: &KeyRecord,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let (was, now) = (JsonLists::of(before)?, JsonLists::of(after)?);
        let (before, after) = (before.clone(), after.clone());
        let raw = self
            .write(move |tx| {
                // Compare-and-set on every editable column, and not revoked.
                let sql = format!(
                    "UPDATE keys SET name = ?2, description = ?3, scopes = ?4, locations = ?5, \
                     grants = ?6, expires_at = ?7, enabled = ?8, metadata = ?9, \
                     allowed_ips = ?10, updated_at = ?11, limits = ?12, plan = ?13, quota = ?14 \
                     WHERE id = ?1 AND revoked_at IS NULL AND name = ?15 AND description = ?16 \
                     AND scopes = ?17 AND locations = ?18 AND grants = ?19 \
                     AND expires_at IS ?20 AND enabled = ?21 AND metadata = ?22 \
                     AND allowed_ips = ?23 AND limits = ?24 AND plan = ?25 AND quota = ?26 \
                     RETURNING {KEY_COLUMNS}"
                );
                let raw = tx
                    .prepare_cached(&sql)
                    .and_then(|mut stmt| {
                        stmt.query_row(
                            rusqlite::params![
                                before.id,
                                after.name,
                                after.description,
                                now.scopes,
                                now.locations,
                                now.grants,
                                after.expires_at.map(|t| t.0),
                                after.enabled,
                                now.metadata,
                                now.allowed_ips,
                                after.updated_at.map(|t| t.0),
                                now.limits,
                                after.plan.clone().unwrap_or_default(),
                                now.quota,
                                before.name,
                                before.description,
                                was.scopes,
                                was.locations,
                                was.grants,
                                before.expires_at.map(|t| t.0),
                                before.enabled,
                                was.metadata,
                                was.allowed_ips,
                                was.limits,
                                before.plan.clone().unwrap_or_default(),
                                was.quota,
                            ],
                            raw_key_row,
                        )
                        .optional()
                    })
                    .map_err(classify)?;
                if let Some(raw) = raw {
                    let changed = vec![raw_hash(&raw)];
                    return Ok((Some(raw), changed));
                }
                let exists: Option<i64> = tx
                    .query_row("SELECT 1 FROM keys WHERE id = ?1", [&before.id], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(classify)?;
                match exists {
                    None => Ok((None, Vec::new())),
                    Some(_) => Err(StoreError::Conflict),
                }
            })
            .await?;
        raw.map(decode_key).transpose()
    }

    async fn record_use(&self, uses: &[(String, Timestamp)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let uses = uses.to_vec();
        self.write(move |tx| {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE keys SET last_used_at = max(coalesce(last_used_at, ?2), ?2) \
                     WHERE id = ?1",
                )
                .map_err(classify)?;
            for (id, at) in &uses {
                stmt.execute((id, at.0)).map_err(classify)?;
            }
            // Last use changes no decision: not an invalidation.
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let event = event.clone();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO audit (at, actor, action, key_id, business_id, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.execute((
                    event.at.0,
                    &event.actor,
                    &event.action,
                    &event.key_id,
                    &event.business_id,
                    &event.detail,
                ))
            })
            .map_err(classify)?;
            Ok(((), Vec::new()))
        })
        .await
    }

    async fn audit(
        &self,
        business_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let business_id = business_id.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let columns = "seq, at, actor, action, key_id, business_id, detail";
            let (sql, params): (String, Vec<Value>) = match business_id {
                Some(b) => (
                    format!(
                        "SELECT {columns} FROM audit WHERE business_id = ?1 \
                         ORDER BY at DESC, seq DESC LIMIT ?2"
                    ),
                    vec![Value::Text(b), Value::Integer(limit)],
                ),
                None => (
                    format!("SELECT {columns} FROM audit ORDER BY at DESC, seq DESC LIMIT ?1"),
                    vec![Value::Integer(limit)],
                ),
            };
            let mut stmt = conn.prepare_cached(&sql).map_err(classify)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params), |row| {
                    (0..7)
                        .map(|i| row.get::<_, Value>(i))
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(classify)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(decode_audit(row.map_err(classify)?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT version FROM schema_version", [], |_| Ok(()))
                .map_err(classify)
        })
        .await
    }

    async fn quota_take(
        &self,
        window: &str,
        limit: u64,
        want: u64,
        expires_at: Option<Timestamp>,
    ) -> Result<QuotaGrant, StoreError> {
        self.take_quota(window, limit, want, expires_at).await
    }

    async fn quota_give_back(&self, window: &str, n: u64) -> Result<(), StoreError> {
        self.give_back_quota(window, n).await
    }

    async fn quota_used(&self, window: &str) -> Result<u64, StoreError> {
        self.quota_used_in(window).await
    }

    async fn add_usage(
        &self,
        counts: &[crate::usage::Count],
        retention: std::time::Duration,
    ) -> Result<(), StoreError> {
        self.write_usage(counts, retention).await
    }

    async fn usage(
        &self,
        series: &crate::store::UsageSeries,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String, u64)>, StoreError> {
        self.read_usage(series, from, to).await
    }

    async fn push_event(
        &self,
        event: &crate::events::Event,
        once: Option<&crate::events::Once>,
    ) -> Result<Option<u64>, StoreError> {
        self.push_event_to_log(event, once).await
    }

    async fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<crate::events::Page, StoreError> {
        self.log_after(after, limit).await
    }

    async fn recent_events(
        &self,
        business_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<crate::events::Stored>, StoreError> {
        self.log_recent(business_id, limit).await
    }

    async fn event_cursor(&self, url: &str) -> Result<Option<u64>, StoreError> {
        self.cursor_of(url).await
    }

    async fn set_event_cursor(&self, url: &str, seq: u64) -> Result<(), StoreError> {
        self.move_cursor(url, seq).await
    }

    async fn record_delivery(
        &self,
        seq: u64,
        delivery: &crate::events::Delivery,
    ) -> Result<(), StoreError> {
        self.write_delivery(seq, delivery).await
    }

    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        self.take_lease(name, holder, ttl).await
    }

    fn invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.invalidations.subscribe()
    }
}

/// Why opening the file failed (the cause inside [`StoreError::Unavailable`]).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the folder {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the file has schema version {found}; this keygate knows up to {SCHEMA_VERSION}")]
    NewerSchema { found: i64 },
    #[error("cannot start the invalidation poller")]
    Thread(#[source] std::io::Error),
}

/// Turns a driver error into the store's: constraint → `Conflict`, else `Unavailable`
/// (busy, I/O, a full disk, a broken file: the store cannot answer).
fn classify(error: rusqlite::Error) -> StoreError {
    if error.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
        StoreError::Conflict
    } else {
        StoreError::unavailable(error)
    }
}

/// Inserts one `keys` row; an id or hash already there → `Conflict`.
fn insert_key(tx: &rusqlite::Transaction<'_>, r: &KeyRecord) -> Result<(), StoreError> {
    let JsonLists {
        scopes,
        locations,
        grants,
        metadata,
        allowed_ips,
        limits,
        quota,
    } = JsonLists::of(r)?;
    let sql = format!(
        "INSERT INTO keys ({KEY_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
         ?18, ?19, ?20, ?21, ?22, ?23)"
    );
    let mut stmt = tx.prepare_cached(&sql).map_err(classify)?;
    stmt.execute(rusqlite::params![
        r.id,
        &r.hash.0[..],
        r.name,
        r.description,
        r.prefix,
        r.user_id,
        r.business_id,
        scopes,
        locations,
        grants,
        r.created_at.0,
        r.expires_at.map(|t| t.0),
        r.revoked_at.map(|t| t.0),
        r.last_used_at.map(|t| t.0),
        r.created_by,
        r.enabled,
        metadata,
        allowed_ips,
        r.updated_at.map(|t| t.0),
        limits,
        r.plan.clone().unwrap_or_default(),
        quota,
        r.quota_counter,
    ])
    .map_err(classify)?;
    Ok(())
}

fn select_by_id(conn: &Connection, id: &str) -> Result<Option<KeyRecord>, StoreError> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql).map_err(classify)?;
    let raw = stmt
        .query_row([id], raw_key_row)
        .optional()
        .map_err(classify)?;
    raw.map(decode_key).transpose()
}
