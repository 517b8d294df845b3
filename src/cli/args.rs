//! The command line's shape: every command, flag and its help text, as clap derives them.
//!
//! Invariants: every subcommand and every argument carries help (a unit test walks the
//! whole tree); the completions and the man page are generated from this one definition,
//! so they cannot drift from what the parser accepts. Why its own file: `cli.rs` runs
//! commands; this says what they are.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "API-key authentication gateway",
    long_about = "API-key authentication gateway: a reverse proxy that checks X-API-Key \
                  against a key registry and a YAML policy.\n\nExit codes: 0 done, 1 bad \
                  input or config, 2 usage, 3 a refusal (policy explain) or a change \
                  (policy diff)."
)]
pub(super) struct Cli {
    /// Config file [default: `$KEYGATE_CONFIG`, then `config/keygate.yaml`]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub(super) enum Command {
    /// Run the gateway: proxy listener and admin listener
    Serve(ServeArgs),
    /// Validate the config and the policy it names
    Check,
    /// Create, list, show, edit, suspend, resume, import, revoke and rotate keys in the configured store
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Ask the policy about a request, or compare two policies
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Webhooks for key events (README: "Webhooks")
    #[command(subcommand)]
    Events(EventsCommand),
    /// Try the gateway: temporary store, echo upstream, a demo key and curl lines
    Demo,
    /// Print a shell completion script (e.g. `keygate completions bash > /etc/bash_completion.d/keygate`)
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `keygate man > keygate.1`
    Man,
}

#[derive(Subcommand)]
pub(super) enum EventsCommand {
    /// Send a signed test event (type `test`) to URL and print the receiver's status
    Test {
        /// The receiver, e.g. `https://hooks.example.com/keygate`
        url: String,
        /// The variable holding the signing secret (default: the `secret_env` of the
        /// config's webhook with this URL)
        #[arg(long, value_name = "VAR")]
        secret_env: Option<String>,
    },
}

