//! Once a second, the sampler reads every tenant's signals and pools, makes the `Report` of
//! what happened in that second, and hands it to each consumer (the status pages' detector
//! first). It also gives the metrics registry its sources of values computed on scrape
//! (heavy hitters, component states, delivery counts).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Gateway, Generation};
use crate::signals::{Consumer, PoolReport, Report, TenantReport, Totals};

/// How often the signals are read.
const EVERY: Duration = Duration::from_secs(1);

/// Reads the signals every second until `shutdown`, for `consumers`.
pub fn spawn(
    gateway: &Arc<Gateway>,
    consumers: Vec<Arc<dyn Consumer>>,
    shutdown: CancellationToken,
) {
    let weak = Arc::downgrade(gateway);
    tokio::spawn(async move {
        let mut last = Previous::default();
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(gateway) = weak.upgrade() else {
                return;
            };
            let report = last.report(&gateway.current());
            for consumer in &consumers {
                consumer.on_report(&report);
            }
        }
    });
}

/// The totals read at the previous tick, to report differences. Keyed by the address of
/// what they were read from: pools and signals are rebuilt or carried over on reload.
#[derive(Default)]
struct Previous {
    pools: HashMap<usize, [u64; 3]>,
    tenants: HashMap<usize, Totals>,
    /// Requests per route, by the address of the route's counters.
    routes: HashMap<usize, u64>,
    gateway: Totals,
    /// The local day of the last report.
    day: i64,
    /// The 10-minute window of the last report.
    window: i64,
}

impl Previous {
    /// This second's report; remembers the totals for the next one.
    fn report(&mut self, generation: &Generation) -> Report {
        let now_ms = crate::clock::now_ms();
        // Days in the town's zone: the sets of client prefixes turn at local midnight.
        let unix_s = crate::clock::unix_now();
        let zone = generation.config.status.time_zone;
        let local_s = unix_s as i64 + i64::from(zone.offset_minutes(unix_s)) * 60;
        let day = local_s.div_euclid(86_400);
        let window = local_s.div_euclid(600);
        if self.day == 0 {
            (self.day, self.window) = (day, window);
        }
        let mut pools_seen = HashMap::new();
        let mut routes_seen = HashMap::new();
        let mut tenants_seen = HashMap::new();
        let tenants = generation
            .config
            .tenants
            .iter()
            .enumerate()
            .map(|(ti, _)| {
                let signals = &generation.signals[ti];
                let key = Arc::as_ptr(signals) as usize;
                let now = signals.totals();
                let before = self.tenants.get(&key).copied().unwrap_or_default();
                tenants_seen.insert(key, now);
                let pools = generation.pools[ti]
                    .iter()
                    .map(|pool| {
                        let key = Arc::as_ptr(pool) as usize;
                        let totals = pool.outcomes.totals();
                        let before = self.pools.get(&key).copied().unwrap_or([0; 3]);
                        pools_seen.insert(key, totals);
                        PoolReport {
                            requests: totals[0].saturating_sub(before[0]),
                            failures: totals[1].saturating_sub(before[1]),
                            slow: totals[2].saturating_sub(before[2]),
                            servers: pool.servers.len() as u32,
                            available: pool
                                .servers
                                .iter()
                                .filter(|sv| sv.is_available(now_ms))
                                .count() as u32,
                            queued: pool.admission.as_ref().map_or(0, |g| g.snapshot().queued),
                        }
                    })
                    .collect();
                let key = generation.tenant_keys[ti];
                let top = |list: Vec<crate::shield::top::Hitter>| -> Vec<(String, f64)> {
                    list.into_iter()
                        .filter(|h| h.tenant == key)
                        .take(10)
                        .map(|h| (h.client, h.rate))
                        .collect()
                };
                if day != self.day {
                    signals.turn_day();
                }
                if window != self.window {
                    signals.turn_window();
                }
                TenantReport {
                    totals: now.since(&before),
                    pools,
                    distinct_sources: signals.take_distinct_sources(),
                    top_sources: top(generation.shield.top_prefixes.list(now_ms)),
                    top_fingerprints: top(generation.shield.top_fingerprints.list(now_ms)),
                    fingerprints: signals.take_fingerprints(),
                    top_paths: signals.take_top_paths(10),
                    routes: generation.route_counters[ti]
                        .iter()
                        .map(|counters| {
                            let key = counters.as_ptr() as usize;
                            let total: u64 = counters.iter().map(|c| c.get()).sum();
                            let before = self.routes.get(&key).copied().unwrap_or(total);
                            routes_seen.insert(key, total);
                            total.saturating_sub(before)
                        })
                        .collect(),
                }
            })
            .collect();
        let gateway_now = generation.gateway_signals.totals();
        let report = Report {
            at_unix_ms: crate::clock::unix_now_ms(),
            config: generation.config.clone(),
            tenants,
            gateway: gateway_now.since(&self.gateway),
        };
        self.pools = pools_seen;
        self.tenants = tenants_seen;
        self.routes = routes_seen;
        self.gateway = gateway_now;
        self.day = day;
        self.window = window;
        report
    }
}

