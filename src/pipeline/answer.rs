//! Phase 6, the origin's answer: a 5xx is replaced by the page's stale copy when there is
//! one; otherwise the answer goes downstream with the gateway's `Via` (its field lines are
//! written through by the HTTP/1.1 fast path, or become a map for hyper), a 101 becomes a
//! tunnel, and the body's taps are attached (the stale-copy recorder). Client errors from the
//! origin feed the shield's error rate; answers served while calm become good history.
//!
//! `origin_failed` is the one place a failed origin is covered by a stale copy.

use bytes::Bytes;
use http::{Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::body::ResponseBody;
use super::context::RequestCtx;
use super::flow::{End, Local};
use super::forward::Outgoing;
use super::guard::GuardTap;
use super::taps::ResponseTaps;
use crate::config::runtime::Route;
use crate::degraded::{self, StaleRequest};
use crate::error::{Failure, ProxyError};
use crate::proxy::client::Exchange;
use crate::proxy::fields::OriginFields;
use crate::proxy::headers;
use crate::proxy::upstream::InflightGuard;
use crate::shield::gate::Permit;

fn stale_request<'a>(
    ctx: &'a RequestCtx<'_>,
    route: &'a Route,
    parts: &'a http::request::Parts,
) -> StaleRequest<'a> {
    StaleRequest {
        tenant: ctx.tenant(),
        route,
        parts,
        host: &ctx.host,
        time_zone: ctx.generation.config.status.time_zone,
        via: &ctx.generation.via[0],
    }
}

/// The origin failed (or cannot be asked): the page's stale copy when the route keeps copies
/// and one is usable, else `failure`'s page.
pub fn origin_failed(ctx: &RequestCtx<'_>, parts: &http::request::Parts, failure: Failure) -> End {
    let stale = ctx.route().and_then(|route| {
        degraded::stale_page(&ctx.generation.stale, &stale_request(ctx, route, parts))
    });
    match stale {
        Some(page) => Local::Stale(page).end(),
        None => End::Fail(failure),
    }
}

/// Phase 6: the origin's answer goes downstream (or its stale copy, when the origin
/// answered with a server error and a copy exists).
#[inline]
pub fn respond(
    mut ctx: RequestCtx<'_>,
    route: &Route,
    out: &mut Outgoing,
    exchange: Exchange,
    mut inflight: InflightGuard,
    permit: Option<Permit>,
) -> Response<ResponseBody> {
    let (head, body_or_tunnel) = match exchange {
        Exchange::Response(head, body) => (head, Ok(body)),
        Exchange::Upgraded(head, stream, leftover) => (head, Err((stream, leftover))),
    };
    if degraded::covers_status(head.status) && body_or_tunnel.is_ok() {
        // The origin answered with an error: a stale copy serves residents better.
        if let Some(page) = degraded::stale_page(
            &ctx.generation.stale,
            &stale_request(&ctx, route, &out.parts),
        ) {
            return ctx.finish(Local::Stale(page).end());
        }
    }
    let mut head = head;
    let guard_tap = match &route.guard {
        Some(guard) if body_or_tunnel.is_ok() => {
            match GuardTap::attach(&mut ctx, guard, &mut head.fields) {
                Ok(tap) => tap,
                Err(ProxyError::UpstreamFailed) => {
                    let failure = ProxyError::UpstreamFailed.because(
                        "the origin compressed an answer the data guard must read with a coding it cannot decode (it was asked for identity)",
                    );
                    return ctx.finish(failure.into());
                }
                Err(error) => return ctx.finish(error.into()),
            }
        }
        _ => None,
    };
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    let via = &ctx.generation.via[0];
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        // The tunnel's answer goes through hyper, which needs a map with Connection/Upgrade.
        let map = response.headers_mut();
        *map = head.fields.to_header_map(true, 1);
        headers::remove_hop_by_hop(map, true);
        headers::append_via(map, via);
    } else {
        // A line of its own after the origin's `Via` lines, if any: the same list (RFC 9110
        // 5.3), and the origin's lines go through untouched.
        response
            .headers_mut()
            .insert(http::header::VIA, via.clone());
        if let Some(cookie) = ctx.grant.take() {
            response
                .headers_mut()
                .append(http::header::SET_COOKIE, *cookie);
        }
        // The tenant's policy, unless the origin states its own.
        if let Some(value) = ctx.hsts() {
            if head.fields.get("strict-transport-security").is_none() {
                response
                    .headers_mut()
                    .insert(http::header::STRICT_TRANSPORT_SECURITY, value.clone());
            }
        }
    }
    ctx.record.status = head.status.as_u16();
    remember(&ctx, head.status);
    match body_or_tunnel {
        Ok(body) => {
            // The slot is held until the body is done; a tunnel gives it back at once.
            inflight.hold(permit);
            let mut taps = taps(&ctx, route, &out.parts, head.status, &head.fields);
            taps.guard = guard_tap.map(Box::new);
            let deadline = ctx.record.start + route.timeouts.request;
            response.map(|()| {
                ResponseBody::upstream(body, deadline, ctx.record, inflight, taps, head.fields)
            })
        }
        Err((stream, leftover)) => {
            let Some(downstream_upgrade) = out.on_upgrade.take() else {
                let failure = ProxyError::UpstreamFailed.because(
                    "the origin switched protocols on a request that asked for no upgrade",
                );
                return ctx.finish(failure.into());
            };
            tokio::spawn(tunnel(downstream_upgrade, stream, leftover, inflight));
            let mut record = ctx.record;
            // Logged now; the tunnel's bytes are not counted in the record.
            record.reason = Some("upgraded");
            response.map(|()| ResponseBody::local(Bytes::new(), Some(record)))
        }
    }
}

/// What the shield learns from the answer: client errors (scanners and credential stuffing
/// leave a trail of 404s, 401s and 403s), and good history while calm.
fn remember(ctx: &RequestCtx<'_>, status: StatusCode) {
    let generation = ctx.generation;
    if status.is_client_error() && ctx.tenant().shield.error_rate > 0 {
        generation.shield.observe_error(
            generation.tenant_keys[ctx.tenant_idx],
            ctx.client(),
            crate::clock::coarse_now_ms(),
        );
    }
    if ctx.calm && status.as_u16() < 400 {
        // Served normally while calm: remembered as good history for the next attack.
        generation.defence.history.record(
            crate::shield::history_key(ctx.client()),
            crate::clock::coarse_now_ms() / 60_000,
        );
    }
}

/// The taps the answer's body streams through.
fn taps(
    ctx: &RequestCtx<'_>,
    route: &Route,
    parts: &http::request::Parts,
    status: StatusCode,
    fields: &OriginFields,
) -> ResponseTaps {
    if route.guard.is_some() {
        // A guarded route's answers are an account's records: never kept, never served to
        // anyone else.
        return ResponseTaps::default();
    }
    ResponseTaps::default().with_stale_copy(degraded::recorder(
        &ctx.generation.stale,
        &stale_request(ctx, route, parts),
        status,
        || fields.to_response_map(0),
    ))
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
