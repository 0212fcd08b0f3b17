//! The upstream HTTP/1.1 client. It runs inside the request's own task: it takes an idle
//! keep-alive connection from the server's pool (or connects), writes the request head and
//! streams the body, parses the response head with `httparse`, and hands back a body that
//! reads straight from the socket and returns the connection to the pool once the message is
//! complete. No connection task and no channels sit between the downstream request and the
//! upstream socket, which is where a generic client spends most of its time per request.
//!
//! Framing follows RFC 9112 section 6: responses to HEAD and 1xx/204/304 have no body,
//! `Transfer-Encoding: chunked` is decoded (and re-framed downstream by hyper), otherwise
//! `Content-Length`, otherwise the body runs to connection close (never reused).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::{RequestBody, RequestBodyError};
use super::fields::{Builder as OriginFieldsBuilder, Name as FieldName, OriginFields};
use super::upstream::UpstreamServer;

/// Largest response head accepted from an origin.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a response head.
const MAX_RESPONSE_HEADERS: usize = 100;
/// Buffer room for a response head (and, usually, a small body with it). Kept small: cache
/// footprint per request is what limits throughput with hundreds of connections (see
/// BENCHMARKS.md).
const HEAD_CHUNK: usize = 4 * 1024;
/// Request bodies up to this size are sent in the same write as the head.
const SMALL_BODY: u64 = 16 * 1024;
/// Read size for bodies of unknown length (chunked, or until the origin closes).
const BODY_CHUNK: usize = 16 * 1024;
/// Largest read of a body whose length is known: a 100 KiB download then takes two reads
/// and two writes downstream instead of seven (measured: 1.3x the requests/s on the proxy
/// benchmark's 100 KiB rows), while one response never holds more than this in flight.
const LENGTH_BODY_CHUNK: usize = 64 * 1024;
/// Idle connections older than this are closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// An idle connection unused for longer than this is checked for a close by the origin.
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// How an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No TCP connection could be opened (safe to retry elsewhere).
    #[error("connect: {0}")]
    Connect(io::Error),
    /// The connect timeout passed.
    #[error("connect timeout")]
    ConnectTimeout,
    /// The request body exceeded its limit.
    #[error("request body too large")]
    BodyTooLarge,
    /// The downstream body failed while we forwarded it.
    #[error("downstream body failed")]
    DownstreamBody,
    /// The downstream body came slower than the minimum data rate.
    #[error("downstream body too slow")]
    DownstreamTooSlow,
    /// The connection failed or the origin sent something invalid.
    #[error("upstream: {0}")]
    Failed(&'static str),
}

/// A live connection to an upstream server.
#[derive(Debug)]
pub struct UpstreamConn {
    stream: TcpStream,
    buf: BytesMut,
    idle_since: Instant,
}

/// The idle connections of one server.
#[derive(Debug, Default)]
pub struct IdlePool {
    conns: std::sync::Mutex<Vec<UpstreamConn>>,
}

impl IdlePool {
    fn take(&self, now: Instant) -> Option<UpstreamConn> {
        let mut conns = self.conns.lock().ok()?;
        // Most recently used first: it is the least likely to have been closed.
        while let Some(conn) = conns.pop() {
            if now.saturating_duration_since(conn.idle_since) < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    /// Closes idle connections that are too old or that the origin has closed (otherwise they
    /// would sit in CLOSE_WAIT until traffic picks them). Returns how many were closed.
    pub fn sweep(&self, now: Instant) -> usize {
        let Ok(mut conns) = self.conns.lock() else {
            return 0;
        };
        let before = conns.len();
        conns.retain(|c| {
            now.saturating_duration_since(c.idle_since) < IDLE_TIMEOUT && !looks_closed(c)
        });
        before - conns.len()
    }

    fn put(&self, mut conn: UpstreamConn, max_idle: usize) {
        conn.idle_since = Instant::now();
        // An idle connection owns no buffer: the next request on it takes a freshly freed
        // one from the allocator, still in the CPU cache, instead of this connection's own,
        // which has gone cold while other connections were served.
        conn.buf = BytesMut::new();
        if let Ok(mut conns) = self.conns.lock() {
            if conns.len() < max_idle {
                conns.push(conn);
            }
        }
    }
}

/// Client settings.
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Idle connections kept per server.
    pub max_idle_per_server: usize,
}

/// What to send.
pub struct OutgoingRequest<'a> {
    /// Method.
    pub method: &'a Method,
    /// Origin-form target (`/path?query`).
    pub target: &'a str,
    /// Header fields, hop-by-hop already removed (framing is decided here).
    pub headers: &'a HeaderMap,
    /// The gateway's forwarding fields, sent after `headers`.
    pub forwarding: Option<&'a super::headers::ForwardingFields>,
    /// Declared body length, if any.
    pub content_length: Option<u64>,
    /// Whether this is an upgrade request (no body; the connection becomes a tunnel).
    pub upgrade: bool,
}

