//! Active health checks: one task per pool with a probe path, sending `GET path` to each
//! server every interval and moving servers in and out of rotation after the configured
//! thresholds. Tasks stop when their configuration generation is retired; server state
//! lives in the servers, so it carries over reloads.

use std::sync::Arc;

use http::header::{HeaderValue, HOST, USER_AGENT};
use http::{Request, Uri};

use super::body::RequestBody;
use super::upstream::{now_ms, Pool, UpstreamServer};
use super::{Generation, UpstreamClient};

/// Starts the health-check tasks of `generation`.
pub fn spawn(generation: &Arc<Generation>) {
    for (ti, pools) in generation.pools.iter().enumerate() {
        for pool in pools {
            let Some(path) = pool.spec.health.path.clone() else {
                continue;
            };
            let host = generation.config.tenants[ti]
                .hosts
                .first()
                .cloned()
                .unwrap_or_default();
            let pool = pool.clone();
            let client = generation.client.clone();
            let retired = generation.retired.clone();
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
}

async fn probe_pool(client: &UpstreamClient, pool: &Pool, path: &str, host: &str) {
    let probes = pool
        .servers
        .iter()
        .map(|s| probe(client, pool, s, path, host));
    futures_util::future::join_all(probes).await;
}

async fn probe(
    client: &UpstreamClient,
    pool: &Pool,
    server: &UpstreamServer,
    path: &str,
    host: &str,
) {
    let ok = match build_probe(server, path, host) {
        Some(req) => matches!(
            tokio::time::timeout(pool.spec.health.timeout, client.request(req)).await,
            Ok(Ok(resp)) if resp.status().is_success() || resp.status().is_redirection()
        ),
        None => false,
    };
    if let Some(up) = server.record_probe(ok, &pool.spec.health, now_ms()) {
        if up {
            tracing::info!(tenant = %pool.tenant, pool = %pool.spec.name, server = %server.address, "upstream server back in rotation");
        } else {
            tracing::warn!(tenant = %pool.tenant, pool = %pool.spec.name, server = %server.address, "upstream server failed its health checks; out of rotation");
        }
    }
}

fn build_probe(server: &UpstreamServer, path: &str, host: &str) -> Option<Request<RequestBody>> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(server.authority.clone())
        .path_and_query(path)
        .build()
        .ok()?;
    let mut req = Request::new(RequestBody::empty());
    *req.uri_mut() = uri;
    if let Ok(h) = HeaderValue::from_str(host) {
        req.headers_mut().insert(HOST, h);
    }
    req.headers_mut()
        .insert(USER_AGENT, HeaderValue::from_static("rempart-health-check"));
    Some(req)
}
