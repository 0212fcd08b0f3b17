//! The one place where a request answered by the gateway becomes an HTTP response: errors
//! (a small branded page per tenant, French by default, English when the client prefers it,
//! never showing internal details; the fallback page when the origin fails), rate limits
//! (with the tarpit), the challenge page, stale copies, status-site and local pages. Each
//! answer completes the access record (status, reason, cause) and counts as a signal.

use askama::Template;
use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER};
use http::Response;

use super::body::ResponseBody;
use super::flow::{End, Local};
use super::log::AccessRecord;
use super::Generation;
use crate::error::Failure;
use crate::signals::LocalReason;

use crate::common::{negotiate_language, Language};
use crate::config::runtime::Tenant;
use crate::error::ProxyError;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    lang: &'a str,
    tenant: &'a str,
    status_line: String,
    title: &'a str,
    message: &'a str,
    contact: Option<&'a str>,
    contact_label: &'a str,
    footer: &'a str,
    service: Option<&'a str>,
    service_label: &'a str,
    status_href: Option<String>,
    status_link: &'a str,
    alternatives: &'a [String],
    alternatives_title: &'a str,
}

struct Text {
    title: &'static str,
    message: &'static str,
}

fn text(error: ProxyError, lang: Language) -> Text {
    use Language::*;
    use ProxyError::*;
    let (title, message) = match (error, lang) {
        (UnknownHost, Fr) => ("Site inconnu", "Ce nom de site n'est pas servi ici. Vérifiez l'adresse saisie."),
        (UnknownHost, En) => ("Unknown site", "This site name is not served here. Please check the address."),
        (BadHost | BadRequest | BadTarget, Fr) => ("Requête invalide", "La requête reçue est incorrecte et n'a pas été transmise."),
        (BadHost | BadRequest | BadTarget, En) => ("Bad request", "The request was malformed and was not forwarded."),
        (UriTooLong, Fr) => ("Adresse trop longue", "L'adresse demandée est trop longue et n'a pas été transmise. Vérifiez le lien suivi."),
        (UriTooLong, En) => ("Address too long", "The address requested is too long and was not forwarded. Please check the link you followed."),
        (MethodNotAllowed, Fr) => ("Méthode refusée", "Ce type de requête n'est pas accepté ici et n'a pas été transmis."),
        (MethodNotAllowed, En) => ("Method not allowed", "This kind of request is not accepted here and was not forwarded."),
        (BodyTooSlow, Fr) => ("Envoi trop lent", "Le contenu envoyé arrivait trop lentement et l'envoi a été interrompu. Vérifiez votre connexion et réessayez."),
        (BodyTooSlow, En) => ("Upload too slow", "What you sent arrived too slowly and the upload was stopped. Please check your connection and try again."),
        (Banned, Fr) => ("Accès refusé", "L'accès à ce site est temporairement refusé depuis votre connexion. Si vous pensez qu'il s'agit d'une erreur, contactez la collectivité."),
        (Banned, En) => ("Access denied", "Access to this site is temporarily refused from your connection. If you think this is a mistake, please contact the council."),
        (QuotaReached, Fr) => ("Quota de consultation atteint", "Ce compte a atteint son quota de consultation de dossiers pour le moment. Si votre travail l'exige, contactez votre référent sécurité."),
        (QuotaReached, En) => ("Consultation quota reached", "This account has reached its quota of records consulted for now. If your work requires more, please contact your security officer."),
        (AccountSuspended, Fr) => ("Compte suspendu", "Par mesure de protection des données des usagers, ce compte est suspendu sur les services de consultation de dossiers. Contactez votre référent sécurité."),
        (AccountSuspended, En) => ("Account suspended", "To protect residents' data, this account is suspended on the record services. Please contact your security officer."),
        (Shed, Fr) => ("Service très demandé", "Le service reçoit en ce moment plus de demandes qu'il ne peut en traiter. Merci de réessayer dans quelques secondes."),
        (Shed, En) => ("Service very busy", "The service is receiving more requests than it can handle right now. Please try again in a few seconds."),
        (ApiKeyRequired, Fr) => ("Clé d'accès requise", "Ce service est réservé aux applications munies d'une clé d'accès valide."),
        (ApiKeyRequired, En) => ("Access key required", "This service is for applications holding a valid access key."),
        (RateLimitedAddress | RateLimitedPrefix | RateLimitedPass | RateLimitedFingerprint | RateLimitedKey, Fr) => ("Trop de demandes", "Votre connexion a envoyé trop de demandes en peu de temps. Patientez quelques secondes puis rechargez la page."),
        (RateLimitedAddress | RateLimitedPrefix | RateLimitedPass | RateLimitedFingerprint | RateLimitedKey, En) => ("Too many requests", "Your connection sent too many requests in a short time. Please wait a few seconds, then reload the page."),
        (NoRoute, Fr) => ("Page introuvable", "Aucun service ne correspond à cette adresse."),
        (NoRoute, En) => ("Page not found", "No service matches this address."),
        (BodyTooLarge, Fr) => ("Envoi trop volumineux", "Le contenu envoyé dépasse la taille autorisée pour ce service. Réduisez la taille des pièces jointes et réessayez."),
        (BodyTooLarge, En) => ("Upload too large", "What you sent is larger than this service accepts. Please reduce attachments and try again."),
        (UpstreamConnect | UpstreamFailed, Fr) => ("Service momentanément indisponible", "Le service ne répond pas pour le moment. Nos équipes sont prévenues ; merci de réessayer dans quelques minutes."),
        (UpstreamConnect | UpstreamFailed, En) => ("Service temporarily unavailable", "The service is not responding right now. Our staff have been alerted; please try again in a few minutes."),
        (UpstreamTimeout, Fr) => ("Le service met trop de temps à répondre", "Le service n'a pas répondu à temps. Merci de réessayer dans quelques minutes."),
        (UpstreamTimeout, En) => ("The service is taking too long", "The service did not answer in time. Please try again in a few minutes."),
        (Maintenance, Fr) => ("Service en maintenance", "Ce service est en cours de maintenance. Merci de revenir un peu plus tard."),
        (Maintenance, En) => ("Service under maintenance", "This service is under maintenance. Please come back a little later."),
        (Internal, Fr) => ("Erreur interne", "Une erreur est survenue. Merci de réessayer."),
        (Internal, En) => ("Internal error", "Something went wrong. Please try again."),
    };
    Text { title, message }
}

