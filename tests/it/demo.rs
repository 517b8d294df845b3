//! `keygate demo`: its printed curl lines work as pasted, and Ctrl-C stops it cleanly.

use std::process::Stdio;
use std::time::Duration;

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
    let mut printed = String::new();
    while curls.len() < 3 {
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
    }
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
