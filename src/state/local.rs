//! The local implementations of the state seams: in memory, this process only.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use super::{BanStore, PassKeys, ReplayStore, TenantFlags};
use crate::common::Level;
use crate::shield::admission::Pressure;
use crate::shield::bans::{BanHit, BanInfo, BanList};
use crate::shield::defence::{
    stable_hash, CALM_AFTER_MS, CHALLENGE_MAX_AGE_MS, REPLAY_CAPACITY, REPLAY_SHARE,
};
use crate::shield::pass::KeyRing;
use crate::shield::replay::ReplayGuard;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl BanStore for BanList {
    fn check(&self, ip: IpAddr, now_ms: u64) -> Option<BanHit> {
        BanList::check(self, ip, now_ms)
    }
    fn add(&self, target: IpNet, reason: &str, duration_ms: Option<u64>, now_ms: u64) {
        BanList::add(self, target, reason, duration_ms, now_ms);
    }
    fn remove(&self, target: IpNet) -> bool {
        BanList::remove(self, target)
    }
    fn list(&self, now_ms: u64) -> Vec<BanInfo> {
        BanList::list(self, now_ms)
    }
}

/// Challenge nonces of this process: a counter starting at a random point (a restart with
/// the same configured key does not reissue nonces used just before it) and a bounded
/// replay guard.
#[derive(Debug)]
pub struct LocalReplay {
    used: Mutex<ReplayGuard>,
    next_nonce: AtomicU64,
}

impl Default for LocalReplay {
    fn default() -> Self {
        Self {
            used: Mutex::new(ReplayGuard::new(
                CHALLENGE_MAX_AGE_MS,
                REPLAY_SHARE,
                REPLAY_CAPACITY,
            )),
            next_nonce: AtomicU64::new(stable_hash(&crate::clock::unix_nanos().to_le_bytes())),
        }
    }
}

impl ReplayStore for LocalReplay {
    fn nonce(&self) -> u64 {
        self.next_nonce.fetch_add(1, Ordering::Relaxed)
    }
    fn first_use(&self, partition: u64, nonce: u64, now_ms: u64) -> bool {
        lock(&self.used).first_use(partition, nonce, now_ms)
    }
    fn export(&self, now_ms: u64) -> Vec<(u64, u64, u64)> {
        lock(&self.used).export(now_ms)
    }
    fn import(&self, used: &[(u64, u64, u64)], now_ms: u64) {
        lock(&self.used).import(used, now_ms);
    }
}

/// A key ring fixed for the life of a configuration (configured, or random per process).
#[derive(Debug)]
pub struct StaticKeys(pub Arc<KeyRing>);

impl PassKeys for StaticKeys {
    fn ring(&self) -> Arc<KeyRing> {
        self.0.clone()
    }
}

/// The node's own key ring, used when the configuration names none: random per node, or
/// the cluster's shared one once adopted (`Defence::adopt_shared_secret`).
#[derive(Debug)]
pub struct NodeKeys(pub Arc<crate::shield::defence::Defence>);

impl PassKeys for NodeKeys {
    fn ring(&self) -> Arc<KeyRing> {
        self.0.random_keys()
    }
}

/// One tenant's flags, in memory.
#[derive(Debug)]
pub struct TenantState {
    binding_id: u64,
    pressure: Mutex<Pressure>,
    /// Under-attack mode switched on by an operator, until this time (ms of `clock::now_ms`;
    /// 0 = off, `u64::MAX` = until switched off).
    under_attack_until_ms: AtomicU64,
    /// The vigilance level (`Level as u8`).
    level: AtomicU8,
}

impl TenantState {
    /// Fresh state for tenant `id`.
    pub fn new(id: &str) -> Self {
        Self {
            binding_id: stable_hash(id.as_bytes()),
            pressure: Mutex::new(Pressure::default()),
            under_attack_until_ms: AtomicU64::new(0),
            level: AtomicU8::new(0),
        }
    }
}

impl TenantFlags for TenantState {
    fn binding_id(&self) -> u64 {
        self.binding_id
    }
    fn on_overload(&self, now_ms: u64) -> bool {
        let mut p = lock(&self.pressure);
        let calm = p.since(now_ms, CALM_AFTER_MS).is_none();
        p.on_shed(now_ms);
        calm
    }
    fn pressure_since(&self, now_ms: u64) -> Option<u64> {
        lock(&self.pressure).since(now_ms, CALM_AFTER_MS)
    }
    fn set_under_attack(&self, until_ms: u64) {
        self.under_attack_until_ms
            .store(until_ms, Ordering::Relaxed);
    }
    fn under_attack_until(&self, now_ms: u64) -> Option<u64> {
        let until = self.under_attack_until_ms.load(Ordering::Relaxed);
        (until > now_ms).then_some(until)
    }
    fn set_level(&self, level: Level) {
        self.level.store(level as u8, Ordering::Relaxed);
    }
    fn level(&self) -> Level {
        Level::ALL[usize::from(self.level.load(Ordering::Relaxed)).min(3)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_used_once() {
        let r = LocalReplay::default();
        let (a, b) = (r.nonce(), r.nonce());
        assert_ne!(a, b);
        assert!(r.first_use(1, a, 1_000));
        assert!(!r.first_use(2, a, 2_000), "a replay is refused");
        assert!(r.first_use(1, b, 2_000));
    }

    #[test]
    fn tenant_flags_through_the_seam() {
        let flags: Arc<dyn TenantFlags> = Arc::new(TenantState::new("ville"));
        assert_eq!(flags.under_attack_until(10), None);
        flags.set_under_attack(1_000);
        assert_eq!(flags.under_attack_until(10), Some(1_000));
        assert_eq!(flags.under_attack_until(1_000), None, "expired");
        assert!(flags.pressure_since(10).is_none());
        assert!(
            flags.on_overload(10),
            "the first overload starts an episode"
        );
        assert!(!flags.on_overload(20));
        assert_eq!(flags.pressure_since(20), Some(10));
        assert_eq!(flags.binding_id(), TenantState::new("ville").binding_id());
        assert_eq!(flags.level(), Level::Vert);
        flags.set_level(Level::Orange);
        assert_eq!(flags.level(), Level::Orange);
    }
}
