//! Wiring of a running gateway: configuration, proxy, listeners, admin API and reload
//! triggers, started together and stopped together. Used by `rempart run`, the demo and the
//! integration tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{self, Runtime};
use crate::pipeline::Gateway;
use crate::reload::Reloader;
use crate::server::Server;

/// A started gateway.
pub struct Running {
    /// The proxy core.
    pub gateway: Arc<Gateway>,
    /// Reload entry point.
    pub reloader: Arc<Reloader>,
    /// Bound public listener addresses, in config order.
    pub listen_addrs: Vec<SocketAddr>,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    server: Server,
    admin_shutdown: CancellationToken,
    background: CancellationToken,
    watch: Arc<crate::watch::service::WatchService>,
}

/// Options for `start`.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Watch the config directory for changes.
    pub watch_file: bool,
    /// Reload on SIGHUP.
    pub sighup: bool,
    /// Write access-log lines.
    pub access_log: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            watch_file: true,
            sighup: true,
            access_log: true,
        }
    }
}

/// Loads `path` and starts everything.
pub async fn start(path: &Path, options: Options) -> anyhow::Result<Running> {
    let runtime = config::load(path)?;
    start_with(runtime, options).await
}

/// Starts everything from an already validated configuration.
pub async fn start_with(runtime: Runtime, options: Options) -> anyhow::Result<Running> {
    // SIGHUP handled from the first moment: one arriving while the gateway starts (an
    // operator, or a deployment tool, reloading early) is a reload once ready, never the
    // default action, which ends the process.
    let hup = options
        .sighup
        .then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok())
        .flatten();
    let path = runtime.source.clone();
    let admin_address = runtime.admin.address;
    let status = crate::status::StatusService::open(&runtime, crate::clock::unix_now())?;
    let gateway = Gateway::new(runtime, options.access_log, status.clone());
    let server = Server::start(gateway.clone()).await?;
    let background = CancellationToken::new();
    let effects = Arc::new(GatewayEffects {
        gateway: Arc::downgrade(&gateway),
        status: status.clone(),
        notices: std::sync::Mutex::default(),
    });
    let watch = crate::watch::service::WatchService::open(
        &gateway.current().config,
        &gateway.metrics,
        effects,
    )?;
    tokio::spawn(watch.deliver(background.clone()));
    crate::pipeline::sampler::spawn(
        &gateway,
        vec![status.clone(), watch.clone()],
        background.clone(),
    );
    tokio::spawn(crate::status::export::run(
        status.clone(),
        background.clone(),
    ));
    tokio::spawn(crate::status::notify::run(status, background.clone()));
    let reloader = Reloader::new(path, gateway.clone());
    let admin_shutdown = CancellationToken::new();
    let admin_addr = crate::admin::start(
        admin_address,
        gateway.clone(),
        reloader.clone(),
        watch.clone(),
        admin_shutdown.clone(),
    )
    .await?;
    if options.sighup {
        reloader.spawn_sighup(hup);
    }
    if options.watch_file {
        if let Err(e) = reloader.spawn_file_watch() {
            tracing::warn!(error = %e, "cannot watch the configuration file; reload with SIGHUP or the admin API");
        }
    }
    Ok(Running {
        listen_addrs: server.local_addrs.clone(),
        gateway,
        reloader,
        admin_addr,
        server,
        admin_shutdown,
        background,
        watch,
    })
}

impl Running {
    /// Graceful stop: stop accepting, drain up to the configured deadline.
    pub async fn shutdown(self) -> bool {
        let deadline = self.gateway.current().config.timeouts.shutdown_drain;
        let drained = self.server.shutdown(deadline).await;
        self.admin_shutdown.cancel();
        self.reloader.stop_watching();
        self.gateway.current().retired.cancel();
        self.background.cancel();
        let status = self.gateway.current().status.clone();
        // The last minutes of history and any queued incident change reach the disk.
        let _ = tokio::task::spawn_blocking(move || status.flush()).await;
        // The watch its incidents, baselines and queued alerts.
        let watch = self.watch.clone();
        let _ = tokio::task::spawn_blocking(move || watch.flush()).await;
        // And the data guard's journal its last second of answers.
        if let Some(journal) = self.gateway.current().guard_journal.clone() {
            let _ = tokio::task::spawn_blocking(move || journal.flush()).await;
        }
        drained
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// What a change of vigilance level does outside the watch: the tenant's flags (the
/// pipeline reads the playbook's actions from its level) and the notice for residents on
/// its status page.
struct GatewayEffects {
    gateway: std::sync::Weak<Gateway>,
    status: Arc<crate::status::StatusService>,
    /// The status notice put up for each tenant's incident: (security incident, status
    /// incident).
    notices: std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>,
}

impl crate::watch::service::Effects for GatewayEffects {
    fn level(&self, tenant: &str, level: crate::common::Level) {
        if let Some(gw) = self.gateway.upgrade() {
            gw.set_level(tenant, level);
        }
    }

    fn notice(
        &self,
        tenant: &str,
        notice: Option<crate::config::runtime::NoticeMode>,
        incident: &crate::watch::incident::Incident,
    ) {
        use crate::config::runtime::NoticeMode;
        use crate::status::model::IncidentStatus;
        let now = crate::clock::unix_now();
        let mut notices = self
            .notices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match notice {
            Some(mode) if mode != NoticeMode::Off => {
                if let Some((_, status_id)) = notices.get(tenant) {
                    if mode == NoticeMode::Publish {
                        let edit = crate::status::IncidentEdit {
                            published: Some(true),
                            ..Default::default()
                        };
                        let _ = self.status.edit_incident(tenant, *status_id, edit, now);
                    }
                    return;
                }
                let new = crate::status::NewIncident {
                    kind: crate::status::model::IncidentKind::Incident,
                    title: "Services perturbés : attaque informatique en cours".into(),
                    title_en: Some("Services disrupted: a cyber attack is under way".into()),
                    impact: Some(crate::status::model::Impact::Major),
                    components: Vec::new(),
                    status: Some(IncidentStatus::Identified),
                    message: "Nos services en ligne font l'objet d'une attaque informatique. Ils restent accessibles mais peuvent être lents, ou vous demander de patienter quelques secondes pendant la vérification de votre navigateur. Nos équipes sont mobilisées.".into(),
                    message_en: Some("Our online services are under a cyber attack. They remain available but may be slow, or ask you to wait a few seconds while your browser is checked. Our teams are on it.".into()),
                    publish: mode == NoticeMode::Publish,
                    starts_at: None,
                    ends_at: None,
                };
                match self.status.create_incident(tenant, new, now) {
                    Ok(i) => {
                        tracing::warn!(target: "rempart::watch", tenant, incident = incident.id, status_incident = i.id, published = i.published, "status page notice put up by the playbook");
                        notices.insert(tenant.to_owned(), (incident.id, i.id));
                    }
                    Err(e) => {
                        tracing::info!(target: "rempart::watch", tenant, error = %e, "no status page notice");
                    }
                }
            }
            _ => {
                let Some((_, status_id)) = notices.remove(tenant) else {
                    return;
                };
                let update = crate::status::NewUpdate {
                    status: IncidentStatus::Resolved,
                    message:
                        "L'attaque a cessé : nos services fonctionnent de nouveau normalement."
                            .into(),
                    message_en: Some(
                        "The attack has stopped: our services are back to normal.".into(),
                    ),
                    impact: None,
                };
                let _ = self.status.add_update(tenant, status_id, update, now);
            }
        }
    }
}
