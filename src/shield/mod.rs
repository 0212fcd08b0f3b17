//! Flood defence: per-address, per-prefix, per-pass, per-fingerprint and per-key request
//! rates counted in fixed memory (keyed by the tenant's stable key), default exemptions, a
//! log-only mode, bans, passes and challenges, and the admission gate that protects origins.
//! The decision code is pure (it takes `now_ms`); the pipeline's shield phase
//! (`pipeline::shield`) calls `Shield::check` after routing and acts on its `Decision`.

pub mod admission;
pub mod bans;
pub mod challenge;
pub mod cidr;
pub mod defence;
pub mod fingerprint;
pub mod gate;
pub mod nojs;
pub mod pass;
pub mod replay;
pub mod shared;
pub mod sketch;
pub mod top;

use crate::common::TenantKey;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sketch::{SketchKeys, WindowSketch};

/// Paths never limited nor challenged, whatever the policy: crawlers' and ACME's files and
/// the legal pages a French public site must keep reachable (legal notice, accessibility
/// statement, personal-data policy).
pub const DEFAULT_EXEMPT_PREFIXES: [&str; 6] = [
    "/robots.txt",
    "/.well-known/",
    "/mentions-legales",
    "/accessibilite",
    "/donnees-personnelles",
    "/politique-de-confidentialite",
];

/// What kind of client a `User-Agent` says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAgentClass {
    /// A mainstream browser (`Mozilla/5.0 ...` without a crawler marker).
    Browser,
    /// A declared crawler (search engines, monitoring): verified by address lists only.
    Crawler,
    /// An HTTP library or attack tool (curl, python-requests, Go, sqlmap...).
    Tool,
    /// No user agent, or an empty one.
    Missing,
}

/// Classifies a `User-Agent` value. On the hot path, so cheap and allocation-free: tools
/// announce themselves at the start (`curl/8.5`, `python-requests/2.31`, `Go-http-client`),
/// browsers start with `Mozilla/5.0`, crawlers say `bot`, `crawler` or `spider` in it.
pub fn user_agent_class(ua: Option<&[u8]>) -> UserAgentClass {
    const TOOL_PREFIXES: [&[u8]; 18] = [
        b"curl/",
        b"wget/",
        b"python-",
        b"python/",
        b"aiohttp",
        b"go-http-client",
        b"java/",
        b"okhttp",
        b"libwww-perl",
        b"apache-httpclient",
        b"axios/",
        b"node-fetch",
        b"node/",
        b"scrapy",
        b"sqlmap",
        b"nikto",
        b"masscan",
        b"zgrab",
    ];
    let ua = match ua {
        Some(u) => u.trim_ascii(),
        None => return UserAgentClass::Missing,
    };
    if ua.is_empty() {
        return UserAgentClass::Missing;
    }
    let starts = |p: &[u8]| ua.len() >= p.len() && ua[..p.len()].eq_ignore_ascii_case(p);
    if TOOL_PREFIXES.iter().any(|p| starts(p)) {
        return UserAgentClass::Tool;
    }
    if !ua.starts_with(b"Mozilla/5.0") {
        return UserAgentClass::Tool;
    }
    let body = &ua[..ua.len().min(256)];
    let crawler = body.iter().enumerate().any(|(i, c)| {
        let rest = &body[i..];
        match c.to_ascii_lowercase() {
            b'b' => rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"bot"),
            b'c' => rest.len() >= 7 && rest[..7].eq_ignore_ascii_case(b"crawler"),
            b's' => rest.len() >= 6 && rest[..6].eq_ignore_ascii_case(b"spider"),
            _ => false,
        }
    });
    if crawler {
        UserAgentClass::Crawler
    } else {
        UserAgentClass::Browser
    }
}

/// What the shield does with a request over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer 429.
    Enforce,
    /// Count and log, let it through (dry run).
    LogOnly,
}

/// A tenant's shield policy (validated configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Enforce or log only.
    pub mode: Mode,
    /// Requests per second allowed per client address (0 = no limit).
    pub address_rate: u32,
    /// Requests per second allowed per client prefix (0 = no limit).
    pub prefix_rate: u32,
    /// Path prefixes never limited, on top of `DEFAULT_EXEMPT_PREFIXES`.
    pub exempt_paths: Vec<String>,
    /// Requests per second from one address that earn an automatic ban (0 = never).
    pub ban_rate: u32,
    /// Length of an automatic ban, in milliseconds.
    pub ban_for_ms: u64,
    /// Clients never limited (good bots, partners), from `allow_file`.
    pub allow: std::sync::Arc<cidr::CidrSet>,
    /// Clients always refused, from `deny_file`.
    pub deny: std::sync::Arc<cidr::CidrSet>,
    /// Challenge clients without a pass while the tenant sheds load.
    pub auto_challenge: bool,
    /// Challenge every client without a pass (set in the config; the admin API can also
    /// switch it on for a while).
    pub under_attack: bool,
    /// Proof-of-work difficulty, leading zero bits.
    pub challenge_difficulty: u8,
    /// Seconds a browser without JavaScript waits for its pass.
    pub challenge_wait_s: u8,
    /// Lifetime of a pass, seconds.
    pub pass_ttl_s: u64,
    /// Requests per second allowed per pass (0 = no limit).
    pub pass_rate: u32,
    /// Requests per second allowed per client fingerprint (JA4 + HTTP fingerprint) from
    /// clients without a pass (0 = no limit).
    pub fingerprint_rate: u32,
    /// Hold over-limit requests this long before answering 429 (0 = answer at once).
    pub tarpit_ms: u64,
    /// Client-error answers (4xx from the origin) per second from one address above which
    /// its requests are treated as suspicious (scanners, credential stuffing); 0 = off.
    pub error_rate: u32,
    /// The town's own networks (town hall, schools, libraries): never challenged, given a
    /// pass without proof of work, limited per verified client like a shared address.
    pub trusted: std::sync::Arc<cidr::CidrSet>,
    /// Most verified clients an address or a prefix is credited with: its limits for
    /// verified traffic are the per-client limits times this many at most.
    pub shared_max: u32,
    /// Minutes an address must have been served normally before pressure began for its
    /// history to raise its priority at the admission gate.
    pub good_history_after_min: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            address_rate: 0,
            prefix_rate: 0,
            exempt_paths: Vec::new(),
            ban_rate: 0,
            ban_for_ms: 600_000,
            allow: std::sync::Arc::default(),
            deny: std::sync::Arc::default(),
            auto_challenge: true,
            under_attack: false,
            challenge_difficulty: 14,
            challenge_wait_s: 5,
            pass_ttl_s: 3600,
            pass_rate: 50,
            fingerprint_rate: 0,
            tarpit_ms: 0,
            error_rate: 10,
            trusted: std::sync::Arc::default(),
            shared_max: DEFAULT_SHARED_MAX,
            good_history_after_min: crate::shield::admission::GOOD_HISTORY_MIN_AGE_MIN,
        }
    }
}

