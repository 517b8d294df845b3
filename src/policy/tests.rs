//! Unit tests of the policy model and `decide`.

#![allow(clippy::unwrap_used)]
use super::*;
use crate::keys::{Grant, KeyHash};
use http::{HeaderMap, HeaderValue};
use path::normalise;

const POLICY: &str = "version: 1
scopes:
  items:read: Read items
  items:write: Write items
  reports:read: Read reports
roles:
  viewer: [items:read]
  editor: [items:read, items:write]
  reporter: [reports:read]
locations: [hq, plant-1, plant-2]
businesses:
  default: enabled
  trial-co: disabled
routes:
  - name: health
    path: /health
    public: true
    rate_limit: 5/s
  - name: items-get
    methods: [GET, HEAD]
    path: /v1/items/{*rest}
    scopes: [items:read]
  - name: items-write
    path: /v1/items/{*rest}
    scopes: [items:write]
    rate_limit: 10/m
  - name: loc-path
    path: /v1/locations/{loc}/items
    location: { from: path, name: loc }
    scopes: [items:write]
  - name: loc-header
    path: /v1/header/items
    location: { from: header, name: X-Location }
    scopes: [items:read]
  - name: loc-query
    path: /v1/query/items
    location: { from: query, name: loc }
    scopes: [items:read]
  - name: reports
    path: /v1/reports
    roles: [reporter]
  - name: reports-at
    path: /v1/sites/{site}/reports
    location: { from: path, name: site }
    roles: [reporter, viewer]
  - name: open
    path: /v1/open
";

fn policy(text: &str) -> Policy {
    Policy::parse(Path::new("policy.yaml"), text).unwrap()
}

struct K {
    scopes: Vec<String>,
    locations: Vec<String>,
    grants: Vec<Grant>,
    business: String,
    expires_at: Option<Timestamp>,
    revoked_at: Option<Timestamp>,
}

