//! The client's address, for a key's IP allowlist: the connection's peer, or, when the
//! peer is a configured trusted proxy, the client its `X-Forwarded-For` chain names.
//!
//! Invariants: a chain is believed only from a trusted peer (as in `rewrite`); it is
//! read from the right, skipping trusted proxies, so a client cannot pick its own
//! address by prepending to the chain; a chain that does not parse is not believed (the
//! peer is the client). Only asked for keys that carry an allowlist.

use std::net::IpAddr;

use http::HeaderMap;

use super::rewrite::X_FORWARDED_FOR;

/// The address the request comes from, as far as `trusted` proxies vouch for it.
pub fn address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        for part in text.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                Err(_) => return peer,
            }
        }
    }
    // Right to left: the first hop no trusted proxy accounts for is the client; a chain
    // of trusted proxies only ends at its leftmost entry.
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;

    fn xff(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_chain_is_believed_only_from_a_trusted_peer_and_read_from_the_right() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            address(ip("192.0.2.9"), &xff(&["203.0.113.1"]), &trusted),
            ip("192.0.2.9")
        );
        // A trusted peer vouches for the hop before it; a client-prepended entry is ignored.
        assert_eq!(
            address(ip("10.0.0.2"), &xff(&["6.6.6.6, 203.0.113.1"]), &trusted),
            ip("203.0.113.1")
        );
        // Trusted proxies in the chain are skipped; repeated headers join in order.
        assert_eq!(
            address(ip("10.0.0.2"), &xff(&["2001:db8::7", "10.1.1.1"]), &trusted),
            ip("2001:db8::7")
        );
        // No chain, or junk in it: the peer.
        assert_eq!(address(ip("10.0.0.2"), &xff(&[]), &trusted), ip("10.0.0.2"));
        assert_eq!(
            address(ip("10.0.0.2"), &xff(&["nonsense"]), &trusted),
            ip("10.0.0.2")
        );
        // All trusted: the leftmost.
        assert_eq!(
            address(ip("10.0.0.2"), &xff(&["10.9.9.9"]), &trusted),
            ip("10.9.9.9")
        );
    }
}
