//! The pipeline's side of the status pages: answering status-site requests from memory
//! (phase 1a, before routing: they never reach an origin, are never challenged, and only
//! bans and the per-address and per-prefix rates apply), and sampling each component's pools
//! once a second for the detector in `crate::status`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION,
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
    /// The subscription form's target.
    Subscribe,
    /// Double opt-in link.
    Confirm,
    /// One-click unsubscribe link (RFC 8058).
    Unsubscribe,
    /// A path under the status site that does not exist.
    NotFound,
}

impl Target {
    /// Whether the request needs the subscription handler (it reads a body).
    pub fn is_subscription(self) -> bool {
        matches!(
            self,
            Target::Subscribe | Target::Confirm | Target::Unsubscribe
        )
    }
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
        "/subscribe" => Target::Subscribe,
        "/confirm" => Target::Confirm,
        "/unsubscribe" => Target::Unsubscribe,
        _ => Target::NotFound,
    })
}

use crate::status::CSP;

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
    let variant = match target {
        Target::Page(lang) => {
            let lang = lang.or_else(|| query_lang(query)).unwrap_or_else(|| {
                super::respond::negotiate_language(
                    headers.get(http::header::ACCEPT_LANGUAGE),
                    pages.language,
                )
            });
            pages.html(lang)
        }
        Target::Feed => &pages.atom,
        Target::Summary => &pages.json,
        Target::AddSlash
        | Target::NotFound
        | Target::Subscribe
        | Target::Confirm
        | Target::Unsubscribe => {
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            *resp.body_mut() = Bytes::from_static(b"Not found\n");
            return resp;
        }
    };
    // Compressed once at rendering: a flood of readers costs a fraction of the bytes.
    let gzip = accepts_gzip(headers);
    let (body, prepared) = if gzip {
        (&variant.gzip, &variant.headers[1])
    } else {
        (&variant.body, &variant.headers[0])
    };
    *resp.headers_mut() = prepared.clone();
    let fresh = match (headers.get(IF_NONE_MATCH), prepared.get(ETAG)) {
        (Some(inm), Some(etag)) => inm.as_bytes() == etag.as_bytes(),
        _ => false,
    };
    if fresh {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return resp;
    }
    if method == Method::GET {
        *resp.body_mut() = body.clone();
    } else if let Ok(v) = HeaderValue::from_str(&body.len().to_string()) {
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, v);
    }
    resp
}

/// Whether `Accept-Encoding` accepts gzip (listed without `q=0`).
fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0))
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// Largest subscription form accepted.
const FORM_LIMIT: usize = 8 * 1024;

