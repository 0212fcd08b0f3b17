//! The validated configuration model the gateway runs on. Built only by `validate`, never
//! deserialised directly, so every value here has been checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use crate::common::Language;
use rustls::sign::CertifiedKey;

/// Downstream protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// Plain TCP: HTTP/1.1 and h2c prior knowledge.
    Http,
    /// TLS with ALPN h2 and http/1.1.
    Https,
}

/// A downstream listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Name for logs and metrics.
    pub name: String,
    /// Bound address.
    pub address: SocketAddr,
    /// Protocol.
    pub protocol: ListenerProtocol,
    /// Whether a PROXY protocol header is required first.
    pub proxy_protocol: bool,
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Bound address.
    pub address: SocketAddr,
    /// Bearer token (never logged); `None` means every admin call is refused.
    pub token: Option<String>,
}

/// Timeouts that apply per request (global or per route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimeouts {
    /// Wait for the upstream response head.
    pub upstream_response_head: Duration,
    /// Whole request.
    pub request: Duration,
}

/// Global timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Receiving a request head.
    pub downstream_header_read: Duration,
    /// Downstream idle.
    pub downstream_idle: Duration,
    /// Upstream TCP connect.
    pub upstream_connect: Duration,
    /// Per-request defaults.
    pub per_request: RequestTimeouts,
    /// Drain deadline on shutdown.
    pub shutdown_drain: Duration,
    /// Time a request body may take before the minimum data rate applies.
    pub downstream_body_grace: Duration,
}

/// Global limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum request-head bytes.
    pub max_header_bytes: usize,
    /// Maximum request-target bytes (path and query): longer gets 414.
    pub max_target_bytes: usize,
    /// Default maximum body bytes.
    pub max_body_bytes: u64,
    /// Maximum concurrent downstream connections.
    pub max_connections: usize,
    /// Minimum request-body rate in bytes/s after `Timeouts::downstream_body_grace` (0 = off).
    pub min_body_rate: u64,
    /// Requests served on one connection before a graceful close (0 = no limit).
    pub max_requests_per_connection: u64,
    /// Maximum concurrent connections per client address (0 = no cap; trusted proxies exempt).
    pub max_connections_per_address: usize,
    /// Maximum concurrent h2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Idle upstream connections kept per server.
    pub upstream_idle_per_server: usize,
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Fewest requests in flight (weighted).
    LeastOutstanding,
}

/// Health-check settings of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    /// Probe path; no active probing when `None`.
    pub path: Option<String>,
    /// Probe interval.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Successes to come back.
    pub healthy_threshold: u32,
    /// Failures to go out.
    pub unhealthy_threshold: u32,
    /// Consecutive request failures that eject (0 = never).
    pub passive_failures: u32,
    /// Passive ejection duration.
    pub passive_eject: Duration,
}

/// An upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// `host:port` as written.
    pub address: String,
    /// Weight (>= 1).
    pub weight: u32,
}

/// An upstream pool's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Name, unique within the tenant.
    pub name: String,
    /// Algorithm.
    pub balance: Balance,
    /// Servers.
    pub servers: Vec<ServerSpec>,
    /// Health checking.
    pub health: HealthSpec,
    /// Admission control (adaptive concurrency limit and priority queue).
    pub admission: crate::shield::admission::AdmissionSettings,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Name for logs and metrics.
    pub name: String,
    /// Host restriction (lower case).
    pub host: Option<String>,
    /// Path prefix.
    pub path_prefix: String,
    /// Index of the pool in the tenant's `pools`.
    pub pool: usize,
    /// Body limit.
    pub max_body_bytes: u64,
    /// Weight of one request in rate limits.
    pub cost: u32,
    /// Timeouts.
    pub timeouts: RequestTimeouts,
    /// Key authentication of an API route.
    pub api: Option<ApiKeys>,
    /// Maintenance page instead of forwarding.
    pub maintenance: bool,
    /// Paths with an encoded `/` or `\` are forwarded (refused otherwise).
    pub allow_encoded_slash: bool,
    /// Request bodies stream to the origin as they arrive, at most this many at once;
    /// `None`: bodies are read whole first (the default).
    pub streaming_uploads: Option<u32>,
    /// How long a copy of a page may be served when the origin fails (zero = never).
    pub stale_if_error: Duration,
    /// Data guard of the route: records per account, budgets, personal data.
    pub guard: Option<Arc<crate::guard::policy::RouteGuard>>,
    /// A login route: the origin's 401 and 403 answers are failed logins.
    pub login: bool,
    /// `false`: the playbook may put the route in maintenance.
    pub essential: bool,
}

