//! Stale copies of public pages for degraded mode: when the origin is down or timing out, a
//! public GET page is answered from the last good copy (RFC 5861 `stale-if-error`) with a
//! small notice, instead of an error.
//!
//! What is kept follows RFC 9111's rules for a shared cache, strictly: GET only; statuses
//! 200, 203, 300, 301, 308, 404, 410; never `no-store`, `private`, `no-cache`,
//! `must-revalidate` or `proxy-revalidate`; never a response setting a cookie; never for a
//! request with `Authorization` or `Cookie` unless the response says `public`; `Vary: *`
//! never, other `Vary` headers are matched on lookup. Memory is bounded (total and per
//! entry); admission and eviction are moka's TinyLFU, so a cache-busting flood of one-hit
//! URLs does not push out the pages residents read.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// A kept copy.
#[derive(Debug)]
pub struct Entry {
    /// Tenant, host and request target it answers (checked on lookup: the store is keyed by
    /// their hash).
    url: (Box<str>, Box<str>, Box<str>),
    /// Status code.
    pub status: u16,
    /// End-to-end response headers (without `Content-Length`, `Age`, `Date` and hop-by-hop).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The whole body.
    pub body: Bytes,
    /// Request header values the response varies on.
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
    /// Unix seconds when stored.
    pub stored_at: u64,
    /// Unix seconds after which the copy is no longer served.
    pub usable_until: u64,
}

impl Entry {
    fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        u32::try_from(self.body.len() + headers + 256).unwrap_or(u32::MAX)
    }

    /// Whether `request` asks for the same variant.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| request.get(name) == value.as_ref())
    }
}

/// Why a response may be kept: until when, and the `Vary` values to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    /// Unix seconds after which the copy is not served.
    pub usable_until: u64,
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
}

fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| {
            let d = d.trim();
            match d.split_once('=') {
                Some((k, v)) => (
                    k.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"').to_owned()),
                ),
                None => (d.to_ascii_lowercase(), None),
            }
        })
}

/// Decides whether a response may be kept for degraded mode (pure). `window` is the
/// configured stale-if-error window; a `stale-if-error=N` directive from the origin wins.
pub fn keep(
    method: &http::Method,
    request: &HeaderMap,
    status: u16,
    response: &HeaderMap,
    now: u64,
    window: Duration,
) -> Option<Keep> {
    if method != http::Method::GET || window.is_zero() {
        return None;
    }
    if !matches!(status, 200 | 203 | 300 | 301 | 308 | 404 | 410) {
        return None;
    }
    if response.contains_key(header::SET_COOKIE) || response.contains_key(header::CONTENT_RANGE) {
        return None;
    }
    let mut public = false;
    let mut fresh = 0u64;
    let mut stale_window = window.as_secs();
    for (name, value) in directives(response) {
        match name.as_str() {
            "no-store" | "private" | "no-cache" | "must-revalidate" | "proxy-revalidate" => {
                return None
            }
            "public" => public = true,
            "s-maxage" | "max-age" => {
                if let Some(v) = value.and_then(|v| v.parse::<u64>().ok()) {
                    if name == "s-maxage" || fresh == 0 {
                        fresh = v;
                    }
                }
            }
            "stale-if-error" => {
                if let Some(v) = value.and_then(|v| v.parse::<u64>().ok()) {
                    stale_window = v;
                }
            }
            _ => {}
        }
    }
    if response
        .get_all(header::PRAGMA)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
    {
        return None;
    }
    if !public
        && (request.contains_key(header::AUTHORIZATION) || request.contains_key(header::COOKIE))
    {
        return None;
    }
    let mut vary = Vec::new();
    for v in response.get_all(header::VARY) {
        let Ok(s) = v.to_str() else { return None };
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
                return None;
            };
            let value = request.get(&name).cloned();
            vary.push((name, value));
        }
    }
    if stale_window == 0 {
        return None;
    }
    Some(Keep {
        usable_until: now.saturating_add(fresh).saturating_add(stale_window),
        vary,
    })
}

/// The cache key of a request: its tenant, host and target, hashed without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    tenant: &'a str,
    host: &'a str,
    target: &'a str,
    hash: u64,
}

