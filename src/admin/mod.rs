//! The admin listener (loopback by default): `/healthz` (open), and with the bearer token
//! `/metrics`, `POST /admin/reload`, bans, heavy hitters, the shield's state and
//! under-attack switch, the data guard's accounts (`admin::guard`), and the status pages (`admin::status`: incidents, overrides,
//! maintenance mode). Served by axum on its own socket, never on the public listeners.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod guard;
mod status;
mod watch;

use crate::pipeline::Gateway;
use crate::reload::Reloader;

/// What the admin API acts on.
#[derive(Clone)]
pub struct AdminState {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Its reloads.
    pub reloader: Arc<Reloader>,
    /// The watch.
    pub watch: Arc<crate::watch::service::WatchService>,
    /// Where upgrades are asked for (`None`: not from the admin API).
    pub upgrades: Option<tokio::sync::mpsc::Sender<crate::handover::UpgradeRequest>>,
    /// Cluster mode's state, when on.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    let Some(expected) = state.gateway.current().config.admin.token.clone() else {
        return false;
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Constant-time comparison of the token.
    use subtle::ConstantTimeEq;
    bool::from(given.trim().as_bytes().ct_eq(expected.as_bytes()))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "admin token required\n",
    )
        .into_response()
}

/// Refuses a request without the admin token before its handler (and its body's
/// extractor) runs.
async fn require_token(
    State(state): State<AdminState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !authorized(&state, request.headers()) {
        return unauthorized();
    }
    next.run(request).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.gateway.metrics.render(),
    )
        .into_response()
}

async fn reload(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    match state.reloader.reload("admin api").await {
        Ok(summary) => {
            Json(serde_json::json!({ "ok": true, "changes": summary.to_string() })).into_response()
        }
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({
                "ok": false,
                "errors": e.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
    }
}

/// An upgrade request: `{}` (the binary this process was started from, as a package
/// upgrade leaves it) or `{"binary": "/path/to/rempart"}`.
#[derive(serde::Deserialize, Default)]
struct UpgradeBody {
    binary: Option<std::path::PathBuf>,
}

/// `POST /admin/upgrade`: starts the new binary on this process's listening sockets and
/// answers once it serves (this process then drains and ends), or says why it was stopped
/// (this process goes on serving).
async fn upgrade(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let Ok(asked) = (if body.is_empty() {
        Ok(UpgradeBody::default())
    } else {
        serde_json::from_slice::<UpgradeBody>(&body)
    }) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "ok": false, "error": "expected {} or {\"binary\": PATH}" })),
        )
            .into_response();
    };
    let Some(upgrades) = state.upgrades.clone() else {
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "ok": false, "error": "this gateway does not run as `rempart run`: it cannot upgrade itself" })),
        )
            .into_response();
    };
    let (reply, outcome) = tokio::sync::oneshot::channel();
    let request = crate::handover::UpgradeRequest {
        binary: asked.binary,
        reply,
    };
    if upgrades.send(request).await.is_err() {
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "ok": false, "error": "the gateway is stopping" })),
        )
            .into_response();
    }
    match outcome.await {
        Ok(Ok(pid)) => Json(serde_json::json!({ "ok": true, "pid": pid })).into_response(),
        Ok(Err(why)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "ok": false, "error": why })),
        )
            .into_response(),
        Err(_) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "ok": false, "error": "the gateway is stopping" })),
        )
            .into_response(),
    }
}

/// A ban request: `{"target": "192.0.2.7", "reason": "...", "duration": "2h"}`.
#[derive(serde::Deserialize)]
struct BanRequest {
    target: String,
    reason: String,
    duration: Option<String>,
}

#[derive(serde::Deserialize)]
struct BanTarget {
    target: String,
}

fn parse_target(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "ok": false, "error": message })),
    )
        .into_response()
}

