//! The watch at work: once a second, each tenant's signals (`signals::Report`) become an
//! observation, assessed against the tenant's baseline for that hour of the week; the level
//! machine moves, and every change is logged with its evidence, shown in
//! `rempart_watch_level{tenant}`, handed to the playbook (`Effects`), written into the
//! tenant's security incident and told to operators through the durable outbox. The
//! gateway has a level of its own (connection-level trips and unrouted traffic, which no
//! tenant owns); the global level is the highest of all. Baselines learn only while the
//! level is at most jaune and are kept across restarts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::alert::{wants, AlertCourier, AlertMessage, Channels};
use super::assess::{assess, Observation, Reason, Thresholds};
use super::baseline::{hour_of_week, Baseline};
use super::incident::{Incident, Incidents, Notice, Peaks, Refused, Rules, Told};
use super::level::{Change, Level, Machine, Pace};
use super::store::Store;
use crate::config::runtime::{NoticeMode, Runtime};
use crate::metrics::{Metrics, TenantLabels};
use crate::outbox::Outbox;
use crate::signals::{Consumer, LocalReason, Report, TenantReport, Totals};

/// Top sources or fingerprints: label and rate.
type Tops<'a> = &'a [(String, f64)];

/// Seconds the request rate is averaged over.
const RATE_WINDOW: usize = 10;
/// The pseudo-tenant of the gateway's own level and incidents.
pub const GATEWAY: &str = "*";
/// How often baselines are saved, ms.
const SAVE_BASELINES_MS: u64 = 10 * 60_000;
/// How often an active incident's growing figures are saved at most, ms.
const SAVE_FIGURES_MS: u64 = 10_000;
/// Calm seconds with traffic before the fingerprint mix is trusted.
const FINGERPRINT_LEARNT: u64 = 600;
/// Events kept for the event stream's late subscribers.
const RECENT_EVENTS: usize = 200;

/// What the rest of Rempart does when a level changes (wired by the application: the
/// pipeline's tenant flags, the status pages).
pub trait Effects: Send + Sync {
    /// `tenant`'s level is now `level`: the playbook's defences follow it.
    fn level(&self, tenant: &str, level: Level);
    /// The playbook's notice for residents on `tenant`'s status page: put up (`Some`, as a
    /// draft or published) or taken down (`None`).
    fn notice(&self, tenant: &str, notice: Option<NoticeMode>, incident: &Incident);
}

/// Effects that do nothing (tests of the watch alone).
pub struct NoEffects;

impl Effects for NoEffects {
    fn level(&self, _: &str, _: Level) {}
    fn notice(&self, _: &str, _: Option<NoticeMode>, _: &Incident) {}
}

/// One tenant's (or the gateway's) watch.
struct TenantWatch {
    machine: Machine,
    /// The evidence of the last assessment that asked for more than green.
    last_reasons: Vec<Reason>,
    baseline: Baseline,
    /// The origin's usual latency (ms), by hour of the week.
    latency: Baseline,
    /// The usual share of each fingerprint bucket, learnt while calm.
    fingerprint_usual: Vec<f64>,
    /// Calm seconds with traffic the fingerprint mix learnt from.
    fingerprint_samples: u64,
    /// Each route's usual rate and last seconds, by route name (kept across reloads).
    routes: HashMap<String, RouteWatch>,
    /// Requests of the last seconds, newest last.
    recent: VecDeque<u64>,
    gauge: Gauge,
    /// The last second's figures.
    last: Peaks,
    /// When the active incident's figures were last saved.
    figures_saved_ms: u64,
}

impl TenantWatch {
    fn new(pace: Pace, gauge: Gauge, baseline: Option<Baseline>) -> Self {
        Self {
            machine: Machine::new(pace),
            last_reasons: Vec::new(),
            baseline: baseline.unwrap_or_default(),
            latency: Baseline::default(),
            fingerprint_usual: vec![0.0; crate::signals::FINGERPRINT_BUCKETS],
            fingerprint_samples: 0,
            routes: HashMap::new(),
            recent: VecDeque::with_capacity(RATE_WINDOW),
            gauge,
            last: Peaks::default(),
            figures_saved_ms: 0,
        }
    }

    /// The request rate over the window, with this second's `requests`.
    fn rate(&mut self, requests: u64) -> f64 {
        if self.recent.len() == RATE_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(requests);
        self.recent.iter().sum::<u64>() as f64 / RATE_WINDOW as f64
    }
}

/// A tenant's level as one process hands it to the next (an upgrade).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptLevel {
    /// Tenant id (`*`: the gateway's own).
    pub tenant: String,
    /// Its level.
    pub level: Level,
    /// The operator's level and until when (unix ms), if one is set.
    pub operator: Option<(Level, u64)>,
}

/// One route's rate and habit.
#[derive(Default)]
struct RouteWatch {
    baseline: Baseline,
    recent: VecDeque<u64>,
}

