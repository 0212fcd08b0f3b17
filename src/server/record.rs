//! Recording the first bytes of a connection for fingerprints, without copying afterwards:
//! `HelloRecorder` keeps what the TLS acceptor reads until the handshake is done (the raw
//! ClientHello, for JA4); `HeadRecorder` keeps the first HTTP/1 request head as sent (header
//! order and casing, for the HTTP fingerprint) and publishes its fingerprint once complete.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, ReadBuf};

use crate::shield::fingerprint;

pin_project! {
    /// Keeps a copy of the bytes read until `take` (bounded by `fingerprint::MAX_HELLO_BYTES`).
    pub struct HelloRecorder<S> {
        #[pin]
        inner: S,
        recorded: Option<Vec<u8>>,
    }
}

impl<S> HelloRecorder<S> {
    /// Starts recording reads from `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            recorded: Some(Vec::with_capacity(2048)),
        }
    }

    /// Stops recording and returns the JA4 of what was recorded, if it parses.
    pub fn take_ja4(&mut self) -> Option<Arc<str>> {
        let bytes = self.recorded.take()?;
        let hello = fingerprint::parse_client_hello(&bytes).ok()?;
        Some(Arc::from(fingerprint::ja4(&hello)))
    }
}

impl<S: AsyncRead> AsyncRead for HelloRecorder<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if let Some(rec) = this.recorded.as_mut() {
            let new = &buf.filled()[before..];
            let room = (fingerprint::MAX_HELLO_BYTES + 64).saturating_sub(rec.len());
            rec.extend_from_slice(&new[..new.len().min(room)]);
        }
        r
    }
}

super::write_through!(HelloRecorder);

/// Collects the first request head of a connection and publishes its HTTP fingerprint.
#[derive(Debug)]
pub struct HeadRecorder {
    buf: Vec<u8>,
    limit: usize,
    out: Arc<OnceLock<Box<str>>>,
}

impl HeadRecorder {
    /// Records up to `limit` bytes; the fingerprint lands in `out`.
    pub fn new(limit: usize, out: Arc<OnceLock<Box<str>>>) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            out,
        }
    }

    /// Feeds bytes just read; returns `false` once recording is over (head complete, not
    /// HTTP/1, or too long), after which the caller drops the recorder.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        let start = self.buf.len().saturating_sub(3);
        let room = self.limit.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if self.buf.starts_with(b"PRI * HTTP/2.0") {
            return false;
        }
        match self.buf[start..].windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) => {
                let end = start + at + 4;
                if let Some(fp) = fingerprint::http_fingerprint(&self.buf[..end]) {
                    let _ = self.out.set(fp.into_boxed_str());
                }
                false
            }
            None => self.buf.len() < self.limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_fingerprint_appears_once_the_head_is_complete() {
        let out = Arc::new(OnceLock::new());
        let mut r = HeadRecorder::new(1024, out.clone());
        assert!(r.feed(b"GET / HTTP/1.1\r\nHost: a\r"));
        assert!(out.get().is_none());
        assert!(!r.feed(b"\nUser-Agent: x\r\n\r\nGET /next"));
        assert!(out.get().unwrap().starts_with("h11ge02a--_"));
        let out2 = Arc::new(OnceLock::new());
        assert!(!HeadRecorder::new(1024, out2.clone()).feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(out2.get().is_none());
        let out3 = Arc::new(OnceLock::new());
        let mut long = HeadRecorder::new(8, out3.clone());
        assert!(!long.feed(b"GET /aaaaaaaaaaaaaaaa"));
        assert!(out3.get().is_none());
    }
}
