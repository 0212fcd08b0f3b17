//! The request pipeline: every request goes through the same phases, in the order of
//! `docs/request-lifecycle.md`. Each phase is a file with one entry point that reads the
//! request's context (`RequestCtx`) and returns a `Flow`: continue, or end the request with a
//! local answer or a failure, which `respond` (the one place) turns into a response.
//!
//! | phase | file | what it decides |
//! | --- | --- | --- |
//! | 0. canonical request | `canonical` | `CONNECT` (405), target forms (400), length (414), one host agreed (400), path normalised (400) |
//! | 1. routing | `route` | tenant by host (400, 421); status site or `/.rempart/`; route (404); maintenance (503) |
//! | 1a. local pages | `local` | status site, subscription steps, challenge script and pass |
//! | 2. shield | `shield` | bans, API keys, rates, pass cookie, fingerprints, challenge; priority |
//! | 2b. data guard | `guard` | the account (sources, else the client's prefix); suspended or over a `block` budget (403); `slow` |
//! | 3. request body | `forward::declared_length`, `forward::read_body` | declared length (400, 413); the body read whole into the gateway's store before any origin slot (408, 413, 503 when the store is full), or streamed within the route's own upload slots (503) |
//! | 4. admission | `admission` | a slot at the origin, verified clients first; shed |
//! | 5. forward | `forward` | upstream request, retry on another server, stale copy on failure |
//! | 6. answer | `answer` | origin's head: stale copy on 5xx, `Via`, tunnel, body taps |
//! | 7. response body | `body`, `taps` | streamed chunk by chunk through the taps, deadline |
//! | 8. log | `log` | access-log line, counters, signals, when the body is dropped |
//!
//! `Gateway` holds the current `Generation` (everything derived from one configuration,
//! swapped atomically on reload); `sampler` reads the signals once a second for consumers.

pub mod admission;
pub mod answer;
pub mod body;
pub mod canonical;
pub mod context;
pub mod flow;
pub mod forward;
pub mod generation;
pub mod guard;
pub mod local;
pub mod log;
pub mod respond;
pub mod route;
pub mod sampler;
pub mod shield;
pub mod taps;

use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response};

use crate::config::Runtime;
use crate::metrics::Metrics;
use crate::proxy::body::DownstreamBody;
pub use body::ResponseBody;
pub use context::{ConnInfo, RequestCtx, RequestEnds};
use flow::End;
pub use generation::{ChangeSummary, Generation};
use log::AccessRecord;
use route::Found;

/// The gateway: current generation plus shared metrics.
pub struct Gateway {
    generation: ArcSwap<Generation>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
}

impl Gateway {
    /// Builds the gateway for `config`.
    pub fn new(
        config: Runtime,
        access_log: bool,
        status: Arc<crate::status::StatusService>,
    ) -> Arc<Self> {
        Self::with_first(config, access_log, status, generation::First::default())
    }

