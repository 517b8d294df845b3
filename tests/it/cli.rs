//! The command line: `check`, `keys …` output shapes and exit codes, against a real store file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use crate::support::{self, Options, cli};

const RECORD_FIELDS: [&str; 15] = [
    "id",
    "name",
    "description",
    "prefix",
    "user_id",
    "business_id",
    "scopes",
    "locations",
    "grants",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "status",
    "created_by",
];

fn setup(policy: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(
        dir.path(),
        "http://127.0.0.1:9",
        &Options {
            policy,
            ..Options::default()
        },
    );
    (dir, config)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn check_accepts_the_shipped_config_and_summarises_in_one_line() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/keygate.yaml");
    let out = cli(&shipped, &["check"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("routes"), "{}", stdout(&out));
}

#[tokio::test]
async fn the_container_config_is_valid_as_shipped() {
    // The image copies config/container.yaml beside config/policy.yaml as /etc/keygate/.
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    std::fs::copy(root.join("container.yaml"), dir.path().join("keygate.yaml")).unwrap();
    std::fs::copy(root.join("policy.yaml"), dir.path().join("policy.yaml")).unwrap();
    let out = cli(&dir.path().join("keygate.yaml"), &["check"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("/var/lib/keygate/keygate.db"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn check_reports_every_policy_error_with_file_line_and_column() {
    let policy = "version: 1\nscopes:\n  items:read: Read\nroles:\n  viewer: [items:raed]\nroutes:\n  - name: a\n    path: /a\n    scopes: [items:read]\n  - name: a\n    path: b\n";
    let (dir, config) = setup(policy);
    let out = cli(&config, &["check"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let file = dir.path().join("policy.yaml");
    let prefix = format!("{}:", file.display());
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert!(lines.len() >= 3, "expected three errors, got:\n{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{prefix}5:")) && l.contains("items:read")),
        "did-you-mean on line 5:\n{err}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("{prefix}10:"))),
        "duplicate route name on line 10:\n{err}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("{prefix}11:"))),
        "bad path on line 11:\n{err}"
    );
}

#[tokio::test]
async fn check_reports_config_errors_with_their_line() {
    let (dir, config) = setup(support::POLICY);
    std::fs::write(
        &config,
        "upstream:\n  url: http://127.0.0.1:9\ncache:\n  tll: 5s\n",
    )
    .unwrap();
    let out = cli(&config, &["check"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("{}:4:", dir.path().join("keygate.yaml").display())),
        "{err}"
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let (_dir, config) = setup(support::POLICY);
    let out = cli(&config, &["keys", "create", "--name", "x"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test]
async fn create_json_show_list_revoke_rotate() {
    let (dir, config) = setup(support::POLICY);
    let secret_file = dir.path().join("k.apikey");
    let out = cli(
        &config,
        &[
            "keys",
            "create",
            "--name",
            "billing sync",
            "--user",
            "u1",
            "--business",
            "acme",
            "--description",
            "nightly job",
            "--scope",
            "items:read",
            "--location",
            "hq",
            "--grant",
            "editor@hq,plant-1",
            "--expires",
            "5d",
            "--json",
            "--output",
        ],
    )
    .await;
    // --output needs its FILE: that is a usage error.
    assert_eq!(out.status.code(), Some(2));
    let out = cli(
        &config,
        &[
            "keys",
            "create",
            "--name",
            "billing sync",
            "--user",
            "u1",
            "--business",
            "acme",
            "--description",
            "nightly job",
            "--scope",
            "items:read",
            "--location",
            "hq",
            "--grant",
            "editor@hq,plant-1",
            "--expires",
            "5d",
            "--json",
            "--output",
            secret_file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let created: Value =
        serde_json::from_slice(&out.stdout).expect("stdout is exactly one JSON object");
    for f in RECORD_FIELDS {
        assert!(created.get(f).is_some(), "record lacks {f}: {created}");
    }
    let key = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(key.starts_with("kg_"));
    assert!(!id.starts_with("kg_"));
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["status"], "active");
    assert_eq!(
        created["grants"],
        serde_json::json!([{"role": "editor", "locations": ["hq", "plant-1"]}])
    );
    assert_eq!(created["revoked_at"], Value::Null);
    let expires = created["expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z'), "{expires}");

    let meta = std::fs::metadata(&secret_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap().trim(), key);

    let out = cli(&config, &["keys", "show", id, "--json"]).await;
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        shown.get("key").is_none(),
        "show must never print the secret"
    );
    assert_eq!(shown["name"], "billing sync");

    for n in 0..3 {
        cli(
            &config,
            &[
                "keys",
                "create",
                "--name",
                &format!("other-{n}"),
                "--user",
                "u2",
                "--business",
                "globex",
            ],
        )
        .await;
    }
    let out = cli(&config, &["keys", "list"]).await;
    let table = stdout(&out);
    assert!(
        table.contains(id) && table.contains("billing sync"),
        "{table}"
    );
    assert!(!table.contains(key), "list must never show a secret");
    let header = table.lines().next().unwrap();
    for col in ["ID", "NAME", "STATUS", "CREATED", "EXPIRES"] {
        assert!(header.contains(col), "{header}");
    }
    // Aligned: every row's STATUS column starts at the same offset.
    let at = header.find("STATUS").unwrap();
    for row in table.lines().skip(1) {
        let cell = &row[at..];
        assert!(
            ["active", "expired", "revoked"]
                .iter()
                .any(|s| cell.starts_with(s)),
            "misaligned row: {row}"
        );
    }

    let out = cli(&config, &["keys", "list", "--json", "--business", "acme"]).await;
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    let out = cli(&config, &["keys", "list", "--json", "--limit", "2"]).await;
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["name"], "other-2", "newest first");
    let out = cli(&config, &["keys", "list", "--json", "--search", "NIGHTLY"]).await;
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 1);

    let out = cli(&config, &["keys", "rotate", id, "--grace", "1h", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rotated: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(rotated["id"], created["id"]);
    assert_eq!(rotated["name"], "billing sync");
    assert_eq!(rotated["grants"], created["grants"]);
    let out = cli(&config, &["keys", "show", id, "--json"]).await;
    let old: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        old["status"], "active",
        "the old key works through its grace period"
    );
    assert_ne!(old["expires_at"], created["expires_at"]);

    let out = cli(&config, &["keys", "revoke", id]).await;
    assert_eq!(out.status.code(), Some(0));
    let out = cli(&config, &["keys", "list", "--json", "--status", "revoked"]).await;
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], created["id"]);

    let out = cli(&config, &["keys", "show", "kid_doesnotexist", "--json"]).await;
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn create_refuses_what_the_policy_does_not_declare() {
    let (_dir, config) = setup(support::POLICY);
    for (args, needle) in [
        (vec!["--scope", "items:raed"], "items:read"),
        (vec!["--location", "plant-9"], "plant-9"),
        (vec!["--grant", "admin@hq"], "admin"),
        (vec!["--grant", "viewer"], "ROLE@LOC"),
        (vec!["--expires", "soon"], "soon"),
    ] {
        let mut full = vec![
            "keys",
            "create",
            "--name",
            "x",
            "--user",
            "u",
            "--business",
            "b",
        ];
        full.extend(args.iter().copied());
        let out = cli(&config, &full).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "no secret printed on failure");
    }
}

#[tokio::test]
async fn policy_explain_allows_refuses_and_explains() {
    let (_dir, config) = setup(support::POLICY);
    let out = cli(
        &config,
        &[
            "keys",
            "create",
            "--json",
            "--name",
            "e",
            "--user",
            "u",
            "--business",
            "acme",
            "--location",
            "hq",
            "--grant",
            "editor@hq",
        ],
    )
    .await;
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let out = cli(
        &config,
        &[
            "policy",
            "explain",
            "--method",
            "POST",
            "--path",
            "/v1/locations/hq/items",
            "--key",
            &id,
            "--json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["route"], "location-items");
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["code"], Value::Null);
    assert_eq!(v["required_scopes"], serde_json::json!(["items:write"]));
    assert_eq!(v["location"], "hq");
    assert!(v["reason"].as_str().unwrap().contains(&id));

    let out = cli(
        &config,
        &[
            "policy",
            "explain",
            "--method",
            "POST",
            "--path",
            "/v1/locations/plant-1/items",
            "--key",
            &id,
            "--json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["decision"].as_str(), v["code"].as_str()),
        (Some("deny"), Some("location_forbidden"))
    );

    let out = cli(
        &config,
        &[
            "policy",
            "explain",
            "--method",
            "GET",
            "--path",
            "/v1/here/items",
            "--key",
            &id,
            "--header",
            "X-Location: hq",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("decision   allow"),
        "{}",
        stdout(&out)
    );

    for (args, code) in [
        (vec!["--method", "GET", "--path", "/nowhere"], "no_route"),
        (
            vec!["--method", "GET", "--path", "/v1/items/1"],
            "missing_api_key",
        ),
        (
            vec!["--method", "GET", "--path", "/v1/%2e%2e/%2e%2e/%2e%2e/x"],
            "bad_path",
        ),
        (
            vec![
                "--method",
                "GET",
                "--path",
                "/v1/items/1",
                "--key",
                "kid_unknown",
            ],
            "invalid_api_key",
        ),
    ] {
        let mut full = vec!["policy", "explain", "--json"];
        full.extend(args.iter().copied());
        let out = cli(&config, &full).await;
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["code"], code, "{args:?}");
    }
    let out = cli(
        &config,
        &["policy", "explain", "--method", "GET", "--path", "/health"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("public"), "{}", stdout(&out));
}
