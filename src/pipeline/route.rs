//! Phase 1, routing: the request's host names its tenant (400 without a usable host, 421
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
    if tenant.maintenance
        || route.maintenance
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
/// so (the usual case: no allocation).
pub fn request_host<B>(req: &Request<B>) -> Option<Cow<'_, str>> {
    let (raw, upper) = match req.uri().authority() {
        Some(a) => (a.host(), a.host().bytes().any(|b| b.is_ascii_uppercase())),
        None => host_of(req.headers().get(HOST)?.as_bytes())?,
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

/// Bytes allowed in a host name (RFC 3986 reg-name: unreserved, sub-delims, `%`).
const HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        i += 1;
    }
    table
};

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]:port`) and whether it
/// has upper-case letters, or `None` when it is not a valid authority without user info.
/// One pass over the bytes: this runs on every request.
pub fn host_of(value: &[u8]) -> Option<(&str, bool)> {
    if value.first() == Some(&b'[') {
        let end = value.iter().position(|b| *b == b']')?;
        let inner = &value[1..end];
        let port = &value[end + 1..];
        let inner_ok = inner
            .iter()
            .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.');
        let port_ok = port.is_empty()
            || port
                .strip_prefix(b":")
                .is_some_and(|p| p.iter().all(u8::is_ascii_digit));
        if !(inner_ok && port_ok) {
            return None;
        }
        let host = std::str::from_utf8(&value[..=end]).ok()?;
        return Some((host, inner.iter().any(u8::is_ascii_uppercase)));
    }
    let mut colon = None;
    let mut upper = false;
    for (i, &b) in value.iter().enumerate() {
        if b == b':' {
            if colon.is_some() {
                return None;
            }
            colon = Some(i);
        } else if colon.is_some() {
            if !b.is_ascii_digit() {
                return None;
            }
        } else if HOST_BYTES[usize::from(b)] {
            upper |= b.is_ascii_uppercase();
        } else {
            return None;
        }
    }
    let host = &value[..colon.unwrap_or(value.len())];
    if host.is_empty() {
        return None;
    }
    // Every byte was checked to be ASCII above.
    Some((std::str::from_utf8(host).ok()?, upper))
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_header_values() {
        let host = |v: &'static str| host_of(v.as_bytes());
        assert_eq!(host("ville.test"), Some(("ville.test", false)));
        assert_eq!(host("Ville.Test:8443"), Some(("Ville.Test", true)));
        assert_eq!(host("[::1]:80"), Some(("[::1]", false)));
        assert_eq!(host("[::AB]"), Some(("[::AB]", true)));
        assert_eq!(host("ville test"), None);
        assert_eq!(host("ville.test:80x"), None);
        assert_eq!(host("ville.test:80:81"), None);
        assert_eq!(host("user@ville.test"), None);
        assert_eq!(host("[zz]"), None);
        assert_eq!(host("[::1]x"), None);
        assert_eq!(host(":80"), None);
        assert_eq!(host("ville.tést"), None);
    }
}
