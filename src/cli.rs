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
mod events;
mod explain;
mod keys;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};

use args::{Cli, Command, EventsCommand, PolicyCommand, ServeArgs};

use crate::app::{self, App};
use crate::config::{self, Config, ConfigError};
use crate::policy::{Policy, PolicyError};
use crate::report::Chain;

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
        Command::Keys(cmd) => keys::keys(&config_path, cmd).await,
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
        Command::Events(EventsCommand::Test { url, secret_env }) => {
            events::test(&config_path, &url, secret_env.as_deref()).await
        }
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
    let hooks = &cfg.events.webhooks;
    for (i, w) in hooks.iter().enumerate() {
        // Its TLS set up as `serve` will (a bad `ca` fails here, not at start).
        crate::events::deliver::Hook::new(i, w, Vec::new()).map_err(fail)?;
        if crate::events::deliver::secret(w).is_none() {
            eprintln!(
                "warning: events.webhooks[{i}].secret_env: {} is not set here; `keygate serve` will not start without it",
                w.secret_env
            );
        }
    }
    let webhooks = match hooks.len() {
        0 => String::new(),
        1 => "; 1 webhook".to_owned(),
        n => format!("; {n} webhooks"),
    };
    let store = match &cfg.store.backend {
        config::Store::Embedded { path } => format!("embedded {}", path.display()),
        config::Store::Redis { url } => format!("redis {}", redact_url(url)),
        config::Store::RedisCluster { seeds } => format!("redis cluster of {} seeds", seeds.len()),
    };
    println!(
        "ok: {} ({}, store {store}{webhooks}); {}: {}",
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
