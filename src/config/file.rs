//! The config file as written by operators: serde types mirroring the TOML, with every
//! default in one `DEFAULT_*` constant. Unknown keys are refused (`deny_unknown_fields`).
//! Nothing here is trusted yet: `validate` turns it into the runtime model.

use serde::Deserialize;

/// Default downstream header-read timeout.
pub const DEFAULT_DOWNSTREAM_HEADER_READ: &str = "10s";
/// Default downstream idle timeout (no request in flight and no bytes moving).
pub const DEFAULT_DOWNSTREAM_IDLE: &str = "60s";
/// Default upstream connect timeout.
pub const DEFAULT_UPSTREAM_CONNECT: &str = "3s";
/// Default wait for the upstream response head.
pub const DEFAULT_UPSTREAM_RESPONSE_HEAD: &str = "30s";
/// Default bound on a whole request, head to last body byte.
pub const DEFAULT_REQUEST: &str = "300s";
/// Default drain deadline on shutdown.
pub const DEFAULT_SHUTDOWN_DRAIN: &str = "30s";
/// Default maximum request-head size in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default longest request target (path and query), bytes: longer ones get 414.
pub const DEFAULT_MAX_TARGET_BYTES: usize = 8 * 1024;
/// Default maximum request-body size in bytes.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Default bytes of one request body kept in memory while it is buffered.
pub const DEFAULT_REQUEST_BUFFER_BYTES: u64 = 128 * 1024;
/// Default bytes of all buffered request bodies kept in memory.
pub const DEFAULT_REQUEST_BUFFERS_TOTAL: u64 = 64 * 1024 * 1024;
/// Default bytes of all buffered request bodies on disk.
pub const DEFAULT_REQUEST_SPILL_BYTES: u64 = 1024 * 1024 * 1024;
/// Default uploads streamed at once on a route that streams request bodies.
pub const DEFAULT_MAX_STREAMING_UPLOADS: u32 = 16;
/// Default maximum number of concurrent downstream connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// Default maximum concurrent connections from one client address (a browser opens about 6
/// per host; a town hall behind one NAT address may hold a few hundred).
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
/// Default minimum request-body rate (bytes/s) once the grace period is over.
pub const DEFAULT_MIN_BODY_RATE: u64 = 1024;
/// Default grace period before the minimum body rate applies.
pub const DEFAULT_DOWNSTREAM_BODY_GRACE: &str = "10s";
/// Default requests served on one connection before a graceful close.
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u64 = 10_000;
/// Default maximum concurrent HTTP/2 streams per connection.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Default admin listener address (loopback only).
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9180";
/// Default active health-check interval.
pub const DEFAULT_HEALTH_INTERVAL: &str = "5s";
/// Default active health-check timeout.
pub const DEFAULT_HEALTH_TIMEOUT: &str = "2s";
/// Default successes needed to mark a server healthy again.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Default failures needed to mark a server unhealthy.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Default consecutive request failures that eject a server passively.
pub const DEFAULT_PASSIVE_FAILURES: u32 = 5;
/// Default time a passively ejected server stays out when no active check brings it back.
pub const DEFAULT_PASSIVE_EJECT: &str = "10s";
/// Default idle upstream connections kept per server.
pub const DEFAULT_UPSTREAM_IDLE_PER_SERVER: usize = 256;
/// Default server weight.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Default ceiling of a pool's adaptive concurrency limit.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 256;
/// Default floor of a pool's adaptive concurrency limit.
pub const DEFAULT_MIN_CONCURRENCY: u32 = 4;
/// Default number of requests that may wait for a pool slot.
pub const DEFAULT_QUEUE_SIZE: usize = 1024;
/// Default longest wait for a pool slot.
pub const DEFAULT_QUEUE_TIMEOUT: &str = "1s";
/// Default proof-of-work difficulty (leading zero bits; 14 is about 16,000 hashes, well under
/// a second on an old phone).
pub const DEFAULT_CHALLENGE_DIFFICULTY: u8 = 14;
/// Default wait of the no-JavaScript challenge.
pub const DEFAULT_CHALLENGE_WAIT: &str = "5s";
/// Default lifetime of a pass cookie.
pub const DEFAULT_PASS_TTL: &str = "1h";
/// Default requests per second allowed per pass cookie (a page and its assets).
pub const DEFAULT_PASS_RATE: u32 = 50;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Downstream listeners.
    #[serde(default)]
    pub listeners: Vec<ListenerFile>,
    /// Admin listener.
    #[serde(default)]
    pub admin: AdminFile,
    /// Global timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    /// Global limits.
    #[serde(default)]
    pub limits: LimitsFile,
    /// Forwarding headers and trusted proxies.
    #[serde(default)]
    pub forwarding: ForwardingFile,
    /// Tenant used when no host matches; otherwise such requests get 421.
    pub default_tenant: Option<String>,
    /// Flood-defence settings shared by all tenants.
    #[serde(default)]
    pub shield: ShieldFile,
    /// Logging.
    #[serde(default)]
    pub log: LogFile,
    /// Public status pages: storage, off-site copy, time zone.
    #[serde(default)]
    pub status: StatusFile,
    /// Degraded mode: memory for stale copies of public pages.
    #[serde(default)]
    pub degraded: DegradedFile,
    /// Data guard: accounts tracked, the key of their hashes.
    #[serde(default)]
    pub guard: GuardFile,
    /// The watch: vigilance levels, the playbook, security incidents and operators' alerts.
    #[serde(default)]
    pub watch: WatchFile,
    /// Certificates from an ACME authority, for the tenants with `tls = { acme = true }`.
    #[serde(default)]
    pub acme: AcmeFile,
    /// Cluster mode: several gateways sharing their defence through Redis (off without).
    pub cluster: Option<ClusterFile>,
    /// Tenants (municipalities, agencies).
    #[serde(default)]
    pub tenants: Vec<TenantFile>,
}

