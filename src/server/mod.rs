//! Downstream listeners: accept (with the connection cap), optional PROXY protocol header,
//! optional TLS, then HTTP/1.1 (the `h1` fast path, hyper for what it does not serve) or HTTP/2
//! (ALPN or h2c prior knowledge, hyper) into `pipeline::Gateway::handle`. Each connection has a
//! header-read timeout and an idle watchdog; shutdown stops accepting and drains connections up
//! to the configured deadline.

/// `AsyncWrite` for a pin-projected wrapper that only watches or replays reads: every write
/// goes straight to its `inner` stream.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<S: tokio::io::AsyncWrite> tokio::io::AsyncWrite for $wrapper<S> {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.project().inner.poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.project().inner.poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.project().inner.poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.project().inner.poll_shutdown(cx)
            }
        }
    };
}
use write_through;

pub(crate) mod h1;
pub mod proxy_protocol;
pub mod record;
pub mod tls;
pub mod watchdog;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::coarse_now_ms;
use crate::config::runtime::{Listener, ListenerProtocol};
use crate::pipeline::ResponseBody;
use crate::pipeline::{ConnInfo, Gateway};
use crate::proxy::body::DownstreamBody;
use crate::signals::ConnTrip;
use watchdog::{ConnClock, OnlyWhenWoken, Verdict};

/// Connections an address may hold on top of `max_connections_per_address` for each
/// verified client seen behind it (a browser keeps up to six per host).
const CONNECTIONS_PER_SHARED_CLIENT: usize = 6;
/// Most verified clients one address is credited with for its connection cap.
const MAX_SHARED_CLIENTS_PER_ADDRESS: u32 = 2000;

/// Open connections per client address, for the per-address cap.
#[derive(Debug, Default)]
struct PerAddress {
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, AddressConns>>,
}

/// One address's open connections.
#[derive(Debug, Default)]
struct AddressConns {
    count: usize,
    /// Their clocks, to choose which makes room for a newcomer when the address is full.
    clocks: Vec<std::sync::Weak<ConnClock>>,
}

/// Holds one of an address's connection slots until dropped.
struct AddressSlot<'a> {
    table: &'a PerAddress,
    ip: std::net::IpAddr,
    /// The address of the slot's clock: which entry of the table is its own.
    clock: usize,
}

impl PerAddress {
    /// Takes a slot for `ip`'s connection `clock` under `cap`, or `shared_cap` (asked only
    /// when `cap` is reached: an address carrying many residents' passes). A full address
    /// makes room by closing its oldest connection that was never answered and waits for its
    /// first request head (slowloris holding a shared address's slots), so the residents
    /// behind it keep getting in. Returns the slot and whether a connection was closed for
    /// it; `None` when the address is full and none of its connections can be closed.
    fn acquire(
        &self,
        ip: std::net::IpAddr,
        cap: usize,
        shared_cap: impl FnOnce() -> usize,
        clock: &Arc<ConnClock>,
    ) -> Option<(AddressSlot<'_>, bool)> {
        let mut open = self.open.lock().ok()?;
        let conns = open.entry(ip).or_default();
        let mut evicted = false;
        if conns.count >= cap && conns.count >= shared_cap() {
            let victim = conns
                .clocks
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .filter(|c| c.evictable())
                .min_by_key(|c| c.born())?;
            if !victim.evict() {
                return None;
            }
            evicted = true;
        }
        conns.count += 1;
        conns.clocks.push(Arc::downgrade(clock));
        Some((
            AddressSlot {
                table: self,
                ip,
                clock: Arc::as_ptr(clock) as usize,
            },
            evicted,
        ))
    }
}

impl Drop for AddressSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut open) = self.table.open.lock() {
            if let Some(conns) = open.get_mut(&self.ip) {
                conns.count -= 1;
                if conns.count == 0 {
                    open.remove(&self.ip);
                } else if let Some(i) = conns
                    .clocks
                    .iter()
                    .position(|c| c.as_ptr() as usize == self.clock)
                {
                    conns.clocks.swap_remove(i);
                }
            }
        }
    }
}

