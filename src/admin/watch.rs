//! Admin API of the watch: each tenant's vigilance level with its last evidence, and an
//! operator's level with an expiry and a reason.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{bad_request, AdminState};
use crate::watch::level::Level;

/// `GET /admin/watch`.
pub(super) async fn status(State(state): State<AdminState>) -> Response {
    Json(json!({ "tenants": state.watch.status() })).into_response()
}

/// `{"tenant": "ville", "level": "rouge", "for": "2h", "reason": "..."}`.
#[derive(serde::Deserialize)]
pub(super) struct LevelRequest {
    tenant: String,
    level: String,
    #[serde(rename = "for")]
    duration: String,
    reason: String,
}

/// `POST /admin/watch/level`.
pub(super) async fn set_level(
    State(state): State<AdminState>,
    Json(req): Json<LevelRequest>,
) -> Response {
    let Some(level) = Level::parse(&req.level) else {
        return bad_request(format!(
            "`{}` is not a level: vert, jaune, orange or rouge",
            req.level
        ));
    };
    let duration = match crate::config::validate::parse_duration(&req.duration) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => return bad_request("the level needs a duration (\"for\": \"2h\")".into()),
        Err(e) => return bad_request(e),
    };
    if req.reason.trim().is_empty() {
        return bad_request("an operator's level needs a reason".into());
    }
    let now = crate::clock::unix_now_ms();
    let until = now.saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    if !state
        .watch
        .set_level(&req.tenant, level, until, req.reason.trim(), now)
    {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "ok": false, "error": format!("no tenant `{}` watched", req.tenant) })),
        )
            .into_response();
    }
    Json(json!({ "ok": true, "tenant": req.tenant, "level": level, "until_ms": until }))
        .into_response()
}
