//! Upstream pools: servers with their live state (in flight, health, passive ejection) and
//! the two balancing algorithms (smooth weighted round robin, weighted least outstanding).
//! Selection is lock-free: round robin walks a precomputed weighted schedule.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::Authority;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::config::runtime::{Balance, HealthSpec, PoolSpec};

/// One upstream server and its live state.
#[derive(Debug)]
pub struct UpstreamServer {
    /// `host:port`.
    pub address: String,
    /// Parsed authority for request URIs.
    pub authority: Authority,
    /// Weight.
    pub weight: u32,
    inflight: AtomicU32,
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
    active_healthy: AtomicBool,
    probe_successes: AtomicU32,
    probe_failures: AtomicU32,
    healthy_gauge: Gauge,
    /// Idle keep-alive connections to this server.
    pub idle: super::client::IdlePool,
}

impl UpstreamServer {
    fn new(address: &str, weight: u32, healthy_gauge: Gauge) -> Option<Self> {
        let authority = address.parse::<Authority>().ok()?;
        healthy_gauge.set(1);
        Some(Self {
            address: address.to_owned(),
            authority,
            weight,
            inflight: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            active_healthy: AtomicBool::new(true),
            probe_successes: AtomicU32::new(0),
            probe_failures: AtomicU32::new(0),
            healthy_gauge,
            idle: super::client::IdlePool::default(),
        })
    }

    /// Whether the server is in rotation at `now_ms`.
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.active_healthy.load(Ordering::Relaxed)
            && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// Requests in flight.
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    fn refresh_gauge(&self, now_ms: u64) {
        self.healthy_gauge.set(i64::from(self.is_available(now_ms)));
    }

    /// Records a request outcome for passive ejection.
    pub fn record_request(&self, ok: bool, health: &HealthSpec, now_ms: u64) {
        if ok {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            return;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if health.passive_failures > 0 && failures >= health.passive_failures {
            let until =
                now_ms + u64::try_from(health.passive_eject.as_millis()).unwrap_or(u64::MAX / 2);
            self.ejected_until_ms.store(until, Ordering::Relaxed);
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.healthy_gauge.set(0);
            tracing::warn!(server = %self.address, failures, "upstream server ejected after consecutive failures");
        }
    }

    /// Records an active probe result; returns `Some(new_state)` when availability flipped.
    pub fn record_probe(&self, ok: bool, health: &HealthSpec, now_ms: u64) -> Option<bool> {
        let before = self.is_available(now_ms);
        if ok {
            self.probe_failures.store(0, Ordering::Relaxed);
            let s = self.probe_successes.fetch_add(1, Ordering::Relaxed) + 1;
            if s >= health.healthy_threshold {
                self.active_healthy.store(true, Ordering::Relaxed);
                // A passing probe also ends a passive ejection.
                self.ejected_until_ms.store(0, Ordering::Relaxed);
            }
        } else {
            self.probe_successes.store(0, Ordering::Relaxed);
            let f = self.probe_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if f >= health.unhealthy_threshold {
                self.active_healthy.store(false, Ordering::Relaxed);
            }
        }
        self.refresh_gauge(now_ms);
        let after = self.is_available(now_ms);
        (before != after).then_some(after)
    }
}

/// Counts a request in flight on a server until dropped; also holds the request's admission
/// slot, so the slot is freed when the response body is done.
#[derive(Debug)]
pub struct InflightGuard(Arc<UpstreamServer>, Option<crate::shield::gate::Permit>);

impl InflightGuard {
    /// Starts counting.
    pub fn new(server: Arc<UpstreamServer>) -> Self {
        server.inflight.fetch_add(1, Ordering::Relaxed);
        Self(server, None)
    }

