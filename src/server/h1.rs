//! The HTTP/1.1 fast path downstream: serves HTTP/1.1 requests without a body or with a small
//! one of declared length (`Content-Length` up to 16 KiB, read with the head; no
//! `Transfer-Encoding`, `Upgrade` or `Expect`), which are nearly all of a public site's
//! traffic (page views, form posts) and of a flood's.
//!
//! Anything else (a chunked or larger body, an upgrade, HTTP/1.0, an absolute-form target, a
//! head too large or malformed) hands the connection to hyper's HTTP/1 server together with the bytes
//! read so far: hyper then serves that request and the rest of the connection exactly as it
//! serves any connection, including its 400 and 431 answers. The hand-over happens only at a
//! request boundary, before anything of that request was acted on.
//!
//! Why it exists: a proxied request spent about a sixth of its instructions in hyper's
//! per-request head parsing, dispatching and encoding (BENCHMARKS.md), and hyper keeps an 8 KiB
//! read buffer per connection, idle or not. Here a connection holds no buffer while it waits
//! for its next request (reads land in a stack buffer and only a partial head is kept), the
//! head is parsed once with `httparse`, and the response head is written straight from the
//! header map with the body's first piece in the same write.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::pipeline::ResponseBody;
use crate::proxy::body::DownstreamBody;
use crate::proxy::fields::OriginFields;

/// Bytes read per read call (a stack buffer, nothing held between requests).
const READ_CHUNK: usize = 8 * 1024;
/// Fields in a request head served here; more goes to hyper (which allows 100).
const MAX_FIELDS: usize = 64;
/// Largest request body (`Content-Length`) read here with its head; larger bodies, and
/// chunked ones, go to hyper. The body must arrive within the head's time limit.
const MAX_FAST_BODY: u64 = 16 * 1024;
/// Body pieces up to this size are copied next to the head (one write); larger ones are
/// written from where they are.
const COPY_LIMIT: usize = 16 * 1024;

/// The answer to a request line longer than a head may be (the connection then closes).
const URI_TOO_LONG: &[u8] =
    b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// How the fast path ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// The connection is finished (either side closed it, or it was told to close).
    Closed,
    /// A request this path does not serve: hyper takes the connection from here, starting
    /// with these bytes.
    Handover(Bytes),
}

/// What one parse of the buffered bytes found.
// Returned once per request and taken apart at once: boxing the request would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// Not for this path (or not valid): hand the connection to hyper.
    Elsewhere,
    /// The request line alone is longer than the head may be: answered 414 here (hyper
    /// would say 431, which names the wrong culprit), then the connection is closed.
    LineTooLong,
    /// A complete request head served here: the request, the head's length in bytes, and
    /// whether the client asked to close the connection after it.
    Complete {
        req: Request<DownstreamBody>,
        len: usize,
        close: bool,
    },
}

/// Parses the head at the start of `buf`; the request's fields are shared slices of it. A
/// head longer than `max_head` goes to hyper, which answers 431 with the same limit.
fn parse(buf: &Bytes, max_head: usize) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut head = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut head, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Partial) if buf.len() <= max_head => return Parsed::Partial,
        _ if buf.len() > max_head && !buf[..max_head].contains(&b'\n') => {
            return Parsed::LineTooLong
        }
        _ => return Parsed::Elsewhere,
    };
    if head.version != Some(1) {
        return Parsed::Elsewhere;
    }
    let (Some(method), Some(path)) = (head.method, head.path) else {
        return Parsed::Elsewhere;
    };
    if !path.starts_with('/') || method == "CONNECT" {
        return Parsed::Elsewhere;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Elsewhere;
    };
    let Ok(uri) = Uri::from_maybe_shared(buf.slice_ref(path.as_bytes())) else {
        return Parsed::Elsewhere;
    };
    let mut close = false;
    let mut body_len: Option<u64> = None;
    // Room for the forwarding fields the pipeline adds (X-Forwarded-*, Forwarded, Via).
    let mut headers = HeaderMap::with_capacity(head.headers.len() + 6);
    for field in head.headers.iter() {
        let Some(name) = crate::proxy::headers::header_name(field.name.as_bytes()) else {
            return Parsed::Elsewhere;
        };
        let value = field.value;
        if name == TRANSFER_ENCODING || name == http::header::UPGRADE || name == EXPECT {
            // A body, an upgrade or an interim answer: hyper's business.
            return Parsed::Elsewhere;
        } else if name == CONTENT_LENGTH {
            // One plain decimal length, small enough: read here. Anything else (two
            // lengths, a list, signs) is hyper's to judge.
            let digits = value.trim_ascii();
            let n =
                (!digits.is_empty() && digits.len() <= 6 && digits.iter().all(u8::is_ascii_digit))
                    .then(|| {
                        digits
                            .iter()
                            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
                    });
            match (n, body_len) {
                (Some(n), None) if n <= MAX_FAST_BODY => body_len = Some(n),
                _ => return Parsed::Elsewhere,
            }
        } else if name == CONNECTION {
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Elsewhere;
                }
            }
        }
        // A value hyper may judge differently: let it decide.
        let Ok(value) = HeaderValue::from_maybe_shared(buf.slice_ref(value)) else {
            return Parsed::Elsewhere;
        };
        headers.append(name, value);
    }
    let body = match body_len {
        None | Some(0) => DownstreamBody::empty(),
        Some(n) => {
            let end = len + n as usize;
            if buf.len() < end {
                // The body is still coming: read on, then parse again.
                return Parsed::Partial;
            }
            DownstreamBody::full(buf.slice(len..end))
        }
    };
    let len = len + body_len.unwrap_or(0) as usize;
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Parsed::Complete { req, len, close }
}

