//! Turns a parsed `FileConfig` into the runtime model, collecting every problem with the key
//! path that caused it. Locating the problem in the file (line and column) is done by
//! `config::locate`, so this code only deals with values.

pub use crate::common::parse_duration;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls::sign::CertifiedKey;

use super::certificate::CertificateFacts;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::file::*;
use super::runtime::*;

mod guard;
mod watch;

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, for example `tenants[0].pools[1].servers[0].address`.
    pub path: String,
    /// What is wrong, naming the bad value.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

struct Collector {
    problems: Vec<Problem>,
}

impl Collector {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>, hint: Option<&str>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
            hint: hint.map(str::to_owned),
        });
    }

    /// Like `duration`, zero allowed (it switches a feature off).
    /// Refuses `value` above `max` (`what` names the unit in the message).
    fn at_most(&mut self, path: &str, value: u64, max: u64, what: &str) {
        if value > max {
            self.push(
                path,
                format!("{value} is above the largest accepted value, {max} {what}"),
                Some("a value this large would exhaust memory or overflow a computation; pick a realistic bound"),
            );
        }
    }

    fn duration_or_zero(&mut self, path: &str, value: Option<&str>, default: &str) -> Duration {
        match value {
            Some(raw) if parse_duration(raw).is_ok_and(|d| d.is_zero()) => Duration::ZERO,
            _ => self.duration(path, value, default),
        }
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: &str) -> Duration {
        let raw = value.unwrap_or(default);
        match parse_duration(raw) {
            Ok(d) if d > MAX_DURATION => {
                self.push(
                    path,
                    format!("duration `{raw}` is longer than a year"),
                    Some("durations are capped at 8760h (365 days)"),
                );
                MAX_DURATION
            }
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.push(
                    path,
                    format!("duration `{raw}` must be greater than zero"),
                    None,
                );
                Duration::from_secs(1)
            }
            Err(e) => {
                self.push(
                    path,
                    e,
                    Some("write a number followed by ms, s, m or h, e.g. \"10s\""),
                );
                Duration::from_secs(1)
            }
        }
    }
}

/// Reads an API route's key digests: one SHA-256 (64 hex digits) per line, `#` comments.
fn load_api_keys(path: &Path) -> Result<HashSet<[u8; 32]>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut out = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bytes = line.as_bytes();
        let digest: Option<[u8; 32]> = (bytes.len() == 64)
            .then(|| {
                let mut d = [0u8; 32];
                for (j, pair) in bytes.chunks(2).enumerate() {
                    let hex = std::str::from_utf8(pair).ok()?;
                    d[j] = u8::from_str_radix(hex, 16).ok()?;
                }
                Some(d)
            })
            .flatten();
        match digest {
            Some(d) => {
                out.insert(d);
            }
            // Never echo the line: it may be a key pasted by mistake.
            None => {
                return Err(format!(
                    "{}:{}: not a SHA-256 digest",
                    path.display(),
                    i + 1
                ))
            }
        }
    }
    Ok(out)
}

