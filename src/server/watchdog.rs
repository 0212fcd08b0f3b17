//! The per-connection watchdog: closes a downstream connection on which no byte moved for the
//! idle timeout, or whose next request head has not arrived within the header-read timeout
//! (slowloris, and HTTP/1.1 keep-alive connections left waiting).
//!
//! Requests only store coarse timestamps ([`ConnClock`]); the watchdog holds one timer per
//! connection and re-arms it only when it fires, so a busy keep-alive connection costs no
//! timer work per request (hyper's own header-read timer allocated and registered one per
//! request).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use crate::clock::coarse_now_ms;

/// `waiting_since` while requests are in flight.
const BUSY: u64 = u64::MAX;

/// What one downstream connection's watchdog reads: when a byte last moved, and since when
/// the connection has been waiting for a request head.
#[derive(Debug)]
pub struct ConnClock {
    activity: AtomicU64,
    waiting_since: AtomicU64,
    inflight: AtomicU32,
    multiplexed: AtomicBool,
    born: u64,
    /// A response was sent on it (or abandoned): the connection is no longer a newcomer.
    answered: AtomicBool,
    /// Chosen to make room for a newcomer from its address (see `evict`).
    evicted: AtomicBool,
    evict: tokio::sync::Notify,
}

/// What the watchdog decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing moved for the idle timeout: close gracefully.
    Idle,
    /// No complete request head within the header-read timeout: drop the connection.
    HeadTimeout,
    /// Look again at this time (milliseconds, same clock as the stamps).
    WaitUntil(u64),
}

impl crate::pipeline::RequestEnds for ConnClock {
    fn request_finished(&self) {
        ConnClock::request_finished(self);
    }
}

impl ConnClock {
    /// A connection that starts now, waiting for its first request head.
    pub fn new(now_ms: u64) -> Self {
        Self {
            activity: AtomicU64::new(now_ms),
            waiting_since: AtomicU64::new(now_ms),
            inflight: AtomicU32::new(0),
            multiplexed: AtomicBool::new(false),
            born: now_ms,
            answered: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            evict: tokio::sync::Notify::new(),
        }
    }

    /// When the connection was accepted.
    pub fn born(&self) -> u64 {
        self.born
    }

    /// Whether the connection may be closed to make room for a newcomer from its address: it
    /// has never been answered and waits for its first request head (a slowloris connection
    /// does; a resident's, once its first page is served, never again).
    pub fn evictable(&self) -> bool {
        !self.answered.load(Ordering::Relaxed)
            && !self.evicted.load(Ordering::Relaxed)
            && self.inflight.load(Ordering::Relaxed) == 0
            && !self.multiplexed.load(Ordering::Relaxed)
    }

    /// Closes the connection if it is `evictable` (its task sees `evicted` resolve); whether
    /// it was.
    pub fn evict(&self) -> bool {
        if !self.evictable() || self.evicted.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.evict.notify_one();
        true
    }

    /// Resolves once the connection was evicted.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// A byte moved.
    pub fn touch(&self) {
        self.activity.store(coarse_now_ms(), Ordering::Relaxed);
    }

    /// A request head arrived. HTTP/2 connections carry concurrent streams and have no head
    /// deadline between requests (their idle and keep-alive rules apply).
    pub fn request_started(&self, http2: bool) {
        if http2 && !self.multiplexed.load(Ordering::Relaxed) {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.waiting_since.store(BUSY, Ordering::Relaxed);
    }

    /// A response was sent completely (or abandoned): when it was the last one in flight, the
    /// connection waits for its next request head from now on.
    pub fn request_finished(&self) {
        if !self.answered.load(Ordering::Relaxed) {
            self.answered.store(true, Ordering::Relaxed);
        }
        if self.inflight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.waiting_since.store(coarse_now_ms(), Ordering::Relaxed);
        }
    }

