//! The web console in real headless Chromium (`/usr/bin/chromium`), driven by the
//! Playwright scripts in `tests/console/` from the local virtualenv that `make test`
//! creates (`target/venv`). Screenshots land in `target/console-screenshots/`.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::support::{Gateway, Options, Upstream, client, venv_bin};

const TOKEN: &str = "console-test-token-9876543210";

/// Every view the main flow screenshots, at 1,280 and 420 px (`<view>-<width>.png`).
const VIEWS: [&str; 8] = [
    "sign-in",
    "key-list",
    "create-errors",
    "create-form",
    "show-once-dialog",
    "key-list-created",
    "key-detail",
    "audit-log",
];

/// Every view the edit flow screenshots, at 1,280 and 420 px.
const EDIT_VIEWS: [&str; 5] = [
    "create-metadata-errors",
    "key-list-disabled",
    "key-detail-metadata",
    "edit-dialog",
    "edit-errors",
];

/// A gateway with the admin token, after checking Chromium is there.
async fn console_gateway(up: &Upstream) -> Gateway {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: `make test` installs it (scripts/test-deps.sh)"
    );
    Gateway::start_with(
        up,
        Options {
            admin_token: Some(TOKEN),
            ..Options::default()
        },
    )
    .await
}

async fn create(gw: &Gateway, name: &str, user: &str, business: &str, scopes: &[&str]) {
    let resp = client()
        .post(gw.admin_url("/v1/keys"))
        .bearer_auth(TOKEN)
        .json(
            &json!({"name": name, "user_id": user, "business_id": business,
                      "scopes": scopes, "locations": ["hq"], "expires_in": "1y"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

/// `GET path` on the admin API with the token, as JSON.
async fn admin_get(gw: &Gateway, path: &str) -> serde_json::Value {
    let resp = client()
        .get(gw.admin_url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.json().await.unwrap()
}

/// Runs `tests/console/<script>` against `gw`; checks it passed and left a fresh
/// screenshot of each of `views` at both widths. Returns its stdout.
async fn run_flow(script: &str, gw: &Gateway, views: &[&str]) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shots = root.join("target/console-screenshots");
    // A stale screenshot must not pass for a new one.
    for view in views {
        for width in [1280, 420] {
            let _ = std::fs::remove_file(shots.join(format!("{view}-{width}.png")));
        }
    }
    let out = tokio::process::Command::new(venv_bin("python"))
        .arg(root.join("tests/console").join(script))
        .env("KEYGATE_ADMIN_URL", gw.admin_url(""))
        .env("KEYGATE_PROXY_URL", gw.url(""))
        .env("KEYGATE_TOKEN", TOKEN)
        .env("KEYGATE_SCREENSHOTS", &shots)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the console flow");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for view in views {
        for width in [1280, 420] {
            let shot = format!("{view}-{width}.png");
            assert!(shots.join(&shot).exists(), "no screenshot {shot}");
        }
    }
    stdout
}

#[tokio::test]
async fn console_signs_in_creates_shows_details_and_audit_and_revokes_in_chromium_at_1280_and_420_px()
 {
    let up = Upstream::start().await;
    let gw = console_gateway(&up).await;
    // A few keys already there, so the list looks like a real one.
    create(&gw, "billing export", "alice", "acme", &["reports:read"]).await;
    create(
        &gw,
        "warehouse scanner",
        "bob",
        "acme",
        &["items:read", "items:write"],
    )
    .await;
    create(&gw, "partner feed", "carol", "globex", &["items:read"]).await;
    run_flow("console_flow.py", &gw, &VIEWS).await;
}

#[tokio::test]
async fn console_suspends_resumes_and_edits_a_key_with_metadata_and_an_allowlist_in_chromium_at_1280_and_420_px()
 {
    let up = Upstream::start().await;
    let gw = console_gateway(&up).await;
    // Another, active key: the suspended one's status must look unlike it.
    create(&gw, "billing export", "alice", "acme", &["reports:read"]).await;
    let stdout = run_flow("edit_flow.py", &gw, &EDIT_VIEWS).await;
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("edited key: "))
        .expect("the flow names the key it edited");
    // What the console saved is what the admin API holds.
    let record: serde_json::Value = admin_get(&gw, &format!("/v1/keys/{id}")).await;
    assert_eq!(record["status"], "revoked", "{record}");
    assert_eq!(record["scopes"], json!(["items:read"]), "{record}");
    assert_eq!(
        record["metadata"],
        json!({"plan": "gold", "region": "eu", "team": "core-7"}),
        "{record}"
    );
    assert_eq!(record["allowed_ips"], json!([]), "{record}");
    assert_eq!(record["user_id"], "edit-user", "{record}");
    // The last request the proxy let through carried the edited metadata upstream.
    let seen = up.last();
    assert_eq!(seen.header("x-keygate-meta-region"), Some("eu"));
    assert_eq!(seen.header("x-keygate-meta-plan"), Some("gold"));
    // Every change is in the audit log, by name.
    let audit: serde_json::Value = admin_get(&gw, "/v1/audit?limit=100").await;
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["key_id"] == id)
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in ["created", "suspended", "resumed", "updated", "revoked"] {
        assert!(actions.contains(&action), "{action} missing: {actions:?}");
    }
}
