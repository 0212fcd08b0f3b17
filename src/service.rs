//! The service manager's protocol (systemd `Type=notify`): readiness once every listener is
//! bound, `RELOADING=1` and back to ready around a reload, `STOPPING=1` when draining, and
//! watchdog pings. Every call is a no-op when the process was not started by a service
//! manager (`NOTIFY_SOCKET` unset), as in tests and by hand.

use std::time::Duration;

use sd_notify::NotifyState;

use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot tell the service manager");
    }
}

/// Every listener is bound: the service manager may start what depends on the gateway.
/// The process id goes with it: after an upgrade the new process is the service's main one
/// (the unit says `NotifyAccess=all` for this).
pub fn ready(status: &str) {
    send(&[
        NotifyState::Ready,
        NotifyState::MainPid(std::process::id()),
        NotifyState::Status(status),
    ]);
}

/// A reload starts (the service manager shows `reloading` until `reloaded`).
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    // systemd 253 and later want the time of the reload with it; older ones ignore it.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// A reload ended, applied or refused: the gateway serves (the old configuration when the
/// new one was refused, which `status` says).
pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Draining before the end.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining connections"),
    ]);
}

/// The interval of watchdog pings the service manager asked for (half its timeout), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// Pings the service manager's watchdog from the runtime until `stop`: a runtime whose
/// workers are all stuck stops pinging, and the service manager restarts the process.
pub fn spawn_watchdog(stop: CancellationToken) {
    let Some(every) = watchdog_interval() else {
        return;
    };
    tracing::info!(every_ms = every.as_millis() as u64, "watchdog pings on");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    });
}
