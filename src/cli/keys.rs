//! `keygate keys create | list | show | revoke | rotate`: the key commands that make,
//! end and show keys, on the configured store, as the operator; and what every key
//! command shares (the store and rules it opens, the refusals in flag words, how a
//! record and a secret are printed).
//!
//! Invariants: a secret is printed once, on stdout (or into a 0600 file), never to
//! stderr or a log; a lifecycle refusal names the flag the user typed (`--grant`), not
//! the admin API's field.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::args::{KeysCommand, ListArgs};
use super::{Exit, edit, fail, load_config, load_policy};
use crate::app;
use crate::config::{self, Config};
use crate::keys::{Grant, KeyRecord, Secret, Status, Timestamp};
use crate::lifecycle::{self, Expiry, LifecycleError, NewKey, Rules};
use crate::policy::Policy;
use crate::store::{KeyStore, ListQuery};

/// What every `keys` command needs: the config, the policy and the store.
pub(super) struct KeysEnv {
    pub(super) cfg: Config,
    pub(super) policy: Policy,
    pub(super) store: Arc<dyn KeyStore>,
}

impl KeysEnv {
    pub(super) fn open(config_path: &Path) -> Result<Self, Exit> {
        let cfg = load_config(config_path)?;
        let policy = load_policy(&cfg)?;
        let store = app::open_store(&cfg.store).map_err(fail)?;
        Ok(Self { cfg, policy, store })
    }

    pub(super) fn rules(&self) -> Rules<'_> {
        Rules {
            policy: &self.policy,
            prefix: &self.cfg.keys.prefix,
            max_ttl: self.cfg.keys.max_ttl,
        }
    }
}

pub(super) fn lifecycle_exit(e: LifecycleError, id: Option<&str>) -> Exit {
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
            format!(
                "error: key `{}` is revoked; a revoked key cannot be edited, suspended or \
                 resumed (create a new one)",
                id.unwrap_or("")
            ),
        ),
        LifecycleError::Contended { .. } => Exit(1, format!("error: {e}")),
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
        "limits" => "--limit",
        "plan" => "--plan",
        other => other,
    }
}

pub(super) async fn keys(config_path: &Path, cmd: KeysCommand) -> Result<(), Exit> {
    let env = KeysEnv::open(config_path)?;
    let now = Timestamp::now();
    match cmd {
        KeysCommand::Create(args) => {
            let grants = args
                .grants
                .iter()
                .map(|g| parse_grant(g))
                .collect::<Result<Vec<_>, _>>()?;
            let expiry = expires_flag(args.expires.as_deref())?;
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
                limits: edit::limits(&args.limits)?,
                plan: args.plan.and_then(crate::keys::plan_named),
                quota: args
                    .quota
                    .as_deref()
                    .map(edit::quota)
                    .transpose()?
                    .flatten(),
                shared_quota: None,
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
            let expiry = expires_flag(expires.as_deref())?;
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
        KeysCommand::Show { id, json } => show(&env, &id, json, now).await,
        KeysCommand::Usage(args) => usage(&env, args, now).await,
        KeysCommand::List(args) => list(&env, args, now).await,
        KeysCommand::Update(args) => edit::update(&env, *args).await,
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

/// `--expires E`, if given: a lifetime, a time or `never`.
pub(super) fn expires_flag(text: Option<&str>) -> Result<Option<Expiry>, Exit> {
    text.map(Expiry::parse)
        .transpose()
        .map_err(|m| Exit(1, format!("error: --expires: {m}")))
}

/// `ROLE@LOC[,LOC]...`
pub(super) fn parse_grant(text: &str) -> Result<Grant, Exit> {
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

/// `keys usage ID`: a table of the key's requests per bucket, newest last.
async fn usage(env: &KeysEnv, args: super::args::UsageArgs, now: Timestamp) -> Result<(), Exit> {
    let range = crate::usage::Range::parse(
        args.from.as_deref(),
        args.to.as_deref(),
        Some(&args.granularity),
        now,
    )
    .map_err(|(field, why)| Exit(1, format!("error: --{field}: {why}")))?;
    let record = env
        .store
        .by_id(&args.id)
        .await
        .map_err(fail)?
        .ok_or_else(|| Exit(1, format!("error: no key with id `{}`", args.id)))?;
    let series = crate::store::UsageSeries::Key(record.id.clone());
    let report = crate::usage::Report::read(&*env.store, &series, range)
        .await
        .map_err(fail)?;
    if args.json {
        // The admin API's answer, field for field.
        let mut v = report.to_json();
        v["key_id"] = record.id.into();
        v["business_id"] = record.business_id.into();
        println!("{v}");
        return Ok(());
    }
    println!(
        "{:<20} {:>9} {:>9}  refusals",
        "start", "allowed", "refused"
    );
    for b in &report.buckets {
        let refusals: Vec<String> = b.refusals.iter().map(|(c, n)| format!("{c}={n}")).collect();
        println!(
            "{:<20} {:>9} {:>9}  {}",
            b.start,
            b.allowed,
            b.refused,
            refusals.join(" ")
        );
    }
    println!(
        "{:<20} {:>9} {:>9}",
        "total", report.allowed, report.refused
    );
    Ok(())
}

/// `keys show ID`: the record, and its quota as the gateways count it.
async fn show(env: &KeysEnv, id: &str, json: bool, now: Timestamp) -> Result<(), Exit> {
    let record = env
        .store
        .by_id(id)
        .await
        .map_err(fail)?
        .ok_or_else(|| Exit(1, format!("error: no key with id `{id}`")))?;
    // The quota as the gateways count it: the admin API's `GET` answer.
    let standing = match env.policy.quota_for(&record) {
        Some(q) => Some(
            crate::quotas::standing(&*env.store, q, &record, now)
                .await
                .map_err(fail)?,
        ),
        None => None,
    };
    if json {
        let mut v = record.to_json(now);
        if let Some(s) = standing {
            v["quota"] = s;
        }
        println!("{v}");
    } else {
        print_record(&record, now);
        if let Some(s) = standing {
            let resets = s["resets_at"]
                .as_str()
                .unwrap_or("when an admin refills it");
            println!(
                "{:<12} {} left, refills {resets}",
                "quota left", s["remaining"]
            );
        }
    }
    Ok(())
}

pub(super) fn print_record(r: &KeyRecord, now: Timestamp) {
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
        ("updated", r.updated_at.unwrap_or(r.created_at).to_rfc3339()),
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
        (
            "limits",
            if r.limits.is_empty() {
                "the routes'".to_owned()
            } else {
                r.limits
                    .iter()
                    .map(|(route, rate)| format!("{route}={rate}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        ),
        ("plan", r.plan.clone().unwrap_or_else(|| "-".to_owned())),
        (
            "quota",
            r.quota
                .as_ref()
                .map_or_else(|| "-".to_owned(), crate::keys::Quota::text),
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
pub(super) async fn records(
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
