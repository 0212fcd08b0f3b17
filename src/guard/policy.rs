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
}

/// A guarded route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteGuard {
    /// Budgets per account (empty: personal data is only scanned, nothing is counted per
    /// account).
    pub budgets: Vec<Budget>,
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
        !self.budgets.is_empty()
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
    fn records_are_the_largest_count_not_the_sum() {
        let mut g = RouteGuard {
            budgets: Vec::new(),
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
