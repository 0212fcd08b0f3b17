//! Admin API of the data guard: each tenant's accounts (what each took out, from where, its
//! standing), one account, suspending and lifting, and the budgets of the guarded routes.
//! Accounts are named by their keyed hash (16 hex digits); an operator who knows an account's
//! name (a Basic user, a token's subject) finds its hash with `?name=` and `source`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{bad_request, AdminState};
use crate::guard::account::AccountId;
use crate::guard::book::Account;
use crate::guard::scan::Kind;
use crate::pipeline::Generation;

fn not_found(what: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "ok": false, "error": what })),
    )
        .into_response()
}

/// The wall-clock time (unix ms) of a `coarse_now_ms` instant.
fn wall_ms(at_ms: u64) -> u64 {
    let now = crate::clock::coarse_now_ms();
    crate::clock::unix_now_ms().saturating_sub(now.saturating_sub(at_ms))
}

fn describe(id: AccountId, a: &Account, suspended: bool) -> Value {
    let pii: serde_json::Map<String, Value> = Kind::ALL
        .iter()
        .map(|k| (k.name().to_owned(), json!(a.pii[*k as usize])))
        .collect();
    json!({
        "account": id.to_string(),
        "who": a.who.name(),
        "label": a.label.as_deref(),
        "suspended": suspended,
        "records": a.records,
        "answers": a.answers,
        "distinct_ids": a.distinct_ids.estimate(),
        "pii": pii,
        "first_ms": wall_ms(a.first_ms),
        "last_ms": wall_ms(a.last_ms),
        "action": a.action.map(|(action, at)| json!({ "action": action.name(), "at_ms": wall_ms(at) })),
        "flags": a.flags.iter().map(|(f, at)| json!({ "flag": f.name(), "at_ms": wall_ms(*at) })).collect::<Vec<_>>(),
        "prefixes": a.prefixes.iter().map(|(p, at)| json!({ "prefix": &**p, "last_ms": wall_ms(*at) })).collect::<Vec<_>>(),
    })
}

/// `?tenant=ID&limit=N`.
#[derive(serde::Deserialize)]
pub(super) struct ListQuery {
    tenant: Option<String>,
    limit: Option<usize>,
}

/// `GET /admin/guard/accounts`: per tenant, the accounts that took the most records first.
pub(super) async fn accounts(
    State(state): State<AdminState>,
    Query(q): Query<ListQuery>,
) -> Response {
    let generation = state.gateway.current();
    let limit = q.limit.unwrap_or(100).min(10_000);
    let mut tenants = Vec::new();
    for (i, t) in generation.config.tenants.iter().enumerate() {
        if q.tenant.as_deref().is_some_and(|id| id != t.id) {
            continue;
        }
        let book = generation.guard_books[i].lock();
        let mut rows: Vec<(AccountId, &Account)> = book.accounts().collect();
        rows.sort_by(|a, b| b.1.records.cmp(&a.1.records).then(a.0.cmp(&b.0)));
        let suspended: Vec<String> = book.suspended().map(|id| id.to_string()).collect();
        tenants.push(json!({
            "tenant": t.id,
            "tracked": book.len(),
            "suspended": suspended,
            "accounts": rows
                .iter()
                .take(limit)
                .map(|(id, a)| describe(*id, a, book.is_suspended(*id)))
                .collect::<Vec<_>>(),
        }));
    }
    if tenants.is_empty() {
        if let Some(id) = q.tenant {
            return not_found(format!("no tenant `{id}`"));
        }
    }
    Json(json!({ "tenants": tenants })).into_response()
}

/// `?name=NAME&source=basic` to find an account by its name.
#[derive(serde::Deserialize)]
pub(super) struct NameQuery {
    name: Option<String>,
    source: Option<String>,
}

/// The tenant and account named in the path: 16 hex digits, or `-` with `?name=&source=`.
fn target(
    generation: &Generation,
    tenant: &str,
    id: &str,
    q: &NameQuery,
) -> Result<(usize, AccountId), Box<Response>> {
    let i = generation
        .tenant_index(tenant)
        .ok_or_else(|| Box::new(not_found(format!("no tenant `{tenant}`"))))?;
    Ok((i, account_of(generation, id, q)?))
}

