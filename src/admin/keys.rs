//! The admin API's key endpoints: create, list, show, revoke, rotate; plus the policy,
//! the audit log and `whoami`.
//!
//! Each handler reads top-down: parse the input (400 naming the field), check the
//! caller may see the record (another business: 404) and may act on it (403), check a
//! new key never exceeds the caller's own power ([`Caller::check_mint`]), then write
//! through [`crate::lifecycle`], which validates against the active policy and audits.
//!
//! Invariants: writes go only through [`KeyStore`](crate::store::KeyStore) (via
//! `lifecycle`); a secret appears in exactly two answers, `POST /v1/keys` and
//! `POST /v1/keys/{id}/rotate`, and never in a log; a listing is always confined to
//! what the caller may see, whatever filters it asks for.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Deserialize;

use super::auth::Caller;
use super::error::AdminError;
use super::{Admin, input, json};
use crate::keys::{Grant, KeyRecord, Secret, Status, Timestamp};
use crate::lifecycle::{self, Expiry, NewKey, Rules};
use crate::policy::ADMIN_SCOPE;
use crate::store::ListQuery;

type Answer = Result<Response<Full<Bytes>>, AdminError>;

/// `POST /v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: Option<String>,
    description: Option<String>,
    user_id: Option<String>,
    business_id: Option<String>,
    scopes: Option<Vec<String>>,
    locations: Option<Vec<String>>,
    grants: Option<Vec<Grant>>,
    expires_in: Option<String>,
    expires_at: Option<String>,
    metadata: Option<crate::keys::Metadata>,
    allowed_ips: Option<Vec<String>>,
    limits: Option<crate::keys::KeyLimits>,
    plan: Option<String>,
    quota: Option<crate::keys::QuotaInput>,
}

/// `POST /v1/keys/{id}/rotate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    grace: Option<String>,
    expires_in: Option<String>,
    expires_at: Option<String>,
}

/// A body's `quota`, checked: `None` for `{}`.
pub(super) fn quota_input(
    q: &crate::keys::QuotaInput,
) -> Result<Option<crate::keys::QuotaSpec>, AdminError> {
    q.check().map_err(|m| AdminError::invalid("quota", m))
}

fn required(field: &'static str, value: Option<String>) -> Result<String, AdminError> {
    value.ok_or_else(|| AdminError::invalid(field, "is required"))
}

/// `expires_in` or `expires_at` (not both); `None` when neither. Creation and edits alike.
pub(super) fn expiry(
    expires_in: Option<&str>,
    expires_at: Option<&str>,
) -> Result<Option<Expiry>, AdminError> {
    match (expires_in, expires_at) {
        (Some(_), Some(_)) => Err(AdminError::invalid(
            "expires_at",
            "give expires_in or expires_at, not both",
        )),
        (Some(d), None) => Expiry::parse_in(d)
            .map(Some)
            .map_err(|m| AdminError::invalid("expires_in", m)),
        (None, Some(t)) => Expiry::parse_at(t)
            .map(Some)
            .map_err(|m| AdminError::invalid("expires_at", m)),
        (None, None) => Ok(None),
    }
}

/// The record plus its secret: the one answer that shows it.
fn with_secret(record: &KeyRecord, secret: &Secret) -> Response<Full<Bytes>> {
    let mut body = record.to_json(Timestamp::now());
    if let Some(obj) = body.as_object_mut() {
        obj.insert("key".to_owned(), secret.expose().into());
    }
    let mut r = json(StatusCode::CREATED, &body);
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/keys/{}", record.id)) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    r
}

impl Admin {
    fn rules<'p>(&'p self, policy: &'p crate::policy::Policy) -> Rules<'p> {
        Rules {
            policy,
            prefix: &self.authn.prefix,
            max_ttl: self.max_ttl,
        }
    }

    /// The record with `id`, if the caller may act on it: another business's key is 404
    /// (as if it did not exist), another user's key for a self key 403.
    async fn visible(&self, caller: &Caller, id: &str) -> Result<KeyRecord, AdminError> {
        let record = self.store.by_id(id).await?.ok_or(AdminError::NotFound)?;
        caller.check_visible(&record)?;
        Ok(record)
    }