/// Reads a pass-cookie key ring: one key per line (blank lines and `#` comments skipped),
/// newest first, each at least 32 bytes.
fn load_key_ring(path: &Path) -> Result<crate::shield::pass::KeyRing, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut secrets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() < 32 {
            // Never echo the key itself.
            return Err(format!(
                "{}:{}: key is {} characters, too short",
                path.display(),
                i + 1,
                line.len()
            ));
        }
        secrets.push(line.as_bytes().to_vec());
    }
    crate::shield::pass::KeyRing::new(&secrets)
        .ok_or_else(|| format!("`{}` holds no key (or more than 255)", path.display()))
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn valid_host(s: &str) -> bool {
    let body = s.strip_prefix("*.").unwrap_or(s);
    !body.is_empty()
        && body.len() <= 253
        && body.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The longest duration any key accepts: a year (any deadline computed from the clock stays
/// far from overflowing).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Validates `file` (read from `source`) into the runtime model, or returns every problem.
pub fn validate(file: FileConfig, source: &Path) -> Result<Runtime, Vec<Problem>> {
    let mut c = Collector {
        problems: Vec::new(),
    };
    let base = source.parent().unwrap_or(Path::new("."));

    // An empty or half-written file must never empty the gateway.
    if file.listeners.is_empty() {
        c.push(
            "listeners",
            "no listener: the gateway would serve nothing",
            Some("add [[listeners]] with address = \"0.0.0.0:80\" (an empty or half-written file is refused, and a running gateway keeps its configuration)"),
        );
    }
    if file.tenants.is_empty() {
        c.push(
            "tenants",
            "no tenant: every request would get 421",
            Some("add [[tenants]] with id, name, hosts, a pool and a route (an empty or half-written file is refused, and a running gateway keeps its configuration)"),
        );
    }
    let listeners = listeners(&mut c, &file.listeners);
    let admin = admin(&mut c, &file.admin, base);

    let t = &file.timeouts;
    let timeouts = Timeouts {
        downstream_header_read: c.duration(
            "timeouts.downstream_header_read",
            t.downstream_header_read.as_deref(),
            DEFAULT_DOWNSTREAM_HEADER_READ,
        ),
        downstream_idle: c.duration(
            "timeouts.downstream_idle",
            t.downstream_idle.as_deref(),
            DEFAULT_DOWNSTREAM_IDLE,
        ),
        upstream_connect: c.duration(
            "timeouts.upstream_connect",
            t.upstream_connect.as_deref(),
            DEFAULT_UPSTREAM_CONNECT,
        ),
        per_request: RequestTimeouts {
            upstream_response_head: c.duration(
                "timeouts.upstream_response_head",
                t.upstream_response_head.as_deref(),
                DEFAULT_UPSTREAM_RESPONSE_HEAD,
            ),
            request: c.duration("timeouts.request", t.request.as_deref(), DEFAULT_REQUEST),
        },
        shutdown_drain: c.duration(
            "timeouts.shutdown_drain",
            t.shutdown_drain.as_deref(),
            DEFAULT_SHUTDOWN_DRAIN,
        ),
        downstream_body_grace: c.duration(
            "timeouts.downstream_body_grace",
            t.downstream_body_grace.as_deref(),
            DEFAULT_DOWNSTREAM_BODY_GRACE,
        ),
    };

    let l = &file.limits;
    let limits = Limits {
        max_header_bytes: l.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        max_target_bytes: l.max_target_bytes.unwrap_or(DEFAULT_MAX_TARGET_BYTES),
        max_body_bytes: l.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        max_connections: l.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        min_body_rate: l.min_body_rate.unwrap_or(DEFAULT_MIN_BODY_RATE),
        max_requests_per_connection: l
            .max_requests_per_connection
            .unwrap_or(DEFAULT_MAX_REQUESTS_PER_CONNECTION),
        max_connections_per_address: l
            .max_connections_per_address
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
        h2_max_concurrent_streams: l
            .h2_max_concurrent_streams
            .unwrap_or(DEFAULT_H2_MAX_CONCURRENT_STREAMS),
        upstream_idle_per_server: l
            .upstream_idle_per_server
            .unwrap_or(DEFAULT_UPSTREAM_IDLE_PER_SERVER),
    };
    if !(8192..=1024 * 1024).contains(&limits.max_header_bytes) {
        c.push(
            "limits.max_header_bytes",
            format!("{} is out of range", limits.max_header_bytes),
            Some("use a value between 8192 and 1048576"),
        );
    }
    if !(256..=limits.max_header_bytes).contains(&limits.max_target_bytes) {
        c.push(
            "limits.max_target_bytes",
            format!("{} is out of range", limits.max_target_bytes),
            Some("use a value between 256 and limits.max_header_bytes"),
        );
    }
    const GIB: u64 = 1 << 30;
    let usize_u64 = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
    c.at_most(
        "limits.max_body_bytes",
        limits.max_body_bytes,
        64 * GIB,
        "bytes (64 GiB)",
    );
    c.at_most(
        "limits.max_connections",
        usize_u64(limits.max_connections),
        1_000_000,
        "connections",
    );
    c.at_most(
        "limits.min_body_rate",
        limits.min_body_rate,
        GIB,
        "bytes per second",
    );
    c.at_most(
        "limits.max_connections_per_address",
        usize_u64(limits.max_connections_per_address),
        1_000_000,
        "connections",
    );
    c.at_most(
        "limits.h2_max_concurrent_streams",
        u64::from(limits.h2_max_concurrent_streams),
        10_000,
        "streams",
    );
    c.at_most(
        "limits.upstream_idle_per_server",
        usize_u64(limits.upstream_idle_per_server),
        100_000,
        "connections",
    );
    if limits.max_connections == 0 {
        c.push("limits.max_connections", "must be at least 1", None);
    }
    if limits.h2_max_concurrent_streams == 0 {
        c.push(
            "limits.h2_max_concurrent_streams",
            "must be at least 1",
            None,
        );
    }

    let mut trusted_proxies = Vec::new();
    for (i, cidr) in file.forwarding.trusted_proxies.iter().enumerate() {
        match parse_cidr(cidr) {
            Some(n) => trusted_proxies.push(n),
            None => c.push(
                format!("forwarding.trusted_proxies[{i}]"),
                format!("`{cidr}` is not an IP address or CIDR"),
                Some("write for example \"10.0.0.0/8\" or \"192.0.2.7\""),
            ),
        }
    }
    let via_name = file
        .forwarding
        .via_name
        .clone()
        .unwrap_or_else(|| "rempart".to_owned());
    if via_name.is_empty()
        || !via_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        c.push(
            "forwarding.via_name",
            format!("`{via_name}` is not a valid token"),
            Some("use letters, digits, '-', '.' or '_'"),
        );
    }

    let mut tenants = Vec::new();
    let mut hosts_exact = HashMap::with_hasher(foldhash::fast::RandomState::default());
    let mut hosts_wildcard = Vec::new();
    let mut ids = HashSet::new();
    let mut host_owner: HashMap<String, String> = HashMap::new();
    for (ti, tf) in file.tenants.iter().enumerate() {
        let p = format!("tenants[{ti}]");
        if !valid_id(&tf.id) {
            c.push(
                format!("{p}.id"),
                format!("`{}` is not a valid id", tf.id),
                Some("use lower-case letters, digits, '-' and '_'"),
            );
        } else if !ids.insert(tf.id.clone()) {
            c.push(
                format!("{p}.id"),
                format!("duplicate tenant id `{}`", tf.id),
                None,
            );
        }
        if tf.hosts.is_empty() {
            c.push(
                format!("{p}.hosts"),
                "a tenant needs at least one host name",
                Some("add for example hosts = [\"www.ville.fr\"]"),
            );
        }
        let mut hosts = Vec::new();
        for (hi, h) in tf.hosts.iter().enumerate() {
            let lower = h.to_ascii_lowercase();
            if !valid_host(&lower) {
                c.push(
                    format!("{p}.hosts[{hi}]"),
                    format!("`{h}` is not a host name"),
                    Some("write a name such as \"www.ville.fr\" or \"*.ville.fr\", without scheme or port"),
                );
                continue;
            }
            if let Some(other) = host_owner.insert(lower.clone(), tf.id.clone()) {
                c.push(
                    format!("{p}.hosts[{hi}]"),
                    format!("host `{h}` is already served by tenant `{other}`"),
                    None,
                );
            }
            match lower.strip_prefix('*') {
                Some(suffix) => hosts_wildcard.push((suffix.to_owned(), ti)),
                None => {
                    hosts_exact.insert(lower.clone(), ti);
                }
            }
            hosts.push(lower);
        }
        let language = match tf.language.as_deref() {
            None | Some("fr") => Language::Fr,
            Some("en") => Language::En,
            Some(other) => {
                c.push(
                    format!("{p}.language"),
                    format!("unknown language `{other}`"),
                    Some("use \"fr\" or \"en\""),
                );
                Language::Fr
            }
        };
        let acme = tf.tls.as_ref().is_some_and(|tls| tls.acme);
        if acme && !tf.hosts.iter().any(|h| !h.starts_with("*.")) {
            c.push(
                format!("{p}.tls.acme"),
                "the tenant has only wildcard host names, which HTTP-01 cannot prove".to_owned(),
                Some("list its exact names (www.ville.fr), or give a wildcard certificate from files"),
            );
        }
        if acme && !file.listeners.iter().any(|l| l.protocol == "https") {
            c.push(
                format!("{p}.tls.acme"),
                "no https listener would serve the certificate".to_owned(),
                Some("add a [[listeners]] with protocol = \"https\" (port 443)"),
            );
        }
        let certificate = tf.tls.as_ref().and_then(|tls| match (&tls.cert, &tls.key, tls.acme) {
            (Some(cert), Some(key), false) => {
                match load_certified_key(&base.join(cert), &base.join(key)) {
                    Ok(k) => Some(Arc::new(k)),
                    Err(e) => {
                        c.push(format!("{p}.tls"), e, Some("give PEM files readable by rempart; relative paths start at the config file's directory"));
                        None
                    }
                }
            }
            (None, None, true) => None,
            _ => {
                c.push(
                    format!("{p}.tls"),
                    "give either `cert` and `key` (PEM files) or `acme = true`".to_owned(),
                    Some("tls = { cert = \"ville.pem\", key = \"ville.key\" }, or tls = { acme = true } with an [acme] table"),
                );
                None
            }
        });
        let certificate_facts = certificate.as_ref().and_then(|k| {
            match CertificateFacts::read(k.end_entity_cert().map_or(&[][..], |c| c.as_ref())) {
                Ok(facts) => Some(facts),
                Err(e) => {
                    c.push(
                        format!("{p}.tls.cert"),
                        e,
                        Some("the first PEM block must be the tenant's own certificate"),
                    );
                    None
                }
            }
        });
        let (https_redirect, hsts) = https_policy(&mut c, &p, tf, &listeners);
        let shield = tenant_shield(&mut c, &p, &tf.shield, base);
        let pools = pools(&mut c, &p, &tf.pools);
        let tenant_guard = guard::tenant(&mut c, &p, tf.guard.as_ref(), base);
        let routes = routes(
            &mut c,
            &p,
            tf,
            &pools,
            &hosts,
            &limits,
            base,
            &timeouts,
            &tenant_guard,
        );
        let status = tf
            .status
            .as_ref()
            .map(|sf| tenant_status(&mut c, &p, sf, &pools, &routes));
        for (hi, h) in status.iter().flat_map(|s| s.hosts.iter()).enumerate() {
            if let Some(other) = host_owner.insert(h.clone(), tf.id.clone()) {
                c.push(
                    format!("{p}.status.hosts[{hi}]"),
                    format!("host `{h}` is already served by tenant `{other}`"),
                    None,
                );
            }
            hosts_exact.insert(h.clone(), ti);
        }
        tenants.push(Tenant {
            id: tf.id.clone(),
            name: tf.name.clone(),
            hosts,
            language,
            contact: tf.contact.clone(),
            pools,
            routes,
            certificate,
            certificate_facts,
            acme,
            https_redirect,
            hsts,
            shield,
            status,
            maintenance: tf.maintenance,
            strip_headers: strip_headers(&mut c, &p, &tf.strip_headers),
            guard: tenant_guard,
            playbook: Arc::new(watch::playbook(
                &mut c,
                "watch.playbook",
                &file.watch.playbook,
                tf.watch
                    .as_ref()
                    .map(|w| (format!("{p}.watch.playbook"), &w.playbook))
                    .as_ref()
                    .map(|(op, o)| (op.as_str(), *o)),
            )),
        });
    }
    // Most specific wildcard first.
    hosts_wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));

    let default_tenant = match &file.default_tenant {
        None => None,
        Some(id) => {
            let found = tenants.iter().position(|t| &t.id == id);
            if found.is_none() {
                c.push(
                    "default_tenant",
                    format!("no tenant has id `{id}`"),
                    Some("name one of the [[tenants]] ids"),
                );
            }
            found
        }
    };

    for (i, l) in listeners.iter().enumerate() {
        if l.protocol == ListenerProtocol::Https
            && !tenants.iter().any(|t| t.certificate.is_some() || t.acme)
        {
            c.push(
                format!("listeners[{i}].protocol"),
                "an https listener needs at least one tenant with a [tenants.tls] certificate",
                Some("add tls = { cert = \"...\", key = \"...\" } to a tenant"),
            );
        }
    }

    let acme = acme_settings(&mut c, &file.acme, base, tenants.iter().any(|t| t.acme));
    let cluster = file
        .cluster
        .as_ref()
        .and_then(|f| cluster_settings(&mut c, f, base));

    let prefixes = crate::shield::PrefixLengths {
        v4: file.shield.prefix_v4.unwrap_or(24),
        v6: file.shield.prefix_v6.unwrap_or(64),
    };
    if !(8..=32).contains(&prefixes.v4) {
        c.push(
            "shield.prefix_v4",
            format!("{} is out of range", prefixes.v4),
            Some("use 8 to 32 (24 groups a /24)"),
        );
    }
    if !(16..=128).contains(&prefixes.v6) {
        c.push(
            "shield.prefix_v6",
            format!("{} is out of range", prefixes.v6),
            Some("use 16 to 128 (64 groups a /64)"),
        );
    }

    let pass_keys = file.shield.secret_file.as_ref().and_then(|f| {
        match load_key_ring(&base.join(f)) {
            Ok(ring) => Some(Arc::new(ring)),
            Err(e) => {
                c.push(
                    "shield.secret_file",
                    e,
                    Some("one key per line, newest first, each at least 32 characters (for example `openssl rand -hex 32`)"),
                );
                None
            }
        }
    });

    let guard_settings = guard::settings(&mut c, &file.guard, base);
    // Cluster mode adds up the accounts' records across nodes by their hashes: every node
    // must hash with the same key.
    if cluster.is_some()
        && guard_settings.key.is_none()
        && tenants
            .iter()
            .any(|t| t.routes.iter().any(|r| r.guard.is_some()))
    {
        c.push(
            "guard.key_file",
            "cluster mode with guarded routes needs the accounts' key in a file",
            Some("the same guard.key_file on every node (32 random bytes or more), so an account's budget is the cluster's"),
        );
    }

    let log_full_client_address = match file.log.client_address.as_deref() {
        None | Some("prefix") => false,
        Some("full") => true,
        Some(other) => {
            c.push(
                "log.client_address",
                format!("unknown value `{other}`"),
                Some("use \"prefix\" or \"full\""),
            );
            false
        }
    };

    let status = status_settings(&mut c, &file.status, base);
    for (ti, (t, tf)) in tenants.iter_mut().zip(&file.tenants).enumerate() {
        let Some(spec) = t.status.as_mut() else {
            continue;
        };
        let asked = tf.status.as_ref().and_then(|s| s.subscriptions);
        spec.subscriptions = asked.unwrap_or(status.smtp.is_some());
        if spec.subscriptions && status.smtp.is_none() {
            c.push(
                format!("tenants[{ti}].status.subscriptions"),
                "e-mail subscriptions need a mail server",
                Some("add a [status.smtp] table, or set subscriptions = false"),
            );
        }
        if spec.subscriptions && spec.url.is_none() {
            c.push(
                format!("tenants[{ti}].status.url"),
                "e-mail subscriptions need the status page's public address (for the links in messages)",
                Some("set url = \"https://statut.ville.fr/\", or subscriptions = false"),
            );
        }
    }
    let tenant_ids: Vec<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
    let watch = watch::settings(
        &mut c,
        &file.watch,
        base,
        &tenant_ids,
        status.smtp.is_some(),
    );
    for t in &mut tenants {
        if file
            .tenants
            .iter()
            .any(|tf| tf.id == t.id && tf.watch.is_none())
        {
            // No playbook of its own: the global one (one copy).
            t.playbook = watch.playbook.clone();
        }
    }
    for (wi, w) in status.webhooks.iter().enumerate() {
        for (i, id) in w.tenants.iter().enumerate() {
            if !tenants.iter().any(|t| &t.id == id) {
                c.push(
                    format!("status.webhooks[{wi}].tenants[{i}]"),
                    format!("no tenant has id `{id}`"),
                    None,
                );
            }
        }
    }
    let stale_cache = StaleSettings {
        memory_bytes: file
            .degraded
            .stale_cache_bytes
            .unwrap_or(DEFAULT_STALE_CACHE_BYTES),
        entry_bytes: file
            .degraded
            .stale_entry_bytes
            .unwrap_or(DEFAULT_STALE_ENTRY_BYTES),
        disk_dir: file.degraded.stale_disk_dir.as_ref().map(|d| base.join(d)),
        disk_bytes: file
            .degraded
            .stale_disk_bytes
            .unwrap_or(DEFAULT_STALE_DISK_BYTES),
    };
    let request_buffering = RequestBuffering {
        per_body: l
            .request_buffer_bytes
            .unwrap_or(DEFAULT_REQUEST_BUFFER_BYTES),
        memory_total: l
            .request_buffers_total
            .unwrap_or(DEFAULT_REQUEST_BUFFERS_TOTAL),
        disk_total: l.request_spill_bytes.unwrap_or(DEFAULT_REQUEST_SPILL_BYTES),
        dir: match &l.request_spill_dir {
            Some(d) => base.join(d),
            None => default_spill_dir(),
        },
    };
    c.at_most(
        "limits.request_buffer_bytes",
        request_buffering.per_body,
        64 << 20,
        "bytes (64 MiB)",
    );
    c.at_most(
        "limits.request_buffers_total",
        request_buffering.memory_total,
        64 << 30,
        "bytes (64 GiB)",
    );
    c.at_most(
        "limits.request_spill_bytes",
        request_buffering.disk_total,
        1 << 40,
        "bytes (1 TiB)",
    );
    c.at_most(
        "degraded.stale_cache_bytes",
        stale_cache.memory_bytes,
        64 << 30,
        "bytes (64 GiB)",
    );
    c.at_most(
        "degraded.stale_entry_bytes",
        u64::try_from(stale_cache.entry_bytes).unwrap_or(u64::MAX),
        1 << 30,
        "bytes (1 GiB)",
    );
    c.at_most(
        "degraded.stale_disk_bytes",
        stale_cache.disk_bytes,
        1 << 40,
        "bytes (1 TiB)",
    );

    if c.problems.is_empty() {
        let watched_files = file
            .tenants
            .iter()
            .flat_map(|t| {
                [
                    &t.shield.allow_file,
                    &t.shield.deny_file,
                    &t.shield.trusted_networks_file,
                ]
                .into_iter()
                .chain(t.routes.iter().map(|r| &r.api_keys_file))
                .cloned()
                // A renewed certificate (certbot, lego) is served once both files are written.
                .chain(
                    t.tls
                        .iter()
                        .flat_map(|tls| [tls.cert.clone(), tls.key.clone()]),
                )
            })
            .chain(std::iter::once(file.shield.secret_file.clone()))
            .chain(std::iter::once(file.guard.key_file.clone()))
            .flatten()
            .map(|f| base.join(f))
            .collect();
        Ok(Runtime {
            acme,
            cluster,
            guard: guard_settings,
            watch,
            stale_cache,
            request_buffering,
            status,
            pass_keys,
            log_full_client_address,
            watched_files,
            prefixes,
            source: source.to_owned(),
            listeners,
            admin,
            timeouts,
            limits,
            trusted_proxies,
            via_name,
            x_real_ip: file.forwarding.x_real_ip,
            tenants,
            hosts_exact,
            hosts_wildcard,
            default_tenant,
        })
    } else {
        Err(c.problems)
    }
}

