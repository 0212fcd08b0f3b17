//! Distinct counts in fixed memory (HyperLogLog): how many different records, or persons, an
//! account took out, whatever the number of times it took each. `2^precision` registers of
//! one byte: 256 bytes at precision 8 (a standard error of about 6.5 %), 1 KiB at 10 (about
//! 3.3 %). Items are hashed with a seed of the gateway's, so nobody can aim at one register.

use std::hash::{BuildHasher, Hash};

/// A HyperLogLog counter. While it has seen few items (up to an eighth of its registers),
/// it keeps their hashes instead, in the same memory, and counts them exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distinct {
    /// The registers, once dense (empty while sparse).
    registers: Box<[u8]>,
    /// The hashes seen, while sparse.
    sparse: Vec<u64>,
    precision: u8,
}

/// Spreads a hash's bits over all 64 (a hash of weak high bits would crowd a few registers).
pub fn spread(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The hasher of the items counted (one seed per gateway process).
#[derive(Debug, Clone)]
pub struct Hashing(foldhash::quality::FixedState);

impl Hashing {
    /// Items hashed with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(foldhash::quality::FixedState::with_seed(seed))
    }

    /// The 64-bit hash of `item`.
    pub fn hash(&self, item: impl Hash) -> u64 {
        self.0.hash_one(item)
    }
}

impl Distinct {
    /// A counter of `2^precision` registers (`precision` from 4 to 16).
    pub fn new(precision: u8) -> Self {
        Self {
            registers: Box::default(),
            sparse: Vec::new(),
            precision: precision.clamp(4, 16),
        }
    }

    fn m(&self) -> usize {
        1 << self.precision
    }

    /// Bytes of memory the counter takes at most.
    pub fn memory_bytes(&self) -> usize {
        self.m()
    }

    /// The most hashes kept exactly (their memory is the registers').
    fn sparse_limit(&self) -> usize {
        self.m() / 8
    }

    /// Counts an item by its hash (`Hashing::hash`, or `spread` of a well-mixed value).
    pub fn insert(&mut self, hash: u64) {
        if self.registers.is_empty() {
            if !self.sparse.contains(&hash) {
                if self.sparse.len() < self.sparse_limit() {
                    self.sparse.push(hash);
                    return;
                }
                self.densify();
            } else {
                return;
            }
        }
        self.set(hash);
    }

    fn set(&mut self, hash: u64) {
        let p = u32::from(self.precision);
        let index = (hash >> (64 - p)) as usize;
        // The rank of the first 1 in the remaining bits (an extra 1 ends an all-zero rest).
        let rest = (hash << p) | (1 << (p - 1));
        let rank = (rest.leading_zeros() + 1) as u8;
        if rank > self.registers[index] {
            self.registers[index] = rank;
        }
    }

    /// Turns the kept hashes into registers.
    fn densify(&mut self) {
        if !self.registers.is_empty() {
            return;
        }
        self.registers = vec![0u8; self.m()].into_boxed_slice();
        for hash in std::mem::take(&mut self.sparse) {
            self.set(hash);
        }
        self.sparse.shrink_to_fit();
    }

    /// The estimated number of distinct items inserted (exact while few).
    pub fn estimate(&self) -> u64 {
        if self.registers.is_empty() {
            return self.sparse.len() as u64;
        }
        let m = self.registers.len() as f64;
        let alpha = match self.registers.len() {
            16 => 0.673,
            32 => 0.697,
            64 => 0.709,
            _ => 0.7213 / (1.0 + 1.079 / m),
        };
        let sum: f64 = self
            .registers
            .iter()
            .map(|r| 2f64.powi(-i32::from(*r)))
            .sum();
        let raw = alpha * m * m / sum;
        let zeros = self.registers.iter().filter(|r| **r == 0).count();
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            // Small counts: linear counting is exact-ish.
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }

    /// The registers (to store them; a sparse counter gives the registers of its hashes).
    pub fn to_registers(&self) -> Vec<u8> {
        if self.registers.is_empty() {
            let mut dense = self.clone();
            dense.densify();
            return dense.registers.into_vec();
        }
        self.registers.to_vec()
    }

    /// A counter from stored registers (a power of two of them, 16 to 65536).
    pub fn from_registers(registers: &[u8]) -> Option<Self> {
        let n = registers.len();
        if !n.is_power_of_two() || !(16..=65_536).contains(&n) {
            return None;
        }
        Some(Self {
            registers: registers.into(),
            sparse: Vec::new(),
            precision: n.trailing_zeros() as u8,
        })
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.sparse.is_empty() && self.registers.iter().all(|r| *r == 0)
    }

    /// Adds what `other` counted (same precision; otherwise nothing is merged).
    pub fn merge(&mut self, other: &Distinct) {
        if other.precision != self.precision {
            return;
        }
        if other.registers.is_empty() {
            for hash in &other.sparse {
                self.insert(*hash);
            }
            return;
        }
        self.densify();
        for (a, b) in self.registers.iter_mut().zip(other.registers.iter()) {
            *a = (*a).max(*b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(estimate: u64, truth: u64, tolerance: f64) -> bool {
        let e = estimate as f64;
        let t = truth as f64;
        (e - t).abs() <= t * tolerance
    }

    #[test]
    fn counts_distinct_items_within_the_expected_error() {
        let h = Hashing::new(42);
        for (precision, tolerance) in [(8u8, 0.20), (10, 0.10), (12, 0.05)] {
            for truth in [10u64, 1_000, 30_000, 200_000] {
                let mut d = Distinct::new(precision);
                for i in 0..truth {
                    // Each record taken three times: counted once.
                    for _ in 0..3 {
                        d.insert(h.hash(("dossier", i)));
                    }
                }
                assert!(
                    within(d.estimate(), truth, tolerance),
                    "precision {precision}: {} for {truth}",
                    d.estimate()
                );
            }
        }
        assert_eq!(Distinct::new(8).memory_bytes(), 256);
        assert_eq!(Distinct::new(0).estimate(), 0);
    }

    #[test]
    fn few_items_are_counted_exactly_then_estimated() {
        let h = Hashing::new(3);
        let mut d = Distinct::new(8);
        for i in 0..32u64 {
            d.insert(h.hash(i));
            d.insert(h.hash(i));
            assert_eq!(d.estimate(), i + 1);
        }
        let stored = Distinct::from_registers(&d.to_registers()).unwrap();
        assert!(within(stored.estimate(), 32, 0.2), "{}", stored.estimate());
        for i in 32..1_000u64 {
            d.insert(h.hash(i));
        }
        assert!(within(d.estimate(), 1_000, 0.2), "{}", d.estimate());
        // Merging sparse into dense and dense into sparse.
        let mut few = Distinct::new(8);
        few.insert(h.hash(5_000u64));
        let mut many = d.clone();
        many.merge(&few);
        few.merge(&d);
        assert_eq!(few.to_registers(), many.to_registers());
    }

    #[test]
    fn merged_counters_count_the_union() {
        let h = Hashing::new(7);
        let (mut a, mut b) = (Distinct::new(10), Distinct::new(10));
        for i in 0..5_000u64 {
            a.insert(h.hash(i));
            b.insert(h.hash(i + 2_500));
        }
        a.merge(&b);
        assert!(within(a.estimate(), 7_500, 0.1), "{}", a.estimate());
    }
}
