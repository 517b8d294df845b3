//! The `upstream:` (default) and `upstreams:` (named) sections: where allowed requests go.
//!
//! Invariants: every upstream has at least one target, every target is `http://` or
//! `https://` with a host and no query, and all targets of one upstream share one base path
//! (a request may be sent to any of them); `tls:` is only accepted where a target is
//! `https://`, a client certificate only with its key; names are `A-Z a-z 0-9 _ -` and
//! never `default` (the name of `upstream:`). `tls.insecure_skip_verify: true` is allowed
//! but comes back as a warning with its position, which `keygate check` prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{DEFAULT_UPSTREAM_IDLE, Dur, UpstreamUrl, or};
use crate::yaml::{Diagnostic, Ordered, Positions, Seg};

/// The name of the `upstream:` section, for routes, logs, metrics and `/v1/upstreams`.
pub const DEFAULT_NAME: &str = "default";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    url: Option<UpstreamUrl>,
    targets: Option<Vec<UpstreamUrl>>,
    tls: Option<RawUpstreamTls>,
    #[serde(default)]
    balance: Balance,
    health: Option<RawHealth>,
    timeout: Option<Dur>,
    connect_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
}

/// The named upstreams, in file order.
pub(super) type RawUpstreams = Ordered<RawUpstream>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamTls {
    ca: Option<PathBuf>,
    server_name: Option<String>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    path: Option<String>,
    interval: Option<Dur>,
    unhealthy_after: Option<u32>,
    healthy_after: Option<u32>,
}

/// How a request picks one of an upstream's healthy targets.
#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each in turn.
    #[default]
    RoundRobin,
    /// The one with the fewest requests waiting for an answer (ties: in turn).
    LeastRequests,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::LeastRequests => "least_requests",
        }
    }
}

/// One upstream service: its targets and how keygate reaches them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// `default` for `upstream:`, else its key under `upstreams:`.
    pub name: String,
    /// At least one; all with the same path (the base path requests are sent under).
    pub targets: Vec<http::Uri>,
    /// For `https://` targets.
    pub tls: UpstreamTls,
    pub balance: Balance,
    pub health: HealthSettings,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// A kept-alive upstream connection unused for this long is not used again.
    pub idle_timeout: Duration,
}

/// `tls:` of an upstream; all absent: the system trust store, the target's host as name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM CA certificates to trust instead of the system store.
    pub ca: Option<PathBuf>,
    /// SNI and the name verified in the certificate (default: the target's host).
    pub server_name: Option<String>,
    /// PEM certificate chain and key for mTLS to the upstream.
    pub client_auth: Option<(PathBuf, PathBuf)>,
    pub insecure_skip_verify: bool,
}

/// `health:` of an upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    /// The active check: `GET path` every `interval`, 2xx = healthy. `None`: passive only
    /// (a target taken out is tried again by a connection after a back-off).
    pub path: Option<String>,
    pub interval: Duration,
    /// Consecutive failures (requests or checks) before a target is taken out.
    pub unhealthy_after: u32,
    /// Consecutive successful checks before a target taken out comes back.
    pub healthy_after: u32,
}

impl UpstreamSettings {
    /// The single-target upstream at `url` with every default (for `--upstream` and tests).
    pub fn at(url: http::Uri) -> Self {
        Self {
            name: DEFAULT_NAME.to_owned(),
            targets: vec![url],
            tls: UpstreamTls::default(),
            balance: Balance::RoundRobin,
            health: HealthSettings {
                path: None,
                interval: Duration::from_secs(5),
                unhealthy_after: 3,
                healthy_after: 2,
            },
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: DEFAULT_UPSTREAM_IDLE,
        }
    }
}

/// Where problems go: errors and warnings, each at its position.
pub(super) struct Report<'a> {
    pub file: &'a Path,
    pub pos: &'a Positions,
    pub errors: &'a mut Vec<Diagnostic>,
    pub warnings: &'a mut Vec<Diagnostic>,
}

impl Report<'_> {
    /// `upstream:` and `upstreams:`, checked.
    pub(super) fn sections(
        mut self,
        default: RawUpstream,
        named_raw: Option<RawUpstreams>,
        here: &dyn Fn(&Path) -> PathBuf,
    ) -> (UpstreamSettings, Vec<UpstreamSettings>) {
        let default = upstream(
            DEFAULT_NAME,
            default,
            &[Seg::Key("upstream")],
            here,
            &mut self,
        );
        let named = named_raw
            .map(|u| named(u, here, &mut self))
            .unwrap_or_default();
        (default, named)
    }

    fn error(&mut self, path: &[Seg], message: String) {
        self.errors.push(self.pos.diag(self.file, path, message));
    }
}

