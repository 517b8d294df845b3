//! The embedded store's tests: the shared contract on a fresh file, then what is
//! particular to `SQLite`: the poller's gaps and start point, reopening, damaged rows,
//! the schema version, unopenable paths and the query plans.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::time::timeout;

use super::connections::BUSY_TIMEOUT;
use super::listing::escape_like;
use super::*;
use crate::store::contract::{self, record};

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
    raw.execute(
        "INSERT INTO changes (hash, at) VALUES (x'0102', CAST(strftime('%s','now') AS INTEGER))",
        [],
    )
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

/// A file written by the first schema (before suspension, metadata and allowlists) opens,
/// is migrated in place, and its keys read as enabled, without metadata, usable anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_file_is_migrated_and_its_keys_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    let key = record("kid_v1", "biz", "u", 1);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1);
             CREATE TABLE keys (
                 id TEXT PRIMARY KEY NOT NULL, hash BLOB NOT NULL UNIQUE, name TEXT NOT NULL,
                 description TEXT NOT NULL, prefix TEXT NOT NULL, user_id TEXT NOT NULL,
                 business_id TEXT NOT NULL, scopes TEXT NOT NULL, locations TEXT NOT NULL,
                 grants TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER,
                 revoked_at INTEGER, last_used_at INTEGER, created_by TEXT NOT NULL);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO keys VALUES (?1, ?2, ?3, '', 'kg_abcdef', 'u', 'biz', '[]', '[\"*\"]', \
             '[]', 1, NULL, NULL, NULL, 'test')",
            rusqlite::params![key.id, &key.hash.0[..], key.name],
        )
        .unwrap();
    }
    let store = EmbeddedStore::open(&path).unwrap();
    let read = store.by_hash(&key.hash).await.unwrap().unwrap();
    assert_eq!(read, key, "old rows read with the new fields' defaults");
    let mut suspended = read.clone();
    suspended.enabled = false;
    assert_eq!(
        store.replace(&read, &suspended).await.unwrap(),
        Some(suspended)
    );
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}
