//! The shield phase: after routing, before admission. Bans (every tenant), then an API
//! route's key, the tenant's rate limits and lists, the pass cookie, the per-fingerprint
//! rate, and under-attack mode or pressure, which send clients without a pass to the
//! challenge. Decisions are taken by `crate::shield` (pure, given `now`); this phase acts on
//! them: counts, bans automatically when asked, logs dry runs (log-only mode), and sets the
//! request's priority at the admission gate.

use http::header::HeaderValue;
use http::{HeaderMap, Request, Version};

use super::context::RequestCtx;
use super::flow::{End, Flow, Local};
use crate::config::runtime::{ChallengeScope, Route};
use crate::error::ProxyError;
use crate::shield::admission::Priority;
use crate::shield::defence::stable_hash;
use crate::shield::{display_prefix, pass, Client, Decision, Mode, Rule};

use super::log::ClientNetwork;

/// What a pass and a challenge are bound to for this request: the tenant, the client's
/// network, its user agent and, over TLS, its JA4 (a pass copied into another client is
/// worthless).
pub fn binding(ctx: &RequestCtx<'_>, headers: &HeaderMap) -> pass::Binding {
    let ua = headers
        .get(http::header::USER_AGENT)
        .map_or(&b""[..], HeaderValue::as_bytes);
    let fingerprint = match &ctx.conn.tls_fingerprint {
        None => stable_hash(ua),
        Some(ja4) => {
            let mut bytes = ua.to_vec();
            bytes.push(0);
            bytes.extend_from_slice(ja4.as_bytes());
            stable_hash(&bytes)
        }
    };
    pass::Binding {
        tenant: ctx.flags().binding_id(),
        prefix: crate::shield::prefix_key(ctx.client(), ctx.generation.config.prefixes),
        fingerprint,
    }
}

/// The challenge for this request, sending the browser to `return_to` afterwards.
pub fn challenge(ctx: &RequestCtx<'_>, headers: &HeaderMap, return_to: &str) -> End {
    Local::Challenge {
        binding: binding(ctx, headers),
        return_to: return_to.to_owned(),
    }
    .end()
}

/// The shield of status-site requests: bans, deny list and the tenant's per-address and
/// per-prefix rates (the page is cheap, but a flood must not turn the gateway into its
/// amplifier); no challenge, so residents without JavaScript always read it.
pub fn status_site(ctx: &RequestCtx<'_>, path: &str) -> Flow<()> {
    let now = crate::clock::coarse_now_ms();
    let generation = ctx.generation;
    if generation.bans.check(ctx.client(), now).is_some() {
        return Err(ProxyError::Banned.into());
    }
    let policy = &ctx.tenant().shield;
    let key = generation.tenant_keys[ctx.tenant_idx];
    match generation
        .shield
        .check(policy, key, Client::unverified(ctx.client()), path, 1, now)
    {
        Decision::Allow | Decision::Shared { .. } => Ok(()),
        Decision::Denied => Err(ProxyError::Banned.into()),
        Decision::Limited { rule, enforce, .. } => {
            count_limited(ctx, rule, enforce);
            if enforce && policy.mode == Mode::Enforce {
                Err(limited_error(rule).into())
            } else {
                Ok(())
            }
        }
    }
}

fn count_limited(ctx: &RequestCtx<'_>, rule: Rule, enforce: bool) {
    let rule_base = if rule == Rule::Address { 0 } else { 2 };
    ctx.generation.shield_counters[ctx.tenant_idx][rule_base + usize::from(!enforce)].inc();
}

/// Counts a request let through (`SHIELD_SHARED`) or challenged (`SHIELD_CHALLENGED`) on
/// `rule`.
fn count_rule(ctx: &RequestCtx<'_>, base: usize, rule: Rule) {
    ctx.generation.shield_counters[ctx.tenant_idx][base + usize::from(rule == Rule::Prefix)].inc();
}

fn limited_error(rule: Rule) -> ProxyError {
    match rule {
        Rule::Address => ProxyError::RateLimitedAddress,
        Rule::Prefix => ProxyError::RateLimitedPrefix,
    }
}

/// Decides the request: an error or the challenge ends it; otherwise `ctx.priority` and
/// `ctx.calm` are set for admission.
#[inline]
pub fn decide(ctx: &mut RequestCtx<'_>, route: &Route, req: &Request<impl Sized>) -> Flow<()> {
    decide_at(ctx, route, req, crate::clock::coarse_now_ms())
}

