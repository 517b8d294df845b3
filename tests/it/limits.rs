//! Rate limits that hold across the fleet (issue 19): real gateways sharing a real
//! `redis-server` (and a real 3-node Cluster), driven at once over HTTP; and the
//! `RateLimit-*` headers on both the fleet and the single-node path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::support::{
    self, Gateway, Options, RedisCluster, RedisServer, Upstream, client, error_code,
};

const POLICY: &str = "version: 1
scopes:
  items:read: Read items
routes:
  - name: per-business
    path: /v1/biz
    scopes: [items:read]
    rate_limit: {rate: 100/s, per: business}
  - name: per-user
    path: /v1/user
    scopes: [items:read]
    rate_limit:
      rate: 3/h
      per: user
  - name: fleet-hourly
    path: /v1/fleet
    scopes: [items:read]
    rate_limit: 2/h
  - name: gateway-hourly
    path: /v1/gateway
    scopes: [items:read]
    rate_limit: {rate: 2/h, scope: gateway}
  - name: headers
    path: /v1/head
    scopes: [items:read]
    rate_limit: 5/m
  - name: unlimited
    path: /v1/free
    scopes: [items:read]
plans:
  trial:
    rate: 1/m
    limits:
      headers: 3/m
default: deny
";

async fn gateway(up: &Upstream, store: String) -> Gateway {
    Gateway::start_with(
        up,
        Options {
            policy: POLICY,
            store_yaml: Some(store),
            ..Options::default()
        },
    )
    .await
}

/// A key of `user` in business `acme` that may read items.
async fn key(gw: &Gateway, user: &str) -> String {
    let args = [
        "--name",
        "t",
        "--user",
        user,
        "--business",
        "acme",
        "--location",
        "*",
        "--scope",
        "items:read",
    ];
    gw.create_key(&args).await.1
}

async fn get(gw: &Gateway, path: &str, key: &str) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap()
}

