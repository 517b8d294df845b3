//! Delivering the outbox: one task per webhook POSTs its events, oldest first, while this
//! gateway holds the store's `events` lease.
//!
//! Invariants: only the lease holder delivers (one gateway of a fleet; another takes
//! over within [`LEASE_TTL`] of it stopping); a webhook's next event waits until the one
//! before it is delivered or given up on, so a receiver sees one key's events in order;
//! an event is retried with exponential back-off (1 s doubling to [`MAX_BACK_OFF`]) for
//! `events.retry_for` from its first attempt, then marked failed; a 2xx answer within
//! [`DELIVERY_TIMEOUT`] is a delivery, anything else (3xx included: redirects are not
//! followed) is a failure; the signing secret is read once, at start, from `secret_env`
//! and never logged. What the receiver may see twice: the event in flight when a
//! gateway dies (at-least-once); receivers dedupe on the event id.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::{Delivery, Status, Stored, signature};
use crate::config::{EventSettings, Webhook};
use crate::keys::Timestamp;
use crate::report::Chain;
use crate::store::KeyStore;
use crate::upstream::connect::Dial;

/// How long a gateway's hold on the `events` lease lasts unless renewed.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the holder renews it (and others try to take it).
const LEASE_RENEW: Duration = Duration::from_secs(3);
/// The longest wait between two attempts at one event.
pub const MAX_BACK_OFF: Duration = Duration::from_secs(600);
/// Connect, TLS, send and the answer's head, together.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a webhook with nothing to send looks for events other processes queued
/// (this process's own changes wake it at once, through the store's invalidations).
const POLL: Duration = Duration::from_secs(1);
/// Events read from the outbox at a time.
const BATCH: usize = 100;

/// A webhook could not be set up when the gateway started.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "events.webhooks[{index}].secret_env: {var} is not set; export it with the webhook's signing secret"
    )]
    Secret { index: usize, var: String },
    #[error("events.webhooks[{index}].ca: cannot set up TLS for {url}")]
    Tls {
        index: usize,
        url: String,
        #[source]
        source: Box<crate::upstream::UpstreamTlsError>,
    },
    #[error("events.webhooks[{index}].url: `{host}` is not a name TLS can verify")]
    ServerName { index: usize, host: String },
}

/// One webhook, ready to send to.
pub struct Hook {
    pub settings: Webhook,
    secret: Vec<u8>,
    dial: Dial,
    host: HeaderValue,
}

