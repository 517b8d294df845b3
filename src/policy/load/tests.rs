#![allow(clippy::unwrap_used)]
use super::*;

/// The errors for `text`, as (line, message).
fn errors(text: &str) -> Vec<(usize, String)> {
    match parse(Path::new("policy.yaml"), text, &[]) {
        Ok(_) => Vec::new(),
        Err(d) => d.0.into_iter().map(|d| (d.line, d.message)).collect(),
    }
}

/// Exactly one error, on `line`, whose message contains `needle`.
#[track_caller]
fn one_error(text: &str, line: usize, needle: &str) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].0, line, "{errs:#?}");
    assert!(errs[0].1.contains(needle), "{errs:#?}");
}

const HEAD: &str = "version: 1
scopes:
  items:read: Read items
  items:write: Write items
roles:
  viewer: [items:read]
locations: [hq, plant-1]
routes:
";
// HEAD is 8 lines: the first route starts on line 9.

fn with_routes(routes: &str) -> String {
    format!("{HEAD}{routes}")
}

/// `config/policy.yaml` is the contract's example, with comments.
#[test]
fn the_contract_example_loads() {
    let text = include_str!("../../../config/policy.yaml");
    let p = parse(Path::new("p.yaml"), text, &[]).unwrap();
    assert_eq!(
        p.summary(),
        "3 routes, 2 scopes, 2 roles, 3 locations, default deny"
    );
}

#[test]
fn empty_file_needs_a_version() {
    one_error("", 1, "missing `version: 1`");
    let p = parse(Path::new("p.yaml"), "version: 1\n", &[]).unwrap();
    assert_eq!(
        p.summary(),
        "0 routes, 0 scopes, 0 roles, 0 locations, default deny"
    );
}

#[test]
fn unknown_fields_top_level_and_in_routes() {
    one_error("version: 1\nscope:\n  a: b\n", 2, "unknown field `scope`");
    one_error(
        &with_routes("  - name: a\n    path: /a\n    pubic: true\n"),
        11,
        "unknown field `pubic`",
    );
    one_error(
        &with_routes("  - name: a\n    path: /a/{l}\n    location: {from: path, name: l, x: 1}\n"),
        11,
        "unknown field `x`",
    );
}

#[test]
fn duplicate_keys_top_level_and_in_routes() {
    one_error(
        "version: 1\nlocations: [a]\nlocations: [b]\n",
        3,
        "duplicate key `locations`",
    );
    let errs = errors(&with_routes(
        "  - name: a\n    path: /a\n    path: /b\n  - name: b\n    name: c\n    path: /c\n",
    ));
    assert_eq!(
        errs.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![11, 13],
        "{errs:#?}"
    );
    one_error(
        "version: 1\nscopes:\n  a: x\n  a: y\n",
        4,
        "duplicate key `a`",
    );
}

#[test]
fn wrong_types_are_errors_at_their_line() {
    one_error(
        &with_routes("  - name: a\n    path: /a\n    public: \"yes\"\n"),
        11,
        "invalid type",
    );
    one_error(
        &with_routes("  - name: a\n    path: /a\n    methods: GET\n"),
        11,
        "invalid type",
    );
    one_error("version: one\n", 1, "invalid type");
    one_error("version: 1\nroutes: {a: b}\n", 2, "invalid type");
}

#[test]
fn routes_need_a_name_and_a_path() {
    let errs = errors(&with_routes(
        "  - path: /a\n  - name: b\n    methods: [GET]\n  - name: ok\n    path: /ok\n",
    ));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(errs[0].0, 9);
    assert!(errs[0].1.contains("route 1 has no `name`"), "{errs:#?}");
    assert_eq!(errs[1].0, 10);
    assert!(errs[1].1.contains("route `b` has no `path`"), "{errs:#?}");
}

#[test]
fn duplicate_route_names() {
    one_error(
        &with_routes(
            "  - name: a\n    path: /a\n  - name: b\n    path: /b\n  - name: a\n    path: /c\n",
        ),
        13,
        "route name `a` is used twice",
    );
    one_error(
        &with_routes("  - name: default\n    path: /a\n"),
        9,
        "reserved",
    );
}

