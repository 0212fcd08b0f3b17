//! HTTP/2 prior knowledge (h2c), WebSocket passthrough, graceful drain.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn h2c_prior_knowledge_is_proxied_to_http1_upstream() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    // h2 carries the host in :authority; the origin must still see Host.
    let req = http::Request::get(format!("http://ville.test:{}/headers", gw.addr.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    // Connect to the gateway's address while keeping the authority.
    let mut sender = h2c(gw.addr).await;
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let got = collect(resp).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let seen: std::collections::HashMap<String, String> = serde_json::from_str(&got.body).unwrap();
    assert_eq!(seen["host"], format!("ville.test:{}", gw.addr.port()));
    assert_eq!(seen["via"], "2 rempart");
    assert!(got.headers.get("connection").is_none());
    // The origin's fields reach an HTTP/2 client too (hyper writes them from a map), minus
    // what the origin's Connection listed; the length is the origin's.
    assert_eq!(got.headers.get("x-origin").unwrap(), "a");
    assert!(got.headers.get("x-hop").is_none());
    assert_eq!(got.headers.get("via").unwrap(), "1.1 rempart");
    assert_eq!(
        got.headers.get("content-length").unwrap(),
        got.body.len().to_string().as_str()
    );
    // Several concurrent streams on one connection.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut s = sender.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::get(format!("http://ville.test/n{i}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            s.send_request(req).await.unwrap().status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let origin = Origin::start("ws").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: ville.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    // A masked WebSocket text frame "bonjour"; the origin echoes raw bytes back.
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 7];
    frame.extend_from_slice(&mask);
    frame.extend(b"bonjour".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    for _ in 0..3 {
        s.write_all(&frame).await.unwrap();
        let mut echo = vec![0u8; frame.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echo, frame);
    }
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_requests() {
    let origin = Origin::start("a").await;
    let mut gw = Gw::start(&format!(
        "[timeouts]\nshutdown_drain = \"5s\"\n\n{}",
        one_tenant(&[origin.addr], "", "")
    ))
    .await;
    let c = h1_client();
    let addr = gw.addr;
    let inflight = tokio::spawn({
        let c = c.clone();
        async move { get(&c, addr, "ville.test", "/slow?ms=700").await }
    });
    assert!(eventually(Duration::from_secs(5), || async { origin.count() == 1 }).await);
    let running = gw.running.take().unwrap();
    let drained = tokio::spawn(running.shutdown());
    let got = inflight.await.unwrap();
    assert_eq!((got.status, got.body.as_str()), (200, "slow from a"));
    assert!(drained.await.unwrap(), "drained before the deadline");
    // Not accepting any more.
    assert!(TcpStream::connect(addr).await.is_err());
}

/// A 7,000-byte HTTP/2 upload without a length, through `gw`.
async fn h2_upload_without_length(gw: &Gw) -> Got {
    let mut stream_sender = h2c(gw.addr).await;
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = (0..2)
        .map(|_| Ok(hyper::body::Frame::data(Bytes::from(vec![b'z'; 3500]))))
        .collect();
    let req = http::Request::post("http://ville.test/upload")
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(
            chunks,
        )))
        .unwrap();
    collect(stream_sender.send_request(req).await.unwrap()).await
}

#[tokio::test]
async fn h2_uploads_reach_the_origin_with_and_without_length() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let mut sender = h2c(gw.addr).await;
    // With content-length.
    let req = http::Request::post("http://ville.test/upload")
        .header("content-length", "5000")
        .body(Full::new(Bytes::from(vec![b'z'; 5000])))
        .unwrap();
    let got = collect(sender.send_request(req).await.unwrap()).await;
    assert_eq!((got.status, got.body.as_str()), (200, "5000"));
    // Without: read whole first, so the origin gets its length.
    let got = h2_upload_without_length(&gw).await;
    assert_eq!((got.status, got.body.as_str()), (200, "7000"));
    assert_eq!(origin.header("content-length").as_deref(), Some("7000"));
    assert!(origin.header("transfer-encoding").is_none());
    // On a route that streams uploads, Rempart re-frames it as chunked for the HTTP/1.1
    // origin.
    let streaming = Gw::start(&one_tenant(
        &[origin.addr],
        "",
        "stream_request_body = true",
    ))
    .await;
    let got = h2_upload_without_length(&streaming).await;
    assert_eq!((got.status, got.body.as_str()), (200, "7000"));
    assert!(origin.header("content-length").is_none());
    assert_eq!(
        origin.header("transfer-encoding").as_deref(),
        Some("chunked")
    );
}

/// Raw HTTP/2 frames for abuse tests: the client preface, then `frames`.
fn h2_frames(frames: &[(u8, u8, u32, &[u8])]) -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    for (kind, flags, stream, payload) in frames {
        out.extend(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(*kind);
        out.push(*flags);
        out.extend(stream.to_be_bytes());
        out.extend(*payload);
    }
    out
}

#[tokio::test]
async fn h2_ping_and_settings_floods_do_not_starve_other_clients() {
    use tokio::io::AsyncWriteExt;
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    // A client that floods PING and SETTINGS frames and never reads the answers.
    let mut flood_frames: Vec<(u8, u8, u32, &[u8])> = vec![(4, 0, 0, &[])];
    for _ in 0..2_000 {
        flood_frames.push((6, 0, 0, b"12345678"));
        flood_frames.push((4, 0, 0, &[0, 3, 0, 0, 0, 100]));
    }
    let burst = h2_frames(&flood_frames);
    let addr = gw.addr;
    let flooder = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&burst).await.unwrap();
        // Then the frames again and again (no second preface); writes stop when the gateway
        // stops reading or closes.
        let mut written = burst.len();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while s.write_all(&burst[24..]).await.is_ok() {
                written += burst.len() - 24;
            }
        })
        .await;
        written
    });
    // Meanwhile, others are served promptly.
    let c = h1_client();
    for _ in 0..20 {
        let started = std::time::Instant::now();
        assert_eq!(get(&c, gw.addr, "ville.test", "/").await.status, 200);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
    // The flood really went on (megabytes of frames), yet nobody else waited.
    let written = flooder.await.unwrap();
    assert!(written > 1_000_000, "{written}");
}

#[tokio::test]
async fn h2_continuation_flood_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    // HEADERS without END_HEADERS, then CONTINUATION frames of valid HPACK literals forever:
    // the header block grows past `max_header_bytes` and the connection must be closed
    // rather than buffered.
    let mut literal = vec![0x00, 0x01, b'x', 100];
    literal.extend([b'y'; 100]);
    let mut frames: Vec<(u8, u8, u32, &[u8])> = vec![(4, 0, 0, &[]), (1, 0, 1, &literal)];
    for _ in 0..5_000 {
        frames.push((9, 0, 1, &literal));
    }
    let bytes = h2_frames(&frames);
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let _ = s.write_all(&bytes).await;
    // The gateway answers with GOAWAY (frame type 7) and/or closes; it never hangs on.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(closed, "connection still open after the flood");
    assert_eq!(origin.count(), 0);
    // Others are still served.
    assert_eq!(
        get(&h1_client(), gw.addr, "ville.test", "/").await.status,
        200
    );
}
