//! Degraded mode: when an origin fails, a public page is answered from its stale copy with a
//! notice linking to the status page, and copies of good answers are recorded as they stream
//! (a body tap in the pipeline). `stale` holds the rules on what may be kept (RFC 9111 shared
//! cache, RFC 5861 `stale-if-error`, `Vary`) and the bounded store; `disk` keeps copies
//! across restarts. Nothing here knows the pipeline: it is given the request's parts and
//! returns a page or a recorder.

pub mod disk;
pub mod stale;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE};
use http::{Method, Response, StatusCode};

use crate::common::{negotiate_language, Language, TimeZone};
use crate::config::runtime::{Route, Tenant};
use crate::status::model::local_time;
use stale::{Recorder, StaleCache};

/// Whether an upstream status counts as an error that a stale copy may cover (RFC 5861).
pub fn covers_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

fn notice(lang: Language, stored: String, status_href: Option<String>) -> String {
    let (text, link) = match lang {
        Language::Fr => (
            format!("Le service ne répond pas en ce moment : vous consultez une copie enregistrée le {stored}."),
            "État des services",
        ),
        Language::En => (
            format!("The service is not responding right now: you are reading a copy saved on {stored}."),
            "Service status",
        ),
    };
    let link = status_href.map_or_else(String::new, |h| {
        format!(" <a href=\"{h}\" style=\"color:#000091\">{link}</a>")
    });
    format!(
        "<div role=\"status\" lang=\"{}\" style=\"background:#fff4e5;color:#1b1b1b;border-bottom:3px solid #b34000;padding:.6rem 1rem;font:1rem/1.4 system-ui,sans-serif\">{text}{link}</div>",
        if lang == Language::Fr { "fr" } else { "en" }
    )
}

/// Where a request's copy is looked up and what it is answered with.
pub struct StaleRequest<'a> {
    /// The tenant serving the request.
    pub tenant: &'a Tenant,
    /// Its route.
    pub route: &'a Route,
    /// The request's head.
    pub parts: &'a http::request::Parts,
    /// The request's host, lower case.
    pub host: &'a str,
    /// Time zone of the date in the notice.
    pub time_zone: TimeZone,
    /// The gateway's `Via` entry.
    pub via: &'a HeaderValue,
}

impl StaleRequest<'_> {
    /// The key of this request's copy (tenant, host, path and query).
    fn key(&self) -> stale::Key<'_> {
        let target = self.parts.uri.path_and_query().map_or("/", |p| p.as_str());
        stale::key(&self.tenant.id, self.host, target)
    }
}

/// The stale copy of this request's page with its notice, when the route keeps copies and
/// one is usable.
pub fn stale_page(cache: &StaleCache, req: &StaleRequest<'_>) -> Option<Response<Bytes>> {
    let parts = req.parts;
    if req.route.stale_if_error.is_zero()
        || !(parts.method == Method::GET || parts.method == Method::HEAD)
    {
        return None;
    }
    let now = crate::clock::unix_now();
    let key = req.key();
    let entry = cache.lookup(&key, &parts.headers, now)?;
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    for (n, v) in &entry.headers {
        h.append(n.clone(), v.clone());
    }
    let html = h
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    let body = if html && !h.contains_key(CONTENT_ENCODING) {
        let lang = negotiate_language(
            parts.headers.get(http::header::ACCEPT_LANGUAGE),
            req.tenant.language,
        );
        let stored = local_time(entry.stored_at, req.time_zone, lang);
        let n = notice(lang, stored, req.tenant.status_href());
        stale::with_notice(&entry.body, &n)
    } else {
        entry.body.clone()
    };
    // The copy (with its notice) must not outlive the outage in anyone's cache.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(age) = HeaderValue::from_str(&now.saturating_sub(entry.stored_at).to_string()) {
        h.insert(http::header::AGE, age);
    }
    h.insert("x-rempart-stale", HeaderValue::from_static("1"));
    h.append(http::header::VIA, req.via.clone());
    let body = if parts.method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    Some(resp.map(|()| body))
}

/// A recorder for this answer when the route keeps copies and the answer may be kept; an
/// answer that may not be kept replaces nothing but forgets an older copy of a 2xx page.
/// `response_fields` builds the answer's fields as a map, called only when a copy may be
/// taken (not while a recent one is fresh), so the usual answer pays nothing for it.
pub fn recorder(
    cache: &StaleCache,
    req: &StaleRequest<'_>,
    status: StatusCode,
    response_fields: impl FnOnce() -> HeaderMap,
) -> Option<Recorder> {
    let parts = req.parts;
    if req.route.stale_if_error.is_zero() || parts.method != Method::GET {
        return None;
    }
    let now = crate::clock::coarse_unix_secs();
    let key = req.key();
    if cache.recent(&key, now) {
        return None;
    }
    let response = response_fields();
    let code = status.as_u16();
    match stale::keep(
        &parts.method,
        &parts.headers,
        code,
        &response,
        now,
        req.route.stale_if_error,
    ) {
        Some(keep) => cache.recorder(&key, code, &response, keep, now),
        None => {
            if status.is_success() {
                cache.forget(&key);
            }
            None
        }
    }
}