/// How long to hold the answer to `end` before sending it: the tenant's tarpit for a
/// rate-limited request (its connection idles, nothing else is spent), else 0.
pub fn hold_ms(generation: &Generation, tenant: Option<usize>, end: &End) -> u64 {
    match end {
        End::Fail(f) if f.error.is_rate_limit() => tenant
            .and_then(|t| generation.config.tenants.get(t))
            .map_or(0, |t| t.shield.tarpit_ms),
        _ => 0,
    }
}

/// Holds a request for `hold_ms` (see `hold_ms`), within a bounded number of places: past
/// them, over-limit requests are answered at once.
pub async fn tarpit(generation: &Generation, hold_ms: u64) {
    if let Ok(_place) = generation.defence.tarpit.clone().try_acquire_owned() {
        tokio::time::sleep(std::time::Duration::from_millis(hold_ms)).await;
    }
}

/// Turns the end of a request into its response, completing `record`. (Callers hold it in
/// the tarpit first when `hold_ms` says so.)
pub fn finish(
    generation: &Generation,
    mut record: AccessRecord,
    accept_language: Option<&HeaderValue>,
    end: End,
) -> Response<ResponseBody> {
    let tenant = record.tenant.map(|t| &generation.config.tenants[t]);
    let (page, reason, signal) = match end {
        End::Answer(local) => answer(generation, &record, accept_language, *local),
        End::Fail(Failure { error, cause }) => {
            if let Some(cause) = &cause {
                tracing::debug!(error = %error, cause = %cause, "request failed");
            }
            record.cause = cause;
            let mut page = error_response(error, tenant, record.route, accept_language);
            if error.closes_connection() && record.version != http::Version::HTTP_2 {
                page.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            (page, error.reason(), signal_of(error))
        }
    };
    page_response(record, page, reason, signal)
}

/// A page the gateway built, with its access record completed: `reason` for the access log,
/// `signal` for the tenant's signals. (A status-site page comes here directly: it is no
/// `End`, so nothing is boxed for it.)
pub fn page_response(
    mut record: AccessRecord,
    page: Response<Bytes>,
    reason: &'static str,
    signal: LocalReason,
) -> Response<ResponseBody> {
    record.status = page.status().as_u16();
    record.reason = Some(reason);
    record.local = Some(signal);
    let (parts, bytes) = page.into_parts();
    Response::from_parts(parts, ResponseBody::local(bytes, Some(record)))
}

/// A local answer's page, with the access log's reason and its signal.
fn answer(
    generation: &Generation,
    record: &AccessRecord,
    accept_language: Option<&HeaderValue>,
    local: Local,
) -> (Response<Bytes>, &'static str, LocalReason) {
    match local {
        Local::Page {
            page,
            reason,
            signal,
        } => (page, reason, signal),
        Local::Challenge { binding, return_to } => {
            let page = challenge_page(generation, record, accept_language, binding, &return_to);
            (page, "challenge", LocalReason::Challenge)
        }
        Local::Stale(page) => {
            if let Some(c) = record.tenant.and_then(|t| generation.stale_served.get(t)) {
                c.inc();
            }
            (page, "stale_copy", LocalReason::StaleCopy)
        }
    }
}

/// The signal an error counts as.
fn signal_of(error: ProxyError) -> LocalReason {
    use ProxyError::*;
    match error {
        RateLimitedAddress
        | RateLimitedPrefix
        | RateLimitedPass
        | RateLimitedFingerprint
        | RateLimitedKey => LocalReason::RateLimited,
        Banned => LocalReason::Banned,
        QuotaReached | AccountSuspended => LocalReason::Guarded,
        Shed => LocalReason::Shed,
        Maintenance => LocalReason::Maintenance,
        BadHost | BadRequest | BadTarget | UriTooLong | MethodNotAllowed | BodyTooLarge
        | BodyTooSlow | ApiKeyRequired => LocalReason::BadRequest,
        UnknownHost | NoRoute => LocalReason::NotFound,
        UpstreamConnect | UpstreamFailed | UpstreamTimeout => LocalReason::OriginFailed,
        Internal => LocalReason::Other,
    }
}

/// The wait shown to a browser without JavaScript: the tenant's, plus what its network's
/// budget of such passes asks for now (at most four minutes in all, within a token's life).
fn nojs_wait_s(
    generation: &Generation,
    base_s: u8,
    binding: &crate::shield::pass::Binding,
    now: u64,
) -> u8 {
    let extra_ms = generation
        .defence
        .nojs
        .extra_wait_ms(binding.partition(), now);
    let extra_s = extra_ms.div_ceil(1000);
    u8::try_from((u64::from(base_s) + extra_s).min(240)).unwrap_or(240)
}

/// The challenge page for the request in `record`, harder while the tenant sheds load or is
/// under attack.
fn challenge_page(
    generation: &Generation,
    record: &AccessRecord,
    accept_language: Option<&HeaderValue>,
    binding: crate::shield::pass::Binding,
    return_to: &str,
) -> Response<Bytes> {
    use crate::shield::challenge;
    let Some(tenant_idx) = record.tenant else {
        return error_response(ProxyError::Internal, None, None, accept_language);
    };
    let tenant = &generation.config.tenants[tenant_idx];
    let flags = &generation.tenant_flags[tenant_idx];
    let now = crate::clock::coarse_now_ms();
    let stressed = flags.pressure_since(now).is_some() || flags.under_attack_until(now).is_some();
    let difficulty = tenant
        .shield
        .challenge_difficulty
        .saturating_add(if stressed { 2 } else { 0 })
        .saturating_add(tenant.playbook.at(flags.level()).difficulty_bonus)
        .min(24);
    let page = challenge::challenge_response(
        &generation.keys.ring(),
        &challenge::ChallengeRequest {
            tenant: &tenant.name,
            lang: crate::common::negotiate_language(accept_language, tenant.language),
            return_to,
            binding,
            difficulty,
            wait_s: nojs_wait_s(generation, tenant.shield.challenge_wait_s, &binding, now),
            nonce: generation.replay.nonce(),
        },
        now,
    );
    generation.shield_counters[tenant_idx][crate::metrics::SHIELD_CHALLENGE_ISSUED].inc();
    generation.signals[tenant_idx].challenge_issued();
    page
}

/// Builds the branded error response for `error`, for `tenant` (and the `route` index)
/// when known. When the origin fails, is shedding or in maintenance, the page is the
/// fallback page: it names the service, links to the status page and lists the tenant's
/// other ways to reach the council.
pub fn error_response(
    error: ProxyError,
    tenant: Option<&Tenant>,
    route: Option<usize>,
    accept_language: Option<&HeaderValue>,
) -> Response<Bytes> {
    let default = tenant.map_or(Language::Fr, |t| t.language);
    let lang = negotiate_language(accept_language, default);
    let status = error.status();
    let t = text(error, lang);
    let (lang_code, contact_label, footer) = match lang {
        Language::Fr => (
            "fr",
            "Pour une démarche urgente :",
            "Page affichée par la passerelle de sécurité de la collectivité.",
        ),
        Language::En => (
            "en",
            "For urgent matters:",
            "Page shown by the council's security gateway.",
        ),
    };
    let fallback = error.blame() == crate::error::Blame::Upstream
        || matches!(error, ProxyError::Shed | ProxyError::Maintenance);
    let spec = tenant.and_then(|t| t.status.as_ref()).filter(|_| fallback);
    let service = spec.zip(tenant).and_then(|(s, t)| {
        let r = &t.routes[route?];
        Some(
            s.component_of_pool(r.pool)
                .map_or(r.name.as_str(), |c| c.name(lang)),
        )
    });
    let (service_label, status_link, alternatives_title) = match lang {
        Language::Fr => (
            "Service concerné :",
            "Voir l'état des services et les informations en cours",
            "Pour nous joindre autrement",
        ),
        Language::En => (
            "Service:",
            "See the status of services and current information",
            "Other ways to reach us",
        ),
    };
    let page = ErrorPage {
        service,
        service_label,
        status_href: spec.and(tenant).and_then(Tenant::status_href),
        status_link,
        alternatives: spec.map_or(&[][..], |s| &s.alternatives[..]),
        alternatives_title,
        lang: lang_code,
        tenant: tenant.map_or("Rempart", |t| t.name.as_str()),
        status_line: format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
        title: t.title,
        message: t.message,
        contact: tenant.and_then(|t| t.contact.as_deref()),
        contact_label,
        footer,
    };
    let body = page.render().unwrap_or_else(|_| t.title.to_owned());
    let mut resp = crate::common::html_page(status, body);
    let h = resp.headers_mut();
    if error.is_rate_limit() {
        // The limits count over a one-second sliding window.
        h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    } else if error == ProxyError::Maintenance {
        h.insert(RETRY_AFTER, HeaderValue::from_static("600"));
    } else if error == ProxyError::Shed {
        h.insert(RETRY_AFTER, HeaderValue::from_static("5"));
    } else if error.blame() == crate::error::Blame::Upstream {
        h.insert(RETRY_AFTER, HeaderValue::from_static("30"));
    } else if error == ProxyError::MethodNotAllowed {
        h.insert(
            http::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failure_keeps_its_cause_and_counts_as_a_signal() {
        use crate::error::Failure;
        use std::sync::Arc;
        #[derive(Debug)]
        struct NoConn;
        impl crate::pipeline::RequestEnds for NoConn {
            fn request_finished(&self) {}
        }
        let gw =
            crate::pipeline::test_gateway(&crate::pipeline::test_tenant("ville", "v.test", ""));
        let generation = gw.current();
        let req = http::Request::new(());
        let mut record = AccessRecord::start(
            generation.clone(),
            &req,
            "192.0.2.1".parse().unwrap(),
            Arc::new(NoConn),
        );
        record.tenant = Some(0);
        let failure = ProxyError::UpstreamConnect.because("127.0.0.1:9: connection refused");
        let resp = finish(&generation, record, None, End::Fail(failure));
        assert_eq!(resp.status(), 502);
        let record = resp.body().record().unwrap();
        assert_eq!(record.reason, Some("upstream_connect"));
        assert_eq!(
            record.cause.as_deref(),
            Some("127.0.0.1:9: connection refused")
        );
        assert_eq!(record.status, 502);
        drop(resp);
        let totals = generation.signals[0].totals();
        assert_eq!(totals.requests, 1);
        assert_eq!(totals.local(LocalReason::OriginFailed), 1);
        // A rate limit is held in the tarpit only when the tenant has one.
        let limited = End::Fail(Failure::from(ProxyError::RateLimitedAddress));
        assert_eq!(hold_ms(&generation, Some(0), &limited), 0);
        assert_eq!(
            hold_ms(&generation, Some(0), &End::from(ProxyError::NoRoute)),
            0
        );
    }

    #[test]
    fn page_is_escaped_and_branded() {
        let resp = error_response(ProxyError::UpstreamTimeout, None, None, None);
        assert_eq!(resp.status(), 504);
        let body = String::from_utf8(resp.body().to_vec()).unwrap();
        assert!(body.contains("lang=\"fr\""));
        assert!(body.contains("trop de temps"));
    }
}
