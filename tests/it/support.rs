//! Shared helpers: a scriptable origin, a gateway started from TOML text, small clients for
//! HTTP/1.1, h2c and TLS, raw TCP requests, and `eventually` (deadline-based waiting).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// What an origin saw and how it behaves.
#[derive(Default)]
pub struct OriginState {
    pub name: String,
    pub requests: AtomicUsize,
    pub healthy: AtomicBool,
    pub last_headers: Mutex<Vec<(String, String)>>,
    pub last_body_len: AtomicUsize,
    /// Every request as `HOST TARGET` (the target as it arrived), in order.
    pub seen: Mutex<Vec<String>>,
}

/// A test origin on 127.0.0.1:0.
///
/// Routes: `/headers` (JSON of received headers), `/slow?ms=N`, `/big?bytes=N`, `/healthz`
/// (200 or 503 per `healthy`), `/status/N` (an answer with status N), `/ws` (upgrade, then echo bytes), `/upload` (reads the body,
/// answers its length), anything else: 200 "hello from NAME".
pub struct Origin {
    pub addr: SocketAddr,
    pub state: Arc<OriginState>,
}

impl Origin {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, name)
    }

    pub fn serve(listener: TcpListener, name: &str) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState {
            name: name.to_owned(),
            healthy: AtomicBool::new(true),
            ..Default::default()
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| origin_handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    pub fn count(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Every request the origin saw, as `HOST TARGET`.
    pub fn seen(&self) -> Vec<String> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.state
            .last_headers
            .lock()
            .unwrap()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub type OriginBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn origin_handle(
    state: Arc<OriginState>,
    req: Request<Incoming>,
) -> Result<Response<OriginBody>, Infallible> {
    if req.uri().path() == "/chunked" {
        state.requests.fetch_add(1, Ordering::SeqCst);
        let chunks: Vec<Result<hyper::body::Frame<Bytes>, Infallible>> =
            ["un, ", "deux, ", "trois"]
                .iter()
                .map(|c| Ok(hyper::body::Frame::data(Bytes::from_static(c.as_bytes()))))
                .collect();
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        return Ok(Response::new(BodyExt::boxed(body)));
    }
    if req.uri().path() == "/no-content" {
        state.requests.fetch_add(1, Ordering::SeqCst);
        return Ok(Response::builder()
            .status(204)
            .body(BodyExt::boxed(Full::new(Bytes::new())))
            .unwrap());
    }
    Ok(origin_full(state, req).await?.map(BodyExt::boxed))
}

async fn origin_full(
    state: Arc<OriginState>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if let Some(code) = path.strip_prefix("/status/") {
        // An answer with that status (a login route refusing a password: 401).
        state.requests.fetch_add(1, Ordering::SeqCst);
        return Ok(Response::builder()
            .status(code.parse::<u16>().unwrap_or(500))
            .body(Full::new(Bytes::from_static(b"status")))
            .unwrap());
    }
    if path == "/healthz" {
        let status = if state.healthy.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"health")))
            .unwrap());
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let host = req
        .headers()
        .get_all("host")
        .iter()
        .map(|h| h.to_str().unwrap_or("?"))
        .collect::<Vec<_>>()
        .join(",");
    state
        .seen
        .lock()
        .unwrap()
        .push(format!("{host} {}", req.uri()));
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    *state.last_headers.lock().unwrap() = headers.clone();
    let q = query(&req);
    let resp = |body: Bytes| {
        Response::builder()
            .header("x-origin", state.name.as_str())
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "secret")
            .body(Full::new(body))
            .unwrap()
    };
    match path.as_str() {
        "/headers" => {
            let map: HashMap<String, String> = headers.into_iter().collect();
            Ok(resp(Bytes::from(serde_json::to_vec(&map).unwrap())))
        }
        "/slow" => {
            let ms = q.get("ms").and_then(|m| m.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(resp(Bytes::from(format!("slow from {}", state.name))))
        }
        "/big" => {
            let n = q
                .get("bytes")
                .and_then(|m| m.parse().ok())
                .unwrap_or(100_000);
            Ok(resp(Bytes::from(vec![b'x'; n])))
        }
        "/upload" => {
            let body = req
                .body_mut()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            state.last_body_len.store(body.len(), Ordering::SeqCst);
            Ok(resp(Bytes::from(body.len().to_string())))
        }
        "/ws" => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on_upgrade.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            });
            Ok(Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                .body(Full::new(Bytes::new()))
                .unwrap())
        }
        _ => Ok(resp(Bytes::from(format!("hello from {}", state.name)))),
    }
}

/// Options of test gateways: no file watch, no SIGHUP, no access log.
pub fn quiet_options() -> rempart::app::Options {
    rempart::app::Options {
        watch_file: false,
        sighup: false,
        access_log: false,
        upgrades: false,
    }
}

