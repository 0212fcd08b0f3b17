//! Admin API of the status pages: read a tenant's board (drafts included), open incidents and
//! maintenance windows, add timeline updates, edit or publish them, override a component's
//! state. Every call needs the admin token; bodies are JSON, checked after the token.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{authorized, bad_request, unauthorized, AdminState};
use crate::clock::unix_now;
use crate::status::model::ComponentState;
use crate::status::shared::{Answer, Change};
use crate::status::{IncidentEdit, NewIncident, NewUpdate, StatusError};

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(bad_request(format!("invalid JSON body: {e}"))))
}

fn failure(e: StatusError) -> Response {
    let code = match e {
        StatusError::UnknownTenant(_) | StatusError::UnknownIncident(_) => StatusCode::NOT_FOUND,
        StatusError::UnknownComponent(_) | StatusError::Invalid(_) => StatusCode::BAD_REQUEST,
        StatusError::NoWriter => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        code,
        Json(serde_json::json!({ "ok": false, "error": e.to_string() })),
    )
        .into_response()
}

fn answer<T: serde::Serialize>(r: Result<T, StatusError>, created: bool) -> Response {
    match r {
        Ok(v) => (
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            Json(v),
        )
            .into_response(),
        Err(e) => failure(e),
    }
}

/// `GET /admin/status`: every tenant's board.
pub async fn list(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let status = &state.gateway.current().status;
    let boards: Vec<_> = status
        .tenants()
        .iter()
        .filter_map(|t| status.admin_view(t).ok())
        .collect();
    Json(serde_json::json!({ "tenants": boards })).into_response()
}

/// `GET /admin/status/{tenant}`.
pub async fn board(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    answer(state.gateway.current().status.admin_view(&tenant), false)
}

/// The shape of the incident calls: the token, then the JSON body, then the change on the
/// status boards (made here, or by the node that writes them in cluster mode); 201 or 200
/// with the incident, or the reason it was refused.
async fn incident_call<T: serde::de::DeserializeOwned>(
    state: &AdminState,
    headers: &HeaderMap,
    body: &Bytes,
    created: bool,
    change: impl FnOnce(T) -> Change,
) -> Response {
    if !authorized(state, headers) {
        return unauthorized();
    }
    let request: T = match parse(body) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let status = state.gateway.current().status.clone();
    let r = match status.apply(change(request), unix_now()).await {
        Ok(Answer::Incident { incident }) => Ok(*incident),
        Ok(_) => Err(StatusError::Invalid(
            "the change gave no incident back".into(),
        )),
        Err(e) => Err(e),
    };
    if let Ok(i) = &r {
        tracing::info!(target: "rempart::status", tenant = %i.tenant, incident = i.id, published = i.published, "incident changed by an operator");
    }
    answer(r, created)
}

/// `POST /admin/status/{tenant}/incidents`.
pub async fn create(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    incident_call(&state, &headers, &body, true, |new: NewIncident| {
        Change::CreateIncident { tenant, new }
    })
    .await
}

/// `POST /admin/status/{tenant}/incidents/{id}/updates`.
pub async fn update(
    State(state): State<AdminState>,
    Path((tenant, id)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    incident_call(&state, &headers, &body, true, |update: NewUpdate| {
        Change::AddUpdate { tenant, id, update }
    })
    .await
}

/// `PATCH /admin/status/{tenant}/incidents/{id}`.
pub async fn edit(
    State(state): State<AdminState>,
    Path((tenant, id)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    incident_call(&state, &headers, &body, false, |edit: IncidentEdit| {
        Change::EditIncident { tenant, id, edit }
    })
    .await
}

/// `{"state": "major_outage"}` sets an override; `{"state": null}` returns to detection.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideRequest {
    state: Option<String>,
}

/// `PUT /admin/status/{tenant}/components/{component}`.
pub async fn set_component(
    State(state): State<AdminState>,
    Path((tenant, component)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let req: OverrideRequest = match parse(&body) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let wanted = match req.state.as_deref() {
        None | Some("auto") => None,
        Some(s) => match ComponentState::parse(s) {
            Some(c) => Some(c),
            None => return bad_request(format!(
                "unknown state `{s}`; use operational, degraded_performance, partial_outage, major_outage, under_maintenance or auto"
            )),
        },
    };
    let status = state.gateway.current().status.clone();
    let change = Change::SetOverride {
        tenant: tenant.clone(),
        component,
        state: wanted,
    };
    let r = status
        .apply(change, unix_now())
        .await
        .and_then(|_| status.admin_view(&tenant));
    answer(r, false)
}

/// `{"tenant": "ville", "route": "etat-civil", "on": true}`; without `route`, the whole
/// tenant.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceRequest {
    tenant: String,
    route: Option<String>,
    on: bool,
}

/// `GET /admin/maintenance`: switches in force.
pub async fn list_maintenance(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let list: Vec<_> = state
        .gateway
        .current()
        .status
        .maintenance_list()
        .into_iter()
        .map(|(t, r)| serde_json::json!({ "tenant": t, "route": if r == "*" { None } else { Some(r) } }))
        .collect();
    Json(serde_json::json!({ "maintenance": list })).into_response()
}

/// `POST /admin/maintenance`: the maintenance page instead of forwarding, for a tenant or
/// one of its routes; kept across restarts.
pub async fn set_maintenance(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let req: MaintenanceRequest = match parse(&body) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let generation = state.gateway.current();
    let Some(tenant) = generation
        .config
        .tenants
        .iter()
        .find(|t| t.id == req.tenant)
    else {
        return failure(StatusError::UnknownTenant(req.tenant));
    };
    if let Some(r) = &req.route {
        if !tenant.routes.iter().any(|route| &route.name == r) {
            return bad_request(format!("tenant `{}` has no route named `{r}`", req.tenant));
        }
    }
    let status = generation.status.clone();
    drop(generation);
    let change = Change::SetMaintenance {
        tenant: req.tenant.clone(),
        route: req.route.clone(),
        on: req.on,
    };
    if let Err(e) = status.apply(change, unix_now()).await {
        return failure(e);
    }
    Json(serde_json::json!({ "ok": true, "tenant": req.tenant, "route": req.route, "on": req.on }))
        .into_response()
}
