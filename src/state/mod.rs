//! State seams: the defence state that several gateway nodes will share, behind small
//! interfaces. Each has one implementation today, the local one in `state::local` (in
//! memory, this process only); a cluster implementation writes behind to a shared store and
//! answers from a local mirror, so the request path never waits on the network and the
//! pipeline does not change when it arrives.
//!
//! | seam | what it holds | local implementation |
//! | --- | --- | --- |
//! | `BanStore` | bans and their hit counts | `shield::bans::BanList` |
//! | `ReplayStore` | challenge nonces issued and used | `local::LocalReplay` |
//! | `PassKeys` | the key ring signing passes and challenge tokens | `local::StaticKeys` |
//! | `TenantFlags` | per-tenant pressure, under-attack mode, vigilance level | `local::TenantState` |
//! | `GuardShare` | the data guard's records taken and suspensions, told to other nodes | none (the cluster's) |
//!
//! `snapshot` carries a node's client state (counters, good history, budgets, answered
//! tokens) into the process an upgrade starts.
//!
//! Every method takes `now` (milliseconds of `clock::now_ms`, or as documented) and never
//! blocks: an implementation that talks to a remote store does so off the request path.

pub mod local;
pub mod snapshot;

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::common::Level;
use crate::shield::bans::{BanHit, BanInfo};
use crate::shield::pass::KeyRing;

/// Bans with reason, expiry and hit counts.
pub trait BanStore: Send + Sync + Debug {
    /// The ban covering `ip` now, if any (counts a hit on it).
    fn check(&self, ip: IpAddr, now_ms: u64) -> Option<BanHit>;
    /// Bans `target` for `duration_ms` (`None`: until lifted).
    fn add(&self, target: IpNet, reason: &str, duration_ms: Option<u64>, now_ms: u64);
    /// Lifts the ban on exactly `target`; `false` when there was none.
    fn remove(&self, target: IpNet) -> bool;
    /// Current bans.
    fn list(&self, now_ms: u64) -> Vec<BanInfo>;
}

/// Challenge nonces: issued once, accepted once.
pub trait ReplayStore: Send + Sync + Debug {
    /// A nonce for a new challenge token, never issued before.
    fn nonce(&self) -> u64;
    /// Records the first use of `nonce` by `partition` (a tenant and client network, which
    /// bounds its share of the memory); `false` when it was used already (a replay).
    fn first_use(&self, partition: u64, nonce: u64, now_ms: u64) -> bool;
    /// The tokens used and still remembered, as (partition, nonce, ms since use), oldest
    /// first (carried into the process an upgrade starts).
    fn export(&self, now_ms: u64) -> Vec<(u64, u64, u64)>;
    /// Takes `export`'s tokens as of `now_ms`: they stay refused here.
    fn import(&self, used: &[(u64, u64, u64)], now_ms: u64);
}

/// The data guard's counts and suspensions that several nodes share (cluster mode): what
/// an account took here, told to the others.
pub trait GuardShare: Send + Sync + Debug {
    /// `records` were taken by `account` (its hash) on `scope` of `tenant` here.
    fn taken(&self, tenant: &str, account: u64, scope: u64, records: u64);
    /// `account` of `tenant` was suspended (`true`) or lifted here.
    fn suspended(&self, tenant: &str, account: u64, on: bool);
}

/// The key ring that signs pass cookies and challenge tokens.
pub trait PassKeys: Send + Sync + Debug {
    /// The current ring (signs with its newest key, accepts all of them).
    fn ring(&self) -> Arc<KeyRing>;
}

/// A tenant's defence flags.
pub trait TenantFlags: Send + Sync + Debug {
    /// What passes and challenge tokens of this tenant are bound to (stable across nodes).
    fn binding_id(&self) -> u64;
    /// Records a sign of overload (a shed request, or one that queued too long); `true` when
    /// this starts a pressure episode.
    fn on_overload(&self, now_ms: u64) -> bool;
    /// Since when the tenant sheds load, or `None` when calm.
    fn pressure_since(&self, now_ms: u64) -> Option<u64>;
    /// Switches under-attack mode on until `until_ms` (`u64::MAX`: until switched off) or
    /// off (`0`).
    fn set_under_attack(&self, until_ms: u64);
    /// Until when under-attack mode holds, if on.
    fn under_attack_until(&self, now_ms: u64) -> Option<u64>;
    /// Sets the tenant's vigilance level (the watch decides it; the playbook acts on it).
    fn set_level(&self, level: Level);
    /// The tenant's vigilance level.
    fn level(&self) -> Level;
}
