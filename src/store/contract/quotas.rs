//! The quota-window part of the store contract: takes never pass the limit, give-backs
//! never go below zero, windows are independent.

use crate::keys::Timestamp;
use crate::store::{KeyStore, QuotaGrant};

pub(crate) async fn quota_windows(store: &dyn KeyStore, run: &str) {
    let w = format!("{run}q:86400:0");
    let ends = Some(Timestamp::now().plus(std::time::Duration::from_secs(3600)));
    assert_eq!(store.quota_used(&w).await.unwrap(), 0, "an unused window");
    let take = |want| store.quota_take(&w, 25, want, ends);
    assert_eq!(
        take(10).await.unwrap(),
        QuotaGrant {
            granted: 10,
            used: 10
        }
    );
    assert_eq!(
        take(10).await.unwrap(),
        QuotaGrant {
            granted: 10,
            used: 20
        }
    );
    // Only what is left: never past the limit, and a take of nothing changes nothing.
    assert_eq!(
        take(10).await.unwrap(),
        QuotaGrant {
            granted: 5,
            used: 25
        }
    );
    assert_eq!(
        take(10).await.unwrap(),
        QuotaGrant {
            granted: 0,
            used: 25
        }
    );
    assert_eq!(store.quota_used(&w).await.unwrap(), 25);
    // A raised limit (an admin's edit) grants again from the same count.
    let more = store.quota_take(&w, 30, 10, ends).await.unwrap();
    assert_eq!(
        more,
        QuotaGrant {
            granted: 5,
            used: 30
        }
    );
    store.quota_give_back(&w, 7).await.unwrap();
    assert_eq!(store.quota_used(&w).await.unwrap(), 23);
    store.quota_give_back(&w, 100).await.unwrap();
    assert_eq!(store.quota_used(&w).await.unwrap(), 0, "never below zero");
    // Another window of the same counter (the next period, or credits) is its own.
    let credits = format!("{run}q:c17");
    let c = store.quota_take(&credits, 3, 5, None).await.unwrap();
    assert_eq!(
        c,
        QuotaGrant {
            granted: 3,
            used: 3
        }
    );
    assert_eq!(store.quota_used(&w).await.unwrap(), 0);
    store
        .quota_give_back(&format!("{run}q:never-taken"), 4)
        .await
        .unwrap();
    assert_eq!(
        store
            .quota_used(&format!("{run}q:never-taken"))
            .await
            .unwrap(),
        0
    );
}
