//! Body taps: code that sees a response body as it streams, chunk by chunk, without holding
//! it. The answer phase attaches them (`answer::taps`); `pipeline::body::ResponseBody` calls
//! them for each chunk and at the end of the body.
//!
//! A tap sees every data chunk (`on_chunk`, which may change the bytes), then either the end
//! of the body (`on_end`) or its abort (`on_abort`: the origin failed, the deadline passed,
//! the client went away). A tap may detach itself at any chunk. A tap that changes bytes says
//! so (`REWRITES`): the body's exact length is then unknown, so the origin's
//! `Content-Length` is dropped and the HTTP/1.1 fast path frames the answer as chunked.
//!
//! Dispatch is static: `ResponseTaps` has one field per kind of tap, so a request with no
//! tap pays for a few empty `Option`s and nothing is boxed or looked up per chunk. To add a
//! tap: implement `ResponseTap`, add a field here and a line in each `ResponseTaps` method,
//! attach it in `answer::taps` (see `docs/request-lifecycle.md`).
//!
//! Request bodies have their own hook, `proxy::body::RequestTap`, on the way upstream.

use bytes::Bytes;

use crate::degraded::stale::Recorder;

/// What a tap wants after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapFlow {
    /// Keep seeing the body.
    Keep,
    /// Stop: the tap is dropped without `on_end` or `on_abort`.
    Detach,
    /// Cut the answer here (the data guard found what must not leave): the body fails, every
    /// tap sees `on_abort`.
    Cut,
}

/// The answer was cut by a tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut;

/// Sees a response body as it streams.
pub trait ResponseTap: Send {
    /// Whether `on_chunk` may change the bytes (the body's length becomes unknown).
    const REWRITES: bool = false;

    /// One data chunk, on its way downstream (a rewriting tap may replace it).
    fn on_chunk(&mut self, chunk: &mut Bytes) -> TapFlow;

    /// The body's last bytes: what a tap held back (a rewriting tap that waits to decide),
    /// asked once before `on_end`; `Err(Cut)` cuts the answer instead.
    fn tail(&mut self) -> Result<Bytes, Cut> {
        Ok(Bytes::new())
    }

    /// The body ended normally.
    fn on_end(self);

    /// The body was cut short (origin error, deadline, client gone).
    fn on_abort(self)
    where
        Self: Sized,
    {
    }
}

/// The stale-copy recorder: keeps a copy of a keepable answer for degraded mode, stored only
/// when the body is complete.
impl ResponseTap for Recorder {
    fn on_chunk(&mut self, chunk: &mut Bytes) -> TapFlow {
        if self.push(chunk) {
            TapFlow::Keep
        } else {
            TapFlow::Detach
        }
    }

    fn on_end(self) {
        self.finish();
    }
}

/// The taps on one response body: one optional field per kind.
#[derive(Default)]
pub struct ResponseTaps {
    /// The data guard: records and personal data of a guarded route's answer (first: what
    /// it masks is what the other taps see).
    pub guard: Option<Box<super::guard::GuardTap>>,
    /// Copy of the answer for degraded mode (boxed: most answers have none, and the body
    /// stays small).
    pub stale_copy: Option<Box<Recorder>>,
    /// A tap that rewrites the body, for the framing tests of the HTTP/1.1 fast path.
    #[cfg(test)]
    pub test_rewrite: Option<Box<tests::Upper>>,
}

fn chunk_into<T: ResponseTap>(slot: &mut Option<Box<T>>, chunk: &mut Bytes) -> Result<(), Cut> {
    if let Some(tap) = slot {
        match tap.on_chunk(chunk) {
            TapFlow::Keep => {}
            TapFlow::Detach => *slot = None,
            TapFlow::Cut => return Err(Cut),
        }
    }
    Ok(())
}

fn tail_of<T: ResponseTap>(slot: &mut Option<Box<T>>) -> Result<Bytes, Cut> {
    slot.as_mut().map_or(Ok(Bytes::new()), |tap| tap.tail())
}

impl ResponseTaps {
    /// Also keeps a copy of the answer for degraded mode.
    pub fn with_stale_copy(mut self, recorder: Option<Recorder>) -> Self {
        self.stale_copy = recorder.map(Box::new);
        self
    }

    /// Whether no tap is attached.
    pub fn is_empty(&self) -> bool {
        let empty = self.stale_copy.is_none() && self.guard.is_none();
        #[cfg(test)]
        let empty = empty && self.test_rewrite.is_none();
        empty
    }

    /// Whether an attached tap may change the bytes.
    pub fn rewrites(&self) -> bool {
        let rewrites = (self.stale_copy.is_some() && Recorder::REWRITES)
            || self.guard.as_ref().is_some_and(|g| g.rewrites());
        #[cfg(test)]
        let rewrites = rewrites || (self.test_rewrite.is_some() && tests::Upper::REWRITES);
        rewrites
    }