/// Gives the metrics registry the values it computes on scrape: the heaviest prefixes, the
/// status components' states and the notifier's delivery counts.
pub fn register_metric_sources(gw: &Arc<Gateway>) {
    let weak = Arc::downgrade(gw);
    let _ = gw.metrics.top_source.set(Box::new(move || {
        let Some(gw) = weak.upgrade() else {
            return Vec::new();
        };
        let generation = gw.current();
        let now = crate::clock::now_ms();
        generation
            .shield
            .top_prefixes
            .list(now)
            .into_iter()
            .filter_map(|h| {
                let tenant = generation.tenant_id_of(h.tenant)?.to_owned();
                Some((
                    crate::metrics::TopLabels {
                        tenant,
                        prefix: h.client,
                    },
                    h.rate,
                ))
            })
            .collect()
    }));
    let weak = Arc::downgrade(gw);
    let _ = gw.metrics.status_source.set(Box::new(move || {
        let Some(gw) = weak.upgrade() else {
            return (Vec::new(), Vec::new());
        };
        let status = gw.current().status.clone();
        let components = status
            .component_states()
            .into_iter()
            .map(|(tenant, component, state)| {
                (
                    crate::metrics::ComponentLabels { tenant, component },
                    i64::from(state.severity()),
                )
            })
            .collect();
        let d = status
            .deliveries
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        let label = |kind, result| crate::metrics::DeliveryLabels { kind, result };
        let deliveries = vec![
            (label("mail", "ok"), d.mails_sent),
            (label("mail", "failed"), d.mails_failed),
            (label("webhook", "ok"), d.webhooks_delivered),
            (label("webhook", "failed"), d.webhooks_failed),
        ];
        (components, deliveries)
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::LocalReason;

    #[tokio::test]
    async fn reports_what_happened_since_the_last_tick() {
        let gw = super::super::test_gateway(&super::super::test_tenant("ville", "ville.test", ""));
        let generation = gw.current();
        let mut previous = Previous::default();
        generation.signals[0].request(Some(LocalReason::Challenge));
        let first = previous.report(&generation);
        assert_eq!(first.tenants[0].totals.requests, 1);
        assert_eq!(first.tenants[0].pools[0].servers, 1);
        generation.signals[0].request(None);
        generation.signals[0].request(None);
        // Two requests on the route (their status classes: 2xx, 4xx).
        generation.route_counters[0][0][2].inc();
        generation.route_counters[0][0][4].inc();
        let second = previous.report(&generation);
        assert_eq!(second.tenants[0].totals.requests, 2);
        assert_eq!(second.tenants[0].routes, [2]);
        assert_eq!(previous.report(&generation).tenants[0].routes, [0]);
        assert_eq!(second.tenants[0].totals.local(LocalReason::Challenge), 0);
    }
}
