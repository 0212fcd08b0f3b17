//! The status site over HTTP: which status-site page a request asks for (`target`), the
//! answer from the rendered pages in memory (`respond`), and the subscription steps
//! (`subscription`). The pipeline calls these before routing (`pipeline::local`): they never
//! reach an origin and are never challenged.

use std::time::Duration;

use crate::common::{negotiate_language, Language};
use crate::config::runtime::Tenant;
use crate::status::Pages;
use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION};
use http::{Method, Response, StatusCode};

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
                negotiate_language(headers.get(http::header::ACCEPT_LANGUAGE), pages.language)
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
    let mut resp = crate::common::html_page(status, body);
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}

/// Subscription steps: the form's POST, and the confirm and unsubscribe links (GET shows a
/// one-button page, so mail scanners that follow links change nothing; POST acts, which is
/// also what a mail client's one-click unsubscribe sends).
pub async fn subscription<B>(
    service: &crate::status::StatusService,
    tenant: &Tenant,
    target: Target,
    req: http::Request<B>,
) -> Response<Bytes>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let query = req.uri().query().map(str::to_owned);
    let token = query.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "t")
            .map(|(_, v)| v.into_owned())
    });
    let lang = query_lang(query.as_deref()).unwrap_or_else(|| {
        negotiate_language(
            req.headers().get(http::header::ACCEPT_LANGUAGE),
            tenant.language,
        )
    });
    if !tenant.status.as_ref().is_some_and(|s| s.subscriptions) {
        let mut r = Response::new(Bytes::from_static(b"Not found\n"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    let page = Page { tenant, lang };
    match (target, req.method().clone()) {
        (Target::Subscribe, Method::POST) => match read_form(req.into_body()).await {
            Some(form) => subscribe(service, page, &form),
            None => {
                let mut r = Response::new(Bytes::from_static(b"Bad request\n"));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                r
            }
        },
        (Target::Confirm | Target::Unsubscribe, Method::GET) => link_page(page, target, token),
        (Target::Confirm, Method::POST) => {
            let done = token.is_some_and(|t| service.confirm(&tenant.id, &t));
            button_answer(page, target, done)
        }
        (Target::Unsubscribe, Method::POST) => {
            let done = token.is_some_and(|t| service.unsubscribe(&tenant.id, &t));
            button_answer(page, target, done)
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

/// Who a subscription page is for, and in which language.
#[derive(Clone, Copy)]
struct Page<'a> {
    tenant: &'a Tenant,
    lang: Language,
}

impl Page<'_> {
    /// The French or the English text.
    fn say<'t>(&self, fr: &'t str, en: &'t str) -> &'t str {
        if self.lang == Language::Fr {
            fr
        } else {
            en
        }
    }

    fn message(&self, status: StatusCode, title: &str, text: &str) -> Response<Bytes> {
        message(status, self.tenant, self.lang, title, text, None)
    }
}

/// The subscription form's body (bounded in size and time), or `None` when it is broken.
async fn read_form<B>(body: B) -> Option<Bytes>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, FORM_LIMIT);
    match tokio::time::timeout(Duration::from_secs(10), limited.collect()).await {
        Ok(Ok(b)) => Some(b.to_bytes()),
        _ => None,
    }
}

/// The form's POST: the same answer whatever happened (the form never tells whether an
/// address is subscribed), unless the address is not valid.
fn subscribe(
    service: &crate::status::StatusService,
    mut page: Page<'_>,
    form: &[u8],
) -> Response<Bytes> {
    let mut email = String::new();
    let mut components = Vec::new();
    for (k, v) in form_urlencoded::parse(form) {
        match &*k {
            "email" => email = v.into_owned(),
            "component" => components.push(v.into_owned()),
            "lang" if v == "en" => page.lang = Language::En,
            "lang" if v == "fr" => page.lang = Language::Fr,
            _ => {}
        }
    }
    let subscribed = service.subscribe(
        &page.tenant.id,
        &email,
        components,
        page.lang,
        crate::clock::unix_now(),
    );
    match subscribed {
        Ok(_) => page.message(
            StatusCode::OK,
            page.say("Vérifiez votre messagerie", "Check your inbox"),
            page.say(
                "Si cette adresse n'est pas déjà abonnée, un message vient de lui être envoyé : ouvrez le lien qu'il contient pour confirmer votre abonnement.",
                "If this address is not already subscribed, a message has just been sent to it: open its link to confirm your subscription.",
            ),
        ),
        Err(_) => page.message(
            StatusCode::BAD_REQUEST,
            page.say("Adresse non valable", "Address not valid"),
            page.say(
                "L'adresse électronique saisie n'est pas valable. Revenez à la page précédente pour la corriger.",
                "The e-mail address entered is not valid. Go back to the previous page to correct it.",
            ),
        ),
    }
}

/// A confirm or unsubscribe link followed (GET): a page with one button that acts.
fn link_page(page: Page<'_>, target: Target, token: Option<String>) -> Response<Bytes> {
    let Some(token) = token else {
        return page.message(
            StatusCode::BAD_REQUEST,
            page.say("Lien incomplet", "Incomplete link"),
            page.say(
                "Ce lien est incomplet : copiez-le en entier depuis le message reçu.",
                "This link is incomplete: copy it whole from the message.",
            ),
        );
    };
    let enc: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let (action, title, text, button) = if target == Target::Confirm {
        (
            format!("confirm?t={enc}"),
            page.say("Confirmer l'abonnement", "Confirm your subscription"),
            page.say(
                "Appuyez sur le bouton pour recevoir les informations sur l'état des services.",
                "Press the button to receive updates on the status of services.",
            ),
            page.say("Confirmer mon abonnement", "Confirm my subscription"),
        )
    } else {
        (
            format!("unsubscribe?t={enc}"),
            page.say("Se désabonner", "Unsubscribe"),
            page.say(
                "Appuyez sur le bouton pour ne plus recevoir de messages ; votre adresse sera effacée.",
                "Press the button to stop receiving messages; your address will be deleted.",
            ),
            page.say("Me désabonner", "Unsubscribe me"),
        )
    };
    message(
        StatusCode::OK,
        page.tenant,
        page.lang,
        title,
        text,
        Some((&action, button)),
    )
}

/// The answer of a confirm or unsubscribe button; `done` says whether the link held.
fn button_answer(page: Page<'_>, target: Target, done: bool) -> Response<Bytes> {
    let (status, title, text) = match (target == Target::Confirm, done) {
        (true, true) => (
            StatusCode::OK,
            page.say("Abonnement confirmé", "Subscription confirmed"),
            page.say(
                "Vous recevrez désormais les informations sur l'état des services. Chaque message contient un lien pour vous désabonner.",
                "You will now receive updates on the status of services. Every message has a link to unsubscribe.",
            ),
        ),
        (true, false) => (
            StatusCode::BAD_REQUEST,
            page.say("Lien expiré", "Link expired"),
            page.say(
                "Ce lien n'est plus valable : abonnez-vous de nouveau depuis la page d'état des services.",
                "This link is no longer valid: subscribe again from the status page.",
            ),
        ),
        (false, true) => (
            StatusCode::OK,
            page.say("Désabonnement effectué", "Unsubscribed"),
            page.say(
                "Vous ne recevrez plus de messages. Votre adresse a été effacée.",
                "You will receive no more messages. Your address has been deleted.",
            ),
        ),
        (false, false) => (
            StatusCode::BAD_REQUEST,
            page.say("Lien non valable", "Link not valid"),
            page.say(
                "Ce lien n'est pas valable : copiez-le en entier depuis le message reçu.",
                "This link is not valid: copy it whole from the message.",
            ),
        ),
    };
    page.message(status, title, text)
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
