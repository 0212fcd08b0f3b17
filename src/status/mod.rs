//! Public status pages: one per tenant, served by Rempart from memory so it stays up when
//! every origin is down.
//!
//! Data flow: the gateway samples each component's pools once a second (servers available,
//! requests, failures, slow answers) and calls [`StatusService::observe`]; the debounced
//! detector (`model`) sets the component's state, opens an automatic draft incident when a
//! service goes down (published at once only when the tenant allows it) and closes it when
//! the service is back. Operators create incidents, updates and maintenance windows and
//! override states through the admin API. Every change is written to SQLite (`store`),
//! re-rendered (`render`: HTML in French and English, Atom, JSON) into [`Pages`] swapped
//! atomically, and handed to the exporter (`export`), which writes the static off-site copy
//! and runs the publish command.

pub mod export;
pub mod model;
pub mod notify;
pub mod render;
pub mod shared;
pub mod site;
pub mod store;
pub mod subscribe;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::config::runtime::{Language, Runtime, StatusSettings, StatusSpec};
use model::{
    ComponentState, DayTally, Debounce, Impact, Incident, IncidentKind, IncidentStatus, Sample,
    DAY_S, HISTORY_DAYS,
};
use render::{ComponentSnapshot, Flavor, Snapshot};
use store::Store;

/// Content-Security-Policy of the status site: no script at all, inline style only.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What kind of document a variant is (its headers differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DocKind {
    Page,
    Feed,
    Summary,
}

/// One rendered document: as is and gzip-compressed, each with its whole response header
/// set built once at rendering (entity tag included), so answering costs a clone.
#[derive(Debug, Clone)]
pub struct Variant {
    /// The document.
    pub body: Bytes,
    /// The document, gzip-compressed once at rendering.
    pub gzip: Bytes,
    /// Response headers for `body`, then for `gzip`.
    pub headers: [http::HeaderMap; 2],
}

impl Variant {
    fn new(body: String, tag: &str, kind: DocKind) -> Self {
        use http::header::{self, HeaderValue};
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let gzip = gz
            .write_all(body.as_bytes())
            .and_then(|()| gz.finish())
            .unwrap_or_default();
        let headers = |compressed: bool| {
            let mut h = http::HeaderMap::with_capacity(12);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(match kind {
                    DocKind::Page => "text/html; charset=utf-8",
                    DocKind::Feed => "application/atom+xml; charset=utf-8",
                    DocKind::Summary => "application/json",
                }),
            );
            if compressed {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            // Short: residents reload during an incident and must see the update.
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=10"),
            );
            h.insert(
                header::VARY,
                HeaderValue::from_static(if kind == DocKind::Page {
                    "Accept-Encoding, Accept-Language"
                } else {
                    "Accept-Encoding"
                }),
            );
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            if kind == DocKind::Summary {
                // Widgets on other sites read it.
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
            let etag = format!("\"{tag}{}\"", if compressed { "-gz" } else { "" });
            if let Ok(v) = HeaderValue::from_str(&etag) {
                h.insert(header::ETAG, v);
            }
            h
        };
        Self {
            headers: [headers(false), headers(true)],
            body: Bytes::from(body),
            gzip: Bytes::from(gzip),
        }
    }
}

/// A tenant's rendered status site.
#[derive(Debug)]
pub struct Pages {
    /// HTML page as served, French then English.
    pub html: [Variant; 2],
    /// HTML page for the static copy, French then English.
    pub static_html: [Variant; 2],
    /// Atom feed.
    pub atom: Variant,
    /// JSON summary.
    pub json: Variant,
    /// Default language.
    pub language: Language,
}

impl Pages {
    /// The served page in `lang`.
    pub fn html(&self, lang: Language) -> &Variant {
        match lang {
            Language::Fr => &self.html[0],
            Language::En => &self.html[1],
        }
    }
}

/// What an operator asked that cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum StatusError {
    /// Cluster mode: the node that writes the boards did not answer in time.
    #[error("the node that writes the status boards did not answer: Redis or that node is out of reach; this node writes them itself once no other can (within seconds), retry then")]
    NoWriter,
    /// No tenant with a status page has this id.
    #[error("no tenant `{0}` with a status page")]
    UnknownTenant(String),
    /// No such incident for this tenant.
    #[error("no incident {0} for this tenant")]
    UnknownIncident(u64),
    /// No such component.
    #[error("no component `{0}` on this status page")]
    UnknownComponent(String),
    /// A field is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// A new incident or maintenance, from an operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIncident {
    /// `incident` (default) or `maintenance`.
    #[serde(default = "default_kind")]
    pub kind: IncidentKind,
    /// Title in French.
    pub title: String,
    /// Title in English.
    pub title_en: Option<String>,
    /// Impact (default `minor`; `none` for maintenance).
    pub impact: Option<Impact>,
    /// Component ids.
    #[serde(default)]
    pub components: Vec<String>,
    /// First stage (default `investigating`, or `scheduled` for maintenance).
    pub status: Option<IncidentStatus>,
    /// First public message in French.
    pub message: String,
    /// First public message in English.
    pub message_en: Option<String>,
    /// Publish at once (default: a draft).
    #[serde(default)]
    pub publish: bool,
    /// Maintenance window start (unix seconds).
    pub starts_at: Option<u64>,
    /// Maintenance window end (unix seconds).
    pub ends_at: Option<u64>,
}

fn default_kind() -> IncidentKind {
    IncidentKind::Incident
}

/// A new timeline entry, from an operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUpdate {
    /// Stage reached.
    pub status: IncidentStatus,
    /// Message in French.
    pub message: String,
    /// Message in English.
    pub message_en: Option<String>,
    /// New impact, when it changed.
    pub impact: Option<Impact>,
}

