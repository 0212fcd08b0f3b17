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
    /// Upgrades asked for through the admin API (`rempart run` answers them).
    pub upgrades: tokio::sync::mpsc::Receiver<crate::handover::UpgradeRequest>,
    /// A duplicate of the admin listening socket (handed over on upgrade).
    admin_socket: std::os::fd::OwnedFd,
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
    /// Take upgrade requests from the admin API (`rempart run` serves them).
    pub upgrades: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            watch_file: true,
            sighup: true,
            access_log: true,
            upgrades: false,
        }
    }
}

/// Loads `path` and starts everything.
pub async fn start(path: &Path, options: Options) -> anyhow::Result<Running> {
    let runtime = config::load(path)?;
    start_with(runtime, options).await
}

/// The listening sockets systemd passed (socket activation: `LISTEN_FDS` for this process),
/// used for the listeners bound to their addresses.
fn activated_sockets() -> Vec<std::net::TcpListener> {
    let mut fds = listenfd::ListenFd::from_env();
    (0..fds.len())
        .filter_map(|i| match fds.take_tcp_listener(i) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(fd = i + 3, error = %e, "a socket passed by systemd is not a TCP listener; ignored");
                None
            }
        })
        .collect()
}

/// Starts everything from an already validated configuration. A process started by an
/// upgrade (`handover::ENV`) takes the running one's listening sockets and bans, and tells
/// it once it serves.
pub async fn start_with(runtime: Runtime, options: Options) -> anyhow::Result<Running> {
    let mut taken = tokio::task::spawn_blocking(crate::handover::take)
        .await?
        .map_err(|e| anyhow::anyhow!("cannot take over from the running gateway: {e}"))?;
    let mut inherited = match taken.as_mut() {
        Some(t) => std::mem::take(&mut t.listeners),
        None => activated_sockets(),
    };
    let admin_inherited = inherited
        .iter()
        .position(|l| l.local_addr().is_ok_and(|a| a == runtime.admin.address))
        .map(|i| inherited.swap_remove(i));
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
    let carried = taken.as_mut().and_then(Carried::take);
    // An upgrade keeps the pass key the previous process made, if it made one, and the keys
    // its counters hash with.
    // In cluster mode the counters hash with keys derived from the cluster's settings, the
    // same on every node, so the nodes' counts add up.
    let cluster_keys = runtime.cluster.as_ref().map(|c| {
        crate::shield::sketch::SketchKeys::derived(
            format!(
                "{}\n{}\n{}",
                c.redis,
                c.key_prefix,
                c.password.as_deref().unwrap_or_default()
            )
            .as_bytes(),
        )
    });
    let handed_secret = taken
        .as_ref()
        .and_then(|t| t.handed.random_pass_key.as_deref())
        .and_then(crate::handover::secret_from_hex);
    let defence = (handed_secret.is_some() || cluster_keys.is_some()).then(|| {
        let keys = cluster_keys.unwrap_or_else(|| {
            carried
                .as_ref()
                .and_then(|c| c.node.shield.as_ref())
                .map_or_else(crate::shield::sketch::SketchKeys::random, |s| s.keys)
        });
        Arc::new(crate::shield::defence::Defence::handed(
            handed_secret.unwrap_or_else(crate::shield::pass::KeyRing::random_secret),
            keys,
        ))
    });
    // Cluster mode: the bans live in this node's list and are shared through Redis by a
    // link task; the gateway starts whether Redis answers or not.
    let cluster = runtime.cluster.clone().map(crate::cluster::Cluster::new);
    let gateway = Gateway::with_first(
        runtime,
        options.access_log,
        status.clone(),
        crate::pipeline::generation::First {
            defence,
            bans: cluster.as_ref().map(crate::cluster::Cluster::bans),
            replay: cluster.as_ref().map(crate::cluster::Cluster::replay),
            guard_share: cluster.as_ref().map(crate::cluster::Cluster::guard_share),
        },
    );
    if let Some(cluster) = &cluster {
        cluster.attach_defence(gateway.current().defence.clone());
        // Before the renewals start: one node orders for all.
        cluster.attach_acme(gateway.current().acme.clone());
        // One node writes the status boards, every node shows them.
        cluster.attach_status(status.clone());
    }
    // Everything handed over is in place before the first request.
    if let Some(taken) = &taken {
        let now = crate::clock::now_ms();
        let generation = gateway.current();
        for (target, reason, left_ms) in &taken.handed.bans {
            if let Ok(net) = target.parse::<ipnet::IpNet>() {
                generation.bans.add(net, reason, *left_ms, now);
            }
        }
        for (tenant, left_ms) in &taken.handed.under_attack {
            let until = left_ms.map_or(u64::MAX, |left| now.saturating_add(left));
            gateway.set_under_attack(tenant, until);
        }
        let state = carried.as_ref().map(|c| {
            c.node.restore(
                &generation.shield,
                &generation.defence,
                generation.replay.as_ref(),
                now,
            )
        });
        tracing::info!(
            bans = taken.handed.bans.len(),
            under_attack = taken.handed.under_attack.len(),
            levels = carried.as_ref().map_or(0, |c| c.levels.len()),
            taken = ?state.unwrap_or_default(),
            "defence state taken over from the running gateway"
        );
    }
    let server = Server::start(gateway.clone(), inherited).await?;
    let background = CancellationToken::new();
    if let Some(cluster) = &cluster {
        cluster.export_to(crate::cluster::Gauges {
            degraded: gateway.metrics.cluster_degraded.clone(),
            nodes: gateway.metrics.cluster_nodes.clone(),
            pending: gateway.metrics.cluster_pending.clone(),
        });
    }
    let effects = Arc::new(GatewayEffects {
        gateway: Arc::downgrade(&gateway),
        status: status.clone(),
        notices: std::sync::Mutex::default(),
        cluster: cluster.clone(),
    });
    if let Some(cluster) = &cluster {
        cluster.attach_effects(Arc::new(ClusterEffects {
            gateway: Arc::downgrade(&gateway),
            cluster: Arc::downgrade(cluster),
        }));
    }
    let watch = crate::watch::service::WatchService::open(
        &gateway.current().config,
        &gateway.metrics,
        effects,
    )?;
    if let Some(cluster) = &cluster {
        // Security incidents told to the others, theirs shown here.
        cluster.attach_watch(watch.clone());
        // Linked once everything it acts on is in place.
        tokio::spawn(crate::cluster::link::run(
            cluster.clone(),
            background.clone(),
        ));
    }
    if let Some(carried) = carried {
        watch.take_levels(carried.levels);
    }
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
    tokio::spawn(keep_certificates(
        Arc::downgrade(&gateway),
        watch.clone(),
        background.clone(),
    ));
    let reloader = Reloader::new(path, gateway.clone());
    let admin_shutdown = CancellationToken::new();
    let (upgrade_requests, upgrades) = tokio::sync::mpsc::channel(1);
    let (admin_addr, admin_socket) = crate::admin::start(
        admin_address,
        crate::admin::AdminState {
            gateway: gateway.clone(),
            reloader: reloader.clone(),
            watch: watch.clone(),
            upgrades: options.upgrades.then_some(upgrade_requests),
            cluster: cluster.clone(),
        },
        admin_inherited,
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
    if let Some(taken) = taken {
        taken
            .ready()
            .map_err(|e| anyhow::anyhow!("cannot tell the running gateway: {e}"))?;
        tracing::info!("serving; the previous process stops accepting and drains");
    }
    Ok(Running {
        upgrades,
        admin_socket,
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

/// The defence state an upgrade carries besides the handover's own message (its opaque
/// block): the node's client state and the vigilance levels.
#[derive(serde::Serialize, serde::Deserialize)]
struct Carried {
    node: crate::state::snapshot::NodeState,
    levels: Vec<crate::watch::service::KeptLevel>,
}

impl Carried {
    /// The block `taken` carries, if any and readable (otherwise said in the log: the new
    /// process starts with fresh counters, never refuses to start over them).
    fn take(taken: &mut crate::handover::Taken) -> Option<Self> {
        let bytes = std::mem::take(&mut taken.state);
        if bytes.is_empty() {
            return None;
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| tracing::warn!(error = %e, "the previous process's counters and levels are unreadable; starting from fresh ones"))
            .ok()
    }
}

impl Running {
    /// Starts `binary` (with `args`, this process's own) on this gateway's listening
    /// sockets and bans. Once it serves, this process stops accepting (the caller then
    /// drains with `shutdown`) and `Ok` carries its process id; otherwise it was stopped,
    /// this process goes on as before, and `Err` says why.
    pub async fn hand_over(
        &mut self,
        binary: std::path::PathBuf,
        args: Vec<std::ffi::OsString>,
    ) -> Result<u32, String> {
        let now = crate::clock::now_ms();
        let bans = self
            .gateway
            .current()
            .bans
            .list(now)
            .into_iter()
            .map(|b| {
                let left = b.expires_ms.map(|end| end.saturating_sub(now));
                (b.target, b.reason, left)
            })
            .collect();
        let mut addresses = Vec::new();
        let mut sockets = Vec::new();
        for (address, fd) in self.server.listening() {
            addresses.push(address);
            sockets.push(fd.try_clone_to_owned().map_err(|e| e.to_string())?);
        }
        addresses.push(self.admin_addr);
        sockets.push(self.admin_socket.try_clone().map_err(|e| e.to_string())?);
        let random_pass_key = Some(crate::handover::secret_to_hex(
            &self.gateway.current().defence.random_secret(),
        ));
        let generation = self.gateway.current();
        let under_attack = generation
            .config
            .tenants
            .iter()
            .zip(&generation.tenant_flags)
            .filter_map(|(t, flags)| {
                let until = flags.under_attack_until(now)?;
                Some((t.id.clone(), (until != u64::MAX).then(|| until - now)))
            })
            .collect();
        let handed = crate::handover::Handed {
            addresses,
            bans,
            random_pass_key,
            under_attack,
        };
        tracing::info!(binary = %binary.display(), "upgrade: starting the new binary on this gateway's sockets");
        let watch = self.watch.clone();
        let status = generation.status.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            // The new process reads incidents, baselines and status history from the
            // databases: everything this one knows is written first.
            status.flush();
            watch.flush();
            let carried = Carried {
                node: crate::state::snapshot::NodeState::capture(
                    &generation.shield,
                    &generation.defence,
                    generation.replay.as_ref(),
                    crate::clock::now_ms(),
                ),
                levels: watch.levels(),
            };
            let state = serde_json::to_vec(&carried).map_err(|e| e.to_string())?;
            let borrowed: Vec<_> = sockets.iter().map(std::os::fd::AsFd::as_fd).collect();
            crate::handover::offer(
                &binary,
                &args,
                &borrowed,
                &handed,
                &state,
                crate::handover::READY_WITHIN,
            )
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match &outcome {
            Ok(pid) => {
                self.server.stop_accepting();
                // The admin API too: the new process answers it from now on. And the watch,
                // the status history and the certificates are its job now: this process's
                // background tasks stop, so two processes never write the same incident.
                self.admin_shutdown.cancel();
                self.background.cancel();
                tracing::info!(
                    pid,
                    "upgrade: the new process serves; this one stops accepting and drains"
                );
            }
            Err(why) => {
                tracing::error!(error = %why, "upgrade refused: this process goes on serving");
            }
        }
        outcome
    }

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

/// Obtains and renews the ACME tenants' certificates: a pass at start (never waited for),
/// then whenever one is due, at least every minute (a reload may add a tenant).
async fn keep_certificates(
    gateway: std::sync::Weak<Gateway>,
    watch: Arc<crate::watch::service::WatchService>,
    stop: CancellationToken,
) {
    loop {
        let Some(gw) = gateway.upgrade() else { return };
        let generation = gw.current();
        let mut wait = std::time::Duration::from_secs(60);
        // Certificates that end soon are told to operators (files and ACME alike).
        let served: Vec<_> = generation
            .served_certificates()
            .into_iter()
            .map(
                |(tenant, hosts, not_after_s, acme)| crate::watch::certificates::Served {
                    tenant,
                    hosts,
                    not_after_s,
                    acme,
                },
            )
            .collect();
        watch.certificates(&served, crate::clock::unix_now_ms());
        if let Some(settings) = generation.config.acme.clone() {
            let wanted: Vec<crate::acme::Wanted> = generation
                .config
                .tenants
                .iter()
                .filter(|t| t.acme)
                .map(|t| crate::acme::Wanted {
                    tenant: t.id.clone(),
                    hosts: t
                        .hosts
                        .iter()
                        .filter(|h| !h.starts_with("*."))
                        .cloned()
                        .collect(),
                })
                .collect();
            let now = crate::clock::unix_now();
            let (outcomes, next) = tokio::select! {
                () = stop.cancelled() => return,
                done = crate::acme::renew(&generation.acme, &settings, &wanted, now) => done,
            };
            for (tenant, outcome) in &outcomes {
                generation
                    .acme
                    .note_outcome(tenant, outcome.as_ref().err().cloned());
                let result = match outcome {
                    Ok(()) => {
                        tracing::info!(target: "rempart::acme", tenant, "certificate obtained from the ACME authority");
                        "ok"
                    }
                    Err(e) => {
                        tracing::warn!(target: "rempart::acme", tenant, error = %e, "no certificate from the ACME authority; the previous one (if any) keeps serving, retrying later");
                        "failed"
                    }
                };
                gw.metrics
                    .acme_orders
                    .get_or_create(&crate::metrics::TenantResultLabels {
                        tenant: tenant.clone(),
                        result,
                    })
                    .inc();
            }
            gw.current().export_certificates(&gw.metrics);
            let now = crate::clock::unix_now();
            wait = wait.min(std::time::Duration::from_secs(
                next.saturating_sub(now).max(1),
            ));
        }
        let acme = generation.acme.clone();
        drop(generation);
        drop(gw);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = acme.wake.notified() => {}
        }
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed at the call, not at the first
/// poll: a stop asked for while the gateway starts is a drain once it serves, never the
/// default action.
pub fn termination_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        tokio::select! {
            () = received(term.as_mut()) => {}
            () = received(int.as_mut()) => {}
        }
    }
}

/// The next delivery of `signal`; never when it could not be installed.
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Cluster mode: what the other nodes' news does here (a tenant's level in force, an
/// operator's under-attack switch).
struct ClusterEffects {
    gateway: std::sync::Weak<Gateway>,
    cluster: std::sync::Weak<crate::cluster::Cluster>,
}

impl crate::cluster::TenantEffects for ClusterEffects {
    fn level(&self, tenant: &str) {
        if let (Some(gw), Some(cluster)) = (self.gateway.upgrade(), self.cluster.upgrade()) {
            gw.set_level(tenant, cluster.effective_level(tenant));
        }
    }

    fn certificate(&self, tenant: &str, chain: &str, key: &str) {
        let Some(gw) = self.gateway.upgrade() else {
            return;
        };
        let generation = gw.current();
        let (Some(settings), Some(t)) = (
            generation.config.acme.as_ref(),
            generation
                .config
                .tenants
                .iter()
                .find(|t| t.id == tenant && t.acme),
        ) else {
            return;
        };
        let hosts: Vec<String> = t
            .hosts
            .iter()
            .filter(|h| !h.starts_with("*."))
            .cloned()
            .collect();
        match generation.acme.take_certificate(
            tenant,
            &hosts,
            &settings.state_dir.join(tenant),
            chain,
            key,
        ) {
            Ok(true) => {
                tracing::info!(target: "rempart::acme", tenant, "certificate from the node that orders for the cluster");
                generation.export_certificates(&gw.metrics);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(target: "rempart::acme", tenant, error = %e, "another node's certificate is not taken");
            }
        }
    }

    fn guard(&self, news: crate::cluster::GuardNews) {
        let Some(gw) = self.gateway.upgrade() else {
            return;
        };
        let generation = gw.current();
        let now = crate::clock::coarse_now_ms();
        for (tenant, account, scope, records) in news.taken {
            let Some(i) = generation.tenant_index(&tenant) else {
                continue;
            };
            // The scope names the route and its budgets' slot (the same configuration on
            // every node).
            let route = (scope >> 16) as usize;
            let slot = (scope & 0xffff) as usize;
            let Some(guard) = generation.config.tenants[i]
                .routes
                .get(route)
                .and_then(|r| r.guard.as_ref())
            else {
                continue;
            };
            generation.guard_books[i].lock().take_remote(
                crate::guard::account::AccountId(account),
                scope,
                records,
                guard.budgets_in(slot),
                now,
            );
        }
        for (tenant, account, on) in news.suspensions {
            let Some(i) = generation.tenant_index(&tenant) else {
                continue;
            };
            let mut book = generation.guard_books[i].lock();
            let account = crate::guard::account::AccountId(account);
            let changed = if on {
                book.suspend(account)
            } else {
                book.lift(account)
            };
            if changed {
                tracing::warn!(target: "rempart::guard", tenant, account = %account, suspended = on, "account suspension from another node");
            }
        }
    }

    fn shield(&self) -> Option<Arc<crate::shield::Shield>> {
        self.gateway.upgrade().map(|gw| gw.current().shield.clone())
    }

    fn under_attack(&self, tenant: &str, until_unix_ms: u64) {
        let Some(gw) = self.gateway.upgrade() else {
            return;
        };
        let until = match until_unix_ms {
            0 | u64::MAX => until_unix_ms,
            end => match end.checked_sub(crate::clock::unix_now_ms()) {
                Some(left) if left > 0 => crate::clock::now_ms().saturating_add(left),
                _ => 0,
            },
        };
        gw.set_under_attack(tenant, until);
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
    /// Cluster mode: the level in force is the highest of this node's and the others'.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl crate::watch::service::Effects for GatewayEffects {
    fn level(&self, tenant: &str, level: crate::common::Level) {
        let level = match &self.cluster {
            Some(cluster) => cluster.own_level(tenant, level),
            None => level,
        };
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
        // In a cluster, the node that writes the status boards puts the notice up (the
        // levels it follows are the cluster's).
        if !self.status.writes() {
            return;
        }
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
