//! Getting keygate onto a machine as the README says: `make install` puts `keygate` on
//! PATH before the README's first `keygate` line; the "Running it in front of your API"
//! block runs as pasted (paths moved into a temporary folder, the root-only tools stood
//! in for) and leaves a service that starts as its unit says; the systemd unit passes
//! `systemd-analyze verify` and is hardened; `docker-compose.yml` passes
//! `docker-compose config` (no engine needed) and the config it mounts passes `keygate check`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{Upstream, client};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

#[test]
fn make_install_runs_cargo_install_locked_and_the_readme_says_it_first() {
    let out = Command::new("make")
        .args(["-n", "install"])
        .env_remove("CARGO") // cargo test sets it; a user's shell does not
        .current_dir(root())
        .output()
        .expect("make is installed");
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        plan.lines()
            .any(|l| l.trim() == "cargo install --path . --locked"),
        "make install runs `cargo install --path . --locked`: {plan}"
    );
    let out = Command::new("make")
        .args(["-n", "install", "PREFIX=/opt/kg"])
        .env_remove("CARGO")
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("--root /opt/kg"),
        "PREFIX picks the root"
    );
    // The quickstart installs before it runs `keygate`.
    let text = readme();
    let install = text
        .find("\nmake install")
        .expect("the README says `make install`");
    let first_keygate = text.find("\nkeygate ").expect("the README runs keygate");
    assert!(
        install < first_keygate,
        "`make install` comes before the first `keygate` line"
    );
}

