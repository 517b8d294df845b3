//! The connections a store holds on its file: one writer and a few readers.
//!
//! Job: open each connection with the same settings (WAL, `busy_timeout`,
//! `synchronous = NORMAL`), and hand out the writer or a free reader.
//!
//! Invariants: a connection's `std::sync::Mutex` is taken only inside a blocking
//! closure (`spawn_blocking`), never across an `.await`; a poisoned lock is taken over,
//! since a panic mid-call leaves nothing half-done (a dropped transaction rolls back).
//!
//! Why several connections: WAL lets readers run beside the one writer, and lets other
//! processes (the CLI) write while the server reads; `busy_timeout` makes concurrent
//! writers wait instead of failing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::OpenError;
use super::schema::create_schema;
use crate::store::StoreError;

/// How long a connection waits for another writer's lock.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Reader connections; WAL lets them run beside the writer.
const READERS: usize = 2;

/// A store's connections on one file.
pub(super) struct Connections {
    pub(super) path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl Connections {
    /// The writer (which creates or checks the schema first) and [`READERS`] readers.
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let mut writer = open_connection(path, false)?;
        create_schema(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| open_connection(path, true).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// The one writer (waits for it).
    pub(super) fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-call leaves nothing half-done: a dropped Transaction rolls back.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A free reader if there is one, else wait for the next in turn.
    pub(super) fn reader(&self) -> MutexGuard<'_, Connection> {
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

/// One connection on `path`; `read_only` for a reader (only a writer sets WAL).
pub(super) fn open_connection(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
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
