//! The listing part of the contract: filters against the in-memory model
//! ([`ListQuery::matches`]), the order, pagination at every page size, and cursors.

use super::record;
use crate::keys::{KeyRecord, Status, Timestamp};
use crate::store::{Cursor, KeyStore, ListQuery, StoreError};

/// Every page of `query`, following cursors; checks pages are full but the last.
async fn all_pages(store: &dyn KeyStore, query: &ListQuery) -> Vec<KeyRecord> {
    let mut query = query.clone();
    let mut out = Vec::new();
    for _ in 0..1000 {
        let page = store.list(&query).await.unwrap();
        assert!(page.keys.len() <= query.page_size());
        out.extend(page.keys.iter().cloned());
        match page.next_cursor {
            Some(cursor) => {
                assert_eq!(
                    page.keys.len(),
                    query.page_size(),
                    "only the last page is short"
                );
                query.cursor = Some(cursor);
            }
            None => return out,
        }
    }
    panic!("pagination does not end");
}

pub(super) async fn list(store: &dyn KeyStore, run: &str) {
    let biz = format!("biz-list-{run}");
    let other = format!("biz-other-{run}");
    let now = Timestamp(10_000);
    let mut made = Vec::new();
    for i in 0..23_i64 {
        // Several records share a created_at, so the id tiebreak matters.
        let mut r = record(
            &format!("kid_l{i:02}_{run}"),
            &biz,
            ["ann", "bob", "cy"][usize::try_from(i % 3).unwrap()],
            1_000 + i / 3,
        );
        r.name = format!("Key number {i}");
        match i % 4 {
            1 => r.revoked_at = Some(Timestamp(5_000)),
            2 => r.expires_at = Some(Timestamp(if i % 8 == 2 { 10_000 } else { 9_999 })),
            3 => r.expires_at = Some(Timestamp(10_001)),
            _ => {}
        }
        made.push(r);
    }
    made[4].name = "50% off".to_owned();
    made[5].name = "500 things".to_owned();
    made[6].description = "a_b in the description".to_owned();
    made[7].description = "axb in the description".to_owned();
    made[8].name = r"back\slash".to_owned();
    made[9].name = "MiXeD Case Findme".to_owned();
    for r in &made {
        store.insert(r).await.unwrap();
    }
    let stranger = record(&format!("kid_stranger_{run}"), &other, "ann", 1_003);
    store.insert(&stranger).await.unwrap();
    made.push(stranger);

    let mut expected_order = made.clone();
    expected_order.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    let base = ListQuery {
        now,
        limit: 500,
        ..ListQuery::default()
    };

    // Unfiltered: newest first, restricted to this run's records.
    let everything: Vec<KeyRecord> = all_pages(store, &base)
        .await
        .into_iter()
        .filter(|r| r.id.ends_with(run))
        .filter(|r| r.business_id == biz || r.business_id == other)
        .collect();
    assert_eq!(
        ids(&everything),
        ids(&expected_order),
        "newest first, id tiebreak"
    );

    // Each filter, alone and combined, against the in-memory model.
    let queries = [
        ListQuery {
            business_id: Some(biz.clone()),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(other.clone()),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            user_id: Some("bob".into()),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            status: Some(Status::Active),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            status: Some(Status::Expired),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            status: Some(Status::Revoked),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            user_id: Some("cy".into()),
            status: Some(Status::Active),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            search: Some("findme".into()),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            search: Some("KEY NUMBER 1".into()),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            search: Some("50%".into()),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            search: Some("a_b".into()),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            search: Some("%".into()),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            search: Some("_".into()),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            search: Some(r"\".into()),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            search: Some(format!("L07_{run}").to_lowercase()),
            ..base.clone()
        },
        ListQuery {
            business_id: Some(biz.clone()),
            search: Some("nothing matches this".into()),
            ..base.clone()
        },
        ListQuery {
            user_id: Some("ann".into()),
            search: Some(run.to_owned()),
            ..base.clone()
        },
    ];
    for q in &queries {
        let got = all_pages(store, q).await;
        let want: Vec<KeyRecord> = expected_order
            .iter()
            .filter(|r| q.matches(r))
            .cloned()
            .collect();
        assert_eq!(ids(&got), ids(&want), "query {q:?}");
        assert_eq!(got, want, "whole records, query {q:?}");
    }

    // Spot checks the model itself must get right.
    let status = |s| ListQuery {
        business_id: Some(biz.clone()),
        status: Some(s),
        ..base.clone()
    };
    let n = |q: ListQuery| made.iter().filter(|r| q.matches(r)).count();
    assert_eq!(n(status(Status::Revoked)), 6);
    assert_eq!(
        n(status(Status::Expired)),
        6,
        "expires_at <= now is expired"
    );
    assert_eq!(n(status(Status::Active)), 11);
    let search = |s: &str| {
        let q = ListQuery {
            business_id: Some(biz.clone()),
            search: Some(s.into()),
            ..base.clone()
        };
        made.iter()
            .filter(|r| q.matches(r))
            .map(|r| r.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(search("50%"), vec![made[4].id.clone()], "% is literal");
    assert_eq!(search("a_b"), vec![made[6].id.clone()], "_ is literal");
    assert_eq!(search(r"\"), vec![made[8].id.clone()], r"\ is literal");

    // Pagination: several pages, no duplicates, no gaps, at every page size.
    let in_biz: Vec<KeyRecord> = expected_order
        .iter()
        .filter(|r| r.business_id == biz)
        .cloned()
        .collect();
    for limit in [1, 2, 4, 5, 22, 23, 24] {
        let q = ListQuery {
            business_id: Some(biz.clone()),
            limit,
            ..base.clone()
        };
        assert_eq!(
            ids(&all_pages(store, &q).await),
            ids(&in_biz),
            "limit {limit}"
        );
    }
    let q = ListQuery {
        business_id: Some(biz.clone()),
        limit: 23,
        ..base.clone()
    };
    assert_eq!(
        store.list(&q).await.unwrap().next_cursor,
        None,
        "exact fit: no next page"
    );
    let q = ListQuery {
        business_id: Some(biz.clone()),
        limit: 0,
        ..base.clone()
    };
    assert_eq!(
        store.list(&q).await.unwrap().keys.len(),
        1,
        "limit 0 is taken as 1"
    );

    // A cursor from one filter used with another still means "after this row".
    let first = store
        .list(&ListQuery {
            business_id: Some(biz.clone()),
            limit: 3,
            ..base.clone()
        })
        .await
        .unwrap();
    assert_eq!(first.next_cursor, Some(Cursor::after(&in_biz[2]).encode()));

    // Malformed cursors.
    for bad in [
        "",
        "zz",
        "not hex at all",
        &hex::encode("1:abc:kid"),
        &hex::encode("2:5:kid"),
        &hex::encode("1:5:"),
        &hex::encode("1:5"),
    ] {
        let q = ListQuery {
            cursor: Some(bad.to_owned()),
            ..base.clone()
        };
        let err = store.list(&q).await.unwrap_err();
        assert!(
            matches!(err, StoreError::BadCursor),
            "cursor {bad:?}: {err:?}"
        );
    }
}

fn ids(records: &[KeyRecord]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}
