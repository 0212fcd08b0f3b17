//! The replay guard: remembers the challenge tokens already answered until they expire, so
//! one proof of work buys one pass. Memory is bounded without ever refusing everyone: tokens
//! are kept per partition (a tenant and a client network), each with a bounded share; a
//! partition over its share forgets its own oldest tokens, and when the whole guard is full,
//! the partition holding the most gives up its oldest. A network that floods the guard with
//! claims only ever pushes out its own entries.
//!
//! An evicted token could be answered a second time, but only by its own client (tokens are
//! bound to the tenant, network and browser) and only after that partition answered a full
//! share of newer tokens: at most one extra pass per share of work.

use std::collections::{HashMap, HashSet, VecDeque};

/// Tokens remembered, by partition.
#[derive(Debug)]
pub struct ReplayGuard {
    /// Every remembered nonce (for the replay check across partitions).
    seen: HashSet<u64>,
    /// Per partition, its nonces oldest first, with when each was used.
    partitions: HashMap<u64, VecDeque<(u64, u64)>>,
    /// The partition holding the most, as last seen (where eviction starts when full).
    largest: Option<u64>,
    /// How long a token may be answered: older entries are dropped (such tokens are refused
    /// as expired anyway).
    lifetime_ms: u64,
    /// Entries per partition.
    share: usize,
    /// Entries in all.
    capacity: usize,
}