/// `decide` at `now` (`clock::now_ms` time).
fn decide_at(
    ctx: &mut RequestCtx<'_>,
    route: &Route,
    req: &Request<impl Sized>,
    now: u64,
) -> Flow<()> {
    ctx.signals().fingerprint(ctx.conn.fingerprint_bucket());
    if ctx.generation.bans.check(ctx.client(), now).is_some() {
        return Err(ProxyError::Banned.into());
    }
    if let Some(api) = &route.api {
        // API route: the key decides; limited per key, never challenged.
        api_key(ctx, api, req.headers(), now)?;
        ctx.priority = Priority::Verified;
        ctx.calm = ctx.flags().pressure_since(now).is_none();
        return Ok(());
    }
    let policy = &ctx.tenant().shield;
    let trusted = !policy.trusted.is_empty() && policy.trusted.contains(ctx.client());
    if trusted {
        ctx.record.network = ClientNetwork::Trusted;
        ctx.generation.shield_counters[ctx.tenant_idx][crate::metrics::SHIELD_TRUSTED].inc();
    }
    let pass = pass_cookie(ctx, req.headers());
    let pass_id = match pass {
        PassCheck::Valid(id) => Some(id),
        PassCheck::Invalid | PassCheck::None => None,
    };
    if let Some(id) = pass_id {
        // Whatever the limits: the verified clients behind an address also scale its local
        // pages' rate and its connection cap.
        ctx.generation.shield.observe_verified(
            ctx.generation.tenant_keys[ctx.tenant_idx],
            ctx.client(),
            id,
            now,
        );
    }
    rates(ctx, route, req, pass_id, trusted, now)?;
    let pressure = ctx.flags().pressure_since(now);
    ctx.calm = pressure.is_none();
    if !policy.allow.is_empty() && policy.allow.contains(ctx.client()) {
        ctx.priority = Priority::Verified;
        return Ok(());
    }
    if let Some(id) = pass_id {
        pass_rate(ctx, id, now)?;
        ctx.priority = Priority::Verified;
        return Ok(());
    }
    if trusted {
        // The town's own networks: never challenged; each browser gets a pass without proof
        // of work, so it is counted and limited as a client of its own.
        grant_pass(ctx, req.headers());
        ctx.priority = Priority::Verified;
        return Ok(());
    }
    let invalid_pass = matches!(pass, PassCheck::Invalid);
    fingerprint_rate(ctx, req, now)?;
    let now_min = now / 60_000;
    let good = ctx.generation.defence.history.is_good(
        crate::shield::history_key(ctx.client()),
        policy.good_history_after_min,
        pressure.map_or(now_min, |p| p / 60_000),
        now_min,
    );
    if needs_challenge(ctx, route, req.uri().path(), now) {
        let return_to = req.uri().path_and_query().map_or("/", |p| p.as_str());
        return Err(challenge(ctx, req.headers(), return_to));
    }
    ctx.priority = if good {
        Priority::Verified
    } else if invalid_pass || scripted(ctx, req, now) {
        Priority::Suspicious
    } else {
        Priority::Unknown
    };
    Ok(())
}

/// An API route: a known key (SHA-256 of the header's value) and the per-key rate.
fn api_key(
    ctx: &RequestCtx<'_>,
    api: &crate::config::runtime::ApiKeys,
    headers: &HeaderMap,
    now: u64,
) -> Flow<()> {
    let digest = headers.get(&api.header).map(|v| {
        let d = ring::digest::digest(&ring::digest::SHA256, v.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    });
    let Some(digest) = digest.filter(|d| api.digests.contains(d)) else {
        return Err(ProxyError::ApiKeyRequired.into());
    };
    if api.rate > 0 {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&digest[..8]);
        let key = ctx.generation.tenant_keys[ctx.tenant_idx];
        let observed = ctx
            .generation
            .shield
            .observe_api_key(key, u64::from_le_bytes(eight), now);
        if observed > f64::from(api.rate) {
            return Err(ProxyError::RateLimitedKey.into());
        }
    }
    Ok(())
}

