//! Cluster mode: gateways on several machines sharing their defence through Redis (or
//! Valkey). Today: bans, the key that signs passes and challenges, and the challenge
//! answers already used. A ban made on one node (by an operator or by the shield) is in
//! force on every node within a second; a node that starts, or comes back after Redis was
//! away, loads the others' bans and publishes its own. A pass earned through one node is
//! valid on all, and a proof of work accepted by one node is refused as a replay by the
//! others.
//!
//! Never in a request's way: the request path reads only this node's ban list
//! (`ClusterBans` is a `state::BanStore` over the local one); changes wait in a set of
//! pending changes (one entry per ban target, so it never grows past the bans themselves)
//! that the link task (`link`) writes to Redis. Without Redis every node goes on defending
//! with what it has, says it is degraded (log, metric, `rempart cluster status`) and catches
//! up when Redis is back: nothing made meanwhile is lost.
//!
//! In Redis (`PREFIX` is `cluster.key_prefix`):
//! - `PREFIX:bans`, a hash: ban target -> the ban as JSON (reason, end in Unix ms, node);
//! - `PREFIX:events`, a channel: every ban and lift as it is made;
//! - `PREFIX:node:NAME`, each node's heartbeat (expires after `NODE_TTL_S`);
//! - `PREFIX:pass-secret`, the secret signing passes and challenges when the configuration
//!   names none (made by the first node, taken by the others);
//! - `PREFIX:replay`, a channel: each challenge answer accepted, as (partition, nonce);
//! - `PREFIX:tenants`, a channel: each node's vigilance level per tenant (every second) and
//!   operators' under-attack switches as they are made;
//! - `PREFIX:under-attack`, a hash: tenant -> the under-attack switch in force (for nodes
//!   that start later);
//! - `PREFIX:acme-lease`, the node that orders certificates for all (renewed every second,
//!   expires after `ACME_LEASE_MS`); `PREFIX:acme`, a channel: the proofs the authority
//!   checks (any node may be the one it reaches) and each certificate obtained;
//!   `PREFIX:certs`, a hash: tenant -> its certificate and key (PEM), for nodes that start
//!   later; `PREFIX:acme-proofs`, a hash: proof id -> the proof, while the authority may
//!   check it (for nodes that connect during an order; gone 10 minutes after the last);
//! - `PREFIX:status-lease`, the node that writes the status boards; `PREFIX:status`, a
//!   channel: each board as the writer now holds it, the others' changes for the writer and
//!   its answers; `PREFIX:status-boards`, a hash: tenant -> its board, for nodes that start
//!   later; `PREFIX:status-secret`, the key of the residents' links (see `boards`);
//! - `PREFIX:incidents`, a channel: each node's security incidents as they change, and
//!   operators' actions on another node's incident with its answers; and a hash of the
//!   same name: `NODE/NUMBER` -> the incident, for nodes that start later (see
//!   `incidents`).

pub mod boards;
pub mod incidents;
pub mod link;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::runtime::ClusterSettings;
use crate::shield::bans::{BanHit, BanInfo, BanList};
use crate::shield::defence::Defence;
use crate::shield::sketch::SketchReport;
use crate::state::local::LocalReplay;
use crate::state::{BanStore, ReplayStore};

/// How long the renewal lease lasts without being renewed (its holder renews it every
/// second).
pub const ACME_LEASE_MS: u64 = 10_000;

/// What nodes tell each other about certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AcmeNews {
    /// A proof the authority is about to check (`active`), or done with.
    Proof {
        /// The node ordering.
        node: String,
        /// The proof.
        proof: crate::acme::Proof,
        /// Expected now, or no longer.
        active: bool,
    },
    /// A node answers another's proof (the ordering node waits for every node's word before
    /// the authority checks).
    Held {
        /// The node answering.
        node: String,
        /// The proof's id (`Proof::id`).
        proof: String,
    },
    /// A certificate obtained.
    Certificate {
        /// The node that ordered it.
        node: String,
        /// Tenant id.
        tenant: String,
        /// PEM chain.
        chain: String,
        /// PEM private key.
        key: String,
    },
}

/// Seconds another node's level holds here without being told again (it tells every
/// second; a node gone, or Redis away, stops counting after this).
pub const LEVEL_TTL_MS: u64 = 5_000;

/// What nodes tell each other about a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TenantNews {
    /// A node's own vigilance levels (tenants above vert), told every second.
    Levels {
        /// The node.
        node: String,
        /// (tenant, level).
        levels: Vec<(String, crate::common::Level)>,
    },
    /// An operator switched under-attack mode on (until a Unix ms time, `u64::MAX` for
    /// until switched off) or off (0).
    UnderAttack {
        /// The node it was switched on.
        node: String,
        /// Tenant id.
        tenant: String,
        /// Until when (Unix ms).
        until_ms: u64,
    },
}

/// One tenant's levels on the other nodes: node -> (level, when told, Unix ms).
type NodeLevels = HashMap<String, (crate::common::Level, u64)>;

/// What the wiring does when another node's news changes a tenant here: its effective
/// level (`Some`: recompute it from this node's and the others') or its under-attack mode
/// (`until` in Unix ms).
pub trait TenantEffects: Send + Sync {
    /// The others' levels for `tenant` changed.
    fn level(&self, tenant: &str);
    /// Another node's operator switched under-attack mode.
    fn under_attack(&self, tenant: &str, until_unix_ms: u64);
    /// Another node obtained a certificate for `tenant` (PEM chain and key).
    fn certificate(&self, tenant: &str, chain: &str, key: &str);
    /// The shield whose rate counters are shared (the current generation's).
    fn shield(&self) -> Option<Arc<crate::shield::Shield>>;
    /// Another node's data guard news: records accounts took there, suspensions.
    fn guard(&self, news: GuardNews);
}

