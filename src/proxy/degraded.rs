//! Degraded mode in the pipeline: answer a failed GET from the stale copy of the page (with a
//! notice linking to the status page), and record copies of good answers as they stream.
//! The rules on what may be kept live in `crate::status::stale`.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE};
use http::{Method, Response, StatusCode};

use super::body::ResponseBody;
use super::fields::OriginFields;
use super::log::AccessRecord;
use super::Generation;
use crate::config::runtime::{Language, Route, Tenant};
use crate::status::model::local_time;
use crate::status::stale::{self, Recorder};

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

/// The stale copy of this request's page, when the route keeps copies and one is usable;
/// gives the record back otherwise.
#[allow(clippy::result_large_err)]
pub fn stale_answer(
    generation: &Generation,
    tenant: &Tenant,
    route: &Route,
    parts: &http::request::Parts,
    host: &str,
    mut record: AccessRecord,
) -> Result<Response<ResponseBody>, AccessRecord> {
    if route.stale_if_error.is_zero()
        || !(parts.method == Method::GET || parts.method == Method::HEAD)
    {
        return Err(record);
    }
    let now = crate::clock::unix_now();
    let key = stale::key(
        &tenant.id,
        host,
        parts.uri.path_and_query().map_or("/", |p| p.as_str()),
    );
    let Some(entry) = generation.stale.lookup(&key, &parts.headers, now) else {
        return Err(record);
    };
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
        let lang = super::respond::negotiate_language(
            parts.headers.get(http::header::ACCEPT_LANGUAGE),
            tenant.language,
        );
        let stored = local_time(entry.stored_at, generation.config.status.time_zone, lang);
        let n = notice(lang, stored, super::respond::status_href(tenant));
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
    h.append(http::header::VIA, generation.via[0].clone());
    record.status = resp.status().as_u16();
    record.reason = Some("stale_copy");
    if let Some(c) = record.tenant.and_then(|t| generation.stale_served.get(t)) {
        c.inc();
    }
    let body = if parts.method == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    Ok(resp.map(|()| ResponseBody::local(body, Some(record))))
}

/// A recorder for this answer when the route keeps copies and the answer may be kept; an
/// answer that may not be kept replaces nothing but forgets an older copy of a 2xx page.
/// The origin's fields become a map only when a copy may be taken (not while a recent one
/// is fresh), so the usual answer pays nothing for it.
pub fn recorder(
    generation: &Generation,
    tenant: &Tenant,
    route: &Route,
    parts: &http::request::Parts,
    host: &str,
    status: StatusCode,
    fields: &OriginFields,
) -> Option<Recorder> {
    if route.stale_if_error.is_zero() || parts.method != Method::GET {
        return None;
    }
    let now = crate::clock::coarse_unix_secs();
    let key = stale::key(
        &tenant.id,
        host,
        parts.uri.path_and_query().map_or("/", |p| p.as_str()),
    );
    if generation.stale.recent(&key, now) {
        return None;
    }
    let response = fields.to_response_map(0);
    let code = status.as_u16();
    match stale::keep(
        &parts.method,
        &parts.headers,
        code,
        &response,
        now,
        route.stale_if_error,
    ) {
        Some(keep) => generation.stale.recorder(&key, code, &response, keep, now),
        None => {
            if status.is_success() {
                generation.stale.forget(&key);
            }
            None
        }
    }
}