    /// `POST /v1/keys`.
    pub(super) async fn create_key(&self, caller: &Caller, body: &[u8]) -> Answer {
        let b: CreateBody = input::json(body, false)?;
        let new = NewKey {
            name: required("name", b.name)?,
            description: b.description.unwrap_or_default(),
            user_id: required("user_id", b.user_id)?,
            business_id: required("business_id", b.business_id)?,
            scopes: b.scopes.unwrap_or_default(),
            locations: b.locations.unwrap_or_default(),
            grants: b.grants.unwrap_or_default(),
            expiry: expiry(b.expires_in.as_deref(), b.expires_at.as_deref())?,
            metadata: b.metadata.unwrap_or_default(),
            allowed_ips: super::edit::parse_ips(&b.allowed_ips.unwrap_or_default())?,
            // A key caller's new keys meet its own limits unless it says otherwise
            // (and only the operator may say otherwise: `check_limits`).
            limits: match b.limits {
                Some(l) => l,
                None => caller.key().map(|k| k.limits.clone()).unwrap_or_default(),
            },
            plan: match b.plan {
                Some(p) => crate::keys::plan_named(p),
                None => caller.key().and_then(|k| k.plan.clone()),
            },
            quota: b.quota.as_ref().map(quota_input).transpose()?.flatten(),
            // A key caller's new keys spend its quota (`check_limits` refuses another).
            shared_quota: caller
                .key()
                .map(|k| (k.quota.clone(), k.quota_counter.clone())),
        };
        let policy = self.policy.load_full();
        let rules = self.rules(&policy);
        let prepared = lifecycle::prepare(&rules, new)?;
        let k = prepared.key();
        caller.check_owner(&k.business_id, &k.user_id)?;
        caller.check_mint(&policy, &k.scopes, &k.locations, &k.grants)?;
        caller.check_extras(None, &k.metadata, &k.allowed_ips, true)?;
        caller.check_limits(&k.limits, k.plan.as_deref(), None)?;
        if b.quota.is_some() && caller.key().is_some() {
            return Err(super::give::quota_forbidden());
        }
        let (record, secret) =
            lifecycle::create_prepared(&*self.store, &self.authn.prefix, prepared, &caller.actor())
                .await?;
        tracing::info!(key_id = %record.id, business_id = %record.business_id, actor = %caller.actor(), "admin API: key created");
        Ok(with_secret(&record, &secret))
    }