/// Listeners bound and serving, plus what is needed to drain them.
pub struct Server {
    /// Bound addresses, in config order (useful with port 0).
    pub local_addrs: Vec<SocketAddr>,
    /// A duplicate of each listening socket, in config order: what an upgrade hands to the
    /// next process (the accept loops own the originals).
    listening: Vec<std::os::fd::OwnedFd>,
    /// Stops the accept loops only (an upgrade: the next process accepts from now on).
    accepting: CancellationToken,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Server {
    /// Binds every listener of the current configuration and starts serving. A listening
    /// socket of `inherited` (systemd's socket activation, or the process before an upgrade)
    /// bound to a listener's address is used instead of binding it again.
    pub async fn start(
        gateway: Arc<Gateway>,
        mut inherited: Vec<std::net::TcpListener>,
    ) -> io::Result<Self> {
        let generation = gateway.current();
        let config = &generation.config;
        let accepting = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(config.limits.max_connections));
        let per_address = Arc::new(PerAddress::default());
        let tls = if config.has_tls_listener() {
            let cfg = tls::server_config(&gateway).map_err(io::Error::other)?;
            Some(TlsAcceptor::from(cfg))
        } else {
            None
        };
        let mut local_addrs = Vec::new();
        let mut listening = Vec::new();
        for spec in &config.listeners {
            let taken = inherited
                .iter()
                .position(|l| l.local_addr().is_ok_and(|a| a == spec.address))
                .map(|i| inherited.swap_remove(i));
            let listener = match taken {
                Some(l) => {
                    l.set_nonblocking(true)?;
                    tracing::info!(listener = %spec.name, address = %spec.address, "listening socket inherited");
                    TcpListener::from_std(l)?
                }
                None => bind(spec.address)?,
            };
            local_addrs.push(listener.local_addr()?);
            listening.push(std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?);
            let acceptor = (spec.protocol == ListenerProtocol::Https)
                .then(|| tls.clone())
                .flatten();
            let shared = Shared {
                gateway: gateway.clone(),
                permits: permits.clone(),
                per_address: per_address.clone(),
                accepting: accepting.clone(),
                shutdown: shutdown.clone(),
                tracker: tracker.clone(),
            };
            tracker.spawn(accept_loop(listener, spec.clone(), acceptor, shared));
            tracing::info!(listener = %spec.name, address = %local_addrs[local_addrs.len() - 1], "listening");
        }
        for unused in &inherited {
            tracing::warn!(address = ?unused.local_addr().ok(), "an inherited listening socket matches no listener; closed");
        }
        Ok(Self {
            local_addrs,
            listening,
            accepting,
            shutdown,
            tracker,
        })
    }

    /// The listening sockets with their addresses, in config order (duplicates: handing
    /// them to another process leaves these serving).
    pub fn listening(&self) -> impl Iterator<Item = (SocketAddr, std::os::fd::BorrowedFd<'_>)> {
        self.local_addrs
            .iter()
            .copied()
            .zip(self.listening.iter().map(std::os::fd::AsFd::as_fd))
    }

    /// Stops accepting new connections (the next process accepts them from the same
    /// sockets); the open ones go on.
    pub fn stop_accepting(&mut self) {
        self.accepting.cancel();
        self.listening.clear();
    }

