//! The request pipeline. Phases, in order (see `docs/request-lifecycle.md`):
//!
//! 1. **request head**: find the tenant by host (421 if none), the route by path (404),
//!    check the declared body size (413); later: shield decision.
//! 2. **upstream request**: strip hop-by-hop headers, set forwarding headers, pick a server
//!    from the route's pool, send with the response-head timeout; retry an idempotent,
//!    body-less request once on another server when the connection failed.
//! 3. **upstream response head**: strip hop-by-hop headers, add `Via`; tunnel upgrades.
//! 4. **response body**: streamed downstream chunk by chunk (`body::ResponseBody`).
//! 5. **log**: the access record is emitted when the response body is dropped (`log`).
//!
//! Errors from any phase go to `respond::error_response`, the one place that turns them
//! into HTTP responses.

pub mod admission;
pub mod body;
pub mod challenge;
pub mod client;
pub mod defence;
pub mod degraded;
pub mod fields;
pub mod headers;
pub mod health;
pub mod log;
pub mod respond;
pub mod status;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, HOST};
use http::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Runtime;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use body::{DownstreamBody, RequestBody, ResponseBody};
use client::{ClientError, Exchange};
use log::AccessRecord;
use upstream::{InflightGuard, Pool, UpstreamServer};

/// Everything derived from one configuration, swapped atomically on reload.
pub struct Generation {
    /// The validated configuration.
    pub config: Arc<Runtime>,
    /// Pools per tenant, in `config.tenants[i].pools` order.
    pub pools: Vec<Vec<Arc<Pool>>>,
    /// Request counters per tenant and route.
    pub route_counters: Vec<Vec<[Counter; 5]>>,
    /// Request counters for requests with no tenant or route.
    pub unrouted_counters: [Counter; 5],
    /// Upstream client settings.
    pub client: client::ClientSettings,
    /// Whether to write access-log lines.
    pub access_log: bool,
    /// Cancelled when this generation is replaced (stops its health checks).
    pub retired: CancellationToken,
    /// Our `Via` entries for HTTP/1.1 and HTTP/2 downstream.
    pub via: [HeaderValue; 2],
    /// Flood-defence counters (kept across reloads while the prefix lengths are unchanged).
    pub shield: Arc<crate::shield::Shield>,
    /// Bans (kept across reloads).
    pub bans: Arc<crate::shield::bans::BanList>,
    /// Shield decision counters per tenant (see `Metrics::shield_counters`).
    pub shield_counters: Vec<[Counter; crate::metrics::SHIELD_COUNTERS]>,
    /// Keys signing pass cookies and challenge tokens.
    pub keys: Arc<crate::shield::pass::KeyRing>,
    /// Defence state shared by all generations.
    pub defence: Arc<defence::Defence>,
    /// Per-tenant defence state, in `config.tenants` order (kept across reloads by id).
    pub tenant_states: Vec<Arc<defence::TenantState>>,
    /// Status pages (shared by all generations).
    pub status: Arc<crate::status::StatusService>,
    /// Stale copies of public pages (kept across reloads while the sizes are unchanged).
    pub stale: Arc<crate::status::stale::StaleCache>,
    /// Answers served from stale copies, per tenant in `config.tenants` order.
    pub stale_served: Vec<Counter>,
}

/// Per-connection facts handed to every request on it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Client address (from PROXY protocol when enabled).
    pub peer: SocketAddr,
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
    /// The connection's watchdog stamps; each request's access record marks its end there.
    pub clock: Arc<crate::server::watchdog::ConnClock>,
    /// The `Forwarded` value of the connection's first request, reused for the next ones.
    pub forwarded: headers::ForwardedCache,
}

/// The gateway: current generation plus shared metrics.
pub struct Gateway {
    generation: ArcSwap<Generation>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
}

fn client_settings(config: &Runtime) -> client::ClientSettings {
    client::ClientSettings {
        connect_timeout: config.timeouts.upstream_connect,
        max_idle_per_server: config.limits.upstream_idle_per_server,
    }
}

/// A one-paragraph account of what a reload changed, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChangeSummary {
    /// Tenants added.
    pub tenants_added: Vec<String>,
    /// Tenants removed.
    pub tenants_removed: Vec<String>,
    /// Tenants whose settings changed.
    pub tenants_changed: Vec<String>,
    /// Whether listener addresses changed (needs a restart).
    pub listeners_changed: bool,
}

impl std::fmt::Display for ChangeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tenants added [{}], removed [{}], changed [{}]{}",
            self.tenants_added.join(", "),
            self.tenants_removed.join(", "),
            self.tenants_changed.join(", "),
            if self.listeners_changed {
                "; listener changes need a restart"
            } else {
                ""
            }
        )
    }
}

