//! What one node has learnt about its clients, carried into the process an upgrade starts
//! (over the handover channel), so the new binary defends like the old one from its first
//! request: the rate counters (and the keys they hash with), the verified clients behind
//! each address, the addresses known as good before an attack, the no-JavaScript budgets
//! and the challenge tokens already answered. Bans, the pass key and under-attack modes
//! travel in the handover's own message.
//!
//! Times differ between the two processes (`clock::now_ms` counts from each one's start),
//! so every time is carried as an age and taken back against the new process's clock.

use serde::{Deserialize, Serialize};

use super::ReplayStore;
use crate::shield::defence::Defence;
use crate::shield::{Shield, ShieldState};

/// A node's client state at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeState {
    /// The shield's counters.
    pub shield: Option<ShieldState>,
    /// Good history: (slot, tag, minutes since first seen).
    pub good_history: Vec<(u32, u32, u32)>,
    /// No-JavaScript budgets partly spent: (partition, grants left).
    pub nojs: Vec<(u64, f64)>,
    /// Challenge tokens answered: (partition, nonce, ms since use).
    pub replay: Vec<(u64, u64, u64)>,
}

/// How much of a `NodeState` a process took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taken {
    /// Rate sketches.
    pub sketches: usize,
    /// Good-history addresses.
    pub good_addresses: usize,
    /// No-JavaScript budgets.
    pub nojs_budgets: usize,
    /// Answered challenge tokens.
    pub answered_tokens: usize,
}

impl NodeState {
    /// The state of `shield`, `defence` and `replay` at `now_ms`.
    pub fn capture(
        shield: &Shield,
        defence: &Defence,
        replay: &dyn ReplayStore,
        now_ms: u64,
    ) -> Self {
        Self {
            shield: Some(shield.export(now_ms)),
            good_history: defence.history.export(now_ms / 60_000),
            nojs: defence.nojs.export(now_ms),
            replay: replay.export(now_ms),
        }
    }

    /// Puts this state into a new process's `shield`, `defence` and `replay` at `now_ms`
    /// (before it serves). Counters hashed with keys other than `shield`'s are left out
    /// (and said so in the log); the rest is taken whatever.
    pub fn restore(
        &self,
        shield: &Shield,
        defence: &Defence,
        replay: &dyn ReplayStore,
        now_ms: u64,
    ) -> Taken {
        let sketches = match self.shield.as_ref().map(|s| shield.import(s, now_ms)) {
            Some(Ok(n)) => n,
            Some(Err(why)) => {
                tracing::warn!(why, "rate counters of the previous process not taken");
                0
            }
            None => 0,
        };
        defence.nojs.import(&self.nojs, now_ms);
        replay.import(&self.replay, now_ms);
        Taken {
            sketches,
            good_addresses: defence.history.import(&self.good_history, now_ms / 60_000),
            nojs_budgets: self.nojs.len(),
            answered_tokens: self.replay.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shield::sketch::SketchKeys;
    use crate::state::local::LocalReplay;

    #[test]
    fn a_node_state_survives_the_trip_through_json() {
        let keys = SketchKeys::random();
        let prefixes = crate::shield::PrefixLengths::default();
        let old_shield = Shield::with_keys(prefixes, keys);
        let old_defence = Defence::handed([7; 32], keys);
        let old_replay = LocalReplay::default();
        let ip: std::net::IpAddr = "192.0.2.9".parse().unwrap();
        let tenant = crate::common::TenantKey::of("ville");
        for _ in 0..40 {
            old_shield.observe_verified(tenant, ip, 1, 3_600_000);
        }
        old_defence
            .history
            .record(crate::shield::history_key(ip), 50);
        assert!(old_defence.nojs.take(5, 3_600_000).is_ok());
        assert!(old_replay.first_use(3, 99, 3_590_000));
        let state = NodeState::capture(&old_shield, &old_defence, &old_replay, 3_600_000);
        let text = serde_json::to_vec(&state).unwrap();
        let state: NodeState = serde_json::from_slice(&text).unwrap();

        let new_shield = Shield::with_keys(prefixes, keys);
        let new_defence = Defence::handed([7; 32], keys);
        let new_replay = LocalReplay::default();
        let taken = state.restore(&new_shield, &new_defence, &new_replay, 1_000);
        assert_eq!(
            taken,
            Taken {
                sketches: 0,
                good_addresses: 1,
                nojs_budgets: 1,
                answered_tokens: 1,
            }
        );
        assert_eq!(
            new_shield.verified_clients(tenant, ip, crate::shield::Rule::Address, 1_000),
            1
        );
        assert!(!new_replay.first_use(3, 99, 2_000));
        assert!(new_defence.history.is_good(
            crate::shield::history_key(ip),
            crate::shield::admission::GOOD_HISTORY_MIN_AGE_MIN,
            0,
            0
        ));

        // Another node's counters (other keys) are not taken; the rest is.
        let stranger = Shield::new(prefixes);
        let taken = state.restore(&stranger, &new_defence, &new_replay, 1_000);
        assert_eq!(taken.sketches, 0);
        assert_eq!(
            stranger.verified_clients(tenant, ip, crate::shield::Rule::Address, 1_000),
            0
        );
    }
}
