//! Forwarding: the request body's declared length is checked (400, 413; CONNECT is refused),
//! the request is made ready for the origin (hop-by-hop fields and the pass cookie removed,
//! forwarding fields decided, the body wrapped with its size limit, minimum data rate and
//! byte count), then sent to a server of the route's pool within the response-head timeout.
//! An idempotent request without a body whose connection failed is tried once more on
//! another server. When no server answers, the stale copy of the page or the fallback page
//! (`answer::origin_failed`).

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
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The request body's declared length, checked: 400 when it is not a number, 413 over the
/// route's limit; CONNECT is refused (400).
pub fn declared_length<B>(route: &Route, req: &Request<B>) -> Flow<Option<u64>> {
    let declared_len = match req.headers().get(CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(ProxyError::BadRequest)?,
        ),
        None => None,
    };
    if declared_len.is_some_and(|n| n > route.max_body_bytes) {
        return Err(ProxyError::BodyTooLarge.into());
    }
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest.into());
    }
    Ok(declared_len)
}

/// Makes the request ready for the origin.
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
    if host_missing {
        if let Some(h) = &host_value {
            parts.headers.insert(HOST, h.clone());
        }
    }
    let conn = ctx.conn;
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
    }
}

/// Sends the request to a server of `pool` and waits for its answer's head; tries once more
/// on another server when the connection failed and the request may be repeated.
pub async fn send(
    ctx: &mut RequestCtx<'_>,
    route: &Route,
    pool: &Pool,
    out: &mut Outgoing,
    permit: &mut Option<Permit>,
) -> Flow<(Exchange, InflightGuard)> {
    let deadline = ctx.record.start + route.timeouts.request;
    let mut excluded: Option<Arc<UpstreamServer>> = None;
    loop {
        let Some(server) = pool.pick(crate::clock::coarse_now_ms(), excluded.as_ref()) else {
            return Err(answer::origin_failed(
                ctx,
                &out.parts,
                ProxyError::UpstreamConnect.because("no server available in the pool"),
            ));
        };
        ctx.record.upstream = Some(server.clone());
        let failure = match attempt(ctx, route, pool, &server, out, deadline).await {
            Ok((exchange, inflight)) => {
                if let Some(p) = permit.as_mut() {
                    p.sample();
                }
                return Ok((exchange, inflight));
            }
            Err(Attempt::Downstream(error)) => return Err(error.into()),
            Err(Attempt::Upstream(failure)) => failure,
        };
        server.record_request(false, &pool.spec.health, crate::clock::coarse_now_ms());
        pool.outcomes.record(true, false);
        ctx.signals().origin_failure();
        if failure.error.retryable()
            && out.can_retry
            && excluded.is_none()
            && pool.servers.len() > 1
            && Instant::now() < deadline
        {
            pool.retries.inc();
            excluded = Some(server);
            continue;
        }
        return Err(answer::origin_failed(ctx, &out.parts, failure));
    }
}

/// Why one attempt failed.
enum Attempt {
    /// The client's side: the body was too large, too slow or broken (not the origin's fault).
    Downstream(ProxyError),
    /// The origin's side (may be retried, counts against the server).
    Upstream(crate::error::Failure),
}

/// One attempt at `server`, within the response-head timeout.
async fn attempt(
    ctx: &RequestCtx<'_>,
    route: &Route,
    pool: &Pool,
    server: &Arc<UpstreamServer>,
    out: &mut Outgoing,
    deadline: Instant,
) -> Result<(Exchange, InflightGuard), Attempt> {
    let outgoing = client::OutgoingRequest {
        method: &out.parts.method,
        target: out.parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        headers: &out.parts.headers,
        forwarding: Some(&out.forwarding),
        content_length: out.declared_len,
        upgrade: out.upgrade,
    };
    let inflight = InflightGuard::new(server.clone());
    let sent_at = Instant::now();
    let head_deadline = (sent_at + route.timeouts.upstream_response_head).min(deadline);
    let request_body = out.body.take().unwrap_or_else(RequestBody::empty);
    let outcome = tokio::time::timeout_at(
        head_deadline,
        client::send(server, ctx.generation.client, outgoing, request_body),
    )
    .await;
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
            ctx.signals().origin_answer(
                status.is_server_error(),
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            );
            server.record_request(true, &pool.spec.health, crate::clock::coarse_now_ms());
            Ok((exchange, inflight))
        }
        Ok(Err(ClientError::BodyTooLarge)) => Err(Attempt::Downstream(ProxyError::BodyTooLarge)),
        Ok(Err(ClientError::DownstreamTooSlow)) => {
            Err(Attempt::Downstream(ProxyError::BodyTooSlow))
        }
        // The client went away or sent a broken body: not the origin's fault.
        Ok(Err(ClientError::DownstreamBody)) => Err(Attempt::Downstream(ProxyError::BadRequest)),
        Ok(Err(e @ (ClientError::Connect(_) | ClientError::ConnectTimeout))) => {
            tracing::debug!(server = %server.address, error = %e, "upstream connect failed");
            Err(Attempt::Upstream(
                ProxyError::UpstreamConnect.because(format_args!("{}: {e}", server.address)),
            ))
        }
        Ok(Err(e)) => {
            tracing::debug!(server = %server.address, error = %e, "upstream request failed");
            Err(Attempt::Upstream(
                ProxyError::UpstreamFailed.because(format_args!("{}: {e}", server.address)),
            ))
        }
        Err(_) => Err(Attempt::Upstream(ProxyError::UpstreamTimeout.because(
            format_args!(
                "{}: no answer within the response-head timeout",
                server.address
            ),
        ))),
    }
}
