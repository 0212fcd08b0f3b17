//! The async admission gate of an upstream pool: at most `limit` requests go to the origin
//! at once (the limit adapts to the origin's latency, see `shield::admission`); the others
//! wait in a bounded priority queue for up to `queue_timeout`, verified clients first. A
//! request that cannot wait is shed (503). A slot is handed from a finishing request directly
//! to the best waiter, so the origin never sees more than the limit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::shield::admission::{ConcurrencyLimit, Priority, PriorityQueue, Pushed};

pub use crate::shield::admission::AdmissionSettings;

struct State {
    in_flight: usize,
    limit: ConcurrencyLimit,
    // A granted slot travels to its waiter as a `Permit`: if the waiter is gone by then (its
    // client hung up), dropping the permit in the channel gives the slot back.
    queue: PriorityQueue<oneshot::Sender<Permit>>,
}

/// One pool's gate (kept across reloads while its settings do not change).
pub struct Admission {
    state: Mutex<State>,
    /// Its settings.
    pub settings: AdmissionSettings,
    limit_gauge: Gauge,
    queued_gauge: Gauge,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Admission({:?})", self.settings)
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The queue was full of requests at least as important.
    QueueFull,
    /// A more important request took its place in the queue.
    Evicted,
    /// It waited `queue_timeout` without a slot.
    Timeout,
}

/// A slot at the origin, released when dropped (hand-off to the next waiter).
pub struct Permit {
    gate: Arc<Admission>,
    /// Whether dropping this permit gives a slot back (false for one that never got out).
    armed: bool,
    /// How long the request waited in the queue for this slot.
    pub waited: Duration,
    started: Instant,
    in_flight_at_start: usize,
    sampled: bool,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Permit")
    }
}

/// A snapshot for the admin API and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Current limit.
    pub limit: usize,
    /// Requests at the origin.
    pub in_flight: usize,
    /// Requests waiting.
    pub queued: usize,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding this lock cannot leave the counters half-updated in a way that
    // matters more than refusing all traffic would.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Admission {
    /// A gate with `settings`, reporting its limit and queue length on the given gauges.
    pub fn new(settings: AdmissionSettings, limit_gauge: Gauge, queued_gauge: Gauge) -> Arc<Self> {
        limit_gauge.set(i64::from(settings.max_concurrency));
        Arc::new(Self {
            limit_gauge,
            queued_gauge,
            state: Mutex::new(State {
                in_flight: 0,
                limit: ConcurrencyLimit::new(settings.min_concurrency, settings.max_concurrency),
                queue: PriorityQueue::new(settings.queue_size),
            }),
            settings,
        })
    }

    /// A wait in the queue longer than this means the origin is saturated: the tenant is
    /// under pressure (auto-challenge starts) before anything has to be shed. A tenth of the
    /// queue timeout, at least 20 ms.
    pub fn pressure_wait(&self) -> Duration {
        (self.settings.queue_timeout / 10).max(Duration::from_millis(20))
    }

    /// Sheds every waiter worse than `p` at once (they get `Shed::Evicted`): used when the
    /// tenant comes under pressure, so that clients without a pass are challenged now instead
    /// of waiting behind the flood.
    pub fn shed_below(&self, p: Priority) -> usize {
        let mut s = lock(&self.state);
        let shed = s.queue.drain_below(p).len();
        self.queued_gauge.set(s.queue.len() as i64);
        shed
    }

    /// Current numbers.
    pub fn snapshot(&self) -> Snapshot {
        let s = lock(&self.state);
        Snapshot {
            limit: s.limit.limit(),
            in_flight: s.in_flight,
            queued: s.queue.len(),
        }
    }

    fn permit(self: &Arc<Self>, in_flight: usize, waited: Duration) -> Permit {
        Permit {
            gate: self.clone(),
            armed: true,
            waited,
            started: Instant::now(),
            in_flight_at_start: in_flight,
            sampled: false,
        }
    }

    /// Waits for a slot, or says why the request is shed.
    pub async fn acquire(self: &Arc<Self>, priority: Priority) -> Result<Permit, Shed> {
        let mut rx = {
            let mut s = lock(&self.state);
            if s.in_flight < s.limit.limit() && s.queue.is_empty() {
                s.in_flight += 1;
                let n = s.in_flight;
                return Ok(self.permit(n, Duration::ZERO));
            }
            let (tx, rx) = oneshot::channel();
            if s.queue.len() >= self.settings.queue_size {
                // Waiters that gave up still hold places: clear them before shedding anyone.
                s.queue.retain(|w| !w.is_closed());
            }
            match s.queue.push(priority, tx) {
                Pushed::Queued => {}
                // Dropping the victim's sender wakes it with an error: it is shed.
                Pushed::Evicted(_victim) => {}
                Pushed::Refused(_) => return Err(Shed::QueueFull),
            }
            self.queued_gauge.set(s.queue.len() as i64);
            rx
        };
        let queued_at = Instant::now();
        let deadline = queued_at + self.settings.queue_timeout;
        let waited = |mut p: Permit| {
            p.waited = queued_at.elapsed();
            p.started = Instant::now();
            p.sampled = false;
            p
        };
        match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(Ok(permit)) => Ok(waited(permit)),
            Ok(Err(_)) => Err(Shed::Evicted),
            Err(_) => {
                // A slot may have been handed over just as the wait ended: take it then.
                rx.close();
                match rx.try_recv() {
                    Ok(permit) => Ok(waited(permit)),
                    Err(_) => Err(Shed::Timeout),
                }
            }
        }
    }

    fn release(self: &Arc<Self>, sample: Option<(f64, usize)>) {
        let mut s = lock(&self.state);
        if let Some((rtt_ms, in_flight)) = sample {
            s.limit.on_sample(rtt_ms, in_flight, crate::clock::now_ms());
        }
        s.in_flight = s.in_flight.saturating_sub(1);
        while s.in_flight < s.limit.limit() {
            let Some((_, waiter)) = s.queue.pop() else {
                break;
            };
            s.in_flight += 1;
            let n = s.in_flight;
            let mut permit = self.permit(n, Duration::ZERO);
            // Not a latency sample unless its waiter takes it (see `acquire`).
            permit.sampled = true;
            if let Err(mut unsent) = waiter.send(permit) {
                // The waiter gave up before this slot reached it: the slot stays free (and
                // the permit must not give it back a second time).
                unsent.armed = false;
                s.in_flight -= 1;
            }
        }
        self.queued_gauge.set(s.queue.len() as i64);
        self.limit_gauge.set(s.limit.limit() as i64);
    }
}