/// The response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status.
    pub status: StatusCode,
    /// Header fields as received (hop-by-hop and framing lines marked, not removed).
    pub fields: OriginFields,
}

/// The outcome of a successful exchange up to the response head.
pub enum Exchange {
    /// A normal response with its streaming body.
    Response(ResponseHead, UpstreamBody),
    /// `101 Switching Protocols`: the raw connection (plus bytes already read) to tunnel.
    Upgraded(ResponseHead, TcpStream, Bytes),
}

async fn connect(
    server: &UpstreamServer,
    settings: ClientSettings,
) -> Result<UpstreamConn, ClientError> {
    let addr = server.authority.as_str();
    let stream =
        match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ClientError::Connect(e)),
            Err(_) => return Err(ClientError::ConnectTimeout),
        };
    let _ = stream.set_nodelay(true);
    Ok(UpstreamConn {
        stream,
        buf: BytesMut::new(),
        idle_since: Instant::now(),
    })
}

/// Asks the kernel to acknowledge what the origin sent at once instead of delaying the ACK.
/// While a large body streams in, a delayed ACK (about 40 ms on Linux) can hold the origin's
/// next segment back: on the proxy benchmark's 100 KiB rows 2 % to 5 % of the answers took
/// 30 to 45 ms because of it, and p99 went from about 35 ms to 6 ms with this call (see
/// BENCHMARKS.md). Quick-ACK mode does not stick, so it is asked for before each body read;
/// small answers (one read) never pay for the system call.
fn ack_now(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// An idle connection the origin already closed shows EOF (or data) when probed.
fn looks_closed(conn: &UpstreamConn) -> bool {
    let mut probe = [0u8; 1];
    !matches!(conn.stream.try_read(&mut probe), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
}

fn encode_head(req: &OutgoingRequest<'_>, chunked: bool, out: &mut BytesMut) {
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in req.forwarding.iter().flat_map(|f| f.iter()) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if let Some(n) = req.content_length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Sends `req` with `body` to `server` and reads the response head.
///
/// A reused keep-alive connection that turns out to be closed before any response byte is
/// retried once on a fresh connection when the body had not started.
pub async fn send(
    server: &Arc<UpstreamServer>,
    settings: ClientSettings,
    req: OutgoingRequest<'_>,
    mut body: RequestBody,
) -> Result<Exchange, ClientError> {
    let chunked = !Body::is_end_stream(&body) && req.content_length.is_none() && !req.upgrade;
    let small = Body::size_hint(&body)
        .exact()
        .filter(|n| *n <= SMALL_BODY)
        .unwrap_or(0);
    let mut head = BytesMut::with_capacity(512 + small as usize);
    encode_head(&req, chunked, &mut head);
    // A small body already stored goes in the same write as the head (and, being there, is
    // sent again if a reused connection turns out closed).
    if !chunked {
        if let Some(small) = body.take_small(SMALL_BODY) {
            head.extend_from_slice(&small);
        }
    }
    let body_empty = Body::is_end_stream(&body);
    let mut fresh_only = false;
    loop {
        let now = Instant::now();
        let pooled = if fresh_only {
            None
        } else {
            server.idle.take(now)
        };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c)
                if now.saturating_duration_since(c.idle_since) > PROBE_AFTER
                    && looks_closed(&c) =>
            {
                connect(server, settings).await?
            }
            Some(c) => c,
            None => connect(server, settings).await?,
        };
        if let Err(e) = conn.stream.write_all(&head).await {
            if reused {
                fresh_only = true;
                continue;
            }
            tracing::debug!(error = %e, "upstream write failed");
            return Err(ClientError::Failed("write failed"));
        }
        let sent_body = !body_empty;
        if sent_body {
            write_body(&mut conn.stream, &mut body, chunked).await?;
        }
        match read_head(&mut conn, req.method).await {
            Ok(parsed) => return finish(parsed, conn, server, settings, req.upgrade),
            Err(HeadError::ClosedBeforeResponse) if reused && !sent_body => {
                fresh_only = true;
                continue;
            }
            Err(HeadError::ClosedBeforeResponse) => {
                return Err(ClientError::Failed("connection closed before the response"))
            }
            Err(HeadError::Invalid(what)) => return Err(ClientError::Failed(what)),
        }
    }
}

async fn write_body(
    stream: &mut TcpStream,
    body: &mut RequestBody,
    chunked: bool,
) -> Result<(), ClientError> {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(RequestBodyError::TooLarge) => return Err(ClientError::BodyTooLarge),
            Err(RequestBodyError::Downstream(_)) => return Err(ClientError::DownstreamBody),
            Err(RequestBodyError::TooSlow) => return Err(ClientError::DownstreamTooSlow),
            Err(RequestBodyError::Stored(_)) => {
                return Err(ClientError::Failed("stored request body unreadable"))
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let result = if chunked {
            let mut piece = BytesMut::with_capacity(data.len() + 16);
            piece.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            piece.extend_from_slice(&data);
            piece.extend_from_slice(b"\r\n");
            stream.write_all(&piece).await
        } else {
            stream.write_all(&data).await
        };
        result.map_err(|_| ClientError::Failed("write failed"))?;
    }
    if chunked {
        stream
            .write_all(b"0\r\n\r\n")
            .await
            .map_err(|_| ClientError::Failed("write failed"))?;
    }
    Ok(())
}

enum HeadError {
    ClosedBeforeResponse,
    Invalid(&'static str),
}

struct ParsedHead {
    head: ResponseHead,
    framing: Framing,
    keep_alive: bool,
}

async fn read_head(conn: &mut UpstreamConn, method: &Method) -> Result<ParsedHead, HeadError> {
    let mut received_any = false;
    loop {
        if !conn.buf.is_empty() {
            match parse_head(&mut conn.buf, method)? {
                Some(parsed) => {
                    // Interim responses (100 Continue, 103 Early Hints) are skipped.
                    if parsed.head.status.is_informational()
                        && parsed.head.status != StatusCode::SWITCHING_PROTOCOLS
                    {
                        continue;
                    }
                    return Ok(parsed);
                }
                None if conn.buf.len() >= MAX_RESPONSE_HEAD => {
                    return Err(HeadError::Invalid("response head too large"))
                }
                None => {}
            }
        }
        conn.buf.reserve(HEAD_CHUNK);
        let n = read_some(&mut conn.stream, &mut conn.buf)
            .await
            .map_err(|_| {
                if received_any {
                    HeadError::Invalid("connection failed during the response head")
                } else {
                    HeadError::ClosedBeforeResponse
                }
            })?;
        if n == 0 {
            return Err(if received_any {
                HeadError::Invalid("connection closed during the response head")
            } else {
                HeadError::ClosedBeforeResponse
            });
        }
        received_any = true;
    }
}

async fn read_some(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    use tokio::io::AsyncReadExt;
    stream.read_buf(buf).await
}

/// Parses a complete response head at the start of `buf` and splits it off; header values
/// share the head's bytes (no copy). `Ok(None)` when more bytes are needed.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<ParsedHead>, HeadError> {
    // Uninitialised slots: zeroing a large header array on every response costs more than
    // parsing a typical head.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let consumed = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::Invalid("malformed response head")),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(HeadError::Invalid("bad status"))?;
    let http10 = resp.version == Some(0);
    let base = buf.as_ptr() as usize;
    let mut fields = OriginFieldsBuilder::with_capacity(resp.headers.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut has_transfer_encoding = false;
    let mut close = false;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let kind = FieldName::of(name);
        match kind {
            FieldName::ContentLength => {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or(HeadError::Invalid("bad content-length"))?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(HeadError::Invalid("conflicting content-length"));
                }
                content_length = Some(n);
            }
            FieldName::TransferEncoding => {
                has_transfer_encoding = true;
                let last = h.value.rsplit(|b| *b == b',').next().unwrap_or(b"");
                chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
                if !chunked {
                    // Not chunked-terminated: length is "until close" (RFC 9112 6.3 rule 4).
                    close = true;
                }
            }
            _ => {}
        }
        fields.push(buf, base, name, kind, h.value);
    }
    // The builder read the `Connection` tokens.
    close |= fields.connection_close(http10);
    if has_transfer_encoding && content_length.is_some() {
        // Both framings: trust chunked, never forward the length (RFC 9112 6.3 rule 3).
        content_length = None;
        close = true;
    }
    let fields = fields.finish(buf.split_to(consumed).freeze(), content_length);
    let framing = if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(ChunkState::Size)
    } else if has_transfer_encoding {
        Framing::UntilClose
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let keep_alive = !close && !matches!(framing, Framing::UntilClose);
    Ok(Some(ParsedHead {
        head: ResponseHead { status, fields },
        framing,
        keep_alive,
    }))
}