    /// Builds the gateway for `config` from `first`: the node-local defence state (an
    /// upgrade carries the previous process's keys) and the ban store (a cluster node's),
    /// or fresh ones.
    pub fn with_first(
        config: Runtime,
        access_log: bool,
        status: Arc<crate::status::StatusService>,
        first: generation::First,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::default());
        let generation = Generation::build(config, None, first, &metrics, access_log, status);
        generation.export_certificates(&metrics);
        let gw = Arc::new(Self {
            generation: ArcSwap::from_pointee(generation),
            metrics,
        });
        gw.generation.load().spawn_health_checks();
        sampler::register_metric_sources(&gw);
        gw
    }

    /// The current generation.
    pub fn current(&self) -> Arc<Generation> {
        self.generation.load_full()
    }

    /// Sets a tenant's vigilance level (the watch decides it; the playbook's actions follow
    /// it on every request). `false` when no such tenant.
    pub fn set_level(&self, tenant_id: &str, level: crate::common::Level) -> bool {
        let generation = self.generation.load();
        let Some(i) = generation.tenant_index(tenant_id) else {
            return false;
        };
        generation.tenant_flags[i].set_level(level);
        true
    }

    /// Switches a tenant's under-attack mode on until `until_ms` (see `clock::now_ms`;
    /// `u64::MAX` = until switched off) or off (`0`). `false` when no such tenant.
    pub fn set_under_attack(&self, tenant_id: &str, until_ms: u64) -> bool {
        let generation = self.generation.load();
        let Some(i) = generation.tenant_index(tenant_id) else {
            return false;
        };
        generation.tenant_flags[i].set_under_attack(until_ms);
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
        let summary = generation::summarize(&old.config, &config);
        old.status.apply_config(&config, crate::clock::unix_now());
        let next = Arc::new(Generation::build(
            config,
            Some(&old),
            generation::First::default(),
            &self.metrics,
            old.access_log,
            old.status.clone(),
        ));
        next.spawn_health_checks();
        next.export_certificates(&self.metrics);
        let acme = next.acme.clone();
        self.generation.store(next);
        old.retired.cancel();
        // A tenant the reload added gets its certificate now, not at the next pass, and one
        // that failed is tried again (the operator may have fixed why); the certificates
        // served are checked again. Woken once the new generation is in place, so the pass
        // sees it.
        acme.retry_now();
        summary
    }

    /// Handles one downstream request. Never fails: every end becomes a response.
    pub async fn handle(
        self: Arc<Self>,
        conn: Arc<ConnInfo>,
        mut req: Request<DownstreamBody>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let generation = self.generation.load_full();
        let client = crate::proxy::headers::client_ip(conn.peer.ip(), req.headers(), |ip| {
            generation.config.is_trusted_proxy(ip)
        });
        let mut record = AccessRecord::start(generation.clone(), &req, client, conn.clock.clone());
        // Phase 0: every later decision is taken on the canonical request.
        // Before a tenant is known an end is never a rate limit, so never held in the tarpit.
        let untenanted = |record, req: &Request<DownstreamBody>, end| {
            respond::finish(&generation, record, accept_language(req).as_ref(), end)
        };
        let form =
            match canonical::canonicalise(&mut req, generation.config.limits.max_target_bytes) {
                Ok(form) => form,
                Err(end) => return Ok(untenanted(record, &req, end)),
            };
        if form.rewritten {
            record.uri = req.uri().clone();
        }
        // Phase 1 starts here: host and tenant first, so the status site is answered from
        // memory without entering the rest of the pipeline.
        let found = match route::tenant(&generation, &req) {
            Ok(found) => found,
            Err(error) => return Ok(untenanted(record, &req, End::from(error))),
        };
        let Found {
            host,
            tenant_idx,
            status,
        } = found;
        Ok(match status {
            Some(target) if !target.is_subscription() => {
                // `Accept-Language` is read only if the page is refused (the pages choose
                // their language themselves).
                let mut ctx = RequestCtx::new(&generation, &conn, host, tenant_idx, None, record);
                match local::status_page(&ctx, target, &req) {
                    Ok(mut page) => {
                        if let Some(value) = ctx.hsts() {
                            page.headers_mut()
                                .insert(http::header::STRICT_TRANSPORT_SECURITY, value.clone());
                        }
                        respond::page_response(
                            ctx.record,
                            page,
                            "status page",
                            crate::signals::LocalReason::StatusSite,
                        )
                    }
                    Err(end) => {
                        ctx.accept_language = accept_language(&req);
                        finish!(ctx, end)
                    }
                }
            }
            // The pipeline's future is large (every phase's state); boxed, the future hyper
            // stores and moves per request stays small.
            subscription => {
                let host = std::borrow::Cow::Owned(host.into_owned());
                let accept_language = accept_language(&req);
                let mut ctx = RequestCtx::new(
                    &generation,
                    &conn,
                    host,
                    tenant_idx,
                    accept_language,
                    record,
                );
                ctx.encoded_separator = form.encoded_separator;
                Box::pin(run(ctx, req, subscription)).await
            }
        })
    }
}

/// The client's `Accept-Language`, for the language of a local page.
fn accept_language<B>(req: &Request<B>) -> Option<http::HeaderValue> {
    req.headers().get(http::header::ACCEPT_LANGUAGE).cloned()
}

/// The response for an `End`: held in the tarpit first when it is a rate limit (only the
/// small tarpit future is awaited, so the pipeline's future stays small), then built.
macro_rules! finish {
    ($ctx:ident, $end:expr) => {{
        let end = $end;
        let hold_ms = $ctx.hold_ms(&end);
        if hold_ms > 0 {
            respond::tarpit($ctx.generation, hold_ms).await;
        }
        $ctx.finish(end)
    }};
}
use finish;

/// Continues with the value of a phase's `Flow`, or ends the request with its `End`.
macro_rules! step {
    ($ctx:ident, $flow:expr) => {
        match $flow {
            Ok(value) => value,
            Err(end) => return finish!($ctx, end),
        }
    };
}

