//! Header rewriting between downstream and upstream: RFC 9110 hop-by-hop removal (including
//! the names listed in `Connection`), `X-Forwarded-*`, `Forwarded` (RFC 7239) and `Via`.
//! Forwarding headers from untrusted clients are overwritten, never believed; the other
//! fields by which a client claims an address, a scheme or a path (`CLIENT_CLAIMS`, and a
//! tenant's own list) are dropped from them.

use std::net::IpAddr;
use std::sync::OnceLock;

use http::header::{HeaderName, HeaderValue, CONNECTION, UPGRADE, VIA};
use http::HeaderMap;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Fields by which a client claims its address, the scheme, the port, the server or the
/// path it asked for, which origins and their frameworks believe (besides `X-Forwarded-*`
/// and `Forwarded`, which are rewritten): dropped from a request that does not come from a
/// trusted proxy. Documented in `docs/security.md`.
pub const CLIENT_CLAIMS: [&str; 14] = [
    "x-real-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-original-forwarded-for",
    "x-forwarded",
    "forwarded-for",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
    "x-proxyuser-ip",
];

/// Whether `name` is one of `CLIENT_CLAIMS` or an `X-Forwarded-*` other than the three the
/// gateway writes.
/// (A `match` on the names, not a search of the list: this runs for every field of every
/// request; a test keeps the two the same.)
fn is_client_claim(name: &str) -> bool {
    match name.strip_prefix("x-forwarded-") {
        Some(rest) => !matches!(rest, "for" | "proto" | "host"),
        None => matches!(
            name,
            "x-real-ip"
                | "true-client-ip"
                | "cf-connecting-ip"
                | "fastly-client-ip"
                | "x-client-ip"
                | "x-cluster-client-ip"
                | "x-original-forwarded-for"
                | "x-forwarded"
                | "forwarded-for"
                | "x-original-url"
                | "x-rewrite-url"
                | "x-original-host"
                | "x-host"
                | "x-proxyuser-ip"
        ),
    }
}
// `Via` as a static, for `ForwardingFields`' `&'static` names.
static VIA_NAME: HeaderName = VIA;

/// Hop-by-hop headers always removed (RFC 9110 section 7.6.1). Known names, so removal hashes
/// a name instead of parsing a string each time. A `static`, not a `const`: a `const` array
/// of `HeaderName` (which has drop glue) is built and dropped again at every use, which cost
/// about 370 instructions per proxied request (callgrind).
static HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    UPGRADE,
];

/// What the forwarding headers describe.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// Address of the peer that connected to us (after PROXY protocol).
    pub peer: IpAddr,
    /// Whether that peer is a trusted proxy.
    pub peer_trusted: bool,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The requested host, as the client sent it.
    pub host: &'a str,
    /// The same as a header value when the client sent one (shared, not copied).
    pub host_value: Option<&'a HeaderValue>,
    /// Our pseudonym.
    pub via_name: &'a str,
    /// The peer address as a header value (computed once per connection).
    pub peer_value: &'a HeaderValue,
    /// The peer's `for=` element of `Forwarded` (computed once per connection).
    pub forwarded_for: &'a str,
    /// Our `Via` entry for the downstream protocol (`1.1 rempart` or `2 rempart`).
    pub via: &'a HeaderValue,
    /// The connection's first `Forwarded` value, reused while host and name are the same.
    pub cache: Option<&'a ForwardedCache>,
    /// The tenant's own fields to drop from untrusted clients (lower case).
    pub strip: &'a [HeaderName],
    /// `X-Real-IP` to send (the client's address), when the operator asks for it.
    pub real_ip: Option<&'a HeaderValue>,
}

/// The `Forwarded` value built for a connection's first request (host, our name, value):
/// the usual connection asks one site, and building the value costs a format and a copy.
pub type ForwardedCache = OnceLock<(Box<str>, Box<str>, HeaderValue)>;

/// Whether the request asks for a protocol upgrade (WebSocket and friends).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && connection_lists(headers, "upgrade")
}

fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Removes the cookie `name` from the `Cookie` headers (Rempart's own pass cookie is none of
/// the origin's business); headers left empty are removed.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    if !headers.contains_key(http::header::COOKIE) {
        return;
    }
    let prefix = format!("{name}=");
    let values: Vec<HeaderValue> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .cloned()
        .collect();
    if !values
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains(prefix.as_str())))
    {
        return;
    }
    headers.remove(http::header::COOKIE);
    for v in values {
        let Ok(text) = v.to_str() else {
            headers.append(http::header::COOKIE, v);
            continue;
        };
        let kept: Vec<&str> = text
            .split(';')
            .map(str::trim)
            .filter(|pair| !pair.is_empty() && !pair.starts_with(prefix.as_str()))
            .collect();
        if kept.is_empty() {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.append(http::header::COOKIE, v);
        }
    }
}

/// Removes hop-by-hop headers; keeps `Connection: upgrade` + `Upgrade` when `keep_upgrade`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names first: most messages carry none of them, or only
    // `Connection`, and each removal hashes a name.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    let upgrade = if keep_upgrade {
        headers.get(UPGRADE).cloned()
    } else {
        None
    };
    // Names listed in Connection are hop-by-hop too (the usual tokens are not header names).
    if present & 1 != 0 {
        let listed: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|t| listed_by_connection(t.as_bytes()))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if let Some(u) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, u);
    }
}

/// Whether a `Connection` token names a field to drop as hop-by-hop: not the framing tokens,
/// not `upgrade` (kept or dropped by the upgrade rules), and never `Host`, which is end to end
/// whatever `Connection` says. Used for both requests' maps and origins' field lines.
pub fn listed_by_connection(token: &[u8]) -> bool {
    !token.is_empty()
        && !token.eq_ignore_ascii_case(b"host")
        && !token.eq_ignore_ascii_case(b"keep-alive")
        && !token.eq_ignore_ascii_case(b"close")
        && !token.eq_ignore_ascii_case(b"upgrade")
}

/// The client address: the peer, or, when the peer is a trusted proxy, the right-most
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, is_trusted: impl Fn(IpAddr) -> bool) -> IpAddr {
    if !is_trusted(peer) {
        return peer;
    }
    let mut chain: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    while let Some(ip) = chain.pop() {
        if !is_trusted(ip) {
            return ip;
        }
    }
    peer
}

/// The `for=` element of `Forwarded` for `ip` (IPv6 quoted and bracketed, RFC 7239).
pub fn forwarded_for(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("for={v4}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
    }
}

fn push_forwarded_host(out: &mut String, host: &str) {
    if host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
    {
        out.push_str(host);
    } else {
        out.push('"');
        out.extend(host.chars().filter(|c| *c != '"' && *c != '\\'));
        out.push('"');
    }
}