    /// Stops accepting, asks every connection to finish its current request, and waits up to
    /// `deadline`. Returns whether everything drained in time.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        self.accepting.cancel();
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// What every accept loop of one server shares.
#[derive(Clone)]
struct Shared {
    gateway: Arc<Gateway>,
    permits: Arc<Semaphore>,
    per_address: Arc<PerAddress>,
    accepting: CancellationToken,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

async fn accept_loop(
    listener: TcpListener,
    spec: Listener,
    tls: Option<TlsAcceptor>,
    shared: Shared,
) {
    let Shared {
        gateway,
        permits,
        per_address,
        accepting,
        shutdown,
        tracker,
    } = shared;
    loop {
        let accepted = tokio::select! {
            _ = accepting.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            trip(&gateway, "rejected_limit", ConnTrip::Rejected);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let gw = gateway.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        let proxy_protocol = spec.proxy_protocol;
        let per_address = per_address.clone();
        // The connection's future is large (its protocol's state machines); boxed once here,
        // the task the runtime moves around on spawn and completion stays a pointer. Unboxed,
        // copying it cost about three quarters of a short connection's instructions.
        tracker.spawn(Box::pin(async move {
            let _permit = permit;
            gw.metrics.connections_active.inc();
            serve_connection(
                stream,
                peer,
                proxy_protocol,
                tls,
                gw.clone(),
                shutdown,
                &per_address,
            )
            .await;
            gw.metrics.connections_active.dec();
        }));
    }
}

// Not an `async fn`: an async block uses what it captured in place, where an `async fn`
// keeps a second copy of its arguments in every held connection's state (with
// `serve_http`'s, about 220 bytes of each connection's task).
#[allow(clippy::manual_async_fn)]
fn serve_connection(
    mut stream: TcpStream,
    mut peer: SocketAddr,
    proxy_protocol: bool,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
    per_address: &PerAddress,
) -> impl Future<Output = ()> + '_ {
    async move {
        let config = gateway.current().config.clone();
        let header_timeout = config.timeouts.downstream_header_read;
        if proxy_protocol {
            match read_proxy_header(&mut stream, peer, header_timeout, &gateway).await {
                Some(addr) => peer = addr,
                None => return,
            }
        }
        // Per-address cap, on the real client address; trusted proxies carry many clients, and
        // so does an address behind which browsers presented many passes lately (a town hall's
        // or a carrier's NAT): it gets `CONNECTIONS_PER_SHARED_CLIENT` more per client.
        let clock = Arc::new(ConnClock::new(coarse_now_ms()));
        let cap = config.limits.max_connections_per_address;
        let _slot = if cap > 0 && !config.is_trusted_proxy(peer.ip()) {
            let shared_cap = || {
                let clients = gateway
                    .current()
                    .shield
                    .verified_clients_anywhere(peer.ip(), coarse_now_ms())
                    .min(MAX_SHARED_CLIENTS_PER_ADDRESS);
                cap.saturating_add(CONNECTIONS_PER_SHARED_CLIENT * clients as usize)
            };
            match per_address.acquire(peer.ip(), cap, shared_cap, &clock) {
                Some((slot, evicted)) => {
                    if evicted {
                        gateway.metrics.connection("evicted_per_address");
                    }
                    Some(slot)
                }
                None => {
                    trip(&gateway, "rejected_per_address", ConnTrip::Rejected);
                    return;
                }
            }
        } else {
            None
        };
        // Made once the connection speaks HTTP (after the handshake or the preface), so a
        // connection held before that carries nothing of it.
        let recorder = || {
            let http_fingerprint = Arc::new(std::sync::OnceLock::new());
            let head =
                record::HeadRecorder::new(config.limits.max_header_bytes, http_fingerprint.clone());
            (Some(head), http_fingerprint)
        };
        let info = |proto, tls_fingerprint, http_fingerprint| {
            Arc::new(ConnInfo {
                peer_value: peer_value(peer),
                forwarded_for: crate::proxy::headers::forwarded_for(peer.ip()),
                peer,
                proto,
                tls_fingerprint,
                http_fingerprint,
                clock: clock.clone(),
                forwarded: Default::default(),
                fingerprint_bucket: std::sync::OnceLock::new(),
            })
        };
        match tls {
            Some(acceptor) => {
                // The handshake's state (rustls') and a TLS connection's serving are boxed: a
                // cleartext connection's task holds neither. The stream (a kilobyte of rustls
                // state) is moved into the boxed serving within a block, so that it is not kept
                // beside it in this task's state.
                let serving = {
                    let handshake = tokio::select! {
                        h = Box::pin(tls_handshake(stream, acceptor, header_timeout, &gateway)) => h,
                        () = clock.evicted() => None,
                    };
                    let Some((mut tls_stream, wire)) = handshake else {
                        return;
                    };
                    let (head, http_fingerprint) = recorder();
                    let info = info("https", tls_stream.get_mut().0.take_ja4(), http_fingerprint);
                    let io = ActivityIo {
                        inner: tls_stream,
                        clock: clock.clone(),
                        head,
                    };
                    Box::pin(serve_http(
                        io,
                        wire,
                        Bytes::new(),
                        info,
                        clock,
                        gateway,
                        shutdown,
                    ))
                };
                serving.await;
            }
            None => {
                // h2c by prior knowledge (RFC 9113 3.3), else HTTP/1.
                let sniffed = tokio::select! {
                    w = tokio::time::timeout(header_timeout, first_bytes(&mut stream)) => w,
                    () = clock.evicted() => return,
                };
                let (wire, first) = match sniffed {
                    Ok(Ok(Some(first))) => first,
                    Ok(Ok(None) | Err(_)) => return,
                    Err(_) => {
                        trip(&gateway, "header_timeout", ConnTrip::HeaderTimeout);
                        return;
                    }
                };
                gateway.metrics.connection("accepted");
                clock.touch();
                let (mut head, http_fingerprint) = recorder();
                // What the recorder would have seen through the connection's reads.
                if head.as_mut().is_some_and(|h| !h.feed(&first)) {
                    head = None;
                }
                let info = info("http", None, http_fingerprint);
                let io = ActivityIo {
                    inner: stream,
                    clock: clock.clone(),
                    head,
                };
                serve_http(io, wire, first, info, clock, gateway, shutdown).await;
            }
        }
    }
}

/// The TLS handshake (the ClientHello recorded for JA4), within the head timeout, and the
/// HTTP version ALPN chose (RFC 9113: HTTP/2 over TLS is chosen by ALPN).
async fn tls_handshake(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    timeout: Duration,
    gateway: &Gateway,
) -> Option<(
    tokio_rustls::server::TlsStream<record::HelloRecorder<TcpStream>>,
    Wire,
)> {
    let handshake =
        tokio::time::timeout(timeout, acceptor.accept(record::HelloRecorder::new(stream))).await;
    let Ok(Ok(tls_stream)) = handshake else {
        trip(gateway, "tls_error", ConnTrip::Tls);
        return None;
    };
    // A TLS-ALPN-01 validation ends with its handshake: nothing is served on it.
    if tls_stream.get_ref().1.alpn_protocol() == Some(tls::ACME_TLS_ALPN) {
        return None;
    }
    gateway.metrics.connection("accepted");
    let wire = if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        Wire::Http2
    } else {
        Wire::Http1
    };
    Some((tls_stream, wire))
}

/// The client address from the PROXY protocol header (the connection's own when the header
/// says LOCAL), or `None` when the header is bad or late (the connection is then dropped).
async fn read_proxy_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    gateway: &Gateway,
) -> Option<SocketAddr> {
    match tokio::time::timeout(timeout, proxy_protocol::read_header(stream)).await {
        Ok(Ok(addr)) => Some(addr.unwrap_or(peer)),
        Ok(Err(e)) => {
            trip(gateway, "proxy_protocol_error", ConnTrip::ProxyProtocol);
            tracing::debug!(%peer, error = %e, "refused connection");
            None
        }
        Err(_) => {
            trip(gateway, "proxy_protocol_error", ConnTrip::ProxyProtocol);
            None
        }
    }
}

