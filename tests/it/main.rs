//! The one integration-test binary: real keygate processes, a real upstream, loopback only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::too_many_lines
)]

mod admin;
mod cli;
mod connections;
mod console;
mod demo;
mod events;
mod forward_auth;
mod hardening;
mod import;
mod keys_edit;
mod limits;
mod openapi;
mod ops;
mod proxy;
mod quotas;
mod redis;
mod reload;
mod setup;
mod support;
mod tls;
mod upstreams;
mod usage;
mod websocket;
