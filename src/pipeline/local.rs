//! Pages the gateway answers itself, before any origin: the tenant's status site (from
//! memory; only bans and the per-address and per-prefix rates apply, never a challenge, so
//! residents without JavaScript always read it) with its subscription steps, and Rempart's
//! own pages under `/.rempart/` (the challenge script, the answer that grants a pass).

use http::Request;

use super::context::RequestCtx;
use super::flow::{End, Flow, Local};
use super::shield;
use crate::error::ProxyError;
use crate::proxy::body::DownstreamBody;
use crate::shield::challenge;
use crate::shield::pass::{self, Answer, Reject};
use crate::signals::LocalReason;
use crate::status::site::{self, Target};

/// A status-site page, feed or summary, from memory (`Err`: the shield refused it).
pub fn status_page<B>(
    ctx: &RequestCtx<'_>,
    target: Target,
    req: &Request<B>,
) -> Flow<http::Response<bytes::Bytes>> {
    shield::status_site(ctx, req.uri().path())?;
    let pages = ctx.generation.status.pages(&ctx.tenant().id);
    let page = site::respond(
        pages.as_deref(),
        target,
        req.method(),
        req.uri().path(),
        req.uri().query(),
        req.headers(),
    );
    Ok(page)
}

/// A subscription step (it reads a small form body).
pub async fn subscription(
    ctx: &RequestCtx<'_>,
    target: Target,
    req: Request<DownstreamBody>,
) -> End {
    if let Err(end) = shield::status_site(ctx, req.uri().path()) {
        return end;
    }
    let page = site::subscription(&ctx.generation.status, ctx.tenant(), target, req).await;
    Local::page(page, "status page", LocalReason::StatusSite)
}

/// Rempart's own pages under `/.rempart/`: the challenge script and the answer endpoint.
/// Bans first, then the local pages' own rates (a cheap 429 before any crypto).
pub fn rempart_page<B>(ctx: &RequestCtx<'_>, req: &Request<B>) -> End {
    let now = crate::clock::coarse_now_ms();
    let generation = ctx.generation;
    if generation.bans.check(ctx.client(), now).is_some() {
        return ProxyError::Banned.into();
    }
    let tenant_key = generation.tenant_keys[ctx.tenant_idx];
    if let Some(rule) = generation.shield.check_local(
        tenant_key,
        ctx.client(),
        ctx.tenant().shield.shared_max,
        now,
    ) {
        generation.shield_counters[ctx.tenant_idx][crate::metrics::SHIELD_LOCAL_LIMITED].inc();
        return match rule {
            crate::shield::Rule::Address => ProxyError::RateLimitedAddress,
            crate::shield::Rule::Prefix => ProxyError::RateLimitedPrefix,
        }
        .because("local pages' rate")
        .into();
    }
    match req.uri().path() {
        challenge::POW_JS_PATH => Local::page(challenge::pow_js(), "local", LocalReason::LocalPage),
        challenge::PASS_PATH => pass_answer(ctx, req, now),
        _ => ProxyError::NoRoute.into(),
    }
}

/// `/.rempart/pass`: checks the answer to a challenge; a pass cookie and a redirect back when
/// it holds, a fresh challenge otherwise (a person is never stuck on an error).
fn pass_answer<B>(ctx: &RequestCtx<'_>, req: &Request<B>, now: u64) -> End {
    let generation = ctx.generation;
    let tenant = ctx.tenant();
    let q = challenge::parse_pass_query(req.uri().query().unwrap_or(""));
    let b = shield::binding(ctx, req.headers());
    let answer = match (&q.counter, q.waited) {
        (Some(n), _) => Answer::Work(n),
        (None, true) => Answer::Waited,
        (None, false) => Answer::Work(""),
    };
    let keys = generation.keys.ring();
    let partition = b.partition();
    let outcome = pass::verify_answer(
        &keys,
        &b,
        &q.token,
        answer,
        crate::shield::defence::CHALLENGE_MAX_AGE_MS,
        now,
    )
    .and_then(|solved| {
        // Without JavaScript, the network's budget of such passes decides too.
        if answer == Answer::Waited && generation.defence.nojs.take(partition, now).is_err() {
            return Err(Reject::TooEarly);
        }
        if generation.replay.first_use(partition, solved.nonce, now) {
            Ok(solved)
        } else {
            Err(Reject::Replayed)
        }
    });
    let counters = &generation.shield_counters[ctx.tenant_idx];
    ctx.signals().challenge_answer(outcome.is_ok());
    match outcome {
        Ok(solved) => {
            counters[crate::metrics::SHIELD_CHALLENGE_PASSED].inc();
            let ttl = tenant.shield.pass_ttl_s;
            let value = pass::issue_pass(&keys, &b, crate::clock::unix_now() + ttl, solved.nonce);
            let page =
                challenge::pass_granted(&value, ttl, ctx.conn.proto == "https", &q.return_to);
            Local::page(page, "pass_granted", LocalReason::LocalPage)
        }
        Err(reject) => {
            counters[crate::metrics::SHIELD_CHALLENGE_REFUSED].inc();
            tracing::debug!(
                target: "rempart::shield",
                tenant = %tenant.id,
                reason = reject.name(),
                "challenge answer refused"
            );
            Local::Challenge {
                binding: b,
                return_to: challenge::safe_return(&q.return_to).to_owned(),
            }
            .end()
        }
    }
}

/// Whether the request is for Rempart's own pages.
pub fn is_rempart_page(path: &str) -> bool {
    path.starts_with(crate::common::LOCAL_PREFIX)
}

/// Where certificate authorities check an HTTP-01 challenge: never redirected to HTTPS.
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Whether the request is an ACME HTTP-01 check.
pub fn is_acme_challenge(path: &str) -> bool {
    path.starts_with(ACME_CHALLENGE_PREFIX)
}

/// The token of an ACME HTTP-01 check.
pub fn acme_token(path: &str) -> Option<&str> {
    path.strip_prefix(ACME_CHALLENGE_PREFIX)
        .filter(|t| !t.is_empty() && !t.contains('/'))
}

/// The key authorization the certificate authority expects for its token.
pub fn acme_answer(answer: String) -> End {
    let mut page = http::Response::new(bytes::Bytes::from(answer));
    page.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    Local::page(page, "acme_challenge", LocalReason::LocalPage)
}

/// `308 Permanent Redirect` to the same host and target over HTTPS on `port` (the method
/// and body are kept, unlike 301).
pub fn https_redirect(ctx: &RequestCtx<'_>, req: &Request<impl Sized>, port: u16) -> End {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{}{target}", ctx.host)
    } else {
        format!("https://{}:{port}{target}", ctx.host)
    };
    let Ok(value) = http::HeaderValue::from_str(&location) else {
        return ProxyError::BadRequest.into();
    };
    let mut page = http::Response::new(bytes::Bytes::from_static(
        b"This site is served over HTTPS.\n",
    ));
    *page.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    let h = page.headers_mut();
    h.insert(http::header::LOCATION, value);
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Local::page(page, "https_redirect", LocalReason::LocalPage)
}
