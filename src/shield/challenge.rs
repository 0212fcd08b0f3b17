//! Pages Rempart serves itself for the proof-of-work challenge, cheap to serve under flood:
//! the interstitial page (French or English, accessible, no external resources, a few KB),
//! its script `/.rempart/pow.js`, and `/.rempart/pass`, which checks an answer and sets the
//! pass cookie before sending the browser back where it was going.

use askama::Template;
use bytes::Bytes;
use http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE, X_CONTENT_TYPE_OPTIONS,
};
use http::{Response, StatusCode};

use crate::common::Language;
use crate::shield::pass::{self, Binding, KeyRing};

pub use crate::common::LOCAL_PREFIX;
/// The script.
pub const POW_JS_PATH: &str = "/.rempart/pow.js";
/// The answer endpoint.
pub const PASS_PATH: &str = "/.rempart/pass";
/// Response header marking a challenge (for tools; browsers ignore it).
pub const CHALLENGE_HEADER: &str = "x-rempart-challenge";

const POW_JS: &str = include_str!("../../assets/pow.js");

/// Content-Security-Policy of the challenge page: our script and worker only.
const CSP: &str = "default-src 'none'; script-src 'self'; worker-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Template)]
#[template(path = "challenge.html")]
struct ChallengePage<'a> {
    lang: &'a str,
    tenant: &'a str,
    title: &'a str,
    message: &'a str,
    working: &'a str,
    done: &'a str,
    no_script: String,
    footer: &'a str,
    token: &'a str,
    difficulty: u8,
    wait_s: u8,
    wait_url: String,
    return_to: &'a str,
}

/// Where to send the browser after the challenge: a local path only (no scheme, no other
/// host), else `/`.
pub fn safe_return(target: &str) -> &str {
    let ok = target.starts_with('/')
        && !target.starts_with("//")
        && !target.starts_with("/\\")
        && target.len() <= 2048
        && !target.starts_with(LOCAL_PREFIX)
        && target.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        target
    } else {
        "/"
    }
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// What the challenge page needs about the request.
#[derive(Debug, Clone, Copy)]
pub struct ChallengeRequest<'a> {
    /// Tenant display name.
    pub tenant: &'a str,
    /// Page language.
    pub lang: Language,
    /// Path and query the client asked for.
    pub return_to: &'a str,
    /// Binding of the token.
    pub binding: Binding,
    /// Difficulty (bits).
    pub difficulty: u8,
    /// No-JavaScript wait (s).
    pub wait_s: u8,
    /// A fresh nonce.
    pub nonce: u64,
}

/// The challenge page (403, never cached).
pub fn challenge_response(
    keys: &KeyRing,
    req: &ChallengeRequest<'_>,
    now_ms: u64,
) -> Response<Bytes> {
    let c = pass::issue_challenge(
        keys,
        &req.binding,
        req.nonce,
        req.difficulty,
        req.wait_s,
        now_ms,
    );
    let return_to = safe_return(req.return_to);
    let wait_url = format!("{PASS_PATH}?t={}&w=1&r={}", c.token, encode(return_to));
    let (lang, title, message, working, done, no_script, footer) = match req.lang {
        Language::Fr => (
            "fr",
            "Vérification de votre navigateur",
            "Le site reçoit en ce moment un trafic anormal. Votre navigateur fait une courte vérification automatique, puis la page demandée s'affiche.",
            "Vérification en cours…",
            "Vérification terminée, chargement de la page…",
            format!("JavaScript est désactivé : la page s'affichera automatiquement dans {} secondes.", c.wait_s),
            "Vérification faite par la passerelle de sécurité de la collectivité. Aucune donnée personnelle n'est collectée.",
        ),
        Language::En => (
            "en",
            "Checking your browser",
            "This site is receiving unusual traffic. Your browser is running a short automatic check; the page you asked for will then appear.",
            "Checking…",
            "Check complete, loading the page…",
            format!("JavaScript is off: the page will appear automatically in {} seconds.", c.wait_s),
            "Check made by the council's security gateway. No personal data is collected.",
        ),
    };
    let page = ChallengePage {
        lang,
        tenant: req.tenant,
        title,
        message,
        working,
        done,
        no_script,
        footer,
        token: &c.token,
        difficulty: c.difficulty,
        wait_s: c.wait_s,
        wait_url,
        return_to,
    };
    let body = page.render().unwrap_or_else(|_| title.to_owned());
    let mut resp = crate::common::html_page(StatusCode::FORBIDDEN, body);
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(CHALLENGE_HEADER, HeaderValue::from_static("pow"));
    resp
}

