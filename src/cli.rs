//! The `keygate` command line: parses arguments, runs a command, maps the outcome to an
//! exit code (0 done, 1 bad input or config, 2 usage, 3 a refusal).
//!
//! Invariants: secrets go to stdout only from `keys create`/`keys rotate` (and to a 0600
//! file with `--output`); notices and errors go to stderr; config and policy errors are
//! printed as `FILE:LINE:COL: message`, one per line. The only module using `anyhow`.

pub mod demo;
mod explain;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::app::{self, App};
use crate::config::{self, Config, ConfigError};
use crate::keys::{Grant, KeyRecord, Secret, Status, Timestamp};
use crate::lifecycle::{self, Expiry, LifecycleError, NewKey, Rules};
use crate::policy::{Policy, PolicyError};
use crate::report::Chain;
use crate::store::{KeyStore, ListQuery};

#[derive(Parser)]
#[command(name = "keygate", version, about = "API-key authentication gateway")]
struct Cli {
    /// Config file [default: `$KEYGATE_CONFIG`, then `config/keygate.yaml`]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: proxy listener and admin listener
    Serve(ServeArgs),
    /// Validate the config and the policy it names
    Check,
    /// Create, list, show, revoke and rotate keys in the configured store
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Ask the policy about a request without sending it
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Try the gateway: temporary store, echo upstream, a demo key and curl lines
    Demo,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Which route matches, what it requires, and the decision (exit 0 allow, 3 refused)
    Explain {
        #[arg(long)]
        method: String,
        /// The request path, with its query if any
        #[arg(long)]
        path: String,
        /// Decide for this key (by id)
        #[arg(long, value_name = "ID")]
        key: Option<String>,
        /// A request header, e.g. `X-Location: hq` (repeatable)
        #[arg(long = "header", value_name = "NAME:VALUE")]
        headers: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Proxy listen address (overrides `listen`)
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Admin listen address (overrides `admin.listen`)
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Upstream URL (overrides `upstream.url`)
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print its secret once
    Create(CreateArgs),
    /// List keys, newest first (never secrets)
    List(ListArgs),
    /// Show one key's record
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key everywhere
    Revoke { id: String },
    /// Replace a key with a new secret; the old one stops after the grace period
    Rotate {
        id: String,
        /// How long the old key keeps working (e.g. 1h) [default: 0s]
        #[arg(long, value_name = "DURATION")]
        grace: Option<String>,
        /// New lifetime [default: the old key's lifetime, from now]
        #[arg(long, value_name = "E")]
        expires: Option<String>,
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct CreateArgs {
    #[arg(long)]
    name: String,
    #[arg(long)]
    user: String,
    #[arg(long)]
    business: String,
    #[arg(long, default_value = "")]
    description: String,
    /// A scope the key holds everywhere (repeatable)
    #[arg(long = "scope", value_name = "S")]
    scopes: Vec<String>,
    /// A location the key may act at, `*` for all (repeatable)
    #[arg(long = "location", value_name = "L")]
    locations: Vec<String>,
    /// A role at some locations, e.g. editor@plant-1,plant-2 or viewer@* (repeatable)
    #[arg(long = "grant", value_name = "ROLE@LOC[,LOC]")]
    grants: Vec<String>,
    /// 1h, 12h, 1d, 5d, 1y, any duration, an RFC 3339 time, or never
    #[arg(long, value_name = "E")]
    expires: Option<String>,
    /// Also write the secret to FILE (mode 0600)
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ListArgs {
    #[arg(long)]
    business: Option<String>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    search: Option<String>,
    #[arg(long, value_parser = ["active", "expired", "revoked"])]
    status: Option<String>,
    /// Only the newest N
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    #[arg(long)]
    json: bool,
}

/// A failure with its exit code; the message is already user-facing.
struct Exit(u8, String);

/// Exit 1 with the error and each of its causes once, e.g.
/// `error: cannot read keygate.yaml: No such file or directory (os error 2)`. This is
/// where a chain is printed: no error's own `Display` repeats its cause.
fn fail(e: impl std::error::Error) -> Exit {
    Exit(1, format!("error: {}", Chain(&e)))
}

impl From<anyhow::Error> for Exit {
    fn from(e: anyhow::Error) -> Self {
        Exit(1, format!("error: {}", Chain(e.as_ref())))
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", Chain(e.as_ref()));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit(code, message)) => {
            if !message.is_empty() {
                eprintln!("{message}");
            }
            ExitCode::from(code)
        }
    }
}

/// The async runtime: one worker per CPU this process may use, or `KEYGATE_WORKERS`.
/// With one worker (a container limited to one CPU, a gateway pinned with `taskset`) the
/// single-threaded scheduler runs everything on one thread: no work-stealing, no
/// cross-thread wake-ups, which is measurably faster there (docs/performance.md).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = match std::env::var("KEYGATE_WORKERS") {
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                anyhow::anyhow!("KEYGATE_WORKERS={v:?}: expected a whole number above 0")
            })?,
        Err(_) => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn run(cli: Cli) -> Result<(), Exit> {
    let config_path = config::resolve_path(cli.config.as_deref());
    match cli.command {
        Command::Serve(args) => serve(&config_path, args).await,
        Command::Check => check(&config_path),
        Command::Keys(cmd) => keys(&config_path, cmd).await,
        Command::Policy(PolicyCommand::Explain {
            method,
            path,
            key,
            headers,
            json,
        }) => {
            explain::run(
                &config_path,
                explain::Question {
                    method,
                    path,
                    key,
                    headers,
                    json,
                },
            )
            .await
        }
        Command::Demo => demo::run().await.map_err(Exit::from),
    }
}

/// Loads the config, printing every error as `FILE:LINE:COL: message`.
fn load_config(path: &Path) -> Result<Config, Exit> {
    Config::load(path).map_err(|e| match e {
        ConfigError::Invalid(d) => Exit(1, d.to_string()),
        ConfigError::Read { .. } => fail(e),
    })
}

/// Loads the config's policy (whose routes may name the config's upstreams).
fn load_policy(cfg: &Config) -> Result<Policy, Exit> {
    Policy::load_for(&cfg.policy, &cfg.upstream_names())
        .map(|(p, _)| p)
        .map_err(|e| match e {
            PolicyError::Invalid(d) => Exit(1, d.to_string()),
            PolicyError::Read { .. } => fail(e),
        })
}

async fn serve(config_path: &Path, args: ServeArgs) -> Result<(), Exit> {
    let mut cfg = load_config(config_path)?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(l) = args.admin_listen {
        cfg.admin.listen = l;
    }
    if let Some(u) = args.upstream {
        cfg.upstream.targets = vec![
            config::parse_upstream(&u)
                .map_err(|m| Exit(1, format!("error: --upstream: {m}")))?
                .0,
        ];
    }
    let _log = crate::logging::init(cfg.log.format, &cfg.log.level);
    let (listen, admin_listen, forward_auth_listen) =
        (cfg.listen, cfg.admin.listen, cfg.forward_auth_listen);
    let app = App::build(cfg).map_err(|e| match e {
        app::ServeError::Policy(PolicyError::Invalid(d)) => Exit(1, d.to_string()),
        other => fail(other),
    })?;
    let proxy = app::bind(listen).await.map_err(fail)?;
    let admin = app::bind(admin_listen).await.map_err(fail)?;
    let forward_auth = match forward_auth_listen {
        Some(addr) => Some(app::bind(addr).await.map_err(fail)?),
        None => None,
    };
    let (p, a) = (local(&proxy), local(&admin));
    match &forward_auth {
        Some(f) => println!("listening proxy={p} admin={a} forward_auth={}", local(f)),
        None => println!("listening proxy={p} admin={a}"),
    }
    let _ = std::io::stdout().flush();
    let runtime = tokio::runtime::Handle::current();
    tracing::info!(
        proxy = %p,
        admin = %a,
        workers = runtime.metrics().num_workers(),
        scheduler = ?runtime.runtime_flavor(),
        "keygate serving"
    );
    let listeners = app::Listeners {
        proxy,
        admin,
        forward_auth,
    };
    app.serve(listeners, shutdown_signal()).await.map_err(fail)
}

fn local(l: &tokio::net::TcpListener) -> String {
    l.local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string())
}

/// SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn check(config_path: &Path) -> Result<(), Exit> {
    let cfg = load_config(config_path)?;
    let policy = load_policy(&cfg)?;
    if let Some(t) = &cfg.tls {
        crate::tls::Certs::load(&t.cert, &t.key).map_err(fail)?;
    }
    crate::upstream::Upstreams::check(&cfg).map_err(fail)?;
    for w in &cfg.warnings {
        eprintln!("{w}");
    }
    let store = match &cfg.store.backend {
        config::Store::Embedded { path } => format!("embedded {}", path.display()),
        config::Store::Redis { url } => format!("redis {}", redact_url(url)),
        config::Store::RedisCluster { seeds } => format!("redis cluster of {} seeds", seeds.len()),
    };
    println!(
        "ok: {} ({}, store {store}); {}: {}",
        config_path.display(),
        upstream_summary(&cfg),
        cfg.policy.display(),
        policy.summary()
    );
    Ok(())
}

/// `upstream URL`, or with several targets or upstreams how many of each.
fn upstream_summary(cfg: &Config) -> String {
    let targets: usize = cfg.all_upstreams().map(|u| u.targets.len()).sum();
    match (cfg.upstreams.len(), cfg.upstream.targets.as_slice()) {
        (0, [only]) => format!("upstream {only}"),
        (named, _) => format!(
            "{} upstream{}, {targets} target{}",
            named + 1,
            if named == 0 { "" } else { "s" },
            if targets == 1 { "" } else { "s" }
        ),
    }
}