/// An API route's keys: requests must carry a valid key; they are rate-limited per key and
/// never challenged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeys {
    /// Header carrying the key.
    pub header: http::HeaderName,
    /// SHA-256 digests of the valid keys.
    pub digests: Arc<std::collections::HashSet<[u8; 32]>>,
    /// Requests per second per key (0 = no limit).
    pub rate: u32,
}

/// A tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Identifier.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Host names as configured (lower case).
    pub hosts: Vec<String>,
    /// Default page language.
    pub language: Language,
    /// Contact line on error pages.
    pub contact: Option<String>,
    /// Pools.
    pub pools: Vec<PoolSpec>,
    /// Routes, most specific first.
    pub routes: Vec<Route>,
    /// Certificate for the tenant's hosts.
    pub certificate: Option<Arc<CertifiedKey>>,
    /// Its validity and names (expiry metric, `rempart check`'s warnings).
    pub certificate_facts: Option<crate::config::certificate::CertificateFacts>,
    /// Its certificates come from the ACME authority of `Runtime::acme`.
    pub acme: bool,
    /// Plain HTTP redirected to HTTPS on this port (308), when on.
    pub https_redirect: Option<u16>,
    /// The `Strict-Transport-Security` value of HTTPS answers, when on.
    pub hsts: Option<http::HeaderValue>,
    /// Flood-defence policy.
    pub shield: crate::shield::Policy,
    /// Public status page, when configured.
    pub status: Option<StatusSpec>,
    /// Maintenance page for the whole tenant.
    pub maintenance: bool,
    /// Request fields dropped from untrusted clients besides the built-in list.
    pub strip_headers: Vec<http::HeaderName>,
    /// Data guard: where the account of a request is read.
    pub guard: Arc<crate::guard::policy::TenantGuard>,
    /// What each vigilance level switches on for this tenant.
    pub playbook: Arc<Playbook>,
}

/// Clients without a pass challenged by the playbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChallengeScope {
    /// Nobody more than the shield's own rules.
    #[default]
    Off,
    /// On routes whose cost is above 1 (search, forms, logins).
    Heavy,
    /// On every route the shield does not exempt.
    All,
}

/// What the playbook does with the tenant's status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoticeMode {
    /// Nothing.
    #[default]
    Off,
    /// A draft notice an operator publishes with one command.
    Draft,
    /// A published notice.
    Publish,
}

/// What one vigilance level switches on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelActions {
    /// Clients without a pass challenged.
    pub challenge: ChallengeScope,
    /// Per-address and per-prefix limits multiplied by this.
    pub limit_factor: f64,
    /// Extra proof-of-work difficulty, bits.
    pub difficulty_bonus: u8,
    /// Under-attack mode.
    pub under_attack: bool,
    /// Routes marked not essential are in maintenance.
    pub maintenance_nonessential: bool,
    /// A notice on the status page.
    pub status_notice: NoticeMode,
}

impl Default for LevelActions {
    fn default() -> Self {
        Self {
            challenge: ChallengeScope::Off,
            limit_factor: 1.0,
            difficulty_bonus: 0,
            under_attack: false,
            maintenance_nonessential: false,
            status_notice: NoticeMode::Off,
        }
    }
}

impl LevelActions {
    /// Each action this level takes, as operators read it (empty at rest).
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.challenge {
            ChallengeScope::Off => {}
            ChallengeScope::Heavy => {
                out.push("challenge clients without a pass on heavy routes".to_owned())
            }
            ChallengeScope::All => {
                out.push("challenge clients without a pass on every route".to_owned())
            }
        }
        if self.limit_factor < 1.0 {
            out.push(format!(
                "per-address and per-prefix limits x{}",
                self.limit_factor
            ));
        }
        if self.difficulty_bonus > 0 {
            out.push(format!("proof of work +{} bits", self.difficulty_bonus));
        }
        if self.under_attack {
            out.push("under-attack mode".to_owned());
        }
        if self.maintenance_nonessential {
            out.push("non-essential routes in maintenance".to_owned());
        }
        match self.status_notice {
            NoticeMode::Off => {}
            NoticeMode::Draft => out.push("status page notice (draft)".to_owned()),
            NoticeMode::Publish => out.push("status page notice (published)".to_owned()),
        }
        out
    }
}