    /// Keeps `permit` until this guard is dropped.
    pub fn hold(&mut self, permit: Option<crate::shield::gate::Permit>) {
        self.1 = permit;
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pool of upstream servers.
#[derive(Debug)]
pub struct Pool {
    /// Tenant id.
    pub tenant: String,
    /// Configuration.
    pub spec: PoolSpec,
    /// Servers, in configuration order.
    pub servers: Vec<Arc<UpstreamServer>>,
    schedule: Vec<usize>,
    cursor: AtomicUsize,
    /// Response-head latency histogram.
    pub latency: Histogram,
    /// Retries on another server.
    pub retries: prometheus_client::metrics::counter::Counter,
    /// Admission gate (adaptive concurrency limit + priority queue), unless disabled.
    pub admission: Option<Arc<crate::shield::gate::Admission>>,
    /// Shed counters by priority class (`Priority as usize`).
    pub shed: [prometheus_client::metrics::counter::Counter; 3],
    /// Upstream exchanges finished, failed (no answer, timeout, 5xx) and slow, for the
    /// status page's detector (read as deltas by `pipeline::sampler`).
    pub outcomes: Outcomes,
}

/// Running counts of a pool's upstream exchanges.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Exchanges finished (answered or failed).
    pub finished: AtomicU64,
    /// Of which failed: no answer, timeout or a 5xx status.
    pub failed: AtomicU64,
    /// Of which slower than the status page's threshold.
    pub slow: AtomicU64,
}

impl Outcomes {
    /// Counts one exchange.
    pub fn record(&self, failed: bool, slow: bool) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Current totals (finished, failed, slow).
    pub fn totals(&self) -> [u64; 3] {
        [
            self.finished.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.slow.load(Ordering::Relaxed),
        ]
    }
}

/// Builds the smooth weighted round-robin order (nginx's algorithm) for `weights`.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += i64::from(*w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

impl Pool {
    /// Builds a pool, reusing live server state from `previous` for unchanged servers.
    pub fn build(
        tenant: &str,
        spec: &PoolSpec,
        previous: Option<&Pool>,
        metrics: &crate::metrics::Metrics,
    ) -> Self {
        let servers: Vec<Arc<UpstreamServer>> = spec
            .servers
            .iter()
            .filter_map(|s| {
                let reused = previous.and_then(|p| {
                    p.servers
                        .iter()
                        .find(|old| old.address == s.address && old.weight == s.weight)
                        .cloned()
                });
                reused.or_else(|| {
                    let gauge = metrics
                        .upstream_healthy
                        .get_or_create(&crate::metrics::ServerLabels {
                            tenant: tenant.to_owned(),
                            pool: spec.name.clone(),
                            server: s.address.clone(),
                        })
                        .clone();
                    UpstreamServer::new(&s.address, s.weight, gauge).map(Arc::new)
                })
            })
            .collect();
        let weights: Vec<u32> = servers.iter().map(|s| s.weight).collect();
        let latency = metrics
            .upstream_latency
            .get_or_create(&crate::metrics::PoolLabels {
                tenant: tenant.to_owned(),
                pool: spec.name.clone(),
            })
            .clone();
        let retries = metrics
            .upstream_retries
            .get_or_create(&crate::metrics::PoolLabels {
                tenant: tenant.to_owned(),
                pool: spec.name.clone(),
            })
            .clone();
        let labels = crate::metrics::PoolLabels {
            tenant: tenant.to_owned(),
            pool: spec.name.clone(),
        };
        // The gate (its queue, its learned limit) survives a reload that keeps its settings.
        let admission = (spec.admission.max_concurrency > 0).then(|| {
            previous
                .and_then(|p| p.admission.clone())
                .filter(|a| a.settings == spec.admission)
                .unwrap_or_else(|| {
                    crate::shield::gate::Admission::new(
                        spec.admission,
                        metrics.admission_limit.get_or_create(&labels).clone(),
                        metrics.admission_queued.get_or_create(&labels).clone(),
                    )
                })
        });
        let shed = crate::shield::admission::Priority::ALL.map(|p| {
            metrics
                .admission_shed
                .get_or_create(&crate::metrics::ShedLabels {
                    tenant: tenant.to_owned(),
                    pool: spec.name.clone(),
                    priority: p.name(),
                })
                .clone()
        });
        Self {
            admission,
            shed,
            outcomes: Outcomes::default(),
            retries,
            tenant: tenant.to_owned(),
            spec: spec.clone(),
            schedule: smooth_schedule(&weights),
            servers,
            cursor: AtomicUsize::new(0),
            latency,
        }
    }

    /// Picks a server, skipping unavailable ones and `exclude`. When every server is out of
    /// rotation it still returns one (panic routing): trying beats refusing outright.
    pub fn pick(
        &self,
        now_ms: u64,
        exclude: Option<&Arc<UpstreamServer>>,
    ) -> Option<Arc<UpstreamServer>> {
        let usable = |s: &Arc<UpstreamServer>| exclude.is_none_or(|e| !Arc::ptr_eq(e, s));
        let chosen = match self.spec.balance {
            Balance::RoundRobin => self.pick_round_robin(now_ms, &usable),
            Balance::LeastOutstanding => self.pick_least_outstanding(now_ms, &usable),
        };
        chosen.or_else(|| {
            // Panic routing: nobody is healthy; rotate over the non-excluded servers.
            let n = self.servers.len();
            let start = self.cursor.fetch_add(1, Ordering::Relaxed);
            (0..n)
                .map(|i| &self.servers[(start + i) % n])
                .find(|s| usable(s))
                .cloned()
        })
    }

