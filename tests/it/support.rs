//! Real parts for the integration tests: a recording upstream, the real `keygate`
//! binary on free ports, and its CLI. Everything is killed or closed on `Drop`.

pub mod redis;
pub mod upstream;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use redis::{RedisCluster, RedisServer};
pub use upstream::Upstream;

/// The policy most tests run against (the contract's example, plus a few routes).
pub const POLICY: &str = r"version: 1
scopes:
  items:read: Read items
  items:write: Create and change items
  reports:read: Read reports
roles:
  viewer: [items:read]
  editor: [items:read, items:write]
locations: [hq, plant-1, plant-2]
businesses:
  default: enabled
  trial-co: disabled
routes:
  - name: health
    path: /health
    public: true
  - name: items
    methods: [GET]
    path: /v1/items/{*rest}
    scopes: [items:read]
  - name: items-write
    methods: [POST, PUT]
    path: /v1/items/{*rest}
    scopes: [items:write]
  - name: location-items
    path: /v1/locations/{loc}/items
    location: { from: path, name: loc }
    scopes: [items:write]
  - name: header-items
    path: /v1/here/items
    location: { from: header, name: X-Location }
    scopes: [items:read]
  - name: query-items
    path: /v1/there/items
    location: { from: query, name: loc }
    scopes: [items:read]
  - name: reports
    path: /v1/reports
    scopes: [reports:read]
  - name: upload
    methods: [POST]
    path: /v1/upload
    scopes: [items:write]
  - name: slow
    path: /slow
    scopes: [items:read]
  - name: limited
    path: /v1/limited
    scopes: [items:read]
    rate_limit: 2/m
  - name: public-limited
    path: /v1/open
    public: true
    rate_limit: 1/h
default: deny
";

/// A running `keygate serve` in its own temporary folder.
pub struct Gateway {
    /// Holds the config, policy and store; removed on drop.
    _dir: tempfile::TempDir,
    pub config: PathBuf,
    pub proxy: String,
    pub admin: String,
    /// The forward-auth listener, when the config has one.
    pub forward_auth: Option<String>,
    /// Every line keygate wrote to stderr so far.
    stderr: Arc<Mutex<Vec<String>>>,
    /// The bootstrap admin token the gateway was started with, if any.
    pub token: Option<String>,
    /// `KEYGATE_WORKERS` for the process (default: as many as CPUs).
    workers: Option<usize>,
    /// More environment for the process, kept for restarts.
    env: Vec<(String, String)>,
    child: Child,
}

/// Options for [`Gateway::start_with`].
pub struct Options<'a> {
    pub policy: &'a str,
    /// Extra top-level YAML appended to the config (e.g. `cache:\n  ttl: 1h\n`).
    pub extra: &'a str,
    /// Upstream section override (default: `url:` of the given upstream).
    pub upstream_yaml: Option<String>,
    /// Store section override (default: an embedded store beside the config).
    pub store_yaml: Option<String>,
    /// Files written beside the config before start (name, contents), e.g. certificates.
    pub files: Vec<(&'a str, String)>,
    /// A bootstrap admin token: passed in `KEYGATE_ADMIN_TOKEN`, named by `admin.token_env`.
    pub admin_token: Option<&'a str>,
    /// Runtime workers (`KEYGATE_WORKERS`); 1 runs the single-threaded scheduler.
    pub workers: Option<usize>,
    /// More environment for the gateway process (e.g. a webhook's `secret_env`).
    pub env: Vec<(&'a str, String)>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            policy: POLICY,
            extra: "",
            upstream_yaml: None,
            store_yaml: None,
            files: Vec::new(),
            admin_token: None,
            workers: None,
            env: Vec::new(),
        }
    }
}

impl Options<'_> {
    /// Default options but for the upstream section: `url:` then `more` (indented YAML
    /// lines, e.g. `"  timeout: 2s\n"`).
    pub fn upstream(url: &str, more: &str) -> Self {
        Self {
            upstream_yaml: Some(format!("upstream:\n  url: {url}\n{more}")),
            ..Self::default()
        }
    }
}

