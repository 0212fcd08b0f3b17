//! Streaming bodies. `RequestBody` forwards the downstream body upstream, enforcing the
//! route's size limit as bytes flow (never buffering). `ResponseBody` streams the upstream
//! (or a local page) downstream, counts bytes, enforces the whole-request deadline, and
//! closes the access-log record when dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use super::client::UpstreamBody;
use tokio::time::{Instant, Sleep};

use super::log::AccessRecord;
use super::upstream::InflightGuard;

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
}

pin_project! {
    /// A downstream request's body as the pipeline receives it: none (the HTTP/1.1 fast path
    /// serves body-less requests only), or hyper's stream.
    pub struct DownstreamBody {
        #[pin]
        inner: Option<Incoming>,
    }
}

impl DownstreamBody {
    /// No body.
    pub fn empty() -> Self {
        Self { inner: None }
    }
}

impl From<Incoming> for DownstreamBody {
    fn from(inner: Incoming) -> Self {
        Self { inner: Some(inner) }
    }
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project().inner.as_pin_mut() {
            None => Poll::Ready(None),
            Some(inner) => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

pin_project! {
    /// The downstream request body on its way upstream.
    pub struct RequestBody {
        #[pin]
        inner: DownstreamBody,
        remaining: u64,
        received: Option<Arc<AtomicU64>>,
        pace: Option<Pace>,
    }
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
            remaining: limit,
            received: Some(received),
            pace: None,
        }
    }

    /// Also enforce a minimum data rate (`None` disables it).
    pub fn with_pace(mut self, pace: Option<Pace>) -> Self {
        self.pace = pace;
        self
    }

    /// An empty body (health checks, retries of body-less requests).
    pub fn empty() -> Self {
        Self {
            inner: DownstreamBody::empty(),
            remaining: 0,
            received: None,
            pace: None,
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
        let polled = this.inner.poll_frame(cx);
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
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// A response body going downstream.
    pub struct ResponseBody {
        #[pin]
        upstream: Option<UpstreamBody>,
        // A locally generated body (error pages), sent once.
        local: Option<Bytes>,
        deadline_at: Option<Instant>,
        deadline: Option<Pin<Box<Sleep>>>,
        record: Option<AccessRecord>,
        inflight: Option<InflightGuard>,
        // Copy of the body for degraded mode, kept when the body ends normally.
        recorder: Option<Box<crate::status::stale::Recorder>>,
        // The origin's field lines, not in the response's map yet: the HTTP/1.1 fast path
        // writes them through, `fields::into_map_form` moves them into the map for hyper.
        origin_fields: Option<super::fields::OriginFields>,
    }
}

impl ResponseBody {
    /// A locally generated body.
    pub fn local(bytes: Bytes, record: Option<AccessRecord>) -> Self {
        Self {
            upstream: None,
            local: Some(bytes),
            deadline_at: None,
            deadline: None,
            record,
            inflight: None,
            recorder: None,
            origin_fields: None,
        }
    }

    /// The upstream body, bounded by `deadline`.
    pub fn upstream(
        body: UpstreamBody,
        deadline: Instant,
        record: AccessRecord,
        inflight: InflightGuard,
    ) -> Self {
        Self {
            upstream: Some(body),
            local: None,
            deadline_at: Some(deadline),
            deadline: None,
            record: Some(record),
            inflight: Some(inflight),
            recorder: None,
            origin_fields: None,
        }
    }

    /// Also copies the body into `recorder` (degraded mode).
    pub fn with_recorder(mut self, recorder: Option<crate::status::stale::Recorder>) -> Self {
        self.recorder = recorder.map(Box::new);
        self
    }

    /// Carries the origin's field lines with the body (see `proxy::fields`).
    pub fn with_origin_fields(mut self, fields: super::fields::OriginFields) -> Self {
        self.origin_fields = Some(fields);
        self
    }

    /// The origin's field lines that are not in the response's map, if any.
    pub fn take_origin_fields(&mut self) -> Option<super::fields::OriginFields> {
        self.origin_fields.take()
    }

    fn count(record: &mut Option<AccessRecord>, n: usize) {
        if let Some(r) = record {
            r.bytes_out += n as u64;
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(bytes) = this.local.take() {
            Self::count(this.record, bytes.len());
            if !bytes.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if this.upstream.is_none() {
                return Poll::Ready(None);
            }
        }
        let Some(inner) = this.upstream.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        match inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    Self::count(this.record, d.len());
                    if let Some(r) = this.recorder.as_mut() {
                        if !r.push(d) {
                            *this.recorder = None;
                        }
                    }
                }
                // hyper stops polling once the body says it has ended: keep the copy now.
                if this.recorder.is_some()
                    && this
                        .upstream
                        .as_ref()
                        .get_ref()
                        .as_ref()
                        .is_some_and(Body::is_end_stream)
                {
                    if let Some(r) = this.recorder.take() {
                        r.finish();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                *this.recorder = None;
                if let Some(r) = this.record {
                    r.reason = Some("upstream_body_error");
                }
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                // Done: release the upstream slot now rather than when hyper drops us.
                this.inflight.take();
                if let Some(r) = this.recorder.take() {
                    r.finish();
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(at) = *this.deadline_at {
                    let sleep = this
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        if let Some(r) = this.record {
                            r.reason = Some("request_timeout");
                        }
                        return Poll::Ready(Some(Err(
                            "request deadline exceeded while streaming the response".into(),
                        )));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.local.as_ref().is_none_or(Bytes::is_empty)
            && self.upstream.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.upstream, &self.local) {
            (Some(b), _) => b.size_hint(),
            (None, Some(l)) => SizeHint::with_exact(l.len() as u64),
            (None, None) => SizeHint::with_exact(0),
        }
    }
}
