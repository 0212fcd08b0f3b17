//! What the configuration says the guard does: per tenant, who is asking (account sources);
//! per route, what counts as a record, the budgets, and what to do with personal data.

use std::time::Duration;

use http::HeaderName;

use super::account::Source;
use super::answer::PiiPolicy;
use super::budget::Budget;
use super::ids::IdTemplate;

/// A tenant's account sources.
#[derive(Debug, Default)]
pub struct TenantGuard {
    /// Read in order, the first present deciding.
    pub sources: Vec<Source>,
    /// A field of the origin's answer naming the account (stripped before the client sees
    /// it); read when no request source named one.
    pub origin_account: Option<HeaderName>,
    /// The learned baseline (`None`: off).
    pub baseline: Option<super::book::Baseline>,
    /// The working hours (`None`: activity at any hour is ordinary).
    pub office_hours: Option<OfficeHours>,
    /// Account groups by account name (`jdupont` -> `superviseurs`).
    pub groups: std::collections::HashMap<String, String>,
    /// A field set by the single sign-on naming the account's groups (comma-separated),
    /// read only from trusted proxies.
    pub group_header: Option<HeaderName>,
}

impl TenantGuard {
    /// The slot of `route`'s budgets for an account (`RouteGuard::budgets_in`): its first
    /// group that has budgets on the route, from the single sign-on's field (when the request
    /// comes from a trusted proxy), then from the groups by name; 0 (the route's own budgets)
    /// otherwise.
    pub fn budget_slot(
        &self,
        route: &RouteGuard,
        label: Option<&str>,
        headers: &http::HeaderMap,
        trusted: bool,
    ) -> usize {
        if route.group_budgets.is_empty() {
            return 0;
        }
        let from_header = self
            .group_header
            .as_ref()
            .filter(|_| trusted)
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(str::trim);
        let by_name = label.and_then(|l| self.groups.get(l)).map(String::as_str);
        from_header
            .chain(by_name)
            .find_map(|g| route.group_budgets.iter().position(|(name, _)| name == g))
            .map_or(0, |i| i + 1)
    }
}

/// Working hours: days of the week and a time range, in the local time of the gateway's
/// configured time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfficeHours {
    /// Monday first.
    days: [bool; 7],
    /// Minutes after midnight: from (inclusive), to (exclusive).
    from_min: u16,
    to_min: u16,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl OfficeHours {
    /// Parses `mon-fri 07:30-19:00` (days: one, a range, or a list with commas:
    /// `mon,wed,fri`); `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint = "write days then hours, for example \"mon-fri 07:30-19:00\"";
        let (days_text, hours_text) = text
            .trim()
            .rsplit_once(' ')
            .ok_or_else(|| format!("`{text}`: {hint}"))?;
        let day = |d: &str| {
            DAYS.iter()
                .position(|x| x.eq_ignore_ascii_case(d.trim()))
                .ok_or_else(|| format!("`{d}` is not a day (mon, tue, wed, thu, fri, sat, sun)"))
        };
        let mut days = [false; 7];
        for part in days_text.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    if a > b {
                        return Err(format!(
                            "`{part}`: the first day comes before the last (mon-fri)"
                        ));
                    }
                    days[a..=b].iter_mut().for_each(|d| *d = true);
                }
                None => days[day(part)?] = true,
            }
        }
        let minute = |t: &str| -> Result<u16, String> {
            let (h, m) = t
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("`{t}` is not a time (07:30)"))?;
            let (h, m): (u16, u16) = (
                h.parse().map_err(|_| format!("`{t}` is not a time"))?,
                m.parse().map_err(|_| format!("`{t}` is not a time"))?,
            );
            if h > 24 || m > 59 || (h == 24 && m > 0) {
                return Err(format!("`{t}` is not a time of day"));
            }
            Ok(h * 60 + m)
        };
        let (a, b) = hours_text
            .trim()
            .split_once('-')
            .ok_or_else(|| format!("`{hours_text}`: {hint}"))?;
        let (from_min, to_min) = (minute(a)?, minute(b)?);
        if from_min >= to_min {
            return Err(format!("`{hours_text}`: the start comes before the end"));
        }
        Ok(Self {
            days,
            from_min,
            to_min,
        })
    }

    /// Whether local time `minute_of_day` on `weekday` (0 = Monday) is within the hours.
    pub fn contains(&self, weekday: usize, minute_of_day: u16) -> bool {
        self.days.get(weekday).copied().unwrap_or(false)
            && (self.from_min..self.to_min).contains(&minute_of_day)
    }

    /// Whether the local time of `local_s` (seconds since the epoch, shifted to local time)
    /// is within the hours.
    pub fn contains_local(&self, local_s: i64) -> bool {
        let days = local_s.div_euclid(86_400);
        // 1970-01-01 was a Thursday (3, Monday first).
        let weekday = (days + 3).rem_euclid(7) as usize;
        let minute = (local_s.rem_euclid(86_400) / 60) as u16;
        self.contains(weekday, minute)
    }
}

