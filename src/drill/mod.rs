//! `rempart drill`: a flood drill in one process. It plays a population of residents
//! (browsers on HTTP/1.1 and HTTP/2 that load a page and its assets, solve challenges, keep
//! their pass cookie and think between pages) against an attack mix (GET floods from many
//! source addresses bound across 127.0.0.0/8 with rotating user agents and cache-busting
//! query strings, login-form POST floods, slowloris, slow request bodies, HTTP/2 rapid
//! reset, and a "smart"
//! fraction of bots that solve challenges), then reports what residents experienced and what
//! reached the origin. It only ever sends to loopback, and is bounded in time and size.

pub mod exfiltration;
pub mod origin;
pub mod scenario;
pub mod timeline;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use scenario::{attack_source, legit_source, shared_source, Attack, AttackKind, Scenario};

/// Refuses any address outside loopback (the drill and its origin never touch a network).
pub fn require_loopback(ip: IpAddr) -> anyhow::Result<()> {
    if ip.is_loopback() {
        Ok(())
    } else {
        anyhow::bail!("refusing {ip}: the drill only sends to loopback (127.0.0.0/8, ::1)")
    }
}

const BROWSER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36 Edg/131.0",
];

/// A tiny xorshift generator (the drill needs speed and spread, not secrecy).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

async fn tcp_from(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        let s = TcpSocket::new_v4()?;
        s.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
        s
    } else {
        TcpSocket::new_v6()?
    };
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn connect(source: Ipv4Addr, target: SocketAddr, h2: bool) -> anyhow::Result<Conn> {
    let io = TokioIo::new(tcp_from(source, target).await?);
    if h2 {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok(Conn::H2(send))
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        Ok(Conn::H1(send))
    }
}

impl Conn {
    async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<Response<Incoming>> {
        Ok(match self {
            Conn::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Conn::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        })
    }
}

/// A response read whole.
struct Answer {
    status: u16,
    challenge: bool,
    location: Option<String>,
    set_cookie: Option<String>,
    body: Bytes,
}

async fn exchange(conn: &mut Conn, req: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
    let resp = conn.send(req).await?;
    let h = resp.headers();
    let text = |name: http::header::HeaderName| {
        h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    let status = resp.status().as_u16();
    let challenge = h.contains_key(crate::shield::challenge::CHALLENGE_HEADER);
    let location = text(http::header::LOCATION);
    let set_cookie = text(http::header::SET_COOKIE);
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        challenge,
        location,
        set_cookie,
        body,
    })
}

fn attribute<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = body.find(&key)? + key.len();
    let len = body[start..].find('"')?;
    Some(&body[start..start + len])
}

/// What a browser sends.
struct Browser<'a> {
    host: &'a str,
    user_agent: &'a str,
    cookie: Option<String>,
    tag: &'static str,
    /// Bots share one solver (the botnet's machines are not the residents' devices: in the
    /// drill, bots' proof-of-work must not run on residents' time); `None` = its own thread.
    shared_solver: Option<Arc<tokio::sync::Semaphore>>,
}

