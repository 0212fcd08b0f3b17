//! Request bodies. `DownstreamBody` is the body as the server hands it over (none, or
//! hyper's stream), or as the gateway stored it (`buffer`); `RequestBody` reads it, enforcing
//! the route's size limit and the minimum data rate as bytes flow, counting bytes, and
//! showing each chunk to an optional `RequestTap`. The response side is `pipeline::body`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use tokio::time::{Instant, Sleep};

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The body grew past the route's limit.
    #[error("request body exceeds the configured limit")]
    TooLarge,
    /// The downstream connection failed.
    #[error("downstream body: {0}")]
    Downstream(#[from] hyper::Error),
    /// The client sends its body slower than the minimum data rate (slow POST).
    #[error("request body slower than the minimum data rate")]
    TooSlow,
    /// The stored body could not be read back (disk).
    #[error("stored request body: {0}")]
    Stored(std::io::Error),
}

/// A downstream request's body as the pipeline receives it: none, a small body the HTTP/1.1
/// fast path read whole with its head, or hyper's stream. (One enum: every request carries
/// it, and the upstream client's future carries the request's body.)
pub struct DownstreamBody {
    inner: Source,
}

enum Source {
    None,
    Full(Bytes),
    Stream(Incoming),
}

impl DownstreamBody {
    /// No body.
    pub fn empty() -> Self {
        Self {
            inner: Source::None,
        }
    }

    /// A body already read whole.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            inner: if bytes.is_empty() {
                Source::None
            } else {
                Source::Full(bytes)
            },
        }
    }

    /// The whole body, when it was read with its head.
    fn whole(&self) -> Option<&Bytes> {
        match &self.inner {
            Source::Full(bytes) => Some(bytes),
            _ => None,
        }
    }
}

impl From<Incoming> for DownstreamBody {
    fn from(inner: Incoming) -> Self {
        Self {
            inner: Source::Stream(inner),
        }
    }
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Source::None => Poll::Ready(None),
            Source::Stream(inner) => Pin::new(inner).poll_frame(cx),
            Source::Full(_) => match std::mem::replace(&mut this.inner, Source::None) {
                Source::Full(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                _ => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::None => true,
            Source::Full(_) => false,
            Source::Stream(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::None => SizeHint::with_exact(0),
            Source::Full(bytes) => SizeHint::with_exact(bytes.len() as u64),
            Source::Stream(inner) => inner.size_hint(),
        }
    }
}

pin_project! {
    /// The downstream request body on its way upstream.
    pub struct RequestBody {
        inner: DownstreamBody,
        // The whole body, when the gateway stored it first (then `inner` is empty). Boxed:
        // every request's body (and the upstream client's future) carries this field.
        stored: Option<Box<super::buffer::Stored>>,
        remaining: u64,
        received: Option<Arc<AtomicU64>>,
        pace: Option<Pace>,
        tap: Option<Box<dyn RequestTap>>,
    }
}

/// Sees a request body on its way upstream, chunk by chunk (never the whole body). Attached
/// only to requests that have a body, so the body-less requests of the hot path carry none.
pub trait RequestTap: Send {
    /// One data chunk; an `Err` stops the body (the request fails with that error).
    fn on_chunk(&mut self, chunk: &Bytes) -> Result<(), RequestBodyError>;
    /// The body ended normally.
    fn on_end(&mut self) {}
}

/// The minimum-data-rate rule for a body: after `grace`, the bytes received must keep up with
/// `min_rate` bytes per second since the start.
#[derive(Debug)]
pub struct Pace {
    start: Instant,
    grace: std::time::Duration,
    min_rate: u64,
    got: u64,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Pace {
    /// A pace rule starting now.
    pub fn new(grace: std::time::Duration, min_rate: u64) -> Self {
        Self {
            start: Instant::now(),
            grace,
            min_rate: min_rate.max(1),
            got: 0,
            timer: None,
        }
    }

    /// When the body is too slow unless more bytes arrive: start + grace + got / min_rate.
    fn deadline(&self) -> Instant {
        let earned =
            std::time::Duration::from_millis(self.got.saturating_mul(1000) / self.min_rate);
        self.start + self.grace + earned
    }
}

impl RequestBody {
    /// Wraps `inner`, refusing more than `limit` bytes; counts into `received`.
    pub fn new(inner: DownstreamBody, limit: u64, received: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            stored: None,
            remaining: limit,
            received: Some(received),
            pace: None,
            tap: None,
        }
    }

    /// Also show each chunk to `tap`.
    pub fn with_tap(mut self, tap: Option<Box<dyn RequestTap>>) -> Self {
        self.tap = tap;
        self
    }

    /// Also enforce a minimum data rate (`None` disables it).
    pub fn with_pace(mut self, pace: Option<Pace>) -> Self {
        self.pace = pace;
        self
    }

    /// A body the gateway stored, forwarded as it is (its limits were enforced and its bytes
    /// counted while it was read).
    pub fn stored(stored: super::buffer::Stored) -> Self {
        Self {
            remaining: stored.remaining(),
            inner: DownstreamBody::empty(),
            stored: Some(Box::new(stored)),
            received: None,
            pace: None,
            tap: None,
        }
    }

    /// The whole body when it was read with its head (the HTTP/1.1 fast path) and fits the
    /// limit, without taking it.
    pub fn whole(&self) -> Option<&Bytes> {
        self.inner
            .whole()
            .filter(|b| self.stored.is_none() && b.len() as u64 <= self.remaining)
    }

    /// The stored body at once when it is small and in memory (see `Stored::take_small`).
    pub fn take_small(&mut self, max: u64) -> Option<Bytes> {
        self.stored.as_mut()?.take_small(max)
    }

    /// An empty body (health checks, retries of body-less requests).
    pub fn empty() -> Self {
        Self {
            inner: DownstreamBody::empty(),
            stored: None,
            remaining: 0,
            received: None,
            pace: None,
            tap: None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Some(stored) = this.stored.as_mut() {
            return stored
                .poll_chunk(cx)
                .map(|c| c.map(|c| c.map(Frame::data).map_err(RequestBodyError::Stored)));
        }
        let polled = Pin::new(this.inner).poll_frame(cx);
        if polled.is_pending() {
            if let Some(pace) = this.pace.as_mut() {
                let deadline = pace.deadline();
                let timer = pace
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(RequestBodyError::TooSlow)));
                }
            }
            return Poll::Pending;
        }
        match ready!(polled) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > *this.remaining {
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge)));
                    }
                    *this.remaining -= n;
                    if let Some(pace) = this.pace.as_mut() {
                        pace.got += n;
                    }
                    if let Some(r) = this.received {
                        r.fetch_add(n, Ordering::Relaxed);
                    }
                    if let Some(tap) = this.tap.as_mut() {
                        tap.on_chunk(data)?;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => {
                if let Some(tap) = this.tap.as_mut() {
                    tap.on_end();
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.stored {
            Some(stored) => stored.remaining() == 0,
            None => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.stored {
            Some(stored) => SizeHint::with_exact(stored.remaining()),
            None => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every request carries a body; keep it small (the upstream client's future holds it).
    #[test]
    fn a_request_body_stays_small() {
        let downstream = std::mem::size_of::<super::DownstreamBody>();
        let incoming = std::mem::size_of::<Option<hyper::body::Incoming>>();
        assert!(
            downstream <= incoming.max(40),
            "{downstream} against {incoming}"
        );
    }
}