/// The phases after the tenant is known, in the order of `docs/request-lifecycle.md`. (One
/// async function, not one per phase: each nested future would be moved on every request.)
async fn run(
    mut ctx: RequestCtx<'_>,
    req: Request<DownstreamBody>,
    subscription: Option<crate::status::site::Target>,
) -> Response<ResponseBody> {
    if let Some(target) = subscription {
        // Boxed: a subscription step is rare, and its future would make every request's larger.
        let end = Box::pin(local::subscription(&ctx, target, req)).await;
        return finish!(ctx, end);
    }
    if let Some(token) = local::acme_token(req.uri().path()) {
        // The certificate authority checking this gateway's order: answered here, before
        // any limit (its validators come from many addresses).
        if let Some(answer) = ctx.generation.acme.challenge_answer(token) {
            let end = local::acme_answer(answer);
            return finish!(ctx, end);
        }
    }
    if let Some(port) = ctx.tenant().https_redirect {
        if ctx.conn.proto != "https"
            && !local::is_acme_challenge(req.uri().path())
            && ctx.generation.serves_https(ctx.tenant_idx)
        {
            let end = local::https_redirect(&ctx, &req, port);
            return finish!(ctx, end);
        }
    }
    if local::is_rempart_page(req.uri().path()) {
        let end = local::rempart_page(&ctx, &req);
        return finish!(ctx, end);
    }
    let route = step!(ctx, route::route(&mut ctx, &req));
    step!(ctx, shield::decide(&mut ctx, route, &req));
    if route.guard.is_some() {
        // Boxed, and the wait too: most routes have no guard.
        if let Some(delay) = step!(ctx, guard::admit(&mut ctx, route, &req)) {
            Box::pin(tokio::time::sleep(delay)).await;
        }
    }
    let declared_len = step!(ctx, forward::declared_length(route, &req));
    let mut out = forward::prepare(&mut ctx, route, req, declared_len);
    // Boxed, behind a call that is not inlined: most requests have no body, and this step
    // would make every request's future and code larger.
    let streamed = out.has_body()
        && !forward::store_whole_body(&mut ctx, route, &mut out)
        && step!(
            ctx,
            forward::read_body_boxed(&mut ctx, route, &mut out).await
        );
    let pool = &ctx.generation.pools[ctx.tenant_idx][route.pool];
    let mut permit = match pool.admission {
        Some(_) if !streamed => step!(ctx, admission::admit(&mut ctx, pool, &out.parts).await),
        _ => None,
    };
    // Forward, with one retry on another server (the loop is here, not in a function of its
    // own, so the upstream client's future is not moved once more on every request).
    let mut attempts = forward::Attempts::new(&ctx, route);
    let (exchange, inflight) = loop {
        let attempt = step!(ctx, attempts.next(&mut ctx, route, pool, &out));
        let answer = out.send_to(&attempt.server, ctx.generation.client);
        let outcome = tokio::time::timeout_at(attempt.head_deadline, answer).await;
        let settled = attempts.settle(&mut ctx, pool, &out, attempt, outcome, &mut permit);
        if let Some(answered) = step!(ctx, settled) {
            break answered;
        }
    };
    answer::respond(ctx, route, &mut out, exchange, inflight, permit)
}

impl RequestCtx<'_> {
    /// How long to hold the answer to `end` (the tarpit), in milliseconds.
    fn hold_ms(&self, end: &End) -> u64 {
        respond::hold_ms(self.generation, Some(self.tenant_idx), end)
    }

    /// The local answer for `end` (callers hold it in the tarpit first when `hold_ms` says so).
    pub fn finish(self, end: End) -> Response<ResponseBody> {
        let hsts = self.hsts().cloned();
        let mut response = respond::finish(
            self.generation,
            self.record,
            self.accept_language.as_ref(),
            end,
        );
        if let Some(value) = hsts {
            response
                .headers_mut()
                .insert(http::header::STRICT_TRANSPORT_SECURITY, value);
        }
        response
    }

    /// The tenant's `Strict-Transport-Security` value, on an HTTPS connection.
    pub fn hsts(&self) -> Option<&http::HeaderValue> {
        (self.conn.proto == "https")
            .then(|| self.tenant().hsts.as_ref())
            .flatten()
    }
}

/// A gateway over `config` (TOML text) for unit tests; no listener.
#[cfg(test)]
pub(crate) fn test_gateway(config: &str) -> Arc<Gateway> {
    let config = format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n\n{config}");
    let runtime = crate::config::load_str(&config, std::path::Path::new("test.toml")).unwrap();
    let status = Arc::new(crate::status::StatusService::empty(&runtime, 0));
    Gateway::new(runtime, false, status)
}

/// One tenant `id` on `host` with one pool and a catch-all route (unit tests).
#[cfg(test)]
pub(crate) fn test_tenant(id: &str, host: &str, shield: &str) -> String {
    format!(
        "[[tenants]]\nid = \"{id}\"\nname = \"{id}\"\nhosts = [\"{host}\"]\n{shield}\n[[tenants.pools]]\nname = \"web\"\nservers = [{{ address = \"127.0.0.1:9\" }}]\n\n[[tenants.routes]]\npath_prefix = \"/\"\npool = \"web\"\n"
    )
}
