//! Tenants sealed from each other: the host a request is routed by is the `Host` the
//! origin receives. An absolute-form target's authority replaces the `Host` field; two
//! `Host` fields, or an HTTP/2 `:authority` and `Host` that differ, are refused.

use std::time::Duration;

use super::{h1_raw, h2_status};
use crate::support::*;

/// Two tenants on one shared origin: `ville.test` open, `autre.test` in maintenance.
async fn gateway(origin: &Origin) -> Gw {
    let other = one_tenant(&[origin.addr], "", "")
        .replace("id = \"ville\"", "id = \"autre\"")
        .replace(
            "hosts = [\"ville.test\", \"*.ville.test\"]",
            "hosts = [\"autre.test\"]\nmaintenance = true",
        );
    let config = format!("{}\n{other}", one_tenant(&[origin.addr], "", ""));
    Gw::start(&config).await
}

#[tokio::test]
async fn the_routed_host_is_the_forwarded_host() {
    let origin = Origin::start("shared").await;
    let gw = gateway(&origin).await;
    // Absolute form routed to `ville`, `Host` naming `autre`: the origin must hear `ville`.
    let reply = h1_raw(
        gw.addr,
        b"GET http://ville.test/page HTTP/1.1\r\nHost: autre.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(reply.statuses, [200], "{}", reply.text);
    assert_eq!(origin.seen(), ["ville.test /page"]);
    // The other way round: routed to `autre` (maintenance), never forwarded.
    let reply = h1_raw(
        gw.addr,
        b"GET http://autre.test/page HTTP/1.1\r\nHost: ville.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(reply.statuses, [503], "{}", reply.text);
    // HTTP/2 with only `:authority`: the origin gets it as `Host`.
    assert_eq!(
        h2_status(gw.addr, "GET", "http://ville.test/h2", &[]).await,
        Some(200)
    );
    assert_eq!(origin.seen(), ["ville.test /page", "ville.test /h2"]);
}

#[tokio::test]
async fn two_hosts_or_disagreeing_hosts_are_refused() {
    let origin = Origin::start("shared").await;
    let gw = gateway(&origin).await;
    for head in [
        "GET / HTTP/1.1\r\nHost: ville.test\r\nHost: autre.test\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: ville.test\r\nHost: ville.test\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: autre.test\r\nX-A: 1\r\nHost: ville.test\r\n\r\n",
        "GET http://u@ville.test/ HTTP/1.1\r\nHost: ville.test\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
    ] {
        let reply = h1_raw(gw.addr, head.as_bytes(), Duration::from_secs(10)).await;
        assert_eq!(reply.statuses, [400], "{head:?}: {}", reply.text);
        assert!(reply.closed, "{head:?}: the connection stays open");
    }
    let h2 = h2_status(
        gw.addr,
        "GET",
        "http://ville.test/",
        &[("host", "autre.test")],
    )
    .await;
    assert_eq!(h2, Some(400));
    let h2 = h2_status(
        gw.addr,
        "GET",
        "http://ville.test/",
        &[("host", "ville.test")],
    )
    .await;
    assert_eq!(h2, Some(200));
    assert_eq!(origin.seen(), ["ville.test /"]);
}