#[derive(Subcommand)]
pub(super) enum PolicyCommand {
    /// Which route matches, what it requires, and the decision (exit 0 allow, 3 refused)
    Explain {
        /// The request method, e.g. GET or POST
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
        /// Print the answer as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Which routes change between two policy files, and which keys of the configured
    /// store gain or lose access to which routes (exit 0 no change, 3 a change)
    Diff {
        /// The policy in force now
        old: PathBuf,
        /// The policy to compare it with
        new: PathBuf,
        /// Print the changes as one JSON object
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub(super) struct ServeArgs {
    /// Proxy listen address (overrides `listen`)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Admin listen address (overrides `admin.listen`)
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Upstream URL (overrides `upstream.url`)
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
}

#[derive(Subcommand)]
pub(super) enum KeysCommand {
    /// Create a key and print its secret once
    Create(Box<CreateArgs>),
    /// List keys, newest first (never secrets)
    List(ListArgs),
    /// Show one key's record
    Show {
        /// The key's id (from `keys list`)
        id: String,
        /// Print the record as JSON
        #[arg(long)]
        json: bool,
    },
    /// A key's requests per hour or day, allowed and refused (counts reach the store
    /// within a few seconds)
    Usage(UsageArgs),
    /// Revoke a key everywhere (final; `keys suspend` is the reversible switch)
    Revoke {
        /// The key's id (from `keys list`)
        id: String,
    },
    /// Change a key in place: only the flags given change (a list flag replaces the list)
    Update(Box<UpdateArgs>),
    /// Switch a key off everywhere until `keys resume` (requests get 401 `disabled_api_key`)
    Suspend {
        /// The key's id (from `keys list`)
        id: String,
    },
    /// Switch a suspended key back on
    Resume {
        /// The key's id (from `keys list`)
        id: String,
    },
    /// Import keys in use elsewhere from JSON Lines, one key per line (README: "Importing keys")
    Import {
        /// The JSON Lines file (`-` for standard input)
        file: PathBuf,
        /// Check every line and report, but write nothing
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON object per line's result
        #[arg(long)]
        json: bool,
    },
    /// Replace a key with a new secret; the old one stops after the grace period
    Rotate {
        /// The key's id (from `keys list`)
        id: String,
        /// How long the old key keeps working (e.g. 1h) [default: 0s]
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        grace: Option<String>,
        /// New lifetime [default: the old key's lifetime, from now]
        #[arg(long, value_name = "E", allow_hyphen_values = true)]
        expires: Option<String>,
        /// Also write the new secret to FILE (mode 0600)
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print the new record plus `"key"` as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub(super) struct CreateArgs {
    /// A name people recognise the key by
    #[arg(long)]
    pub name: String,
    /// The user the key belongs to
    #[arg(long)]
    pub user: String,
    /// The business the key belongs to
    #[arg(long)]
    pub business: String,
    /// What the key is for
    #[arg(long, default_value = "")]
    pub description: String,
    /// A scope the key holds everywhere (repeatable)
    #[arg(long = "scope", value_name = "S")]
    pub scopes: Vec<String>,
    /// A location the key may act at, `*` for all (repeatable)
    #[arg(long = "location", value_name = "L")]
    pub locations: Vec<String>,
    /// A role at some of the key's locations, e.g. editor@plant-1,plant-2 or viewer@* (repeatable)
    #[arg(long = "grant", value_name = "ROLE@LOC[,LOC]")]
    pub grants: Vec<String>,
    /// 1h, 12h, 1d, 5d, 1y, any duration, an RFC 3339 time, or never
    #[arg(long, value_name = "E", allow_hyphen_values = true)]
    pub expires: Option<String>,
    /// Plan data sent upstream as X-Keygate-Meta-NAME, e.g. plan=pro (repeatable)
    #[arg(long = "metadata", value_name = "NAME=VALUE")]
    pub metadata: Vec<String>,
    /// An address or CIDR the key may be used from, e.g. 10.0.0.0/8 (repeatable; none: anywhere)
    #[arg(long = "allow-ip", value_name = "CIDR")]
    pub allow_ips: Vec<String>,
    /// The key's own rate on a route, e.g. orders=1000/s, replacing the route's (repeatable)
    #[arg(long = "limit", value_name = "ROUTE=RATE")]
    pub limits: Vec<String>,
    /// Put the key on a plan of the policy's `plans`
    #[arg(long, value_name = "PLAN")]
    pub plan: Option<String>,
    /// The key's quota: 1000/1d (refills each period, on UTC boundaries) or credits=5000
    /// (refilled only by an admin)
    #[arg(long, value_name = "QUOTA")]
    pub quota: Option<String>,
    /// Also write the secret to FILE (mode 0600)
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the record plus `"key"` as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub(super) struct UsageArgs {
    /// The key's id (from `keys list`)
    pub id: String,
    /// The first hour or day, RFC 3339 (default: 7 days ago)
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// The last hour or day, RFC 3339 (default: now)
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// hour or day
    #[arg(long, value_name = "G", default_value = "day")]
    pub granularity: String,
    /// Print the admin API's JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub(super) struct UpdateArgs {
    /// The key's id (from `keys list`)
    pub id: String,
    /// A new name
    #[arg(long)]
    pub name: Option<String>,
    /// A new description
    #[arg(long)]
    pub description: Option<String>,
    /// The key's scopes (repeatable; replaces them all; `--scope ''` clears them)
    #[arg(long = "scope", value_name = "S")]
    pub scopes: Option<Vec<String>>,
    /// The key's locations (repeatable; replaces them all)
    #[arg(long = "location", value_name = "L")]
    pub locations: Option<Vec<String>>,
    /// The key's role grants, ROLE@LOC[,LOC] (repeatable; replaces them all; `--grant ''` clears them)
    #[arg(long = "grant", value_name = "ROLE@LOC[,LOC]")]
    pub grants: Option<Vec<String>>,
    /// A new lifetime from now: 1h, 12h, 1d, 5d, 1y, an RFC 3339 time, or never
    #[arg(long, value_name = "E", allow_hyphen_values = true)]
    pub expires: Option<String>,
    /// The key's metadata, NAME=VALUE (repeatable; replaces it all; `--metadata ''` clears it)
    #[arg(long = "metadata", value_name = "NAME=VALUE")]
    pub metadata: Option<Vec<String>>,
    /// The addresses or CIDRs the key may be used from (repeatable; replaces them; `--allow-ip ''`: anywhere)
    #[arg(long = "allow-ip", value_name = "CIDR")]
    pub allow_ips: Option<Vec<String>>,
    /// The key's own rates, ROUTE=RATE (repeatable; replaces them all; `--limit ''` drops them)
    #[arg(long = "limit", value_name = "ROUTE=RATE")]
    pub limits: Option<Vec<String>>,
    /// Put the key on a plan (`--plan ''` takes it off its plan)
    #[arg(long, value_name = "PLAN")]
    pub plan: Option<String>,
    /// The key's quota: 1000/1d or credits=5000 (credits given again refill them;
    /// `--quota ''` removes it)
    #[arg(long, value_name = "QUOTA")]
    pub quota: Option<String>,
    /// Print the record after as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub(super) struct ListArgs {
    /// Only keys of this business
    #[arg(long)]
    pub business: Option<String>,
    /// Only keys of this user
    #[arg(long)]
    pub user: Option<String>,
    /// Only keys whose name, description or id contains TEXT
    #[arg(long)]
    pub search: Option<String>,
    /// Only keys with this status
    #[arg(long, value_parser = ["active", "disabled", "expired", "revoked"])]
    pub status: Option<String>,
    /// Only the newest N (at least 1, as the admin API's `limit`)
    #[arg(long, value_name = "N", value_parser = limit)]
    pub limit: Option<usize>,
    /// Print a JSON array of records
    #[arg(long)]
    pub json: bool,
}

/// `--limit`: a whole number from 1, refused at 0 with the admin API's words.
fn limit(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err("must be a whole number from 1".to_owned()),
    }
}

/// Words people try for a subcommand, and the subcommand that does it: clap suggests by
/// spelling only, and `delete` is nothing like `revoke`.
const SYNONYMS: &[(&str, &str)] = &[
    ("delete", "revoke"),
    ("remove", "revoke"),
    ("rm", "revoke"),
    ("del", "revoke"),
    ("disable", "suspend"),
    ("pause", "suspend"),
    ("enable", "resume"),
    ("unsuspend", "resume"),
    ("edit", "update"),
    ("modify", "update"),
    ("set", "update"),
    ("load", "import"),
    ("new", "create"),
    ("add", "create"),
    ("generate", "create"),
    ("ls", "list"),
    ("get", "show"),
    ("info", "show"),
    ("describe", "show"),
    ("inspect", "show"),
    ("renew", "rotate"),
    ("regenerate", "rotate"),
    ("roll", "rotate"),
    ("validate", "check"),
    ("lint", "check"),
    ("test", "check"),
    ("run", "serve"),
    ("start", "serve"),
    ("completion", "completions"),
];

/// The subcommand to suggest for an unknown `word` typed where `known` are valid.
pub(super) fn synonym<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    SYNONYMS
        .iter()
        .find(|(w, _)| *w == lower)
        .and_then(|(_, to)| known.iter().find(|k| *k == to).copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every subcommand has an about and every argument a help text, at any depth.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "keygate", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }

    #[test]
    fn synonyms_point_at_a_real_subcommand() {
        let cmd = Cli::command();
        let names = |c: &clap::Command| -> Vec<String> {
            c.get_subcommands()
                .map(|s| s.get_name().to_owned())
                .collect()
        };
        let mut all = names(&cmd);
        for sub in cmd.get_subcommands() {
            all.extend(names(sub));
        }
        for (word, to) in SYNONYMS {
            assert!(
                all.iter().any(|n| n == to),
                "{word} -> {to}: no such subcommand"
            );
        }
        assert_eq!(synonym("delete", &["create", "revoke"]), Some("revoke"));
        assert_eq!(synonym("delete", &["serve", "check"]), None);
    }
}