fn finish(
    parsed: ParsedHead,
    conn: UpstreamConn,
    server: &Arc<UpstreamServer>,
    settings: ClientSettings,
    upgrade: bool,
) -> Result<Exchange, ClientError> {
    if parsed.head.status == StatusCode::SWITCHING_PROTOCOLS {
        if !upgrade {
            return Err(ClientError::Failed("unsolicited 101"));
        }
        let UpstreamConn { stream, buf, .. } = conn;
        return Ok(Exchange::Upgraded(parsed.head, stream, buf.freeze()));
    }
    let body = UpstreamBody {
        conn: Some(conn),
        framing: parsed.framing,
        keep_alive: parsed.keep_alive,
        server: server.clone(),
        max_idle: settings.max_idle_per_server,
    };
    let mut body = body;
    body.release_if_done();
    Ok(Exchange::Response(parsed.head, body))
}

/// Where a response body is in its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    /// Chunked, in this state.
    Chunked(ChunkState),
    /// Until the origin closes.
    UntilClose,
    /// Finished.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines until an empty one.
    Trailers,
}

/// A response body read straight from the upstream socket.
#[derive(Debug)]
pub struct UpstreamBody {
    conn: Option<UpstreamConn>,
    framing: Framing,
    keep_alive: bool,
    server: Arc<UpstreamServer>,
    max_idle: usize,
}

