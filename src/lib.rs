//! Rempart: an edge gateway for public bodies that keeps their web services reachable, and
//! citizens' data safe, while they are under attack.
//!
//! The request path (see `docs/request-lifecycle.md`): `server` accepts a connection (cap,
//! PROXY protocol, TLS with a certificate per tenant chosen by SNI) and serves HTTP/1.1 or
//! HTTP/2 with hyper; each request goes through `proxy::Gateway::handle`, which finds the
//! tenant and route from the validated `config::Runtime`, forwards to an upstream pool
//! (`proxy::upstream`, health-checked by `proxy::health`), streams the response back and
//! logs it. Errors become branded pages in exactly one place, `proxy::respond`.
//! Configuration swaps atomically on reload (`config::reload`); `admin` serves metrics and
//! the reload endpoint on a loopback listener.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
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
pub mod metrics;
pub mod pipeline;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod shield;
pub mod signals;
pub mod state;
pub mod status;
pub mod telemetry;
