//! Phase 0, the canonical request: before any decision, the request is brought to the one
//! form every later phase sees and the origin receives. `CONNECT` is refused (405), so are
//! asterisk-form (`OPTIONS *` is answered here) and authority-form targets and schemes other
//! than `http` and `https` (400), and targets longer than `limits.max_target_bytes` (414).
//! The host is agreed (`canonical::authority`: one `Host`, `:authority` and `Host` alike, an
//! absolute-form target's authority replacing the `Host`), and the path normalised
//! (`canonical::path`). The request is rewritten only when its form changes, so a canonical
//! request (nearly all of them) costs one scan of its path and no allocation.

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use super::flow::{End, Flow, Local};
use crate::canonical::{authority, path};
use crate::error::ProxyError;

/// What the canonical form tells later phases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Form {
    /// The path keeps an encoded `/` or `\`: refused unless the route allows it.
    pub encoded_separator: bool,
    /// The target was rewritten (its path normalised).
    pub rewritten: bool,
}

/// Brings `req` to its canonical form, or ends it (400, 405, 414; `OPTIONS *` answered).
pub fn canonicalise<B>(req: &mut Request<B>, max_target: usize) -> Flow<Form> {
    let uri = req.uri();
    // An origin-form target (nearly every HTTP/1.1 request) has no scheme nor authority;
    // its one `Host` field is read and checked once, where the tenant is chosen
    // (`route::request_host`).
    if uri.scheme().is_some() || uri.authority().is_some() || req.method() == Method::CONNECT {
        other_forms(req)?;
    } else if uri.path() == "*" {
        return Err(asterisk(req.method()));
    }
    let uri = req.uri();
    let target_len = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > max_target {
        return Err(ProxyError::UriTooLong.into());
    }
    let canonical =
        path::normalise(req.uri().path()).map_err(|e| ProxyError::BadTarget.because(e.reason()))?;
    let encoded_separator = canonical.encoded_separator;
    let rewritten = match canonical.path {
        std::borrow::Cow::Owned(path) => {
            rewrite_path(req, path)?;
            true
        }
        std::borrow::Cow::Borrowed(_) => false,
    };
    Ok(Form {
        encoded_separator,
        rewritten,
    })
}

/// `CONNECT`, authority-form and absolute-form targets: refused, or (absolute form and
/// HTTP/2) the host agreed and set.
fn other_forms<B>(req: &mut Request<B>) -> Flow<()> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed.because("CONNECT").into());
    }
    let uri = req.uri();
    match uri.scheme_str() {
        None => {
            return Err(ProxyError::BadTarget
                .because("authority-form target")
                .into())
        }
        Some("http" | "https") => {}
        Some(_) => return Err(ProxyError::BadTarget.because("scheme not http").into()),
    }
    if uri.path() == "*" {
        return Err(asterisk(req.method()));
    }
    let source = authority::agree(
        uri.authority().map(http::uri::Authority::as_str),
        req.headers()
            .get_all(HOST)
            .iter()
            .map(HeaderValue::as_bytes),
        req.version() == Version::HTTP_2,
    )
    .map_err(|e| ProxyError::BadHost.because(e.reason()))?;
    if source == authority::Source::Authority {
        set_host_from_authority(req)?;
    }
    Ok(())
}