impl UpstreamBody {
    /// Returns the connection to the pool when the message is complete.
    fn release_if_done(&mut self) {
        if matches!(self.framing, Framing::Length(0)) {
            self.framing = Framing::Done;
        }
        if self.framing == Framing::Done {
            if let Some(conn) = self.conn.take() {
                if self.keep_alive && conn.buf.is_empty() {
                    self.server.idle.put(conn, self.max_idle);
                }
            }
        }
    }

    /// Takes the next decodable piece out of the buffer, if any.
    fn decode(&mut self) -> Result<Option<Bytes>, &'static str> {
        match self.conn.as_mut() {
            Some(conn) => decode(&mut self.framing, &mut conn.buf),
            None => Ok(None),
        }
    }
}

/// Takes the next piece of body out of `buf` according to `framing` (advancing it).
fn decode(framing: &mut Framing, buf: &mut BytesMut) -> Result<Option<Bytes>, &'static str> {
    {
        loop {
            match *framing {
                Framing::Done => return Ok(None),
                Framing::Length(0) => {
                    *framing = Framing::Done;
                    return Ok(None);
                }
                Framing::Length(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                    *framing = Framing::Length(n - take as u64);
                    return Ok(Some(buf.split_to(take).freeze()));
                }
                Framing::UntilClose => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(buf.split().freeze()));
                }
                Framing::Chunked(ChunkState::Size) => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((consumed, 0))) => {
                        buf.advance(consumed);
                        *framing = Framing::Chunked(ChunkState::Trailers);
                    }
                    Ok(httparse::Status::Complete((consumed, size))) => {
                        buf.advance(consumed);
                        *framing = Framing::Chunked(ChunkState::Data(size));
                    }
                    Ok(httparse::Status::Partial) => {
                        if buf.len() > 1024 {
                            return Err("chunk size line too long");
                        }
                        return Ok(None);
                    }
                    Err(_) => return Err("bad chunk size"),
                },
                Framing::Chunked(ChunkState::Data(n)) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                    let left = n - take as u64;
                    *framing = Framing::Chunked(if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    });
                    return Ok(Some(buf.split_to(take).freeze()));
                }
                Framing::Chunked(ChunkState::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("missing CRLF after chunk");
                    }
                    buf.advance(2);
                    *framing = Framing::Chunked(ChunkState::Size);
                }
                Framing::Chunked(ChunkState::Trailers) => {
                    // Trailer fields are dropped; stop at the empty line.
                    let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > 16 * 1024 {
                            return Err("trailers too large");
                        }
                        return Ok(None);
                    };
                    buf.advance(pos + 2);
                    if pos == 0 {
                        *framing = Framing::Done;
                    }
                }
            }
        }
    }
}

