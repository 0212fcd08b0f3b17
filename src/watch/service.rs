//! The watch at work: once a second, each tenant's signals (`signals::Report`) become an
//! observation, assessed against the tenant's baseline for that hour of the week; the level
//! machine moves, and every change is logged with its evidence and shown in
//! `rempart_watch_level{tenant}`. The baseline learns only while the level is at most jaune.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::assess::{assess, Observation, Thresholds};
use super::baseline::{hour_of_week, Baseline};
use super::level::{Change, Level, Machine, Pace};
use crate::metrics::{Metrics, TenantLabels};
use crate::signals::{Consumer, LocalReason, Report};

/// Seconds the request rate is averaged over.
const RATE_WINDOW: usize = 10;

/// One tenant's watch.
struct TenantWatch {
    machine: Machine,
    /// The evidence of the last assessment that asked for more than green.
    last_reasons: Vec<super::assess::Reason>,
    baseline: Baseline,
    /// Requests of the last seconds, newest last.
    recent: std::collections::VecDeque<u64>,
    gauge: Gauge,
}

/// A tenant's watch as operators see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TenantStatus {
    /// Tenant id.
    pub tenant: String,
    /// Its level.
    pub level: Level,
    /// When an operator's level expires (unix ms), if one is set.
    pub override_until_ms: Option<u64>,
    /// The last evidence that asked for more than green.
    pub evidence: Vec<String>,
}

/// The watch of every tenant (a consumer of the sampler's reports).
pub struct WatchService {
    tenants: Mutex<HashMap<String, TenantWatch>>,
    levels: Family<TenantLabels, Gauge>,
    thresholds: Thresholds,
    pace: Pace,
}

impl WatchService {
    /// The watch, showing levels in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            tenants: Mutex::default(),
            levels: metrics.watch_level.clone(),
            thresholds: Thresholds::default(),
            pace: Pace::default(),
        }
    }

    /// Each tenant's state now, by id.
    pub fn status(&self) -> Vec<TenantStatus> {
        let tenants = self
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<TenantStatus> = tenants
            .iter()
            .map(|(id, t)| TenantStatus {
                tenant: id.clone(),
                level: t.machine.level(),
                override_until_ms: t.machine.override_until().map(|(_, until)| until),
                evidence: t.last_reasons.iter().map(evidence).collect(),
            })
            .collect();
        out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        out
    }

    /// An operator sets `tenant`'s level until `until_unix_ms`; `false` when the tenant has
    /// not been seen yet (its first second of signals makes it known).
    pub fn set_level(
        &self,
        tenant: &str,
        level: Level,
        until_unix_ms: u64,
        reason: &str,
        now_unix_ms: u64,
    ) -> bool {
        let mut tenants = self
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(watch) = tenants.get_mut(tenant) else {
            return false;
        };
        if let Some(change) = watch
            .machine
            .set_override(level, until_unix_ms, reason, now_unix_ms)
        {
            watch.gauge.set(change.to as i64);
            log_change(tenant, &change, &[]);
        }
        true
    }
}

impl Consumer for WatchService {
    fn on_report(&self, report: &Report) {
        let mut tenants = self
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let unix_s = report.at_unix_ms / 1000;
        let zone = report.config.status.time_zone;
        let local = unix_s as i64 + i64::from(zone.offset_minutes(unix_s)) * 60;
        let hour = hour_of_week(local);
        let now_ms = report.at_unix_ms;
        for (tenant, tr) in report.config.tenants.iter().zip(&report.tenants) {
            let watch = tenants
                .entry(tenant.id.clone())
                .or_insert_with(|| TenantWatch {
                    machine: Machine::new(self.pace),
                    last_reasons: Vec::new(),
                    baseline: Baseline::default(),
                    recent: std::collections::VecDeque::with_capacity(RATE_WINDOW),
                    gauge: self
                        .levels
                        .get_or_create(&TenantLabels {
                            tenant: tenant.id.clone(),
                        })
                        .clone(),
                });
            let t = &tr.totals;
            if watch.recent.len() == RATE_WINDOW {
                watch.recent.pop_front();
            }
            watch.recent.push_back(t.requests);
            let rate = watch.recent.iter().sum::<u64>() as f64 / RATE_WINDOW as f64;
            let answered = t.origin_answers + t.origin_failures;
            let obs = Observation {
                requests_per_s: rate,
                new_sources_share: 0.0,
                origin_errors_share: if answered == 0 {
                    0.0
                } else {
                    (t.origin_server_errors + t.origin_failures) as f64 / answered as f64
                },
                shed_per_s: t.sheds as f64,
                login_failures_per_s: 0.0,
                conn_trips_per_s: t.conn_trips.iter().sum::<u64>() as f64,
                guard_breaches: u32::try_from(t.local(LocalReason::Guarded)).unwrap_or(u32::MAX),
            };
            let assessment = assess(&obs, &watch.baseline, hour, &self.thresholds);
            if watch.machine.level() <= Level::Jaune && assessment.wanted <= Level::Jaune {
                // Only calm seconds teach what is usual.
                watch.baseline.learn(hour, t.requests as f64);
            }
            if !assessment.reasons.is_empty() {
                watch.last_reasons = assessment.reasons.clone();
            }
            if let Some(change) = watch.machine.observe(assessment.wanted, now_ms) {
                watch.gauge.set(change.to as i64);
                log_change(&tenant.id, &change, &assessment.reasons);
            }
        }
    }
}

/// A rule's evidence, for logs and operators.
fn evidence(r: &super::assess::Reason) -> String {
    format!(
        "{} {:.1} (usual {:.1}) -> {}",
        r.signal, r.value, r.usual, r.level
    )
}

fn log_change(tenant: &str, change: &Change, reasons: &[super::assess::Reason]) {
    let evidence: Vec<String> = reasons.iter().map(evidence).collect();
    tracing::warn!(
        target: "rempart::watch",
        tenant,
        from = %change.from,
        to = %change.to,
        cause = ?change.cause,
        evidence = %evidence.join("; "),
        "vigilance level changed"
    );
}