async fn top_clients(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let now = crate::clock::now_ms();
    let generation = state.gateway.current();
    let name = |mut h: crate::shield::top::Hitter| {
        h.tenant_id = generation
            .tenant_id_of(h.tenant)
            .map_or_else(|| "-".into(), str::to_owned);
        h
    };
    let addresses: Vec<_> = generation
        .shield
        .top_addresses
        .list(now)
        .into_iter()
        .map(name)
        .collect();
    let prefixes: Vec<_> = generation
        .shield
        .top_prefixes
        .list(now)
        .into_iter()
        .map(name)
        .collect();
    let fingerprints: Vec<_> = generation
        .shield
        .top_fingerprints
        .list(now)
        .into_iter()
        .map(name)
        .collect();
    Json(serde_json::json!({
        "addresses": addresses,
        "prefixes": prefixes,
        "fingerprints": fingerprints,
    }))
    .into_response()
}

async fn list_bans(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let now = crate::clock::now_ms();
    let bans = state.gateway.current().bans.list(now);
    Json(serde_json::json!({ "now_ms": now, "bans": bans })).into_response()
}

async fn add_ban(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Json(req): Json<BanRequest>,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let Some(target) = parse_target(&req.target) else {
        return bad_request(format!("`{}` is not an address or CIDR", req.target));
    };
    if req.reason.trim().is_empty() {
        return bad_request("a ban needs a reason".into());
    }
    let duration_ms = match req
        .duration
        .as_deref()
        .map(crate::config::validate::parse_duration)
    {
        None => None,
        Some(Ok(d)) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        Some(Err(e)) => return bad_request(e),
    };
    state.gateway.current().bans.add(
        target,
        req.reason.trim(),
        duration_ms,
        crate::clock::now_ms(),
    );
    tracing::warn!(target: "rempart::shield", ban = %target.trunc(), reason = %req.reason.trim(), "ban added by an operator");
    Json(serde_json::json!({ "ok": true, "target": target.trunc().to_string() })).into_response()
}

async fn remove_ban(
    State(state): State<AdminState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<BanTarget>,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let Some(target) = parse_target(&q.target) else {
        return bad_request(format!("`{}` is not an address or CIDR", q.target));
    };
    if state.gateway.current().bans.remove(target) {
        tracing::warn!(target: "rempart::shield", ban = %target.trunc(), "ban removed by an operator");
        Json(serde_json::json!({ "ok": true })).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "ok": false, "error": "no such ban" })),
        )
            .into_response()
    }
}

/// `{"tenant": "ville", "on": true, "for": "2h"}`.
#[derive(serde::Deserialize)]
struct UnderAttackRequest {
    tenant: String,
    on: bool,
    #[serde(rename = "for")]
    duration: Option<String>,
}

/// Each tenant's defence state: under-attack mode, pressure, and its pools' admission gates.
fn shield_status(gateway: &Gateway) -> serde_json::Value {
    let generation = gateway.current();
    let now = crate::clock::now_ms();
    let tenants: Vec<serde_json::Value> = generation
        .config
        .tenants
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let state = &generation.tenant_flags[i];
            let until = state.under_attack_until(now);
            let pools: Vec<serde_json::Value> = generation.pools[i]
                .iter()
                .map(|p| {
                    let snap = p.admission.as_ref().map(|a| a.snapshot());
                    serde_json::json!({
                        "pool": p.spec.name,
                        "limit": snap.map(|s| s.limit),
                        "in_flight": snap.map(|s| s.in_flight),
                        "queued": snap.map(|s| s.queued),
                    })
                })
                .collect();
            serde_json::json!({
                "tenant": t.id,
                "under_attack": t.shield.under_attack || until.is_some(),
                "under_attack_from_config": t.shield.under_attack,
                "under_attack_remaining_s": until.filter(|u| *u != u64::MAX).map(|u| (u - now) / 1000),
                "shedding_for_s": state.pressure_since(now).map(|s| (now - s) / 1000),
                "pools": pools,
            })
        })
        .collect();
    serde_json::json!({ "tenants": tenants })
}

/// Cluster mode: this node, Redis reachable or not, the nodes seen (404 outside cluster
/// mode).
async fn cluster_status(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    match &state.cluster {
        Some(cluster) => Json(cluster.status()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "not in cluster mode: the configuration has no [cluster]"})),
        )
            .into_response(),
    }
}

