//! Header rules: what a forwarded request's headers become, and which headers are
//! hop-by-hop. Pure functions over `HeaderMap`s; no I/O, no upstream.
//!
//! Invariants:
//! - the client's key header and every `X-Keygate-*` header are removed before the
//!   identity headers are added, and the headers a `Connection` header names are removed
//!   first, so a client cannot use hop-by-hop nominations to drop what keygate adds;
//! - HTTP/1.1 and HTTP/2 requests are rewritten by the same two halves
//!   ([`strip_client_headers`], then [`add_gateway_headers`]; a resend runs the second
//!   again), so the two protocol paths cannot drift;
//! - forward-auth answers carry the same identity headers through [`insert_identity`];
//! - forwarding headers from the client (`X-Forwarded-For`, `-Proto`, `-Host`, `-Port`,
//!   `-Prefix`, `Forwarded`, `X-Real-IP`) are believed only from a configured trusted
//!   proxy: from anyone else they are dropped, or overwritten with keygate's own
//!   (`X-Forwarded-For`, `-Proto`, and `-Host`: the client's `Host` or `:authority`).
//!
//! Why a string match for hop-by-hop names ([`is_hop_by_hop`]): most requests carry none,
//! and matching the name's text length-first is cheaper than hashing it for seven
//! `HeaderMap` look-ups (part of the −1,900 instructions per request in
//! `docs/performance.md`); a unit test keeps the match and [`HOP_BY_HOP`] in step.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::policy::Permitted;

pub const KEY_ID: HeaderName = HeaderName::from_static("x-keygate-key-id");
pub const USER_ID: HeaderName = HeaderName::from_static("x-keygate-user-id");
pub const BUSINESS_ID: HeaderName = HeaderName::from_static("x-keygate-business-id");
pub const ROUTE: HeaderName = HeaderName::from_static("x-keygate-route");
pub const LOCATION: HeaderName = HeaderName::from_static("x-keygate-location");
pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// True for `Connection: upgrade` + `Upgrade: websocket` (HTTP/1.1 only).
pub fn is_websocket(h: &HeaderMap) -> bool {
    let upgrade_ws = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    upgrade_ws && connection_tokens(h).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(h: &HeaderMap) -> impl Iterator<Item = &str> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), those the `Connection` header names included.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the (few) names present; most requests carry none, and most
    // answers only `Connection`.
    let mut present = h.keys().filter(|k| is_hop_by_hop(k)).count();
    if present == 0 {
        return;
    }
    // `close` and `keep-alive` are the usual tokens: the first names no header, the
    // second is removed below anyway.
    let named: Vec<HeaderName> = connection_tokens(h)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        h.remove(name);
    }
    // Stops once the names counted are gone (a nominated one may already be: then it
    // simply asks for all seven).
    for name in &HOP_BY_HOP {
        if present == 0 {
            break;
        }
        if h.remove(name).is_some() {
            present -= 1;
        }
    }
}

/// Whether `name` is one of [`HOP_BY_HOP`] (a length-first string match, no hashing).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

pub const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The connection a request came in on, as the forwarding headers describe it.
#[derive(Clone, Copy)]
pub struct Hop<'a> {
    /// The peer's address, as [`ip_value`] writes it (once per connection).
    pub peer_ip: &'a HeaderValue,
    pub tls: bool,
    /// The peer is a configured trusted proxy: its forwarding headers are kept.
    pub trusted_peer: bool,
}

/// Headers the upstream request may gain: five identity, three forwarding, `Host`.
const ADDED_HEADERS: usize = 9;

/// Both halves of the rewrite in one call, as `forward` runs them for every request (it
/// calls them apart to keep the client's half for a resend); the criterion bench times it.
pub fn rewrite_request_headers(
    h: &mut HeaderMap,
    key_header: &HeaderName,
    permit: &Permitted,
    hop: Hop<'_>,
    websocket: bool,
) {
    let client_host = strip_client_headers(h, key_header, websocket, hop.trusted_peer);
    add_gateway_headers(h, permit, hop, client_host);
}

