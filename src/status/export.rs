//! The off-site copy: after every change the whole status site (HTML in both languages,
//! Atom, JSON) is written as static files under `export_dir/<tenant>/`, then the configured
//! publish command runs (for example an rsync or an object-store upload to another
//! provider), with retries; its outcome is logged and shown to operators. A status page
//! hosted only on the attacked infrastructure is not enough.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Pages, StatusService};
use crate::clock::unix_now;

/// Longest a publish command may run before it is killed.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(120);

/// Changes arriving this close together are exported once.
const COALESCE: Duration = Duration::from_millis(200);

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp-rempart");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Writes one tenant's site under `dir/<tenant>/`; returns the files written.
pub fn write_site(dir: &Path, tenant: &str, pages: &Pages) -> std::io::Result<Vec<PathBuf>> {
    let base = dir.join(tenant);
    std::fs::create_dir_all(&base)?;
    // `index.html` is French and `index.en.html` English, whatever the default: the static
    // pages link to each other by these names.
    let files = [
        ("index.html", &pages.static_html[0]),
        ("index.en.html", &pages.static_html[1]),
        ("feed.atom", &pages.atom),
        ("summary.json", &pages.json),
    ];
    let mut written = Vec::new();
    for (name, variant) in files {
        let path = base.join(name);
        write_atomic(&path, &variant.body)?;
        written.push(path);
        // Precompressed twins, for static servers that serve them (nginx `gzip_static`).
        let gz = base.join(format!("{name}.gz"));
        write_atomic(&gz, &variant.gzip)?;
        written.push(gz);
    }
    Ok(written)
}

/// Writes every tenant's site under `dir`.
pub fn export_all(service: &StatusService, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for tenant in service.tenants() {
        if let Some(pages) = service.pages(&tenant) {
            written.extend(write_site(dir, &tenant, &pages)?);
        }
    }
    Ok(written)
}

/// Runs the publish command once; `Err` carries the exit status and the end of stderr.
async fn publish_once(command: &str, dir: &Path) -> Result<(), String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("REMPART_STATUS_DIR", dir)
        // The command is not the service: it must not speak to the service manager.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    match tokio::time::timeout(PUBLISH_TIMEOUT, child.wait_with_output()).await {
        Err(_) => Err(format!("killed after {} s", PUBLISH_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .trim()
                .chars()
                .rev()
                .take(300)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Err(format!("{}: {tail}", out.status))
        }
    }
}

/// Exports after every change and runs the publish command, until `shutdown`.
pub async fn run(service: Arc<StatusService>, shutdown: CancellationToken) {
    let mut changes = service.watch_changes();
    // The pages rendered at start are exported too.
    changes.mark_changed();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(COALESCE) => {}
        }
        changes.borrow_and_update();
        let settings = service.settings();
        let Some(dir) = settings.export_dir.clone() else {
            continue;
        };
        let exporting = service.clone();
        let export_dir = dir.clone();
        let result = tokio::task::spawn_blocking(move || export_all(&exporting, &export_dir)).await;
        let now = unix_now();
        let export_error = match result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = &export_error {
            tracing::error!(target: "rempart::status", dir = %dir.display(), error = %e, "status export failed");
        }
        if let Ok(mut o) = service.outcome.lock() {
            o.exported_at = Some(now);
            o.export_error = export_error.clone();
        }
        let Some(command) = settings.publish_command.clone() else {
            continue;
        };
        if export_error.is_some() {
            continue;
        }
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let r = publish_once(&command, &dir).await;
            match r {
                Ok(()) => break Ok(()),
                Err(e) if attempt >= settings.publish_attempts => break Err(e),
                Err(e) => {
                    tracing::warn!(target: "rempart::status", attempt, error = %e, "status publish failed; retrying");
                    let backoff = Duration::from_secs(1 << (attempt - 1).min(5));
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        };
        match &outcome {
            Ok(()) => {
                tracing::info!(target: "rempart::status", attempts = attempt, "status site published")
            }
            Err(e) => {
                tracing::error!(target: "rempart::status", attempts = attempt, error = %e, "status publish failed; the off-site copy is stale")
            }
        }
        if let Ok(mut o) = service.outcome.lock() {
            o.published_at = Some(unix_now());
            o.publish_ok = Some(outcome.is_ok());
            o.publish_attempts = attempt;
            o.publish_error = outcome.err();
        }
    }
}
