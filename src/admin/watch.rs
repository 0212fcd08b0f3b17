//! Admin API of the watch: levels with their evidence and the defences they switch on,
//! an operator's level with an expiry and a reason, security incidents (list, show, the
//! Markdown report, open by hand, acknowledge, note, resolve) and the live event stream
//! (Server-Sent Events).

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{bad_request, AdminState};
use crate::watch::incident::Refused;
use crate::watch::level::Level;
use crate::watch::shared::{Action, ActionKind, Failed};

/// `GET /admin/watch`: the global level, each tenant's (and the gateway's own, `*`), the
/// active incidents and the alert outbox.
pub(super) async fn status(State(state): State<AdminState>) -> Response {
    let (global, tenants) = state.watch.status();
    let active: Vec<_> = state
        .watch
        .incidents()
        .into_iter()
        .filter(|i| i.active)
        .collect();
    let watch = state.watch.clone();
    let outbox = tokio::task::spawn_blocking(move || watch.outbox_counts())
        .await
        .ok()
        .flatten();
    Json(json!({
        "global": global,
        "tenants": tenants,
        "incidents": active,
        "alerts": outbox,
    }))
    .into_response()
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

fn parse_level(raw: &str) -> Result<Level, String> {
    Level::parse(raw).ok_or_else(|| format!("`{raw}` is not a level: vert, jaune, orange or rouge"))
}

/// `POST /admin/watch/level`.
pub(super) async fn set_level(
    State(state): State<AdminState>,
    Json(req): Json<LevelRequest>,
) -> Response {
    let level = match parse_level(&req.level) {
        Ok(l) => l,
        Err(e) => return bad_request(e),
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
        return not_found(format!("no tenant `{}` watched", req.tenant));
    }
    Json(json!({ "ok": true, "tenant": req.tenant, "level": level, "until_ms": until }))
        .into_response()
}

fn not_found(error: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "ok": false, "error": error })),
    )
        .into_response()
}

fn refused(r: &Refused) -> Response {
    match r {
        Refused::Unknown => not_found(r.to_string()),
        _ => (
            StatusCode::CONFLICT,
            Json(json!({ "ok": false, "error": r.to_string() })),
        )
            .into_response(),
    }
}

fn failed(f: &Failed) -> Response {
    match f {
        Failed::Refused(r) => refused(r),
        Failed::NoAnswer => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ok": false, "error": "the incident's node did not answer (gone, or Redis out of reach): act on that node, or retry" })),
        )
            .into_response(),
    }
}

/// `?node=NAME`: cluster mode, an incident of another node (incident numbers are each
/// node's own).
#[derive(serde::Deserialize, Default)]
pub(super) struct OnNode {
    node: Option<String>,
}

/// `GET /admin/watch/incidents`: every incident kept, newest first (in cluster mode, every
/// node's, each with its node).
pub(super) async fn incidents(State(state): State<AdminState>) -> Response {
    Json(json!({ "incidents": state.watch.incidents_everywhere() })).into_response()
}

/// `GET /admin/watch/incidents/{id}[?node=NAME]`: one incident with its timeline and
/// figures.
pub(super) async fn incident(
    State(state): State<AdminState>,
    Path(id): Path<u64>,
    Query(on): Query<OnNode>,
) -> Response {
    match state.watch.incident_on(on.node.as_deref(), id) {
        Some(i) => Json(i).into_response(),
        None => refused(&Refused::Unknown),
    }
}

/// `GET /admin/watch/incidents/{id}/report[?node=NAME]`: the Markdown report.
pub(super) async fn report(
    State(state): State<AdminState>,
    Path(id): Path<u64>,
    Query(on): Query<OnNode>,
) -> Response {
    let report = match on.node.as_deref() {
        None => state.watch.report(id),
        Some(node) => state.watch.incident_on(Some(node), id).map(|i| {
            crate::watch::incident::report(
                &i,
                state.gateway.current().config.status.time_zone,
                crate::clock::unix_now_ms(),
            )
        }),
    };
    match report {
        Some(r) => ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], r).into_response(),
        None => refused(&Refused::Unknown),
    }
}

/// An operator's action on an incident: who, and what they say.
#[derive(serde::Deserialize)]
pub(super) struct Act {
    by: String,
    #[serde(default)]
    text: String,
}