/// The key of a request for `target` (path and query) on `host` of `tenant`.
pub fn key<'a>(tenant: &'a str, host: &'a str, target: &'a str) -> Key<'a> {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys, so that the disk tier's file names stay the same across
    // restarts. Not a faster hash: clients choose the target, and `forget` drops the copy
    // stored under a hash, so a URL that collides with the home page's would let anyone
    // erase its copy during an attack; finding one must stay out of reach. Entries carry
    // their URL and are checked against it, so a collision never serves another page.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (tenant, host, target).hash(&mut h);
    let hash = h.finish();
    Key {
        tenant,
        host,
        target,
        hash,
    }
}

impl Entry {
    /// Tenant, host and target it answers.
    pub fn url(&self) -> (&str, &str, &str) {
        (&self.url.0, &self.url.1, &self.url.2)
    }

    /// Request header values the copy varies on.
    pub fn vary(&self) -> &[(HeaderName, Option<HeaderValue>)] {
        &self.vary
    }

    /// Rebuilds an entry (from the disk tier).
    pub(crate) fn from_parts(
        url: (Box<str>, Box<str>, Box<str>),
        status: u16,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
        vary: Vec<(HeaderName, Option<HeaderValue>)>,
        stored_at: u64,
        usable_until: u64,
    ) -> Self {
        Self {
            url,
            status,
            headers,
            body,
            vary,
            stored_at,
            usable_until,
        }
    }

    fn answers(&self, key: &Key<'_>) -> bool {
        &*self.url.0 == key.tenant && &*self.url.1 == key.host && &*self.url.2 == key.target
    }
}

impl Key<'_> {
    /// The hash the stores are keyed by.
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

/// A page is copied again at most this often (seconds): recording costs a body copy.
pub const REFRESH_EVERY: u64 = 30;

/// Bounded store of stale copies, shared by all generations.
#[derive(Clone)]
pub struct StaleCache {
    entries: moka::sync::Cache<u64, Arc<Entry>>,
    max_entry: usize,
    disk: Option<Arc<super::disk::DiskStore>>,
    /// Direct-mapped table of recently copied pages (key hash, unix seconds): the hot path
    /// asks it with two atomic loads instead of a cache lookup.
    recent: Arc<[(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)]>,
}

/// Slots of the recently-copied table.
const RECENT_SLOTS: usize = 4096;

impl std::fmt::Debug for StaleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaleCache")
            .field("entries", &self.entries.entry_count())
            .field("bytes", &self.entries.weighted_size())
            .finish()
    }
}