/// The playbook: the actions of each level, by `Level as usize`.
#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    /// Actions at vert, jaune, orange, rouge.
    pub levels: [LevelActions; 4],
}

impl Playbook {
    /// The actions at `level`.
    pub fn at(&self, level: crate::common::Level) -> &LevelActions {
        &self.levels[level as usize]
    }
}

/// Detector thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchThresholds {
    /// Request rate over the usual one for jaune, orange, rouge.
    pub rate_ratios: [f64; 3],
    /// Requests per second never unusual.
    pub min_rate: f64,
    /// Failed logins per second for orange.
    pub login_failures: f64,
    /// Connection trips per second for orange.
    pub connection_trips: f64,
}

/// Where an alert goes.
#[derive(Clone, PartialEq, Eq)]
pub enum AlertTarget {
    /// E-mail through `[status.smtp]`.
    Email {
        /// Recipients.
        to: Vec<String>,
    },
    /// A signed JSON document.
    Webhook {
        /// Address.
        url: http::Uri,
        /// HMAC-SHA256 key (never logged).
        secret: Option<String>,
    },
    /// A Matrix room (client-server API).
    Matrix {
        /// The homeserver's base address.
        homeserver: http::Uri,
        /// Room id.
        room: String,
        /// Access token (never logged).
        token: String,
    },
    /// RFC 5424 syslog.
    Syslog {
        /// The collector.
        address: SocketAddr,
        /// TCP (octet counting) rather than UDP.
        tcp: bool,
    },
}

impl std::fmt::Debug for AlertTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Email { to } => write!(f, "Email({} recipients)", to.len()),
            Self::Webhook { url, .. } => write!(f, "Webhook({url})"),
            Self::Matrix {
                homeserver, room, ..
            } => write!(f, "Matrix({homeserver} {room})"),
            Self::Syslog { address, tcp } => write!(f, "Syslog({address}, tcp {tcp})"),
        }
    }
}

/// An alert channel.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChannel {
    /// Name (logs, outbox).
    pub name: String,
    /// Where it goes.
    pub target: AlertTarget,
    /// The least level alerted.
    pub least: crate::common::Level,
    /// Only these tenants (empty: all).
    pub tenants: Vec<String>,
    /// Only escalations.
    pub escalation: bool,
    /// Messages per minute at most.
    pub max_per_minute: u32,
}

/// The watch's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchSettings {
    /// SQLite file of incidents and the outbox.
    pub database: PathBuf,
    /// Calm before a level falls a step.
    pub quiet: Duration,
    /// What a baseline learns before rates alone raise past jaune.
    pub learning: Duration,
    /// The level opening an incident.
    pub incident_level: crate::common::Level,
    /// Escalation delay (zero: never).
    pub escalate_after: Duration,
    /// Detector thresholds.
    pub thresholds: WatchThresholds,
    /// The global playbook.
    pub playbook: Arc<Playbook>,
    /// Alert channels.
    pub alerts: Vec<AlertChannel>,
}

/// Data-guard settings shared by all tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSettings {
    /// Accounts tracked per tenant.
    pub max_accounts: usize,
    /// Key of the accounts' hashes, when configured (else the journal's).
    pub key: Option<Arc<[u8]>>,
    /// The access journal's SQLite file.
    pub database: PathBuf,
    /// Days the journal keeps.
    pub journal_days: u32,
}

/// A tenant's status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSpec {
    /// Hosts serving only the status site (lower case).
    pub hosts: Vec<String>,
    /// Path of the status site on the tenant's hosts (no trailing slash), if any.
    pub path: Option<String>,
    /// Public address of the page, when configured.
    pub url: Option<String>,
    /// Publish automatic incidents at once.
    pub auto_publish: bool,
    /// Time a new state must last before the page shows it.
    pub debounce: Duration,
    /// Response time above which a request counts as slow.
    pub slow: Duration,
    /// Other ways to reach the council.
    pub alternatives: Vec<String>,
    /// Residents may subscribe by e-mail.
    pub subscriptions: bool,
    /// Components, in page order.
    pub components: Vec<ComponentSpec>,
}

