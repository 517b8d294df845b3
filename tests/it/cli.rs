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
            "--location",
            "plant-1",
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
            "--location",
            "plant-1",
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

// Every error path: the command exits 1 with one `error:` line that names what failed
// and prints each cause once (each layer's `Display` says only its own words; the CLI
// prints the chain).

/// Every command that reads the config, as `cli` runs them (it adds `--config`).
const EVERY_COMMAND: [&[&str]; 8] = [
    &["check"],
    &[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ],
    &[
        "keys",
        "create",
        "--name",
        "x",
        "--user",
        "u",
        "--business",
        "b",
    ],
    &["keys", "list"],
    &["keys", "show", "kid_x"],
    &["keys", "revoke", "kid_x"],
    &["keys", "rotate", "kid_x"],
    &["policy", "explain", "--method", "GET", "--path", "/health"],
];

/// The `keys` and `policy` commands, which open the store: all but `check` and `serve`.
fn store_commands() -> &'static [&'static [&'static str]] {
    &EVERY_COMMAND[2..]
}

/// Runs `args`: exit 1, nothing on stdout, one `error:` line that holds `cause` exactly
/// once and names each of `names`; returns the line.
async fn fails_once(config: &Path, args: &[&str], cause: &str, names: &[&str]) -> String {
    let o = cli(config, args).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(o.stdout.is_empty(), "{args:?}: stdout: {}", stdout(&o));
    assert_eq!(err.lines().count(), 1, "{args:?}: one line:\n{err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    cause_once(&format!("{args:?}"), &err, cause, names);
    err
}

/// `text` holds `cause` exactly once and names each of `names`.
#[track_caller]
fn cause_once(what: &str, text: &str, cause: &str, names: &[&str]) {
    assert_eq!(
        text.matches(cause).count(),
        1,
        "{what}: `{cause}` should appear exactly once in:\n{text}"
    );
    for n in names {
        assert!(
            text.contains(n),
            "{what}: `{n}` should be named in:\n{text}"
        );
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn a_missing_config_file_is_named_with_its_cause_once_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    for args in EVERY_COMMAND {
        fails_once(
            &missing,
            args,
            "No such file or directory",
            &[&format!("cannot read {}", missing.display())],
        )
        .await;
    }
}

#[tokio::test]
async fn an_unreadable_policy_file_is_named_with_its_cause_once_by_every_command() {
    let (dir, config) = setup(support::POLICY);
    let policy = dir.path().join("policy.yaml");
    std::fs::remove_file(&policy).unwrap();
    for args in EVERY_COMMAND {
        fails_once(
            &config,
            args,
            "No such file or directory",
            &[&path_str(&policy)],
        )
        .await;
    }
    // A folder where the policy file should be.
    std::fs::create_dir(&policy).unwrap();
    for args in [EVERY_COMMAND[0], EVERY_COMMAND[3]] {
        fails_once(&config, args, "Is a directory", &[&path_str(&policy)]).await;
    }
}

#[tokio::test]
async fn an_invalid_policy_prints_each_file_line_col_error_once() {
    let (dir, config) = setup("version: 1\nroutes:\n  - name: a\n    path: b\n");
    let at = format!("{}:4:", dir.path().join("policy.yaml").display());
    for args in [EVERY_COMMAND[0], EVERY_COMMAND[1], EVERY_COMMAND[3]] {
        let out = cli(&config, args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with(&at)).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one error on line 4:\n{err}");
        assert!(lines[0].contains("must start with `/`"), "{args:?}: {err}");
        assert_eq!(err.matches("must start with").count(), 1, "{args:?}: {err}");
    }
}

/// A store path under a regular file: its folder can never be created (even as root).
fn unopenable_store() -> Options<'static> {
    Options {
        store_yaml: Some("store:\n  kind: embedded\n  path: a-file/sub/keygate.db\n".into()),
        files: vec![("a-file", "not a folder".to_owned())],
        ..Options::default()
    }
}

#[tokio::test]
async fn an_embedded_store_that_cannot_be_opened_is_named_with_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), "http://127.0.0.1:9", &unopenable_store());
    let folder = path_str(&dir.path().join("a-file/sub"));
    for args in store_commands() {
        let err = fails_once(&config, args, "Not a directory", &[&folder]).await;
        cause_once(
            &format!("{args:?}"),
            &err,
            "the key store is unavailable",
            &[],
        );
    }
    // `check` does not open the store; it only reports where it is.
    let out = cli(&config, &["check"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A `redis://` URL on a loopback port that nothing listens on.
fn refused_redis_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("redis://127.0.0.1:{port}/0")
}

#[tokio::test]
async fn an_unreachable_redis_fails_closed_with_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(
        dir.path(),
        "http://127.0.0.1:9",
        &Options {
            store_yaml: Some(support::redis_store(&refused_redis_url())),
            ..Options::default()
        },
    );
    // `policy explain` of a public route does not ask Redis; the rest do.
    for args in &store_commands()[..5] {
        let err = fails_once(&config, args, "Connection refused", &["Redis"]).await;
        cause_once(
            &format!("{args:?}"),
            &err,
            "the key store is unavailable",
            &[],
        );
    }
}

