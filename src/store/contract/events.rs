//! The key-event part of the store contract: numbers grow; a once-event is queued once
//! within its ttl and again after it; reads come oldest first after a number and newest
//! first for a business, with their deliveries; a final delivery moves its webhook's
//! cursor; a lease is one holder's until it runs out.

use std::time::Duration;

use super::record;
use crate::events::{Delivery, Event, Kind, Once, Status};
use crate::store::KeyStore;

fn delivery(url: &str, status: Status, attempts: u32) -> Delivery {
    Delivery {
        url: url.to_owned(),
        status,
        attempts,
        response_status: Some(500),
        error: Some("the receiver answered 500".to_owned()),
        last_attempt_at: None,
        next_attempt_at: None,
    }
}

pub(crate) async fn events(store: &dyn KeyStore, run: &str) {
    let biz = format!("{run}evbiz");
    let key = record(&format!("{run}ev1"), &biz, "u", 100);
    let event = |kind| Event::new(kind, &key, serde_json::json!({ "kind": kind }));
    let push = |e: Event, once: Option<Once>| async move {
        store.push_event(&e, once.as_ref()).await.unwrap()
    };
    let first = push(event(Kind::Created), None).await.unwrap();
    let second = push(event(Kind::Updated), None).await.unwrap();
    assert!(second > first, "numbers grow: {first} then {second}");

    let hour = Once {
        name: format!("{run}rl"),
        ttl: Duration::from_secs(3600),
    };
    assert!(
        push(event(Kind::RateLimited), Some(hour.clone()))
            .await
            .is_some()
    );
    assert_eq!(
        push(event(Kind::RateLimited), Some(hour)).await,
        None,
        "a once-event is queued once within its ttl"
    );
    let brief = Once {
        name: format!("{run}brief"),
        ttl: Duration::from_millis(30),
    };
    assert!(
        push(event(Kind::QuotaExceeded), Some(brief.clone()))
            .await
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    let last = push(event(Kind::QuotaExceeded), Some(brief)).await;
    assert!(last.is_some(), "after its ttl the once name is free again");

    let mine = |v: Vec<crate::events::Stored>| -> Vec<_> {
        v.into_iter().filter(|s| s.event.key_id == key.id).collect()
    };
    let page = store.events_after(first - 1, 100).await.unwrap();
    assert!(
        page.last >= last,
        "the highest number read: {:?}",
        page.last
    );
    let after = mine(page.events);
    let kinds: Vec<Kind> = after.iter().map(|s| s.event.kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Created,
            Kind::Updated,
            Kind::RateLimited,
            Kind::QuotaExceeded,
            Kind::QuotaExceeded
        ]
    );
    assert_eq!(
        after[0].event,
        event(Kind::Created).with_time(after[0].event.time)
    );
    assert!(
        after.windows(2).all(|w| w[0].seq < w[1].seq),
        "oldest first"
    );
    assert_eq!(
        mine(store.events_after(second, 100).await.unwrap().events).len(),
        3,
        "only the events after the number"
    );

    let url = format!("https://hooks.example/{run}");
    assert_eq!(store.event_cursor(&url).await.unwrap(), None);
    store
        .record_delivery(first, &delivery(&url, Status::Pending, 1))
        .await
        .unwrap();
    assert_eq!(
        store.event_cursor(&url).await.unwrap(),
        None,
        "a pending delivery does not move the cursor"
    );
    store
        .record_delivery(first, &delivery(&url, Status::Delivered, 2))
        .await
        .unwrap();
    assert_eq!(store.event_cursor(&url).await.unwrap(), Some(first));
    store.set_event_cursor(&url, second).await.unwrap();
    assert_eq!(store.event_cursor(&url).await.unwrap(), Some(second));
    store.set_event_cursor(&url, first).await.unwrap();
    assert_eq!(
        store.event_cursor(&url).await.unwrap(),
        Some(second),
        "a cursor never moves back"
    );

    let recent = store.recent_events(Some(&biz), 100).await.unwrap();
    assert_eq!(recent.len(), 5, "only this business's events");
    assert!(
        recent.windows(2).all(|w| w[0].seq > w[1].seq),
        "newest first"
    );
    let oldest = recent.last().unwrap();
    assert_eq!(oldest.seq, first);
    assert_eq!(oldest.deliveries, [delivery(&url, Status::Delivered, 2)]);
    assert_eq!(store.recent_events(Some(&biz), 2).await.unwrap().len(), 2);
    let other = format!("{run}nobody");
    assert!(
        store
            .recent_events(Some(&other), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let lease = format!("{run}lease");
    let long = Duration::from_secs(60);
    assert!(store.lease(&lease, "a", long).await.unwrap());
    assert!(!store.lease(&lease, "b", long).await.unwrap(), "held by a");
    assert!(store.lease(&lease, "a", long).await.unwrap(), "a renews");
    let brief = format!("{run}brieflease");
    assert!(
        store
            .lease(&brief, "a", Duration::from_millis(30))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(
        store.lease(&brief, "b", long).await.unwrap(),
        "an expired lease goes to the next asker"
    );
}
