//! Forwarding: the request body's declared length is checked (400, 413),
//! the request is made ready for the origin (hop-by-hop fields and the pass cookie removed,
//! forwarding fields decided, the body wrapped with its size limit, minimum data rate and
//! byte count), then sent to a server of the route's pool within the response-head timeout.
//! An idempotent request without a body whose connection failed is tried once more on
//! another server (`Attempts`, driven by `pipeline::run`). When no server answers, the stale
//! copy of the page or the fallback page (`answer::origin_failed`).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_LENGTH, HOST};
use http::{Method, Request, Version};
use tokio::time::Instant;

use super::answer;
use super::context::RequestCtx;
use super::flow::Flow;
use crate::config::runtime::Route;
use crate::error::ProxyError;
use crate::proxy::body::{DownstreamBody, Pace, RequestBody};
use crate::proxy::client::{self, ClientError, Exchange};
use crate::proxy::headers;
use crate::proxy::upstream::{InflightGuard, Pool, UpstreamServer};
use crate::shield::gate::Permit;

/// The request, ready for the origin.
pub struct Outgoing {
    /// The request's head, hop-by-hop fields removed.
    pub parts: http::request::Parts,
    /// The body on its way (taken by the first attempt).
    body: Option<RequestBody>,
    /// The gateway's forwarding fields, written after the request's own.
    forwarding: headers::ForwardingFields,
    /// The declared body length.
    declared_len: Option<u64>,
    /// Whether this is an upgrade (WebSocket and the like).
    pub upgrade: bool,
    /// The downstream side of an upgrade, once the origin agrees.
    pub on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// Whether a failed attempt may be retried on another server.
    can_retry: bool,
    /// A streamed upload's slot (routes with `stream_request_body`), held until the origin
    /// answers.
    upload_slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The request body's declared length, checked: 400 when it is not a number, 413 over the
/// route's limit.
pub fn declared_length<B>(route: &Route, req: &Request<B>) -> Flow<Option<u64>> {
    let declared_len = match req.headers().get(CONTENT_LENGTH) {
        Some(v) => Some(decimal(v.as_bytes()).ok_or(ProxyError::BadRequest)?),
        None => None,
    };
    if declared_len.is_some_and(|n| n > route.max_body_bytes) {
        return Err(ProxyError::BodyTooLarge.into());
    }
    Ok(declared_len)
}

/// A plain decimal number (what `Content-Length` holds), without overflow.
fn decimal(digits: &[u8]) -> Option<u64> {
    let digits = digits.trim_ascii();
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// Makes the request ready for the origin.
#[inline]
pub fn prepare(
    ctx: &mut RequestCtx<'_>,
    route: &Route,
    mut req: Request<DownstreamBody>,
    declared_len: Option<u64>,
) -> Outgoing {
    let config = &ctx.generation.config;
    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let http2 = req.version() == Version::HTTP_2;
    // Host preserved; HTTP/2 requests carry it as `:authority`.
    let sent_host = req.headers().get(HOST).cloned();
    let host_missing = sent_host.is_none();
    let host_value = sent_host.or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let (mut parts, incoming) = req.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers, upgrade);
    headers::strip_cookie(&mut parts.headers, crate::shield::pass::PASS_COOKIE);
    if route.guard.as_ref().is_some_and(|g| g.reads_body()) {
        // The guard reads the answer: the origin is asked for it uncompressed.
        parts.headers.remove(http::header::ACCEPT_ENCODING);
    }
    if host_missing {
        if let Some(h) = &host_value {
            parts.headers.insert(HOST, h.clone());
        }
    }
    let conn = ctx.conn;
    // The client's address: the connection's, or the one trusted proxies name.
    let real_ip = config.x_real_ip.then(|| {
        if ctx.client() == conn.peer.ip() {
            conn.peer_value.clone()
        } else {
            HeaderValue::from_str(&ctx.client().to_string())
                .unwrap_or_else(|_| conn.peer_value.clone())
        }
    });
    let forwarding = headers::set_forwarding(
        &mut parts.headers,
        &headers::Forwarding {
            peer: conn.peer.ip(),
            peer_trusted: config.is_trusted_proxy(conn.peer.ip()),
            proto: conn.proto,
            host: host_value
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or(&ctx.host),
            host_value: host_value.as_ref(),
            via_name: &config.via_name,
            peer_value: &conn.peer_value,
            forwarded_for: &conn.forwarded_for,
            via: &ctx.generation.via[usize::from(http2)],
            cache: Some(&conn.forwarded),
            strip: &ctx.tenant().strip_headers,
            real_ip: real_ip.as_ref(),
        },
    );
    let body_empty = http_body::Body::is_end_stream(&incoming) || declared_len == Some(0);
    // A body-less request (most of them) has nothing to count or pace.
    let body = if http_body::Body::is_end_stream(&incoming) {
        RequestBody::empty()
    } else {
        // Slow-POST guard: a body must keep up with the minimum data rate after the grace
        // period.
        let pace = (!body_empty && config.limits.min_body_rate > 0).then(|| {
            Pace::new(
                config.timeouts.downstream_body_grace,
                config.limits.min_body_rate,
            )
        });
        let received = ctx
            .record
            .bytes_in
            .get_or_insert_with(|| Arc::new(AtomicU64::new(0)))
            .clone();
        RequestBody::new(incoming, route.max_body_bytes, received).with_pace(pace)
    };
    Outgoing {
        can_retry: is_idempotent(&parts.method) && body_empty && !upgrade,
        parts,
        body: Some(body),
        forwarding,
        declared_len,
        upgrade,
        on_upgrade,
        upload_slot: None,
    }
}

impl Outgoing {
    /// Whether the request carries a body still to be read.
    pub fn has_body(&self) -> bool {
        self.body
            .as_ref()
            .is_some_and(|b| !http_body::Body::is_end_stream(b))
    }
}

/// Phase 3 for a body the HTTP/1.1 fast path read with its head: stored at once when the
/// store has memory for it (no future, no copy); `false` otherwise (then `read_body`).
pub fn store_whole_body(ctx: &mut RequestCtx<'_>, route: &Route, out: &mut Outgoing) -> bool {
    if route.streaming_uploads.is_some() {
        return false;
    }
    let Some(body) = out.body.as_ref() else {
        return false;
    };
    let Some(stored) = body
        .whole()
        .and_then(|b| ctx.generation.bodies.store_whole(b))
    else {
        return false;
    };
    if let Some(received) = &ctx.record.bytes_in {
        received.fetch_add(stored.remaining(), std::sync::atomic::Ordering::Relaxed);
    }
    out.declared_len = Some(stored.remaining());
    out.body = Some(RequestBody::stored(stored));
    true
}

/// `read_body`, boxed (only requests with a body pay for its future).
#[inline(never)]
pub fn read_body_boxed<'a>(
    ctx: &'a mut RequestCtx<'_>,
    route: &'a Route,
    out: &'a mut Outgoing,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Flow<bool>> + Send + 'a>> {
    Box::pin(read_body(ctx, route, out))
}

/// Phase 3, the request body, before any origin slot is taken: read whole into the
/// gateway's store (memory, then disk), so a slow upload never holds the origin; or, on a
/// route that streams uploads, one of the route's own upload slots (503 when all are taken).
/// `true` when the body streams (it then skips the pool's admission gate: uploads never take
/// the slots of page views).
pub async fn read_body(ctx: &mut RequestCtx<'_>, route: &Route, out: &mut Outgoing) -> Flow<bool> {
    if route.streaming_uploads.is_some() {
        let slots =
            ctx.generation.upload_slots[ctx.tenant_idx][ctx.route_idx.unwrap_or_default()].clone();
        let Some(slot) = slots.and_then(|s| s.try_acquire_owned().ok()) else {
            return Err(ProxyError::Shed
                .because("every upload slot of the route is taken")
                .into());
        };
        out.upload_slot = Some(slot);
        return Ok(true);
    }
    let Some(mut body) = out.body.take() else {
        return Ok(false);
    };
    let deadline = ctx.record.start + route.timeouts.request;
    let stored = tokio::time::timeout_at(deadline, ctx.generation.bodies.collect(&mut body))
        .await
        .map_err(|_| {
            ProxyError::BodyTooSlow.because("request body not complete within the request timeout")
        })?;
    use crate::proxy::body::RequestBodyError as B;
    use crate::proxy::buffer::StoreError as S;
    let stored = stored.map_err(|e| match e {
        S::Body(B::TooLarge) => ProxyError::BodyTooLarge.into(),
        S::Body(B::TooSlow) => ProxyError::BodyTooSlow.into(),
        S::Body(B::Downstream(e)) => ProxyError::BadRequest.because(format!("client body: {e}")),
        S::Body(B::Stored(e)) | S::Io(e) => {
            ProxyError::Internal.because(format!("request-body store: {e}"))
        }
        S::Full => ProxyError::Shed.because("request-body store full"),
    })?;
    out.declared_len = Some(stored.remaining());
    out.body = Some(RequestBody::stored(stored));
    // The body is here already: the origin has nothing to agree to.
    out.parts.headers.remove(http::header::EXPECT);
    Ok(false)
}

/// The attempts at the pool's servers for one request: at most two, the second on another
/// server, only when the connection failed and the request may be repeated. `run` drives
/// them: `next` picks a server, `Outgoing::send_to` asks it, `settle` decides.
pub struct Attempts {
    deadline: Instant,
    excluded: Option<Arc<UpstreamServer>>,
}

/// One attempt under way.
pub struct Attempt {
    /// The server asked.
    pub server: Arc<UpstreamServer>,
    /// When the origin's head must have arrived.
    pub head_deadline: Instant,
    sent_at: Instant,
    inflight: InflightGuard,
}

impl Outgoing {
    /// Sends the request to `server`; resolves with the origin's answer head. (Inlined: the
    /// future is then built in place in the pipeline's, not moved in; callgrind.)
    #[inline(always)]
    pub fn send_to<'s>(
        &'s mut self,
        server: &'s Arc<UpstreamServer>,
        settings: client::ClientSettings,
    ) -> impl std::future::Future<Output = Result<Exchange, ClientError>> + 's {
        let body = self.body.take().unwrap_or_else(RequestBody::empty);
        let outgoing = client::OutgoingRequest {
            method: &self.parts.method,
            target: self.parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &self.parts.headers,
            forwarding: Some(&self.forwarding),
            content_length: self.declared_len,
            upgrade: self.upgrade,
        };
        client::send(server, settings, outgoing, body)
    }
}

