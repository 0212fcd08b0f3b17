//! Signals: what the pipeline observes, per tenant, as plain counters that are bumped on the
//! request path (relaxed atomics, never a lock, never a wait) and read once a second by
//! consumers. The status pages' detector is the first consumer; alerting reads the same
//! report.
//!
//! Data flow: the pipeline bumps a tenant's `TenantSignals` where it decides (a request
//! logged, a local answer and its reason, an origin's answer and latency, a shed, a challenge
//! issued or passed) and the server bumps the gateway-wide one for connection-level trips.
//! Once a second `pipeline::sampler` takes `Totals` of every tenant, subtracts the previous
//! ones, adds per-pool figures, and hands the `Report` to every `Consumer`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::Runtime;

/// Why a request was answered by the gateway itself (the access log's `reason`, grouped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReason {
    /// A status-site page, feed, summary or subscription step.
    StatusSite,
    /// Rempart's own pages (`/.rempart/pow.js`, a pass granted).
    LocalPage,
    /// The proof-of-work challenge.
    Challenge,
    /// A stale copy of the page, the origin having failed.
    StaleCopy,
    /// Over a rate limit (address, prefix, pass, fingerprint, API key).
    RateLimited,
    /// Banned or on the deny list.
    Banned,
    /// Shed by the admission gate.
    Shed,
    /// Maintenance mode.
    Maintenance,
    /// A malformed, too large or too slow request, or one without a valid API key.
    BadRequest,
    /// No tenant or no route for the request.
    NotFound,
    /// The origin failed and no copy could stand in (502, 504).
    OriginFailed,
    /// Anything else (internal errors).
    Other,
    /// Refused by the data guard (an account over its budget, or suspended).
    Guarded,
}

impl LocalReason {
    /// Number of reasons.
    pub const COUNT: usize = 13;
    /// Every reason, in index order.
    pub const ALL: [LocalReason; Self::COUNT] = [
        Self::StatusSite,
        Self::LocalPage,
        Self::Challenge,
        Self::StaleCopy,
        Self::RateLimited,
        Self::Banned,
        Self::Shed,
        Self::Maintenance,
        Self::BadRequest,
        Self::NotFound,
        Self::OriginFailed,
        Self::Other,
        Self::Guarded,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::StatusSite => "status_site",
            Self::LocalPage => "local_page",
            Self::Challenge => "challenge",
            Self::StaleCopy => "stale_copy",
            Self::RateLimited => "rate_limited",
            Self::Banned => "banned",
            Self::Shed => "shed",
            Self::Maintenance => "maintenance",
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::OriginFailed => "origin_failed",
            Self::Other => "other",
            Self::Guarded => "guarded",
        }
    }
}

/// A connection closed by the gateway before or between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnTrip {
    /// Over the global or per-address connection cap.
    Rejected,
    /// A bad or missing PROXY protocol header.
    ProxyProtocol,
    /// A failed TLS handshake.
    Tls,
    /// A request head not complete in time (slowloris), or an idle connection timed out.
    HeaderTimeout,
}

impl ConnTrip {
    /// Number of kinds.
    pub const COUNT: usize = 4;
}

/// Counters of one tenant (or, for connection trips and unrouted requests, the gateway).
/// Cumulative since the process started; kept across reloads by tenant id.
#[derive(Debug)]
pub struct TenantSignals {
    requests: AtomicU64,
    local: [AtomicU64; LocalReason::COUNT],
    origin_answers: AtomicU64,
    origin_server_errors: AtomicU64,
    origin_failures: AtomicU64,
    origin_latency_us: AtomicU64,
    admission_overloads: AtomicU64,
    sheds: AtomicU64,
    challenges_issued: AtomicU64,
    challenges_passed: AtomicU64,
    challenges_refused: AtomicU64,
    conn_trips: [AtomicU64; ConnTrip::COUNT],
    login_failures: AtomicU64,
    guard_breaches: AtomicU64,
    paths: std::sync::Mutex<std::collections::HashMap<Box<str>, u32>>,
    sources: Sources,
    fingerprints: Box<[std::sync::atomic::AtomicU32]>,
}