/// The first `sh` block of the README section titled `heading`.
fn readme_block(heading: &str) -> String {
    let text = readme();
    let section = &text[text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has `{heading}`"))..];
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let len = section[start..].find("```").expect("the block ends");
    section[start..start + len].to_owned()
}

/// A stand-in program: records how it was called in `calls`, and (for `sudo`) runs the
/// command it was given without its `-u USER`.
fn shim(dir: &Path, name: &str, calls: &Path, body: &str) {
    let file = dir.join(name);
    std::fs::write(
        &file,
        format!(
            "#!/bin/sh\necho \"{name} $*\" >> '{}'\n{body}\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// What a path of the block becomes in the test: each prefix moved into `root`.
fn moved(text: &str, root: &Path) -> String {
    let mut out = text.replace("~/.cargo/bin/keygate", env!("CARGO_BIN_EXE_keygate"));
    for prefix in [
        "/etc/keygate",
        "/var/lib/keygate",
        "/usr/local/bin",
        "/etc/systemd/system",
    ] {
        out = out.replace(prefix, &format!("{}{prefix}", root.display()));
    }
    out
}

#[tokio::test]
async fn readme_running_block_works_when_pasted_and_the_unit_starts_the_gateway() {
    let block = readme_block("## Running it in front of your API");
    for path in [
        "~/.cargo/bin/keygate",
        "/etc/keygate",
        "/var/lib/keygate",
        "/usr/local/bin",
        "/etc/systemd/system",
    ] {
        assert!(block.contains(path), "the block uses {path}: {block}");
    }
    // The block's first line names "your API": here, a test upstream.
    let up = Upstream::start().await;
    let your_api = "UPSTREAM=http://127.0.0.1:9000";
    assert!(
        block.starts_with(your_api),
        "the block starts with {your_api}: {block}"
    );
    let block = block.replacen(your_api, &format!("UPSTREAM={}", up.url()), 1);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    // What a fresh machine has; the block must create the rest.
    for dir in ["etc/systemd/system", "var/lib", "usr/local/bin"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let shims = tmp.path().join("shims");
    std::fs::create_dir(&shims).unwrap();
    let calls = tmp.path().join("calls.log");
    shim(
        &shims,
        "sudo",
        &calls,
        r#"if [ "$1" = "-u" ]; then shift 2; fi
exec "$@""#,
    );
    for name in ["useradd", "chown", "systemctl", "make"] {
        shim(&shims, name, &calls, "exit 0");
    }
    let path = format!(
        "{}:{}:{}",
        shims.display(),
        root.join("usr/local/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &moved(&block, &root)])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", &path)
        .env_remove("KEYGATE_CONFIG")
        .env_remove("KEYGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the block failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let called = std::fs::read_to_string(&calls).unwrap();
    for expected in [
        "make install",
        "useradd --system",
        "chown keygate:keygate",
        "sudo -u keygate keygate keys create",
        "systemctl daemon-reload",
        "systemctl enable --now keygate",
    ] {
        assert!(called.contains(expected), "`{expected}` in:\n{called}");
    }
    // The folders, the config, the token, the key store and the unit are in place.
    let etc = root.join("etc/keygate");
    let config = std::fs::read_to_string(etc.join("keygate.yaml")).unwrap();
    let db = root.join("var/lib/keygate/keygate.db");
    assert!(
        config.contains(&format!("path: {}", db.display())),
        "the store is in /var/lib/keygate: {config}"
    );
    assert!(
        config.contains(&format!("  url: {} ", up.url())),
        "upstream.url is $UPSTREAM: {config}"
    );
    assert!(etc.join("policy.yaml").exists());
    let env_file = etc.join("keygate.env");
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is root's only");
    let env_text = std::fs::read_to_string(&env_file).unwrap();
    let token = env_text
        .trim()
        .strip_prefix("KEYGATE_ADMIN_TOKEN=")
        .unwrap_or_else(|| panic!("{env_text}"));
    assert!(token.len() >= 32, "a long random token: {token}");
    assert!(db.exists(), "the key was created in /var/lib/keygate");
    let secret = stdout
        .lines()
        .find(|l| l.starts_with("kg_"))
        .unwrap_or_else(|| panic!("the key's secret on stdout: {stdout}"))
        .to_owned();
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/keygate.service")).unwrap();

    // The service as systemd would start it: the unit's ExecStart with the token from its
    // EnvironmentFile (free ports instead of 8080/8081).
    let directive = |name: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name}= in the unit"))
            .to_owned()
    };
    assert_eq!(
        moved(&directive("EnvironmentFile"), &root),
        env_file.display().to_string()
    );
    let exec = moved(&directive("ExecStart"), &root);
    let mut words = exec.split_whitespace();
    let mut child = tokio::process::Command::new(words.next().unwrap())
        .args(words)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env_remove("KEYGATE_CONFIG")
        .env("KEYGATE_ADMIN_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the service listens within 30 s")
        .unwrap()
        .expect("the service printed its listening line");
    let addr = |name: &str| {
        line.split_whitespace()
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{line}"))
            .to_owned()
    };
    let (proxy, admin) = (addr("proxy"), addr("admin"));
    let listed: serde_json::Value = client()
        .get(format!("http://{admin}/v1/keys"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["keys"][0]["name"], "billing-sync", "{listed}");
    let status = client()
        .get(format!("http://{proxy}/v1/items/1"))
        .header("X-API-Key", &secret)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "the key created by the block is let through");
}

/// `systemd-analyze verify` on the unit (its `ExecStart` pointed at a binary that exists):
/// no error, no warning; a misspelt directive would be reported.
fn verify_unit(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keygate.service");
    std::fs::write(
        &file,
        text.replace("/usr/local/bin/keygate", env!("CARGO_BIN_EXE_keygate")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .expect("systemd-analyze: `make test` installs systemd (scripts/test-deps.sh)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && said.trim().is_empty(), said)
}

#[test]
fn systemd_unit_verifies_runs_unprivileged_restarts_on_failure_and_is_hardened() {
    let unit = std::fs::read_to_string(root().join("config/examples/keygate.service")).unwrap();
    let (clean, said) = verify_unit(&unit);
    assert!(clean, "systemd-analyze verify: {said}");
    let (clean, said) = verify_unit(&unit.replace("Restart=", "Restrat="));
    assert!(
        !clean && said.contains("Restrat"),
        "a typo is caught: {said}"
    );
    let values: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| values.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let user = get("User").expect("User= set");
    assert!(user != "root" && user != "0", "runs as {user}");
    for (k, v) in [
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "keygate"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(get(k), Some(v), "{k}={v}");
    }
    assert!(
        get("ExecStart").is_some_and(|e| e.contains("serve --config /etc/keygate/keygate.yaml")),
        "ExecStart serves /etc/keygate/keygate.yaml"
    );
}

/// `docker-compose config` (Debian's docker-compose: parses, validates against the
/// compose schema and interpolates; no engine needed) on `file`, with `env`.
fn compose_config(file: &Path, token: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new("docker-compose");
    cmd.arg("-f")
        .arg(file)
        .arg("config")
        .current_dir(root())
        .env_remove("KEYGATE_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("KEYGATE_ADMIN_TOKEN", t);
    }
    cmd.output()
        .expect("docker-compose: `make test` installs it (scripts/test-deps.sh)")
}

#[test]
fn compose_file_validates_and_the_config_it_mounts_passes_keygate_check() {
    let file = root().join("docker-compose.yml");
    let out = compose_config(&file, Some("a-long-random-admin-token"));
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolved: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let services = &resolved["services"];
    for name in ["keygate", "redis", "upstream"] {
        assert!(services[name].is_mapping(), "service {name}: {resolved:?}");
    }
    let keygate = &services["keygate"];
    assert!(
        keygate["build"].is_mapping() || keygate["build"].is_string(),
        "keygate is built from the Dockerfile"
    );
    // The config it mounts: KEYGATE_CONFIG inside the container, through the mounts, to a
    // file of this checkout.
    let inside = keygate["environment"]["KEYGATE_CONFIG"]
        .as_str()
        .expect("KEYGATE_CONFIG")
        .to_owned();
    let mounts: Vec<(String, String)> = keygate["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter_map(|v| match v {
            serde_yaml::Value::String(s) => {
                let mut p = s.split(':');
                Some((p.next()?.to_owned(), p.next()?.to_owned()))
            }
            m => Some((
                m["source"].as_str()?.to_owned(),
                m["target"].as_str()?.to_owned(),
            )),
        })
        .collect();
    let host = mounts
        .iter()
        .find_map(|(src, dst)| {
            inside
                .strip_prefix(dst.as_str())
                .map(|rest| PathBuf::from(src).join(rest.trim_start_matches('/')))
        })
        .unwrap_or_else(|| panic!("{inside} is mounted from the checkout: {mounts:?}"));
    assert!(
        host.starts_with(root()),
        "{} is in the checkout",
        host.display()
    );
    let check = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("check")
        .arg("--config")
        .arg(&host)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "keygate check --config {}: {}",
        host.display(),
        String::from_utf8_lossy(&check.stderr)
    );
    let summary = String::from_utf8_lossy(&check.stdout);
    assert!(
        summary.contains("http://upstream:80") && summary.contains("redis://redis:6379"),
        "the mounted config names the compose services: {summary}"
    );

    // The check can fail: no admin token, or a misspelt key, is refused.
    let out = compose_config(&file, None);
    assert!(!out.status.success(), "KEYGATE_ADMIN_TOKEN is required");
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("docker-compose.yml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&broken, text.replace("    depends_on:", "    depend_on:")).unwrap();
    let out = compose_config(&broken, Some("a-long-random-admin-token"));
    assert!(
        !out.status.success(),
        "a misspelt key is refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
