//! Record budgets: how many records each account took out, per window, against the budgets
//! of a route, and what to do about it. Pure: counts go in with `now`, a verdict comes out.
//!
//! Each budget (`300 records per hour`, `1,500 per day`) is a sliding window, estimated from
//! two fixed windows (the current one, and the previous one weighted by how much of it still
//! falls inside the sliding window), so an account costs a few words per budget whatever its
//! volume. Accounts are bounded: when the ledger is full, accounts idle for longer than the
//! longest window are forgotten first; if none is, a new account is counted in one shared
//! overflow slot (the ledger never grows, and never stops counting); over a budget, that slot
//! raises an alert, never a sanction on whichever account came last.

use std::collections::{HashMap, HashSet};

use super::account::AccountId;

/// What a budget does when it is exceeded, mildest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// A log line.
    Log,
    /// A security event and an operator notification.
    Alert,
    /// Each further answer delayed.
    Slow,
    /// A branded 403 page while over the budget.
    Block,
    /// The account refused on every guarded route until an operator lifts it.
    Suspend,
}

impl Action {
    /// Name in configuration and logs.
    pub fn name(self) -> &'static str {
        match self {
            Action::Log => "log",
            Action::Alert => "alert",
            Action::Slow => "slow",
            Action::Block => "block",
            Action::Suspend => "suspend",
        }
    }
}

/// One budget: at most `limit` records per `window_ms`, else `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Window length, milliseconds.
    pub window_ms: u64,
    /// Records allowed in a window.
    pub limit: u64,
    /// What happens above it.
    pub action: Action,
}

/// What the ledger says about a request's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within every budget.
    Within,
    /// Over budget `index` (the one with the strongest action), with the records it counts.
    Over {
        /// Index of the budget in the route's list.
        index: usize,
        /// Its action.
        action: Action,
        /// Records in its sliding window, this request's included.
        records: u64,
    },
    /// The account is suspended.
    Suspended,
}

/// Two fixed windows of one budget.
#[derive(Debug, Clone, Copy, Default)]
struct Windows {
    /// Start of the current window (a multiple of the window length).
    start_ms: u64,
    current: u64,
    previous: u64,
}

