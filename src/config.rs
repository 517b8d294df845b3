//! The config file (`config/keygate.yaml`): YAML in, a validated, immutable [`Config`] out.
//!
//! Invariants: every field is typed and `deny_unknown_fields`, so a typo is an error with
//! its line, never a silently ignored setting; relative paths are resolved against the
//! config file's folder once, here; nothing in this module touches the network or knows
//! what a policy means.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::yaml::{self, Diagnostic, Diagnostics, Seg};

mod events;
mod upstreams;
pub use events::{EventSettings, Webhook, parse_url as parse_webhook_url, url_label};
pub use upstreams::{
    Balance, DEFAULT_NAME as DEFAULT_UPSTREAM, HealthSettings, UpstreamSettings, UpstreamTls,
};

/// Where the config is looked for when `--config` is not given and `$KEYGATE_CONFIG` is unset.
pub const DEFAULT_PATH: &str = "config/keygate.yaml";

/// `upstream.idle_timeout` by default: below the 5 s keep-alive timeout of Node.js and
/// uvicorn (and far below the 60 s of nginx and cloud load balancers), so keygate seldom
/// sends a request on a connection the upstream is about to close.
pub const DEFAULT_UPSTREAM_IDLE: Duration = Duration::from_secs(4);

/// A config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {file}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// A duration written like `500ms`, `30s`, `5m`, `12h`, `1d`, `2w`, `1y` (humantime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a duration as the whole product writes them (`500ms`, `30s`, `1h30m`; fractions
/// such as `1.5s` or `0.5d` are accepted); the message says what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const WRITE: &str = "write it like 500ms, 30s, 5m, 1.5h, 12h, 1d, 2w or 1y";
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!(
            "`{t}` is negative; a duration counts forward: {WRITE}"
        ));
    }
    humantime::parse_duration(t).map_err(|e| {
        let why = match e {
            humantime::DurationError::NumberExpected(0) => "it must start with a number".to_owned(),
            humantime::DurationError::NumberExpected(at) => {
                format!("a number is expected at character {}", at + 1)
            }
            humantime::DurationError::UnknownUnit { unit, .. } => format!("unknown unit `{unit}`"),
            other => other.to_string(),
        };
        format!("invalid duration `{t}` ({why}); {WRITE}")
    })
}

/// `host:port` checked when the file is read, so a typo names its line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(Addr).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid listen address `{text}`; write it like 127.0.0.1:8080"
            ))
        })
    }
}

/// An `http(s)://host:port[/base]` upstream target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl(pub http::Uri);

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_upstream(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses an upstream URL: `http` or `https` with a host, no query.
pub fn parse_upstream(text: &str) -> Result<UpstreamUrl, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("invalid upstream URL `{text}`: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "upstream URL `{text}` must start with http:// or https://"
        ));
    }
    if uri.authority().is_none() {
        return Err(format!("upstream URL `{text}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("upstream URL `{text}` must not have a query"));
    }
    Ok(UpstreamUrl(uri))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Addr>,
    tls: Option<RawTls>,
    upstream: upstreams::RawUpstream,
    upstreams: Option<upstreams::RawUpstreams>,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    keys: RawKeys,
    policy: Option<PathBuf>,
    #[serde(default)]
    log: RawLog,
    forward_auth: Option<RawForwardAuth>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    trusted_proxies: Vec<Cidr>,
    #[serde(default)]
    usage: RawUsage,
    #[serde(default)]
    events: events::RawEvents,
}

/// An address or network (`10.0.0.0/8`, `127.0.0.1`, `::1`), checked when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(Cidr)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid address or network `{text}`; write it like 10.0.0.0/8 or 127.0.0.1"
                ))
            })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Addr>,
    token_env: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Embedded,
    Redis,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default)]
    kind: StoreKind,
    path: Option<PathBuf>,
    url: Option<String>,
    cluster: Option<Vec<String>>,
    timeout: Option<Dur>,
    #[serde(default)]
    quotas_fail: QuotasFail,
}

