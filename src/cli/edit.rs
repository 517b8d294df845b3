//! `keygate keys update | suspend | resume | import`: changing keys in place, and keys
//! from elsewhere.
//!
//! Job: turn the flags into a [`lifecycle::Edit`] or an import run, with the same rules
//! (and the same refusals, in flag words) as `keys create`; print the record after.
//!
//! Invariants: the CLI writes to the store directly, as the operator (there is no
//! caller's power to check, as there is in the admin API); an import never prints a
//! secret, only each line's number, result and key id.

use std::path::Path;

use super::args::UpdateArgs;
use super::keys::{KeysEnv, expires_flag, lifecycle_exit, parse_grant, print_record};
use super::{Exit, fail};
use crate::keys::{self, KeyRecord, Metadata, Timestamp};
use crate::lifecycle::import::{self, Outcome};
use crate::lifecycle::{self, Edit, LifecycleError};

/// The operator may do anything the rules allow (the lifecycle's check has this shape).
#[allow(clippy::unnecessary_wraps)]
fn anything(_: &KeyRecord, _: &KeyRecord) -> Result<(), LifecycleError> {
    Ok(())
}

/// `--metadata NAME=VALUE`s as metadata; `''` alone is none.
pub(super) fn metadata(pairs: &[String]) -> Result<Metadata, Exit> {
    let mut m = Metadata::new();
    for p in pairs.iter().filter(|p| !p.is_empty()) {
        let (name, value) = p.split_once('=').ok_or_else(|| {
            Exit(
                1,
                format!("error: --metadata `{p}`: write it as NAME=VALUE, e.g. plan=pro"),
            )
        })?;
        if m.insert(name.trim().to_owned(), value.to_owned()).is_some() {
            return Err(Exit(
                1,
                format!(
                    "error: --metadata: `{}` is given twice; give each name once",
                    name.trim()
                ),
            ));
        }
    }
    // The limits are the lifecycle's to check, with creation's and edits' other rules.
    Ok(m)
}

/// `--allow-ip`s as networks; `''` alone is anywhere.
pub(super) fn allow_ips(list: &[String]) -> Result<Vec<ipnet::IpNet>, Exit> {
    list.iter()
        .filter(|a| !a.is_empty())
        .map(|a| keys::parse_ip_net(a).map_err(|m| Exit(1, format!("error: --allow-ip: {m}"))))
        .collect()
}

/// `--limit ROUTE=RATE`, each route once; empty values are skipped (`--limit ''`).
pub(super) fn limits(pairs: &[String]) -> Result<keys::KeyLimits, Exit> {
    let mut out = keys::KeyLimits::new();
    for p in pairs.iter().filter(|p| !p.is_empty()) {
        let (route, rate) = p.split_once('=').ok_or_else(|| {
            Exit(
                1,
                format!("error: --limit `{p}`: write it as ROUTE=RATE, e.g. orders=1000/s"),
            )
        })?;
        let rate = keys::RateLimit::parse(rate.trim())
            .map_err(|m| Exit(1, format!("error: --limit `{p}`: {m}")))?;
        if out.insert(route.trim().to_owned(), rate).is_some() {
            return Err(Exit(
                1,
                format!(
                    "error: --limit: route `{}` is given twice; give each route once",
                    route.trim()
                ),
            ));
        }
    }
    Ok(out)
}

/// `--quota`: `1000/1d` (requests per period), `credits=5000`, or `''` (none).
pub(super) fn quota(text: &str) -> Result<Option<keys::QuotaSpec>, Exit> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let spec = match t.strip_prefix("credits=") {
        Some(n) => n
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("`{n}` is not a whole number of credits"))
            .and_then(keys::QuotaSpec::credits),
        None => keys::QuotaSpec::parse(t),
    };
    spec.map(Some).map_err(|m| {
        Exit(
            1,
            format!("error: --quota `{t}`: {m} (or credits=N for credits an admin refills)"),
        )
    })
}

fn non_empty(list: Vec<String>) -> Vec<String> {
    list.into_iter().filter(|s| !s.is_empty()).collect()
}

