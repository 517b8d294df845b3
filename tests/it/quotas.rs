//! Quotas (issue 19): a key's `quota` (requests per period, or credits) and a plan's,
//! spent through real gateways sharing a real `redis-server` (and a real Cluster), or
//! one gateway on its `SQLite` file; exact across gateways and restarts, refused with
//! 429 `quota_exceeded`, shown in `GET /v1/keys/{id}`, and fail-closed when the store
//! is down.

use serde_json::{Value, json};

use crate::admin::{As, TOKEN, call};
use crate::support::{self, Gateway, Options, RedisCluster, RedisServer, Upstream, client};

const POLICY: &str = "version: 1
scopes:
  items:read: Read items
routes:
  - name: items
    path: /v1/items
    scopes: [items:read]
plans:
  trial:
    quota: 5/1h
default: deny
";

async fn gateway(up: &Upstream, store: String) -> Gateway {
    Gateway::start_with(
        up,
        Options {
            policy: POLICY,
            store_yaml: Some(store),
            admin_token: Some(TOKEN),
            ..Options::default()
        },
    )
    .await
}

/// A key of business `acme` that may read items, with `more` flags; (id, secret).
async fn key(gw: &Gateway, more: &[&str]) -> (String, String) {
    let mut args = vec![
        "--name",
        "q",
        "--user",
        "ann",
        "--business",
        "acme",
        "--location",
        "*",
        "--scope",
        "items:read",
    ];
    args.extend_from_slice(more);
    gw.create_key(&args).await
}

