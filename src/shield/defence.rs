//! Flood-defence state that outlives a configuration generation and stays on this node: the
//! pass-cookie key ring used when none is configured, the good-history table and the tarpit's
//! places, with the constants of the shared state (`crate::state`). Decisions stay in
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
/// Challenge tokens remembered per replay-guard generation.
pub const REPLAY_CAPACITY: usize = 500_000;

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
            tarpit: Arc::new(tokio::sync::Semaphore::new(TARPIT_CAPACITY)),
        }
    }
}
