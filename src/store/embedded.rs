//! The single-node key registry: one `SQLite` file, shared by the server and the CLI.
//!
//! Job: implement [`KeyStore`] on a local file (`store.kind: embedded`), created with
//! its parent folder on first start.
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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::broadcast;

use super::{AuditEvent, Cursor, Invalidation, KeyStore, ListQuery, Page, StoreError};
use crate::keys::{Grant, KeyHash, KeyRecord, Status, Timestamp};

/// The schema this code writes. Opening a file with a newer one is refused.
pub const SCHEMA_VERSION: i64 = 1;
/// How often the poller looks for other writers' changes.
pub const POLL_EVERY: Duration = Duration::from_millis(150);
/// How long a `changes` row is kept: far longer than any live poller lags.
const CHANGES_KEPT_SECS: i64 = 600;
/// How often the poller prunes old `changes` rows.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Rows read per poll; a fuller batch means the poller fell behind → `All`.
const POLL_BATCH: usize = 512;
/// How long a connection waits for another writer's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Reader connections; WAL lets them run beside the writer.
const READERS: usize = 2;
/// Invalidations buffered per subscriber before it lags (and must assume `All`).
const CHANNEL_CAPACITY: usize = 1024;

/// Created on first open, inside one `BEGIN IMMEDIATE` so two processes starting
/// together cannot race. `IF NOT EXISTS` everywhere so a later version can add to it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    id           TEXT PRIMARY KEY NOT NULL,
    hash         BLOB NOT NULL UNIQUE,      -- SHA-256 of the secret, 32 bytes
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    business_id  TEXT NOT NULL,
    scopes       TEXT NOT NULL,             -- JSON array of strings
    locations    TEXT NOT NULL,             -- JSON array of strings
    grants       TEXT NOT NULL,             -- JSON array of {role, locations}
    created_at   INTEGER NOT NULL,          -- Unix seconds
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER,
    created_by   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_created  ON keys (created_at, id);