impl Default for TenantSignals {
    fn default() -> Self {
        Self {
            requests: AtomicU64::default(),
            local: Default::default(),
            origin_answers: AtomicU64::default(),
            origin_server_errors: AtomicU64::default(),
            origin_failures: AtomicU64::default(),
            origin_latency_us: AtomicU64::default(),
            admission_overloads: AtomicU64::default(),
            sheds: AtomicU64::default(),
            challenges_issued: AtomicU64::default(),
            challenges_passed: AtomicU64::default(),
            challenges_refused: AtomicU64::default(),
            conn_trips: Default::default(),
            login_failures: AtomicU64::default(),
            guard_breaches: AtomicU64::default(),
            paths: std::sync::Mutex::default(),
            sources: Sources::default(),
            fingerprints: (0..FINGERPRINT_BUCKETS)
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
        }
    }
}

/// One request in this many has its path sampled.
pub const PATH_SAMPLE: u64 = 32;
/// Distinct sampled paths kept a second at most.
const PATH_KEYS: usize = 256;

/// A path as the watch shows it: segments that may name a person (four digits or more, or
/// an `@`) replaced by `*`, at most 80 characters.
pub fn shown_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len().min(80));
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let digits = segment.bytes().filter(u8::is_ascii_digit).count();
        if digits >= 4 || segment.contains('@') || segment.contains("%40") {
            out.push('*');
        } else {
            out.push_str(segment);
        }
        if out.len() >= 80 {
            let mut end = 80;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            break;
        }
    }
    out
}

/// Buckets of the fingerprint mix: requests counted by their connection's fingerprints
/// (JA4 and HTTP) hashed into this many buckets, read and cleared once a second.
pub const FINGERPRINT_BUCKETS: usize = 256;

/// The bucket of a connection's fingerprints.
pub fn fingerprint_bucket(tls: &str, http: &str) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tls.bytes().chain([b' ']).chain(http.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 32) ^ (h >> 16) ^ (h >> 8)) as u8
}

/// Bits of each set of client prefixes (2^18 bits: 32 KiB; a set stays useful up to about a
/// hundred thousand prefixes, then counts some new prefixes as seen).
const DAY_BITS: usize = 1 << 18;
/// Bits of the per-second set (linear counting of distinct prefixes, good to a few
/// thousand a second, saturating above).
const SECOND_BITS: usize = 1 << 14;

/// Which client prefixes a tenant saw, in fixed memory (four sets of `DAY_BITS`, one of
/// `SECOND_BITS`: 130 KiB), relaxed atomics, no lock. A request comes from a **new source**
/// when its prefix was not seen the day before nor earlier today than the last two windows
/// (10 minutes each): a botnet's prefixes stay new for 10 to 20 minutes, a resident who
/// came yesterday or this morning is known.
#[derive(Debug)]
struct Sources {
    /// Seen the previous local day.
    yesterday: Box<[AtomicU64]>,
    /// Seen today, in windows that have closed.
    earlier: Box<[AtomicU64]>,
    /// The current window and the previous one.
    windows: [Box<[AtomicU64]>; 2],
    /// Which of `windows` is current.
    current: std::sync::atomic::AtomicUsize,
    second: Box<[AtomicU64]>,
    new_requests: AtomicU64,
}

/// A client prefix (as the shield keys it) mixed into the key `TenantSignals::source`
/// takes (splitmix64's finaliser: cheap, and every bit depends on every input bit).
pub fn source_key(prefix: u128) -> u64 {
    let mut x = (prefix as u64) ^ ((prefix >> 64) as u64).rotate_left(29);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn bitset(bits: usize) -> Box<[AtomicU64]> {
    (0..bits / 64).map(|_| AtomicU64::new(0)).collect()
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            yesterday: bitset(DAY_BITS),
            earlier: bitset(DAY_BITS),
            windows: [bitset(DAY_BITS), bitset(DAY_BITS)],
            current: std::sync::atomic::AtomicUsize::new(0),
            second: bitset(SECOND_BITS),
            new_requests: AtomicU64::new(0),
        }
    }
}