/// `RateLimit-Limit`, `-Remaining`, `-Reset` of an answer.
fn standing(resp: &reqwest::Response) -> (u32, u32, u64) {
    let h = |name: &str| -> u64 {
        resp.headers()
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing: {:?}", resp.headers()))
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let n = |name| u32::try_from(h(name)).unwrap();
    (
        n("ratelimit-limit"),
        n("ratelimit-remaining"),
        h("ratelimit-reset"),
    )
}

/// Drives `path` through every gateway at once, four clients each, each gateway with its
/// own key, for `run`; returns (allowed, refused, seconds taken). Any other answer fails.
async fn drive(
    gateways: &[&Gateway],
    keys: &[String],
    path: &str,
    run: Duration,
) -> (u32, u32, f64) {
    let allowed = Arc::new(AtomicU32::new(0));
    let refused = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (gw, key) in gateways.iter().zip(keys) {
        for _ in 0..4 {
            let (url, key) = (gw.url(path), key.clone());
            let (allowed, refused) = (Arc::clone(&allowed), Arc::clone(&refused));
            tasks.push(tokio::spawn(async move {
                let c = client();
                while started.elapsed() < run {
                    let resp = c.get(&url).header("X-API-Key", &key).send().await.unwrap();
                    match resp.status().as_u16() {
                        200 => allowed.fetch_add(1, Relaxed),
                        429 => refused.fetch_add(1, Relaxed),
                        other => panic!("{url}: {other} {}", resp.text().await.unwrap()),
                    };
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    (
        allowed.load(Relaxed),
        refused.load(Relaxed),
        started.elapsed().as_secs_f64(),
    )
}

/// What a 100/s bucket with a burst of 100 lets through in `secs`, and the fleet's
/// documented excess: at most one batch (10 tokens for 100/s) per gateway.
fn within_the_bound(allowed: u32, secs: f64, gateways: u32) {
    let most = 100.0 + 100.0 * secs + f64::from(10 * gateways);
    // The lower end: the limit is not starved by leases (a batch per gateway may sit
    // unspent), with room for a loaded two-core machine.
    let least = 0.7 * (100.0 + 100.0 * secs) - f64::from(10 * gateways);
    let allowed = f64::from(allowed);
    eprintln!(
        "fleet bound: {allowed} allowed in {secs:.2} s through {gateways} gateways (bound {least:.0}..={most:.0})"
    );
    assert!(
        allowed <= most && allowed >= least,
        "{allowed} allowed through {gateways} gateways in {secs:.2} s of a 100/s per-business \
         limit; the fleet bound is {least:.0}..={most:.0} (not {:.0}, three times the limit)",
        3.0 * (100.0 + 100.0 * secs)
    );
}

/// Three gateways on `store`, three users of one business (the bucket is the
/// business's, whoever's key it is), `/v1/biz` driven through all three for `run`.
async fn three_gateways(store: String, run: Duration) -> (u32, u32, f64, usize) {
    let up = Upstream::start().await;
    let a = gateway(&up, store.clone()).await;
    let b = gateway(&up, store.clone()).await;
    let c = gateway(&up, store).await;
    let keys = [
        key(&a, "ann").await,
        key(&a, "bob").await,
        key(&a, "cat").await,
    ];
    let (allowed, refused, secs) = drive(&[&a, &b, &c], &keys, "/v1/biz", run).await;
    within_the_bound(allowed, secs, 3);
    (allowed, refused, secs, up.count())
}

#[tokio::test]
async fn a_per_business_limit_holds_across_three_gateways_on_one_redis() {
    let redis = RedisServer::start();
    let store = support::redis_store(&redis.url());
    let (allowed, refused, _, upstream_saw) = three_gateways(store, Duration::from_secs(2)).await;
    assert!(refused > 0, "the drive went past the limit");
    assert_eq!(
        upstream_saw, allowed as usize,
        "refused requests never reach the upstream"
    );
}

#[tokio::test]
async fn a_per_business_limit_holds_across_three_gateways_on_a_cluster() {
    let cluster = RedisCluster::start();
    let store = support::cluster_store(&cluster.seeds());
    three_gateways(store, Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn fleet_is_the_default_on_redis_and_gateway_counts_each_gateway_alone() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let store = support::redis_store(&redis.url());
    let a = gateway(&up, store.clone()).await;
    let b = gateway(&up, store).await;
    let ann = key(&a, "ann").await;
    let through = |path: &'static str| {
        let (a, b, ann) = (&a, &b, ann.clone());
        async move {
            let mut ok = 0;
            for gw in [a, b, a, b, a, b] {
                if get(gw, path, &ann).await.status() == 200 {
                    ok += 1;
                }
            }
            ok
        }
    };
    assert_eq!(through("/v1/fleet").await, 2, "2/h across the fleet");
    assert_eq!(
        through("/v1/gateway").await,
        4,
        "2/h on each of two gateways"
    );

    // per: user: a user's keys share a bucket, on any gateway; another user has theirs.
    let ann2 = key(&a, "ann").await;
    let bob = key(&a, "bob").await;
    let mut statuses = Vec::new();
    for (gw, k) in [(&a, &ann), (&b, &ann2), (&b, &ann), (&a, &ann2), (&a, &bob)] {
        statuses.push(get(gw, "/v1/user", k).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 200]);
    // Redis holds the buckets, under one hash tag each.
    let names = redis.cli_text(&["--scan", "--pattern", "kg:rl:*"]);
    assert!(names.lines().count() >= 3, "{names}");
    assert!(
        names
            .lines()
            .all(|n| n.starts_with("kg:rl:{") && n.ends_with('}')),
        "{names}"
    );
}

#[tokio::test]
async fn answers_carry_ratelimit_headers_on_the_fleet_and_on_one_node() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let fleet = gateway(&up, support::redis_store(&redis.url())).await;
    let single = Gateway::start_with(
        &up,
        Options {
            policy: POLICY,
            ..Options::default()
        },
    )
    .await;
    for gw in [&fleet, &single] {
        let k = key(gw, "ann").await;
        let mut seen = Vec::new();
        for _ in 0..5 {
            let resp = get(gw, "/v1/head", &k).await;
            assert_eq!(resp.status(), 200);
            seen.push(standing(&resp));
        }
        let remaining: Vec<u32> = seen.iter().map(|s| s.1).collect();
        assert!(seen.iter().all(|s| s.0 == 5), "{seen:?}");
        assert_eq!(remaining.last(), Some(&0), "{seen:?}");
        assert!(
            remaining.windows(2).all(|w| w[1] <= w[0]) && remaining[0] >= 3,
            "remaining counts down: {seen:?}"
        );
        // 5/m: full again within a minute; one token back every 12 s.
        assert!(seen.iter().all(|s| (1..=60).contains(&s.2)), "{seen:?}");
        let over = get(gw, "/v1/head", &k).await;
        let (limit, remaining, reset) = standing(&over);
        let retry: u64 = over.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!((limit, remaining), (5, 0));
        assert!(
            (1..=12).contains(&retry) && reset == retry,
            "{reset} {retry}"
        );
        assert_eq!(error_code(over).await.1, "rate_limited");
        // A route without a limit says nothing of limits.
        let free = get(gw, "/v1/nothing-here", &k).await;
        assert!(free.headers().get("ratelimit-limit").is_none());
    }
}

/// `RateLimit-Limit` of a GET of `path` with `key` (`None`: no limit), and its status.
async fn limit_of(gw: &Gateway, path: &str, key: &str) -> (u16, Option<u32>) {
    let resp = get(gw, path, key).await;
    let limit = resp
        .headers()
        .get("ratelimit-limit")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (resp.status().as_u16(), limit)
}

#[tokio::test]
async fn a_keys_own_limit_beats_its_plans_which_beats_the_routes() {
    use crate::admin::{As, TOKEN, call};
    use reqwest::Method;
    use serde_json::json;

    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let start = || {
        Gateway::start_with(
            &up,
            Options {
                policy: POLICY,
                store_yaml: Some(support::redis_store(&redis.url())),
                admin_token: Some(TOKEN),
                ..Options::default()
            },
        )
    };
    let (a, b) = (start().await, start().await);
    let base = [
        "--name",
        "t",
        "--user",
        "ann",
        "--business",
        "acme",
        "--location",
        "*",
        "--scope",
        "items:read",
    ];
    let with = |more: &[&'static str]| [&base[..], more].concat();
    let plain = a.create_key(&base).await.1;
    let (own_id, own) = a
        .create_key(&with(&["--limit", "headers=2/m", "--plan", "trial"]))
        .await;
    let (trial_id, trial) = a.create_key(&with(&["--plan", "trial"])).await;

    assert_eq!(
        limit_of(&a, "/v1/head", &plain).await,
        (200, Some(5)),
        "the route's"
    );
    assert_eq!(limit_of(&a, "/v1/free", &plain).await, (200, None));
    assert_eq!(
        limit_of(&a, "/v1/head", &trial).await,
        (200, Some(3)),
        "the plan's for the route"
    );
    assert_eq!(
        limit_of(&b, "/v1/free", &trial).await,
        (200, Some(1)),
        "the plan's everywhere else"
    );
    assert_eq!(
        limit_of(&a, "/v1/free", &trial).await.0,
        429,
        "1/m across the fleet"
    );
    assert_eq!(
        limit_of(&a, "/v1/head", &own).await,
        (200, Some(2)),
        "the key's own"
    );
    assert_eq!(limit_of(&b, "/v1/head", &own).await, (200, Some(2)));
    assert_eq!(
        limit_of(&a, "/v1/head", &own).await.0,
        429,
        "2/m across the fleet"
    );

    // The admin API shows them; only the operator changes them.
    let (status, v) = call(
        &a,
        Method::GET,
        &format!("/v1/keys/{own_id}"),
        As::Token(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (v["limits"].clone(), v["plan"].clone()),
        (json!({"headers": "2/m"}), json!("trial"))
    );
    let (status, v) = call(
        &a,
        Method::POST,
        "/v1/keys",
        As::Token(TOKEN),
        Some(
            json!({"name": "admin", "user_id": "boss", "business_id": "acme",
                    "scopes": ["keygate:admin"], "plan": "trial"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let admin = v["key"].as_str().unwrap().to_owned();
    let (status, v) = call(
        &a,
        Method::PATCH,
        &format!("/v1/keys/{trial_id}"),
        As::Key(&admin),
        Some(json!({"plan": ""})),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(
        v["error"]["message"],
        "plan: only the operator (the admin token or the CLI) puts a key on a plan; an \
         admin-API key's keys keep its own",
    );
    let (status, v) = call(
        &a,
        Method::POST,
        "/v1/keys",
        As::Key(&admin),
        Some(json!({"name": "n", "user_id": "ann", "business_id": "acme"})),
    )
    .await;
    assert_eq!(
        (status, v["plan"].clone()),
        (201, json!("trial")),
        "a key caller's keys keep its plan: {v}"
    );
    let (status, v) = call(
        &a,
        Method::PATCH,
        &format!("/v1/keys/{trial_id}"),
        As::Token(TOKEN),
        Some(json!({"plan": "", "limits": {"headers": "50/m"}})),
    )
    .await;
    assert_eq!(
        (status, v["plan"].clone(), v["limits"]["headers"].clone()),
        (200, json!(null), json!("50/m")),
        "{v}"
    );
    // Bad input names the field.
    let (status, v) = call(
        &a,
        Method::PATCH,
        &format!("/v1/keys/{trial_id}"),
        As::Token(TOKEN),
        Some(json!({"limits": {"headers": "5/d"}})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        v["error"]["message"],
        "limits.headers: rate limit `5/d` must look like `100/s`, `10/m` or `1000/h`"
    );
    let bad = a
        .cli(&[&["keys", "create"][..], &with(&["--plan", "gold"])].concat())
        .await;
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("--plan") && err.contains("no plan named `gold`"),
        "{err}"
    );
    let bad = a
        .cli(&[&["keys", "create"][..], &with(&["--limit", "header=2/m"])].concat())
        .await;
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("no route is named `header`"),
        "{err}"
    );
}
