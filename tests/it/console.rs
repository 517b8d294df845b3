//! The web console in real headless Chromium (`/usr/bin/chromium`), driven by the
//! Playwright script `tests/console/console_flow.py` from the local virtualenv that
//! `make test` creates (`target/venv`). Screenshots land in `target/console-screenshots/`.

use std::path::PathBuf;

use serde_json::json;

use crate::support::{Gateway, Options, Upstream, client, venv_bin};

const TOKEN: &str = "console-test-token-9876543210";

/// Every view the flow screenshots, at 1,280 and 420 px (`<view>-<width>.png`).
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

#[tokio::test]
async fn console_signs_in_creates_shows_details_and_audit_and_revokes_in_chromium_at_1280_and_420_px()
 {
    let python = venv_bin("python");
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: `make test` installs it (scripts/test-deps.sh)"
    );
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &up,
        Options {
            admin_token: Some(TOKEN),
            ..Options::default()
        },
    )
    .await;
    // A few keys already there, so the list looks like a real one.
    for (name, user, business, scopes) in [
        ("billing export", "alice", "acme", vec!["reports:read"]),
        (
            "warehouse scanner",
            "bob",
            "acme",
            vec!["items:read", "items:write"],
        ),
        ("partner feed", "carol", "globex", vec!["items:read"]),
    ] {
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
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shots = root.join("target/console-screenshots");
    // A stale screenshot must not pass for a new one.
    for view in VIEWS {
        for width in [1280, 420] {
            let _ = std::fs::remove_file(shots.join(format!("{view}-{width}.png")));
        }
    }
    let out = tokio::process::Command::new(python)
        .arg(root.join("tests/console/console_flow.py"))
        .env("KEYGATE_ADMIN_URL", gw.admin_url(""))
        .env("KEYGATE_PROXY_URL", gw.url(""))
        .env("KEYGATE_TOKEN", TOKEN)
        .env("KEYGATE_SCREENSHOTS", &shots)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the console flow");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "console flow failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for view in VIEWS {
        for width in [1280, 420] {
            let shot = format!("{view}-{width}.png");
            assert!(shots.join(&shot).exists(), "no screenshot {shot}");
        }
    }
}
