//! The `keygate` command line: parses arguments, runs a command, maps the outcome to an
//! exit code (0 done, 1 bad input or config, 2 usage, 3 a refusal).
//!
//! Invariants: secrets go to stdout only from `keys create`/`keys rotate` (and to a 0600
//! file with `--output`); notices and errors go to stderr; config and policy errors are
//! printed as `FILE:LINE:COL: message`, one per line. The only module using `anyhow`.

mod args;
pub mod demo;
mod diff;
mod edit;
mod explain;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, Parser};

use args::{Cli, Command, KeysCommand, ListArgs, PolicyCommand, ServeArgs};

use crate::app::{self, App};
use crate::config::{self, Config, ConfigError};
use crate::keys::{Grant, KeyRecord, Secret, Status, Timestamp};
use crate::lifecycle::{self, Expiry, LifecycleError, NewKey, Rules};
use crate::policy::{Policy, PolicyError};
use crate::report::Chain;
use crate::store::{KeyStore, ListQuery};

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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
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

/// Prints clap's error (exit 2, or 0 for `--help`/`--version`) and, for an unknown
/// subcommand that means a known one (`keys delete`), which one to use.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let _ = e.print();
    if e.kind() == ErrorKind::InvalidSubcommand
        && let Some(ContextValue::String(word)) = e.get(ContextKind::InvalidSubcommand)
    {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let before: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .take_while(|a| *a != word)
            .filter(|a| !a.starts_with('-'))
            .collect();
        let mut cmd = Cli::command();
        for name in &before {
            match cmd.find_subcommand(name) {
                Some(sub) => cmd = sub.clone(),
                None => break,
            }
        }
        let known: Vec<&str> = cmd.get_subcommands().map(clap::Command::get_name).collect();
        if let Some(to) = args::synonym(word, &known) {
            let mut path = vec!["keygate"];
            path.extend(before.iter().copied());
            eprintln!(
                "\n  tip: `{word}` is called `{to}` here: `{} {to}` (see `{} --help`)",
                path.join(" "),
                path.join(" ")
            );
        }
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
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
        // Both are rendered into memory first: clap_complete panics on a write error, and
        // `keygate completions bash | head` closes the pipe early.
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "keygate", &mut script);
            print_quietly(&script);
            Ok(())
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .context("cannot render the man page")?;
            print_quietly(&page);
            Ok(())
        }
        Command::Policy(PolicyCommand::Diff { old, new, json }) => {
            diff::run(&config_path, &old, &new, json).await
        }
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

/// Writes generated text to stdout; a reader that stopped reading (a closed pipe) is not
/// an error worth reporting.
fn print_quietly(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes).and_then(|()| out.flush());
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
    load_policy_at(&cfg.policy, cfg)
}

/// The policy in `file`, checked against `cfg`'s upstream names (a route's `upstream:`).
fn load_policy_at(file: &Path, cfg: &Config) -> Result<Policy, Exit> {
    Policy::load_for(file, &cfg.upstream_names())
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
        LifecycleError::Invalid { field, message } => {
            Exit(1, format!("error: {}: {message}", flag_of(field)))
        }
        LifecycleError::GrantOutsideLocations {
            role,
            location,
            held,
        } => Exit(
            1,
            format!(
                "error: --grant {role}@{location}: the key may not act at `{location}` ({}), \
                 so the grant would never apply; add `--location {location}`, or grant \
                 `{role}` only at the key's locations",
                lifecycle::held_locations(&held)
            ),
        ),
        LifecycleError::Revoked => Exit(
            1,
            format!("error: key `{}` is revoked: {e}", id.unwrap_or("")),
        ),
        LifecycleError::Store(_) => fail(e),
    }
}

/// The command-line flag for a lifecycle field (named as in the admin API), so a CLI user
/// reads the flag they typed.
fn flag_of(field: &str) -> &str {
    match field {
        "name" => "--name",
        "description" => "--description",
        "user_id" => "--user",
        "business_id" => "--business",
        "scopes" => "--scope",
        "locations" => "--location",
        "grants" => "--grant",
        "expires_in" | "expires_at" => "--expires",
        "metadata" => "--metadata",
        "allowed_ips" => "--allow-ip",
        other => other,
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
                metadata: edit::metadata(&args.metadata)?,
                allowed_ips: edit::allow_ips(&args.allow_ips)?,
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
        KeysCommand::Update(args) => edit::update(&env, args).await,
        KeysCommand::Suspend { id } => edit::set_enabled(&env, &id, false).await,
        KeysCommand::Resume { id } => edit::set_enabled(&env, &id, true).await,
        KeysCommand::Import {
            file,
            dry_run,
            json,
        } => edit::import(&env, &file, dry_run, json).await,
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
        ("updated", when(r.updated_at, "never")),
        (
            "metadata",
            r.metadata
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        (
            "allowed ips",
            if r.allowed_ips.is_empty() {
                "anywhere".to_owned()
            } else {
                r.allowed_ips
                    .iter()
                    .map(crate::keys::ip_net_text)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
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
    let filtered =
        args.business.is_some() || args.user.is_some() || args.search.is_some() || status.is_some();
    let query = ListQuery {
        business_id: args.business,
        user_id: args.user,
        search: args.search,
        status,
        limit: args.limit.unwrap_or(500).clamp(1, 500),
        cursor: None,
        now,
    };
    let records = records(&*env.store, query, args.limit).await?;
    if args.json {
        let all: Vec<serde_json::Value> = records.iter().map(|r| r.to_json(now)).collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(());
    }
    if records.is_empty() {
        // A notice, so stdout stays empty for a script counting lines.
        if filtered {
            eprintln!("no keys match these filters");
        } else {
            eprintln!(
                "no keys yet; create one with `keygate keys create --name N --user U --business B`"
            );
        }
        return Ok(());
    }
    print!("{}", table(&records, now));
    Ok(())
}

/// Every record `query` matches, page after page, or the newest `limit` of them.
async fn records(
    store: &dyn KeyStore,
    mut query: ListQuery,
    limit: Option<usize>,
) -> Result<Vec<KeyRecord>, Exit> {
    let mut records = Vec::new();
    loop {
        let page = store.list(&query).await.map_err(fail)?;
        records.extend(page.keys);
        if let Some(n) = limit
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
    Ok(records)
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
