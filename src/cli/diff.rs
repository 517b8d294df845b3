//! `keygate policy diff OLD NEW [--json]`: what changes between two policy files — their
//! routes, roles, locations and default rule — and which keys of the configured store gain
//! or lose which routes.
//!
//! Invariants: access is [`Policy::reach`], the policy's own rule, asked of both policies
//! for every active key; nothing here decides access itself. Writes nothing. Exit 0 when
//! nothing changes, 3 when something does (as `policy explain` answers a refusal), 1 for a
//! policy or config that does not load (`FILE:LINE:COL` lines).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use super::keys::records;
use super::{Exit, fail, load_config, load_policy_at};
use crate::keys::{KeyRecord, Status, Timestamp};
use crate::policy::{Policy, Reach};
use crate::store::ListQuery;

/// One named item (route or role) that differs.
struct Change {
    name: String,
    kind: &'static str,
    /// (field, old, new) for a changed item.
    fields: Vec<(String, Value, Value)>,
}

/// A key whose access differs.
struct KeyChange {
    key: KeyRecord,
    gains: Vec<Reach>,
    loses: Vec<Reach>,
}

pub async fn run(config: &Path, old: &Path, new: &Path, json: bool) -> Result<(), Exit> {
    let cfg = load_config(config)?;
    let (old_policy, new_policy) = (load_policy_at(old, &cfg)?, load_policy_at(new, &cfg)?);
    let store = crate::app::open_store(&cfg.store).map_err(fail)?;
    let now = Timestamp::now();
    let query = ListQuery {
        status: Some(Status::Active),
        limit: 500,
        now,
        ..ListQuery::default()
    };
    let keys = records(&*store, query, None).await?;

    let (a, b) = (old_policy.to_json(), new_policy.to_json());
    let routes = named_changes(&a["routes"], &b["routes"]);
    let roles = named_changes(&a["roles"], &b["roles"]);
    let set = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let (old_locs, new_locs) = (set(&a["locations"]), set(&b["locations"]));
    let locations_added: Vec<&String> = new_locs.difference(&old_locs).collect();
    let locations_removed: Vec<&String> = old_locs.difference(&new_locs).collect();
    let default = (a["default"] != b["default"]).then(|| (&a["default"], &b["default"]));
    let key_changes = access_changes(&old_policy, &new_policy, keys, now);

    let changed = !routes.is_empty()
        || !roles.is_empty()
        || !locations_added.is_empty()
        || !locations_removed.is_empty()
        || default.is_some()
        || !key_changes.is_empty();
    if json {
        let listed = |cs: &[Change]| -> Vec<Value> {
            cs.iter()
                .map(|c| {
                    let fields: serde_json::Map<String, Value> = c
                        .fields
                        .iter()
                        .map(|(f, o, n)| (f.clone(), json!({"old": o, "new": n})))
                        .collect();
                    json!({"name": c.name, "change": c.kind, "fields": fields})
                })
                .collect()
        };
        let reach = |rs: &[Reach]| -> Vec<Value> {
            rs.iter()
                .map(|r| json!({"route": r.route, "location": r.location}))
                .collect()
        };
        let out = json!({
            "changed": changed,
            "routes": listed(&routes),
            "roles": listed(&roles),
            "locations": {"added": locations_added, "removed": locations_removed},
            "default": default.map(|(o, n)| json!({"old": o, "new": n})),
            "keys": key_changes.iter().map(|k| json!({
                "id": k.key.id,
                "name": k.key.name,
                "user_id": k.key.user_id,
                "business_id": k.key.business_id,
                "gains": reach(&k.gains),
                "loses": reach(&k.loses),
            })).collect::<Vec<_>>(),
        });
        println!("{out}");
    } else if changed {
        print_text(
            &routes,
            &roles,
            &locations_added,
            &locations_removed,
            default,
            &key_changes,
        );
    } else {
        println!(
            "no change: {} and {} give every key the same routes",
            old.display(),
            new.display()
        );
    }
    if changed {
        Err(Exit(3, String::new()))
    } else {
        Ok(())
    }
}