fn message(
    status: StatusCode,
    tenant: &Tenant,
    lang: Language,
    title: &str,
    text: &str,
    form: Option<(&str, &str)>,
) -> Response<Bytes> {
    let body = crate::status::render::message_page(&tenant.name, lang, title, text, form);
    let mut resp = Response::new(Bytes::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}

/// Subscription steps: the form's POST, and the confirm and unsubscribe links (GET shows a
/// one-button page, so mail scanners that follow links change nothing; POST acts, which is
/// also what a mail client's one-click unsubscribe sends).
pub async fn subscription(
    service: &crate::status::StatusService,
    tenant: &Tenant,
    target: Target,
    req: http::Request<super::body::DownstreamBody>,
) -> Response<Bytes> {
    use http_body_util::BodyExt;
    let query = req.uri().query().map(str::to_owned);
    let token = query.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "t")
            .map(|(_, v)| v.into_owned())
    });
    let mut lang = query_lang(query.as_deref()).unwrap_or_else(|| {
        super::respond::negotiate_language(
            req.headers().get(http::header::ACCEPT_LANGUAGE),
            tenant.language,
        )
    });
    let fr = lang == Language::Fr;
    let method = req.method().clone();
    if !tenant.status.as_ref().is_some_and(|s| s.subscriptions) {
        let mut r = Response::new(Bytes::from_static(b"Not found\n"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    match (target, method) {
        (Target::Subscribe, Method::POST) => {
            let limited = http_body_util::Limited::new(req.into_body(), FORM_LIMIT);
            let body = match tokio::time::timeout(Duration::from_secs(10), limited.collect()).await
            {
                Ok(Ok(b)) => b.to_bytes(),
                _ => {
                    let mut r = Response::new(Bytes::from_static(b"Bad request\n"));
                    *r.status_mut() = StatusCode::BAD_REQUEST;
                    return r;
                }
            };
            let mut email = String::new();
            let mut components = Vec::new();
            for (k, v) in form_urlencoded::parse(&body) {
                match &*k {
                    "email" => email = v.into_owned(),
                    "component" => components.push(v.into_owned()),
                    "lang" if v == "en" => lang = Language::En,
                    "lang" if v == "fr" => lang = Language::Fr,
                    _ => {}
                }
            }
            let fr = lang == Language::Fr;
            match service.subscribe(
                &tenant.id,
                &email,
                components,
                lang,
                crate::clock::unix_now(),
            ) {
                // The same answer whatever happened: the form never tells whether an address
                // is subscribed.
                Ok(_) => message(
                    StatusCode::OK,
                    tenant,
                    lang,
                    if fr {
                        "Vérifiez votre messagerie"
                    } else {
                        "Check your inbox"
                    },
                    if fr {
                        "Si cette adresse n'est pas déjà abonnée, un message vient de lui être envoyé : ouvrez le lien qu'il contient pour confirmer votre abonnement."
                    } else {
                        "If this address is not already subscribed, a message has just been sent to it: open its link to confirm your subscription."
                    },
                    None,
                ),
                Err(_) => message(
                    StatusCode::BAD_REQUEST,
                    tenant,
                    lang,
                    if fr {
                        "Adresse non valable"
                    } else {
                        "Address not valid"
                    },
                    if fr {
                        "L'adresse électronique saisie n'est pas valable. Revenez à la page précédente pour la corriger."
                    } else {
                        "The e-mail address entered is not valid. Go back to the previous page to correct it."
                    },
                    None,
                ),
            }
        }
        (Target::Confirm | Target::Unsubscribe, Method::GET) => {
            let Some(token) = token else {
                return message(
                    StatusCode::BAD_REQUEST,
                    tenant,
                    lang,
                    if fr {
                        "Lien incomplet"
                    } else {
                        "Incomplete link"
                    },
                    if fr {
                        "Ce lien est incomplet : copiez-le en entier depuis le message reçu."
                    } else {
                        "This link is incomplete: copy it whole from the message."
                    },
                    None,
                );
            };
            let enc: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
            let (action, title, text, button) = if target == Target::Confirm {
                (
                    format!("confirm?t={enc}"),
                    if fr {
                        "Confirmer l'abonnement"
                    } else {
                        "Confirm your subscription"
                    },
                    if fr {
                        "Appuyez sur le bouton pour recevoir les informations sur l'état des services."
                    } else {
                        "Press the button to receive updates on the status of services."
                    },
                    if fr {
                        "Confirmer mon abonnement"
                    } else {
                        "Confirm my subscription"
                    },
                )
            } else {
                (
                    format!("unsubscribe?t={enc}"),
                    if fr { "Se désabonner" } else { "Unsubscribe" },
                    if fr {
                        "Appuyez sur le bouton pour ne plus recevoir de messages ; votre adresse sera effacée."
                    } else {
                        "Press the button to stop receiving messages; your address will be deleted."
                    },
                    if fr {
                        "Me désabonner"
                    } else {
                        "Unsubscribe me"
                    },
                )
            };
            message(
                StatusCode::OK,
                tenant,
                lang,
                title,
                text,
                Some((&action, button)),
            )
        }
        (Target::Confirm, Method::POST) => {
            if token.is_some_and(|t| service.confirm(&tenant.id, &t)) {
                message(
                    StatusCode::OK,
                    tenant,
                    lang,
                    if fr {
                        "Abonnement confirmé"
                    } else {
                        "Subscription confirmed"
                    },
                    if fr {
                        "Vous recevrez désormais les informations sur l'état des services. Chaque message contient un lien pour vous désabonner."
                    } else {
                        "You will now receive updates on the status of services. Every message has a link to unsubscribe."
                    },
                    None,
                )
            } else {
                message(
                    StatusCode::BAD_REQUEST,
                    tenant,
                    lang,
                    if fr { "Lien expiré" } else { "Link expired" },
                    if fr {
                        "Ce lien n'est plus valable : abonnez-vous de nouveau depuis la page d'état des services."
                    } else {
                        "This link is no longer valid: subscribe again from the status page."
                    },
                    None,
                )
            }
        }
        (Target::Unsubscribe, Method::POST) => {
            if token.is_some_and(|t| service.unsubscribe(&tenant.id, &t)) {
                message(
                    StatusCode::OK,
                    tenant,
                    lang,
                    if fr {
                        "Désabonnement effectué"
                    } else {
                        "Unsubscribed"
                    },
                    if fr {
                        "Vous ne recevrez plus de messages. Votre adresse a été effacée."
                    } else {
                        "You will receive no more messages. Your address has been deleted."
                    },
                    None,
                )
            } else {
                message(
                    StatusCode::BAD_REQUEST,
                    tenant,
                    lang,
                    if fr {
                        "Lien non valable"
                    } else {
                        "Link not valid"
                    },
                    if fr {
                        "Ce lien n'est pas valable : copiez-le en entier depuis le message reçu."
                    } else {
                        "This link is not valid: copy it whole from the message."
                    },
                    None,
                )
            }
        }
        _ => {
            let mut r = Response::new(Bytes::new());
            *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            r.headers_mut().insert(
                ALLOW,
                HeaderValue::from_static(if target == Target::Subscribe {
                    "POST"
                } else {
                    "GET, POST"
                }),
            );
            r
        }
    }
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
            let now_wall_ms = crate::clock::unix_now_ms();
            let now_ms = crate::clock::now_ms();
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
    fn gzip_negotiation() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(
                http::header::ACCEPT_ENCODING,
                HeaderValue::from_str(v).unwrap(),
            );
            m
        };
        assert!(accepts_gzip(&h("gzip, deflate, br")));
        assert!(accepts_gzip(&h("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&h("*")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("br")));
        assert!(!accepts_gzip(&http::HeaderMap::new()));
    }

    #[test]
    fn query_language() {
        assert_eq!(query_lang(Some("lang=en")), Some(Language::En));
        assert_eq!(query_lang(Some("x=1&lang=fr")), Some(Language::Fr));
        assert_eq!(query_lang(Some("lang=de")), None);
        assert_eq!(query_lang(None), None);
    }
}
