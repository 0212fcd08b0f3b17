//! Error pages: 400, 421, 431, 413, 502, 504, each branded, and the origin never sees a
//! refused request.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};

use crate::support::*;

#[tokio::test]
async fn unknown_host_is_421_and_default_tenant_serves_it() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let c = h1_client();
    let got = get(&c, gw.addr, "other.example", "/").await;
    assert_eq!(got.status, 421);
    assert!(got.body.contains("Site inconnu"));
    assert_eq!(origin.count(), 0);
    let got = get_with(
        &c,
        gw.addr,
        "other.example",
        "/",
        &[("accept-language", "en-GB,en;q=0.9")],
    )
    .await;
    assert!(got.body.contains("Unknown site"), "{}", got.body);

    let config = format!(
        "default_tenant = \"ville\"\n{}",
        one_tenant(&[origin.addr], "", "")
    );
    let gw2 = Gw::start(&config).await;
    assert_eq!(get(&c, gw2.addr, "other.example", "/").await.status, 200);
}

#[tokio::test]
async fn malformed_requests_get_400_and_never_reach_the_origin() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let cases: [&[u8]; 6] = [
        b"GET / HTTP/1.1\r\nHost: ville.test\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: ville.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: ville.test\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost ville.test\r\n\r\n",
        b"GE T / HTTP/1.1\r\nHost: ville.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: ville test\r\nConnection: close\r\n\r\n",
    ];
    for case in cases {
        let answer = raw(gw.addr, case, Duration::from_secs(5)).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{:?} -> {answer}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn oversized_header_is_431() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&format!(
        "[limits]\nmax_header_bytes = 8192\n\n{}",
        one_tenant(&[origin.addr], "", "")
    ))
    .await;
    // Far past the limit, and just past it (a head the gateway reads in more than one piece
    // whatever the packets, since one read takes at most the limit).
    for size in [20_000, 9_000] {
        let big = "a".repeat(size);
        let req = format!("GET / HTTP/1.1\r\nHost: ville.test\r\nX-Big: {big}\r\n\r\n");
        let answer = raw(gw.addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{size}: {answer}");
    }
    // Within the limit: served.
    let fits = "a".repeat(7_000);
    let req =
        format!("GET / HTTP/1.1\r\nHost: ville.test\r\nX-Big: {fits}\r\nConnection: close\r\n\r\n");
    let answer = raw(gw.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn oversized_body_is_413_declared_or_streamed() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "max_body_bytes = 1000")).await;
    let c = h1_client();
    // Declared length over the limit: refused before contacting the origin.
    let req = http::Request::post(gw.url("/upload"))
        .header("host", "ville.test")
        .body(http_body_util::Full::new(Bytes::from(vec![b'x'; 5000])))
        .unwrap();
    let got = collect(c.request(req).await.unwrap()).await;
    assert_eq!(got.status, 413);
    assert!(got.body.contains("trop volumineux"));
    assert_eq!(origin.count(), 0);
    // Under the limit: passes.
    let req = http::Request::post(gw.url("/upload"))
        .header("host", "ville.test")
        .body(http_body_util::Full::new(Bytes::from(vec![b'x'; 900])))
        .unwrap();
    let got = collect(c.request(req).await.unwrap()).await;
    assert_eq!((got.status, got.body.as_str()), (200, "900"));

    // Chunked, no declared length: cut as soon as the limit is crossed.
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = (0..10)
        .map(|_| Ok(hyper::body::Frame::data(Bytes::from(vec![b'y'; 400]))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let stream_client: hyper_util::client::legacy::Client<
        _,
        http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
    > = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = http::Request::post(gw.url("/upload"))
        .header("host", "ville.test")
        .body(body.boxed())
        .unwrap();
    let got = collect(stream_client.request(req).await.unwrap()).await;
    assert_eq!(got.status, 413, "{}", got.body);
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_slow_one_is_504() {
    let dead = closed_port().await;
    let slow = Origin::start("slow").await;
    let config = format!(
        r#"[[tenants]]
id = "ville"
name = "Ville de Test"
hosts = ["ville.test"]
contact = "Mairie : 02 00 00 00 00"

[[tenants.pools]]
name = "dead"
servers = [{{ address = "{dead}" }}]

[[tenants.pools]]
name = "slow"
servers = [{{ address = "{}" }}]

[[tenants.routes]]
path_prefix = "/dead"
pool = "dead"

[[tenants.routes]]
path_prefix = "/"
pool = "slow"
timeouts = {{ upstream_response_head = "300ms" }}
"#,
        slow.addr
    );
    let gw = Gw::start(&config).await;
    let c = h1_client();
    let got = get(&c, gw.addr, "ville.test", "/dead/x").await;
    assert_eq!(got.status, 502);
    assert!(
        got.body.contains("Ville de Test") && got.body.contains("02 00 00 00 00"),
        "{}",
        got.body
    );
    assert!(!got.body.contains(&dead.to_string()), "no internal detail");
    let started = std::time::Instant::now();
    let got = get(&c, gw.addr, "ville.test", "/slow?ms=3000").await;
    assert_eq!(got.status, 504);
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(got.body.contains("trop de temps"));
    let got = get_with(
        &c,
        gw.addr,
        "ville.test",
        "/slow?ms=3000",
        &[("accept-language", "en")],
    )
    .await;
    assert!(got.body.contains("taking too long") && got.body.contains("lang=\"en\""));
}