fn test_and_set(set: &[AtomicU64], bit: usize) -> bool {
    let (word, mask) = (bit / 64 % set.len(), 1u64 << (bit % 64));
    if set[word].load(Ordering::Relaxed) & mask != 0 {
        return true;
    }
    set[word].fetch_or(mask, Ordering::Relaxed) & mask != 0
}

impl Sources {
    fn seen(&self, key: u64) {
        let bit = key as usize % DAY_BITS;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        let current = self.current.load(Ordering::Relaxed) & 1;
        test_and_set(&self.windows[current], bit);
        let known = (self.yesterday[word].load(Ordering::Relaxed)
            | self.earlier[word].load(Ordering::Relaxed))
            & mask
            != 0;
        if !known {
            bump(&self.new_requests);
        }
        test_and_set(&self.second, (key >> 32) as usize % SECOND_BITS);
    }

    /// Distinct prefixes since the last call (linear counting), and clears the second.
    fn take_second(&self) -> f64 {
        let mut set = 0u32;
        for w in self.second.iter() {
            set += w.swap(0, Ordering::Relaxed).count_ones();
        }
        let m = SECOND_BITS as f64;
        let zero = (m - f64::from(set)).max(1.0);
        m * (m / zero).ln()
    }

    /// A new window: the previous window's prefixes join `earlier`, and its set, cleared,
    /// becomes the current one.
    fn turn_window(&self) {
        let previous = (self.current.load(Ordering::Relaxed) + 1) & 1;
        for (e, w) in self.earlier.iter().zip(self.windows[previous].iter()) {
            let bits = w.swap(0, Ordering::Relaxed);
            if bits != 0 {
                e.fetch_or(bits, Ordering::Relaxed);
            }
        }
        self.current.store(previous, Ordering::Relaxed);
    }