CREATE INDEX IF NOT EXISTS keys_by_business ON keys (business_id, created_at, id);
CREATE INDEX IF NOT EXISTS keys_by_user     ON keys (user_id, created_at, id);
CREATE TABLE IF NOT EXISTS changes (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB NOT NULL,
    at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_at ON changes (at);
CREATE TABLE IF NOT EXISTS audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    business_id TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_at       ON audit (at);
CREATE INDEX IF NOT EXISTS audit_by_business ON audit (business_id, at);
";

/// Columns of `keys` in the order [`decode_key`] reads them.
const KEY_COLUMNS: &str = "id, hash, name, description, prefix, user_id, business_id, \
     scopes, locations, grants, created_at, expires_at, revoked_at, last_used_at, created_by";
const KEY_COLUMN_COUNT: usize = 15;

/// The `SQLite`-backed [`KeyStore`]. Dropping it stops its poller thread.
pub struct EmbeddedStore {
    conns: Arc<Connections>,
    invalidations: broadcast::Sender<Invalidation>,
    /// Dropped with the store: the poller sees the disconnect and exits.
    _stop_poller: mpsc::Sender<()>,
}

struct Connections {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl Connections {
    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-call leaves nothing half-done: a dropped Transaction rolls back.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A free reader if there is one, else wait for the next in turn.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        for i in 0..n {
            if let Some(slot) = self.readers.get((start + i) % n)
                && let Ok(guard) = slot.try_lock()
            {
                return guard;
            }
        }
        match self.readers.get(start % n) {
            Some(slot) => slot.lock().unwrap_or_else(PoisonError::into_inner),
            None => self.writer(), // no readers configured: share the writer
        }
    }
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
        let mut writer = open_connection(path, false)?;
        create_schema(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| open_connection(path, true).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let poller_conn = open_connection(path, false)?;
        // Start from the current high-water mark, read before `open` returns, so
        // nothing written after `open` is missed and nothing older is replayed.
        let last_seq = high_water_mark(&poller_conn).map_err(classify)?;

        let (invalidations, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (stop, stopped) = mpsc::channel();
        let poller = Poller {
            conn: poller_conn,
            tx: invalidations.clone(),
            stop: stopped,
            last_seq,
        };
        std::thread::Builder::new()
            .name("keygate-store-poll".to_owned())
            .spawn(move || poller.run())
            .map_err(|e| StoreError::unavailable(OpenError::Thread(e)))?;

        Ok(Self {
            conns: Arc::new(Connections {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
            }),
            invalidations,
            _stop_poller: stop,
        })
    }

    /// The file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.conns.path
    }

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

fn open_connection(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    let failed = |source| {
        StoreError::unavailable(OpenError::Sqlite {
            path: path.to_owned(),
            source,
        })
    };
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(failed)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
    if !read_only {
        // journal_mode answers with a row; WAL persists in the file once set.
        let _: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(failed)?;
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(failed)?;
    Ok(conn)
}

fn create_schema(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(classify)?;
    tx.execute_batch(SCHEMA).map_err(classify)?;
    let found: Option<i64> = tx
        .query_row("SELECT max(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .map_err(classify)?;
    match found {
        None => {
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )
            .map_err(classify)?;
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::unavailable(OpenError::NewerSchema { found: v }));
        }
        // Older versions would be migrated here, step by step, in this transaction.
        Some(_) => {}
    }
    tx.commit().map_err(classify)
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

/// Turns a driver error into the store's: constraint → `Conflict`, else `Unavailable`
/// (busy, I/O, a full disk, a broken file: the store cannot answer).
fn classify(error: rusqlite::Error) -> StoreError {
    if error.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
        StoreError::Conflict
    } else {
        StoreError::unavailable(error)
    }
}

fn insert_key(tx: &rusqlite::Transaction<'_>, r: &KeyRecord) -> Result<(), StoreError> {
    let encode = |column: &'static str, value: Result<String, serde_json::Error>| {
        value.map_err(|source| StoreError::Corrupt {
            record: r.id.clone(),
            source: Box::new(Undecodable::Json { column, source }),
        })
    };
    let scopes = encode("scopes", serde_json::to_string(&r.scopes))?;
    let locations = encode("locations", serde_json::to_string(&r.locations))?;
    let grants = encode("grants", serde_json::to_string(&r.grants))?;
    let sql = format!(
        "INSERT INTO keys ({KEY_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
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

/// Builds the listing SQL: filters as `WHERE` terms on indexed columns where there
/// are any, the cursor as a row-value range, newest first.
fn list_page(
    conn: &Connection,
    query: &ListQuery,
    cursor: Option<&Cursor>,
) -> Result<Page, StoreError> {
    let mut terms: Vec<&str> = Vec::new();
    let mut params: Vec<Value> = Vec::new();
    if let Some(b) = &query.business_id {
        terms.push("business_id = ?");
        params.push(Value::Text(b.clone()));
    }
    if let Some(u) = &query.user_id {
        terms.push("user_id = ?");
        params.push(Value::Text(u.clone()));
    }
    match query.status {
        None => {}
        Some(Status::Revoked) => terms.push("revoked_at IS NOT NULL"),
        Some(Status::Expired) => {
            terms.push("revoked_at IS NULL AND expires_at IS NOT NULL AND expires_at <= ?");
            params.push(Value::Integer(query.now.0));
        }
        Some(Status::Active) => {
            terms.push("revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)");
            params.push(Value::Integer(query.now.0));
        }
    }
    if let Some(search) = query.search.as_deref().filter(|s| !s.is_empty()) {
        terms.push(
            "(name LIKE ? ESCAPE '\\' OR description LIKE ? ESCAPE '\\' \
             OR id LIKE ? ESCAPE '\\')",
        );
        let pattern = format!("%{}%", escape_like(search));
        params.extend(std::iter::repeat_n(Value::Text(pattern), 3));
    }
    if let Some(c) = cursor {
        terms.push("(created_at, id) < (?, ?)");
        params.push(Value::Integer(c.created_at.0));
        params.push(Value::Text(c.id.clone()));
    }
    let page_size = query.page_size();
    params.push(Value::Integer(
        i64::try_from(page_size.saturating_add(1)).unwrap_or(i64::MAX),
    ));
    let filter = if terms.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", terms.join(" AND "))
    };
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM keys {filter} ORDER BY created_at DESC, id DESC LIMIT ?"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(classify)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(classify)?;
    let mut keys = Vec::with_capacity(page_size.min(1024));
    let mut more = false;
    while let Some(row) = rows.next().map_err(classify)? {
        if keys.len() == page_size {
            more = true;
            break;
        }
        keys.push(decode_key(raw_key_row(row).map_err(classify)?)?);
    }
    let next_cursor = if more {
        keys.last().map(|r| Cursor::after(r).encode())
    } else {
        None
    };
    Ok(Page { keys, next_cursor })
}

/// `LIKE` pattern text matching `text` literally (with `ESCAPE '\'`).
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A `keys` row as `SQLite` holds it: reading a `Value` never fails on type, so a
/// wrongly typed column surfaces in [`decode_key`] as `Corrupt`, not as a query error.
type RawRow = Vec<Value>;

fn raw_key_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    (0..KEY_COLUMN_COUNT)
        .map(|i| row.get::<_, Value>(i))
        .collect()
}

fn raw_hash(raw: &RawRow) -> Vec<u8> {
    match raw.get(1) {
        Some(Value::Blob(b)) => b.clone(),
        _ => Vec::new(), // not a hash: the poller answers it with `All`
    }
}

/// What is wrong with a stored row (the cause inside [`StoreError::Corrupt`]).
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    #[error("column `{column}` is missing or has the wrong type")]
    Type { column: &'static str },
    #[error("column `hash` holds {len} bytes, not 32")]
    HashLength { len: usize },
    #[error("column `{column}` holds invalid JSON")]
    Json {
        column: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

fn decode_key(raw: RawRow) -> Result<KeyRecord, StoreError> {
    let mut cols = raw.into_iter();
    let mut next = || cols.next().unwrap_or(Value::Null);
    let id = next();
    let record = match &id {
        Value::Text(id) => id.clone(),
        _ => "<row with a bad id>".to_owned(),
    };
    let corrupt = |e: Undecodable| StoreError::Corrupt {
        record: record.clone(),
        source: Box::new(e),
    };
    let id = text(id, "id").map_err(corrupt)?;
    let hash = match next() {
        Value::Blob(b) => <[u8; 32]>::try_from(b.as_slice())
            .map(KeyHash)
            .map_err(|_| Undecodable::HashLength { len: b.len() }),
        _ => Err(Undecodable::Type { column: "hash" }),
    }
    .map_err(corrupt)?;
    let name = text(next(), "name").map_err(corrupt)?;
    let description = text(next(), "description").map_err(corrupt)?;
    let prefix = text(next(), "prefix").map_err(corrupt)?;
    let user_id = text(next(), "user_id").map_err(corrupt)?;
    let business_id = text(next(), "business_id").map_err(corrupt)?;
    let scopes: Vec<String> = json(next(), "scopes").map_err(corrupt)?;
    let locations: Vec<String> = json(next(), "locations").map_err(corrupt)?;
    let grants: Vec<Grant> = json(next(), "grants").map_err(corrupt)?;
    let created_at = time(&next(), "created_at")
        .and_then(|t| {
            t.ok_or(Undecodable::Type {
                column: "created_at",
            })
        })
        .map_err(corrupt)?;
    let expires_at = time(&next(), "expires_at").map_err(corrupt)?;
    let revoked_at = time(&next(), "revoked_at").map_err(corrupt)?;
    let last_used_at = time(&next(), "last_used_at").map_err(corrupt)?;
    let created_by = text(next(), "created_by").map_err(corrupt)?;
    Ok(KeyRecord {
        id,
        hash,
        name,
        description,
        prefix,
        user_id,
        business_id,
        scopes,
        locations,
        grants,
        created_at,
        expires_at,
        revoked_at,
        last_used_at,
        created_by,
    })
}

fn decode_audit(raw: Vec<Value>) -> Result<AuditEvent, StoreError> {
    let mut cols = raw.into_iter();
    let seq = cols.next().unwrap_or(Value::Null);
    let corrupt = |e: Undecodable| StoreError::Corrupt {
        record: match &seq {
            Value::Integer(n) => format!("audit #{n}"),
            _ => "audit row".to_owned(),
        },
        source: Box::new(e),
    };
    let mut next = || cols.next().unwrap_or(Value::Null);
    Ok(AuditEvent {
        at: time(&next(), "at")
            .and_then(|t| t.ok_or(Undecodable::Type { column: "at" }))
            .map_err(corrupt)?,
        actor: text(next(), "actor").map_err(corrupt)?,
        action: text(next(), "action").map_err(corrupt)?,
        key_id: text(next(), "key_id").map_err(corrupt)?,
        business_id: text(next(), "business_id").map_err(corrupt)?,
        detail: text(next(), "detail").map_err(corrupt)?,
    })
}

fn text(value: Value, column: &'static str) -> Result<String, Undecodable> {
    match value {
        Value::Text(s) => Ok(s),
        _ => Err(Undecodable::Type { column }),
    }
}

fn time(value: &Value, column: &'static str) -> Result<Option<Timestamp>, Undecodable> {
    match value {
        Value::Null => Ok(None),
        Value::Integer(n) => Ok(Some(Timestamp(*n))),
        _ => Err(Undecodable::Type { column }),
    }
}

fn json<T: serde::de::DeserializeOwned>(
    value: Value,
    column: &'static str,
) -> Result<T, Undecodable> {
    let text = text(value, column)?;
    serde_json::from_str(&text).map_err(|source| Undecodable::Json { column, source })
}

fn invalidation_for(hash: &[u8]) -> Invalidation {
    <[u8; 32]>::try_from(hash).map_or(Invalidation::All, |h| Invalidation::Key(KeyHash(h)))
}

/// The background thread turning `changes` rows into [`Invalidation`]s.
struct Poller {
    conn: Connection,
    tx: broadcast::Sender<Invalidation>,
    stop: mpsc::Receiver<()>,
    last_seq: i64,
}

impl Poller {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::contract::{self, record};
    use tokio::sync::broadcast::error::RecvError;
    use tokio::time::timeout;

    fn temp_store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("data/keygate.db")).unwrap();
        (dir, store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_contract_suite() {
        let (_dir, store) = temp_store();
        let store: Arc<dyn KeyStore> = Arc::new(store);
        contract::contract_suite(&*store).await;
    }

    /// Two stores on one file stand for the server and the CLI, two processes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_invalidation_contract() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let server = EmbeddedStore::open(&path).unwrap();
        let cli = EmbeddedStore::open(&path).unwrap();
        contract::invalidation(&cli, &server).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missed_changes_invalidate_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gap.db");
        let store = EmbeddedStore::open(&path).unwrap();
        let mut rx = store.invalidations();
        // Another writer appends rows that are pruned before this poller reads them.
        // (Rows carry the current time: the poller's own pruning drops old ones.)
        let mut raw = Connection::open(&path).unwrap();
        raw.busy_timeout(BUSY_TIMEOUT).unwrap();
        let tx = raw.transaction().unwrap();
        for _ in 0..3 {
            tx.execute(
                "INSERT INTO changes (hash, at) VALUES (zeroblob(32), CAST(strftime('%s','now') AS INTEGER))",
                [],
            )
            .unwrap();
        }
        tx.execute("DELETE FROM changes", []).unwrap();
        tx.execute(
            "INSERT INTO changes (hash, at) VALUES (zeroblob(32), CAST(strftime('%s','now') AS INTEGER))",
            [],
        )
        .unwrap();
        tx.commit().unwrap();
        let got = timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Invalidation::All);

        // A malformed hash in `changes` is also answered with `All`.
        raw.execute("INSERT INTO changes (hash, at) VALUES (x'0102', CAST(strftime('%s','now') AS INTEGER))", [])
            .unwrap();
        let got = timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Invalidation::All);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_store_starts_after_existing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.db");
        let first = EmbeddedStore::open(&path).unwrap();
        let old = record("kid_old", "biz", "u", 1);
        first.insert(&old).await.unwrap();
        let late = EmbeddedStore::open(&path).unwrap();
        let mut rx = late.invalidations();
        let new = record("kid_new", "biz", "u", 2);
        first.insert(&new).await.unwrap();
        // The first thing `late` announces is the change made after it opened.
        let got = timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Invalidation::Key(new.hash));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_store_stops_the_poller() {
        let (_dir, store) = temp_store();
        let mut rx = store.invalidations();
        drop(store);
        // The poller holds the last sender; the channel closes only once it exits.
        let got = timeout(Duration::from_secs(2), rx.recv()).await.unwrap();
        assert!(matches!(got, Err(RecvError::Closed)), "{got:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopening_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/keygate.db");
        let key = record("kid_keep", "biz", "u", 1);
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.insert(&key).await.unwrap();
            store
                .append_audit(&AuditEvent {
                    at: Timestamp(5),
                    actor: "a".into(),
                    action: "created".into(),
                    key_id: key.id.clone(),
                    business_id: "biz".into(),
                    detail: String::new(),
                })
                .await
                .unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.by_hash(&key.hash).await.unwrap(), Some(key.clone()));
        assert_eq!(store.audit(None, 10).await.unwrap().len(), 1);
        store.ping().await.unwrap();
        let version: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_rows_are_errors_not_panics() {
        let (dir, store) = temp_store();
        let path = dir.path().join("data/keygate.db");
        let raw = Connection::open(&path).unwrap();
        raw.busy_timeout(BUSY_TIMEOUT).unwrap();
        let damage = [
            (
                "kid_json",
                "UPDATE keys SET scopes = 'not json' WHERE id = ?1",
            ),
            (
                "kid_grants",
                "UPDATE keys SET grants = '[{\"role\": 1}]' WHERE id = ?1",
            ),
            ("kid_short", "UPDATE keys SET hash = x'0102' WHERE id = ?1"),
            ("kid_type", "UPDATE keys SET name = x'ff' WHERE id = ?1"),
            (
                "kid_time",
                "UPDATE keys SET created_at = 'yesterday' WHERE id = ?1",
            ),
            ("kid_null", "UPDATE keys SET expires_at = 1.5 WHERE id = ?1"),
        ];
        for (i, (id, sql)) in damage.iter().enumerate() {
            let key = record(id, "biz-corrupt", "u", i64::try_from(i).unwrap());
            store.insert(&key).await.unwrap();
            raw.execute(sql, [id]).unwrap();
            let err = store.by_id(id).await.unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt { record, .. } if record == id),
                "{id}: {err:?}"
            );
            assert!(std::error::Error::source(&err).is_some(), "cause kept");
            if *id != "kid_short" {
                let err = store.by_hash(&key.hash).await.unwrap_err();
                assert!(matches!(err, StoreError::Corrupt { .. }), "{id}: {err:?}");
            }
        }
        let q = ListQuery {
            business_id: Some("biz-corrupt".into()),
            ..ListQuery::default()
        };
        assert!(matches!(
            store.list(&q).await,
            Err(StoreError::Corrupt { .. })
        ));

        // A corrupt key can still be revoked: the revocation lands, the reply says Corrupt.
        let mut rx = store.invalidations();
        let err = store.revoke("kid_json", Timestamp(9)).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let revoked: Option<i64> = raw
            .query_row(
                "SELECT revoked_at FROM keys WHERE id = 'kid_json'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(revoked, Some(9));
        assert_eq!(
            rx.try_recv().unwrap(),
            Invalidation::Key(crate::keys::hash("secret-of-kid_json"))
        );

        store
            .append_audit(&AuditEvent {
                at: Timestamp(1),
                actor: "a".into(),
                action: "created".into(),
                key_id: "k".into(),
                business_id: "b".into(),
                detail: String::new(),
            })
            .await
            .unwrap();
        raw.execute("UPDATE audit SET actor = x'00'", []).unwrap();
        assert!(matches!(
            store.audit(None, 10).await,
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        drop(EmbeddedStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        let err = EmbeddedStore::open(&path).err().unwrap();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    }

    #[test]
    fn an_unopenable_path_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        // A folder cannot be created under a file.
        let err = EmbeddedStore::open(&file.join("keygate.db")).err().unwrap();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        // A file that is not a database.
        std::fs::write(dir.path().join("junk.db"), vec![7u8; 4096]).unwrap();
        let err = EmbeddedStore::open(&dir.path().join("junk.db"))
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    }

    /// The scale claims: `by_hash` is one index lookup, filtered listings walk an index
    /// in order (no full scan, no sort), for every filter combination.
    #[test]
    fn queries_use_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.db");
        drop(EmbeddedStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join(" | ")
        };
        let by_hash = plan(&format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE hash = x'00'"
        ));
        assert!(
            by_hash.contains("USING INDEX") && by_hash.contains("hash=?"),
            "{by_hash}"
        );
        for (filter, index) in [
            ("WHERE business_id = 'b'", "keys_by_business"),
            ("WHERE user_id = 'u'", "keys_by_user"),
            (
                "WHERE business_id = 'b' AND (created_at, id) < (5, 'k')",
                "keys_by_business",
            ),
            ("", "keys_by_created"),
            ("WHERE (created_at, id) < (5, 'k')", "keys_by_created"),
        ] {
            let p = plan(&format!(
                "SELECT {KEY_COLUMNS} FROM keys {filter} ORDER BY created_at DESC, id DESC LIMIT 51"
            ));
            assert!(p.contains(index), "{filter}: {p}");
            assert!(!p.contains("TEMP B-TREE"), "{filter} sorts: {p}");
        }
        let audit =
            plan("SELECT * FROM audit WHERE business_id = 'b' ORDER BY at DESC, seq DESC LIMIT 10");
        assert!(
            audit.contains("audit_by_business") && !audit.contains("TEMP B-TREE"),
            "{audit}"
        );
        let audit = plan("SELECT * FROM audit ORDER BY at DESC, seq DESC LIMIT 10");
        assert!(
            audit.contains("audit_by_at") && !audit.contains("TEMP B-TREE"),
            "{audit}"
        );
    }

    #[test]
    fn like_escaping() {
        assert_eq!(escape_like(r"50%_a\b"), r"50\%\_a\\b");
    }
}