/// The tenant's per-address and per-prefix rates and its lists (requests carrying a pass
/// `pass` have their own budget, scaled on shared addresses); bans a client far over the
/// limit when the policy says so. A browser without a pass over its address's budget is
/// sent to the challenge rather than refused: nothing reaches the origin either way, and a
/// resident behind an address shared with a bot can still earn a pass.
fn rates(
    ctx: &mut RequestCtx<'_>,
    route: &Route,
    req: &Request<impl Sized>,
    pass: Option<u64>,
    trusted: bool,
    now: u64,
) -> Flow<()> {
    let generation = ctx.generation;
    let tenant = ctx.tenant();
    let policy = &tenant.shield;
    if !policy.is_active() {
        return Ok(());
    }
    let client = ctx.client();
    let key = generation.tenant_keys[ctx.tenant_idx];
    let decision = generation.shield.check_tightened(
        policy,
        key,
        Client { ip: client, pass },
        req.uri().path(),
        route.cost,
        ctx.actions().limit_factor,
        now,
    );
    let (rule, observed, limit, enforce, ban, verified) = match decision {
        Decision::Allow => return Ok(()),
        Decision::Shared { rule, .. } => {
            count_rule(ctx, crate::metrics::SHIELD_SHARED, rule);
            if !trusted {
                ctx.record.network = ClientNetwork::Shared;
            }
            return Ok(());
        }
        Decision::Denied => return Err(ProxyError::Banned.into()),
        Decision::Limited {
            rule,
            observed,
            limit,
            enforce,
            ban,
            verified,
        } => (rule, observed, limit, enforce, ban, verified),
    };
    let prefixes = generation.config.prefixes;
    if rule == Rule::Address {
        // Over its own limit: whatever history the address had is gone.
        generation
            .defence
            .history
            .forget(crate::shield::history_key(client));
    }
    if ban {
        let reason = format!(
            "automatic: {observed:.0} requests/s from this address on tenant {} (ban_rate {}, address_rate {limit})",
            tenant.id, policy.ban_rate
        );
        generation.bans.add(
            ipnet::IpNet::from(client),
            &reason,
            Some(policy.ban_for_ms),
            now,
        );
        tracing::warn!(
            target: "rempart::shield",
            tenant = %tenant.id,
            prefix = %display_prefix(client, prefixes),
            observed,
            ban_rate = policy.ban_rate,
            "address banned automatically"
        );
    } else if enforce && !verified && !trusted && !scripted(ctx, req, now) {
        count_rule(ctx, crate::metrics::SHIELD_CHALLENGED, rule);
        let return_to = req.uri().path_and_query().map_or("/", |p| p.as_str());
        return Err(challenge(ctx, req.headers(), return_to));
    }
    count_limited(ctx, rule, enforce);
    if enforce {
        return Err(limited_error(rule).into());
    }
    // Dry run: say what would have been refused (the prefix, never the address).
    tracing::info!(
        target: "rempart::shield",
        tenant = %tenant.id,
        rule = rule.name(),
        observed,
        limit,
        verified,
        prefix = %display_prefix(client, prefixes),
        "over the limit (log-only mode)"
    );
    Ok(())
}

/// What the request's pass cookie says.
enum PassCheck {
    /// No pass cookie.
    None,
    /// A valid pass, with its identifier.
    Valid(u64),
    /// A pass that does not verify (expired, forged, or bound to another client).
    Invalid,
}

