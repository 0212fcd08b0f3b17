//! The exfiltration drill on simulated time: advisers working normally for days, then one
//! compromised account pulling records, fast or slowly, from one prefix or several, all
//! through the same decision code the gateway runs (`Book`), with `now` moved by the
//! simulation instead of the clock (hours of work take milliseconds). Deterministic for a
//! seed. `rempart drill` runs it next to the live run against a gateway.

use super::account::AccountId;
use super::book::{Baseline, Book, Flag, Visit, Who};
use super::budget::{Action, Budget, Verdict};
use super::scan::Kind;

/// What is simulated.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Advisers working normally.
    pub advisers: u32,
    /// Records an adviser takes in an ordinary hour (low, high).
    pub adviser_hourly: (u64, u64),
    /// Chance (in 1000) that an adviser's hour is a burst of `burst_factor` times more.
    pub burst_per_mille: u64,
    /// How much more a burst hour takes.
    pub burst_factor: u64,
    /// Working hours per day (from 8:00).
    pub hours_per_day: u64,
    /// Days the advisers work before the compromised account starts (history).
    pub days_before: u64,
    /// Records per page (what one answer carries).
    pub page: u64,
    /// The compromised account's pace: records per hour (`None`: as fast as it is served,
    /// a page a second).
    pub puller_hourly: Option<u64>,
    /// Client prefixes the compromised account uses in turn.
    pub puller_prefixes: u32,
    /// Hours the compromised account keeps pulling.
    pub puller_hours: u64,
    /// The route's budgets.
    pub budgets: Vec<Budget>,
    /// The tenant's baseline.
    pub baseline: Option<Baseline>,
    /// Seed of the advisers' behaviour.
    pub seed: u64,
}

/// What the simulation found.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Outcome {
    /// Records the compromised account was served before it was refused for good (blocked
    /// or suspended), or in all when never stopped.
    pub puller_records: u64,
    /// Simulated seconds from its first request to its first refusal (`None`: never).
    pub stopped_after_s: Option<u64>,
    /// Simulated seconds from its first request to its first flag or alert (budget `log`
    /// or `alert` crossed, baseline flag).
    pub flagged_after_s: Option<u64>,
    /// What flagged it first.
    pub flagged_by: Option<String>,
    /// Advisers whose requests were refused or slowed at least once.
    pub advisers_hindered: u32,
    /// Advisers flagged (alert crossed or baseline flag) at least once.
    pub advisers_flagged: u32,
    /// Records the advisers took in all.
    pub adviser_records: u64,
}

const HOUR: u64 = 3_600_000;

fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a request meets before it is served.
fn refused(book: &mut Book, account: AccountId, budgets: &[Budget], now: u64) -> Option<Action> {
    match book.standing(account, 0, budgets, now) {
        Verdict::Suspended => Some(Action::Suspend),
        Verdict::Over { action, .. } if action >= Action::Slow => Some(action),
        _ => None,
    }
}

