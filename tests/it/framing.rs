//! Message framing through the upstream client: chunked and close-delimited responses,
//! HEAD and 204 without bodies, chunked uploads, large streamed bodies, connection reuse.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

#[tokio::test]
async fn chunked_head_and_no_content_responses() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let c = h1_client();
    for _ in 0..3 {
        let got = get(&c, gw.addr, "ville.test", "/chunked").await;
        assert_eq!((got.status, got.body.as_str()), (200, "un, deux, trois"));
        let req = http::Request::head(gw.url("/big?bytes=5000"))
            .header("host", "ville.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let got = collect(c.request(req).await.unwrap()).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.headers.get("content-length").unwrap(), "5000");
        assert_eq!(got.body, "");
        let got = get(&c, gw.addr, "ville.test", "/no-content").await;
        assert_eq!((got.status, got.body.as_str()), (204, ""));
    }
    // A large body streams through intact.
    let got = get(&c, gw.addr, "ville.test", "/big?bytes=3000000").await;
    assert_eq!(got.body.len(), 3_000_000);
    assert!(got.body.bytes().all(|b| b == b'x'));
}

#[tokio::test]
async fn chunked_upload_is_forwarded() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = (0..3)
        .map(|_| Ok(hyper::body::Frame::data(Bytes::from(vec![b'y'; 400]))))
        .collect();
    let client: hyper_util::client::legacy::Client<
        _,
        http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
    > = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = http::Request::post(gw.url("/upload"))
        .header("host", "ville.test")
        .body(StreamBody::new(futures_util::stream::iter(chunks)).boxed())
        .unwrap();
    let got = collect(client.request(req).await.unwrap()).await;
    assert_eq!((got.status, got.body.as_str()), (200, "1200"));
}

#[tokio::test]
async fn close_delimited_response_and_broken_origin() {
    // A raw origin: first connection answers without length and closes; second sends garbage.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            n += 1;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let answer: &[u8] = if n == 1 {
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
            } else {
                b"SMTP ready\r\n\r\n"
            };
            let _ = s.write_all(answer).await;
            let _ = s.shutdown().await;
        }
    });
    // No stale copies here: the second answer must show the broken origin.
    let gw = Gw::start(&one_tenant(
        &[addr],
        "health = { passive_failures = 0 }",
        "stale_if_error = \"0s\"",
    ))
    .await;
    let c = h1_client();
    let got = get(&c, gw.addr, "ville.test", "/").await;
    assert_eq!((got.status, got.body.as_str()), (200, "until the end"));
    let got = get(&c, gw.addr, "ville.test", "/").await;
    assert_eq!(got.status, 502);
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let c = h1_client();
    for _ in 0..50 {
        assert_eq!(get(&c, gw.addr, "ville.test", "/").await.status, 200);
    }
    // Sequential requests need one upstream connection: count the origin's established peers.
    let conns = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = format!("{:04X}", origin.addr.port());
    let established = conns
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&format!(":{port}")) && f[3] == "01"
        })
        .count();
    assert_eq!(established, 1, "expected one pooled upstream connection");
}

/// Reads until the gateway closes the connection; returns what came and when it closed.
async fn until_closed(s: &mut tokio::net::TcpStream, within: std::time::Duration) -> Vec<u8> {
    let mut out = Vec::new();
    // Closed by EOF or by a reset: either way, what arrived before is kept in `out`.
    if tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .is_err()
    {
        panic!("connection still open after {within:?}");
    }
    out
}

#[tokio::test]
async fn request_heads_must_arrive_within_the_header_read_timeout() {
    use std::time::{Duration, Instant};
    let origin = Origin::start("a").await;
    let gw = Gw::start(&format!(
        "[timeouts]\ndownstream_header_read = \"600ms\"\n\n{}",
        one_tenant(&[origin.addr], "", "")
    ))
    .await;

    // Slowloris: a head trickled one header line at a time, bytes moving all along.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: ville.test\r\n")
        .await
        .unwrap();
    let mut closed = false;
    for i in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
    }
    if !closed {
        let got = until_closed(&mut s, Duration::from_secs(3)).await;
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(550), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(
        origin.count(),
        0,
        "a head that never completed reached the origin"
    );

    // A keep-alive connection waiting for its next request is closed the same way.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: ville.test\r\n\r\n")
        .await
        .unwrap();
    let answered = Instant::now();
    let got = until_closed(&mut s, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let took = answered.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");

    // No head deadline while a request is in flight: a slow answer longer than the timeout
    // arrives, and the connection then serves another request.
    let c = h1_client();
    let got = get(&c, gw.addr, "ville.test", "/slow?ms=1500").await;
    assert_eq!(got.status, 200);
    let got = get(&c, gw.addr, "ville.test", "/").await;
    assert_eq!(got.status, 200);
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_downstream_connections_total{result=\"header_timeout\"}"),
        "{m}"
    );
}