impl Hook {
    /// The webhook `settings` (entry `index` of the config), its secret given.
    pub fn new(index: usize, settings: &Webhook, secret: Vec<u8>) -> Result<Self, WebhookError> {
        let uri = &settings.uri;
        let authority = uri.authority().expect("config checked the host");
        let https = uri.scheme_str() == Some("https");
        let bare = authority.host();
        let host = bare
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(bare)
            .to_owned();
        let tls = if https {
            let config = crate::upstream::tls::client_config(&crate::config::UpstreamTls {
                ca: settings.ca.clone(),
                ..Default::default()
            })
            .map_err(|source| WebhookError::Tls {
                index,
                url: settings.url.clone(),
                source: Box::new(source),
            })?;
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| {
                WebhookError::ServerName {
                    index,
                    host: host.clone(),
                }
            })?;
            Some((tokio_rustls::TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(Self {
            dial: Dial {
                label: Arc::from(settings.url.as_str()),
                host,
                port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
                timeout: DELIVERY_TIMEOUT,
                tls,
            },
            host: crate::upstream::host_header(authority),
            settings: settings.clone(),
            secret,
        })
    }

    /// POSTs `body` (event `id` of type `kind`), signed now; the receiver's status.
    pub async fn post(&self, id: &str, kind: &str, body: Vec<u8>) -> Result<u16, String> {
        let sent = tokio::time::timeout(DELIVERY_TIMEOUT, self.send(id, kind, body)).await;
        match sent {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {DELIVERY_TIMEOUT:?}")),
        }
    }

    async fn send(&self, id: &str, kind: &str, body: Vec<u8>) -> Result<u16, String> {
        let stream = self.dial.open().await.map_err(|e| Chain(&e).to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Chain(&e).to_string())?;
        tokio::spawn(conn);
        let target = self
            .settings
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let signed = signature(&self.secret, Timestamp::now().0, &body);
        let req = Request::post(target)
            .header(header::HOST, self.host.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("keygate/", env!("CARGO_PKG_VERSION")),
            )
            .header("keygate-signature", signed)
            .header("keygate-event-id", id)
            .header("keygate-event-type", kind)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let answer = sender
            .send_request(req)
            .await
            .map_err(|e| Chain(&e).to_string())?;
        Ok(answer.status().as_u16())
    }
}

/// The webhooks of `settings`, their secrets read from the environment.
pub fn hooks(settings: &EventSettings) -> Result<Vec<Hook>, WebhookError> {
    settings
        .webhooks
        .iter()
        .enumerate()
        .map(|(index, w)| {
            let secret = std::env::var(&w.secret_env)
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| WebhookError::Secret {
                    index,
                    var: w.secret_env.clone(),
                })?;
            Hook::new(index, w, secret.into_bytes())
        })
        .collect()
}

/// This gateway's hold on the `events` lease, to hand back when it stops.
pub struct Lease {
    store: Arc<dyn KeyStore>,
    holder: String,
}

impl Lease {
    /// Frees the lease at once (if this gateway holds it), so another gateway delivers
    /// without waiting out [`LEASE_TTL`]. Call after the delivery tasks are stopped.
    pub async fn release(self) {
        let _ = self
            .store
            .lease(LEASE, &self.holder, Duration::from_millis(1))
            .await;
    }
}

/// The store lease whose holder delivers.
const LEASE: &str = "events";

/// Starts the lease keeper and one task per webhook; nothing when there are none.
pub fn spawn(
    hooks: Vec<Hook>,
    retry_for: Duration,
    store: &Arc<dyn KeyStore>,
) -> (Vec<tokio::task::JoinHandle<()>>, Option<Lease>) {
    if hooks.is_empty() {
        return (Vec::new(), None);
    }
    let holder = crate::keys::new_id("lease");
    let (tx, rx) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(keep_lease(
        Arc::clone(store),
        holder.clone(),
        tx,
    ))];
    for hook in hooks {
        let worker = Worker {
            hook,
            store: Arc::clone(store),
            leader: rx.clone(),
            retry_for,
        };
        tasks.push(tokio::spawn(worker.run()));
    }
    let lease = Lease {
        store: Arc::clone(store),
        holder,
    };
    (tasks, Some(lease))
}

async fn keep_lease(store: Arc<dyn KeyStore>, holder: String, tx: watch::Sender<bool>) {
    let mut tick = tokio::time::interval(LEASE_RENEW);
    loop {
        tick.tick().await;
        let held = match store.lease(LEASE, &holder, LEASE_TTL).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "cannot reach the store for the webhook lease; not delivering until it answers");
                false
            }
        };
        tx.send_if_modified(|was| std::mem::replace(was, held) != held);
    }
}

struct Worker {
    hook: Hook,
    store: Arc<dyn KeyStore>,
    leader: watch::Receiver<bool>,
    retry_for: Duration,
}