impl StaleCache {
    /// A store holding at most `max_bytes` in memory, each copy at most `max_entry` bytes,
    /// with an optional disk tier.
    pub fn new(
        max_bytes: u64,
        max_entry: usize,
        disk: Option<Arc<super::disk::DiskStore>>,
    ) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_k: &u64, e: &Arc<Entry>| e.weight())
                .build(),
            max_entry,
            disk,
            recent: (0..RECENT_SLOTS)
                .map(|_| Default::default())
                .collect::<Vec<_>>()
                .into(),
        }
    }

    fn slot(&self, hash: u64) -> &(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64) {
        &self.recent[(hash as usize) % RECENT_SLOTS]
    }

    /// Starts recording a response that `keep` accepted.
    pub fn recorder(
        &self,
        key: &Key<'_>,
        status: u16,
        response: &HeaderMap,
        keep: Keep,
        now: u64,
    ) -> Option<Recorder> {
        let declared = response
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.max_entry) {
            return None;
        }
        let headers = response
            .iter()
            .filter(|(n, _)| {
                !matches!(
                    n.as_str(),
                    "content-length"
                        | "age"
                        | "date"
                        | "transfer-encoding"
                        | "connection"
                        | "keep-alive"
                        | "via"
                )
            })
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        Some(Recorder {
            cache: self.clone(),
            key: key.hash,
            body: BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(self.max_entry)),
            entry: Some(Entry {
                url: (key.tenant.into(), key.host.into(), key.target.into()),
                status,
                headers,
                body: Bytes::new(),
                vary: keep.vary,
                stored_at: now,
                usable_until: keep.usable_until,
            }),
        })
    }

    /// The usable copy for a request, if any.
    pub fn lookup(&self, key: &Key<'_>, request: &HeaderMap, now: u64) -> Option<Arc<Entry>> {
        let e = match self.entries.get(&key.hash) {
            Some(e) => e,
            None => {
                // Only when the origin failed and memory has no copy: the disk tier.
                let e = Arc::new(self.disk.as_ref()?.get(key.hash)?);
                if !e.answers(key) {
                    return None;
                }
                self.entries.insert(key.hash, e.clone());
                e
            }
        };
        (e.answers(key) && now < e.usable_until && e.matches(request)).then_some(e)
    }

    /// Whether a copy for `key` was stored less than `REFRESH_EVERY` seconds ago.
    pub fn recent(&self, key: &Key<'_>, now: u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        // A torn read of the two words costs at most one extra or one skipped copy.
        let (hash, at) = self.slot(key.hash);
        hash.load(Relaxed) == key.hash && now < at.load(Relaxed) + REFRESH_EVERY
    }

    /// Forgets a copy (the origin answered with something not storable).
    ///
    /// Asked on the hot path for every answer that may not be kept, so only pages the
    /// recently-copied table knows are looked up; a copy whose slot was since taken by
    /// another page stays until its window ends (it was public when it was made).
    pub fn forget(&self, key: &Key<'_>) {
        let (hash, _) = self.slot(key.hash);
        if hash.load(std::sync::atomic::Ordering::Relaxed) != key.hash {
            return;
        }
        hash.store(0, std::sync::atomic::Ordering::Relaxed);
        if self.entries.contains_key(&key.hash) {
            self.entries.invalidate(&key.hash);
            if let Some(disk) = &self.disk {
                disk.remove(key.hash);
            }
        }
    }
}

/// Collects a response body as it streams downstream; stores it when complete.
#[derive(Debug)]
pub struct Recorder {
    cache: StaleCache,
    key: u64,
    body: BytesMut,
    entry: Option<Entry>,
}

impl Recorder {
    /// Adds a chunk; `false` when the body outgrew the per-copy bound (stop recording).
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if self.body.len() + chunk.len() > self.cache.max_entry {
            return false;
        }
        self.body.extend_from_slice(chunk);
        true
    }

    /// The body ended normally: keep the copy.
    pub fn finish(mut self) {
        if let Some(mut entry) = self.entry.take() {
            entry.body = std::mem::take(&mut self.body).freeze();
            let entry = Arc::new(entry);
            let (hash, at) = self.cache.slot(self.key);
            hash.store(self.key, std::sync::atomic::Ordering::Relaxed);
            at.store(entry.stored_at, std::sync::atomic::Ordering::Relaxed);
            if let Some(disk) = &self.cache.disk {
                disk.put(self.key, entry.clone());
            }
            self.cache.entries.insert(self.key, entry);
        }
    }

    /// The entry as it would be kept (tests).
    #[cfg(test)]
    pub(crate) fn into_entry(mut self) -> Option<Entry> {
        let mut entry = self.entry.take()?;
        entry.body = std::mem::take(&mut self.body).freeze();
        Some(entry)
    }
}