/// Runs `plan`.
pub fn run(plan: &Plan) -> Outcome {
    let mut book = Book::new(100_000);
    book.set_baseline(plan.baseline);
    let mut rng = plan.seed;
    let mut out = Outcome::default();
    let mut hindered = std::collections::HashSet::new();
    let mut flagged = std::collections::HashSet::new();
    // Day 0 starts on a Monday at midnight (any day would do); work starts at 8:00.
    let day_ms = 24 * HOUR;
    let start = 8 * HOUR;
    let puller = AccountId(u64::MAX);
    let puller_day = plan.days_before;
    let mut puller_started: Option<u64> = None;
    let mut puller_done = false;
    let mut puller_prefix = 0u32;
    let adviser_visit = |id: u32, records: u64| Visit {
        account: AccountId(u64::from(id)),
        scope: 0,
        who: Who::Named("basic"),
        label: None,
        prefix: "192.0.2.0/24",
        fingerprint: u64::from(id),
        records,
        pii: [0; Kind::COUNT],
        record_id: None,
        outside_hours: false,
    };
    for day in 0..=puller_day + plan.puller_hours.div_ceil(plan.hours_per_day.max(1)) {
        for hour in 0..plan.hours_per_day {
            let hour_start = day * day_ms + start + hour * HOUR;
            // Every event of this hour, in time order: (ms, who, records).
            let mut events: Vec<(u64, u32, u64)> = Vec::new();
            for id in 0..plan.advisers {
                let (lo, hi) = plan.adviser_hourly;
                let mut target = lo + next(&mut rng) % (hi - lo + 1);
                if next(&mut rng) % 1000 < plan.burst_per_mille {
                    target *= plan.burst_factor;
                }
                // Pages of up to `page` records, spread over the hour.
                let mut left = target;
                while left > 0 {
                    let n = left.min(1 + next(&mut rng) % plan.page);
                    events.push((hour_start + next(&mut rng) % HOUR, id, n));
                    left -= n;
                }
            }
            let pulling = day >= puller_day
                && !puller_done
                && puller_started.is_none_or(|s| hour_start < s + plan.puller_hours * HOUR);
            if pulling {
                match plan.puller_hourly {
                    None => {
                        // A page a second, from the first second of the hour.
                        for s in 0..3600 {
                            events.push((hour_start + s * 1000, u32::MAX, plan.page));
                        }
                    }
                    Some(per_hour) => {
                        let pages = per_hour.div_ceil(plan.page).max(1);
                        for p in 0..pages {
                            events.push((hour_start + p * HOUR / pages, u32::MAX, plan.page));
                        }
                    }
                }
            }
            events.sort_unstable();
            for (now, who, records) in events {
                if who == u32::MAX {
                    if puller_done {
                        continue;
                    }
                    let first = *puller_started.get_or_insert(now);
                    if refused(&mut book, puller, &plan.budgets, now)
                        .is_some_and(|a| a >= Action::Block)
                    {
                        out.stopped_after_s.get_or_insert((now - first) / 1000);
                        puller_done = true;
                        continue;
                    }
                    puller_prefix = (puller_prefix + 1) % plan.puller_prefixes.max(1);
                    let prefix = format!("198.51.{puller_prefix}.0/24");
                    let visit = Visit {
                        account: puller,
                        scope: 0,
                        who: Who::Named("basic"),
                        label: None,
                        prefix: &prefix,
                        fingerprint: 0,
                        records,
                        pii: [0; Kind::COUNT],
                        record_id: None,
                        outside_hours: false,
                    };
                    let o = book.record(&visit, &plan.budgets, now);
                    out.puller_records += records;
                    let alerted = o.crossed
                        && matches!(o.verdict, Verdict::Over { action, .. } if action >= Action::Log);
                    let baseline = o
                        .flags
                        .iter()
                        .find(|f| matches!(f, Flag::AboveUsual | Flag::AbovePeers));
                    if out.flagged_after_s.is_none() && (alerted || baseline.is_some()) {
                        out.flagged_after_s = Some((now - first) / 1000);
                        out.flagged_by = Some(match (baseline, o.verdict) {
                            (Some(f), _) => f.name().to_owned(),
                            (None, Verdict::Over { action, .. }) => action.name().to_owned(),
                            _ => "budget".to_owned(),
                        });
                    }
                } else {
                    if let Some(action) =
                        refused(&mut book, AccountId(u64::from(who)), &plan.budgets, now)
                    {
                        hindered.insert(who);
                        if action >= Action::Block {
                            continue;
                        }
                    }
                    let o = book.record(&adviser_visit(who, records), &plan.budgets, now);
                    out.adviser_records += records;
                    let alerted = o.crossed && matches!(o.verdict, Verdict::Over { .. });
                    if alerted
                        || o.flags
                            .iter()
                            .any(|f| matches!(f, Flag::AboveUsual | Flag::AbovePeers))
                    {
                        flagged.insert(who);
                    }
                }
            }
        }
    }
    out.advisers_hindered = hindered.len() as u32;
    out.advisers_flagged = flagged.len() as u32;
    out
}

/// The budgets of the drill's back-office route: 300 records an hour (then 403), 1,500 a
/// day (then suspension).
pub fn default_budgets() -> Vec<Budget> {
    vec![
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

impl Plan {
    /// Fifty advisers (10 to 60 records an hour, one hour in twenty a burst of three times
    /// more), two days of history, pages of 20, the default budgets and baseline; the
    /// compromised account pulling at `puller_hourly` (`None`: as fast as served).
    pub fn standard(puller_hourly: Option<u64>, puller_prefixes: u32, seed: u64) -> Self {
        Self {
            advisers: 50,
            adviser_hourly: (10, 60),
            burst_per_mille: 50,
            burst_factor: 3,
            hours_per_day: 9,
            days_before: 2,
            page: 20,
            puller_hourly,
            puller_prefixes,
            puller_hours: 9,
            budgets: default_budgets(),
            baseline: Some(Baseline::default()),
            seed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_puller_is_stopped_within_its_budget_plus_one_page_and_no_adviser_is_hindered() {
        for seed in 0..5 {
            let o = run(&Plan::standard(None, 1, seed));
            assert!(o.puller_records <= 300 + 20, "{o:?}");
            assert!(o.stopped_after_s.is_some(), "{o:?}");
            assert_eq!(o.advisers_hindered, 0, "{o:?}");
            assert!(o.adviser_records > 50 * 9 * 2 * 10, "{o:?}");
        }
    }

    #[test]
    fn a_slow_puller_under_its_budgets_is_flagged_by_the_baseline_within_the_hour() {
        for (prefixes, seed) in [(1, 1), (8, 2), (1, 3)] {
            // 250 records an hour: under the hourly budget (300); the daily one (1,500)
            // suspends it in its seventh hour.
            let o = run(&Plan::standard(Some(250), prefixes, seed));
            let after = o.flagged_after_s.expect("flagged");
            assert!(after < 3600, "{o:?}");
            assert_eq!(o.flagged_by.as_deref(), Some("above_peers"), "{o:?}");
            assert!(o.puller_records <= 1_500 + 20, "{o:?}");
            assert_eq!(o.advisers_hindered, 0, "{o:?}");
            assert_eq!(o.advisers_flagged, 0, "{o:?}");
        }
        // Without a baseline, the same pull is only seen when the daily budget suspends it,
        // hours later.
        let mut plan = Plan::standard(Some(250), 1, 1);
        plan.baseline = None;
        let o = run(&plan);
        assert_eq!(o.flagged_by.as_deref(), Some("suspend"), "{o:?}");
        assert!(o.flagged_after_s.unwrap() > 5 * 3600, "{o:?}");
        assert!(o.stopped_after_s.unwrap() > 5 * 3600, "{o:?}");
    }
}