/// Options of test gateways that reload when their files change.
pub fn watching_options() -> rempart::app::Options {
    rempart::app::Options {
        watch_file: true,
        ..quiet_options()
    }
}

/// A gateway started from a config text written to a temporary directory.
pub struct Gw {
    pub running: Option<rempart::app::Running>,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub addr: SocketAddr,
    pub token: String,
}

pub const TOKEN: &str = "test-admin-token-0123456789abcdef";

impl Gw {
    /// Starts a gateway; `config` gets a listener on 127.0.0.1:0 and an admin section
    /// prepended unless it has its own `[[listeners]]`.
    pub async fn start(config: &str) -> Self {
        Self::start_with(config, quiet_options()).await
    }

    pub async fn start_with(config: &str, options: rempart::app::Options) -> Self {
        Self::start_with_files(config, &[], options).await
    }

    /// Like `start_with`, writing `files` (name, content) next to the config first.
    pub async fn start_with_files(
        config: &str,
        files: &[(&str, &str)],
        options: rempart::app::Options,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
        let path = dir.path().join("rempart.toml");
        std::fs::write(&path, with_defaults(config)).unwrap();
        let running = rempart::app::start(&path, options).await.unwrap();
        let addr = running.listen_addrs[0];
        Self {
            running: Some(running),
            dir,
            path,
            addr,
            token: TOKEN.to_owned(),
        }
    }

    /// Stops the gateway (graceful) and starts it again on the same config file and state
    /// directory, as after a restart of the process.
    pub async fn restart(&mut self) {
        self.running.take().unwrap().shutdown().await;
        let running = rempart::app::start(&self.path, quiet_options())
            .await
            .unwrap();
        self.addr = running.listen_addrs[0];
        self.running = Some(running);
    }

    pub fn running(&self) -> &rempart::app::Running {
        self.running.as_ref().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Rewrites the config file (same defaults as `start`).
    pub fn write_config(&self, config: &str) {
        let tmp = self.dir.path().join("rempart.toml.tmp");
        std::fs::write(&tmp, with_defaults(config)).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    /// POST /admin/reload; returns status and body.
    pub async fn admin_reload(&self) -> (u16, String) {
        let admin = self.running().admin_addr;
        let mut req = Request::post(format!("http://{admin}/admin/reload"))
            .header("authorization", format!("Bearer {}", self.token))
            .body(Full::new(Bytes::new()))
            .unwrap();
        req.headers_mut()
            .insert("host", admin.to_string().parse().unwrap());
        let resp = h1_client().request(req).await.unwrap();
        let status = resp.status().as_u16();
        (
            status,
            String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes())
                .into_owned(),
        )
    }
}

pub fn with_defaults(config: &str) -> String {
    let mut out = String::new();
    if !config.contains("[[listeners]]") {
        out.push_str("[[listeners]]\naddress = \"127.0.0.1:0\"\n\n");
    }
    if !config.contains("[admin]") {
        out.push_str("[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n\n");
    }
    // Top-level keys must come before any table: put the caller's text first when it starts
    // with bare keys.
    let (head, tail) = split_top_level(config);
    format!("{head}\n{out}{tail}")
}

fn split_top_level(config: &str) -> (String, String) {
    let idx = config
        .find("\n[")
        .map(|i| i + 1)
        .unwrap_or(if config.starts_with('[') {
            0
        } else {
            config.len()
        });
    (config[..idx].to_owned(), config[idx..].to_owned())
}

/// A simple one-tenant config pointing at `origins`.
pub fn one_tenant(origins: &[SocketAddr], extra_pool: &str, extra_route: &str) -> String {
    let servers: Vec<String> = origins
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        r#"[[tenants]]
id = "ville"
name = "Ville de Test"
hosts = ["ville.test", "*.ville.test"]
contact = "Mairie : 02 00 00 00 00"

[[tenants.pools]]
name = "web"
servers = [{servers}]
{extra_pool}

[[tenants.routes]]
path_prefix = "/"
pool = "web"
{extra_route}
"#,
        servers = servers.join(", ")
    )
}

pub type H1Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn h1_client() -> H1Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// A simple response.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