impl Policy {
    /// Whether any limit or list is configured.
    pub fn is_active(&self) -> bool {
        self.address_rate > 0 || self.prefix_rate > 0 || !self.deny.is_empty()
    }

    /// Whether `path` is never limited nor challenged.
    pub fn exempt(&self, path: &str) -> bool {
        DEFAULT_EXEMPT_PREFIXES.iter().any(|p| path.starts_with(p))
            || self
                .exempt_paths
                .iter()
                .any(|p| path.starts_with(p.as_str()))
    }
}

/// Default `shared_max`: a mobile carrier's address can carry hundreds of subscribers.
pub const DEFAULT_SHARED_MAX: u32 = 1000;

/// Which rule a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Too many requests from one address.
    Address,
    /// Too many requests from one network prefix.
    Prefix,
}

impl Rule {
    /// Name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Address => "address_rate",
            Self::Prefix => "prefix_rate",
        }
    }
}

/// Who is asking, as far as the rate limits are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address.
    pub ip: IpAddr,
    /// The identifier of the valid pass the request carries (a verified client), if any.
    pub pass: Option<u64>,
}

impl Client {
    /// A client without a pass.
    pub fn unverified(ip: IpAddr) -> Self {
        Self { ip, pass: None }
    }
}

/// The shield's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Let it through.
    Allow,
    /// Let through above the single client's limit: the request carries a pass, and its
    /// address (or prefix) carries `clients` distinct verified clients (a shared address).
    Shared {
        /// The rule whose limit was scaled.
        rule: Rule,
        /// Verified clients credited to the address or prefix.
        clients: u32,
    },
    /// On the tenant's deny list: refuse, whatever the mode.
    Denied,
    /// Over a limit.
    Limited {
        /// The rule.
        rule: Rule,
        /// The estimated rate that broke it (requests over the last second).
        observed: f64,
        /// The configured limit.
        limit: u32,
        /// Whether to refuse (`Enforce`) or only log (`LogOnly`).
        enforce: bool,
        /// Whether the rate also crossed the policy's `ban_rate` (ban the address; never
        /// an address that carries several verified clients).
        ban: bool,
        /// Whether the request carried a pass (its verified budget is spent); `false`: its
        /// unverified budget is, and a browser can still earn a pass.
        verified: bool,
    },
}

/// Prefix lengths used to group addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixLengths {
    /// IPv4 prefix length (default 24).
    pub v4: u8,
    /// IPv6 prefix length (default 64).
    pub v6: u8,
}

impl Default for PrefixLengths {
    fn default() -> Self {
        Self { v4: 24, v6: 64 }
    }
}