impl Permit {
    /// Records the origin's response-head latency for the adaptive limit.
    pub fn sample(&mut self) {
        if self.sampled {
            return;
        }
        self.sampled = true;
        let rtt = self.started.elapsed().as_secs_f64() * 1000.0;
        let mut s = lock(&self.gate.state);
        s.limit
            .on_sample(rtt, self.in_flight_at_start, crate::clock::now_ms());
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // A request that failed before its head arrived still frees its slot; its latency
        // (a timeout, a refused connection) is also a signal.
        let sample = (!self.sampled).then(|| {
            (
                self.started.elapsed().as_secs_f64() * 1000.0,
                self.in_flight_at_start,
            )
        });
        self.gate.release(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: u32, queue: usize) -> Arc<Admission> {
        Admission::new(
            AdmissionSettings {
                max_concurrency: max,
                min_concurrency: max,
                queue_size: queue,
                queue_timeout: Duration::from_secs(5),
            },
            Gauge::default(),
            Gauge::default(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn slots_go_to_the_best_waiter_and_never_exceed_the_limit() {
        let g = gate(1, 4);
        let first = g.acquire(Priority::Unknown).await.unwrap();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        for (p, name) in [
            (Priority::Suspicious, "suspicious"),
            (Priority::Unknown, "unknown"),
            (Priority::Verified, "verified"),
        ] {
            let g = g.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let permit = g.acquire(p).await;
                done.send((name, permit.is_ok())).unwrap();
                // Hold the slot a little so order is observable.
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(permit);
            });
        }
        // Let the three queue up.
        while g.snapshot().queued < 3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(g.snapshot().in_flight, 1);
        drop(first);
        let mut order = Vec::new();
        for _ in 0..3 {
            let (name, ok) = done_rx.recv().await.unwrap();
            assert!(ok);
            assert!(g.snapshot().in_flight <= 1);
            order.push(name);
        }
        assert_eq!(order, ["verified", "unknown", "suspicious"]);
        // The last holder keeps its slot 10 ms (virtual time), then the gate is empty.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(g.snapshot().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_leaves_gives_its_slot_back() {
        let g = gate(1, 8);
        let held = g.acquire(Priority::Unknown).await.unwrap();
        // Two waiters queue; the first gives up (its client hung up) while queued.
        let g1 = g.clone();
        let leaver = tokio::spawn(async move { g1.acquire(Priority::Unknown).await.map(|_| ()) });
        let g2 = g.clone();
        let stayer = tokio::spawn(async move { g2.acquire(Priority::Unknown).await.is_ok() });
        while g.snapshot().queued < 2 {
            tokio::task::yield_now().await;
        }
        leaver.abort();
        let _ = leaver.await;
        drop(held);
        assert!(stayer.await.unwrap());
        // Every slot came back: nothing leaked, whatever the interleaving.
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(g.snapshot().in_flight, 0);
        for _ in 0..100 {
            let p = g.acquire(Priority::Unknown).await.unwrap();
            let g3 = g.clone();
            let w = tokio::spawn(async move { g3.acquire(Priority::Unknown).await.map(|_| ()) });
            while g.snapshot().queued < 1 {
                tokio::task::yield_now().await;
            }
            // The slot is handed to the waiter and the waiter disappears at once.
            drop(p);
            w.abort();
            let _ = w.await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(g.snapshot().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_sheds_and_waits_time_out() {
        let g = Admission::new(
            AdmissionSettings {
                max_concurrency: 1,
                min_concurrency: 1,
                queue_size: 1,
                queue_timeout: Duration::from_millis(100),
            },
            Gauge::default(),
            Gauge::default(),
        );
        let _held = g.acquire(Priority::Verified).await.unwrap();
        let g2 = g.clone();
        let waiting = tokio::spawn(async move { g2.acquire(Priority::Suspicious).await.err() });
        while g.snapshot().queued < 1 {
            tokio::task::yield_now().await;
        }
        // Queue full: another suspicious request is refused at once...
        assert_eq!(
            g.acquire(Priority::Suspicious).await.err(),
            Some(Shed::QueueFull)
        );
        // ... a verified one evicts the waiting suspicious one, then times out itself.
        let verified = g.acquire(Priority::Verified).await.err();
        assert_eq!(waiting.await.unwrap(), Some(Shed::Evicted));
        assert_eq!(verified, Some(Shed::Timeout));
        assert_eq!(g.snapshot().in_flight, 1);
    }
}