impl Browser<'_> {
    fn get(&self, target: &str, h2: bool) -> Request<Full<Bytes>> {
        self.request(http::Method::GET, target, h2, Bytes::new())
    }

    fn request(
        &self,
        method: http::Method,
        target: &str,
        h2: bool,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut b = Request::builder().method(method);
        b = if h2 {
            b.uri(format!("http://{}{target}", self.host))
                .version(http::Version::HTTP_2)
        } else {
            b.uri(target).header(http::header::HOST, self.host)
        };
        b = b
            .header(http::header::USER_AGENT, self.user_agent)
            .header(
                http::header::ACCEPT,
                "text/html,application/xhtml+xml,*/*;q=0.8",
            )
            .header(http::header::ACCEPT_LANGUAGE, "fr-FR,fr;q=0.9")
            .header("x-drill", self.tag);
        if let Some(c) = &self.cookie {
            b = b.header(http::header::COOKIE, c.as_str());
        }
        if !body.is_empty() {
            b = b.header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        }
        b.body(Full::new(body)).unwrap_or_default()
    }

    /// Fetches `target`, solving a challenge on the way when one comes back. Returns the final
    /// status and whether a challenge was solved.
    async fn fetch(
        &mut self,
        conn: &mut Conn,
        target: &str,
        h2: bool,
    ) -> anyhow::Result<(u16, bool)> {
        self.fetch_timed(conn, target, h2)
            .await
            .map(|(status, solved, _)| (status, solved))
    }

    /// `fetch`, also returning the time the proof of work took (a browser's own device's
    /// time; the drill runs every resident's on one core).
    async fn fetch_timed(
        &mut self,
        conn: &mut Conn,
        target: &str,
        h2: bool,
    ) -> anyhow::Result<(u16, bool, Duration)> {
        let first = exchange(conn, self.get(target, h2)).await?;
        if !(first.status == 403 && first.challenge) {
            return Ok((first.status, false, Duration::ZERO));
        }
        let body = String::from_utf8_lossy(&first.body);
        let (Some(token), Some(difficulty)) = (
            attribute(&body, "data-token"),
            attribute(&body, "data-difficulty").and_then(|d| d.parse::<u8>().ok()),
        ) else {
            return Ok((first.status, false, Duration::ZERO));
        };
        // The work runs on a blocking thread, as a browser's runs in a worker: the drill's
        // other clients keep going meanwhile.
        let owned = token.to_owned();
        let _turn = match &self.shared_solver {
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        let solving = Instant::now();
        let n = tokio::task::spawn_blocking(move || crate::shield::pass::solve(&owned, difficulty))
            .await
            .unwrap_or(0);
        let solve_time = solving.elapsed();
        let claim = format!("/.rempart/pass?t={token}&n={n}&r=%2F");
        let granted = exchange(conn, self.get(&claim, h2)).await?;
        if granted.status != 303 || granted.location.is_none() {
            return Ok((granted.status, true, solve_time));
        }
        if let Some(c) = granted.set_cookie {
            self.cookie = c.split(';').next().map(str::to_owned);
        }
        let again = exchange(conn, self.get(target, h2)).await?;
        Ok((again.status, true, solve_time))
    }
}

/// What residents experienced.
#[derive(Debug, Default)]
struct LegitStats {
    loads: AtomicU64,
    ok: AtomicU64,
    failed_status: AtomicU64,
    /// Loads that ended with a 429 (a subset of `failed_status`).
    limited: AtomicU64,
    too_slow: AtomicU64,
    errors: AtomicU64,
    challenges: AtomicU64,
    latencies_ms: std::sync::Mutex<Vec<(u32, bool)>>,
}

async fn resident(
    i: u32,
    source: Ipv4Addr,
    target: SocketAddr,
    scenario: Arc<Scenario>,
    stats: Arc<LegitStats>,
    stop: CancellationToken,
) {
    let legit = &scenario.legit;
    let mut rng =
        Rng(0x9e37_79b9_7f4a_7c15 ^ (u64::from(i) + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let h2 = rng.unit() < legit.h2_fraction;
    let mut browser = Browser {
        host: &legit.host,
        user_agent: BROWSER_AGENTS[i as usize % BROWSER_AGENTS.len()],
        cookie: None,
        tag: "legit",
        shared_solver: None,
    };
    // Residents arrive spread over the first think time, not all in the same millisecond.
    let first = Duration::from_secs_f64(legit.think.as_secs_f64() * rng.unit());
    tokio::select! {
        () = stop.cancelled() => return,
        () = tokio::time::sleep(first) => {}
    }
    let mut conn: Option<Conn> = None;
    while !stop.is_cancelled() {
        let path = legit.paths[rng.below(legit.paths.len() as u64) as usize].clone();
        let started = Instant::now();
        let load = async {
            if conn.is_none() {
                conn = Some(connect(source, target, h2).await?);
            }
            let Some(c) = conn.as_mut() else {
                anyhow::bail!("no connection");
            };
            let (mut status, mut challenged, mut solving) =
                browser.fetch_timed(c, &path, h2).await?;
            for a in 0..legit.assets {
                if !(200..300).contains(&status) {
                    break;
                }
                let (s, asset_challenged, asset_solving) = browser
                    .fetch_timed(c, &format!("/static/asset-{a}.css"), h2)
                    .await?;
                status = s;
                challenged |= asset_challenged;
                solving += asset_solving;
            }
            Ok::<_, anyhow::Error>((status, challenged, solving))
        };
        // A resident gives up after 10 s; the budget for success is `legit.budget`.
        let outcome = tokio::select! {
            () = stop.cancelled() => break,
            r = tokio::time::timeout(Duration::from_secs(10), load) => r,
        };
        stats.loads.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(Ok((status, challenged, solving))) if (200..300).contains(&status) => {
                // The proof of work runs on the resident's own device: not the gateway's time.
                let elapsed = started.elapsed().saturating_sub(solving);
                if challenged {
                    stats.challenges.fetch_add(1, Ordering::Relaxed);
                }
                if elapsed <= legit.budget {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.too_slow.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut l) = stats.latencies_ms.lock() {
                    l.push((
                        u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX),
                        challenged,
                    ));
                }
            }
            Ok(Ok((status, _, _))) => {
                stats.failed_status.fetch_add(1, Ordering::Relaxed);
                if status == 429 {
                    stats.limited.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
        let think = legit.think.as_secs_f64() * (0.5 + rng.unit());
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs_f64(think)) => {}
        }
    }
}

/// What the attack achieved, by outcome.
#[derive(Debug, Default)]
struct AttackStats {
    sent: AtomicU64,
    ok: AtomicU64,
    challenged: AtomicU64,
    limited: AtomicU64,
    refused: AtomicU64,
    shed: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
    connections: AtomicU64,
    solved: AtomicU64,
    resets: AtomicU64,
    closed_by_server: AtomicU64,
}

impl AttackStats {
    fn count(&self, status: u16, challenge: bool) {
        let slot = match status {
            200..=399 => &self.ok,
            403 if challenge => &self.challenged,
            403 => &self.refused,
            429 => &self.limited,
            503 => &self.shed,
            _ => &self.other,
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }
}

fn pacer(attack: &Attack) -> Option<tokio::time::Interval> {
    (attack.rate > 0).then(|| {
        let per_conn = f64::from(attack.rate) / f64::from(attack.connections);
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / per_conn.max(0.001)));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        i
    })
}