/// What a node's data guard tells the others: records taken (tenant, account hash, scope,
/// records) and suspensions (tenant, account hash, suspended or lifted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardNews {
    /// The node.
    pub node: String,
    /// Records taken.
    pub taken: Vec<(String, u64, u64, u64)>,
    /// Suspensions and lifts.
    pub suspensions: Vec<(String, u64, bool)>,
}

/// How long another node's rate counts count here without a newer report (it reports every
/// `link::RATE_TICK`).
pub const RATE_TTL_MS: u64 = 1_000;

/// One node's report of its rate counters: each sketch in use with its current window's
/// counts (index, count).
type RateReport = Vec<(String, SketchReport)>;

/// The first byte of a rate report (a node name is never 255 bytes long, so a report of an
/// older format, which starts with its length, is told apart), then its format.
const RATES_MARK: u8 = 0xFF;
const RATES_FORMAT: u8 = 2;

/// A rate report as bytes: the mark and format, the node's name, then each sketch's name,
/// window number and the counts of that window and of the one before (little-endian), each
/// name prefixed by its length and each list by its count.
pub fn encode_rates(node: &str, report: &[(&str, SketchReport)]) -> Vec<u8> {
    let mut out = vec![RATES_MARK, RATES_FORMAT];
    let name = |out: &mut Vec<u8>, s: &str| {
        let b = &s.as_bytes()[..s.len().min(254)];
        out.push(b.len() as u8);
        out.extend_from_slice(b);
    };
    let counts = |out: &mut Vec<u8>, counts: &[(u32, u32)]| {
        out.extend_from_slice(
            &u32::try_from(counts.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        for (i, c) in counts {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&c.to_le_bytes());
        }
    };
    name(&mut out, node);
    out.push(report.len().min(255) as u8);
    for (sketch, r) in report.iter().take(255) {
        name(&mut out, sketch);
        out.extend_from_slice(&r.window.to_le_bytes());
        counts(&mut out, &r.current);
        counts(&mut out, &r.previous);
    }
    out
}

/// `encode_rates`'s bytes read back; `None` when damaged or of another format.
pub fn decode_rates(bytes: &[u8]) -> Option<(String, RateReport)> {
    let mut at = 0;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(at..at + n)?;
        at += n;
        Some(s)
    };
    if take(2)? != [RATES_MARK, RATES_FORMAT] {
        return None;
    }
    let node_len = *take(1)?.first()? as usize;
    let node = String::from_utf8(take(node_len)?.to_vec()).ok()?;
    let sketches = *take(1)?.first()? as usize;
    let mut report = Vec::with_capacity(sketches);
    for _ in 0..sketches {
        let len = *take(1)?.first()? as usize;
        let sketch = String::from_utf8(take(len)?.to_vec()).ok()?;
        let window = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            if n > bytes.len() / 8 {
                return None;
            }
            list.reserve(n);
            for _ in 0..n {
                let i = u32::from_le_bytes(take(4)?.try_into().ok()?);
                let c = u32::from_le_bytes(take(4)?.try_into().ok()?);
                list.push((i, c));
            }
        }
        let [current, previous] = lists;
        report.push((
            sketch,
            SketchReport {
                window,
                current,
                previous,
            },
        ));
    }
    Some((node, report))
}

/// Answers accepted here and not yet published, at most (past it, the oldest are not
/// published: a replay of those on another node is then possible, once, and counted).
const REPLAY_PENDING_MAX: usize = 10_000;

/// Seconds a node's heartbeat lives: a node silent this long is no longer listed.
pub const NODE_TTL_S: u64 = 5;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One ban made or lifted, as nodes tell each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanChange {
    /// Address or network (`203.0.113.0/24`).
    pub target: String,
    /// Why (empty for a lift).
    #[serde(default)]
    pub reason: String,
    /// End (Unix ms); `None`: until lifted.
    pub until_ms: Option<u64>,
    /// A lift rather than a ban.
    #[serde(default)]
    pub lifted: bool,
    /// The node it was made on.
    pub node: String,
    /// When (Unix ms).
    pub at_ms: u64,
}

/// Another node, as its heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSeen {
    /// Its name.
    pub node: String,
    /// Its version.
    pub version: String,
    /// Its last heartbeat (Unix ms).
    pub at_ms: u64,
    /// Whether it is this node.
    #[serde(default)]
    pub this: bool,
}

/// What `rempart cluster status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// This node.
    pub node: String,
    /// Redis, without credentials.
    pub redis: String,
    /// Whether Redis is out of reach (the node defends alone meanwhile).
    pub degraded: bool,
    /// Since when it is (Unix ms), if it is.
    pub degraded_since_ms: Option<u64>,
    /// Why, if it is (the last failure: connecting, TLS, authentication, ...).
    #[serde(default)]
    pub degraded_why: Option<String>,
    /// The last exchange with Redis (Unix ms).
    pub last_sync_ms: Option<u64>,
    /// Changes made here and not yet in Redis.
    pub pending: usize,
    /// The nodes whose heartbeat is current, this one included.
    pub nodes: Vec<NodeSeen>,
    /// Bans taken from other nodes since start.
    pub bans_received: u64,
    /// Bans and lifts sent to the others since start.
    pub bans_sent: u64,
    /// Whether passes are signed with the cluster's shared key (valid on every node).
    pub shared_pass_key: bool,
    /// Challenge answers not published to the others (more at once than the pending list
    /// holds).
    pub replays_unpublished: u64,
    /// Challenge answers accepted by the others, received (refused here from then on).
    pub answers_received: u64,
    /// Whether this node orders the cluster's certificates (it holds the renewal lease).
    pub acme_lease: bool,
    /// Whether this node writes the status boards (it holds the status lease).
    #[serde(default)]
    pub status_lease: bool,
    /// The other nodes' rate reports received (ten a second from each busy node).
    pub rate_reports_received: u64,
}

