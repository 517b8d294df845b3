//! keygate: an API-key authentication gateway.
//!
//! A reverse proxy in front of an existing HTTP API: every request carries an API key
//! in `X-API-Key`; keygate looks its SHA-256 up in a key registry through a local cache,
//! checks the key's scopes, roles and locations against a YAML policy, and forwards what
//! is allowed. An admin listener serves health, readiness, the admin API (create, list,
//! rotate, revoke keys; audit), its `OpenAPI` description and a web console.
//!
//! # Architecture map ("→": what a module may use)
//! - [`cli`]: clap commands, exit codes, `FILE:LINE:COL` output, `demo` → all
//! - [`app`]: wiring: builds state from a config, serves bound listeners, drains → all below
//! - [`config`]: YAML → validated, immutable `Config`; no network → `yaml`
//! - [`yaml`]: strict YAML with source positions and did-you-mean hints → (none)
//! - [`headers`]: the "at most one value of this header" rule shared by every reader → (none)
//! - [`keys`]: secret generate/checksum/parse, SHA-256, `KeyRecord`, status; pure → (none)
//! - [`lifecycle`]: create/rotate/revoke rules shared by CLI and admin API → keys, policy, store
//! - [`store`]: `KeyStore` trait + `StoreError`; hashes only → keys
//!   - `store::codec`: what both record codecs share (`Undecodable`, JSON lists, the one
//!     record assembly); `store::contract` (tests): the behaviour both back ends show
//!   - [`store::embedded`]: `SQLite` (WAL) single-node back end, cross-process invalidation;
//!     one file each for schema, connections, codec, listing query, change poller
//!   - [`store::redis`]: Redis / Redis Cluster fleet back end, pub/sub invalidation,
//!     lazy connect with backoff; one file each for schema, Lua scripts, codec, link,
//!     health, subscriber, and `testing` (real `redis-server`s for every test target)
//!   - [`store::deferred`]: an embedded store opened on first use, retried until it opens
//! - [`cache`]: dashmap hash → record with ttl, negative ttl, bound, invalidation,
//!   serve-stale on store errors (`stale_if_error`) → keys, store
//! - [`limits`]: per-route, per-key token buckets (`rate_limit:`), idle state reclaimed → keys, policy
//! - [`expiry`]: keys in use that expire soon: one warning each, a gauge → keys
//! - [`usage`]: batched `last_used_at` writes → keys
//! - [`policy`]: the policy model and `decide()` → `Permitted` | `Denial`; pure → keys
//!   - [`policy::load`]: parse + validate with line numbers; [`policy::path`]: normalise + match;
//!     `policy::index`: candidate routes by first path segment (sub-linear, file order kept)
//! - [`proxy`]: THE request flow, top-down → keys, cache, policy, store, usage
//!   - [`proxy::forward`]: upstream client, header rewrite, streaming, upgrades; decides nothing
//!   - [`proxy::framing`]: guard on the raw HTTP/1 bytes: finds heads framed by both CL and TE
//!   - [`proxy::refusal`]: `Refusal` → status, code, JSON (the only such mapping for the proxy)
//! - [`tls`]: rustls config from PEM, ALPN h2 + http/1.1, certificate reload; knows no routes
//! - [`logging`]: stderr lines buffered per thread, written in batches by a writer thread;
//!   the access line's text and JSON format → config
//! - [`metrics`]: metric names, the Prometheus recorder, `/metrics` text; bounded labels
//! - [`forward_auth`]: auth sub-requests from nginx/Traefik/Envoy through `Proxy::authorise` → proxy
//! - [`admin`]: the admin listener: `(method, path)` router, `/healthz`, `/readyz`, `/metrics`
//!   → keys, lifecycle, store, cache, policy, usage
//!   - [`admin::auth`]: caller authentication (token, admin/self keys) and the
//!     permission model: visibility, ownership, no escalation
//!   - [`admin::keys`]: key CRUD, rotate, audit, policy, whoami; writes only via `lifecycle`
//!   - [`admin::input`]: size-limited JSON bodies and strict query strings → 400 naming the field
//!   - [`admin::openapi`]: `/openapi.json`; [`admin::console`]: the web console (embedded assets)
//!   - [`admin::error`]: `AdminError` → status + JSON (the only such mapping for the admin API)
//!
//! Fences: `keys`, `policy` and `cache` never import hyper or tokio I/O; only
//! `proxy::refusal` and `admin::error` map errors to HTTP statuses; `proxy::forward`
//! never reads the policy; `anyhow` only in `cli`.

pub mod admin;
pub mod app;
pub mod cache;
pub mod cli;
pub mod config;
pub mod expiry;
pub mod forward_auth;
pub mod headers;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod store;
pub mod tls;
pub mod usage;
pub mod yaml;
