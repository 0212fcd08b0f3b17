//! What a request carries through the phases: the connection's facts (`ConnInfo`, shared by
//! every request on a connection) and the request's own context (`RequestCtx`), which each
//! phase reads and completes.

use std::sync::Arc;

use http::HeaderValue;

use super::log::AccessRecord;
use super::Generation;
use crate::config::runtime::{Route, Tenant};
use crate::proxy::headers;
use crate::shield::admission::Priority;
use crate::signals::TenantSignals;
use crate::state::TenantFlags;

/// Per-connection facts handed to every request on it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Client address (from PROXY protocol when enabled).
    pub peer: std::net::SocketAddr,
    /// The client IP as a header value, computed once.
    pub peer_value: HeaderValue,
    /// The client's `for=` element of `Forwarded`, computed once.
    pub forwarded_for: String,
    /// `http` or `https`.
    pub proto: &'static str,
    /// JA4 of the TLS ClientHello (TLS connections whose hello parsed).
    pub tls_fingerprint: Option<Arc<str>>,
    /// HTTP fingerprint of the connection's first HTTP/1 request head, once read.
    pub http_fingerprint: Arc<std::sync::OnceLock<Box<str>>>,
    /// The connection's watchdog; each request's access record tells it when it ends.
    pub clock: Arc<dyn RequestEnds>,
    /// The `Forwarded` value of the connection's first request, reused for the next ones.
    pub forwarded: headers::ForwardedCache,
    /// The connection's fingerprints (JA4 and HTTP) as a bucket of the watch's fingerprint
    /// mix, made at the first request that reaches the shield.
    pub fingerprint_bucket: std::sync::OnceLock<u8>,
}

impl ConnInfo {
    /// The bucket of the connection's fingerprints (`signals::FINGERPRINT_BUCKETS`).
    pub fn fingerprint_bucket(&self) -> u8 {
        *self.fingerprint_bucket.get_or_init(|| {
            let tls = self.tls_fingerprint.as_deref().unwrap_or("-");
            let http = self.http_fingerprint.get().map_or("-", |f| &**f);
            crate::signals::fingerprint_bucket(tls, http)
        })
    }
}

/// Told when each request on a connection ends (the server's watchdog, which then waits for
/// the next request head).
pub trait RequestEnds: Send + Sync + std::fmt::Debug {
    /// A response was sent completely, or abandoned.
    fn request_finished(&self);
}

/// One request's context once its tenant is known: the generation it runs on, its
/// connection, what the phases decided so far, and its access record (completed along the
/// way, logged when the response body is dropped).
pub struct RequestCtx<'a> {
    /// The configuration generation the request runs on from start to end.
    pub generation: &'a Arc<Generation>,
    /// The downstream connection.
    pub conn: &'a ConnInfo,
    /// The request's host, lower case, without port (borrowed from the request where the
    /// request outlives the context: the status site's pages).
    pub host: std::borrow::Cow<'a, str>,
    /// Index of the tenant in `generation.config.tenants`.
    pub tenant_idx: usize,
    /// Index of the route in the tenant's routes, once routed.
    pub route_idx: Option<usize>,
    /// The priority at the admission gate (set by the shield).
    pub priority: Priority,
    /// Whether the tenant was calm (not shedding) when the shield decided.
    pub calm: bool,
    /// The canonical path keeps an encoded `/` or `\` (refused unless the route allows it).
    pub encoded_separator: bool,
    /// The client's `Accept-Language`, for local pages.
    pub accept_language: Option<HeaderValue>,
    /// What the data guard learnt (guarded routes), for the answer's tap.
    pub guard: Option<Box<super::guard::Ticket>>,
    /// A pass handed out without a challenge (the town's own networks): the `Set-Cookie`
    /// the origin's answer carries.
    pub grant: Option<Box<HeaderValue>>,
    /// The access record.
    pub record: AccessRecord,
}

impl<'a> RequestCtx<'a> {
    /// The context of a request served by tenant `tenant_idx`.
    pub fn new(
        generation: &'a Arc<Generation>,
        conn: &'a ConnInfo,
        host: std::borrow::Cow<'a, str>,
        tenant_idx: usize,
        accept_language: Option<HeaderValue>,
        mut record: AccessRecord,
    ) -> Self {
        record.tenant = Some(tenant_idx);
        Self {
            generation,
            conn,
            host,
            tenant_idx,
            route_idx: None,
            priority: Priority::Unknown,
            calm: true,
            encoded_separator: false,
            accept_language,
            guard: None,
            grant: None,
            record,
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> &'a Tenant {
        &self.generation.config.tenants[self.tenant_idx]
    }

    /// The route, once routed.
    pub fn route(&self) -> Option<&'a Route> {
        let tenant = self.tenant();
        self.route_idx.map(|r| &tenant.routes[r])
    }

    /// The tenant's defence flags.
    pub fn flags(&self) -> &'a dyn TenantFlags {
        &*self.generation.tenant_flags[self.tenant_idx]
    }

    /// What the tenant's playbook does at its current vigilance level.
    pub fn actions(&self) -> &'a crate::config::runtime::LevelActions {
        self.tenant().playbook.at(self.flags().level())
    }

    /// The tenant's signals.
    pub fn signals(&self) -> &'a TenantSignals {
        &self.generation.signals[self.tenant_idx]
    }

    /// The client's address (behind trusted proxies: the one they name).
    pub fn client(&self) -> std::net::IpAddr {
        self.record.client
    }
}