#[tokio::test]
async fn a_missing_certificate_or_key_file_is_named_with_its_cause_once() {
    let pair = crate::tls::self_signed("x");
    for (cert, key, named) in [
        ("missing.pem", "key.pem", "missing.pem"),
        ("cert.pem", "missing-key.pem", "missing-key.pem"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = support::write_config(
            dir.path(),
            "http://127.0.0.1:9",
            &Options {
                extra: &format!("tls:\n  cert: {cert}\n  key: {key}\n"),
                files: vec![
                    ("cert.pem", pair.cert_pem.clone()),
                    ("key.pem", pair.key_pem.clone()),
                ],
                ..Options::default()
            },
        );
        let file = format!("cannot read {}", dir.path().join(named).display());
        for args in &EVERY_COMMAND[..2] {
            fails_once(&config, args, "No such file or directory", &[&file]).await;
        }
    }
}

#[tokio::test]
async fn serve_names_an_address_in_use_with_its_cause_once() {
    let (_dir, config) = setup(support::POLICY);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for args in [
        ["serve", "--listen", &addr, "--admin-listen", "127.0.0.1:0"],
        ["serve", "--listen", "127.0.0.1:0", "--admin-listen", &addr],
    ] {
        fails_once(
            &config,
            &args,
            "Address already in use",
            &[&format!("cannot listen on {addr}")],
        )
        .await;
    }
}

#[tokio::test]
async fn an_unwritable_secret_file_is_named_with_its_cause_once() {
    let (dir, config) = setup(support::POLICY);
    std::fs::write(dir.path().join("a-file"), "x").unwrap();
    let target = dir.path().join("a-file/k.apikey");
    let args = [
        "keys",
        "create",
        "--name",
        "x",
        "--user",
        "u",
        "--business",
        "b",
        "--output",
        target.to_str().unwrap(),
    ];
    fails_once(
        &config,
        &args,
        "Not a directory",
        &[&format!("cannot write {}", target.display())],
    )
    .await;
}

#[tokio::test]
async fn policy_explain_gives_a_bad_paths_reason_once() {
    let (_dir, config) = setup(support::POLICY);
    let args = [
        "policy",
        "explain",
        "--json",
        "--method",
        "GET",
        "--path",
        "/v1/items/a%2Fb",
    ];
    let out = cli(&config, &args).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "bad_path");
    let reason = v["reason"].as_str().unwrap();
    cause_once("reason", reason, "encoded slash", &[]);
    cause_once("reason", reason, "cannot be normalised safely", &[]);
}

// The log lines of a running gateway that report an error print each cause once too.

/// The status of a request with a well-formed key that no store has seen.
async fn unknown_key_status(gw: &support::Gateway) -> u16 {
    let key = keygate::keys::generate("kg_");
    support::client()
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", key.expose())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The first stderr line of `gw` holding `needle` (waits for it).
async fn logged(gw: &support::Gateway, needle: &str) -> String {
    let lines = gw.stderr_until(1, |l| l.contains(needle)).await;
    lines.into_iter().find(|l| l.contains(needle)).unwrap()
}

#[tokio::test]
async fn serve_with_an_unopenable_store_logs_the_cause_once_and_fails_closed() {
    let up = support::Upstream::start().await;
    let gw = support::Gateway::start_with(&up, unopenable_store()).await;
    // Twice: the second call comes within the retry interval and reuses the first failure.
    assert_eq!(unknown_key_status(&gw).await, 503);
    assert_eq!(unknown_key_status(&gw).await, 503);
    let lines = gw.stderr_until(2, |l| l.contains("fail closed")).await;
    let reported: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("cannot open the key store yet") || l.contains("fail closed"))
        .collect();
    assert!(reported.len() >= 3, "{lines:#?}");
    for line in reported {
        cause_once("log", line, "Not a directory", &["a-file/sub"]);
        cause_once("log", line, "the key store is unavailable", &[]);
    }
}