/// Changes to a draft or published incident's header, from an operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentEdit {
    /// Title in French.
    pub title: Option<String>,
    /// Title in English.
    pub title_en: Option<String>,
    /// Impact.
    pub impact: Option<Impact>,
    /// Component ids.
    pub components: Option<Vec<String>>,
    /// Publish (true) or take back to draft (false).
    pub published: Option<bool>,
}

#[derive(Debug)]
struct ComponentBoard {
    id: String,
    debounce: Debounce,
    overridden: Option<ComponentState>,
    shown: ComponentState,
    changed_at: u64,
    accrued_to: u64,
    auto_incident: Option<u64>,
}

#[derive(Debug)]
struct Board {
    tenant_name: String,
    language: Language,
    spec: StatusSpec,
    components: Vec<ComponentBoard>,
}

#[derive(Debug)]
struct State {
    settings: StatusSettings,
    boards: BTreeMap<String, Board>,
    incidents: BTreeMap<u64, Incident>,
    last_id: u64,
    days: HashMap<(String, String, u64), DayTally>,
    pending_days: HashMap<(String, String, u64), DayTally>,
    last_flush: u64,
    last_render: u64,
}

/// Outcome of the last export and publish, shown to operators.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PublishOutcome {
    /// Unix seconds of the last export.
    pub exported_at: Option<u64>,
    /// Export error, if the last export failed.
    pub export_error: Option<String>,
    /// Unix seconds of the last publish command's end.
    pub published_at: Option<u64>,
    /// Whether the last publish command succeeded.
    pub publish_ok: Option<bool>,
    /// Attempts the last publish took.
    pub publish_attempts: u32,
    /// The last failure's exit status and stderr tail.
    pub publish_error: Option<String>,
}

/// Something residents or receivers must hear about.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A new subscriber must confirm (double opt-in).
    Confirm {
        /// The subscriber.
        subscriber: subscribe::Subscriber,
    },
    /// A public update was published.
    Update {
        /// The incident as it is now.
        incident: Box<Incident>,
        /// Which update is new.
        update_id: u32,
    },
}

/// Subscribers and what protects their addresses.
struct Subscriptions {
    by_id: HashMap<u64, subscribe::Subscriber>,
    next_id: u64,
    limits: subscribe::SendLimits,
    tokens: subscribe::Tokens,
}

/// What a subscription request came to (the page says the same in every case, so the form
/// never tells whether an address is subscribed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// A confirmation message was queued.
    ConfirmationSent,
    /// Already confirmed: nothing sent.
    AlreadyConfirmed,
    /// Over the sending limits: nothing sent.
    Limited,
}

/// What messages say about a tenant.
#[derive(Debug, Clone)]
pub struct TenantInfo {
    /// Display name.
    pub name: String,
    /// Public address of the status page.
    pub url: Option<String>,
    /// Components: id, French name, English name.
    pub components: Vec<(String, String, Option<String>)>,
}

/// Counts of messages and webhook deliveries, shown to operators.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Deliveries {
    /// E-mails accepted by the mail server.
    pub mails_sent: u64,
    /// E-mails given up after retries.
    pub mails_failed: u64,
    /// Webhook deliveries answered with 2xx.
    pub webhooks_delivered: u64,
    /// Webhook deliveries given up after retries.
    pub webhooks_failed: u64,
    /// The last failure (no addresses in it).
    pub last_error: Option<String>,
}

/// Rendered sites by tenant id (read on every status request: a fast hash).
type PagesByTenant = HashMap<String, Arc<Pages>, foldhash::fast::RandomState>;

/// The status pages of every tenant that has one.
pub struct StatusService {
    state: Mutex<State>,
    pages: ArcSwap<PagesByTenant>,
    store: std::sync::OnceLock<Store>,
    changes: tokio::sync::watch::Sender<u64>,
    /// Maintenance mode switched on by operators: (tenant, route name or `*`).
    maintenance: ArcSwap<Vec<(String, String)>>,
    /// Last export and publish outcome.
    pub outcome: Mutex<PublishOutcome>,
    /// Messages and webhook deliveries so far.
    pub deliveries: Mutex<Deliveries>,
    subscriptions: Mutex<Subscriptions>,
    notices: tokio::sync::mpsc::Sender<Notice>,
    notices_rx: Mutex<Option<tokio::sync::mpsc::Receiver<Notice>>>,
    /// Cluster mode: who writes the boards, and how to reach it.
    shared: std::sync::OnceLock<Arc<dyn shared::Shared>>,
}

/// Notices waiting for the notifier at most (beyond, new ones are dropped and logged).
const NOTICE_QUEUE: usize = 4096;

fn boards_for(
    config: &Runtime,
    old: Option<&mut BTreeMap<String, Board>>,
    loaded_overrides: &HashMap<(String, String), ComponentState>,
    now: u64,
) -> BTreeMap<String, Board> {
    let mut old = old.map(std::mem::take).unwrap_or_default();
    let mut boards = BTreeMap::new();
    for t in &config.tenants {
        let Some(spec) = &t.status else { continue };
        let mut previous = old.remove(&t.id);
        let components = spec
            .components
            .iter()
            .map(|c| {
                previous
                    .as_mut()
                    .and_then(|b| {
                        let i = b.components.iter().position(|pc| pc.id == c.id)?;
                        Some(b.components.swap_remove(i))
                    })
                    .unwrap_or_else(|| {
                        let overridden =
                            loaded_overrides.get(&(t.id.clone(), c.id.clone())).copied();
                        ComponentBoard {
                            id: c.id.clone(),
                            debounce: Debounce::new(now * 1000),
                            overridden,
                            shown: overridden.unwrap_or(ComponentState::Operational),
                            changed_at: now,
                            accrued_to: now,
                            auto_incident: None,
                        }
                    })
            })
            .collect();
        boards.insert(
            t.id.clone(),
            Board {
                tenant_name: t.name.clone(),
                language: t.language,
                spec: spec.clone(),
                components,
            },
        );
    }
    boards
}

