//! Secrets, their hashes, and key records.
//!
//! A secret is `<prefix><body><checksum>`: the body is 128 bits from the operating
//! system's CSPRNG written as 22 base62 characters, the checksum is the CRC32 of
//! `<prefix><body>` written as 6 base62 characters. The checksum lets the proxy
//! refuse a mistyped or made-up key without asking the registry, and lets secret
//! scanners recognise a leaked key by shape alone.
//!
//! Invariants: a [`Secret`] never prints itself (`Debug` is redacted, there is no
//! `Display`); everything that is stored or cached is keyed by [`KeyHash`], the
//! SHA-256 of the whole secret. This module is pure: no I/O; its one HTTP type is the memo of a record's
//! identity header values ([`KeyRecord::identity_values`]).

use std::fmt;

use http::HeaderValue;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::headers::Memo;

mod quota;
mod rate;
pub use quota::{Quota, QuotaInput, QuotaSpec, Window, now_ms};
pub use rate::RateLimit;

/// A key's own rate per route name, overriding the route's (and its plan's); sorted by
/// route name.
pub type KeyLimits = std::collections::BTreeMap<String, RateLimit>;

/// A plan name as given: empty means no plan (how the CLI, the admin API, import lines
/// and the stores all say "none").
pub fn plan_named(name: String) -> Option<String> {
    Some(name).filter(|n| !n.is_empty())
}

/// Base62 characters in a secret's body: ceil(128 / log2(62)).
pub const BODY_LEN: usize = 22;
/// Base62 characters in a secret's checksum: ceil(32 / log2(62)).
pub const CHECKSUM_LEN: usize = 6;
/// Characters of the body shown in a record's `prefix` so people can tell keys apart.
const SHOWN_BODY_CHARS: usize = 6;

/// A freshly generated secret. Shown once, then dropped; never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's text, for the one place it is shown to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the secret, the only form in which it is stored.
    pub fn hash(&self) -> KeyHash {
        hash(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// SHA-256 of a secret: the registry's and the cache's key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Lower-case hex, as stored in the registries.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the lower-case hex written by [`KeyHash::to_hex`].
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not secret, but a short form keeps logs readable.
        write!(f, "KeyHash({}…)", &self.to_hex()[..12])
    }
}

/// Why a presented key was refused before any registry look-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the key does not start with the configured prefix")]
    Prefix,
    #[error("the key has the wrong length")]
    Length,
    #[error("the key contains characters outside base62")]
    Alphabet,
    #[error("the key's checksum does not match")]
    Checksum,
}

/// Makes a new secret with `prefix` from 128 bits of OS randomness.
///
/// # Panics
/// When the operating system cannot provide randomness: no key can be made safely then.
pub fn generate(prefix: &str) -> Secret {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's CSPRNG is unavailable");
    let body = base62_fixed(u128::from_le_bytes(bytes), BODY_LEN);
    let mut text = String::with_capacity(prefix.len() + BODY_LEN + CHECKSUM_LEN);
    text.push_str(prefix);
    text.push_str(&body);
    let sum = checksum(text.as_bytes());
    text.push_str(&sum);
    Secret(text)
}

/// Checks a presented key's shape and checksum and returns its hash.
///
/// Allocation-free: the hot path calls this on every keyed request.
pub fn parse(candidate: &str, prefix: &str) -> Result<KeyHash, Malformed> {
    let rest = candidate.strip_prefix(prefix).ok_or(Malformed::Prefix)?;
    if rest.len() != BODY_LEN + CHECKSUM_LEN {
        return Err(Malformed::Length);
    }
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Malformed::Alphabet);
    }
    let (signed, sum) = candidate.split_at(candidate.len() - CHECKSUM_LEN);
    let mut expected = [0u8; CHECKSUM_LEN];
    encode_fixed_into(
        u128::from(crc32fast::hash(signed.as_bytes())),
        &mut expected,
    );
    if sum.as_bytes() != expected {
        return Err(Malformed::Checksum);
    }
    Ok(hash(candidate))
}

/// SHA-256 of a secret's text.
pub fn hash(secret: &str) -> KeyHash {
    KeyHash(Sha256::digest(secret.as_bytes()).into())
}

