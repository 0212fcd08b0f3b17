//! The accounts of one tenant's guarded routes: what each took out (records, personal data,
//! distinct record identifiers), from where, and its standing against the budgets (the
//! `Ledger`). What operators see through the admin API; what the pipeline asks before
//! forwarding a request (`standing`) and tells after each answer (`record`). Pure: `now`
//! goes in. Bounded: at most `capacity` accounts are described (the least recently active
//! forgotten first); the ledger keeps its own bound.

use std::collections::HashMap;

use super::account::AccountId;
use super::budget::{Action, Budget, Ledger, Verdict};
use super::distinct::Distinct;
use super::scan::Kind;

/// How a request's account was known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Named by a source (`cookie`, `basic`, `jwt`, `header`, `origin`).
    Named(&'static str),
    /// No account: the bucket of the client's prefix.
    Anonymous,
    /// A source was present but did not verify: the bucket of the client's prefix.
    Unverified,
}

impl Who {
    /// Name in the admin API and logs.
    pub fn name(self) -> &'static str {
        match self {
            Who::Named(source) => source,
            Who::Anonymous => "anonymous",
            Who::Unverified => "unverified",
        }
    }
}

/// What one answer took out, and who took it.
#[derive(Debug, Clone, Copy)]
pub struct Visit<'a> {
    /// The account (or the prefix's bucket).
    pub account: AccountId,
    /// Whose budgets: the route (and the account's group), each with its own windows.
    pub scope: u64,
    /// How it was known.
    pub who: Who,
    /// Its name for operators, when the source gives one.
    pub label: Option<&'a str>,
    /// The client's prefix, as text (`192.0.2.0/24`).
    pub prefix: &'a str,
    /// A hash of the client's fingerprint (user agent, TLS fingerprint).
    pub fingerprint: u64,
    /// Records the answer carried.
    pub records: u64,
    /// Personal-data items found, per kind.
    pub pii: [u64; Kind::COUNT],
    /// A hash of the record identifier in the path, if any.
    pub record_id: Option<u64>,
    /// The answer came outside the tenant's working hours.
    pub outside_hours: bool,
}

/// Something unusual about an account, besides its budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// Active from a second client prefix while the first was active minutes ago.
    TwoPlaces,
    /// A new client fingerprint in the middle of a session.
    NewFingerprint,
    /// Records this hour far above the account's own usual hours.
    AboveUsual,
    /// Records this hour far above the usual hours of the tenant's accounts.
    AbovePeers,
    /// Active outside the configured working hours.
    OutsideHours,
}

impl Flag {
    /// Name in logs and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Flag::TwoPlaces => "two_places",
            Flag::NewFingerprint => "new_fingerprint",
            Flag::AboveUsual => "above_usual",
            Flag::AbovePeers => "above_peers",
            Flag::OutsideHours => "outside_hours",
        }
    }
}

/// The learned baseline: an account taking `factor` times its usual hourly volume, or
/// `factor` times its peers' (the median of the tenant's accounts), is flagged even under
/// its budgets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// How many times the usual volume.
    pub factor: f64,
    /// Hourly volumes below this are never unusual (a quiet account opening a few files).
    pub min_records: u64,
    /// Active hours an account needs before its own usual volume is trusted.
    pub min_hours: u32,
}

impl Default for Baseline {
    fn default() -> Self {
        Self {
            factor: 6.0,
            min_records: 30,
            min_hours: 8,
        }
    }
}

/// Weight of the last hour in an account's usual volume (an exponential moving average
/// over its active hours).
const USUAL_WEIGHT: f64 = 0.2;
/// Accounts with a usual volume needed before the peers' median is trusted.
const MIN_PEERS: usize = 5;
/// How often the peers' median is recomputed, ms.
const PEERS_EVERY_MS: u64 = 60_000;

/// What the book says after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The budgets' verdict.
    pub verdict: Verdict,
    /// The verdict is a budget's action the account had not reached before in this window
    /// (log and alert once per crossing, not on every answer).
    pub crossed: bool,
    /// Unusual activity seen with this answer.
    pub flags: Vec<Flag>,
}

/// One hour, ms.
const HOUR_MS: u64 = 3_600_000;
/// A session: activity with pauses shorter than this (ms) is one session.
const SESSION_GAP_MS: u64 = 30 * 60_000;
/// Two prefixes used within this time (ms) of each other count as "at once".
const TWO_PLACES_MS: u64 = 10 * 60_000;
/// Prefixes remembered per account.
const PREFIXES_KEPT: usize = 4;