impl StatusService {
    /// Builds the service for `config`, reading history from its database when a tenant has
    /// a status page (no database is opened otherwise).
    pub fn open(config: &Runtime, now: u64) -> Result<Arc<Self>, store::StoreError> {
        let wanted = config.tenants.iter().any(|t| t.status.is_some());
        let (store, loaded) = if wanted {
            let (s, l) = Store::open(&config.status.database, now, HISTORY_DAYS)?;
            (Some(s), l)
        } else {
            (None, store::Loaded::default())
        };
        Ok(Arc::new(Self::from_loaded(config, store, loaded, now)))
    }

    fn from_loaded(
        config: &Runtime,
        store: Option<Store>,
        loaded: store::Loaded,
        now: u64,
    ) -> Self {
        let boards = boards_for(config, None, &loaded.overrides, now);
        // An automatic incident still open from before a restart stays attached to its
        // component, so recovery closes it.
        let mut boards = boards;
        for i in loaded
            .incidents
            .iter()
            .filter(|i| i.automatic && i.is_open())
        {
            if let Some(b) = boards.get_mut(&i.tenant) {
                for c in b
                    .components
                    .iter_mut()
                    .filter(|c| i.components.contains(&c.id))
                {
                    c.auto_incident = Some(i.id);
                }
            }
        }
        let maintenance = loaded.maintenance.clone();
        let secret = if loaded.secret.len() >= 32 {
            loaded.secret.clone()
        } else {
            // No database: tokens only live as long as the process.
            let mut s = vec![0u8; 32];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut s);
            s
        };
        let subscriptions = Subscriptions {
            next_id: loaded.subscribers.iter().map(|s| s.id).max().unwrap_or(0),
            by_id: loaded
                .subscribers
                .iter()
                .map(|s| (s.id, s.clone()))
                .collect(),
            limits: subscribe::SendLimits::new(600, 60),
            tokens: subscribe::Tokens::new(&secret),
        };
        let (notices, notices_rx) = tokio::sync::mpsc::channel(NOTICE_QUEUE);
        let state = State {
            settings: config.status.clone(),
            boards,
            incidents: loaded.incidents.into_iter().map(|i| (i.id, i)).collect(),
            last_id: loaded.last_id,
            days: loaded.days,
            pending_days: HashMap::new(),
            last_flush: now,
            last_render: now,
        };
        let cell = std::sync::OnceLock::new();
        if let Some(store) = store {
            let _ = cell.set(store);
        }
        let service = Self {
            state: Mutex::new(state),
            pages: ArcSwap::from_pointee(PagesByTenant::default()),
            store: cell,
            changes: tokio::sync::watch::channel(0).0,
            maintenance: ArcSwap::from_pointee(maintenance),
            outcome: Mutex::new(PublishOutcome::default()),
            deliveries: Mutex::new(Deliveries::default()),
            subscriptions: Mutex::new(subscriptions),
            notices,
            notices_rx: Mutex::new(Some(notices_rx)),
            shared: std::sync::OnceLock::new(),
        };
        service.render_all(now);
        service
    }

    /// A service without a database (nothing persisted), for exports before the first run.
    pub fn empty(config: &Runtime, now: u64) -> Self {
        Self::from_loaded(config, None, store::Loaded::default(), now)
    }

    /// Renders a read-only view of `config`'s status database (for `rempart status export`).
    pub fn read_only(config: &Runtime, now: u64) -> Result<Self, store::StoreError> {
        let loaded = Store::read_only(&config.status.database, now, HISTORY_DAYS)?;
        Ok(Self::from_loaded(config, None, loaded, now))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a reloaded configuration: components keep their state by id.
    pub fn apply_config(&self, config: &Runtime, now: u64) {
        let wanted = config.tenants.iter().any(|t| t.status.is_some());
        let mut overrides = HashMap::new();
        if wanted && self.store.get().is_none() {
            // The first status page arrives by reload: open the database now and take in
            // everything it holds, as a start would.
            match Store::open(&config.status.database, now, HISTORY_DAYS) {
                Ok((store, loaded)) => {
                    let mut st = self.lock();
                    st.last_id = st.last_id.max(loaded.last_id);
                    st.incidents
                        .extend(loaded.incidents.into_iter().map(|i| (i.id, i)));
                    st.days.extend(loaded.days);
                    drop(st);
                    {
                        let mut subs = self.subs();
                        subs.next_id = subs
                            .next_id
                            .max(loaded.subscribers.iter().map(|s| s.id).max().unwrap_or(0));
                        subs.by_id
                            .extend(loaded.subscribers.into_iter().map(|s| (s.id, s)));
                        // Links in messages must outlive the process: the database's secret.
                        subs.tokens = subscribe::Tokens::new(&loaded.secret);
                    }
                    if !loaded.maintenance.is_empty() {
                        self.maintenance.store(Arc::new(loaded.maintenance));
                    }
                    overrides = loaded.overrides;
                    let _ = self.store.set(store);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the status database; status changes will not survive a restart")
                }
            }
        }
        {
            let mut st = self.lock();
            let mut old = std::mem::take(&mut st.boards);
            st.boards = boards_for(config, Some(&mut old), &overrides, now);
            st.settings = config.status.clone();
        }
        self.render_all(now);
    }

    /// Whether an operator put `route` of `tenant_id` (or the whole tenant) in maintenance.
    pub fn in_maintenance(&self, tenant_id: &str, route: &str) -> bool {
        let m = self.maintenance.load();
        !m.is_empty()
            && m.iter()
                .any(|(t, r)| t == tenant_id && (r == "*" || r == route))
    }

    /// Switches maintenance mode of `route` (`None` = the whole tenant) on or off; kept in
    /// the database. The caller checks that the tenant and route exist.
    pub fn set_maintenance(&self, tenant_id: &str, route: Option<&str>, on: bool) {
        let route = route.unwrap_or("*");
        let mut next: Vec<(String, String)> = (**self.maintenance.load()).clone();
        next.retain(|(t, r)| !(t == tenant_id && r == route));
        if on {
            next.push((tenant_id.to_owned(), route.to_owned()));
        }
        self.maintenance.store(Arc::new(next.clone()));
        if let Some(store) = self.store.get() {
            store.set_maintenance(tenant_id, route, on);
        }
        if let Some(shared) = self.shared.get().filter(|s| s.writes()) {
            shared.maintenance(next);
        }
        tracing::warn!(target: "rempart::status", tenant = tenant_id, route, on, "maintenance mode switched by an operator");
    }

    /// Maintenance switches in force, for operators.
    pub fn maintenance_list(&self) -> Vec<(String, String)> {
        (**self.maintenance.load()).clone()
    }

    /// The rendered site of `tenant_id`.
    pub fn pages(&self, tenant_id: &str) -> Option<Arc<Pages>> {
        self.pages.load().get(tenant_id).cloned()
    }

    /// A receiver woken after every re-rendering (the exporter waits on it).
    pub fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Status settings in force.
    pub fn settings(&self) -> StatusSettings {
        self.lock().settings.clone()
    }

    /// Feeds one sampling interval of `tenant_id`'s components (`samples[i]` for component
    /// `i` in config order) at `now_ms` (unix milliseconds). Re-renders when a shown state
    /// changed, and at least once a minute so dates and bars move on.
    pub fn observe(&self, tenant_id: &str, samples: &[Sample], now_ms: u64) {
        let now = now_ms / 1000;
        if self.following().is_some() {
            // The writer decides what is shown; the detector keeps running here, so that
            // this node takes over with a current view.
            let minute_passed = {
                let mut st = self.lock();
                let Some(board) = st.boards.get_mut(tenant_id) else {
                    return;
                };
                let hold_ms = board.spec.debounce.as_millis() as u64;
                for (k, comp) in board.components.iter_mut().enumerate() {
                    if !board.spec.components[k].pools.is_empty() {
                        let sample = samples.get(k).copied().unwrap_or_default();
                        comp.debounce
                            .observe(model::raw_state(&sample), now_ms, hold_ms);
                    }
                }
                now >= st.last_render + 60
            };
            if minute_passed {
                self.render_tenant(tenant_id, now);
            }
            return;
        }
        let changed = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let Some(board) = st.boards.get_mut(tenant_id) else {
                return;
            };
            let hold_ms = board.spec.debounce.as_millis() as u64;
            let mut changed = false;
            let mut new_incidents = Vec::new();
            let mut closed = Vec::new();
            for (k, comp) in board.components.iter_mut().enumerate() {
                let spec = &board.spec.components[k];
                let sample = samples.get(k).copied().unwrap_or_default();
                let before = comp.debounce.state();
                if !spec.pools.is_empty() {
                    comp.debounce
                        .observe(model::raw_state(&sample), now_ms, hold_ms);
                }
                let after = comp.debounce.state();
                if after != before {
                    tracing::warn!(target: "rempart::status", tenant = tenant_id, component = %comp.id, from = before.name(), to = after.name(), "component state changed");
                    let down = |s: ComponentState| {
                        matches!(
                            s,
                            ComponentState::PartialOutage | ComponentState::MajorOutage
                        )
                    };
                    if down(after) && comp.auto_incident.is_none() {
                        new_incidents.push((k, after));
                    } else if after == ComponentState::Operational {
                        if let Some(id) = comp.auto_incident.take() {
                            closed.push(id);
                        }
                    }
                }
            }
            for (k, state) in new_incidents {
                st.last_id += 1;
                let id = st.last_id;
                let spec = &board.spec.components[k];
                let mut incident = Incident {
                    id,
                    tenant: tenant_id.to_owned(),
                    kind: IncidentKind::Incident,
                    title: format!("{} : service indisponible", spec.name),
                    title_en: Some(format!("{}: service unavailable", spec.name(Language::En))),
                    impact: if state == ComponentState::MajorOutage {
                        Impact::Major
                    } else {
                        Impact::Minor
                    },
                    components: vec![spec.id.clone()],
                    published: board.spec.auto_publish,
                    automatic: true,
                    created_at: now,
                    updated_at: now,
                    resolved_at: None,
                    starts_at: None,
                    ends_at: None,
                    updates: Vec::new(),
                };
                incident.push_update(
                    IncidentStatus::Investigating,
                    format!("Le service « {} » ne répond plus normalement. Les équipes de la collectivité sont prévenues.", spec.name),
                    Some(format!("The “{}” service is not responding normally. The council's staff have been alerted.", spec.name(Language::En))),
                    now,
                );
                tracing::warn!(target: "rempart::status", tenant = tenant_id, incident = id, published = incident.published, "automatic incident opened");
                board.components[k].auto_incident = Some(id);
                if let Some(store) = self.store.get() {
                    store.save_incident(&incident);
                }
                if incident.published {
                    self.notify_update(&incident);
                }
                st.incidents.insert(id, incident);
                changed = true;
            }
            for id in closed {
                if let Some(i) = st.incidents.get_mut(&id) {
                    if i.automatic && i.is_open() {
                        i.push_update(
                            IncidentStatus::Resolved,
                            "Le service fonctionne de nouveau normalement.".to_owned(),
                            Some("The service is working normally again.".to_owned()),
                            now,
                        );
                        if let Some(store) = self.store.get() {
                            store.save_incident(i);
                        }
                        if i.published {
                            self.notify_update(i);
                        }
                        changed = true;
                    }
                }
            }
            changed |= refresh_shown(st, tenant_id, now);
            let minute_passed = now >= st.last_render + 60;
            let flush = now >= st.last_flush + 60;
            if flush {
                self.flush_days(st, now);
            }
            (changed || minute_passed, flush)
        };
        let (changed, flushed) = changed;
        if flushed {
            let mut subs = self.subs();
            self.purge_unconfirmed(&mut subs, now);
        }
        if changed {
            self.render_tenant(tenant_id, now);
            self.told(tenant_id, now);
        }
    }

    fn flush_days(&self, st: &mut State, now: u64) {
        st.last_flush = now;
        let rows: Vec<_> = st
            .pending_days
            .drain()
            .map(|((t, c, d), tally)| (t, c, d, tally))
            .collect();
        for (t, c, d, tally) in &rows {
            let e = st.days.entry((t.clone(), c.clone(), *d)).or_insert([0; 5]);
            for (x, y) in e.iter_mut().zip(tally) {
                *x = x.saturating_add(*y);
            }
        }
        let oldest = (now / DAY_S).saturating_sub(HISTORY_DAYS);
        st.days.retain(|(_, _, d), _| *d >= oldest);
        if let Some(store) = self.store.get() {
            store.add_days(rows);
        }
    }

    /// Writes pending history and waits until the database has everything.
    pub fn flush(&self) {
        let now = crate::clock::unix_now();
        {
            let mut st = self.lock();
            let tenants: Vec<String> = st.boards.keys().cloned().collect();
            for t in tenants {
                refresh_shown(&mut st, &t, now);
            }
            self.flush_days(&mut st, now);
        }
        if let Some(store) = self.store.get() {
            store.flush();
        }
    }

    fn check_components(board: &Board, ids: &[String]) -> Result<(), StatusError> {
        for id in ids {
            if !board.spec.components.iter().any(|c| &c.id == id) {
                return Err(StatusError::UnknownComponent(id.clone()));
            }
        }
        Ok(())
    }

    fn change<T>(
        &self,
        tenant_id: &str,
        now: u64,
        f: impl FnOnce(&mut State) -> Result<(T, Option<u64>), StatusError>,
    ) -> Result<T, StatusError> {
        let out = {
            let mut st = self.lock();
            if !st.boards.contains_key(tenant_id) {
                return Err(StatusError::UnknownTenant(tenant_id.to_owned()));
            }
            let (out, saved) = f(&mut st)?;
            if let (Some(id), Some(store)) = (saved, self.store.get()) {
                if let Some(i) = st.incidents.get(&id) {
                    store.save_incident(i);
                }
            }
            refresh_shown(&mut st, tenant_id, now);
            out
        };
        self.render_tenant(tenant_id, now);
        self.told(tenant_id, now);
        Ok(out)
    }

    /// Opens an incident or a maintenance window.
    pub fn create_incident(
        &self,
        tenant_id: &str,
        new: NewIncident,
        now: u64,
    ) -> Result<Incident, StatusError> {
        self.change(tenant_id, now, |st| {
            let board = &st.boards[tenant_id];
            Self::check_components(board, &new.components)?;
            if new.title.trim().is_empty() || new.message.trim().is_empty() {
                return Err(StatusError::Invalid(
                    "title and message are required".into(),
                ));
            }
            let status = new.status.unwrap_or(match new.kind {
                IncidentKind::Incident => IncidentStatus::Investigating,
                IncidentKind::Maintenance => IncidentStatus::Scheduled,
            });
            if !status.fits(new.kind) {
                return Err(StatusError::Invalid(format!(
                    "status `{}` does not fit a {}",
                    status.name(),
                    if new.kind == IncidentKind::Incident {
                        "incident"
                    } else {
                        "maintenance"
                    }
                )));
            }
            if new.kind == IncidentKind::Maintenance {
                match (new.starts_at, new.ends_at) {
                    (Some(s), Some(e)) if s < e => {}
                    (Some(_), None) => {}
                    _ => {
                        return Err(StatusError::Invalid(
                            "a maintenance needs starts_at (and ends_at after it)".into(),
                        ))
                    }
                }
            }
            st.last_id += 1;
            let id = st.last_id;
            let mut incident = Incident {
                id,
                tenant: tenant_id.to_owned(),
                kind: new.kind,
                title: new.title,
                title_en: new.title_en,
                impact: new.impact.unwrap_or(match new.kind {
                    IncidentKind::Incident => Impact::Minor,
                    IncidentKind::Maintenance => Impact::None,
                }),
                components: new.components,
                published: new.publish,
                automatic: false,
                created_at: now,
                updated_at: now,
                resolved_at: None,
                starts_at: new.starts_at,
                ends_at: new.ends_at,
                updates: Vec::new(),
            };
            incident.push_update(status, new.message, new.message_en, now);
            st.incidents.insert(id, incident.clone());
            if incident.published {
                self.notify_update(&incident);
            }
            Ok((incident, Some(id)))
        })
    }

    fn incident_mut<'a>(
        st: &'a mut State,
        tenant_id: &str,
        id: u64,
    ) -> Result<&'a mut Incident, StatusError> {
        st.incidents
            .get_mut(&id)
            .filter(|i| i.tenant == tenant_id)
            .ok_or(StatusError::UnknownIncident(id))
    }

    /// Adds a public update to an incident's timeline.
    pub fn add_update(
        &self,
        tenant_id: &str,
        id: u64,
        update: NewUpdate,
        now: u64,
    ) -> Result<Incident, StatusError> {
        self.change(tenant_id, now, |st| {
            let incident = Self::incident_mut(st, tenant_id, id)?;
            if !update.status.fits(incident.kind) {
                return Err(StatusError::Invalid(format!(
                    "status `{}` does not fit this notice",
                    update.status.name()
                )));
            }
            if update.message.trim().is_empty() {
                return Err(StatusError::Invalid("message is required".into()));
            }
            if let Some(impact) = update.impact {
                incident.impact = impact;
            }
            incident.automatic = false;
            incident.push_update(update.status, update.message, update.message_en, now);
            if incident.published {
                self.notify_update(incident);
            }
            Ok((incident.clone(), Some(id)))
        })
    }

    /// Edits an incident's header, publishes it or takes it back to draft.
    pub fn edit_incident(
        &self,
        tenant_id: &str,
        id: u64,
        edit: IncidentEdit,
        now: u64,
    ) -> Result<Incident, StatusError> {
        self.change(tenant_id, now, |st| {
            if let Some(c) = &edit.components {
                Self::check_components(&st.boards[tenant_id], c)?;
            }
            let incident = Self::incident_mut(st, tenant_id, id)?;
            if let Some(t) = edit.title.filter(|t| !t.trim().is_empty()) {
                incident.title = t;
            }
            if edit.title_en.is_some() {
                incident.title_en = edit.title_en;
            }
            if let Some(i) = edit.impact {
                incident.impact = i;
            }
            if let Some(c) = edit.components {
                incident.components = c;
            }
            if let Some(p) = edit.published {
                let newly = p && !incident.published;
                incident.published = p;
                if newly {
                    self.notify_update(incident);
                }
            }
            incident.automatic = false;
            incident.updated_at = now;
            Ok((incident.clone(), Some(id)))
        })
    }

    /// Sets (or clears with `None`) an operator's state for a component.
    pub fn set_override(
        &self,
        tenant_id: &str,
        component: &str,
        state: Option<ComponentState>,
        now: u64,
    ) -> Result<(), StatusError> {
        self.change(tenant_id, now, |st| {
            let board = st
                .boards
                .get_mut(tenant_id)
                .ok_or_else(|| StatusError::UnknownTenant(tenant_id.to_owned()))?;
            let comp = board
                .components
                .iter_mut()
                .find(|c| c.id == component)
                .ok_or_else(|| StatusError::UnknownComponent(component.to_owned()))?;
            comp.overridden = state;
            Ok(((), None))
        })?;
        if let Some(store) = self.store.get() {
            store.set_override(tenant_id, component, state);
        }
        Ok(())
    }

    /// Everything operators see of a tenant (drafts included).
    pub fn admin_view(&self, tenant_id: &str) -> Result<serde_json::Value, StatusError> {
        let st = self.lock();
        let board = st
            .boards
            .get(tenant_id)
            .ok_or_else(|| StatusError::UnknownTenant(tenant_id.to_owned()))?;
        let components: Vec<_> = board
            .components
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id,
                    "shown": c.shown.name(),
                    "detected": c.debounce.state().name(),
                    "override": c.overridden.map(ComponentState::name),
                    "changed_at": c.changed_at,
                })
            })
            .collect();
        let mut incidents: Vec<&Incident> = st
            .incidents
            .values()
            .filter(|i| i.tenant == tenant_id)
            .collect();
        incidents.sort_by_key(|i| std::cmp::Reverse(i.id));
        let incidents = serde_json::to_value(&incidents).unwrap_or_default();
        let outcome = self.outcome.lock().map(|o| o.clone()).unwrap_or_default();
        let deliveries = self
            .deliveries
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        drop(st);
        let (confirmed, pending) = self.subscriber_counts(tenant_id);
        Ok(serde_json::json!({
            "tenant": tenant_id,
            "components": components,
            "incidents": incidents,
            "export": outcome,
            "subscribers": { "confirmed": confirmed, "pending": pending },
            "deliveries": deliveries,
        }))
    }

    fn notify_update(&self, incident: &Incident) {
        let Some(update_id) = incident.updates.last().map(|u| u.id) else {
            return;
        };
        let notice = Notice::Update {
            incident: Box::new(incident.clone()),
            update_id,
        };
        if self.notices.try_send(notice).is_err() {
            tracing::error!(target: "rempart::status", incident = incident.id, "notification queue full: this update is not sent to subscribers and webhooks");
        }
    }

    /// The notices stream (taken once, by the notifier).
    pub fn take_notices(&self) -> Option<tokio::sync::mpsc::Receiver<Notice>> {
        self.notices_rx.lock().ok()?.take()
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, Subscriptions> {
        self.subscriptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A resident asks to follow `tenant_id` (all components when `components` is empty).
    pub fn subscribe(
        &self,
        tenant_id: &str,
        email: &str,
        components: Vec<String>,
        lang: Language,
        now: u64,
    ) -> Result<SubscribeOutcome, StatusError> {
        {
            let st = self.lock();
            let board = st
                .boards
                .get(tenant_id)
                .filter(|b| b.spec.subscriptions)
                .ok_or_else(|| StatusError::UnknownTenant(tenant_id.to_owned()))?;
            Self::check_components(board, &components)?;
        }
        // In a cluster, the node that writes the boards makes it and sends the message.
        if let Some(shared) = self.following() {
            return self.subscribe_through(shared, tenant_id, email, components, lang);
        }
        let email = email.trim().to_owned();
        if !subscribe::valid_email(&email) {
            return Err(StatusError::Invalid("invalid e-mail address".into()));
        }
        let mut subs = self.subs();
        self.purge_unconfirmed(&mut subs, now);
        let existing = subs
            .by_id
            .values()
            .find(|s| s.tenant == tenant_id && s.email.eq_ignore_ascii_case(&email))
            .cloned();
        if existing.as_ref().is_some_and(|s| s.confirmed) {
            return Ok(SubscribeOutcome::AlreadyConfirmed);
        }
        if !subs.limits.allow(tenant_id, &email, now) {
            tracing::info!(target: "rempart::status", tenant = tenant_id, address = %subscribe::log_label(&email), "subscription confirmation not sent (sending limits)");
            return Ok(SubscribeOutcome::Limited);
        }
        let subscriber = match existing {
            Some(mut s) => {
                s.components = components;
                s.lang = if lang == Language::En { "en" } else { "fr" }.to_owned();
                s
            }
            None => {
                subs.next_id += 1;
                subscribe::Subscriber {
                    id: subs.next_id,
                    tenant: tenant_id.to_owned(),
                    email,
                    components,
                    lang: if lang == Language::En { "en" } else { "fr" }.to_owned(),
                    confirmed: false,
                    created_at: now,
                }
            }
        };
        subs.by_id.insert(subscriber.id, subscriber.clone());
        drop(subs);
        if let Some(store) = self.store.get() {
            store.save_subscriber(&subscriber);
        }
        tracing::info!(target: "rempart::status", tenant = tenant_id, address = %subscribe::log_label(&subscriber.email), "subscription requested");
        if self
            .notices
            .try_send(Notice::Confirm { subscriber })
            .is_err()
        {
            tracing::error!(target: "rempart::status", "notification queue full: confirmation not sent");
        }
        self.told(tenant_id, now);
        Ok(SubscribeOutcome::ConfirmationSent)
    }

    /// Unconfirmed requests are forgotten after two days, on disk too.
    fn purge_unconfirmed(&self, subs: &mut Subscriptions, now: u64) {
        let expired: Vec<u64> = subs
            .by_id
            .values()
            .filter(|s| !s.confirmed && now >= s.created_at + 2 * DAY_S)
            .map(|s| s.id)
            .collect();
        for id in expired {
            subs.by_id.remove(&id);
            if let Some(store) = self.store.get() {
                store.delete_subscriber(id);
            }
        }
    }

    /// The token of `subscriber` for `purpose` (for links in messages).
    pub fn token(&self, subscriber: u64, purpose: subscribe::Purpose) -> String {
        self.subs().tokens.make(subscriber, purpose)
    }

    /// Confirms the subscription a confirmation token names; `false` for a bad or stale
    /// token.
    pub fn confirm(&self, tenant_id: &str, token: &str) -> bool {
        if let Some(shared) = self.following() {
            return self.link_through(shared, tenant_id, token, subscribe::Purpose::Confirm);
        }
        let mut subs = self.subs();
        let Some(id) = subs.tokens.check(token, subscribe::Purpose::Confirm) else {
            return false;
        };
        let Some(s) = subs.by_id.get_mut(&id).filter(|s| s.tenant == tenant_id) else {
            return false;
        };
        s.confirmed = true;
        let saved = s.clone();
        drop(subs);
        if let Some(store) = self.store.get() {
            store.save_subscriber(&saved);
        }
        tracing::info!(target: "rempart::status", tenant = tenant_id, address = %subscribe::log_label(&saved.email), "subscription confirmed");
        self.told(tenant_id, crate::clock::unix_now());
        true
    }

    /// Deletes the subscriber an unsubscribe token names (nothing of them is kept); `false`
    /// only for a token that is not genuine.
    pub fn unsubscribe(&self, tenant_id: &str, token: &str) -> bool {
        if let Some(shared) = self.following() {
            return self.link_through(shared, tenant_id, token, subscribe::Purpose::Unsubscribe);
        }
        let mut subs = self.subs();
        let Some(id) = subs.tokens.check(token, subscribe::Purpose::Unsubscribe) else {
            return false;
        };
        if subs.by_id.get(&id).is_none_or(|s| s.tenant != tenant_id) {
            // A genuine link used twice: already done.
            return true;
        }
        subs.by_id.remove(&id);
        drop(subs);
        if let Some(store) = self.store.get() {
            store.delete_subscriber(id);
        }
        tracing::info!(target: "rempart::status", tenant = tenant_id, subscriber = id, "unsubscribed; address deleted");
        self.told(tenant_id, crate::clock::unix_now());
        true
    }

    /// Confirmed subscribers of `tenant_id` following any of `components`.
    pub fn recipients(&self, tenant_id: &str, components: &[String]) -> Vec<subscribe::Subscriber> {
        let mut list: Vec<_> = self
            .subs()
            .by_id
            .values()
            .filter(|s| s.tenant == tenant_id && s.confirmed && s.follows(components))
            .cloned()
            .collect();
        list.sort_by_key(|s| s.id);
        list
    }

    /// Subscriber counts of `tenant_id` (confirmed, pending), for operators.
    pub fn subscriber_counts(&self, tenant_id: &str) -> (usize, usize) {
        let subs = self.subs();
        let mine = subs.by_id.values().filter(|s| s.tenant == tenant_id);
        let confirmed = mine.clone().filter(|s| s.confirmed).count();
        (confirmed, mine.count() - confirmed)
    }

    /// Whether subscriber `id` is still there (confirmed or not).
    pub fn has_subscriber(&self, id: u64) -> bool {
        self.subs().by_id.contains_key(&id)
    }

    /// What messages say about a tenant: name, page address, component names.
    pub fn tenant_info(&self, tenant_id: &str) -> Option<TenantInfo> {
        let st = self.lock();
        let b = st.boards.get(tenant_id)?;
        Some(TenantInfo {
            name: b.tenant_name.clone(),
            url: b.spec.url.clone(),
            components: b
                .spec
                .components
                .iter()
                .map(|c| (c.id.clone(), c.name.clone(), c.name_en.clone()))
                .collect(),
        })
    }

    /// Shown state of every component, as (tenant, component, state).
    pub fn component_states(&self) -> Vec<(String, String, ComponentState)> {
        let st = self.lock();
        st.boards
            .iter()
            .flat_map(|(t, b)| {
                b.components
                    .iter()
                    .map(move |c| (t.clone(), c.id.clone(), c.shown))
            })
            .collect()
    }

    /// Ids of tenants with a status page.
    pub fn tenants(&self) -> Vec<String> {
        self.lock().boards.keys().cloned().collect()
    }

    fn snapshot(st: &State, tenant_id: &str, now: u64) -> Option<Snapshot> {
        let board = st.boards.get(tenant_id)?;
        let today = now / DAY_S;
        let components = board
            .components
            .iter()
            .zip(&board.spec.components)
            .map(|(c, spec)| {
                let key = |d: u64| (tenant_id.to_owned(), c.id.clone(), d);
                let mut days = render::window(
                    |d| {
                        let mut t = st.days.get(&key(d)).copied();
                        if let Some(p) = st.pending_days.get(&key(d)) {
                            let base = t.get_or_insert([0; 5]);
                            for (b, x) in base.iter_mut().zip(p) {
                                *b += x;
                            }
                        }
                        t
                    },
                    today,
                );
                // Time not yet accrued counts in the current state.
                if let Some(last) = days.last_mut() {
                    let pending = now.saturating_sub(c.accrued_to.max(today * DAY_S));
                    last[c.shown.index()] += u32::try_from(pending).unwrap_or(0);
                }
                ComponentSnapshot {
                    id: c.id.clone(),
                    name: spec.name.clone(),
                    name_en: spec.name_en.clone(),
                    state: c.shown,
                    changed_at: c.changed_at,
                    days,
                }
            })
            .collect();
        let horizon = now.saturating_sub(HISTORY_DAYS * DAY_S);
        let mut incidents: Vec<Incident> = st
            .incidents
            .values()
            .filter(|i| {
                i.tenant == tenant_id && i.published && (i.is_open() || i.updated_at >= horizon)
            })
            .cloned()
            .collect();
        incidents.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(b.id.cmp(&a.id)));
        Some(Snapshot {
            tenant_id: tenant_id.to_owned(),
            tenant_name: board.tenant_name.clone(),
            language: board.language,
            url: board.spec.url.clone(),
            zone: st.settings.time_zone,
            components,
            incidents,
            alternatives: board.spec.alternatives.clone(),
            subscriptions: board.spec.subscriptions,
            now,
        })
    }

    fn render_tenant(&self, tenant_id: &str, now: u64) {
        let snap = {
            let mut st = self.lock();
            st.last_render = now;
            Self::snapshot(&st, tenant_id, now)
        };
        let mut map = (**self.pages.load()).clone();
        match snap {
            Some(snap) => {
                map.insert(tenant_id.to_owned(), Arc::new(build_pages(&snap)));
            }
            None => {
                map.remove(tenant_id);
            }
        }
        self.pages.store(Arc::new(map));
        self.changes.send_modify(|v| *v += 1);
    }

    fn render_all(&self, now: u64) {
        let snaps: Vec<Snapshot> = {
            let mut st = self.lock();
            st.last_render = now;
            let ids: Vec<String> = st.boards.keys().cloned().collect();
            ids.iter()
                .filter_map(|t| Self::snapshot(&st, t, now))
                .collect()
        };
        let map = snaps
            .iter()
            .map(|s| (s.tenant_id.clone(), Arc::new(build_pages(s))))
            .collect();
        self.pages.store(Arc::new(map));
        self.changes.send_modify(|v| *v += 1);
    }
}