impl StatusSpec {
    /// The component a route feeds, if any.
    pub fn component_of_pool(&self, pool: usize) -> Option<&ComponentSpec> {
        self.components.iter().find(|c| c.pools.contains(&pool))
    }
}

/// A citizen service on the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSpec {
    /// Identifier.
    pub id: String,
    /// Name in French.
    pub name: String,
    /// Name in English.
    pub name_en: Option<String>,
    /// Indexes of the tenant's pools behind it.
    pub pools: Vec<usize>,
}

impl ComponentSpec {
    /// The name in `lang`.
    pub fn name(&self, lang: Language) -> &str {
        match lang {
            Language::En => self.name_en.as_deref().unwrap_or(&self.name),
            Language::Fr => &self.name,
        }
    }
}

/// How request bodies are read before forwarding (see `proxy::buffer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBuffering {
    /// Bytes of one body kept in memory.
    pub per_body: u64,
    /// Bytes of all bodies kept in memory.
    pub memory_total: u64,
    /// Bytes of all bodies on disk.
    pub disk_total: u64,
    /// Private directory of bodies on disk.
    pub dir: PathBuf,
}

/// Where stale copies are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleSettings {
    /// Memory for copies, bytes.
    pub memory_bytes: u64,
    /// Largest page kept, bytes.
    pub entry_bytes: usize,
    /// Disk tier directory.
    pub disk_dir: Option<PathBuf>,
    /// Disk tier bound, bytes.
    pub disk_bytes: u64,
}

/// Global status-page settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSettings {
    /// SQLite database path.
    pub database: PathBuf,
    /// Export directory for the off-site copy.
    pub export_dir: Option<PathBuf>,
    /// Command run after each export.
    pub publish_command: Option<String>,
    /// Attempts of the publish command.
    pub publish_attempts: u32,
    /// Time zone of dates shown to residents.
    pub time_zone: crate::common::TimeZone,
    /// Mail server for subscriptions.
    pub smtp: Option<Smtp>,
    /// Receivers of public updates.
    pub webhooks: Vec<Webhook>,
}

/// TLS towards the mail server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required).
    StartTls,
    /// TLS from the first byte.
    Tls,
    /// No TLS (a relay on the same machine).
    None,
}

/// The mail server.
#[derive(Clone, PartialEq, Eq)]
pub struct Smtp {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: SmtpTls,
    /// Sender mailbox.
    pub from: String,
    /// Login and password (never logged).
    pub credentials: Option<(String, String)>,
    /// Messages per second at most.
    pub max_per_second: u32,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("from", &self.from)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// Kind of webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    /// Signed JSON document.
    Json,
    /// Mastodon-compatible status post.
    Mastodon,
}

/// A receiver of public updates.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Address.
    pub url: http::Uri,
    /// Kind.
    pub kind: WebhookKind,
    /// HMAC key or access token (never logged).
    pub secret: Option<String>,
    /// Tenants whose updates go there (empty = all).
    pub tenants: Vec<String>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("kind", &self.kind)
            .field("tenants", &self.tenants)
            .finish()
    }
}

impl Tenant {
    /// Where residents find this tenant's status page, if it has one.
    pub fn status_href(&self) -> Option<String> {
        let spec = self.status.as_ref()?;
        spec.url
            .clone()
            .or_else(|| spec.path.as_ref().map(|p| format!("{p}/")))
            .or_else(|| spec.hosts.first().map(|h| format!("//{h}/")))
    }

    /// Index of the route for `host` and `path`: host-specific routes first, then the longest prefix.
    pub fn route_index(&self, host: &str, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| {
            r.host.as_deref().is_none_or(|h| h == host) && path_has_prefix(path, &r.path_prefix)
        })
    }
}

fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix.trim_end_matches('/')) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

