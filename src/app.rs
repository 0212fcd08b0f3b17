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
    let path = runtime.source.clone();
    let admin_address = runtime.admin.address;
    let status = crate::status::StatusService::open(&runtime, crate::clock::unix_now())?;
    let gateway = Gateway::new(runtime, options.access_log, status.clone());
    let server = Server::start(gateway.clone()).await?;
    let background = CancellationToken::new();
    let watch = Arc::new(crate::watch::service::WatchService::new(&gateway.metrics));
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
        watch,
        admin_shutdown.clone(),
    )
    .await?;
    if options.sighup {
        reloader.spawn_sighup();
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
