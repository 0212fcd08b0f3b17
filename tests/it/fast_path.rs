//! The HTTP/1.1 fast path downstream (`server::h1`) on raw sockets: pipelining, heads split
//! over several packets, the hand-over to hyper in the middle of a connection, response framing
//! written by the fast path, and `Connection: close`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

/// Reads until the peer closes (bounded by `WAIT`).
async fn until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Status codes of the responses in `text`, in order.
fn statuses(text: &str) -> Vec<&str> {
    text.match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: ville.test\r\n\r\n\
          GET /nowhere HTTP/1.1\r\nHost: unknown.test\r\n\r\n\
          GET /chunked HTTP/1.1\r\nHost: ville.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let text = until_closed(&mut s).await;
    assert_eq!(statuses(&text), ["200", "421", "200"], "{text}");
    let first = text.find("hello from a").unwrap();
    let second = text.find("HTTP/1.1 421").unwrap();
    assert!(first < second);
    // The origin's chunked answer goes out chunked and terminated, then the connection closes
    // as asked.
    let last = &text[text.rfind("HTTP/1.1 200").unwrap()..];
    assert!(last.contains("transfer-encoding: chunked\r\n"), "{last}");
    assert!(last.contains("connection: close\r\n"), "{last}");
    assert!(last.ends_with("0\r\n\r\n"), "{last}");
    let unscrambled: String = last
        .split("\r\n\r\n")
        .nth(1)
        .unwrap()
        .split("\r\n")
        .skip(1)
        .step_by(2)
        .collect();
    assert_eq!(unscrambled, "un, deux, trois");
    // The page Rempart wrote itself carries its length and a date.
    let local = &text[second..text.rfind("HTTP/1.1 200").unwrap()];
    assert!(local.contains("content-length: "), "{local}");
    assert!(local.contains("date: "), "{local}");
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn a_head_in_several_packets_is_served() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for piece in [
        &b"GET /pieces HT"[..],
        b"TP/1.1\r\nHo",
        b"st: ville.test\r\nConnec",
        b"tion: close\r\n\r",
        b"\n",
    ] {
        // However the pieces are grouped on arrival, the answer is the same (the joining of
        // pieces is covered deterministically by `server::h1`'s unit tests).
        s.write_all(piece).await.unwrap();
        s.flush().await.unwrap();
    }
    let text = until_closed(&mut s).await;
    assert_eq!(statuses(&text), ["200"], "{text}");
    assert!(text.ends_with("hello from a"), "{text}");
}

#[tokio::test]
async fn a_request_with_a_body_hands_the_connection_to_hyper() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    // A body-less GET (fast path), an upload (hyper from here on), another GET.
    s.write_all(b"GET /before HTTP/1.1\r\nHost: ville.test\r\n\r\n")
        .await
        .unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: ville.test\r\nContent-Length: 5\r\n\r\nabcde")
        .await
        .unwrap();
    s.write_all(b"GET /after HTTP/1.1\r\nHost: ville.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let text = until_closed(&mut s).await;
    assert_eq!(statuses(&text), ["200", "200", "200"], "{text}");
    let bodies: Vec<&str> = text
        .split("HTTP/1.1 ")
        .skip(1)
        .map(|r| r.split("\r\n\r\n").nth(1).unwrap())
        .collect();
    assert_eq!(bodies, ["hello from a", "5", "hello from a"]);
    assert_eq!(origin.count(), 3);
}

#[tokio::test]
async fn head_answers_carry_the_length_but_no_body() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"HEAD /big?bytes=700 HTTP/1.1\r\nHost: ville.test\r\n\r\n\
          GET /big?bytes=3 HTTP/1.1\r\nHost: ville.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let text = until_closed(&mut s).await;
    assert_eq!(statuses(&text), ["200", "200"], "{text}");
    let (head, get) = text.split_at(text.rfind("HTTP/1.1 200").unwrap());
    assert!(head.contains("content-length: 700\r\n"), "{head}");
    assert!(
        head.ends_with("\r\n\r\n"),
        "no body after a HEAD answer: {head}"
    );
    assert!(get.ends_with("\r\n\r\nxxx"), "{get}");
}

#[tokio::test]
async fn a_malformed_head_after_good_requests_gets_400_and_never_reaches_the_origin() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let text = raw(
        gw.addr,
        b"GET /fine HTTP/1.1\r\nHost: ville.test\r\n\r\n\
          GET /bad HTTP/1.1\r\nHost ville.test\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(statuses(&text), ["200", "400"], "{text}");
    assert_eq!(origin.count(), 1);
}
