//! The contract of [`KeyStore::replace`]: edits as compare-and-set.

use super::record;
use crate::keys::{Grant, Status, Timestamp};
use crate::store::{KeyStore, ListQuery, StoreError};

pub(super) async fn replace(store: &dyn KeyStore, run: &str) {
    let biz = format!("biz-edit-{run}");
    let key = record(&format!("kid_edit_{run}"), &biz, "u", 30);
    store.insert(&key).await.unwrap();

    // Every editable field changes; identity, hash, owner and times do not.
    let mut edited = key.clone();
    edited.name = "renamed".to_owned();
    edited.description = "now described".to_owned();
    edited.scopes = vec!["items:read".to_owned()];
    edited.locations = vec!["hq".to_owned()];
    edited.grants = vec![Grant {
        role: "editor".to_owned(),
        locations: vec!["hq".to_owned()],
    }];
    edited.expires_at = Some(Timestamp(4_000_000_000));
    edited.enabled = false;
    edited.metadata = [("plan".to_owned(), "gold".to_owned())].into();
    edited.allowed_ips = vec!["192.0.2.0/24".parse().unwrap()];
    edited.updated_at = Some(Timestamp(40));
    let after = store.replace(&key, &edited).await.unwrap().unwrap();
    assert_eq!(after, edited);
    assert_eq!(
        store.by_hash(&key.hash).await.unwrap(),
        Some(edited.clone())
    );
    assert_eq!(after.status(Timestamp(41)), Status::Disabled);

    // The listing's `disabled` and `active` filters see it move.
    let count = |status| {
        let q = ListQuery {
            business_id: Some(biz.clone()),
            status: Some(status),
            now: Timestamp(41),
            ..ListQuery::default()
        };
        async move { store.list(&q).await.unwrap().keys.len() }
    };
    assert_eq!(count(Status::Disabled).await, 1);
    assert_eq!(count(Status::Active).await, 0);

    // A stale `before` (the first edit already landed) is a conflict and changes nothing.
    let mut stale = key.clone();
    stale.name = "lost update".to_owned();
    let err = store.replace(&key, &stale).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "stale edit: {err:?}");
    assert_eq!(store.by_id(&key.id).await.unwrap(), Some(edited.clone()));

    // Back again, expiry removed: an absent optional field can be written.
    let mut resumed = edited.clone();
    resumed.enabled = true;
    resumed.expires_at = None;
    resumed.updated_at = Some(Timestamp(50));
    assert_eq!(
        store.replace(&edited, &resumed).await.unwrap(),
        Some(resumed.clone())
    );
    assert_eq!(count(Status::Active).await, 1);

    // A revoked key cannot be edited.
    let revoked = store.revoke(&key.id, Timestamp(60)).await.unwrap().unwrap();
    let mut late = revoked.clone();
    late.enabled = false;
    let err = store.replace(&revoked, &late).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "revoked: {err:?}");

    // An unknown id is `None`.
    let ghost = record(&format!("kid_edit_ghost_{run}"), &biz, "u", 31);
    assert_eq!(store.replace(&ghost, &ghost).await.unwrap(), None);
}
