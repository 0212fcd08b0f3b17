//! Every clock the gateway reads, in one place. Decision cores never read a clock: they take
//! `now` from their caller, who gets it here.
//!
//! - `now_ms`: monotonic milliseconds since the process started (atomic timestamps, rates).
//! - `coarse_now_ms` / `coarse_unix_secs`: the same and the wall clock, to within about 20 ms,
//!   without a clock read (per-request decisions on second-scale windows).
//! - `unix_now` / `unix_now_ms` / `unix_nanos`: the wall clock (pass cookies and status pages
//!   outlive the process and are shared by nodes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use tokio::time::Instant;

/// Milliseconds since the process started (monotonic), for atomic timestamps.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(Instant::now().saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

static COARSE_MS: AtomicU64 = AtomicU64::new(0);
static COARSE_UNIX_SECS: AtomicU64 = AtomicU64::new(0);

/// `now_ms()` to within about 20 ms without reading the clock: for stamps and decisions on
/// second-scale windows made on every request (connection activity, rates, bans, health
/// tallies); a clock read costs tens of nanoseconds on a VM and a request made about fifteen.
/// A thread of its own keeps it current (a task would stop with the runtime that spawned it).
pub fn coarse_now_ms() -> u64 {
    start_coarse_clock();
    COARSE_MS.load(Ordering::Relaxed)
}

/// Unix time in seconds, kept by the same thread (for per-request second-scale stamps).
pub fn coarse_unix_secs() -> u64 {
    start_coarse_clock();
    COARSE_UNIX_SECS.load(Ordering::Relaxed)
}

fn start_coarse_clock() {
    static CLOCK: OnceLock<()> = OnceLock::new();
    CLOCK.get_or_init(|| {
        COARSE_MS.store(now_ms(), Ordering::Relaxed);
        COARSE_UNIX_SECS.store(unix_now(), Ordering::Relaxed);
        let _ = std::thread::Builder::new()
            .name("rempart-clock".into())
            .spawn(|| loop {
                std::thread::sleep(std::time::Duration::from_millis(20));
                COARSE_MS.store(now_ms(), Ordering::Relaxed);
                COARSE_UNIX_SECS.store(unix_now(), Ordering::Relaxed);
            });
    });
}

fn since_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Wall-clock unix seconds.
pub fn unix_now() -> u64 {
    since_epoch().as_secs()
}

/// The wall clock's offset from `now_ms` (taken once): `now_ms() + unix_offset_ms()` is
/// Unix milliseconds. Counters cut their windows with it, the same on every machine.
pub fn unix_offset_ms() -> u64 {
    static OFFSET: OnceLock<u64> = OnceLock::new();
    *OFFSET.get_or_init(|| unix_now_ms().saturating_sub(now_ms()))
}

/// Wall-clock unix milliseconds.
pub fn unix_now_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Wall-clock unix nanoseconds (seeds, never decisions).
pub fn unix_nanos() -> u128 {
    since_epoch().as_nanos()
}
