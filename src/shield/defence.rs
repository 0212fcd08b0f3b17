//! Flood-defence state that outlives a configuration generation and stays on this node: the
//! pass-cookie key ring used when none is configured, the good-history table, the
//! no-JavaScript pass budgets and the tarpit's places, with the constants of the shared state (`crate::state`). Decisions stay in
//! `shield`; this module only holds the state the pipeline feeds them.

use std::sync::Arc;

use crate::shield::admission::GoodHistory;
use crate::shield::pass::KeyRing;

/// How long a tenant must go without shedding before auto-challenge stops (hysteresis).
pub const CALM_AFTER_MS: u64 = 30_000;
/// Lifetime of a challenge token.
pub const CHALLENGE_MAX_AGE_MS: u64 = 10 * 60 * 1000;
/// Slots of the good-history table (8 bytes each: 2 MiB).
pub const GOOD_HISTORY_SLOTS: usize = 1 << 18;
/// Challenge answers the replay guard remembers in all.
pub const REPLAY_CAPACITY: usize = 500_000;
/// Challenge answers the replay guard remembers per tenant and client network.
pub const REPLAY_SHARE: usize = 4_096;
/// No-JavaScript passes one client network gets in a row (per tenant) ...
pub const NOJS_BURST: u32 = 30;
/// ... then one more every this many milliseconds.
pub const NOJS_REFILL_MS: u64 = 10_000;
/// Networks whose no-JavaScript budget is tracked at once (24 bytes each).
pub const NOJS_SLOTS: usize = 1 << 16;

/// A stable 64-bit hash (SHA-256, truncated): the same on every node and after restarts.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&d.as_ref()[..8]);
    u64::from_le_bytes(eight)
}

/// State shared by all tenants and generations.
#[derive(Debug)]
pub struct Defence {
    /// Key ring used when the config names none.
    pub random_keys: Arc<KeyRing>,
    /// Addresses served normally (before any pressure).
    pub history: GoodHistory,
    /// No-JavaScript pass budgets per tenant and client network.
    pub nojs: crate::shield::nojs::NoJsBudget,
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
        Self {
            random_keys: Arc::new(KeyRing::random()),
            history: GoodHistory::new(GOOD_HISTORY_SLOTS),
            nojs: crate::shield::nojs::NoJsBudget::new(NOJS_SLOTS, NOJS_BURST, NOJS_REFILL_MS),
            tarpit: Arc::new(tokio::sync::Semaphore::new(TARPIT_CAPACITY)),
        }
    }
}
