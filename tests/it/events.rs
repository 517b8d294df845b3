//! Key events and webhooks (issue 20): real gateways, a real receiver (an HTTP server in
//! the test), real `redis-server` or `SQLite` stores. Each event arrives once, signed
//! (checked here with an independent HMAC), in order; a receiver that is down, and a
//! gateway restarted meanwhile, lose nothing; refusals send one event per window across
//! a fleet; `keygate events test` sends a signed test event.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::admin::{As, TOKEN, call};
use crate::support::webhook::{Received, Receiver, free_addr, url_at};
use crate::support::{self, Gateway, Options, RedisServer, Upstream, client};

const SECRET: &str = "whsec_test_0123456789abcdef";

const POLICY: &str = "version: 1
scopes:
  items:read: Read items
routes:
  - name: items
    path: /v1/items
    scopes: [items:read]
    rate_limit: 2/h
  - name: things
    path: /v1/things
    scopes: [items:read]
default: deny
";

/// How long a delivery may take to arrive in these tests (they need well under it).
const ARRIVES: Duration = Duration::from_secs(30);

fn events_yaml(url: &str, only: Option<&str>) -> String {
    let only = only.map_or_else(String::new, |o| format!("      events: [{o}]\n"));
    format!("events:\n  webhooks:\n    - url: {url}\n      secret_env: KG_HOOK_SECRET\n{only}")
}

async fn gateway(up: &Upstream, store: Option<String>, events: &str) -> Gateway {
    Gateway::start_with(
        up,
        Options {
            policy: POLICY,
            store_yaml: store,
            extra: events,
            admin_token: Some(TOKEN),
            env: vec![("KG_HOOK_SECRET", SECRET.to_owned())],
            ..Options::default()
        },
    )
    .await
}