/// Default path of the embedded status database (next to the config file).
pub const DEFAULT_STATUS_DATABASE: &str = "rempart-status.db";
/// Default status page path on every host of a tenant with a status page.
pub const DEFAULT_STATUS_PATH: &str = "/statut";
/// Default time a component's new state must last before the page shows it.
pub const DEFAULT_STATUS_DEBOUNCE: &str = "30s";
/// Default response time above which a request counts as slow for the status page.
pub const DEFAULT_STATUS_SLOW: &str = "3s";
/// Default attempts of the publish command after a change.
pub const DEFAULT_PUBLISH_ATTEMPTS: u32 = 3;
/// Default time zone of dates on status pages.
pub const DEFAULT_TIME_ZONE: &str = "Europe/Paris";

/// Default HSTS max-age of a tenant with a certificate (a year, as Mozilla's
/// "intermediate" configuration suggests at least).
pub const DEFAULT_HSTS_MAX_AGE: &str = "365d";

/// Default stale-copy window of a tenant's public pages.
pub const DEFAULT_STALE_IF_ERROR: &str = "24h";
/// Default memory for stale copies (all tenants).
pub const DEFAULT_STALE_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Default largest page kept as a stale copy.
pub const DEFAULT_STALE_ENTRY_BYTES: usize = 1024 * 1024;

/// Degraded-mode settings.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DegradedFile {
    /// Memory for stale copies, in bytes.
    pub stale_cache_bytes: Option<u64>,
    /// Largest page kept, in bytes.
    pub stale_entry_bytes: Option<usize>,
    /// Directory where copies are also written, so they survive a restart (none by default).
    pub stale_disk_dir: Option<String>,
    /// Disk space for copies, in bytes.
    pub stale_disk_bytes: Option<u64>,
}

/// Default disk space for stale copies when a directory is given.
pub const DEFAULT_STALE_DISK_BYTES: u64 = 1024 * 1024 * 1024;

/// Global status-page settings.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StatusFile {
    /// SQLite database holding history, incidents and subscribers.
    pub database: Option<String>,
    /// Directory where the whole status site is written as static files after every change.
    pub export_dir: Option<String>,
    /// Shell command run after each export (for example an rsync to another provider);
    /// `REMPART_STATUS_DIR` names the export directory.
    pub publish_command: Option<String>,
    /// Attempts of the publish command before giving up until the next change.
    pub publish_attempts: Option<u32>,
    /// Time zone of dates shown to residents: `Europe/Paris`, `UTC` or `+04:00`.
    pub time_zone: Option<String>,
    /// Mail server for residents' subscriptions.
    pub smtp: Option<SmtpFile>,
    /// Where public updates are pushed besides e-mail.
    #[serde(default)]
    pub webhooks: Vec<WebhookFile>,
}