/// Recomputes the shown state of `tenant_id`'s components (override, then an active
/// maintenance window, then the detector) and accrues history; `true` when one changed.
fn refresh_shown(st: &mut State, tenant_id: &str, now: u64) -> bool {
    let Some(board) = st.boards.get_mut(tenant_id) else {
        return false;
    };
    let mut changed = false;
    for c in &mut board.components {
        let maintenance = st.incidents.values().any(|i| {
            i.tenant == tenant_id && i.components.contains(&c.id) && i.maintenance_active(now)
        });
        let shown = c.overridden.unwrap_or(if maintenance {
            ComponentState::UnderMaintenance
        } else {
            c.debounce.state()
        });
        // Time since the last accrual counts in the state shown until now.
        if now > c.accrued_to {
            let key_tenant = tenant_id.to_owned();
            let pending = &mut st.pending_days;
            model::accrue(c.shown, c.accrued_to, now, |day, idx, secs| {
                let e = pending
                    .entry((key_tenant.clone(), c.id.clone(), day))
                    .or_insert([0; 5]);
                e[idx] = e[idx].saturating_add(secs);
            });
            c.accrued_to = now;
        }
        if shown != c.shown {
            c.shown = shown;
            c.changed_at = now;
            changed = true;
        }
    }
    changed
}