/// This node's side of the cluster: its settings, its link's state, the changes waiting for
/// Redis.
pub struct Cluster {
    settings: ClusterSettings,
    /// The ban list the request path reads.
    local: Arc<BanList>,
    /// Changes made here, not yet written to Redis, by target.
    pending: Mutex<HashMap<String, BanChange>>,
    /// Wakes the link when a change is pending.
    wake: tokio::sync::Notify,
    degraded: AtomicBool,
    degraded_since_ms: AtomicU64,
    /// Why Redis is out of reach, while it is (after the first attempt).
    why_degraded: Mutex<Option<String>>,
    last_sync_ms: AtomicU64,
    nodes: Mutex<Vec<NodeSeen>>,
    received: AtomicU64,
    sent: AtomicU64,
    gauges: std::sync::OnceLock<Gauges>,
    /// The node's defence state (its key ring takes the cluster's shared secret).
    defence: std::sync::OnceLock<Arc<Defence>>,
    /// Challenge answers used, this node's and the others'.
    replay: Arc<LocalReplay>,
    /// Answers accepted here, not yet published: (partition, nonce).
    replay_pending: Mutex<Vec<(u64, u64)>>,
    /// Answers that could not wait for publication (the pending list was full).
    replay_dropped: AtomicU64,
    /// Answers the others accepted, received.
    replay_received: AtomicU64,
    /// This node's vigilance levels (tenants above vert), as the watch set them.
    own_levels: Mutex<HashMap<String, crate::common::Level>>,
    /// The others' levels: tenant -> node -> (level, when told, Unix ms).
    remote_levels: Mutex<HashMap<String, NodeLevels>>,
    /// Under-attack switches made here, not yet written: tenant -> until (Unix ms).
    under_attack_pending: Mutex<HashMap<String, u64>>,
    /// Levels changed here since they were last told.
    levels_changed: AtomicBool,
    /// What to do with the others' news.
    effects: std::sync::OnceLock<Arc<dyn TenantEffects>>,
    /// The certificates' state (proofs answered, certificates served).
    acme: std::sync::OnceLock<Arc<crate::acme::Acme>>,
    /// Certificate news made here, not yet told.
    acme_pending: Mutex<Vec<AcmeNews>>,
    /// Whether this node holds the renewal lease.
    acme_lease: AtomicBool,
    /// The status boards (shown here, written here while this node holds the lease).
    status: std::sync::OnceLock<Arc<crate::status::StatusService>>,
    /// Whether this node holds the status lease.
    status_lease: AtomicBool,
    /// Boards, switches, changes and answers not yet told.
    boards_pending: Mutex<boards::BoardsPending>,
    /// Changes sent to the writer whose answer an operator waits for: number -> waiter.
    answers_waited:
        Mutex<HashMap<u64, tokio::sync::oneshot::Sender<crate::status::shared::Answer>>>,
    /// The next change's number (1 and up; 0 is "no answer wanted").
    next_change: AtomicU64,
    /// The watch (its incidents told to the others).
    watch: std::sync::OnceLock<Arc<crate::watch::service::WatchService>>,
    /// The others' incidents: (node, number) -> incident.
    others_incidents: Mutex<HashMap<(String, u64), crate::watch::incident::Incident>>,
    /// Incidents, actions and answers not yet told.
    incidents_pending: Mutex<incidents::IncidentsPending>,
    /// Actions sent to another node whose answer an operator waits for.
    incident_answers: Mutex<HashMap<u64, incidents::AnswerTo>>,
    /// This node's active proofs: id -> when it was published and who answers it.
    proof_holders: Mutex<HashMap<String, ProofWait>>,
    /// A node said it answers a proof, a proof was published, or the nodes were listed.
    proof_held: tokio::sync::Notify,
    /// Node listings made since start (each heartbeat lists the nodes).
    listings: AtomicU64,
    /// The other nodes' last rate reports: node -> (when, Unix ms; report).
    rates: Mutex<HashMap<String, (u64, RateReport)>>,
    /// Rate reports received.
    rates_received: AtomicU64,
    /// The data guard's news made here, not yet told.
    guard_pending: Mutex<GuardNews>,
}