/// Fuzzing entry (see `crate::fuzzing`): a downstream request head, read whole and in
/// pieces. A complete head is one this path can serve (HTTP/1.1, origin form, no body or a
/// small one of declared length), reading it never needs more bytes than it has, and a
/// request split at any point is never complete before its last byte.
pub(crate) fn fuzz_request_head(data: &[u8]) {
    const MAX: usize = 8192;
    let whole = Bytes::copy_from_slice(data);
    let Parsed::Complete { req, len, .. } = parse(&whole, MAX) else {
        return;
    };
    assert!(
        len <= data.len() && len <= MAX + MAX_FAST_BODY as usize,
        "request length {len} of {}",
        data.len()
    );
    assert!(req.uri().path().starts_with('/'), "{:?}", req.uri());
    assert_ne!(req.method(), Method::CONNECT);
    assert_eq!(req.version(), Version::HTTP_11);
    for (name, _) in req.headers() {
        assert!(name != TRANSFER_ENCODING && name != EXPECT && name != http::header::UPGRADE);
    }
    let exact = Bytes::copy_from_slice(&data[..len]);
    assert!(
        matches!(parse(&exact, MAX), Parsed::Complete { len: l, .. } if l == len),
        "the head alone parses the same"
    );
    // Split heads: never complete before the last byte (bounded work per input).
    for cut in (0..len).step_by(len.div_ceil(64).max(1)) {
        let part = Bytes::copy_from_slice(&data[..cut]);
        assert!(
            !matches!(parse(&part, MAX), Parsed::Complete { .. }),
            "complete after {cut} of {len} bytes"
        );
    }
    // The host a routed request is matched on comes from this head.
    let _ = crate::pipeline::route::request_host(&req);
}

/// How long a connection told to close while idle still waits for a request: a client may
/// have sent one as the gateway decided to close, and it is answered (with
/// `Connection: close`) rather than cut. Past it, an idle connection closes.
pub(super) const CLOSING_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads what is there and appends it to `pending` (through a stack buffer: the connection
/// holds no read buffer of its own). `Ok(Some(0))` is end of stream; `Ok(None)` means the
/// connection was told to close while nothing was pending (only when `closing` is given).
pub(super) async fn read_more<I: AsyncRead + Unpin>(
    io: &mut I,
    pending: &mut Bytes,
    closing: Option<&AtomicBool>,
) -> io::Result<Option<usize>> {
    std::future::poll_fn(|cx| {
        if pending.is_empty() && closing.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Poll::Ready(Ok(None));
        }
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut stack);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let read = buf.filled();
                if pending.is_empty() {
                    *pending = Bytes::copy_from_slice(read);
                } else {
                    // A head in several reads (rare): join them.
                    let mut joined = BytesMut::with_capacity(pending.len() + read.len());
                    joined.extend_from_slice(pending);
                    joined.extend_from_slice(read);
                    *pending = joined.freeze();
                }
                Poll::Ready(Ok(Some(read.len())))
            }
        }
    })
    .await
}