/// Default SMTP port per TLS mode.
pub const DEFAULT_SMTP_TLS: &str = "starttls";
/// Default messages sent per second at most.
pub const DEFAULT_SMTP_RATE: u32 = 10;

/// The mail server sending subscription messages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpFile {
    /// Server host name or address.
    pub host: String,
    /// Port (default 587 with starttls, 465 with tls, 25 with none).
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none` (only for a relay on the same machine).
    pub tls: Option<String>,
    /// Sender, for example `Ville de Saint-Exemple <statut@ville.fr>`.
    pub from: String,
    /// Login, when the server wants one.
    pub username: Option<String>,
    /// File holding the password (never in the config itself).
    pub password_file: Option<String>,
    /// Messages sent per second at most.
    pub max_per_second: Option<u32>,
}

/// A receiver of public updates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// Address receiving the POST (for `mastodon`, the instance's base address).
    pub url: String,
    /// `json` (signed JSON document, default) or `mastodon` (a status post).
    pub kind: Option<String>,
    /// `json`: the HMAC-SHA256 key; `mastodon`: the account's access token.
    pub secret_file: Option<String>,
    /// Only these tenants' updates (default: all).
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// A tenant's status page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantStatusFile {
    /// Hosts serving only the status site (for example `statut.ville.fr`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path of the status site on the tenant's own hosts (`""` for none).
    pub path: Option<String>,
    /// Public address of the status page, used in feeds and messages.
    pub url: Option<String>,
    /// Publish incidents opened automatically without waiting for an operator.
    #[serde(default)]
    pub auto_publish: bool,
    /// Time a component's new state must last before the page shows it.
    pub debounce: Option<String>,
    /// Response time above which a request counts as slow.
    pub slow: Option<String>,
    /// Other ways to reach the council, shown on the status and fallback pages.
    #[serde(default)]
    pub alternatives: Vec<String>,
    /// Let residents subscribe by e-mail (default: when `[status.smtp]` is configured).
    pub subscriptions: Option<bool>,
    /// The citizen services shown on the page.
    #[serde(default)]
    pub components: Vec<ComponentFile>,
}

/// One citizen service on the status page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentFile {
    /// Stable identifier.
    pub id: String,
    /// Name in French.
    pub name: String,
    /// Name in English.
    pub name_en: Option<String>,
    /// Routes (by name) whose pools give the component its state.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Pools (by name) that give the component its state.
    #[serde(default)]
    pub pools: Vec<String>,
}

/// A downstream listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// Name used in logs and metrics.
    pub name: Option<String>,
    /// Socket address, for example `0.0.0.0:443`.
    pub address: String,
    /// `http` (h1 + h2c prior knowledge) or `https` (TLS, ALPN h2 + http/1.1).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Expect a PROXY protocol v1/v2 header from an L4 load balancer.
    #[serde(default)]
    pub proxy_protocol: bool,
}

fn default_protocol() -> String {
    "http".to_owned()
}

/// The admin listener.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Address; loopback by default.
    pub address: Option<String>,
    /// File holding the bearer token (never put the token itself in the config).
    pub token_file: Option<String>,
    /// Environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// Allow a non-loopback admin address (off by default).
    #[serde(default)]
    pub allow_public: bool,
}

/// Timeouts, as duration strings (`500ms`, `10s`, `2m`, `1h`).
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// Time allowed to receive a whole request head.
    pub downstream_header_read: Option<String>,
    /// Time a downstream connection may stay idle.
    pub downstream_idle: Option<String>,
    /// Time allowed to open a TCP connection upstream.
    pub upstream_connect: Option<String>,
    /// Time allowed for the upstream response head.
    pub upstream_response_head: Option<String>,
    /// Time allowed for the whole request.
    pub request: Option<String>,
    /// Drain deadline on shutdown.
    pub shutdown_drain: Option<String>,
    /// Time a request body may take before `limits.min_body_rate` applies.
    pub downstream_body_grace: Option<String>,
}

/// Global limits.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Maximum request-head size.
    pub max_header_bytes: Option<usize>,
    /// Maximum request-target size (path and query).
    pub max_target_bytes: Option<usize>,
    /// Maximum request-body size (routes may lower or raise it).
    pub max_body_bytes: Option<u64>,
    /// Maximum concurrent downstream connections.
    pub max_connections: Option<usize>,
    /// Minimum request-body data rate in bytes per second after the grace period (0 = off).
    pub min_body_rate: Option<u64>,
    /// Requests served on one connection before it is closed gracefully (0 = no limit).
    pub max_requests_per_connection: Option<u64>,
    /// Maximum concurrent connections from one client address (0 = no cap).
    pub max_connections_per_address: Option<usize>,
    /// Maximum concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: Option<u32>,
    /// Idle upstream connections kept per server.
    pub upstream_idle_per_server: Option<usize>,
    /// Bytes of one request body kept in memory while it is read (beyond: on disk).
    pub request_buffer_bytes: Option<u64>,
    /// Bytes of all request bodies kept in memory.
    pub request_buffers_total: Option<u64>,
    /// Bytes of all request bodies on disk.
    pub request_spill_bytes: Option<u64>,
    /// Directory of request bodies on disk.
    pub request_spill_dir: Option<String>,
}

/// Forwarding headers.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ForwardingFile {
    /// CIDRs whose `X-Forwarded-For` / `Forwarded` headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Pseudonym used in `Via` and `Forwarded: by=`.
    pub via_name: Option<String>,
    /// Send `X-Real-IP` with the client's address to origins.
    #[serde(default)]
    pub x_real_ip: bool,
}

/// One tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantFile {
    /// Stable identifier (`[a-z0-9-]+`).
    pub id: String,
    /// Name shown to residents.
    pub name: String,
    /// Host names: exact (`www.ville.fr`) or wildcard (`*.ville.fr`).
    pub hosts: Vec<String>,
    /// Default language of pages: `fr` (default) or `en`.
    pub language: Option<String>,
    /// Contact line shown on error pages (phone, opening hours).
    pub contact: Option<String>,
    /// Certificate for the tenant's hosts (PEM files).
    pub tls: Option<TlsFile>,
    /// Plain HTTP requests redirected to HTTPS (308), ACME challenges and the status site
    /// excepted. Default: on when the tenant has `tls` and an `https` listener exists.
    pub https_redirect: Option<bool>,
    /// `Strict-Transport-Security` max-age on HTTPS answers (default `365d` when the tenant
    /// has `tls`; `0s` sends none).
    pub hsts_max_age: Option<String>,
    /// `includeSubDomains` in HSTS (default false: every subdomain must then serve HTTPS).
    #[serde(default)]
    pub hsts_include_subdomains: bool,
    /// `preload` in HSTS (default false; needs `includeSubDomains` and a year or more).
    #[serde(default)]
    pub hsts_preload: bool,
    /// Upstream pools.
    #[serde(default)]
    pub pools: Vec<PoolFile>,
    /// Routes: host + path prefix to pool.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    /// Flood-defence policy of this tenant.
    #[serde(default)]
    pub shield: TenantShieldFile,
    /// Public status page.
    pub status: Option<TenantStatusFile>,
    /// Serve the maintenance page instead of forwarding (the whole tenant).
    #[serde(default)]
    pub maintenance: bool,
    /// Request fields dropped from untrusted clients besides the built-in list (fields the
    /// tenant's applications believe, such as an SSO's `X-Remote-User`).
    #[serde(default)]
    pub strip_headers: Vec<String>,
    /// How long a copy of a public page may be served when the origin fails (`"0s"` = never).
    pub stale_if_error: Option<String>,
    /// Data guard: who is asking on the tenant's guarded routes.
    pub guard: Option<TenantGuardFile>,
    /// The watch for this tenant: its own playbook.
    pub watch: Option<TenantWatchFile>,
}

/// The watch: how levels move, what each level switches on, incidents and alerts.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WatchFile {
    /// SQLite file of security incidents and the alert outbox (default `rempart-watch.db`
    /// next to this file).
    pub database: Option<String>,
    /// How long the signals must stay calm before a level falls one step (default 5m).
    pub quiet: Option<String>,
    /// Traffic a tenant's baseline learns before the request rate alone may call for more
    /// than jaune (default 1h of calm seconds; kept across restarts).
    pub learning: Option<String>,
    /// The level at which a security incident opens and operators are alerted (default
    /// `orange`).
    pub incident_level: Option<String>,
    /// An incident not acknowledged after this long is escalated (default 15m; `"0s"` =
    /// never).
    pub escalate_after: Option<String>,
    /// How sensitive the detectors are.
    #[serde(default)]
    pub thresholds: WatchThresholdsFile,
    /// What each level switches on (defaults: see docs/watch.md).
    #[serde(default)]
    pub playbook: PlaybookFile,
    /// Where operators are alerted.
    #[serde(default)]
    pub alerts: Vec<AlertFile>,
}

/// Detector thresholds.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WatchThresholdsFile {
    /// Request rate over its usual value for the hour that calls for jaune, orange, rouge
    /// (default [3, 8, 20]).
    pub rate_ratios: Option<[f64; 3]>,
    /// Requests per second never unusual (default 5).
    pub min_rate: Option<f64>,
    /// Failed logins per second on login routes that call for orange (default 2).
    pub login_failures: Option<f64>,
    /// Connections closed by the gateway per second that call for orange (default 50).
    pub connection_trips: Option<f64>,
}

/// The playbook: a table per level; a level does what the tables up to it say, the higher
/// overriding the lower.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PlaybookFile {
    /// At jaune and above.
    pub jaune: Option<LevelActionsFile>,
    /// At orange and above.
    pub orange: Option<LevelActionsFile>,
    /// At rouge.
    pub rouge: Option<LevelActionsFile>,
}

/// What one level switches on.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct LevelActionsFile {
    /// Clients without a pass are challenged: `off`, `heavy` (routes whose cost is above 1)
    /// or `all`.
    pub challenge: Option<String>,
    /// Per-address and per-prefix limits multiplied by this (0.1 to 1).
    pub limit_factor: Option<f64>,
    /// Extra proof-of-work difficulty, in bits (0 to 6).
    pub difficulty_bonus: Option<u8>,
    /// Under-attack mode: every client without a pass is challenged.
    pub under_attack: Option<bool>,
    /// Routes marked `essential = false` are put in maintenance.
    pub maintenance_nonessential: Option<bool>,
    /// A notice on the tenant's status page: `off`, `draft` (an operator publishes it) or
    /// `publish`.
    pub status_notice: Option<String>,
}

/// Somewhere operators are alerted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertFile {
    /// Name in logs and the outbox (default: the kind and position).
    pub name: Option<String>,
    /// `email`, `webhook` (signed JSON), `matrix` (a room, Tchap included) or `syslog`
    /// (RFC 5424).
    pub kind: String,
    /// `email`: recipients (the mail server is `[status.smtp]`).
    #[serde(default)]
    pub to: Vec<String>,
    /// `webhook`: the address receiving the POST; `matrix`: the homeserver's base address.
    pub url: Option<String>,
    /// `matrix`: the room id (`!abc:example.org`).
    pub room: Option<String>,
    /// `webhook`: the HMAC-SHA256 key; `matrix`: the access token.
    pub secret_file: Option<String>,
    /// `syslog`: the collector's `host:port`.
    pub address: Option<String>,
    /// `syslog`: `udp` (default) or `tcp`.
    pub transport: Option<String>,
    /// The least level alerted here (default: `watch.incident_level`).
    pub level: Option<String>,
    /// Only these tenants (default: all).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Only escalations (incidents not acknowledged in time) go here.
    #[serde(default)]
    pub escalation: bool,
    /// Messages sent here per minute at most (default 6; later updates of one incident
    /// are merged while they wait).
    pub max_per_minute: Option<u32>,
}

/// A tenant's watch settings.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantWatchFile {
    /// Its own playbook (tables given here replace the global ones).
    #[serde(default)]
    pub playbook: PlaybookFile,
}

/// Data-guard settings shared by all tenants.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GuardFile {
    /// Accounts tracked per tenant (default 100000; the least recently active are
    /// forgotten first, never a suspended one).
    pub max_accounts: Option<usize>,
    /// File holding the key of the accounts' hashes (at least 32 bytes). Without it, the
    /// journal keeps one it made (an account keeps its identifier across restarts).
    pub key_file: Option<String>,
    /// SQLite access journal of the guarded routes (default `rempart-guard.db` next to
    /// this file), opened when a route has a guard.
    pub database: Option<String>,
    /// Days the journal keeps (default 365).
    pub journal_days: Option<u32>,
}

/// A tenant's data guard: where the account of a request is read.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantGuardFile {
    /// Sources, in order; the first present decides.
    #[serde(default)]
    pub accounts: Vec<AccountSourceFile>,
    /// A field of the origin's answer naming the account (stripped before the client sees
    /// it), read when no source of the request named one.
    pub origin_account_header: Option<String>,
    /// Flag an account taking this many times its usual hourly records, or its peers'
    /// (default 6; 0 = no learned baseline).
    pub baseline_factor: Option<f64>,
    /// Hourly records never unusual, whatever the baseline (default 30).
    pub baseline_min_records: Option<u64>,
    /// Active hours before an account's own usual volume is trusted (default 8).
    pub baseline_min_hours: Option<u32>,
    /// Working hours (`mon-fri 07:30-19:00`, in `status.time_zone`): activity outside them
    /// is flagged.
    pub office_hours: Option<String>,
    /// Account groups: group name -> account names (`superviseurs = ["jdupont"]`).
    #[serde(default)]
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
    /// A field set by the single sign-on naming the account's groups (comma-separated),
    /// read only from trusted proxies.
    pub group_header: Option<String>,
}

/// One account source: exactly one of `cookie`, `basic`, `jwt_secret_file`,
/// `jwt_jwks_file`, `header`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AccountSourceFile {
    /// The value of this session cookie (hashed, never kept).
    pub cookie: Option<String>,
    /// The user of HTTP Basic authentication.
    pub basic: Option<bool>,
    /// A JWT bearer token signed with HS256 with the secret in this file.
    pub jwt_secret_file: Option<String>,
    /// A JWT bearer token signed with RS256 or ES256 by a key of this JWKS file.
    pub jwt_jwks_file: Option<String>,
    /// The claim naming the account in a JWT (default `sub`).
    pub claim: Option<String>,
    /// A field set by the town's single sign-on in front (read only from trusted proxies).
    pub header: Option<String>,
}

/// A route's data guard.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteGuardFile {
    /// A field of the origin's answer giving its record count (stripped).
    pub record_header: Option<String>,
    /// The JSON array whose elements are the answer's records (`data.items`, `$`).
    pub json_records: Option<String>,
    /// Paths that open one record (`/dossiers/{id}`).
    #[serde(default)]
    pub record_ids: Vec<String>,
    /// Count the persons whose personal data an answer shows as its records.
    #[serde(default)]
    pub count_persons: bool,
    /// Kinds of personal data replaced in the answers (`nir`, `iban`, `card`, `phone`,
    /// `email`).
    #[serde(default)]
    pub pii_mask: Vec<String>,
    /// Kinds of personal data that must never leave: an answer showing one is cut.
    #[serde(default)]
    pub pii_block: Vec<String>,
    /// Budgets per account.
    #[serde(default)]
    pub budgets: Vec<BudgetFile>,
    /// Delay of each answer while over a `slow` budget (default "2s").
    pub slow_delay: Option<String>,
}

/// One budget: `records` per `per`, else `action`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetFile {
    /// Records allowed in the window.
    pub records: u64,
    /// The window (`"1h"`, `"1d"`).
    pub per: String,
    /// `log`, `alert`, `slow`, `block` or `suspend`.
    pub action: String,
    /// The budget of the accounts of this group only (they get the route's budgets of
    /// their group instead of those without a group).
    pub group: Option<String>,
}

/// Logging settings.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// How the client address appears in the access log: `prefix` (default: the /24 or /64
    /// network, personal data kept out of logs) or `full`.
    pub client_address: Option<String>,
}

/// Flood-defence settings shared by all tenants.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ShieldFile {
    /// IPv4 prefix length that groups addresses (default 24).
    pub prefix_v4: Option<u8>,
    /// IPv6 prefix length that groups addresses (default 64).
    pub prefix_v6: Option<u8>,
    /// File holding the keys that sign pass cookies, one per line (hex or text, at least 32
    /// bytes), newest first; older keys still verify (rotation). Without it, a random key
    /// is made at start: passes then last until a restart and are not shared between nodes.
    pub secret_file: Option<String>,
}

/// A tenant's flood-defence policy.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantShieldFile {
    /// `enforce` (default: answer 429) or `log` (dry run: count and log only).
    pub mode: Option<String>,
    /// Requests per second allowed per client address; 0 or absent = no limit.
    pub address_rate: Option<u32>,
    /// Requests per second allowed per client prefix; 0 or absent = no limit.
    pub prefix_rate: Option<u32>,
    /// Path prefixes never limited (on top of /robots.txt and /.well-known/).
    #[serde(default)]
    pub exempt_paths: Vec<String>,
    /// Requests per second from one address that earn it an automatic ban (0/absent = never).
    pub ban_rate: Option<u32>,
    /// Length of an automatic ban (default "10m").
    pub ban_for: Option<String>,
    /// File listing clients never limited (one address or CIDR per line); reloaded on change.
    pub allow_file: Option<String>,
    /// File listing clients always refused (403); reloaded on change.
    pub deny_file: Option<String>,
    /// The town's own networks (addresses or CIDRs): never challenged, a pass without proof
    /// of work, limited per verified client.
    #[serde(default)]
    pub trusted_networks: Vec<String>,
    /// More trusted networks, one per line, from a file; reloaded on change.
    pub trusted_networks_file: Option<String>,
    /// Most verified clients an address or prefix is credited with (default 1000).
    pub shared_max: Option<u32>,
    /// Challenge clients without a pass while a pool of this tenant sheds load (default true).
    pub auto_challenge: Option<bool>,
    /// Start in under-attack mode: challenge every client without a valid pass.
    pub under_attack: Option<bool>,
    /// Proof-of-work difficulty in leading zero bits (default 14, 8 to 24).
    pub challenge_difficulty: Option<u8>,
    /// Wait before a browser without JavaScript gets its pass (default "5s").
    pub challenge_wait: Option<String>,
    /// Lifetime of a pass cookie (default "1h").
    pub pass_ttl: Option<String>,
    /// Requests per second allowed per pass cookie (default 50; 0 = no limit).
    pub pass_rate: Option<u32>,
    /// Requests per second allowed per client fingerprint without a pass (0/absent = off).
    pub fingerprint_rate: Option<u32>,
    /// `reject` (default: 429 at once) or `tarpit` (429 after `tarpit_for`).
    pub over_limit: Option<String>,
    /// How long a tarpitted request is held (default "10s").
    pub tarpit_for: Option<String>,
    /// Client errors (4xx from the origin) per second per address above which its requests
    /// are suspicious (default 10; 0 = off).
    pub error_rate: Option<u32>,
    /// How long before pressure began an address must have been served normally for its
    /// history to raise its priority (default "2m", whole minutes, at most "24h"; "0s": at once).
    pub good_history_after: Option<String>,
}

/// PEM certificate chain and key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// Certificate chain (PEM).
    pub cert: Option<String>,
    /// Private key (PEM).
    pub key: Option<String>,
    /// Certificates obtained and renewed from the ACME server of `[acme]`, for the tenant's
    /// exact host names, instead of files.
    #[serde(default)]
    pub acme: bool,
}

/// Default ACME directory: Let's Encrypt.
pub const DEFAULT_ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Default state directory of ACME (account key, certificates), next to the config file.
pub const DEFAULT_ACME_STATE_DIR: &str = "acme";

/// Cluster mode: several gateways sharing bans (and, as it grows, the rest of their
/// defence) through Redis.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The Redis server: `redis://host:port/db`, or `rediss://` for TLS; an ACL user name may
    /// be given in the URL (`redis://rempart@host`), never a password.
    pub redis: String,
    /// File holding the Redis password (the ACL user's, or `requirepass`).
    pub password_file: Option<String>,
    /// This node's name, unique in the cluster (default: the machine's host name).
    pub node: Option<String>,
    /// Prefix of every key and channel (several clusters on one Redis; default `rempart`).
    pub key_prefix: Option<String>,
    /// The certificate authority (PEM) that signed the Redis server's certificate, for
    /// `rediss://` (default: the system's authorities).
    pub ca_file: Option<String>,
    /// Redis Sentinel: the master is the one the Sentinels name (after a failover, the new
    /// one); `redis` then gives only the scheme, the user and the database.
    pub sentinel: Option<SentinelFile>,
}

