//! The behaviour every [`KeyStore`] must show, as tests each back end runs (test builds
//! only): [`contract_suite`] on one fresh store, [`invalidation`] on two stores sharing
//! one back end.
//!
//! Job: pin what callers may rely on whichever back end they hold: round trips,
//! conflicts, revocation, rotation, last use, listing and its cursor, the audit trail,
//! and how changes are announced.
//!
//! Invariants: every check makes its ids and businesses unique per run, so a shared or
//! non-empty back end works too; a back end's own tests add only what is particular to
//! it (its storage format, its outages, its feed's mechanics), never a second copy of a
//! contract check.

#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod edit;
mod events;
mod listing;
mod quotas;
mod usage;

use std::time::Duration;

use tokio::time::timeout;

use super::{AuditEvent, Invalidation, KeyStore, StoreError};
use crate::keys::{Grant, KeyRecord, Status, Timestamp, hash};

/// Runs every contract check against `store`, which should be empty. Every id and
/// business is made unique per run, so a shared back end works too.
pub(crate) async fn contract_suite(store: &dyn KeyStore) {
    let run = crate::keys::new_id("x_");
    store.ping().await.unwrap();
    round_trip(store, &run).await;
    conflicts(store, &run).await;
    revoke(store, &run).await;
    rotate(store, &run).await;
    record_use(store, &run).await;
    edit::replace(store, &run).await;
    listing::list(store, &run).await;
    audit(store, &run).await;
    quotas::quota_windows(store, &run).await;
    usage::usage(store, &run).await;
    events::events(store, &run).await;
}

