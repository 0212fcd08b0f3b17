//! Protecting the origin, verified users first: the pure parts (no clock reads, no sockets).
//!
//! - `ConcurrencyLimit` learns how many requests a pool can take at once from the latency it
//!   observes (a gradient on round-trip time, in the spirit of Netflix's concurrency-limits
//!   and Envoy's adaptive concurrency): while latency stays near the no-load latency the limit
//!   grows towards the configured ceiling; when the origin starts queueing, latency rises and
//!   the limit shrinks.
//! - `PriorityQueue` holds requests waiting for a slot, in three classes; when full, the
//!   newest request of the lowest class below the newcomer's is shed to make room.
//! - `Pressure` says whether a tenant is shedding, with hysteresis, and since when.
//! - `GoodHistory` remembers, in fixed memory, addresses that were served normally before an
//!   attack began.
//!
//! `shield::gate` wraps these in the async gate the pipeline awaits.

use std::collections::VecDeque;
use std::time::Duration;

/// Settings of one pool's gate (validated configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Ceiling of the adaptive limit (0 = no gate).
    pub max_concurrency: u32,
    /// Floor of the adaptive limit.
    pub min_concurrency: u32,
    /// Requests that may wait for a slot.
    pub queue_size: usize,
    /// How long a request may wait.
    pub queue_timeout: Duration,
}

/// Request classes, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Valid pass cookie, good history or allow-listed.
    Verified = 0,
    /// Nothing known.
    Unknown = 1,
    /// Invalid pass, no browser headers, or close to a limit.
    Suspicious = 2,
}

impl Priority {
    /// All classes, best first.
    pub const ALL: [Priority; 3] = [Self::Verified, Self::Unknown, Self::Suspicious];

    /// Name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Unknown => "unknown",
            Self::Suspicious => "suspicious",
        }
    }
}

/// Round-trip times below this are treated as this (ms).
pub const RTT_FLOOR_MS: f64 = 5.0;

/// An adaptive concurrency limit driven by round-trip times.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    limit: f64,
    min: f64,
    max: f64,
    /// Lowest RTT seen in the current and the previous window (no-load latency estimate).
    min_rtt_now: f64,
    min_rtt_prev: f64,
    window_started_ms: u64,
    window_ms: u64,
    /// Smoothed recent RTT.
    recent_rtt: f64,
    /// RTT may grow to this multiple of the no-load RTT before the limit backs off.
    tolerance: f64,
}

impl ConcurrencyLimit {
    /// A limit between `min` and `max`, starting at `max`.
    pub fn new(min: u32, max: u32) -> Self {
        let max = f64::from(max.max(1));
        Self {
            limit: max,
            min: f64::from(min.max(1)).min(max),
            max,
            min_rtt_now: f64::INFINITY,
            min_rtt_prev: f64::INFINITY,
            window_started_ms: 0,
            window_ms: 30_000,
            recent_rtt: 0.0,
            tolerance: 2.0,
        }
    }

    /// The current limit (whole requests).
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// The no-load RTT estimate, ms.
    pub fn no_load_rtt(&self) -> f64 {
        self.min_rtt_now.min(self.min_rtt_prev)
    }

    /// Takes one completed request's RTT (ms) with the number in flight when it was sent.
    pub fn on_sample(&mut self, rtt_ms: f64, in_flight: usize, now_ms: u64) {
        if !rtt_ms.is_finite() || rtt_ms < 0.0 {
            return;
        }
        // Below the floor, latency says more about the gateway's own CPU than about the
        // origin: a fast origin answering in 0.1 ms or 2 ms is not overloaded.
        let rtt = rtt_ms.max(RTT_FLOOR_MS);
        if now_ms.saturating_sub(self.window_started_ms) >= self.window_ms {
            self.min_rtt_prev = self.min_rtt_now;
            self.min_rtt_now = f64::INFINITY;
            self.window_started_ms = now_ms;
        }
        self.min_rtt_now = self.min_rtt_now.min(rtt);
        self.recent_rtt = if self.recent_rtt == 0.0 {
            rtt
        } else {
            0.9 * self.recent_rtt + 0.1 * rtt
        };
        let no_load = self.no_load_rtt();
        let gradient = ((self.tolerance * no_load) / self.recent_rtt).clamp(0.5, 1.0);
        // Room to grow (the square root of the limit, as a queue allowance) only while the
        // pool actually uses most of its limit: an idle pool says nothing about capacity.
        let growth = if (in_flight as f64) >= self.limit * 0.5 {
            self.limit.sqrt()
        } else {
            0.0
        };
        let target = self.limit * gradient + growth;
        self.limit = (0.8 * self.limit + 0.2 * target).clamp(self.min, self.max);
    }
}