#[test]
fn undeclared_scopes_and_roles_with_did_you_mean() {
    one_error(
        "version: 1\nscopes:\n  items:read: r\nroles:\n  viewer:\n    - items:read\n    - items:raed\n",
        7,
        "scope `items:raed` is not declared in `scopes` (did you mean `items:read`?)",
    );
    one_error(
        &with_routes("  - name: a\n    path: /a\n    scopes: [items:read, items:wirte]\n"),
        11,
        "did you mean `items:write`?",
    );
    one_error(
        &with_routes("  - name: a\n    path: /a\n    roles: [viewr]\n"),
        11,
        "role `viewr` is not declared in `roles` (did you mean `viewer`?)",
    );
    one_error(
        &with_routes("  - name: a\n    path: /a\n    scopes: [billing]\n"),
        11,
        "scope `billing` is not declared in `scopes`",
    );
    assert!(
        !errors(&with_routes(
            "  - name: a\n    path: /a\n    scopes: [billing]\n"
        ))[0]
            .1
            .contains("did you mean")
    );
}

#[test]
fn built_in_scopes_cannot_be_declared_or_required() {
    one_error(
        "version: 1\nscopes:\n  a: x\n  keygate:admin: mine\n",
        4,
        "scope `keygate:admin` cannot be declared",
    );
    one_error(
        &with_routes("  - name: a\n    path: /a\n    scopes:\n      - keygate:self\n"),
        12,
        "built in for the admin API",
    );
    one_error(
        "version: 1\nroles:\n  admin: [keygate:admin]\n",
        3,
        "built in for the admin API",
    );
}

#[test]
fn bad_route_paths() {
    let cases = [
        ("v1/items", "must start with `/`"),
        ("/v1/{id", "without its `}`"),
        ("/v1/{}", "`{}` names no parameter"),
        ("/v1/{id}/x/{id}", "parameter `id` appears twice"),
        ("/v1/item-{id}", "must be a whole segment"),
        ("/v1/{*rest}/x", "`{*rest}` must be the last segment"),
        ("/v1/../x", "not in normal form"),
    ];
    for (path, needle) in cases {
        one_error(
            &with_routes(&format!("  - name: a\n    path: \"{path}\"\n")),
            10,
            needle,
        );
    }
}

#[test]
fn location_sources() {
    one_error(
        &with_routes(
            "  - name: a\n    path: /v1/{site}/x\n    location: { from: path, name: loc }\n",
        ),
        11,
        "location parameter `loc` is not in path `/v1/{site}/x`",
    );
    one_error(
        &with_routes(
            "  - name: a\n    path: /v1/{*loc}\n    location:\n      from: path\n      name: loc\n",
        ),
        13,
        "catch-all",
    );
    one_error(
        &with_routes(
            "  - name: a\n    path: /a\n    location:\n      from: body\n      name: loc\n",
        ),
        12,
        "unknown `location.from: body`",
    );
    one_error(
        &with_routes(
            "  - name: a\n    path: /a\n    location:\n      from: heder\n      name: X-Loc\n",
        ),
        12,
        "did you mean `header`?",
    );
    one_error(
        &with_routes("  - name: a\n    path: /a\n    location: {from: header, name: \"X Loc\"}\n"),
        11,
        "not a valid header name",
    );
    one_error(
        &with_routes("  - name: a\n    path: /a\n    location: {from: query, name: \"a&b\"}\n"),
        11,
        "query parameter name",
    );
    assert!(
            errors(&with_routes(
                "  - name: a\n    path: /a\n    location: {from: query, name: loc}\n  - name: b\n    path: /b\n    location: {from: header, name: X-Location}\n"
            ))
            .is_empty()
        );
}

#[test]
fn bad_methods() {
    let errs = errors(&with_routes(
        "  - name: a\n    path: /a\n    methods:\n      - GET\n      - get\n      - FETCH\n",
    ));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(errs[0].0, 13);
    assert!(errs[0].1.contains("method `get`") && errs[0].1.contains("did you mean `GET`?"));
    assert_eq!(errs[1].0, 14);
    assert!(
        errs[1]
            .1
            .contains("method `FETCH` is not one of GET, HEAD, POST")
    );
    one_error(
        &with_routes("  - name: a\n    path: /a\n    methods: []\n"),
        11,
        "`methods` is empty",
    );
}