/// Fuzzing entry (see `crate::fuzzing`): parse a head from `buf`, then decode what follows
/// with every framing the head can select, checking that decoding only ever shrinks `buf`.
#[doc(hidden)]
pub fn fuzz_response(buf: &mut BytesMut) {
    for method in [Method::GET, Method::HEAD] {
        let mut copy = buf.clone();
        if let Ok(Some(parsed)) = parse_head(&mut copy, &method) {
            // The written form is whole CR LF lines; the map form takes every forwarded line.
            let fields = &parsed.head.fields;
            let mut out = BytesMut::new();
            fields.write_to(&mut out);
            assert_eq!(out.len(), fields.wire_len());
            assert!(out.is_empty() || out.ends_with(b"\r\n"));
            let _ = fields.to_header_map(true, 0);
            let mut framing = parsed.framing;
            let mut before = copy.len();
            while let Ok(Some(_)) = decode(&mut framing, &mut copy) {
                assert!(copy.len() < before || framing == Framing::Done);
                before = copy.len();
            }
        }
    }
    // The same bytes as a chunked body.
    let mut framing = Framing::Chunked(ChunkState::Size);
    while let Ok(Some(_)) = decode(&mut framing, buf) {}
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            match this.decode() {
                Ok(Some(data)) => {
                    this.release_if_done();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) => {}
                Err(what) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        what,
                    ))));
                }
            }
            this.release_if_done();
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if this.framing == Framing::Done {
                return Poll::Ready(None);
            }
            let want = match this.framing {
                Framing::Length(n) => usize::try_from(n).map_or(LENGTH_BODY_CHUNK, |n| {
                    n.clamp(HEAD_CHUNK, LENGTH_BODY_CHUNK)
                }),
                _ => BODY_CHUNK,
            };
            conn.buf.reserve(want);
            if want > HEAD_CHUNK {
                ack_now(&conn.stream);
            }
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.stream),
                cx,
                &mut conn.buf
            ))?;
            if n == 0 {
                this.conn = None;
                if this.framing == Framing::UntilClose {
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "origin closed mid-body",
                ))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn head(raw: &str, method: &Method) -> ParsedHead {
        let mut buf = BytesMut::from(raw.as_bytes());
        buf.extend_from_slice(b"BODY");
        match parse_head(&mut buf, method) {
            Ok(Some(parsed)) => {
                assert_eq!(&buf[..], b"BODY", "the head is split off exactly");
                parsed
            }
            _ => panic!("did not parse: {raw:?}"),
        }
    }

    /// Feeds `wire` in pieces of `step` bytes and collects the decoded body.
    fn decode_all(
        mut framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Framing), &'static str> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(data) = decode(&mut framing, &mut buf)? {
                out.extend_from_slice(&data);
            }
        }
        Ok((out, framing))
    }

    #[tokio::test]
    async fn sweep_closes_connections_the_origin_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = IdlePool::default();
        let mut server_sides = Vec::new();
        for _ in 0..2 {
            let stream = TcpStream::connect(addr).await.unwrap();
            server_sides.push(listener.accept().await.unwrap().0);
            pool.put(
                UpstreamConn {
                    stream,
                    buf: BytesMut::new(),
                    idle_since: Instant::now(),
                },
                8,
            );
        }
        assert_eq!(pool.sweep(Instant::now()), 0, "both alive");
        drop(server_sides.pop());
        // The FIN arrives asynchronously: poll until the sweep sees it (bounded).
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut closed = 0;
        while closed == 0 && Instant::now() < deadline {
            tokio::task::yield_now().await;
            closed = pool.sweep(Instant::now());
        }
        assert_eq!(closed, 1);
        assert_eq!(
            pool.sweep(Instant::now() + IDLE_TIMEOUT),
            1,
            "the other one aged out"
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let get = Method::GET;
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", &get).framing,
            Framing::Length(5)
        );
        let chunked = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            &get,
        );
        assert_eq!(chunked.framing, Framing::Chunked(ChunkState::Size));
        assert!(chunked.keep_alive);
        assert_eq!(
            head(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                &Method::HEAD
            )
            .framing,
            Framing::Length(0)
        );
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n", &get).framing,
            Framing::Length(0)
        );
        assert_eq!(
            head(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                &get
            )
            .framing,
            Framing::Length(0)
        );
        let until_close = head("HTTP/1.1 200 OK\r\n\r\n", &get);
        assert_eq!(until_close.framing, Framing::UntilClose);
        assert!(!until_close.keep_alive);
        assert!(
            !head(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                &get
            )
            .keep_alive
        );
        assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", &get).keep_alive);
        assert!(
            head(
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                &get
            )
            .keep_alive
        );
        // Both framings: chunked wins, the length is dropped, the connection is not reused.
        let both = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            &get,
        );
        assert_eq!(both.framing, Framing::Chunked(ChunkState::Size));
        assert_eq!(both.head.fields.content_length, None);
        assert!(both.head.fields.get("content-length").is_none());
        assert!(!both.keep_alive);
    }

    #[test]
    fn bad_heads_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            assert!(
                parse_head(&mut BytesMut::from(raw.as_bytes()), &Method::GET).is_err(),
                "{raw:?}"
            );
        }
        assert!(matches!(
            parse_head(
                &mut BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-"[..]),
                &Method::GET
            ),
            Ok(None)
        ));
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_split() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n";
        for step in 1..wire.len() {
            let (body, framing) =
                decode_all(Framing::Chunked(ChunkState::Size), wire, step).unwrap();
            assert_eq!(body, b"hello, world", "step {step}");
            assert_eq!(framing, Framing::Done, "step {step}");
        }
        assert!(decode_all(Framing::Chunked(ChunkState::Size), b"zz\r\n", 4).is_err());
        assert!(decode_all(Framing::Chunked(ChunkState::Size), b"3\r\nabcXY", 8).is_err());
    }

    #[test]
    fn length_bodies_stop_at_the_length() {
        let mut framing = Framing::Length(4);
        let mut buf = BytesMut::from(&b"abcdEXTRA"[..]);
        assert_eq!(
            decode(&mut framing, &mut buf).unwrap().unwrap(),
            Bytes::from_static(b"abcd")
        );
        assert_eq!(decode(&mut framing, &mut buf).unwrap(), None);
        assert_eq!(framing, Framing::Done);
        assert_eq!(&buf[..], b"EXTRA");
    }

    #[test]
    fn request_head_sets_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("ville.test"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let req = OutgoingRequest {
            method: &Method::POST,
            target: "/f?x=1",
            headers: &headers,
            forwarding: None,
            content_length: Some(3),
            upgrade: false,
        };
        let mut out = BytesMut::new();
        encode_head(&req, false, &mut out);
        assert_eq!(
            &out[..],
            b"POST /f?x=1 HTTP/1.1\r\nhost: ville.test\r\ncontent-length: 3\r\n\r\n"
        );
        let mut out = BytesMut::new();
        encode_head(
            &OutgoingRequest {
                content_length: None,
                ..req
            },
            true,
            &mut out,
        );
        assert_eq!(
            &out[..],
            b"POST /f?x=1 HTTP/1.1\r\nhost: ville.test\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
