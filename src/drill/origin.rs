//! An origin of limited capacity for drills and the flood benchmark: `workers` requests are
//! served at once, each taking `service` time; the others wait at the origin, as they would
//! in a PHP-FPM or Tomcat pool. It counts what reaches it (legitimate or attack, from the
//! drill's `x-drill` header), its peak concurrency and queue, and the busiest second, and
//! reports them on `GET /__drill/stats` (`POST /__drill/reset` zeroes them).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What the origin saw.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize, Clone, PartialEq, Eq)]
pub struct OriginStats {
    /// Requests served.
    pub served: u64,
    /// Of which marked as attack traffic.
    pub attack: u64,
    /// Of the attack, what bots behind the residents' shared addresses sent.
    #[serde(default)]
    pub attack_shared: u64,
    /// Of which marked as legitimate traffic.
    pub legit: u64,
    /// Highest number of requests inside the origin at once (being served or waiting).
    pub peak_concurrency: u64,
    /// Highest number waiting for a worker.
    pub peak_queue: u64,
    /// Most requests served in one wall-clock second.
    pub peak_per_second: u64,
    /// Capacity: workers x (1 s / service time), requests per second.
    pub capacity_per_second: u64,
    /// Workers.
    pub workers: u64,
}

#[derive(Default)]
struct Counters {
    served: AtomicU64,
    attack: AtomicU64,
    attack_shared: AtomicU64,
    legit: AtomicU64,
    inside: AtomicU64,
    peak_inside: AtomicU64,
    waiting: AtomicU64,
    peak_waiting: AtomicU64,
    second: AtomicU64,
    this_second: AtomicU64,
    peak_second: AtomicU64,
}

struct Origin {
    workers: Arc<Semaphore>,
    worker_count: u64,
    service: Duration,
    c: Counters,
    started: std::time::Instant,
}

fn bump_peak(peak: &AtomicU64, value: u64) {
    peak.fetch_max(value, Ordering::Relaxed);
}

/// Counts one request in a gauge while alive (also when the client goes away mid-request and
/// the handler is dropped).
struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    fn enter(counter: &'a AtomicU64, peak: &AtomicU64, over: u64) -> Self {
        let now = counter.fetch_add(1, Ordering::Relaxed) + 1;
        bump_peak(peak, now.saturating_sub(over));
        Self(counter)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Origin {
    fn stats(&self) -> OriginStats {
        let c = &self.c;
        let per_worker = 1000 / self.service.as_millis().max(1) as u64;
        OriginStats {
            served: c.served.load(Ordering::Relaxed),
            attack: c.attack.load(Ordering::Relaxed),
            attack_shared: c.attack_shared.load(Ordering::Relaxed),
            legit: c.legit.load(Ordering::Relaxed),
            peak_concurrency: c.peak_inside.load(Ordering::Relaxed),
            peak_queue: c.peak_waiting.load(Ordering::Relaxed),
            peak_per_second: c
                .peak_second
                .load(Ordering::Relaxed)
                .max(c.this_second.load(Ordering::Relaxed)),
            capacity_per_second: self.worker_count * per_worker,
            workers: self.worker_count,
        }
    }

    fn reset(&self) {
        let c = &self.c;
        for a in [
            &c.served,
            &c.attack,
            &c.attack_shared,
            &c.legit,
            &c.peak_inside,
            &c.peak_waiting,
            &c.peak_second,
            &c.this_second,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }

    fn count_second(&self) {
        let c = &self.c;
        let now = self.started.elapsed().as_secs();
        let cur = c.second.load(Ordering::Relaxed);
        if now != cur
            && c.second
                .compare_exchange(cur, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let last = c.this_second.swap(0, Ordering::Relaxed);
            bump_peak(&c.peak_second, last);
        }
        c.this_second.fetch_add(1, Ordering::Relaxed);
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = req.uri().path();
        if path == "/__drill/stats" {
            let body = serde_json::to_vec(&self.stats()).unwrap_or_default();
            return Ok(Response::new(Full::new(Bytes::from(body))));
        }
        if path == "/__drill/reset" {
            self.reset();
            return Ok(Response::new(Full::new(Bytes::from_static(b"{}"))));
        }
        let c = &self.c;
        let inside = Gauge::enter(&c.inside, &c.peak_inside, 0);
        // Waiting = no worker free when the request arrived.
        let permit = match self.workers.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                let _waiting = Gauge::enter(&c.waiting, &c.peak_waiting, 0);
                match self.workers.acquire().await {
                    Ok(p) => p,
                    Err(_) => return Ok(Response::new(Full::new(Bytes::new()))),
                }
            }
        };
        tokio::time::sleep(self.service).await;
        drop(permit);
        drop(inside);
        c.served.fetch_add(1, Ordering::Relaxed);
        self.count_second();
        match req.headers().get("x-drill").map(|v| v.as_bytes()) {
            Some(b"attack") => c.attack.fetch_add(1, Ordering::Relaxed),
            Some(b"attack-shared") => {
                c.attack_shared.fetch_add(1, Ordering::Relaxed);
                c.attack.fetch_add(1, Ordering::Relaxed)
            }
            Some(b"legit") => c.legit.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let body = if path.starts_with("/static/") {
            Bytes::from_static(b"body{color:#1b1b1b}\n")
        } else {
            Bytes::from_static(
                b"<!doctype html><html lang=\"fr\"><title>Ville</title><h1>Bienvenue</h1><p>hello from the drill origin</p></html>\n",
            )
        };
        let mut resp = Response::new(Full::new(body));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        Ok(resp)
    }
}

/// Serves the drill origin on `listener` until the process ends.
pub async fn serve(listener: TcpListener, workers: usize, service: Duration) {
    let origin = Arc::new(Origin {
        workers: Arc::new(Semaphore::new(workers.max(1))),
        worker_count: workers.max(1) as u64,
        service,
        c: Counters::default(),
        started: std::time::Instant::now(),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let origin = origin.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| origin.clone().handle(req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds `address` (loopback only) and serves.
pub async fn run(address: SocketAddr, workers: usize, service: Duration) -> anyhow::Result<()> {
    super::require_loopback(address.ip())?;
    let listener = TcpListener::bind(address).await?;
    println!(
        "drill origin on http://{} ({workers} workers x {} ms = {} requests/s)",
        listener.local_addr()?,
        service.as_millis(),
        workers as u128 * 1000 / service.as_millis().max(1)
    );
    serve(listener, workers, service).await;
    Ok(())
}
