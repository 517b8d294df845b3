//! Usage (issue 20): a known mix of allowed and refused requests through two real
//! gateways on one real `redis-server`, counted per key and per business, by outcome and
//! hour; flushed on SIGTERM (nothing lost), then read through the admin API and the CLI.

use serde_json::{Value, json};

use crate::admin::{As, TOKEN, call};
use crate::support::{self, Gateway, Options, RedisServer, Upstream, client};

const POLICY: &str = "version: 1
scopes:
  items:read: Read items
  reports:read: Read reports
routes:
  - name: items
    path: /v1/items
    scopes: [items:read]
  - name: reports
    path: /v1/reports
    scopes: [reports:read]
  - name: limited
    path: /v1/limited
    scopes: [items:read]
    rate_limit: 2/h
default: deny
";

async fn gateway(up: &Upstream, redis: &RedisServer) -> Gateway {
    Gateway::start_with(
        up,
        Options {
            policy: POLICY,
            store_yaml: Some(support::redis_store(&redis.url())),
            admin_token: Some(TOKEN),
            ..Options::default()
        },
    )
    .await
}

async fn key(gw: &Gateway, user: &str, business: &str) -> (String, String) {
    gw.create_key(&[
        "--name",
        "u",
        "--user",
        user,
        "--business",
        business,
        "--location",
        "*",
        "--scope",
        "items:read",
    ])
    .await
}

/// `n` GETs of `path` with `key`; every status must be `want`.
async fn send(gw: &Gateway, path: &str, key: &str, n: usize, want: &[u16]) {
    for i in 0..n {
        let status = client()
            .get(gw.url(path))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, want[i.min(want.len() - 1)], "{path} #{i}");
    }
}

async fn usage(gw: &Gateway, path: &str, who: As<'_>) -> (u16, Value) {
    call(gw, reqwest::Method::GET, path, who, None).await
}

/// (allowed, refused, refusals summed over the buckets) of an answer.
fn totals(v: &Value) -> (u64, u64, Value) {
    let mut refusals = serde_json::Map::new();
    for b in v["buckets"].as_array().unwrap() {
        for (code, n) in b["refusals"].as_object().unwrap() {
            let sum = refusals.get(code).and_then(Value::as_u64).unwrap_or(0) + n.as_u64().unwrap();
            refusals.insert(code.clone(), sum.into());
        }
    }
    (
        v["allowed"].as_u64().unwrap(),
        v["refused"].as_u64().unwrap(),
        Value::Object(refusals),
    )
}

#[tokio::test]
async fn counts_through_two_gateways_match_exactly_after_the_flush() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let mut one = gateway(&up, &redis).await;
    let mut two = gateway(&up, &redis).await;
    let (a_id, a) = key(&one, "ann", "acme").await;
    let (b_id, b) = key(&one, "bob", "acme").await;
    let (_, c) = key(&one, "cat", "globex").await;

    send(&one, "/v1/items", &a, 5, &[200]).await;
    send(&one, "/v1/reports", &a, 2, &[403]).await;
    send(&two, "/v1/limited", &a, 3, &[200, 200, 429]).await;
    send(&two, "/v1/items", &b, 4, &[200]).await;
    send(&one, "/v1/items", &c, 1, &[200]).await;
    send(&one, "/v1/items", "kg_not-a-key", 2, &[401]).await; // nobody's: not counted

    // SIGTERM flushes what is pending: nothing counted is lost.
    one.restart().await;
    two.signal("TERM");
    two.wait().await;

    let (status, v) = usage(&one, &format!("/v1/keys/{a_id}/usage"), As::Token(TOKEN)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["granularity"], "hour");
    assert_eq!(
        v["buckets"].as_array().unwrap().len(),
        168,
        "7 days of hours, empty ones too"
    );
    assert_eq!(
        totals(&v),
        (7, 3, json!({"insufficient_scope": 2, "rate_limited": 1}))
    );
    let (_, v) = usage(
        &one,
        &format!("/v1/keys/{b_id}/usage?granularity=day"),
        As::Token(TOKEN),
    )
    .await;
    assert_eq!(v["buckets"].as_array().unwrap().len(), 7);
    assert_eq!(totals(&v), (4, 0, json!({})));
    let (_, v) = usage(
        &one,
        "/v1/usage?business_id=acme&granularity=day",
        As::Token(TOKEN),
    )
    .await;
    assert_eq!(
        totals(&v),
        (11, 3, json!({"insufficient_scope": 2, "rate_limited": 1})),
        "a business's usage is its keys' together"
    );
    let (_, v) = usage(&one, "/v1/usage?business_id=globex", As::Token(TOKEN)).await;
    assert_eq!(totals(&v).0, 1);

    // The CLI prints the same, as a table.
    let out = one.cli(&["keys", "usage", &a_id]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let total = table.lines().last().unwrap();
    assert_eq!(
        total.split_whitespace().collect::<Vec<_>>(),
        ["total", "7", "3"],
        "{table}"
    );
    assert!(
        table.contains("insufficient_scope=2 rate_limited=1"),
        "{table}"
    );
}

#[tokio::test]
async fn usage_is_reached_as_records_are_and_bad_ranges_name_their_field() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let gw = gateway(&up, &redis).await;
    let (_, admin) = gw
        .create_key(&[
            "--name",
            "a",
            "--user",
            "boss",
            "--business",
            "acme",
            "--scope",
            "keygate:admin",
        ])
        .await;
    let (_, own) = gw
        .create_key(&[
            "--name",
            "s",
            "--user",
            "ann",
            "--business",
            "acme",
            "--scope",
            "keygate:self",
        ])
        .await;
    let (other_id, _) = key(&gw, "zed", "globex").await;
    let (mine_id, _) = key(&gw, "ann", "acme").await;
    let get = |path: String, who| {
        let gw = &gw;
        async move { usage(gw, &path, who).await.0 }
    };
    assert_eq!(
        get(format!("/v1/keys/{other_id}/usage"), As::Key(&admin)).await,
        404
    );
    assert_eq!(
        get(format!("/v1/keys/{mine_id}/usage"), As::Key(&admin)).await,
        200
    );
    assert_eq!(
        get(format!("/v1/keys/{mine_id}/usage"), As::Key(&own)).await,
        200
    );
    assert_eq!(
        get("/v1/usage".to_owned(), As::Key(&admin)).await,
        200,
        "its own business"
    );
    assert_eq!(
        get("/v1/usage?business_id=globex".to_owned(), As::Key(&admin)).await,
        404
    );
    assert_eq!(get("/v1/usage".to_owned(), As::Key(&own)).await, 403);
    assert_eq!(get("/v1/usage".to_owned(), As::Nobody).await, 401);
    for (query, field) in [
        ("granularity=week", "granularity"),
        ("from=yesterday", "from"),
        ("from=2020-01-01T00:00:00Z", "from"),
        ("from=2030-01-01T00:00:00Z&to=2029-01-01T00:00:00Z", "from"),
        ("bucket=1", "bucket"),
    ] {
        let (status, v) = usage(
            &gw,
            &format!("/v1/usage?business_id=acme&{query}"),
            As::Token(TOKEN),
        )
        .await;
        assert_eq!(status, 400, "{query}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{query}: {v}");
    }
    let (status, v) = usage(&gw, "/v1/usage", As::Token(TOKEN)).await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("business_id"),
        "{v}"
    );
}