fn status_settings(c: &mut Collector, f: &StatusFile, base: &Path) -> StatusSettings {
    let time_zone_raw = f.time_zone.as_deref().unwrap_or(DEFAULT_TIME_ZONE);
    let time_zone = crate::common::TimeZone::parse(time_zone_raw).unwrap_or_else(|| {
        c.push(
            "status.time_zone",
            format!("unknown time zone `{time_zone_raw}`"),
            Some("use \"Europe/Paris\", \"UTC\" or a fixed offset such as \"+04:00\""),
        );
        crate::common::TimeZone::Paris
    });
    let publish_attempts = f.publish_attempts.unwrap_or(DEFAULT_PUBLISH_ATTEMPTS);
    if publish_attempts == 0 || publish_attempts > 10 {
        c.push(
            "status.publish_attempts",
            format!("{publish_attempts} is out of range"),
            Some("use 1 to 10"),
        );
    }
    if f.publish_command.is_some() && f.export_dir.is_none() {
        c.push(
            "status.publish_command",
            "a publish command needs an export directory to publish",
            Some("add status.export_dir = \"/var/lib/rempart/statut\""),
        );
    }
    if f.publish_command
        .as_deref()
        .is_some_and(|cmd| cmd.trim().is_empty())
    {
        c.push(
            "status.publish_command",
            "is empty",
            Some("remove the key or give a command"),
        );
    }
    let smtp = f.smtp.as_ref().map(|m| {
        let tls = match m.tls.as_deref().unwrap_or(DEFAULT_SMTP_TLS) {
            "starttls" => SmtpTls::StartTls,
            "tls" => SmtpTls::Tls,
            "none" => SmtpTls::None,
            other => {
                c.push(
                    "status.smtp.tls",
                    format!("unknown TLS mode `{other}`"),
                    Some("use \"starttls\", \"tls\" or \"none\""),
                );
                SmtpTls::StartTls
            }
        };
        if m.from.parse::<lettre::message::Mailbox>().is_err() {
            c.push(
                "status.smtp.from",
                format!("`{}` is not a mailbox", m.from),
                Some("write for example \"Ville de Saint-Exemple <statut@ville.fr>\""),
            );
        }
        let credentials = match (&m.username, &m.password_file) {
            (None, None) => None,
            (Some(u), Some(p)) => match std::fs::read_to_string(base.join(p)) {
                Ok(pw) => Some((u.clone(), pw.trim().to_owned())),
                Err(e) => {
                    c.push(
                        "status.smtp.password_file",
                        format!("cannot read `{p}`: {e}"),
                        Some("relative paths start at the config file's directory"),
                    );
                    None
                }
            },
            _ => {
                c.push(
                    "status.smtp.username",
                    "username and password_file go together",
                    None,
                );
                None
            }
        };
        Smtp {
            host: m.host.clone(),
            port: m.port.unwrap_or(match tls {
                SmtpTls::StartTls => 587,
                SmtpTls::Tls => 465,
                SmtpTls::None => 25,
            }),
            tls,
            from: m.from.clone(),
            credentials,
            max_per_second: m.max_per_second.unwrap_or(DEFAULT_SMTP_RATE).max(1),
        }
    });
    let mut webhooks = Vec::new();
    for (i, w) in f.webhooks.iter().enumerate() {
        let wp = format!("status.webhooks[{i}]");
        let url = match w.url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => u,
            _ => {
                c.push(
                    format!("{wp}.url"),
                    format!("`{}` is not an http(s) address", w.url),
                    Some("write for example \"https://hooks.example.fr/statut\""),
                );
                continue;
            }
        };
        let kind = match w.kind.as_deref().unwrap_or("json") {
            "json" => WebhookKind::Json,
            "mastodon" => WebhookKind::Mastodon,
            other => {
                c.push(
                    format!("{wp}.kind"),
                    format!("unknown kind `{other}`"),
                    Some("use \"json\" or \"mastodon\""),
                );
                continue;
            }
        };
        let secret = match &w.secret_file {
            None => None,
            Some(p) => match std::fs::read_to_string(base.join(p)) {
                Ok(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                Ok(_) => {
                    c.push(format!("{wp}.secret_file"), format!("`{p}` is empty"), None);
                    None
                }
                Err(e) => {
                    c.push(
                        format!("{wp}.secret_file"),
                        format!("cannot read `{p}`: {e}"),
                        Some("relative paths start at the config file's directory"),
                    );
                    None
                }
            },
        };
        if kind == WebhookKind::Mastodon && secret.is_none() {
            c.push(
                format!("{wp}.secret_file"),
                "a mastodon webhook needs the account's access token",
                Some("put the token in a file readable by rempart and name it here"),
            );
        }
        webhooks.push(Webhook {
            url,
            kind,
            secret,
            tenants: w.tenants.clone(),
        });
    }
    StatusSettings {
        smtp,
        webhooks,
        database: base.join(f.database.as_deref().unwrap_or(DEFAULT_STATUS_DATABASE)),
        export_dir: f.export_dir.as_ref().map(|d| base.join(d)),
        publish_command: f.publish_command.clone(),
        publish_attempts,
        time_zone,
    }
}