#[test]
fn bad_businesses_default_and_version() {
    one_error(
        "version: 1\nbusinesses:\n  default: enabled\n  trial-co: off\n",
        4,
        "business `trial-co` is `off`: use `enabled` or `disabled`",
    );
    one_error(
        "version: 1\nbusinesses:\n  acme: disable\n",
        3,
        "did you mean `disabled`?",
    );
    one_error(
        "version: 1\ndefault: allow\n",
        2,
        "`default: allow` is not a rule",
    );
    one_error(
        "version: 1\ndefault: allow_authenticate\n",
        2,
        "did you mean `allow_authenticated`?",
    );
    one_error("version: 2\n", 1, "unsupported policy version 2");
}

#[test]
fn public_routes_require_nothing() {
    one_error(
        &with_routes("  - name: a\n    path: /a\n    scopes: [items:read]\n    public: true\n"),
        12,
        "is `public: true` but has `scopes`",
    );
    one_error(
        &with_routes(
            "  - name: a\n    path: /a/{l}\n    public: true\n    roles: [viewer]\n    location: {from: path, name: l}\n",
        ),
        11,
        "has `roles` and `location`",
    );
    assert!(
        errors(&with_routes(
            "  - name: a\n    path: /a\n    public: false\n    scopes: [items:read]\n"
        ))
        .is_empty()
    );
}

#[test]
fn rate_limit_mappings_name_whose_bucket_and_who_counts_it() {
    use crate::policy::{Per, Scope};
    let p = parse(
        Path::new("p.yaml"),
        &with_routes(
            "  - name: a\n    path: /a\n    rate_limit: {rate: 100/s, per: business, scope: fleet}\n  - name: b\n    path: /b\n    rate_limit:\n      rate: 5/m\n      per: user\n  - name: c\n    path: /c\n    rate_limit: {rate: 1/h, scope: gateway}\n",
        ),
        &[],
    )
    .unwrap();
    let limits: Vec<_> = p.routes.iter().map(|r| r.rate_limit.unwrap()).collect();
    assert_eq!(
        (limits[0].rate.count, limits[0].per, limits[0].scope),
        (100, Per::Business, Some(Scope::Fleet))
    );
    assert_eq!((limits[1].per, limits[1].scope), (Per::User, None));
    assert_eq!(
        (limits[2].per, limits[2].scope),
        (Per::Key, Some(Scope::Gateway))
    );
    let j = p.to_json();
    assert_eq!(j["routes"][0]["rate_limit"], "100/s");
    assert_eq!(j["routes"][0]["rate_limit_per"], "business");
    assert_eq!(j["routes"][0]["rate_limit_scope"], "fleet");
    assert_eq!(j["routes"][1]["rate_limit_scope"], serde_json::Value::Null);

    let route = |body: &str| with_routes(&format!("  - name: a\n    path: /a\n{body}"));
    one_error(
        &route("    rate_limit:\n      rate: 10/s\n      per: busines\n"),
        13,
        "unknown `per: busines`: one of key, user, business (did you mean `business`?)",
    );
    one_error(
        &route("    rate_limit:\n      rate: 10/s\n      scope: fleets\n"),
        13,
        "one of gateway, fleet",
    );
    one_error(
        &route("    rate_limit:\n      per: user\n"),
        11,
        "needs a `rate`",
    );
    one_error(
        &route("    rate_limit:\n      rate: 10/x\n"),
        12,
        "must look like `100/s`",
    );
    one_error(
        &route("    rate_limit:\n      rate: 10/s\n      burst: 5\n"),
        13,
        "unknown field `burst`",
    );
    one_error(&route("    rate_limit: 10\n"), 11, "a rate such as `100/s`");
    one_error(
        &route("    public: true\n    rate_limit: {rate: 10/s, per: user}\n"),
        12,
        "no user or business to count by",
    );
}

