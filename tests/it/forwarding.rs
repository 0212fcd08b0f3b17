//! Header rewriting: hop-by-hop removal, forwarding headers, spoofing from untrusted clients,
//! PROXY protocol.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn spoofed_forwarding_headers_from_untrusted_client_are_overwritten() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let c = h1_client();
    let got = get_with(
        &c,
        gw.addr,
        "www.ville.test:8443",
        "/headers?x=1",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("connection", "x-private"),
            ("x-private", "must-not-pass"),
            ("te", "trailers"),
            ("keep-alive", "timeout=5"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    let seen: HashMap<String, String> = serde_json::from_str(&got.body).unwrap();
    assert_eq!(seen["host"], "www.ville.test:8443", "Host is preserved");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "www.ville.test:8443");
    assert_eq!(
        seen["forwarded"],
        "for=127.0.0.1;host=\"www.ville.test:8443\";proto=http;by=rempart"
    );
    assert_eq!(seen["via"], "1.1 rempart");
    assert!(!seen.contains_key("x-private"));
    assert!(!seen.contains_key("te"));
    assert!(!seen.contains_key("keep-alive"));
    // Response side: hop-by-hop from the origin removed, Via added.
    assert!(got.headers.get("x-hop").is_none());
    assert_eq!(got.headers.get("via").unwrap(), "1.1 rempart");
    assert_eq!(got.headers.get("x-origin").unwrap(), "a");
}

#[tokio::test]
async fn trusted_proxy_forwarding_is_extended() {
    let origin = Origin::start("a").await;
    let config = format!(
        "[forwarding]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n{}",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let got = get_with(
        &h1_client(),
        gw.addr,
        "ville.test",
        "/headers",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    let seen: HashMap<String, String> = serde_json::from_str(&got.body).unwrap();
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn proxy_protocol_gives_the_client_address() {
    let origin = Origin::start("a").await;
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n\n{}",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let answer = raw(
        gw.addr,
        b"PROXY TCP4 198.51.100.23 127.0.0.1 40000 80\r\nGET /headers HTTP/1.1\r\nHost: ville.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        origin.header("x-forwarded-for").as_deref(),
        Some("198.51.100.23")
    );
    // Without the header the connection is refused and the origin sees nothing.
    let before = origin.count();
    let answer = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: ville.test\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.is_empty(), "{answer}");
    assert_eq!(origin.count(), before);
}