impl Gateway {
    /// Builds the gateway for `config`.
    pub fn new(
        config: Runtime,
        access_log: bool,
        status: Arc<crate::status::StatusService>,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::default());
        let generation = Self::build_generation(config, None, &metrics, access_log, status);
        let gw = Arc::new(Self {
            generation: ArcSwap::from_pointee(generation),
            metrics,
        });
        health::spawn(&gw.generation.load_full());
        let weak = Arc::downgrade(&gw);
        let _ = gw.metrics.top_source.set(Box::new(move || {
            let Some(gw) = weak.upgrade() else {
                return Vec::new();
            };
            let generation = gw.current();
            let now = crate::clock::now_ms();
            generation
                .shield
                .top_prefixes
                .list(now)
                .into_iter()
                .filter_map(|h| {
                    let tenant = generation.config.tenants.get(h.tenant)?.id.clone();
                    Some((
                        crate::metrics::TopLabels {
                            tenant,
                            prefix: h.client,
                        },
                        h.rate,
                    ))
                })
                .collect()
        }));
        let weak = Arc::downgrade(&gw);
        let _ = gw.metrics.status_source.set(Box::new(move || {
            let Some(gw) = weak.upgrade() else {
                return (Vec::new(), Vec::new());
            };
            let status = gw.current().status.clone();
            let components = status
                .component_states()
                .into_iter()
                .map(|(tenant, component, state)| {
                    (
                        crate::metrics::ComponentLabels { tenant, component },
                        i64::from(state.severity()),
                    )
                })
                .collect();
            let d = status
                .deliveries
                .lock()
                .map(|d| d.clone())
                .unwrap_or_default();
            let label = |kind, result| crate::metrics::DeliveryLabels { kind, result };
            let deliveries = vec![
                (label("mail", "ok"), d.mails_sent),
                (label("mail", "failed"), d.mails_failed),
                (label("webhook", "ok"), d.webhooks_delivered),
                (label("webhook", "failed"), d.webhooks_failed),
            ];
            (components, deliveries)
        }));
        gw
    }

    /// The current generation.
    pub fn current(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    fn build_generation(
        config: Runtime,
        previous: Option<&Generation>,
        metrics: &Metrics,
        access_log: bool,
        status: Arc<crate::status::StatusService>,
    ) -> Generation {
        let pools = config
            .tenants
            .iter()
            .map(|t| {
                t.pools
                    .iter()
                    .map(|spec| {
                        let prev = previous.and_then(|p| {
                            let ti = p.config.tenants.iter().position(|pt| pt.id == t.id)?;
                            p.pools[ti]
                                .iter()
                                .find(|pl| pl.spec.name == spec.name)
                                .map(Arc::as_ref)
                        });
                        Arc::new(Pool::build(&t.id, spec, prev, metrics))
                    })
                    .collect()
            })
            .collect();
        let route_counters = config
            .tenants
            .iter()
            .map(|t| {
                t.routes
                    .iter()
                    .map(|r| metrics.route_counters(&t.id, &r.name))
                    .collect()
            })
            .collect();
        let client = client_settings(&config);
        let shield = match previous {
            Some(p) if p.config.prefixes == config.prefixes => p.shield.clone(),
            _ => Arc::new(crate::shield::Shield::new(config.prefixes)),
        };
        let bans = previous.map_or_else(
            || Arc::new(crate::shield::bans::BanList::new()),
            |p| p.bans.clone(),
        );
        let shield_counters = config
            .tenants
            .iter()
            .map(|t| metrics.shield_counters(&t.id))
            .collect();
        let defence =
            previous.map_or_else(|| Arc::new(defence::Defence::new()), |p| p.defence.clone());
        let keys = config
            .pass_keys
            .clone()
            .unwrap_or_else(|| defence.random_keys.clone());
        let tenant_states = config
            .tenants
            .iter()
            .map(|t| {
                previous
                    .and_then(|p| {
                        let i = p.config.tenants.iter().position(|pt| pt.id == t.id)?;
                        Some(p.tenant_states[i].clone())
                    })
                    .unwrap_or_else(|| Arc::new(defence::TenantState::new(&t.id)))
            })
            .collect();
        let stale = match previous {
            Some(p) if p.config.stale_cache == config.stale_cache => p.stale.clone(),
            _ => {
                let settings = &config.stale_cache;
                let disk = settings.disk_dir.as_ref().and_then(|dir| {
                    crate::status::stale_disk::DiskStore::open(dir, settings.disk_bytes)
                        .map_err(|e| tracing::error!(dir = %dir.display(), error = %e, "cannot use the stale-copy directory; copies stay in memory"))
                        .ok()
                });
                Arc::new(crate::status::stale::StaleCache::new(
                    settings.memory_bytes,
                    settings.entry_bytes,
                    disk,
                ))
            }
        };
        let stale_served = config
            .tenants
            .iter()
            .map(|t| {
                metrics
                    .stale_served
                    .get_or_create(&crate::metrics::TenantLabels {
                        tenant: t.id.clone(),
                    })
                    .clone()
            })
            .collect();
        let via = [
            headers::via_entry("1.1", &config.via_name),
            headers::via_entry("2", &config.via_name),
        ];
        Generation {
            config: Arc::new(config),
            pools,
            route_counters,
            unrouted_counters: metrics.route_counters("-", "-"),
            client,
            access_log,
            retired: CancellationToken::new(),
            via,
            shield,
            shield_counters,
            bans,
            keys,
            defence,
            tenant_states,
            status,
            stale,
            stale_served,
        }
    }

    /// Switches a tenant's under-attack mode on until `until_ms` (see `upstream::now_ms`;
    /// `u64::MAX` = until switched off) or off (`0`). `false` when no such tenant.
    pub fn set_under_attack(&self, tenant_id: &str, until_ms: u64) -> bool {
        let generation = self.generation.load();
        let Some(i) = generation
            .config
            .tenants
            .iter()
            .position(|t| t.id == tenant_id)
        else {
            return false;
        };
        generation.tenant_states[i].set_under_attack(until_ms);
        tracing::warn!(
            target: "rempart::shield",
            tenant = tenant_id,
            on = until_ms > crate::clock::now_ms(),
            "under-attack mode switched by an operator"
        );
        true
    }

    /// Swaps in a new validated configuration; in-flight requests finish on the old one.
    pub fn apply(&self, config: Runtime) -> ChangeSummary {
        let old = self.generation.load_full();
        let summary = summarize(&old.config, &config);
        old.status.apply_config(&config, crate::clock::unix_now());
        let next = Arc::new(Self::build_generation(
            config,
            Some(&old),
            &self.metrics,
            old.access_log,
            old.status.clone(),
        ));
        health::spawn(&next);
        self.generation.store(next);
        old.retired.cancel();
        summary
    }

    /// Handles one downstream request. Never fails: errors become branded responses.
    pub async fn handle(
        self: Arc<Self>,
        conn: Arc<ConnInfo>,
        req: Request<DownstreamBody>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let generation = self.generation.load_full();
        let start = Instant::now();
        let client = headers::client_ip(conn.peer.ip(), req.headers(), |ip| {
            generation.config.is_trusted_proxy(ip)
        });
        let record = AccessRecord {
            generation: generation.clone(),
            start,
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
            conn_clock: Some(conn.clock.clone()),
        };
        // Phase 1: request head. Host and tenant first: the status site is answered here,
        // without entering the pipeline.
        let mut record = record;
        let target = match request_host(&req) {
            None => Err(ProxyError::BadHost),
            Some(host) => match generation.config.tenant_for_host(&host) {
                None => Err(ProxyError::UnknownHost),
                Some(tenant_idx) => Ok((host, tenant_idx)),
            },
        };
        let result = match target {
            Err(error) => Err((error, accept_language(req.headers()), record)),
            Ok((host, tenant_idx)) => {
                record.tenant = Some(tenant_idx);
                let tenant = &generation.config.tenants[tenant_idx];
                match status::target(tenant, &host, req.uri().path()) {
                    Some(target) if !target.is_subscription() => {
                        status_page(&generation, tenant_idx, target, &req, record)
                    }
                    // The pipeline's future is large (every phase's state); boxed, the
                    // future hyper stores and moves per request stays small.
                    subscription => {
                        let host = host.into_owned();
                        let at = Found {
                            host,
                            tenant_idx,
                            status: subscription,
                        };
                        Box::pin(proxy(&generation, &conn, req, record, at)).await
                    }
                }
            }
        };
        match result {
            Ok(resp) => Ok(resp),
            Err((error, accept_language, mut record)) => {
                let tenant = record.tenant.map(|t| &generation.config.tenants[t]);
                let limited = matches!(
                    error,
                    ProxyError::RateLimitedAddress
                        | ProxyError::RateLimitedPrefix
                        | ProxyError::RateLimitedPass
                        | ProxyError::RateLimitedFingerprint
                        | ProxyError::RateLimitedKey
                );
                let tarpit_ms = tenant.map_or(0, |t| t.shield.tarpit_ms);
                if limited && tarpit_ms > 0 {
                    // Hold the over-limit request (its connection idles, nothing else is
                    // spent), within a bounded number of places.
                    if let Ok(_place) = generation.defence.tarpit.clone().try_acquire_owned() {
                        tokio::time::sleep(std::time::Duration::from_millis(tarpit_ms)).await;
                    }
                }
                let page =
                    respond::error_response(error, tenant, record.route, accept_language.as_ref());
                record.status = page.status().as_u16();
                record.reason = Some(error.reason());
                let (parts, bytes) = page.into_parts();
                Ok(Response::from_parts(
                    parts,
                    ResponseBody::local(bytes, Some(record)),
                ))
            }
        }
    }
}