/// `store.quotas_fail`: what a key with a quota meets when the store cannot be asked
/// and this gateway's lease of the quota is spent.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum QuotasFail {
    /// 503 `auth_unavailable` (the default): nothing is served uncounted.
    #[default]
    Closed,
    /// Served, uncounted, until the store answers again (one warning per outage).
    Open,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    ttl: Option<Dur>,
    negative_ttl: Option<Dur>,
    max_entries: Option<usize>,
    stale_if_error: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    prefix: Option<String>,
    max_ttl: Option<Dur>,
    header: Option<String>,
    expiry_warning: Option<Dur>,
    accept_imported: Option<bool>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    format: LogFormat,
    level: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwardAuth {
    listen: Addr,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUsage {
    retention: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    header_read_timeout: Option<Dur>,
    max_header_bytes: Option<usize>,
    max_connections: Option<usize>,
    drain_timeout: Option<Dur>,
    max_body_bytes: Option<u64>,
}

/// TLS certificate and key files for the proxy listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Which registry holds the keys, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Store {
    Embedded { path: PathBuf },
    Redis { url: String },
    RedisCluster { seeds: Vec<String> },
}

/// The validated configuration, one section per section of the file. Built only by
/// [`Config::load`] / [`Config::parse`]; each part of the gateway takes the sections it
/// uses whole (`Cache::new(&config.cache)`), so a new setting is one field, not a new
/// argument on every constructor between here and its user.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file this came from (for messages).
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub tls: Option<Tls>,
    /// `upstream:`, the upstream of every route that names none (`default`).
    pub upstream: UpstreamSettings,
    /// `upstreams:`, in file order; a route picks one with `upstream: NAME`.
    pub upstreams: Vec<UpstreamSettings>,
    /// Settings that are valid but unwise (`tls.insecure_skip_verify`), at their position.
    pub warnings: Vec<Diagnostic>,
    pub admin: AdminSettings,
    pub store: StoreSettings,
    pub cache: CacheSettings,
    pub keys: KeySettings,
    pub policy: PathBuf,
    pub log: LogSettings,
    /// `forward_auth.listen`, when forward-auth sub-requests are served.
    pub forward_auth_listen: Option<SocketAddr>,
    pub limits: LimitSettings,
    /// Peers whose `X-Forwarded-For`/`-Proto` are kept (and appended to); nobody by default.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `usage.retention`: how long per-key request counts are kept (default 90 days).
    pub usage_retention: Duration,
    /// `events:`: webhooks for key events.
    pub events: EventSettings,
}

/// `admin:`: the admin listener and its bootstrap token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// The env var holding the bootstrap admin token, if any.
    pub token_env: Option<String>,
}

/// `store:`: the key registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// `kind` with its `path`, `url` or `cluster`.
    pub backend: Store,
    /// The longest a request waits for the registry before it is refused with 503.
    pub timeout: Duration,
    pub quotas_fail: QuotasFail,
}

/// `cache:`: the key-record cache in front of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub max_entries: usize,
    /// How long past `ttl` a cached key may still be served while the registry
    /// errs (0 = never: uncached or expired keys get 503 during an outage).
    pub stale_if_error: Duration,
}

/// `keys:`: what a key looks like, where it is sent, how long it may live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySettings {
    pub prefix: String,
    /// The request header that carries the key (`X-API-Key` unless configured).
    pub header: http::HeaderName,
    /// The key header as written in the config, for messages and `WWW-Authenticate`.
    pub header_display: String,
    pub max_ttl: Option<Duration>,
    /// Keys in use this close to their expiry are logged and counted.
    pub expiry_warning: Duration,
    /// Keys without keygate's prefix and checksum (imported from elsewhere) are looked
    /// up too. Off by default: such a key cannot be refused without a look-up.
    pub accept_imported: bool,
}

/// `log:`: the stderr log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// `limits:`: connection and request bounds (not `crate::limits`, the per-key rate limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitSettings {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    /// Open client connections across listeners; at the cap, keygate stops accepting.
    pub max_connections: usize,
    /// How long in-flight requests may finish after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
    /// Larger request bodies are refused with 413 (declared) or cut off (streamed).
    pub max_body_bytes: u64,
}

impl Config {
    /// Reads and validates the file at `file`.
    /// Every upstream: the default first, then the named ones in file order (a route's
    /// upstream index counts in this order).
    pub fn all_upstreams(&self) -> impl Iterator<Item = &UpstreamSettings> {
        std::iter::once(&self.upstream).chain(&self.upstreams)
    }