fn tenant_status(
    c: &mut Collector,
    p: &str,
    f: &TenantStatusFile,
    pools: &[PoolSpec],
    routes: &[Route],
) -> StatusSpec {
    let p = format!("{p}.status");
    let mut hosts = Vec::new();
    for (hi, h) in f.hosts.iter().enumerate() {
        let lower = h.to_ascii_lowercase();
        if !valid_host(&lower) || lower.starts_with('*') {
            c.push(
                format!("{p}.hosts[{hi}]"),
                format!("`{h}` is not a host name"),
                Some("write an exact name such as \"statut.ville.fr\", without scheme or port"),
            );
        } else {
            hosts.push(lower);
        }
    }
    let path = match f.path.as_deref() {
        None => Some(DEFAULT_STATUS_PATH.to_owned()),
        Some("") => None,
        Some(raw) => {
            let trimmed = raw.trim_end_matches('/');
            if !raw.starts_with('/')
                || trimmed.is_empty()
                || trimmed.starts_with(crate::common::LOCAL_PREFIX)
                || !trimmed
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-._".contains(&b))
            {
                c.push(
                    format!("{p}.path"),
                    format!("`{raw}` is not a usable path"),
                    Some("write for example \"/statut\", or \"\" to serve the page on its own hosts only"),
                );
                None
            } else {
                Some(trimmed.to_owned())
            }
        }
    };
    if path.is_none() && hosts.is_empty() && f.path.as_deref() == Some("") {
        c.push(
            p.clone(),
            "the status page has neither a path nor a host",
            Some("set hosts = [\"statut.ville.fr\"] or a path such as \"/statut\""),
        );
    }
    if let Some(url) = &f.url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            c.push(
                format!("{p}.url"),
                format!("`{url}` is not an http(s) address"),
                Some("write for example \"https://statut.ville.fr/\""),
            );
        }
    }
    let debounce = c.duration(
        &format!("{p}.debounce"),
        f.debounce.as_deref(),
        DEFAULT_STATUS_DEBOUNCE,
    );
    let slow = c.duration(&format!("{p}.slow"), f.slow.as_deref(), DEFAULT_STATUS_SLOW);
    let mut components: Vec<ComponentSpec> = Vec::new();
    for (ci, cf) in f.components.iter().enumerate() {
        let cp = format!("{p}.components[{ci}]");
        if !valid_id(&cf.id) {
            c.push(
                format!("{cp}.id"),
                format!("`{}` is not a valid id", cf.id),
                Some("use lower-case letters, digits, '-' and '_'"),
            );
        } else if components.iter().any(|o| o.id == cf.id) {
            c.push(
                format!("{cp}.id"),
                format!("duplicate component id `{}`", cf.id),
                None,
            );
        }
        let mut pool_idx = Vec::new();
        for (ri, r) in cf.routes.iter().enumerate() {
            match routes.iter().find(|route| &route.name == r) {
                Some(route) => pool_idx.push(route.pool),
                None => c.push(
                    format!("{cp}.routes[{ri}]"),
                    format!("no route is named `{r}`"),
                    Some("name one of the tenant's routes (its `name`, or its path prefix when unnamed)"),
                ),
            }
        }
        for (pi, name) in cf.pools.iter().enumerate() {
            match pools.iter().position(|pool| &pool.name == name) {
                Some(i) => pool_idx.push(i),
                None => c.push(
                    format!("{cp}.pools[{pi}]"),
                    format!("no pool is named `{name}`"),
                    Some("name one of the tenant's [[tenants.pools]]"),
                ),
            }
        }
        pool_idx.sort_unstable();
        pool_idx.dedup();
        components.push(ComponentSpec {
            id: cf.id.clone(),
            name: cf.name.clone(),
            name_en: cf.name_en.clone(),
            pools: pool_idx,
        });
    }
    if components.is_empty() {
        c.push(
            format!("{p}.components"),
            "a status page needs at least one component",
            Some("add [[tenants.status.components]] with id, name and the routes it covers"),
        );
    }
    StatusSpec {
        hosts,
        path,
        url: f.url.clone(),
        auto_publish: f.auto_publish,
        debounce,
        slow,
        alternatives: f.alternatives.clone(),
        subscriptions: f.subscriptions.unwrap_or(false),
        components,
    }
}