fn account_of(
    generation: &Generation,
    id: &str,
    q: &NameQuery,
) -> Result<AccountId, Box<Response>> {
    if let Some(name) = &q.name {
        let source = q.source.as_deref().unwrap_or("basic");
        let Some(tag) = crate::guard::account::source_tag(source) else {
            return Err(Box::new(bad_request(format!(
                "unknown source `{source}`: cookie, basic, jwt, header or origin"
            ))));
        };
        return Ok(AccountId::keyed(
            &generation.guard_key.key,
            tag,
            name.as_bytes(),
        ));
    }
    id.parse().map_err(|()| {
        Box::new(bad_request(format!(
            "`{id}` is not an account (16 hex digits)"
        )))
    })
}

/// `GET /admin/guard/accounts/{tenant}/{account}`.
pub(super) async fn show(
    State(state): State<AdminState>,
    Path((tenant, id)): Path<(String, String)>,
    Query(q): Query<NameQuery>,
) -> Response {
    let generation = state.gateway.current();
    let (i, account) = match target(&generation, &tenant, &id, &q) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let book = generation.guard_books[i].lock();
    match book.get(account) {
        Some(a) => Json(describe(account, a, book.is_suspended(account))).into_response(),
        None if book.is_suspended(account) => {
            Json(json!({ "account": account.to_string(), "suspended": true })).into_response()
        }
        None => not_found(format!("no activity of account {account} on `{tenant}`")),
    }
}

/// `POST /admin/guard/accounts/{tenant}/{account}/lift`.
pub(super) async fn lift(
    State(state): State<AdminState>,
    Path((tenant, id)): Path<(String, String)>,
    Query(q): Query<NameQuery>,
) -> Response {
    change(state, tenant, id, q, false).await
}

/// `POST /admin/guard/accounts/{tenant}/{account}/suspend`.
pub(super) async fn suspend(
    State(state): State<AdminState>,
    Path((tenant, id)): Path<(String, String)>,
    Query(q): Query<NameQuery>,
) -> Response {
    change(state, tenant, id, q, true).await
}

async fn change(state: AdminState, tenant: String, id: String, q: NameQuery, on: bool) -> Response {
    let generation = state.gateway.current();
    let (i, account) = match target(&generation, &tenant, &id, &q) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let changed = {
        let mut book = generation.guard_books[i].lock();
        if on {
            book.suspend(account)
        } else {
            book.lift(account)
        }
    };
    if let Some(j) = &generation.guard_journal {
        if changed {
            j.suspension(&tenant, account, on, crate::clock::unix_now_ms());
        }
    }
    // Cluster mode: on every node (a lift also where this node had no suspension).
    if let Some(share) = &generation.guard_share {
        share.suspended(&tenant, account.0, on);
    }
    if on {
        tracing::warn!(target: "rempart::guard", tenant = %tenant, account = %account, "account suspended by an operator");
    } else if changed {
        tracing::warn!(target: "rempart::guard", tenant = %tenant, account = %account, "suspension lifted by an operator");
    } else {
        return not_found(format!("account {account} is not suspended on `{tenant}`"));
    }
    Json(json!({ "ok": true, "account": account.to_string(), "suspended": on, "changed": changed }))
        .into_response()
}

/// `GET /admin/guard/budgets`: the guarded routes of each tenant, with their budgets and
/// what they do with personal data.
pub(super) async fn budgets(State(state): State<AdminState>) -> Response {
    let generation = state.gateway.current();
    let tenants: Vec<Value> = generation
        .config
        .tenants
        .iter()
        .map(|t| {
            let routes: Vec<Value> = t
                .routes
                .iter()
                .filter_map(|r| Some((r, r.guard.as_ref()?)))
                .map(|(r, g)| {
                    json!({
                        "route": r.name,
                        "path_prefix": r.path_prefix,
                        "budgets": g.budgets.iter().map(|b| (None, b))
                            .chain(g.group_budgets.iter().flat_map(|(group, list)| list.iter().map(move |b| (Some(group), b))))
                            .map(|(group, b)| json!({
                                "records": b.limit,
                                "per_s": b.window_ms / 1000,
                                "action": b.action.name(),
                                "group": group,
                            })).collect::<Vec<_>>(),
                        "record_header": g.record_header.as_ref().map(|h| h.as_str()),
                        "json_records": g.json_records,
                        "record_ids": g.record_ids.len(),
                        "count_persons": g.count_persons,
                        "pii_mask": g.pii.mask.kinds().map(Kind::name).collect::<Vec<_>>(),
                        "pii_block": g.pii.block.kinds().map(Kind::name).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "tenant": t.id,
                "sources": t.guard.sources.iter().map(|s| s.name()).collect::<Vec<_>>(),
                "origin_account_header": t.guard.origin_account.as_ref().map(|h| h.as_str()),
                "routes": routes,
            })
        })
        .collect();
    Json(json!({ "tenants": tenants })).into_response()
}