    /// `GET /v1/keys`.
    pub(super) async fn list_keys(&self, caller: &Caller, raw_query: Option<&str>) -> Answer {
        let mut q = input::query(
            raw_query,
            &[
                "business_id",
                "user_id",
                "search",
                "status",
                "limit",
                "cursor",
            ],
        )?;
        let status = q
            .remove("status")
            .map(|s| {
                s.parse::<Status>().map_err(|()| {
                    AdminError::invalid("status", "must be active, disabled, expired or revoked")
                })
            })
            .transpose()?;
        let limit = input::limit(q.get("limit").map(String::as_str))?;
        let mut query = ListQuery {
            business_id: q.remove("business_id"),
            user_id: q.remove("user_id"),
            search: q.remove("search"),
            status,
            limit,
            cursor: q.remove("cursor"),
            now: Timestamp::now(),
        };
        // Confine the listing to what the caller may see: asking for more finds nothing.
        let (business, user) = caller.confine();
        for (wanted, allowed) in [
            (&mut query.business_id, business),
            (&mut query.user_id, user),
        ] {
            if let Some(allowed) = allowed {
                if wanted.as_deref().is_some_and(|w| w != allowed) {
                    return Ok(json(
                        StatusCode::OK,
                        &serde_json::json!({"keys": [], "next_cursor": null}),
                    ));
                }
                *wanted = Some(allowed.to_owned());
            }
        }
        let page = self.store.list(&query).await?;
        let keys: Vec<_> = page.keys.iter().map(|r| r.to_json(query.now)).collect();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({"keys": keys, "next_cursor": page.next_cursor}),
        ))
    }

    /// `GET /v1/keys/{id}`.
    pub(super) async fn show_key(&self, caller: &Caller, id: &str) -> Answer {
        let record = self.visible(caller, id).await?;
        let now = Timestamp::now();
        let mut body = record.to_json(now);
        let policy = self.policy.load_full();
        if let Some(quota) = policy.quota_for(&record) {
            let standing = crate::quotas::standing(&*self.store, quota, &record, now).await?;
            body["quota"] = standing;
        }
        Ok(json(StatusCode::OK, &body))
    }

    /// `DELETE /v1/keys/{id}`: revoked everywhere; revoking twice is fine (still 204).
    pub(super) async fn revoke_key(&self, caller: &Caller, id: &str) -> Answer {
        let record = self.visible(caller, id).await?;
        lifecycle::revoke(&*self.store, &record.id, &caller.actor()).await?;
        tracing::info!(key_id = %record.id, actor = %caller.actor(), "admin API: key revoked");
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        Ok(r)
    }

    /// `POST /v1/keys/{id}/rotate`: the new key carries the old key's power, so the
    /// caller must hold that power too (else rotating would mint it a secret beyond its own).
    pub(super) async fn rotate_key(&self, caller: &Caller, id: &str, body: &[u8]) -> Answer {
        let b: RotateBody = input::json(body, true)?;
        let grace = b
            .grace
            .as_deref()
            .map(crate::config::parse_duration)
            .transpose()
            .map_err(|m| AdminError::invalid("grace", m))?
            .unwrap_or_default();
        if grace > std::time::Duration::from_secs(366 * 86_400) {
            return Err(AdminError::invalid("grace", "must be at most a year"));
        }
        let expiry = expiry(b.expires_in.as_deref(), b.expires_at.as_deref())?;
        let old = self.visible(caller, id).await?;
        let policy = self.policy.load_full();
        caller.check_mint(&policy, &old.scopes, &old.locations, &old.grants)?;
        let (record, secret) = lifecycle::rotate(
            &*self.store,
            &self.rules(&policy),
            &old.id,
            grace,
            expiry,
            &caller.actor(),
        )
        .await?;
        tracing::info!(old_key_id = %old.id, key_id = %record.id, actor = %caller.actor(), "admin API: key rotated");
        Ok(with_secret(&record, &secret))
    }

    /// `GET /v1/policy`: the active policy's scopes, roles, locations and routes.
    pub(super) fn show_policy(&self) -> Response<Full<Bytes>> {
        json(StatusCode::OK, &self.policy.load().to_json())
    }

    /// `GET /v1/upstreams`: every upstream's targets and their health; the admin token or
    /// a `keygate:admin` key (a self key is refused: it is the operator's view).
    pub(super) fn show_upstreams(&self, caller: &Caller) -> Answer {
        if matches!(caller, Caller::OwnUser(_)) {
            return Err(AdminError::Forbidden(format!(
                "the upstreams need the admin token or a {ADMIN_SCOPE} key"
            )));
        }
        Ok(json(StatusCode::OK, &self.upstreams.to_json()))
    }

    /// `GET /v1/audit`: newest first; a key caller sees its own business only, and a
    /// self key none (the log names other users' keys).
    pub(super) async fn audit(&self, caller: &Caller, raw_query: Option<&str>) -> Answer {
        let q = input::query(raw_query, &["limit"])?;
        let limit = input::limit(q.get("limit").map(String::as_str))?;
        let business = caller.log_reach("the audit log")?;
        let events = self.store.audit(business, limit).await?;
        Ok(json(StatusCode::OK, &serde_json::json!({"events": events})))
    }

    /// `GET /v1/whoami`: what the console shows and pre-fills after sign-in.
    pub(super) fn whoami(caller: &Caller) -> Response<Full<Bytes>> {
        let key = caller.key();
        json(
            StatusCode::OK,
            &serde_json::json!({
                "kind": caller.kind(),
                "actor": caller.actor(),
                "key_id": key.map(|k| &k.id),
                "business_id": key.map(|k| &k.business_id),
                "user_id": key.map(|k| &k.user_id),
                "scopes": key.map(|k| &k.scopes),
                "locations": key.map(|k| &k.locations),
                "grants": key.map(|k| &k.grants),
            }),
        )
    }
}