#[test]
fn rate_limits() {
    let p = parse(
            Path::new("p.yaml"),
            &with_routes("  - name: a\n    path: /a\n    rate_limit: 100/s\n  - name: b\n    path: /b\n    rate_limit: 5/h\n"),
            &[],
        )
        .unwrap();
    assert_eq!(
        p.routes[0].rate_limit,
        Some(crate::policy::RouteLimit::of(crate::policy::RateLimit {
            count: 100,
            per: std::time::Duration::from_secs(1)
        }))
    );
    assert_eq!(p.routes[1].rate_limit.unwrap().rate.per.as_secs(), 3600);
    for bad in [
        "0/s",
        "10/d",
        "abc",
        "10",
        "/s",
        "-1/s",
        "99999999999/m",
        "1.5/s",
    ] {
        one_error(
            &with_routes(&format!(
                "  - name: a\n    path: /a\n    rate_limit: \"{bad}\"\n"
            )),
            11,
            "rate limit",
        );
    }
}

#[test]
fn declared_locations_are_checked() {
    let errs = errors("version: 1\nlocations:\n  - hq\n  - \"*\"\n  - plant 1\n  - hq\n  - ..\n");
    assert_eq!(
        errs.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![4, 5, 6, 7],
        "{errs:#?}"
    );
    assert!(errs[0].1.contains("`*` cannot be declared"));
    assert!(errs[2].1.contains("declared twice"));
}

#[test]
fn names_are_checked() {
    one_error(
        "version: 1\nroles:\n  ops@hq: []\n",
        3,
        "role name `ops@hq` may not contain '@'",
    );
    one_error(
        "version: 1\nscopes:\n  \"a b\": x\n",
        3,
        "scope name `a b` may not contain ' '",
    );
}

#[test]
fn every_semantic_error_is_reported_in_line_order() {
    let text = "version: 3
scopes:
  items:read: Read
roles:
  viewer: [items:red]
locations: [hq, \"*\"]
businesses:
  acme: maybe
routes:
  - name: a
    path: a
    methods: [GETT]
  - name: a
    path: /b/{x}
    scopes: [keygate:admin]
    location: {from: path, name: y}
  - path: /c
    public: true
    scopes: [items:read]
    rate_limit: 0/s
default: permit
";
    let errs = errors(text);
    let lines: Vec<usize> = errs.iter().map(|e| e.0).collect();
    assert_eq!(
        lines,
        vec![1, 5, 6, 8, 11, 12, 13, 15, 16, 17, 18, 20, 21],
        "{errs:#?}"
    );
}

#[test]
fn syntax_errors_have_a_line() {
    let errs = errors("version: 1\nroutes:\n  - name: a\n    path: [/a\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].1.contains("YAML syntax error"), "{errs:#?}");
    assert!(errs[0].0 >= 4, "{errs:#?}");
}

#[test]
fn diagnostics_display_file_line_col() {
    let err = parse(
        Path::new("conf/policy.yaml"),
        "version: 1\ndefault: nope\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "conf/policy.yaml:2:10: `default: nope` is not a rule: use `deny` or `allow_authenticated`"
    );
}

#[test]
fn a_misindented_route_field_is_pointed_at_with_a_hint() {
    // Line 10 is indented one space more than `name` (line 9) lines up with.
    let text = with_routes("  - name: a\n     path: /a\n");
    one_error(
        &text,
        10,
        "indent with spaces; this line is indented more than line 9 `- name: a`",
    );
    let text = with_routes("  - name: a\n\t  path: /a\n");
    one_error(&text, 10, "indent with spaces, not tabs");
}

#[test]
fn routes_name_declared_upstreams_and_strip_leading_literal_segments() {
    let text = with_routes(
        "  - name: a\n    path: /billing/v1/{*rest}\n    upstream: billing\n    strip_prefix: /billing/v1\n  - name: b\n    path: /x\n    upstream: default\n",
    );
    let p = parse(Path::new("p.yaml"), &text, &["inventory", "billing"]).unwrap();
    assert_eq!(p.routes[0].upstream, 2);
    assert_eq!(p.routes[0].strip_prefix.as_deref(), Some("/billing/v1"));
    assert_eq!(p.routes[1].upstream, 0);
    for bad in [
        "/billing/v",
        "/billing/v1/",
        "/",
        "billing",
        "/billing/{*rest}",
    ] {
        let text = with_routes(&format!(
            "  - name: a\n    path: /billing/v1/{{*rest}}\n    strip_prefix: {bad}\n"
        ));
        let err = parse(Path::new("p.yaml"), &text, &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("is not a prefix of the route's path"),
            "{bad}: {err}"
        );
    }
}
