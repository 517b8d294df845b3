//! Live policy reload against the real binary: file edits (in place and by rename),
//! SIGHUP, and a broken edit that must leave the old policy serving.

use std::time::{Duration, Instant};

use crate::support::{Gateway, POLICY, Upstream, client};

/// Polls `check` until it holds, for at most 5 s (a reload is debounced by 200 ms).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not within 5 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(gw: &Gateway, line_start: &str) -> f64 {
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn policy_edits_apply_live_and_broken_edits_keep_the_old_policy() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    let policy_file = gw.config.parent().unwrap().join("policy.yaml");
    let status = || async {
        client()
            .get(gw.url("/v1/reports"))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status().await, 403);

    // An in-place edit: /v1/reports now needs items:read.
    let relaxed = POLICY.replace(
        "    path: /v1/reports\n    scopes: [reports:read]",
        "    path: /v1/reports\n    scopes: [items:read]",
    );
    assert_ne!(relaxed, POLICY);
    std::fs::write(&policy_file, &relaxed).unwrap();
    eventually("the edited policy applies", || async {
        status().await == 200
    })
    .await;
    assert!(metric(&gw, "keygate_policy_reloads_total{result=\"ok\"}").await >= 1.0);

    // A broken edit: counted, and the previous policy keeps serving.
    std::fs::write(
        &policy_file,
        relaxed.replace(
            "[items:read]\n  - name: upload",
            "[items:raed]\n  - name: upload",
        ),
    )
    .unwrap();
    eventually("the broken edit is counted", || async {
        metric(&gw, "keygate_policy_reloads_total{result=\"error\"}").await >= 1.0
    })
    .await;
    assert_eq!(status().await, 200, "the old policy keeps serving");

    // An editor that writes a new file and renames it over the old one.
    let tmp = policy_file.with_extension("yaml.swp");
    std::fs::write(&tmp, POLICY).unwrap();
    std::fs::rename(&tmp, &policy_file).unwrap();
    eventually("the renamed-in policy applies", || async {
        status().await == 403
    })
    .await;
}

#[tokio::test]
async fn sighup_reloads_the_policy() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    let before = metric(&gw, "keygate_policy_reloads_total{result=\"ok\"}").await;
    gw.signal("HUP");
    eventually("SIGHUP reloads", || async {
        metric(&gw, "keygate_policy_reloads_total{result=\"ok\"}").await > before
    })
    .await;
    let resp = client()
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "still serving after SIGHUP");
}