/// The `prefix` field of a record: the configured prefix and the body's first characters.
pub fn display_prefix(secret: &Secret, prefix: &str) -> String {
    let end = (prefix.len() + SHOWN_BODY_CHARS).min(secret.0.len());
    secret.0[..end].to_owned()
}

fn checksum(signed: &[u8]) -> String {
    base62_fixed(u128::from(crc32fast::hash(signed)), CHECKSUM_LEN)
}

/// Base62 (0-9A-Za-z, the `base62` crate's standard alphabet) left-padded with `0`.
fn base62_fixed(value: u128, width: usize) -> String {
    let digits = base62::encode(value);
    let mut out = String::with_capacity(width.max(digits.len()));
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(&digits);
    out
}

/// Fixed-width base62 into a stack buffer, so `parse` does not allocate.
fn encode_fixed_into(value: u128, out: &mut [u8]) {
    let mut buf = [0u8; 22];
    let n = base62::encode_bytes(value, &mut buf).unwrap_or(0);
    let width = out.len();
    let pad = width.saturating_sub(n);
    out[..pad].fill(b'0');
    out[pad..].copy_from_slice(&buf[..width - pad]);
}

/// Seconds since the Unix epoch, UTC. Written and read as RFC 3339.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time, whole seconds.
    pub fn now() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    /// `self` plus a duration, saturating far in the future.
    #[must_use]
    pub fn plus(self, d: std::time::Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(secs))
    }

    /// RFC 3339 in UTC, e.g. `2026-11-23T11:05:34Z`.
    pub fn to_rfc3339(self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_owned())
    }

    /// Parses RFC 3339 with any offset; sub-seconds are dropped.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| Self(t.unix_timestamp()))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
    }
}

/// A role granted at some locations (`*` = every location).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub role: String,
    pub locations: Vec<String>,
}

/// Where a key stands at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    /// Switched off by an admin (`enabled: false`); resumable, unlike revocation.
    Disabled,
    Expired,
    Revoked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "active" => Ok(Self::Active),
            "disabled" => Ok(Self::Disabled),
            "expired" => Ok(Self::Expired),
            "revoked" => Ok(Self::Revoked),
            _ => Err(()),
        }
    }
}

/// Everything the registry knows of a key, except its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The identity headers' values, built on first use ([`KeyRecord::identity_values`]).
    pub identity: Memo<3>,
    pub id: String,
    pub hash: KeyHash,
    pub name: String,
    pub description: String,
    /// The first characters of the secret, to recognise it by.
    pub prefix: String,
    pub user_id: String,
    pub business_id: String,
    pub scopes: Vec<String>,
    pub locations: Vec<String>,
    pub grants: Vec<Grant>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub created_by: String,
    /// `false`: suspended; the proxy answers 401 `disabled_api_key` until resumed.
    pub enabled: bool,
    /// Plan data for the upstream, sent as `X-Keygate-Meta-<name>` (see [`Metadata`]).
    pub metadata: Metadata,
    /// Client addresses the key may be used from; empty: anywhere.
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// The last edit (suspend, resume, update); `None`: never edited since creation.
    pub updated_at: Option<Timestamp>,
    /// Per-route rates that replace the route's own for this key.
    pub limits: KeyLimits,
    /// The policy plan (`plans:`) whose limits apply to this key, if any.
    pub plan: Option<String>,
    /// The key's own quota (beats its plan's), if any.
    pub quota: Option<Quota>,
    /// Where the key's quota use is counted: its first id; rotation keeps it.
    pub quota_counter: String,
}

/// A key's metadata: at most [`MAX_META_ENTRIES`] entries, names `[a-z0-9-]{1,32}`,
/// values of at most [`MAX_META_VALUE`] visible ASCII characters, at most
/// [`MAX_META_TOTAL`] bytes in all. Sorted by name, so it prints and compares alike
/// everywhere.
pub type Metadata = std::collections::BTreeMap<String, String>;

