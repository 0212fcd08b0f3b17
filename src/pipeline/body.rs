//! Phase 7, the response body: a local page sent once, or the origin's body streamed chunk
//! by chunk through the taps (`pipeline::taps`), counted, and bounded by the request's
//! deadline. Dropping the body ends the request: its access record is logged (phase 8,
//! `pipeline::log`) and the upstream slot is given back.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::log::AccessRecord;
use super::taps::ResponseTaps;
use crate::proxy::client::UpstreamBody;
use crate::proxy::fields::OriginFields;
use crate::proxy::upstream::InflightGuard;

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// A response body going downstream: a local page, or the origin's body streamed chunk
    /// by chunk through the taps (phase 7), bounded by the request's deadline. Dropping it
    /// ends the request (phase 8: the access record is logged).
    pub struct ResponseBody {
        #[pin]
        upstream: Option<UpstreamBody>,
        // A locally generated body (error pages), sent once.
        local: Option<Bytes>,
        deadline_at: Option<Instant>,
        deadline: Option<Pin<Box<Sleep>>>,
        record: Option<AccessRecord>,
        inflight: Option<InflightGuard>,
        // Code that sees the body as it streams (`pipeline::taps`).
        taps: ResponseTaps,
        // The origin's field lines, not in the response's map yet: the HTTP/1.1 fast path
        // writes them through, `fields::into_map_form` moves them into the map for hyper.
        origin_fields: Option<OriginFields>,
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
            taps: ResponseTaps::default(),
            origin_fields: None,
        }
    }

    /// The origin's body, bounded by `deadline`, streamed through `taps`, with the origin's
    /// field lines (see `proxy::fields`) and the upstream slot, held until the body is done.
    pub fn upstream(
        body: UpstreamBody,
        deadline: Instant,
        record: AccessRecord,
        inflight: InflightGuard,
        taps: ResponseTaps,
        fields: OriginFields,
    ) -> Self {
        Self {
            upstream: Some(body),
            local: None,
            deadline_at: Some(deadline),
            deadline: None,
            record: Some(record),
            inflight: Some(inflight),
            taps,
            origin_fields: Some(fields),
        }
    }

    /// The access record the body carries (tests).
    #[cfg(test)]
    pub(crate) fn record(&self) -> Option<&AccessRecord> {
        self.record.as_ref()
    }

    /// Shows the body to `taps` as it streams.
    pub fn with_taps(mut self, taps: ResponseTaps) -> Self {
        self.taps = taps;
        self
    }

    /// Carries the origin's field lines with the body (see `proxy::fields`).
    pub fn with_origin_fields(mut self, fields: OriginFields) -> Self {
        self.origin_fields = Some(fields);
        self
    }

    /// The origin's field lines that are not in the response's map, if any. When a tap
    /// rewrites the body, the origin's length no longer holds and is left out.
    pub fn take_origin_fields(&mut self) -> Option<OriginFields> {
        let mut fields = self.origin_fields.take()?;
        if self.taps.rewrites() {
            fields.content_length = None;
        }
        Some(fields)
    }

    /// A tap cut the answer: every tap is aborted, the record says why, the body fails
    /// (HTTP/1.1: the connection closes before the end; HTTP/2: the stream is reset).
    fn cut(taps: &mut ResponseTaps, record: &mut Option<AccessRecord>) -> BoxError {
        taps.abort();
        if let Some(r) = record {
            r.reason = Some("guard_cut");
        }
        "answer cut by the data guard".into()
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
        loop {
            let Some(inner) = this.upstream.as_mut().as_pin_mut() else {
                return Poll::Ready(None);
            };
            match inner.poll_frame(cx) {
                Poll::Ready(Some(Ok(mut frame))) => {
                    if this.taps.is_empty() {
                        if let Some(d) = frame.data_ref() {
                            Self::count(this.record, d.len());
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    // hyper stops polling once the body says it has ended: end the taps
                    // with this frame.
                    let last = this
                        .upstream
                        .as_ref()
                        .get_ref()
                        .as_ref()
                        .is_some_and(Body::is_end_stream);
                    if let Some(d) = frame.data_mut() {
                        let mut seen = this.taps.chunk(d);
                        if seen.is_ok() && last {
                            seen = this.taps.end().map(|tail| {
                                if !tail.is_empty() {
                                    let mut joined = bytes::BytesMut::from(&d[..]);
                                    joined.extend_from_slice(&tail);
                                    *d = joined.freeze();
                                }
                            });
                        }
                        if seen.is_err() {
                            return Poll::Ready(Some(Err(Self::cut(this.taps, this.record))));
                        }
                        if d.is_empty() && !last {
                            // All of it held back by a tap: nothing to send yet.
                            continue;
                        }
                        Self::count(this.record, d.len());
                    } else if last {
                        match this.taps.end() {
                            Ok(tail) if !tail.is_empty() => {
                                // The held-back bytes must go out; the origin's trailers
                                // after them are dropped (a masked answer's trailers, such
                                // as a digest, no longer hold anyway).
                                Self::count(this.record, tail.len());
                                return Poll::Ready(Some(Ok(Frame::data(tail))));
                            }
                            Ok(_) => {}
                            Err(_) => {
                                return Poll::Ready(Some(Err(Self::cut(this.taps, this.record))))
                            }
                        }
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.taps.abort();
                    if let Some(r) = this.record {
                        r.reason = Some("upstream_body_error");
                    }
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(None) => {
                    // Done: release the upstream slot now rather than when hyper drops us.
                    this.inflight.take();
                    let ended = this.taps.end();
                    this.upstream.set(None);
                    return match ended {
                        Ok(tail) if !tail.is_empty() => {
                            Self::count(this.record, tail.len());
                            Poll::Ready(Some(Ok(Frame::data(tail))))
                        }
                        Ok(_) => Poll::Ready(None),
                        Err(_) => Poll::Ready(Some(Err(Self::cut(this.taps, this.record)))),
                    };
                }
                Poll::Pending => {
                    if let Some(at) = *this.deadline_at {
                        let sleep = this
                            .deadline
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                        if sleep.as_mut().poll(cx).is_ready() {
                            this.taps.abort();
                            if let Some(r) = this.record {
                                r.reason = Some("request_timeout");
                            }
                            return Poll::Ready(Some(Err(
                                "request deadline exceeded while streaming the response".into(),
                            )));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.local.as_ref().is_none_or(Bytes::is_empty)
            && self.upstream.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        if self.taps.rewrites() {
            return SizeHint::default();
        }
        match (&self.upstream, &self.local) {
            (Some(b), _) => b.size_hint(),
            (None, Some(l)) => SizeHint::with_exact(l.len() as u64),
            (None, None) => SizeHint::with_exact(0),
        }
    }
}

/// Moves a proxied response's origin fields into its header map, ahead of the fields the
/// gateway added, with `Content-Length` when the origin sent one: the form hyper's servers
/// (and anything else that reads a map) need.
pub fn into_map_form(response: http::Response<ResponseBody>) -> http::Response<ResponseBody> {
    let (mut parts, mut body) = response.into_parts();
    if let Some(fields) = body.take_origin_fields() {
        let mut map = fields.to_response_map(parts.headers.len());
        for (name, value) in &parts.headers {
            map.append(name.clone(), value.clone());
        }
        parts.headers = map;
    }
    http::Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn map_form_puts_origin_fields_first_with_the_length() {
        let f = crate::proxy::fields::from_head(
            "HTTP/1.1 200 OK\r\nVia: 1.1 cdn\r\nContent-Type: text/plain\r\n\r\n",
            Some(3),
        );
        let mut resp = http::Response::new(
            ResponseBody::local(Bytes::from_static(b"abc"), None).with_origin_fields(f),
        );
        resp.headers_mut()
            .insert("via", HeaderValue::from_static("1.1 rempart"));
        let resp = into_map_form(resp);
        let vias: Vec<_> = resp.headers().get_all("via").iter().collect();
        assert_eq!(vias, ["1.1 cdn", "1.1 rempart"]);
        assert_eq!(resp.headers()["content-length"], "3");
        assert_eq!(resp.headers()["content-type"], "text/plain");
    }
}
