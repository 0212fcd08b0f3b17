//! Phase 8, the log: when the response body is dropped (finished or aborted), the access record
//! becomes one JSON access-log line, the request counters and the tenant's signals. Never
//! logs query strings, cookies or bodies; the client's address is shown as its network
//! prefix unless the operator asked for full addresses.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::{Method, Version};
use tokio::time::Instant;

use super::Generation;
use crate::proxy::upstream::UpstreamServer;
use crate::signals::LocalReason;

/// Target of access-log events (filter on it to route them).
pub const ACCESS_TARGET: &str = "rempart::access";

/// What is known about a request, completed along the pipeline.
pub struct AccessRecord {
    pub(crate) generation: Arc<Generation>,
    pub(crate) start: Instant,
    pub(crate) tenant: Option<usize>,
    pub(crate) route: Option<usize>,
    pub(crate) method: Method,
    pub(crate) uri: http::Uri,
    pub(crate) version: Version,
    pub(crate) client: IpAddr,
    pub(crate) status: u16,
    /// Request-body bytes received, counted by the body as it streams (allocated only for
    /// requests forwarded upstream).
    pub(crate) bytes_in: Option<Arc<AtomicU64>>,
    pub(crate) bytes_out: u64,
    pub(crate) upstream: Option<Arc<UpstreamServer>>,
    pub(crate) reason: Option<&'static str>,
    /// What caused a failure (access log `cause`), when known.
    pub(crate) cause: Option<Box<str>>,
    /// Why the gateway answered itself, for the signals (`None`: the origin answered).
    pub(crate) local: Option<LocalReason>,
    /// What the shield knows of the client's network (access log `network`).
    pub(crate) network: ClientNetwork,
    /// The downstream connection's watchdog, told when this request ends.
    pub(crate) conn_clock: Option<Arc<dyn super::context::RequestEnds>>,
}

impl AccessRecord {
    /// A fresh record for a request that starts now.
    pub(crate) fn start<B>(
        generation: Arc<Generation>,
        req: &http::Request<B>,
        client: IpAddr,
        conn_clock: Arc<dyn super::context::RequestEnds>,
    ) -> Self {
        Self {
            generation,
            start: Instant::now(),
            tenant: None,
            route: None,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            client,
            status: 0,
            bytes_in: None,
            bytes_out: 0,
            upstream: None,
            reason: None,
            cause: None,
            local: None,
            network: ClientNetwork::Unknown,
            conn_clock: Some(conn_clock),
        }
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        if let Some(clock) = &self.conn_clock {
            clock.request_finished();
        }
        let g = &self.generation;
        match self.tenant.and_then(|t| g.signals.get(t)) {
            Some(signals) => {
                if signals.request_counted(self.local) % crate::signals::PATH_SAMPLE == 0 {
                    signals.sampled_path(self.uri.path());
                }
                signals.source(crate::signals::source_key(crate::shield::prefix_key(
                    self.client,
                    g.config.prefixes,
                )));
            }
            None => g.gateway_signals.request(self.local),
        }
        let counters = match (self.tenant, self.route) {
            (Some(t), Some(r)) => &g.route_counters[t][r],
            _ => &g.unrouted_counters,
        };
        counters[crate::metrics::status_class_index(self.status)].inc();
        if !g.access_log {
            return;
        }
        let tenant = self.tenant.map_or("-", |t| g.config.tenants[t].id.as_str());
        let route = match (self.tenant, self.route) {
            (Some(t), Some(r)) => g.config.tenants[t].routes[r].name.as_str(),
            _ => "-",
        };
        let version = match self.version {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        tracing::info!(
            target: ACCESS_TARGET,
            tenant,
            route,
            method = self.method.as_str(),
            path = %crate::common::LogText::new(self.uri.path(), MAX_LOGGED_PATH),
            version,
            status = self.status,
            bytes_in = self.bytes_in.as_ref().map_or(0, |b| b.load(Ordering::Relaxed)),
            bytes_out = self.bytes_out,
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            client = %ClientField(self.client, &g.config),
            upstream = self.upstream.as_ref().map_or("-", |u| u.address.as_str()),
            reason = self.reason.unwrap_or("-"),
            cause = self.cause.as_deref().unwrap_or("-"),
            network = self.network.name(),
        );
    }
}

/// What the shield knows of a client's network, shown apart in the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNetwork {
    /// Nothing particular.
    Unknown,
    /// An address or prefix carrying several verified clients, whose scaled limit let this
    /// request through.
    Shared,
    /// One of the tenant's `trusted_networks`.
    Trusted,
}

impl ClientNetwork {
    /// Its name in the access log.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "-",
            Self::Shared => "shared",
            Self::Trusted => "trusted",
        }
    }
}

/// Bytes of a path the access log keeps.
const MAX_LOGGED_PATH: usize = 256;

/// The client address as the access log shows it: its network prefix unless the operator
/// asked for full addresses (`log.client_address = "full"`).
struct ClientField<'a>(IpAddr, &'a crate::config::Runtime);

impl std::fmt::Display for ClientField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.1.log_full_client_address {
            write!(f, "{}", self.0)
        } else {
            f.write_str(&crate::shield::display_prefix(self.0, self.1.prefixes))
        }
    }
}