/// The HTTP version of a connection, decided before hyper sees it (ALPN, or the h2c
/// preface): each connection is served by the one hyper protocol it speaks, without the
/// version-sniffing layer of hyper-util's `auto` builder on every read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Http1,
    Http2,
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the first bytes of a cleartext connection (read, not peeked: a peek would cost
/// every connection one more system call) and tells its protocol from them; `None` when it
/// closes first.
async fn first_bytes(stream: &mut TcpStream) -> io::Result<Option<(Wire, Bytes)>> {
    let mut first = Bytes::new();
    loop {
        if h1::read_more(stream, &mut first, None).await? == Some(0) {
            return Ok(None);
        }
        let n = first.len().min(H2_PREFACE.len());
        if first[..n] != H2_PREFACE[..n] {
            // Not the preface: HTTP/1 (hyper answers what it cannot parse).
            return Ok(Some((Wire::Http1, first)));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some((Wire::Http2, first)));
        }
        // Part of the preface so far: the rest follows (the caller's deadline bounds this).
    }
}

// Not an `async fn`, for the reason `serve_connection` says.
#[allow(clippy::manual_async_fn)]
fn serve_http<I>(
    mut io: I,
    wire: Wire,
    first: Bytes,
    info: Arc<ConnInfo>,
    clock: Arc<ConnClock>,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let config = gateway.current().config.clone();
        let gw = gateway.clone();
        // Max requests per connection: past it, the connection is closed gracefully (HTTP/1.1
        // `Connection: close` after the response, HTTP/2 GOAWAY), which spreads long-lived
        // clients over fresh connections and bounds what one connection can do.
        let max_requests = config.limits.max_requests_per_connection;
        let served = AtomicU64::new(0);
        let limit_reached = Arc::new(tokio::sync::Notify::new());
        let reached_in = limit_reached.clone();
        let handle = |req: http::Request<DownstreamBody>| {
            let n = served.fetch_add(1, Ordering::Relaxed) + 1;
            if max_requests > 0 && n == max_requests {
                reached_in.notify_one();
            }
            clock.request_started(req.version() == http::Version::HTTP_2);
            gw.clone().handle(info.clone(), req)
        };
        let side = Side {
            gateway: &gateway,
            shutdown: &shutdown,
            limit_reached: &limit_reached,
            clock: &clock,
            idle: config.timeouts.downstream_idle,
            head: config.timeouts.downstream_header_read,
        };
        match wire {
            Wire::Http1 => {
                // The fast path first; hyper from the first request it does not serve.
                let closing = AtomicBool::new(false);
                let prefix = {
                    let fast = std::pin::pin!(h1::serve(
                        &mut io,
                        first,
                        &handle,
                        &closing,
                        config.limits.max_header_bytes
                    ));
                    match drive(fast, |_| closing.store(true, Ordering::Relaxed), &side).await {
                        Some(Ok(h1::Ended::Handover(prefix))) => prefix,
                        ended => return log_end(ended),
                    }
                };
                // hyper from here on: its state is allocated only for the connections that
                // need it, so that a connection the fast path serves holds none of it.
                Box::pin(serve_hyper_h1(io, prefix, &handle, &config, &side)).await;
            }
            Wire::Http2 => {
                // What was read to tell the protocol (the preface) is read again by hyper.
                Box::pin(serve_h2(
                    h1::Rewind::new(first, io),
                    &handle,
                    &config,
                    &side,
                ))
                .await;
            }
        }
    }
}