/// A key of business `acme` made by the CLI (another process than the gateway); (id, secret).
async fn key(gw: &Gateway, name: &str, more: &[&str]) -> (String, String) {
    let mut args = vec![
        "--name",
        name,
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

/// Checks `Keygate-Signature` the way the README tells receivers to; panics if wrong.
fn verify(r: &Received) {
    let header = r.header("keygate-signature").expect("a signature header");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature header {header:?} is not t=…,v1=…"));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    mac.verify_slice(&hex::decode(v1).unwrap())
        .unwrap_or_else(|_| {
            panic!(
                "bad signature {header} for {}",
                String::from_utf8_lossy(&r.body)
            )
        });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t: u64 = t.parse().unwrap();
    assert!(now.abs_diff(t) < 300, "signed at {t}, now {now}");
}

/// Checks every delivery is signed, carries no key hash, and names itself in its
/// headers; returns the bodies.
fn bodies(got: &[Received]) -> Vec<Value> {
    got.iter()
        .map(|r| {
            verify(r);
            let v = r.json();
            assert_eq!(r.header("keygate-event-id"), v["id"].as_str());
            assert_eq!(r.header("keygate-event-type"), v["type"].as_str());
            assert_eq!(r.header("content-type"), Some("application/json"));
            let text = String::from_utf8_lossy(&r.body);
            assert!(!text.contains("\"hash\""), "a key hash in {text}");
            v
        })
        .collect()
}

fn types(bodies: &[Value]) -> Vec<&str> {
    bodies.iter().map(|b| b["type"].as_str().unwrap()).collect()
}

fn seq(body: &Value) -> u64 {
    body["id"]
        .as_str()
        .unwrap()
        .strip_prefix("evt_")
        .unwrap()
        .parse()
        .unwrap()
}

async fn recent(gw: &Gateway) -> Vec<Value> {
    let (status, v) = call(
        gw,
        reqwest::Method::GET,
        "/v1/events?limit=50",
        As::Token(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["events"].as_array().unwrap().clone()
}

/// Polls `GET /v1/events` (at most 20 s) until `done` holds for the answer.
async fn recent_until(gw: &Gateway, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = std::time::Instant::now();
    loop {
        let events = recent(gw).await;
        if done(&events) {
            return events;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the README's Python `verify` (the first `python` block under "## Webhooks") on
/// one delivery; what it printed.
async fn readme_verify(header: &str, body: &[u8]) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## Webhooks").expect("README has ## Webhooks")..];
    let code = section
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a python block under ## Webhooks");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body"), body).unwrap();
    let script = format!(
        "{code}\nimport sys\nprint(verify(sys.argv[1].encode(), sys.argv[2], open(sys.argv[3], 'rb').read()))\n"
    );
    let out = tokio::process::Command::new(support::venv_bin("python"))
        .args(["-c", &script, SECRET, header])
        .arg(dir.path().join("body"))
        .output()
        .await
        .expect("target/venv/bin/python (make test creates it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_webhook_hears_each_change_once_signed_and_in_order() {
    let hook = Receiver::start().await;
    let up = Upstream::start().await;
    let gw = gateway(&up, None, &events_yaml(&hook.url(), None)).await;
    let (id, _) = key(&gw, "first", &[]).await;
    let path = format!("/v1/keys/{id}");
    let (status, v) = call(
        &gw,
        reqwest::Method::PATCH,
        &path,
        As::Token(TOKEN),
        Some(json!({"description": "for the shop"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = call(
        &gw,
        reqwest::Method::POST,
        &format!("{path}/rotate"),
        As::Token(TOKEN),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let new_id = v["id"].as_str().unwrap().to_owned();
    let (status, v) = call(
        &gw,
        reqwest::Method::DELETE,
        &format!("/v1/keys/{new_id}"),
        As::Token(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 204, "{v}");

    let got = bodies(&hook.wait_for(4, ARRIVES).await);
    assert_eq!(
        types(&got),
        ["key.created", "key.updated", "key.rotated", "key.revoked"]
    );
    assert!(
        got.windows(2).all(|w| seq(&w[0]) < seq(&w[1])),
        "in order: {got:#?}"
    );
    assert_eq!(got[0]["key"]["id"], id.as_str());
    assert_eq!(got[0]["key"]["name"], "first");
    assert_eq!(got[1]["key"]["description"], "for the shop");
    assert_eq!(got[1]["data"]["fields"], json!(["description"]));
    assert_eq!(got[2]["key"]["id"], new_id.as_str());
    assert_eq!(got[2]["data"]["previous_key_id"], id.as_str());
    assert_eq!(got[3]["key"]["id"], new_id.as_str());
    assert_eq!(got[3]["key"]["status"], "revoked");

    // The admin API shows each delivered at the first attempt, newest first.
    let shown = recent_until(&gw, "all four delivered", |e| {
        e.len() >= 4
            && e[..4]
                .iter()
                .all(|x| x["deliveries"][0]["status"] == "delivered")
    })
    .await;
    let shown_types: Vec<&str> = shown[..4]
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        shown_types,
        ["key.revoked", "key.rotated", "key.updated", "key.created"]
    );
    for e in &shown[..4] {
        let d = &e["deliveries"][0];
        assert_eq!(d["url"], hook.url().as_str());
        assert_eq!(d["attempts"], 1, "{e}");
        assert_eq!(d["response_status"], 200, "{e}");
    }

    // The README's verification example accepts a real delivery and refuses a forged one.
    let received = hook.received();
    let header = received[0].header("keygate-signature").unwrap();
    assert_eq!(readme_verify(header, &received[0].body).await, "True");
    assert_eq!(readme_verify(header, b"{\"forged\": true}").await, "False");

    // Once each: the next event is the next to arrive, nothing resent before it.
    let (other, _) = key(&gw, "second", &[]).await;
    let got = bodies(&hook.wait_for(5, ARRIVES).await);
    assert_eq!(got.len(), 5, "{got:#?}");
    assert_eq!(got[4]["type"], "key.created");
    assert_eq!(got[4]["key"]["id"], other.as_str());
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_every_event_in_order_across_a_gateway_restart() {
    let redis = RedisServer::start();
    let addr = free_addr().await;
    let up = Upstream::start().await;
    let mut gw = gateway(
        &up,
        Some(support::redis_store(&redis.url())),
        &events_yaml(&url_at(addr), None),
    )
    .await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(key(&gw, name, &[]).await.0);
    }
    let pending = recent_until(&gw, "the receiver is down: a failed attempt", |e| {
        e.iter().any(|x| {
            x["deliveries"][0]["status"] == "pending" && x["deliveries"][0]["error"].is_string()
        })
    })
    .await;
    assert!(
        pending
            .iter()
            .all(|e| e["deliveries"][0]["status"] != "delivered"),
        "{pending:#?}"
    );

    // Queued events live in the store: a restart resumes them.
    gw.restart().await;
    for name in ["d", "e"] {
        ids.push(key(&gw, name, &[]).await.0);
    }
    let hook = Receiver::start_at(addr).await;
    let got = bodies(&hook.wait_for(5, ARRIVES).await);
    let keys: Vec<&str> = got
        .iter()
        .map(|b| b["key"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ids, "every event, in order: {got:#?}");
    assert_eq!(types(&got), ["key.created"; 5]);

    // Each once: the next event arrives next.
    let out = gw.cli(&["keys", "revoke", &ids[0]]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = bodies(&hook.wait_for(6, ARRIVES).await);
    assert_eq!(got.len(), 6, "{got:#?}");
    assert_eq!(got[5]["type"], "key.revoked");
}

/// `n` GETs of `path` with `key`, alternating between `gateways`; the statuses.
async fn hammer(gateways: &[&Gateway], path: &str, key: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let resp = client()
            .get(gateways[i % gateways.len()].url(path))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn refusals_and_expiry_send_one_event_per_key_and_window_across_a_fleet() {
    let redis = RedisServer::start();
    let hook = Receiver::start().await;
    let up = Upstream::start().await;
    let store = support::redis_store(&redis.url());
    let events = events_yaml(
        &hook.url(),
        Some("key.rate_limited, key.quota_exceeded, key.expiring, key.revoked"),
    );
    let a = gateway(&up, Some(store.clone()), &events).await;
    let b = gateway(&up, Some(store), &events).await;
    let (limited, limited_secret) = key(&a, "limited", &[]).await;
    let (quota, quota_secret) = key(&a, "quota", &["--quota", "2/1d"]).await;
    let (soon, soon_secret) = key(&a, "soon", &["--expires", "1h"]).await;
    // `soon` has lived 23 of its 24 hours: inside its expiry warning (the last tenth).
    let record = format!(
        "kg:key:{{{}}}",
        hex::encode(Sha256::digest(soon_secret.as_bytes()))
    );
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 23 * 3600;
    redis.cli(&["HSET", &record, "created_at", &created.to_string()]);

    let s = hammer(&[&a, &b], "/v1/items", &limited_secret, 10).await;
    assert_eq!(s.iter().filter(|&&c| c == 200).count(), 2, "{s:?}");
    assert!(s[2..].iter().all(|&c| c == 429), "{s:?}");
    let s = hammer(&[&a, &b], "/v1/things", &quota_secret, 10).await;
    assert_eq!(s.iter().filter(|&&c| c == 200).count(), 2, "{s:?}");
    let s = hammer(&[&a, &b], "/v1/things", &soon_secret, 4).await;
    assert!(s.iter().all(|&c| c == 200), "{s:?}");

    let queued = recent_until(&a, "three refusal and expiry events", |e| e.len() >= 3).await;
    let out = a.cli(&["keys", "revoke", &limited]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = bodies(&hook.wait_for(4, ARRIVES).await);
    assert_eq!(
        got.len(),
        4,
        "one event per key and window, then the revocation: {got:#?}"
    );
    let mut first_three: Vec<(String, String)> = got[..3]
        .iter()
        .map(|b| {
            (
                b["type"].as_str().unwrap().to_owned(),
                b["key"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    first_three.sort();
    assert_eq!(
        first_three,
        [
            ("key.expiring".to_owned(), soon.clone()),
            ("key.quota_exceeded".to_owned(), quota.clone()),
            ("key.rate_limited".to_owned(), limited.clone()),
        ],
        "{queued:#?}"
    );
    assert_eq!(got[3]["type"], "key.revoked");
    for secret in [&limited_secret, &quota_secret, &soon_secret] {
        assert!(
            got.iter().all(|b| !b.to_string().contains(secret.as_str())),
            "a secret in {got:#?}"
        );
    }
    let limited_event = got
        .iter()
        .find(|b| b["type"] == "key.rate_limited")
        .unwrap();
    assert_eq!(limited_event["data"]["route"], "items");
    assert_eq!(limited_event["data"]["limit"], "2/h");
    assert_eq!(limited_event["data"]["window_seconds"], 3600);
    let quota_event = got
        .iter()
        .find(|b| b["type"] == "key.quota_exceeded")
        .unwrap();
    assert!(
        quota_event["data"]["resets_at"].is_string(),
        "{quota_event}"
    );
}

#[tokio::test]
async fn events_test_sends_a_signed_test_event_and_says_what_went_wrong() {
    let hook = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(
        dir.path(),
        "http://127.0.0.1:9",
        &Options {
            extra: &events_yaml(&hook.url(), None),
            ..Options::default()
        },
    );
    // tokio's process: the receiver runs on this test's runtime while the command does.
    let run = async |args: Vec<String>, secret: Option<&str>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keygate"));
        cmd.args(["events", "test"])
            .args(&args)
            .arg("--config")
            .arg(&config);
        cmd.env_remove("KG_HOOK_SECRET");
        if let Some(s) = secret {
            cmd.env("KG_HOOK_SECRET", s);
        }
        cmd.output().await.unwrap()
    };
    // `keygate check` counts the webhook and warns that its secret is not set here.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .env_remove("KG_HOOK_SECRET")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("; 1 webhook)"), "{stdout}");
    assert!(
        stderr.contains("warning: events.webhooks[0].secret_env: KG_HOOK_SECRET is not set here"),
        "{stderr}"
    );

    let out = run(vec![hook.url()], Some(SECRET)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("delivered evt_test_") && stdout.contains(": 200"),
        "{stdout}"
    );
    let got = bodies(&hook.wait_for(1, ARRIVES).await);
    assert_eq!(got[0]["type"], "test");
    assert!(!stdout.contains(SECRET));

    let out = run(vec![hook.url()], None).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("KG_HOOK_SECRET is not set"), "{stderr}");

    let elsewhere = format!("http://{}/other", free_addr().await);
    let out = run(vec![elsewhere.clone()], Some(SECRET)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("not in events.webhooks") && stderr.contains("--secret-env"),
        "{stderr}"
    );

    let out = run(
        vec![
            elsewhere.clone(),
            "--secret-env".into(),
            "KG_HOOK_SECRET".into(),
        ],
        Some(SECRET),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!("cannot deliver to {elsewhere}")),
        "{stderr}"
    );
}
