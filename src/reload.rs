//! Hot reload: parse and validate the whole file, then swap the gateway's generation
//! atomically. Triggered by SIGHUP, by a change in the config file's directory, or by the
//! admin API. An invalid file is refused with the same messages as `rempart check`, and the
//! running configuration keeps serving.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::config::ConfigError;
use crate::metrics::ResultLabel;
use crate::pipeline::{ChangeSummary, Gateway};

/// Reads of the file a reload makes at most while it keeps changing.
const SETTLE_READS: usize = 20;
/// Time between two reads of the file.
const SETTLE_INTERVAL: Duration = Duration::from_millis(50);

/// Reads the config file until two reads in a row agree (an editor that writes in place
/// leaves a cut file for a moment), then validates it. Blocking.
fn load_settled(path: &Path) -> Result<crate::config::Runtime, ConfigError> {
    let read = || std::fs::read(path).ok();
    let mut text = read();
    for _ in 0..SETTLE_READS {
        std::thread::sleep(SETTLE_INTERVAL);
        let again = read();
        if again == text {
            break;
        }
        text = again;
    }
    match text.map(String::from_utf8) {
        Some(Ok(text)) => crate::config::load_str(&text, path),
        // Unreadable or not UTF-8: `load` says why, with the file's name.
        _ => crate::config::load(path),
    }
}

/// Refuses a configuration that would lose the admin token the running one has (the admin
/// API would then refuse every call, reloads included).
fn keeps_admin_token(
    running: &crate::config::Runtime,
    next: crate::config::Runtime,
) -> Result<crate::config::Runtime, ConfigError> {
    if running.admin.token.is_some() && next.admin.token.is_none() {
        return Err(ConfigError {
            diagnostics: vec![crate::config::Diagnostic {
                file: next.source.clone(),
                line: 1,
                column: 1,
                key: "admin".into(),
                message: "the admin token would disappear: the admin API would refuse every call".into(),
                hint: Some("keep token_file or token_env in [admin]; restart the process to remove it on purpose".into()),
            }],
        });
    }
    Ok(next)
}

/// Reloads one gateway from one file; reloads are serialised.
pub struct Reloader {
    path: PathBuf,
    gateway: Arc<Gateway>,
    lock: tokio::sync::Mutex<()>,
    /// Files whose change triggers a reload, as (canonical directory, file name).
    watched: Arc<RwLock<HashSet<(PathBuf, OsString)>>>,
    /// The directory watcher and the directories it watches.
    watcher: Mutex<Option<(notify::RecommendedWatcher, HashSet<PathBuf>)>>,
}

/// (canonical directory, file name) of `path`.
fn watch_key(path: &Path) -> Option<(PathBuf, OsString)> {
    let name = path.file_name()?.to_owned();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some((dir.canonicalize().unwrap_or_else(|_| dir.to_owned()), name))
}

impl Reloader {
    /// A reloader for `gateway` reading `path`.
    pub fn new(path: PathBuf, gateway: Arc<Gateway>) -> Arc<Self> {
        Arc::new(Self {
            path,
            gateway,
            lock: tokio::sync::Mutex::new(()),
            watched: Arc::default(),
            watcher: Mutex::new(None),
        })
    }

    /// Validates the file and swaps it in; `trigger` names the cause in the log.
    pub async fn reload(&self, trigger: &str) -> Result<ChangeSummary, ConfigError> {
        let _serial = self.lock.lock().await;
        crate::service::reloading();
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || load_settled(&path))
            .await
            .unwrap_or_else(|_| {
                Err(ConfigError {
                    diagnostics: Vec::new(),
                })
            })
            .and_then(|runtime| keeps_admin_token(&self.gateway.current().config, runtime));
        match loaded {
            Ok(runtime) => {
                let files = runtime.watched_files.clone();
                let summary = self.gateway.apply(runtime);
                self.refresh_watches(&files);
                self.gateway
                    .metrics
                    .reloads
                    .get_or_create(&ResultLabel { result: "ok" })
                    .inc();
                tracing::info!(trigger, changes = %summary, "configuration reloaded");
                crate::service::reloaded("serving; configuration reloaded");
                Ok(summary)
            }
            Err(e) => {
                self.gateway
                    .metrics
                    .reloads
                    .get_or_create(&ResultLabel { result: "refused" })
                    .inc();
                tracing::error!(trigger, errors = %e, "configuration refused; the previous one keeps serving");
                crate::service::reloaded(
                    "serving the previous configuration; the new one was refused (rempart check)",
                );
                Err(e)
            }
        }
    }

    /// Reloads on each SIGHUP of `hup` (registered by the caller as early as it can) until
    /// the process ends.
    pub fn spawn_sighup(self: &Arc<Self>, hup: Option<tokio::signal::unix::Signal>) {
        let me = self.clone();
        tokio::spawn(async move {
            let Some(mut hup) = hup else {
                tracing::warn!("cannot listen for SIGHUP");
                return;
            };
            while hup.recv().await.is_some() {
                let _ = me.reload("sighup").await;
            }
        });
    }

    /// Watches the config file and the files it names (allow/deny lists) and reloads when one
    /// changes (debounced). Watches are updated after every successful reload.
    pub fn spawn_file_watch(self: &Arc<Self>) -> notify::Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watched = self.watched.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(ev) = event else { return };
            if !(ev.kind.is_modify() || ev.kind.is_create()) {
                return;
            }
            let Ok(set) = watched.read() else { return };
            if ev
                .paths
                .iter()
                .filter_map(|p| watch_key(p))
                .any(|k| set.contains(&k))
            {
                let _ = tx.send(());
            }
        })?;
        if let Ok(mut slot) = self.watcher.lock() {
            *slot = Some((watcher, HashSet::new()));
        }
        let files = self.gateway.current().config.watched_files.clone();
        self.refresh_watches(&files);
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
        Ok(())
    }

    /// Stops watching files (ends the watch task).
    pub fn stop_watching(&self) {
        if let Ok(mut slot) = self.watcher.lock() {
            *slot = None;
        }
    }

    /// Watches the config file plus `files`, adding directory watches as needed.
    fn refresh_watches(&self, files: &[PathBuf]) {
        let keys: HashSet<(PathBuf, OsString)> = std::iter::once(self.path.as_path())
            .chain(files.iter().map(PathBuf::as_path))
            .filter_map(watch_key)
            .collect();
        let Ok(mut slot) = self.watcher.lock() else {
            return;
        };
        let Some((watcher, dirs)) = slot.as_mut() else {
            return;
        };
        for (dir, _) in &keys {
            if !dirs.contains(dir) {
                match watcher.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        dirs.insert(dir.clone());
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; use SIGHUP to reload")
                    }
                }
            }
        }
        if let Ok(mut set) = self.watched.write() {
            *set = keys;
        }
    }
}