/// Why metadata is refused; the message names the entry and the rule.
pub fn check_metadata(m: &Metadata) -> Result<(), String> {
    if m.len() > MAX_META_ENTRIES {
        return Err(format!(
            "has {} entries; at most {MAX_META_ENTRIES} are allowed",
            m.len()
        ));
    }
    let mut total = 0;
    for (name, value) in m {
        let name_ok = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(format!(
                "`{name}` is not a valid name: use 1 to 32 characters from a-z, 0-9 and -"
            ));
        }
        if value.len() > MAX_META_VALUE || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "the value of `{name}` must be at most {MAX_META_VALUE} visible ASCII characters"
            ));
        }
        total += name.len() + value.len();
    }
    if total > MAX_META_TOTAL {
        return Err(format!(
            "holds {total} bytes of names and values; at most {MAX_META_TOTAL} are allowed"
        ));
    }
    Ok(())
}

/// Most metadata entries a key may carry.
pub const MAX_META_ENTRIES: usize = 16;
/// Longest metadata value.
pub const MAX_META_VALUE: usize = 256;
/// Most bytes of metadata names and values in all.
pub const MAX_META_TOTAL: usize = 1024;

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it is: a
/// client's mapped address is compared as IPv4 ([`KeyRecord::allows_ip`]), so the entry
/// must be too.
fn unmapped(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
            .addr()
            .to_ipv4_mapped()
            .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
            .map_or(net, ipnet::IpNet::V4),
        other => other,
    }
}

/// An allowlist entry as people write it: a single address without its `/32` or `/128`.
pub fn ip_net_text(net: &ipnet::IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// `10.0.0.0/8` or `2001:db8::1` (a single address); the message says what is accepted.
pub fn parse_ip_net(text: &str) -> Result<ipnet::IpNet, String> {
    let t = text.trim();
    t.parse::<ipnet::IpNet>()
        .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| unmapped(n).trunc())
        .map_err(|_| {
            format!(
                "`{t}` is not an IP address or CIDR (like 203.0.113.7, 10.0.0.0/8 or 2001:db8::/32)"
            )
        })
}

impl KeyRecord {
    /// The key id, user id and business id as header values (`None`: not a valid one),
    /// built once per record rather than once per request.
    pub fn identity_values(&self) -> &[Option<HeaderValue>; 3] {
        self.identity
            .get(|| [&self.id, &self.user_id, &self.business_id].map(String::as_str))
    }

    /// Revoked wins over expired, expired over disabled; a key expires at the second
    /// `expires_at` names.
    pub fn status(&self, now: Timestamp) -> Status {
        if self.revoked_at.is_some() {
            Status::Revoked
        } else if self.expires_at.is_some_and(|e| e <= now) {
            Status::Expired
        } else if !self.enabled {
            Status::Disabled
        } else {
            Status::Active
        }
    }

    /// Whether a client at `ip` may use the key (an empty allowlist: anywhere). An
    /// IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn allows_ip(&self, ip: std::net::IpAddr) -> bool {
        if self.allowed_ips.is_empty() {
            return true;
        }
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 @ std::net::IpAddr::V4(_) => v4,
        };
        self.allowed_ips.iter().any(|n| n.contains(&ip))
    }

    /// The record as the admin API and `--json` show it (no hash, no secret).
    pub fn to_json(&self, now: Timestamp) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "prefix": self.prefix,
            "user_id": self.user_id,
            "business_id": self.business_id,
            "scopes": self.scopes,
            "locations": self.locations,
            "grants": self.grants,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
            "status": self.status(now),
            "created_by": self.created_by,
            "enabled": self.enabled,
            "metadata": self.metadata,
            "allowed_ips": self.allowed_ips.iter().map(ip_net_text).collect::<Vec<_>>(),
            "updated_at": self.updated_at.unwrap_or(self.created_at),
            "limits": self.limits,
            "plan": self.plan,
            "quota": self.quota.as_ref().map(Quota::to_json),
        })
    }
}

