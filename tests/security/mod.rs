//! The security suite: one end-to-end test per class of attack found against the gateway,
//! on real sockets, over HTTP/1.1 (raw bytes, as an attacker writes them) and HTTP/2. Each
//! asserts what the client gets and what the origin saw (or that it saw nothing).
//! `docs/security.md` lists the classes and what the gateway does about each.

mod claims;
mod config;
mod forms;
mod history;
mod hosts;
mod passes;
mod paths;
mod uploads;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a raw HTTP/1.1 exchange gave.
#[derive(Debug)]
pub struct Reply {
    /// Every response status line's code, in order.
    pub statuses: Vec<u16>,
    /// The whole answer as text.
    pub text: String,
    /// The gateway closed the connection (within the wait).
    pub closed: bool,
}

/// Sends `bytes` on a fresh connection and reads until the gateway closes it or `wait`
/// passes.
pub async fn h1_raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, s.read_to_end(&mut out))
        .await
        .is_ok();
    let text = String::from_utf8_lossy(&out).into_owned();
    let statuses = text
        .split("\r\n")
        .filter_map(|line| line.strip_prefix("HTTP/1.1 "))
        .filter_map(|rest| rest.get(..3)?.parse().ok())
        .collect();
    Reply {
        statuses,
        text,
        closed,
    }
}

/// One request `METHOD TARGET` with `Host: host` and `Connection: close`: its status.
pub async fn h1_status(addr: SocketAddr, method: &str, target: &str, host: &str) -> u16 {
    let head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let reply = h1_raw(addr, head.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(reply.statuses.len(), 1, "{target}: {}", reply.text);
    reply.statuses[0]
}

/// One HTTP/2 (h2c) GET of `uri` with extra `headers`: status and body.
pub async fn h2_status_body(
    addr: SocketAddr,
    uri: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let (status, body) = h2_exchange(addr, "GET", uri, headers)
        .await
        .expect("the stream was refused");
    (status, body)
}

/// One HTTP/2 (h2c) request to `uri` with extra `headers`: its status, or `None` when the
/// stream was refused.
pub async fn h2_status(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> Option<u16> {
    Some(h2_exchange(addr, method, uri, headers).await?.0)
}

async fn h2_exchange(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut sender = crate::support::h2c::<Full<Bytes>>(addr).await;
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri)
        .version(http::Version::HTTP_2);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    Some((status, body))
}