#[tokio::test]
async fn serve_with_an_unreachable_redis_logs_the_cause_once() {
    let up = support::Upstream::start().await;
    let gw = support::Gateway::start_with(
        &up,
        Options {
            store_yaml: Some(support::redis_store(&refused_redis_url())),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(unknown_key_status(&gw).await, 503);
    let line = logged(&gw, "fail closed").await;
    cause_once("fail closed", &line, "the key store is unavailable", &[]);
    let line = logged(&gw, "outage began").await;
    cause_once("outage", &line, "Redis", &[]);
    assert!(
        line.contains("Connection refused") || line.contains("no answer"),
        "the outage line gives its cause: {line}"
    );
    assert!(line.matches("Connection refused").count() <= 1, "{line}");
}

#[tokio::test]
async fn failed_reloads_log_the_file_and_the_cause_once() {
    let up = support::Upstream::start().await;
    let pair = crate::tls::self_signed("x");
    let gw = crate::tls::start(&up, &pair).await;
    // An answer from the admin listener first: the SIGHUP handler is installed once
    // serving begins, and an earlier SIGHUP would end the process.
    let health = support::client()
        .get(gw.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let dir = gw.config.parent().unwrap();
    std::fs::remove_file(dir.join("cert.pem")).unwrap();
    std::fs::remove_file(dir.join("policy.yaml")).unwrap();
    gw.signal("HUP");
    for (what, file) in [
        ("TLS certificate reload failed", "cert.pem"),
        ("policy reload failed", "policy.yaml"),
    ] {
        let line = logged(&gw, what).await;
        cause_once(what, &line, "No such file or directory", &[file]);
    }
}

#[tokio::test]
async fn create_refuses_a_grant_where_the_key_may_not_act_and_says_how_to_fix_it() {
    let (_dir, config) = setup(support::POLICY);
    let base = [
        "keys",
        "create",
        "--name",
        "x",
        "--user",
        "u",
        "--business",
        "b",
        "--grant",
        "editor@hq",
    ];
    let out = cli(&config, &base).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "no secret printed on failure");
    let err = stderr(&out);
    assert!(
        err.starts_with(
            "error: --grant editor@hq: the key may not act at `hq` (it has no locations)"
        ) && err.contains("add `--location hq`"),
        "{err}"
    );
    let mut fixed = base.to_vec();
    fixed.extend(["--location", "hq"]);
    let out = cli(&config, &fixed).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A grant at `*` applies wherever the key acts: always accepted.
    let mut everywhere = base[..8].to_vec();
    everywhere.extend(["--location", "plant-1", "--grant", "viewer@*"]);
    let out = cli(&config, &everywhere).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[tokio::test]
async fn create_errors_name_the_flag_and_list_what_is_valid() {
    let (_dir, config) = setup(support::POLICY);
    let out = cli(
        &config,
        &[
            "keys",
            "create",
            "--name",
            "x",
            "--user",
            "u",
            "--business",
            "b",
            "--location",
            "mars",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim_end(),
        "error: --location: unknown location `mars` (expected one of `hq`, `plant-1`, `plant-2`)"
    );
}

#[tokio::test]
async fn completions_for_each_shell_and_the_man_page_are_valid() {
    let (dir, config) = setup(support::POLICY);
    let out = cli(&config, &["completions", "bash"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let script = dir.path().join("keygate.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = tokio::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .await
        .unwrap();
    assert!(check.status.success(), "bash -n: {}", stderr(&check));
    assert!(stdout(&out).contains("revoke"), "completes subcommands");
    let out = cli(&config, &["completions", "zsh"]).await;
    assert!(
        stdout(&out).starts_with("#compdef keygate"),
        "{}",
        stdout(&out)
    );
    let out = cli(&config, &["completions", "fish"]).await;
    assert!(
        stdout(&out).contains("complete -c keygate"),
        "{}",
        stdout(&out)
    );
    let out = cli(&config, &["completions", "tcsh"]).await;
    assert_eq!(out.status.code(), Some(2));

    let out = cli(&config, &["man"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = stdout(&out);
    let th = page
        .lines()
        .find(|l| l.starts_with('.') && !l.starts_with(".ie") && !l.starts_with(".el"));
    assert!(th.is_some_and(|l| l.starts_with(".TH keygate 1")), "{page}");
    assert!(
        page.contains("policy") && page.contains("completions"),
        "{page}"
    );
}

#[tokio::test]
async fn an_unknown_subcommand_names_the_one_meant() {
    let (_dir, config) = setup(support::POLICY);
    let out = cli(&config, &["keys", "delete", "kid_x"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("unrecognized subcommand 'delete'"), "{err}");
    assert!(
        err.contains("tip: `delete` is called `revoke` here: `keygate keys revoke`"),
        "{err}"
    );
    // A word with no synonym gets clap's own words only.
    let out = cli(&config, &["keys", "frobnicate"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !stderr(&out).contains("tip: `frobnicate`"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_negative_expiry_is_refused_clearly() {
    let (_dir, config) = setup(support::POLICY);
    for flag in ["-1h", "-5d"] {
        let out = cli(
            &config,
            &[
                "keys",
                "create",
                "--name",
                "x",
                "--user",
                "u",
                "--business",
                "b",
                "--expires",
                flag,
            ],
        )
        .await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).starts_with(&format!("error: --expires: `{flag}` is negative")),
            "{}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn list_limit_zero_is_refused_like_the_api_and_an_empty_list_says_so() {
    let (_dir, config) = setup(support::POLICY);
    let out = cli(&config, &["keys", "list", "--limit", "0"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("must be at least 1"),
        "{}",
        stderr(&out)
    );
    // Nothing stored: a notice on stderr, nothing on stdout; --json stays a JSON array.
    let out = cli(&config, &["keys", "list"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    assert!(stderr(&out).starts_with("no keys yet"), "{}", stderr(&out));
    let out = cli(&config, &["keys", "list", "--json"]).await;
    assert_eq!(stdout(&out).trim(), "[]");
    let out = cli(&config, &["keys", "list", "--business", "nobody"]).await;
    assert!(out.stdout.is_empty());
    assert_eq!(stderr(&out).trim(), "no keys match these filters");
}

#[tokio::test]
async fn policy_diff_shows_route_changes_and_which_keys_gain_or_lose() {
    let (dir, config) = setup(support::POLICY);
    let create = |args: &'static [&'static str]| {
        let config = config.clone();
        async move {
            let mut full = vec![
                "keys",
                "create",
                "--json",
                "--user",
                "u",
                "--business",
                "acme",
            ];
            full.extend_from_slice(args);
            let out = cli(&config, &full).await;
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            v["id"].as_str().unwrap().to_owned()
        }
    };
    let reader = create(&["--name", "reader", "--scope", "items:read"]).await;
    let editor = create(&[
        "--name",
        "editor",
        "--location",
        "hq",
        "--grant",
        "editor@hq",
    ])
    .await;
    let old = dir.path().join("policy.yaml");
    // `items` now also needs reports:read: the reader loses it; the editor never had it
    // (its role counts only at hq, and `items` has no location), so its access is the same.
    let new_text = support::POLICY.replace(
        "    path: /v1/items/{*rest}\n    scopes: [items:read]\n",
        "    path: /v1/items/{*rest}\n    scopes: [items:read, reports:read]\n",
    );
    assert_ne!(new_text, support::POLICY, "the fixture changed shape");
    let new = dir.path().join("new.yaml");
    std::fs::write(&new, new_text).unwrap();
    let (old_s, new_s) = (old.to_str().unwrap(), new.to_str().unwrap());

    let out = cli(&config, &["policy", "diff", old_s, old_s]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("no change"), "{}", stdout(&out));

    let out = cli(&config, &["policy", "diff", old_s, new_s]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("  ~ items (changed)"), "{text}");
    assert!(
        text.contains(r#"scopes: ["items:read"] -> ["items:read","reports:read"]"#),
        "{text}"
    );
    assert!(text.contains(&format!("{reader} \"reader\"")), "{text}");
    assert!(text.contains("    - items\n"), "{text}");
    assert!(
        !text.contains(&editor),
        "the editor's access is the same: {text}"
    );

    let out = cli(&config, &["policy", "diff", old_s, new_s, "--json"]).await;
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["changed"], true);
    assert_eq!(v["routes"][0]["name"], "items");
    assert_eq!(v["routes"][0]["change"], "changed");
    assert_eq!(
        v["routes"][0]["fields"]["scopes"]["new"],
        serde_json::json!(["items:read", "reports:read"])
    );
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{v}");
    assert_eq!(keys[0]["id"], reader);
    assert_eq!(
        keys[0]["loses"],
        serde_json::json!([{"route": "items", "location": null}])
    );
    assert_eq!(keys[0]["gains"], serde_json::json!([]));

    // A grant that starts to count: editor at hq gets `items` when the route takes a role.
    let roles_text = support::POLICY.replace(
        "    path: /v1/reports\n    scopes: [reports:read]\n",
        "    path: /v1/reports\n    scopes: [reports:read]\n  - name: hq-items\n    path: /v1/hq/{loc}\n    location: { from: path, name: loc }\n    roles: [editor]\n",
    );
    std::fs::write(&new, roles_text).unwrap();
    let out = cli(&config, &["policy", "diff", old_s, new_s, "--json"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["routes"][0]["change"], "added");
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{v}");
    assert_eq!(keys[0]["id"], editor);
    assert_eq!(
        keys[0]["gains"],
        serde_json::json!([{"route": "hq-items", "location": "hq"}])
    );

    // A policy that does not load: exit 1 and FILE:LINE:COL.
    std::fs::write(
        &new,
        "version: 1\nscopes:\n  a: b\nroutes:\n  - name: x\n     path: /y\n",
    )
    .unwrap();
    let out = cli(&config, &["policy", "diff", old_s, new_s]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!("{new_s}:6:6: YAML syntax error")),
        "{}",
        stderr(&out)
    );
}
