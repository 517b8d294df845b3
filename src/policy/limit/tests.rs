//! Plans and a key's own limits: how they load, and which limit a key meets.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};

use crate::keys::{KeyRecord, RateLimit, Timestamp};
use crate::policy::path::normalise;
use crate::policy::{Facts, Per, Policy, RouteLimit, Scope};
use crate::store::contract::record;

const POLICY: &str = "version: 1
plans:
  trial:
    rate: 10/s
    limits:
      orders: 2/s
  pro:
    limits:
      orders: 500/s
routes:
  - name: orders
    path: /orders
    rate_limit: {rate: 100/s, per: business, scope: fleet}
  - name: items
    path: /items
default: allow_authenticated
";

fn policy(text: &str) -> Result<Policy, Vec<(usize, String)>> {
    crate::policy::load::parse(Path::new("p.yaml"), text, &[])
        .map_err(|d| d.0.into_iter().map(|d| (d.line, d.message)).collect())
}

fn rate(text: &str) -> RateLimit {
    RateLimit::parse(text).unwrap()
}

/// The limit `key` meets on `path`.
fn limit(p: &Policy, path: &str, key: &KeyRecord) -> Option<RouteLimit> {
    let path = normalise(path).unwrap();
    let m = p.route(&Method::GET, &path).unwrap();
    let headers = HeaderMap::new();
    let facts = Facts {
        headers: &headers,
        query: None,
    };
    let key = Arc::new(key.clone());
    p.decide(m, path, &key, &facts, Timestamp(1))
        .unwrap()
        .rate_limit()
}

#[test]
fn a_key_meets_its_own_rate_then_its_plans_then_the_routes() {
    let p = policy(POLICY).unwrap();
    let plain = record("a", "acme", "ann", 0);
    let route = limit(&p, "/orders", &plain).unwrap();
    assert_eq!(
        (route.rate, route.per, route.scope),
        (rate("100/s"), Per::Business, Some(Scope::Fleet))
    );
    assert_eq!(limit(&p, "/items", &plain), None, "no limit, no plan: none");

    let trial = KeyRecord {
        plan: Some("trial".into()),
        ..plain.clone()
    };
    let on_orders = limit(&p, "/orders", &trial).unwrap();
    assert_eq!(
        (on_orders.rate, on_orders.per, on_orders.scope),
        (rate("2/s"), Per::Business, Some(Scope::Fleet)),
        "the plan's rate for the route, counted as the route says"
    );
    assert_eq!(
        limit(&p, "/items", &trial),
        Some(RouteLimit::of(rate("10/s"))),
        "the plan's rate everywhere else"
    );
    assert_eq!(
        limit(&p, "/anything", &trial),
        Some(RouteLimit::of(rate("10/s"))),
        "the default route too"
    );

    let own = KeyRecord {
        limits: [("orders".to_owned(), rate("7/s"))].into(),
        ..trial.clone()
    };
    let mine = limit(&p, "/orders", &own).unwrap();
    assert_eq!(
        (mine.rate, mine.per),
        (rate("7/s"), Per::Key),
        "the key's own rate, for the key alone"
    );

    let gone = KeyRecord {
        plan: Some("dropped-from-the-policy".into()),
        ..plain
    };
    assert_eq!(limit(&p, "/orders", &gone).unwrap().rate, rate("100/s"));
    assert_eq!(p.plan("pro").unwrap().rate_on("items"), None);
    assert_eq!(
        p.to_json()["plans"][0],
        serde_json::json!({"name": "trial", "rate": "10/s", "limits": {"orders": "2/s"}, "quota": null})
    );
}

#[test]
fn plan_errors_name_their_line_and_the_fix() {
    let with = |plans: &str| {
        format!("version: 1\nplans:\n{plans}routes:\n  - name: orders\n    path: /orders\n")
    };
    let one = |plans: &str| {
        let errors = policy(&with(plans)).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.into_iter().next().unwrap()
    };
    let (line, m) = one("  trial:\n    limits:\n      order: 2/s\n");
    assert_eq!(line, 5);
    assert!(
        m.contains("no route is named `order` (did you mean `orders`?)"),
        "{m}"
    );
    let (line, m) = one("  trial:\n    rate: 10/d\n");
    assert_eq!(line, 4);
    assert!(
        m.contains("plan `trial`: rate limit `10/d` must look like"),
        "{m}"
    );
    let (line, m) = one("  trial:\n    quota: 1000/1q\n");
    assert_eq!(line, 4);
    assert!(m.contains("plan `trial`: invalid duration `1q`"), "{m}");
    let (line, m) = one("  trial:\n    quota: {credits: 50}\n");
    assert_eq!(line, 4);
    assert!(m.contains("credits belong to a key"), "{m}");
    let (_, m) = one("  trial:\n    quota: {limit: 5, period: 1d, refil: true}\n");
    assert!(m.contains("unknown field `refil`"), "{m}");
    for text in ["1000/1d", "{limit: 1000, period: 1d}"] {
        let p = policy(&with(&format!("  trial:\n    quota: {text}\n"))).unwrap();
        let q = p.plan("trial").unwrap().quota.clone().unwrap();
        assert_eq!((q.limit, q.period_secs), (1000, Some(86_400)), "{text}");
    }
    let (_, m) = one("  trial:\n    burst: 5\n");
    assert!(m.contains("unknown field `burst`"), "{m}");
    assert_eq!(
        RouteLimit::for_key(None, None, Some(rate("1/s"))),
        Some(RouteLimit {
            rate: RateLimit {
                count: 1,
                per: Duration::from_secs(1)
            },
            per: Per::Key,
            scope: None
        })
    );
}