fn tenant_shield(
    c: &mut Collector,
    p: &str,
    f: &TenantShieldFile,
    base: &Path,
) -> crate::shield::Policy {
    use crate::shield::{Mode, Policy};
    let mode = match f.mode.as_deref() {
        None | Some("enforce") => Mode::Enforce,
        Some("log") => Mode::LogOnly,
        Some(other) => {
            c.push(
                format!("{p}.shield.mode"),
                format!("unknown mode `{other}`"),
                Some("use \"enforce\" or \"log\""),
            );
            Mode::Enforce
        }
    };
    for (i, path) in f.exempt_paths.iter().enumerate() {
        if !path.starts_with('/') {
            c.push(
                format!("{p}.shield.exempt_paths[{i}]"),
                format!("`{path}` must start with '/'"),
                None,
            );
        }
    }
    let address_rate = f.address_rate.unwrap_or(0);
    let prefix_rate = f.prefix_rate.unwrap_or(0);
    if address_rate > 0 && prefix_rate > 0 && prefix_rate < address_rate {
        c.push(
            format!("{p}.shield.prefix_rate"),
            format!("{prefix_rate} is below address_rate {address_rate}"),
            Some("a prefix holds many addresses: give it at least the per-address rate"),
        );
    }
    let mut list = |key: &str, file: &Option<String>| match file {
        None => std::sync::Arc::default(),
        Some(f) => match crate::shield::cidr::CidrSet::load(&base.join(f)) {
            Ok(set) => std::sync::Arc::new(set),
            Err(e) => {
                c.push(
                    format!("{p}.shield.{key}"),
                    e,
                    Some("one address or CIDR per line, # for comments"),
                );
                std::sync::Arc::default()
            }
        },
    };
    let allow = list("allow_file", &f.allow_file);
    let deny = list("deny_file", &f.deny_file);
    let mut trusted = (*list("trusted_networks_file", &f.trusted_networks_file)).clone();
    for (i, net) in f.trusted_networks.iter().enumerate() {
        let parsed = net
            .trim()
            .parse::<ipnet::IpNet>()
            .ok()
            .or_else(|| net.trim().parse::<std::net::IpAddr>().ok().map(Into::into));
        match parsed {
            Some(one) => trusted.insert(one),
            None => c.push(
                format!("{p}.shield.trusted_networks[{i}]"),
                format!("`{net}` is not an address or a CIDR"),
                Some("write the town's networks as \"192.0.2.0/24\" or \"2001:db8:5::/48\""),
            ),
        }
    }
    let shared_max = f.shared_max.unwrap_or(crate::shield::DEFAULT_SHARED_MAX);
    if !(1..=100_000).contains(&shared_max) {
        c.push(
            format!("{p}.shield.shared_max"),
            format!("{shared_max} is out of range"),
            Some("use 1 (no scaling for shared addresses) to 100000"),
        );
    }
    let ban_rate = f.ban_rate.unwrap_or(0);
    if ban_rate > 0 && (address_rate == 0 || ban_rate <= address_rate) {
        c.push(
            format!("{p}.shield.ban_rate"),
            format!("{ban_rate} needs an address_rate below it"),
            Some("set address_rate, and ban_rate well above it (a ban is for clients far over the limit)"),
        );
    }
    let ban_for = c.duration(&format!("{p}.shield.ban_for"), f.ban_for.as_deref(), "10m");
    let challenge_difficulty = f
        .challenge_difficulty
        .unwrap_or(DEFAULT_CHALLENGE_DIFFICULTY);
    if !(8..=24).contains(&challenge_difficulty) {
        c.push(
            format!("{p}.shield.challenge_difficulty"),
            format!("{challenge_difficulty} is out of range"),
            Some("use 8 to 24 leading zero bits; every extra bit doubles the work of an old phone"),
        );
    }
    let challenge_wait = c.duration(
        &format!("{p}.shield.challenge_wait"),
        f.challenge_wait.as_deref(),
        DEFAULT_CHALLENGE_WAIT,
    );
    if challenge_wait > Duration::from_secs(60) {
        c.push(
            format!("{p}.shield.challenge_wait"),
            format!("{challenge_wait:?} is too long for a person to wait"),
            Some("use at most \"60s\""),
        );
    }
    let pass_ttl = c.duration(
        &format!("{p}.shield.pass_ttl"),
        f.pass_ttl.as_deref(),
        DEFAULT_PASS_TTL,
    );
    let tarpit_for = c.duration(
        &format!("{p}.shield.tarpit_for"),
        f.tarpit_for.as_deref(),
        "10s",
    );
    if tarpit_for > Duration::from_secs(60) {
        c.push(
            format!("{p}.shield.tarpit_for"),
            format!("{tarpit_for:?} is too long"),
            Some("use at most \"60s\": held requests still take a connection each"),
        );
    }
    let good_history_after = c.duration_or_zero(
        &format!("{p}.shield.good_history_after"),
        f.good_history_after.as_deref(),
        "2m",
    );
    if good_history_after > Duration::from_secs(24 * 3600) {
        c.push(
            format!("{p}.shield.good_history_after"),
            format!("{good_history_after:?} is too long"),
            Some("use at most \"24h\""),
        );
    }
    let tarpit_ms = match f.over_limit.as_deref() {
        None | Some("reject") => 0,
        Some("tarpit") => u64::try_from(tarpit_for.as_millis()).unwrap_or(60_000),
        Some(other) => {
            c.push(
                format!("{p}.shield.over_limit"),
                format!("unknown action `{other}`"),
                Some("use \"reject\" or \"tarpit\""),
            );
            0
        }
    };
    Policy {
        error_rate: f.error_rate.unwrap_or(10),
        tarpit_ms,
        auto_challenge: f.auto_challenge.unwrap_or(true),
        under_attack: f.under_attack.unwrap_or(false),
        challenge_difficulty: challenge_difficulty.clamp(8, 24),
        challenge_wait_s: u8::try_from(challenge_wait.as_secs().min(60)).unwrap_or(60),
        pass_ttl_s: pass_ttl.as_secs().max(1),
        pass_rate: f.pass_rate.unwrap_or(DEFAULT_PASS_RATE),
        fingerprint_rate: f.fingerprint_rate.unwrap_or(0),
        mode,
        address_rate,
        prefix_rate,
        exempt_paths: f.exempt_paths.clone(),
        ban_rate,
        ban_for_ms: u64::try_from(ban_for.as_millis()).unwrap_or(u64::MAX),
        allow,
        deny,
        trusted: std::sync::Arc::new(trusted),
        shared_max: shared_max.clamp(1, 100_000),
        good_history_after_min: (good_history_after.as_secs() / 60).min(24 * 60),
    }
}

fn listeners(c: &mut Collector, files: &[ListenerFile]) -> Vec<Listener> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, lf) in files.iter().enumerate() {
        let p = format!("listeners[{i}]");
        let address = match lf.address.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                c.push(
                    format!("{p}.address"),
                    format!("`{}` is not a socket address", lf.address),
                    Some("write IP:PORT, e.g. \"0.0.0.0:443\" or \"[::]:80\""),
                );
                continue;
            }
        };
        if !seen.insert(address) {
            c.push(
                format!("{p}.address"),
                format!("address `{address}` is used twice"),
                None,
            );
        }
        let protocol = match lf.protocol.as_str() {
            "http" => ListenerProtocol::Http,
            "https" => ListenerProtocol::Https,
            other => {
                c.push(
                    format!("{p}.protocol"),
                    format!("unknown protocol `{other}`"),
                    Some("use \"http\" or \"https\""),
                );
                continue;
            }
        };
        out.push(Listener {
            name: lf
                .name
                .clone()
                .unwrap_or_else(|| format!("{}-{}", lf.protocol, address)),
            address,
            protocol,
            proxy_protocol: lf.proxy_protocol,
        });
    }
    out
}