/// A tenant's watch as operators see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TenantStatus {
    /// Tenant id (`*`: the gateway's own).
    pub tenant: String,
    /// Its level.
    pub level: Level,
    /// When an operator's level expires (unix ms), if one is set.
    pub override_until_ms: Option<u64>,
    /// The last evidence that asked for more than green.
    pub evidence: Vec<String>,
    /// Whether its baseline is still learning (rates alone raise at most to jaune).
    pub learning: bool,
    /// The active incident's number.
    pub incident: Option<u64>,
    /// The defences its level switches on.
    pub actions: Vec<String>,
}

/// An incident in a list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IncidentSummary {
    /// Number.
    pub id: u64,
    /// Tenant id.
    pub tenant: String,
    /// Level now.
    pub level: Level,
    /// Highest level.
    pub peak: Level,
    /// State.
    pub state: super::incident::State,
    /// Whether the attack is still on.
    pub active: bool,
    /// Opened (unix ms).
    pub opened_ms: u64,
    /// Back to vert (unix ms).
    pub calm_ms: Option<u64>,
    /// Cluster mode: the node it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl From<&Incident> for IncidentSummary {
    fn from(i: &Incident) -> Self {
        Self {
            id: i.id,
            tenant: i.tenant.clone(),
            level: i.level,
            peak: i.peak,
            state: i.state,
            active: i.active(),
            opened_ms: i.opened_ms,
            calm_ms: i.calm_ms,
            node: None,
        }
    }
}

struct Inner {
    tenants: HashMap<String, TenantWatch>,
    incidents: Incidents,
    /// Baselines read at start, waiting for their tenant's first second.
    kept_baselines: HashMap<String, Baseline>,
    /// Levels handed over by the process an upgrade replaced, waiting for their tenant's
    /// first second.
    kept_levels: HashMap<String, KeptLevel>,
    /// Certificate reminders told.
    reminders: super::certificates::Reminders,
    baselines_saved_ms: u64,
    /// The configuration the courier and rules were set from.
    config: Option<Arc<Runtime>>,
    /// Recent events (JSON) for the event stream.
    recent: VecDeque<String>,
}

/// The watch of every tenant (a consumer of the sampler's reports).
pub struct WatchService {
    inner: Mutex<Inner>,
    levels: Family<TenantLabels, Gauge>,
    global: Gauge,
    signals: Family<crate::metrics::SignalLabels, crate::metrics::FloatGauge>,
    effects: Arc<dyn Effects>,
    store: Store,
    outbox: Arc<Outbox>,
    courier: Arc<AlertCourier>,
    events: tokio::sync::broadcast::Sender<String>,
    /// Cluster mode: the others' incidents, and how to reach them.
    shared: std::sync::OnceLock<Arc<dyn super::shared::Shared>>,
}

fn rules_of(config: &Runtime) -> Rules {
    Rules {
        open_at: config.watch.incident_level,
        escalate_after_ms: u64::try_from(config.watch.escalate_after.as_millis())
            .unwrap_or(u64::MAX),
    }
}

fn channels_of(config: &Runtime) -> Channels {
    Channels {
        alerts: config.watch.alerts.clone(),
        smtp: config.status.smtp.clone(),
    }
}

fn pace_of(config: &Runtime) -> Pace {
    Pace {
        quiet_ms: u64::try_from(config.watch.quiet.as_millis()).unwrap_or(u64::MAX),
        ..Pace::default()
    }
}

