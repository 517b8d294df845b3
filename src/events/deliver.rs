//! Delivering the outbox: one task per webhook POSTs its events, oldest first, while this
//! gateway holds that webhook's store lease (`events:<url>`).
//!
//! Invariants: only the lease holder delivers (one gateway of a fleet; another takes
//! over within [`LEASE_TTL`] of it stopping); a webhook's next event waits until the one
//! before it is delivered or given up on, so a receiver sees one key's events in order;
//! an event is retried with exponential back-off (1 s doubling to [`MAX_BACK_OFF`]) until
//! `events.retry_for` after it happened (restarts do not stretch it), then marked failed; a 2xx answer within
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
        let host = crate::upstream::connect::dial_host(authority);
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
                label: Arc::from(settings.label().as_str()),
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

    /// The URL without its query (which may carry a token), for logs.
    pub fn label(&self) -> &str {
        &self.dial.label
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

/// The signing secret of `webhook`, from the variable its `secret_env` names; `None`
/// when that is unset or empty.
pub fn secret(webhook: &Webhook) -> Option<Vec<u8>> {
    std::env::var(&webhook.secret_env)
        .ok()
        .filter(|s| !s.is_empty())
        .map(String::into_bytes)
}

/// The webhooks of `settings`, their secrets read from the environment.
pub fn hooks(settings: &EventSettings) -> Result<Vec<Hook>, WebhookError> {
    settings
        .webhooks
        .iter()
        .enumerate()
        .map(|(index, w)| {
            let secret = secret(w).ok_or_else(|| WebhookError::Secret {
                index,
                var: w.secret_env.clone(),
            })?;
            Hook::new(index, w, secret)
        })
        .collect()
}

/// This gateway's hold on its webhooks' leases, to hand back when it stops.
pub struct Lease {
    store: Arc<dyn KeyStore>,
    holder: String,
    names: Vec<String>,
}

impl Lease {
    /// Frees the leases at once (those this gateway holds), so another gateway delivers
    /// without waiting out [`LEASE_TTL`]. Call after the delivery tasks are stopped.
    pub async fn release(self) {
        for name in &self.names {
            let _ = self
                .store
                .lease(name, &self.holder, Duration::from_millis(1))
                .await;
        }
    }
}

/// The store lease whose holder delivers to the webhook `url`: one per webhook, so a
/// gateway that has a webhook in its config delivers to it even while another gateway,
/// still on an older config, delivers to the others.
fn lease_name(url: &str) -> String {
    format!("events:{url}")
}

/// Starts, per webhook, a lease keeper and a delivery task; nothing when there are none.
pub fn spawn(
    hooks: Vec<Hook>,
    retry_for: Duration,
    store: &Arc<dyn KeyStore>,
) -> (Vec<tokio::task::JoinHandle<()>>, Option<Lease>) {
    if hooks.is_empty() {
        return (Vec::new(), None);
    }
    let holder = crate::keys::new_id("lease");
    let mut tasks = Vec::new();
    let mut names = Vec::new();
    for hook in hooks {
        let name = lease_name(&hook.settings.url);
        let (tx, rx) = watch::channel(false);
        tasks.push(tokio::spawn(keep_lease(
            Arc::clone(store),
            holder.clone(),
            name.clone(),
            tx,
        )));
        names.push(name);
        let worker = Worker {
            hook,
            store: Arc::clone(store),
            leader: rx,
            retry_for,
        };
        tasks.push(tokio::spawn(worker.run()));
    }
    let lease = Lease {
        store: Arc::clone(store),
        holder,
        names,
    };
    (tasks, Some(lease))
}

async fn keep_lease(
    store: Arc<dyn KeyStore>,
    holder: String,
    name: String,
    tx: watch::Sender<bool>,
) {
    let mut tick = tokio::time::interval(LEASE_RENEW);
    loop {
        tick.tick().await;
        let held = match store.lease(&name, &holder, LEASE_TTL).await {
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
        // Where this webhook is, while this gateway holds its lease (read again after a
        // gap in the lease or an interrupted batch: another gateway may have moved it).
        let mut known: Option<u64> = None;
        loop {
            // A lease lost (even if taken back since): another gateway may have moved it.
            if self.leader.has_changed().unwrap_or(true) || !*self.leader.borrow() {
                known = None;
            }
            if self.leader.wait_for(|held| *held).await.is_err() {
                return;
            }
            let cursor = if let Some(c) = known {
                c
            } else {
                let Some(c) = self.cursor().await else {
                    tokio::time::sleep(POLL).await;
                    continue;
                };
                known = Some(c);
                c
            };
            let page = match self.store.events_after(cursor, BATCH).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), webhook = %self.hook.label(), "cannot read the key-event outbox; will retry");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            let Some(last) = page.last else {
                tokio::select! {
                    r = wake.recv() => {
                        if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                            tokio::time::sleep(POLL).await;
                        }
                    }
                    () = tokio::time::sleep(POLL) => {}
                }
                continue;
            };
            if let Some(first) = page.events.first()
                && first.seq > cursor + 1
                && cursor > 0
            {
                tracing::error!(webhook = %self.hook.label(), missed = first.seq - cursor - 1, held = crate::store::EVENTS_HELD, "key events were dropped from the outbox before this webhook got them (it holds at most `held`)");
            }
            let mut done = true;
            for stored in &page.events {
                let wanted = self.hook.settings.wants(stored.event.kind);
                if !*self.leader.borrow() || (wanted && !self.deliver(stored).await) {
                    done = false;
                    break;
                }
            }
            known = done.then_some(last);
            // Past what this webhook skipped, and entries this version cannot read (a
            // newer one's event type): a whole batch of them must not stall the webhook.
            if done
                && let Err(e) = self
                    .store
                    .set_event_cursor(&self.hook.settings.url, last)
                    .await
            {
                tracing::warn!(error = %Chain(&e), webhook = %self.hook.label(), "cannot save the webhook's place in the outbox");
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
                tracing::warn!(error = %Chain(&e), webhook = %self.hook.label(), "cannot read the webhook's place in the outbox; will retry");
                None
            }
        }
    }

    /// Sends `stored` until it is delivered or `retry_for` has passed since it happened
    /// (so restarts do not stretch it); false if the lease was lost first (another
    /// gateway goes on from the store's cursor).
    async fn deliver(&self, stored: &Stored) -> bool {
        let id = stored.id();
        let kind = stored.event.kind.as_str();
        let body = stored.payload();
        let retry_secs = i64::try_from(self.retry_for.as_secs()).unwrap_or(i64::MAX);
        let give_up_at = stored.event.time.0.saturating_add(retry_secs);
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
            let now = Timestamp::now();
            let left = u64::try_from(give_up_at.saturating_sub(now.0)).unwrap_or(0);
            if delivery.status == Status::Pending && left == 0 {
                delivery.status = Status::Failed;
                tracing::warn!(webhook = %self.hook.label(), event = %id, attempts = delivery.attempts, error = delivery.error.as_deref().unwrap_or(""), "giving up on a webhook delivery after events.retry_for");
            }
            let wait = back_off(delivery.attempts).min(Duration::from_secs(left));
            delivery.next_attempt_at = (delivery.status == Status::Pending).then(|| now.plus(wait));
            if let Err(e) = self.store.record_delivery(stored.seq, &delivery).await {
                tracing::warn!(error = %Chain(&e), webhook = %self.hook.label(), event = %id, "cannot record a webhook delivery");
            }
            if delivery.is_final() {
                return true;
            }
            if delivery.attempts == 1 {
                tracing::warn!(webhook = %self.hook.label(), event = %id, error = delivery.error.as_deref().unwrap_or(""), "a webhook delivery failed; retrying with back-off");
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