/// The path as logged: cut at 256 bytes (on a character boundary).
fn truncate_path(path: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 256;
    if path.len() <= MAX {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut end = MAX;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &path[..end]))
}

fn summarize(old: &Runtime, new: &Runtime) -> ChangeSummary {
    let mut s = ChangeSummary::default();
    for t in &new.tenants {
        match old.tenants.iter().find(|o| o.id == t.id) {
            None => s.tenants_added.push(t.id.clone()),
            Some(o) => {
                if o.hosts != t.hosts
                    || o.pools != t.pools
                    || o.routes != t.routes
                    || o.name != t.name
                    || o.contact != t.contact
                {
                    s.tenants_changed.push(t.id.clone());
                }
            }
        }
    }
    for o in &old.tenants {
        if !new.tenants.iter().any(|t| t.id == o.id) {
            s.tenants_removed.push(o.id.clone());
        }
    }
    s.listeners_changed = old.listeners != new.listeners || old.admin.address != new.admin.address;
    s
}

/// The request's host, lower case, without port or trailing dot; borrowed when it already is
/// so (the usual case: no allocation).
fn request_host(req: &Request<DownstreamBody>) -> Option<std::borrow::Cow<'_, str>> {
    let (raw, upper) = match req.uri().authority() {
        Some(a) => (a.host(), a.host().bytes().any(|b| b.is_ascii_uppercase())),
        None => host_of(req.headers().get(HOST)?.as_bytes())?,
    };
    let host = raw.trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    Some(if upper {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    })
}