impl Windows {
    /// Rolls to the window of `now_ms`, then the sliding estimate.
    fn estimate(&mut self, window_ms: u64, now_ms: u64) -> u64 {
        let start = now_ms - now_ms % window_ms;
        if start != self.start_ms {
            self.previous = if start == self.start_ms + window_ms {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.start_ms = start;
        }
        let into = now_ms - start;
        let weight = (window_ms - into) as f64 / window_ms as f64;
        self.current + (self.previous as f64 * weight).round() as u64
    }
}

#[derive(Debug, Clone)]
struct Entry {
    windows: Vec<Windows>,
    last_ms: u64,
}

/// Accounts and their windows.
#[derive(Debug)]
pub struct Ledger {
    /// Windows per account and scope (a route: each route has its budgets).
    entries: HashMap<(AccountId, u64), Entry>,
    overflow: Entry,
    suspended: HashSet<AccountId>,
    capacity: usize,
    /// The longest window of the budgets seen (an account idle longer counts nothing).
    longest_ms: u64,
}

impl Ledger {
    /// A ledger of at most `capacity` accounts.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            overflow: Entry {
                windows: Vec::new(),
                last_ms: 0,
            },
            suspended: HashSet::new(),
            capacity: capacity.max(1),
            longest_ms: 0,
        }
    }

    /// Accounts tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no account is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the ledger holds windows of `account` on `scope`.
    pub fn counts(&self, account: AccountId, scope: u64) -> bool {
        self.entries.contains_key(&(account, scope))
    }

    /// Whether `account` is suspended.
    pub fn is_suspended(&self, account: AccountId) -> bool {
        self.suspended.contains(&account)
    }

    /// Suspends `account` (an operator's decision, or a suspension read back at start);
    /// `false` when it already was.
    pub fn suspend(&mut self, account: AccountId) -> bool {
        self.suspended.insert(account)
    }

    /// Lifts a suspension, and forgets what the account took so far (it starts afresh: its
    /// windows would otherwise suspend it again at once); `false` when the account was not
    /// suspended.
    pub fn lift(&mut self, account: AccountId) -> bool {
        let lifted = self.suspended.remove(&account);
        if lifted {
            self.entries.retain(|(a, _), _| *a != account);
        }
        lifted
    }

    /// Suspended accounts.
    pub fn suspended(&self) -> impl Iterator<Item = AccountId> + '_ {
        self.suspended.iter().copied()
    }

    /// Counts `records` another node saw `account` take on `scope` (cluster mode): they
    /// fill its windows like its own, without a verdict here; the next request judged here
    /// sees them. Dropped when the ledger is full (the overflow slot is this node's).
    pub fn add(
        &mut self,
        account: AccountId,
        scope: u64,
        records: u64,
        budgets: &[Budget],
        now_ms: u64,
    ) {
        if self.suspended.contains(&account) {
            return;
        }
        let key = (account, scope);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            return;
        }
        self.longest_ms = budgets
            .iter()
            .map(|b| b.window_ms)
            .fold(self.longest_ms, u64::max);
        let entry = self.entries.entry(key).or_insert_with(|| Entry {
            windows: Vec::new(),
            last_ms: now_ms,
        });
        entry.last_ms = now_ms;
        entry.windows.resize(budgets.len(), Windows::default());
        for (budget, w) in budgets.iter().zip(entry.windows.iter_mut()) {
            w.estimate(budget.window_ms.max(1), now_ms);
            w.current += records;
        }
    }

    /// Counts `records` taken by `account` at `now_ms` against `budgets`, the budgets of
    /// `scope` (a route; each scope has its own windows), and decides. A suspension holds in
    /// every scope.
    pub fn take(
        &mut self,
        account: AccountId,
        scope: u64,
        records: u64,
        budgets: &[Budget],
        now_ms: u64,
    ) -> Verdict {
        if self.suspended.contains(&account) {
            return Verdict::Suspended;
        }
        self.longest_ms = budgets
            .iter()
            .map(|b| b.window_ms)
            .fold(self.longest_ms, u64::max);
        let key = (account, scope);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let idle = self.longest_ms;
            self.entries
                .retain(|_, e| now_ms.saturating_sub(e.last_ms) <= idle);
        }
        let overflow = self.entries.len() >= self.capacity && !self.entries.contains_key(&key);
        let entry = if overflow {
            &mut self.overflow
        } else {
            self.entries.entry(key).or_insert_with(|| Entry {
                windows: Vec::new(),
                last_ms: now_ms,
            })
        };
        entry.last_ms = now_ms;
        entry.windows.resize(budgets.len(), Windows::default());
        let mut verdict = Verdict::Within;
        for (index, (budget, w)) in budgets.iter().zip(entry.windows.iter_mut()).enumerate() {
            let window = budget.window_ms.max(1);
            w.estimate(window, now_ms);
            w.current += records;
            let in_window = w.estimate(window, now_ms);
            if in_window > budget.limit {
                // The overflow slot counts many accounts together: over a budget, it is worth
                // an alert, never a sanction on whoever came last.
                let action = if overflow {
                    budget.action.min(Action::Alert)
                } else {
                    budget.action
                };
                let stronger = match verdict {
                    Verdict::Over { action: a, .. } => action > a,
                    _ => true,
                };
                if stronger {
                    verdict = Verdict::Over {
                        index,
                        action,
                        records: in_window,
                    };
                }
            }
        }
        if let Verdict::Over {
            action: Action::Suspend,
            ..
        } = verdict
        {
            self.suspended.insert(account);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_nodes_records_fill_the_same_windows() {
        let b = [Budget {
            window_ms: 3_600_000,
            limit: 100,
            action: Action::Block,
        }];
        let mut ledger = Ledger::new(10);
        // 80 records taken through another node, then 15 here: within the budget.
        ledger.add(AccountId(7), 1, 80, &b, 1_000);
        assert_eq!(ledger.take(AccountId(7), 1, 15, &b, 2_000), Verdict::Within);
        // 10 more: 105, over the budget that is the cluster's.
        assert!(matches!(
            ledger.take(AccountId(7), 1, 10, &b, 3_000),
            Verdict::Over { records: 105, .. }
        ));
        // Another scope, another account: untouched.
        assert_eq!(ledger.take(AccountId(7), 2, 1, &b, 3_000), Verdict::Within);
        assert_eq!(ledger.take(AccountId(8), 1, 1, &b, 3_000), Verdict::Within);
    }

    const HOUR: u64 = 3_600_000;

    fn budgets() -> [Budget; 2] {
        [
            Budget {
                window_ms: HOUR,
                limit: 300,
                action: Action::Block,
            },
            Budget {
                window_ms: 24 * HOUR,
                limit: 1_500,
                action: Action::Suspend,
            },
        ]
    }

    #[test]
    fn a_bulk_pull_is_blocked_within_its_budget_plus_one_page() {
        let mut l = Ledger::new(100);
        let puller = AccountId(66);
        let start = 10 * HOUR;
        let mut taken = 0;
        for page in 0..100u64 {
            // Pages of 20 records, a few seconds apart.
            match l.take(puller, 0, 20, &budgets(), start + page * 3_000) {
                Verdict::Within => taken += 20,
                Verdict::Over { action, index, .. } => {
                    assert_eq!((action, index), (Action::Block, 0));
                    break;
                }
                Verdict::Suspended => unreachable!(),
            }
        }
        assert_eq!(taken, 300);
        // An adviser working normally is never stopped.
        let adviser = AccountId(7);
        for minute in 0..(8 * 60) {
            let v = l.take(adviser, 0, 1, &budgets(), start + minute * 60_000);
            assert_eq!(v, Verdict::Within, "minute {minute}");
        }
    }

    #[test]
    fn the_sliding_window_remembers_the_previous_hour() {
        let mut l = Ledger::new(10);
        let a = AccountId(1);
        let b = [Budget {
            window_ms: HOUR,
            limit: 100,
            action: Action::Alert,
        }];
        // 90 records late in one hour, then 50 right after it turns: 140 in the last hour.
        assert_eq!(l.take(a, 0, 90, &b, HOUR - 60_000), Verdict::Within);
        assert!(
            matches!(l.take(a, 0, 50, &b, HOUR + 60_000), Verdict::Over { records, .. } if records > 100)
        );
        // Two hours later, all is forgotten.
        assert_eq!(l.take(a, 0, 50, &b, 3 * HOUR + 60_000), Verdict::Within);
    }

    #[test]
    fn a_daily_pull_under_the_hourly_budget_is_suspended_until_lifted() {
        let mut l = Ledger::new(10);
        let slow = AccountId(9);
        let mut verdict = Verdict::Within;
        // 250 records an hour, 25 every six minutes: under the hourly budget, over the daily
        // one after six hours.
        let mut at = 0;
        for step in 0..100u64 {
            at = step * 6 * 60_000 + 1;
            verdict = l.take(slow, 0, 25, &budgets(), at);
            if verdict != Verdict::Within {
                break;
            }
        }
        assert!(at > 5 * HOUR && at < 7 * HOUR, "{at}");
        assert!(
            matches!(
                verdict,
                Verdict::Over {
                    action: Action::Suspend,
                    ..
                }
            ),
            "{verdict:?}"
        );
        assert_eq!(
            l.take(slow, 0, 1, &budgets(), 11 * HOUR),
            Verdict::Suspended
        );
        assert!(l.lift(slow));
        assert!(!l.is_suspended(slow));
    }

    #[test]
    fn memory_is_bounded_and_idle_accounts_make_room() {
        let mut l = Ledger::new(1_000);
        let b = budgets();
        for i in 0..5_000u64 {
            l.take(AccountId(i), 0, 1, &b, 0);
        }
        assert_eq!(l.len(), 1_000);
        // A day and more later, the idle ones are forgotten when a new account comes.
        l.take(AccountId(99_999), 0, 1, &b, 25 * HOUR + 1);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn each_scope_has_its_own_windows_and_a_suspension_holds_in_all() {
        let mut l = Ledger::new(100);
        let a = AccountId(1);
        let hourly = [Budget {
            window_ms: HOUR,
            limit: 100,
            action: Action::Block,
        }];
        let daily = [Budget {
            window_ms: 24 * HOUR,
            limit: 100,
            action: Action::Suspend,
        }];
        // 90 records on each route: neither budget is over.
        assert_eq!(l.take(a, 1, 90, &hourly, 0), Verdict::Within);
        assert_eq!(l.take(a, 2, 90, &daily, 0), Verdict::Within);
        // Two hours later the hourly window is empty, the daily one is not.
        assert_eq!(l.take(a, 1, 90, &hourly, 2 * HOUR), Verdict::Within);
        assert!(matches!(
            l.take(a, 2, 20, &daily, 2 * HOUR),
            Verdict::Over {
                action: Action::Suspend,
                ..
            }
        ));
        assert_eq!(l.take(a, 1, 0, &hourly, 2 * HOUR), Verdict::Suspended);
    }

    #[test]
    fn the_shared_overflow_slot_alerts_but_never_sanctions() {
        let mut ledger = Ledger::new(2);
        let b = budgets();
        ledger.take(AccountId(1), 0, 1, &b, 0);
        ledger.take(AccountId(2), 0, 1, &b, 0);
        // Newcomers share one slot while the ledger is full of active accounts.
        let mut last = Verdict::Within;
        for i in 3..2_000 {
            last = ledger.take(AccountId(i), 0, 1, &b, 1_000);
        }
        assert!(
            matches!(
                last,
                Verdict::Over {
                    action: Action::Alert,
                    ..
                }
            ),
            "{last:?}"
        );
        assert_eq!(ledger.suspended().count(), 0);
    }
}
