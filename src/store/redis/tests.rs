//! The Redis store's tests, on real `redis-server`s: the shared contract on one server
//! and on a Cluster, then what is particular to Redis: outages and recovery, values
//! edited by hand, the index member order and malformed replies.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use super::codec::decode_reply;
use super::schema::{AUDIT_ALL, index_member, parse_member, record_key};
use super::subscriber::parse_invalidation;
use super::testing::{RedisCluster, RedisServer};
use super::*;
use crate::store::contract::{self, expect_invalidation, record};

const T: Duration = Duration::from_millis(500);

fn open(url: &str) -> RedisStore {
    RedisStore::open(&Target::Single(url.to_owned()), T).unwrap()
}

/// Polls `ping` until it answers (bounded).
async fn until_ready(store: &RedisStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "store never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_contract_suite() {
    let server = RedisServer::start();
    let store = open(&server.url());
    contract::contract_suite(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_contract_suite_on_a_cluster() {
    let cluster = RedisCluster::start();
    let store = RedisStore::open(&Target::Cluster(cluster.seeds()), T).unwrap();
    until_ready(&store).await;
    contract::contract_suite(&store).await;
    // Keys really spread over the nodes.
    let holding = cluster
        .nodes
        .iter()
        .filter(|n| n.cli_text(&["dbsize"]).trim() != "0")
        .count();
    assert!(holding >= 2, "keys on {holding} node(s) only");
}

/// Two stores on one server stand for two gateways of a fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_invalidation_contract() {
    let server = RedisServer::start();
    // Frozen while the stores open, so the reader cannot subscribe (and send its `All`
    // to nobody) before its receiver exists.
    server.freeze(true);
    let (a, b) = (open(&server.url()), open(&server.url()));
    let mut rx = b.invalidations();
    server.freeze(false);
    until_ready(&a).await;
    // The reader listens before the contract starts: it says `All` on its first subscribe.
    expect_invalidation(&mut rx, &Invalidation::All, Duration::from_secs(5)).await;
    contract::invalidation(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_redis_is_down_and_recovers_with_all() {
    let mut server = RedisServer::start();
    server.stop();
    let store = open(&server.url());
    let mut rx = store.invalidations();
    let started = Instant::now();
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(started.elapsed() < T * 2, "a down Redis fails fast");
    assert!(store.by_hash(&KeyHash([1; 32])).await.is_err());
    assert!(store.error_count() >= 1);
    server.restart();
    until_ready(&store).await;
    expect_invalidation(&mut rx, &Invalidation::All, Duration::from_secs(5)).await;
    // And again after an outage in the middle of a life.
    server.restart();
    until_ready(&store).await;
    expect_invalidation(&mut rx, &Invalidation::All, Duration::from_secs(5)).await;
    let key = record("kid_back", "biz", "u", 1);
    store.insert(&key).await.unwrap();
    assert_eq!(store.by_id(&key.id).await.unwrap(), Some(key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edited_values_are_corrupt_not_panics() {
    let server = RedisServer::start();
    let store = open(&server.url());
    let mut keys = Vec::new();
    for (i, damage) in [
        &["SET", "{k}", "a string"][..],
        &["HSET", "{k}", "scopes", "not json"],
        &["HSET", "{k}", "grants", "[{\"role\": 1}]"],
        &["HSET", "{k}", "created_at", "yesterday"],
        &["HDEL", "{k}", "name"],
        &["HSET", "{k}", "expires_at", "1.5"],
        &["HSET", "{k}", "enabled", "yes"],
        &["HSET", "{k}", "allowed_ips", "[\"not an address\"]"],
        &["HSET", "{k}", "metadata", "{\"plan\": 1}"],
    ]
    .iter()
    .enumerate()
    {
        let key = record(
            &format!("kid_bad{i}"),
            "biz-bad",
            "u",
            i64::try_from(i).unwrap(),
        );
        store.insert(&key).await.unwrap();
        let name = record_key(&key.hash.to_hex());
        if damage[0] == "SET" {
            server.cli_text(&["DEL", &name]);
        }
        let args: Vec<&str> = damage
            .iter()
            .map(|a| if *a == "{k}" { name.as_str() } else { a })
            .collect();
        server.cli_text(&args);
        let err = store.by_hash(&key.hash).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "{damage:?}: {err:?}"
        );
        let err = store.by_id(&key.id).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "{damage:?}: {err:?}"
        );
        keys.push(key);
    }
    let q = ListQuery {
        business_id: Some("biz-bad".into()),
        ..ListQuery::default()
    };
    assert!(matches!(
        store.list(&q).await,
        Err(StoreError::Corrupt { .. })
    ));
    // A damaged hash is still revocable; the reply says Corrupt.
    let err = store.revoke(&keys[1].id, Timestamp(5)).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let at = server.cli_text(&["HGET", &record_key(&keys[1].hash.to_hex()), "revoked_at"]);
    assert_eq!(at.trim(), "5");
    // A wrong-type value stays refused; record_use skips it without failing the batch.
    store
        .record_use(&[
            (keys[0].id.clone(), Timestamp(1)),
            (keys[2].id.clone(), Timestamp(1)),
        ])
        .await
        .unwrap();
    server.cli_text(&["LPUSH", AUDIT_ALL, "{not json"]);
    assert!(matches!(
        store.audit(None, 5).await,
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn members_sort_like_the_sql_order() {
    let mut members = [
        index_member(Timestamp(-5), "b", "00"),
        index_member(Timestamp(3), "ab", "00"),
        index_member(Timestamp(3), "a", "00"),
        index_member(Timestamp(3), "a-", "00"),
        index_member(Timestamp(i64::MAX), "z", "00"),
        index_member(Timestamp(0), "z", "00"),
    ];
    members.sort();
    let keys: Vec<_> = members
        .iter()
        .map(|m| m.split(|b| *b == 0).nth(1).unwrap().to_vec())
        .collect();
    assert_eq!(
        keys,
        vec![
            b"b".to_vec(),
            b"z".to_vec(),
            b"a".to_vec(),
            b"a-".to_vec(),
            b"ab".to_vec(),
            b"z".to_vec()
        ]
    );
}

#[test]
fn malformed_replies_are_corrupt_not_panics() {
    let h = KeyHash([7; 32]);
    for reply in [
        Value::Int(5),
        Value::Array(vec![Value::Int(1)]),
        Value::Array(vec![
            Value::BulkString(b"id".to_vec()),
            Value::BulkString(vec![0xff]),
        ]),
        Value::Array(vec![
            Value::BulkString(b"id".to_vec()),
            Value::BulkString(b"x".to_vec()),
        ]),
    ] {
        let err = decode_reply(reply, h, "r").unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }
    assert!(decode_reply(Value::Nil, h, "r").unwrap().is_none());
    assert!(
        decode_reply(Value::Array(vec![]), h, "r")
            .unwrap()
            .is_none()
    );
    assert_eq!(parse_invalidation(b"*"), Invalidation::All);
    assert_eq!(parse_invalidation(b"zz"), Invalidation::All);
    assert_eq!(
        parse_invalidation(h.to_hex().as_bytes()),
        Invalidation::Key(h)
    );
    assert!(parse_member(b"junk").is_err());
}

/// A record written before suspension, metadata and allowlists (no such fields) reads
/// with their defaults and can be edited: the compare-and-set takes absent as default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_from_before_the_edit_fields_reads_and_edits() {
    let server = RedisServer::start();
    let store = open(&server.url());
    let key = record("kid_old_layout", "biz-old", "u", 1);
    store.insert(&key).await.unwrap();
    let name = record_key(&key.hash.to_hex());
    server.cli_text(&["HDEL", &name, "enabled", "metadata", "allowed_ips"]);
    let read = store.by_hash(&key.hash).await.unwrap().unwrap();
    assert_eq!(read, key);
    let mut suspended = read.clone();
    suspended.enabled = false;
    assert_eq!(
        store.replace(&read, &suspended).await.unwrap(),
        Some(suspended)
    );
}