    /// The named upstreams' names, in file order (what a policy's `upstream:` may say).
    pub fn upstream_names(&self) -> Vec<&str> {
        self.upstreams.iter().map(|u| u.name.as_str()).collect()
    }

    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Self::parse(file, &text)
    }

    /// Validates `text` as if read from `file` (relative paths resolve beside `file`).
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let (raw, pos): (RawConfig, _) = yaml::parse(file, text).map_err(ConfigError::Invalid)?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let here = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let (upstream, upstreams) = upstreams::Report {
            file,
            pos: &pos,
            errors: &mut errors,
            warnings: &mut warnings,
        }
        .sections(raw.upstream, raw.upstreams, &here);
        let mut err = |path: &[Seg], msg: String| errors.push(pos.diag(file, path, msg));

        let usage_retention = usage_retention(&raw.usage, &mut err);
        let events = events::settings(raw.events, &here, &mut err);
        let store = store_settings(raw.store, &here, &mut err);

        let (key_prefix, key_header, key_header_display) = key_settings(&raw.keys, &mut err);
        let cache_max_entries = raw.cache.max_entries.unwrap_or(1_000_000);
        if cache_max_entries == 0 {
            err(
                &[Seg::Key("cache"), Seg::Key("max_entries")],
                "`max_entries` must be at least 1".to_owned(),
            );
        }
        let log_level = raw.log.level.unwrap_or_else(|| "info".to_owned());
        if !["trace", "debug", "info", "warn", "error"].contains(&log_level.as_str()) {
            err(
                &[Seg::Key("log"), Seg::Key("level")],
                format!("invalid log level `{log_level}`: use trace, debug, info, warn or error"),
            );
        }
        let max_header_bytes = raw.limits.max_header_bytes.unwrap_or(64 * 1024);
        if max_header_bytes < 1024 {
            err(
                &[Seg::Key("limits"), Seg::Key("max_header_bytes")],
                "`max_header_bytes` must be at least 1024".to_owned(),
            );
        }

        if !errors.is_empty() {
            return Err(ConfigError::Invalid(Diagnostics(errors)));
        }
        Ok(Self {
            file: file.to_owned(),
            listen: raw
                .listen
                .map_or(SocketAddr::from(([127, 0, 0, 1], 8080)), |a| a.0),
            tls: raw.tls.map(|t| Tls {
                cert: here(&t.cert),
                key: here(&t.key),
            }),
            upstream,
            upstreams,
            warnings,
            admin: AdminSettings {
                listen: raw
                    .admin
                    .listen
                    .map_or(SocketAddr::from(([127, 0, 0, 1], 8081)), |a| a.0),
                token_env: raw.admin.token_env,
            },
            store,
            cache: CacheSettings {
                ttl: raw.cache.ttl.map_or(Duration::from_secs(60), |d| d.0),
                negative_ttl: or(raw.cache.negative_ttl, Duration::from_secs(5)),
                max_entries: cache_max_entries,
                stale_if_error: raw.cache.stale_if_error.map_or(Duration::ZERO, |d| d.0),
            },
            keys: KeySettings {
                prefix: key_prefix,
                header: key_header,
                header_display: key_header_display,
                max_ttl: raw.keys.max_ttl.map(|d| d.0),
                expiry_warning: or(raw.keys.expiry_warning, Duration::from_secs(7 * 86_400)),
                accept_imported: raw.keys.accept_imported.unwrap_or(false),
            },
            policy: here(raw.policy.as_deref().unwrap_or(Path::new("policy.yaml"))),
            log: LogSettings {
                format: raw.log.format,
                level: log_level,
            },
            forward_auth_listen: raw.forward_auth.map(|f| f.listen.0),
            limits: LimitSettings {
                header_read_timeout: or(raw.limits.header_read_timeout, Duration::from_secs(30)),
                max_header_bytes,
                max_connections: raw.limits.max_connections.unwrap_or(10_000).max(1),
                drain_timeout: or(raw.limits.drain_timeout, Duration::from_secs(10)),
                max_body_bytes: raw.limits.max_body_bytes.unwrap_or(32 * 1024 * 1024),
            },
            trusted_proxies: raw.trusted_proxies.into_iter().map(|c| c.0).collect(),
            usage_retention,
            events,
        })
    }
}

/// A duration setting, or its default.
fn or(set: Option<Dur>, default: Duration) -> Duration {
    set.map_or(default, |d| d.0)
}

