//! The cost of a pass without JavaScript. A browser without JavaScript cannot do the proof of
//! work; it waits instead, and a wait is cheap for a bot that holds a thousand of them at
//! once. So no-JavaScript passes are budgeted per partition (a tenant and a client network):
//! a burst, then one more every `refill` as the budget refills. A network that has just been
//! granted many waits longer, and the page says how long; a person without JavaScript still
//! gets in, after that wait. Fixed memory: a direct-mapped table (a colliding network starts
//! from a full budget, which only ever favours it once).

use std::sync::Mutex;

/// One network's budget.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u64,
    /// Grants available now (fractional while refilling).
    grants: f64,
    /// When `grants` was computed.
    at_ms: u64,
}

/// No-JavaScript pass budgets per partition.
#[derive(Debug)]
pub struct NoJsBudget {
    slots: Mutex<Vec<Slot>>,
    burst: f64,
    refill_ms: u64,
}

impl NoJsBudget {
    /// `slots` networks tracked at once (24 bytes each), `burst` grants in a row, then one
    /// every `refill_ms`.
    pub fn new(slots: usize, burst: u32, refill_ms: u64) -> Self {
        Self {
            slots: Mutex::new(vec![Slot::default(); slots.max(1)]),
            burst: f64::from(burst.max(1)),
            refill_ms: refill_ms.max(1),
        }
    }

    /// `partition`'s slot, refilled to `now_ms`.
    fn current(&self, slots: &mut [Slot], partition: u64, now_ms: u64) -> usize {
        let idx = (partition % slots.len() as u64) as usize;
        let slot = &mut slots[idx];
        // 0 marks an empty slot.
        let key = partition.max(1);
        if slot.key != key {
            *slot = Slot {
                key,
                grants: self.burst,
                at_ms: now_ms,
            };
        } else if now_ms > slot.at_ms {
            let refilled = (now_ms - slot.at_ms) as f64 / self.refill_ms as f64;
            slot.grants = (slot.grants + refilled).min(self.burst);
            slot.at_ms = now_ms;
        }
        idx
    }

    /// The networks that have spent part of their budget, as (partition, grants left) at
    /// `now_ms`, to carry into another process (a full budget needs no carrying).
    pub fn export(&self, now_ms: u64) -> Vec<(u64, f64)> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<u64> = slots.iter().map(|s| s.key).filter(|k| *k != 0).collect();
        keys.into_iter()
            .filter_map(|key| {
                let idx = self.current(&mut slots, key, now_ms);
                let grants = slots[idx].grants;
                (grants < self.burst).then_some((key, grants))
            })
            .collect()
    }

    /// Takes `export`'s budgets as of `now_ms`.
    pub fn import(&self, budgets: &[(u64, f64)], now_ms: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let len = slots.len() as u64;
        for (key, grants) in budgets {
            if *key == 0 || !grants.is_finite() {
                continue;
            }
            slots[(key % len) as usize] = Slot {
                key: *key,
                grants: grants.clamp(0.0, self.burst),
                at_ms: now_ms,
            };
        }
    }

    /// How long (ms) a no-JavaScript claim from `partition` must wait beyond the usual
    /// wait before it can be granted: 0 while the budget lasts.
    pub fn extra_wait_ms(&self, partition: u64, now_ms: u64) -> u64 {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let idx = self.current(&mut slots, partition, now_ms);
        missing_ms(slots[idx].grants, self.refill_ms)
    }

    /// Takes one grant for `partition`: `Err(ms)` when none is left, with the time until
    /// the next one.
    pub fn take(&self, partition: u64, now_ms: u64) -> Result<(), u64> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let idx = self.current(&mut slots, partition, now_ms);
        let slot = &mut slots[idx];
        if slot.grants >= 1.0 {
            slot.grants -= 1.0;
            Ok(())
        } else {
            Err(missing_ms(slot.grants, self.refill_ms).max(1))
        }
    }
}

/// Time until `grants` reaches one.
fn missing_ms(grants: f64, refill_ms: u64) -> u64 {
    if grants >= 1.0 {
        0
    } else {
        ((1.0 - grants) * refill_ms as f64).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spent_budgets_carry_into_another_process() {
        let old = NoJsBudget::new(1024, 3, 10_000);
        for _ in 0..3 {
            assert!(old.take(7, 50_000).is_ok());
        }
        assert!(old.take(9, 50_000).is_ok());
        let budgets = old.export(55_000);
        assert_eq!(budgets.len(), 2);
        let new = NoJsBudget::new(1024, 3, 10_000);
        new.import(&budgets, 100);
        // Network 7 spent its burst half a refill ago: it still waits the other half.
        assert_eq!(new.extra_wait_ms(7, 100), 5_000);
        assert_eq!(new.extra_wait_ms(9, 100), 0);
        assert!(new.take(9, 100).is_ok() && new.take(9, 100).is_ok());
        assert!(new.take(9, 100).is_err());
    }

    #[test]
    fn a_burst_then_one_per_refill() {
        let b = NoJsBudget::new(1024, 3, 10_000);
        for _ in 0..3 {
            assert_eq!(b.extra_wait_ms(7, 0), 0);
            assert_eq!(b.take(7, 0), Ok(()));
        }
        assert_eq!(b.take(7, 0), Err(10_000));
        assert_eq!(b.extra_wait_ms(7, 4_000), 6_000);
        assert_eq!(b.take(7, 10_000), Ok(()));
        assert!(b.take(7, 10_001).is_err());
        // Another network is not affected.
        assert_eq!(b.take(8, 10_001), Ok(()));
        // Refilled to the burst, never beyond.
        for _ in 0..3 {
            assert_eq!(b.take(7, 1_000_000), Ok(()));
        }
        assert!(b.take(7, 1_000_000).is_err());
    }

    #[test]
    fn a_thousand_parallel_waits_buy_the_burst_and_the_refill_only() {
        let b = NoJsBudget::new(1024, 30, 10_000);
        // A bot holds 1,000 tokens, all waited, and claims them over two minutes.
        let granted = (0..1_000u64)
            .filter(|i| b.take(66, i * 120).is_ok())
            .count();
        assert!((30..=43).contains(&granted), "{granted}");
    }
}
