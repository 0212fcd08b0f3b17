//! Hot reload: parse and validate the whole file, then swap the gateway's generation
//! atomically. Triggered by SIGHUP, by a change in the config file's directory, or by the
//! admin API. An invalid file is refused with the same messages as `rempart check`, and the
//! running configuration keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::ConfigError;
use crate::metrics::ResultLabel;
use crate::proxy::{ChangeSummary, Gateway};

/// Reloads one gateway from one file; reloads are serialised.
pub struct Reloader {
    path: PathBuf,
    gateway: Arc<Gateway>,
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader for `gateway` reading `path`.
    pub fn new(path: PathBuf, gateway: Arc<Gateway>) -> Arc<Self> {
        Arc::new(Self {
            path,
            gateway,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Validates the file and swaps it in; `trigger` names the cause in the log.
    pub async fn reload(&self, trigger: &str) -> Result<ChangeSummary, ConfigError> {
        let _serial = self.lock.lock().await;
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || super::load(&path))
            .await
            .unwrap_or_else(|_| {
                Err(ConfigError {
                    diagnostics: Vec::new(),
                })
            });
        match loaded {
            Ok(runtime) => {
                let summary = self.gateway.apply(runtime);
                self.gateway
                    .metrics
                    .reloads
                    .get_or_create(&ResultLabel { result: "ok" })
                    .inc();
                tracing::info!(trigger, changes = %summary, "configuration reloaded");
                Ok(summary)
            }
            Err(e) => {
                self.gateway
                    .metrics
                    .reloads
                    .get_or_create(&ResultLabel { result: "refused" })
                    .inc();
                tracing::error!(trigger, errors = %e, "configuration refused; the previous one keeps serving");
                Err(e)
            }
        }
    }

    /// Reloads on SIGHUP until the process ends.
    pub fn spawn_sighup(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP");
                return;
            };
            while hup.recv().await.is_some() {
                let _ = me.reload("sighup").await;
            }
        });
    }

    /// Watches the config file's directory and reloads when the file changes (debounced).
    /// The returned watcher must be kept alive.
    pub fn spawn_file_watch(self: &Arc<Self>) -> notify::Result<notify::RecommendedWatcher> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let file_name = self.path.file_name().map(|f| f.to_owned());
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(ev) = event {
                    let ours = ev
                        .paths
                        .iter()
                        .any(|p| p.file_name() == file_name.as_deref());
                    if ours && (ev.kind.is_modify() || ev.kind.is_create()) {
                        let _ = tx.send(());
                    }
                }
            })?;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from);
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let me = self.clone();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Editors write in several steps: wait for quiet, then reload once.
                loop {
                    match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                let _ = me.reload("file change").await;
            }
        });
        Ok(watcher)
    }
}