/// Items of two `[{"name": …, …}]` arrays that were added, removed or changed: old order
/// first, then the added ones in new order.
fn named_changes(old: &Value, new: &Value) -> Vec<Change> {
    let items = |v: &Value| -> Vec<(String, Value)> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| Some((item["name"].as_str()?.to_owned(), item.clone())))
            .collect()
    };
    let (old, new) = (items(old), items(new));
    let find = |list: &[(String, Value)], name: &str| {
        list.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    };
    let mut out = Vec::new();
    for (name, was) in &old {
        match find(&new, name) {
            None => out.push(Change {
                name: name.clone(),
                kind: "removed",
                fields: Vec::new(),
            }),
            Some(now) if now != *was => {
                let fields = was
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(f, v)| now.get(f.as_str()) != Some(v))
                    .map(|(f, v)| (f.clone(), v.clone(), now[f.as_str()].clone()))
                    .collect();
                out.push(Change {
                    name: name.clone(),
                    kind: "changed",
                    fields,
                });
            }
            Some(_) => {}
        }
    }
    for (name, _) in &new {
        if find(&old, name).is_none() {
            out.push(Change {
                name: name.clone(),
                kind: "added",
                fields: Vec::new(),
            });
        }
    }
    out
}

/// Every key whose reach differs between the two policies, in listing order.
fn access_changes(
    old: &Policy,
    new: &Policy,
    keys: Vec<KeyRecord>,
    now: Timestamp,
) -> Vec<KeyChange> {
    keys.into_iter()
        .filter_map(|key| {
            let (before, after) = (old.reach(&key, now), new.reach(&key, now));
            let gains: Vec<Reach> = after.difference(&before).cloned().collect();
            let loses: Vec<Reach> = before.difference(&after).cloned().collect();
            (!gains.is_empty() || !loses.is_empty()).then_some(KeyChange { key, gains, loses })
        })
        .collect()
}

fn print_text(
    routes: &[Change],
    roles: &[Change],
    locations_added: &[&String],
    locations_removed: &[&String],
    default: Option<(&Value, &Value)>,
    keys: &[KeyChange],
) {
    let sign = |kind: &str| match kind {
        "added" => '+',
        "removed" => '-',
        _ => '~',
    };
    for (title, changes) in [("routes", routes), ("roles", roles)] {
        if changes.is_empty() {
            continue;
        }
        println!("{title}:");
        for c in changes {
            println!("  {} {} ({})", sign(c.kind), c.name, c.kind);
            for (field, old, new) in &c.fields {
                println!("      {field}: {old} -> {new}");
            }
        }
    }
    if !locations_added.is_empty() || !locations_removed.is_empty() {
        println!("locations:");
        for l in locations_added {
            println!("  + {l}");
        }
        for l in locations_removed {
            println!("  - {l}");
        }
    }
    if let Some((old, new)) = default {
        println!("default: {old} -> {new}");
    }
    let at = |r: &Reach| match &r.location {
        Some(l) => format!("{} at {l}", r.route),
        None => r.route.clone(),
    };
    if !keys.is_empty() {
        println!("keys:");
        for k in keys {
            println!(
                "  {} \"{}\" (user {}, business {})",
                k.key.id, k.key.name, k.key.user_id, k.key.business_id
            );
            for r in &k.gains {
                println!("    + {}", at(r));
            }
            for r in &k.loses {
                println!("    - {}", at(r));
            }
        }
    }
    let gaining = keys.iter().filter(|k| !k.gains.is_empty()).count();
    let losing = keys.iter().filter(|k| !k.loses.is_empty()).count();
    println!(
        "{} route(s) and {} role(s) change; {gaining} key(s) gain access, {losing} lose access",
        routes.len(),
        roles.len()
    );
}