/// Validates one upstream; `at` is where it is written (`[upstream]` or `[upstreams, name]`).
pub(super) fn upstream(
    name: &str,
    raw: RawUpstream,
    at: &[Seg],
    here: &dyn Fn(&Path) -> PathBuf,
    r: &mut Report<'_>,
) -> UpstreamSettings {
    let field = |f: &'static str| {
        let mut p = at.to_vec();
        p.push(Seg::Key(f));
        p
    };
    let targets: Vec<http::Uri> = match (raw.url, raw.targets) {
        (Some(u), None) => vec![u.0],
        (None, Some(ts)) => {
            if ts.is_empty() {
                r.error(
                    &field("targets"),
                    "`targets` needs at least one URL".to_owned(),
                );
            }
            ts.into_iter().map(|t| t.0).collect()
        }
        (Some(_), Some(_)) => {
            r.error(
                &field("targets"),
                "write either `url` (one target) or `targets` (a list), not both".to_owned(),
            );
            Vec::new()
        }
        (None, None) => {
            r.error(
                at,
                format!("upstream `{name}` needs `url` (one target) or `targets` (a list)"),
            );
            Vec::new()
        }
    };
    if let Some(first) = targets.first() {
        let base = first.path().trim_end_matches('/');
        for (i, t) in targets.iter().enumerate().skip(1) {
            if t.path().trim_end_matches('/') != base {
                let mut p = field("targets");
                p.push(Seg::Index(i));
                r.error(
                    &p,
                    format!(
                        "every target of upstream `{name}` must have the same path (`{t}` differs from `{first}`)"
                    ),
                );
            }
        }
    }
    let any_https = targets.iter().any(|t| t.scheme_str() == Some("https"));
    let tls = raw
        .tls
        .map(|t| tls(name, t, any_https, &field("tls"), here, r))
        .unwrap_or_default();
    let health = health(raw.health, &field("health"), r);
    UpstreamSettings {
        name: name.to_owned(),
        targets,
        tls,
        balance: raw.balance,
        health,
        timeout: or(raw.timeout, Duration::from_secs(30)),
        connect_timeout: or(raw.connect_timeout, Duration::from_secs(5)),
        idle_timeout: or(raw.idle_timeout, DEFAULT_UPSTREAM_IDLE),
    }
}

/// An upstream's `tls:` section (`at`: where it is written).
fn tls(
    name: &str,
    t: RawUpstreamTls,
    any_https: bool,
    at: &[Seg],
    here: &dyn Fn(&Path) -> PathBuf,
    r: &mut Report<'_>,
) -> UpstreamTls {
    if !any_https {
        r.error(
            at,
            format!("`tls` applies to https:// targets, and upstream `{name}` has none"),
        );
    }
    let mut tls_field = at.to_vec();
    let client_auth = match (t.client_cert, t.client_key) {
        (Some(c), Some(k)) => Some((here(&c), here(&k))),
        (None, None) => None,
        (Some(_), None) => {
            tls_field.push(Seg::Key("client_cert"));
            r.error(&tls_field, "`client_cert` needs `client_key`".to_owned());
            None
        }
        (None, Some(_)) => {
            tls_field.push(Seg::Key("client_key"));
            r.error(&tls_field, "`client_key` needs `client_cert`".to_owned());
            None
        }
    };
    if let Some(n) = &t.server_name
        && rustls::pki_types::ServerName::try_from(n.as_str()).is_err()
    {
        let mut p = at.to_vec();
        p.push(Seg::Key("server_name"));
        r.error(
            &p,
            format!("invalid server name `{n}`: write a DNS name or an IP address"),
        );
    }
    if t.insecure_skip_verify {
        let mut p = at.to_vec();
        p.push(Seg::Key("insecure_skip_verify"));
        r.warnings.push(r.pos.diag(
            r.file,
            &p,
            format!(
                "warning: upstream `{name}`: certificate verification is off; anyone on the path can read and change its traffic"
            ),
        ));
    }
    UpstreamTls {
        ca: t.ca.map(|c| here(&c)),
        server_name: t.server_name,
        client_auth,
        insecure_skip_verify: t.insecure_skip_verify,
    }
}

fn health(raw: Option<RawHealth>, at: &[Seg], r: &mut Report<'_>) -> HealthSettings {
    let raw = raw.unwrap_or(RawHealth {
        path: None,
        interval: None,
        unhealthy_after: None,
        healthy_after: None,
    });
    let field = |f: &'static str| {
        let mut p = at.to_vec();
        p.push(Seg::Key(f));
        p
    };
    if let Some(p) = &raw.path
        && (!p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err())
    {
        r.error(
            &field("path"),
            format!("invalid health check path `{p}`: write it like /healthz"),
        );
    }
    let interval = or(raw.interval, Duration::from_secs(5));
    if interval < Duration::from_millis(100) {
        r.error(
            &field("interval"),
            "`interval` must be at least 100ms".to_owned(),
        );
    }
    let mut count = |v: Option<u32>, f: &'static str, default: u32| {
        let n = v.unwrap_or(default);
        if n == 0 {
            r.error(&field(f), format!("`{f}` must be at least 1"));
        }
        n.max(1)
    };
    HealthSettings {
        path: raw.path,
        interval,
        unhealthy_after: count(raw.unhealthy_after, "unhealthy_after", 3),
        healthy_after: count(raw.healthy_after, "healthy_after", 2),
    }
}

/// The named upstreams, checked: valid, unique names (duplicates are already refused by
/// the YAML reader), never `default`.
pub(super) fn named(
    raw: RawUpstreams,
    here: &dyn Fn(&Path) -> PathBuf,
    r: &mut Report<'_>,
) -> Vec<UpstreamSettings> {
    let mut out = Vec::with_capacity(raw.0.len());
    for (name, up) in raw.0 {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let at = [Seg::Key("upstreams"), Seg::Key(name.as_str())];
        if name == DEFAULT_NAME {
            r.errors.push(r.pos.diag(
                r.file,
                &at,
                "`default` is the name of the `upstream:` section; name this upstream otherwise"
                    .to_owned(),
            ));
        } else if !valid {
            r.errors.push(r.pos.diag(
                r.file,
                &at,
                format!(
                    "invalid upstream name `{name}`: use 1 to 64 characters from A-Z, a-z, 0-9, `_` and `-`"
                ),
            ));
        }
        let settings = upstream(&name, up, &at, here, r);
        out.push(settings);
    }
    out
}