/// The metrics a node keeps current: degraded, nodes seen, changes pending.
#[derive(Debug, Clone)]
pub struct Gauges {
    /// 1 while Redis is out of reach.
    pub degraded: prometheus_client::metrics::gauge::Gauge,
    /// Nodes seen.
    pub nodes: prometheus_client::metrics::gauge::Gauge,
    /// Changes waiting for Redis.
    pub pending: prometheus_client::metrics::gauge::Gauge,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.settings.node)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// This node's cluster state, degraded until the link first reaches Redis.
    pub fn new(settings: ClusterSettings) -> Arc<Self> {
        let now = crate::clock::unix_now_ms();
        Arc::new(Self {
            settings,
            local: Arc::new(BanList::new()),
            pending: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            degraded: AtomicBool::new(true),
            degraded_since_ms: AtomicU64::new(now),
            why_degraded: Mutex::default(),
            last_sync_ms: AtomicU64::new(0),
            nodes: Mutex::default(),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            gauges: std::sync::OnceLock::new(),
            defence: std::sync::OnceLock::new(),
            replay: Arc::new(LocalReplay::default()),
            replay_pending: Mutex::default(),
            replay_dropped: AtomicU64::new(0),
            replay_received: AtomicU64::new(0),
            own_levels: Mutex::default(),
            remote_levels: Mutex::default(),
            under_attack_pending: Mutex::default(),
            levels_changed: AtomicBool::new(false),
            effects: std::sync::OnceLock::new(),
            acme: std::sync::OnceLock::new(),
            acme_pending: Mutex::default(),
            acme_lease: AtomicBool::new(false),
            status: std::sync::OnceLock::new(),
            status_lease: AtomicBool::new(false),
            boards_pending: Mutex::default(),
            answers_waited: Mutex::default(),
            next_change: AtomicU64::new(1),
            watch: std::sync::OnceLock::new(),
            others_incidents: Mutex::default(),
            incidents_pending: Mutex::default(),
            incident_answers: Mutex::default(),
            proof_holders: Mutex::default(),
            proof_held: tokio::sync::Notify::new(),
            listings: AtomicU64::new(0),
            rates: Mutex::default(),
            rates_received: AtomicU64::new(0),
            guard_pending: Mutex::default(),
        })
    }

    /// Shares the renewals of `acme`: this node orders only while it holds the lease, and
    /// answers and serves what the holder orders.
    pub fn attach_acme(self: &Arc<Self>, acme: Arc<crate::acme::Acme>) {
        acme.share_with(Arc::new(ClusterAcme(self.clone())));
        let _ = self.acme.set(acme);
    }

    fn acme_from(&self, news: AcmeNews) {
        match news {
            AcmeNews::Proof {
                node,
                proof,
                active,
            } if node != self.settings.node => {
                if let Some(acme) = self.acme.get() {
                    acme.take_proof(&proof, active);
                    if active {
                        lock(&self.acme_pending).push(AcmeNews::Held {
                            node: self.settings.node.clone(),
                            proof: proof.id(),
                        });
                        self.wake.notify_one();
                    }
                }
            }
            AcmeNews::Held { node, proof } if node != self.settings.node => {
                if let Some(wait) = lock(&self.proof_holders).get_mut(&proof) {
                    wait.holders.insert(node);
                    self.proof_held.notify_waiters();
                }
            }
            AcmeNews::Certificate {
                node,
                tenant,
                chain,
                key,
            } if node != self.settings.node => {
                if let Some(effects) = self.effects.get() {
                    effects.certificate(&tenant, &chain, &key);
                }
            }
            _ => {}
        }
    }

    /// Another node's rate report: the counts of every node still reporting are summed into
    /// this node's shield (and a node that stopped reporting stops counting).
    fn rates_from(&self, node: String, report: RateReport, now_unix_ms: u64) {
        if node == self.settings.node {
            return;
        }
        lock(&self.rates).insert(node, (now_unix_ms, report));
        self.rates_received.fetch_add(1, Ordering::Relaxed);
        self.apply_rates(now_unix_ms);
    }

    /// Sums the fresh reports into the shield's remote counts; forgets stale ones.
    fn apply_rates(&self, now_unix_ms: u64) {
        let Some(shield) = self.effects.get().and_then(|e| e.shield()) else {
            return;
        };
        let mut rates = lock(&self.rates);
        // Per sketch and window (windows are cut at the same instants on every node): the
        // sum of every fresh report's counts.
        let mut sums: HashMap<(String, u64), HashMap<u32, u32>> = HashMap::new();
        for (at, report) in rates.values() {
            let fresh = now_unix_ms.saturating_sub(*at) < RATE_TTL_MS;
            for (sketch, r) in report {
                let windows = [Some(r.window), r.window.checked_sub(1)];
                for (window, counts) in windows.into_iter().zip([&r.current, &r.previous]) {
                    let Some(window) = window else { continue };
                    let sum = sums.entry((sketch.clone(), window)).or_default();
                    if fresh {
                        for (i, c) in counts {
                            let v = sum.entry(*i).or_default();
                            *v = v.saturating_add(*c);
                        }
                    }
                }
            }
        }
        rates.retain(|_, (at, _)| now_unix_ms.saturating_sub(*at) < RATE_TTL_MS);
        drop(rates);
        // Older windows first: a generation never goes back to an older one.
        let mut sums: Vec<_> = sums.into_iter().collect();
        sums.sort_by_key(|((_, window), _)| *window);
        for ((sketch, window), sum) in sums {
            let counts: Vec<(u32, u32)> = sum.into_iter().collect();
            shield.set_remote_counts(&sketch, window, &counts);
        }
    }

    /// The data guard's side: what accounts take here is told to the others.
    pub fn guard_share(self: &Arc<Self>) -> Arc<dyn crate::state::GuardShare> {
        Arc::new(ClusterGuard(self.clone()))
    }

    fn take_guard_pending(&self) -> Option<GuardNews> {
        let mut pending = lock(&self.guard_pending);
        if pending.taken.is_empty() && pending.suspensions.is_empty() {
            return None;
        }
        let mut news = std::mem::take(&mut *pending);
        news.node = self.settings.node.clone();
        Some(news)
    }

    fn guard_from(&self, news: GuardNews) {
        if news.node == self.settings.node {
            return;
        }
        if let Some(effects) = self.effects.get() {
            effects.guard(news);
        }
    }

    /// What to do with the others' levels and under-attack switches.
    pub fn attach_effects(&self, effects: Arc<dyn TenantEffects>) {
        let _ = self.effects.set(effects);
    }

    /// This node's watch set `tenant`'s level: told to the others (now, and every second
    /// while above vert). Returns the level in force here: the highest of this node's and
    /// the others' current ones.
    pub fn own_level(&self, tenant: &str, level: crate::common::Level) -> crate::common::Level {
        {
            let mut own = lock(&self.own_levels);
            if level > crate::common::Level::Vert {
                own.insert(tenant.to_owned(), level);
            } else {
                own.remove(tenant);
            }
        }
        self.levels_changed.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        level.max(self.remote_level(tenant, crate::clock::unix_now_ms()))
    }

    /// The level in force here for `tenant`: this node's and the others' current ones.
    pub fn effective_level(&self, tenant: &str) -> crate::common::Level {
        let own = lock(&self.own_levels)
            .get(tenant)
            .copied()
            .unwrap_or_default();
        own.max(self.remote_level(tenant, crate::clock::unix_now_ms()))
    }

    /// The highest of the others' current levels for `tenant`.
    fn remote_level(&self, tenant: &str, now_unix_ms: u64) -> crate::common::Level {
        lock(&self.remote_levels)
            .get(tenant)
            .into_iter()
            .flat_map(|nodes| nodes.values())
            .filter(|(_, at)| now_unix_ms.saturating_sub(*at) < LEVEL_TTL_MS)
            .map(|(level, _)| *level)
            .max()
            .unwrap_or_default()
    }

    /// Takes another node's levels (replacing what it said before); tells the wiring which
    /// tenants may have changed.
    fn levels_from(
        &self,
        node: &str,
        levels: Vec<(String, crate::common::Level)>,
        now_unix_ms: u64,
    ) {
        if node == self.settings.node {
            return;
        }
        let mut touched: Vec<String> = Vec::new();
        {
            let mut remote = lock(&self.remote_levels);
            for (tenant, nodes) in remote.iter_mut() {
                if nodes.remove(node).is_some() {
                    touched.push(tenant.clone());
                }
            }
            for (tenant, level) in levels {
                remote
                    .entry(tenant.clone())
                    .or_default()
                    .insert(node.to_owned(), (level, now_unix_ms));
                touched.push(tenant);
            }
            remote.retain(|_, nodes| !nodes.is_empty());
        }
        if let Some(effects) = self.effects.get() {
            touched.sort();
            touched.dedup();
            for tenant in touched {
                effects.level(&tenant);
            }
        }
    }

    /// Forgets the others' levels not told again in time (a node gone, or Redis away);
    /// the tenants concerned fall back to what the remaining nodes say.
    fn expire_levels(&self, now_unix_ms: u64) {
        let mut touched = Vec::new();
        {
            let mut remote = lock(&self.remote_levels);
            for (tenant, nodes) in remote.iter_mut() {
                let before = nodes.len();
                nodes.retain(|_, (_, at)| now_unix_ms.saturating_sub(*at) < LEVEL_TTL_MS);
                if nodes.len() != before {
                    touched.push(tenant.clone());
                }
            }
            remote.retain(|_, nodes| !nodes.is_empty());
        }
        if let Some(effects) = self.effects.get() {
            for tenant in touched {
                effects.level(&tenant);
            }
        }
    }

    /// An operator switched `tenant`'s under-attack mode here (until a Unix ms time;
    /// 0 off, `u64::MAX` until switched off): told to the others, kept for later nodes.
    pub fn under_attack(&self, tenant: &str, until_unix_ms: u64) {
        lock(&self.under_attack_pending).insert(tenant.to_owned(), until_unix_ms);
        self.wake.notify_one();
    }

    fn under_attack_from(&self, node: &str, tenant: &str, until_unix_ms: u64) {
        if node == self.settings.node {
            return;
        }
        if let Some(effects) = self.effects.get() {
            effects.under_attack(tenant, until_unix_ms);
        }
    }

    /// The node's defence state, whose key ring takes the cluster's shared secret once the
    /// link has it.
    pub fn attach_defence(&self, defence: Arc<Defence>) {
        let _ = self.defence.set(defence);
    }

    /// The replay store the gateway's generations use: this node's, told the answers the
    /// others accept, and telling them this node's.
    pub fn replay(self: &Arc<Self>) -> Arc<dyn ReplayStore> {
        Arc::new(ClusterReplay(self.clone()))
    }

    /// Marks an answer another node accepted as used here.
    fn replay_remote(&self, partition: u64, nonce: u64) {
        self.replay
            .first_use(partition, nonce, crate::clock::now_ms());
        self.replay_received.fetch_add(1, Ordering::Relaxed);
    }

    fn take_replay_pending(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut *lock(&self.replay_pending))
    }

    /// Shows the node's state in `gauges` from now on.
    pub fn export_to(&self, gauges: Gauges) {
        let _ = self.gauges.set(gauges);
        self.refresh_gauges();
    }

    fn refresh_gauges(&self) {
        if let Some(g) = self.gauges.get() {
            g.degraded.set(i64::from(self.degraded()));
            g.nodes.set(lock(&self.nodes).len() as i64);
            g.pending.set(lock(&self.pending).len() as i64);
        }
    }

    /// The ban store the gateway's generations use.
    pub fn bans(self: &Arc<Self>) -> Arc<dyn BanStore> {
        Arc::new(ClusterBans(self.clone()))
    }

    /// Whether Redis is out of reach.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Whether every other node whose heartbeat is current said it answers this node's
    /// proof `id`, as listed after the proof was published (a node listed earlier or
    /// not at all may be one that has just joined, and not heard of it yet).
    fn proof_held_by_all(&self, id: &str) -> bool {
        let nodes = lock(&self.nodes);
        let holders = lock(&self.proof_holders);
        let Some(wait) = holders.get(id) else {
            return true;
        };
        let Some(published) = wait.published_at_listing else {
            return false;
        };
        self.listings.load(Ordering::Relaxed) > published
            && nodes
                .iter()
                .filter(|n| !n.this)
                .all(|n| wait.holders.contains(&n.node))
    }

    /// The nodes whose heartbeat is current, as just listed.
    fn nodes_listed(&self, nodes: Vec<NodeSeen>) {
        *lock(&self.nodes) = nodes;
        self.listings.fetch_add(1, Ordering::Relaxed);
        self.proof_held.notify_waiters();
    }

    /// These proofs are in Redis (the hash nodes load as they connect) and told on the
    /// channel: every node in reach has them or is about to.
    fn proofs_published(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let listing = self.listings.load(Ordering::Relaxed);
        let mut holders = lock(&self.proof_holders);
        for id in ids {
            if let Some(wait) = holders.get_mut(id) {
                wait.published_at_listing.get_or_insert(listing);
            }
        }
        drop(holders);
        self.proof_held.notify_waiters();
    }

    /// Out of reach of Redis for longer than a lease lasts: no other node can still hold
    /// one, so this node does alone what a lease holder does. A node that has not reached
    /// Redis since it started waits as long, so it does not act beside a holder it is about
    /// to hear of.
    fn alone_past_a_lease(&self) -> bool {
        let alone_for = crate::clock::unix_now_ms()
            .saturating_sub(self.degraded_since_ms.load(Ordering::Relaxed));
        self.degraded() && alone_for >= ACME_LEASE_MS
    }

    /// What an operator sees.
    pub fn status(&self) -> ClusterStatus {
        let since = self.degraded_since_ms.load(Ordering::Relaxed);
        let last = self.last_sync_ms.load(Ordering::Relaxed);
        ClusterStatus {
            node: self.settings.node.clone(),
            redis: self.settings.redis.clone(),
            degraded: self.degraded(),
            degraded_since_ms: self.degraded().then_some(since),
            degraded_why: if self.degraded() {
                lock(&self.why_degraded).clone()
            } else {
                None
            },
            last_sync_ms: (last > 0).then_some(last),
            pending: lock(&self.pending).len(),
            nodes: lock(&self.nodes).clone(),
            bans_received: self.received.load(Ordering::Relaxed),
            bans_sent: self.sent.load(Ordering::Relaxed),
            shared_pass_key: self.defence.get().is_some_and(|d| d.shares_keys()),
            replays_unpublished: self.replay_dropped.load(Ordering::Relaxed),
            answers_received: self.replay_received.load(Ordering::Relaxed),
            acme_lease: self.acme_lease.load(Ordering::Relaxed),
            status_lease: self.status_lease.load(Ordering::Relaxed),
            rate_reports_received: self.rates_received.load(Ordering::Relaxed),
        }
    }

    fn queue(&self, change: BanChange) {
        lock(&self.pending).insert(change.target.clone(), change);
        self.wake.notify_one();
    }

    /// Every ban of this node's list as a pending change (after Redis lost its data, or on
    /// a first contact: the others learn what this node knows).
    fn queue_all_local(&self, now_unix_ms: u64) {
        let now_ms = crate::clock::now_ms();
        let mut pending = lock(&self.pending);
        for ban in self.local.list(now_ms) {
            pending
                .entry(ban.target.clone())
                .or_insert_with(|| BanChange {
                    until_ms: ban
                        .expires_ms
                        .map(|end| now_unix_ms + end.saturating_sub(now_ms)),
                    target: ban.target,
                    reason: ban.reason,
                    lifted: false,
                    node: self.settings.node.clone(),
                    at_ms: now_unix_ms,
                });
        }
    }

    /// Takes the pending changes (the link writes them; on failure it gives them back).
    fn take_pending(&self) -> Vec<BanChange> {
        lock(&self.pending).drain().map(|(_, c)| c).collect()
    }

    /// Gives back changes the link could not write; newer ones made meanwhile win.
    fn give_back(&self, changes: Vec<BanChange>) {
        let mut pending = lock(&self.pending);
        for c in changes {
            pending.entry(c.target.clone()).or_insert(c);
        }
    }

    /// Applies a change another node made (its own echoes are ignored) at `now_unix_ms`.
    /// `false` when it changed nothing here.
    pub fn apply_remote(&self, change: &BanChange, now_unix_ms: u64) -> bool {
        if change.node == self.settings.node {
            return false;
        }
        let Ok(target) = change.target.parse::<IpNet>() else {
            return false;
        };
        let applied = if change.lifted {
            self.local.remove(target)
        } else {
            match change.until_ms {
                Some(end) if end <= now_unix_ms => false,
                until => {
                    let now_ms = crate::clock::now_ms();
                    self.local.add(
                        target,
                        &change.reason,
                        until.map(|end| end - now_unix_ms),
                        now_ms,
                    );
                    true
                }
            }
        };
        if applied {
            self.received.fetch_add(1, Ordering::Relaxed);
        }
        applied
    }

    fn set_degraded(&self, why: Option<&str>, now_unix_ms: u64) {
        self.set_degraded_quietly(why, now_unix_ms);
        self.refresh_gauges();
    }

    fn set_degraded_quietly(&self, why: Option<&str>, now_unix_ms: u64) {
        match why {
            Some(why) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    self.degraded_since_ms.store(now_unix_ms, Ordering::Relaxed);
                }
                // Said once per reason (a node that never reached Redis says why, too).
                let mut last = lock(&self.why_degraded);
                if last.as_deref() != Some(why) {
                    tracing::error!(target: "rempart::cluster", node = %self.settings.node, error = why, "Redis is out of reach: this node defends alone and catches up when it is back");
                    *last = Some(why.to_owned());
                }
            }
            None => {
                *lock(&self.why_degraded) = None;
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!(target: "rempart::cluster", node = %self.settings.node, redis = %self.settings.redis, "Redis reached: bans shared again");
                }
            }
        }
    }
}