/// Hides a password in a Redis URL before printing it.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// What every `keys` command needs: the config, the policy and the store.
struct KeysEnv {
    cfg: Config,
    policy: Policy,
    store: Arc<dyn KeyStore>,
}

impl KeysEnv {
    fn open(config_path: &Path) -> Result<Self, Exit> {
        let cfg = load_config(config_path)?;
        let policy = load_policy(&cfg)?;
        let store = app::open_store(&cfg.store).map_err(fail)?;
        Ok(Self { cfg, policy, store })
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            policy: &self.policy,
            prefix: &self.cfg.keys.prefix,
            max_ttl: self.cfg.keys.max_ttl,
        }
    }
}

fn lifecycle_exit(e: LifecycleError, id: Option<&str>) -> Exit {
    match e {
        LifecycleError::NotFound => {
            Exit(1, format!("error: no key with id `{}`", id.unwrap_or("")))
        }
        LifecycleError::Invalid { .. } | LifecycleError::Store(_) => fail(e),
    }
}

async fn keys(config_path: &Path, cmd: KeysCommand) -> Result<(), Exit> {
    let env = KeysEnv::open(config_path)?;
    let now = Timestamp::now();
    match cmd {
        KeysCommand::Create(args) => {
            let grants = args
                .grants
                .iter()
                .map(|g| parse_grant(g))
                .collect::<Result<Vec<_>, _>>()?;
            let expiry = args
                .expires
                .as_deref()
                .map(Expiry::parse)
                .transpose()
                .map_err(|m| Exit(1, format!("error: --expires: {m}")))?;
            let new = NewKey {
                name: args.name,
                description: args.description,
                user_id: args.user,
                business_id: args.business,
                scopes: args.scopes,
                locations: args.locations,
                grants,
                expiry,
            };
            let (record, secret) = lifecycle::create(&*env.store, &env.rules(), new, "cli")
                .await
                .map_err(|e| lifecycle_exit(e, None))?;
            show_secret(&record, &secret, args.output.as_deref(), args.json, now)
        }
        KeysCommand::Rotate {
            id,
            grace,
            expires,
            output,
            json,
        } => {
            let grace = grace
                .as_deref()
                .map(config::parse_duration)
                .transpose()
                .map_err(|m| Exit(1, format!("error: --grace: {m}")))?
                .unwrap_or_default();
            let expiry = expires
                .as_deref()
                .map(Expiry::parse)
                .transpose()
                .map_err(|m| Exit(1, format!("error: --expires: {m}")))?;
            let (record, secret) =
                lifecycle::rotate(&*env.store, &env.rules(), &id, grace, expiry, "cli")
                    .await
                    .map_err(|e| lifecycle_exit(e, Some(&id)))?;
            eprintln!(
                "rotated {id}: the old key stops working {}",
                describe_grace(grace)
            );
            show_secret(&record, &secret, output.as_deref(), json, now)
        }
        KeysCommand::Revoke { id } => {
            let record = lifecycle::revoke(&*env.store, &id, "cli")
                .await
                .map_err(|e| lifecycle_exit(e, Some(&id)))?;
            eprintln!("revoked {} ({})", record.id, record.name);
            Ok(())
        }
        KeysCommand::Show { id, json } => {
            let record = env
                .store
                .by_id(&id)
                .await
                .map_err(fail)?
                .ok_or_else(|| Exit(1, format!("error: no key with id `{id}`")))?;
            if json {
                println!("{}", record.to_json(now));
            } else {
                print_record(&record, now);
            }
            Ok(())
        }
        KeysCommand::List(args) => list(&env, args, now).await,
    }
}

fn describe_grace(grace: std::time::Duration) -> String {
    if grace.is_zero() {
        "now".to_owned()
    } else {
        format!("in {}", humantime::format_duration(grace))
    }
}