/// One account as operators see it.
#[derive(Debug, Clone)]
pub struct Account {
    /// How it was known.
    pub who: Who,
    /// Its name for operators, when the source gives one.
    pub label: Option<Box<str>>,
    /// First and last answer, ms.
    pub first_ms: u64,
    /// Last answer, ms.
    pub last_ms: u64,
    /// Answers counted.
    pub answers: u64,
    /// Records taken.
    pub records: u64,
    /// Personal-data items seen, per kind.
    pub pii: [u64; Kind::COUNT],
    /// Distinct record identifiers opened (estimate).
    pub distinct_ids: Distinct,
    /// Recent client prefixes, with when each was last used (ms), most recent first.
    pub prefixes: Vec<(Box<str>, u64)>,
    /// The session's fingerprint.
    fingerprint: u64,
    /// The strongest action reached, and when (ms).
    pub action: Option<(Action, u64)>,
    /// Flags raised, with when (ms), most recent last (at most 8 kept).
    pub flags: Vec<(Flag, u64)>,
    /// Records per active hour, usually (moving average).
    pub usual: f64,
    /// Active hours seen.
    pub active_hours: u32,
    /// The current hour (its start, ms) and its records.
    hour: (u64, u64),
    /// The hour (start, ms) of the last baseline flag.
    flagged_hour: Option<u64>,
    /// When activity outside working hours was last flagged (ms).
    outside_flagged_ms: Option<u64>,
}

/// The accounts of one tenant.
#[derive(Debug)]
pub struct Book {
    ledger: Ledger,
    accounts: HashMap<AccountId, Account>,
    capacity: usize,
    baseline: Option<Baseline>,
    /// The median usual volume of the named accounts, and when it was computed (ms).
    peers: Option<f64>,
    peers_at_ms: Option<u64>,
}

impl Book {
    /// A book of at most `capacity` accounts.
    pub fn new(capacity: usize) -> Self {
        Self {
            ledger: Ledger::new(capacity),
            accounts: HashMap::new(),
            capacity: capacity.max(1),
            baseline: None,
            peers: None,
            peers_at_ms: None,
        }
    }

    /// Flags accounts far above their usual volume or their peers' (`None`: off).
    pub fn set_baseline(&mut self, baseline: Option<Baseline>) {
        self.baseline = baseline;
    }

    /// The peers' median usual volume, when enough accounts have one.
    pub fn peers_usual(&self) -> Option<f64> {
        self.peers
    }

    fn update_peers(&mut self, now_ms: u64) {
        if self
            .peers_at_ms
            .is_some_and(|at| now_ms.saturating_sub(at) < PEERS_EVERY_MS)
        {
            return;
        }
        self.peers_at_ms = Some(now_ms);
        let min_hours = self.baseline.map_or(u32::MAX, |b| b.min_hours);
        let mut usual: Vec<f64> = self
            .accounts
            .values()
            .filter(|a| matches!(a.who, Who::Named(_)) && a.active_hours >= min_hours)
            .map(|a| a.usual)
            .collect();
        self.peers = (usual.len() >= MIN_PEERS).then(|| {
            let mid = usual.len() / 2;
            *usual.select_nth_unstable_by(mid, f64::total_cmp).1
        });
    }

    /// The account's standing before a request on `scope` (a route) with its `budgets`:
    /// suspended, over a budget (the strongest action of the budgets it is over), or within
    /// them. Counts nothing.
    pub fn standing(
        &mut self,
        account: AccountId,
        scope: u64,
        budgets: &[Budget],
        now_ms: u64,
    ) -> Verdict {
        if self.ledger.is_suspended(account) {
            return Verdict::Suspended;
        }
        // An account the ledger does not count has taken nothing (asking would make it an
        // entry). The ledger, not the descriptions (bounded apart), decides.
        if !self.ledger.counts(account, scope) {
            return Verdict::Within;
        }
        self.ledger.take(account, scope, 0, budgets, now_ms)
    }

    /// Whether `account` is suspended.
    pub fn is_suspended(&self, account: AccountId) -> bool {
        self.ledger.is_suspended(account)
    }