/// The bans of a cluster node: read from its own list, every change also queued for the
/// others.
#[derive(Debug)]
pub struct ClusterBans(Arc<Cluster>);

impl BanStore for ClusterBans {
    fn check(&self, ip: IpAddr, now_ms: u64) -> Option<BanHit> {
        self.0.local.check(ip, now_ms)
    }

    fn add(&self, target: IpNet, reason: &str, duration_ms: Option<u64>, now_ms: u64) {
        self.0.local.add(target, reason, duration_ms, now_ms);
        let now_unix = crate::clock::unix_now_ms();
        self.0.queue(BanChange {
            target: target.to_string(),
            reason: reason.to_owned(),
            until_ms: duration_ms.map(|d| now_unix + d),
            lifted: false,
            node: self.0.settings.node.clone(),
            at_ms: now_unix,
        });
    }

    fn remove(&self, target: IpNet) -> bool {
        let removed = self.0.local.remove(target);
        let now_unix = crate::clock::unix_now_ms();
        // Lifted everywhere, even when this node did not have it (another node's ban).
        self.0.queue(BanChange {
            target: target.to_string(),
            reason: String::new(),
            until_ms: None,
            lifted: true,
            node: self.0.settings.node.clone(),
            at_ms: now_unix,
        });
        removed
    }