/// Serves requests on `io` until the connection ends or a request needs hyper.
///
/// `closing` asks for a graceful end: a request in flight is answered with
/// `Connection: close`, and an idle connection takes one more request for `CLOSING_LINGER`
/// (answered with `Connection: close`), then closes.
pub(super) async fn serve<I, F, Fut>(
    io: &mut I,
    first: Bytes,
    handle: F,
    closing: &AtomicBool,
    max_head: usize,
) -> io::Result<Ended>
where
    I: AsyncRead + AsyncWrite + Unpin,
    F: Fn(Request<DownstreamBody>) -> Fut,
    Fut: Future<Output = Result<Response<ResponseBody>, Infallible>>,
{
    // Bytes read and not used yet: the start of the next head, and what was pipelined (at
    // first, what was read to tell the protocol).
    let mut pending = first;
    // What is held across a wait is what an idle connection costs: the request and its
    // answer live in scoped blocks (a local still in scope at a wait is kept in the
    // connection's state even once moved), the parser's verdict never outlives its match.
    loop {
        let next = {
            let read_head = loop {
                if !pending.is_empty() {
                    match parse(&pending, max_head) {
                        Parsed::Complete { req, len, close } => {
                            pending.advance(len);
                            if pending.is_empty() {
                                // Nothing pipelined: hold nothing while waiting.
                                pending = Bytes::new();
                            }
                            break Some((req, close));
                        }
                        Parsed::Elsewhere => return Ok(Ended::Handover(pending)),
                        Parsed::LineTooLong => break None,
                        Parsed::Partial => {}
                    }
                }
                let read = match read_more(io, &mut pending, Some(closing)).await? {
                    // Told to close while idle: a request already on its way is still served.
                    None => {
                        match tokio::time::timeout(
                            CLOSING_LINGER,
                            read_more(io, &mut pending, None),
                        )
                        .await
                        {
                            Ok(read) => read?,
                            Err(_) => None,
                        }
                    }
                    read => read,
                };
                match read {
                    None => return Ok(Ended::Closed),
                    Some(0) if pending.is_empty() => return Ok(Ended::Closed),
                    // Closed mid-head: hyper says what it says about a truncated head.
                    Some(0) => return Ok(Ended::Handover(pending)),
                    Some(_) => {}
                }
            };
            read_head.map(|(req, close_requested)| {
                let is_head = req.method() == Method::HEAD;
                // The request's future is large (the whole pipeline's state machines) and
                // lives only while the request does: boxed, an idle connection holds none.
                (Box::pin(handle(req)), is_head, close_requested)
            })
        };
        let Some((answer, is_head, close_requested)) = next else {
            io.write_all(URI_TOO_LONG).await?;
            let _ = io.shutdown().await;
            return Ok(Ended::Closed);
        };
        let (writing, close) = {
            let Ok(response) = answer.await;
            // The gateway closes after a refusal that leaves the stream in doubt.
            let close = close_requested
                || closing.load(Ordering::Relaxed)
                || response
                    .headers()
                    .get(CONNECTION)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            // Boxed like the request's future: the answer's state lives while it is written.
            (
                Box::pin(write_response(io, response, is_head, close)),
                close,
            )
        };
        if !writing.await? || close {
            let _ = io.shutdown().await;
            return Ok(Ended::Closed);
        }
    }
}

