#![allow(clippy::unwrap_used)]
use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/kg/keygate.yaml"), text)
}

fn first_error(text: &str) -> String {
    match parse(text) {
        Err(ConfigError::Invalid(d)) => d.0[0].to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn only_upstream_is_required_and_defaults_apply() {
    let c = parse("upstream:\n  url: http://127.0.0.1:9000\n").unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.admin.listen, "127.0.0.1:8081".parse().unwrap());
    assert_eq!(
        c.store.backend,
        Store::Embedded {
            path: PathBuf::from("/etc/kg/data/keygate.db")
        }
    );
    assert_eq!(c.cache.ttl, Duration::from_secs(60));
    assert_eq!(c.cache.negative_ttl, Duration::from_secs(5));
    assert_eq!(c.cache.max_entries, 1_000_000);
    assert_eq!(c.keys.prefix, "kg_");
    assert_eq!(c.keys.max_ttl, None);
    assert_eq!(c.policy, PathBuf::from("/etc/kg/policy.yaml"));
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.keys.header, "x-api-key");
    assert_eq!(c.store.quotas_fail, QuotasFail::Closed);
}

#[test]
fn quotas_fail_is_closed_or_open_and_says_so_at_its_line() {
    let up = "upstream:\n  url: http://127.0.0.1:9000\n";
    let c = parse(&format!("{up}store:\n  quotas_fail: open\n")).unwrap();
    assert_eq!(c.store.quotas_fail, QuotasFail::Open);
    assert_eq!(
        first_error(&format!("{up}store:\n  quotas_fail: maybe\n")),
        "/etc/kg/keygate.yaml:4:16: store.quotas_fail: unknown variant `maybe`, expected \
         `closed` or `open`"
    );
}

#[test]
fn missing_upstream_is_an_error() {
    assert!(first_error("listen: 127.0.0.1:1\n").contains("upstream"));
}

#[test]
fn unknown_field_names_its_line() {
    let e = first_error("upstream:\n  url: http://127.0.0.1:9000\ncache:\n  tll: 60s\n");
    assert!(e.starts_with("/etc/kg/keygate.yaml:4:"), "{e}");
    assert!(e.contains("tll"), "{e}");
}

#[test]
fn duplicate_key_names_its_line() {
    let e = first_error(
        "upstream:\n  url: http://127.0.0.1:9000\nlisten: 127.0.0.1:1\nlisten: 127.0.0.1:2\n",
    );
    assert!(e.starts_with("/etc/kg/keygate.yaml:4:"), "{e}");
}

#[test]
fn bad_duration_names_its_line() {
    let e = first_error("upstream:\n  url: http://127.0.0.1:9000\ncache:\n  ttl: 60 parsecs\n");
    assert!(e.starts_with("/etc/kg/keygate.yaml:4:"), "{e}");
    assert!(e.contains("duration"), "{e}");
}

#[test]
fn wrong_type_and_bad_url_name_their_lines() {
    let e = first_error("upstream:\n  url: ftp://x\n");
    assert!(e.starts_with("/etc/kg/keygate.yaml:2:"), "{e}");
    let e = first_error("upstream:\n  url: http://127.0.0.1:9000\ncache:\n  max_entries: lots\n");
    assert!(e.starts_with("/etc/kg/keygate.yaml:4:"), "{e}");
}

#[test]
fn semantic_errors_name_their_lines() {
    let e = first_error(
        "upstream:\n  url: http://127.0.0.1:9000\nstore:\n  kind: redis\n  url: http://nope\n",
    );
    assert!(e.starts_with("/etc/kg/keygate.yaml:5:"), "{e}");
    let e = first_error("upstream:\n  url: http://127.0.0.1:9000\nkeys:\n  prefix: \"k g\"\n");
    assert!(e.starts_with("/etc/kg/keygate.yaml:4:"), "{e}");
}

