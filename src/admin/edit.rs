//! The admin API's key edits: `PATCH /v1/keys/{id}`, `POST /v1/keys/{id}/suspend` and
//! `/resume`.
//!
//! Each handler reads top-down: parse the input (400 naming the field), then let
//! [`crate::lifecycle::update`] read the key, check the caller may see it (another
//! business: 404) and may give what the edit adds (the creation rule,
//! [`Caller::check_mint`], on what `give::added` finds, and `Caller::check_extras` for
//! metadata, allowlists and resumption), and write it as a compare-and-set. A revoked
//! key is 409.
//!
//! Invariants: the same no-escalation rule as creation, on every try of the write; a
//! suspension only takes power away, so it needs only sight of the key (as a
//! revocation does); an edit never changes the key's owner, secret or id.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use super::auth::Caller;
use super::error::AdminError;
use super::{Admin, input, json};
use crate::keys::{Grant, KeyRecord, Metadata, Timestamp};
use crate::lifecycle::{self, Edit};

type Answer = Result<Response<Full<Bytes>>, AdminError>;

/// `PATCH /v1/keys/{id}`: every field optional; absent = unchanged.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    name: Option<String>,
    description: Option<String>,
    scopes: Option<Vec<String>>,
    locations: Option<Vec<String>>,
    grants: Option<Vec<Grant>>,
    expires_in: Option<String>,
    expires_at: Option<String>,
    metadata: Option<Metadata>,
    allowed_ips: Option<Vec<String>>,
    enabled: Option<bool>,
    limits: Option<crate::keys::KeyLimits>,
    plan: Option<String>,
    quota: Option<crate::keys::QuotaInput>,
}

impl PatchBody {
    fn into_edit(self) -> Result<Edit, AdminError> {
        let expiry = super::keys::expiry(self.expires_in.as_deref(), self.expires_at.as_deref())?;
        let allowed_ips = self.allowed_ips.map(|list| parse_ips(&list)).transpose()?;
        Ok(Edit {
            name: self.name,
            description: self.description,
            scopes: self.scopes,
            locations: self.locations,
            grants: self.grants,
            expiry,
            metadata: self.metadata,
            allowed_ips,
            enabled: self.enabled,
            limits: self.limits,
            // `""` takes the key off its plan.
            plan: self.plan.map(crate::keys::plan_named),
            // `{}` removes the key's quota; credits given again are a refill.
            quota: self
                .quota
                .as_ref()
                .map(super::keys::quota_input)
                .transpose()?,
        })
    }
}

/// `suspend` and `resume` take no fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoBody {}

/// `null` for a field: refused, naming the field and what to send instead (absent means
/// unchanged; `null` is not a way to clear anything here).
fn refuse_nulls(body: &[u8]) -> Result<(), AdminError> {
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body)
        && let Some((name, _)) = fields.iter().find(|(_, v)| v.is_null())
    {
        let instead = match name.as_str() {
            "expires_at" | "expires_in" => "to remove the expiry send `\"expires_in\": \"never\"`",
            "metadata" => "to remove all metadata send `{}`",
            "allowed_ips" => "to allow every address send `[]`",
            "limits" => "to drop the key's own limits send `{}`",
            "plan" => "to take the key off its plan send `\"plan\": \"\"`",
            "quota" => "to remove the key's quota send `{}`",
            _ => "leave the field out to keep its value",
        };
        return Err(AdminError::invalid(
            name.clone(),
            format!("null is not accepted: {instead}"),
        ));
    }
    Ok(())
}

/// `allowed_ips`, each an address or CIDR; a bad one is named by its index.
pub(super) fn parse_ips(list: &[String]) -> Result<Vec<ipnet::IpNet>, AdminError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            crate::keys::parse_ip_net(a)
                .map_err(|m| AdminError::invalid(format!("allowed_ips[{i}]"), m))
        })
        .collect()
}

impl Admin {
    /// `PATCH /v1/keys/{id}`.
    pub(super) async fn update_key(&self, caller: &Caller, id: &str, body: &[u8]) -> Answer {
        refuse_nulls(body)?;
        let edit = input::json::<PatchBody>(body, false)?.into_edit()?;
        let after = self.edit(caller, id, &edit, true).await?;
        tracing::info!(key_id = %after.id, actor = %caller.actor(), "admin API: key updated");
        Ok(json(StatusCode::OK, &after.to_json(Timestamp::now())))
    }

    /// `POST /v1/keys/{id}/suspend` (`on = false`) and `/resume` (`on = true`): no body,
    /// or `{}`.
    pub(super) async fn set_enabled(
        &self,
        caller: &Caller,
        id: &str,
        on: bool,
        body: &[u8],
    ) -> Answer {
        input::json::<NoBody>(body, true)?;
        let edit = Edit::switch(on);
        // Suspending only takes power away: seeing the key is enough, as for revoking.
        let after = self.edit(caller, id, &edit, on).await?;
        let what = if on { "resumed" } else { "suspended" };
        tracing::info!(key_id = %after.id, actor = %caller.actor(), "admin API: key {what}");
        Ok(json(StatusCode::OK, &after.to_json(Timestamp::now())))
    }

    /// One edit through the lifecycle, with the caller's checks on the record it would
    /// produce: visible, and (when `gives`) no power beyond the caller's own.
    async fn edit(
        &self,
        caller: &Caller,
        id: &str,
        edit: &Edit,
        gives: bool,
    ) -> Result<KeyRecord, AdminError> {
        let policy = self.policy.load_full();
        let rules = lifecycle::Rules {
            policy: &policy,
            prefix: &self.authn.prefix,
            max_ttl: self.max_ttl,
        };
        let allow = |old: &KeyRecord, new: &KeyRecord| -> Result<(), AdminError> {
            caller.check_visible(old)?;
            if gives {
                // What the edit adds, not what the key already held: a key with more
                // power than the caller can still be renamed, narrowed or suspended.
                let (scopes, locations, grants) = super::give::added(old, new);
                caller.check_mint(&policy, &scopes, &locations, &grants)?;
            }
            caller.check_extras(Some(old), &new.metadata, &new.allowed_ips, new.enabled)?;
            caller.check_limits(&new.limits, new.plan.as_deref(), Some(old))?;
            if caller.key().is_some() && new.quota != old.quota {
                return Err(super::give::quota_forbidden());
            }
            Ok(())
        };
        lifecycle::update(&*self.store, &rules, id, edit, &caller.actor(), allow).await
    }
}