/// A bounded queue with three priority classes, FIFO within a class.
#[derive(Debug)]
pub struct PriorityQueue<T> {
    classes: [VecDeque<T>; 3],
    capacity: usize,
}

/// What happened to a pushed item.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    /// Queued.
    Queued,
    /// Queued, and this lower-priority item was shed to make room.
    Evicted(T),
    /// Not queued: the queue is full of items at least as important.
    Refused(T),
}

impl<T> PriorityQueue<T> {
    /// A queue holding at most `capacity` items.
    pub fn new(capacity: usize) -> Self {
        Self {
            classes: [VecDeque::new(), VecDeque::new(), VecDeque::new()],
            capacity,
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.classes.iter().map(VecDeque::len).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items waiting in one class.
    pub fn len_of(&self, p: Priority) -> usize {
        self.classes[p as usize].len()
    }

    /// Queues `item`; when full, sheds the newest item of the lowest class below `p`.
    pub fn push(&mut self, p: Priority, item: T) -> Pushed<T> {
        if self.len() < self.capacity {
            self.classes[p as usize].push_back(item);
            return Pushed::Queued;
        }
        for lower in Priority::ALL.iter().rev().filter(|c| **c > p) {
            if let Some(victim) = self.classes[*lower as usize].pop_back() {
                self.classes[p as usize].push_back(item);
                return Pushed::Evicted(victim);
            }
        }
        Pushed::Refused(item)
    }

    /// The next item: the oldest of the best class.
    pub fn pop(&mut self) -> Option<(Priority, T)> {
        Priority::ALL
            .iter()
            .find_map(|p| self.classes[*p as usize].pop_front().map(|t| (*p, t)))
    }

    /// Removes and returns every item of the classes below `p` (worse than `p`).
    pub fn drain_below(&mut self, p: Priority) -> Vec<T> {
        let mut out = Vec::new();
        for lower in Priority::ALL.iter().filter(|c| **c > p) {
            out.extend(self.classes[*lower as usize].drain(..));
        }
        out
    }

    /// Drops items for which `keep` is false (waiters that gave up).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for c in &mut self.classes {
            c.retain(&mut keep);
        }
    }
}

/// Whether a tenant is under pressure (shedding), with hysteresis: on at the first shed,
/// off after `calm_ms` without any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pressure {
    since_ms: Option<u64>,
    last_shed_ms: u64,
}

impl Pressure {
    /// Records a shed request.
    pub fn on_shed(&mut self, now_ms: u64) {
        self.last_shed_ms = now_ms;
        self.since_ms.get_or_insert(now_ms);
    }

    /// Since when the pressure lasts, or `None` when calm.
    pub fn since(&mut self, now_ms: u64, calm_ms: u64) -> Option<u64> {
        if self.since_ms.is_some() && now_ms.saturating_sub(self.last_shed_ms) > calm_ms {
            self.since_ms = None;
        }
        self.since_ms
    }
}

/// Addresses served normally, in fixed memory. History raises a client's priority at the
/// admission gate; it never exempts it from a limit or the challenge, and a client over its
/// own limits loses it: a direct-mapped table of (tag, first-seen
/// minute) slots. A colliding address overwrites the slot, so the table never grows; an
/// address counts as "good" only if it was first seen well before the current pressure began,
/// so bots that arrive with the attack never qualify.
#[derive(Debug)]
pub struct GoodHistory {
    slots: Vec<std::sync::atomic::AtomicU64>,
}

/// Minutes an address must have been known before pressure began to count as good, unless
/// the tenant says otherwise (`good_history_after`).
pub const GOOD_HISTORY_MIN_AGE_MIN: u64 = 2;
/// Days after which a remembered address is forgotten.
pub const GOOD_HISTORY_TTL_MIN: u64 = 7 * 24 * 60;
/// Stored minutes are the caller's plus this: an address first seen up to a week before
/// this process started (taken over from the previous one) is still representable.
const MINUTE_SHIFT: u64 = GOOD_HISTORY_TTL_MIN;