#[test]
fn redis_addresses_are_parsed_with_their_line_and_column() {
    let base = "upstream:\n  url: http://127.0.0.1:9000\nstore:\n  kind: redis\n";
    for bad in [
        "  url: redis://\n",
        "  url: redis://host:notaport\n",
        "  url: redis://127.0.0.1:6379/notadb\n",
        "  url: 127.0.0.1:6379\n",
    ] {
        let e = first_error(&format!("{base}{bad}"));
        assert!(e.starts_with("/etc/kg/keygate.yaml:5:"), "{bad}: {e}");
        assert!(e.contains("Redis URL"), "{e}");
    }
    let e = first_error(&format!(
        "{base}  cluster:\n    - redis://10.0.0.1:7000\n    - redis://10.0.0.2:x\n"
    ));
    assert!(e.starts_with("/etc/kg/keygate.yaml:7:7:"), "{e}");
    let e = first_error(&format!("{base}  cluster: [unix:///tmp/r.sock]\n"));
    assert!(e.contains("seed"), "{e}");
    let c = parse(&format!(
            "{base}  url: redis://:pw@127.0.0.1:6379/2\n  timeout: 250ms\ncache:\n  stale_if_error: 5m\n"
        ))
        .unwrap();
    assert_eq!(
        c.store.backend,
        Store::Redis {
            url: "redis://:pw@127.0.0.1:6379/2".into()
        }
    );
    assert_eq!(c.store.timeout, Duration::from_millis(250));
    assert_eq!(c.cache.stale_if_error, Duration::from_secs(300));
    let c = parse(&format!(
        "{base}  cluster: [redis://10.0.0.1:7000, redis://10.0.0.2:7000]\n"
    ))
    .unwrap();
    assert!(matches!(c.store.backend, Store::RedisCluster { ref seeds } if seeds.len() == 2));
    assert_eq!(c.cache.stale_if_error, Duration::ZERO);
}

#[test]
fn durations_cover_the_documented_units() {
    for (t, secs) in [
        ("30s", 30),
        ("5m", 300),
        ("12h", 43_200),
        ("1d", 86_400),
        ("2w", 1_209_600),
    ] {
        assert_eq!(parse_duration(t).unwrap(), Duration::from_secs(secs), "{t}");
    }
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert!(parse_duration("1y").unwrap() >= Duration::from_secs(365 * 86_400));
    assert!(parse_duration("soon").is_err());
}

#[test]
fn a_bad_duration_names_the_whole_field() {
    let e = first_error("upstream:\n  url: http://127.0.0.1:9000\ncache:\n  ttl: soon\n");
    assert_eq!(
        e,
        "/etc/kg/keygate.yaml:4:3: cache.ttl: invalid duration `soon` (it must start with a number); \
         write it like 500ms, 30s, 5m, 1.5h, 12h, 1d, 2w or 1y"
    );
    let e = first_error("upstream:\n  url: http://127.0.0.1:9000\nstore:\n  timeout: -1s\n");
    assert!(e.contains("store.timeout: `-1s` is negative"), "{e}");
}

#[test]
fn fractional_durations_are_accepted() {
    let c = parse(
        "upstream:\n  url: http://127.0.0.1:9000\ncache:\n  ttl: 1.5s\n  negative_ttl: 0.5m\n",
    )
    .unwrap();
    assert_eq!(c.cache.ttl, Duration::from_millis(1500));
    assert_eq!(c.cache.negative_ttl, Duration::from_secs(30));
}

#[test]
fn indentation_errors_point_at_the_line_and_say_how() {
    let e = first_error(
        "upstream:\n  url: http://127.0.0.1:9000\ncache:\n  ttl: 60s\n   negative_ttl: 5s\n",
    );
    assert!(
        e.starts_with("/etc/kg/keygate.yaml:5:4: YAML syntax error: ")
            && e.contains("(indent with spaces; this line is indented more than line 4 `ttl: 60s`"),
        "{e}"
    );
    let e = first_error("upstream:\n  url: http://127.0.0.1:9000\ncache:\n\tttl: 60s\n");
    assert!(
        e.starts_with("/etc/kg/keygate.yaml:4:1: ") && e.contains("indent with spaces, not tabs"),
        "{e}"
    );
}

#[test]
fn upstreams_take_targets_tls_balance_and_health_with_defaults() {
    let c = parse(
        "upstream:\n  url: http://127.0.0.1:9000\nupstreams:\n  billing:\n    targets: [https://b1.internal:8443/api, https://b2.internal:8443/api/]\n    tls:\n      ca: ca.pem\n      server_name: billing.internal\n      client_cert: kg.pem\n      client_key: kg.key\n    balance: least_requests\n    health:\n      path: /healthz\n",
    )
    .unwrap();
    assert_eq!(c.upstream.name, "default");
    assert_eq!(c.upstream.targets.len(), 1);
    let b = &c.upstreams[0];
    assert_eq!(b.name, "billing");
    assert_eq!(b.targets.len(), 2);
    assert_eq!(b.balance, Balance::LeastRequests);
    assert_eq!(b.tls.ca, Some(PathBuf::from("/etc/kg/ca.pem")));
    assert_eq!(
        b.tls.client_auth,
        Some((
            PathBuf::from("/etc/kg/kg.pem"),
            PathBuf::from("/etc/kg/kg.key")
        ))
    );
    assert_eq!(b.health.path.as_deref(), Some("/healthz"));
    assert_eq!(b.health.interval, Duration::from_secs(5));
    assert_eq!((b.health.unhealthy_after, b.health.healthy_after), (3, 2));
    assert!(c.warnings.is_empty());
    assert_eq!(c.upstream_names(), ["billing"]);
}

