//! What operators read: JSON access logs and Prometheus metrics after real traffic.

use serde_json::Value;

use crate::support::{Gateway, Options, Upstream, client};

#[tokio::test]
async fn every_stderr_line_is_json_and_each_request_logs_one_line_without_secrets() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await; // the test config sets log.format: json
    let (id, key) = gw.key_with_scopes(&["items:read"]).await;
    let c = client();
    assert_eq!(
        c.get(gw.url("/v1/items/1"))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gw.url("/v1/reports"))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        c.get(gw.url("/v1/items/1"))
            .header("X-API-Key", "kg_junk")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let is_access = |l: &str| l.contains("\"message\":\"request\"");
    let lines = gw.stderr_until(3, is_access).await;
    for line in &lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.is_object());
        assert!(!line.contains(&key[3..]), "a secret was logged: {line}");
    }
    let access: Vec<Value> = lines
        .iter()
        .filter(|l| is_access(l))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(access.len(), 3, "one line per request");
    for field in [
        "ts",
        "method",
        "path",
        "route",
        "status",
        "code",
        "key_id",
        "business_id",
        "duration_ms",
        "upstream_status",
    ] {
        assert!(
            access.iter().all(|a| a.get(field).is_some()),
            "missing {field}: {access:#?}"
        );
    }
    let ok = &access[0];
    assert_eq!(
        (
            ok["method"].as_str(),
            ok["path"].as_str(),
            ok["route"].as_str()
        ),
        (Some("GET"), Some("/v1/items/1"), Some("items"))
    );
    assert_eq!(
        (ok["status"].as_u64(), ok["upstream_status"].as_u64()),
        (Some(200), Some(200))
    );
    assert_eq!(
        (ok["key_id"].as_str(), ok["business_id"].as_str()),
        (Some(id.as_str()), Some("acme"))
    );
    assert_eq!(access[1]["code"], "insufficient_scope");
    assert_eq!(
        (access[2]["status"].as_u64(), access[2]["code"].as_str()),
        (Some(401), Some("invalid_api_key"))
    );
    assert!(access[0]["ts"].as_str().unwrap().ends_with('Z'));
}