    /// The decision at `now_ms` (pure: the stamps are read, nothing changes).
    pub fn check(&self, now_ms: u64, idle: Duration, head: Duration) -> Verdict {
        let idle_ms = millis(idle);
        let last = self.activity.load(Ordering::Relaxed);
        let idle_at = last.saturating_add(idle_ms);
        if now_ms >= idle_at {
            return Verdict::Idle;
        }
        let since = self.waiting_since.load(Ordering::Relaxed);
        let waiting = since != BUSY
            && self.inflight.load(Ordering::Relaxed) == 0
            && !self.multiplexed.load(Ordering::Relaxed);
        if waiting {
            let head_at = since.saturating_add(millis(head));
            if now_ms >= head_at {
                return Verdict::HeadTimeout;
            }
            return Verdict::WaitUntil(idle_at.min(head_at));
        }
        // While a request is in flight the head deadline may start any time; look again
        // within one head timeout so that it is enforced within twice its value at worst.
        Verdict::WaitUntil(idle_at.min(now_ms.saturating_add(millis(head))))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

/// Resolves when the connection must close: idle for `idle`, or waiting for a request head
/// longer than `head`.
pub async fn expired(clock: &ConnClock, idle: Duration, head: Duration) -> Verdict {
    loop {
        let now = coarse_now_ms();
        match clock.check(now, idle, head) {
            Verdict::WaitUntil(at) => {
                // The coarse clock runs up to ~20 ms behind; never spin on a near deadline.
                let wait = at.saturating_sub(now).max(25);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            verdict => return verdict,
        }
    }
}

/// Polls `inner` only on its first poll and after `inner` itself asked to be woken.
///
/// A connection's side signals (shutdown, request budget, watchdog timer) share the
/// connection's task; without this, every wake-up of the task (several per request) polls
/// each of them again, which costs lock and timer work for nothing.
pub struct OnlyWhenWoken<F> {
    inner: F,
    flag: Arc<WakeFlag>,
    waker: Waker,
    first: bool,
}

struct WakeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future + Unpin> OnlyWhenWoken<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        let flag = Arc::new(WakeFlag {
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        Self {
            inner,
            waker: Waker::from(flag.clone()),
            flag,
            first: true,
        }
    }
}

impl<F: Future + Unpin> Future for OnlyWhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.flag.task.register(cx.waker());
        if !this.first && !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.first = false;
        let mut inner_cx = Context::from_waker(&this.waker);
        Pin::new(&mut this.inner).poll(&mut inner_cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);
    const HEAD: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn only_a_connection_never_answered_and_waiting_for_its_head_can_be_evicted() {
        let silent = ConnClock::new(1_000);
        assert!(silent.evictable());
        assert!(silent.evict());
        assert!(!silent.evict(), "once");
        silent.evicted().await;
        let busy = ConnClock::new(1_000);
        busy.request_started(false);
        assert!(!busy.evictable() && !busy.evict());
        busy.request_finished();
        assert!(!busy.evictable(), "answered once: never again");
        let h2 = ConnClock::new(1_000);
        h2.request_started(true);
        h2.request_finished();
        assert!(!h2.evictable());
    }

    #[test]
    fn a_new_connection_must_send_its_head_in_time() {
        let c = ConnClock::new(1_000);
        assert_eq!(c.check(1_000, IDLE, HEAD), Verdict::WaitUntil(11_000));
        assert_eq!(c.check(10_999, IDLE, HEAD), Verdict::WaitUntil(11_000));
        assert_eq!(c.check(11_000, IDLE, HEAD), Verdict::HeadTimeout);
    }

    #[test]
    fn no_head_deadline_while_a_request_is_in_flight() {
        let c = ConnClock::new(1_000);
        c.request_started(false);
        // A slow upstream answer: nothing times out but idleness.
        assert_eq!(c.check(50_000, IDLE, HEAD), Verdict::WaitUntil(60_000));
        assert_eq!(c.check(61_000, IDLE, HEAD), Verdict::Idle);
    }

    #[test]
    fn the_next_head_is_awaited_from_the_end_of_the_response() {
        let c = ConnClock::new(1_000);
        c.request_started(false);
        c.request_finished();
        let since = c.waiting_since.load(Ordering::Relaxed);
        assert_ne!(since, BUSY);
        let now = since + 1;
        c.activity.store(now, Ordering::Relaxed);
        assert_eq!(c.check(now, IDLE, HEAD), Verdict::WaitUntil(since + 10_000));
        assert_eq!(c.check(since + 10_000, IDLE, HEAD), Verdict::HeadTimeout);
    }

    #[test]
    fn http2_connections_have_no_head_deadline_between_streams() {
        let c = ConnClock::new(1_000);
        c.request_started(true);
        c.request_started(true);
        c.request_finished();
        c.request_finished();
        c.activity.store(40_000, Ordering::Relaxed);
        assert_eq!(c.check(45_000, IDLE, HEAD), Verdict::WaitUntil(55_000));
        assert_eq!(c.check(100_000, IDLE, HEAD), Verdict::Idle);
    }

    #[tokio::test]
    async fn a_gated_future_is_polled_when_it_was_woken() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let polls = Arc::new(AtomicU32::new(0));
        let p = polls.clone();
        let mut notified = Box::pin(notify.clone().notified_owned());
        let mut gated = OnlyWhenWoken::new(Box::pin(std::future::poll_fn(move |cx| {
            p.fetch_add(1, Ordering::Relaxed);
            notified.as_mut().poll(cx).map(|()| "signalled")
        })));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        // Polled again without a wake-up of its own: the inner future is left alone.
        for _ in 0..5 {
            assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        notify.notify_one();
        assert_eq!(Pin::new(&mut gated).poll(&mut cx), Poll::Ready("signalled"));
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn idleness_wins_over_the_head_deadline() {
        let c = ConnClock::new(1_000);
        let head = Duration::from_secs(120);
        assert_eq!(c.check(61_000, IDLE, head), Verdict::Idle);
    }
}