    fn list(&self, now_ms: u64) -> Vec<BanInfo> {
        self.0.local.list(now_ms)
    }
}

/// Challenge answers of a cluster node: checked against this node's memory (which the
/// others' answers reach within a second), each new one told to the others.
#[derive(Debug)]
pub struct ClusterReplay(Arc<Cluster>);

impl ReplayStore for ClusterReplay {
    fn nonce(&self) -> u64 {
        self.0.replay.nonce()
    }

    fn first_use(&self, partition: u64, nonce: u64, now_ms: u64) -> bool {
        let first = self.0.replay.first_use(partition, nonce, now_ms);
        if first {
            let mut pending = lock(&self.0.replay_pending);
            if pending.len() >= REPLAY_PENDING_MAX {
                pending.remove(0);
                self.0.replay_dropped.fetch_add(1, Ordering::Relaxed);
            }
            pending.push((partition, nonce));
            drop(pending);
            self.0.wake.notify_one();
        }
        first
    }

    fn export(&self, now_ms: u64) -> Vec<(u64, u64, u64)> {
        self.0.replay.export(now_ms)
    }

    fn import(&self, used: &[(u64, u64, u64)], now_ms: u64) {
        self.0.replay.import(used, now_ms);
    }
}

/// The data guard's side of a cluster node.
#[derive(Debug)]
struct ClusterGuard(Arc<Cluster>);