fn build_pages(snap: &Snapshot) -> Pages {
    let json = render::summary(snap);
    // One tag per rendering: a digest of the summary and the rendering time.
    let tag = {
        let d = ring::digest::digest(&ring::digest::SHA256, json.as_bytes());
        let mut s = String::new();
        for b in &d.as_ref()[..8] {
            s.push_str(&format!("{b:02x}"));
        }
        s.push_str(&format!("{:x}", snap.now));
        s
    };
    let page = |lang, flavor, t: &str| {
        Variant::new(
            render::page(snap, lang, flavor),
            &format!("{tag}-{t}"),
            DocKind::Page,
        )
    };
    Pages {
        html: [
            page(Language::Fr, Flavor::Served, "fr"),
            page(Language::En, Flavor::Served, "en"),
        ],
        static_html: [
            page(Language::Fr, Flavor::Static, "sfr"),
            page(Language::En, Flavor::Static, "sen"),
        ],
        atom: Variant::new(render::feed(snap), &format!("{tag}-atom"), DocKind::Feed),
        json: Variant::new(json, &format!("{tag}-json"), DocKind::Summary),
        language: snap.language,
    }
}

/// The status pages' detector reads the signals: each component's sample is the sum of its
/// pools' figures over the last second.
impl crate::signals::Consumer for StatusService {
    fn on_report(&self, report: &crate::signals::Report) {
        for (tenant, tenant_report) in report.config.tenants.iter().zip(&report.tenants) {
            let Some(spec) = &tenant.status else { continue };
            let samples: Vec<Sample> = spec
                .components
                .iter()
                .map(|c| {
                    let mut s = Sample::default();
                    for pool in c.pools.iter().filter_map(|&pi| tenant_report.pools.get(pi)) {
                        s.servers += pool.servers;
                        s.available += pool.available;
                        s.requests += pool.requests;
                        s.failures += pool.failures;
                        s.slow += pool.slow;
                    }
                    s
                })
                .collect();
            self.observe(&tenant.id, &samples, report.at_unix_ms);
        }
    }
}