/// A new opaque key id: `kid_` and 17 base62 characters.
///
/// The characters encode the creation time in milliseconds (48 bits) and 48 random
/// bits, fixed-width, so ids of keys created in the same second still sort newest-last
/// byte by byte (the store's tiebreak). Ids never start with the secret prefix, so an id
/// pasted where a key belongs is refused by shape.
pub fn new_id(secret_prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's CSPRNG is unavailable");
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        & ((1 << 48) - 1);
    let random = u128::from(u64::from_le_bytes(bytes) & ((1 << 48) - 1));
    let body = base62_fixed((millis << 48) | random, 17);
    let id = format!("kid_{body}");
    if secret_prefix.is_empty() || !id.starts_with(secret_prefix) {
        id
    } else {
        // The prefix is a prefix of `kid_…`; `ID-…` cannot share it as well.
        format!("ID-{body}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_parse_and_hash_consistently() {
        let s = generate("kg_");
        assert!(s.expose().starts_with("kg_"));
        assert_eq!(s.expose().len(), 3 + BODY_LEN + CHECKSUM_LEN);
        assert_eq!(parse(s.expose(), "kg_"), Ok(s.hash()));
    }

    #[test]
    fn two_secrets_differ() {
        assert_ne!(generate("kg_"), generate("kg_"));
    }

    #[test]
    fn wrong_prefix_length_alphabet_and_checksum_are_refused() {
        let s = generate("kg_").expose().to_owned();
        assert_eq!(parse(&s, "xx_"), Err(Malformed::Prefix));
        assert_eq!(parse(&s[..s.len() - 1], "kg_"), Err(Malformed::Length));
        let mut bad = s.clone();
        bad.replace_range(5..6, "-");
        assert_eq!(parse(&bad, "kg_"), Err(Malformed::Alphabet));
        let flipped = if s.as_bytes()[5] == b'a' { "b" } else { "a" };
        let mut typo = s.clone();
        typo.replace_range(5..6, flipped);
        assert_eq!(parse(&typo, "kg_"), Err(Malformed::Checksum));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = generate("kg_");
        assert!(!format!("{s:?}").contains(&s.expose()[3..]));
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let a = new_id("kg_");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("kg_");
        assert_eq!(a.len(), b.len());
        assert!(a < b, "{a} !< {b}");
    }

    #[test]
    fn ids_never_start_with_the_prefix() {
        for prefix in ["kg_", "k", "kid_", "kid", "K"] {
            let id = new_id(prefix);
            assert!(!id.starts_with(prefix), "{id} starts with {prefix}");
        }
    }

    #[test]
    fn mapped_allowlist_entries_match_mapped_and_plain_clients() {
        let net = parse_ip_net("::ffff:127.0.0.0/104").unwrap();
        assert_eq!(net.to_string(), "127.0.0.0/8");
        assert_eq!(
            ip_net_text(&parse_ip_net("::ffff:127.0.0.1").unwrap()),
            "127.0.0.1"
        );
        assert_eq!(
            parse_ip_net("2001:db8::1/64").unwrap().to_string(),
            "2001:db8::/64"
        );
        assert!(parse_ip_net("10.0.0.300").is_err());
    }

    #[test]
    fn timestamps_round_trip_rfc3339() {
        let t = Timestamp(1_795_000_000);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-23T12:00:00+01:00"),
            Timestamp::parse_rfc3339("2026-11-23T11:00:00Z")
        );
    }

    proptest! {
        /// Any single-character change to a valid key is caught by shape or checksum.
        #[test]
        fn any_single_substitution_is_refused(pos in 3usize..31, c in "[0-9A-Za-z]") {
            let s = generate("kg_").expose().to_owned();
            let mut changed = s.clone();
            changed.replace_range(pos..=pos, &c);
            prop_assume!(changed != s);
            prop_assert!(parse(&changed, "kg_").is_err());
        }

        /// Arbitrary text never panics the parser and is refused unless well-formed.
        #[test]
        fn junk_is_refused_without_panicking(junk in "\\PC{0,64}") {
            prop_assert!(parse(&junk, "kg_").is_err());
        }

        /// Every generated key round-trips through parse.
        #[test]
        fn generated_keys_always_parse(prefix in "[a-z]{1,6}_") {
            let s = generate(&prefix);
            prop_assert_eq!(parse(s.expose(), &prefix), Ok(s.hash()));
        }
    }
}
