//! Reminders about certificates that end: each tenant's certificate (a file the operator
//! renews, or one from the ACME authority whose renewal keeps failing) is told to operators
//! through the alert channels 14, 7, 3 and 1 days before it ends and once it has ended,
//! once per stage, and then once more when a new certificate has replaced it. Pure: the
//! caller passes the certificates served now and the time.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::level::Level;

/// Days before the end at which operators are told.
pub const STAGES_DAYS: [u64; 4] = [14, 7, 3, 1];

/// A certificate served now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Tenant id.
    pub tenant: String,
    /// The host names it covers.
    pub hosts: Vec<String>,
    /// End of validity, Unix seconds.
    pub not_after_s: u64,
    /// Whether it comes from the ACME authority (renewed by Rempart) or a file.
    pub acme: bool,
}

/// What is told about a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// It ends within one of `STAGES_DAYS`.
    Expiring,
    /// It has ended: browsers refuse the site.
    Expired,
    /// A new certificate replaced one that was told about.
    Renewed,
}

/// One reminder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminder {
    /// What is told.
    pub kind: Kind,
    /// Tenant id.
    pub tenant: String,
    /// Host names.
    pub hosts: Vec<String>,
    /// End of validity, Unix seconds (the new one for `Renewed`).
    pub not_after_s: u64,
    /// Whole days left (0 on the last day, negative once ended).
    pub days_left: i64,
    /// From the ACME authority.
    pub acme: bool,
    /// How urgent: orange from 14 days, rouge from 3 days and once ended; for `Renewed`,
    /// the level the last reminder had (so the same channels hear the all-clear).
    pub level: Level,
}

/// What was told, per tenant: the certificate (its end) and the stage reached.
#[derive(Debug, Default)]
pub struct Reminders {
    told: HashMap<String, (u64, usize)>,
}

/// The stage of a certificate ending at `not_after_s` at `now_s`: 0 before 14 days, then
/// one more per stage of `STAGES_DAYS`, and `STAGES_DAYS.len() + 1` once ended.
fn stage(not_after_s: u64, now_s: u64) -> usize {
    if now_s >= not_after_s {
        return STAGES_DAYS.len() + 1;
    }
    let left = not_after_s - now_s;
    STAGES_DAYS
        .iter()
        .filter(|days| left <= *days * 86_400)
        .count()
}

fn level_of(stage: usize) -> Level {
    if stage >= 3 {
        Level::Rouge
    } else {
        Level::Orange
    }
}

impl Reminders {
    /// The reminders due at `now_s` for the certificates `served` now (each stage told
    /// once per certificate; tenants no longer served are forgotten).
    pub fn check(&mut self, served: &[Served], now_s: u64) -> Vec<Reminder> {
        let mut out = Vec::new();
        for cert in served {
            let now_stage = stage(cert.not_after_s, now_s);
            let days_left = if now_s >= cert.not_after_s {
                -(((now_s - cert.not_after_s) / 86_400) as i64) - 1
            } else {
                ((cert.not_after_s - now_s) / 86_400) as i64
            };
            let reminder = |kind, level| Reminder {
                kind,
                tenant: cert.tenant.clone(),
                hosts: cert.hosts.clone(),
                not_after_s: cert.not_after_s,
                days_left,
                acme: cert.acme,
                level,
            };
            match self.told.get(&cert.tenant).copied() {
                Some((end, told)) if end != cert.not_after_s => {
                    // Another certificate: the all-clear when the last one was told about
                    // and this one is not due itself.
                    if told > 0 && now_stage == 0 {
                        out.push(reminder(Kind::Renewed, level_of(told)));
                    }
                    if now_stage > 0 {
                        out.push(reminder(
                            expiring_or_expired(now_stage),
                            level_of(now_stage),
                        ));
                    }
                }
                Some((_, told)) if now_stage > told => {
                    out.push(reminder(
                        expiring_or_expired(now_stage),
                        level_of(now_stage),
                    ));
                }
                Some(_) => {}
                None if now_stage > 0 => {
                    out.push(reminder(
                        expiring_or_expired(now_stage),
                        level_of(now_stage),
                    ));
                }
                None => {}
            }
            let told = self.told.get(&cert.tenant).copied();
            let keep = match told {
                Some((end, told)) if end == cert.not_after_s => told.max(now_stage),
                _ => now_stage,
            };
            self.told
                .insert(cert.tenant.clone(), (cert.not_after_s, keep));
        }
        self.told
            .retain(|tenant, _| served.iter().any(|c| &c.tenant == tenant));
        out
    }
}

fn expiring_or_expired(stage: usize) -> Kind {
    if stage > STAGES_DAYS.len() {
        Kind::Expired
    } else {
        Kind::Expiring
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn served(not_after_s: u64) -> Vec<Served> {
        vec![Served {
            tenant: "ville".into(),
            hosts: vec!["ville.fr".into()],
            not_after_s,
            acme: false,
        }]
    }

    #[test]
    fn each_stage_is_told_once_then_the_end_then_the_renewal() {
        let mut r = Reminders::default();
        let end = 100 * DAY;
        // Far from the end: nothing.
        assert!(r.check(&served(end), 50 * DAY).is_empty());
        // 13 days left: the 14-day reminder, once.
        let told = r.check(&served(end), 87 * DAY);
        assert_eq!(told.len(), 1);
        assert_eq!(
            (told[0].kind, told[0].days_left, told[0].level),
            (Kind::Expiring, 13, Level::Orange)
        );
        assert!(r.check(&served(end), 87 * DAY + 3_600).is_empty());
        // Straight to 2 days left (the gateway was down meanwhile): one reminder, rouge.
        let told = r.check(&served(end), 98 * DAY);
        assert_eq!(told.len(), 1);
        assert_eq!((told[0].days_left, told[0].level), (2, Level::Rouge));
        assert!(r.check(&served(end), 98 * DAY + 60).is_empty());
        // Half an hour before the end: the last day (0 whole days left).
        let told = r.check(&served(end), end - 1_800);
        assert_eq!((told[0].kind, told[0].days_left), (Kind::Expiring, 0));
        // Ended.
        let told = r.check(&served(end), end + 10);
        assert_eq!((told[0].kind, told[0].days_left), (Kind::Expired, -1));
        assert!(r.check(&served(end), end + 20).is_empty());
        // A new certificate for 90 days: the all-clear, at the level of the last reminder.
        let told = r.check(&served(end + 90 * DAY), end + DAY);
        assert_eq!(told.len(), 1);
        assert_eq!(
            (told[0].kind, told[0].level, told[0].not_after_s),
            (Kind::Renewed, Level::Rouge, end + 90 * DAY)
        );
        assert!(r.check(&served(end + 90 * DAY), end + 2 * DAY).is_empty());
    }

    #[test]
    fn a_renewal_nobody_was_told_about_is_not_told_and_a_short_one_is_told_at_once() {
        let mut r = Reminders::default();
        assert!(r.check(&served(100 * DAY), 10 * DAY).is_empty());
        // Renewed long before any reminder: nothing to say.
        assert!(r.check(&served(190 * DAY), 20 * DAY).is_empty());
        // Replaced by a certificate that itself ends in 5 days: its reminder at once.
        let told = r.check(&served(25 * DAY), 20 * DAY);
        assert_eq!(told.len(), 1);
        assert_eq!((told[0].kind, told[0].days_left), (Kind::Expiring, 5));
        // A tenant removed is forgotten: back with the same certificate, told again.
        assert!(r.check(&[], 21 * DAY).is_empty());
        assert_eq!(r.check(&served(25 * DAY), 21 * DAY).len(), 1);
    }
}