/// `KEYGATE_WORKERS=1` (what a gateway pinned to one CPU gets): the single-threaded
/// scheduler serves, its batched log lines reach stderr without more traffic to push
/// them, in order, and SIGTERM still ends it cleanly.
#[tokio::test]
async fn one_worker_serves_and_its_log_lines_arrive_unprompted() {
    let up = Upstream::start().await;
    let mut gw = Gateway::start_with(
        &up,
        Options {
            workers: Some(1),
            ..Options::default()
        },
    )
    .await;
    let serving = gw.stderr_until(1, |l| l.contains("keygate serving")).await;
    let serving: Value = serde_json::from_str(serving.last().unwrap()).unwrap();
    assert_eq!(
        (serving["workers"].as_u64(), serving["scheduler"].as_str()),
        (Some(1), Some("CurrentThread")),
        "{serving}"
    );
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    let c = client();
    for n in 1..=3 {
        let resp = c
            .get(gw.url(&format!("/v1/items/{n}")))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let is_access = |l: &str| l.contains("\"message\":\"request\"");
    let lines = gw.stderr_until(3, is_access).await;
    let paths: Vec<String> = lines
        .iter()
        .filter(|l| is_access(l))
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(paths, ["/v1/items/1", "/v1/items/2", "/v1/items/3"]);
    gw.signal("TERM");
    assert!(gw.wait().await.success());
}

/// A counter's value (counters and histogram counts print as integers).
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_are_registered_at_start_and_move_with_traffic() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let scrape = || async {
        client()
            .get(gw.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    for name in [
        "keygate_requests_total",
        "keygate_request_duration_seconds",
        "keygate_cache_hits_total",
        "keygate_cache_misses_total",
        "keygate_store_errors_total",
        "keygate_policy_reloads_total",
        "keygate_upstream_duration_seconds",
    ] {
        assert!(
            before.lines().any(|l| l.starts_with(name)),
            "{name} is not registered at start:\n{before}"
        );
    }
    assert_eq!(sample(&before, "keygate_cache_hits_total"), 0);

    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(
            c.get(gw.url("/v1/items/1"))
                .header("X-API-Key", &key)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        c.get(gw.url("/v1/reports"))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let after = scrape().await;
    assert_eq!(
        sample(
            &after,
            "keygate_requests_total{route=\"items\",status=\"200\"}"
        ),
        3
    );
    assert_eq!(
        sample(
            &after,
            "keygate_requests_total{route=\"reports\",status=\"403\"}"
        ),
        1
    );
    // Four keyed look-ups: the first misses; the key's own create-invalidation may land
    // after it and cost one more miss, so only the total and the first miss are exact.
    let (hits, misses) = (
        sample(&after, "keygate_cache_hits_total"),
        sample(&after, "keygate_cache_misses_total"),
    );
    assert_eq!(hits + misses, 4, "hits {hits} + misses {misses}");
    assert!((1..=2).contains(&misses), "misses {misses}");
    assert_eq!(
        sample(
            &after,
            "keygate_request_duration_seconds_count{route=\"items\"}"
        ),
        3
    );
    assert_eq!(
        sample(
            &after,
            "keygate_upstream_duration_seconds_count{route=\"items\"}"
        ),
        3
    );
    assert!(
        !after.contains("/v1/items/1") && !after.contains(&key[3..]),
        "labels are bounded: no paths, no keys"
    );
}

/// Writes a key straight into the gateway's embedded store, created `age` seconds ago and
/// expiring in `left` seconds: the CLI only makes keys whose lifetime starts now.
async fn aged_key(gw: &Gateway, age: i64, left: i64) -> (String, String) {
    use keygate::keys::{self, KeyRecord, Timestamp};
    use keygate::store::KeyStore;
    let store = keygate::store::embedded::EmbeddedStore::open(
        &gw.config.parent().unwrap().join("keygate.db"),
    )
    .unwrap();
    let secret = keys::generate("kg_");
    let now = Timestamp::now().0;
    let record = KeyRecord {
        identity: keygate::headers::Memo::default(),
        id: keys::new_id("kg_"),
        hash: secret.hash(),
        name: "aged".to_owned(),
        description: String::new(),
        prefix: keys::display_prefix(&secret, "kg_"),
        user_id: "u".to_owned(),
        business_id: "acme".to_owned(),
        scopes: vec!["items:read".to_owned()],
        locations: vec!["*".to_owned()],
        grants: vec![],
        created_at: Timestamp(now - age),
        expires_at: Some(Timestamp(now + left)),
        revoked_at: None,
        last_used_at: None,
        created_by: "test".to_owned(),
        enabled: true,
        metadata: keygate::keys::Metadata::new(),
        allowed_ips: Vec::new(),
        updated_at: None,
        limits: keygate::keys::KeyLimits::new(),
        plan: None,
        quota: None,
        quota_counter: String::new(),
    };
    store.insert(&record).await.unwrap();
    (record.id, secret.expose().to_owned())
}

#[tokio::test]
async fn a_key_in_the_last_tenth_of_its_lifetime_is_logged_once_and_counted() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await; // default cap: 7 days
    // A fresh 2-day key is well inside the 7-day cap but has 100 % of its lifetime left:
    // no warning at its first use.
    let (fresh_id, fresh) = gw
        .create_key(&[
            "--name",
            "nightly",
            "--user",
            "u",
            "--business",
            "acme",
            "--scope",
            "items:read",
            "--expires",
            "2d",
        ])
        .await;
    let (_, later) = gw
        .create_key(&[
            "--name",
            "yearly",
            "--user",
            "u",
            "--business",
            "acme",
            "--scope",
            "items:read",
            "--expires",
            "1y",
        ])
        .await;
    // 20 days old, 1 day left: in its last tenth (2.1 days) and within the cap.
    let (aged_id, aged) = aged_key(&gw, 20 * 86_400, 86_400).await;
    let c = client();
    for key in [&fresh, &later, &aged, &aged] {
        assert_eq!(
            c.get(gw.url("/v1/items/1"))
                .header("X-API-Key", key)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let is_warning = |l: &str| l.contains("expires soon");
    let is_access = |l: &str| l.contains("\"status\":200");
    // Each request's warning is logged before its access line: once all four access lines
    // are in, every warning there will be is in too.
    let lines = gw.stderr_until(4, is_access).await;
    let lines = if lines.iter().any(|l| is_warning(l)) {
        lines
    } else {
        gw.stderr_until(1, is_warning).await
    };
    let warnings: Vec<&String> = lines.iter().filter(|l| is_warning(l)).collect();
    assert_eq!(
        warnings.len(),
        1,
        "once, for the aged key only: {warnings:#?}"
    );
    assert!(
        warnings[0].contains(&aged_id)
            && !warnings[0].contains(&fresh_id)
            && !warnings[0].contains(&aged[3..]),
        "{}",
        warnings[0]
    );
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sample(&text, "keygate_keys_expiring_soon"), 1);
}