fn pass_cookie(ctx: &RequestCtx<'_>, headers: &HeaderMap) -> PassCheck {
    let cookie = pass::find_cookie(
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    let Some(value) = cookie else {
        return PassCheck::None;
    };
    let b = binding(ctx, headers);
    match pass::verify_pass(
        &ctx.generation.keys.ring(),
        &b,
        value,
        crate::clock::unix_now(),
    ) {
        Ok(p) => PassCheck::Valid(p.id),
        Err(_) => PassCheck::Invalid,
    }
}

/// The per-pass rate: a pass is a privilege, and a stolen or shared one must not become a
/// hose.
fn pass_rate(ctx: &RequestCtx<'_>, pass_id: u64, now: u64) -> Flow<()> {
    let policy = &ctx.tenant().shield;
    if policy.pass_rate > 0 {
        let key = ctx.generation.tenant_keys[ctx.tenant_idx];
        let observed = ctx.generation.shield.observe_pass(key, pass_id, now);
        if observed > f64::from(policy.pass_rate) {
            ctx.generation.shield_counters[ctx.tenant_idx][crate::metrics::SHIELD_PASS_LIMITED]
                .inc();
            ctx.generation
                .defence
                .history
                .forget(crate::shield::history_key(ctx.client()));
            if policy.mode == Mode::Enforce {
                return Err(ProxyError::RateLimitedPass.into());
            }
        }
    }
    Ok(())
}

/// Hands a client of the town's own networks a pass without proof of work: the answer
/// carries the cookie, and its next requests count as its own verified client's.
fn grant_pass(ctx: &mut RequestCtx<'_>, headers: &HeaderMap) {
    let ttl = ctx.tenant().shield.pass_ttl_s;
    let value = pass::issue_pass(
        &ctx.generation.keys.ring(),
        &binding(ctx, headers),
        crate::clock::unix_now() + ttl,
        ctx.generation.replay.nonce(),
    );
    if let Some(cookie) =
        crate::shield::challenge::pass_cookie(&value, ttl, ctx.conn.proto == "https")
    {
        ctx.grant = Some(Box::new(cookie));
        ctx.generation.shield_counters[ctx.tenant_idx][crate::metrics::SHIELD_TRUSTED_PASS].inc();
    }
}

/// The per-fingerprint rate (JA4 and HTTP fingerprint together): one flood tool on many
/// addresses shares one fingerprint.
fn fingerprint_rate(ctx: &RequestCtx<'_>, req: &Request<impl Sized>, now: u64) -> Flow<()> {
    let policy = &ctx.tenant().shield;
    if policy.fingerprint_rate == 0 {
        return Ok(());
    }
    let generation = ctx.generation;
    let tls = ctx.conn.tls_fingerprint.as_deref().unwrap_or("-");
    let h2_fp;
    let http = match ctx.conn.http_fingerprint.get() {
        Some(f) => &**f,
        None if req.version() == Version::HTTP_2 => {
            h2_fp = crate::shield::fingerprint::http2_fingerprint(
                req.method().as_str(),
                req.headers().keys().map(http::HeaderName::as_str),
            );
            h2_fp.as_str()
        }
        None => "-",
    };
    let label = format!("{tls} {http}");
    let key = stable_hash(label.as_bytes());
    let tenant_key = generation.tenant_keys[ctx.tenant_idx];
    let observed = generation.shield.observe_fingerprint(tenant_key, key, now);
    let limit = f64::from(policy.fingerprint_rate);
    if observed >= limit / 2.0 && (observed as u64) % 4 == 0 {
        generation.shield.top_fingerprints.record(
            tenant_key,
            u128::from(key),
            || label.clone(),
            observed,
            now,
        );
    }
    if observed > limit {
        let enforce = policy.mode == Mode::Enforce;
        generation.shield_counters[ctx.tenant_idx]
            [crate::metrics::SHIELD_FINGERPRINT_LIMITED + usize::from(!enforce)]
        .inc();
        if enforce {
            return Err(ProxyError::RateLimitedFingerprint.into());
        }
        tracing::info!(target: "rempart::shield", tenant = %ctx.tenant().id, ja4 = tls, http_fingerprint = http, observed, "over the fingerprint limit (log-only mode)");
    }
    Ok(())
}

/// Whether a client without a pass must solve the challenge: under-attack mode (the
/// operator's, or the playbook's at the tenant's vigilance level), the playbook's challenge
/// of heavy or all routes, or the tenant sheds load (log-only mode says so instead). Good
/// history exempts no one: a client that was served well before the flood may flood too.
fn needs_challenge(ctx: &RequestCtx<'_>, route: &Route, path: &str, now: u64) -> bool {
    let policy = &ctx.tenant().shield;
    let actions = ctx.actions();
    let by_level = actions.under_attack
        || match actions.challenge {
            ChallengeScope::Off => false,
            ChallengeScope::Heavy => route.cost > 1,
            ChallengeScope::All => true,
        };
    let under_attack =
        policy.under_attack || by_level || ctx.flags().under_attack_until(now).is_some();
    let challenge = (under_attack || (policy.auto_challenge && !ctx.calm)) && !policy.exempt(path);
    if !challenge {
        return false;
    }
    if policy.mode == Mode::Enforce {
        return true;
    }
    tracing::info!(
        target: "rempart::shield",
        tenant = %ctx.tenant().id,
        prefix = %display_prefix(ctx.client(), ctx.generation.config.prefixes),
        "would challenge (log-only mode)"
    );
    false
}

/// Whether the request looks scripted: a tool's or no user agent, no `Accept` (browsers
/// always send it), no `Accept-Language` over HTTP/2, many client errors lately, or a head
/// without the fields browsers send.
fn scripted(ctx: &RequestCtx<'_>, req: &Request<impl Sized>, now: u64) -> bool {
    let headers = req.headers();
    let policy = &ctx.tenant().shield;
    let ua_class = crate::shield::user_agent_class(
        headers
            .get(http::header::USER_AGENT)
            .map(HeaderValue::as_bytes),
    );
    matches!(
        ua_class,
        crate::shield::UserAgentClass::Tool | crate::shield::UserAgentClass::Missing
    ) || !headers.contains_key(http::header::ACCEPT)
        || (req.version() == Version::HTTP_2
            && !headers.contains_key(http::header::ACCEPT_LANGUAGE))
        || (policy.error_rate > 0
            && ctx.generation.shield.error_rate(
                ctx.generation.tenant_keys[ctx.tenant_idx],
                ctx.client(),
                now,
            ) > f64::from(policy.error_rate))
        || ctx
            .conn
            .http_fingerprint
            .get()
            .is_some_and(|fp| crate::shield::fingerprint::lacks_browser_headers(fp))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pipeline::{test_gateway, test_tenant, ConnInfo, RequestEnds};

    #[derive(Debug)]
    struct NoClock;
    impl RequestEnds for NoClock {
        fn request_finished(&self) {}
    }

    fn conn(peer: &str) -> ConnInfo {
        let peer: std::net::SocketAddr = peer.parse().unwrap();
        ConnInfo {
            peer_value: HeaderValue::from_str(&peer.ip().to_string()).unwrap(),
            forwarded_for: crate::proxy::headers::forwarded_for(peer.ip()),
            peer,
            proto: "http",
            tls_fingerprint: None,
            http_fingerprint: Default::default(),
            clock: Arc::new(NoClock),
            forwarded: Default::default(),
            fingerprint_bucket: std::sync::OnceLock::new(),
        }
    }

    /// A resident's browser request.
    fn browser_request() -> Request<()> {
        Request::builder()
            .uri("/page")
            .header("host", "ville.test")
            .header(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            )
            .header("accept", "text/html")
            .header("accept-language", "fr")
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn good_history_raises_priority_but_never_exempts_from_the_challenge_nor_limits() {
        let shield =
            "[tenants.shield]\nauto_challenge = true\naddress_rate = 5\nprefix_rate = 1000\n";
        let gw = test_gateway(&test_tenant("ville", "ville.test", shield));
        let generation = gw.current();
        let conn = conn("192.0.2.7:4000");
        let route = &generation.config.tenants[0].routes[0];
        // Half an hour into the process; served normally at minute 5: good history.
        let now = 30 * 60_000;
        let key = crate::shield::history_key(conn.peer.ip());
        generation.defence.history.record(key, 5);
        let req = browser_request();
        let decide_one = || {
            let record = crate::pipeline::log::AccessRecord::start(
                generation.clone(),
                &req,
                conn.peer.ip(),
                Arc::new(NoClock),
            );
            let mut ctx = RequestCtx::new(&generation, &conn, "ville.test".into(), 0, None, record);
            let flow = decide_at(&mut ctx, route, &req, now);
            (flow, ctx.priority)
        };
        // Calm: served, with the priority history gives.
        let (flow, priority) = decide_one();
        assert!(flow.is_ok());
        assert_eq!(priority, Priority::Verified);
        // Under pressure: challenged like anyone without a pass.
        generation.tenant_flags[0].on_overload(now);
        let (flow, _) = decide_one();
        assert!(
            matches!(flow, Err(End::Answer(ref local)) if matches!(**local, Local::Challenge { .. })),
            "{flow:?}"
        );
        // Over its own limit, the address loses its history.
        assert!(generation.defence.history.is_good(
            key,
            crate::shield::admission::GOOD_HISTORY_MIN_AGE_MIN,
            now / 60_000,
            now / 60_000
        ));
        // A browser over the limit still gets the challenge (a pass is its way out).
        for _ in 0..10 {
            let (flow, _) = decide_one();
            assert!(
                matches!(flow, Err(End::Answer(ref local)) if matches!(**local, Local::Challenge { .. })),
                "{flow:?}"
            );
        }
        assert!(!generation.defence.history.is_good(
            key,
            crate::shield::admission::GOOD_HISTORY_MIN_AGE_MIN,
            now / 60_000,
            now / 60_000
        ));
        // A script over the limit (no `Accept`) gets the 429.
        let script = Request::builder()
            .uri("/page")
            .header("host", "ville.test")
            .header("user-agent", "curl/8.5.0")
            .body(())
            .unwrap();
        let record = crate::pipeline::log::AccessRecord::start(
            generation.clone(),
            &script,
            conn.peer.ip(),
            Arc::new(NoClock),
        );
        let mut ctx = RequestCtx::new(&generation, &conn, "ville.test".into(), 0, None, record);
        let flow = decide_at(&mut ctx, route, &script, now);
        assert!(
            matches!(flow, Err(End::Fail(ref f)) if f.error == ProxyError::RateLimitedAddress),
            "{flow:?}"
        );
    }
}