impl Attempts {
    /// The attempts of a request on `route`.
    pub fn new(ctx: &RequestCtx<'_>, route: &Route) -> Self {
        Self {
            deadline: ctx.record.start + route.timeouts.request,
            excluded: None,
        }
    }

    /// Picks the server of the next attempt; when none is available, the stale copy or the
    /// 502 page.
    #[inline]
    pub fn next(
        &self,
        ctx: &mut RequestCtx<'_>,
        route: &Route,
        pool: &Pool,
        out: &Outgoing,
    ) -> Flow<Attempt> {
        let Some(server) = pool.pick(crate::clock::coarse_now_ms(), self.excluded.as_ref()) else {
            return Err(answer::origin_failed(
                ctx,
                &out.parts,
                ProxyError::UpstreamConnect.because("no server available in the pool"),
            ));
        };
        ctx.record.upstream = Some(server.clone());
        let sent_at = Instant::now();
        Ok(Attempt {
            inflight: InflightGuard::new(server.clone()),
            head_deadline: (sent_at + route.timeouts.upstream_response_head).min(self.deadline),
            sent_at,
            server,
        })
    }

    /// What the attempt came to: the answer, `None` to try another server, or the end of
    /// the request (the client's fault, or the stale copy or the fallback page when the
    /// origin failed).
    #[inline]
    pub fn settle(
        &mut self,
        ctx: &mut RequestCtx<'_>,
        pool: &Pool,
        out: &Outgoing,
        attempt: Attempt,
        outcome: Result<Result<Exchange, ClientError>, tokio::time::error::Elapsed>,
        permit: &mut Option<Permit>,
    ) -> Flow<Option<(Exchange, InflightGuard)>> {
        let server = attempt.server;
        let failure = match settle(ctx, pool, &server, attempt.sent_at, outcome) {
            Ok(exchange) => {
                if let Some(p) = permit.as_mut() {
                    p.sample();
                }
                return Ok(Some((exchange, attempt.inflight)));
            }
            Err(AttemptError::Downstream(error)) => return Err(error.into()),
            Err(AttemptError::Upstream(failure)) => failure,
        };
        server.record_request(false, &pool.spec.health, crate::clock::coarse_now_ms());
        pool.outcomes.record(true, false);
        ctx.signals().origin_failure();
        if failure.error.retryable()
            && out.can_retry
            && self.excluded.is_none()
            && pool.servers.len() > 1
            && Instant::now() < self.deadline
        {
            pool.retries.inc();
            self.excluded = Some(server);
            return Ok(None);
        }
        Err(answer::origin_failed(ctx, &out.parts, failure))
    }
}