/// A guarded route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteGuard {
    /// Budgets per account (empty, with no group budgets: personal data is only scanned,
    /// nothing is counted per account).
    pub budgets: Vec<Budget>,
    /// Budgets of the accounts of a group instead of `budgets` (advisers, supervisors, batch
    /// accounts).
    pub group_budgets: Vec<(String, Vec<Budget>)>,
    /// A field of the origin's answer giving its record count (stripped).
    pub record_header: Option<HeaderName>,
    /// The path of the JSON array whose elements are the answer's records.
    pub json_records: Option<String>,
    /// Templates of the paths that open one record (`/dossiers/{id}`).
    pub record_ids: Vec<IdTemplate>,
    /// Count the persons whose personal data the answer shows as records.
    pub count_persons: bool,
    /// What to do with personal data.
    pub pii: PiiPolicy,
    /// Delay of each answer while over a `slow` budget.
    pub slow_delay: Duration,
}

impl RouteGuard {
    /// Whether accounts are counted on this route.
    pub fn counts_accounts(&self) -> bool {
        !self.budgets.is_empty() || !self.group_budgets.is_empty()
    }

    /// The budgets of slot `slot` (`TenantGuard::budget_slot`): 0 the route's own, then its
    /// groups' in order.
    pub fn budgets_in(&self, slot: usize) -> &[Budget] {
        match slot.checked_sub(1).and_then(|i| self.group_budgets.get(i)) {
            Some((_, budgets)) => budgets,
            None => &self.budgets,
        }
    }

    /// Whether the answers' bodies are read (JSON records or personal data).
    pub fn reads_body(&self) -> bool {
        self.json_records.is_some() || self.pii.scan
    }

    /// The records one answer carried: the most any counter says (each counter measures the
    /// same records another way; adding them would count a record twice). A record opened
    /// by its identifier counts at least one.
    pub fn records(
        &self,
        header: Option<u64>,
        json: Option<u64>,
        opened: bool,
        persons: u64,
    ) -> u64 {
        let persons = if self.count_persons { persons } else { 0 };
        header
            .unwrap_or(0)
            .max(json.unwrap_or(0))
            .max(u64::from(opened))
            .max(persons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn office_hours_are_parsed_and_matched_in_local_time() {
        let h = OfficeHours::parse("mon-fri 07:30-19:00").unwrap();
        assert!(h.contains(0, 7 * 60 + 30) && h.contains(4, 18 * 60 + 59));
        assert!(!h.contains(0, 7 * 60 + 29) && !h.contains(2, 19 * 60));
        assert!(!h.contains(5, 10 * 60) && !h.contains(6, 10 * 60));
        let some = OfficeHours::parse("mon,wed , sat 08:00-12:00").unwrap();
        assert!(some.contains(5, 9 * 60) && !some.contains(1, 9 * 60));
        // 2026-12-07 was a Monday; 10:00 local.
        let monday_10 = 1_796_601_600 + 10 * 3600;
        assert!(h.contains_local(monday_10));
        assert!(!h.contains_local(monday_10 + 5 * 86_400), "Saturday");
        for bad in [
            "mon-fri",
            "fri-mon 08:00-12:00",
            "mon 12:00-08:00",
            "lun 08:00-12:00",
            "mon 8h-12h",
        ] {
            assert!(OfficeHours::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_are_the_largest_count_not_the_sum() {
        let mut g = RouteGuard {
            budgets: Vec::new(),
            group_budgets: Vec::new(),
            record_header: None,
            json_records: None,
            record_ids: Vec::new(),
            count_persons: false,
            pii: PiiPolicy::default(),
            slow_delay: Duration::ZERO,
        };
        assert_eq!(g.records(Some(20), Some(20), false, 20), 20);
        assert_eq!(g.records(None, None, true, 0), 1);
        assert_eq!(
            g.records(None, Some(0), false, 7),
            0,
            "persons only when asked"
        );
        g.count_persons = true;
        assert_eq!(g.records(None, Some(3), false, 7), 7);
    }
}