    /// A new day: everything seen today, the open windows included, becomes yesterday's.
    fn turn_day(&self) {
        for i in 0..self.yesterday.len() {
            let today = self.earlier[i].swap(0, Ordering::Relaxed)
                | self.windows[0][i].swap(0, Ordering::Relaxed)
                | self.windows[1][i].swap(0, Ordering::Relaxed);
            self.yesterday[i].store(today, Ordering::Relaxed);
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl TenantSignals {
    /// A request ended (logged), answered locally for `local` when set.
    pub fn request(&self, local: Option<LocalReason>) {
        self.request_counted(local);
    }

    /// `request`, returning how many requests came before this one (for sampling).
    pub fn request_counted(&self, local: Option<LocalReason>) -> u64 {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = local {
            bump(&self.local[r as usize]);
        }
        n
    }

    /// A sampled request's path (one in `PATH_SAMPLE`), for the heaviest paths of the
    /// second. Segments that may name a person (four digits or more, an `@`) are replaced by
    /// `*`; at most `PATH_KEYS` distinct paths a second.
    pub fn sampled_path(&self, path: &str) {
        let shown = shown_path(path);
        let mut paths = self
            .paths
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let full = paths.len() >= PATH_KEYS;
        match paths.get_mut(shown.as_str()) {
            Some(n) => *n += 1,
            None if !full => {
                paths.insert(shown.into_boxed_str(), 1);
            }
            None => {}
        }
    }

    /// The heaviest paths since the last call (estimated requests per second), and clears.
    pub fn take_top_paths(&self, k: usize) -> Vec<(String, f64)> {
        let taken = std::mem::take(
            &mut *self
                .paths
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut top: Vec<(String, f64)> = taken
            .into_iter()
            .map(|(p, n)| (p.into_string(), f64::from(n) * PATH_SAMPLE as f64))
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(k);
        top
    }

    /// The origin answered a request's head after `latency_us`.
    pub fn origin_answer(&self, server_error: bool, latency_us: u64) {
        bump(&self.origin_answers);
        if server_error {
            bump(&self.origin_server_errors);
        }
        self.origin_latency_us
            .fetch_add(latency_us, Ordering::Relaxed);
    }

    /// An attempt at the origin failed (connect, reset, timeout).
    pub fn origin_failure(&self) {
        bump(&self.origin_failures);
    }

    /// A request queued past the pressure threshold at the admission gate.
    pub fn admission_overload(&self) {
        bump(&self.admission_overloads);
    }

    /// A request was shed by the admission gate.
    pub fn shed(&self) {
        bump(&self.sheds);
    }

    /// A challenge page was issued.
    pub fn challenge_issued(&self) {
        bump(&self.challenges_issued);
    }

    /// A challenge answer was accepted (a pass granted), or refused.
    pub fn challenge_answer(&self, passed: bool) {
        bump(if passed {
            &self.challenges_passed
        } else {
            &self.challenges_refused
        });
    }

    /// A request from the client prefix `key` (a well-mixed hash of it): counts it when its
    /// prefix is new (not seen yesterday nor before the last two windows today), and the
    /// distinct prefixes of the second.
    pub fn source(&self, key: u64) {
        self.sources.seen(key);
    }

    /// Distinct client prefixes since the last call (the sampler calls it once a second).
    pub fn take_distinct_sources(&self) -> f64 {
        self.sources.take_second()
    }

    /// A new day began (local midnight): what was seen today becomes yesterday's, what was
    /// seen before is forgotten.
    pub fn turn_day(&self) {
        self.sources.turn_day();
    }

    /// A new 10-minute window began: prefixes first seen before the previous window are no
    /// longer new.
    pub fn turn_window(&self) {
        self.sources.turn_window();
    }

    /// A request from a connection whose fingerprints fall in `bucket`.
    pub fn fingerprint(&self, bucket: u8) {
        if let Some(b) = self.fingerprints.get(usize::from(bucket)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests per fingerprint bucket since the last call (clears them).
    pub fn take_fingerprints(&self) -> Vec<u32> {
        self.fingerprints
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect()
    }

    /// The data guard saw an account cross a budget whose action is more than a log line,
    /// or cut an answer that showed personal data its route must never show.
    pub fn guard_breach(&self) {
        bump(&self.guard_breaches);
    }

    /// A failed login on a login route (the origin answered 401 or 403).
    pub fn login_failure(&self) {
        bump(&self.login_failures);
    }

    /// A connection was closed by the gateway.
    pub fn conn_trip(&self, trip: ConnTrip) {
        bump(&self.conn_trips[trip as usize]);
    }

    /// The counters now.
    pub fn totals(&self) -> Totals {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            requests: load(&self.requests),
            local: std::array::from_fn(|i| load(&self.local[i])),
            origin_answers: load(&self.origin_answers),
            origin_server_errors: load(&self.origin_server_errors),
            origin_failures: load(&self.origin_failures),
            origin_latency_us: load(&self.origin_latency_us),
            admission_overloads: load(&self.admission_overloads),
            sheds: load(&self.sheds),
            challenges_issued: load(&self.challenges_issued),
            challenges_passed: load(&self.challenges_passed),
            challenges_refused: load(&self.challenges_refused),
            conn_trips: std::array::from_fn(|i| load(&self.conn_trips[i])),
            login_failures: load(&self.login_failures),
            guard_breaches: load(&self.guard_breaches),
            new_source_requests: load(&self.sources.new_requests),
        }
    }
}

/// A reading of a tenant's counters (cumulative, or over an interval after `since`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests logged.
    pub requests: u64,
    /// Requests answered locally, per `LocalReason` index.
    pub local: [u64; LocalReason::COUNT],
    /// Answers from the origin (heads received).
    pub origin_answers: u64,
    /// Of which 5xx.
    pub origin_server_errors: u64,
    /// Attempts at the origin that failed (connect, reset, timeout).
    pub origin_failures: u64,
    /// Sum of the origin's head latencies, in microseconds.
    pub origin_latency_us: u64,
    /// Requests that queued past the pressure threshold.
    pub admission_overloads: u64,
    /// Requests shed.
    pub sheds: u64,
    /// Challenge pages issued.
    pub challenges_issued: u64,
    /// Challenge answers accepted.
    pub challenges_passed: u64,
    /// Challenge answers refused.
    pub challenges_refused: u64,
    /// Connections closed by the gateway, per `ConnTrip` index.
    pub conn_trips: [u64; ConnTrip::COUNT],
    /// Failed logins on login routes.
    pub login_failures: u64,
    /// Data-guard budgets crossed (alert and above) and answers cut.
    pub guard_breaches: u64,
    /// Requests from new client prefixes (not seen yesterday nor before the last 10 to 20
    /// minutes today).
    pub new_source_requests: u64,
}

impl Totals {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Totals) -> Totals {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Totals {
            requests: d(self.requests, earlier.requests),
            local: std::array::from_fn(|i| d(self.local[i], earlier.local[i])),
            origin_answers: d(self.origin_answers, earlier.origin_answers),
            origin_server_errors: d(self.origin_server_errors, earlier.origin_server_errors),
            origin_failures: d(self.origin_failures, earlier.origin_failures),
            origin_latency_us: d(self.origin_latency_us, earlier.origin_latency_us),
            admission_overloads: d(self.admission_overloads, earlier.admission_overloads),
            sheds: d(self.sheds, earlier.sheds),
            challenges_issued: d(self.challenges_issued, earlier.challenges_issued),
            challenges_passed: d(self.challenges_passed, earlier.challenges_passed),
            challenges_refused: d(self.challenges_refused, earlier.challenges_refused),
            conn_trips: std::array::from_fn(|i| d(self.conn_trips[i], earlier.conn_trips[i])),
            login_failures: d(self.login_failures, earlier.login_failures),
            guard_breaches: d(self.guard_breaches, earlier.guard_breaches),
            new_source_requests: d(self.new_source_requests, earlier.new_source_requests),
        }
    }

    /// Requests answered locally for `reason`.
    pub fn local(&self, reason: LocalReason) -> u64 {
        self.local[reason as usize]
    }

    /// Mean latency of the origin's answers, in microseconds (0 when none).
    pub fn mean_origin_latency_us(&self) -> u64 {
        self.origin_latency_us
            .checked_div(self.origin_answers)
            .unwrap_or(0)
    }
}

/// One pool over the last interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolReport {
    /// Answers and failures counted by the pool.
    pub requests: u64,
    /// Of which failures (5xx or no answer).
    pub failures: u64,
    /// Of which slower than the tenant's status threshold.
    pub slow: u64,
    /// Servers in the pool.
    pub servers: u32,
    /// Servers available now (healthy, not ejected).
    pub available: u32,
    /// Requests waiting at the pool's admission gate now.
    pub queued: usize,
}

/// One tenant over the last interval.
#[derive(Debug, Clone)]
pub struct TenantReport {
    /// Its counters over the interval.
    pub totals: Totals,
    /// Its pools, in `config.tenants[i].pools` order.
    pub pools: Vec<PoolReport>,
    /// Distinct client prefixes over the interval (estimated).
    pub distinct_sources: f64,
    /// Its heaviest client prefixes now (label, requests per second).
    pub top_sources: Vec<(String, f64)>,
    /// Its heaviest client fingerprints now.
    pub top_fingerprints: Vec<(String, f64)>,
    /// Requests per fingerprint bucket over the interval (`FINGERPRINT_BUCKETS` of them).
    pub fingerprints: Vec<u32>,
    /// Requests per route over the interval, in `config.tenants[i].routes` order.
    pub routes: Vec<u64>,
    /// The heaviest paths of the interval (sampled; estimated requests per second).
    pub top_paths: Vec<(String, f64)>,
}

/// What every consumer gets once a second.
#[derive(Debug, Clone)]
pub struct Report {
    /// Wall-clock time of the reading (unix ms).
    pub at_unix_ms: u64,
    /// The configuration the tenants are indexed by.
    pub config: Arc<Runtime>,
    /// Per tenant, in `config.tenants` order.
    pub tenants: Vec<TenantReport>,
    /// Gateway-wide counters (connection trips, requests with no tenant) over the interval.
    pub gateway: Totals,
}

/// Reads the report every second. Runs on the sampler's task: return quickly, never block
/// (hand slow work to a task of your own).
pub trait Consumer: Send + Sync {
    /// One second's report.
    fn on_report(&self, report: &Report);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_new_for_two_windows_then_known_and_yesterdays_are_known() {
        let s = TenantSignals::default();
        let bot = source_key(0xb07);
        let resident = source_key(0x7e5);
        let new = |s: &TenantSignals| s.totals().new_source_requests;
        s.source(resident);
        assert_eq!(new(&s), 1);
        s.turn_day();
        // A new day: the resident of yesterday is known; a bot never seen is new, request
        // after request, for two windows.
        s.source(resident);
        assert_eq!(new(&s), 1);
        for _ in 0..3 {
            s.source(bot);
        }
        assert_eq!(new(&s), 4);
        s.turn_window();
        s.source(bot);
        assert_eq!(new(&s), 5, "still new in the next window");
        s.turn_window();
        s.source(bot);
        assert_eq!(new(&s), 5, "first seen two windows ago: known now");
        // Two days later, both are forgotten.
        s.turn_day();
        s.turn_window();
        s.turn_window();
        s.turn_day();
        s.source(bot);
        assert_eq!(new(&s), 6);
        // Distinct prefixes of the second, estimated.
        s.take_distinct_sources();
        for p in 0..500u128 {
            s.source(source_key(p));
            s.source(source_key(p));
        }
        let d = s.take_distinct_sources();
        assert!((480.0..520.0).contains(&d), "{d}");
        assert_eq!(s.take_distinct_sources(), 0.0);
    }

    #[test]
    fn paths_are_sampled_without_what_may_name_a_person() {
        assert_eq!(shown_path("/etat-civil/actes"), "/etat-civil/actes");
        assert_eq!(
            shown_path("/dossier/180057512345678/pieces"),
            "/dossier/*/pieces"
        );
        assert_eq!(shown_path("/compte/marie%40exemple.fr"), "/compte/*");
        assert_eq!(shown_path("/2026/agenda"), "/*/agenda");
        assert!(shown_path(&"/a".repeat(100)).len() <= 80);
        let s = TenantSignals::default();
        for i in 0..5 {
            s.sampled_path(&format!("/dossier/{}", 1_000_000 + i));
        }
        s.sampled_path("/recherche");
        let top = s.take_top_paths(5);
        assert_eq!(top[0], ("/dossier/*".to_owned(), 5.0 * PATH_SAMPLE as f64));
        assert_eq!(top[1].0, "/recherche");
        assert!(s.take_top_paths(5).is_empty(), "cleared");
    }

    #[test]
    fn totals_over_an_interval() {
        let s = TenantSignals::default();
        s.request(None);
        let before = s.totals();
        s.request(Some(LocalReason::Challenge));
        s.request(Some(LocalReason::Challenge));
        s.origin_answer(true, 3_000);
        s.origin_answer(false, 1_000);
        s.challenge_issued();
        s.challenge_answer(true);
        s.conn_trip(ConnTrip::HeaderTimeout);
        let d = s.totals().since(&before);
        assert_eq!(d.requests, 2);
        assert_eq!(d.local(LocalReason::Challenge), 2);
        assert_eq!(d.local(LocalReason::Shed), 0);
        assert_eq!((d.origin_answers, d.origin_server_errors), (2, 1));
        assert_eq!(d.mean_origin_latency_us(), 2_000);
        assert_eq!((d.challenges_issued, d.challenges_passed), (1, 1));
        assert_eq!(d.conn_trips[ConnTrip::HeaderTimeout as usize], 1);
        assert_eq!(Totals::default().mean_origin_latency_us(), 0);
    }

    #[test]
    fn reason_indexes_match() {
        for (i, r) in LocalReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
    }
}
