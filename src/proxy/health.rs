//! Active health checks: one task per pool with a probe path, sending `GET path` to each
//! server every interval and moving servers in and out of rotation after the configured
//! thresholds. Tasks stop when their configuration generation is retired (its token is
//! cancelled); server state lives in the servers, so it carries over reloads.

use std::sync::Arc;

use http::header::{HeaderValue, HOST, USER_AGENT};
use http::{HeaderMap, Method};

use super::body::RequestBody;
use super::client::{self, ClientSettings, Exchange, OutgoingRequest};
use super::upstream::{Pool, UpstreamServer};
use crate::clock::now_ms;

/// Starts the health checks of `pools` (each with the host name its probes carry) and the
/// idle-connection sweeper, until `retired` is cancelled.
pub fn spawn(
    pools: Vec<(Arc<Pool>, String)>,
    client: ClientSettings,
    retired: tokio_util::sync::CancellationToken,
) {
    spawn_idle_sweeper(
        pools.iter().map(|(p, _)| p.clone()).collect(),
        retired.clone(),
    );
    for (pool, host) in pools {
        let Some(path) = pool.spec.health.path.clone() else {
            continue;
        };
        let retired = retired.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(pool.spec.health.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = retired.cancelled() => return,
                    _ = tick.tick() => probe_pool(&client, &pool, &path, &host).await,
                }
            }
        });
    }
}

/// Every few seconds, closes idle upstream connections that aged out or that the origin closed.
fn spawn_idle_sweeper(pools: Vec<Arc<Pool>>, retired: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = retired.cancelled() => return,
                _ = tick.tick() => {
                    let now = tokio::time::Instant::now();
                    for server in pools.iter().flat_map(|p| p.servers.iter()) {
                        server.idle.sweep(now);
                    }
                }
            }
        }
    });
}

async fn probe_pool(settings: &ClientSettings, pool: &Pool, path: &str, host: &str) {
    let mut headers = HeaderMap::new();
    if let Ok(h) = HeaderValue::from_str(host) {
        headers.insert(HOST, h);
    }
    headers.insert(USER_AGENT, HeaderValue::from_static("rempart-health-check"));
    let probes = pool
        .servers
        .iter()
        .map(|s| probe(*settings, pool, s, path, &headers));
    futures_util::future::join_all(probes).await;
}

async fn probe(
    settings: ClientSettings,
    pool: &Pool,
    server: &Arc<UpstreamServer>,
    path: &str,
    headers: &HeaderMap,
) {
    let request = OutgoingRequest {
        method: &Method::GET,
        target: path,
        headers,
        forwarding: None,
        content_length: None,
        upgrade: false,
    };
    let exchange = client::send(server, settings, request, RequestBody::empty());
    let ok = match tokio::time::timeout(pool.spec.health.timeout, exchange).await {
        // The body is dropped unread: the probe connection is closed, not pooled.
        Ok(Ok(Exchange::Response(head, _body))) => {
            head.status.is_success() || head.status.is_redirection()
        }
        _ => false,
    };
    if let Some(up) = server.record_probe(ok, &pool.spec.health, now_ms()) {
        if up {
            tracing::info!(tenant = %pool.tenant, pool = %pool.spec.name, server = %server.address, "upstream server back in rotation");
        } else {
            tracing::warn!(tenant = %pool.tenant, pool = %pool.spec.name, server = %server.address, "upstream server failed its health checks; out of rotation");
        }
    }
}
