//! The one integration-test binary: real listeners on 127.0.0.1 ephemeral ports.

mod support;

mod acme;
mod admin;
mod browser;
mod challenge;
mod check;
mod cluster;
mod contrib;
mod degraded;
mod drill;
mod errors;
mod fast_path;
mod forwarding;
mod framing;
mod guard;
mod health;
mod package;
mod process;
mod protocols;
mod reload;
mod shared;
mod shield;
mod status;
mod subscriptions;
mod tls;
mod upgrade;
mod watch;

/// One end-to-end test per class of attack the gateway must neutralise (h1 and h2).
#[path = "../security/mod.rs"]
mod security;