/// Where the Sentinels are and which master they watch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelFile {
    /// The master's name in the Sentinels' configuration (`sentinel monitor NAME ...`).
    pub master: String,
    /// The Sentinels, as `host:port`.
    pub addresses: Vec<String>,
}

/// Certificates from an ACME certificate authority (RFC 8555).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AcmeFile {
    /// Directory URL of the certificate authority (default: Let's Encrypt).
    pub directory: Option<String>,
    /// Address the authority writes to about the account (expiry notices, policy changes).
    pub contact: Option<String>,
    /// Where the account key and the certificates are kept (owner-only permissions).
    pub state_dir: Option<String>,
    /// Extra root certificates (PEM) trusted for the authority's own HTTPS (a private
    /// authority, or a test one).
    pub ca_file: Option<String>,
    /// How control of the names is proved: `http-01` (default: the authority fetches a
    /// token over port 80) or `tls-alpn-01` (a TLS handshake on port 443 only).
    pub challenge: Option<String>,
}

/// An upstream pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    /// Pool name, unique within the tenant.
    pub name: String,
    /// `round_robin` (weighted, default) or `least_outstanding`.
    pub balance: Option<String>,
    /// Servers.
    pub servers: Vec<ServerFile>,
    /// Active and passive health checking.
    #[serde(default)]
    pub health: HealthFile,
    /// Ceiling of the adaptive concurrency limit towards this pool (default 256; 0 = no
    /// admission control). Set it to what the origin can serve at once.
    pub max_concurrency: Option<u32>,
    /// Floor of the adaptive concurrency limit (default 4).
    pub min_concurrency: Option<u32>,
    /// Requests that may wait for a slot (default 1024).
    pub queue_size: Option<usize>,
    /// Longest wait for a slot before a 503 (default "1s").
    pub queue_timeout: Option<String>,
}

