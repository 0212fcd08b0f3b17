//! Slow uploads never reach the origin: a request body is read whole by the gateway before
//! its request takes an origin slot (in memory, then on disk, both bounded), so bodies
//! trickled byte by byte hold nothing of the origin and page views keep being served. A
//! route that streams uploads does it within its own slots, never the page views'.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::h1_raw;
use crate::support::*;

/// Opens a connection that announces a 64 KiB body and sends it one byte at a time.
async fn slow_upload(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: ville.test\r\nContent-Type: application/octet-stream\r\nContent-Length: 65536\r\n\r\nx")
        .await
        .unwrap();
    s
}

#[tokio::test]
async fn trickled_bodies_hold_nothing_of_the_origin() {
    let origin = Origin::start("a").await;
    // An origin that serves two requests at once: two slow uploads would take it whole if
    // they were forwarded as they arrive.
    let gw = Gw::start(&one_tenant(
        &[origin.addr],
        "max_concurrency = 2\nmin_concurrency = 2\nqueue_timeout = \"200ms\"",
        "",
    ))
    .await;
    let mut uploads = Vec::new();
    for _ in 0..40 {
        uploads.push(slow_upload(gw.addr).await);
    }
    // Keep them trickling while residents read pages.
    let c = h1_client();
    for round in 0..20 {
        for s in uploads.iter_mut() {
            let _ = s.write_all(b"y").await;
        }
        let got = get(&c, gw.addr, "ville.test", &format!("/page-{round}")).await;
        assert_eq!(got.status, 200, "round {round}: {}", got.body);
    }
    // The origin saw the page views only: no upload reached it unfinished.
    assert!(
        origin.seen().iter().all(|s| s.contains("/page-")),
        "{:?}",
        origin.seen()
    );
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_request_body_buffered_bytes{store=\"memory\"} "),
        "{m}"
    );
    // A complete body goes through, with its length.
    let body = vec![b'z'; 300_000];
    let head = format!("POST /upload HTTP/1.1\r\nHost: ville.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n", body.len());
    let mut wire = head.into_bytes();
    wire.extend_from_slice(&body);
    wire.extend_from_slice(b"\r\n0\r\n\r\n");
    let reply = h1_raw(gw.addr, &wire, Duration::from_secs(10)).await;
    assert_eq!(reply.statuses, [200], "{}", reply.text);
    assert!(reply.text.ends_with("300000"), "{}", reply.text);
    assert_eq!(origin.header("content-length").as_deref(), Some("300000"));
    // That one went to disk (larger than a body kept in memory) and was given back.
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_request_bodies_buffered_total{store=\"disk\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("rempart_request_body_buffered_bytes{store=\"disk\"} 0"),
        "{m}"
    );
    drop(uploads);
}

#[tokio::test]
async fn streamed_uploads_use_their_own_slots() {
    let origin = Origin::start("a").await;
    let config = format!(
        "{}\n[[tenants.routes]]\nname = \"depot\"\npath_prefix = \"/depot\"\npool = \"web\"\nstream_request_body = true\nmax_streaming_uploads = 1\n",
        one_tenant(&[origin.addr], "max_concurrency = 1\nmin_concurrency = 1\nqueue_timeout = \"200ms\"", "")
    );
    let gw = Gw::start(&config).await;
    // One upload streams (its head reaches the origin at once) and holds the route's slot.
    // (Bodies up to 16 KiB are read with their head on any route.)
    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    first
        .write_all(b"POST /depot/a HTTP/1.1\r\nHost: ville.test\r\nContent-Length: 100000\r\n\r\nx")
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || async { origin.count() == 1 }).await);
    // A second one finds no slot: 503, without waiting.
    let reply = h1_raw(
        gw.addr,
        b"POST /depot/b HTTP/1.1\r\nHost: ville.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(reply.statuses, [503], "{}", reply.text);
    // Page views keep their slot of the pool.
    let got = get(&h1_client(), gw.addr, "ville.test", "/page").await;
    assert_eq!(got.status, 200);
    drop(first);
}