/// Where an attack's connections leave from: most from the botnet's own addresses, the
/// first `behind_shared` of them from the residents' shared addresses.
#[derive(Debug, Clone)]
struct Sources {
    shared: Arc<[Ipv4Addr]>,
    behind_shared: u32,
    connections: u32,
}

impl Sources {
    fn new(scenario: &Scenario, attack: &Attack) -> Self {
        let shared: Arc<[Ipv4Addr]> = scenario.shared_addresses().into();
        let behind_shared = if shared.is_empty() {
            0
        } else {
            (scenario.bots_behind_shared * f64::from(attack.connections)).round() as u32
        };
        Self {
            shared,
            behind_shared,
            connections: attack.connections.max(1),
        }
    }

    /// Whether worker `w` sends from the shared addresses: `behind_shared` of the workers,
    /// spread evenly among them (the first workers start first: bots behind shared addresses
    /// must not also be the flood's first requests, the ones sent before any defence is up).
    fn is_shared(&self, w: u32) -> bool {
        let (k, n, w) = (
            u64::from(self.behind_shared),
            u64::from(self.connections),
            u64::from(w),
        );
        (w + 1) * k / n != w * k / n
    }

    /// The source address of worker `w`'s `next`-th source. The bots behind shared addresses
    /// spread evenly over them, by their rank among those bots.
    fn pick(&self, w: u32, next: u32) -> Ipv4Addr {
        if self.is_shared(w) {
            let rank = u64::from(w) * u64::from(self.behind_shared) / u64::from(self.connections);
            self.shared[((rank + u64::from(next)) % self.shared.len() as u64) as usize]
        } else {
            attack_source(next)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn bot(
    solver: Arc<tokio::sync::Semaphore>,
    w: u32,
    targets: Targets,
    host: Arc<str>,
    attack: Arc<Attack>,
    sources: Sources,
    stats: Arc<AttackStats>,
    stop: CancellationToken,
) {
    let mut rng =
        Rng(0xdead_beef_cafe_f00d ^ (u64::from(w) + 7).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let smart = rng.unit() < attack.smart_fraction;
    let mut pace = pacer(&attack);
    let mut next_source = w % attack.sources;
    let h2 = attack.kind == AttackKind::H2RapidReset;
    let mut smart_cookie: Option<String> = None;
    while !stop.is_cancelled() {
        let source = sources.pick(w, next_source);
        // A smart bot behaves like a browser: it keeps its address (and so its pass); the
        // others move to the next address after each connection.
        if !smart {
            next_source = (next_source + attack.connections) % attack.sources;
        }
        let conn = tokio::select! {
            () = stop.cancelled() => return,
            c = connect(source, targets.for_source(source), h2) => c,
        };
        let Ok(mut conn) = conn else {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            continue;
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let ua = if attack.rotate_user_agents && !smart {
            BROWSER_AGENTS[rng.below(BROWSER_AGENTS.len() as u64) as usize]
        } else {
            BROWSER_AGENTS[w as usize % BROWSER_AGENTS.len()]
        };
        let mut browser = Browser {
            host: &host,
            user_agent: ua,
            cookie: smart_cookie.take(),
            // The origin counts apart what bots behind the residents' shared addresses got.
            tag: if sources.is_shared(w) {
                "attack-shared"
            } else {
                "attack"
            },
            shared_solver: Some(solver.clone()),
        };
        for _ in 0..attack.requests_per_connection {
            if let Some(p) = pace.as_mut() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = p.tick() => {}
                }
            } else if stop.is_cancelled() {
                return;
            }
            let path = &attack.paths[rng.below(attack.paths.len() as u64) as usize];
            let target_path = if attack.cache_bust {
                format!("{path}?_={}", rng.next())
            } else {
                path.clone()
            };
            stats.sent.fetch_add(1, Ordering::Relaxed);
            let result = match attack.kind {
                AttackKind::H2RapidReset => {
                    // Open a stream and cancel it at once: the future is polled once (the
                    // request goes out) and dropped (RST_STREAM).
                    let req = browser.get(&target_path, true);
                    match &mut conn {
                        Conn::H2(s) => {
                            if s.ready().await.is_err() {
                                stats.closed_by_server.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            let _ = tokio::time::timeout(Duration::ZERO, s.send_request(req)).await;
                            stats.resets.fetch_add(1, Ordering::Relaxed);
                        }
                        Conn::H1(_) => {}
                    }
                    continue;
                }
                AttackKind::LoginPost => {
                    let body = Bytes::from(format!(
                        "identifiant=user{}&mot_de_passe=x{}",
                        rng.below(100_000),
                        rng.next()
                    ));
                    exchange(
                        &mut conn,
                        browser.request(http::Method::POST, &target_path, false, body),
                    )
                    .await
                    .map(|a| (a.status, a.challenge, a.body))
                }
                _ => exchange(&mut conn, browser.get(&target_path, false))
                    .await
                    .map(|a| (a.status, a.challenge, a.body)),
            };
            match result {
                Ok((status, challenge, body)) => {
                    stats.count(status, challenge);
                    if smart && challenge && attack.kind == AttackKind::Flood {
                        // A bot that runs the proof of work like a browser would.
                        match browser.fetch(&mut conn, path, false).await {
                            Ok((s, true)) if (200..300).contains(&s) => {
                                stats.solved.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                        let _ = body;
                    }
                }
                Err(_) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        if smart {
            smart_cookie = browser.cookie.take();
        }
    }
}

/// Bytes a slow-body attack announces per request.
const SLOW_BODY_BYTES: usize = 64 * 1024;

/// How a connection is held open: what it sends first, then what it sends at each tick
/// (`None`: it has nothing more to send).
struct Trickle {
    head: String,
    every: Duration,
    next: fn(u32) -> Option<Vec<u8>>,
}

/// Slowloris: a request head sent one header line every 5 s, never finished.
fn slowloris(host: &str, _path: &str) -> Trickle {
    Trickle {
        head: format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {}\r\n",
            BROWSER_AGENTS[0]
        ),
        every: Duration::from_secs(5),
        next: |n| Some(format!("X-Pad-{n}: {n}\r\n").into_bytes()),
    }
}

/// slowhttptest -B: a POST that announces a 64 KiB form, then sends it 10 bytes a second.
fn slow_body(host: &str, path: &str) -> Trickle {
    Trickle {
        head: format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {SLOW_BODY_BYTES}\r\nx-drill: attack\r\n\r\n",
            BROWSER_AGENTS[0]
        ),
        every: Duration::from_secs(1),
        next: |n| ((n as usize) * 10 <= SLOW_BODY_BYTES).then(|| b"a=aaaaaaaa".to_vec()),
    }
}

/// Holds connections open as `trickle` says, as long as the server keeps each; then again
/// from the next source address.
#[allow(clippy::too_many_arguments)]
async fn hold(
    w: u32,
    targets: Targets,
    host: Arc<str>,
    attack: Arc<Attack>,
    sources: Sources,
    stats: Arc<AttackStats>,
    stop: CancellationToken,
    trickle: fn(&str, &str) -> Trickle,
) {
    let mut next_source = w % attack.sources;
    let t = trickle(&host, &attack.paths[w as usize % attack.paths.len()]);
    while !stop.is_cancelled() {
        let source = sources.pick(w, next_source);
        next_source = (next_source + attack.connections) % attack.sources;
        let Ok(mut stream) = tcp_from(source, targets.for_source(source)).await else {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        if stream.write_all(t.head.as_bytes()).await.is_err() {
            continue;
        }
        stats.sent.fetch_add(1, Ordering::Relaxed);
        let mut tick = tokio::time::interval(t.every);
        tick.tick().await;
        let mut buf = [0u8; 512];
        let mut n = 0u32;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                read = stream.read(&mut buf) => {
                    // The gateway answered (408) or closed: the connection was shed.
                    let _ = read;
                    stats.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                _ = tick.tick() => {
                    n += 1;
                    let sent = match (t.next)(n) {
                        Some(bytes) => stream.write_all(&bytes).await.is_ok(),
                        None => false,
                    };
                    if !sent {
                        stats.closed_by_server.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}

/// Rempart's resource use, sampled from /proc.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Usage {
    /// CPU time used during the drill, seconds.
    pub cpu_seconds: f64,
    /// Highest resident memory seen, MiB.
    pub peak_rss_mib: f64,
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, inside parentheses).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The drill's findings.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seconds.
    pub duration_s: f64,
    /// Page loads attempted by residents.
    pub legit_loads: u64,
    /// Page loads with every response 2xx within the budget, first challenge included.
    pub legit_ok: u64,
    /// `legit_ok / legit_loads`, percent.
    pub legit_success_pct: f64,
    /// Loads that ended with a non-2xx status.
    pub legit_failed_status: u64,
    /// Loads that succeeded, but over the budget.
    pub legit_too_slow: u64,
    /// Loads that failed on the network.
    pub legit_errors: u64,
    /// Challenges residents solved.
    pub legit_challenges: u64,
    /// Loads that ended with a 429 (counted in `legit_failed_status` too).
    pub legit_limited: u64,
    /// Residents by group (own address, then each group behind shared addresses), when
    /// the scenario has shared addresses.
    pub groups: Vec<GroupReport>,
    /// Median page-load time, ms.
    pub legit_p50_ms: u32,
    /// 99th percentile page-load time, ms.
    pub legit_p99_ms: u32,
    /// 99th percentile of loads that did not include a challenge (after the first pass), ms.
    pub legit_p99_after_pass_ms: u32,
    /// Attack requests sent.
    pub attack_sent: u64,
    /// Attack requests per second achieved.
    pub attack_rate: f64,
    /// Attack answers: 2xx/3xx.
    pub attack_ok: u64,
    /// Attack answers: challenge page.
    pub attack_challenged: u64,
    /// Attack answers: 429.
    pub attack_limited: u64,
    /// Attack answers: 403 (ban, deny list).
    pub attack_refused: u64,
    /// Attack answers: 503 (shed).
    pub attack_shed: u64,
    /// Other attack answers.
    pub attack_other: u64,
    /// Attack network errors.
    pub attack_errors: u64,
    /// Attack connections opened.
    pub attack_connections: u64,
    /// Challenges solved by smart bots.
    pub attack_solved: u64,
    /// HTTP/2 streams reset.
    pub attack_resets: u64,
    /// Connections the server closed (slowloris, rapid reset).
    pub attack_closed_by_server: u64,
    /// What the origin saw (when `--origin` was given).
    pub origin: Option<origin::OriginStats>,
    /// Rempart's resource use (when `--pid` was given).
    pub gateway: Option<Usage>,
}

/// Residents of one kind: with their own address, or behind shared ones.
struct Group {
    name: String,
    clients: u32,
    addresses: u32,
    stats: Arc<LegitStats>,
}

/// What one group of residents experienced.
#[derive(Debug, serde::Serialize)]
pub struct GroupReport {
    /// The group's name (`own address`, or the scenario's).
    pub name: String,
    /// Browsers.
    pub clients: u32,
    /// Addresses they used.
    pub addresses: u32,
    /// Page loads attempted.
    pub loads: u64,
    /// Page loads with every response 2xx within the budget.
    pub ok: u64,
    /// `ok / loads`, percent.
    pub success_pct: f64,
    /// Loads that ended with a 429.
    pub limited: u64,
    /// Loads that ended with another non-2xx status.
    pub failed_status: u64,
    /// Loads over the budget.
    pub too_slow: u64,
    /// Loads that failed on the network.
    pub errors: u64,
    /// 99th percentile page-load time, ms.
    pub p99_ms: u32,
}

impl Group {
    fn report(&self) -> GroupReport {
        let s = &self.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut lat: Vec<u32> = s
            .latencies_ms
            .lock()
            .map(|l| l.iter().map(|(ms, _)| *ms).collect())
            .unwrap_or_default();
        lat.sort_unstable();
        let loads = g(&s.loads);
        GroupReport {
            name: self.name.clone(),
            clients: self.clients,
            addresses: self.addresses,
            loads,
            ok: g(&s.ok),
            success_pct: if loads == 0 {
                0.0
            } else {
                100.0 * g(&s.ok) as f64 / loads as f64
            },
            limited: g(&s.limited),
            failed_status: g(&s.failed_status) - g(&s.limited),
            too_slow: g(&s.too_slow),
            errors: g(&s.errors),
            p99_ms: percentile(&lat, 0.99),
        }
    }
}

impl LegitStats {
    /// Adds `other`'s counts and latencies to these.
    fn absorb(&self, other: &LegitStats) {
        let pairs = [
            (&self.loads, &other.loads),
            (&self.ok, &other.ok),
            (&self.failed_status, &other.failed_status),
            (&self.limited, &other.limited),
            (&self.too_slow, &other.too_slow),
            (&self.errors, &other.errors),
            (&self.challenges, &other.challenges),
        ];
        for (mine, theirs) in pairs {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if let (Ok(mut mine), Ok(theirs)) = (self.latencies_ms.lock(), other.latencies_ms.lock()) {
            mine.extend_from_slice(&theirs);
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn origin_call(origin: SocketAddr, path: &str) -> anyhow::Result<Bytes> {
    let mut conn = connect(Ipv4Addr::LOCALHOST, origin, false).await?;
    let req = Request::builder()
        .uri(path)
        .header(http::header::HOST, origin.to_string())
        .body(Full::new(Bytes::new()))?;
    Ok(exchange(&mut conn, req).await?.body)
}

/// The gateways drilled: each source address goes to one of them, as a load balancer
/// hashing the client's address sends it (the attack and the residents split evenly).
#[derive(Debug, Clone)]
pub struct Targets(Arc<[SocketAddr]>);

impl Targets {
    /// The gateway `source` reaches.
    fn for_source(&self, source: Ipv4Addr) -> SocketAddr {
        // The address's bits mixed (sources differ in any octet), then shared out.
        let mixed = u64::from(u32::from(source)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        self.0[mixed as usize % self.0.len()]
    }
}

/// Runs `scenario` against `targets` (loopback only; several: the nodes of a cluster, each
/// source address to one of them), reporting the CPU and memory of the processes `pids`
/// (summed).
pub async fn run(
    targets: &[SocketAddr],
    scenario: Scenario,
    origin: Option<SocketAddr>,
    pids: &[u32],
) -> anyhow::Result<Report> {
    if targets.is_empty() {
        anyhow::bail!("no gateway to drill");
    }
    for target in targets {
        require_loopback(target.ip())?;
    }
    let targets = Targets(targets.into());
    let pid = (!pids.is_empty()).then_some(pids);
    let cpu_of = |pids: &[u32]| -> Option<u64> { pids.iter().map(|p| proc_cpu_ticks(*p)).sum() };
    let rss_of = |pids: &[u32]| -> Option<u64> { pids.iter().map(|p| proc_rss_kib(*p)).sum() };
    if let Some(o) = origin {
        require_loopback(o.ip())?;
        origin_call(o, "/__drill/reset").await?;
    }
    let scenario = Arc::new(scenario);
    let stop = CancellationToken::new();
    let attack = Arc::new(AttackStats::default());
    let host: Arc<str> = Arc::from(scenario.host.as_str());
    let started = Instant::now();
    let cpu_before = pid.and_then(cpu_of);
    let mut tasks = tokio::task::JoinSet::new();
    let bot_solver = Arc::new(tokio::sync::Semaphore::new(1));
    // Residents with an address of their own, then each group behind shared addresses.
    let mut groups = vec![Group {
        name: "own address".into(),
        clients: scenario.legit.clients,
        addresses: scenario.legit.clients,
        stats: Arc::new(LegitStats::default()),
    }];
    for i in 0..scenario.legit.clients {
        tasks.spawn(resident(
            i,
            legit_source(i),
            targets.for_source(legit_source(i)),
            scenario.clone(),
            groups[0].stats.clone(),
            stop.child_token(),
        ));
    }
    let mut index = scenario.legit.clients;
    for (g, shared) in scenario.legit.shared.iter().enumerate() {
        let stats = Arc::new(LegitStats::default());
        for j in 0..shared.clients {
            let source = shared_source(g, j % shared.addresses);
            tasks.spawn(resident(
                index,
                source,
                targets.for_source(source),
                scenario.clone(),
                stats.clone(),
                stop.child_token(),
            ));
            index += 1;
        }
        groups.push(Group {
            name: shared.name.clone(),
            clients: shared.clients,
            addresses: shared.addresses,
            stats,
        });
    }
    for a in &scenario.attacks {
        let sources = Sources::new(&scenario, a);
        let a = Arc::new(a.clone());
        for w in 0..a.connections {
            let (a, stats, stop, host, target) = (
                a.clone(),
                attack.clone(),
                stop.child_token(),
                host.clone(),
                targets.clone(),
            );
            let (solver, sources) = (bot_solver.clone(), sources.clone());
            tasks.spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(a.start) => {}
                }
                if a.kind == AttackKind::Slowloris {
                    hold(w, target, host, a, sources, stats, stop, slowloris).await;
                } else if a.kind == AttackKind::SlowBody {
                    hold(w, target, host, a, sources, stats, stop, slow_body).await;
                } else {
                    bot(solver, w, target, host, a, sources, stats, stop).await;
                }
            });
        }
    }
    // Sample the gateway's memory while the drill runs.
    let mut peak_rss = 0u64;
    let deadline = started + scenario.duration;
    let mut sample = tokio::time::interval(Duration::from_millis(250));
    while Instant::now() < deadline {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            _ = sample.tick() => {
                if let Some(kib) = pid.and_then(rss_of) {
                    peak_rss = peak_rss.max(kib);
                }
            }
        }
    }
    stop.cancel();
    let elapsed = started.elapsed().as_secs_f64();
    let gateway = pid.map(|p| Usage {
        cpu_seconds: match (cpu_before, cpu_of(p)) {
            (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / 100.0,
            _ => 0.0,
        },
        peak_rss_mib: peak_rss as f64 / 1024.0,
    });
    // Give the tasks a moment to notice; whatever is still stuck is aborted.
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let origin_stats = match origin {
        Some(o) => serde_json::from_slice(&origin_call(o, "/__drill/stats").await?).ok(),
        None => None,
    };
    let group_reports: Vec<GroupReport> = groups
        .iter()
        .filter(|g| g.clients > 0)
        .map(|g| g.report())
        .collect();
    let legit = LegitStats::default();
    for group in &groups {
        legit.absorb(&group.stats);
    }
    let mut lat = legit
        .latencies_ms
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let all: Vec<u32> = lat.iter().map(|(ms, _)| *ms).collect();
    let mut after: Vec<u32> = lat.iter().filter(|(_, c)| !c).map(|(ms, _)| *ms).collect();
    after.sort_unstable();
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let loads = g(&legit.loads);
    Ok(Report {
        legit_limited: g(&legit.limited),
        groups: if scenario.legit.shared.is_empty() {
            Vec::new()
        } else {
            group_reports
        },
        scenario: scenario.name.clone(),
        duration_s: elapsed,
        legit_loads: loads,
        legit_ok: g(&legit.ok),
        legit_success_pct: if loads == 0 {
            0.0
        } else {
            100.0 * g(&legit.ok) as f64 / loads as f64
        },
        legit_failed_status: g(&legit.failed_status),
        legit_too_slow: g(&legit.too_slow),
        legit_errors: g(&legit.errors),
        legit_challenges: g(&legit.challenges),
        legit_p50_ms: percentile(&all, 0.5),
        legit_p99_ms: percentile(&all, 0.99),
        legit_p99_after_pass_ms: percentile(&after, 0.99),
        attack_sent: g(&attack.sent),
        attack_rate: g(&attack.sent) as f64 / elapsed,
        attack_ok: g(&attack.ok),
        attack_challenged: g(&attack.challenged),
        attack_limited: g(&attack.limited),
        attack_refused: g(&attack.refused),
        attack_shed: g(&attack.shed),
        attack_other: g(&attack.other),
        attack_errors: g(&attack.errors),
        attack_connections: g(&attack.connections),
        attack_solved: g(&attack.solved),
        attack_resets: g(&attack.resets),
        attack_closed_by_server: g(&attack.closed_by_server),
        origin: origin_stats,
        gateway,
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "scenario: {} ({:.1} s)", self.scenario, self.duration_s)?;
        writeln!(
            f,
            "residents: {:.2} % of {} page loads 2xx within budget (p50 {} ms, p99 {} ms, p99 after the first pass {} ms); {} challenges solved; {} non-2xx, {} too slow, {} errors",
            self.legit_success_pct, self.legit_loads, self.legit_p50_ms, self.legit_p99_ms,
            self.legit_p99_after_pass_ms, self.legit_challenges, self.legit_failed_status,
            self.legit_too_slow, self.legit_errors
        )?;
        writeln!(
            f,
            "attack: {} requests ({:.0}/s) on {} connections: {} ok, {} challenged, {} limited, {} refused, {} shed, {} other, {} errors; {} challenges solved by bots; {} h2 resets; {} closed by the server",
            self.attack_sent, self.attack_rate, self.attack_connections, self.attack_ok,
            self.attack_challenged, self.attack_limited, self.attack_refused, self.attack_shed,
            self.attack_other, self.attack_errors, self.attack_solved, self.attack_resets,
            self.attack_closed_by_server
        )?;
        for g in &self.groups {
            writeln!(
                f,
                "  {} ({} residents on {} addresses): {:.2} % of {} loads ok, p99 {} ms; {} answered 429, {} other non-2xx, {} too slow, {} errors",
                g.name, g.clients, g.addresses, g.success_pct, g.loads, g.p99_ms, g.limited,
                g.failed_status, g.too_slow, g.errors
            )?;
        }
        if let Some(o) = &self.origin {
            writeln!(
                f,
                "origin: {} served ({} attack, {} legit); peak {} inside (workers {}), peak queue {}, busiest second {} (capacity {}/s)",
                o.served, o.attack, o.legit, o.peak_concurrency, o.workers, o.peak_queue,
                o.peak_per_second, o.capacity_per_second
            )?;
        }
        if let Some(g) = &self.gateway {
            writeln!(
                f,
                "gateway: {:.1} CPU s ({:.2} cores), peak RSS {:.1} MiB",
                g.cpu_seconds,
                g.cpu_seconds / self.duration_s,
                g.peak_rss_mib
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_gateways_share_the_sources_evenly_and_each_source_keeps_its_gateway() {
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:8001".parse().unwrap(),
            "127.0.0.1:8002".parse().unwrap(),
        );
        let targets = Targets(vec![a, b].into());
        for sources in [
            (0..10_000u32).map(attack_source).collect::<Vec<_>>(),
            (0..500u32).map(legit_source).collect(),
        ] {
            let to_a = sources
                .iter()
                .filter(|s| targets.for_source(**s) == a)
                .count();
            let half = sources.len() / 2;
            assert!(
                to_a.abs_diff(half) * 20 <= half,
                "{to_a} of {}",
                sources.len()
            );
        }
        let one = legit_source(7);
        assert_eq!(targets.for_source(one), targets.for_source(one));
        assert_eq!(Targets(vec![a].into()).for_source(one), a);
    }

    #[tokio::test]
    async fn the_drill_refuses_any_gateway_outside_loopback() {
        let scenario = scenario::Scenario::parse(
            "name = \"x\"\nduration = \"1s\"\nhost = \"ville.test\"\n[legit]\nclients = 1\n",
        )
        .unwrap();
        let targets = [
            "127.0.0.1:8001".parse().unwrap(),
            "192.0.2.1:80".parse().unwrap(),
        ];
        let err = run(&targets, scenario, None, &[]).await.unwrap_err();
        assert!(err.to_string().contains("refusing 192.0.2.1"), "{err}");
    }

    #[test]
    fn bots_behind_shared_addresses_are_spread_among_the_workers() {
        let sources = Sources {
            shared: vec![Ipv4Addr::new(127, 9, 0, 1)].into(),
            behind_shared: 200,
            connections: 4000,
        };
        let shared: Vec<u32> = (0..4000).filter(|&w| sources.is_shared(w)).collect();
        assert_eq!(shared.len(), 200);
        // One in twenty, evenly: as many in the first tenth of the workers as in any other.
        assert_eq!(shared.iter().filter(|&&w| w < 400).count(), 20);
        assert!(shared.windows(2).all(|p| p[1] - p[0] == 20));
        assert_eq!(sources.pick(shared[0], 7), Ipv4Addr::new(127, 9, 0, 1));
        assert_ne!(sources.pick(shared[0] + 1, 7), Ipv4Addr::new(127, 9, 0, 1));
        // Spread evenly over the shared addresses, at first and after reconnecting.
        let five = Sources {
            shared: (1..=5).map(|d| Ipv4Addr::new(127, 9, 0, d)).collect(),
            ..sources
        };
        for step in [0, 4000, 8000] {
            let mut per_address = std::collections::HashMap::new();
            for &w in &shared {
                *per_address
                    .entry(five.pick(w, (w + step) % 1000))
                    .or_insert(0) += 1;
            }
            assert_eq!(per_address.len(), 5);
            assert!(per_address.values().all(|&n| n == 40), "{per_address:?}");
        }
        let none = Sources {
            behind_shared: 0,
            ..five
        };
        assert!((0..4000).all(|w| !none.is_shared(w)));
    }
}