/// Records taken here and not yet told, at most (past it they are summed per account).
const GUARD_PENDING_MAX: usize = 50_000;

impl crate::state::GuardShare for ClusterGuard {
    fn taken(&self, tenant: &str, account: u64, scope: u64, records: u64) {
        let mut pending = lock(&self.0.guard_pending);
        if let Some(last) = pending
            .taken
            .iter_mut()
            .rev()
            .take(64)
            .find(|(t, a, s, _)| t == tenant && *a == account && *s == scope)
        {
            last.3 = last.3.saturating_add(records);
        } else if pending.taken.len() < GUARD_PENDING_MAX {
            pending
                .taken
                .push((tenant.to_owned(), account, scope, records));
        }
        drop(pending);
        self.0.wake.notify_one();
    }

    fn suspended(&self, tenant: &str, account: u64, on: bool) {
        lock(&self.0.guard_pending)
            .suspensions
            .push((tenant.to_owned(), account, on));
        self.0.wake.notify_one();
    }
}

/// The renewals' side of a cluster node.
struct ClusterAcme(Arc<Cluster>);

impl crate::acme::Shared for ClusterAcme {
    fn proof(&self, proof: &crate::acme::Proof, active: bool) {
        let mut holders = lock(&self.0.proof_holders);
        if active {
            holders.insert(proof.id(), ProofWait::default());
        } else {
            holders.remove(&proof.id());
        }
        drop(holders);
        lock(&self.0.acme_pending).push(AcmeNews::Proof {
            node: self.0.settings.node.clone(),
            proof: proof.clone(),
            active,
        });
        self.0.wake.notify_one();
    }

    fn certificate(&self, tenant: &str, chain: &str, key: &str) {
        lock(&self.0.acme_pending).push(AcmeNews::Certificate {
            node: self.0.settings.node.clone(),
            tenant: tenant.to_owned(),
            chain: chain.to_owned(),
            key: key.to_owned(),
        });
        self.0.wake.notify_one();
    }

    fn proof_spread(
        &self,
        proof: &crate::acme::Proof,
        within: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
        let cluster = self.0.clone();
        let id = proof.id();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + within;
            loop {
                let held = cluster.proof_held.notified();
                tokio::pin!(held);
                held.as_mut().enable();
                if cluster.degraded() {
                    return false;
                }
                if cluster.proof_held_by_all(&id) {
                    return true;
                }
                tokio::select! {
                    () = held => {}
                    () = tokio::time::sleep_until(deadline) => return false,
                }
            }
        })
    }

    fn may_order(&self, urgent: bool) -> bool {
        self.0.acme_lease.load(Ordering::Relaxed) || (urgent && self.0.alone_past_a_lease())
    }
}

/// One of this node's proofs, while the authority may check it.
#[derive(Debug, Default)]
struct ProofWait {
    /// The node listing made when the proof was published (in Redis and on the channel);
    /// the nodes listed after it are those to wait for.
    published_at_listing: Option<u64>,
    /// The other nodes that said they answer it.
    holders: std::collections::HashSet<String>,
}

