//! Admin listener: token required, metrics exposed.

use crate::support::*;

#[tokio::test]
async fn admin_requires_the_token_and_serves_metrics() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let c = h1_client();
    assert_eq!(get(&c, gw.addr, "ville.test", "/").await.status, 200);
    assert_eq!(get(&c, gw.addr, "nope.test", "/").await.status, 421);
    let admin = gw.running().admin_addr;
    assert!(admin.ip().is_loopback());
    let host = admin.to_string();
    assert_eq!(get(&c, admin, &host, "/healthz").await.status, 200);
    assert_eq!(get(&c, admin, &host, "/metrics").await.status, 401);
    assert_eq!(
        get_with(
            &c,
            admin,
            &host,
            "/metrics",
            &[("authorization", "Bearer wrong-token-xxxxxxxxxxxx")]
        )
        .await
        .status,
        401
    );
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_requests_total{tenant=\"ville\",route=\"/\",status_class=\"2xx\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("rempart_requests_total{tenant=\"-\",route=\"-\",status_class=\"4xx\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("rempart_upstream_response_seconds_count{tenant=\"ville\",pool=\"web\"} 1"),
        "{m}"
    );
    assert!(m.contains("rempart_downstream_connections_active"), "{m}");
}
