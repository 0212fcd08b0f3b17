//! The admin listener (loopback by default): `/healthz` (open), and with the bearer token
//! `/metrics` and `POST /admin/reload`. Served by axum on its own socket, never on the
//! public listeners.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::reload::Reloader;
use crate::proxy::Gateway;

#[derive(Clone)]
struct AdminState {
    gateway: Arc<Gateway>,
    reloader: Arc<Reloader>,
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

/// Binds the admin listener and serves until `shutdown`.
pub async fn start(
    address: SocketAddr,
    gateway: Arc<Gateway>,
    reloader: Arc<Reloader>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(reload))
        .with_state(AdminState { gateway, reloader });
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    tracing::info!(address = %local, "admin listening");
    Ok(local)
}