/// Why one attempt failed.
enum AttemptError {
    /// The client's side: the body was too large, too slow or broken (not the origin's fault).
    Downstream(ProxyError),
    /// The origin's side (may be retried, counts against the server).
    Upstream(crate::error::Failure),
}

/// What one attempt at `server` came to: the origin's answer (counted for the pool, the
/// server's health and the tenant's signals), or why it failed.
#[inline]
fn settle(
    ctx: &RequestCtx<'_>,
    pool: &Pool,
    server: &UpstreamServer,
    sent_at: Instant,
    outcome: Result<Result<Exchange, ClientError>, tokio::time::error::Elapsed>,
) -> Result<Exchange, AttemptError> {
    match outcome {
        Ok(Ok(exchange)) => {
            let elapsed = sent_at.elapsed();
            pool.latency.observe(elapsed.as_secs_f64());
            let status = match &exchange {
                Exchange::Response(head, _) | Exchange::Upgraded(head, _, _) => head.status,
            };
            pool.outcomes.record(
                status.is_server_error(),
                ctx.tenant()
                    .status
                    .as_ref()
                    .is_some_and(|s| elapsed > s.slow),
            );
            if (status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN)
                && ctx.route().is_some_and(|r| r.login)
            {
                ctx.signals().login_failure();
            }
            ctx.signals().origin_answer(
                status.is_server_error(),
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            );
            server.record_request(true, &pool.spec.health, crate::clock::coarse_now_ms());
            Ok(exchange)
        }
        Ok(Err(ClientError::BodyTooLarge)) => {
            Err(AttemptError::Downstream(ProxyError::BodyTooLarge))
        }
        Ok(Err(ClientError::DownstreamTooSlow)) => {
            Err(AttemptError::Downstream(ProxyError::BodyTooSlow))
        }
        // The client went away or sent a broken body: not the origin's fault.
        Ok(Err(ClientError::DownstreamBody)) => {
            Err(AttemptError::Downstream(ProxyError::BadRequest))
        }
        Ok(Err(e @ (ClientError::Connect(_) | ClientError::ConnectTimeout))) => {
            tracing::debug!(server = %server.address, error = %e, "upstream connect failed");
            Err(AttemptError::Upstream(
                ProxyError::UpstreamConnect.because(format_args!("{}: {e}", server.address)),
            ))
        }
        Ok(Err(e)) => {
            tracing::debug!(server = %server.address, error = %e, "upstream request failed");
            Err(AttemptError::Upstream(
                ProxyError::UpstreamFailed.because(format_args!("{}: {e}", server.address)),
            ))
        }
        Err(_) => Err(AttemptError::Upstream(ProxyError::UpstreamTimeout.because(
            format_args!(
                "{}: no answer within the response-head timeout",
                server.address
            ),
        ))),
    }
}
