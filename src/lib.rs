//! Rempart: an edge gateway for public bodies that keeps their web services reachable, and
//! citizens' data safe, while they are under attack.
//!
//! The request path (see `docs/request-lifecycle.md`): `server` accepts a connection (cap,
//! PROXY protocol, TLS with a certificate per tenant chosen by SNI) and serves HTTP/1.1 (its
//! own fast path, or hyper) or HTTP/2 (hyper); each request goes through
//! `pipeline::Gateway::handle`, whose phases (one file each in `pipeline`) find the tenant
//! and route, apply the shield and admission, forward through `proxy`'s upstream client,
//! stream the answer through body taps and log it. Every local answer becomes a response in
//! exactly one place, `pipeline::respond`. What the pipeline observes goes to `signals`,
//! read once a second by consumers; state several nodes will share sits behind `state`.
//! Configuration swaps atomically on reload (`reload`); `admin` serves metrics and the
//! operators' API on a loopback listener. The allowed dependencies between modules are
//! listed, and tested, in `dependency_rules`.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod acme;
pub mod admin;
pub mod app;
pub mod canonical;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod common;
pub mod config;
pub mod degraded;
pub mod demo;
#[cfg(test)]
mod dependency_rules;
pub mod drill;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod handover;
pub mod metrics;
pub mod outbox;
pub mod pipeline;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod service;
pub mod shield;
pub mod signals;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod watch;