/// `ROLE@LOC[,LOC]...`
fn parse_grant(text: &str) -> Result<Grant, Exit> {
    let (role, locs) = text
        .split_once('@')
        .ok_or_else(|| Exit(1, format!("error: --grant `{text}`: write it as ROLE@LOC[,LOC], e.g. editor@plant-1 or viewer@*")))?;
    let locations: Vec<String> = locs
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if role.trim().is_empty() || locations.is_empty() {
        return Err(Exit(
            1,
            format!("error: --grant `{text}`: needs a role and at least one location"),
        ));
    }
    Ok(Grant {
        role: role.trim().to_owned(),
        locations,
    })
}

fn show_secret(
    record: &KeyRecord,
    secret: &Secret,
    output: Option<&Path>,
    json: bool,
    now: Timestamp,
) -> Result<(), Exit> {
    if let Some(file) = output {
        write_secret_file(file, secret).map_err(Exit::from)?;
        eprintln!("secret written to {} (mode 0600)", file.display());
    }
    if json {
        let mut v = record.to_json(now);
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "key".to_owned(),
                serde_json::Value::String(secret.expose().to_owned()),
            );
        }
        println!("{v}");
    } else {
        eprintln!(
            "created key {} \"{}\" for user {} of business {} ({}); the secret below will not be shown again:",
            record.id,
            record.name,
            record.user_id,
            record.business_id,
            record.expires_at.map_or_else(
                || "never expires".to_owned(),
                |e| format!("expires {}", e.to_rfc3339())
            ),
        );
        println!("{}", secret.expose());
    }
    Ok(())
}

fn write_secret_file(file: &Path, secret: &Secret) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot write {}", file.display()))?;
    // An existing file keeps its mode on open: tighten it before writing the secret.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set the mode of {}", file.display()))?;
    writeln!(f, "{}", secret.expose())
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(())
}

fn print_record(r: &KeyRecord, now: Timestamp) {
    let when =
        |t: Option<Timestamp>, none: &str| t.map_or_else(|| none.to_owned(), Timestamp::to_rfc3339);
    let grants: Vec<String> = r
        .grants
        .iter()
        .map(|g| format!("{}@{}", g.role, g.locations.join(",")))
        .collect();
    let rows = [
        ("id", r.id.clone()),
        ("name", r.name.clone()),
        ("description", r.description.clone()),
        ("prefix", r.prefix.clone()),
        ("user", r.user_id.clone()),
        ("business", r.business_id.clone()),
        ("status", r.status(now).as_str().to_owned()),
        ("scopes", r.scopes.join(", ")),
        ("locations", r.locations.join(", ")),
        ("grants", grants.join(" ")),
        ("created", r.created_at.to_rfc3339()),
        ("created by", r.created_by.clone()),
        ("expires", when(r.expires_at, "never")),
        ("revoked", when(r.revoked_at, "-")),
        ("last used", when(r.last_used_at, "never")),
    ];
    for (k, v) in rows {
        println!("{k:<12} {v}");
    }
}

async fn list(env: &KeysEnv, args: ListArgs, now: Timestamp) -> Result<(), Exit> {
    let status = args
        .status
        .as_deref()
        .and_then(|s| s.parse::<Status>().ok());
    let mut query = ListQuery {
        business_id: args.business,
        user_id: args.user,
        search: args.search,
        status,
        limit: args.limit.unwrap_or(500).clamp(1, 500),
        cursor: None,
        now,
    };
    let mut records = Vec::new();
    loop {
        let page = env.store.list(&query).await.map_err(fail)?;
        records.extend(page.keys);
        if let Some(n) = args.limit
            && records.len() >= n
        {
            records.truncate(n);
            break;
        }
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    if args.json {
        let all: Vec<serde_json::Value> = records.iter().map(|r| r.to_json(now)).collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(());
    }
    print!("{}", table(&records, now));
    Ok(())
}

/// An aligned text table of records (never secrets).
fn table(records: &[KeyRecord], now: Timestamp) -> String {
    let day = |t: Timestamp| {
        t.to_rfc3339()
            .chars()
            .take(16)
            .collect::<String>()
            .replace('T', " ")
    };
    let mut rows = vec![
        [
            "ID",
            "NAME",
            "USER",
            "BUSINESS",
            "STATUS",
            "CREATED",
            "EXPIRES",
            "LAST USED",
        ]
        .map(str::to_owned),
    ];
    for r in records {
        rows.push([
            r.id.clone(),
            r.name.clone(),
            r.user_id.clone(),
            r.business_id.clone(),
            r.status(now).as_str().to_owned(),
            day(r.created_at),
            r.expires_at.map_or_else(|| "never".to_owned(), day),
            r.last_used_at.map_or_else(|| "never".to_owned(), day),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
