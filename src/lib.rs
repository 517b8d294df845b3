//! keygate: an API-key authentication gateway.
//!
//! A reverse proxy in front of an existing HTTP API: every request carries an API key
//! in `X-API-Key`; keygate looks its SHA-256 up in a key registry through a local cache,
//! checks the key's scopes, roles and locations against a YAML policy, and forwards what
//! is allowed. An admin listener serves health, readiness, the admin API (create, list,
//! edit, suspend, rotate, revoke keys; audit), its `OpenAPI` description and a web console.
//!
//! # Architecture map
//! "→": the other top-level modules each one imports today; a sub-module's use of its own
//! parent and siblings (`proxy::forward` → `proxy::refusal`) is not listed.
//! - [`cli`]: clap commands, exit codes, `FILE:LINE:COL` output → app, config, keys, lifecycle,
//!   logging, policy, store, tls
//!   - `cli::args`: the clap definition (every flag with help), also the source of
//!     `keygate completions` and `keygate man` → (none)
//!   - [`cli::demo`]: `keygate demo` (gateway, echo upstream, console sign-in key)
//!     → app, config, keys, lifecycle, logging, policy;
//!     `cli::explain`: `keygate policy explain` → keys, policy, proxy;
//!     `cli::diff`: `keygate policy diff`, access through `Policy::reach` → app, keys,
//!     policy, store; `cli::keys`: `keys create | list | show | revoke | rotate` and
//!     what every key command shares → app, config, keys, lifecycle, policy, store;
//!     `cli::edit`: `keys update | suspend | resume | import` → keys, lifecycle;
//!     `cli::events`: `keygate events test` → config, events
//! - [`app`]: wiring: builds state from a config, serves bound listeners, drains → admin, cache,
//!   config, events, expiry, keys, limits, metrics, policy, proxy, store, tls, usage
//! - [`config`]: YAML → validated, immutable `Config`, one section per section of the file
//!   (`config.cache`, `config.upstream`, …), each passed whole to its user; no network → yaml
//! - [`yaml`]: strict YAML with source positions and did-you-mean hints → (none)
//!   - `yaml::indent`: a syntax error caused by indentation or a tab, pointed at the line
//!     and explained ("indented more than line 4 ...") → (none)
//! - [`headers`]: the "at most one value of this header" rule shared by every reader, and
//!   the memo of a record's header values → (none)
//! - [`json`]: strict JSON objects from people (admin bodies, import lines): `(field, why)`
//!   errors with the config's did-you-mean → yaml
//! - [`keys`]: secret generate/checksum/parse, SHA-256, `KeyRecord` (metadata, allowlist),
//!   status; pure → headers
//! - [`lifecycle`]: create/rotate/revoke rules shared by CLI and admin API → config, events,
//!   json, keys, policy, store, yaml
//!   - `lifecycle::edit`: update, suspend, resume, as a checked compare-and-set;
//!     [`lifecycle::import`]: JSON Lines of keys in use elsewhere
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
//!   serve-stale on store errors (`stale_if_error`) → config (`CacheSettings`), keys, store
//! - [`authn`]: the key header → parse → cache look-up (`store.timeout`, `stale_if_error`),
//!   one path for the proxy and the admin API; typed errors each maps itself → keys, cache, store
//! - [`limits`]: per-route token buckets (`rate_limit:`) per key, user, business or address,
//!   counted by this gateway (`limits/local.rs`) or the fleet through leases from Redis
//!   (`limits/fleet.rs`); idle state reclaimed → keys, policy, store
//! - [`expiry`]: keys in use that expire soon: one warning each, a gauge → keys
//! - [`usage`]: batched `last_used_at` writes and request counts → keys
//! - [`events`]: key events queued in the store (`emit`, by lifecycle; `Notices`, by the
//!   proxy: expiring, rate limited, quota exceeded) and their signed delivery to webhooks
//!   by the lease holder (`events::deliver`) → config, keys, store, upstream (`connect`, `tls`)
//! - [`policy`]: the policy model, the built-in `keygate:` scopes, the one permission rule
//!   (`admit`, `holds`, `holds_location`) and `decide()` on it → `Permitted` | `Denial`;
//!   pure → headers, keys, yaml
//!   - [`policy::load`]: parse + validate with line numbers → yaml
//!   - [`policy::path`]: normalise + match; owns percent-encoding (`hex`, `is_unreserved`) → (none)
//!   - `policy::reach`: which routes (at which locations) a key may use, from the one rule;
//!     what `policy diff` compares → keys
//!   - `policy::index`: candidate routes by first path segment (sub-linear, file order kept)
//!     → (none)
//!   - `policy::permit`: `Matched`, `Permitted` and `RouteName`, built only by `policy`;
//!     `policy::location`: a route's location from path, header or query → headers
//!   - [`policy::watch`]: file-change + SIGHUP reload, atomic swap, keeps old on error → metrics
//! - [`proxy`]: THE request flow, top-down → authn, cache, events, expiry, headers, keys,
//!   limits, logging, metrics, policy, store, usage
//!   - [`proxy::forward`]: what is sent upstream, streaming, upgrades, resend rule; decides
//!     nothing → upstream (where to), policy (`Permitted` only; it never reads the policy)
//!   - [`proxy::rewrite`]: header rules: hop-by-hop, key header out, identity and metadata,
//!     X-Forwarded-* → keys, policy (`Permitted` only)
//!   - [`proxy::client`]: the client's address for IP allowlists (peer or trusted chain) → (none)
//!   - [`proxy::affinity`]: a client connection's own upstream connection (lease, keep) → (none)
//!   - [`proxy::answer_timer`]: the lazily re-armed per-connection answer timer → (none)
//!   - [`proxy::heard`]: notes whether an upstream connection said anything (resend rule) → (none)
//!   - [`proxy::framing`]: guard on the raw HTTP/1 bytes: finds heads framed by both CL and TE
//!     → (none)
//!   - [`proxy::forward_auth`]: auth sub-requests from nginx/Traefik/Envoy through
//!     `Proxy::authorise`, identity headers by `proxy::rewrite` → headers
//!   - [`proxy::refusal`]: `Refusal` → status, code, JSON (the only such mapping for the proxy)
//!     → policy (`Denial`, `path::BadPath`), store (`StoreError`)
//! - [`tls`]: rustls config from PEM, ALPN h2 + http/1.1, certificate reload; knows no routes
//!   → (none)
//! - [`upstream`]: the upstream services (default + named), their targets, keep-alive pools,
//!   balancing, health (active and passive), per-target metrics and `/v1/upstreams` → config,
//!   metrics, proxy (`affinity::Kept`, `heard`, `forward::UpBody`), report, tls
//!   - [`upstream::tls`]: rustls client configs (CA file or system store, mTLS, name);
//!     [`upstream::connect`]: TCP + TLS to one target; [`upstream::balance`]: round robin,
//!     least requests; [`upstream::health`]: ejection and re-admission (`upstream::check`:
//!     the active `GET` and the passive back-off probe);
//!     [`upstream::cause`]: failure classes (labels, access line)
//! - [`logging`]: stderr lines buffered per thread, written in batches by a writer thread;
//!   the access line's text and JSON format → config
//! - [`metrics`]: metric names, the Prometheus recorder, `/metrics` text; bounded labels → (none)
//! - [`report`]: an error and its causes on one line, each printed once (CLI and logs);
//!   every `Display` says its own layer's words only → (none)
//! - [`admin`]: the admin listener: `(method, path)` router, `/healthz`, `/readyz`, `/metrics`
//!   → authn, cache, expiry, metrics, policy, store, usage
//!   - [`admin::auth`]: caller authentication (token, or a key through `authn` and
//!     `Policy::admit`) and the permission model: visibility, ownership, no escalation,
//!     each asking the policy's one rule (`Policy::holds`), never a copy of it → authn,
//!     headers, keys, policy
//!   - [`admin::keys`]: key CRUD, rotate, audit, policy, whoami; writes only via `lifecycle`
//!     → config, keys, lifecycle, policy, store; `admin::edit`: PATCH, suspend, resume
//!     through `lifecycle::update` with the no-escalation check → keys, lifecycle
//!   - [`admin::input`]: size-limited JSON bodies and strict query strings → 400 naming the field
//!     (unknown fields with the config's did-you-mean) → json
//!   - [`admin::openapi`]: `/openapi.json`; [`admin::console`]: the web console (embedded assets)
//!     → (none)
//!   - [`admin::error`]: `AdminError` → status + JSON (the only such mapping for the admin API)
//!     → lifecycle, store
//!
//! Fences: `keys`, `policy` and `cache` never import hyper or tokio I/O; only
//! `proxy::refusal` and `admin::error` map errors to HTTP statuses; `proxy::forward`
//! never reads the policy; `anyhow` only in `cli`.

pub mod admin;
pub mod app;
pub mod authn;
pub mod cache;
pub mod cli;
pub mod config;
pub mod events;
pub mod expiry;
pub mod headers;
pub mod json;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod quotas;
pub mod report;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod usage;
pub mod yaml;