/// Bytes allowed in a host name (RFC 3986 reg-name: unreserved, sub-delims, `%`).
const HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        i += 1;
    }
    table
};

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]:port`) and whether it
/// has upper-case letters, or `None` when it is not a valid authority without user info.
/// One pass over the bytes: this runs on every request.
fn host_of(value: &[u8]) -> Option<(&str, bool)> {
    if value.first() == Some(&b'[') {
        let end = value.iter().position(|b| *b == b']')?;
        let inner = &value[1..end];
        let port = &value[end + 1..];
        let inner_ok = inner
            .iter()
            .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.');
        let port_ok = port.is_empty()
            || port
                .strip_prefix(b":")
                .is_some_and(|p| p.iter().all(u8::is_ascii_digit));
        if !(inner_ok && port_ok) {
            return None;
        }
        let host = std::str::from_utf8(&value[..=end]).ok()?;
        return Some((host, inner.iter().any(u8::is_ascii_uppercase)));
    }
    let mut colon = None;
    let mut upper = false;
    for (i, &b) in value.iter().enumerate() {
        if b == b':' {
            if colon.is_some() {
                return None;
            }
            colon = Some(i);
        } else if colon.is_some() {
            if !b.is_ascii_digit() {
                return None;
            }
        } else if HOST_BYTES[usize::from(b)] {
            upper |= b.is_ascii_uppercase();
        } else {
            return None;
        }
    }
    let host = &value[..colon.unwrap_or(value.len())];
    if host.is_empty() {
        return None;
    }
    // Every byte was checked to be ASCII above.
    Some((std::str::from_utf8(host).ok()?, upper))
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// An early end: the error, the client's `Accept-Language` (for the page) and the record.
type PhaseError = (ProxyError, Option<HeaderValue>, AccessRecord);

fn accept_language(headers: &http::HeaderMap) -> Option<HeaderValue> {
    headers.get(http::header::ACCEPT_LANGUAGE).cloned()
}

/// Phase 1a: a status-site page, from memory; bans and rates apply, challenges never.
#[allow(clippy::result_large_err)]
fn status_page(
    generation: &Generation,
    tenant_idx: usize,
    target: status::Target,
    req: &Request<DownstreamBody>,
    record: AccessRecord,
) -> Result<Response<ResponseBody>, PhaseError> {
    if let Err(error) = status_shield(generation, tenant_idx, record.client, req.uri().path()) {
        return Err((error, accept_language(req.headers()), record));
    }
    let tenant = &generation.config.tenants[tenant_idx];
    let pages = generation.status.pages(&tenant.id);
    let page = status::respond(
        pages.as_deref(),
        target,
        req.method(),
        req.uri().path(),
        req.uri().query(),
        req.headers(),
    );
    Ok(local_response(page, record, "status page"))
}

/// What `handle` found at the start of phase 1.
struct Found {
    /// The request's host, lower case.
    host: String,
    /// The tenant serving it.
    tenant_idx: usize,
    /// A status-site subscription step, when the request is one.
    status: Option<status::Target>,
}

/// The pipeline once `handle` found the host and the tenant (phase 1's start).
async fn proxy(
    generation: &Arc<Generation>,
    conn: &ConnInfo,
    mut req: Request<DownstreamBody>,
    mut record: AccessRecord,
    at: Found,
) -> Result<Response<ResponseBody>, PhaseError> {
    let config = &generation.config;
    let Found {
        host,
        tenant_idx,
        status: status_target,
    } = at;
    let tenant = &config.tenants[tenant_idx];
    if let Some(target) = status_target {
        // Phase 1a: subscription steps (they read a small form body).
        if let Err(error) = status_shield(generation, tenant_idx, record.client, req.uri().path()) {
            return Err((error, accept_language(req.headers()), record));
        }
        let page = status::subscription(&generation.status, tenant, target, req).await;
        return Ok(local_response(page, record, "status page"));
    }
    if req.uri().path().starts_with(challenge::LOCAL_PREFIX) {
        return local_page(generation, conn, &req, tenant_idx, record);
    }
    let Some(route_idx) = tenant.route_index(&host, req.uri().path()) else {
        return Err((ProxyError::NoRoute, accept_language(req.headers()), record));
    };
    record.route = Some(route_idx);
    let route = &tenant.routes[route_idx];
    if tenant.maintenance
        || route.maintenance
        || generation.status.in_maintenance(&tenant.id, &route.name)
    {
        return Err((
            ProxyError::Maintenance,
            accept_language(req.headers()),
            record,
        ));
    }

    // Phase 1b: shield decision.
    let (priority, calm) =
        match shield_phase(generation, conn, tenant_idx, route, &req, record.client) {
            Ok(Verdict::Admit { priority, calm }) => (priority, calm),
            Ok(Verdict::Challenge) => {
                return Ok(challenge_page(
                    generation,
                    conn,
                    tenant_idx,
                    req.headers(),
                    record,
                    req.uri().path_and_query().map_or("/", |p| p.as_str()),
                ))
            }
            Err(error) => return Err((error, accept_language(req.headers()), record)),
        };
    let declared_len = match req.headers().get(CONTENT_LENGTH) {
        Some(v) => match v.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => {
                return Err((
                    ProxyError::BadRequest,
                    accept_language(req.headers()),
                    record,
                ))
            }
        },
        None => None,
    };
    if declared_len.is_some_and(|n| n > route.max_body_bytes) {
        return Err((
            ProxyError::BodyTooLarge,
            accept_language(req.headers()),
            record,
        ));
    }
    if req.method() == Method::CONNECT {
        return Err((
            ProxyError::BadRequest,
            accept_language(req.headers()),
            record,
        ));
    }

    // Phase 2: upstream request.
    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let downstream_version = if req.version() == Version::HTTP_2 {
        "2"
    } else {
        "1.1"
    };
    // Host preserved; HTTP/2 requests carry it as `:authority`.
    let sent_host = req.headers().get(HOST).cloned();
    let host_missing = sent_host.is_none();
    let host_value = sent_host.or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let (mut parts, incoming) = req.into_parts();
    let original_headers = accept_language(&parts.headers);
    headers::remove_hop_by_hop(&mut parts.headers, upgrade);
    headers::strip_cookie(&mut parts.headers, crate::shield::pass::PASS_COOKIE);
    if host_missing {
        if let Some(h) = &host_value {
            parts.headers.insert(HOST, h.clone());
        }
    }
    let forwarded_host = host_value
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or(&host);
    let forwarding = headers::set_forwarding(
        &mut parts.headers,
        &headers::Forwarding {
            peer: conn.peer.ip(),
            peer_trusted: config.is_trusted_proxy(conn.peer.ip()),
            proto: conn.proto,
            host: forwarded_host,
            host_value: host_value.as_ref(),
            via_name: &config.via_name,
            peer_value: &conn.peer_value,
            forwarded_for: &conn.forwarded_for,
            via: if downstream_version == "2" {
                &generation.via[1]
            } else {
                &generation.via[0]
            },
            cache: Some(&conn.forwarded),
        },
    );
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let body_empty = http_body::Body::is_end_stream(&incoming) || declared_len == Some(0);
    let can_retry = is_idempotent(&parts.method) && body_empty && !upgrade;
    // Slow-POST guard: a body must keep up with the minimum data rate after the grace period.
    let pace = (!body_empty && config.limits.min_body_rate > 0).then(|| {
        body::Pace::new(
            config.timeouts.downstream_body_grace,
            config.limits.min_body_rate,
        )
    });
    // A body-less request (most of them) has nothing to count or pace.
    let mut body = Some(if http_body::Body::is_end_stream(&incoming) {
        RequestBody::empty()
    } else {
        RequestBody::new(
            incoming,
            route.max_body_bytes,
            record
                .bytes_in
                .get_or_insert_with(|| Arc::new(AtomicU64::new(0)))
                .clone(),
        )
        .with_pace(pace)
    });
    let pool = &generation.pools[tenant_idx][route.pool];
    let deadline = record.start + route.timeouts.request;
    // Admission: wait for a slot at the origin, verified clients first; shed when it cannot.
    let mut permit = match &pool.admission {
        None => None,
        Some(gate) => match gate.acquire(priority).await {
            Ok(p) => {
                // A standing queue: challenge clients without a pass from now on, before
                // anyone has to be shed.
                if p.waited > gate.pressure_wait() {
                    overloaded(generation, tenant_idx, gate);
                }
                Some(p)
            }
            Err(shed) => {
                pool.shed[priority as usize].inc();
                overloaded(generation, tenant_idx, gate);
                tracing::debug!(tenant = %tenant.id, pool = %pool.spec.name, priority = priority.name(), ?shed, "request shed");
                // A shed client without a pass gets the challenge rather than an error page:
                // once solved, it comes back ahead of the flood.
                let policy = &tenant.shield;
                if priority != crate::shield::admission::Priority::Verified
                    && policy.auto_challenge
                    && policy.mode == crate::shield::Mode::Enforce
                    && !policy.exempt(parts.uri.path())
                {
                    let return_to = parts
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned();
                    let req = Request::from_parts(parts, ());
                    return Ok(challenge_page(
                        generation,
                        conn,
                        tenant_idx,
                        req.headers(),
                        record,
                        &return_to,
                    ));
                }
                let parts_ref = &parts;
                return match degraded::stale_answer(
                    generation, tenant, route, parts_ref, &host, record,
                ) {
                    Ok(resp) => Ok(resp),
                    Err(record) => Err((ProxyError::Shed, original_headers, record)),
                };
            }
        },
    };
    let mut excluded: Option<Arc<UpstreamServer>> = None;

    let (exchange, mut inflight) = loop {
        let Some(server) = pool.pick(crate::clock::coarse_now_ms(), excluded.as_ref()) else {
            return match degraded::stale_answer(generation, tenant, route, &parts, &host, record) {
                Ok(resp) => Ok(resp),
                Err(record) => Err((ProxyError::UpstreamConnect, original_headers, record)),
            };
        };
        record.upstream = Some(server.clone());
        let outgoing = client::OutgoingRequest {
            method: &parts.method,
            target,
            headers: &parts.headers,
            forwarding: Some(&forwarding),
            content_length: declared_len,
            upgrade,
        };
        let inflight = InflightGuard::new(server.clone());
        let sent_at = Instant::now();
        let head_deadline = (sent_at + route.timeouts.upstream_response_head).min(deadline);
        let request_body = body.take().unwrap_or_else(RequestBody::empty);
        let outcome = tokio::time::timeout_at(
            head_deadline,
            client::send(&server, generation.client, outgoing, request_body),
        )
        .await;
        let error = match outcome {
            Ok(Ok(exchange)) => {
                let elapsed = sent_at.elapsed();
                pool.latency.observe(elapsed.as_secs_f64());
                let status = match &exchange {
                    Exchange::Response(head, _) | Exchange::Upgraded(head, _, _) => head.status,
                };
                pool.outcomes.record(
                    status.is_server_error(),
                    tenant.status.as_ref().is_some_and(|s| elapsed > s.slow),
                );
                if let Some(p) = permit.as_mut() {
                    p.sample();
                }
                server.record_request(true, &pool.spec.health, crate::clock::coarse_now_ms());
                break (exchange, inflight);
            }
            Ok(Err(ClientError::BodyTooLarge)) => {
                return Err((ProxyError::BodyTooLarge, original_headers, record));
            }
            Ok(Err(ClientError::DownstreamTooSlow)) => {
                return Err((ProxyError::BodyTooSlow, original_headers, record));
            }
            Ok(Err(ClientError::DownstreamBody)) => {
                // The client went away or sent a broken body: not the origin's fault.
                return Err((ProxyError::BadRequest, original_headers, record));
            }
            Ok(Err(e @ (ClientError::Connect(_) | ClientError::ConnectTimeout))) => {
                tracing::debug!(server = %server.address, error = %e, "upstream connect failed");
                ProxyError::UpstreamConnect
            }
            Ok(Err(e)) => {
                tracing::debug!(server = %server.address, error = %e, "upstream request failed");
                ProxyError::UpstreamFailed
            }
            Err(_) => ProxyError::UpstreamTimeout,
        };
        server.record_request(false, &pool.spec.health, crate::clock::coarse_now_ms());
        pool.outcomes.record(true, false);
        let first_attempt = excluded.is_none();
        if error.retryable()
            && can_retry
            && first_attempt
            && pool.servers.len() > 1
            && Instant::now() < deadline
        {
            pool.retries.inc();
            excluded = Some(server);
            continue;
        }
        return match degraded::stale_answer(generation, tenant, route, &parts, &host, record) {
            Ok(resp) => Ok(resp),
            Err(record) => Err((error, original_headers, record)),
        };
    };

    // Phase 3: upstream response head.
    let (head, body_or_tunnel) = match exchange {
        Exchange::Response(head, body) => (head, Ok(body)),
        Exchange::Upgraded(head, stream, leftover) => (head, Err((stream, leftover))),
    };
    if degraded::covers_status(head.status) && body_or_tunnel.is_ok() {
        // The origin answered with an error: a stale copy serves residents better.
        record = match degraded::stale_answer(generation, tenant, route, &parts, &host, record) {
            Ok(resp) => return Ok(resp),
            Err(record) => record,
        };
    }
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    let switching = head.status == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        // The tunnel's answer goes through hyper, which needs a map with Connection/Upgrade.
        let map = response.headers_mut();
        *map = head.fields.to_header_map(true, 1);
        headers::remove_hop_by_hop(map, true);
        headers::append_via(map, &generation.via[0]);
    } else {
        // A line of its own after the origin's `Via` lines, if any: the same list (RFC 9110
        // 5.3), and the origin's lines go through untouched.
        response
            .headers_mut()
            .insert(http::header::VIA, generation.via[0].clone());
    }
    record.status = head.status.as_u16();
    if (400..500).contains(&record.status) && tenant.shield.error_rate > 0 {
        // Scanners and credential stuffing leave a trail of 404s, 401s and 403s.
        generation
            .shield
            .observe_error(tenant_idx, record.client, crate::clock::coarse_now_ms());
    }
    if calm && head.status.as_u16() < 400 {
        // Served normally while calm: remembered as good history for the next attack.
        generation.defence.history.record(
            crate::shield::history_key(record.client),
            crate::clock::coarse_now_ms() / 60_000,
        );
    }
    if body_or_tunnel.is_ok() {
        // The slot is held until the body is done; a tunnel gives it back at once.
        inflight.hold(permit);
    }
    match body_or_tunnel {
        // Phases 4 and 5 happen as the body streams and when it is dropped.
        Ok(body) => {
            let recorder = degraded::recorder(
                generation,
                tenant,
                route,
                &parts,
                &host,
                head.status,
                &head.fields,
            );
            Ok(response.map(|()| {
                ResponseBody::upstream(body, deadline, record, inflight)
                    .with_recorder(recorder)
                    .with_origin_fields(head.fields)
            }))
        }
        Err((stream, leftover)) => {
            let Some(downstream_upgrade) = on_upgrade else {
                return Err((ProxyError::UpstreamFailed, original_headers, record));
            };
            tokio::spawn(tunnel(downstream_upgrade, stream, leftover, inflight));
            // Logged now; the tunnel's bytes are not counted in the record.
            record.reason = Some("upgraded");
            Ok(response.map(|()| ResponseBody::local(Bytes::new(), Some(record))))
        }
    }
}

/// What the shield phase decided for a request that may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Go to the pool's admission gate with this priority; `calm` when the tenant is not
    /// shedding load (the request may then count as good history).
    Admit {
        priority: crate::shield::admission::Priority,
        calm: bool,
    },
    /// Answer with the proof-of-work challenge.
    Challenge,
}

/// What a pass and a challenge are bound to for this request.
fn binding(
    generation: &Generation,
    tenant_idx: usize,
    client: std::net::IpAddr,
    headers: &http::HeaderMap,
    conn: &ConnInfo,
) -> crate::shield::pass::Binding {
    let ua = headers
        .get(http::header::USER_AGENT)
        .map_or(&b""[..], HeaderValue::as_bytes);
    // The user agent and, over TLS, the JA4: a pass copied into another client is worthless.
    let fingerprint = match &conn.tls_fingerprint {
        None => defence::stable_hash(ua),
        Some(ja4) => {
            let mut bytes = ua.to_vec();
            bytes.push(0);
            bytes.extend_from_slice(ja4.as_bytes());
            defence::stable_hash(&bytes)
        }
    };
    crate::shield::pass::Binding {
        tenant: generation.tenant_states[tenant_idx].binding_id,
        prefix: crate::shield::prefix_key(client, generation.config.prefixes),
        fingerprint,
    }
}

/// The shield for status-site requests: bans, deny list and the tenant's per-address and
/// per-prefix rates (the page is cheap, but a flood must not turn the gateway into its
/// amplifier); no challenge, so residents without JavaScript always read it.
fn status_shield(
    generation: &Generation,
    tenant_idx: usize,
    client: std::net::IpAddr,
    path: &str,
) -> Result<(), ProxyError> {
    use crate::shield::{Decision, Mode, Rule};
    let now = crate::clock::coarse_now_ms();
    if generation.bans.check(client, now).is_some() {
        return Err(ProxyError::Banned);
    }
    let policy = &generation.config.tenants[tenant_idx].shield;
    match generation
        .shield
        .check(policy, tenant_idx, client, path, 1, now)
    {
        Decision::Allow => Ok(()),
        Decision::Denied => Err(ProxyError::Banned),
        Decision::Limited { rule, enforce, .. } => {
            let counters = &generation.shield_counters[tenant_idx];
            let rule_base = if rule == Rule::Address { 0 } else { 2 };
            counters[rule_base + usize::from(!enforce)].inc();
            if enforce && policy.mode == Mode::Enforce {
                Err(match rule {
                    Rule::Address => ProxyError::RateLimitedAddress,
                    Rule::Prefix => ProxyError::RateLimitedPrefix,
                })
            } else {
                Ok(())
            }
        }
    }
}

/// Phase 1b: bans (every tenant), the tenant's rate limits and lists, then the pass cookie,
/// pressure and under-attack mode. Acts on the decision: counts it, bans automatically when
/// asked, logs dry runs, and returns the error to answer with, the challenge, or the
/// request's priority at the admission gate.
fn shield_phase(
    generation: &Generation,
    conn: &ConnInfo,
    tenant_idx: usize,
    route: &crate::config::runtime::Route,
    req: &Request<DownstreamBody>,
    client: std::net::IpAddr,
) -> Result<Verdict, ProxyError> {
    use crate::shield::admission::Priority;
    use crate::shield::{display_prefix, pass, Decision, Mode, Rule};
    let now = crate::clock::coarse_now_ms();
    if generation.bans.check(client, now).is_some() {
        return Err(ProxyError::Banned);
    }
    let config = &generation.config;
    let tenant = &config.tenants[tenant_idx];
    let policy = &tenant.shield;
    let path = req.uri().path();
    let counters = &generation.shield_counters[tenant_idx];
    if let Some(api) = &route.api {
        // API route: the key decides; limited per key, never challenged.
        let digest = req.headers().get(&api.header).map(|v| {
            let d = ring::digest::digest(&ring::digest::SHA256, v.as_bytes());
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        });
        let Some(digest) = digest.filter(|d| api.digests.contains(d)) else {
            return Err(ProxyError::ApiKeyRequired);
        };
        if api.rate > 0 {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&digest[..8]);
            let observed =
                generation
                    .shield
                    .observe_api_key(tenant_idx, u64::from_le_bytes(eight), now);
            if observed > f64::from(api.rate) {
                return Err(ProxyError::RateLimitedKey);
            }
        }
        let calm = generation.tenant_states[tenant_idx]
            .pressure_since(now)
            .is_none();
        return Ok(Verdict::Admit {
            priority: crate::shield::admission::Priority::Verified,
            calm,
        });
    }
    if policy.is_active() {
        let decision = generation
            .shield
            .check(policy, tenant_idx, client, path, route.cost, now);
        match decision {
            Decision::Allow => {}
            Decision::Denied => return Err(ProxyError::Banned),
            Decision::Limited {
                rule,
                observed,
                limit,
                enforce,
                ban,
            } => {
                if ban {
                    let reason = format!(
                        "automatic: {observed:.0} requests/s from this address on tenant {} (ban_rate {}, address_rate {limit})",
                        tenant.id, policy.ban_rate
                    );
                    generation.bans.add(
                        ipnet::IpNet::from(client),
                        &reason,
                        Some(policy.ban_for_ms),
                        now,
                    );
                    tracing::warn!(
                        target: "rempart::shield",
                        tenant = %tenant.id,
                        prefix = %display_prefix(client, config.prefixes),
                        observed,
                        ban_rate = policy.ban_rate,
                        "address banned automatically"
                    );
                }
                let rule_base = if rule == Rule::Address { 0 } else { 2 };
                counters[rule_base + usize::from(!enforce)].inc();
                if enforce {
                    return Err(match rule {
                        Rule::Address => ProxyError::RateLimitedAddress,
                        Rule::Prefix => ProxyError::RateLimitedPrefix,
                    });
                }
                // Dry run: say what would have been refused (the prefix, never the address).
                tracing::info!(
                    target: "rempart::shield",
                    tenant = %tenant.id,
                    rule = rule.name(),
                    observed,
                    limit,
                    prefix = %display_prefix(client, config.prefixes),
                    "over the limit (log-only mode)"
                );
            }
        }
    }
    let state = &generation.tenant_states[tenant_idx];
    let pressure = state.pressure_since(now);
    let calm = pressure.is_none();
    if !policy.allow.is_empty() && policy.allow.contains(client) {
        return Ok(Verdict::Admit {
            priority: Priority::Verified,
            calm,
        });
    }
    let headers = req.headers();
    let cookie = pass::find_cookie(
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    let mut invalid_pass = false;
    if let Some(value) = cookie {
        let b = binding(generation, tenant_idx, client, headers, conn);
        match pass::verify_pass(&generation.keys, &b, value, crate::clock::unix_now()) {
            Ok(p) => {
                if policy.pass_rate > 0 {
                    let observed = generation.shield.observe_pass(tenant_idx, p.id, now);
                    if observed > f64::from(policy.pass_rate) {
                        counters[crate::metrics::SHIELD_PASS_LIMITED].inc();
                        if policy.mode == Mode::Enforce {
                            return Err(ProxyError::RateLimitedPass);
                        }
                    }
                }
                return Ok(Verdict::Admit {
                    priority: Priority::Verified,
                    calm,
                });
            }
            Err(_) => invalid_pass = true,
        }
    }
    if policy.fingerprint_rate > 0 {
        let tls = conn.tls_fingerprint.as_deref().unwrap_or("-");
        let h2_fp;
        let http = match conn.http_fingerprint.get() {
            Some(f) => &**f,
            None if req.version() == Version::HTTP_2 => {
                h2_fp = crate::shield::fingerprint::http2_fingerprint(
                    req.method().as_str(),
                    headers.keys().map(http::HeaderName::as_str),
                );
                h2_fp.as_str()
            }
            None => "-",
        };
        let label = format!("{tls} {http}");
        let key = defence::stable_hash(label.as_bytes());
        let observed = generation.shield.observe_fingerprint(tenant_idx, key, now);
        let limit = f64::from(policy.fingerprint_rate);
        if observed >= limit / 2.0 && (observed as u64) % 4 == 0 {
            generation.shield.top_fingerprints.record(
                tenant_idx,
                u128::from(key),
                || label.clone(),
                observed,
                now,
            );
        }
        if observed > f64::from(policy.fingerprint_rate) {
            let enforce = policy.mode == Mode::Enforce;
            counters[crate::metrics::SHIELD_FINGERPRINT_LIMITED + usize::from(!enforce)].inc();
            if enforce {
                return Err(ProxyError::RateLimitedFingerprint);
            }
            tracing::info!(target: "rempart::shield", tenant = %tenant.id, ja4 = tls, http_fingerprint = http, observed, "over the fingerprint limit (log-only mode)");
        }
    }
    let now_min = now / 60_000;
    let good = generation.defence.history.is_good(
        crate::shield::history_key(client),
        pressure.map_or(now_min, |p| p / 60_000),
        now_min,
    );
    let under_attack = policy.under_attack || state.under_attack_until(now).is_some();
    let challenge =
        (under_attack || (policy.auto_challenge && !calm && !good)) && !policy.exempt(path);
    if challenge {
        if policy.mode == Mode::Enforce {
            return Ok(Verdict::Challenge);
        }
        tracing::info!(
            target: "rempart::shield",
            tenant = %tenant.id,
            prefix = %display_prefix(client, config.prefixes),
            "would challenge (log-only mode)"
        );
    }
    // Browsers always send these; their absence marks a script, as does a library's user
    // agent.
    let ua_class = crate::shield::user_agent_class(
        headers
            .get(http::header::USER_AGENT)
            .map(HeaderValue::as_bytes),
    );
    let scripted = matches!(
        ua_class,
        crate::shield::UserAgentClass::Tool | crate::shield::UserAgentClass::Missing
    ) || !headers.contains_key(http::header::ACCEPT)
        || (req.version() == Version::HTTP_2
            && !headers.contains_key(http::header::ACCEPT_LANGUAGE))
        || (policy.error_rate > 0
            && generation.shield.error_rate(tenant_idx, client, now)
                > f64::from(policy.error_rate))
        || conn
            .http_fingerprint
            .get()
            .is_some_and(|fp| crate::shield::fingerprint::lacks_browser_headers(fp));
    let priority = if good {
        Priority::Verified
    } else if invalid_pass || scripted {
        Priority::Suspicious
    } else {
        Priority::Unknown
    };
    Ok(Verdict::Admit { priority, calm })
}

/// Marks the tenant under pressure; at the start of an episode, the pool's queued requests
/// without a pass are shed at once (they are challenged instead of waiting behind the flood).
fn overloaded(generation: &Generation, tenant_idx: usize, gate: &admission::Admission) {
    if generation.tenant_states[tenant_idx].on_overload(crate::clock::coarse_now_ms()) {
        let shed = gate.shed_below(crate::shield::admission::Priority::Verified);
        tracing::warn!(
            target: "rempart::shield",
            tenant = %generation.config.tenants[tenant_idx].id,
            shed_waiting = shed,
            "origin saturated: challenging clients without a pass"
        );
    }
}

/// A locally built response with its access record.
fn local_response(
    page: Response<Bytes>,
    mut record: AccessRecord,
    reason: &'static str,
) -> Response<ResponseBody> {
    record.status = page.status().as_u16();
    record.reason = Some(reason);
    let (parts, bytes) = page.into_parts();
    Response::from_parts(parts, ResponseBody::local(bytes, Some(record)))
}

/// The challenge page for this request, sending the browser to `return_to` afterwards.
fn challenge_page(
    generation: &Generation,
    conn: &ConnInfo,
    tenant_idx: usize,
    headers: &http::HeaderMap,
    record: AccessRecord,
    return_to: &str,
) -> Response<ResponseBody> {
    let tenant = &generation.config.tenants[tenant_idx];
    let state = &generation.tenant_states[tenant_idx];
    let now = crate::clock::coarse_now_ms();
    // Harder while the tenant sheds load or is under attack.
    let stressed = state.pressure_since(now).is_some() || state.under_attack_until(now).is_some();
    let difficulty = tenant
        .shield
        .challenge_difficulty
        .saturating_add(if stressed { 2 } else { 0 })
        .min(24);
    let page = challenge::challenge_response(
        &generation.keys,
        &challenge::ChallengeRequest {
            tenant: &tenant.name,
            lang: respond::negotiate_language(
                headers.get(http::header::ACCEPT_LANGUAGE),
                tenant.language,
            ),
            return_to,
            binding: binding(generation, tenant_idx, record.client, headers, conn),
            difficulty,
            wait_s: tenant.shield.challenge_wait_s,
            nonce: generation.defence.nonce(),
        },
        now,
    );
    generation.shield_counters[tenant_idx][crate::metrics::SHIELD_CHALLENGE_ISSUED].inc();
    local_response(page, record, "challenge")
}

/// Rempart's own pages under `/.rempart/`: the challenge script and the answer endpoint.
// Same error shape as the other phases (moved once per request, never copied around).
#[allow(clippy::result_large_err)]
fn local_page(
    generation: &Generation,
    conn: &ConnInfo,
    req: &Request<DownstreamBody>,
    tenant_idx: usize,
    record: AccessRecord,
) -> Result<Response<ResponseBody>, PhaseError> {
    use crate::shield::pass::{self, Answer, Reject};
    let now = crate::clock::coarse_now_ms();
    if generation.bans.check(record.client, now).is_some() {
        return Err((ProxyError::Banned, accept_language(req.headers()), record));
    }
    match req.uri().path() {
        challenge::POW_JS_PATH => Ok(local_response(challenge::pow_js(), record, "local")),
        challenge::PASS_PATH => {
            let tenant = &generation.config.tenants[tenant_idx];
            let q = challenge::parse_pass_query(req.uri().query().unwrap_or(""));
            let b = binding(generation, tenant_idx, record.client, req.headers(), conn);
            let answer = match (&q.counter, q.waited) {
                (Some(n), _) => Answer::Work(n),
                (None, true) => Answer::Waited,
                (None, false) => Answer::Work(""),
            };
            let outcome = pass::verify_answer(
                &generation.keys,
                &b,
                &q.token,
                answer,
                defence::CHALLENGE_MAX_AGE_MS,
                now,
            )
            .and_then(|solved| {
                if generation.defence.first_use(solved.nonce, now) {
                    Ok(solved)
                } else {
                    Err(Reject::Replayed)
                }
            });
            let counters = &generation.shield_counters[tenant_idx];
            match outcome {
                Ok(_) => {
                    counters[crate::metrics::SHIELD_CHALLENGE_PASSED].inc();
                    let ttl = tenant.shield.pass_ttl_s;
                    let value =
                        pass::issue_pass(&generation.keys, &b, crate::clock::unix_now() + ttl);
                    let page =
                        challenge::pass_granted(&value, ttl, conn.proto == "https", &q.return_to);
                    Ok(local_response(page, record, "pass_granted"))
                }
                Err(reject) => {
                    counters[crate::metrics::SHIELD_CHALLENGE_REFUSED].inc();
                    tracing::debug!(
                        target: "rempart::shield",
                        tenant = %tenant.id,
                        reason = reject.name(),
                        "challenge answer refused"
                    );
                    // A fresh challenge: a person is never stuck on an error.
                    let return_to = challenge::safe_return(&q.return_to).to_owned();
                    Ok(challenge_page(
                        generation,
                        conn,
                        tenant_idx,
                        req.headers(),
                        record,
                        &return_to,
                    ))
                }
            }
        }
        _ => Err((ProxyError::NoRoute, accept_language(req.headers()), record)),
    }
}

/// Copies bytes both ways between an upgraded downstream connection and the origin.
async fn tunnel(
    downstream: hyper::upgrade::OnUpgrade,
    mut upstream: tokio::net::TcpStream,
    leftover: Bytes,
    _inflight: InflightGuard,
) {
    use tokio::io::AsyncWriteExt;
    let Ok(d) = downstream.await else {
        tracing::debug!("downstream upgrade failed");
        return;
    };
    let mut d = TokioIo::new(d);
    if !leftover.is_empty() && d.write_all(&leftover).await.is_err() {
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut d, &mut upstream).await {
        tracing::debug!(error = %e, "upgraded tunnel closed with error");
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_header_values() {
        let host = |v: &'static str| host_of(v.as_bytes());
        assert_eq!(host("ville.test"), Some(("ville.test", false)));
        assert_eq!(host("Ville.Test:8443"), Some(("Ville.Test", true)));
        assert_eq!(host("[::1]:80"), Some(("[::1]", false)));
        assert_eq!(host("[::AB]"), Some(("[::AB]", true)));
        assert_eq!(host("ville test"), None);
        assert_eq!(host("ville.test:80x"), None);
        assert_eq!(host("ville.test:80:81"), None);
        assert_eq!(host("user@ville.test"), None);
        assert_eq!(host("[zz]"), None);
        assert_eq!(host("[::1]x"), None);
        assert_eq!(host(":80"), None);
        assert_eq!(host("ville.tést"), None);
    }
}
