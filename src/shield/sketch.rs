//! A sliding-window count-min sketch: approximate per-key event counts over the last window
//! in fixed memory, whatever the number of distinct keys (a flood from a million addresses
//! costs the same memory as one from ten). Estimates never undercount a key; they overcount
//! by at most about `total / width` with probability `1 - 2^-depth`.
//!
//! Pure: callers pass `now_ms`; no clock is read here. Counters are relaxed atomics, so
//! concurrent observers may lose a count at a window switch, never panic.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Number of hash rows.
const DEPTH: usize = 4;

/// Sliding-window counts per key.
#[derive(Debug)]
pub struct WindowSketch {
    width_mask: usize,
    window_ms: u64,
    /// Two generations of `DEPTH * width` counters: current and previous window.
    counters: [Box<[AtomicU32]>; 2],
    /// Window number held by each generation (`u64::MAX` when empty).
    windows: [AtomicU64; 2],
    hasher: std::hash::RandomState,
}

impl WindowSketch {
    /// A sketch with `width` counters per row (rounded up to a power of two) over `window_ms`.
    pub fn new(width: usize, window_ms: u64) -> Self {
        let width = width.next_power_of_two().max(64);
        let make = || {
            (0..width * DEPTH)
                .map(|_| AtomicU32::new(0))
                .collect::<Vec<_>>()
                .into_boxed_slice()
        };
        Self {
            width_mask: width - 1,
            window_ms: window_ms.max(1),
            counters: [make(), make()],
            windows: [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)],
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Bytes used by the counters.
    pub fn memory_bytes(&self) -> usize {
        2 * self.counters[0].len() * std::mem::size_of::<AtomicU32>()
    }

    fn slots(&self, key: &impl Hash) -> [usize; DEPTH] {
        let h = self.hasher.hash_one(key);
        // Derive DEPTH indexes from one 64-bit hash (Kirsch-Mitzenmacher).
        let (h1, h2) = (h as u32 as usize, (h >> 32) as usize | 1);
        let width = self.width_mask + 1;
        std::array::from_fn(|row| {
            row * width + (h1.wrapping_add(row.wrapping_mul(h2)) & self.width_mask)
        })
    }

    /// The generation holding `window`, switching (and clearing) one when a new window starts.
    fn generation(&self, window: u64) -> usize {
        let g = (window % 2) as usize;
        let held = self.windows[g].load(Ordering::Acquire);
        // Only a newer window takes a generation over; the winner of the race clears it.
        let stale = held == u64::MAX || held < window;
        if stale
            && self.windows[g]
                .compare_exchange(held, window, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for c in self.counters[g].iter() {
                c.store(0, Ordering::Relaxed);
            }
        }
        g
    }

    /// Counts `n` events for `key` at `now_ms`; returns the estimated events over the last
    /// window including these.
    pub fn observe(&self, key: &impl Hash, n: u32, now_ms: u64) -> f64 {
        let window = now_ms / self.window_ms;
        let g = self.generation(window);
        let slots = self.slots(key);
        let mut current = u32::MAX;
        for s in slots {
            let v = self.counters[g][s]
                .fetch_add(n, Ordering::Relaxed)
                .saturating_add(n);
            current = current.min(v);
        }
        self.blend(window, current, now_ms, &slots)
    }

    /// The estimated events for `key` over the last window, without counting.
    pub fn estimate(&self, key: &impl Hash, now_ms: u64) -> f64 {
        let window = now_ms / self.window_ms;
        let slots = self.slots(key);
        let g = (window % 2) as usize;
        let current = if self.windows[g].load(Ordering::Acquire) == window {
            slots
                .iter()
                .map(|s| self.counters[g][*s].load(Ordering::Relaxed))
                .min()
                .unwrap_or(0)
        } else {
            0
        };
        self.blend(window, current, now_ms, &slots)
    }

    /// Sliding window: the previous window's count weighted by how much of it still overlaps.
    fn blend(&self, window: u64, current: u32, now_ms: u64, slots: &[usize; DEPTH]) -> f64 {
        let prev_g = ((window + 1) % 2) as usize;
        let previous = if window > 0 && self.windows[prev_g].load(Ordering::Acquire) == window - 1 {
            slots
                .iter()
                .map(|s| self.counters[prev_g][*s].load(Ordering::Relaxed))
                .min()
                .unwrap_or(0)
        } else {
            0
        };
        let into = (now_ms % self.window_ms) as f64 / self.window_ms as f64;
        f64::from(current) + f64::from(previous) * (1.0 - into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_one_key_exactly_when_alone() {
        let s = WindowSketch::new(1024, 1000);
        for i in 0..10 {
            assert_eq!(s.observe(&"a", 1, 5_000 + i), f64::from(i as u32 + 1));
        }
        assert_eq!(s.estimate(&"a", 5_500), 10.0);
        assert_eq!(s.estimate(&"b", 5_500), 0.0);
    }

    #[test]
    fn previous_window_fades_linearly() {
        let s = WindowSketch::new(1024, 1000);
        s.observe(&"a", 100, 10_999);
        // Half-way through the next window, half of the previous one still counts.
        assert_eq!(s.estimate(&"a", 11_500), 50.0);
        assert_eq!(s.estimate(&"a", 11_999).round(), 0.0);
        // Two windows later nothing is left.
        assert_eq!(s.estimate(&"a", 12_100), 0.0);
    }

    #[test]
    fn never_undercounts_and_overcount_is_bounded() {
        let s = WindowSketch::new(4096, 1000);
        // 20,000 distinct keys once each, and one heavy hitter 500 times.
        for k in 0..20_000u32 {
            s.observe(&k, 1, 1_000);
        }
        for _ in 0..500 {
            s.observe(&"heavy", 1, 1_000);
        }
        let heavy = s.estimate(&"heavy", 1_000);
        assert!((500.0..=520.0).contains(&heavy), "{heavy}");
        let mut over = 0;
        for k in 0..20_000u32 {
            let e = s.estimate(&k, 1_000);
            assert!(e >= 1.0);
            if e > 1.0 + 2.0 * 20_500.0 / 4096.0 {
                over += 1;
            }
        }
        // With 4 rows, almost no key exceeds twice the expected error.
        assert!(over < 20, "{over} keys overcounted");
    }

    #[test]
    fn memory_is_fixed() {
        let s = WindowSketch::new(65_536, 1000);
        let before = s.memory_bytes();
        for k in 0..100_000u32 {
            s.observe(&k, 1, 1_000 + u64::from(k % 3000));
        }
        assert_eq!(s.memory_bytes(), before);
        assert_eq!(before, 2 * 4 * 65_536 * 4);
    }
}