fn admin(c: &mut Collector, a: &AdminFile, base: &Path) -> Admin {
    let raw = a.address.as_deref().unwrap_or(DEFAULT_ADMIN_ADDRESS);
    let address = match raw.parse::<SocketAddr>() {
        Ok(addr) => {
            if !addr.ip().is_loopback() && !a.allow_public {
                c.push("admin.address", format!("`{raw}` is not a loopback address"), Some("keep the admin API on 127.0.0.1, or set admin.allow_public = true behind a firewall"));
            }
            addr
        }
        Err(_) => {
            c.push(
                "admin.address",
                format!("`{raw}` is not a socket address"),
                Some("write IP:PORT, e.g. \"127.0.0.1:9180\""),
            );
            SocketAddr::from(([127, 0, 0, 1], 9180))
        }
    };
    let mut token = None;
    if let Some(f) = &a.token_file {
        match std::fs::read_to_string(base.join(f)) {
            Ok(s) if s.trim().len() >= 16 => token = Some(s.trim().to_owned()),
            Ok(_) => c.push(
                "admin.token_file",
                format!("token in `{f}` is shorter than 16 characters"),
                Some("generate one, e.g. `openssl rand -hex 32 > FILE`"),
            ),
            Err(e) => c.push("admin.token_file", format!("cannot read `{f}`: {e}"), None),
        }
    }
    if let Some(var) = &a.token_env {
        match std::env::var(var) {
            Ok(s) if s.trim().len() >= 16 => token = Some(s.trim().to_owned()),
            Ok(_) => c.push(
                "admin.token_env",
                format!("variable `{var}` holds fewer than 16 characters"),
                None,
            ),
            Err(_) => c.push(
                "admin.token_env",
                format!("variable `{var}` is not set"),
                None,
            ),
        }
    }
    Admin { address, token }
}

fn pools(c: &mut Collector, p: &str, files: &[PoolFile]) -> Vec<PoolSpec> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (pi, pf) in files.iter().enumerate() {
        let pp = format!("{p}.pools[{pi}]");
        if !valid_id(&pf.name) {
            c.push(
                format!("{pp}.name"),
                format!("`{}` is not a valid pool name", pf.name),
                Some("use lower-case letters, digits, '-' and '_'"),
            );
        } else if !names.insert(pf.name.clone()) {
            c.push(
                format!("{pp}.name"),
                format!("duplicate pool name `{}`", pf.name),
                None,
            );
        }
        let balance = match pf.balance.as_deref() {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_outstanding") => Balance::LeastOutstanding,
            Some(other) => {
                c.push(
                    format!("{pp}.balance"),
                    format!("unknown algorithm `{other}`"),
                    Some("use \"round_robin\" or \"least_outstanding\""),
                );
                Balance::RoundRobin
            }
        };
        if pf.servers.is_empty() {
            c.push(
                format!("{pp}.servers"),
                "a pool needs at least one server",
                Some("add servers = [{ address = \"127.0.0.1:8080\" }]"),
            );
        }
        let mut servers = Vec::new();
        for (si, sf) in pf.servers.iter().enumerate() {
            let sp = format!("{pp}.servers[{si}]");
            if !valid_authority(&sf.address) {
                c.push(
                    format!("{sp}.address"),
                    format!("`{}` is not HOST:PORT", sf.address),
                    Some("write for example \"10.0.0.5:8080\" (no scheme, no path)"),
                );
            }
            let weight = sf.weight.unwrap_or(DEFAULT_WEIGHT);
            if !(1..=1000).contains(&weight) {
                c.push(
                    format!("{sp}.weight"),
                    format!("weight {weight} is out of range"),
                    Some("use 1 to 1000"),
                );
            }
            servers.push(ServerSpec {
                address: sf.address.clone(),
                weight: weight.clamp(1, 1000),
            });
        }
        let h = &pf.health;
        if let Some(path) = &h.path {
            if !path.starts_with('/') {
                c.push(
                    format!("{pp}.health.path"),
                    format!("`{path}` must start with '/'"),
                    None,
                );
            }
        }
        let health = HealthSpec {
            path: h.path.clone(),
            interval: c.duration(
                &format!("{pp}.health.interval"),
                h.interval.as_deref(),
                DEFAULT_HEALTH_INTERVAL,
            ),
            timeout: c.duration(
                &format!("{pp}.health.timeout"),
                h.timeout.as_deref(),
                DEFAULT_HEALTH_TIMEOUT,
            ),
            healthy_threshold: h
                .healthy_threshold
                .unwrap_or(DEFAULT_HEALTHY_THRESHOLD)
                .max(1),
            unhealthy_threshold: h
                .unhealthy_threshold
                .unwrap_or(DEFAULT_UNHEALTHY_THRESHOLD)
                .max(1),
            passive_failures: h.passive_failures.unwrap_or(DEFAULT_PASSIVE_FAILURES),
            passive_eject: c.duration(
                &format!("{pp}.health.passive_eject"),
                h.passive_eject.as_deref(),
                DEFAULT_PASSIVE_EJECT,
            ),
        };
        let max_concurrency = pf.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
        let min_concurrency = pf.min_concurrency.unwrap_or(DEFAULT_MIN_CONCURRENCY).max(1);
        if max_concurrency > 0 && min_concurrency > max_concurrency {
            c.push(
                format!("{pp}.min_concurrency"),
                format!("{min_concurrency} is above max_concurrency {max_concurrency}"),
                None,
            );
        }
        c.at_most(
            &format!("{pp}.max_concurrency"),
            u64::from(max_concurrency),
            1_000_000,
            "requests",
        );
        c.at_most(
            &format!("{pp}.queue_size"),
            u64::try_from(pf.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE)).unwrap_or(u64::MAX),
            1_000_000,
            "requests",
        );
        let admission = crate::shield::admission::AdmissionSettings {
            max_concurrency,
            min_concurrency: min_concurrency.min(max_concurrency.max(1)),
            queue_size: pf.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE),
            queue_timeout: c.duration(
                &format!("{pp}.queue_timeout"),
                pf.queue_timeout.as_deref(),
                DEFAULT_QUEUE_TIMEOUT,
            ),
        };
        out.push(PoolSpec {
            name: pf.name.clone(),
            balance,
            servers,
            health,
            admission,
        });
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn routes(
    c: &mut Collector,
    p: &str,
    tf: &TenantFile,
    pools: &[PoolSpec],
    hosts: &[String],
    limits: &Limits,
    base: &Path,
    timeouts: &Timeouts,
    tenant_guard: &crate::guard::policy::TenantGuard,
) -> Vec<Route> {
    let mut out = Vec::new();
    if tf.routes.is_empty() {
        c.push(
            format!("{p}.routes"),
            "a tenant needs at least one route",
            Some("add [[tenants.routes]] with path_prefix = \"/\" and pool = \"...\""),
        );
    }
    for (ri, rf) in tf.routes.iter().enumerate() {
        let rp = format!("{p}.routes[{ri}]");
        if !rf.path_prefix.starts_with('/') {
            c.push(
                format!("{rp}.path_prefix"),
                format!("`{}` must start with '/'", rf.path_prefix),
                None,
            );
        } else {
            match crate::canonical::path::normalise(&rf.path_prefix) {
                Ok(canonical) if canonical.path == rf.path_prefix.as_str() => {}
                Ok(canonical) => c.push(
                    format!("{rp}.path_prefix"),
                    format!(
                        "`{}` is not in canonical form: requests are routed on their normalised path, so it would never match",
                        rf.path_prefix
                    ),
                    Some(&format!("write it as `{}`", canonical.path)),
                ),
                Err(e) => c.push(
                    format!("{rp}.path_prefix"),
                    format!("`{}`: {}", rf.path_prefix, e.reason()),
                    Some("requests with such a path are refused before routing"),
                ),
            }
        }
        let host = rf.host.as_ref().map(|h| h.to_ascii_lowercase());
        if let Some(h) = &host {
            if !hosts.contains(h) {
                c.push(
                    format!("{rp}.host"),
                    format!("`{h}` is not one of the tenant's hosts"),
                    Some("add it to the tenant's hosts or remove host from the route"),
                );
            }
        }
        let pool = match pools.iter().position(|pl| pl.name == rf.pool) {
            Some(i) => i,
            None => {
                let known: Vec<&str> = pools.iter().map(|pl| pl.name.as_str()).collect();
                c.push(
                    format!("{rp}.pool"),
                    format!("no pool named `{}` in this tenant", rf.pool),
                    Some(&format!("known pools: {}", known.join(", "))),
                );
                0
            }
        };
        if rf.cost.is_some_and(|c| !(1..=1000).contains(&c)) {
            c.push(
                format!("{rp}.cost"),
                format!("cost {} is out of range", rf.cost.unwrap_or(0)),
                Some("use 1 to 1000"),
            );
        }
        let api = match (&rf.api_key_header, &rf.api_keys_file) {
            (None, None) => None,
            (Some(h), Some(f)) => {
                let header = match http::HeaderName::from_bytes(h.as_bytes()) {
                    Ok(name) => Some(name),
                    Err(_) => {
                        c.push(
                            format!("{rp}.api_key_header"),
                            format!("`{h}` is not a header name"),
                            None,
                        );
                        None
                    }
                };
                let digests = match load_api_keys(&base.join(f)) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        c.push(
                            format!("{rp}.api_keys_file"),
                            e,
                            Some("one SHA-256 digest (64 hex digits) of a key per line: printf %s \"$KEY\" | sha256sum"),
                        );
                        None
                    }
                };
                header.zip(digests).map(|(header, digests)| ApiKeys {
                    header,
                    digests: Arc::new(digests),
                    rate: rf.api_key_rate.unwrap_or(20),
                })
            }
            _ => {
                c.push(
                    format!("{rp}.api_key_header"),
                    "api_key_header and api_keys_file go together",
                    None,
                );
                None
            }
        };
        let t = &rf.timeouts;
        if t.downstream_header_read.is_some()
            || t.downstream_body_grace.is_some()
            || t.downstream_idle.is_some()
            || t.upstream_connect.is_some()
            || t.shutdown_drain.is_some()
        {
            c.push(
                format!("{rp}.timeouts"),
                "only upstream_response_head and request can be set per route",
                None,
            );
        }
        let timeouts = RequestTimeouts {
            upstream_response_head: match &t.upstream_response_head {
                Some(v) => c.duration(
                    &format!("{rp}.timeouts.upstream_response_head"),
                    Some(v),
                    "",
                ),
                None => timeouts.per_request.upstream_response_head,
            },
            request: match &t.request {
                Some(v) => c.duration(&format!("{rp}.timeouts.request"), Some(v), ""),
                None => timeouts.per_request.request,
            },
        };
        let tenant_stale = c.duration_or_zero(
            &format!("{p}.stale_if_error"),
            tf.stale_if_error.as_deref(),
            DEFAULT_STALE_IF_ERROR,
        );
        // API answers are per key: never kept unless the route asks for it.
        let stale_if_error = match (&rf.stale_if_error, &api) {
            (Some(v), _) => c.duration_or_zero(&format!("{rp}.stale_if_error"), Some(v), ""),
            (None, Some(_)) => Duration::ZERO,
            (None, None) => tenant_stale,
        };
        out.push(Route {
            guard: rf
                .guard
                .as_ref()
                .map(|g| guard::route(c, &rp, g, tenant_guard)),
            maintenance: rf.maintenance,
            login: rf.login,
            essential: rf.essential.unwrap_or(true),
            allow_encoded_slash: rf.allow_encoded_slash,
            streaming_uploads: rf.stream_request_body.then(|| {
                let n = rf
                    .max_streaming_uploads
                    .unwrap_or(DEFAULT_MAX_STREAMING_UPLOADS);
                if n == 0 || n > 10_000 {
                    c.push(
                        format!("{rp}.max_streaming_uploads"),
                        format!("{n} is out of range"),
                        Some("use a value between 1 and 10000"),
                    );
                }
                n.clamp(1, 10_000)
            }),
            stale_if_error,
            name: rf.name.clone().unwrap_or_else(|| rf.path_prefix.clone()),
            host,
            path_prefix: rf.path_prefix.clone(),
            pool,
            max_body_bytes: match rf.max_body_bytes {
                Some(max) => {
                    c.at_most(
                        &format!("{rp}.max_body_bytes"),
                        max,
                        64 << 30,
                        "bytes (64 GiB)",
                    );
                    max
                }
                None => limits.max_body_bytes,
            },
            cost: rf.cost.unwrap_or(1),
            api,
            timeouts,
        });
    }
    // Host-specific routes before host-less ones, then longest prefix first.
    out.sort_by(|a, b| {
        b.host
            .is_some()
            .cmp(&a.host.is_some())
            .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
    });
    out
}

