//! The invalidation feed: one subscription to [`CHANNEL`] per node, kept alive forever.
//!
//! Job: forward every hash another writer publishes to this process's subscribers, and
//! notice a dead subscription (closed, or silent past a keepalive ping) and resubscribe
//! with backoff.
//!
//! Invariants: whenever a subscription comes up while none was up, [`Invalidation::All`]
//! is sent, so a change published while nobody listened cannot outlive the cache TTL;
//! a payload that is not a hash hex (`*` included) is also `All`.
//!
//! Why a subscription on every node we know: a Cluster forwards `PUBLISH` to every
//! node, so losing one node loses no invalidation and does not flush every gateway's
//! cache (cached keys keep working while a node is down).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::{Client, RedisError, Value};
use futures_util::StreamExt;

use super::link::{LinkError, MAX_BACKOFF, MIN_BACKOFF};
use super::schema::{CHANNEL, parse_hash};
use super::{Inner, Invalidation};

/// How often an idle subscription is pinged, so a silently dead one is noticed.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);

/// Keeps one subscription to [`CHANNEL`] on one node alive forever, forwarding what it
/// hears. `live` counts the subscriptions currently up across every node: one that
/// comes up while none was up sends `All` (changes may have been missed meanwhile).
pub(super) async fn subscribe_forever(client: Client, inner: Arc<Inner>, live: Arc<AtomicUsize>) {
    let mut delay = MIN_BACKOFF;
    loop {
        let subscribed = tokio::time::timeout(inner.link.timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, RedisError>(pubsub)
        })
        .await;
        let pubsub = match subscribed {
            Ok(Ok(p)) => p,
            Ok(Err(source)) => {
                inner.link.health.failed(&LinkError::Redis { source });
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                inner
                    .link
                    .health
                    .failed(&LinkError::Timeout(inner.link.timeout));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        delay = MIN_BACKOFF;
        if live.fetch_add(1, Ordering::AcqRel) == 0 {
            tracing::info!("subscribed to registry invalidations; forgetting every cached key");
            let _ = inner.tx.send(Invalidation::All);
        }
        inner.link.health.ok();
        // Warm the data connection too, so recovery needs no request to notice it.
        let _ = inner.link.conn().await;
        listen(pubsub, &inner).await;
        live.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!("registry invalidation subscription lost; resubscribing");
    }
}

/// Forwards messages until the subscription closes or stops answering pings.
async fn listen(pubsub: ::redis::aio::PubSub, inner: &Inner) {
    let (mut sink, mut stream) = pubsub.split();
    let mut keepalive = tokio::time::interval(KEEPALIVE_EVERY);
    keepalive.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return };
                let _ = inner.tx.send(parse_invalidation(msg.get_payload_bytes()));
            }
            _ = keepalive.tick() => {
                let pong = tokio::time::timeout(inner.link.timeout, sink.ping::<Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    inner.link.health.failed(&LinkError::Timeout(inner.link.timeout));
                    return;
                }
            }
        }
    }
}

/// A message on [`CHANNEL`]: a hash hex, or anything else (including `*`) = `All`.
pub(super) fn parse_invalidation(payload: &[u8]) -> Invalidation {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|h| parse_hash(h).ok())
        .map_or(Invalidation::All, Invalidation::Key)
}
