//! What a policy's decision hands out: the route a request [`Matched`], the
//! [`Permitted`] that lets it go upstream, and the [`RouteName`] both carry.
//!
//! Invariants: only the `policy` module builds a `Matched` or a `Permitted` (their fields
//! are private to it); a `Permitted` carries the normalised path that was authorised and
//! the byte length of the route's `strip_prefix`, so what is forwarded is that path, less
//! the prefix, and nothing else.

use std::sync::Arc;

use super::path::NormalPath;
use super::{DEFAULT_ROUTE, Policy, Route, RouteLimit};
use crate::keys::KeyRecord;

/// A route's name, and its `X-Keygate-Route` header value, built once when the policy
/// loads rather than validated and copied into a new header value on every request.
#[derive(Debug, Clone)]
pub struct RouteName {
    text: Arc<str>,
    /// `None` when the name is not a valid header value (it is then left out).
    header: Option<http::HeaderValue>,
}

impl RouteName {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            text: Arc::from(name),
            header: http::HeaderValue::from_str(name).ok(),
        }
    }

    /// The name as a shared string (for the access log; no copy).
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.text)
    }

    /// The `X-Keygate-Route` value.
    pub fn header(&self) -> Option<&http::HeaderValue> {
        self.header.as_ref()
    }
}

impl std::ops::Deref for RouteName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

/// The route a request matched (or the `allow_authenticated` default). Borrowed from the
/// policy it came from; hand it back, with the path it matched, to that same policy's
/// `decide` or `permit_public`. It holds no position in the path: `decide` re-matches the
/// path it is given (allocation-free) and reads a `from: path` location from that, so the
/// location checked always comes from the path forwarded.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'p> {
    pub(super) policy: &'p Policy,
    pub(super) target: Target<'p>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Target<'p> {
    Route(&'p Route),
    Default,
}

impl<'p> Matched<'p> {
    pub fn is_public(&self) -> bool {
        matches!(self.target, Target::Route(r) if r.public)
    }

    /// Whether this is the `default: allow_authenticated` pseudo-route.
    pub fn is_default(&self) -> bool {
        matches!(self.target, Target::Default)
    }

    pub fn route_name(&self) -> &'p str {
        match self.target {
            Target::Route(r) => &r.name,
            Target::Default => DEFAULT_ROUTE,
        }
    }

    /// The route name as a shared string (for the access log; no copy).
    pub fn route_name_shared(&self) -> Arc<str> {
        match self.target {
            Target::Route(r) => r.name.shared(),
            Target::Default => self.policy.default_name.shared(),
        }
    }

    /// Every scope a key needs here (the route's `scopes` and those of its `roles`).
    pub fn required_scopes(&self) -> &'p [String] {
        match self.target {
            Target::Route(r) => &r.scopes,
            Target::Default => &[],
        }
    }

    pub fn rate_limit(&self) -> Option<RouteLimit> {
        match self.target {
            Target::Route(r) => r.rate_limit,
            Target::Default => None,
        }
    }

    /// Where the route reads its location from: (`path`|`header`|`query`, name).
    pub fn location_source(&self) -> Option<(&'static str, &'p str)> {
        match self.target {
            Target::Route(r) => r.location.as_ref().map(|l| (l.source_name(), l.name())),
            Target::Default => None,
        }
    }
}

/// Proof that a request may go upstream: only this module builds one.
#[derive(Debug, Clone)]
pub struct Permitted {
    pub(super) route: RouteName,
    pub(super) path: NormalPath,
    pub(super) who: Option<Arc<KeyRecord>>,
    pub(super) location: Option<String>,
    pub(super) rate_limit: Option<RouteLimit>,
    /// The route's upstream (0: the default).
    pub(super) upstream: u16,
    /// Bytes of `path` the route's `strip_prefix` removes before forwarding.
    pub(super) strip: usize,
}

impl Permitted {
    /// The upstream the route sends to: 0 the default, `n` the config's n-th named one.
    pub fn upstream(&self) -> usize {
        usize::from(self.upstream)
    }

    /// The path to forward: the authorised path less the route's `strip_prefix` (`/` when
    /// nothing is left). The prefix is whole literal segments of the route's pattern, so
    /// it is always there.
    pub fn forward_path(&self) -> &str {
        match self.path.as_str().get(self.strip..) {
            Some("") | None => "/",
            Some(rest) => rest,
        }
    }

    pub fn route_name(&self) -> &str {
        &self.route
    }

    /// The route's `X-Keygate-Route` value, built at policy load.
    pub fn route_header(&self) -> Option<&http::HeaderValue> {
        self.route.header()
    }

    /// The path that was authorised: the one to forward.
    pub fn path(&self) -> &NormalPath {
        &self.path
    }

    /// The key's record; `None` on a public route.
    pub fn who(&self) -> Option<&KeyRecord> {
        self.who.as_deref()
    }

    /// The location the request acts at, when the route has one.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    pub fn rate_limit(&self) -> Option<RouteLimit> {
        self.rate_limit
    }
}