/// The private directory of spilled request bodies: under the system's temporary directory,
/// one per user (made with mode 0700 at first use).
fn default_spill_dir() -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    std::env::temp_dir().join(format!("rempart-bodies-{uid}"))
}

/// A tenant's `strip_headers`: field names (lower-cased); the fields the gateway writes or
/// needs cannot be listed.
fn strip_headers(c: &mut Collector, p: &str, names: &[String]) -> Vec<http::HeaderName> {
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            Ok(n)
                if n == http::header::HOST
                    || n == http::header::CONTENT_LENGTH
                    || n == http::header::TRANSFER_ENCODING =>
            {
                c.push(
                    format!("{p}.strip_headers[{i}]"),
                    format!("`{name}` cannot be stripped"),
                    Some("the gateway needs it to forward the request"),
                )
            }
            Ok(n) => out.push(n),
            Err(_) => c.push(
                format!("{p}.strip_headers[{i}]"),
                format!("`{name}` is not a header field name"),
                None,
            ),
        }
    }
    out
}

fn valid_authority(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok_and(|p| p != 0)
                && !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        }
        None => false,
    }
}

fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A name of this node or a key prefix: letters, digits, `.`, `_`, `-` (1 to 64).
fn is_cluster_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The cluster settings of `[cluster]`.
fn cluster_settings(
    c: &mut Collector,
    file: &ClusterFile,
    base: &Path,
) -> Option<crate::config::runtime::ClusterSettings> {
    let url = file.redis.trim();
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"));
    let Some(rest) = rest else {
        c.push(
            "cluster.redis",
            // Not printed: it may hold a password.
            "the address is not a redis:// or rediss:// URL",
            Some("for example redis://127.0.0.1:6379/0, or rediss://redis.ville.fr:6380 for TLS"),
        );
        return None;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'))
    {
        c.push(
            "cluster.redis",
            "the URL holds a password",
            Some("keep the user name in the URL (redis://rempart@host) and put the password in password_file"),
        );
        return None;
    }
    if authority.rsplit('@').next().unwrap_or_default().is_empty() {
        c.push("cluster.redis", format!("`{url}` names no host"), None);
        return None;
    }
    let password = match &file.password_file {
        None => None,
        Some(p) => match std::fs::read_to_string(base.join(p)) {
            Ok(pw) if !pw.trim().is_empty() => Some(pw.trim().to_owned()),
            Ok(_) => {
                c.push("cluster.password_file", format!("`{p}` is empty"), None);
                return None;
            }
            Err(e) => {
                c.push(
                    "cluster.password_file",
                    format!("cannot read `{p}`: {e}"),
                    Some("relative paths start at the config file's directory"),
                );
                return None;
            }
        },
    };
    let node = file.node.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    });
    if !is_cluster_name(&node) {
        c.push(
            "cluster.node",
            format!("`{node}` is not a usable node name"),
            Some("1 to 64 letters, digits, dots, dashes or underscores, unique in the cluster (node = \"mairie-1\")"),
        );
        return None;
    }
    let key_prefix = file
        .key_prefix
        .clone()
        .unwrap_or_else(|| "rempart".to_owned());
    if !is_cluster_name(&key_prefix) {
        c.push(
            "cluster.key_prefix",
            format!("`{key_prefix}` is not a usable key prefix"),
            Some("1 to 64 letters, digits, dots, dashes or underscores"),
        );
        return None;
    }
    let tls = url.starts_with("rediss://");
    let ca_pem = match &file.ca_file {
        None => None,
        Some(_) if !tls => {
            c.push(
                "cluster.ca_file",
                "an authority for a connection without TLS",
                Some("use a rediss:// URL (Redis with tls-port), or remove ca_file"),
            );
            return None;
        }
        Some(p) => match std::fs::read(base.join(p)) {
            Ok(pem)
                if CertificateDer::pem_slice_iter(&pem)
                    .next()
                    .is_some_and(|c| c.is_ok()) =>
            {
                Some(pem)
            }
            Ok(_) => {
                c.push(
                    "cluster.ca_file",
                    format!("`{p}` holds no PEM certificate"),
                    Some("the authority that signed the Redis server's certificate, in PEM (-----BEGIN CERTIFICATE-----)"),
                );
                return None;
            }
            Err(e) => {
                c.push(
                    "cluster.ca_file",
                    format!("cannot read `{p}`: {e}"),
                    Some("relative paths start at the config file's directory"),
                );
                return None;
            }
        },
    };
    let sentinel = match &file.sentinel {
        None => None,
        Some(s) => {
            if !is_cluster_name(&s.master) {
                c.push(
                    "cluster.sentinel.master",
                    format!("`{}` is not a usable master name", s.master),
                    Some("the name in the Sentinels' `sentinel monitor NAME host port quorum`"),
                );
                return None;
            }
            let mut addresses = Vec::new();
            for a in &s.addresses {
                let parsed = a
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
                    .filter(|(h, p)| !h.is_empty() && *p != 0);
                let Some((host, port)) = parsed else {
                    c.push(
                        "cluster.sentinel.addresses",
                        format!("`{a}` is not host:port"),
                        Some("for example addresses = [\"10.0.0.5:26379\", \"10.0.0.6:26379\", \"10.0.0.7:26379\"]"),
                    );
                    return None;
                };
                addresses.push((host.to_owned(), port));
            }
            if addresses.is_empty() {
                c.push(
                    "cluster.sentinel.addresses",
                    "no Sentinel",
                    Some("list every Sentinel (three, on three machines, for a quorum of two)"),
                );
                return None;
            }
            Some((s.master.clone(), addresses))
        }
    };
    Some(crate::config::runtime::ClusterSettings {
        redis: url.to_owned(),
        password,
        node,
        key_prefix,
        ca_pem,
        sentinel,
    })
}