/// The first half of [`rewrite_request_headers`]: removes what the client sent that must
/// not reach the upstream (hop-by-hop headers, the key, `X-Keygate-*`, `Host`); returns the
/// client's `Host`, for `X-Forwarded-Host`. What is left is all the client contributes, so
/// it is all a request that may be sent again needs to keep. Unless `trusted_peer`, the
/// client's forwarding headers go too ([`is_forwarding`]).
pub fn strip_client_headers(
    h: &mut HeaderMap,
    key_header: &HeaderName,
    websocket: bool,
    trusted_peer: bool,
) -> Option<HeaderValue> {
    let client_host = h.remove(header::HOST);
    strip_hop_by_hop(h);
    if websocket {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    // After hop-by-hop removal, so a `Connection: x-api-key` cannot matter either way.
    h.remove(key_header);
    let spoofed: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-keygate-") || (!trusted_peer && is_forwarding(k)))
        .cloned()
        .collect();
    for name in spoofed {
        h.remove(name);
    }
    client_host
}

/// The second half of [`rewrite_request_headers`]: adds keygate's own headers (identity,
/// forwarding) to what [`strip_client_headers`] left.
pub fn add_gateway_headers(
    h: &mut HeaderMap,
    permit: &Permitted,
    hop: Hop<'_>,
    client_host: Option<HeaderValue>,
) {
    // Room for what is added below (identity, forwarding, `Host`): one growth, not several.
    h.reserve(ADDED_HEADERS);
    // Public routes forward with no identity headers at all.
    if permit.who().is_some() {
        insert_identity(h, permit, false);
    }
    forwarding_headers(h, hop);
    // A trusted proxy's `X-Forwarded-Host` names the host its client asked for; keep it.
    if let Some(host) = client_host
        && !(hop.trusted_peer && h.contains_key(X_FORWARDED_HOST))
    {
        h.insert(X_FORWARDED_HOST, host);
    }
}

/// The forwarding headers a client may not set (keygate sets `X-Forwarded-For`, `-Proto`
/// and `-Host` itself, so those are overwritten anyway; `-Host` is named here as it is
/// only written when the client's host is known). A string match, as [`is_hop_by_hop`].
fn is_forwarding(name: &HeaderName) -> bool {
    let n = name.as_str();
    match n.len() {
        9 => n == "forwarded" || n == "x-real-ip",
        16 => n == "x-forwarded-host" || n == "x-forwarded-port",
        18 => n == "x-forwarded-prefix",
        _ => false,
    }
}

/// The `X-Keygate-*` identity headers for `permit`. With `every`, all five are set, empty
/// where there is nothing to say (forward-auth answers: a fronting proxy copies them
/// over whatever the client sent, so none may be missing).
pub fn insert_identity(h: &mut HeaderMap, permit: &Permitted, every: bool) {
    // The key's three values are built once per cached record, then shared.
    let ids = permit.who().map(crate::keys::KeyRecord::identity_values);
    for (name, i) in [(KEY_ID, 0), (USER_ID, 1), (BUSINESS_ID, 2)] {
        match ids.map(|v| &v[i]) {
            Some(Some(v)) => {
                h.insert(name, v.clone());
            }
            None if every => {
                h.insert(name, HeaderValue::from_static(""));
            }
            // A value that is not a valid header value is left out, as before.
            Some(None) | None => {}
        }
    }
    if let Some(key) = permit.who()
        && !key.metadata.is_empty()
    {
        insert_metadata(h, &key.metadata);
    }
    if let Some(route) = permit.route_header() {
        h.insert(ROUTE, route.clone());
    }
    match permit.location() {
        Some(at) => insert_text(h, LOCATION, at),
        None if every => {
            h.insert(LOCATION, HeaderValue::from_static(""));
        }
        None => {}
    }
}

/// `X-Keygate-Meta-<name>: <value>` per metadata entry. Names and values were checked
/// when the key was written (`[a-z0-9-]`, visible ASCII), so each is a valid header.
fn insert_metadata(h: &mut HeaderMap, metadata: &crate::keys::Metadata) {
    for (name, value) in metadata {
        let header = HeaderName::from_bytes(format!("x-keygate-meta-{name}").as_bytes());
        if let (Ok(header), Ok(value)) = (header, HeaderValue::from_str(value)) {
            h.insert(header, value);
        }
    }
}

/// `X-Forwarded-For`: the peer appended to the chain a trusted proxy sent, else the peer
/// alone (a client-sent chain is not believed). `X-Forwarded-Proto`: a trusted proxy's
/// value, else this hop's scheme.
fn forwarding_headers(h: &mut HeaderMap, hop: Hop<'_>) {
    let chain = hop
        .trusted_peer
        .then(|| {
            let sent: Vec<&str> = h
                .get_all(X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let all_ips = sent
                .iter()
                .flat_map(|v| v.split(','))
                .all(|ip| ip.trim().parse::<std::net::IpAddr>().is_ok());
            let peer = hop.peer_ip.to_str().unwrap_or_default();
            (!sent.is_empty() && all_ips).then(|| format!("{}, {peer}", sent.join(", ")))
        })
        .flatten();
    // The peer alone (the usual case) is the connection's value, shared, not rebuilt.
    match chain.map(HeaderValue::try_from) {
        Some(Ok(chain)) => h.insert(X_FORWARDED_FOR, chain),
        _ => h.insert(X_FORWARDED_FOR, hop.peer_ip.clone()),
    };
    let trusted_https = hop
        .trusted_peer
        .then(|| h.get(X_FORWARDED_PROTO).and_then(|v| v.to_str().ok()))
        .flatten()
        .and_then(|p| match p {
            "https" => Some(true),
            "http" => Some(false),
            _ => None,
        });
    let https = trusted_https.unwrap_or(hop.tls);
    h.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
}

/// An IP address as a header value (`X-Forwarded-For`).
pub fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).expect("an IP address is a valid header value")
}

fn insert_text(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_are_recognised_without_hashing() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [
            header::HOST,
            header::CONTENT_LENGTH,
            KEY_ID,
            X_FORWARDED_FOR,
        ] {
            assert!(!is_hop_by_hop(&name), "{name}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_all_removed() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, te"),
            ("connection", "x-drop, close"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("x-drop", "1"),
            ("x-keep", "2"),
        ] {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-keep"]);
        // Nothing hop-by-hop: nothing touched.
        let mut plain = HeaderMap::new();
        plain.insert(header::HOST, HeaderValue::from_static("a"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }
}