impl ReplayGuard {
    /// A guard for tokens living `lifetime_ms`, at most `share` per partition and
    /// `capacity` in all.
    pub fn new(lifetime_ms: u64, share: usize, capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            partitions: HashMap::new(),
            largest: None,
            lifetime_ms: lifetime_ms.max(1),
            share: share.max(1),
            capacity: capacity.max(1),
        }
    }

    /// Records the use of `nonce` by `partition` at `now_ms`; `false` when it was used before.
    pub fn first_use(&mut self, partition: u64, nonce: u64, now_ms: u64) -> bool {
        self.expire(partition, now_ms);
        if self.seen.contains(&nonce) {
            return false;
        }
        let own_len = self.partitions.get(&partition).map_or(0, VecDeque::len);
        if own_len >= self.share {
            self.evict_oldest(partition);
        } else if self.seen.len() >= self.capacity {
            // Full: the largest partition pays (its oldest entries), else this one.
            let victim = self
                .largest
                .filter(|p| self.partitions.get(p).is_some_and(|q| !q.is_empty()))
                .unwrap_or(partition);
            if !self.evict_oldest(victim) {
                self.evict_oldest(partition);
            }
        }
        let entries = self.partitions.entry(partition).or_default();
        entries.push_back((nonce, now_ms));
        let len = entries.len();
        self.seen.insert(nonce);
        let largest_len = self
            .largest
            .and_then(|p| self.partitions.get(&p))
            .map_or(0, VecDeque::len);
        if len >= largest_len {
            self.largest = Some(partition);
        }
        true
    }

    /// Drops the expired entries at the front of `partition`.
    fn expire(&mut self, partition: u64, now_ms: u64) {
        let Some(entries) = self.partitions.get_mut(&partition) else {
            return;
        };
        while let Some(&(nonce, at)) = entries.front() {
            if now_ms.saturating_sub(at) < self.lifetime_ms {
                break;
            }
            entries.pop_front();
            self.seen.remove(&nonce);
        }
        if entries.is_empty() {
            self.partitions.remove(&partition);
        }
    }

    /// Forgets the oldest entry of `partition`; `false` when it has none.
    fn evict_oldest(&mut self, partition: u64) -> bool {
        let Some(entries) = self.partitions.get_mut(&partition) else {
            return false;
        };
        let Some((nonce, _)) = entries.pop_front() else {
            return false;
        };
        self.seen.remove(&nonce);
        if entries.is_empty() {
            self.partitions.remove(&partition);
        }
        true
    }

    /// The tokens still remembered at `now_ms`, as (partition, nonce, ms since use), oldest
    /// first: to carry into another process, where they stay refused.
    pub fn export(&self, now_ms: u64) -> Vec<(u64, u64, u64)> {
        let mut out: Vec<(u64, u64, u64)> = self
            .partitions
            .iter()
            .flat_map(|(p, entries)| {
                entries.iter().filter_map(move |(nonce, at)| {
                    let age = now_ms.saturating_sub(*at);
                    (age < self.lifetime_ms).then_some((*p, *nonce, age))
                })
            })
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.2));
        out
    }

    /// Takes `export`'s tokens as of `now_ms`. A token used before this process's clock
    /// began is kept as used at its start: remembered a little longer, never shorter.
    pub fn import(&mut self, used: &[(u64, u64, u64)], now_ms: u64) {
        for (partition, nonce, age) in used {
            self.first_use(*partition, *nonce, now_ms.saturating_sub(*age));
        }
    }

    /// Entries remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Entries of `partition`.
    pub fn partition_len(&self, partition: u64) -> usize {
        self.partitions.get(&partition).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_tokens_stay_refused_in_another_process() {
        let mut old = ReplayGuard::new(600_000, 100, 1_000);
        assert!(old.first_use(1, 10, 1_000_000));
        assert!(old.first_use(1, 11, 1_300_000));
        assert!(old.first_use(2, 20, 1_550_000));
        let used = old.export(1_650_000);
        // Ten minutes after its use, token 10 has expired and is not carried.
        assert_eq!(used, vec![(1, 11, 350_000), (2, 20, 100_000)]);
        let mut new = ReplayGuard::new(600_000, 100, 1_000);
        new.import(&used, 5_000);
        assert!(!new.first_use(1, 11, 6_000));
        assert!(!new.first_use(2, 20, 6_000));
        assert!(new.first_use(1, 12, 6_000));
    }

    #[test]
    fn a_replay_is_refused_until_the_token_expires() {
        let mut g = ReplayGuard::new(1_000, 10, 100);
        assert!(g.first_use(1, 7, 0));
        assert!(!g.first_use(1, 7, 10));
        // From another network too: a nonce is a nonce.
        assert!(!g.first_use(2, 7, 10));
        assert!(!g.first_use(1, 7, 999));
        // Expired tokens are refused by their age; the guard forgets them.
        assert!(g.first_use(1, 7, 1_000));
    }

    #[test]
    fn a_flooding_network_pushes_out_only_its_own_entries() {
        let mut g = ReplayGuard::new(600_000, 100, 1_000);
        // Residents of 50 networks answer a challenge each.
        for p in 0..50u64 {
            assert!(g.first_use(1_000 + p, 1_000_000 + p, 0));
        }
        // One network floods the guard with a million answers.
        for n in 0..1_000_000u64 {
            assert!(g.first_use(66, n, 1));
        }
        assert_eq!(g.partition_len(66), 100);
        assert!(g.len() <= 1_000);
        // The residents' entries are all there (their replays still refused), and new
        // residents are never refused.
        for p in 0..50u64 {
            assert!(!g.first_use(1_000 + p, 1_000_000 + p, 2), "{p}");
            assert!(g.first_use(2_000 + p, 2_000_000 + p, 2), "{p}");
        }
    }

    #[test]
    fn when_full_the_largest_partition_pays() {
        // Shares larger than the whole: many networks together fill it.
        let mut g = ReplayGuard::new(600_000, 1_000, 300);
        for n in 0..250u64 {
            assert!(g.first_use(66, n, 0));
        }
        for p in 1_000..1_100u64 {
            assert!(g.first_use(p, 10_000 + p, 1));
        }
        assert_eq!(g.len(), 300);
        // Everyone's latest answers are kept; the flooder lost its oldest.
        assert_eq!(g.partition_len(66), 200);
        for p in 1_000..1_100u64 {
            assert_eq!(g.partition_len(p), 1);
        }
        assert!(g.first_use(66, 0, 2), "the flooder's oldest was forgotten");
        assert!(!g.first_use(66, 249, 2));
    }

    proptest::proptest! {
        /// Whatever the sequence: never more than the capacity in all nor the share in one
        /// partition; a nonce answered and still remembered is refused.
        #[test]
        fn bounded_and_never_accepts_a_remembered_nonce(
            ops in proptest::collection::vec((0u64..5, 0u64..40, 0u64..3), 1..300),
        ) {
            let mut g = ReplayGuard::new(1_000, 8, 20);
            let mut now = 0;
            for (p, nonce, step) in ops {
                now += step * 100;
                let remembered = g.seen.contains(&nonce)
                    && g.partitions.values().flatten().any(|(n, at)| *n == nonce && now - at < 1_000);
                let accepted = g.first_use(p, nonce, now);
                if remembered {
                    proptest::prop_assert!(!accepted);
                }
                proptest::prop_assert!(g.len() <= 20);
                proptest::prop_assert!(g.partitions.values().all(|q| q.len() <= 8));
                let total: usize = g.partitions.values().map(VecDeque::len).sum();
                proptest::prop_assert_eq!(total, g.len());
            }
        }
    }
}