/// The proof-of-work script (cacheable: it never changes within a build).
pub fn pow_js() -> Response<Bytes> {
    let mut resp = Response::new(Bytes::from_static(POW_JS.as_bytes()));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// The parts of a `/.rempart/pass` query.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassQuery {
    /// Challenge token.
    pub token: String,
    /// Counter found by the script.
    pub counter: Option<String>,
    /// Whether this is the no-JavaScript wait path.
    pub waited: bool,
    /// Where to go next.
    pub return_to: String,
}

/// Parses a `/.rempart/pass` query string.
pub fn parse_pass_query(query: &str) -> PassQuery {
    let mut q = PassQuery {
        return_to: "/".to_owned(),
        ..PassQuery::default()
    };
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "t" => q.token = v.into_owned(),
            "n" => q.counter = Some(v.into_owned()),
            "w" => q.waited = v == "1",
            "r" => q.return_to = v.into_owned(),
            _ => {}
        }
    }
    q
}

/// The `Set-Cookie` value that hands a browser its pass.
pub fn pass_cookie(cookie_value: &str, ttl_s: u64, secure: bool) -> Option<HeaderValue> {
    let cookie = format!(
        "{}={cookie_value}; Path=/; Max-Age={ttl_s}; HttpOnly; SameSite=Lax{}",
        pass::PASS_COOKIE,
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&cookie).ok()
}

/// The response to a correct answer: the pass cookie and a redirect to where the client was
/// going.
pub fn pass_granted(
    cookie_value: &str,
    ttl_s: u64,
    secure: bool,
    return_to: &str,
) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::new());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let h = resp.headers_mut();
    if let Some(v) = pass_cookie(cookie_value, ttl_s, secure) {
        h.insert(SET_COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_str(safe_return(return_to)) {
        h.insert(LOCATION, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_targets_stay_local() {
        assert_eq!(safe_return("/etat-civil?x=1"), "/etat-civil?x=1");
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "javascript:alert(1)",
            "/a b",
            "/.rempart/pass?t=1",
            "",
        ] {
            assert_eq!(safe_return(bad), "/", "{bad}");
        }
    }

    #[test]
    fn pass_query_round_trip() {
        let q = parse_pass_query("t=abc&n=42&r=%2Fecole%3Fa%3D1");
        assert_eq!(q.token, "abc");
        assert_eq!(q.counter.as_deref(), Some("42"));
        assert_eq!(q.return_to, "/ecole?a=1");
        assert!(!q.waited);
        assert!(parse_pass_query("t=abc&w=1").waited);
    }

    #[test]
    fn page_is_small_self_contained_and_escaped() {
        let keys = KeyRing::new(&[vec![7u8; 32]]).unwrap();
        let req = ChallengeRequest {
            tenant: "Ville <de> Test",
            lang: Language::Fr,
            return_to: "/a?b=\"c\"",
            binding: Binding {
                tenant: 1,
                prefix: 2,
                fingerprint: 3,
            },
            difficulty: 14,
            wait_s: 5,
            nonce: 1,
        };
        let resp = challenge_response(&keys, &req, 1_000);
        assert_eq!(resp.status(), 403);
        let body = std::str::from_utf8(resp.body()).unwrap();
        assert!(body.len() < 4096, "{} bytes", body.len());
        assert!(body.contains("lang=\"fr\""));
        assert!(body.contains("Ville &#60;de&#62; Test") || body.contains("Ville &lt;de&gt; Test"));
        assert!(!body.contains("http://") && !body.contains("https://"));
        assert!(body.contains("http-equiv=\"refresh\" content=\"5;url=/.rempart/pass?t="));
    }
}
