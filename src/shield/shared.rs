//! Verified clients behind one address or one network prefix: how many distinct passes were
//! presented from it over the last minute, in fixed memory. A town hall's forty agents, a
//! school or a mobile carrier's NAT show up as one address carrying many passes; the shield
//! then scales that address's (and prefix's) limits for its verified traffic, so residents
//! who share an address are served like residents with their own.
//!
//! Two generations of one-minute windows, each a bit set of (key, pass) pairs already seen
//! and a count-min table of first sightings per key; the estimate is the larger of the
//! current and the previous window (a window that has just begun has not seen everyone yet).
//! A bit-set collision can only miss a client (never invent one); a count-min collision can
//! only add some, bounded by the table's width, and the caller caps the count anyway.
//!
//! Pure: callers pass `now_ms`. Relaxed atomics: concurrent observers may lose a sighting at
//! a window switch, never panic.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::sketch::{decode_counters, encode_counters, SketchKeys};

/// Length of one window: a client counts while it presented its pass within about this long.
pub const WINDOW_MS: u64 = 60_000;
/// Hash rows of the count table.
const DEPTH: usize = 4;
/// Counters per row (keys: addresses and prefixes with verified clients this minute).
const WIDTH: usize = 16_384;
/// Bits of the seen set: 2^21 (256 KiB), about 2 % missed sightings at 40,000 pairs a minute.
const SEEN_BITS: usize = 1 << 21;

#[derive(Debug)]
struct Generation {
    window: AtomicU64,
    seen: Box<[AtomicU64]>,
    counts: Box<[AtomicU32]>,
}

