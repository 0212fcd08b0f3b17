//! Flood-defence state that outlives a configuration generation and stays on this node: the
//! pass-cookie key ring used when none is configured, the good-history table, the
//! no-JavaScript pass budgets and the tarpit's places, with the constants of the shared state (`crate::state`). Decisions stay in
//! `shield`; this module only holds the state the pipeline feeds them.

use std::sync::Arc;

use crate::shield::admission::GoodHistory;
use crate::shield::pass::KeyRing;
use crate::shield::sketch::SketchKeys;

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
    /// Key ring used when the config names none: this node's random key, and in cluster
    /// mode the cluster's shared one in front of it (see `adopt_shared_secret`).
    random_keys: arc_swap::ArcSwap<KeyRing>,
    /// The cluster's shared secret, once adopted.
    shared_secret: std::sync::Mutex<Option<[u8; 32]>>,
    /// Its secret, for the process an upgrade starts.
    random_secret: RandomSecret,
    /// The keys the shield's counters hash with (kept by an upgrade, so the new process can
    /// take the counts over).
    pub sketch_keys: SketchKeys,
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

/// The secret of the random key ring; never printed.
struct RandomSecret([u8; 32]);

impl std::fmt::Debug for RandomSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RandomSecret(..)")
    }
}

impl Defence {
    /// Fresh state with a random key.
    pub fn new() -> Self {
        Self::handed(KeyRing::random_secret(), SketchKeys::random())
    }

    /// Fresh state whose random key ring is `secret`'s and whose counters hash with
    /// `sketch_keys` (an upgrade: the passes the previous process signed stay valid, and its
    /// counts can be taken over).
    pub fn handed(secret: [u8; 32], sketch_keys: SketchKeys) -> Self {
        Self {
            random_keys: arc_swap::ArcSwap::from_pointee(KeyRing::from_secret(&secret)),
            shared_secret: std::sync::Mutex::new(None),
            random_secret: RandomSecret(secret),
            sketch_keys,
            history: GoodHistory::new(GOOD_HISTORY_SLOTS),
            nojs: crate::shield::nojs::NoJsBudget::new(NOJS_SLOTS, NOJS_BURST, NOJS_REFILL_MS),
            tarpit: Arc::new(tokio::sync::Semaphore::new(TARPIT_CAPACITY)),
        }
    }

    /// The random key ring's secret (handed to the process an upgrade starts).
    pub fn random_secret(&self) -> [u8; 32] {
        self.random_secret.0
    }

    /// The key ring used when the configuration names none.
    pub fn random_keys(&self) -> Arc<KeyRing> {
        self.random_keys.load_full()
    }

    /// Cluster mode: signs from now on with the cluster's `shared` secret (the same on
    /// every node, so a pass or a challenge made on one node is valid on all), and still
    /// accepts what this node signed with its own key before. `false` when it was adopted
    /// already.
    pub fn adopt_shared_secret(&self, shared: [u8; 32]) -> bool {
        let mut current = self
            .shared_secret
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current == Some(shared) {
            return false;
        }
        // Newest first: the shared key signs (id 1 on every node), the node's own key (id
        // 0) keeps verifying what it signed.
        let ring = KeyRing::new(&[shared.to_vec(), self.random_secret.0.to_vec()]);
        if let Some(ring) = ring {
            self.random_keys.store(Arc::new(ring));
            *current = Some(shared);
        }
        true
    }

    /// Whether a cluster's shared secret signs this node's passes.
    pub fn shares_keys(&self) -> bool {
        self.shared_secret
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }
}