/// Cluster mode: the Redis server the nodes share their defence through.
#[derive(Clone)]
pub struct ClusterSettings {
    /// `redis://` or `rediss://` URL, without a password.
    pub redis: String,
    /// The password, from `password_file` (never printed).
    pub password: Option<String>,
    /// This node's name.
    pub node: String,
    /// Prefix of every key and channel.
    pub key_prefix: String,
    /// The authority that signed Redis's certificate (PEM), from `ca_file`.
    pub ca_pem: Option<Vec<u8>>,
    /// Redis Sentinel: the master's name and the Sentinels (host, port).
    pub sentinel: Option<(String, Vec<(String, u16)>)>,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("redis", &self.redis)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .field("node", &self.node)
            .field("key_prefix", &self.key_prefix)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("sentinel", &self.sentinel)
            .finish()
    }
}

impl PartialEq for ClusterSettings {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.redis,
            &self.password,
            &self.node,
            &self.key_prefix,
            &self.ca_pem,
            &self.sentinel,
        ) == (
            &other.redis,
            &other.password,
            &other.node,
            &other.key_prefix,
            &other.ca_pem,
            &other.sentinel,
        )
    }
}

/// Where certificates come from for the tenants with `tls = { acme = true }`.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The authority's directory URL.
    pub directory: String,
    /// The account's contact (`mailto:` added), if any.
    pub contact: Option<String>,
    /// Account key and certificates, owner-only.
    pub state_dir: PathBuf,
    /// Extra roots trusted for the authority's HTTPS.
    pub ca_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// How control of the names is proved.
    pub challenge: AcmeChallenge,
}

/// The ACME challenge the gateway answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// A token fetched over HTTP (port 80).
    Http01,
    /// A TLS handshake with the `acme-tls/1` protocol (port 443).
    TlsAlpn01,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// File it came from.
    pub source: PathBuf,
    /// The ACME authority, when a tenant takes its certificates from one.
    pub acme: Option<AcmeSettings>,
    /// Cluster mode, when configured.
    pub cluster: Option<ClusterSettings>,
    /// Downstream listeners.
    pub listeners: Vec<Listener>,
    /// Admin listener.
    pub admin: Admin,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Limits.
    pub limits: Limits,
    /// Trusted proxies.
    pub trusted_proxies: Vec<IpNet>,
    /// Name in `Via`.
    pub via_name: String,
    /// Send `X-Real-IP` (the client's address) to origins.
    pub x_real_ip: bool,
    /// Tenants.
    pub tenants: Vec<Tenant>,
    /// Prefix lengths used to group client addresses.
    pub prefixes: crate::shield::PrefixLengths,
    /// Whether the access log shows full client addresses (else their prefix).
    pub log_full_client_address: bool,
    /// Files besides the config whose change triggers a reload (allow/deny lists, keys).
    pub watched_files: Vec<PathBuf>,
    /// Keys signing pass cookies, when configured (else the gateway makes a random one).
    pub pass_keys: Option<Arc<crate::shield::pass::KeyRing>>,
    /// Status pages' storage and off-site copy.
    pub status: StatusSettings,
    /// Stale copies of public pages: memory, per-page bound, disk tier.
    pub stale_cache: StaleSettings,
    /// How request bodies are read before forwarding.
    pub request_buffering: RequestBuffering,
    /// Data guard.
    pub guard: GuardSettings,
    /// The watch.
    pub watch: WatchSettings,
    pub(crate) hosts_exact: HashMap<String, usize, foldhash::fast::RandomState>,
    pub(crate) hosts_wildcard: Vec<(String, usize)>,
    pub(crate) default_tenant: Option<usize>,
}

impl Runtime {
    /// Index of the tenant serving `host` (lower case, no port), falling back to the default tenant.
    pub fn tenant_for_host(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.hosts_exact.get(host) {
            return Some(*i);
        }
        // Longest wildcard suffix wins.
        self.hosts_wildcard
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, i)| *i)
            .or(self.default_tenant)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// Whether any listener serves TLS.
    pub fn has_tls_listener(&self) -> bool {
        self.listeners
            .iter()
            .any(|l| l.protocol == ListenerProtocol::Https)
    }
}

#[cfg(test)]
mod tests {
    use super::path_has_prefix;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(path_has_prefix("/etat-civil", "/etat-civil"));
        assert!(path_has_prefix("/etat-civil/form", "/etat-civil"));
        assert!(path_has_prefix("/etat-civil/form", "/etat-civil/"));
        assert!(!path_has_prefix("/etat-civilx", "/etat-civil"));
        assert!(path_has_prefix("/anything", "/"));
    }
}
