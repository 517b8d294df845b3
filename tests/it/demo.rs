//! `keygate demo`: every command it prints works as pasted (curl lines, `keygate` lines
//! with the binary on PATH), the console it prints signs in with the credential it prints
//! and lists the demo key (in real Chromium), and Ctrl-C stops it cleanly.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{client, venv_bin};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn demo_prints_curl_lines_that_work_as_pasted_and_stops_on_ctrl_c() {
    assert!(
        std::process::Command::new("curl")
            .arg("--version")
            .output()
            .is_ok(),
        "this test runs the demo's curl lines: install curl (apt-get install curl; `make test` does it as root)"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut curls = Vec::new();
    let mut keygates = Vec::new();
    let mut printed = String::new();
    while !printed.contains("keygate keys list") {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("demo printed its curl lines within 30 s")
            .unwrap()
            .unwrap_or_else(|| panic!("demo exited early; it printed:\n{printed}"));
        printed.push_str(&line);
        printed.push('\n');
        if line.trim_start().starts_with("curl ") {
            curls.push(line.trim().to_owned());
        }
        if line.starts_with("  keygate ") {
            keygates.push(line.trim().to_owned());
        }
    }
    assert_eq!(curls.len(), 3, "three curl lines:\n{printed}");
    let run = |line: String| async move {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{line} --silent --show-error"))
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let allowed = run(curls[0].clone()).await;
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    assert!(
        allowed.contains("x-keygate-key-id"),
        "the echo shows the identity headers: {allowed}"
    );
    assert!(
        !curls[0].contains('\n') && curls[0].contains("X-API-Key: kg_"),
        "the key is written out: {}",
        curls[0]
    );
    let refused = run(curls[1].clone()).await;
    assert!(
        refused.starts_with("HTTP/1.1 403") && refused.contains("insufficient_scope"),
        "{refused}"
    );
    let anonymous = run(curls[2].clone()).await;
    assert!(
        anonymous.starts_with("HTTP/1.1 401") && anonymous.contains("missing_api_key"),
        "{anonymous}"
    );

    // The console: its URL and the credential to sign in with, as printed.
    let console_url = after(&printed, "console ");
    let credential = after(&printed, "sign in with the admin key ");
    let demo_key_id = after(&printed, "demo key ");
    let page = client().get(&console_url).send().await.unwrap();
    assert_eq!(page.status(), 200, "{console_url}");
    assert!(page.text().await.unwrap().contains("Admin token or key"));
    let admin = console_url.trim_end_matches('/');
    let list: serde_json::Value = client()
        .get(format!("{admin}/v1/keys"))
        .header("X-API-Key", &credential)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("the printed credential lists keys: {list}"))
        .iter()
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert!(
        ids.contains(&demo_key_id.as_str()),
        "{demo_key_id} in {ids:?}"
    );

    // The `keygate` lines, with the binary on PATH as `make install` puts it.
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_keygate"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    assert_eq!(keygates.len(), 2, "{printed}");
    for line in &keygates {
        let out = Command::new("sh")
            .arg("-c")
            .arg(line)
            .env("PATH", &path)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listed = Command::new("sh")
        .arg("-c")
        .arg(&keygates[1])
        .env("PATH", &path)
        .output()
        .await
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("second-key") && listed.contains(&demo_key_id),
        "{listed}"
    );

    // In Chromium: the printed URL, the printed credential, the demo key in the list.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(venv_bin("python"))
        .arg(root.join("tests/console/demo_signin.py"))
        .env("KEYGATE_CONSOLE_URL", &console_url)
        .env("KEYGATE_CREDENTIAL", &credential)
        .env("KEYGATE_DEMO_KEY_ID", &demo_key_id)
        .env(
            "KEYGATE_SCREENSHOTS",
            root.join("target/console-screenshots"),
        )
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the console signs in with the printed credential:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-s", "INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("demo stops on Ctrl-C")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The first word after `label` on the line that holds it.
fn after(printed: &str, label: &str) -> String {
    printed
        .lines()
        .find_map(|l| l.split_once(label))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the demo prints `{label}`:\n{printed}"))
        .to_owned()
}