/// The forwarding fields of a request going upstream, written by the upstream client after
/// the request's own fields. Kept out of the request's map: inserting them there hashed five
/// names per request, for fields only the encoder reads.
#[derive(Debug, Default)]
pub struct ForwardingFields {
    fields: [Option<(&'static HeaderName, HeaderValue)>; 5],
}

impl ForwardingFields {
    fn push(&mut self, name: &'static HeaderName, value: HeaderValue) {
        if let Some(slot) = self.fields.iter_mut().find(|f| f.is_none()) {
            *slot = Some((name, value));
        }
    }

    /// The fields, in the order they are sent.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.fields.iter().flatten().map(|(n, v)| (*n, v))
    }
}

/// Decides `X-Forwarded-For/Proto/Host`, `Forwarded` and `Via` for a request going upstream:
/// the fields it replaces are removed from `headers`, the values to send are returned.
pub fn set_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) -> ForwardingFields {
    // From an untrusted peer, every forwarding header is overwritten; from a trusted proxy,
    // the chain is extended and its proto/host kept.
    let mut out = ForwardingFields::default();
    // Which of them the request carries (one pass; most requests carry none).
    let (mut has_xff, mut has_proto, mut has_host, mut has_fwd, mut has_via) =
        (false, false, false, false, false);
    // Claims of an untrusted client, dropped (allocated only when there is one).
    let mut claims: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if *name == VIA {
            has_via = true;
        } else if *name == FORWARDED {
            has_fwd = true;
        } else if name.as_str().starts_with("x-forwarded-") {
            has_xff |= *name == X_FORWARDED_FOR;
            has_proto |= *name == X_FORWARDED_PROTO;
            has_host |= *name == X_FORWARDED_HOST;
        }
        let claim = !f.peer_trusted && (is_client_claim(name.as_str()) || f.strip.contains(name));
        if claim || (f.real_ip.is_some() && *name == X_REAL_IP) {
            claims.push(name.clone());
        }
    }
    if !claims.is_empty() {
        for name in claims {
            headers.remove(name);
        }
    }
    if let Some(ip) = f.real_ip {
        // In the request's own fields: only when the operator asks for it, so the fixed
        // forwarding fields stay five.
        headers.insert(X_REAL_IP.clone(), ip.clone());
    }
    let prev_xff = if f.peer_trusted && has_xff {
        joined(headers, &X_FORWARDED_FOR)
    } else {
        None
    };
    if has_xff {
        headers.remove(&X_FORWARDED_FOR);
    }
    match prev_xff {
        Some(prev) => {
            if let Ok(v) = HeaderValue::from_str(&format!("{prev}, {}", f.peer)) {
                out.push(&X_FORWARDED_FOR, v);
            }
        }
        None => out.push(&X_FORWARDED_FOR, f.peer_value.clone()),
    }
    if !(f.peer_trusted && has_proto) {
        if has_proto {
            headers.remove(&X_FORWARDED_PROTO);
        }
        out.push(&X_FORWARDED_PROTO, HeaderValue::from_static(f.proto));
    }
    if !(f.peer_trusted && has_host) {
        if has_host {
            headers.remove(&X_FORWARDED_HOST);
        }
        let value = match f.host_value {
            Some(v) => Some(v.clone()),
            None => HeaderValue::from_str(f.host).ok(),
        };
        if let Some(v) = value {
            out.push(&X_FORWARDED_HOST, v);
        }
    }
    let prev_fwd = if f.peer_trusted && has_fwd {
        joined(headers, &FORWARDED)
    } else {
        None
    };
    if has_fwd {
        headers.remove(&FORWARDED);
    }
    let forwarded = match prev_fwd {
        // The chain starts here: the connection's value, built once per host and name.
        None => match f.cache.and_then(OnceLock::get) {
            Some((host, by, value)) if **host == *f.host && **by == *f.via_name => {
                Some(value.clone())
            }
            _ => {
                let value = forwarded_element(None, f);
                if let (Some(cache), Some(v)) = (f.cache, &value) {
                    let _ = cache.set((f.host.into(), f.via_name.into(), v.clone()));
                }
                value
            }
        },
        Some(prev) => forwarded_element(Some(&prev), f),
    };
    if let Some(v) = forwarded {
        out.push(&FORWARDED, v);
    }
    if has_via {
        // Earlier `Via` entries and ours, joined in the request's own field.
        append_via(headers, f.via);
    } else {
        out.push(&VIA_NAME, f.via.clone());
    }
    out
}

/// Our `Forwarded` element, after the trusted chain `prev` when there is one.
fn forwarded_element(prev: Option<&str>, f: &Forwarding<'_>) -> Option<HeaderValue> {
    let mut fwd = String::with_capacity(64 + prev.map_or(0, str::len));
    if let Some(prev) = prev {
        fwd.push_str(prev);
        fwd.push_str(", ");
    }
    fwd.push_str(f.forwarded_for);
    fwd.push_str(";host=");
    push_forwarded_host(&mut fwd, f.host);
    fwd.push_str(";proto=");
    fwd.push_str(f.proto);
    fwd.push_str(";by=");
    fwd.push_str(f.via_name);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(fwd)).ok()
}