impl Worker {
    async fn run(mut self) {
        let mut wake = self.store.invalidations();
        loop {
            if self.leader.wait_for(|held| *held).await.is_err() {
                return;
            }
            let Some(mut cursor) = self.cursor().await else {
                tokio::time::sleep(POLL).await;
                continue;
            };
            let batch = match self.store.events_after(cursor, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), webhook = %self.hook.settings.url, "cannot read the key-event outbox; will retry");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    r = wake.recv() => {
                        if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                            tokio::time::sleep(POLL).await;
                        }
                    }
                    () = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            let mut skipped = false;
            for stored in &batch {
                if !*self.leader.borrow() {
                    break;
                }
                if self.hook.settings.wants(stored.event.kind) {
                    if !self.deliver(stored).await {
                        break;
                    }
                    skipped = false;
                } else {
                    skipped = true;
                }
                cursor = stored.seq;
            }
            if skipped
                && let Err(e) = self
                    .store
                    .set_event_cursor(&self.hook.settings.url, cursor)
                    .await
            {
                tracing::warn!(error = %Chain(&e), webhook = %self.hook.settings.url, "cannot save the webhook's place in the outbox");
            }
        }
    }

    /// Where this webhook is in the outbox; a webhook new to the store starts after the
    /// newest event (it hears what happens from now on, not the history).
    async fn cursor(&self) -> Option<u64> {
        let url = &self.hook.settings.url;
        match self.store.event_cursor(url).await {
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                let newest = self.store.recent_events(None, 1).await.ok()?;
                let start = newest.first().map_or(0, |s| s.seq);
                self.store.set_event_cursor(url, start).await.ok()?;
                Some(start)
            }
            Err(e) => {
                tracing::warn!(error = %Chain(&e), webhook = %url, "cannot read the webhook's place in the outbox; will retry");
                None
            }
        }
    }

    /// Sends `stored` until it is delivered or `retry_for` has passed; false if the
    /// lease was lost first (another gateway goes on from the store's cursor).
    async fn deliver(&self, stored: &Stored) -> bool {
        let id = stored.id();
        let kind = stored.event.kind.as_str();
        let body = stored.payload();
        let first = tokio::time::Instant::now();
        let mut delivery = Delivery {
            url: self.hook.settings.url.clone(),
            status: Status::Pending,
            attempts: 0,
            response_status: None,
            error: None,
            last_attempt_at: None,
            next_attempt_at: None,
        };
        loop {
            if !*self.leader.borrow() {
                return false;
            }
            delivery.attempts += 1;
            delivery.last_attempt_at = Some(Timestamp::now());
            let answer = self.hook.post(&id, kind, body.clone()).await;
            let wait = back_off(delivery.attempts);
            match answer {
                Ok(status) if (200..300).contains(&status) => {
                    delivery.status = Status::Delivered;
                    delivery.response_status = Some(status);
                    delivery.error = None;
                }
                Ok(status) => {
                    delivery.response_status = Some(status);
                    delivery.error = Some(format!("the receiver answered {status}"));
                }
                Err(e) => {
                    delivery.response_status = None;
                    delivery.error = Some(e);
                }
            }
            if delivery.status == Status::Pending && first.elapsed() + wait > self.retry_for {
                delivery.status = Status::Failed;
                tracing::warn!(webhook = %delivery.url, event = %id, attempts = delivery.attempts, error = delivery.error.as_deref().unwrap_or(""), "giving up on a webhook delivery after events.retry_for");
            }
            delivery.next_attempt_at =
                (delivery.status == Status::Pending).then(|| Timestamp::now().plus(wait));
            if let Err(e) = self.store.record_delivery(stored.seq, &delivery).await {
                tracing::warn!(error = %Chain(&e), webhook = %delivery.url, event = %id, "cannot record a webhook delivery");
            }
            if delivery.is_final() {
                return true;
            }
            if delivery.attempts == 1 {
                tracing::warn!(webhook = %delivery.url, event = %id, error = delivery.error.as_deref().unwrap_or(""), "a webhook delivery failed; retrying with back-off");
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// The wait after the `attempt`th failure: 1 s, 2 s, 4 s, … up to [`MAX_BACK_OFF`].
pub fn back_off(attempt: u32) -> Duration {
    let secs = 1u64 << attempt.saturating_sub(1).min(20);
    Duration::from_secs(secs).min(MAX_BACK_OFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_from_a_second_to_ten_minutes() {
        let waits: Vec<u64> = (1..=12).map(|a| back_off(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(back_off(u32::MAX), MAX_BACK_OFF);
    }

    #[test]
    fn a_webhook_whose_secret_is_not_set_stops_the_start_naming_the_variable() {
        let settings = EventSettings {
            webhooks: vec![Webhook {
                url: "http://127.0.0.1:9/h".to_owned(),
                uri: "http://127.0.0.1:9/h".parse().expect("a URL"),
                secret_env: "KEYGATE_TEST_NEVER_SET_7F3A".to_owned(),
                events: crate::events::Kind::ALL.to_vec(),
                ca: None,
            }],
            retry_for: Duration::from_secs(3600),
        };
        let Err(e) = hooks(&settings) else {
            panic!("a webhook without its secret must not start");
        };
        assert_eq!(
            e.to_string(),
            "events.webhooks[0].secret_env: KEYGATE_TEST_NEVER_SET_7F3A is not set; export it \
             with the webhook's signing secret"
        );
    }
}