/// Challenge answers accepted by a node, as told to the others: (partition, nonce), with
/// the node's name (its own echo is ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AnswersFrom {
    node: String,
    answers: Vec<(u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Arc<Cluster> {
        Cluster::new(ClusterSettings {
            redis: "redis://127.0.0.1:6379".into(),
            password: None,
            node: name.into(),
            key_prefix: "rempart".into(),
            ca_pem: None,
            sentinel: None,
        })
    }

    #[test]
    fn a_node_orders_alone_only_once_no_lease_can_be_held_elsewhere() {
        use crate::acme::Shared;
        let a = node("a");
        let renewals = ClusterAcme(a.clone());
        // Just started, Redis not reached yet: another node may hold the lease.
        assert!(a.degraded());
        assert!(!renewals.may_order(true));
        // Out of reach for longer than a lease lasts: a missing certificate is ordered, a
        // renewal that can wait still waits for the lease.
        let long_ago = crate::clock::unix_now_ms() - ACME_LEASE_MS - 1;
        a.degraded_since_ms.store(long_ago, Ordering::Relaxed);
        assert!(renewals.may_order(true));
        assert!(!renewals.may_order(false));
        // Redis reached, no lease: the holder orders.
        a.set_degraded_quietly(None, crate::clock::unix_now_ms());
        assert!(!renewals.may_order(true));
        a.acme_lease.store(true, Ordering::Relaxed);
        assert!(renewals.may_order(false));
    }

    #[tokio::test]
    async fn an_order_waits_until_every_node_answers_its_proof() {
        use crate::acme::Shared;
        let (a, b) = (node("a"), node("b"));
        b.attach_acme(Arc::new(crate::acme::Acme::default()));
        let seen = |name: &str, this: bool| NodeSeen {
            node: name.into(),
            version: String::new(),
            at_ms: 0,
            this,
        };
        a.set_degraded_quietly(None, 0);
        a.nodes_listed(vec![seen("a", true)]);
        let renewals = ClusterAcme(a.clone());
        let proof = crate::acme::Proof::Http {
            token: "tok".into(),
            key_authorization: "tok.thumb".into(),
        };
        let unconfirmed = || async {
            !renewals
                .proof_spread(&proof, std::time::Duration::from_millis(1))
                .await
        };
        renewals.proof(&proof, true);
        // Not published yet: the wait ends at its deadline, unconfirmed.
        assert!(unconfirmed().await);
        a.proofs_published(&[proof.id()]);
        // Published, but the nodes were listed before: one may have joined since (b has),
        // and not heard of it yet.
        assert!(unconfirmed().await);
        a.nodes_listed(vec![seen("a", true), seen("b", false)]);
        // Listed since: b has not said it answers.
        assert!(unconfirmed().await);
        let waiting = renewals.proof_spread(&proof, std::time::Duration::from_secs(60));
        // b hears of the proof and says it answers; a hears that.
        for news in std::mem::take(&mut *lock(&a.acme_pending)) {
            b.acme_from(news);
        }
        let told = std::mem::take(&mut *lock(&b.acme_pending));
        assert_eq!(
            told,
            vec![AcmeNews::Held {
                node: "b".into(),
                proof: proof.id()
            }]
        );
        for news in told {
            a.acme_from(news);
        }
        assert!(waiting.await);
        // Done with it: nothing left to wait for.
        renewals.proof(&proof, false);
        assert!(lock(&a.proof_holders).is_empty());
    }

    #[test]
    fn a_ban_made_on_one_node_applies_on_another_and_echoes_are_ignored() {
        let (a, b) = (node("a"), node("b"));
        let now_ms = crate::clock::now_ms();
        let now_unix = crate::clock::unix_now_ms();
        a.bans().add(
            "203.0.113.0/24".parse().unwrap(),
            "flood",
            Some(60_000),
            now_ms,
        );
        let changes = a.take_pending();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].node, "a");
        assert!(!a.apply_remote(&changes[0], now_unix), "its own echo");
        assert!(b.apply_remote(&changes[0], now_unix));
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(b.bans().check(ip, now_ms).is_some());
        // Its end carried over: about a minute left on b too.
        let listed = b.bans().list(now_ms);
        let left = listed[0].expires_ms.unwrap() - now_ms;
        assert!((55_000..=60_000).contains(&left), "{left}");
        // A ban already over is not taken.
        let mut over = changes[0].clone();
        over.target = "198.51.100.0/24".into();
        over.until_ms = Some(now_unix - 1);
        assert!(!b.apply_remote(&over, now_unix));
        // Lifted on b: lifted on a, even though b's list no longer matters to a.
        b.bans().remove("203.0.113.0/24".parse().unwrap());
        let lift = b.take_pending();
        assert!(lift[0].lifted);
        assert!(a.apply_remote(&lift[0], now_unix));
        assert!(a.bans().check(ip, now_ms).is_none());
    }

    #[test]
    fn rate_reports_cross_as_bytes_and_damage_is_refused() {
        let address = SketchReport {
            window: 1_796_670_692,
            current: vec![(3, 40), (70_000, 2)],
            previous: vec![(3, 55)],
        };
        let report = vec![
            ("address", address.clone()),
            ("prefix", SketchReport::default()),
        ];
        let bytes = encode_rates("mairie-1", &report);
        let (node, back) = decode_rates(&bytes).unwrap();
        assert_eq!(node, "mairie-1");
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], ("address".to_owned(), address));
        assert_eq!(back[1], ("prefix".to_owned(), SketchReport::default()));
        for cut in 0..bytes.len() {
            assert!(decode_rates(&bytes[..cut]).is_none(), "{cut}");
        }
        // A count that claims more pairs than the message holds.
        let one = SketchReport {
            window: 9,
            current: vec![(1, 1)],
            previous: Vec::new(),
        };
        let mut lying = encode_rates("a", &[("address", one)]);
        let at = 2 + 1 + 1 + 1 + 1 + "address".len() + 8;
        lying[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_rates(&lying).is_none());
        // A report of the older format (it starts with the node name's length) is refused.
        assert!(decode_rates(&[1, b'a', 0]).is_none());
    }

    #[test]
    fn pending_changes_are_one_per_target_and_survive_a_failed_write() {
        let a = node("a");
        let now_ms = crate::clock::now_ms();
        let bans = a.bans();
        for _ in 0..1_000 {
            bans.add("192.0.2.1/32".parse().unwrap(), "again", None, now_ms);
        }
        bans.add("192.0.2.2/32".parse().unwrap(), "other", None, now_ms);
        let taken = a.take_pending();
        assert_eq!(taken.len(), 2);
        // The write failed; meanwhile 192.0.2.1 was lifted: the newer change wins.
        bans.remove("192.0.2.1/32".parse().unwrap());
        a.give_back(taken);
        let mut again = a.take_pending();
        again.sort_by(|x, y| x.target.cmp(&y.target));
        assert_eq!(again.len(), 2);
        assert!(again[0].lifted && again[0].target == "192.0.2.1/32");
        assert!(!again[1].lifted);
        // Everything local can be queued again (Redis lost its data).
        a.queue_all_local(crate::clock::unix_now_ms());
        assert_eq!(a.take_pending().len(), 1);
    }
}