/// Inserts `notice` right after the opening `<body ...>` tag of an HTML page (at the start
/// when there is none).
pub fn with_notice(html: &[u8], notice: &str) -> Bytes {
    let lower: Vec<u8> = html
        .iter()
        .take(64 * 1024)
        .map(u8::to_ascii_lowercase)
        .collect();
    let at = lower
        .windows(5)
        .position(|w| w == b"<body")
        .and_then(|start| {
            lower[start..]
                .iter()
                .position(|&b| b == b'>')
                .map(|p| start + p + 1)
        })
        .unwrap_or(0);
    let mut out = BytesMut::with_capacity(html.len() + notice.len());
    out.extend_from_slice(&html[..at]);
    out.extend_from_slice(notice.as_bytes());
    out.extend_from_slice(&html[at..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn storability_follows_the_rules() {
        let get = http::Method::GET;
        let none = HeaderMap::new();
        let ok = |req: &HeaderMap, status, resp: &[(&str, &str)]| {
            keep(&get, req, status, &headers(resp), 1000, DAY).is_some()
        };
        assert!(ok(&none, 200, &[]));
        assert!(ok(&none, 404, &[("cache-control", "max-age=60")]));
        assert!(!ok(&none, 500, &[]));
        assert!(!ok(&none, 206, &[]));
        assert!(!ok(&none, 200, &[("cache-control", "no-store")]));
        assert!(!ok(&none, 200, &[("cache-control", "max-age=0, Private")]));
        assert!(!ok(&none, 200, &[("cache-control", "no-cache")]));
        assert!(!ok(&none, 200, &[("cache-control", "must-revalidate")]));
        assert!(!ok(&none, 200, &[("pragma", "no-cache")]));
        assert!(!ok(&none, 200, &[("set-cookie", "sid=1")]));
        assert!(!ok(&none, 200, &[("vary", "*")]));
        let cookie = headers(&[("cookie", "sid=1")]);
        assert!(!ok(&cookie, 200, &[]));
        assert!(ok(&cookie, 200, &[("cache-control", "public, max-age=60")]));
        let auth = headers(&[("authorization", "Bearer x")]);
        assert!(!ok(&auth, 200, &[]));
        assert!(keep(&http::Method::POST, &none, 200, &none, 0, DAY).is_none());
        assert!(keep(&get, &none, 200, &none, 0, Duration::ZERO).is_none());
        // The origin's own window wins; freshness adds to it.
        let k = keep(
            &get,
            &none,
            200,
            &headers(&[("cache-control", "max-age=60, stale-if-error=600")]),
            1000,
            DAY,
        )
        .unwrap();
        assert_eq!(k.usable_until, 1000 + 60 + 600);
        assert!(keep(
            &get,
            &none,
            200,
            &headers(&[("cache-control", "stale-if-error=0")]),
            0,
            DAY
        )
        .is_none());
    }

    #[test]
    fn vary_and_expiry_on_lookup() {
        let cache = StaleCache::new(1 << 20, 1024, None);
        let req = headers(&[("accept-language", "fr")]);
        let resp = headers(&[("vary", "Accept-Language"), ("content-type", "text/html")]);
        let k = keep(
            &http::Method::GET,
            &req,
            200,
            &resp,
            100,
            Duration::from_secs(50),
        )
        .unwrap();
        let mut r = cache
            .recorder(&key("t", "h", "/"), 200, &resp, k, 100)
            .unwrap();
        assert!(r.push(b"<html><body>page</body></html>"));
        r.finish();
        assert!(cache.lookup(&key("t", "h", "/"), &req, 120).is_some());
        assert!(cache
            .lookup(
                &key("t", "h", "/"),
                &headers(&[("accept-language", "en")]),
                120
            )
            .is_none());
        assert!(cache.lookup(&key("t", "h", "/"), &req, 150).is_none());
        assert!(cache.lookup(&key("t", "h", "/x"), &req, 120).is_none());
    }

    #[test]
    fn oversized_bodies_are_not_kept() {
        let cache = StaleCache::new(1 << 20, 8, None);
        let resp = headers(&[("content-length", "9")]);
        let k = keep(&http::Method::GET, &HeaderMap::new(), 200, &resp, 0, DAY).unwrap();
        assert!(cache
            .recorder(&key("t", "h", "/a"), 200, &resp, k.clone(), 0)
            .is_none());
        let mut r = cache
            .recorder(&key("t", "h", "/a"), 200, &HeaderMap::new(), k, 0)
            .unwrap();
        assert!(r.push(b"12345678"));
        assert!(!r.push(b"9"));
    }

    #[test]
    fn notice_goes_after_the_body_tag() {
        let out = with_notice(
            b"<html><BODY class=\"x\"><p>hi</p></body></html>",
            "<div>N</div>",
        );
        assert_eq!(
            &out[..],
            b"<html><BODY class=\"x\"><div>N</div><p>hi</p></body></html>"
        );
        assert_eq!(&with_notice(b"plain", "N")[..], b"Nplain");
    }
}
