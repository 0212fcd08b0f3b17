//! Heavy hitters: the clients with the highest request rates right now, in a small exact table
//! (k entries) fed by the sketch's estimates. Shown to operators (admin API) so they can see
//! who floods and ban them; never written to logs.

use std::sync::Mutex;

use crate::common::TenantKey;

/// Entries kept per dimension.
pub const TOP_K: usize = 32;

/// One heavy hitter.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hitter {
    /// Tenant key.
    #[serde(skip)]
    pub tenant: TenantKey,
    /// Tenant id (filled when listed).
    pub tenant_id: String,
    /// Address or prefix as text.
    pub client: String,
    /// Estimated requests over the last second when last seen.
    pub rate: f64,
    /// When it was last updated (ms since the process started).
    pub seen_ms: u64,
}

/// A bounded table of the highest rates.
#[derive(Debug, Default)]
pub struct TopTable {
    entries: Mutex<Vec<(TenantKey, u128, Hitter)>>,
}

impl TopTable {
    /// Records `rate` for `key`; keeps the `TOP_K` highest recent rates.
    pub fn record(
        &self,
        tenant: TenantKey,
        key: u128,
        label: impl FnOnce() -> String,
        rate: f64,
        now_ms: u64,
    ) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if let Some(e) = entries
            .iter_mut()
            .find(|(t, k, _)| *t == tenant && *k == key)
        {
            e.2.rate = rate;
            e.2.seen_ms = now_ms;
            return;
        }
        let hitter = Hitter {
            tenant,
            tenant_id: String::new(),
            client: label(),
            rate,
            seen_ms: now_ms,
        };
        if entries.len() < TOP_K {
            entries.push((tenant, key, hitter));
            return;
        }
        // Replace the weakest entry, counting entries not seen for 10 s as dead.
        let weakest = entries
            .iter()
            .enumerate()
            .min_by(|a, b| effective(&a.1 .2, now_ms).total_cmp(&effective(&b.1 .2, now_ms)))
            .map(|(i, e)| (i, effective(&e.2, now_ms)));
        if let Some((i, weakest_rate)) = weakest {
            if rate > weakest_rate {
                entries[i] = (tenant, key, hitter);
            }
        }
    }

    /// Current heavy hitters seen in the last 10 s, highest first.
    pub fn list(&self, now_ms: u64) -> Vec<Hitter> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        let mut out: Vec<Hitter> = entries
            .iter()
            .map(|e| e.2.clone())
            .filter(|h| effective(h, now_ms) > 0.0)
            .collect();
        out.sort_by(|a, b| b.rate.total_cmp(&a.rate));
        out
    }
}

fn effective(h: &Hitter, now_ms: u64) -> f64 {
    if now_ms.saturating_sub(h.seen_ms) > 10_000 {
        0.0
    } else {
        h.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_highest_and_forgets_the_stale() {
        let t = TopTable::default();
        for k in 0..100u32 {
            t.record(
                TenantKey(0),
                u128::from(k),
                || format!("c{k}"),
                f64::from(k),
                1_000,
            );
        }
        let top = t.list(1_000);
        assert_eq!(top.len(), TOP_K);
        assert_eq!(top[0].client, "c99");
        assert_eq!(top[TOP_K - 1].client, format!("c{}", 100 - TOP_K));
        // An update moves an existing entry, no duplicate.
        t.record(TenantKey(0), 50, || "c50".into(), 500.0, 2_000);
        assert_eq!(t.list(2_000)[0].client, "c50");
        // Ten seconds later only fresh entries show, and a small newcomer can take a stale slot.
        t.record(TenantKey(0), 1_000, || "new".into(), 1.0, 13_000);
        let later = t.list(13_000);
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].client, "new");
    }
}
