//! Phase 1, routing (on the canonical request of phase 0): the request's host names its tenant (400 without a usable host, 421
//! when no tenant serves it), then the path and host name its route (404), then maintenance
//! mode (503 with the status link). Whether the request is for the tenant's status site or
//! Rempart's own pages is also decided here; both are answered by `local`.

use std::borrow::Cow;

use http::header::HOST;
use http::Request;

use super::context::RequestCtx;
use super::flow::Flow;
use super::Generation;
use crate::config::runtime::Route;
use crate::error::ProxyError;
use crate::status::site::Target;

/// What routing found before the pipeline proper starts.
pub struct Found<'r> {
    /// The request's host, lower case, without port or trailing dot.
    pub host: Cow<'r, str>,
    /// The tenant serving it.
    pub tenant_idx: usize,
    /// A status-site request, and what it asks for.
    pub status: Option<Target>,
}

/// The tenant of `req`, and whether it asks for the tenant's status site.
pub fn tenant<'r, B>(
    generation: &Generation,
    req: &'r Request<B>,
) -> Result<Found<'r>, ProxyError> {
    let host = request_host(req).ok_or(ProxyError::BadHost)?;
    let tenant_idx = generation
        .config
        .tenant_for_host(&host)
        .ok_or(ProxyError::UnknownHost)?;
    let tenant = &generation.config.tenants[tenant_idx];
    let status = crate::status::site::target(tenant, &host, req.uri().path());
    Ok(Found {
        host,
        tenant_idx,
        status,
    })
}

/// The route for the request's host and path, then maintenance mode.
pub fn route<'g, B>(ctx: &mut RequestCtx<'g>, req: &Request<B>) -> Flow<&'g Route> {
    let tenant = ctx.tenant();
    let route_idx = tenant
        .route_index(&ctx.host, req.uri().path())
        .ok_or(ProxyError::NoRoute)?;
    ctx.route_idx = Some(route_idx);
    ctx.record.route = Some(route_idx);
    let route = &tenant.routes[route_idx];
    if ctx.encoded_separator && !route.allow_encoded_slash {
        return Err(ProxyError::BadTarget
            .because("encoded separator in path")
            .into());
    }
    if tenant.maintenance
        || route.maintenance
        || (!route.essential && ctx.actions().maintenance_nonessential)
        || ctx
            .generation
            .status
            .in_maintenance(&tenant.id, &route.name)
    {
        return Err(ProxyError::Maintenance.into());
    }
    Ok(route)
}

/// The request's host, lower case, without port or trailing dot; borrowed when it already is
/// so (the usual case: no allocation). `None` without a usable host, or with more than one
/// `Host` field (the canonical phase agreed the target's authority and `Host` before).
pub fn request_host<B>(req: &Request<B>) -> Option<Cow<'_, str>> {
    let (raw, upper) = match req.uri().authority() {
        Some(a) => (a.host(), a.host().bytes().any(|b| b.is_ascii_uppercase())),
        None => {
            let mut hosts = req.headers().get_all(HOST).iter();
            let host = hosts.next()?;
            if hosts.next().is_some() {
                return None;
            }
            crate::canonical::authority::host_of(host.as_bytes())?
        }
    };
    let host = raw.trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    Some(if upper {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}
