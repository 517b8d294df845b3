//! The usage part of the store contract: counts add up per series, hour and outcome;
//! a key's counts are also its business's; hours past the retention are forgotten.

use std::time::Duration;

use crate::keys::Timestamp;
use crate::store::{KeyStore, UsageSeries};
use crate::usage::Count;

fn count(key: &str, business: &str, hour: i64, outcome: &'static str, n: u64) -> Count {
    Count {
        key_id: key.to_owned(),
        business_id: business.to_owned(),
        hour,
        outcome,
        n,
    }
}

pub(crate) async fn usage(store: &dyn KeyStore, run: &str) {
    let now = Timestamp::now().0;
    let h = now - now.rem_euclid(3600);
    let (a, b, biz) = (format!("{run}ua"), format!("{run}ub"), format!("{run}ubiz"));
    let keep = Duration::from_secs(90 * 86_400);
    let old = h - 100 * 86_400;
    store
        .add_usage(
            &[
                count(&a, &biz, h, "allowed", 3),
                count(&a, &biz, h, "rate_limited", 1),
                count(&a, &biz, h - 3600, "allowed", 2),
                count(&b, &biz, h, "allowed", 4),
                count(&a, &biz, old, "allowed", 9),
            ],
            keep,
        )
        .await
        .unwrap();
    store
        .add_usage(&[count(&a, &biz, h, "allowed", 1)], keep)
        .await
        .unwrap();
    let sorted = |mut v: Vec<(i64, String, u64)>| {
        v.sort();
        v
    };
    let key_a = store
        .usage(&UsageSeries::Key(a.clone()), h - 86_400, h)
        .await
        .unwrap();
    assert_eq!(
        sorted(key_a),
        [
            (h - 3600, "allowed".to_owned(), 2),
            (h, "allowed".to_owned(), 4),
            (h, "rate_limited".to_owned(), 1),
        ]
    );
    let business = store
        .usage(&UsageSeries::Business(biz.clone()), h, h)
        .await
        .unwrap();
    assert_eq!(
        sorted(business),
        [
            (h, "allowed".to_owned(), 8),
            (h, "rate_limited".to_owned(), 1)
        ],
        "a business's counts are its keys' together"
    );
    // Past the retention: not kept.
    let gone = store
        .usage(&UsageSeries::Key(a), old - 86_400, old + 86_400)
        .await
        .unwrap();
    assert_eq!(gone, [], "hours older than the retention are forgotten");
}