/// An upstream server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// `host:port`.
    pub address: String,
    /// Relative weight (default 1).
    pub weight: Option<u32>,
}

/// Health checking of a pool.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// Path probed with GET; no active checks when absent.
    pub path: Option<String>,
    /// Interval between probes.
    pub interval: Option<String>,
    /// Probe timeout.
    pub timeout: Option<String>,
    /// Consecutive successes to come back.
    pub healthy_threshold: Option<u32>,
    /// Consecutive failures to go out.
    pub unhealthy_threshold: Option<u32>,
    /// Consecutive request failures that eject a server (0 disables passive ejection).
    pub passive_failures: Option<u32>,
    /// How long a passively ejected server stays out.
    pub passive_eject: Option<String>,
}

/// A route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Name used in logs and metrics (defaults to the path prefix).
    pub name: Option<String>,
    /// Restrict to one of the tenant's hosts.
    pub host: Option<String>,
    /// Path prefix, starting with `/`.
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Target pool.
    pub pool: String,
    /// Body limit for this route.
    pub max_body_bytes: Option<u64>,
    /// How many requests one request here counts for in the shield's rate limits (default 1;
    /// search, login and form routes cost more than static pages).
    pub cost: Option<u32>,
    /// Timeouts for this route (only upstream and request keys apply).
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    /// API route: the header carrying the client's key (with `api_keys_file`).
    pub api_key_header: Option<String>,
    /// SHA-256 digests (hex) of the valid keys, one per line.
    pub api_keys_file: Option<String>,
    /// Requests per second allowed per API key (default 20).
    pub api_key_rate: Option<u32>,
    /// Serve the maintenance page instead of forwarding (this route).
    #[serde(default)]
    pub maintenance: bool,
    /// Forward paths with an encoded `/` or `\` (`%2F`, `%5C`) instead of refusing them.
    #[serde(default)]
    pub allow_encoded_slash: bool,
    /// Stream request bodies to the origin as they arrive instead of reading them first.
    #[serde(default)]
    pub stream_request_body: bool,
    /// Uploads streamed at once on this route (with `stream_request_body`).
    pub max_streaming_uploads: Option<u32>,
    /// Stale-copy window of this route (default: the tenant's).
    pub stale_if_error: Option<String>,
    /// Data guard of this route: records counted per account, budgets, personal data.
    pub guard: Option<RouteGuardFile>,
    /// A login route: the origin's 401 and 403 answers count as failed logins (the watch
    /// sees credential stuffing).
    #[serde(default)]
    pub login: bool,
    /// `false`: the playbook may put this route in maintenance at a high level.
    pub essential: Option<bool>,
}

fn default_prefix() -> String {
    "/".to_owned()
}