    /// Where to start looking: the next slot for a first attempt; the current one for a retry
    /// (`usable` excludes a server), so retries do not skew the rotation.
    fn next_start(&self, usable: &dyn Fn(&Arc<UpstreamServer>) -> bool) -> usize {
        let retrying = self.servers.iter().any(|s| !usable(s));
        if retrying {
            self.cursor.load(Ordering::Relaxed)
        } else {
            self.cursor.fetch_add(1, Ordering::Relaxed)
        }
    }

    fn pick_round_robin(
        &self,
        now_ms: u64,
        usable: &dyn Fn(&Arc<UpstreamServer>) -> bool,
    ) -> Option<Arc<UpstreamServer>> {
        let n = self.schedule.len();
        if n == 0 {
            return None;
        }
        let start = self.next_start(usable);
        (0..n)
            .map(|i| &self.servers[self.schedule[(start + i) % n]])
            .find(|s| s.is_available(now_ms) && usable(s))
            .cloned()
    }

    fn pick_least_outstanding(
        &self,
        now_ms: u64,
        usable: &dyn Fn(&Arc<UpstreamServer>) -> bool,
    ) -> Option<Arc<UpstreamServer>> {
        // Rotate the starting point so ties spread evenly.
        let n = self.servers.len();
        let start = self.next_start(usable);
        (0..n)
            .map(|i| &self.servers[(start + i) % n])
            .filter(|s| s.is_available(now_ms) && usable(s))
            .min_by_key(|s| (u64::from(s.inflight()) * 1000) / u64::from(s.weight.max(1)))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::runtime::ServerSpec;
    use std::time::Duration;

    fn spec(balance: Balance, weights: &[u32]) -> PoolSpec {
        PoolSpec {
            name: "web".into(),
            balance,
            servers: weights
                .iter()
                .enumerate()
                .map(|(i, w)| ServerSpec {
                    address: format!("127.0.0.1:{}", 1000 + i),
                    weight: *w,
                })
                .collect(),
            health: HealthSpec {
                path: None,
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                healthy_threshold: 2,
                unhealthy_threshold: 2,
                passive_failures: 3,
                passive_eject: Duration::from_secs(10),
            },
            admission: crate::shield::admission::AdmissionSettings {
                max_concurrency: 0,
                min_concurrency: 1,
                queue_size: 0,
                queue_timeout: Duration::from_secs(1),
            },
        }
    }

    #[test]
    fn smooth_schedule_interleaves() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weighted_round_robin_respects_weights() {
        let m = crate::metrics::Metrics::default();
        let pool = Pool::build("t", &spec(Balance::RoundRobin, &[3, 1]), None, &m);
        let mut counts = [0; 2];
        for _ in 0..400 {
            let s = pool.pick(0, None).unwrap();
            counts[if s.address.ends_with("1000") { 0 } else { 1 }] += 1;
        }
        assert_eq!(counts, [300, 100]);
    }

    #[test]
    fn passive_ejection_and_exclusion() {
        let m = crate::metrics::Metrics::default();
        let sp = spec(Balance::RoundRobin, &[1, 1]);
        let pool = Pool::build("t", &sp, None, &m);
        let first = pool.servers[0].clone();
        for _ in 0..3 {
            first.record_request(false, &sp.health, 100);
        }
        assert!(!first.is_available(100));
        for _ in 0..10 {
            assert!(!Arc::ptr_eq(&pool.pick(100, None).unwrap(), &first));
        }
        // Back after the ejection period.
        assert!(first.is_available(100 + 10_000));
        // Exclusion picks the other one.
        let other = pool.pick(20_000, Some(&first)).unwrap();
        assert!(!Arc::ptr_eq(&other, &first));
    }

    #[test]
    fn probes_need_thresholds() {
        let m = crate::metrics::Metrics::default();
        let sp = spec(Balance::LeastOutstanding, &[1]);
        let pool = Pool::build("t", &sp, None, &m);
        let s = &pool.servers[0];
        assert_eq!(s.record_probe(false, &sp.health, 0), None);
        assert_eq!(s.record_probe(false, &sp.health, 0), Some(false));
        assert_eq!(s.record_probe(true, &sp.health, 0), None);
        assert_eq!(s.record_probe(true, &sp.health, 0), Some(true));
    }

    #[test]
    fn least_outstanding_prefers_idle() {
        let m = crate::metrics::Metrics::default();
        let pool = Pool::build("t", &spec(Balance::LeastOutstanding, &[1, 1]), None, &m);
        let _busy = InflightGuard::new(pool.servers[0].clone());
        for _ in 0..5 {
            assert!(Arc::ptr_eq(&pool.pick(0, None).unwrap(), &pool.servers[1]));
        }
    }
}