/// Appends our `Via` entry (prebuilt, so the common case allocates nothing).
pub fn append_via(headers: &mut HeaderMap, entry: &HeaderValue) {
    match headers.entry(VIA) {
        http::header::Entry::Vacant(slot) => {
            slot.insert(entry.clone());
        }
        http::header::Entry::Occupied(mut slot) => {
            let prev: Vec<&str> = slot.iter().filter_map(|v| v.to_str().ok()).collect();
            let value = format!("{}, {}", prev.join(", "), entry.to_str().unwrap_or(""));
            if let Ok(v) = HeaderValue::from_str(&value) {
                // Replaces every earlier `Via` field with the joined list.
                slot.insert_mult(v);
            }
        }
    }
}

/// The `Via` entry for a downstream protocol version (`1.1` or `2`).
pub fn via_entry(version: &str, via_name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{version} {via_name}"))
        .unwrap_or(HeaderValue::from_static("1.1 rempart"))
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Recently seen field names. Origins and clients send the same few names, spelled the same
/// way, on every message: finding the spelling here (one comparison of 33 bytes) is cheaper than
/// lower-casing and classifying the name again. Direct-mapped, one per runtime thread.
struct NameCache {
    slots: [Option<(CachedSpelling, HeaderName)>; NAME_SLOTS],
}

const NAME_SLOTS: usize = 64;
/// Longest name kept (longer ones are parsed every time).
const NAME_MAX: usize = 32;

#[derive(PartialEq, Eq)]
struct CachedSpelling {
    len: u8,
    bytes: [u8; NAME_MAX],
}

impl NameCache {
    const fn new() -> Self {
        Self {
            slots: [const { None }; NAME_SLOTS],
        }
    }

    fn name(&mut self, raw: &[u8]) -> Option<HeaderName> {
        let (Some(&first), Some(&last)) = (raw.first(), raw.last()) else {
            return None;
        };
        if raw.len() > NAME_MAX {
            return HeaderName::from_bytes(raw).ok();
        }
        let slot = (raw.len() * 7 + usize::from(first) * 3 + usize::from(last)) % NAME_SLOTS;
        let mut spelling = CachedSpelling {
            len: raw.len() as u8,
            bytes: [0; NAME_MAX],
        };
        spelling.bytes[..raw.len()].copy_from_slice(raw);
        if let Some((cached, name)) = &self.slots[slot] {
            if *cached == spelling {
                return Some(name.clone());
            }
        }
        let name = HeaderName::from_bytes(raw).ok()?;
        self.slots[slot] = Some((spelling, name.clone()));
        Some(name)
    }
}

thread_local! {
    static NAMES: std::cell::RefCell<NameCache> = const { std::cell::RefCell::new(NameCache::new()) };
}

/// The field name `raw` (as an origin or a client spelled it), `None` if it is not a valid
/// name.
pub fn header_name(raw: &[u8]) -> Option<HeaderName> {
    NAMES.with(|cache| match cache.try_borrow_mut() {
        Ok(mut cache) => cache.name(raw),
        Err(_) => HeaderName::from_bytes(raw).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_field_names_are_the_names_sent() {
        let mut cache = NameCache::new();
        for _ in 0..3 {
            for (raw, want) in [
                (&b"Content-Type"[..], "content-type"),
                (b"content-type", "content-type"),
                (b"X-Custom-Thing", "x-custom-thing"),
                (b"ETag", "etag"),
                (b"Etag", "etag"),
                (
                    b"A-Field-Name-Longer-Than-Thirty-Two-Bytes",
                    "a-field-name-longer-than-thirty-two-bytes",
                ),
            ] {
                assert_eq!(cache.name(raw).unwrap().as_str(), want);
            }
        }
        // Spellings sharing a slot (same length, first and last byte) never answer for each
        // other; invalid names stay invalid.
        for _ in 0..2 {
            assert_eq!(cache.name(b"x-ab").unwrap().as_str(), "x-ab");
            assert_eq!(cache.name(b"x-cb").unwrap().as_str(), "x-cb");
        }
        assert!(cache.name(b"bad name").is_none());
        assert!(cache.name(b"bad name").is_none());
        assert!(cache.name(b"").is_none());
    }

    /// The request's fields as the origin gets them: its own, then the forwarding fields.
    fn set_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) {
        let fields = super::set_forwarding(headers, f);
        for (name, value) in fields.iter() {
            headers.append(name.clone(), value.clone());
        }
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn connection_listed_headers_are_removed() {
        let mut m = h(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("x-keep", "1"),
        ]);
        remove_hop_by_hop(&mut m, false);
        assert!(m.get("x-secret").is_none());
        assert!(m.get("te").is_none());
        assert!(m.get("connection").is_none());
        assert_eq!(m.get("x-keep").unwrap(), "1");
    }

    #[test]
    fn every_hop_by_hop_field_goes_but_host_stays() {
        let mut m = h(&[
            ("host", "ville.test"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-keep", "1"),
        ]);
        remove_hop_by_hop(&mut m, false);
        let left: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "x-keep"]);
        // `Connection: host` does not strip the request's host.
        let mut m = h(&[
            ("connection", "host, x-a"),
            ("host", "ville.test"),
            ("x-a", "1"),
        ]);
        remove_hop_by_hop(&mut m, false);
        let left: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host"]);
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut m = h(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&m));
        remove_hop_by_hop(&mut m, true);
        assert_eq!(m.get("upgrade").unwrap(), "websocket");
        assert_eq!(m.get("connection").unwrap(), "upgrade");
    }

    /// `set_forwarding` for a request from the untrusted `peer` to `ville.test` over HTTP/1.1.
    fn forward_untrusted(m: &mut HeaderMap, peer: &str) {
        let peer: IpAddr = peer.parse().unwrap();
        set_forwarding(
            m,
            &Forwarding {
                peer,
                peer_trusted: false,
                proto: "http",
                host: "ville.test",
                host_value: None,
                via_name: "rempart",
                peer_value: &HeaderValue::from_str(&peer.to_string()).unwrap(),
                forwarded_for: &forwarded_for(peer),
                via: &via_entry("1.1", "rempart"),
                cache: None,
                strip: &[],
                real_ip: None,
            },
        );
    }

    #[test]
    fn untrusted_forwarding_is_overwritten() {
        let mut m = h(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ]);
        forward_untrusted(&mut m, "192.0.2.10");
        assert_eq!(m.get("x-forwarded-for").unwrap(), "192.0.2.10");
        assert_eq!(m.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(m.get("x-forwarded-host").unwrap(), "ville.test");
        assert_eq!(
            m.get("forwarded").unwrap(),
            "for=192.0.2.10;host=ville.test;proto=http;by=rempart"
        );
        assert_eq!(m.get("via").unwrap(), "1.1 rempart");
    }

    #[test]
    fn client_claims_are_dropped_from_untrusted_clients_only() {
        for name in CLIENT_CLAIMS {
            assert!(is_client_claim(name), "{name}");
        }
        let claims = [
            ("x-real-ip", "6.6.6.6"),
            ("true-client-ip", "6.6.6.6"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("x-original-url", "/admin"),
            ("x-remote-user", "maire"),
            ("x-request-id", "kept"),
            ("accept", "text/html"),
        ];
        let extra = [HeaderName::from_static("x-remote-user")];
        let forward = |trusted: bool, real_ip: Option<&HeaderValue>| {
            let mut m = h(&claims);
            let peer: IpAddr = "192.0.2.10".parse().unwrap();
            let fields = super::set_forwarding(
                &mut m,
                &Forwarding {
                    peer,
                    peer_trusted: trusted,
                    proto: "http",
                    host: "ville.test",
                    host_value: None,
                    via_name: "rempart",
                    peer_value: &HeaderValue::from_static("192.0.2.10"),
                    forwarded_for: &forwarded_for(peer),
                    via: &via_entry("1.1", "rempart"),
                    cache: None,
                    strip: &extra,
                    real_ip,
                },
            );
            for (n, v) in fields.iter() {
                m.insert(n.clone(), v.clone());
            }
            m
        };
        let untrusted = forward(false, None);
        let left: Vec<&str> = claims
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| untrusted.contains_key(*n))
            .collect();
        assert_eq!(left, ["x-request-id", "accept"]);
        let trusted = forward(true, None);
        assert!(claims.iter().all(|(n, _)| trusted.contains_key(*n)));
        let ours = HeaderValue::from_static("192.0.2.10");
        let with_real_ip = forward(true, Some(&ours));
        assert_eq!(with_real_ip.get_all("x-real-ip").iter().count(), 1);
        assert_eq!(with_real_ip.get("x-real-ip").unwrap(), "192.0.2.10");
    }

    #[test]
    fn trusted_forwarding_is_extended() {
        let mut m = h(&[
            ("x-forwarded-for", "203.0.113.5"),
            ("forwarded", "for=203.0.113.5"),
        ]);
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        set_forwarding(
            &mut m,
            &Forwarding {
                peer,
                peer_trusted: true,
                proto: "https",
                host: "ville.test",
                host_value: Some(&HeaderValue::from_static("Ville.test:8443")),
                via_name: "rempart",
                peer_value: &HeaderValue::from_str(&peer.to_string()).unwrap(),
                forwarded_for: &forwarded_for(peer),
                via: &via_entry("2", "rempart"),
                cache: None,
                strip: &[],
                real_ip: None,
            },
        );
        assert_eq!(m.get("x-forwarded-for").unwrap(), "203.0.113.5, 10.0.0.2");
        assert_eq!(m.get("x-forwarded-host").unwrap(), "Ville.test:8443");
        assert!(m
            .get("forwarded")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("for=203.0.113.5, for=10.0.0.2"));
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        assert_eq!(
            client_ip(
                peer,
                &h(&[("x-forwarded-for", "203.0.113.5, 10.0.0.9")]),
                trusted
            ),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_connection_reuses_its_forwarded_value_for_the_same_host() {
        let peer: IpAddr = "192.0.2.10".parse().unwrap();
        let peer_value = HeaderValue::from_static("192.0.2.10");
        let for_ = forwarded_for(peer);
        let via = via_entry("1.1", "rempart");
        let cache = ForwardedCache::new();
        let forwarded = |host: &str, via_name: &str| {
            let mut m = h(&[("forwarded", "for=6.6.6.6")]);
            set_forwarding(
                &mut m,
                &Forwarding {
                    peer,
                    peer_trusted: false,
                    proto: "http",
                    host,
                    host_value: None,
                    via_name,
                    peer_value: &peer_value,
                    forwarded_for: &for_,
                    via: &via,
                    cache: Some(&cache),
                    strip: &[],
                    real_ip: None,
                },
            );
            m.get("forwarded").unwrap().to_str().unwrap().to_owned()
        };
        let first = "for=192.0.2.10;host=ville.test;proto=http;by=rempart";
        assert_eq!(forwarded("ville.test", "rempart"), first);
        assert!(cache.get().is_some());
        assert_eq!(forwarded("ville.test", "rempart"), first);
        // Another host or another name of ours: built afresh, never the cached one.
        assert_eq!(
            forwarded("agglo.test", "rempart"),
            "for=192.0.2.10;host=agglo.test;proto=http;by=rempart"
        );
        assert_eq!(
            forwarded("ville.test", "gw2"),
            "for=192.0.2.10;host=ville.test;proto=http;by=gw2"
        );
    }

    #[test]
    fn an_earlier_via_is_extended_once() {
        let mut m = h(&[("via", "1.0 corp-proxy"), ("x-forwarded-host", "spoofed")]);
        forward_untrusted(&mut m, "192.0.2.10");
        let via: Vec<_> = m.get_all("via").iter().collect();
        assert_eq!(via, ["1.0 corp-proxy, 1.1 rempart"]);
        let host: Vec<_> = m.get_all("x-forwarded-host").iter().collect();
        assert_eq!(host, ["ville.test"]);
    }

    #[test]
    fn ipv6_forwarded_is_quoted() {
        assert_eq!(forwarded_for("::1".parse().unwrap()), "for=\"[::1]\"");
    }
}