async fn get_shield(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    Json(shield_status(&state.gateway)).into_response()
}

async fn under_attack(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Json(req): Json<UnderAttackRequest>,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let now = crate::clock::now_ms();
    let until = match (req.on, req.duration.as_deref()) {
        (false, _) => 0,
        (true, None) => u64::MAX,
        (true, Some(d)) => match crate::config::validate::parse_duration(d) {
            Ok(d) => now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Err(e) => return bad_request(e),
        },
    };
    if !state.gateway.set_under_attack(&req.tenant, until) {
        return (
            StatusCode::NOT_FOUND,
            Json(
                serde_json::json!({ "ok": false, "error": format!("no tenant `{}`", req.tenant) }),
            ),
        )
            .into_response();
    }
    if let Some(cluster) = &state.cluster {
        // Every node of the cluster, with the same end.
        let until_unix = match until {
            0 | u64::MAX => until,
            _ => crate::clock::unix_now_ms() + (until - now),
        };
        cluster.under_attack(&req.tenant, until_unix);
    }
    let status = shield_status(&state.gateway);
    let tenant = status["tenants"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["tenant"] == req.tenant.as_str()))
        .cloned()
        .unwrap_or_default();
    Json(tenant).into_response()
}

/// Binds the admin listener and serves until `shutdown`.
pub async fn start(
    address: SocketAddr,
    state: AdminState,
    inherited: Option<std::net::TcpListener>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, std::os::fd::OwnedFd)> {
    let listener = match inherited {
        Some(l) => {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)?
        }
        None => TcpListener::bind(address).await?,
    };
    let local = listener.local_addr()?;
    let handed = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(reload))
        .route("/admin/upgrade", post(upgrade))
        .route(
            "/admin/bans",
            get(list_bans).post(add_ban).delete(remove_ban),
        )
        .route("/admin/top", get(top_clients))
        .route("/admin/shield", get(get_shield))
        .route("/admin/cluster", get(cluster_status))
        .route("/admin/shield/under-attack", post(under_attack))
        .route(
            "/admin/maintenance",
            get(status::list_maintenance).post(status::set_maintenance),
        )
        .route("/admin/guard/accounts", get(guard::accounts))
        .route("/admin/guard/accounts/{tenant}/{account}", get(guard::show))
        .route(
            "/admin/guard/accounts/{tenant}/{account}/lift",
            post(guard::lift),
        )
        .route(
            "/admin/guard/accounts/{tenant}/{account}/suspend",
            post(guard::suspend),
        )
        .route("/admin/guard/budgets", get(guard::budgets))
        .route("/admin/watch", get(watch::status))
        .route("/admin/watch/level", post(watch::set_level))
        .route(
            "/admin/watch/incidents",
            get(watch::incidents).post(watch::open),
        )
        .route("/admin/watch/incidents/{id}", get(watch::incident))
        .route("/admin/watch/incidents/{id}/report", get(watch::report))
        .route("/admin/watch/incidents/{id}/ack", post(watch::acknowledge))
        .route("/admin/watch/incidents/{id}/note", post(watch::note))
        .route("/admin/watch/incidents/{id}/resolve", post(watch::resolve))
        .route("/admin/watch/events", get(watch::events))
        .route("/admin/status", get(status::list))
        .route("/admin/status/{tenant}", get(status::board))
        .route("/admin/status/{tenant}/incidents", post(status::create))
        .route(
            "/admin/status/{tenant}/incidents/{id}",
            axum::routing::patch(status::edit),
        )
        .route(
            "/admin/status/{tenant}/incidents/{id}/updates",
            post(status::update),
        )
        .route(
            "/admin/status/{tenant}/components/{component}",
            axum::routing::put(status::set_component),
        )
        // The token is checked before anything of the request is read: a caller without it
        // learns nothing from how its body is judged (400, 415, 422 come after 401).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .route("/healthz", get(healthz))
        .with_state(state);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    tracing::info!(address = %local, "admin listening");
    Ok((local, handed))
}