pub async fn collect(resp: Response<Incoming>) -> Got {
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Got {
        status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// GET `path` with `Host: host` through `addr`; `None` on a transport error (for polling).
pub async fn try_get(client: &H1Client, addr: SocketAddr, host: &str, path: &str) -> Option<Got> {
    let req = Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .ok()?;
    Some(collect(client.request(req).await.ok()?).await)
}

/// GET `path` with `Host: host` through `addr`.
pub async fn get(client: &H1Client, addr: SocketAddr, host: &str, path: &str) -> Got {
    get_with(client, addr, host, path, &[]).await
}

pub async fn get_with(
    client: &H1Client,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    let mut b = Request::get(format!("http://{addr}{path}")).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client
        .request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    collect(resp).await
}

/// An HTTP/2 prior-knowledge (h2c) connection to `addr`.
pub async fn h2c<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends raw bytes and reads the whole answer (until close or `wait`).
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `f` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An address with nothing listening, for a server a test starts later (an authority, a
/// Redis, a DNS server) or for one that never answers. Taken below the kernel's ephemeral
/// range (which listeners on port 0 and outgoing connections draw from, so neither takes it
/// meanwhile), never handed out twice in this process (tests run side by side), and free for
/// TCP and UDP when handed out.
pub async fn closed_port() -> SocketAddr {
    use std::sync::atomic::AtomicU32;
    // From port 10,000 up to where this machine's ephemeral range starts (32,768 by
    // default), from a start that differs between processes.
    const FIRST: u32 = 10_000;
    static SPAN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let span = *SPAN.get_or_init(|| {
        let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32_768);
        assert!(
            ephemeral_from > FIRST + 1_000,
            "the ephemeral port range starts at {ephemeral_from}: no room below it for test servers"
        );
        ephemeral_from - FIRST
    });
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let port = u16::try_from(FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % span).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let free =
            std::net::TcpListener::bind(addr).is_ok() && std::net::UdpSocket::bind(addr).is_ok();
        if free {
            return addr;
        }
    }
}

/// An admin API call with the test token; `body` is sent as JSON.
pub async fn admin_call(gw: &Gw, method: &str, path: &str, body: Option<&str>) -> Got {
    let admin = gw.running().admin_addr;
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("host", admin.to_string())
        .header("authorization", format!("Bearer {}", gw.token))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .unwrap();
    collect(h1_client().request(req).await.unwrap()).await
}

/// Runs the `rempart` binary with `args`, off the runtime (a gateway in this test keeps
/// answering meanwhile): its exit code (-1 when killed) and its output, stdout then stderr.
pub async fn rempart_cli(args: &[&str]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rempart"))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    })
    .await
    .unwrap()
}

/// The test SMTP server: messages arrive as JSON values.
pub struct SmtpSink {
    pub port: u16,
    pub messages: Arc<Mutex<Vec<serde_json::Value>>>,
    child: Child,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tests/smtp/sink.py`; `None` (outside CI only) when Python or aiosmtpd is missing.
pub fn smtp_sink() -> Option<SmtpSink> {
    smtp_sink_on(0)
}

/// The SMTP sink on `port` (0: a free one).
pub fn smtp_sink_on(port: u16) -> Option<SmtpSink> {
    let python = std::env::var("REMPART_TEST_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/bin/python");
        if std::path::Path::new(venv).exists() {
            venv.to_owned()
        } else {
            "python3".to_owned()
        }
    });
    let spawned = Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp/sink.py"))
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var("CI").is_err(),
                "cannot start {python}: {e} (scripts/test installs aiosmtpd)"
            );
            eprintln!("SKIPPED: cannot start {python}: {e}");
            return None;
        }
    };
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let Some(Ok(first)) = lines.next() else {
        let _ = child.kill();
        assert!(
            std::env::var("CI").is_err(),
            "the SMTP sink did not start (is aiosmtpd installed? scripts/test installs it)"
        );
        eprintln!("SKIPPED: the SMTP sink did not start (run scripts/test to install aiosmtpd)");
        return None;
    };
    let port: u16 = first.strip_prefix("PORT ").unwrap().parse().unwrap();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let m = messages.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            m.lock().unwrap().push(serde_json::from_str(&line).unwrap());
        }
    });
    Some(SmtpSink {
        port,
        messages,
        child,
    })
}

/// A local receiver recording every request (path, headers, body).
pub type Seen = Arc<Mutex<Vec<(String, http::HeaderMap, String)>>>;

pub async fn receiver() -> (SocketAddr, Seen) {
    receiver_answering(200).await
}

/// A receiver answering every request with `status`.
pub async fn receiver_answering(status: u16) -> (SocketAddr, Seen) {
    serve_receiver(TcpListener::bind("127.0.0.1:0").await.unwrap(), status)
}

/// A receiver answering 200 on `addr`.
pub async fn receiver_on(addr: SocketAddr) -> (SocketAddr, Seen) {
    serve_receiver(TcpListener::bind(addr).await.unwrap(), 200)
}

fn serve_receiver(listener: TcpListener, status: u16) -> (SocketAddr, Seen) {
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        s.lock().unwrap().push((
                            path,
                            headers,
                            String::from_utf8_lossy(&body).into_owned(),
                        ));
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// The token and difficulty embedded in a challenge page.
pub fn challenge_of(body: &str) -> (String, u8) {
    let attr = |name: &str| {
        let start = body.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
        body[start..start + body[start..].find('"').unwrap()].to_owned()
    };
    (attr("data-token"), attr("data-difficulty").parse().unwrap())
}
