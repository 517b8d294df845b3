//! A quota several keys spend: the keys an admin-API key creates count in its quota
//! counter (`KeyRecord::quota_counter`), so together they spend one quota and minting
//! keys adds none. Setting the quota of one of them sets it, the very same value and
//! credits window, on every other: lowering, raising, removing or refilling it holds for
//! all of them, and a key minted before its creator had a quota gets it too.
//!
//! Invariants: only keys of the same business with the same counter are touched; each
//! write is a compare-and-set like any edit, retried on a fresh read, and audited.

use super::{LifecycleError, audit};
use crate::keys::{KeyRecord, Timestamp};
use crate::store::{KeyStore, ListQuery, StoreError};

/// Tries of one key's compare-and-set.
const TRIES: u32 = 8;

/// Gives every other live key counting in `after`'s counter `after`'s quota; returns how
/// many changed.
pub(super) async fn spread(
    store: &dyn KeyStore,
    after: &KeyRecord,
    actor: &str,
) -> Result<usize, LifecycleError> {
    let mut changed = 0;
    let mut query = ListQuery {
        business_id: Some(after.business_id.clone()),
        limit: 500,
        ..ListQuery::default()
    };
    loop {
        let page = store.list(&query).await?;
        for k in page.keys.iter().filter(|k| {
            k.id != after.id
                && k.quota_counter == after.quota_counter
                && k.revoked_at.is_none()
                && k.quota != after.quota
        }) {
            if set(store, k.clone(), after, actor).await? {
                changed += 1;
            }
        }
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => return Ok(changed),
        }
    }
}

/// `after`'s quota on `key`, compare-and-set; `false` if the key went (or was revoked).
async fn set(
    store: &dyn KeyStore,
    mut key: KeyRecord,
    after: &KeyRecord,
    actor: &str,
) -> Result<bool, LifecycleError> {
    for _ in 0..TRIES {
        let mut new = key.clone();
        new.quota.clone_from(&after.quota);
        new.updated_at = Some(Timestamp::now());
        match store.replace(&key, &new).await {
            Ok(Some(done)) => {
                let detail = format!("changed quota (shared with {})", after.id);
                audit(store, actor, "updated", &done, detail).await;
                let data = serde_json::json!({"change": "updated", "fields": ["quota"], "shared_with": after.id});
                crate::events::emit(store, crate::events::Kind::Updated, &done, data).await;
                return Ok(true);
            }
            Ok(None) => return Ok(false),
            Err(StoreError::Conflict) => match store.by_id(&key.id).await? {
                Some(fresh) if fresh.revoked_at.is_none() => key = fresh,
                _ => return Ok(false),
            },
            Err(e) => return Err(e.into()),
        }
    }
    Err(LifecycleError::Contended { tries: TRIES })
}