impl GoodHistory {
    /// A table of `slots` entries (8 bytes each).
    pub fn new(slots: usize) -> Self {
        Self {
            slots: (0..slots.max(1))
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }

    /// Memory used, bytes.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * 8
    }

    /// The remembered addresses as (slot, tag, minutes since first seen) at `now_min`, to
    /// carry into another process (whose minutes count from its own start).
    pub fn export(&self, now_min: u64) -> Vec<(u32, u32, u32)> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = now_min + MINUTE_SHIFT;
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                let v = slot.load(Relaxed);
                let (tag, first) = (v >> 32, v & 0xffff_ffff);
                let age = now.checked_sub(first)?;
                (tag != 0 && age < GOOD_HISTORY_TTL_MIN)
                    .then(|| (u32::try_from(i).unwrap_or(u32::MAX), tag as u32, age as u32))
            })
            .collect()
    }

    /// Takes `export`'s entries as of `now_min` (a table of the same size; entries that do
    /// not fit are skipped). Returns how many were taken.
    pub fn import(&self, entries: &[(u32, u32, u32)], now_min: u64) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        let now = now_min + MINUTE_SHIFT;
        let mut taken = 0;
        for (i, tag, age) in entries {
            let (Some(slot), Some(first)) = (
                self.slots.get(*i as usize),
                now.checked_sub(u64::from(*age)),
            ) else {
                continue;
            };
            if *tag != 0 && u64::from(*age) < GOOD_HISTORY_TTL_MIN {
                slot.store(u64::from(*tag) << 32 | first, Relaxed);
                taken += 1;
            }
        }
        taken
    }

    fn slot(&self, key_hash: u64) -> (&std::sync::atomic::AtomicU64, u64) {
        let idx = (key_hash % self.slots.len() as u64) as usize;
        // Tag: the top 32 bits, never 0 (0 marks an empty slot).
        let tag = (key_hash >> 32).max(1);
        (&self.slots[idx], tag)
    }

    /// Remembers that `key_hash` was served normally at minute `now_min`.
    pub fn record(&self, key_hash: u64, now_min: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let (slot, tag) = self.slot(key_hash);
        let now = now_min + MINUTE_SHIFT;
        let current = slot.load(Relaxed);
        let (cur_tag, first) = (current >> 32, current & 0xffff_ffff);
        if cur_tag == tag && now.saturating_sub(first) < GOOD_HISTORY_TTL_MIN {
            return;
        }
        slot.store(tag << 32 | (now & 0xffff_ffff), Relaxed);
    }

    /// Forgets `key_hash` (a client over its limits loses its history).
    pub fn forget(&self, key_hash: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let (slot, tag) = self.slot(key_hash);
        let current = slot.load(Relaxed);
        if current >> 32 == tag {
            // Another address that took the slot meanwhile keeps it.
            let _ = slot.compare_exchange(current, 0, Relaxed, Relaxed);
        }
    }

    /// Whether `key_hash` was known at least `min_age_min` minutes before
    /// `pressure_since_min` (pass the current minute when calm).
    pub fn is_good(
        &self,
        key_hash: u64,
        min_age_min: u64,
        pressure_since_min: u64,
        now_min: u64,
    ) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let (slot, tag) = self.slot(key_hash);
        let now = now_min + MINUTE_SHIFT;
        let current = slot.load(Relaxed);
        let (cur_tag, first) = (current >> 32, current & 0xffff_ffff);
        cur_tag == tag
            && first + min_age_min <= pressure_since_min.min(now_min) + MINUTE_SHIFT
            && now.saturating_sub(first) < GOOD_HISTORY_TTL_MIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever the sequence of pushes and pops: never more than the capacity, pops come
        /// best class first and in arrival order within a class, and a push only ever sheds
        /// an item of a worse class.
        #[test]
        fn queue_invariants(ops in proptest::collection::vec((0u8..4, 0u8..3), 1..200), cap in 1usize..8) {
            let class = |c: u8| Priority::ALL[usize::from(c)];
            let mut q = PriorityQueue::new(cap);
            // A model: items (class, arrival number).
            let mut model: Vec<(Priority, u32)> = Vec::new();
            for (n, (op, c)) in ops.into_iter().enumerate() {
                let n = n as u32;
                if op == 0 {
                    let got = q.pop();
                    let best = model.iter().enumerate().min_by_key(|(_, (p, a))| (*p, *a)).map(|(i, _)| i);
                    let want = best.map(|i| model.remove(i));
                    proptest::prop_assert_eq!(got.map(|(p, (_, a))| (p, a)), want);
                } else {
                    let p = class(c);
                    match q.push(p, (p, n)) {
                        Pushed::Queued => model.push((p, n)),
                        Pushed::Evicted((vp, va)) => {
                            proptest::prop_assert!(vp > p);
                            // The newest of the worst class below the newcomer.
                            let worst = model.iter().filter(|(mp, _)| *mp > p).map(|(mp, _)| *mp).max();
                            proptest::prop_assert_eq!(Some(vp), worst);
                            let newest = model.iter().filter(|(mp, _)| *mp == vp).map(|(_, a)| *a).max();
                            proptest::prop_assert_eq!(Some(va), newest);
                            model.retain(|(_, a)| *a != va);
                            model.push((p, n));
                        }
                        Pushed::Refused(_) => {
                            proptest::prop_assert_eq!(model.len(), cap);
                            proptest::prop_assert!(model.iter().all(|(mp, _)| *mp <= p));
                        }
                    }
                }
                proptest::prop_assert!(q.len() <= cap);
                proptest::prop_assert_eq!(q.len(), model.len());
            }
        }
    }

    #[test]
    fn queue_serves_best_class_first_fifo_within() {
        let mut q = PriorityQueue::new(10);
        q.push(Priority::Unknown, "u1");
        q.push(Priority::Suspicious, "s1");
        q.push(Priority::Verified, "v1");
        q.push(Priority::Unknown, "u2");
        q.push(Priority::Verified, "v2");
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(_, t)| t)).collect();
        assert_eq!(order, ["v1", "v2", "u1", "u2", "s1"]);
    }

    #[test]
    fn full_queue_sheds_lowest_class_newest_first() {
        let mut q = PriorityQueue::new(3);
        assert_eq!(q.push(Priority::Suspicious, 1), Pushed::Queued);
        assert_eq!(q.push(Priority::Suspicious, 2), Pushed::Queued);
        assert_eq!(q.push(Priority::Unknown, 3), Pushed::Queued);
        // A verified request evicts the newest suspicious one.
        assert_eq!(q.push(Priority::Verified, 4), Pushed::Evicted(2));
        // An unknown one evicts the remaining suspicious one.
        assert_eq!(q.push(Priority::Unknown, 5), Pushed::Evicted(1));
        // Nothing below unknown left: another unknown is refused, a verified evicts unknowns.
        assert_eq!(q.push(Priority::Unknown, 6), Pushed::Refused(6));
        assert_eq!(q.push(Priority::Verified, 7), Pushed::Evicted(5));
        assert_eq!(q.push(Priority::Suspicious, 8), Pushed::Refused(8));
        assert_eq!(q.len_of(Priority::Verified), 2);
        q.retain(|i| *i != 4);
        let mut d = PriorityQueue::new(5);
        d.push(Priority::Suspicious, 1);
        d.push(Priority::Verified, 2);
        d.push(Priority::Unknown, 3);
        assert_eq!(d.drain_below(Priority::Verified), vec![3, 1]);
        assert_eq!(d.len(), 1);
        assert_eq!(q.pop(), Some((Priority::Verified, 7)));
        assert_eq!(q.pop(), Some((Priority::Unknown, 3)));
        assert!(q.is_empty());
    }

    #[test]
    fn limit_shrinks_when_latency_climbs_and_recovers() {
        let mut l = ConcurrencyLimit::new(2, 64);
        // Healthy: 5 ms at any concurrency: stays at the ceiling.
        for i in 0..200 {
            l.on_sample(5.0, 64, i);
        }
        assert_eq!(l.limit(), 64);
        // The origin saturates: latency grows with concurrency (8 workers x 5 ms).
        let mut t = 1_000;
        for _ in 0..400 {
            let in_flight = l.limit();
            let rtt = 5.0 * (in_flight as f64 / 8.0).max(1.0);
            l.on_sample(rtt, in_flight, t);
            t += 1;
        }
        let settled = l.limit();
        assert!((8..=24).contains(&settled), "settled at {settled}");
        // Latency back to normal: the limit grows back.
        for _ in 0..400 {
            l.on_sample(5.0, l.limit(), t);
            t += 1;
        }
        assert_eq!(l.limit(), 64);
        // A collapsing origin: halved on every round, down to a handful (the square-root
        // allowance keeps probing), never below the floor.
        for _ in 0..100 {
            l.on_sample(10_000.0, 64, t);
        }
        assert!((2..=4).contains(&l.limit()), "{}", l.limit());
        let mut floor = ConcurrencyLimit::new(6, 64);
        floor.on_sample(5.0, 64, 0);
        for _ in 0..100 {
            floor.on_sample(10_000.0, 64, 0);
        }
        assert_eq!(floor.limit(), 6);
    }

    #[test]
    fn a_fast_origin_keeps_the_ceiling_when_the_gateway_itself_is_busy() {
        let mut l = ConcurrencyLimit::new(4, 256);
        // 0.1 ms when idle, 3 ms when the gateway's CPU is saturated: all below the floor.
        for i in 0..100 {
            l.on_sample(0.1, 10, i);
        }
        for i in 0..1000 {
            l.on_sample(3.0, 256, 100 + i);
        }
        assert_eq!(l.limit(), 256);
    }

    #[test]
    fn idle_pool_does_not_grow_its_limit() {
        let mut l = ConcurrencyLimit::new(1, 100);
        for i in 0..50 {
            l.on_sample(50.0, 100, i);
        }
        for i in 0..100 {
            l.on_sample(400.0, 100, 100 + i);
        }
        let low = l.limit();
        assert!(low < 100);
        for i in 0..100 {
            l.on_sample(50.0, 0, 300 + i);
        }
        assert!(l.limit() <= low);
    }

    #[test]
    fn pressure_has_hysteresis() {
        let mut p = Pressure::default();
        assert_eq!(p.since(0, 10_000), None);
        p.on_shed(1_000);
        p.on_shed(5_000);
        assert_eq!(p.since(14_000, 10_000), Some(1_000));
        assert_eq!(p.since(15_001, 10_000), None);
        p.on_shed(20_000);
        assert_eq!(p.since(20_000, 10_000), Some(20_000));
    }

    #[test]
    fn good_history_excludes_newcomers_and_is_bounded() {
        let h = GoodHistory::new(1024);
        let resident = 0x1234_5678_9abc_def0_u64;
        let bot = 0x0fed_cba9_8765_4321_u64;
        h.record(resident, 100);
        // Calm at minute 101: not yet old enough.
        assert!(!h.is_good(resident, GOOD_HISTORY_MIN_AGE_MIN, 101, 101));
        assert!(h.is_good(resident, GOOD_HISTORY_MIN_AGE_MIN, 102, 102));
        // A tenant asking for a longer (or no) wait.
        assert!(!h.is_good(resident, 10, 105, 105));
        assert!(h.is_good(resident, 0, 100, 100));
        // Pressure begins at minute 110; the bot first appears at minute 109.
        h.record(bot, 109);
        assert!(h.is_good(resident, GOOD_HISTORY_MIN_AGE_MIN, 110, 130));
        assert!(!h.is_good(bot, GOOD_HISTORY_MIN_AGE_MIN, 110, 130));
        // Recording again does not reset the first-seen minute.
        h.record(resident, 129);
        assert!(h.is_good(resident, GOOD_HISTORY_MIN_AGE_MIN, 110, 130));
        // Fixed memory, whatever the number of addresses.
        for k in 0..100_000u64 {
            h.record(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), 200);
        }
        assert_eq!(h.memory_bytes(), 8 * 1024);
    }

    #[test]
    fn good_history_carries_into_a_process_that_started_later() {
        let old = GoodHistory::new(1024);
        let resident = 0x1234_5678_9abc_def0_u64;
        // Seen at minute 500 of the old process, which hands over at minute 900.
        old.record(resident, 500);
        let entries = old.export(900);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].2, 400);
        // The new process is at its minute 0, under pressure since then: the resident is
        // still known from long before.
        let new = GoodHistory::new(1024);
        assert_eq!(new.import(&entries, 0), 1);
        assert!(new.is_good(resident, GOOD_HISTORY_MIN_AGE_MIN, 0, 0));
        assert!(!new.is_good(0x0fed_cba9_8765_4321, GOOD_HISTORY_MIN_AGE_MIN, 0, 0));
        // And forgotten a week after it was first seen, as in the old process.
        assert!(new.is_good(resident, GOOD_HISTORY_MIN_AGE_MIN, 5, 6 * 24 * 60));
        assert!(!new.is_good(resident, GOOD_HISTORY_MIN_AGE_MIN, 5, 7 * 24 * 60));
    }
}
