//! Who is calling the admin API, and what they may do.
//!
//! Job: turn the request's credentials into a [`Caller`] (or 401/403), and answer the
//! permission questions the handlers ask: may this caller see a record, act for an
//! owner, mint a key with these scopes, locations and grants.
//!
//! Nothing here re-decides what the proxy decides: a key is read, parsed and looked up
//! by [`crate::authn`] (the proxy's path: same header, same `store.timeout`, same
//! `stale_if_error`), admitted by [`Policy::admit`] (revoked, expired, business), and
//! what it holds is [`Policy::holds`] and [`policy::holds_location`]. This module adds
//! only what is the admin API's own: the built-in scopes and the bootstrap token.
//!
//! The model (README, "Permission model"):
//! - `Authorization: Bearer <token>` with the bootstrap token: every business, no limit
//!   on what it mints (beyond the policy).
//! - the key header (`keys.header`, `X-API-Key` by default) with a key holding
//!   `keygate:admin` (a direct scope: no role may hold a `keygate:` scope): every user
//!   of the key's own business.
//! - the key header with a key holding `keygate:self`: only keys whose `user_id` is the
//!   key's own user (in its own business).
//! - A key of another business is invisible: 404, exactly as an unknown id. A visible
//!   key the caller may not act on (a self key and another user's key): 403.
//! - A key can never mint power it does not hold itself (see [`Caller::check_mint`]).
//!
//! Invariants: the bootstrap token is only kept as its SHA-256 and compared in constant
//! time (no early exit on the first differing byte, no length leak); a revoked,
//! expired, unknown or malformed key is 401, never a partial caller; a key whose
//! business is disabled by the policy is 403. Why hash the token: comparing two
//! fixed-length digests with `subtle` keeps the comparison constant-time whatever the
//! presented length.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Admin;
use super::error::AdminError;
use crate::keys::{Grant, KeyRecord, Timestamp};
use crate::policy::{self, ADMIN_SCOPE, Policy, SELF_SCOPE};

/// The bootstrap admin token, kept only as its SHA-256.
pub struct Token([u8; 32]);

impl Token {
    /// `None` for an empty token: an empty secret must never authenticate.
    pub fn new(token: &str) -> Option<Self> {
        let t = token.trim();
        (!t.is_empty()).then(|| Self(Sha256::digest(t.as_bytes()).into()))
    }

    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

/// An authenticated caller of the admin API.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The bootstrap token: every business.
    Token,
    /// A key holding `keygate:admin`: every user of its business.
    Admin(Arc<KeyRecord>),
    /// A key holding `keygate:self` (and not `keygate:admin`): only its own user.
    OwnUser(Arc<KeyRecord>),
}

impl Caller {
    /// What a log of many users' keys (the audit log, key events) may show this caller:
    /// everything (`None`) for the token, its own business for a `keygate:admin` key; a
    /// `keygate:self` key is refused (such logs name other users' keys). `what` names the
    /// log in the refusal.
    pub fn log_reach(&self, what: &str) -> Result<Option<&str>, AdminError> {
        match self {
            Self::Token => Ok(None),
            Self::Admin(k) => Ok(Some(k.business_id.as_str())),
            Self::OwnUser(_) => Err(AdminError::Forbidden(format!(
                "{what} needs the admin token or a {ADMIN_SCOPE} key"
            ))),
        }
    }

    /// Who did it, as written in `created_by` and the audit log: `token` or `key:<id>`.
    pub fn actor(&self) -> String {
        match self {
            Self::Token => "token".to_owned(),
            Self::Admin(k) | Self::OwnUser(k) => format!("key:{}", k.id),
        }
    }

    /// The caller's key, if it is one.
    pub fn key(&self) -> Option<&KeyRecord> {
        match self {
            Self::Token => None,
            Self::Admin(k) | Self::OwnUser(k) => Some(k),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Admin(_) => "admin",
            Self::OwnUser(_) => "self",
        }
    }

    /// A record of another business is 404 (invisible); another user's record, for a
    /// self key, is 403.
    pub fn check_visible(&self, record: &KeyRecord) -> Result<(), AdminError> {
        let Some(k) = self.key() else {
            return Ok(());
        };
        if k.business_id != record.business_id {
            return Err(AdminError::NotFound);
        }
        if let Self::OwnUser(k) = self
            && k.user_id != record.user_id
        {
            return Err(AdminError::Forbidden(format!(
                "a {SELF_SCOPE} key manages only its own user's keys"
            )));
        }
        Ok(())
    }

    /// Whether the caller may own keys for `business`/`user` (creating one).
    pub fn check_owner(&self, business: &str, user: &str) -> Result<(), AdminError> {
        let Some(k) = self.key() else {
            return Ok(());
        };
        if k.business_id != business {
            return Err(AdminError::Forbidden(format!(
                "business_id: this key manages only business `{}`",
                k.business_id
            )));
        }
        if let Self::OwnUser(k) = self
            && k.user_id != user
        {
            return Err(AdminError::Forbidden(format!(
                "user_id: a {SELF_SCOPE} key manages only its own user `{}`",
                k.user_id
            )));
        }
        Ok(())
    }