/// The network prefix of `ip` (host bits cleared), tagged with its family.
pub fn prefix_of(ip: IpAddr, lengths: PrefixLengths) -> (u8, u128) {
    match ip {
        IpAddr::V4(v4) => {
            let len = u32::from(lengths.v4.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            (4, u128::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let len = u32::from(lengths.v6.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            (6, u128::from(v6) & mask)
        }
    }
}

/// The client's prefix for logs (`192.0.2.0/24`): never the full address.
pub fn display_prefix(ip: IpAddr, lengths: PrefixLengths) -> String {
    match (ip, prefix_of(ip, lengths)) {
        (IpAddr::V4(_), (_, bits)) => {
            let v4 = std::net::Ipv4Addr::from(u32::try_from(bits).unwrap_or(0));
            format!("{v4}/{}", lengths.v4)
        }
        (IpAddr::V6(_), (_, bits)) => format!("{}/{}", std::net::Ipv6Addr::from(bits), lengths.v6),
    }
}

/// A client's prefix as one number: IPv4 prefixes (< 2^32) get the top bit, which no
/// routable IPv6 prefix has (8000::/1 is unallocated), so the two families never collide.
pub fn prefix_key(ip: IpAddr, lengths: PrefixLengths) -> u128 {
    prefix_of(ip, lengths).1 | (u128::from(ip.is_ipv4()) << 127)
}

/// An address as a 64-bit key for the good-history table.
pub fn history_key(ip: IpAddr) -> u64 {
    let k = address_key(ip);
    // Fold and mix (splitmix64 finaliser) so neighbouring addresses spread over the table.
    let mut x = (k as u64) ^ ((k >> 64) as u64).rotate_left(29);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// An address as a sketch key (IPv4 mapped into IPv6 space, so families never collide).
fn address_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Counters shared by all tenants (keys include the tenant), kept across reloads.
#[derive(Debug)]
pub struct Shield {
    // Allocated on first use, so a gateway without limits does not carry 4 MiB of counters.
    by_address: std::sync::OnceLock<WindowSketch>,
    by_prefix: std::sync::OnceLock<WindowSketch>,
    by_pass: std::sync::OnceLock<WindowSketch>,
    by_fingerprint: std::sync::OnceLock<WindowSketch>,
    by_api_key: std::sync::OnceLock<WindowSketch>,
    by_errors: std::sync::OnceLock<WindowSketch>,
    by_local_address: std::sync::OnceLock<WindowSketch>,
    by_local_prefix: std::sync::OnceLock<WindowSketch>,
    // Requests carrying a pass, per address and per prefix: a budget of their own, scaled by
    // the verified clients seen behind the address or prefix.
    by_address_verified: std::sync::OnceLock<WindowSketch>,
    by_prefix_verified: std::sync::OnceLock<WindowSketch>,
    clients: std::sync::OnceLock<shared::SharedClients>,
    /// Highest current rates per client fingerprint (JA4 + HTTP), when fingerprints are
    /// limited.
    pub top_fingerprints: top::TopTable,
    /// Highest per-address and per-prefix rates right now.
    pub top_addresses: top::TopTable,
    /// Highest per-prefix rates right now.
    pub top_prefixes: top::TopTable,
    prefixes: PrefixLengths,
    keys: SketchKeys,
    /// Added to `now_ms` before the counters cut their windows (see `aligned`).
    phase_ms: u64,
}

/// The shield's counters, to carry into the process an upgrade starts: its hash keys, each
/// sketch in use by name, and the verified clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShieldState {
    /// The keys every counter hashes with.
    pub keys: SketchKeys,
    /// Sketches in use, by name.
    pub sketches: Vec<(String, sketch::SketchState)>,
    /// Verified clients per address and prefix, when any were seen.
    pub clients: Option<shared::ClientsState>,
}

/// Requests per second one address may make to Rempart's own pages (`/.rempart/`).
pub const LOCAL_ADDRESS_RATE: u32 = 20;
/// Requests per second one network prefix may make to Rempart's own pages.
pub const LOCAL_PREFIX_RATE: u32 = 200;

/// Sketch width (counters per row): 4 rows x 2 windows x 65,536 x 4 bytes = 2 MiB per sketch.
pub const SKETCH_WIDTH: usize = 65_536;

impl Shield {
    /// A shield with the given prefix lengths and random hash keys.
    pub fn new(prefixes: PrefixLengths) -> Self {
        Self::with_keys(prefixes, SketchKeys::random())
    }

    /// A shield whose counters hash with `keys` (the node's, kept by an upgrade).
    pub fn with_keys(prefixes: PrefixLengths, keys: SketchKeys) -> Self {
        Self {
            by_address: std::sync::OnceLock::new(),
            by_prefix: std::sync::OnceLock::new(),
            by_pass: std::sync::OnceLock::new(),
            by_fingerprint: std::sync::OnceLock::new(),
            by_api_key: std::sync::OnceLock::new(),
            by_errors: std::sync::OnceLock::new(),
            by_local_address: std::sync::OnceLock::new(),
            by_local_prefix: std::sync::OnceLock::new(),
            by_address_verified: std::sync::OnceLock::new(),
            by_prefix_verified: std::sync::OnceLock::new(),
            clients: std::sync::OnceLock::new(),
            top_fingerprints: top::TopTable::default(),
            top_addresses: top::TopTable::default(),
            top_prefixes: top::TopTable::default(),
            prefixes,
            keys,
            phase_ms: 0,
        }
    }

    /// The same shield with its counters' windows cut at `now_ms + phase_ms` multiples of a
    /// second: with the wall clock's offset, at the same instants on every node of a
    /// cluster, so that their counts add up window by window.
    pub fn aligned(mut self, phase_ms: u64) -> Self {
        self.phase_ms = phase_ms;
        self
    }

    fn new_sketch(&self) -> WindowSketch {
        WindowSketch::with_keys(SKETCH_WIDTH, 1000, self.keys).aligned(self.phase_ms)
    }

    fn sketches(&self) -> [(&'static str, &std::sync::OnceLock<WindowSketch>); 10] {
        [
            ("address", &self.by_address),
            ("prefix", &self.by_prefix),
            ("pass", &self.by_pass),
            ("fingerprint", &self.by_fingerprint),
            ("api_key", &self.by_api_key),
            ("errors", &self.by_errors),
            ("local_address", &self.by_local_address),
            ("local_prefix", &self.by_local_prefix),
            ("address_verified", &self.by_address_verified),
            ("prefix_verified", &self.by_prefix_verified),
        ]
    }

    /// Cluster mode: each sketch in use with its current window's counts (what this node
    /// tells the others).
    pub fn reports(&self, now_ms: u64) -> Vec<(&'static str, sketch::SketchReport)> {
        self.sketches()
            .into_iter()
            .filter_map(|(name, s)| Some((name, s.get()?.report(now_ms))))
            .collect()
    }

    /// Cluster mode: the other nodes' counts for sketch `name` in `window` (summed), added
    /// to this node's from now on. Needs the same hash keys on every node.
    pub fn set_remote_counts(&self, name: &str, window: u64, counts: &[(u32, u32)]) {
        if let Some((_, sketch)) = self.sketches().into_iter().find(|(n, _)| *n == name) {
            sketch
                .get_or_init(|| self.new_sketch())
                .set_remote(window, counts);
        }
    }

    /// The counters in use at `now_ms` (see `ShieldState`).
    pub fn export(&self, now_ms: u64) -> ShieldState {
        ShieldState {
            keys: self.keys,
            sketches: self
                .sketches()
                .into_iter()
                .filter_map(|(name, s)| Some((name.to_owned(), s.get()?.export(now_ms))))
                .collect(),
            clients: self.clients.get().map(|c| c.export(now_ms)),
        }
    }

    /// Takes `state`'s counters as of `now_ms`, before this shield has counted anything.
    /// Returns the sketches taken, or why none could be (other hash keys: the state of
    /// another node, whose counts would land on the wrong keys).
    pub fn import(&self, state: &ShieldState, now_ms: u64) -> Result<usize, &'static str> {
        if state.keys != self.keys {
            return Err("the counters were hashed with other keys");
        }
        let mut taken = 0;
        for (name, sketch) in self.sketches() {
            let Some((_, counts)) = state.sketches.iter().find(|(n, _)| n == name) else {
                continue;
            };
            if sketch
                .get_or_init(|| self.new_sketch())
                .import(counts, now_ms)
            {
                taken += 1;
            }
        }
        if let Some(clients) = &state.clients {
            self.clients
                .get_or_init(|| shared::SharedClients::with_keys(self.keys))
                .import(clients, now_ms);
        }
        Ok(taken)
    }

    /// Memory used by the counters (fixed).
    pub fn memory_bytes(&self) -> usize {
        self.by_address.get().map_or(0, WindowSketch::memory_bytes)
            + self.by_prefix.get().map_or(0, WindowSketch::memory_bytes)
            + self.by_pass.get().map_or(0, WindowSketch::memory_bytes)
            + self
                .by_fingerprint
                .get()
                .map_or(0, WindowSketch::memory_bytes)
            + self.by_api_key.get().map_or(0, WindowSketch::memory_bytes)
            + self.by_errors.get().map_or(0, WindowSketch::memory_bytes)
            + self
                .by_local_address
                .get()
                .map_or(0, WindowSketch::memory_bytes)
            + self
                .by_local_prefix
                .get()
                .map_or(0, WindowSketch::memory_bytes)
            + self
                .by_address_verified
                .get()
                .map_or(0, WindowSketch::memory_bytes)
            + self
                .by_prefix_verified
                .get()
                .map_or(0, WindowSketch::memory_bytes)
            + self
                .clients
                .get()
                .map_or(0, shared::SharedClients::memory_bytes)
    }

    /// Records that a request from `ip` carried the valid pass `pass` (a verified client):
    /// counted per address and per prefix of the tenant, and per address for the whole
    /// gateway (the per-address connection cap).
    pub fn observe_verified(&self, tenant: TenantKey, ip: IpAddr, pass: u64, now_ms: u64) {
        let clients = self
            .clients
            .get_or_init(|| shared::SharedClients::with_keys(self.keys));
        let address = address_key(ip);
        clients.observe(&(tenant, address), pass, now_ms);
        clients.observe(&(tenant, prefix_key(ip, self.prefixes)), pass, now_ms);
        clients.observe(&(GATEWAY_WIDE, address), pass, now_ms);
    }

    /// Distinct verified clients seen behind `ip` (`Rule::Address`) or its prefix
    /// (`Rule::Prefix`) on `tenant` over the last minute or so.
    pub fn verified_clients(&self, tenant: TenantKey, ip: IpAddr, rule: Rule, now_ms: u64) -> u32 {
        let Some(clients) = self.clients.get() else {
            return 0;
        };
        let key = match rule {
            Rule::Address => address_key(ip),
            Rule::Prefix => prefix_key(ip, self.prefixes),
        };
        clients.clients(&(tenant, key), now_ms)
    }

    /// Distinct verified clients seen behind `ip` on any tenant (the connection cap).
    pub fn verified_clients_anywhere(&self, ip: IpAddr, now_ms: u64) -> u32 {
        self.clients
            .get()
            .map_or(0, |c| c.clients(&(GATEWAY_WIDE, address_key(ip)), now_ms))
    }

    /// Counts a request for Rempart's own pages (`/.rempart/`: the challenge script, pass
    /// claims) from `ip` and returns the rule it is over, if any: these pages cost the
    /// gateway crypto, so they have their own per-address and per-prefix rates
    /// (`LOCAL_ADDRESS_RATE`, `LOCAL_PREFIX_RATE`), whatever the tenant's policy, checked
    /// before any of that work. An address or prefix that carries verified clients (a
    /// shared address, where newcomers earn their passes) gets that many times the rate, up
    /// to `shared_max` times.
    pub fn check_local(
        &self,
        tenant: TenantKey,
        ip: IpAddr,
        shared_max: u32,
        now_ms: u64,
    ) -> Option<Rule> {
        let over = |rule, observed: f64, rate: u32| {
            observed > f64::from(rate)
                && observed
                    > f64::from(rate)
                        * f64::from(
                            self.verified_clients(tenant, ip, rule, now_ms)
                                .clamp(1, shared_max.max(1)),
                        )
        };
        let by_address = self
            .by_local_address
            .get_or_init(|| self.new_sketch())
            .observe(&(tenant, address_key(ip)), 1, now_ms);
        if over(Rule::Address, by_address, LOCAL_ADDRESS_RATE) {
            return Some(Rule::Address);
        }
        let by_prefix = self
            .by_local_prefix
            .get_or_init(|| self.new_sketch())
            .observe(&(tenant, prefix_key(ip, self.prefixes)), 1, now_ms);
        over(Rule::Prefix, by_prefix, LOCAL_PREFIX_RATE).then_some(Rule::Prefix)
    }

    /// Counts a client-error answer (4xx from the origin) to `ip`.
    pub fn observe_error(&self, tenant: TenantKey, ip: IpAddr, now_ms: u64) {
        self.by_errors.get_or_init(|| self.new_sketch()).observe(
            &(tenant, address_key(ip)),
            1,
            now_ms,
        );
    }

    /// Client-error answers per second to `ip` right now.
    pub fn error_rate(&self, tenant: TenantKey, ip: IpAddr, now_ms: u64) -> f64 {
        self.by_errors
            .get()
            .map_or(0.0, |s| s.estimate(&(tenant, address_key(ip)), now_ms))
    }

    /// Counts a request made with an API key (identified by its digest's first bytes) and
    /// returns its rate.
    pub fn observe_api_key(&self, tenant: TenantKey, key: u64, now_ms: u64) -> f64 {
        self.by_api_key.get_or_init(|| self.new_sketch()).observe(
            &(tenant, u128::from(key)),
            1,
            now_ms,
        )
    }

    /// Counts a request from a client fingerprint and returns its rate (requests over the
    /// last second): one flood tool on many addresses shares one fingerprint.
    pub fn observe_fingerprint(&self, tenant: TenantKey, fingerprint: u64, now_ms: u64) -> f64 {
        self.by_fingerprint
            .get_or_init(|| self.new_sketch())
            .observe(&(tenant, u128::from(fingerprint)), 1, now_ms)
    }

    /// Counts a request carrying pass `pass_id` and returns its rate (requests over the last
    /// second): a pass is a privilege, and a stolen or shared one must not become a hose.
    pub fn observe_pass(&self, tenant: TenantKey, pass_id: u64, now_ms: u64) -> f64 {
        self.by_pass.get_or_init(|| self.new_sketch()).observe(
            &(tenant, u128::from(pass_id)),
            1,
            now_ms,
        )
    }

    /// Counts a request from `client` to `tenant` (weighing `cost` requests) and decides.
    pub fn check(
        &self,
        policy: &Policy,
        tenant: TenantKey,
        client: Client,
        path: &str,
        cost: u32,
        now_ms: u64,
    ) -> Decision {
        self.check_tightened(policy, tenant, client, path, cost, 1.0, now_ms)
    }

    /// `check` with the per-address and per-prefix limits of traffic without a pass
    /// multiplied by `factor` (at most 1: the playbook tightens them at a high vigilance
    /// level; a limit never falls below 1). Verified clients keep their budget: their pass
    /// cost a proof of work, and its own rate still applies.
    ///
    /// Requests without a pass are counted per address and per prefix against the limits
    /// as configured. Requests carrying a pass (`client.pass`) have a budget of their own:
    /// the same limit times the number of distinct verified clients seen behind the address
    /// (or prefix) lately, at most `policy.shared_max` times; so forty agents behind a town
    /// hall's address are served like forty residents with an address each, while the
    /// unverified traffic of that address (a bot among them) keeps the single client's limit.
    /// Unverified requests also stop once the address's verified budget is full. (Callers
    /// record each verified request with `observe_verified` first, whatever the policy.)
    #[allow(clippy::too_many_arguments)]
    pub fn check_tightened(
        &self,
        policy: &Policy,
        tenant: TenantKey,
        client: Client,
        path: &str,
        cost: u32,
        factor: f64,
        now_ms: u64,
    ) -> Decision {
        if !policy.is_active() || policy.exempt(path) {
            return Decision::Allow;
        }
        let ip = client.ip;
        if policy.deny.contains(ip) {
            return Decision::Denied;
        }
        if policy.allow.contains(ip) {
            return Decision::Allow;
        }
        let enforce = policy.mode == Mode::Enforce;
        let tighten = |limit: u32| {
            if factor < 1.0 && limit > 0 {
                ((f64::from(limit) * factor.max(0.0)) as u32).max(1)
            } else {
                limit
            }
        };
        let rules = [
            (
                Rule::Address,
                &self.by_address,
                &self.by_address_verified,
                policy.address_rate,
            ),
            (
                Rule::Prefix,
                &self.by_prefix,
                &self.by_prefix_verified,
                policy.prefix_rate,
            ),
        ];
        let mut decision = Decision::Allow;
        // A limit of 0 turns its rule off (and never allocates its sketches).
        for (rule, unverified, verified, limit) in rules.into_iter().filter(|r| r.3 > 0) {
            let key = (
                tenant,
                match rule {
                    Rule::Address => address_key(ip),
                    Rule::Prefix => prefix_key(ip, self.prefixes),
                },
            );
            let cost = cost.max(1);
            let single = f64::from(if client.pass.is_some() {
                limit
            } else {
                tighten(limit)
            });
            // This request's own budget, and the other class's current rate.
            let (observed, other) = match client.pass {
                Some(_) => (
                    verified
                        .get_or_init(|| self.new_sketch())
                        .observe(&key, cost, now_ms),
                    unverified.get().map_or(0.0, |s| s.estimate(&key, now_ms)),
                ),
                None => (
                    unverified
                        .get_or_init(|| self.new_sketch())
                        .observe(&key, cost, now_ms),
                    verified.get().map_or(0.0, |s| s.estimate(&key, now_ms)),
                ),
            };
            // Hot clients (at least half their limit) go to the heavy-hitter table; one update
            // in four keeps its lock out of the way under a flood.
            if observed >= single / 2.0 && (observed as u64) % 4 == 0 {
                match rule {
                    Rule::Address => self.top_addresses.record(
                        tenant,
                        key.1,
                        || ip.to_string(),
                        observed,
                        now_ms,
                    ),
                    Rule::Prefix => self.top_prefixes.record(
                        tenant,
                        key.1,
                        || display_prefix(ip, self.prefixes),
                        observed,
                        now_ms,
                    ),
                }
            }
            let verified_request = client.pass.is_some();
            let clients = || {
                self.verified_clients(tenant, ip, rule, now_ms)
                    .clamp(1, policy.shared_max.max(1))
            };
            let limited = |observed: f64, limit: f64, ban_possible: bool| {
                let ban = enforce
                    && ban_possible
                    && rule == Rule::Address
                    && policy.ban_rate > 0
                    && observed > f64::from(policy.ban_rate)
                    // Banning a shared address would lock out every resident behind it.
                    && self.verified_clients(tenant, ip, rule, now_ms) <= 1;
                Decision::Limited {
                    rule,
                    observed,
                    limit: limit as u32,
                    enforce,
                    ban,
                    verified: verified_request,
                }
            };
            if !verified_request && observed > single {
                return limited(observed, single, true);
            }
            // Past the single client's limit, the verified clients behind the key decide (an
            // unverified request also counts the verified traffic, so it cannot push a full
            // shared address over its budget).
            let total = if verified_request {
                observed
            } else {
                observed + other
            };
            if total > single {
                let n = clients();
                let scaled = single * f64::from(n);
                if total > scaled {
                    return limited(total, scaled, verified_request);
                }
                if verified_request {
                    decision = Decision::Shared { rule, clients: n };
                }
            }
        }
        decision
    }
}

/// The key under which verified clients are counted for the whole gateway.
const GATEWAY_WIDE: TenantKey = TenantKey(u64::MAX);

#[cfg(test)]
mod tests {
    use super::*;

    /// `check` as the pipeline calls it: a verified client is recorded first.
    fn check(shield: &Shield, p: &Policy, t: TenantKey, client: Client, now: u64) -> Decision {
        if let Some(pass) = client.pass {
            shield.observe_verified(t, client.ip, pass, now);
        }
        shield.check(p, t, client, "/", 1, now)
    }

    fn policy(address_rate: u32, prefix_rate: u32) -> Policy {
        Policy {
            address_rate,
            prefix_rate,
            exempt_paths: vec!["/statut".into()],
            ..Policy::default()
        }
    }

    #[test]
    fn user_agents_are_classified() {
        let c = |s: &str| user_agent_class(Some(s.as_bytes()));
        assert_eq!(
            c("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"),
            UserAgentClass::Browser
        );
        assert_eq!(
            c("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            UserAgentClass::Crawler
        );
        assert_eq!(c("curl/8.5.0"), UserAgentClass::Tool);
        assert_eq!(c("python-requests/2.31"), UserAgentClass::Tool);
        assert_eq!(c("Go-http-client/1.1"), UserAgentClass::Tool);
        assert_eq!(
            c("Mozilla/5.0 (compatible; bingbot/2.0)"),
            UserAgentClass::Crawler
        );
        assert_eq!(c("SomethingElse/1.0"), UserAgentClass::Tool);
        assert_eq!(c("  "), UserAgentClass::Missing);
        assert_eq!(user_agent_class(None), UserAgentClass::Missing);
    }

    #[test]
    fn prefixes_group_neighbours() {
        let l = PrefixLengths::default();
        let a = |s: &str| prefix_of(s.parse().unwrap(), l);
        assert_eq!(a("192.0.2.1"), a("192.0.2.254"));
        assert_ne!(a("192.0.2.1"), a("192.0.3.1"));
        assert_eq!(a("2001:db8:1:2::1"), a("2001:db8:1:2:ffff::9"));
        assert_ne!(a("2001:db8:1:2::1"), a("2001:db8:1:3::1"));
        assert_ne!(a("0.0.0.0"), a("::"));
    }

    #[test]
    fn address_limit_then_recovery() {
        let shield = Shield::new(PrefixLengths::default());
        let p = policy(10, 0);
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let other: IpAddr = "198.51.100.8".parse().unwrap();
        let mut limited = 0;
        for i in 0..30 {
            if shield.check(&p, TenantKey(0), Client::unverified(ip), "/", 1, 10_000 + i)
                != Decision::Allow
            {
                limited += 1;
            }
        }
        assert_eq!(limited, 20);
        // Another address and another tenant are unaffected.
        assert_eq!(
            shield.check(&p, TenantKey(0), Client::unverified(other), "/", 1, 10_100),
            Decision::Allow
        );
        assert_eq!(
            shield.check(&p, TenantKey(1), Client::unverified(ip), "/", 1, 10_100),
            Decision::Allow
        );
        // Exempt paths are never limited.
        assert_eq!(
            shield.check(
                &p,
                TenantKey(0),
                Client::unverified(ip),
                "/robots.txt",
                1,
                10_100
            ),
            Decision::Allow
        );
        assert_eq!(
            shield.check(
                &p,
                TenantKey(0),
                Client::unverified(ip),
                "/statut/feed.atom",
                1,
                10_100
            ),
            Decision::Allow
        );
        // Two seconds later the window has passed.
        assert_eq!(
            shield.check(&p, TenantKey(0), Client::unverified(ip), "/", 1, 12_100),
            Decision::Allow
        );
    }

    #[test]
    fn prefix_limit_catches_many_addresses_under_the_address_limit() {
        let shield = Shield::new(PrefixLengths::default());
        let p = policy(5, 50);
        let mut limited = None;
        for i in 0..200u32 {
            let ip: IpAddr = format!("203.0.113.{}", i % 200).parse().unwrap();
            if let Decision::Limited { rule, .. } = shield.check(
                &p,
                TenantKey(0),
                Client::unverified(ip),
                "/",
                1,
                50_000 + u64::from(i),
            ) {
                limited.get_or_insert(rule);
            }
        }
        assert_eq!(limited, Some(Rule::Prefix));
    }

    #[test]
    fn log_only_reports_without_enforcing() {
        let shield = Shield::new(PrefixLengths::default());
        let p = Policy {
            mode: Mode::LogOnly,
            ..policy(1, 0)
        };
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        shield.check(&p, TenantKey(0), Client::unverified(ip), "/", 1, 1_000);
        assert!(matches!(
            shield.check(&p, TenantKey(0), Client::unverified(ip), "/", 1, 1_001),
            Decision::Limited { enforce: false, .. }
        ));
    }

    #[test]
    fn lists_override_limits() {
        let shield = Shield::new(PrefixLengths::default());
        let p = Policy {
            allow: std::sync::Arc::new(cidr::CidrSet::parse("192.0.2.0/24").unwrap()),
            deny: std::sync::Arc::new(cidr::CidrSet::parse("198.51.100.66").unwrap()),
            ..policy(1, 0)
        };
        let good: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..10 {
            assert_eq!(
                shield.check(
                    &p,
                    TenantKey(0),
                    Client::unverified(good),
                    "/",
                    1,
                    1_000 + i
                ),
                Decision::Allow
            );
        }
        assert_eq!(
            shield.check(
                &p,
                TenantKey(0),
                Client::unverified("198.51.100.66".parse().unwrap()),
                "/",
                1,
                1_000
            ),
            Decision::Denied
        );
        // Exempt paths stay reachable even from a denied address (robots, ACME).
        assert_eq!(
            shield.check(
                &p,
                TenantKey(0),
                Client::unverified("198.51.100.66".parse().unwrap()),
                "/robots.txt",
                1,
                1_000
            ),
            Decision::Allow
        );
    }

    #[test]
    fn a_much_higher_rate_earns_a_ban() {
        let shield = Shield::new(PrefixLengths::default());
        let p = Policy {
            ban_rate: 20,
            ..policy(5, 0)
        };
        let ip: IpAddr = "192.0.2.50".parse().unwrap();
        let bans: Vec<bool> = (0..25)
            .map(|i| {
                matches!(
                    shield.check(&p, TenantKey(0), Client::unverified(ip), "/", 1, 1_000 + i),
                    Decision::Limited { ban: true, .. }
                )
            })
            .collect();
        assert!(!bans[..20].iter().any(|b| *b));
        assert!(bans[20..].iter().all(|b| *b));
    }

    #[test]
    fn error_rates_are_counted_per_address_and_fade() {
        let shield = Shield::new(PrefixLengths::default());
        let scanner: IpAddr = "203.0.113.9".parse().unwrap();
        let resident: IpAddr = "203.0.113.10".parse().unwrap();
        assert_eq!(shield.error_rate(TenantKey(0), scanner, 1_000), 0.0);
        for i in 0..30 {
            shield.observe_error(TenantKey(0), scanner, 1_000 + i * 10);
        }
        let rate = shield.error_rate(TenantKey(0), scanner, 1_300);
        assert!((29.0..=31.0).contains(&rate), "{rate}");
        assert_eq!(shield.error_rate(TenantKey(0), resident, 1_300), 0.0);
        assert_eq!(shield.error_rate(TenantKey(1), scanner, 1_300), 0.0);
        assert_eq!(shield.error_rate(TenantKey(0), scanner, 3_500), 0.0);
    }

    #[test]
    fn a_shared_address_serves_each_verified_client_while_its_unverified_traffic_keeps_the_limit() {
        let shield = Shield::new(PrefixLengths::default());
        let p = Policy {
            ban_rate: 40,
            ..policy(10, 0)
        };
        let office: IpAddr = "198.51.100.20".parse().unwrap();
        let t = TenantKey(0);
        // Within one second, 50 browsers with a pass each make 5 requests (250 in all, 25
        // times the single client's limit): all served.
        let mut shared = 0;
        for round in 0..5u64 {
            for pass in 0..50u64 {
                let now = 10_000 + round * 100 + pass;
                let client = Client {
                    ip: office,
                    pass: Some(1_000 + pass),
                };
                match check(&shield, &p, t, client, now) {
                    Decision::Allow => {}
                    Decision::Shared { rule, clients } => {
                        assert_eq!(rule, Rule::Address);
                        assert!(clients >= 2);
                        shared += 1;
                    }
                    other => panic!("pass {pass} round {round}: {other:?}"),
                }
            }
        }
        assert!(shared > 200, "{shared}");
        // A bot behind the same address without a pass: the single client's limit, and no
        // ban, however fast (it would lock out everyone behind the address).
        let mut limited = 0;
        for i in 0..100 {
            match shield.check(&p, t, Client::unverified(office), "/", 1, 10_600 + i) {
                Decision::Limited {
                    verified,
                    ban,
                    rule,
                    ..
                } => {
                    assert!(!verified && !ban);
                    assert_eq!(rule, Rule::Address);
                    limited += 1;
                }
                Decision::Allow => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(limited >= 90, "{limited}");
        // A single verified client elsewhere keeps the single client's limit.
        let home: IpAddr = "203.0.113.5".parse().unwrap();
        let client = Client {
            ip: home,
            pass: Some(7),
        };
        let served = (0..30)
            .filter(|i| check(&shield, &p, t, client, 20_000 + i) == Decision::Allow)
            .count();
        assert_eq!(served, 10);
        // And a lone bot far over the limit is still banned.
        let bot: IpAddr = "203.0.113.66".parse().unwrap();
        let banned = (0..60).any(|i| {
            matches!(
                shield.check(&p, t, Client::unverified(bot), "/", 1, 30_000 + i),
                Decision::Limited { ban: true, .. }
            )
        });
        assert!(banned);
    }

    #[test]
    fn the_playbook_tightens_the_limits_of_traffic_without_a_pass_only() {
        let shield = Shield::new(PrefixLengths::default());
        let p = policy(20, 0);
        let t = TenantKey(0);
        let served = |ip: &str, pass: Option<u64>| {
            let client = Client {
                ip: ip.parse().unwrap(),
                pass,
            };
            (0..40u64)
                .filter(|i| {
                    if let Some(pass) = pass {
                        shield.observe_verified(t, client.ip, pass, 9_000 + i);
                    }
                    !matches!(
                        shield.check_tightened(&p, t, client, "/", 1, 0.25, 9_000 + i),
                        Decision::Limited { .. }
                    )
                })
                .count()
        };
        assert_eq!(served("192.0.2.1", None), 5);
        assert_eq!(served("192.0.2.2", Some(9)), 20);
    }

    #[test]
    fn passes_farmed_on_one_address_are_credited_up_to_shared_max() {
        let shield = Shield::new(PrefixLengths::default());
        let p = Policy {
            shared_max: 4,
            ..policy(10, 0)
        };
        let ip: IpAddr = "192.0.2.77".parse().unwrap();
        // 100 passes, each used once: only 4 clients' worth (40/s) is served.
        let served = (0..100u64)
            .filter(|pass| {
                !matches!(
                    check(
                        &shield,
                        &p,
                        TenantKey(0),
                        Client {
                            ip,
                            pass: Some(*pass)
                        },
                        5_000 + pass
                    ),
                    Decision::Limited { .. }
                )
            })
            .count();
        assert_eq!(served, 40);
        assert_eq!(
            shield.verified_clients(TenantKey(0), ip, Rule::Address, 5_200),
            100
        );
    }

    #[test]
    fn a_prefix_with_many_verified_clients_scales_too() {
        let shield = Shield::new(PrefixLengths::default());
        let p = policy(0, 20);
        // A carrier: 200 subscribers over 4 addresses of one /24, 2 requests each.
        let mut refused = 0;
        for round in 0..2u64 {
            for sub in 0..200u64 {
                let ip: IpAddr = format!("198.51.100.{}", 10 + sub % 4).parse().unwrap();
                let d = check(
                    &shield,
                    &p,
                    TenantKey(0),
                    Client {
                        ip,
                        pass: Some(sub),
                    },
                    40_000 + round * 400 + sub,
                );
                refused += usize::from(matches!(d, Decision::Limited { .. }));
            }
        }
        assert_eq!(refused, 0);
        // Unverified requests from that prefix: 20 per second.
        let ip: IpAddr = "198.51.100.99".parse().unwrap();
        let served = (0..50)
            .filter(|i| {
                shield.check(&p, TenantKey(0), Client::unverified(ip), "/", 1, 40_900 + i)
                    == Decision::Allow
            })
            .count();
        assert_eq!(served, 20);
    }

    #[test]
    fn local_pages_scale_with_the_verified_clients_behind_an_address() {
        let shield = Shield::new(PrefixLengths::default());
        let t = TenantKey(0);
        let office: IpAddr = "198.51.100.30".parse().unwrap();
        for pass in 0..10u64 {
            shield.observe_verified(t, office, pass, 1_000);
        }
        let refused = (0..150)
            .filter(|i| shield.check_local(t, office, 1000, 1_000 + i).is_some())
            .count();
        assert_eq!(refused, 0, "10 clients: 200 a second");
        let alone: IpAddr = "203.0.113.30".parse().unwrap();
        let refused = (0..30)
            .filter(|i| shield.check_local(t, alone, 1000, 1_000 + i).is_some())
            .count();
        assert_eq!(refused, 10);
        assert_eq!(shield.verified_clients_anywhere(office, 1_500), 10);
    }

    #[test]
    fn inactive_policy_counts_nothing() {
        let shield = Shield::new(PrefixLengths::default());
        assert_eq!(
            shield.check(
                &Policy::default(),
                TenantKey(0),
                Client::unverified("192.0.2.1".parse().unwrap()),
                "/",
                1,
                0
            ),
            Decision::Allow
        );
    }
}