    /// Counts what an answer took out against `budgets`.
    pub fn record(&mut self, visit: &Visit<'_>, budgets: &[Budget], now_ms: u64) -> Outcome {
        if !self.accounts.contains_key(&visit.account) && self.accounts.len() >= self.capacity {
            self.forget_oldest();
        }
        let account = self
            .accounts
            .entry(visit.account)
            .or_insert_with(|| Account {
                who: visit.who,
                label: visit.label.map(Box::from),
                first_ms: now_ms,
                last_ms: now_ms,
                answers: 0,
                records: 0,
                pii: [0; Kind::COUNT],
                distinct_ids: Distinct::new(8),
                prefixes: Vec::new(),
                fingerprint: visit.fingerprint,
                action: None,
                flags: Vec::new(),
                usual: 0.0,
                active_hours: 0,
                hour: (now_ms - now_ms % HOUR_MS, 0),
                flagged_hour: None,
                outside_flagged_ms: None,
            });
        let mut flags = Vec::new();
        // The hour rolls: the last one's volume joins the usual volume.
        let hour = now_ms - now_ms % HOUR_MS;
        if account.hour.0 != hour {
            let (_, last) = account.hour;
            if last > 0 {
                account.usual = if account.active_hours == 0 {
                    last as f64
                } else {
                    account.usual * (1.0 - USUAL_WEIGHT) + last as f64 * USUAL_WEIGHT
                };
                account.active_hours += 1;
            }
            account.hour = (hour, 0);
        }
        account.hour.1 += visit.records;
        if let (Some(b), Who::Named(_)) = (self.baseline, visit.who) {
            let floor = b.min_records as f64;
            let now_hour = account.hour.1 as f64;
            let flagged = account.flagged_hour == Some(hour);
            if !flagged
                && account.active_hours >= b.min_hours
                && now_hour > b.factor * account.usual.max(floor)
            {
                flags.push(Flag::AboveUsual);
            }
            if let Some(peers) = self.peers {
                if !flagged && now_hour > b.factor * peers.max(floor) {
                    flags.push(Flag::AbovePeers);
                }
            }
            if flags
                .iter()
                .any(|f| matches!(f, Flag::AboveUsual | Flag::AbovePeers))
            {
                account.flagged_hour = Some(hour);
            }
        }
        let in_session =
            account.answers > 0 && now_ms.saturating_sub(account.last_ms) < SESSION_GAP_MS;
        if in_session && visit.fingerprint != account.fingerprint {
            flags.push(Flag::NewFingerprint);
        }
        account.fingerprint = visit.fingerprint;
        // Outside working hours: flagged once per session.
        if visit.outside_hours
            && matches!(visit.who, Who::Named(_))
            && account
                .outside_flagged_ms
                .is_none_or(|at| now_ms.saturating_sub(at) >= SESSION_GAP_MS)
        {
            flags.push(Flag::OutsideHours);
        }
        if visit.outside_hours {
            account.outside_flagged_ms = Some(now_ms);
        }
        let known = account
            .prefixes
            .iter()
            .position(|(p, _)| &**p == visit.prefix);
        if known.is_none()
            && account
                .prefixes
                .iter()
                .any(|(_, at)| now_ms.saturating_sub(*at) < TWO_PLACES_MS)
            && matches!(visit.who, Who::Named(_))
        {
            flags.push(Flag::TwoPlaces);
        }
        match known {
            Some(i) => {
                let mut entry = account.prefixes.remove(i);
                entry.1 = now_ms;
                account.prefixes.insert(0, entry);
            }
            None => {
                account
                    .prefixes
                    .insert(0, (Box::from(visit.prefix), now_ms));
                account.prefixes.truncate(PREFIXES_KEPT);
            }
        }
        account.last_ms = now_ms;
        account.answers += 1;
        account.records += visit.records;
        for (sum, n) in account.pii.iter_mut().zip(visit.pii) {
            *sum += n;
        }
        if let Some(id) = visit.record_id {
            account.distinct_ids.insert(id);
        }
        if account.label.is_none() {
            account.label = visit.label.map(Box::from);
        }
        for flag in &flags {
            if account.flags.len() == 8 {
                account.flags.remove(0);
            }
            account.flags.push((*flag, now_ms));
        }
        let verdict = self
            .ledger
            .take(visit.account, visit.scope, visit.records, budgets, now_ms);
        let reached = match verdict {
            Verdict::Over { action, .. } => Some(action),
            Verdict::Suspended => Some(Action::Suspend),
            Verdict::Within => None,
        };
        let longest = budgets.iter().map(|b| b.window_ms).max().unwrap_or(0);
        let crossed = match (reached, account.action) {
            (None, _) => false,
            (Some(now), Some((before, at))) => now > before || now_ms.saturating_sub(at) > longest,
            (Some(_), None) => true,
        };
        if crossed {
            account.action = reached.map(|a| (a, now_ms));
        }
        if self.baseline.is_some() {
            self.update_peers(now_ms);
        }
        Outcome {
            verdict,
            crossed,
            flags,
        }
    }