impl Generation {
    fn new() -> Self {
        Self {
            window: AtomicU64::new(u64::MAX),
            seen: (0..SEEN_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            counts: (0..WIDTH * DEPTH).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn count(&self, slots: &[usize; DEPTH]) -> u32 {
        slots
            .iter()
            .map(|s| self.counts[*s].load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
}

/// Distinct verified clients per key over the last minute.
#[derive(Debug)]
pub struct SharedClients {
    generations: [Generation; 2],
    hasher: SketchKeys,
}

/// The table's windows, to carry into another process: (windows ago, seen bits as
/// little-endian words in base64, counters as `sketch::encode_counters`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientsState {
    /// The windows still in use.
    pub windows: Vec<(u64, String, String)>,
}

impl Default for SharedClients {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedClients {
    /// An empty table (about 1 MiB) with random keys.
    pub fn new() -> Self {
        Self::with_keys(SketchKeys::random())
    }

    /// An empty table hashing with `keys`.
    pub fn with_keys(keys: SketchKeys) -> Self {
        Self {
            generations: [Generation::new(), Generation::new()],
            hasher: keys,
        }
    }

    /// The windows still in use at `now_ms` (see `WindowSketch::export`).
    pub fn export(&self, now_ms: u64) -> ClientsState {
        let current = now_ms / WINDOW_MS;
        let windows = self
            .generations
            .iter()
            .filter_map(|g| {
                let held = g.window.load(Ordering::Acquire);
                let ago = current.checked_sub(held).filter(|ago| *ago <= 1)?;
                let mut seen = Vec::with_capacity(g.seen.len() * 8);
                for w in g.seen.iter() {
                    seen.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
                }
                Some((
                    ago,
                    base64::engine::general_purpose::STANDARD.encode(seen),
                    encode_counters(&g.counts),
                ))
            })
            .collect();
        ClientsState { windows }
    }

    /// Takes `state`'s windows (from a table with the same keys) as of `now_ms`; `false`
    /// when they do not fit.
    pub fn import(&self, state: &ClientsState, now_ms: u64) -> bool {
        let current = now_ms / WINDOW_MS;
        for (ago, seen, counts) in &state.windows {
            let Some(window) = current.checked_sub(*ago) else {
                continue;
            };
            let g = &self.generations[(window % 2) as usize];
            let Ok(seen) = base64::engine::general_purpose::STANDARD.decode(seen) else {
                return false;
            };
            if seen.len() != g.seen.len() * 8 || !decode_counters(counts, &g.counts) {
                return false;
            }
            for (w, eight) in g.seen.iter().zip(seen.chunks_exact(8)) {
                let mut word = [0u8; 8];
                word.copy_from_slice(eight);
                w.store(u64::from_le_bytes(word), Ordering::Relaxed);
            }
            g.window.store(window, Ordering::Release);
        }
        true
    }

    /// Bytes used (fixed).
    pub fn memory_bytes(&self) -> usize {
        2 * (SEEN_BITS / 8 + WIDTH * DEPTH * 4)
    }

    fn slots(&self, key: &impl Hash) -> [usize; DEPTH] {
        let h = self.hasher.hash_one(key);
        let (h1, h2) = (h as u32 as usize, (h >> 32) as usize | 1);
        std::array::from_fn(|row| row * WIDTH + (h1.wrapping_add(row.wrapping_mul(h2)) % WIDTH))
    }

    /// The generation holding `window`, taken over (and cleared) when a new window starts.
    fn generation(&self, window: u64) -> &Generation {
        let g = &self.generations[(window % 2) as usize];
        let held = g.window.load(Ordering::Acquire);
        if (held == u64::MAX || held < window)
            && g.window
                .compare_exchange(held, window, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for w in g.seen.iter() {
                w.store(0, Ordering::Relaxed);
            }
            for c in g.counts.iter() {
                c.store(0, Ordering::Relaxed);
            }
        }
        g
    }

    /// Records that `client` (a pass identifier) was presented from `key` at `now_ms`.
    /// Cheap when the pair was already seen this window: one hash and one atomic load.
    pub fn observe(&self, key: &impl Hash, client: u64, now_ms: u64) {
        let window = now_ms / WINDOW_MS;
        let g = self.generation(window);
        let bit = (self.hasher.hash_one((key, client)) as usize) % SEEN_BITS;
        let (word, mask) = (&g.seen[bit / 64], 1u64 << (bit % 64));
        if word.load(Ordering::Relaxed) & mask != 0 {
            return;
        }
        if word.fetch_or(mask, Ordering::Relaxed) & mask != 0 {
            return;
        }
        for s in self.slots(key) {
            g.counts[s].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Distinct clients seen from `key` in the current or the previous minute, whichever saw
    /// more.
    pub fn clients(&self, key: &impl Hash, now_ms: u64) -> u32 {
        let window = now_ms / WINDOW_MS;
        let slots = self.slots(key);
        let mut most = 0;
        for w in [Some(window), window.checked_sub(1)].into_iter().flatten() {
            let g = &self.generations[(w % 2) as usize];
            if g.window.load(Ordering::Acquire) == w {
                most = most.max(g.count(&slots));
            }
        }
        most
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_clients_per_key() {
        let s = SharedClients::new();
        for pass in 0..200u64 {
            // Each browser comes back many times: counted once.
            for _ in 0..5 {
                s.observe(&"office", pass, 1_000 + pass);
            }
        }
        s.observe(&"home", 7, 1_000);
        let office = s.clients(&"office", 2_000);
        assert!((195..=200).contains(&office), "{office}");
        assert_eq!(s.clients(&"home", 2_000), 1);
        assert_eq!(s.clients(&"nobody", 2_000), 0);
    }

    #[test]
    fn the_previous_minute_still_counts_then_fades() {
        let s = SharedClients::new();
        for pass in 0..10u64 {
            s.observe(&"k", pass, 59_000);
        }
        // The next window has just begun: last minute's clients still count.
        assert_eq!(s.clients(&"k", 61_000), 10);
        // Some come back in the new window; the larger count holds.
        for pass in 0..4u64 {
            s.observe(&"k", pass, 62_000);
        }
        assert_eq!(s.clients(&"k", 62_000), 10);
        // Two windows later, only those seen in the last one count.
        assert_eq!(s.clients(&"k", 121_000), 4);
        assert_eq!(s.clients(&"k", 200_000), 0);
    }

    #[test]
    fn clients_carry_into_a_table_with_the_same_keys() {
        let keys = SketchKeys::random();
        let old = SharedClients::with_keys(keys);
        for pass in 0..30u64 {
            old.observe(&"office", pass, 125_000);
        }
        let new = SharedClients::with_keys(keys);
        assert!(new.import(&old.export(130_000), 2_000));
        assert_eq!(new.clients(&"office", 2_000), 30);
        // A pass seen before is not counted twice.
        new.observe(&"office", 3, 2_500);
        assert_eq!(new.clients(&"office", 2_500), 30);
        // Damaged text is refused.
        let mut bad = old.export(130_000);
        bad.windows[0].1.truncate(8);
        assert!(!SharedClients::with_keys(keys).import(&bad, 2_000));
    }

    #[test]
    fn memory_is_fixed_whatever_the_number_of_clients() {
        let s = SharedClients::new();
        let before = s.memory_bytes();
        for i in 0..100_000u64 {
            s.observe(&(i % 1000), i, 5_000);
        }
        assert_eq!(s.memory_bytes(), before);
        assert!(before <= 1 << 20, "{before}");
        // A thousand keys with about 100 clients each: counted within a few percent.
        let k = s.clients(&7u64, 5_000);
        assert!((90..=110).contains(&k), "{k}");
    }
}