/// How the response body is framed on the wire.
#[derive(Clone, Copy)]
enum Framing {
    /// No body bytes at all (HEAD, 1xx, 204, 304).
    None,
    /// `Content-Length`: exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// The response head in a buffer sized for it and, when small, the body that follows in the
/// same write; with the framing the body gets.
fn head(
    parts: &http::response::Parts,
    body: &mut ResponseBody,
    is_head: bool,
    close: bool,
) -> (BytesMut, Framing) {
    let origin = body.take_origin_fields();
    let fields: usize = origin.as_ref().map_or(0, OriginFields::wire_len)
        + parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    let small_body = body
        .size_hint()
        .exact()
        .filter(|n| *n <= COPY_LIMIT as u64)
        .map_or(0, |n| n as usize);
    let mut out = BytesMut::with_capacity(128 + fields + small_body);
    let framing = encode_head(&mut out, parts, origin.as_ref(), body, is_head, close);
    (out, framing)
}

/// Writes one response; `Ok(false)` when the connection cannot carry another (the body
/// failed or did not match its length).
async fn write_response<I: AsyncWrite + Unpin>(
    io: &mut I,
    response: Response<ResponseBody>,
    is_head: bool,
    close: bool,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let (mut out, framing) = head(&parts, &mut body, is_head, close);
    let mut body = pin!(body);
    let mut remaining = match framing {
        Framing::None => {
            io.write_all(&out).await?;
            return Ok(true);
        }
        Framing::Length(n) => n,
        Framing::Chunked => u64::MAX,
    };
    let chunked = matches!(framing, Framing::Chunked);
    loop {
        // The next piece without waiting when it is already there (then head and body go
        // out in one write); otherwise what was gathered goes out first.
        let frame = match poll_once(body.as_mut()) {
            Some(frame) => frame,
            None => {
                if !out.is_empty() {
                    io.write_all(&out).await?;
                    out.clear();
                }
                std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        let mut data = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed; closing the connection");
                if !out.is_empty() {
                    io.write_all(&out).await?;
                }
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers are not sent on HTTP/1.1 here.
                Err(_) => continue,
            },
        };
        if data.is_empty() {
            continue;
        }
        let overflow = data.len() as u64 > remaining;
        if overflow {
            // More than the declared length: send what was declared, then close.
            data.truncate(usize::try_from(remaining).unwrap_or(usize::MAX));
        }
        if chunked {
            let _ = write!(out, "{:x}\r\n", data.len());
        } else {
            remaining -= data.len() as u64;
        }
        if data.len() <= COPY_LIMIT {
            out.put_slice(&data);
        } else {
            let mut both = (&mut out).chain(&mut data);
            io.write_all_buf(&mut both).await?;
            out.clear();
        }
        if chunked {
            out.put_slice(b"\r\n");
        }
        if overflow {
            io.write_all(&out).await?;
            return Ok(false);
        }
    }
    if chunked {
        out.put_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        io.write_all(&out).await?;
    }
    // A body shorter than its declared length leaves the client waiting: close.
    Ok(chunked || remaining == 0)
}

/// Polls the body once, with a waker that does nothing: `Some` when a frame (or the end) is
/// already there.
fn poll_once(
    body: Pin<&mut ResponseBody>,
) -> Option<Option<Result<http_body::Frame<Bytes>, crate::pipeline::body::BoxError>>> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match body.poll_frame(&mut cx) {
        Poll::Ready(frame) => Some(frame),
        Poll::Pending => None,
    }
}

/// Writes `content-length: n` (digits by hand: the formatter cost about 400 instructions per
/// response).
fn put_length(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(b"content-length: ");
    out.put_slice(&digits[at..]);
    out.put_slice(b"\r\n");
}

/// The status line and fields (the origin's lines as they came, then the map's), plus the
/// framing the body gets.
fn encode_head(
    out: &mut BytesMut,
    parts: &http::response::Parts,
    origin: Option<&OriginFields>,
    body: &ResponseBody,
    is_head: bool,
    close: bool,
) -> Framing {
    let status = parts.status;
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // RFC 9110 8.6: no Content-Length on 1xx and 204 answers (a 304 may carry the length of
    // what a GET would have sent).
    let length_allowed = !status.is_informational() && status != StatusCode::NO_CONTENT;
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    let mut length: Option<u64> = None;
    let mut has_date = false;
    if let Some(origin) = origin {
        origin.write_to(out);
        has_date = origin.has_date;
        length = origin.content_length.filter(|_| length_allowed);
        if let Some(n) = length {
            put_length(out, n);
        }
    }
    for (name, value) in &parts.headers {
        if *name == TRANSFER_ENCODING || *name == CONNECTION {
            // The framing and the connection's fate are decided here.
            continue;
        }
        if *name == CONTENT_LENGTH {
            if !length_allowed {
                continue;
            }
            let n = value
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            if n.is_none() || length.is_some() {
                continue;
            }
            length = n;
        }
        if *name == DATE {
            has_date = true;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if !has_date {
        date::put(out);
    }
    if close {
        out.put_slice(b"connection: close\r\n");
    }
    let framing = if no_body {
        Framing::None
    } else if let Some(n) = length {
        if is_head {
            Framing::None
        } else {
            Framing::Length(n)
        }
    } else if let Some(n) = body.size_hint().exact() {
        if !is_head || n > 0 {
            put_length(out, n);
        }
        if is_head {
            Framing::None
        } else {
            Framing::Length(n)
        }
    } else if is_head {
        Framing::None
    } else {
        out.put_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    out.put_slice(b"\r\n");
    framing
}

/// The `Date` value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;

    use bytes::{BufMut, BytesMut};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    /// Appends the `date` field line.
    pub(super) fn put(out: &mut BytesMut) {
        let secs = crate::clock::coarse_unix_secs();
        CACHED.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs || c.1.is_empty() {
                *c = (secs, httpdate::fmt_http_date(std::time::SystemTime::now()));
            }
            out.put_slice(b"date: ");
            out.put_slice(c.1.as_bytes());
            out.put_slice(b"\r\n");
        });
    }
}

