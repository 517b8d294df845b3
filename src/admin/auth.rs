//! Who is calling the admin API, and what they may do.
//!
//! Job: turn the request's credentials into a [`Caller`] (or 401/403), and answer the
//! permission questions the handlers ask: may this caller see a record, act for an
//! owner, mint a key with these scopes, locations and grants.
//!
//! The model (README, "Permission model"):
//! - `Authorization: Bearer <token>` with the bootstrap token: every business, no limit
//!   on what it mints (beyond the policy).
//! - `X-API-Key` with a key holding `keygate:admin` (as a direct scope): every user of
//!   the key's own business.
//! - `X-API-Key` with a key holding `keygate:self`: only keys whose `user_id` is the
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
use crate::cache::Lookup;
use crate::keys::{self, Grant, KeyRecord, Status, Timestamp};
use crate::policy::{ADMIN_SCOPE, Policy, SELF_SCOPE};
use crate::store::StoreError;

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

    /// A key caller may only mint what it holds itself. What a key K *holds*:
    /// - a scope `s` everywhere: `s` is one of K's scopes, or `s` belongs to a role K is
    ///   granted at `*` — that is what a scope on a new key means (valid everywhere);
    ///   `keygate:admin` also covers `keygate:self` (managing one user is a part of
    ///   managing them all);
    /// - a scope `s` at location `l`: as above, or `s` belongs to a role granted to K at `l`;
    /// - a role R at `l` (a grant R@l on the new key): every scope of R, held at `l`
    ///   (`l = *`: held everywhere);
    /// - a location `l`: `l` is one of K's locations, or K's locations include `*`
    ///   (only then may the new key have `*`).
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
        for s in scopes {
            if !holds_scope(policy, k, s, "*") {
                return deny(format!("scopes: `{s}`"));
            }
        }
        for l in locations {
            if !holds_location(k, l) {
                return deny(format!("locations: `{l}`"));
            }
        }
        for g in grants {
            let role_scopes = policy
                .roles()
                .find(|(name, _)| *name == g.role)
                .map_or(&[][..], |(_, s)| s);
            for l in &g.locations {
                if !role_scopes.iter().all(|s| holds_scope(policy, k, s, l)) {
                    return deny(format!("grants: `{}@{l}`", g.role));
                }
            }
        }
        Ok(())
    }
}

/// K holds scope `s` at `at` (`*`: everywhere). See [`Caller::check_mint`].
fn holds_scope(policy: &Policy, k: &KeyRecord, s: &str, at: &str) -> bool {
    if k.scopes.iter().any(|x| x == s) {
        return true;
    }
    if s == SELF_SCOPE && k.scopes.iter().any(|x| x == ADMIN_SCOPE) {
        return true;
    }
    k.grants.iter().any(|g| {
        g.locations.iter().any(|l| l == "*" || l == at)
            && policy
                .roles()
                .find(|(name, _)| *name == g.role)
                .is_some_and(|(_, rs)| rs.iter().any(|x| x == s))
    })
}

fn holds_location(k: &KeyRecord, l: &str) -> bool {
    k.locations.iter().any(|x| x == "*" || x == l)
}

/// Authenticates a request: the bootstrap token or an admin/self key. Both at once,
/// or a repeated header, is 400: the caller must be unambiguous.
pub async fn authenticate(admin: &Admin, headers: &HeaderMap) -> Result<Caller, AdminError> {
    let bearer = one_header(headers, &header::AUTHORIZATION)?;
    let key = one_header(headers, &admin.key_header)?;
    match (bearer, key) {
        (Some(_), Some(_)) => Err(AdminError::invalid(
            "Authorization",
            format!(
                "send either a bearer token or an {} header, not both",
                admin.key_header_display
            ),
        )),
        (None, None) => Err(AdminError::Unauthenticated(
            "send the admin token as `Authorization: Bearer <token>` or an admin key in X-API-Key",
        )),
        (Some(auth), None) => bearer_caller(admin, auth),
        (None, Some(secret)) => key_caller(admin, secret).await,
    }
}

fn bearer_caller(admin: &Admin, auth: &str) -> Result<Caller, AdminError> {
    let (scheme, token) = auth.trim().split_once(' ').unwrap_or((auth, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AdminError::Unauthenticated(
            "the Authorization scheme must be Bearer",
        ));
    }
    match &admin.token {
        Some(t) if t.matches(token.trim()) => Ok(Caller::Token),
        Some(_) => Err(AdminError::Unauthenticated("wrong admin token")),
        None => Err(AdminError::Unauthenticated(
            "no admin token is configured (admin.token_env)",
        )),
    }
}

async fn key_caller(admin: &Admin, secret: &str) -> Result<Caller, AdminError> {
    let invalid = AdminError::Unauthenticated("unknown, malformed or revoked API key");
    let Ok(hash) = keys::parse(secret.trim(), &admin.key_prefix) else {
        return Err(invalid);
    };
    let looked_up = tokio::time::timeout(
        admin.store_timeout,
        admin.cache.lookup(&hash, &*admin.store),
    )
    .await
    .map_err(|_| {
        AdminError::Store(StoreError::unavailable(
            "the key store did not answer in time",
        ))
    })?
    .map_err(AdminError::Store)?;
    let Lookup::Found(record) = looked_up else {
        return Err(invalid);
    };
    let now = Timestamp::now();
    match record.status(now) {
        Status::Revoked => return Err(invalid),
        Status::Expired => return Err(AdminError::Unauthenticated("the API key has expired")),
        Status::Active => {}
    }
    if !admin.policy.load().business_enabled(&record.business_id) {
        return Err(AdminError::Forbidden(
            "the key's business has API access switched off".to_owned(),
        ));
    }
    admin.usage.note(&record.id, now);
    if record.scopes.iter().any(|s| s == ADMIN_SCOPE) {
        Ok(Caller::Admin(record))
    } else if record.scopes.iter().any(|s| s == SELF_SCOPE) {
        Ok(Caller::OwnUser(record))
    } else {
        Err(AdminError::Forbidden(format!(
            "the API key holds neither {ADMIN_SCOPE} nor {SELF_SCOPE}"
        )))
    }
}

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
        .map_err(|_| AdminError::Unauthenticated("the credentials are not visible ASCII"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
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