fn k() -> K {
    K {
        scopes: vec![],
        locations: vec![],
        grants: vec![],
        business: "acme".into(),
        expires_at: None,
        revoked_at: None,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

impl K {
    fn scopes(mut self, s: &[&str]) -> Self {
        self.scopes = strings(s);
        self
    }
    fn locations(mut self, l: &[&str]) -> Self {
        self.locations = strings(l);
        self
    }
    fn grant(mut self, role: &str, at: &[&str]) -> Self {
        self.grants.push(Grant {
            role: role.into(),
            locations: strings(at),
        });
        self
    }
    fn business(mut self, b: &str) -> Self {
        self.business = b.into();
        self
    }
    fn build(self) -> Arc<KeyRecord> {
        Arc::new(KeyRecord {
            identity: crate::headers::Memo::default(),
            id: "kid_test".into(),
            hash: KeyHash([0; 32]),
            name: "test".into(),
            description: String::new(),
            prefix: "kg_abc".into(),
            user_id: "u1".into(),
            business_id: self.business,
            scopes: self.scopes,
            locations: self.locations,
            grants: self.grants,
            created_at: Timestamp(0),
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            last_used_at: None,
            created_by: "test".into(),
            enabled: true,
            metadata: crate::keys::Metadata::new(),
            allowed_ips: Vec::new(),
            updated_at: None,
            limits: crate::keys::KeyLimits::new(),
            plan: None,
            quota: None,
            quota_counter: String::new(),
        })
    }
}

const NOW: Timestamp = Timestamp(1_000_000);

/// Routes and decides `method path?query` with `headers` for `key`.
fn ask(
    p: &Policy,
    method: &str,
    target: &str,
    headers: &HeaderMap,
    key: &Arc<KeyRecord>,
) -> Result<Permitted, Denial> {
    let (raw, query) = match target.split_once('?') {
        Some((path, q)) => (path, Some(q)),
        None => (target, None),
    };
    let path = normalise(raw).unwrap();
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let m = p.route(&method, &path)?;
    let facts = Facts { headers, query };
    p.decide(m, path, key, &facts, NOW)
}

fn get(p: &Policy, target: &str, key: &Arc<KeyRecord>) -> Result<Permitted, Denial> {
    ask(p, "GET", target, &HeaderMap::new(), key)
}

fn missing(v: &[&str]) -> Result<String, Denial> {
    Err(Denial::InsufficientScope {
        missing: strings(v),
    })
}

/// Ok(route name) or the denial.
fn name(r: Result<Permitted, Denial>) -> Result<String, Denial> {
    r.map(|p| p.route_name().to_owned())
}

fn location_forbidden(r: Result<Permitted, Denial>, needle: &str) {
    match r {
        Err(Denial::LocationForbidden { reason }) => {
            assert!(reason.contains(needle), "{reason}");
        }
        other => panic!("expected LocationForbidden({needle}), got {other:?}"),
    }
}

#[test]
fn direct_scopes_and_method_fall_through() {
    let p = policy(POLICY);
    let reader = k().scopes(&["items:read"]).build();
    let permit = get(&p, "/v1/items/a/b", &reader).unwrap();
    assert_eq!(permit.route_name(), "items-get");
    assert_eq!(permit.path().as_str(), "/v1/items/a/b");
    assert_eq!(permit.who().unwrap().id, "kid_test");
    assert_eq!(permit.location(), None);
    assert_eq!(name(get(&p, "/v1/items", &reader)), Ok("items-get".into()));
    // POST does not match items-get, falls through to items-write.
    let post = ask(&p, "POST", "/v1/items/x", &HeaderMap::new(), &reader);
    assert_eq!(name(post), missing(&["items:write"]));
    let writer = k().scopes(&["items:write"]).build();
    let permit = ask(&p, "POST", "/v1/items/x", &HeaderMap::new(), &writer).unwrap();
    assert_eq!(permit.route_name(), "items-write");
    assert_eq!(
        permit.rate_limit(),
        Some(RouteLimit::of(RateLimit {
            count: 10,
            per: std::time::Duration::from_secs(60)
        }))
    );
    // GET matches items-get first, even for a key that could use items-write.
    assert_eq!(
        name(get(&p, "/v1/items/x", &writer)),
        missing(&["items:read"])
    );
    // Unmatched under deny.
    assert_eq!(name(get(&p, "/v2/nothing", &writer)), Err(Denial::NoRoute));
    // Literal comparison is case-sensitive.
    assert_eq!(name(get(&p, "/V1/items", &reader)), Err(Denial::NoRoute));
}

#[test]
fn grants_at_star_apply_everywhere_grants_at_a_location_only_there() {
    let p = policy(POLICY);
    let star = k().grant("viewer", &["*"]).build();
    assert_eq!(name(get(&p, "/v1/items/x", &star)), Ok("items-get".into()));
    // A route without a location ignores location-specific grants.
    let hq_only = k().locations(&["hq"]).grant("viewer", &["hq"]).build();
    assert_eq!(
        name(get(&p, "/v1/items/x", &hq_only)),
        missing(&["items:read"])
    );
    // A grant of an unknown role gives nothing.
    let ghost = k().grant("ghost", &["*"]).build();
    assert_eq!(
        name(get(&p, "/v1/items/x", &ghost)),
        missing(&["items:read"])
    );
}

#[test]
fn location_from_path() {
    let p = policy(POLICY);
    let post = |target: &str, key: &Arc<KeyRecord>| ask(&p, "POST", target, &HeaderMap::new(), key);
    let k1 = k()
        .locations(&["plant-1"])
        .grant("editor", &["plant-1"])
        .build();
    let permit = post("/v1/locations/plant-1/items", &k1).unwrap();
    assert_eq!(permit.route_name(), "loc-path");
    assert_eq!(permit.location(), Some("plant-1"));
    location_forbidden(
        post("/v1/locations/plant-2/items", &k1),
        "may not act at location `plant-2`",
    );
    // Every location, but the role only at plant-1.
    let all = k().locations(&["*"]).grant("editor", &["plant-1"]).build();
    assert!(post("/v1/locations/plant-1/items", &all).is_ok());
    assert_eq!(
        name(post("/v1/locations/plant-2/items", &all)),
        missing(&["items:write"])
    );
    // The role everywhere; location hq is in the key's locations.
    let star = k()
        .locations(&["hq", "plant-2"])
        .grant("editor", &["*"])
        .build();
    assert!(post("/v1/locations/plant-2/items", &star).is_ok());
    // Key scopes are valid at every location the key may act at.
    let direct = k().locations(&["*"]).scopes(&["items:write"]).build();
    assert!(post("/v1/locations/hq/items", &direct).is_ok());
    // Undeclared location, even with `*`; comparison is case-sensitive.
    location_forbidden(
        post("/v1/locations/mars/items", &direct),
        "not a location of the policy",
    );
    location_forbidden(
        post("/v1/locations/HQ/items", &direct),
        "not a location of the policy",
    );
    location_forbidden(
        post("/v1/locations/hq;x/items", &direct),
        "not a location of the policy",
    );
    // No locations at all.
    let nowhere = k().scopes(&["items:write"]).build();
    location_forbidden(post("/v1/locations/hq/items", &nowhere), "may not act");
    // Percent-encoded unreserved characters are decoded before matching.
    assert_eq!(
        post("/v1/locations/%68q/items", &direct)
            .unwrap()
            .location(),
        Some("hq")
    );
}

#[test]
fn location_from_header() {
    let p = policy(POLICY);
    let key = k().locations(&["hq"]).grant("viewer", &["hq"]).build();
    let with = |values: &[&[u8]]| {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-location", HeaderValue::from_bytes(v).unwrap());
        }
        ask(&p, "GET", "/v1/header/items", &h, &key)
    };
    let permit = with(&[b"hq"]).unwrap();
    assert_eq!(
        (permit.route_name(), permit.location()),
        ("loc-header", Some("hq"))
    );
    location_forbidden(with(&[]), "no location");
    location_forbidden(with(&[b"hq", b"hq"]), "ambiguous");
    location_forbidden(with(&[b"plant-1"]), "may not act at location `plant-1`");
    location_forbidden(with(&[b"nowhere"]), "not a location");
    location_forbidden(with(&[b"h\xffq"]), "not valid UTF-8");
}

#[test]
fn location_from_query() {
    let p = policy(POLICY);
    let key = k().locations(&["hq"]).grant("viewer", &["hq"]).build();
    let q = |query: &str| get(&p, &format!("/v1/query/items{query}"), &key);
    assert_eq!(q("?loc=hq").unwrap().location(), Some("hq"));
    assert_eq!(q("?a=1&loc=hq&b").unwrap().location(), Some("hq"));
    assert_eq!(q("?l%6fc=hq").unwrap().location(), Some("hq"));
    assert_eq!(q("?loc=%68%71").unwrap().location(), Some("hq"));
    location_forbidden(q(""), "no location");
    location_forbidden(q("?"), "no location");
    location_forbidden(q("?lo=hq&locc=hq&LOC=hq"), "no location");
    location_forbidden(q("?loc=hq&loc=hq"), "ambiguous");
    location_forbidden(q("?loc=hq&l%6Fc=plant-1"), "ambiguous");
    location_forbidden(q("?loc=hq&loc"), "ambiguous");
    location_forbidden(q("?loc=plant-1"), "may not act");
    location_forbidden(q("?loc=HQ"), "not a location");
    location_forbidden(q("?loc=h%"), "not valid percent-encoded");
    location_forbidden(q("?loc=%ff"), "not valid percent-encoded");
    location_forbidden(q("?loc="), "not a location");
}

#[test]
fn revoked_then_expired_then_business_then_location_then_scope() {
    let p = policy(POLICY);
    let mut key = k().business("trial-co");
    key.revoked_at = Some(Timestamp(10));
    key.expires_at = Some(Timestamp(20));
    assert_eq!(
        name(get(&p, "/v1/items/x", &key.build())),
        Err(Denial::Revoked)
    );
    let mut key = k().business("trial-co");
    key.expires_at = Some(NOW);
    assert_eq!(
        name(get(&p, "/v1/items/x", &key.build())),
        Err(Denial::Expired)
    );
    let mut key = k().scopes(&["items:read"]);
    key.expires_at = Some(Timestamp(NOW.0 + 1));
    assert!(get(&p, "/v1/items/x", &key.build()).is_ok());
    let key = k().business("trial-co").build();
    assert_eq!(
        name(get(&p, "/v1/items/x", &key)),
        Err(Denial::BusinessDisabled)
    );
    // Location is checked before scopes.
    let key = k().build();
    location_forbidden(get(&p, "/v1/query/items?loc=hq", &key), "may not act");
}

/// The rule itself, as the admin API asks it: scope by scope, location by location.
#[test]
fn holds_scopes_directly_or_through_a_role_at_the_location_or_at_star() {
    let p = policy(POLICY);
    // Direct: everywhere, with or without a location.
    let direct = k().scopes(&["items:read"]).build();
    assert!(p.holds(&direct, "items:read", None));
    assert!(p.holds(&direct, "items:read", Some("hq")));
    assert!(!p.holds(&direct, "items:write", None));
    // Through a role granted at L: at L only; not at another location, and not on a
    // route without a location (which accepts only grants at `*`).
    let at_hq = k().locations(&["hq"]).grant("editor", &["hq"]).build();
    assert!(p.holds(&at_hq, "items:write", Some("hq")));
    assert!(!p.holds(&at_hq, "items:write", Some("plant-1")));
    assert!(!p.holds(&at_hq, "items:write", None));
    assert!(!p.holds(&at_hq, "items:write", Some("*")));
    // Through a role granted at `*`: at every location and without one.
    let star = k().grant("viewer", &["*"]).build();
    assert!(p.holds(&star, "items:read", None));
    assert!(p.holds(&star, "items:read", Some("plant-2")));
    assert!(p.holds(&star, "items:read", Some("*")));
    assert!(!p.holds(&star, "items:write", Some("plant-2")));
    // A role the policy lacks gives nothing.
    assert!(!p.holds(&k().grant("ghost", &["*"]).build(), "items:read", None));
    // Locations: one of the key's, or the key holds `*`; only then `*` itself.
    assert!(holds_location(&at_hq, "hq"));
    assert!(!holds_location(&at_hq, "plant-1"));
    assert!(!holds_location(&at_hq, "*"));
    let everywhere = k().locations(&["*"]).build();
    assert!(holds_location(&everywhere, "plant-1"));
    assert!(holds_location(&everywhere, "*"));
    assert!(!holds_location(&k().build(), "hq"));
}

/// `decide` answers exactly as the rule: a grant at hq opens the hq route, and only it.
#[test]
fn decide_follows_holds_and_holds_location() {
    let p = policy(POLICY);
    let key = k().locations(&["hq"]).grant("editor", &["hq"]).build();
    let post = |target: &str| ask(&p, "POST", target, &HeaderMap::new(), &key);
    assert_eq!(name(post("/v1/locations/hq/items")), Ok("loc-path".into()));
    location_forbidden(post("/v1/locations/plant-1/items"), "plant-1");
    // The location-less route needs a grant at `*`.
    assert_eq!(name(post("/v1/items/x")), missing(&["items:write"]));
}

#[test]
fn admit_refuses_revoked_then_expired_then_a_disabled_business() {
    let p = policy(POLICY);
    assert_eq!(p.admit(&k().build(), NOW), Ok(()));
    let mut key = k().business("trial-co");
    key.revoked_at = Some(Timestamp(10));
    key.expires_at = Some(Timestamp(20));
    assert_eq!(p.admit(&key.build(), NOW), Err(Denial::Revoked));
    let mut key = k().business("trial-co");
    key.expires_at = Some(NOW);
    assert_eq!(p.admit(&key.build(), NOW), Err(Denial::Expired));
    assert_eq!(
        p.admit(&k().business("trial-co").build(), NOW),
        Err(Denial::BusinessDisabled)
    );
}

#[test]
fn businesses_listed_then_default_entry_then_enabled() {
    let p = policy(POLICY);
    assert!(p.business_enabled("acme"));
    assert!(!p.business_enabled("trial-co"));
    let closed = policy(
        "version: 1\nbusinesses:\n  default: disabled\n  acme: enabled\nroutes:\n  - name: open\n    path: /open\n",
    );
    assert!(closed.business_enabled("acme"));
    assert!(!closed.business_enabled("other"));
    let other = k().business("other").build();
    assert_eq!(
        name(get(&closed, "/open", &other)),
        Err(Denial::BusinessDisabled)
    );
    assert_eq!(name(get(&closed, "/open", &k().build())), Ok("open".into()));
    assert!(policy("version: 1\n").business_enabled("anyone"));
}

#[test]
fn allow_authenticated_default() {
    let p = policy(
        "version: 1\nbusinesses:\n  off: disabled\nroutes:\n  - name: r\n    path: /r\n    methods: [GET]\ndefault: allow_authenticated\n",
    );
    let key = k().build();
    let path = normalise("/anything/else").unwrap();
    let m = p.route(&Method::GET, &path).unwrap();
    assert!(m.is_default() && !m.is_public());
    assert_eq!(m.route_name(), "default");
    assert!(m.required_scopes().is_empty());
    let facts = Facts {
        headers: &HeaderMap::new(),
        query: None,
    };
    let permit = p.decide(m, path, &key, &facts, NOW).unwrap();
    assert_eq!(permit.route_name(), "default");
    assert_eq!(permit.rate_limit(), None);
    // A method no route allows falls through to the default too.
    assert_eq!(
        name(ask(&p, "POST", "/r", &HeaderMap::new(), &key)),
        Ok("default".into())
    );
    let off = k().business("off").build();
    assert_eq!(name(get(&p, "/x", &off)), Err(Denial::BusinessDisabled));
    assert!(p.summary().ends_with("default allow_authenticated"));
}

#[test]
fn public_routes_permit_without_a_key() {
    let p = policy(POLICY);
    let path = normalise("/health").unwrap();
    let m = p.route(&Method::GET, &path).unwrap();
    assert!(m.is_public());
    assert_eq!(m.route_name(), "health");
    let permit = p.permit_public(m, path);
    assert_eq!(permit.route_name(), "health");
    assert!(permit.who().is_none() && permit.location().is_none());
    assert_eq!(permit.rate_limit().map(|r| r.rate.count), Some(5));
    assert!(
        !p.route(&Method::GET, &normalise("/v1/open").unwrap())
            .unwrap()
            .is_public()
    );
}

#[test]
fn roles_on_routes_require_their_scopes() {
    let p = policy(POLICY);
    let m = p
        .route(&Method::GET, &normalise("/v1/reports").unwrap())
        .unwrap();
    assert_eq!(m.required_scopes(), ["reports:read"]);
    assert!(get(&p, "/v1/reports", &k().scopes(&["reports:read"]).build()).is_ok());
    assert!(get(&p, "/v1/reports", &k().grant("reporter", &["*"]).build()).is_ok());
    assert_eq!(
        name(get(&p, "/v1/reports", &k().build())),
        missing(&["reports:read"])
    );
    // Two roles at a location: the union of their scopes, each from a grant there.
    let m = p
        .route(&Method::GET, &normalise("/v1/sites/hq/reports").unwrap())
        .unwrap();
    assert_eq!(m.required_scopes(), ["reports:read", "items:read"]);
    let key = k()
        .locations(&["hq"])
        .grant("reporter", &["hq"])
        .grant("viewer", &["*"])
        .build();
    assert_eq!(
        get(&p, "/v1/sites/hq/reports", &key).unwrap().location(),
        Some("hq")
    );
    let key = k()
        .locations(&["*"])
        .grant("reporter", &["plant-1"])
        .build();
    assert_eq!(
        name(get(&p, "/v1/sites/hq/reports", &key)),
        missing(&["reports:read", "items:read"])
    );
}

#[test]
fn a_route_without_scopes_needs_only_a_valid_key() {
    let p = policy(POLICY);
    assert_eq!(name(get(&p, "/v1/open", &k().build())), Ok("open".into()));
}

#[test]
fn a_match_from_another_policy_is_refused() {
    let a = policy(POLICY);
    let b = policy(POLICY);
    let path = normalise("/v1/open").unwrap();
    let m = a.route(&Method::GET, &path).unwrap();
    let facts = Facts {
        headers: &HeaderMap::new(),
        query: None,
    };
    assert_eq!(
        b.decide(m, path, &k().build(), &facts, NOW).map(|_| ()),
        Err(Denial::NoRoute)
    );
}

#[test]
fn decide_refuses_a_path_other_than_the_matched_one() {
    let p = policy(POLICY);
    let m = p
        .route(&Method::GET, &normalise("/v1/open").unwrap())
        .unwrap();
    let facts = Facts {
        headers: &HeaderMap::new(),
        query: None,
    };
    let other = normalise("/v1/reports").unwrap();
    assert_eq!(
        p.decide(m, other, &k().build(), &facts, NOW).map(|_| ()),
        Err(Denial::NoRoute)
    );
}

#[test]
fn denial_messages() {
    assert_eq!(
        Denial::InsufficientScope {
            missing: strings(&["items:read", "items:write"])
        }
        .to_string(),
        "the API key lacks the required scopes: `items:read`, `items:write`"
    );
    assert_eq!(
        Denial::InsufficientScope {
            missing: strings(&["a"])
        }
        .to_string(),
        "the API key lacks the required scope: `a`"
    );
    assert_eq!(
        Denial::NoRoute.to_string(),
        "no route of the policy allows this request"
    );
}

#[test]
fn accessors_summary_and_json() {
    let p = policy(POLICY);
    assert_eq!(
        p.summary(),
        "9 routes, 3 scopes, 3 roles, 3 locations, default deny"
    );
    assert_eq!(
        p.scopes().collect::<Vec<_>>(),
        vec![
            ("items:read", "Read items"),
            ("items:write", "Write items"),
            ("reports:read", "Read reports")
        ]
    );
    let roles: Vec<_> = p.roles().map(|(n, s)| (n, s.len())).collect();
    assert_eq!(roles, vec![("viewer", 1), ("editor", 2), ("reporter", 1)]);
    assert_eq!(p.locations(), ["hq", "plant-1", "plant-2"]);
    assert!(p.has_scope("items:read") && !p.has_scope("items"));
    assert!(p.has_role("editor") && !p.has_role("admin"));
    assert!(p.has_location("hq") && !p.has_location("*"));
    let j = p.to_json();
    assert_eq!(j["default"], "deny");
    assert_eq!(
        j["scopes"][0],
        serde_json::json!({"name": "items:read", "description": "Read items"})
    );
    assert_eq!(
        j["roles"][1],
        serde_json::json!({"name": "editor", "scopes": ["items:read", "items:write"]})
    );
    assert_eq!(
        j["locations"],
        serde_json::json!(["hq", "plant-1", "plant-2"])
    );
    assert_eq!(
        j["routes"][1],
        serde_json::json!({
            "name": "items-get", "path": "/v1/items/{*rest}", "methods": ["GET", "HEAD"],
            "public": false, "scopes": ["items:read"], "roles": [], "location": null,
            "rate_limit": null, "rate_limit_per": null, "rate_limit_scope": null,
        })
    );
    assert_eq!(
        j["routes"][3]["location"],
        serde_json::json!({"from": "path", "name": "loc"})
    );
    assert_eq!(j["routes"][2]["rate_limit"], "10/m");
    assert_eq!(j["routes"][2]["methods"], serde_json::Value::Null);
    assert_eq!(
        policy("version: 1\nroutes:\n  - name: a\n    path: /a\n").summary(),
        "1 route, 0 scopes, 0 roles, 0 locations, default deny"
    );
}

#[test]
fn load_reads_files_and_reports_read_errors() {
    let dir = std::env::temp_dir().join(format!("keygate-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.yaml");
    std::fs::write(&file, POLICY).unwrap();
    assert!(Policy::load(&file).is_ok());
    std::fs::write(&file, "version: 1\ndefault: nah\n").unwrap();
    match Policy::load(&file) {
        Err(PolicyError::Invalid(d)) => {
            assert_eq!(d.0[0].file, file);
            assert_eq!(d.0[0].line, 2);
        }
        other => panic!("{other:?}"),
    }
    let gone = dir.join("missing.yaml");
    let err = Policy::load(&gone).unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }));
    assert!(err.to_string().starts_with("cannot read "), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn policy_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
    assert_send_sync::<Permitted>();
}