/// Waits (at most `within`) for `want` on `rx`, skipping other invalidations. Shared by
/// every back end's own tests.
pub(crate) async fn expect_invalidation(
    rx: &mut tokio::sync::broadcast::Receiver<Invalidation>,
    want: &Invalidation,
    within: Duration,
) {
    use tokio::sync::broadcast::error::RecvError;
    tokio::time::timeout(within, async {
        loop {
            match rx.recv().await {
                Ok(got) if got == *want => return,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("channel closed"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {want:?} within {within:?}"));
}

/// Announcing changes, the same for every back end: a change made through `writer`
/// reaches `reader` (another store on the same back end: another process, in
/// production) within a second, and `writer`'s own subscribers at once; `record_use`
/// is not announced; a rotation announces both hashes.
///
/// Both stores must be listening already: a back end that announces `All` when its
/// feed comes up has done so before this starts.
pub(crate) async fn invalidation(writer: &dyn KeyStore, reader: &dyn KeyStore) {
    let run = crate::keys::new_id("x_");
    let mut reader_rx = reader.invalidations();
    let key = record(&format!("kid_inv_a_{run}"), "biz-inv", "u", 1);
    let other = record(&format!("kid_inv_b_{run}"), "biz-inv", "u", 2);
    writer.insert(&key).await.unwrap();
    writer.insert(&other).await.unwrap();
    expect_invalidation(
        &mut reader_rx,
        &Invalidation::Key(other.hash),
        Duration::from_secs(1),
    )
    .await;

    // record_use is not an invalidation: the next thing the reader hears is the revoke.
    writer
        .record_use(&[(key.id.clone(), Timestamp(50))])
        .await
        .unwrap();
    let mut writer_rx = writer.invalidations();
    writer
        .revoke(&key.id, Timestamp(100))
        .await
        .unwrap()
        .unwrap();
    let got = timeout(Duration::from_secs(1), reader_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, Invalidation::Key(key.hash));
    // The writer's own subscribers hear at once, without waiting for a poll or for the
    // back end to echo the change: it is queued before `revoke` returns. (Echoes of
    // the earlier inserts may be queued beside it.)
    let mut at_once = Vec::new();
    while let Ok(heard) = writer_rx.try_recv() {
        at_once.push(heard);
    }
    assert!(
        at_once.contains(&Invalidation::Key(key.hash)),
        "queued at once: {at_once:?}"
    );

    let seen = reader.by_hash(&key.hash).await.unwrap().unwrap();
    assert_eq!(seen.revoked_at, Some(Timestamp(100)));
    assert_eq!(seen.last_used_at, Some(Timestamp(50)));

    // An edit (compare-and-set) is announced like a revocation.
    let mut suspended = other.clone();
    suspended.enabled = false;
    writer.replace(&other, &suspended).await.unwrap().unwrap();
    expect_invalidation(
        &mut reader_rx,
        &Invalidation::Key(other.hash),
        Duration::from_secs(1),
    )
    .await;

    // Rotation announces both hashes.
    let new = record(&format!("kid_inv_c_{run}"), "biz-inv", "u", 3);
    writer
        .rotate(&other.id, &new, Timestamp(200))
        .await
        .unwrap()
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(
            timeout(Duration::from_secs(5), reader_rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(seen.contains(&Invalidation::Key(other.hash)), "{seen:?}");
    assert!(seen.contains(&Invalidation::Key(new.hash)), "{seen:?}");
}

/// A plain record: `id`'s secret is `secret-of-<id>`, no scopes, every location.
pub(crate) fn record(id: &str, business: &str, user: &str, created: i64) -> KeyRecord {
    KeyRecord {
        identity: crate::headers::Memo::default(),
        id: id.to_owned(),
        hash: hash(&format!("secret-of-{id}")),
        name: format!("name of {id}"),
        description: String::new(),
        prefix: "kg_abcdef".to_owned(),
        user_id: user.to_owned(),
        business_id: business.to_owned(),
        scopes: vec![],
        locations: vec!["*".to_owned()],
        grants: vec![],
        created_at: Timestamp(created),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        created_by: "test".to_owned(),
        enabled: true,
        metadata: crate::keys::Metadata::new(),
        allowed_ips: Vec::new(),
        updated_at: None,
        limits: crate::keys::KeyLimits::new(),
        plan: None,
        quota: None,
        quota_counter: id.to_owned(),
    }
}

async fn round_trip(store: &dyn KeyStore, run: &str) {
    let full = KeyRecord {
        identity: crate::headers::Memo::default(),
        id: format!("kid_full_{run}"),
        hash: hash(&format!("full-{run}")),
        name: "Ünïcode name ✓".to_owned(),
        description: "with \"quotes\" and\nnewlines".to_owned(),
        prefix: "kg_Ab12Cd".to_owned(),
        user_id: "user-1".to_owned(),
        business_id: format!("biz-rt-{run}"),
        scopes: vec!["items:read".to_owned(), "items:write".to_owned()],
        locations: vec!["hq".to_owned(), "plant-1".to_owned()],
        grants: vec![
            Grant {
                role: "editor".to_owned(),
                locations: vec!["hq".to_owned()],
            },
            Grant {
                role: "viewer".to_owned(),
                locations: vec!["*".to_owned()],
            },
        ],
        created_at: Timestamp(1_700_000_000),
        expires_at: Some(Timestamp(1_800_000_000)),
        revoked_at: Some(Timestamp(1_750_000_000)),
        last_used_at: Some(Timestamp(1_740_000_000)),
        created_by: "admin-token".to_owned(),
        enabled: false,
        metadata: [("plan", "pro"), ("tier-2", "a=b;c \"d\"")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        allowed_ips: ["10.0.0.0/8", "2001:db8::/32", "203.0.113.7/32"]
            .map(|a| a.parse().unwrap())
            .to_vec(),
        updated_at: Some(Timestamp(1_745_000_000)),
        limits: [(
            "items".to_owned(),
            crate::keys::RateLimit::parse("7/m").unwrap(),
        )]
        .into(),
        plan: Some("gold".to_owned()),
        quota: Some(crate::keys::Quota {
            limit: 5000,
            period_secs: None,
            set_ms: 1_745_000_000_123,
        }),
        quota_counter: "kid_its_first_id".to_owned(),
    };
    store.insert(&full).await.unwrap();
    assert_eq!(store.by_hash(&full.hash).await.unwrap(), Some(full.clone()));
    assert_eq!(store.by_id(&full.id).await.unwrap(), Some(full.clone()));

    let mut sparse = record(&format!("kid_sparse_{run}"), &full.business_id, "u", 5);
    sparse.scopes = vec![];
    sparse.locations = vec![];
    store.insert(&sparse).await.unwrap();
    assert_eq!(store.by_id(&sparse.id).await.unwrap(), Some(sparse.clone()));

    assert_eq!(store.by_hash(&hash("never-stored")).await.unwrap(), None);
    assert_eq!(store.by_id("kid_never_stored").await.unwrap(), None);
}

async fn conflicts(store: &dyn KeyStore, run: &str) {
    let original = record(&format!("kid_conf_{run}"), "biz-conf", "u", 10);
    store.insert(&original).await.unwrap();

    let mut same_id = record(&original.id, "biz-conf", "u", 11);
    same_id.hash = hash(&format!("other-{run}"));
    let err = store.insert(&same_id).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "same id: {err:?}");

    let mut same_hash = record(&format!("kid_conf2_{run}"), "biz-conf", "u", 12);
    same_hash.hash = original.hash;
    let err = store.insert(&same_hash).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "same hash: {err:?}");

    assert_eq!(
        store.by_id(&original.id).await.unwrap(),
        Some(original.clone())
    );
    assert_eq!(store.by_id(&same_hash.id).await.unwrap(), None);
    assert_eq!(store.by_hash(&same_id.hash).await.unwrap(), None);
}

async fn revoke(store: &dyn KeyStore, run: &str) {
    let key = record(&format!("kid_rev_{run}"), "biz-rev", "u", 20);
    store.insert(&key).await.unwrap();

    let after = store
        .revoke(&key.id, Timestamp(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.revoked_at, Some(Timestamp(100)));
    assert_eq!(
        KeyRecord {
            identity: crate::headers::Memo::default(),
            revoked_at: None,
            ..after.clone()
        },
        key,
        "revoke changes nothing but revoked_at"
    );

    let again = store
        .revoke(&key.id, Timestamp(200))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.revoked_at,
        Some(Timestamp(100)),
        "first revocation kept"
    );
    let seen = store.by_hash(&key.hash).await.unwrap().unwrap();
    assert_eq!(seen.revoked_at, Some(Timestamp(100)));
    assert_eq!(seen.status(Timestamp(0)), Status::Revoked);

    assert_eq!(
        store.revoke("kid_unknown", Timestamp(1)).await.unwrap(),
        None
    );
}

async fn rotate(store: &dyn KeyStore, run: &str) {
    // Plain rotation with grace.
    let old = record(&format!("kid_rot_old_{run}"), "biz-rot", "u", 30);
    store.insert(&old).await.unwrap();
    let new = record(&format!("kid_rot_new_{run}"), "biz-rot", "u", 31);
    let after = store
        .rotate(&old.id, &new, Timestamp(500))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.expires_at, Some(Timestamp(500)));
    assert_eq!(
        KeyRecord {
            identity: crate::headers::Memo::default(),
            expires_at: None,
            ..after.clone()
        },
        old
    );
    assert_eq!(store.by_hash(&new.hash).await.unwrap(), Some(new.clone()));
    assert_eq!(store.by_hash(&old.hash).await.unwrap(), Some(after));

    // Unknown old id: nothing inserted.
    let orphan = record(&format!("kid_rot_orphan_{run}"), "biz-rot", "u", 32);
    assert_eq!(
        store
            .rotate("kid_unknown", &orphan, Timestamp(1))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.by_id(&orphan.id).await.unwrap(), None);

    // A clashing new record: conflict, and the old key is untouched (atomic).
    let mut keep = record(&format!("kid_rot_keep_{run}"), "biz-rot", "u", 33);
    keep.expires_at = Some(Timestamp(9_000));
    store.insert(&keep).await.unwrap();
    let mut clash = record(&format!("kid_rot_clash_{run}"), "biz-rot", "u", 34);
    clash.hash = new.hash;
    let err = store
        .rotate(&keep.id, &clash, Timestamp(600))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    assert_eq!(store.by_id(&keep.id).await.unwrap(), Some(keep.clone()));
    assert_eq!(store.by_id(&clash.id).await.unwrap(), None);

    // Rotation never extends the old key's life.
    let next = record(&format!("kid_rot_next_{run}"), "biz-rot", "u", 35);
    let after = store
        .rotate(&keep.id, &next, Timestamp(50_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.expires_at, Some(Timestamp(9_000)));
    let next2 = record(&format!("kid_rot_next2_{run}"), "biz-rot", "u", 36);
    let after = store
        .rotate(&keep.id, &next2, Timestamp(700))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.expires_at, Some(Timestamp(700)));
}

async fn record_use(store: &dyn KeyStore, run: &str) {
    let a = record(&format!("kid_use_a_{run}"), "biz-use", "u", 40);
    let b = record(&format!("kid_use_b_{run}"), "biz-use", "u", 41);
    store.insert(&a).await.unwrap();
    store.insert(&b).await.unwrap();
    let last = |id: String| async move { store.by_id(&id).await.unwrap().unwrap().last_used_at };

    store
        .record_use(&[(a.id.clone(), Timestamp(100))])
        .await
        .unwrap();
    assert_eq!(last(a.id.clone()).await, Some(Timestamp(100)));
    assert_eq!(last(b.id.clone()).await, None);

    store
        .record_use(&[
            (a.id.clone(), Timestamp(50)),
            ("kid_unknown".to_owned(), Timestamp(70)),
            (b.id.clone(), Timestamp(300)),
            (b.id.clone(), Timestamp(250)),
        ])
        .await
        .unwrap();
    assert_eq!(
        last(a.id.clone()).await,
        Some(Timestamp(100)),
        "never goes back"
    );
    assert_eq!(
        last(b.id.clone()).await,
        Some(Timestamp(300)),
        "max within a batch"
    );
    assert_eq!(store.by_id("kid_unknown").await.unwrap(), None);

    store
        .record_use(&[(a.id.clone(), Timestamp(200))])
        .await
        .unwrap();
    assert_eq!(last(a.id.clone()).await, Some(Timestamp(200)));
    store.record_use(&[]).await.unwrap();
}

async fn audit(store: &dyn KeyStore, run: &str) {
    let a = format!("biz-audit-a-{run}");
    let b = format!("biz-audit-b-{run}");
    let event = |at: i64, action: &str, business: &str, n: u32| AuditEvent {
        at: Timestamp(at),
        actor: "admin-token".to_owned(),
        action: action.to_owned(),
        key_id: format!("kid_{n}_{run}"),
        business_id: business.to_owned(),
        detail: format!("detail {n}"),
    };
    let events = [
        event(100, "created", &a, 1),
        event(200, "created", &b, 2),
        event(300, "rotated", &a, 3),
        event(300, "revoked", &a, 4), // same second: later append is newer
        event(400, "revoked", &b, 5),
    ];
    for e in &events {
        store.append_audit(e).await.unwrap();
    }
    let only_a = store.audit(Some(&a), 10).await.unwrap();
    assert_eq!(
        only_a,
        vec![events[3].clone(), events[2].clone(), events[0].clone()]
    );
    let only_b = store.audit(Some(&b), 1).await.unwrap();
    assert_eq!(only_b, vec![events[4].clone()]);
    let all: Vec<AuditEvent> = store
        .audit(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.key_id.ends_with(run))
        .collect();
    assert_eq!(
        all,
        vec![
            events[4].clone(),
            events[3].clone(),
            events[2].clone(),
            events[1].clone(),
            events[0].clone()
        ]
    );
    assert_eq!(store.audit(None, 2).await.unwrap().len(), 2);
    assert!(
        store
            .audit(Some("biz-nobody"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}