/// One GET of `/v1/items`: its status, `Retry-After` and error code.
async fn spend(gw: &Gateway, key: &str) -> (u16, Option<u64>, String) {
    let resp = client()
        .get(gw.url("/v1/items"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    (status, retry, code)
}

/// `n` requests round-robin through `gateways`; how many were served. Every refusal
/// must be `quota_exceeded` with a `Retry-After` of at most a day.
async fn round_robin(gateways: &[&Gateway], key: &str, n: usize) -> usize {
    let mut served = 0;
    for i in 0..n {
        match spend(gateways[i % gateways.len()], key).await {
            (200, ..) => served += 1,
            (429, Some(retry), code) if code == "quota_exceeded" => assert!(retry <= 86_400),
            other => panic!("request {i}: {other:?}"),
        }
    }
    served
}

async fn shown_quota(gw: &Gateway, id: &str) -> Value {
    let (status, v) = call(
        gw,
        reqwest::Method::GET,
        &format!("/v1/keys/{id}"),
        As::Token(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["quota"].clone()
}

/// Seconds to the next 00:00 UTC: when a `1d` quota refills.
fn to_midnight() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    86_400 - now % 86_400
}

/// A 1,000/day quota through three gateways, one of them restarted half-way: exactly
/// 1,000 served (leases given back on SIGTERM lose nothing), then 429 until midnight UTC.
async fn exact_across_three_gateways(store: String) {
    let up = Upstream::start().await;
    let a = gateway(&up, store.clone()).await;
    let mut b = gateway(&up, store.clone()).await;
    let c = gateway(&up, store).await;
    let (id, secret) = key(&a, &["--quota", "1000/1d"]).await;

    let first = round_robin(&[&a, &b, &c], &secret, 450).await;
    assert_eq!(first, 450);
    // What gateways hold unspent counts as used: at most 1.5 batches (15) each.
    let shown = shown_quota(&a, &id).await;
    let remaining = shown["remaining"].as_u64().unwrap();
    assert!(
        (550 - 45..=550).contains(&remaining),
        "remaining {remaining} after 450 of 1000: {shown}"
    );
    b.restart().await;
    let rest = round_robin(&[&a, &b, &c], &secret, 750).await;
    assert_eq!(
        first + rest,
        1000,
        "a 1000/1d quota through three gateways and a restart serves exactly 1000"
    );
    assert_eq!(
        up.count(),
        1000,
        "refused requests never reach the upstream"
    );
    let (status, retry, code) = spend(&c, &secret).await;
    assert_eq!((status, code.as_str()), (429, "quota_exceeded"));
    let retry = retry.unwrap();
    assert!(retry.abs_diff(to_midnight()) <= 5, "Retry-After {retry} s");
    let shown = shown_quota(&b, &id).await;
    assert_eq!(shown["remaining"], 0, "{shown}");
    assert_eq!(shown["limit"], 1000);
    assert_eq!(shown["period"], "1d");
    let resets = shown["resets_at"].as_str().unwrap();
    assert!(resets.ends_with("T00:00:00Z"), "{resets}");
}

#[tokio::test]
async fn a_daily_quota_is_exact_across_three_gateways_and_a_restart_on_redis() {
    let redis = RedisServer::start();
    exact_across_three_gateways(support::redis_store(&redis.url())).await;
}

#[tokio::test]
async fn a_daily_quota_is_exact_across_three_gateways_and_a_restart_on_a_cluster() {
    let cluster = RedisCluster::start();
    exact_across_three_gateways(support::cluster_store(&cluster.seeds())).await;
}

#[tokio::test]
async fn credits_go_to_zero_and_refuse_until_an_admin_refills_them() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let gw = gateway(&up, support::redis_store(&redis.url())).await;
    let (status, created) = call(
        &gw,
        reqwest::Method::POST,
        "/v1/keys",
        As::Token(TOKEN),
        Some(json!({
            "name": "c", "user_id": "ann", "business_id": "acme",
            "scopes": ["items:read"], "locations": ["*"], "quota": {"credits": 5},
        })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["quota"], json!({"credits": 5}));
    let (id, secret) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    assert_eq!(round_robin(&[&gw], secret, 5).await, 5);
    // Spent credits: 429, and no Retry-After (nothing refills them but an admin).
    assert_eq!(
        spend(&gw, secret).await,
        (429, None, "quota_exceeded".to_owned())
    );
    let shown = shown_quota(&gw, id).await;
    assert_eq!(
        shown,
        json!({"credits": 5, "remaining": 0, "resets_at": null})
    );
    // Given again, credits are a refill.
    let key_path = format!("/v1/keys/{id}");
    let patch = |body: Value| {
        call(
            &gw,
            reqwest::Method::PATCH,
            &key_path,
            As::Token(TOKEN),
            Some(body),
        )
    };
    let (status, v) = patch(json!({"quota": {"credits": 3}})).await;
    assert_eq!(status, 200, "{v}");
    for _ in 0..3 {
        assert_eq!(spend(&gw, secret).await.0, 200);
    }
    assert_eq!(spend(&gw, secret).await.0, 429);
    // A bad quota names the field and says what to write.
    let (status, v) = patch(json!({"quota": {"limit": 10}})).await;
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("quota: ") && message.contains("period"),
        "{v}"
    );
    // `{}` removes the quota.
    let (status, v) = patch(json!({"quota": {}})).await;
    assert_eq!((status, &v["quota"]), (200, &Value::Null), "{v}");
    assert_eq!(spend(&gw, secret).await.0, 200);
}

#[tokio::test]
async fn a_plan_quota_and_a_keys_own_persist_in_sqlite_across_a_restart() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "store:\n  kind: embedded\n  path: {}\n",
        dir.path().join("k.db").display()
    );
    let mut gw = gateway(&up, store).await;
    let (trial_id, trial) = key(&gw, &["--plan", "trial"]).await;
    let (own_id, own) = key(&gw, &["--plan", "trial", "--quota", "8/1d"]).await;
    assert_eq!(round_robin(&[&gw], &trial, 3).await, 3);
    assert_eq!(round_robin(&[&gw], &own, 6).await, 6);
    gw.restart().await;
    // The plan's 5/1h for the plan's key; the key's own 8/1d beats its plan's.
    assert_eq!(round_robin(&[&gw], &trial, 4).await, 2);
    assert_eq!(round_robin(&[&gw], &own, 4).await, 2);
    let shown = shown_quota(&gw, &trial_id).await;
    assert_eq!(shown["plan"], "trial", "{shown}");
    assert_eq!(
        (shown["limit"].as_u64(), shown["remaining"].as_u64()),
        (Some(5), Some(0))
    );
    let shown = shown_quota(&gw, &own_id).await;
    assert_eq!(
        (shown["limit"].as_u64(), shown["remaining"].as_u64()),
        (Some(8), Some(0))
    );
    assert!(shown.get("plan").is_none(), "{shown}");
}

/// Redis stops after a key with a quota took its first lease: `closed` (the default)
/// serves what the lease holds, then 503; `open` serves on, uncounted. Returns how many
/// of 30 requests were served, and the last answer.
async fn with_redis_down(fail: &str) -> (usize, (u16, Option<u64>, String)) {
    let mut redis = RedisServer::start();
    let up = Upstream::start().await;
    let store = format!("{}{fail}", support::redis_store(&redis.url()));
    let gw = gateway(&up, store).await;
    let (_, secret) = key(&gw, &["--quota", "1000/1d"]).await;
    let (_, plain) = key(&gw, &[]).await;
    assert_eq!(spend(&gw, &secret).await.0, 200, "takes a lease of 10");
    assert_eq!(spend(&gw, &plain).await.0, 200, "cached");
    redis.stop();
    let mut served = 0;
    let mut last = (0, None, String::new());
    for _ in 0..30 {
        last = spend(&gw, &secret).await;
        if last.0 == 200 {
            served += 1;
        }
    }
    // A key without a quota is not held up by the quota's store (its record is cached).
    assert_eq!(spend(&gw, &plain).await.0, 200);
    (served, last)
}