    /// The (business, user) filters the caller's listings are confined to.
    pub fn confine(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Self::Token => (None, None),
            Self::Admin(k) => (Some(&k.business_id), None),
            Self::OwnUser(k) => (Some(&k.business_id), Some(&k.user_id)),
        }
    }

    /// A key caller may only mint what it holds itself, as the policy's one rule says
    /// ([`Policy::holds`], [`policy::holds_location`]):
    /// - a scope `s` on the new key (valid everywhere): K holds `s` everywhere (location
    ///   `None`: one of K's scopes, or of a role K is granted at `*`); `keygate:admin`
    ///   also covers `keygate:self` (managing one user is a part of managing them all);
    /// - a role R at `l` (a grant R@l on the new key): K holds every scope of R at `l`
    ///   (`l = *`: everywhere);
    /// - a location `l`: K holds location `l` (only a key with `*` may give `*`).
    ///
    /// Roles are read from the active `policy`. The bootstrap token holds everything.
    pub fn check_mint(
        &self,
        policy: &Policy,
        scopes: &[String],
        locations: &[String],
        grants: &[Grant],
    ) -> Result<(), AdminError> {
        let Some(k) = self.key() else {
            return Ok(());
        };
        let deny = |what: String| {
            Err(AdminError::Forbidden(format!(
                "{what}: a key cannot grant what it does not hold itself"
            )))
        };
        // The one admin-only addition to the rule: the built-in scopes nest.
        let holds = |s: &str, at: Option<&str>| {
            policy.holds(k, s, at) || (s == SELF_SCOPE && policy.holds(k, ADMIN_SCOPE, None))
        };
        for s in scopes {
            if !holds(s, None) {
                return deny(format!("scopes: `{s}`"));
            }
        }
        for l in locations {
            if !policy::holds_location(k, l) {
                return deny(format!("locations: `{l}`"));
            }
        }
        for g in grants {
            let role_scopes = policy
                .roles()
                .find(|(name, _)| *name == g.role)
                .map_or(&[][..], |(_, s)| s);
            for l in &g.locations {
                if !role_scopes.iter().all(|s| holds(s, Some(l))) {
                    return deny(format!("grants: `{}@{l}`", g.role));
                }
            }
        }
        Ok(())
    }
}

/// Authenticates a request: the bootstrap token or an admin/self key. Both at once,
/// or a repeated header, is 400: the caller must be unambiguous.
pub async fn authenticate(admin: &Admin, headers: &HeaderMap) -> Result<Caller, AdminError> {
    let bearer = one_header(headers, &header::AUTHORIZATION)?;
    let key = admin.authn.presented(headers)?;
    let key_header = &admin.authn.header_display;
    match (bearer, key) {
        (Some(_), Some(_)) => Err(AdminError::invalid(
            "Authorization",
            format!("send either a bearer token or an {key_header} header, not both"),
        )),
        (None, None) => Err(AdminError::Unauthenticated(
            format!(
                "send the admin token as `Authorization: Bearer <token>` or an admin key in {key_header}"
            )
            .into(),
        )),
        (Some(auth), None) => bearer_caller(admin, auth),
        (None, Some(secret)) => key_caller(admin, secret).await,
    }
}

fn bearer_caller(admin: &Admin, auth: &str) -> Result<Caller, AdminError> {
    let (scheme, token) = auth.trim().split_once(' ').unwrap_or((auth, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AdminError::Unauthenticated(
            "the Authorization scheme must be Bearer".into(),
        ));
    }
    match &admin.token {
        Some(t) if t.matches(token.trim()) => Ok(Caller::Token),
        Some(_) => Err(AdminError::Unauthenticated("wrong admin token".into())),
        None => Err(AdminError::Unauthenticated(
            "no admin token is configured (admin.token_env)".into(),
        )),
    }
}

/// A key caller: authenticated as the proxy authenticates keys, admitted by the policy,
/// then sorted by the built-in scope it holds.
async fn key_caller(admin: &Admin, secret: &str) -> Result<Caller, AdminError> {
    let (_, record) = admin.authn.authenticate(secret).await?;
    let now = Timestamp::now();
    let policy = admin.policy.load();
    policy.admit(&record, now)?;
    admin.usage.counts.note_use(&record, now);
    if policy.holds(&record, ADMIN_SCOPE, None) {
        Ok(Caller::Admin(record))
    } else if policy.holds(&record, SELF_SCOPE, None) {
        Ok(Caller::OwnUser(record))
    } else {
        Err(AdminError::Forbidden(format!(
            "the API key holds neither {ADMIN_SCOPE} nor {SELF_SCOPE}"
        )))
    }
}

