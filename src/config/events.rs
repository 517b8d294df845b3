//! The `events:` section: webhooks that hear of key events, and how long a delivery is
//! retried.
//!
//! Invariants: every webhook has an `http://` or `https://` URL with a host, a
//! `secret_env` naming the variable that holds its signing secret (read when the gateway
//! starts, never written to the config), and at least one event type; no URL appears
//! twice (a webhook's place in the outbox is kept by its URL); `retry_for` is at least
//! an hour; `ca` only for an `https://` URL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::Dur;
use crate::events::Kind;
use crate::yaml::Seg;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvents {
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    retry_for: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret_env: String,
    events: Option<Vec<Kind>>,
    ca: Option<PathBuf>,
}

/// `events:`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSettings {
    pub webhooks: Vec<Webhook>,
    /// How long a delivery is retried (with back-off) before it is marked failed.
    pub retry_for: Duration,
}

/// One `events.webhooks` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// As written; the webhook's name in `GET /v1/events` and the store.
    pub url: String,
    pub uri: http::Uri,
    pub secret_env: String,
    /// The event types it hears (all, when `events` is not given).
    pub events: Vec<Kind>,
    /// A PEM CA bundle to verify an `https://` receiver with, instead of the system's.
    pub ca: Option<PathBuf>,
}

impl Webhook {
    pub fn wants(&self, kind: Kind) -> bool {
        self.events.contains(&kind)
    }

    /// The URL without its query (which may carry a token): for logs, and for callers
    /// who may see events but not the operator's endpoints.
    pub fn label(&self) -> String {
        url_label(&self.url)
    }
}

/// `url` up to its query.
pub fn url_label(url: &str) -> String {
    url.split_once('?')
        .map_or(url, |(before, _)| before)
        .to_owned()
}

/// `events.retry_for` unless given: a day, as Stripe and Svix retry for about that.
const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(86_400);

/// `events.webhooks[0].url`: a field's name as the messages say it.
fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

pub(super) fn settings(
    raw: RawEvents,
    here: &dyn Fn(&Path) -> PathBuf,
    report: &mut dyn FnMut(&[Seg], String),
) -> EventSettings {
    let mut err = |path: &[Seg], msg: String| report(path, format!("{}: {msg}", dotted(path)));
    let retry_for = match raw.retry_for {
        Some(d) if d.0 < Duration::from_secs(3600) => {
            err(
                &[Seg::Key("events"), Seg::Key("retry_for")],
                "must be at least 1h: a receiver may be down for a while (24h is the default)"
                    .to_owned(),
            );
            d.0
        }
        Some(d) => d.0,
        None => DEFAULT_RETRY_FOR,
    };
    let mut webhooks: Vec<Webhook> = Vec::new();
    for (i, raw) in raw.webhooks.into_iter().enumerate() {
        let at = |field| {
            [
                Seg::Key("events"),
                Seg::Key("webhooks"),
                Seg::Index(i),
                Seg::Key(field),
            ]
        };
        let uri = match parse_url(&raw.url) {
            Ok(u) => u,
            Err(msg) => {
                err(&at("url"), msg);
                continue;
            }
        };
        if webhooks.iter().any(|w| w.url == raw.url) {
            err(
                &at("url"),
                format!(
                    "`{}` is already a webhook above; list each URL once",
                    raw.url
                ),
            );
        }
        if raw.secret_env.is_empty() || raw.secret_env.contains('=') {
            err(
                &at("secret_env"),
                "must name an environment variable holding the signing secret, like KEYGATE_WEBHOOK_SECRET".to_owned(),
            );
        }
        let events = raw.events.unwrap_or_else(|| Kind::ALL.to_vec());
        if events.is_empty() {
            err(
                &at("events"),
                "lists no event; leave it out to hear every event".to_owned(),
            );
        }
        if raw.ca.is_some() && uri.scheme_str() != Some("https") {
            err(
                &at("ca"),
                "is for an https:// webhook; this one is http://".to_owned(),
            );
        }
        webhooks.push(Webhook {
            url: raw.url,
            uri,
            secret_env: raw.secret_env,
            events,
            ca: raw.ca.as_deref().map(here),
        });
    }
    EventSettings {
        webhooks,
        retry_for,
    }
}

/// A webhook URL: `http://` or `https://` with a host.
pub fn parse_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("invalid webhook URL `{text}`: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "webhook URL `{text}` must start with http:// or https://"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("webhook URL `{text}` has no host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "webhook URL `{text}` has a user or password, which would not be sent; the receiver checks the signature instead (a token in the query works too)"
        ));
    }
    Ok(uri)
}
