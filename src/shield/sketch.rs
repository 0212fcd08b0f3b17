//! A sliding-window count-min sketch: approximate per-key event counts over the last window
//! in fixed memory, whatever the number of distinct keys (a flood from a million addresses
//! costs the same memory as one from ten). Estimates never undercount a key; they overcount
//! by at most about `total / width` with probability `1 - 2^-depth`.
//!
//! Pure: callers pass `now_ms`; no clock is read here. Counters are relaxed atomics, so
//! concurrent observers may lose a count at a window switch, never panic.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Number of hash rows.
const DEPTH: usize = 4;

/// The secret keys of the counters' hash: SipHash-1-3, the hash of std's `HashMap`, keyed
/// at random per process (so nobody can aim collisions at a neighbour's counters). Unlike
/// std's `RandomState` they can be handed to the process an upgrade starts, whose counters
/// then carry on from these.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SketchKeys([u64; 2]);

impl std::fmt::Debug for SketchKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SketchKeys(..)")
    }
}

impl SketchKeys {
    /// Keys derived from `material` (cluster mode: the cluster's settings, the same on every
    /// node, so the nodes' counters line up and can be added).
    pub fn derived(material: &[u8]) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"rempart sketch keys\0");
        ctx.update(material);
        let d = ctx.finish();
        let (a, b) = d.as_ref().split_at(8);
        Self([
            u64::from_le_bytes(a.try_into().unwrap_or_default()),
            u64::from_le_bytes(b[..8].try_into().unwrap_or_default()),
        ])
    }

    /// Fresh random keys.
    pub fn random() -> Self {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 16];
        // The system's generator does not fail on Linux; a failure leaves fixed keys,
        // which costs collision resistance, never correctness.
        let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
        let (a, b) = bytes.split_at(8);
        Self([
            u64::from_le_bytes(a.try_into().unwrap_or_default()),
            u64::from_le_bytes(b.try_into().unwrap_or_default()),
        ])
    }
}

impl BuildHasher for SketchKeys {
    type Hasher = siphasher::sip::SipHasher13;
    fn build_hasher(&self) -> Self::Hasher {
        siphasher::sip::SipHasher13::new_with_keys(self.0[0], self.0[1])
    }
}

/// A sketch's counts, to carry into another process: each window still in use, by how many
/// windows before the current one it is, with its counters (little-endian, base64).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SketchState {
    /// Counters per generation (both sides must agree).
    pub counters: usize,
    /// (windows ago, counters).
    pub windows: Vec<(u64, String)>,
}