/// `OPTIONS *` asks about the server itself: answered here. Any other method with `*` has
/// no reading.
fn asterisk(method: &Method) -> End {
    if method != Method::OPTIONS {
        return ProxyError::BadTarget.because("asterisk-form target").into();
    }
    let mut page = Response::new(Bytes::new());
    *page.status_mut() = StatusCode::NO_CONTENT;
    page.headers_mut().insert(
        http::header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    Local::page(page, "options", crate::signals::LocalReason::LocalPage)
}

/// The target's authority becomes the one `Host` field.
fn set_host_from_authority<B>(req: &mut Request<B>) -> Flow<()> {
    let Some(authority) = req.uri().authority() else {
        return Ok(());
    };
    if req
        .headers()
        .get(HOST)
        .is_some_and(|h| h.as_bytes() == authority.as_str().as_bytes())
    {
        return Ok(());
    }
    let value = HeaderValue::from_str(authority.as_str())
        .map_err(|_| ProxyError::BadHost.because("authority not a field value"))?;
    req.headers_mut().insert(HOST, value);
    Ok(())
}

/// Replaces the target's path with `path`, keeping the query.
fn rewrite_path<B>(req: &mut Request<B>, mut path: String) -> Flow<()> {
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    if let Some(query) = parts.path_and_query.as_ref().and_then(|p| p.query()) {
        path.push('?');
        path.push_str(query);
    }
    parts.path_and_query = Some(
        http::uri::PathAndQuery::from_maybe_shared(Bytes::from(path))
            .map_err(|_| ProxyError::BadTarget.because("normalised path not a target"))?,
    );
    *req.uri_mut() =
        Uri::from_parts(parts).map_err(|_| ProxyError::BadTarget.because("normalised target"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, target: &str, version: Version, hosts: &[&str]) -> Request<()> {
        let mut req = Request::builder()
            .method(method)
            .uri(target)
            .version(version)
            .body(())
            .unwrap();
        for h in hosts {
            req.headers_mut()
                .append(HOST, HeaderValue::from_str(h).unwrap());
        }
        req
    }

    fn error_of(flow: Flow<Form>) -> ProxyError {
        match flow {
            Err(End::Fail(f)) => f.error,
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn the_path_is_rewritten_and_the_query_kept() {
        let mut req = request(
            "GET",
            "/a/../admin//x?q=%2e%2E",
            Version::HTTP_11,
            &["ville.test"],
        );
        assert!(canonicalise(&mut req, 8192).unwrap().rewritten);
        assert_eq!(req.uri(), "/admin/x?q=%2e%2E");
        let mut req = request("GET", "/a%2fb", Version::HTTP_11, &["ville.test"]);
        assert!(canonicalise(&mut req, 8192).unwrap().encoded_separator);
    }

    #[test]
    fn absolute_form_sets_the_host_and_h2_must_agree() {
        let mut req = request(
            "GET",
            "http://ville.test/a",
            Version::HTTP_11,
            &["autre.test"],
        );
        canonicalise(&mut req, 8192).unwrap();
        assert_eq!(req.headers().get(HOST).unwrap(), "ville.test");
        assert_eq!(req.headers().get_all(HOST).iter().count(), 1);
        let mut req = request(
            "GET",
            "https://ville.test/a",
            Version::HTTP_2,
            &["autre.test"],
        );
        assert_eq!(error_of(canonicalise(&mut req, 8192)), ProxyError::BadHost);
        let mut req = request("GET", "https://ville.test/a", Version::HTTP_2, &[]);
        canonicalise(&mut req, 8192).unwrap();
        assert_eq!(req.headers().get(HOST).unwrap(), "ville.test");
        // Origin form: the one `Host` is checked where the tenant is chosen.
        let mut req = request("GET", "/", Version::HTTP_11, &["a.test", "b.test"]);
        assert!(canonicalise(&mut req, 8192).is_ok());
        assert_eq!(crate::pipeline::route::request_host(&req), None);
        let mut req = request(
            "GET",
            "http://a.test/",
            Version::HTTP_11,
            &["a.test", "b.test"],
        );
        assert_eq!(error_of(canonicalise(&mut req, 8192)), ProxyError::BadHost);
    }

    #[test]
    fn forms_and_methods_a_gateway_does_not_forward() {
        let cases = [
            ("CONNECT", "ville.test:443", ProxyError::MethodNotAllowed),
            ("GET", "*", ProxyError::BadTarget),
            ("GET", "ville.test:443", ProxyError::BadTarget),
            ("GET", "ftp://ville.test/a", ProxyError::BadTarget),
            ("GET", "/../etc/passwd", ProxyError::BadTarget),
        ];
        for (method, target, want) in cases {
            let mut req = request(method, target, Version::HTTP_11, &["ville.test"]);
            assert_eq!(
                error_of(canonicalise(&mut req, 8192)),
                want,
                "{method} {target}"
            );
        }
        let mut req = request("OPTIONS", "*", Version::HTTP_11, &["ville.test"]);
        assert!(matches!(canonicalise(&mut req, 8192), Err(End::Answer(_))));
        let long = format!("/{}", "a".repeat(100));
        let mut req = request("GET", &long, Version::HTTP_11, &["ville.test"]);
        assert_eq!(error_of(canonicalise(&mut req, 64)), ProxyError::UriTooLong);
    }

    /// A tenant with routes the disguises aim at.
    fn routes() -> &'static crate::config::Runtime {
        static RUNTIME: std::sync::OnceLock<crate::config::Runtime> = std::sync::OnceLock::new();
        RUNTIME.get_or_init(|| {
            let mut text = format!(
                "[[listeners]]\naddress = \"127.0.0.1:0\"\n{}",
                crate::pipeline::test_tenant("ville", "ville.test", "")
            );
            for prefix in ["/admin", "/a/b", "/ferme", "/%C3%A9tat"] {
                text.push_str(&format!(
                    "\n[[tenants.routes]]\npath_prefix = \"{prefix}\"\npool = \"web\"\n"
                ));
            }
            crate::config::load_str(&text, std::path::Path::new("test.toml")).unwrap()
        })
    }

    fn piece() -> impl proptest::strategy::Strategy<Value = &'static str> {
        proptest::sample::select(vec![
            "/", "//", ".", "..", "a", "b", "admin", "%61dmin", "ferme", "%2e", "%2E%2e", "%2f",
            "%41", "%c3%a9", "tat", ";", "x",
        ])
    }

    proptest::proptest! {
        /// Whatever the spelling: the route of the forwarded (canonical) form is the route the
        /// gateway chose, and the forwarded form holds no dot or empty segment.
        #[test]
        fn the_route_of_a_target_is_the_route_of_its_forwarded_form(
            pieces in proptest::collection::vec(piece(), 0..10),
        ) {
            let tenant = &routes().tenants[0];
            let target = format!("/{}", pieces.concat());
            let mut req = request("GET", &target, Version::HTTP_11, &["ville.test"]);
            if canonicalise(&mut req, 8192).is_ok() {
                let forwarded = req.uri().path().to_owned();
                let chosen = tenant.route_index("ville.test", &forwarded);
                let mut again = request("GET", &forwarded, Version::HTTP_11, &["ville.test"]);
                canonicalise(&mut again, 8192).unwrap();
                proptest::prop_assert_eq!(again.uri().path(), forwarded.as_str());
                proptest::prop_assert_eq!(tenant.route_index("ville.test", again.uri().path()), chosen);
                let inner = forwarded.strip_suffix('/').unwrap_or(&forwarded);
                for segment in inner.split('/').skip(1) {
                    proptest::prop_assert!(!segment.is_empty() && segment != "." && segment != "..");
                }
            }
        }
    }
}
