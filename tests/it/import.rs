//! `keygate keys import`: 10,000 keys in use elsewhere (keygate-shaped and foreign,
//! plaintext and hashed), then every one of them through the proxy; a dry run that
//! changes nothing; a second run that changes nothing; bad lines named, not fatal.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::support::{self, Gateway, Options, RedisServer, Upstream, client};

const LINES: usize = 10_000;

/// The import file and every secret in it: a quarter each of keygate-shaped plaintext,
/// foreign plaintext (Kong-style), and the SHA-256 of each kind. Three bad lines at the
/// end, numbered `LINES + 1..=LINES + 3`.
fn import_file() -> (String, Vec<String>) {
    let mut text = String::new();
    let mut secrets = Vec::with_capacity(LINES);
    for i in 0..LINES {
        let secret = if i % 2 == 0 {
            keygate::keys::generate("kg_").expose().to_owned()
        } else {
            format!("kong-{i:05}-{}", keygate::keys::generate("x").expose())
        };
        let owner = format!(
            r#""user_id": "u{}", "business_id": "acme", "scopes": ["items:read"], "locations": ["*"]"#,
            i % 7
        );
        if i % 4 < 2 {
            writeln!(
                text,
                r#"{{"key": "{secret}", "name": "imported {i}", {owner}}}"#
            )
            .unwrap();
        } else {
            let hex = keygate::keys::hash(&secret).to_hex();
            writeln!(
                text,
                r#"{{"sha256": "{hex}", {owner}, "metadata": {{"plan": "p{i}"}}}}"#
            )
            .unwrap();
        }
        secrets.push(secret);
    }
    text.push_str(r#"{"key": "kg_bad", "user_id": "u", "business_id": "acme", "scops": []}"#);
    text.push('\n');
    text.push_str(r#"{"sha256": "abc", "user_id": "u", "business_id": "acme"}"#);
    text.push('\n');
    text.push_str(r#"{"key": "no-owner-given"}"#);
    text.push('\n');
    (text, secrets)
}

/// How many of `secrets` the proxy serves (16 at a time).
async fn served(gw: &Gateway, secrets: &[String]) -> usize {
    let url = Arc::new(gw.url("/v1/items/1"));
    let c = client();
    let statuses = futures_util::stream::iter(secrets.iter().cloned())
        .map(|s| {
            let (c, url) = (c.clone(), Arc::clone(&url));
            async move {
                let r = c
                    .get(url.as_str())
                    .header("X-API-Key", s)
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            }
        })
        .buffer_unordered(16)
        .fold(BTreeMap::new(), |mut by_status, status| async move {
            *by_status.entry(status).or_insert(0usize) += 1;
            by_status
        })
        .await;
    // Whatever was not a 200 is shown with a failure (a 503 is the store's timeout).
    if statuses.len() > 1 || !statuses.contains_key(&200) {
        eprintln!("answers by status: {statuses:?}");
    }
    statuses.get(&200).copied().unwrap_or(0)
}

async fn imports_ten_thousand_keys(store_yaml: Option<String>) {
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &up,
        Options {
            store_yaml,
            extra: "keys:\n  accept_imported: true\n",
            ..Options::default()
        },
    )
    .await;
    let (text, secrets) = import_file();
    let file = gw.config.with_file_name("keys.jsonl");
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap();

    // A dry run checks every line and writes nothing.
    let dry = gw
        .cli(&["keys", "import", path, "--dry-run", "--json"])
        .await;
    let report = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(
        report.matches(r#""result":"would create""#).count(),
        LINES,
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let listed = gw.cli(&["keys", "list", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(0),
        "a dry run stores nothing"
    );

    // The real run: every good line created, the bad ones named by line and field,
    // exit status 1 because some failed.
    let run = gw.cli(&["keys", "import", path]).await;
    assert_eq!(run.status.code(), Some(1));
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        out.matches(": created kid_").count(),
        LINES,
        "{}",
        &out[..out.len().min(2000)]
    );
    for (line, says) in [
        (LINES + 1, "scops: unknown field (did you mean `scopes`?)"),
        (LINES + 2, "sha256: must be the 64 hex digits"),
        (LINES + 3, "user_id: is required"),
    ] {
        let want = format!("keys.jsonl:{line}: error: {says}");
        assert!(
            out.contains(&want),
            "{want} not in the tail: {}",
            &out[out.len().saturating_sub(1500)..]
        );
    }
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(&format!("created {LINES}, already there 0, failed 3")),
        "{stderr}"
    );
    for s in secrets.iter().take(200) {
        assert!(
            !out.contains(s.as_str()) && !stderr.contains(s.as_str()),
            "a secret was printed"
        );
    }

    // Every imported key works through the proxy; one carries its metadata upstream.
    assert_eq!(served(&gw, &secrets).await, LINES);
    let hashed = &secrets[2];
    assert_eq!(served(&gw, std::slice::from_ref(hashed)).await, 1);
    assert_eq!(up.last().header("x-keygate-meta-plan"), Some("p2"));

    // Idempotent: a second run finds every key already there.
    let again = gw.cli(&["keys", "import", path]).await;
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains(&format!("created 0, already there {LINES}, failed 3")),
        "{stderr}"
    );
}

#[tokio::test]
async fn ten_thousand_imported_keys_work_on_the_embedded_store() {
    imports_ten_thousand_keys(None).await;
}

#[tokio::test]
async fn ten_thousand_imported_keys_work_on_redis() {
    let redis = RedisServer::start();
    // 10,000 cold look-ups at 16 at a time, beside the other test binaries on two cores
    // and the gateway's own flushes: the tests' usual 300 ms store timeout is a latency
    // test this one is not (it is about imports), so a roomier one.
    let store = support::redis_store(&redis.url()).replace("timeout: 300ms", "timeout: 2s");
    imports_ten_thousand_keys(Some(store)).await;
}

/// Without `keys.accept_imported`, a plaintext key that keygate could not authenticate
/// is refused at import, saying which setting lets it in.
#[tokio::test]
async fn foreign_keys_need_accept_imported() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let file = gw.config.with_file_name("one.jsonl");
    std::fs::write(
        &file,
        format!(
            "{{\"key\": \"kong-secret-1\", \"user_id\": \"u\", \"business_id\": \"acme\"}}\n\
             {{\"sha256\": \"{}\", \"user_id\": \"u\", \"business_id\": \"acme\"}}\n",
            keygate::keys::hash("kong-secret-2").to_hex()
        ),
    )
    .unwrap();
    let out = gw.cli(&["keys", "import", file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("one.jsonl:1: error: key: is not shaped like a keygate key"),
        "{text}"
    );
    assert!(text.contains("keys.accept_imported: true"), "{text}");
    // A hash cannot be checked for shape: imported, with a note saying what that means.
    assert!(text.contains("one.jsonl:2: created kid_"), "{text}");
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(
        notes.contains("note: 1 line(s) gave only a sha256: with keys.accept_imported off"),
        "{notes}"
    );
}

/// "Already there" never hides a key that will not work: the same key twice in a file, a
/// key stored for another owner or revoked, and a key the proxy would read as two are
/// errors naming what is in the way; a byte-order mark and CRLF endings are fine.
#[tokio::test]
async fn an_import_says_what_is_in_the_way() {
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &up,
        Options {
            extra: "keys:\n  accept_imported: true\n",
            ..Options::default()
        },
    )
    .await;
    let (revoked_id, revoked) = gw.key_with_scopes(&["items:read"]).await;
    let out = gw.cli(&["keys", "revoke", &revoked_id]).await;
    assert!(out.status.success());
    let (_, theirs) = gw.key_with_scopes(&["items:read"]).await; // user u1 of acme
    let (_, mine) = gw.key_with_scopes(&["items:read"]).await;
    let line = |key: &str, user: &str| {
        format!(r#"{{"key": "{key}", "user_id": "{user}", "business_id": "acme"}}"#)
    };
    let text = [
        format!("\u{feff}{}", line("legacy-key-0000000001", "u9")),
        line("legacy-key-0000000001", "u8"),
        line(&revoked, "u1"),
        line(&theirs, "u2"),
        line("two,keys", "u9"),
        line(&mine, "u1"),
    ]
    .join("\r\n");
    let file = gw.config.with_file_name("mixed.jsonl");
    std::fs::write(&file, text).unwrap();
    let out = gw.cli(&["keys", "import", file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    for want in [
        "mixed.jsonl:1: created kid_",
        "mixed.jsonl:2: error: key: the same key as line 1",
        &format!("mixed.jsonl:3: error: key: already stored as {revoked_id}, which is revoked"),
        "mixed.jsonl:4: error: key: already stored as kid_",
        "for user `u1` of business `acme`, not for this line's owner",
        "mixed.jsonl:5: error: key: must be 1 to 512 visible ASCII characters without a comma",
        "mixed.jsonl:6: exists kid_",
    ] {
        assert!(report.contains(want), "{want} not in:\n{report}");
    }
    assert!(
        !report.contains("legacy-key-0000000001"),
        "a secret was printed"
    );
}

#[tokio::test]
async fn imported_lines_carry_quotas_and_a_bad_one_is_named() {
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &up,
        Options {
            extra: "keys:\n  accept_imported: true\n",
            ..Options::default()
        },
    )
    .await;
    let owner =
        r#""user_id": "u1", "business_id": "acme", "scopes": ["items:read"], "locations": ["*"]"#;
    let text = format!(
        "{{\"key\": \"legacy-quota-000000001\", {owner}, \"quota\": {{\"credits\": 2}}}}\n\
         {{\"key\": \"legacy-quota-000000002\", {owner}, \"quota\": {{\"limit\": 3}}}}\n"
    );
    let file = gw.config.with_file_name("quota.jsonl");
    std::fs::write(&file, text).unwrap();
    let out = gw.cli(&["keys", "import", file.to_str().unwrap()]).await;
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("quota.jsonl:1: created kid_"), "{report}");
    assert!(
        report.contains("quota.jsonl:2: error: quota: needs a `period`"),
        "{report}"
    );
    let key = "legacy-quota-000000001".to_owned();
    let twice = [key.clone(), key.clone(), key];
    // Two credits: the first two served, the third refused.
    assert_eq!(served(&gw, &twice[..2]).await, 2);
    assert_eq!(served(&gw, &twice[2..]).await, 0);
}