#[test]
fn upstream_mistakes_are_errors_at_their_line() {
    let base = "upstream:\n  url: http://127.0.0.1:9000\nupstreams:\n";
    for (section, want) in [
        (
            "  default:\n    url: http://a\n",
            "/etc/kg/keygate.yaml:5:5: `default` is the name",
        ),
        (
            "  b:\n    url: http://a\n    targets: [http://b]\n",
            "/etc/kg/keygate.yaml:6:14: write either `url`",
        ),
        (
            "  b:\n    targets: [http://a/x, http://b/y]\n",
            "/etc/kg/keygate.yaml:5:27: every target of upstream `b` must have the same path",
        ),
        (
            "  b:\n    url: ftp://a\n",
            "/etc/kg/keygate.yaml:5:5: upstreams.b.url: upstream URL `ftp://a` must start with http:// or https://",
        ),
        (
            "  b:\n    url: http://a\n    health:\n      unhealthy_after: 0\n",
            "/etc/kg/keygate.yaml:7:24: `unhealthy_after` must be at least 1",
        ),
        (
            "  b:\n    url: http://a\n    balance: fastest\n",
            "/etc/kg/keygate.yaml:6:14: upstreams.b.balance: unknown variant `fastest`",
        ),
    ] {
        let got = first_error(&format!("{base}{section}"));
        assert!(got.starts_with(want), "{got}\nwanted {want}");
    }
}

#[test]
fn webhooks_hear_every_event_unless_told_and_retry_for_a_day() {
    let c = parse(
        "upstream:\n  url: http://127.0.0.1:9000\nevents:\n  webhooks:\n    - url: https://hooks.example.com/kg?team=ops\n      secret_env: HOOK_SECRET\n    - url: http://127.0.0.1:9/b\n      secret_env: B\n      events: [key.revoked, key.rate_limited]\n",
    )
    .unwrap();
    let hooks = &c.events.webhooks;
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[0].url, "https://hooks.example.com/kg?team=ops");
    assert_eq!(hooks[0].secret_env, "HOOK_SECRET");
    assert_eq!(hooks[0].events, crate::events::Kind::ALL);
    assert_eq!(
        hooks[1].events,
        [
            crate::events::Kind::Revoked,
            crate::events::Kind::RateLimited
        ]
    );
    assert_eq!(c.events.retry_for, Duration::from_secs(86_400));
    assert!(
        parse("upstream:\n  url: http://127.0.0.1:9000\n")
            .unwrap()
            .events
            .webhooks
            .is_empty()
    );
}

#[test]
fn webhook_mistakes_are_errors_at_their_line() {
    let up = "upstream:\n  url: http://127.0.0.1:9000\nevents:\n";
    let hook = |rest: &str| {
        format!("{up}  webhooks:\n    - url: http://127.0.0.1:9/h\n      secret_env: S\n{rest}")
    };
    let e = first_error(&hook("      events: [key.deleted]\n"));
    assert!(e.starts_with("/etc/kg/keygate.yaml:7:"), "{e}");
    assert!(
        e.contains("key.deleted") && e.contains("key.created"),
        "{e}"
    );
    assert_eq!(
        first_error(&hook(
            "    - url: http://127.0.0.1:9/h\n      secret_env: T\n"
        )),
        "/etc/kg/keygate.yaml:7:12: events.webhooks[1].url: `http://127.0.0.1:9/h` is already a \
         webhook above; list each URL once"
    );
    assert_eq!(
        first_error(&format!(
            "{up}  webhooks:\n    - url: ftp://h/x\n      secret_env: S\n"
        )),
        "/etc/kg/keygate.yaml:5:12: events.webhooks[0].url: webhook URL `ftp://h/x` must start \
         with http:// or https://"
    );
    let e = first_error(&format!(
        "{up}  webhooks:\n    - url: https://ops:pw@h/x\n      secret_env: S\n"
    ));
    assert!(
        e.starts_with("/etc/kg/keygate.yaml:5:12: events.webhooks[0].url: webhook URL")
            && e.contains("has a user or password"),
        "{e}"
    );
    let e = first_error(&format!("{up}  webhooks:\n    - url: http://h/x\n"));
    assert!(
        e.starts_with("/etc/kg/keygate.yaml:5:") && e.contains("secret_env"),
        "{e}"
    );
    assert_eq!(
        first_error(&hook("      ca: ca.pem\n")),
        "/etc/kg/keygate.yaml:7:11: events.webhooks[0].ca: is for an https:// webhook; this one \
         is http://"
    );
    assert_eq!(
        first_error(&format!("{up}  retry_for: 10m\n")),
        "/etc/kg/keygate.yaml:4:14: events.retry_for: must be at least 1h: a receiver may be \
         down for a while (24h is the default)"
    );
}