/// `keys update`.
pub(super) async fn update(env: &KeysEnv, args: UpdateArgs) -> Result<(), Exit> {
    let grants = args
        .grants
        .map(|gs| {
            non_empty(gs)
                .iter()
                .map(|g| parse_grant(g))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let expiry = expires_flag(args.expires.as_deref())?;
    let edit = Edit {
        name: args.name,
        description: args.description,
        scopes: args.scopes.map(non_empty),
        locations: args.locations.map(non_empty),
        grants,
        expiry,
        metadata: args.metadata.as_deref().map(metadata).transpose()?,
        allowed_ips: args.allow_ips.as_deref().map(allow_ips).transpose()?,
        enabled: None,
        limits: args.limits.as_deref().map(limits).transpose()?,
        plan: args.plan.map(keys::plan_named),
        quota: args.quota.as_deref().map(quota).transpose()?,
    };
    let id = args.id;
    let grants_given = edit.grants.is_some();
    let after = lifecycle::update(&*env.store, &env.rules(), &id, &edit, "cli", anything)
        .await
        .map_err(|e| match e {
            // The grant is the key's own, not one given here: name the flag that was.
            LifecycleError::GrantOutsideLocations { role, location, .. } if !grants_given => Exit(
                1,
                format!(
                    "error: --location: the key's grant `{role}@{location}` needs location \
                         `{location}`: keep `--location {location}`, or change the grants \
                         with `--grant`"
                ),
            ),
            e => lifecycle_exit(e, Some(&id)),
        })?;
    let now = Timestamp::now();
    if args.json {
        println!("{}", after.to_json(now));
    } else {
        eprintln!("updated {} ({})", after.id, after.name);
        print_record(&after, now);
    }
    Ok(())
}

/// `keys suspend` (`on = false`) and `keys resume` (`on = true`).
pub(super) async fn set_enabled(env: &KeysEnv, id: &str, on: bool) -> Result<(), Exit> {
    let after = lifecycle::update(
        &*env.store,
        &env.rules(),
        id,
        &Edit::switch(on),
        "cli",
        anything,
    )
    .await
    .map_err(|e| lifecycle_exit(e, Some(id)))?;
    let what = if on {
        "resumed: it works again everywhere within a second"
    } else {
        "suspended: every gateway refuses it within a second (401 disabled_api_key); `keygate keys resume` switches it back on"
    };
    eprintln!("{} ({}) {what}", after.id, after.name);
    Ok(())
}

/// `keys import FILE [--dry-run] [--json]`: each line's result, then a summary; exit 1
/// if any line failed.
pub(super) async fn import(
    env: &KeysEnv,
    file: &Path,
    dry_run: bool,
    json: bool,
) -> Result<(), Exit> {
    let text = if file == Path::new("-") {
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut all)
            .map_err(|e| Exit(1, format!("error: cannot read standard input: {e}")))?;
        all
    } else {
        std::fs::read(file)
            .map_err(|e| Exit(1, format!("error: cannot read {}: {e}", file.display())))?
    };
    let rules = env.rules();
    let opts = import::Options {
        rules: &rules,
        accept_foreign: env.cfg.keys.accept_imported,
        dry_run,
        actor: "cli import",
    };
    let results = import::import(&*env.store, &opts, &text)
        .await
        .map_err(fail)?;
    let (mut created, mut exists, mut failed) = (0, 0, 0);
    for r in &results {
        let (result, id, error) = match &r.outcome {
            Outcome::Created(id) => {
                created += 1;
                ("created", id.as_str(), "")
            }
            Outcome::WouldCreate => {
                created += 1;
                ("would create", "", "")
            }
            Outcome::Exists(id) => {
                exists += 1;
                ("exists", id.as_str(), "")
            }
            Outcome::Failed(why) => {
                failed += 1;
                ("error", "", why.as_str())
            }
        };
        if json {
            let or_null = |t: &str| (!t.is_empty()).then(|| t.to_owned());
            let line = serde_json::json!({
                "line": r.line, "result": result, "id": or_null(id), "error": or_null(error)
            });
            println!("{line}");
        } else if !error.is_empty() {
            println!("{}:{}: error: {error}", file.display(), r.line);
        } else if !id.is_empty() {
            println!("{}:{}: {result} {id}", file.display(), r.line);
        } else {
            println!("{}:{}: {result}", file.display(), r.line);
        }
    }
    let hashed = results
        .iter()
        .filter(|r| r.only_hash && matches!(r.outcome, Outcome::Created(_) | Outcome::WouldCreate))
        .count();
    if hashed > 0 && !env.cfg.keys.accept_imported {
        eprintln!(
            "note: {hashed} line(s) gave only a sha256: with keys.accept_imported off, such a \
             key works only if its secret has keygate's prefix and checksum"
        );
    }
    let verb = if dry_run { "would create" } else { "created" };
    eprintln!(
        "{verb} {created}, already there {exists}, failed {failed}{}",
        if dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    );
    if failed > 0 {
        return Err(Exit(
            1,
            format!(
                "error: {failed} line(s) failed; fix them and run the import again (lines already imported are skipped)"
            ),
        ));
    }
    Ok(())
}
