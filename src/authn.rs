//! Key authentication: from the key header to the key's record, one path for the proxy
//! and the admin API.
//!
//! Job: read exactly one value of the configured key header ([`Authn::presented`]), then
//! check the secret's shape and checksum (junk is refused without a look-up) and look
//! its hash up through the shared cache within `store.timeout` ([`Authn::authenticate`]).
//! What the record may do is the policy's question ([`crate::policy::Policy::admit`],
//! [`crate::policy::Policy::holds`]), not this module's.
//!
//! Invariants:
//! - one header value or none: a repeated header, or a comma-joined value, is
//!   ambiguous, never resolved by picking one;
//! - a registry that errs or does not answer within `timeout` fails closed, unless the
//!   cache may still serve the key it knew (`cache.stale_if_error`): the same answer for
//!   a proxied request and an admin request;
//! - errors are typed ([`AuthnError`]); each caller turns them into its own answer, in
//!   its one mapping (`proxy::refusal`, `admin::error`). No HTTP server types here.
//!
//! Why two steps rather than one call: the proxy reads the header before the path and
//! the route are known (an ambiguous header is refused even on a public route) but looks
//! a key up only for a route that needs one; the admin API must know whether a key was
//! sent before it chooses between a key and a bearer token.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName};

use crate::cache::{Cache, Lookup};
use crate::headers;
use crate::keys::{self, KeyHash, KeyRecord};
use crate::store::{KeyStore, StoreError};

/// How a presented key is authenticated; one, shared by the proxy and the admin API.
pub struct Authn {
    /// The header that carries the key (`keys.header`).
    pub header: HeaderName,
    /// The same header as configured, e.g. `X-API-Key` (for `WWW-Authenticate` and messages).
    pub header_display: String,
    /// Every secret starts with this (`keys.prefix`).
    pub prefix: String,
    pub cache: Arc<Cache>,
    pub store: Arc<dyn KeyStore>,
    /// A registry slower than this is treated as down (`store.timeout`).
    pub timeout: Duration,
    /// `keys.accept_imported`: a key without keygate's shape is looked up by its hash
    /// instead of refused unasked (negative caching bounds what junk costs the store).
    pub accept_imported: bool,
}

/// Longest key looked up when `accept_imported` lets keys of any shape in.
const MAX_IMPORTED_LEN: usize = 512;

/// Why a presented key did not yield a record.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// The key header was sent more than once, or one value holds several (`a, b`).
    #[error("more than one {header} value was sent")]
    Ambiguous { header: HeaderName },
    /// The header's value is not visible ASCII.
    #[error("the key header is not visible ASCII")]
    NotText,
    /// Wrong prefix, length, alphabet or checksum: no look-up was made.
    #[error("the API key is malformed")]
    Malformed,
    /// The registry does not know the key.
    #[error("the API key is not known")]
    Unknown,
    /// The registry erred or did not answer in time, and no stale answer may be served.
    #[error("the key registry cannot be reached")]
    Unavailable(#[source] StoreError),
}

