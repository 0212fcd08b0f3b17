//! Flood-defence state that outlives a configuration generation: per-tenant pressure and
//! under-attack mode, the pass-cookie key ring (when none is configured), the challenge
//! replay guard and nonce counter, and the good-history table. Decisions stay in `shield`;
//! this module only holds the state the pipeline feeds them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::shield::admission::{GoodHistory, Pressure};
use crate::shield::pass::{KeyRing, ReplayGuard};

/// How long a tenant must go without shedding before auto-challenge stops (hysteresis).
pub const CALM_AFTER_MS: u64 = 30_000;
/// Lifetime of a challenge token.
pub const CHALLENGE_MAX_AGE_MS: u64 = 10 * 60 * 1000;
/// Slots of the good-history table (8 bytes each: 2 MiB).
pub const GOOD_HISTORY_SLOTS: usize = 1 << 18;
/// Challenge tokens remembered per replay-guard generation.
pub const REPLAY_CAPACITY: usize = 500_000;

/// One tenant's defence state.
#[derive(Debug)]
pub struct TenantState {
    /// What passes and challenge tokens of this tenant are bound to (hash of its id).
    pub binding_id: u64,
    pressure: Mutex<Pressure>,
    /// Under-attack mode switched on through the admin API, until this time (ms since the
    /// Unix epoch; 0 = off, `u64::MAX` = until switched off).
    under_attack_until_ms: AtomicU64,
}

/// A stable 64-bit hash (SHA-256, truncated): the same on every node and after restarts.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&d.as_ref()[..8]);
    u64::from_le_bytes(eight)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TenantState {
    /// Fresh state for tenant `id`.
    pub fn new(id: &str) -> Self {
        Self {
            binding_id: stable_hash(id.as_bytes()),
            pressure: Mutex::new(Pressure::default()),
            under_attack_until_ms: AtomicU64::new(0),
        }
    }

    /// Records a sign of overload: a shed request, or a request that queued too long.
    /// Returns `true` when this starts a pressure episode.
    pub fn on_overload(&self, now_ms: u64) -> bool {
        let mut p = lock(&self.pressure);
        let calm = p.since(now_ms, CALM_AFTER_MS).is_none();
        p.on_shed(now_ms);
        calm
    }

    /// Since when the tenant sheds load, or `None` when calm.
    pub fn pressure_since(&self, now_ms: u64) -> Option<u64> {
        lock(&self.pressure).since(now_ms, CALM_AFTER_MS)
    }

    /// Switches under-attack mode on until `until_ms` (`u64::MAX`: until switched off) or off
    /// (`0`).
    pub fn set_under_attack(&self, until_ms: u64) {
        self.under_attack_until_ms
            .store(until_ms, Ordering::Relaxed);
    }

    /// Until when under-attack mode holds (ms), if on.
    pub fn under_attack_until(&self, now_ms: u64) -> Option<u64> {
        let until = self.under_attack_until_ms.load(Ordering::Relaxed);
        (until > now_ms).then_some(until)
    }
}

/// State shared by all tenants and generations.
#[derive(Debug)]
pub struct Defence {
    /// Key ring used when the config names none.
    pub random_keys: Arc<KeyRing>,
    /// Used challenge tokens.
    pub replay: Mutex<ReplayGuard>,
    next_nonce: AtomicU64,
    /// Addresses served normally (before any pressure).
    pub history: GoodHistory,
    /// Places for tarpitted requests (bounded: past it, over-limit requests are rejected at
    /// once).
    pub tarpit: Arc<tokio::sync::Semaphore>,
}

/// Most requests held in the tarpit at once.
pub const TARPIT_CAPACITY: usize = 10_000;

impl Default for Defence {
    fn default() -> Self {
        Self::new()
    }
}

impl Defence {
    /// Fresh state with a random key.
    pub fn new() -> Self {
        // Nonces start at a random point so a restart with the same configured key does not
        // reissue nonces used just before it.
        let start = stable_hash(&crate::clock::unix_nanos().to_le_bytes());
        Self {
            random_keys: Arc::new(KeyRing::random()),
            replay: Mutex::new(ReplayGuard::new(CHALLENGE_MAX_AGE_MS, REPLAY_CAPACITY)),
            next_nonce: AtomicU64::new(start),
            history: GoodHistory::new(GOOD_HISTORY_SLOTS),
            tarpit: Arc::new(tokio::sync::Semaphore::new(TARPIT_CAPACITY)),
        }
    }

    /// A nonce for a new challenge token.
    pub fn nonce(&self) -> u64 {
        self.next_nonce.fetch_add(1, Ordering::Relaxed)
    }

    /// Records the first use of a challenge nonce; `false` on replay.
    pub fn first_use(&self, nonce: u64, now_ms: u64) -> bool {
        lock(&self.replay).first_use(nonce, now_ms)
    }
}