/// A connection's HTTP/1 from the request the fast path handed over (`prefix`: what it read
/// of it), served by hyper.
async fn serve_hyper_h1<I, H, Fut>(
    io: I,
    prefix: bytes::Bytes,
    handle: &H,
    config: &crate::config::runtime::Runtime,
    side: &Side<'_>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(http::Request<DownstreamBody>) -> Fut,
    Fut: Future<Output = Result<http::Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The head deadline is the watchdog's (no timer per request).
        .header_read_timeout(None)
        .max_buf_size(config.limits.max_header_bytes)
        .keep_alive(true);
    let service =
        service_fn(|req: http::Request<Incoming>| for_hyper(handle(req.map(DownstreamBody::from))));
    let conn = std::pin::pin!(builder
        .serve_connection(TokioIo::new(h1::Rewind::new(prefix, io)), service)
        .with_upgrades());
    log_end(drive(conn, |c: Pin<&mut _>| c.graceful_shutdown(), side).await);
}

/// A connection that speaks HTTP/2, served by hyper.
async fn serve_h2<I, H, Fut>(
    io: I,
    handle: &H,
    config: &crate::config::runtime::Runtime,
    side: &Side<'_>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(http::Request<DownstreamBody>) -> Fut,
    Fut: Future<Output = Result<http::Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(256)
        .max_header_list_size(u32::try_from(config.limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let service =
        service_fn(|req: http::Request<Incoming>| for_hyper(handle(req.map(DownstreamBody::from))));
    let conn = std::pin::pin!(builder.serve_connection(TokioIo::new(io), service));
    log_end(drive(conn, |c: Pin<&mut _>| c.graceful_shutdown(), side).await);
}

/// The answer to a request that hyper read: the response's origin fields go into its map,
/// since hyper writes heads from a map.
async fn for_hyper(
    answer: impl Future<Output = Result<http::Response<ResponseBody>, Infallible>>,
) -> Result<http::Response<ResponseBody>, Infallible> {
    let Ok(response) = answer.await;
    Ok(crate::pipeline::body::into_map_form(response))
}

/// Logs how a connection ended when it was an error (`None`: closed by the watchdog).
fn log_end<T, E: std::fmt::Display>(ended: Option<Result<T, E>>) {
    if let Some(Err(e)) = ended {
        tracing::debug!(error = %e, "downstream connection ended with error");
    }
}

/// What closes a connection besides its client: shutdown, its request budget, its watchdog.
struct Side<'a> {
    gateway: &'a Gateway,
    shutdown: &'a CancellationToken,
    limit_reached: &'a tokio::sync::Notify,
    clock: &'a ConnClock,
    idle: Duration,
    head: Duration,
}

/// Why a connection is being closed by us.
enum Signal {
    Shutdown,
    Budget,
    Idle,
    HeadTimeout,
    Evicted,
}

/// Runs one connection to its end, closing it gracefully on shutdown, when its request
/// budget is spent or when idle, and at once when a request head is overdue or the
/// connection was evicted (then `None`).
/// The side signals are polled only when one of them fired, not on every wake-up of the
/// connection.
async fn drive<C: Future>(
    mut conn: Pin<&mut C>,
    mut graceful: impl FnMut(Pin<&mut C>),
    side: &Side<'_>,
) -> Option<C::Output> {
    let mut signals = Some(OnlyWhenWoken::new(Box::pin(async move {
        tokio::select! {
            _ = side.shutdown.cancelled() => Signal::Shutdown,
            _ = side.limit_reached.notified() => Signal::Budget,
            verdict = watchdog::expired(side.clock, side.idle, side.head) => {
                if verdict == Verdict::HeadTimeout { Signal::HeadTimeout } else { Signal::Idle }
            }
            // Made room for a newcomer from its address: it was waiting for its first head.
            () = side.clock.evicted() => Signal::Evicted,
        }
    })));
    let mut evicted = false;
    let ended = std::future::poll_fn(|cx| {
        if let Poll::Ready(res) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(res));
        }
        let Some(pending) = signals.as_mut() else {
            return Poll::Pending;
        };
        let Poll::Ready(signal) = Pin::new(pending).poll(cx) else {
            return Poll::Pending;
        };
        signals = None;
        match signal {
            // No request in flight: nothing to drain.
            Signal::HeadTimeout => Poll::Ready(None),
            Signal::Evicted => {
                evicted = true;
                Poll::Ready(None)
            }
            Signal::Shutdown | Signal::Budget | Signal::Idle => {
                graceful(conn.as_mut());
                conn.as_mut().poll(cx).map(Some)
            }
        }
    })
    .await;
    if ended.is_none() && !evicted {
        trip(side.gateway, "header_timeout", ConnTrip::HeaderTimeout);
    }
    ended
}