impl Authn {
    /// The key from exactly one key header, trimmed: none is `Ok(None)`.
    pub fn presented<'h>(&self, headers: &'h HeaderMap) -> Result<Option<&'h str>, AuthnError> {
        let ambiguous = || AuthnError::Ambiguous {
            header: self.header.clone(),
        };
        let Some(first) = headers::at_most_one(headers, &self.header).map_err(|_| ambiguous())?
        else {
            return Ok(None);
        };
        let text = first.to_str().map_err(|_| AuthnError::NotText)?.trim();
        if text.contains(',') {
            return Err(ambiguous());
        }
        Ok(Some(text))
    }

    /// The record of the key `secret` (as [`Authn::presented`] returned it), with its
    /// hash. The record may still be revoked or expired: that is the policy's to say.
    pub async fn authenticate(
        &self,
        secret: &str,
    ) -> Result<(KeyHash, Arc<KeyRecord>), AuthnError> {
        let hash = match keys::parse(secret, &self.prefix) {
            Ok(hash) => hash,
            Err(_) if self.accept_imported && imported_shape(secret) => keys::hash(secret),
            Err(_) => return Err(AuthnError::Malformed),
        };
        match self.lookup(&hash).await? {
            Lookup::Found(record) => Ok((hash, record)),
            Lookup::Unknown => Err(AuthnError::Unknown),
        }
    }

    /// The key's record through the cache; a registry that errs or is too slow refuses
    /// (fail closed), unless the cache may serve a stale known key (`stale_if_error`).
    async fn lookup(&self, hash: &KeyHash) -> Result<Lookup, AuthnError> {
        // A cache hit needs no timer.
        if let Some(hit) = self.cache.cached(hash) {
            return Ok(hit);
        }
        match tokio::time::timeout(self.timeout, self.cache.fetch(hash, &*self.store)).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => Err(AuthnError::Unavailable(e)),
            Err(_) => self.cache.on_store_error(hash).ok_or_else(|| {
                AuthnError::Unavailable(StoreError::unavailable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }),
        }
    }
}

/// A key from elsewhere: visible ASCII (as every header value that got here is), not
/// empty, not absurdly long.
fn imported_shape(secret: &str) -> bool {
    !secret.is_empty() && secret.len() <= MAX_IMPORTED_LEN
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::CacheSettings;
    use crate::keys::Timestamp;
    use crate::store::embedded::EmbeddedStore;
    use http::HeaderValue;

    fn authn(store: Arc<dyn KeyStore>) -> Authn {
        Authn {
            header: HeaderName::from_static("x-custom-key"),
            header_display: "X-Custom-Key".to_owned(),
            prefix: "kg_".to_owned(),
            cache: Arc::new(Cache::new(&CacheSettings {
                ttl: Duration::from_secs(60),
                negative_ttl: Duration::from_secs(5),
                max_entries: 100,
                stale_if_error: Duration::ZERO,
            })),
            store,
            timeout: Duration::from_secs(1),
            accept_imported: false,
        }
    }

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-custom-key", HeaderValue::from_static(v));
        }
        h.append("x-api-key", HeaderValue::from_static("ignored"));
        h
    }

    #[test]
    fn exactly_one_value_of_the_configured_header() {
        let dir = tempfile::tempdir().unwrap();
        let a = authn(Arc::new(
            EmbeddedStore::open(&dir.path().join("k.db")).unwrap(),
        ));
        assert_eq!(a.presented(&headers(&[])).unwrap(), None);
        assert_eq!(a.presented(&headers(&[" kg_x "])).unwrap(), Some("kg_x"));
        for twice in [&["kg_a", "kg_b"][..], &["kg_a, kg_b"]] {
            assert!(matches!(
                a.presented(&headers(twice)),
                Err(AuthnError::Ambiguous { header }) if header == "x-custom-key"
            ));
        }
        let mut h = HeaderMap::new();
        h.insert("x-custom-key", HeaderValue::from_bytes(b"kg_\xff").unwrap());
        assert!(matches!(a.presented(&h), Err(AuthnError::NotText)));
    }

    #[tokio::test]
    async fn junk_is_malformed_an_unregistered_key_unknown_a_registered_one_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("k.db")).unwrap());
        let a = authn(store.clone());
        assert!(matches!(
            a.authenticate("kg_junk").await,
            Err(AuthnError::Malformed)
        ));
        let secret = keys::generate("kg_");
        assert!(matches!(
            a.authenticate(secret.expose()).await,
            Err(AuthnError::Unknown)
        ));
        let secret = keys::generate("kg_");
        store
            .insert(&KeyRecord {
                identity: crate::headers::Memo::default(),
                hash: secret.hash(),
                prefix: keys::display_prefix(&secret, "kg_"),
                ..crate::store::contract::record("kid_authn", "b", "u", Timestamp::now().0)
            })
            .await
            .unwrap();
        let (hash, record) = a.authenticate(secret.expose()).await.unwrap();
        assert_eq!(hash, secret.hash());
        assert_eq!(record.hash, hash);
    }
}