impl Gateway {
    /// The default policy in front of `upstream`.
    pub async fn start(upstream: &Upstream) -> Self {
        Self::start_with(upstream, Options::default()).await
    }

    pub async fn start_with(upstream: &Upstream, opts: Options<'_>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(dir.path(), &upstream.url(), &opts);
        let token = opts.admin_token.map(str::to_owned);
        let env: Vec<(String, String)> = opts
            .env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let spawned = spawn(&config, token.as_deref(), opts.workers, &env).await;
        Self {
            _dir: dir,
            config,
            proxy: spawned.proxy,
            admin: spawned.admin,
            forward_auth: spawned.forward_auth,
            stderr: spawned.stderr,
            token,
            workers: opts.workers,
            env,
            child: spawned.child,
        }
    }

    /// Stops the gateway and starts it again on the same config and store (new ports).
    pub async fn restart(&mut self) {
        self.signal("TERM");
        self.wait().await;
        let spawned = spawn(&self.config, self.token.as_deref(), self.workers, &self.env).await;
        self.child = spawned.child;
        self.proxy = spawned.proxy;
        self.admin = spawned.admin;
        self.forward_auth = spawned.forward_auth;
        self.stderr = spawned.stderr;
    }

    /// `http://proxy` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Runs `keygate ARGS --config <this gateway's config>`.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        cli(&self.config, args).await
    }

    /// Creates a key through the CLI and returns (id, secret).
    pub async fn create_key(&self, args: &[&str]) -> (String, String) {
        let mut full = vec!["keys", "create", "--json"];
        full.extend_from_slice(args);
        let out = self.cli(&full).await;
        assert!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("keys create --json prints JSON");
        (
            v["id"].as_str().expect("id").to_owned(),
            v["key"].as_str().expect("key").to_owned(),
        )
    }

    /// A key for user `u1` of business `acme` with the given scopes (and every location).
    pub async fn key_with_scopes(&self, scopes: &[&str]) -> (String, String) {
        let mut args = vec![
            "--name",
            "test",
            "--user",
            "u1",
            "--business",
            "acme",
            "--location",
            "*",
        ];
        for s in scopes {
            args.push("--scope");
            args.push(s);
        }
        self.create_key(&args).await
    }

    /// Waits (at most 5 s) until stderr holds `n` lines for which `pick` is true; returns all lines.
    pub async fn stderr_until(&self, n: usize, pick: impl Fn(&str) -> bool) -> Vec<String> {
        let started = std::time::Instant::now();
        loop {
            let lines = self.stderr.lock().expect("lock").clone();
            if lines.iter().filter(|l| pick(l)).count() >= n {
                return lines;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "only these stderr lines arrived: {lines:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal to the gateway process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        let ok = std::process::Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Waits for the gateway to exit and returns its status.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("keygate did not exit within 20 s")
            .expect("wait")
    }
}

/// Spawns `keygate serve` on free ports and waits for its listening line.
/// A started `keygate serve` and what it said.
struct Spawned {
    child: Child,
    proxy: String,
    admin: String,
    forward_auth: Option<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

async fn spawn(
    config: &Path,
    token: Option<&str>,
    workers: Option<usize>,
    env: &[(String, String)],
) -> Spawned {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--config",
    ])
    .arg(config)
    .env_remove("KEYGATE_ADMIN_TOKEN")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    if let Some(t) = token {
        cmd.env("KEYGATE_ADMIN_TOKEN", t);
    }
    if let Some(n) = workers {
        cmd.env("KEYGATE_WORKERS", n.to_string());
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn().expect("spawn keygate serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("keygate did not print its listening line within 30 s")
        .expect("read stdout");
    let Some(line) = line else {
        let out = child.wait_with_output().await.expect("wait");
        panic!(
            "keygate exited before listening: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (proxy, admin, forward_auth) = parse_listening(&line);
    // Keep draining stderr so the child never blocks on a full pipe; keep the lines.
    let stderr = Arc::new(Mutex::new(Vec::new()));
    if let Some(pipe) = child.stderr.take() {
        let keep = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut l = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = l.next_line().await {
                if std::env::var_os("KEYGATE_TEST_LOG").is_some() {
                    eprintln!("[keygate] {line}");
                }
                keep.lock().expect("lock").push(line);
            }
        });
    }
    Spawned {
        child,
        proxy,
        admin,
        forward_auth,
        stderr,
    }
}

/// A program of the test virtualenv (`target/venv/bin/NAME`), which `make test` creates
/// (`scripts/test-deps.sh`: schemathesis and Playwright, pinned).
pub fn venv_bin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make test` once (it creates target/venv with schemathesis and playwright)",
        path.display()
    );
    path
}

/// Runs the keygate binary with `args` and `--config config`.
pub async fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .await
        .expect("run keygate")
}

/// A `store:` section for one Redis server.
pub fn redis_store(url: &str) -> String {
    format!("store:\n  kind: redis\n  url: {url}\n  timeout: 300ms\n")
}

/// A `store:` section for a Redis Cluster.
pub fn cluster_store(seeds: &[String]) -> String {
    format!(
        "store:\n  kind: redis\n  cluster: [{}]\n  timeout: 300ms\n",
        seeds.join(", ")
    )
}

/// Writes `keygate.yaml` and `policy.yaml` into `dir`.
pub fn write_config(dir: &Path, upstream_url: &str, opts: &Options<'_>) -> PathBuf {
    std::fs::write(dir.join("policy.yaml"), opts.policy).expect("write policy");
    for (name, contents) in &opts.files {
        std::fs::write(dir.join(name), contents).expect("write file");
    }
    let upstream = opts
        .upstream_yaml
        .clone()
        .unwrap_or_else(|| format!("upstream:\n  url: {upstream_url}\n  timeout: 30s\n"));
    let admin = if opts.admin_token.is_some() {
        "admin:\n  token_env: KEYGATE_ADMIN_TOKEN\n"
    } else {
        ""
    };
    let store = opts
        .store_yaml
        .clone()
        .unwrap_or_else(|| "store:\n  kind: embedded\n  path: keygate.db\n".to_owned());
    let config = format!(
        "{upstream}{admin}{store}policy: policy.yaml\nlog:\n  format: json\n{}",
        opts.extra
    );
    let path = dir.join("keygate.yaml");
    std::fs::write(&path, config).expect("write config");
    path
}

fn parse_listening(line: &str) -> (String, String, Option<String>) {
    let mut proxy = None;
    let mut admin = None;
    let mut forward_auth = None;
    for part in line.split_whitespace() {
        if let Some(p) = part.strip_prefix("proxy=") {
            proxy = Some(p.to_owned());
        }
        if let Some(a) = part.strip_prefix("admin=") {
            admin = Some(a.to_owned());
        }
        if let Some(f) = part.strip_prefix("forward_auth=") {
            forward_auth = Some(f.to_owned());
        }
    }
    match (proxy, admin) {
        (Some(p), Some(a)) if line.starts_with("listening ") => (p, a, forward_auth),
        _ => panic!("unexpected first line from keygate: {line:?}"),
    }
}

/// A plain HTTP/1.1 client without redirects or connection reuse surprises.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// Parses a refusal body and returns its `error.code`.
pub async fn error_code(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("refusal body is JSON");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code, body)
}

/// A raw keyed GET of `target`, sent as written (an HTTP client library would normalise
/// it), on a connection closed after the answer.
pub fn keyed_get(gw: &Gateway, target: &str, key: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n",
        gw.proxy
    )
}

/// Sends raw bytes on a fresh connection and returns everything the server answered
/// until it closes the connection or `Connection: close` is honoured.
pub async fn raw(addr: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}