#[tokio::test]
async fn with_redis_down_a_quota_key_is_served_from_its_lease_then_refused_503() {
    let (served, last) = with_redis_down("").await;
    assert!(
        (8..=14).contains(&served),
        "served {served} from the lease (a batch of 10, less one, plus at most a top-up)"
    );
    assert_eq!((last.0, last.2.as_str()), (503, "auth_unavailable"));
}

#[tokio::test]
async fn with_quotas_fail_open_a_quota_key_is_served_uncounted_while_redis_is_down() {
    let (served, last) = with_redis_down("  quotas_fail: open\n").await;
    assert_eq!((served, last.0), (30, 200));
}

#[tokio::test]
async fn only_the_operator_sets_a_quota_and_keys_an_api_key_mints_spend_its_own() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let gw = gateway(&up, support::redis_store(&redis.url())).await;
    let post = |who: As<'static>, body: Value| {
        let gw = &gw;
        async move { call(gw, reqwest::Method::POST, "/v1/keys", who, Some(body)).await }
    };
    let (status, v) = post(
        As::Token(TOKEN),
        json!({"name": "tenant", "user_id": "boss", "business_id": "acme",
               "scopes": ["keygate:admin", "items:read"], "locations": ["*"],
               "quota": {"credits": 4}}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let tenant_id = v["id"].as_str().unwrap().to_owned();
    let admin: &'static str = Box::leak(v["key"].as_str().unwrap().to_owned().into_boxed_str());
    let minted = json!({"name": "n", "user_id": "ann", "business_id": "acme",
                        "scopes": ["items:read"], "locations": ["*"]});
    let (status, v) = post(
        As::Key(admin),
        json!({"name": "n", "user_id": "ann", "business_id": "acme", "quota": {"credits": 99}}),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(
        v["error"]["message"],
        "quota: only the operator (the admin token or the CLI) sets a key's quota; an \
         admin-API key's keys spend its own"
    );
    let (status, one) = post(As::Key(admin), minted.clone()).await;
    assert_eq!(
        (status, &one["quota"]),
        (201, &json!({"credits": 4})),
        "{one}"
    );
    let (_, two) = post(As::Key(admin), minted).await;
    let id = one["id"].as_str().unwrap().to_owned();
    let (one, two) = (one["key"].as_str().unwrap(), two["key"].as_str().unwrap());
    // Two minted keys and the tenant's own draw on the one set of 4 credits.
    assert_eq!(round_robin(&[&gw], one, 2).await, 2);
    assert_eq!(round_robin(&[&gw], two, 1).await, 1);
    assert_eq!(round_robin(&[&gw], admin, 1).await, 1);
    assert_eq!(spend(&gw, two).await.0, 429, "minting keys adds no quota");
    let (status, v) = call(
        &gw,
        reqwest::Method::PATCH,
        &format!("/v1/keys/{id}"),
        As::Key(admin),
        Some(json!({"quota": {"credits": 100}})),
    )
    .await;
    assert_eq!(status, 403, "{v}");

    // The operator refills the tenant's credits: its keys share the refill, one count.
    let (status, v) = call(
        &gw,
        reqwest::Method::PATCH,
        &format!("/v1/keys/{tenant_id}"),
        As::Token(TOKEN),
        Some(json!({"quota": {"credits": 3}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        shown_quota(&gw, &id).await["remaining"],
        3,
        "the minted key's too"
    );
    assert_eq!(round_robin(&[&gw], one, 2).await, 2);
    assert_eq!(round_robin(&[&gw], two, 1).await, 1);
    assert_eq!(spend(&gw, admin).await.0, 429, "three shared credits spent");

    // Keys minted before their creator had a quota get it when it is set.
    let (_, v) = post(
        As::Token(TOKEN),
        json!({"name": "tenant2", "user_id": "boss", "business_id": "acme",
               "scopes": ["keygate:admin", "items:read"], "locations": ["*"]}),
    )
    .await;
    let (second_id, tenant2) = (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap(),
    );
    let tenant2: &'static str = Box::leak(tenant2.to_owned().into_boxed_str());
    let (_, early) = post(
        As::Key(tenant2),
        json!({"name": "early", "user_id": "ann", "business_id": "acme",
               "scopes": ["items:read"], "locations": ["*"]}),
    )
    .await;
    assert_eq!(early["quota"], Value::Null);
    let (status, v) = call(
        &gw,
        reqwest::Method::PATCH,
        &format!("/v1/keys/{second_id}"),
        As::Token(TOKEN),
        Some(json!({"quota": {"limit": 2, "period": "1d"}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let early = early["key"].as_str().unwrap();
    assert_eq!(round_robin(&[&gw], early, 1).await, 1);
    assert_eq!(round_robin(&[&gw], tenant2, 1).await, 1);
    assert_eq!(
        spend(&gw, early).await.0,
        429,
        "a key minted before the quota spends it too"
    );
}
