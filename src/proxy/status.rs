//! The pipeline's side of the status pages: answering status-site requests from memory
//! (phase 1a, before routing: they never reach an origin, are never challenged, and only
//! bans and the per-address and per-prefix rates apply), and sampling each component's pools
//! once a second for the detector in `crate::status`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION, VARY,
};
use http::{Method, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use super::Gateway;
use crate::config::runtime::{Language, Tenant};
use crate::status::model::Sample;
use crate::status::Pages;

/// What a status-site request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The HTML page, in the given language when the path names one.
    Page(Option<Language>),
    /// The Atom feed.
    Feed,
    /// The JSON summary.
    Summary,
    /// The base path without its slash: redirect to it with one (relative links need it).
    AddSlash,
    /// A path under the status site that does not exist.
    NotFound,
}

/// Whether `host` and `path` address `tenant`'s status site, and what they ask for.
pub fn target(tenant: &Tenant, host: &str, path: &str) -> Option<Target> {
    let spec = tenant.status.as_ref()?;
    let rest = if spec.hosts.iter().any(|h| h == host) {
        path
    } else {
        let base = spec.path.as_deref()?;
        let rest = path.strip_prefix(base)?;
        if rest.is_empty() {
            return Some(Target::AddSlash);
        }
        if !rest.starts_with('/') {
            return None;
        }
        rest
    };
    Some(match rest {
        "" | "/" | "/index.html" => Target::Page(None),
        "/index.en.html" => Target::Page(Some(Language::En)),
        "/feed.atom" => Target::Feed,
        "/summary.json" | "/api/v2/summary.json" => Target::Summary,
        _ => Target::NotFound,
    })
}

/// Content-Security-Policy of the status site: no script, inline style only.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn query_lang(query: Option<&str>) -> Option<Language> {
    form_urlencoded::parse(query?.as_bytes()).find_map(|(k, v)| match (&*k, &*v) {
        ("lang", "fr") => Some(Language::Fr),
        ("lang", "en") => Some(Language::En),
        _ => None,
    })
}

/// Answers a status-site request from the rendered pages (`None` when the tenant's pages
/// are not rendered, which only happens between a reload and the first rendering).
pub fn respond(
    pages: Option<&Pages>,
    target: Target,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::new());
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if method != Method::GET && method != Method::HEAD {
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    if target == Target::AddSlash {
        *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
        let location = match query {
            Some(q) => format!("{path}/?{q}"),
            None => format!("{path}/"),
        };
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(LOCATION, v);
        }
        return resp;
    }
    let Some(pages) = pages else {
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return resp;
    };
    let (body, content_type, tag) = match target {
        Target::Page(lang) => {
            let lang = lang.or_else(|| query_lang(query)).unwrap_or_else(|| {
                super::respond::negotiate_language(
                    headers.get(http::header::ACCEPT_LANGUAGE),
                    pages.language,
                )
            });
            let tag = if lang == Language::En { "-en" } else { "-fr" };
            (pages.html(lang).clone(), "text/html; charset=utf-8", tag)
        }
        Target::Feed => (
            pages.atom.clone(),
            "application/atom+xml; charset=utf-8",
            "-atom",
        ),
        Target::Summary => (pages.json.clone(), "application/json", ""),
        Target::AddSlash | Target::NotFound => {
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            *resp.body_mut() = Bytes::from_static(b"Not found\n");
            return resp;
        }
    };
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Short: residents reload during an incident and must see the update.
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=10"),
    );
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    if matches!(target, Target::Page(_)) {
        h.insert(VARY, HeaderValue::from_static("Accept-Language"));
    }
    if target == Target::Summary {
        // Widgets on other sites read it.
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    }
    let etag = format!("{}{tag}\"", pages.etag.trim_end_matches('"'));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        let fresh = headers
            .get(IF_NONE_MATCH)
            .is_some_and(|inm| inm.as_bytes() == v.as_bytes());
        h.insert(ETAG, v);
        if fresh {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            return resp;
        }
    }
    if method == Method::GET {
        *resp.body_mut() = body;
    } else if let Ok(v) = HeaderValue::from_str(&body.len().to_string()) {
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, v);
    }
    resp
}

/// How often components are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Samples every status component once a second until `shutdown`.
pub fn spawn_sampler(gateway: &Arc<Gateway>, shutdown: CancellationToken) {
    let weak = Arc::downgrade(gateway);
    tokio::spawn(async move {
        // Last totals seen per pool (keyed by the pool's address; pools are rebuilt on reload).
        let mut last: HashMap<usize, [u64; 3]> = HashMap::new();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(gateway) = weak.upgrade() else {
                return;
            };
            let generation = gateway.current();
            let now_wall_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let now_ms = super::upstream::now_ms();
            let mut seen = HashMap::new();
            for (ti, tenant) in generation.config.tenants.iter().enumerate() {
                let Some(spec) = &tenant.status else { continue };
                let mut deltas: Vec<[u64; 3]> = Vec::new();
                for pool in &generation.pools[ti] {
                    let key = Arc::as_ptr(pool) as usize;
                    let totals = pool.outcomes.totals();
                    let before = last.get(&key).copied().unwrap_or([0; 3]);
                    deltas.push(std::array::from_fn(|k| totals[k].saturating_sub(before[k])));
                    seen.insert(key, totals);
                }
                let samples: Vec<Sample> = spec
                    .components
                    .iter()
                    .map(|c| {
                        let mut s = Sample::default();
                        for &pi in &c.pools {
                            let pool = &generation.pools[ti][pi];
                            s.servers += pool.servers.len() as u32;
                            s.available += pool
                                .servers
                                .iter()
                                .filter(|sv| sv.is_available(now_ms))
                                .count() as u32;
                            s.requests += deltas[pi][0];
                            s.failures += deltas[pi][1];
                            s.slow += deltas[pi][2];
                        }
                        s
                    })
                    .collect();
                generation.status.observe(&tenant.id, &samples, now_wall_ms);
            }
            last = seen;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_language() {
        assert_eq!(query_lang(Some("lang=en")), Some(Language::En));
        assert_eq!(query_lang(Some("x=1&lang=fr")), Some(Language::Fr));
        assert_eq!(query_lang(Some("lang=de")), None);
        assert_eq!(query_lang(None), None);
    }
}
