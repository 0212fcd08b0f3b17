//! Methods and target forms a gateway must not forward: `CONNECT` (405, and the bytes
//! after it are never read as requests), asterisk-form and authority-form targets (400;
//! `OPTIONS *` is answered by the gateway), targets too long (414).

use std::time::Duration;

use super::{h1_raw, h2_status};
use crate::support::*;

#[tokio::test]
async fn connect_is_refused_and_what_follows_is_never_served() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let reply = h1_raw(
        gw.addr,
        b"CONNECT ville.test:443 HTTP/1.1\r\nHost: ville.test:443\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: ville.test\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(reply.statuses, [405], "{}", reply.text);
    assert!(reply.closed);
    assert!(reply.text.to_ascii_lowercase().contains("allow: get"));
    // HTTP/2 CONNECT: refused on its stream.
    let h2 = h2_status(gw.addr, "CONNECT", "ville.test:443", &[]).await;
    assert!(h2.is_none() || h2 == Some(405), "{h2:?}");
    assert_eq!(origin.count(), 0, "{:?}", origin.seen());
}

#[tokio::test]
async fn asterisk_and_authority_forms_never_reach_the_origin() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    for head in [
        "GET * HTTP/1.1\r\nHost: ville.test\r\n\r\nGET /after HTTP/1.1\r\nHost: ville.test\r\n\r\n",
        "GET ville.test:80 HTTP/1.1\r\nHost: ville.test\r\n\r\nGET /after HTTP/1.1\r\nHost: ville.test\r\n\r\n",
        "GET ftp://ville.test/x HTTP/1.1\r\nHost: ville.test\r\n\r\n",
    ] {
        let reply = h1_raw(gw.addr, head.as_bytes(), Duration::from_secs(10)).await;
        assert_eq!(reply.statuses, [400], "{head:?}: {}", reply.text);
        assert!(reply.closed, "{head:?}");
    }
    let reply = h1_raw(
        gw.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: ville.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(reply.statuses, [204], "{}", reply.text);
    assert!(reply.text.to_ascii_lowercase().contains("allow: get"));
    assert_eq!(origin.count(), 0, "{:?}", origin.seen());
}

#[tokio::test]
async fn targets_too_long_get_414_not_431() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    // Longer than a whole head may be (16 KiB): the fast path answers.
    let huge = format!("/{}", "a".repeat(70_000));
    // Longer than a target may be (8 KiB) but within the head limit: the pipeline answers.
    let long = format!("/{}", "a".repeat(10_000));
    for target in [&huge, &long] {
        let head = format!("GET {target} HTTP/1.1\r\nHost: ville.test\r\n\r\n");
        let reply = h1_raw(gw.addr, head.as_bytes(), Duration::from_secs(10)).await;
        assert_eq!(
            reply.statuses,
            [414],
            "{}",
            &reply.text[..reply.text.len().min(200)]
        );
        assert!(reply.closed);
    }
    let h2 = h2_status(gw.addr, "GET", &format!("http://ville.test{long}"), &[]).await;
    assert_eq!(h2, Some(414));
    assert_eq!(origin.count(), 0);
}
