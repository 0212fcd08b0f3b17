//! The admission phase: before the first attempt at the origin, the request waits for a slot
//! under its pool's adaptive concurrency limit, verified clients first (`shield::gate`). A
//! standing queue or a shed request puts the tenant under pressure (from then on, clients
//! without a pass are challenged); a shed client without a pass gets the challenge rather
//! than an error page, anyone else a stale copy of the page or the 503 page.

use super::answer;
use super::context::RequestCtx;
use super::flow::Flow;
use super::shield;
use crate::error::ProxyError;
use crate::proxy::upstream::Pool;
use crate::shield::admission::Priority;
use crate::shield::gate::{Admission, Permit};
use crate::shield::Mode;

/// A slot at the pool's origin (`None` when the pool has no admission gate).
pub async fn admit(
    ctx: &mut RequestCtx<'_>,
    pool: &Pool,
    parts: &http::request::Parts,
) -> Flow<Option<Permit>> {
    let Some(gate) = &pool.admission else {
        return Ok(None);
    };
    let priority = ctx.priority;
    match gate.acquire(priority).await {
        Ok(permit) => {
            // A standing queue: challenge clients without a pass from now on, before anyone
            // has to be shed.
            if permit.waited > gate.pressure_wait() {
                ctx.signals().admission_overload();
                overloaded(ctx, gate);
            }
            Ok(Some(permit))
        }
        Err(shed) => {
            pool.shed[priority as usize].inc();
            ctx.signals().shed();
            overloaded(ctx, gate);
            let tenant = ctx.tenant();
            tracing::debug!(tenant = %tenant.id, pool = %pool.spec.name, priority = priority.name(), ?shed, "request shed");
            // Once solved, the challenge brings the client back ahead of the flood.
            let policy = &tenant.shield;
            if priority != Priority::Verified
                && policy.auto_challenge
                && policy.mode == Mode::Enforce
                && !policy.exempt(parts.uri.path())
            {
                let return_to = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                return Err(shield::challenge(ctx, &parts.headers, return_to));
            }
            Err(answer::origin_failed(ctx, parts, ProxyError::Shed.into()))
        }
    }
}

/// Marks the tenant under pressure; at the start of an episode, the pool's queued requests
/// without a pass are shed at once (they are challenged instead of waiting behind the flood).
fn overloaded(ctx: &RequestCtx<'_>, gate: &Admission) {
    if ctx.flags().on_overload(crate::clock::coarse_now_ms()) {
        let shed = gate.shed_below(Priority::Verified);
        tracing::warn!(
            target: "rempart::shield",
            tenant = %ctx.tenant().id,
            shed_waiting = shed,
            "origin saturated: challenging clients without a pass"
        );
    }
}