    /// Records another node saw `account` take on `scope` (cluster mode), against
    /// `budgets`.
    pub fn take_remote(
        &mut self,
        account: AccountId,
        scope: u64,
        records: u64,
        budgets: &[Budget],
        now_ms: u64,
    ) {
        self.ledger.add(account, scope, records, budgets, now_ms);
    }

    /// Suspends `account` (an operator's decision); `false` when it already was.
    pub fn suspend(&mut self, account: AccountId) -> bool {
        self.ledger.suspend(account)
    }

    /// Lifts a suspension; `false` when the account was not suspended.
    pub fn lift(&mut self, account: AccountId) -> bool {
        let lifted = self.ledger.lift(account);
        if lifted {
            if let Some(a) = self.accounts.get_mut(&account) {
                a.action = None;
            }
        }
        lifted
    }

    /// One account.
    pub fn get(&self, account: AccountId) -> Option<&Account> {
        self.accounts.get(&account)
    }

    /// The accounts described, in no order.
    pub fn accounts(&self) -> impl Iterator<Item = (AccountId, &Account)> {
        self.accounts.iter().map(|(id, a)| (*id, a))
    }

    /// Suspended accounts (some may no longer be described).
    pub fn suspended(&self) -> impl Iterator<Item = AccountId> + '_ {
        self.ledger.suspended()
    }

    /// Accounts described.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether no account is described.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Forgets the least recently active eighth of the accounts (never a suspended one).
    fn forget_oldest(&mut self) {
        let mut last: Vec<u64> = self
            .accounts
            .iter()
            .filter(|(id, _)| !self.ledger.is_suspended(**id))
            .map(|(_, a)| a.last_ms)
            .collect();
        if last.is_empty() {
            return;
        }
        let n = (last.len() / 8).max(1).min(last.len() - 1);
        let (_, cut, _) = last.select_nth_unstable(n);
        let cut = *cut;
        let ledger = &self.ledger;
        self.accounts
            .retain(|id, a| a.last_ms > cut || ledger.is_suspended(*id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    fn budgets() -> [Budget; 2] {
        [
            Budget {
                window_ms: HOUR,
                limit: 100,
                action: Action::Block,
            },
            Budget {
                window_ms: 24 * HOUR,
                limit: 300,
                action: Action::Suspend,
            },
        ]
    }

    fn visit(account: u64, prefix: &str, records: u64) -> Visit<'_> {
        Visit {
            account: AccountId(account),
            scope: 0,
            who: Who::Named("basic"),
            label: Some("agent"),
            prefix,
            fingerprint: 1,
            records,
            pii: [0; Kind::COUNT],
            record_id: None,
            outside_hours: false,
        }
    }

    #[test]
    fn a_block_is_crossed_once_then_stands_until_the_window_moves_on() {
        let mut book = Book::new(100);
        let b = budgets();
        let mut t = 1_000;
        for _ in 0..5 {
            let o = book.record(&visit(1, "192.0.2.0/24", 20), &b, t);
            assert_eq!(o.verdict, Verdict::Within);
            t += 1_000;
        }
        assert_eq!(book.standing(AccountId(1), 0, &b, t), Verdict::Within);
        let o = book.record(&visit(1, "192.0.2.0/24", 20), &b, t);
        assert!(
            o.crossed
                && matches!(
                    o.verdict,
                    Verdict::Over {
                        action: Action::Block,
                        ..
                    }
                )
        );
        let again = book.record(&visit(1, "192.0.2.0/24", 1), &b, t + 1);
        assert!(!again.crossed, "logged once per crossing");
        assert!(matches!(
            book.standing(AccountId(1), 0, &b, t + 2),
            Verdict::Over {
                action: Action::Block,
                ..
            }
        ));
        assert_eq!(
            book.standing(AccountId(2), 0, &b, t),
            Verdict::Within,
            "others unaffected"
        );
        // Two hours later the hourly window has moved on.
        assert_eq!(
            book.standing(AccountId(1), 0, &b, t + 2 * HOUR),
            Verdict::Within
        );
        assert_eq!(book.get(AccountId(1)).unwrap().records, 121);
    }

    #[test]
    fn suspension_holds_until_lifted() {
        let mut book = Book::new(100);
        let b = budgets();
        let mut t = 0;
        let mut outcome = None;
        for _ in 0..4 {
            // 80 records every 1h10: never over the hourly budget, over the daily at 320.
            outcome = Some(book.record(&visit(7, "192.0.2.0/24", 80), &b, t));
            t += 70 * 60_000;
        }
        assert!(outcome.unwrap().crossed);
        assert_eq!(
            book.standing(AccountId(7), 0, &b, t + 48 * HOUR),
            Verdict::Suspended
        );
        assert!(book.lift(AccountId(7)));
        assert!(!book.lift(AccountId(7)));
        assert_eq!(
            book.standing(AccountId(7), 0, &b, t + 48 * HOUR),
            Verdict::Within
        );
        assert!(book.suspend(AccountId(9)));
        assert_eq!(book.standing(AccountId(9), 0, &b, t), Verdict::Suspended);
    }

    #[test]
    fn a_second_place_and_a_new_fingerprint_mid_session_are_flagged() {
        let mut book = Book::new(100);
        let b = budgets();
        assert!(book
            .record(&visit(1, "192.0.2.0/24", 1), &b, 0)
            .flags
            .is_empty());
        assert!(book
            .record(&visit(1, "192.0.2.0/24", 1), &b, 60_000)
            .flags
            .is_empty());
        let o = book.record(&visit(1, "198.51.100.0/24", 1), &b, 120_000);
        assert_eq!(o.flags, [Flag::TwoPlaces]);
        let mut other = visit(1, "198.51.100.0/24", 1);
        other.fingerprint = 2;
        assert_eq!(
            book.record(&other, &b, 180_000).flags,
            [Flag::NewFingerprint]
        );
        // The next day, from home, with another browser: a new session, nothing unusual.
        let mut home = visit(1, "203.0.113.0/24", 1);
        home.fingerprint = 3;
        assert!(book.record(&home, &b, 24 * HOUR).flags.is_empty());
        assert_eq!(
            book.get(AccountId(1)).unwrap().prefixes[0].0.as_ref(),
            "203.0.113.0/24"
        );
    }

    #[test]
    fn activity_outside_working_hours_is_flagged_once_per_session() {
        let mut book = Book::new(100);
        let b = budgets();
        let mut late = visit(4, "192.0.2.0/24", 1);
        late.outside_hours = true;
        assert_eq!(book.record(&late, &b, 0).flags, [Flag::OutsideHours]);
        assert!(book.record(&late, &b, 10 * 60_000).flags.is_empty());
        assert!(book
            .record(&visit(4, "192.0.2.0/24", 1), &b, 11 * 60_000)
            .flags
            .is_empty());
        // The next night.
        assert_eq!(
            book.record(&late, &b, 24 * HOUR).flags,
            [Flag::OutsideHours]
        );
    }

    #[test]
    fn a_blocked_account_stays_blocked_when_its_description_is_forgotten() {
        let mut book = Book::new(64);
        let b = budgets();
        book.record(&visit(1, "p", 150), &b, 0);
        assert!(matches!(
            book.standing(AccountId(1), 0, &b, 1),
            Verdict::Over {
                action: Action::Block,
                ..
            }
        ));
        book.accounts.clear();
        assert!(matches!(
            book.standing(AccountId(1), 0, &b, 2),
            Verdict::Over {
                action: Action::Block,
                ..
            }
        ));
    }

    #[test]
    fn the_book_stays_bounded_and_keeps_suspended_accounts() {
        let mut book = Book::new(64);
        let b = budgets();
        book.suspend(AccountId(0));
        book.record(&visit(0, "p", 1), &b, 0);
        for i in 1..10_000u64 {
            book.record(&visit(i, "p", 1), &b, i);
        }
        assert!(book.len() <= 64, "{}", book.len());
        assert!(book.get(AccountId(0)).is_some());
        assert!(book.get(AccountId(9_999)).is_some());
    }
}