/// The `Authorization` header, once; the key header is [`crate::authn`]'s to read.
fn one_header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, AdminError> {
    let Some(first) = crate::headers::at_most_one(headers, name)
        .map_err(|_| AdminError::invalid(name.as_str(), "more than one such header"))?
    else {
        return Ok(None);
    };
    first
        .to_str()
        .map(Some)
        .map_err(|_| AdminError::Unauthenticated("the credentials are not visible ASCII".into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys;
    use std::path::Path;

    const POLICY: &str = "version: 1
scopes:
  items:read: Read
  items:write: Write
roles:
  viewer: [items:read]
  editor: [items:read, items:write]
locations: [hq, plant-1]
routes: []
";

    fn record(id: &str, business: &str, user: &str) -> KeyRecord {
        KeyRecord {
            identity: crate::headers::Memo::default(),
            id: id.to_owned(),
            hash: keys::hash(id),
            name: "n".to_owned(),
            description: String::new(),
            prefix: "kg_abcdef".to_owned(),
            user_id: user.to_owned(),
            business_id: business.to_owned(),
            scopes: vec![],
            locations: vec![],
            grants: vec![],
            created_at: Timestamp(1),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            created_by: "test".to_owned(),
            enabled: true,
            metadata: crate::keys::Metadata::new(),
            allowed_ips: Vec::new(),
            updated_at: None,
            limits: crate::keys::KeyLimits::new(),
            plan: None,
            quota: None,
            quota_counter: String::new(),
        }
    }

    fn key(scopes: &[&str], locations: &[&str], grants: &[(&str, &[&str])]) -> Caller {
        let mut r = record("kid_x", "acme", "ann");
        r.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        r.locations = locations.iter().map(|s| (*s).to_owned()).collect();
        r.grants = grants
            .iter()
            .map(|(role, ls)| Grant {
                role: (*role).to_owned(),
                locations: ls.iter().map(|s| (*s).to_owned()).collect(),
            })
            .collect();
        Caller::Admin(Arc::new(r))
    }

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| (*s).to_owned()).collect()
    }

    fn g(role: &str, ls: &[&str]) -> Grant {
        Grant {
            role: role.to_owned(),
            locations: v(ls),
        }
    }

    #[test]
    fn minting_never_exceeds_what_the_key_holds() {
        let p = Policy::parse(Path::new("p.yaml"), POLICY).unwrap();
        let k = key(
            &["keygate:admin", "items:read"],
            &["hq"],
            &[("editor", &["hq"])],
        );
        assert!(
            k.check_mint(&p, &v(&["items:read"]), &v(&["hq"]), &[])
                .is_ok()
        );
        assert!(k.check_mint(&p, &v(&["keygate:self"]), &[], &[]).is_ok());
        // items:write only at hq, through a role: not everywhere.
        assert!(k.check_mint(&p, &v(&["items:write"]), &[], &[]).is_err());
        assert!(k.check_mint(&p, &[], &[], &[g("editor", &["hq"])]).is_ok());
        assert!(k.check_mint(&p, &[], &[], &[g("viewer", &["hq"])]).is_ok());
        // viewer = items:read, held directly, so everywhere.
        assert!(
            k.check_mint(&p, &[], &[], &[g("viewer", &["plant-1", "*"])])
                .is_ok()
        );
        assert!(
            k.check_mint(&p, &[], &[], &[g("editor", &["plant-1"])])
                .is_err()
        );
        assert!(k.check_mint(&p, &[], &[], &[g("editor", &["*"])]).is_err());
        assert!(k.check_mint(&p, &[], &v(&["plant-1"]), &[]).is_err());
        assert!(k.check_mint(&p, &[], &v(&["*"]), &[]).is_err());

        let everywhere = key(&["keygate:self"], &["*"], &[("editor", &["*"])]);
        assert!(
            everywhere
                .check_mint(
                    &p,
                    &v(&["items:write"]),
                    &v(&["*", "hq"]),
                    &[g("editor", &["plant-1"])]
                )
                .is_ok()
        );
        assert!(
            everywhere
                .check_mint(&p, &v(&["keygate:admin"]), &[], &[])
                .is_err()
        );
        assert!(
            Caller::Token
                .check_mint(&p, &v(&["keygate:admin"]), &v(&["*"]), &[])
                .is_ok()
        );
    }

    #[test]
    fn other_businesses_are_invisible_and_other_users_forbidden() {
        let admin = key(&["keygate:admin"], &[], &[]);
        let mut mine = record("kid_y", "acme", "bob");
        assert!(admin.check_visible(&mine).is_ok());
        mine.business_id = "other".to_owned();
        assert!(matches!(
            admin.check_visible(&mine),
            Err(AdminError::NotFound)
        ));
        let Caller::Admin(r) = admin else {
            unreachable!()
        };
        let own = Caller::OwnUser(r);
        mine.business_id = "acme".to_owned();
        assert!(matches!(
            own.check_visible(&mine),
            Err(AdminError::Forbidden(_))
        ));
        mine.user_id = "ann".to_owned();
        assert!(own.check_visible(&mine).is_ok());
        assert!(own.check_owner("acme", "bob").is_err());
        assert!(own.check_owner("other", "ann").is_err());
        assert!(own.check_owner("acme", "ann").is_ok());
    }

    #[test]
    fn token_compares_by_digest_and_refuses_empty() {
        assert!(Token::new("  ").is_none());
        let t = Token::new("s3cret").unwrap();
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre"));
        assert!(!t.matches(""));
    }
}