fn thresholds_of(config: &Runtime) -> Thresholds {
    let t = &config.watch.thresholds;
    Thresholds {
        rate_ratio: t.rate_ratios,
        min_rate: t.min_rate,
        login_failures: t.login_failures,
        conn_trips: t.connection_trips,
        learning_samples: config.watch.learning.as_secs(),
        ..Thresholds::default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl WatchService {
    /// Opens the watch's database (`watch.database`: incidents, baselines, the outbox) and
    /// the watch over `config`'s tenants, showing levels in `metrics` and acting through
    /// `effects`.
    pub fn open(
        config: &Arc<Runtime>,
        metrics: &Metrics,
        effects: Arc<dyn Effects>,
    ) -> anyhow::Result<Arc<Self>> {
        let (store, loaded) = Store::open(&config.watch.database)?;
        let outbox = Outbox::open(&config.watch.database)?;
        let kept_baselines = loaded
            .baselines
            .iter()
            .filter_map(|(t, k)| Some((t.clone(), Baseline::restore(k)?)))
            .collect();
        let (events, _) = tokio::sync::broadcast::channel(1_024);
        let service = Arc::new(Self {
            inner: Mutex::new(Inner {
                tenants: HashMap::new(),
                incidents: Incidents::new(rules_of(config), loaded.incidents, loaded.last_id),
                kept_baselines,
                kept_levels: HashMap::new(),
                reminders: super::certificates::Reminders::default(),
                baselines_saved_ms: crate::clock::unix_now_ms(),
                config: Some(config.clone()),
                recent: VecDeque::new(),
            }),
            levels: metrics.watch_level.clone(),
            global: metrics.watch_global_level.clone(),
            signals: metrics.watch_signal.clone(),
            effects,
            store,
            outbox,
            courier: Arc::new(AlertCourier::new(channels_of(config))),
            events,
            shared: std::sync::OnceLock::new(),
        });
        Ok(service)
    }

    /// Delivers the outbox's alerts until `shutdown` (spawn once).
    pub fn deliver(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        crate::outbox::run(
            self.outbox.clone(),
            Arc::new(self.courier.clone()),
            shutdown,
        )
    }

    /// Waits until incidents, baselines and queued alerts are on disk (at shutdown).
    pub fn flush(&self) {
        {
            let inner = lock(&self.inner);
            for (tenant, w) in &inner.tenants {
                self.store.baseline(tenant, w.baseline.keep());
                self.store.baseline(&latency_key(tenant), w.latency.keep());
            }
        }
        self.store.flush();
        self.outbox.flush();
    }

    /// Live events (level changes, incident events) as JSON lines, the recent ones first.
    pub fn subscribe(&self) -> (Vec<String>, tokio::sync::broadcast::Receiver<String>) {
        let inner = lock(&self.inner);
        (
            inner.recent.iter().cloned().collect(),
            self.events.subscribe(),
        )
    }

    fn publish(&self, inner: &mut Inner, event: serde_json::Value) {
        let line = event.to_string();
        if inner.recent.len() == RECENT_EVENTS {
            inner.recent.pop_front();
        }
        inner.recent.push_back(line.clone());
        let _ = self.events.send(line);
    }

    /// Every tenant's level above green or set by an operator, for the process an upgrade
    /// starts.
    pub fn levels(&self) -> Vec<KeptLevel> {
        let inner = lock(&self.inner);
        inner
            .tenants
            .iter()
            .filter(|(_, t)| {
                t.machine.level() > Level::Vert || t.machine.override_until().is_some()
            })
            .map(|(id, t)| KeptLevel {
                tenant: id.clone(),
                level: t.machine.level(),
                operator: t.machine.override_until(),
            })
            .chain(inner.kept_levels.values().cloned())
            .collect()
    }

    /// Takes up the levels the process an upgrade replaced had: each tenant starts from
    /// its level (and its operator's) instead of green, without a new alert or incident.
    pub fn take_levels(&self, levels: Vec<KeptLevel>) {
        let mut inner = lock(&self.inner);
        for kept in levels {
            inner.kept_levels.insert(kept.tenant.clone(), kept);
        }
    }

    /// Each tenant's state now, by id (the gateway's own as `*`), and the global level.
    pub fn status(&self) -> (Level, Vec<TenantStatus>) {
        let inner = lock(&self.inner);
        let mut out: Vec<TenantStatus> = inner
            .tenants
            .iter()
            .map(|(id, t)| {
                let actions = inner
                    .config
                    .as_ref()
                    .and_then(|c| c.tenants.iter().find(|x| &x.id == id))
                    .map(|x| x.playbook.at(t.machine.level()).describe())
                    .unwrap_or_default();
                TenantStatus {
                    tenant: id.clone(),
                    level: t.machine.level(),
                    override_until_ms: t.machine.override_until().map(|(_, until)| until),
                    evidence: t.last_reasons.iter().map(evidence).collect(),
                    learning: inner
                        .config
                        .as_ref()
                        .is_some_and(|c| t.baseline.samples() < c.watch.learning.as_secs()),
                    incident: inner.incidents.active(id).map(|i| i.id),
                    actions,
                }
            })
            .collect();
        out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let global = out.iter().map(|t| t.level).max().unwrap_or_default();
        (global, out)
    }

    /// Cluster mode: incidents told to the others, theirs shown here.
    pub fn share_with(&self, shared: Arc<dyn super::shared::Shared>) {
        let _ = self.shared.set(shared);
    }

    /// Saves an incident that changed, and tells the other nodes in cluster mode.
    fn save(&self, incident: &Incident) {
        self.store.incident(incident);
        if let Some(shared) = self.shared.get() {
            shared.told(incident);
        }
    }

    /// Tells the other nodes every incident kept (a node that reaches Redis again).
    pub fn tell_all(&self) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        let kept: Vec<Incident> = lock(&self.inner).incidents.all().cloned().collect();
        for incident in &kept {
            shared.told(incident);
        }
    }

    /// Incidents kept here and, in cluster mode, the other nodes' (each with its node),
    /// newest first.
    pub fn incidents_everywhere(&self) -> Vec<IncidentSummary> {
        let mut all = self.incidents();
        if let Some(shared) = self.shared.get() {
            let this = shared.node();
            for summary in &mut all {
                summary.node = Some(this.clone());
            }
            all.extend(shared.others().iter().map(|(node, incident)| {
                let mut summary = IncidentSummary::from(incident);
                summary.node = Some(node.clone());
                summary
            }));
            all.sort_by_key(|i| std::cmp::Reverse(i.opened_ms));
        }
        all
    }

    /// Incident `id` of `node` (this node's when `None` or its own name).
    pub fn incident_on(&self, node: Option<&str>, id: u64) -> Option<Incident> {
        match (node, self.shared.get()) {
            (Some(node), Some(shared)) if node != shared.node() => shared
                .others()
                .into_iter()
                .find(|(n, i)| n == node && i.id == id)
                .map(|(_, i)| i),
            (Some(_), None) => None,
            _ => self.incident(id),
        }
    }

    /// An operator's action on incident `action.id` of `node` (this node's when `None` or
    /// its own name): made here, or sent to its node.
    pub async fn act(
        &self,
        node: Option<&str>,
        action: super::shared::Action,
        now_ms: u64,
    ) -> Result<Incident, super::shared::Failed> {
        use super::shared::{ActionKind, Failed};
        if let (Some(node), Some(shared)) = (node, self.shared.get()) {
            if node != shared.node() {
                return shared.forward(node, action).await;
            }
        } else if node.is_some() {
            return Err(Failed::Refused(Refused::Unknown));
        }
        let (id, by, text) = (action.id, action.by.as_str(), action.text.as_str());
        match action.kind {
            ActionKind::Acknowledge => self.acknowledge(id, by, now_ms),
            ActionKind::Note => self.note(id, by, text, now_ms),
            ActionKind::Resolve => self.resolve(id, by, text, now_ms),
        }
        .map_err(Failed::Refused)
    }

    /// Incidents kept, newest first.
    pub fn incidents(&self) -> Vec<IncidentSummary> {
        let inner = lock(&self.inner);
        inner
            .incidents
            .all()
            .rev()
            .map(IncidentSummary::from)
            .collect()
    }

    /// Incident `id` (from memory, or the database for an old one).
    pub fn incident(&self, id: u64) -> Option<Incident> {
        let kept = lock(&self.inner).incidents.get(id).cloned();
        kept.or_else(|| self.store.read(id))
    }

    /// Incident `id` as a Markdown report.
    pub fn report(&self, id: u64) -> Option<String> {
        let inner = lock(&self.inner);
        let zone = inner
            .config
            .as_ref()
            .map_or(crate::common::TimeZone::Paris, |c| c.status.time_zone);
        let incident = match inner.incidents.get(id) {
            Some(i) => i.clone(),
            None => {
                drop(inner);
                self.store.read(id)?
            }
        };
        Some(super::incident::report(
            &incident,
            zone,
            crate::clock::unix_now_ms(),
        ))
    }

    /// Alerts queued, sent and given up.
    pub fn outbox_counts(&self) -> Option<crate::outbox::Counts> {
        self.outbox.counts().ok()
    }

    /// An operator takes incident `id`.
    pub fn acknowledge(&self, id: u64, by: &str, now_ms: u64) -> Result<Incident, Refused> {
        let mut inner = lock(&self.inner);
        let told = inner.incidents.acknowledge(id, by, now_ms)?;
        let incident = told.incident.clone();
        self.tell(&mut inner, told, now_ms);
        Ok(incident)
    }

    /// An operator's note on incident `id`.
    pub fn note(&self, id: u64, by: &str, text: &str, now_ms: u64) -> Result<Incident, Refused> {
        let mut inner = lock(&self.inner);
        let incident = inner.incidents.note(id, by, text, now_ms)?;
        self.save(&incident);
        self.publish(&mut inner, serde_json::json!({"type": "incident", "notice": "note", "incident": incident.id, "tenant": incident.tenant, "at_ms": now_ms}));
        Ok(incident)
    }

    /// An operator closes incident `id`.
    pub fn resolve(&self, id: u64, by: &str, text: &str, now_ms: u64) -> Result<Incident, Refused> {
        let mut inner = lock(&self.inner);
        let told = inner.incidents.resolve(id, by, text, now_ms)?;
        let incident = told.incident.clone();
        self.tell(&mut inner, told, now_ms);
        Ok(incident)
    }

    /// An operator opens an incident by hand; `None` when the tenant is unknown or has an
    /// active incident already.
    pub fn open_incident(
        &self,
        tenant: &str,
        level: Level,
        by: &str,
        text: &str,
        now_ms: u64,
    ) -> Option<Incident> {
        let mut inner = lock(&self.inner);
        let name = inner
            .config
            .as_ref()
            .and_then(|c| c.tenants.iter().find(|t| t.id == tenant))
            .map(|t| t.name.clone())?;
        let told = inner
            .incidents
            .open(tenant, &name, level, by, text, now_ms)?;
        let incident = told.incident.clone();
        self.tell(&mut inner, told, now_ms);
        Some(incident)
    }

    /// An operator sets `tenant`'s level until `until_unix_ms`; `false` when the tenant has
    /// not been seen yet (its first second of signals makes it known).
    pub fn set_level(
        &self,
        tenant: &str,
        level: Level,
        until_unix_ms: u64,
        reason: &str,
        now_unix_ms: u64,
    ) -> bool {
        let mut inner = lock(&self.inner);
        let Some(watch) = inner.tenants.get_mut(tenant) else {
            return false;
        };
        if let Some(change) = watch
            .machine
            .set_override(level, until_unix_ms, reason, now_unix_ms)
        {
            self.changed(&mut inner, tenant, &change, &[], now_unix_ms);
        }
        true
    }

    /// The certificates served now (checked every minute or so): reminders 14, 7, 3 and 1
    /// days before one ends, once it has ended, and when a new one replaced it, to the
    /// alert channels (as an alert of level orange, rouge from 3 days), the log and the
    /// event stream.
    pub fn certificates(&self, served: &[super::certificates::Served], now_ms: u64) {
        let mut inner = lock(&self.inner);
        let reminders = inner.reminders.check(served, now_ms / 1000);
        let Some(config) = inner.config.clone() else {
            return;
        };
        for reminder in reminders {
            let name = config
                .tenants
                .iter()
                .find(|t| t.id == reminder.tenant)
                .map_or(reminder.tenant.as_str(), |t| t.name.as_str());
            let message =
                AlertMessage::certificate(reminder.clone(), name, now_ms, config.status.time_zone);
            let hosts = reminder.hosts.join(",");
            match reminder.kind {
                super::certificates::Kind::Renewed => {
                    tracing::info!(target: "rempart::watch", tenant = %reminder.tenant, hosts, "{}", message.headline());
                }
                _ => {
                    tracing::warn!(target: "rempart::watch", tenant = %reminder.tenant, hosts, days_left = reminder.days_left, "{}", message.headline());
                }
            }
            self.publish(
                &mut inner,
                serde_json::json!({
                    "type": "certificate",
                    "kind": reminder.kind,
                    "tenant": reminder.tenant,
                    "hosts": reminder.hosts,
                    "not_after_s": reminder.not_after_s,
                    "days_left": reminder.days_left,
                    "at_ms": now_ms,
                }),
            );
            let Ok(payload) = serde_json::to_string(&message) else {
                continue;
            };
            for channel in config.watch.alerts.iter().filter(|c| wants(c, &message)) {
                self.outbox
                    .put(&channel.name, &message.group(), payload.clone(), now_ms);
            }
        }
    }

    /// Saves a told incident, publishes the event and queues the alerts.
    fn tell(&self, inner: &mut Inner, told: Told, now_ms: u64) {
        let Told { incident, notice } = told;
        self.save(&incident);
        self.publish(
            inner,
            serde_json::json!({
                "type": "incident",
                "notice": notice,
                "incident": incident.id,
                "tenant": incident.tenant,
                "level": incident.level,
                "at_ms": now_ms,
            }),
        );
        let Some(config) = inner.config.clone() else {
            return;
        };
        // In a cluster, an attack that several nodes see alerts once: from the node whose
        // incident opened first (operators' own actions alert from where they are made).
        let lead = match (self.shared.get(), notice) {
            (Some(shared), n) if !matches!(n, Notice::Acknowledged | Notice::Resolved) => {
                super::shared::leads(&incident, &shared.node(), &shared.others())
            }
            _ => true,
        };
        if !lead {
            tracing::info!(target: "rempart::watch", tenant = %incident.tenant, incident = incident.id, ?notice, "no alert from this node: another node's incident of this attack opened first and alerts");
            if notice == Notice::Opened {
                // Its timeline says where the alerts come from.
                let text = "alerts for this attack go out from the incident another node opened first (rempart watch incident list shows it)";
                if let Ok(noted) = inner.incidents.note(incident.id, "cluster", text, now_ms) {
                    self.save(&noted);
                }
            }
        }
        let message = AlertMessage::new(&incident, notice, now_ms, config.status.time_zone);
        let payload = match serde_json::to_string(&message) {
            Ok(p) => p,
            Err(_) => return,
        };
        for channel in config
            .watch
            .alerts
            .iter()
            .filter(|c| lead && wants(c, &message))
        {
            self.outbox
                .put(&channel.name, &message.group(), payload.clone(), now_ms);
        }
        // The playbook's notice for residents follows the incident.
        if incident.tenant != GATEWAY {
            match notice {
                Notice::Calm | Notice::Resolved => {
                    self.effects.notice(&incident.tenant, None, &incident)
                }
                _ => {}
            }
        }
    }

    /// A level change of `tenant`: metric, log, playbook, incident, alerts, event.
    fn changed(
        &self,
        inner: &mut Inner,
        tenant: &str,
        change: &Change,
        reasons: &[Reason],
        now_ms: u64,
    ) {
        let Some(config) = inner.config.clone() else {
            return;
        };
        if let Some(w) = inner.tenants.get(tenant) {
            w.gauge.set(change.to as i64);
        }
        log_change(tenant, change, reasons);
        let (name, before, after, notice_mode) =
            match config.tenants.iter().find(|t| t.id == tenant) {
                Some(t) => (
                    t.name.clone(),
                    t.playbook.at(change.from).describe(),
                    t.playbook.at(change.to).describe(),
                    t.playbook.at(change.to).status_notice,
                ),
                None => (
                    "la passerelle (toutes les collectivités)".to_owned(),
                    Vec::new(),
                    Vec::new(),
                    NoticeMode::Off,
                ),
            };
        if tenant != GATEWAY {
            self.effects.level(tenant, change.to);
        }
        self.publish(
            inner,
            serde_json::json!({
                "type": "level",
                "tenant": tenant,
                "from": change.from,
                "to": change.to,
                "cause": format!("{:?}", change.cause),
                "evidence": reasons.iter().map(evidence).collect::<Vec<_>>(),
                "at_ms": now_ms,
            }),
        );
        let told = inner.incidents.on_change(
            tenant,
            &name,
            change,
            reasons.iter().map(evidence).collect(),
            &before,
            &after,
            now_ms,
        );
        if let Some(told) = told {
            if tenant != GATEWAY && told.incident.active() {
                let was = config
                    .tenants
                    .iter()
                    .find(|t| t.id == tenant)
                    .map_or(NoticeMode::Off, |t| {
                        t.playbook.at(change.from).status_notice
                    });
                if notice_mode != was {
                    let put = (notice_mode != NoticeMode::Off).then_some(notice_mode);
                    self.effects.notice(tenant, put, &told.incident);
                }
            }
            self.tell(inner, told, now_ms);
        }
        self.global.set(
            inner
                .tenants
                .values()
                .map(|w| w.machine.level() as i64)
                .max()
                .unwrap_or(0),
        );
    }

    /// One second of one tenant (or the gateway): assess, move, record.
    #[allow(clippy::too_many_arguments)]
    fn second(
        &self,
        inner: &mut Inner,
        config: &Runtime,
        tenant: &str,
        t: &Totals,
        report: Option<&TenantReport>,
        hour: usize,
        now_ms: u64,
    ) {
        let pools = report.map_or(&[][..], |r| &r.pools[..]);
        let mix = report.map_or(&[][..], |r| &r.fingerprints[..]);
        let mix_total: u64 = mix.iter().map(|c| u64::from(*c)).sum();
        let distinct = report.map_or(0.0, |r| r.distinct_sources);
        let no_top: Tops<'_> = &[];
        let top = report.map_or((no_top, no_top, no_top), |r| {
            (
                &r.top_sources[..],
                &r.top_fingerprints[..],
                &r.top_paths[..],
            )
        });
        let pace = pace_of(config);
        let thresholds = thresholds_of(config);
        if !inner.tenants.contains_key(tenant) {
            let kept = inner.kept_baselines.remove(tenant);
            let kept_latency = inner.kept_baselines.remove(&latency_key(tenant));
            let gauge = if tenant == GATEWAY {
                Gauge::default()
            } else {
                self.levels
                    .get_or_create(&TenantLabels {
                        tenant: tenant.to_owned(),
                    })
                    .clone()
            };
            let mut watch = TenantWatch::new(pace, gauge, kept);
            if let Some(l) = kept_latency {
                watch.latency = l;
            }
            // An upgrade: the level the previous process had, and its operator's, hold.
            // A restart in the middle of an attack: the active incident's level holds.
            // Either way its defences with it, until the signals calm down.
            let handed = inner.kept_levels.remove(tenant);
            let incident = inner
                .incidents
                .active(tenant)
                .map(|i| i.level)
                .filter(|l| *l > Level::Vert);
            let operator = handed
                .as_ref()
                .and_then(|k| k.operator)
                .filter(|(_, until)| *until > now_ms);
            let level = handed.as_ref().map(|k| k.level).max(incident);
            if let Some((level, until)) = operator {
                watch.machine.resume_override(level, until, now_ms);
            } else if let Some(level) = level.filter(|l| *l > Level::Vert) {
                watch.machine.resume(level, now_ms);
            }
            let level = watch.machine.level();
            if level > Level::Vert || operator.is_some() {
                watch.gauge.set(level as i64);
                if tenant != GATEWAY {
                    self.effects.level(tenant, level);
                }
                let from = if handed.is_some() {
                    "taken over from the previous process"
                } else {
                    "of the active incident taken up again after a restart"
                };
                tracing::warn!(target: "rempart::watch", tenant, level = %level, operator = operator.is_some(), "level {from}");
            }
            inner.tenants.insert(tenant.to_owned(), watch);
        }
        let Some(watch) = inner.tenants.get_mut(tenant) else {
            return;
        };
        let rate = watch.rate(t.requests);
        let answered = t.origin_answers + t.origin_failures;
        let obs = Observation {
            requests_per_s: rate,
            new_sources_share: if t.requests == 0 {
                0.0
            } else {
                (t.new_source_requests as f64 / t.requests as f64).min(1.0)
            },
            origin_errors_share: if answered == 0 {
                0.0
            } else {
                (t.origin_server_errors + t.origin_failures) as f64 / answered as f64
            },
            shed_per_s: t.sheds as f64,
            login_failures_per_s: t.login_failures as f64,
            conn_trips_per_s: t.conn_trips.iter().sum::<u64>() as f64,
            guard_breaches: u32::try_from(t.local(LocalReason::Guarded) + t.guard_breaches)
                .unwrap_or(u32::MAX),
            pools_down: pools
                .iter()
                .filter(|p| p.servers > 0 && p.available == 0)
                .count() as u32,
            pools_degraded: pools
                .iter()
                .filter(|p| p.available > 0 && p.available < p.servers)
                .count() as u32,
            origin_answers: u32::try_from(t.origin_answers).unwrap_or(u32::MAX),
            latency_ms: t.mean_origin_latency_us() as f64 / 1_000.0,
            usual_latency_ms: watch.latency.expected(hour),
            challenges_issued_per_s: t.challenges_issued as f64,
            challenges_passed_per_s: t.challenges_passed as f64,
            refused_share: share(
                t.local(LocalReason::RateLimited)
                    + t.local(LocalReason::Banned)
                    + t.local(LocalReason::BadRequest),
                t.requests,
            ),
            not_found_share: share(t.local(LocalReason::NotFound), t.requests),
            fingerprint_share: 0.0,
            fingerprint_usual_share: None,
            fingerprint_requests: u32::try_from(mix_total).unwrap_or(u32::MAX),
        };
        let mut obs = obs;
        if let Some((bucket, count)) = mix.iter().enumerate().max_by_key(|(_, c)| **c) {
            obs.fingerprint_share = share(u64::from(*count), mix_total);
            obs.fingerprint_usual_share = (watch.fingerprint_samples >= FINGERPRINT_LEARNT)
                .then(|| watch.fingerprint_usual.get(bucket).copied().unwrap_or(0.0));
        }
        let mut assessment = assess(&obs, &watch.baseline, hour, &thresholds);
        // Each route against its own habit.
        let mut route_rates = Vec::new();
        if let (Some(report), Some(spec)) = (report, config.tenants.iter().find(|x| x.id == tenant))
        {
            for (route, count) in spec.routes.iter().zip(&report.routes) {
                let rw = watch.routes.entry(route.name.clone()).or_default();
                if rw.recent.len() == RATE_WINDOW {
                    rw.recent.pop_front();
                }
                rw.recent.push_back(*count);
                let route_rate = rw.recent.iter().sum::<u64>() as f64 / RATE_WINDOW as f64;
                if let Some(reason) = super::assess::assess_route(
                    &route.name,
                    route_rate,
                    &rw.baseline,
                    hour,
                    obs.new_sources_share,
                    &thresholds,
                ) {
                    assessment.wanted = assessment.wanted.max(reason.level);
                    assessment.reasons.push(reason);
                }
                route_rates.push((route.name.clone(), *count));
            }
        }
        if watch.machine.level() <= Level::Jaune && assessment.wanted <= Level::Jaune {
            // Only calm seconds teach what is usual.
            watch.baseline.learn(hour, t.requests as f64);
            for (name, count) in &route_rates {
                if let Some(rw) = watch.routes.get_mut(name) {
                    rw.baseline.learn(hour, *count as f64);
                }
            }
            if t.origin_answers > 0 {
                watch.latency.learn(hour, obs.latency_ms);
            }
            if mix_total > 0 {
                // Plain mean over the first seconds, then about an hour's memory.
                let n = watch.fingerprint_samples;
                let w = if n < 3_600 {
                    1.0 / (n + 1) as f64
                } else {
                    1.0 / 3_600.0
                };
                for (usual, count) in watch.fingerprint_usual.iter_mut().zip(mix) {
                    *usual += (share(u64::from(*count), mix_total) - *usual) * w;
                }
                watch.fingerprint_samples = n + 1;
            }
        }
        if !assessment.reasons.is_empty() {
            watch.last_reasons = assessment.reasons.clone();
        }
        watch.last = Peaks {
            requests_per_s: rate,
            new_sources_share: obs.new_sources_share,
            sources_per_s: distinct,
            origin_errors_share: obs.origin_errors_share,
            shed_per_s: obs.shed_per_s,
            login_failures_per_s: obs.login_failures_per_s,
            conn_trips_per_s: obs.conn_trips_per_s,
            guard_breaches: f64::from(obs.guard_breaches),
        };
        let peaks = watch.last;
        let shown = [
            ("request_rate", rate),
            ("new_sources_share", obs.new_sources_share),
            ("distinct_sources", distinct),
            ("origin_errors_share", obs.origin_errors_share),
            ("origin_latency_ms", obs.latency_ms),
            ("shed", obs.shed_per_s),
            ("login_failures", obs.login_failures_per_s),
            ("connection_trips", obs.conn_trips_per_s),
            ("guard_breaches", f64::from(obs.guard_breaches)),
            ("challenges_issued", obs.challenges_issued_per_s),
            ("challenges_passed", obs.challenges_passed_per_s),
            ("refused_share", obs.refused_share),
            ("not_found_share", obs.not_found_share),
            ("fingerprint_share", obs.fingerprint_share),
        ];
        for (signal, value) in shown {
            self.signals
                .get_or_create(&crate::metrics::SignalLabels {
                    tenant: tenant.to_owned(),
                    signal,
                })
                .set(value);
        }
        let change = watch.machine.observe(assessment.wanted, now_ms);
        if let Some(change) = change {
            self.changed(inner, tenant, &change, &assessment.reasons, now_ms);
        }
        // The active incident's peak figures grow (saved now and then).
        if let Some(incident) = inner.incidents.observe(tenant, &peaks, top.0, top.1, top.2) {
            let incident = incident.clone();
            if let Some(w) = inner.tenants.get_mut(tenant) {
                if now_ms.saturating_sub(w.figures_saved_ms) >= SAVE_FIGURES_MS {
                    w.figures_saved_ms = now_ms;
                    self.save(&incident);
                }
            }
        }
    }
}

impl Consumer for WatchService {
    fn on_report(&self, report: &Report) {
        let mut inner = lock(&self.inner);
        let config = report.config.clone();
        if inner
            .config
            .as_ref()
            .is_none_or(|c| !Arc::ptr_eq(c, &config))
        {
            // A reload: new rules, channels and pace.
            inner.incidents.set_rules(rules_of(&config));
            self.courier.set(channels_of(&config));
            inner.config = Some(config.clone());
        }
        let unix_s = report.at_unix_ms / 1000;
        let zone = config.status.time_zone;
        let local = unix_s as i64 + i64::from(zone.offset_minutes(unix_s)) * 60;
        let hour = hour_of_week(local);
        let now_ms = report.at_unix_ms;
        for (tenant, tr) in config.tenants.iter().zip(&report.tenants) {
            self.second(
                &mut inner,
                &config,
                &tenant.id,
                &tr.totals,
                Some(tr),
                hour,
                now_ms,
            );
        }
        // The gateway's own: connection trips and requests no tenant took.
        self.second(
            &mut inner,
            &config,
            GATEWAY,
            &report.gateway,
            None,
            hour,
            now_ms,
        );
        for told in inner.incidents.escalate(now_ms) {
            tracing::error!(target: "rempart::watch", incident = told.incident.id, tenant = %told.incident.tenant, "incident not acknowledged in time: escalated");
            self.tell(&mut inner, told, now_ms);
        }
        if now_ms.saturating_sub(inner.baselines_saved_ms) >= SAVE_BASELINES_MS {
            inner.baselines_saved_ms = now_ms;
            for (tenant, w) in &inner.tenants {
                self.store.baseline(tenant, w.baseline.keep());
                self.store.baseline(&latency_key(tenant), w.latency.keep());
            }
        }
    }
}

/// Where a tenant's latency baseline is kept (beside its rate's).
fn latency_key(tenant: &str) -> String {
    format!("{tenant}\u{1f}latency")
}

/// `part` over `whole`, 0 when there is nothing.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 / whole as f64).min(1.0)
    }
}

/// A rule's evidence, for logs and operators.
fn evidence(r: &Reason) -> String {
    let on = r
        .route
        .as_deref()
        .map(|route| format!("[{route}]"))
        .unwrap_or_default();
    format!(
        "{}{on} {:.1} (usual {:.1}) -> {}",
        r.signal, r.value, r.usual, r.level
    )
}

fn log_change(tenant: &str, change: &Change, reasons: &[Reason]) {
    let evidence: Vec<String> = reasons.iter().map(evidence).collect();
    tracing::warn!(
        target: "rempart::watch",
        tenant,
        from = %change.from,
        to = %change.to,
        cause = ?change.cause,
        evidence = %evidence.join("; "),
        "vigilance level changed"
    );
}