fn who(by: &str) -> Result<String, String> {
    let by = by.trim();
    if by.is_empty() || by.len() > 100 || by.chars().any(char::is_control) {
        return Err("say who acts (\"by\": a name, 1 to 100 characters)".into());
    }
    Ok(by.to_owned())
}

/// `POST /admin/watch/incidents/{id}/ack`.
pub(super) async fn acknowledge(
    State(state): State<AdminState>,
    Path(id): Path<u64>,
    Query(on): Query<OnNode>,
    Json(act): Json<Act>,
) -> Response {
    let by = match who(&act.by) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let action = Action {
        id,
        kind: ActionKind::Acknowledge,
        by,
        text: act.text.trim().to_owned(),
    };
    match state
        .watch
        .act(on.node.as_deref(), action, crate::clock::unix_now_ms())
        .await
    {
        Ok(i) => Json(json!({ "ok": true, "incident": i.id, "state": i.state })).into_response(),
        Err(f) => failed(&f),
    }
}

/// `POST /admin/watch/incidents/{id}/note`.
pub(super) async fn note(
    State(state): State<AdminState>,
    Path(id): Path<u64>,
    Query(on): Query<OnNode>,
    Json(act): Json<Act>,
) -> Response {
    let by = match who(&act.by) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    if act.text.trim().is_empty() {
        return bad_request("a note needs a text".into());
    }
    let action = Action {
        id,
        kind: ActionKind::Note,
        by,
        text: act.text.trim().to_owned(),
    };
    match state
        .watch
        .act(on.node.as_deref(), action, crate::clock::unix_now_ms())
        .await
    {
        Ok(i) => Json(json!({ "ok": true, "incident": i.id })).into_response(),
        Err(f) => failed(&f),
    }
}

/// `POST /admin/watch/incidents/{id}/resolve`.
pub(super) async fn resolve(
    State(state): State<AdminState>,
    Path(id): Path<u64>,
    Query(on): Query<OnNode>,
    Json(act): Json<Act>,
) -> Response {
    let by = match who(&act.by) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let action = Action {
        id,
        kind: ActionKind::Resolve,
        by,
        text: act.text.trim().to_owned(),
    };
    match state
        .watch
        .act(on.node.as_deref(), action, crate::clock::unix_now_ms())
        .await
    {
        Ok(i) => Json(json!({ "ok": true, "incident": i.id, "state": i.state })).into_response(),
        Err(f) => failed(&f),
    }
}

/// `{"tenant", "level", "by", "text"}`.
#[derive(serde::Deserialize)]
pub(super) struct OpenRequest {
    tenant: String,
    level: String,
    by: String,
    text: String,
}

/// `POST /admin/watch/incidents`: an incident opened by hand.
pub(super) async fn open(
    State(state): State<AdminState>,
    Json(req): Json<OpenRequest>,
) -> Response {
    let by = match who(&req.by) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let level = match parse_level(&req.level) {
        Ok(l) => l,
        Err(e) => return bad_request(e),
    };
    if req.text.trim().is_empty() {
        return bad_request("say what happened (\"text\")".into());
    }
    match state.watch.open_incident(
        &req.tenant,
        level,
        &by,
        req.text.trim(),
        crate::clock::unix_now_ms(),
    ) {
        Some(i) => Json(json!({ "ok": true, "incident": i.id })).into_response(),
        None => (
            StatusCode::CONFLICT,
            Json(json!({ "ok": false, "error": format!("no tenant `{}`, or it has an active incident already (add a note to it)", req.tenant) })),
        )
            .into_response(),
    }
}

/// `GET /admin/watch/events`: level changes and incident events as Server-Sent Events, the
/// recent ones first.
pub(super) async fn events(State(state): State<AdminState>) -> Response {
    let (recent, rx) = state.watch.subscribe();
    let recent = futures_util::stream::iter(
        recent
            .into_iter()
            .map(|line| Ok::<_, Infallible>(Event::default().data(line))),
    );
    let live = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = match rx.recv().await {
            Ok(line) => line,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                json!({ "type": "lagged", "missed": n }).to_string()
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(Event::default().data(line)), rx))
    });
    Sse::new(futures_util::StreamExt::chain(recent, live))
        .keep_alive(KeepAlive::default())
        .into_response()
}