/// `keys.prefix` and `keys.header`, checked.
fn key_settings(
    keys: &RawKeys,
    err: &mut dyn FnMut(&[Seg], String),
) -> (String, http::HeaderName, String) {
    let key_prefix = keys.prefix.clone().unwrap_or_else(|| "kg_".to_owned());
    if key_prefix.is_empty()
        || key_prefix.len() > 16
        || !key_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        err(
            &[Seg::Key("keys"), Seg::Key("prefix")],
            format!(
                "invalid key prefix `{key_prefix}`: use 1 to 16 characters from A-Z, a-z, 0-9, `_` and `-`"
            ),
        );
    }
    let key_header_display = keys
        .header
        .clone()
        .unwrap_or_else(|| "X-API-Key".to_owned());
    let key_header = if let Ok(h) = key_header_display.parse::<http::HeaderName>() {
        h
    } else {
        err(
            &[Seg::Key("keys"), Seg::Key("header")],
            "invalid header name".to_owned(),
        );
        http::HeaderName::from_static("x-api-key")
    };
    (key_prefix, key_header, key_header_display)
}

/// `usage.retention`: 90 days unless given; at least an hour (counts are per hour).
fn usage_retention(raw: &RawUsage, err: &mut dyn FnMut(&[Seg], String)) -> Duration {
    match raw.retention {
        Some(d) if d.0 < Duration::from_secs(3600) => {
            err(
                &[Seg::Key("usage"), Seg::Key("retention")],
                "must be at least 1h: usage is counted per hour (90d is the default)".to_owned(),
            );
            d.0
        }
        Some(d) => d.0,
        None => Duration::from_secs(90 * 86_400),
    }
}

/// The `store:` section's settings.
fn store_settings(
    raw: RawStore,
    here: &dyn Fn(&Path) -> PathBuf,
    err: &mut dyn FnMut(&[Seg], String),
) -> StoreSettings {
    let timeout = or(raw.timeout, Duration::from_millis(500));
    let quotas_fail = raw.quotas_fail;
    StoreSettings {
        backend: store(raw, here, err),
        timeout,
        quotas_fail,
    }
}

/// The `store:` section: embedded by default; Redis needs exactly one of `url` or `cluster`.
fn store(
    raw: RawStore,
    here: &dyn Fn(&Path) -> PathBuf,
    err: &mut dyn FnMut(&[Seg], String),
) -> Store {
    match raw.kind {
        StoreKind::Embedded => {
            if raw.url.is_some() || raw.cluster.is_some() {
                err(
                    &[Seg::Key("store"), Seg::Key("kind")],
                    "`url` and `cluster` need `kind: redis`".to_owned(),
                );
            }
            Store::Embedded {
                path: here(raw.path.as_deref().unwrap_or(Path::new("data/keygate.db"))),
            }
        }
        StoreKind::Redis => match (raw.url, raw.cluster) {
            (Some(url), None) => {
                if let Err(m) = check_redis_url(&url) {
                    err(&[Seg::Key("store"), Seg::Key("url")], m);
                }
                Store::Redis { url }
            }
            (None, Some(seeds)) => {
                if seeds.is_empty() {
                    err(
                        &[Seg::Key("store"), Seg::Key("cluster")],
                        "`cluster` needs at least one seed node".to_owned(),
                    );
                }
                for (i, s) in seeds.iter().enumerate() {
                    if let Err(m) = check_cluster_seed(s) {
                        err(&[Seg::Key("store"), Seg::Key("cluster"), Seg::Index(i)], m);
                    }
                }
                Store::RedisCluster { seeds }
            }
            _ => {
                err(
                    &[Seg::Key("store"), Seg::Key("kind")],
                    "`kind: redis` needs exactly one of `url` or `cluster`".to_owned(),
                );
                Store::Redis { url: String::new() }
            }
        },
    }
}

/// Parses a Redis address the way the client will (`redis://`, `rediss://`, `unix://`,
/// `redis+unix://`), so a typo is a `keygate check` error at its line, not a start-up
/// surprise.
fn check_redis_url(url: &str) -> Result<(), String> {
    let hint = "write it like redis://127.0.0.1:6379/0";
    if !["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        return Err(format!("invalid Redis URL `{url}`: {hint}"));
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| format!("invalid Redis URL `{url}` ({e}); {hint}"))
}

/// A Cluster seed must be a TCP address: `redis://host:port` (or `rediss://`).
fn check_cluster_seed(url: &str) -> Result<(), String> {
    check_redis_url(url)?;
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(())
    } else {
        Err(format!(
            "invalid cluster seed `{url}`: a seed is a TCP address, like redis://10.0.0.1:7000"
        ))
    }
}

/// The config path from `--config`, else `$KEYGATE_CONFIG`, else [`DEFAULT_PATH`].
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("KEYGATE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

#[cfg(test)]
mod tests;