pin_project_lite::pin_project! {
    /// An I/O that yields `prefix` before reading from `inner` (the bytes the fast path read
    /// before handing the connection to hyper).
    pub(super) struct Rewind<I> {
        prefix: Bytes,
        #[pin]
        inner: I,
    }
}

impl<I> Rewind<I> {
    pub(super) fn new(prefix: Bytes, inner: I) -> Self {
        Self { prefix, inner }
    }
}

impl<I: AsyncRead> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

super::write_through!(Rewind);

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Parsed {
        parse(&Bytes::copy_from_slice(text.as_bytes()), 8192)
    }

    #[test]
    fn a_body_less_request_is_served_here() {
        let Parsed::Complete { req, len, close } = parsed(
            "GET /a?b=c HTTP/1.1\r\nHost: ville.test\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next",
        ) else {
            panic!("complete head expected");
        };
        assert_eq!(
            len,
            "GET /a?b=c HTTP/1.1\r\nHost: ville.test\r\nX-Two: 1\r\nx-two: 2\r\n\r\n".len()
        );
        assert!(!close);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/a");
        assert_eq!(req.uri().query(), Some("b=c"));
        assert_eq!(req.headers()["host"], "ville.test");
        let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"]);
        let Parsed::Complete { close, .. } =
            parsed("HEAD / HTTP/1.1\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n")
        else {
            panic!("complete head expected");
        };
        assert!(close);
    }

    #[test]
    fn a_cut_head_waits_for_more() {
        for cut in ["G", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: a\r\n\r"] {
            assert!(matches!(parsed(cut), Parsed::Partial), "{cut:?}");
        }
    }

    #[test]
    fn heads_past_the_limit_go_to_hyper() {
        let head = Bytes::from_static(b"GET / HTTP/1.1\r\nHost: ville.test\r\n\r\n");
        assert!(matches!(parse(&head, head.len()), Parsed::Complete { .. }));
        assert!(matches!(parse(&head, head.len() - 1), Parsed::Elsewhere));
        let cut = head.slice(..20);
        assert!(matches!(parse(&cut, 20), Parsed::Partial));
        assert!(matches!(parse(&cut, 19), Parsed::Elsewhere));
    }

    /// A connection whose reads return the given pieces one at a time, then end; what is
    /// written to it is kept.
    struct Pieces {
        reads: std::collections::VecDeque<&'static [u8]>,
        written: Vec<u8>,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(piece) = self.reads.pop_front() {
                buf.put_slice(piece);
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Pieces {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_head_read_in_pieces_is_joined_and_served() {
        let mut io = Pieces {
            reads: [
                &b"GET /pie"[..],
                b"ces HTTP/1.1\r\nHo",
                b"st: ville.test\r\n\r",
                b"\nGET /next HTTP/1.1\r\n\r\n",
            ]
            .into(),
            written: Vec::new(),
        };
        let seen = std::sync::Mutex::new(Vec::new());
        let handle = |req: Request<DownstreamBody>| {
            seen.lock()
                .unwrap()
                .push(format!("{} {:?}", req.uri(), req.headers().get("host")));
            let body = ResponseBody::local(Bytes::from_static(b"ok"), None);
            std::future::ready(Ok::<_, Infallible>(Response::new(body)))
        };
        let closing = AtomicBool::new(false);
        let ended = serve(&mut io, Bytes::new(), handle, &closing, 8192)
            .await
            .unwrap();
        assert!(matches!(ended, Ended::Closed));
        assert_eq!(
            *seen.lock().unwrap(),
            ["/pieces Some(\"ville.test\")", "/next None"]
        );
        let written = String::from_utf8(io.written).unwrap();
        assert_eq!(
            written.matches("HTTP/1.1 200 OK\r\n").count(),
            2,
            "{written}"
        );
        assert!(written.ends_with("\r\n\r\nok"), "{written}");
    }

    #[test]
    fn small_bodies_of_declared_length_are_read_with_the_head() {
        let head = "POST /form HTTP/1.1\r\nHost: v.test\r\nContent-Length: 5\r\n\r\n";
        // The body not there yet: read on.
        assert!(matches!(parsed(head), Parsed::Partial));
        assert!(matches!(parsed(&format!("{head}abc")), Parsed::Partial));
        let Parsed::Complete { req, len, .. } = parsed(&format!("{head}abcdeGET / HTTP/1.1\r\n"))
        else {
            panic!("not complete");
        };
        assert_eq!(len, head.len() + 5);
        let mut body = req.into_body();
        assert!(!http_body::Body::is_end_stream(&body));
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("no frame");
        };
        assert_eq!(frame.into_data().unwrap(), "abcde");
        assert!(http_body::Body::is_end_stream(&body));
    }

    #[test]
    fn bodies_upgrades_and_old_forms_go_to_hyper() {
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 16385\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://ville.test/ HTTP/1.1\r\n\r\n",
            "CONNECT ville.test:443 HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost ville.test\r\n\r\n",
            "GET / HTTP/1.1\r\nX-Bad: a\x7fb\r\n\r\n",
        ] {
            assert!(matches!(parsed(head), Parsed::Elsewhere), "{head:?}");
        }
    }

    fn head_of(
        status: u16,
        fields: &[(&str, &str)],
        body: &'static [u8],
        is_head: bool,
        close: bool,
    ) -> (String, &'static str) {
        head_with_origin(status, None, fields, body, is_head, close)
    }

    /// The head written for a response with `origin` fields (a proxied answer) and the
    /// pipeline's `fields`.
    fn head_with_origin(
        status: u16,
        origin: Option<OriginFields>,
        fields: &[(&str, &str)],
        body: &'static [u8],
        is_head: bool,
        close: bool,
    ) -> (String, &'static str) {
        let mut body = ResponseBody::local(Bytes::from_static(body), None);
        if let Some(origin) = origin {
            body = body.with_origin_fields(origin);
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in fields {
            resp.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let (parts, mut body) = resp.into_parts();
        let origin = body.take_origin_fields();
        let mut out = BytesMut::new();
        let framing = encode_head(&mut out, &parts, origin.as_ref(), &body, is_head, close);
        let framing = match framing {
            Framing::None => "none",
            Framing::Length(_) => "length",
            Framing::Chunked => "chunked",
        };
        (String::from_utf8(out.to_vec()).unwrap(), framing)
    }

    #[test]
    fn response_heads_say_how_the_body_is_framed() {
        let (head, framing) = head_of(
            200,
            &[("content-type", "text/html")],
            b"hello",
            false,
            false,
        );
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ndate: "),
            "{head}"
        );
        assert!(head.ends_with("content-length: 5\r\n\r\n"), "{head}");
        assert_eq!(framing, "length");
        // The field the pipeline set wins; hop-by-hop framing fields are never copied.
        let (head, _) = head_of(
            200,
            &[
                ("content-length", "5"),
                ("transfer-encoding", "chunked"),
                ("connection", "keep-alive"),
                ("date", "x"),
            ],
            b"hello",
            false,
            true,
        );
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: x\r\nconnection: close\r\n\r\n"
        );
        let (head, framing) = head_of(404, &[("content-length", "1234")], b"", true, false);
        assert!(head.contains("content-length: 1234\r\n"), "{head}");
        assert_eq!(framing, "none");
        let (head, framing) = head_of(204, &[("content-length", "0")], b"", false, false);
        assert!(!head.contains("content-length"), "{head}");
        assert_eq!(framing, "none");
        let (head, framing) = head_of(304, &[("etag", "\"a\"")], b"", false, false);
        assert!(!head.contains("content-length"), "{head}");
        assert_eq!(framing, "none");
        let (head, framing) = head_of(599, &[], b"x", false, false);
        assert!(head.starts_with("HTTP/1.1 599 \r\n"), "{head}");
        assert_eq!(framing, "length");
    }

    #[test]
    fn a_tap_that_rewrites_the_body_makes_the_origin_length_chunked() {
        use crate::pipeline::taps::ResponseTaps;
        let origin = || {
            crate::proxy::fields::from_head(
                "HTTP/1.1 200 OK\r\nServer: o\r\nContent-Length: 3\r\n\r\n",
                Some(3),
            )
        };
        let taps = || ResponseTaps {
            test_rewrite: Some(Box::default()),
            ..ResponseTaps::default()
        };
        let body = ResponseBody::local(Bytes::from_static(b"abc"), None)
            .with_origin_fields(origin())
            .with_taps(taps());
        let (parts, mut body) = Response::new(body).into_parts();
        let fields = body.take_origin_fields();
        assert_eq!(fields.as_ref().and_then(|f| f.content_length), None);
        let mut out = BytesMut::new();
        let framing = encode_head(&mut out, &parts, fields.as_ref(), &body, false, false);
        let head = String::from_utf8(out.to_vec()).unwrap();
        assert!(matches!(framing, Framing::Chunked), "{head}");
        assert!(
            head.contains("server: o\r\n") || head.contains("Server: o\r\n"),
            "{head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("content-length"),
            "{head}"
        );
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        // hyper's paths get the map form: no length either.
        let mapped = crate::pipeline::body::into_map_form(Response::new(
            ResponseBody::local(Bytes::from_static(b"abc"), None)
                .with_origin_fields(origin())
                .with_taps(taps()),
        ));
        assert!(!mapped.headers().contains_key("content-length"));
        assert_eq!(mapped.headers()["server"], "o");
        // Without the tap the origin's length holds.
        let mut plain =
            ResponseBody::local(Bytes::from_static(b"abc"), None).with_origin_fields(origin());
        assert_eq!(
            plain.take_origin_fields().and_then(|f| f.content_length),
            Some(3)
        );
    }

    #[test]
    fn lengths_are_written_in_decimal() {
        for n in [0, 7, 10, 1024, 102_400, u64::MAX] {
            let mut out = BytesMut::new();
            put_length(&mut out, n);
            assert_eq!(&out[..], format!("content-length: {n}\r\n").as_bytes());
        }
    }

    #[test]
    fn origin_lines_go_through_before_the_pipeline_fields() {
        let origin = |status: &str, length| {
            crate::proxy::fields::from_head(
                &format!("HTTP/1.1 {status}\r\nServer: o\r\nContent-Length: 5\r\nDate: d\r\nConnection: x\r\nX: 1\r\n\r\n"),
                length,
            )
        };
        let via = [("via", "1.1 rempart")];
        let (head, framing) = head_with_origin(
            200,
            Some(origin("200 OK", Some(5))),
            &via,
            b"hello",
            false,
            false,
        );
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nServer: o\r\nDate: d\r\ncontent-length: 5\r\nvia: 1.1 rempart\r\n\r\n"
        );
        assert_eq!(framing, "length");
        // HEAD keeps the origin's length; a 204 never carries one; closing is ours to say.
        let (head, framing) =
            head_with_origin(200, Some(origin("200 OK", Some(5))), &via, b"", true, true);
        assert!(
            head.contains("content-length: 5\r\n") && head.contains("connection: close\r\n"),
            "{head}"
        );
        assert_eq!(framing, "none");
        let (head, framing) = head_with_origin(
            204,
            Some(origin("204 No Content", Some(5))),
            &via,
            b"",
            false,
            false,
        );
        assert!(!head.contains("content-length"), "{head}");
        assert_eq!(framing, "none");
        // No length from the origin (chunked): the body's own framing.
        let (head, framing) = head_with_origin(
            200,
            Some(origin("200 OK", None)),
            &via,
            b"hello",
            false,
            false,
        );
        assert!(
            head.ends_with("via: 1.1 rempart\r\ncontent-length: 5\r\n\r\n"),
            "{head}"
        );
        assert_eq!(framing, "length");
        // No `Date` from the origin: ours.
        let bare = crate::proxy::fields::from_head("HTTP/1.1 200 OK\r\nServer: o\r\n\r\n", None);
        let (head, _) = head_with_origin(200, Some(bare), &via, b"", false, false);
        assert!(head.contains("\r\ndate: "), "{head}");
    }
}