/// The ACME authority's settings, when a tenant uses it (`used`).
fn acme_settings(
    c: &mut Collector,
    file: &AcmeFile,
    base: &Path,
    used: bool,
) -> Option<crate::config::runtime::AcmeSettings> {
    let directory = file
        .directory
        .clone()
        .unwrap_or_else(|| DEFAULT_ACME_DIRECTORY.to_owned());
    if !directory.starts_with("https://") {
        c.push(
            "acme.directory",
            format!("`{directory}` is not an https:// URL"),
            Some("the authority's directory URL, for example https://acme-v02.api.letsencrypt.org/directory"),
        );
    }
    let contact = file.contact.as_ref().map(|m| {
        if !m.contains('@') || m.contains(char::is_whitespace) {
            c.push(
                "acme.contact",
                format!("`{m}` is not an e-mail address"),
                Some("the address the authority writes to about expiring certificates"),
            );
        }
        format!("mailto:{}", m.trim_start_matches("mailto:"))
    });
    let mut ca_roots = Vec::new();
    if let Some(f) = &file.ca_file {
        match CertificateDer::pem_file_iter(base.join(f))
            .map_err(|e| e.to_string())
            .and_then(|certs| {
                certs
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())
            }) {
            Ok(certs) if !certs.is_empty() => ca_roots = certs,
            Ok(_) => c.push("acme.ca_file", format!("no certificate in `{f}`"), None),
            Err(e) => c.push("acme.ca_file", format!("cannot read `{f}`: {e}"), None),
        }
    }
    let challenge = match file.challenge.as_deref() {
        None | Some("http-01") => crate::config::runtime::AcmeChallenge::Http01,
        Some("tls-alpn-01") => crate::config::runtime::AcmeChallenge::TlsAlpn01,
        Some(other) => {
            c.push(
                "acme.challenge",
                format!("unknown challenge `{other}`"),
                Some("use \"http-01\" (port 80) or \"tls-alpn-01\" (port 443)"),
            );
            crate::config::runtime::AcmeChallenge::Http01
        }
    };
    used.then(|| crate::config::runtime::AcmeSettings {
        challenge,
        directory,
        contact,
        state_dir: base.join(file.state_dir.as_deref().unwrap_or(DEFAULT_ACME_STATE_DIR)),
        ca_roots,
    })
}

/// A tenant's HTTPS policy: the port plain HTTP is redirected to, and its HSTS value.
fn https_policy(
    c: &mut Collector,
    p: &str,
    tf: &TenantFile,
    listeners: &[Listener],
) -> (Option<u16>, Option<http::HeaderValue>) {
    let https_port = listeners
        .iter()
        .find(|l| l.protocol == ListenerProtocol::Https)
        .map(|l| l.address.port());
    let has_tls = tf.tls.is_some();
    let redirect = match (tf.https_redirect, https_port) {
        (Some(true), None) => {
            c.push(
                format!("{p}.https_redirect"),
                "no `https` listener to redirect to".to_owned(),
                Some("add a [[listeners]] with protocol = \"https\", or remove https_redirect"),
            );
            None
        }
        (Some(true), Some(_)) if !has_tls => {
            c.push(
                format!("{p}.https_redirect"),
                "the tenant has no certificate: its visitors would be sent to a failing HTTPS"
                    .to_owned(),
                Some("give it `tls = { cert, key }` first"),
            );
            None
        }
        (Some(true), port) => port,
        (Some(false), _) => None,
        (None, port) => port.filter(|_| has_tls),
    };
    let default_age = has_tls.then_some(DEFAULT_HSTS_MAX_AGE);
    let max_age = match tf.hsts_max_age.as_deref().or(default_age) {
        None => None,
        Some(raw) => match parse_duration(raw) {
            Ok(d) => Some(d.as_secs()),
            Err(e) => {
                c.push(
                    format!("{p}.hsts_max_age"),
                    e,
                    Some("a duration such as \"365d\", or \"0s\" for none"),
                );
                None
            }
        },
    };
    if (tf.hsts_include_subdomains || tf.hsts_preload || tf.hsts_max_age.is_some()) && !has_tls {
        c.push(
            format!("{p}.hsts_max_age"),
            "HSTS without a certificate: the tenant serves no HTTPS".to_owned(),
            Some("give it `tls = { cert, key }`, or remove the hsts_* keys"),
        );
    }
    if tf.hsts_preload && (!tf.hsts_include_subdomains || max_age.is_none_or(|a| a < 31_536_000)) {
        c.push(
            format!("{p}.hsts_preload"),
            "preload lists take only `includeSubDomains` and a max-age of a year or more"
                .to_owned(),
            Some("set hsts_include_subdomains = true and hsts_max_age = \"365d\" or more"),
        );
    }
    let hsts = max_age.filter(|a| *a > 0 && has_tls).map(|age| {
        let mut value = format!("max-age={age}");
        if tf.hsts_include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if tf.hsts_preload {
            value.push_str("; preload");
        }
        http::HeaderValue::from_str(&value).unwrap_or(http::HeaderValue::from_static("max-age=0"))
    });
    (redirect, hsts)
}

/// A certificate chain and its key from PEM text (another node's certificate in cluster
/// mode), refused when the key is not the certificate's.
pub fn certified_key_from_pem(chain: &str, key: &str) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate".into());
    }
    let key_der = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| format!("bad private key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(certs, signing);
    if let Err(rustls::Error::InconsistentKeys(_)) = certified.keys_match() {
        return Err("the private key does not belong to the certificate".into());
    }
    Ok(certified)
}

/// Loads a PEM chain and key into a rustls `CertifiedKey` (ring provider).
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let read = |path: &Path, what: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {what} `{}`: {e}", path.display()))
    };
    let (chain, key_pem) = (read(cert, "certificate")?, read(key, "private key")?);
    // A key from another certificate (a renewal half copied) makes every handshake fail:
    // refused here, naming both files.
    certified_key_from_pem(&chain, &key_pem).map_err(|e| {
        format!(
            "{e} (certificate `{}`, private key `{}`)",
            cert.display(),
            key.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn hosts() {
        assert!(valid_host("www.saint-exemple.fr"));
        assert!(valid_host("*.saint-exemple.fr"));
        assert!(!valid_host("http://x.fr"));
        assert!(!valid_host("x.fr:80"));
        assert!(!valid_host("a..b"));
    }

    #[test]
    fn authorities() {
        assert!(valid_authority("127.0.0.1:80"));
        assert!(valid_authority("origin.local:8080"));
        assert!(valid_authority("[::1]:80"));
        assert!(!valid_authority("http://x:80"));
        assert!(!valid_authority("x"));
        assert!(!valid_authority("x:0"));
    }
}