#[test]
fn built_in_scopes_carry_the_reserved_prefix() {
    for s in BUILT_IN_SCOPES {
        assert!(s.starts_with(BUILT_IN_PREFIX), "{s}");
    }
}

#[test]
fn rate_limit_parse_and_display() {
    assert_eq!(RateLimit::parse("1/h").unwrap().to_string(), "1/h");
    assert_eq!(RateLimit::parse("100/s").unwrap().count, 100);
    assert!(RateLimit::parse("0/s").is_err());
    assert!(RateLimit::parse("+1/s").is_err());
}

/// The index must pick exactly the route a linear first-match scan in file order picks.
#[test]
fn indexed_match_is_the_linear_first_match() {
    let p = policy(
        "version: 1
routes:
  - name: root
    path: /
  - name: v1-get
    methods: [GET]
    path: /v1/{*rest}
  - name: any-id
    path: /{id}/x
  - name: v1-items
    path: /v1/items/{id}
  - name: all
    methods: [POST]
    path: /{*rest}
  - name: health
    path: /health
  - name: v1-post
    path: /v1/items
default: allow_authenticated
",
    );
    let linear = |method: &Method, path: &NormalPath| {
        p.routes
            .iter()
            .find(|r| {
                r.methods.as_ref().is_none_or(|ms| ms.contains(method)) && r.pattern.matches(path)
            })
            .map_or(DEFAULT_ROUTE, |r| &*r.name)
    };
    let paths = [
        "/",
        "/v1",
        "/v1/",
        "/v1/items",
        "/v1/items/7",
        "/health",
        "/health/",
        "/a/x",
        "/v1/x",
        "/x",
        "/health/x",
        "/v2/items/7",
    ];
    for method in [Method::GET, Method::POST, Method::DELETE] {
        for raw in paths {
            let path = path::normalise(raw).unwrap();
            let got = p.route(&method, &path).unwrap().route_name();
            assert_eq!(got, linear(&method, &path), "{method} {raw}");
        }
    }
}

#[test]
fn a_permit_carries_its_routes_upstream_and_forwards_the_path_less_its_strip_prefix() {
    let text = "version: 1\nroutes:\n  - name: billing\n    path: /billing/{*rest}\n    public: true\n    upstream: billing\n    strip_prefix: /billing\n  - name: other\n    path: /{*rest}\n    public: true\n";
    let p = Policy::parse_for(Path::new("p.yaml"), text, &["inventory", "billing"]).unwrap();
    for (sent, upstream, forwarded) in [
        ("/billing/invoices/7", 2, "/invoices/7"),
        ("/billing", 2, "/"),
        ("/billing/", 2, "/"),
        ("/billingx/a", 0, "/billingx/a"),
    ] {
        let path = normalise(sent).unwrap();
        let m = p.route(&Method::GET, &path).unwrap();
        let permit = p.permit_public(m, path);
        assert_eq!(permit.upstream(), upstream, "{sent}");
        assert_eq!(permit.forward_path(), forwarded, "{sent}");
    }
    assert!(
        Policy::parse(Path::new("p.yaml"), text).is_err(),
        "billing is not declared"
    );
}