fn peer_value(peer: SocketAddr) -> http::HeaderValue {
    http::HeaderValue::from_str(&peer.ip().to_string())
        .unwrap_or(http::HeaderValue::from_static("unknown"))
}

pin_project! {
    /// Records the time of the last byte read or written.
    struct ActivityIo<I> {
        #[pin]
        inner: I,
        clock: Arc<ConnClock>,
        head: Option<record::HeadRecorder>,
    }
}

impl<I: AsyncRead> AsyncRead for ActivityIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.touch();
            if let Some(head) = this.head.as_mut() {
                if !head.feed(&buf.filled()[before..]) {
                    *this.head = None;
                }
            }
        }
        r
    }
}

impl<I: AsyncWrite> AsyncWrite for ActivityIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// A connection closed by the gateway: counted in the metrics and the gateway's signals.
fn trip(gateway: &Gateway, kind: &'static str, trip: ConnTrip) {
    gateway.metrics.connection(kind);
    gateway.current().gateway_signals.conn_trip(trip);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connection's first bytes as `first_bytes` takes them, the client writing `parts`
    /// (flushed one by one) and then closing.
    async fn first_of(parts: &[&[u8]]) -> Option<(Wire, Bytes)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for part in parts {
                client.write_all(&part).await.unwrap();
                client.flush().await.unwrap();
                // The pieces may reach the server together or apart: either way the answer
                // must be the same.
                tokio::task::yield_now().await;
            }
            let _ = rx.await;
        });
        let first = first_bytes(&mut server).await.unwrap();
        let _ = tx.send(());
        writer.await.unwrap();
        first
    }

    #[tokio::test]
    async fn the_first_bytes_tell_the_protocol_and_are_kept_for_it() {
        let (wire, first) = first_of(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"])
            .await
            .unwrap();
        assert_eq!(wire, Wire::Http1);
        assert_eq!(&first[..], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        // The preface in two pieces: read until it is whole, and kept with what follows.
        let (wire, first) = first_of(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n\x00\x00"])
            .await
            .unwrap();
        assert_eq!(wire, Wire::Http2);
        assert!(first.starts_with(H2_PREFACE));
        // Something that begins like the preface and is not it.
        let (wire, _) = first_of(&[b"PRI * HTTP/1.1\r\n\r\n"]).await.unwrap();
        assert_eq!(wire, Wire::Http1);
    }

    #[tokio::test]
    async fn a_connection_closed_before_a_whole_preface_is_done_with() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(b"PRI * HTTP").await.unwrap();
        drop(client);
        assert!(first_bytes(&mut server).await.unwrap().is_none());
    }
}