    /// Shows `chunk` to every tap, in field order (each sees what the ones before it left).
    /// `Err(Cut)`: a tap cut the answer (the caller aborts the taps and fails the body).
    pub fn chunk(&mut self, chunk: &mut Bytes) -> Result<(), Cut> {
        chunk_into(&mut self.guard, chunk)?;
        chunk_into(&mut self.stale_copy, chunk)?;
        #[cfg(test)]
        chunk_into(&mut self.test_rewrite, chunk)?;
        Ok(())
    }

    /// The body ended normally: the bytes the taps held back, to send last (each later tap
    /// sees them), then every tap's `on_end`. `Err(Cut)`: a tap cut the answer instead.
    pub fn end(&mut self) -> Result<Bytes, Cut> {
        let mut tail = tail_of(&mut self.guard)?;
        if !tail.is_empty() {
            chunk_into(&mut self.stale_copy, &mut tail)?;
            #[cfg(test)]
            chunk_into(&mut self.test_rewrite, &mut tail)?;
        }
        if let Some(t) = self.guard.take() {
            t.on_end();
        }
        if let Some(t) = self.stale_copy.take() {
            t.on_end();
        }
        #[cfg(test)]
        if let Some(t) = self.test_rewrite.take() {
            t.on_end();
        }
        Ok(tail)
    }

    /// The body was cut short.
    pub fn abort(&mut self) {
        if let Some(t) = self.guard.take() {
            t.on_abort();
        }
        if let Some(t) = self.stale_copy.take() {
            t.on_abort();
        }
        #[cfg(test)]
        if let Some(t) = self.test_rewrite.take() {
            t.on_abort();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Upper-cases ASCII letters (a tap that changes bytes, not their count).
    #[derive(Debug, Default)]
    pub struct Upper {
        pub ended: Arc<AtomicUsize>,
    }

    impl ResponseTap for Upper {
        const REWRITES: bool = true;

        fn on_chunk(&mut self, chunk: &mut Bytes) -> TapFlow {
            *chunk = Bytes::from(chunk.to_ascii_uppercase());
            TapFlow::Keep
        }

        fn on_end(self) {
            self.ended.fetch_add(1, Ordering::Relaxed);
        }
    }

    use crate::proxy::fields::OriginFields;
    use std::sync::atomic::AtomicU64;

    // The example of docs/request-lifecycle.md ("Adding a tap"), compiled and tested.

    /// Adds the origin's `X-Record-Count` to `total` when the body is complete.
    pub struct RecordCount {
        records: u64,
        total: Arc<AtomicU64>,
    }

    impl RecordCount {
        /// A tap for an answer whose head says it carries records, if it does.
        pub fn from_head(fields: &OriginFields, total: &Arc<AtomicU64>) -> Option<Self> {
            let records = std::str::from_utf8(fields.get("x-record-count")?).ok()?;
            Some(Self {
                records: records.trim().parse().ok()?,
                total: total.clone(),
            })
        }
    }

    impl ResponseTap for RecordCount {
        fn on_chunk(&mut self, _chunk: &mut Bytes) -> TapFlow {
            TapFlow::Keep
        }

        fn on_end(self) {
            self.total.fetch_add(self.records, Ordering::Relaxed);
        }
    }

    #[test]
    fn the_documented_example_counts_records_of_complete_bodies() {
        let total = Arc::new(AtomicU64::new(0));
        let head = |extra: &str| {
            crate::proxy::fields::from_head(
                &format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}\r\n"),
                None,
            )
        };
        assert!(RecordCount::from_head(&head(""), &total).is_none());
        let mut tap = RecordCount::from_head(&head("X-Record-Count: 25\r\n"), &total).unwrap();
        let mut chunk = Bytes::from_static(b"[...]");
        assert_eq!(tap.on_chunk(&mut chunk), TapFlow::Keep);
        assert_eq!(
            &chunk[..],
            b"[...]",
            "a counting tap leaves the bytes alone"
        );
        tap.on_end();
        let aborted = RecordCount::from_head(&head("x-record-count: 7\r\n"), &total).unwrap();
        aborted.on_abort();
        assert_eq!(
            total.load(Ordering::Relaxed),
            25,
            "only complete bodies count"
        );
    }

    #[test]
    fn a_rewriting_tap_changes_chunks_and_sees_the_end() {
        let ended = Arc::new(AtomicUsize::new(0));
        let mut taps = ResponseTaps {
            test_rewrite: Some(Box::new(Upper {
                ended: ended.clone(),
            })),
            ..ResponseTaps::default()
        };
        assert!(!taps.is_empty() && taps.rewrites());
        let mut chunk = Bytes::from_static(b"abc");
        assert_eq!(taps.chunk(&mut chunk), Ok(()));
        assert_eq!(&chunk[..], b"ABC");
        assert_eq!(taps.end(), Ok(Bytes::new()));
        assert_eq!(ended.load(Ordering::Relaxed), 1);
        assert!(taps.is_empty(), "a tap runs to its end once");
        taps.abort();
        assert_eq!(ended.load(Ordering::Relaxed), 1);
        assert!(!ResponseTaps::default().rewrites());
    }
}