/// Counters as little-endian bytes in base64.
pub(crate) fn encode_counters(counters: &[AtomicU32]) -> String {
    let mut bytes = Vec::with_capacity(counters.len() * 4);
    for c in counters {
        bytes.extend_from_slice(&c.load(Ordering::Relaxed).to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Fills `counters` from `encode_counters`'s text; `false` (and nothing written) when it
/// does not hold exactly as many.
pub(crate) fn decode_counters(text: &str, counters: &[AtomicU32]) -> bool {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text) else {
        return false;
    };
    if bytes.len() != counters.len() * 4 {
        return false;
    }
    for (c, four) in counters.iter().zip(bytes.chunks_exact(4)) {
        c.store(
            u32::from_le_bytes([four[0], four[1], four[2], four[3]]),
            Ordering::Relaxed,
        );
    }
    true
}

/// Sliding-window counts per key.
#[derive(Debug)]
pub struct WindowSketch {
    width_mask: usize,
    window_ms: u64,
    /// Two generations of `DEPTH * width` counters: current and previous window.
    counters: [Box<[AtomicU32]>; 2],
    /// Window number held by each generation (`u64::MAX` when empty).
    windows: [AtomicU64; 2],
    hasher: SketchKeys,
    /// Added to `now_ms` before cutting windows: with the offset of the wall clock, every
    /// node's windows start at the same instants, so their counts add up window by window.
    phase_ms: u64,
    /// Cluster mode: the other nodes' counts for the same keys.
    remote: std::sync::OnceLock<Remote>,
}

/// What a node tells the others of one sketch: its current window's number and counts,
/// and the previous window's final counts, as (index, count) for the counters not zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SketchReport {
    /// The current window's number (the same instants on every node).
    pub window: u64,
    /// Its counts so far.
    pub current: Vec<(u32, u32)>,
    /// The window before's counts.
    pub previous: Vec<(u32, u32)>,
}

/// The same keys' counts on the other nodes of a cluster (summed), in this sketch's own
/// windows: the current one, as last told, and the one before.
#[derive(Debug)]
struct Remote {
    counters: [Box<[AtomicU32]>; 2],
    windows: [AtomicU64; 2],
    /// Counters written in each generation, cleared before the next write.
    written: std::sync::Mutex<[Vec<u32>; 2]>,
}

impl WindowSketch {
    /// A sketch with `width` counters per row (rounded up to a power of two) over
    /// `window_ms`, with random keys.
    pub fn new(width: usize, window_ms: u64) -> Self {
        Self::with_keys(width, window_ms, SketchKeys::random())
    }

    /// A sketch hashing with `keys` (those of another sketch whose counts it may take).
    pub fn with_keys(width: usize, window_ms: u64, keys: SketchKeys) -> Self {
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
            hasher: keys,
            phase_ms: 0,
            remote: std::sync::OnceLock::new(),
        }
    }

    /// The same sketch with its windows cut `phase_ms` later (the wall clock's offset from
    /// `now_ms`, so that windows are the same on every node).
    pub fn aligned(mut self, phase_ms: u64) -> Self {
        self.phase_ms = phase_ms;
        self
    }

    /// The window `now_ms` falls in.
    fn window_of(&self, now_ms: u64) -> u64 {
        (now_ms + self.phase_ms) / self.window_ms
    }

    /// The counters of `window` that are not zero, as (index, count).
    fn counts_of(&self, window: u64) -> Vec<(u32, u32)> {
        let g = (window % 2) as usize;
        if self.windows[g].load(Ordering::Acquire) != window {
            return Vec::new();
        }
        self.counters[g]
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let v = c.load(Ordering::Relaxed);
                (v > 0).then(|| (u32::try_from(i).unwrap_or(u32::MAX), v))
            })
            .collect()
    }

    /// What this node tells the others at `now_ms`: the current window's counts and the
    /// previous one's, final.
    pub fn report(&self, now_ms: u64) -> SketchReport {
        let window = self.window_of(now_ms);
        SketchReport {
            window,
            current: self.counts_of(window),
            previous: window
                .checked_sub(1)
                .map(|w| self.counts_of(w))
                .unwrap_or_default(),
        }
    }

    /// Sets the other nodes' counts for `window` (summed, as (index, count)); from then on
    /// estimates count them too. A window older than the one its generation holds is
    /// ignored.
    pub fn set_remote(&self, window: u64, counts: &[(u32, u32)]) {
        let len = self.counters[0].len();
        let remote = self.remote.get_or_init(|| {
            let make = || {
                (0..len)
                    .map(|_| AtomicU32::new(0))
                    .collect::<Vec<_>>()
                    .into_boxed_slice()
            };
            Remote {
                counters: [make(), make()],
                windows: [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)],
                written: std::sync::Mutex::default(),
            }
        });
        let g = (window % 2) as usize;
        let held = remote.windows[g].load(Ordering::Acquire);
        if held != u64::MAX && held > window {
            return;
        }
        let mut written = remote
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for i in written[g].drain(..) {
            remote.counters[g][i as usize].store(0, Ordering::Relaxed);
        }
        remote.windows[g].store(window, Ordering::Release);
        for (i, c) in counts {
            if let Some(counter) = remote.counters[g].get(*i as usize) {
                counter.store(*c, Ordering::Relaxed);
                written[g].push(*i);
            }
        }
    }

    /// The others' count at counter `s` in `window` (0 outside cluster mode).
    fn remote_at(&self, window: u64, s: usize) -> u32 {
        let Some(remote) = self.remote.get() else {
            return 0;
        };
        let g = (window % 2) as usize;
        if remote.windows[g].load(Ordering::Acquire) == window {
            remote.counters[g][s].load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// The counts of the windows still in use at `now_ms`, to carry into another process
    /// (whose clock differs: windows are counted back from the current one).
    pub fn export(&self, now_ms: u64) -> SketchState {
        let current = self.window_of(now_ms);
        let windows = (0..2)
            .filter_map(|g| {
                let held = self.windows[g].load(Ordering::Acquire);
                let ago = current.checked_sub(held).filter(|ago| *ago <= 1)?;
                Some((ago, encode_counters(&self.counters[g])))
            })
            .collect();
        SketchState {
            counters: self.counters[0].len(),
            windows,
        }
    }

    /// Takes `state`'s counts (from a sketch with the same keys, width and window) as of
    /// `now_ms`; `false` when they do not fit (from the first window that does not).
    pub fn import(&self, state: &SketchState, now_ms: u64) -> bool {
        if state.counters != self.counters[0].len() {
            return false;
        }
        let current = self.window_of(now_ms);
        for (ago, text) in &state.windows {
            // A window before this process's first is dropped (its weight is small anyway).
            let Some(window) = current.checked_sub(*ago) else {
                continue;
            };
            let g = (window % 2) as usize;
            if !decode_counters(text, &self.counters[g]) {
                return false;
            }
            self.windows[g].store(window, Ordering::Release);
        }
        true
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
        let window = self.window_of(now_ms);
        let g = self.generation(window);
        let slots = self.slots(key);
        let mut current = u32::MAX;
        for s in slots {
            let v = self.counters[g][s]
                .fetch_add(n, Ordering::Relaxed)
                .saturating_add(n)
                .saturating_add(self.remote_at(window, s));
            current = current.min(v);
        }
        self.blend(window, current, now_ms, &slots)
    }

    /// The estimated events for `key` over the last window, without counting.
    pub fn estimate(&self, key: &impl Hash, now_ms: u64) -> f64 {
        let window = self.window_of(now_ms);
        let slots = self.slots(key);
        let g = (window % 2) as usize;
        let held = self.windows[g].load(Ordering::Acquire) == window;
        let current = slots
            .iter()
            .map(|s| {
                let local = if held {
                    self.counters[g][*s].load(Ordering::Relaxed)
                } else {
                    0
                };
                local.saturating_add(self.remote_at(window, *s))
            })
            .min()
            .unwrap_or(0);
        self.blend(window, current, now_ms, &slots)
    }

    /// Sliding window: the previous window's count weighted by how much of it still overlaps.
    fn blend(&self, window: u64, current: u32, now_ms: u64, slots: &[usize; DEPTH]) -> f64 {
        let prev_g = ((window + 1) % 2) as usize;
        let previous = if window == 0 {
            0
        } else {
            let held = self.windows[prev_g].load(Ordering::Acquire) == window - 1;
            slots
                .iter()
                .map(|s| {
                    let local = if held {
                        self.counters[prev_g][*s].load(Ordering::Relaxed)
                    } else {
                        0
                    };
                    local.saturating_add(self.remote_at(window - 1, *s))
                })
                .min()
                .unwrap_or(0)
        };
        let into = ((now_ms + self.phase_ms) % self.window_ms) as f64 / self.window_ms as f64;
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
    fn counts_carry_into_a_sketch_with_the_same_keys_whatever_its_clock() {
        let keys = SketchKeys::random();
        let old = WindowSketch::with_keys(1024, 1000, keys);
        old.observe(&"a", 40, 7_200);
        old.observe(&"a", 10, 8_100);
        old.observe(&"b", 3, 8_100);
        let state = old.export(8_500);
        assert_eq!(state.windows.len(), 2);
        // The new process's clock started later: it is at 300 ms of its own.
        let new = WindowSketch::with_keys(1024, 1000, keys);
        assert!(new.import(&state, 300));
        assert_eq!(new.estimate(&"b", 300), 3.0);
        // The previous window falls before this process's first: only the current one came.
        assert_eq!(new.estimate(&"a", 300), 10.0);
        let later = WindowSketch::with_keys(1024, 1000, keys);
        assert!(later.import(&state, 60_500));
        assert_eq!(later.estimate(&"a", 60_500), 10.0 + 40.0 * 0.5);
        // Another width: refused, nothing taken.
        let other = WindowSketch::with_keys(2048, 1000, keys);
        assert!(!other.import(&state, 300));
        assert_eq!(other.estimate(&"b", 300), 0.0);
        // Stale counts (two windows old) are not carried.
        assert!(old.export(10_100).windows.is_empty());
    }

    #[test]
    fn the_other_nodes_counts_add_to_this_ones() {
        let keys = SketchKeys::derived(b"cluster");
        assert_eq!(keys, SketchKeys::derived(b"cluster"));
        assert_ne!(keys, SketchKeys::derived(b"another"));
        let (a, b) = (
            WindowSketch::with_keys(1024, 1000, keys),
            WindowSketch::with_keys(1024, 1000, keys),
        );
        for _ in 0..30 {
            a.observe(&"x", 1, 5_100);
        }
        b.observe(&"x", 5, 5_200);
        // a tells b its counts: b sees both nodes' requests.
        let told = |r: SketchReport| {
            b.set_remote(r.window - 1, &r.previous);
            b.set_remote(r.window, &r.current);
        };
        told(a.report(5_300));
        assert_eq!(b.estimate(&"x", 5_300), 35.0);
        assert_eq!(b.observe(&"x", 1, 5_300), 36.0);
        assert_eq!(b.estimate(&"y", 5_300), 0.0);
        // A newer report replaces the older one (it is a total, not a delta).
        for _ in 0..10 {
            a.observe(&"x", 1, 5_600);
        }
        told(a.report(5_700));
        assert_eq!(b.estimate(&"x", 5_700), 46.0);
        // Five more on a at the window's very end, told only from the next window: they
        // count in the previous window, not in the new one.
        a.observe(&"x", 5, 5_990);
        told(a.report(6_100));
        assert_eq!(b.estimate(&"x", 6_500), 51.0 * 0.5);
        // An old report arriving late never overwrites a newer window.
        b.set_remote(3, &[]);
        assert_eq!(b.estimate(&"x", 6_500), 51.0 * 0.5);
        assert_eq!(b.estimate(&"x", 7_100), 0.0);
        // Outside cluster mode nothing remote is counted.
        assert!(a.remote.get().is_none());
    }

    #[test]
    fn nodes_started_at_different_times_cut_the_same_windows() {
        let keys = SketchKeys::derived(b"cluster");
        // Wall clock = now_ms + 1_000_250 on a, + 1_000_900 on b (b started 650 ms later).
        let a = WindowSketch::with_keys(1024, 1000, keys).aligned(1_000_250);
        let b = WindowSketch::with_keys(1024, 1000, keys).aligned(1_000_900);
        // Wall 1_002_100 is a's 1_850 and b's 1_200: the same window for both.
        a.observe(&"x", 7, 1_850);
        let r = a.report(1_850);
        assert_eq!(r.window, 1_002);
        b.set_remote(r.window, &r.current);
        assert_eq!(b.estimate(&"x", 1_200), 7.0);
        // Wall 1_002_950: 95 % into the window on both.
        assert_eq!(a.estimate(&"x", 2_700), 7.0);
        assert_eq!(b.estimate(&"x", 2_050), 7.0);
        // Wall 1_003_500: half of it still counts on both.
        assert_eq!(a.estimate(&"x", 3_250), 3.5);
        assert_eq!(b.estimate(&"x", 2_600), 3.5);
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
