//! Health checks: active ejection and recovery, passive ejection, idempotent retry.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use crate::support::*;

#[tokio::test]
async fn failing_health_checks_eject_and_recovery_brings_back() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let gw = Gw::start(&one_tenant(
        &[a.addr, b.addr],
        "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"500ms\", healthy_threshold = 2, unhealthy_threshold = 2 }",
        "",
    ))
    .await;
    let c = h1_client();
    let served_by = |got: Got| {
        got.headers
            .get("x-origin")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    a.state.healthy.store(false, Ordering::SeqCst);
    // Within a few intervals, every request goes to b.
    let ejected = eventually(Duration::from_secs(5), || async {
        let mut all_b = true;
        for _ in 0..6 {
            all_b &= served_by(get(&c, gw.addr, "ville.test", "/").await) == "b";
        }
        all_b
    })
    .await;
    assert!(ejected, "a was not taken out of rotation");
    let before = a.count();
    for _ in 0..20 {
        assert_eq!(served_by(get(&c, gw.addr, "ville.test", "/").await), "b");
    }
    assert_eq!(a.count(), before);
    let metrics = admin_metrics(&gw).await;
    assert!(
        metrics.contains(&format!(
            "rempart_upstream_server_healthy{{tenant=\"ville\",pool=\"web\",server=\"{}\"}} 0",
            a.addr
        )),
        "{metrics}"
    );

    a.state.healthy.store(true, Ordering::SeqCst);
    let back = eventually(Duration::from_secs(5), || async {
        served_by(get(&c, gw.addr, "ville.test", "/").await) == "a"
    })
    .await;
    assert!(back, "a did not come back");
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_another_server_when_connect_fails() {
    let live = Origin::start("live").await;
    let dead = closed_port().await;
    // No active checks and passive ejection off, so the dead server stays in rotation.
    let gw = Gw::start(&one_tenant(
        &[dead, live.addr],
        "health = { passive_failures = 0 }",
        "",
    ))
    .await;
    let c = h1_client();
    for _ in 0..10 {
        let got = get(&c, gw.addr, "ville.test", "/").await;
        assert_eq!((got.status, got.body.as_str()), (200, "hello from live"));
    }
    let metrics = admin_metrics(&gw).await;
    assert!(
        metrics.contains("rempart_upstream_retries_total{tenant=\"ville\",pool=\"web\"} 5"),
        "{metrics}"
    );
    // A POST with a body is not retried: half of them fail with 502.
    let mut failures = 0;
    for _ in 0..4 {
        let req = http::Request::post(gw.url("/upload"))
            .header("host", "ville.test")
            .body(Full::new(Bytes::from_static(b"data")))
            .unwrap();
        if collect(c.request(req).await.unwrap()).await.status == 502 {
            failures += 1;
        }
    }
    assert_eq!(failures, 2);
}

#[tokio::test]
async fn consecutive_failures_eject_passively() {
    let live = Origin::start("live").await;
    let dead = closed_port().await;
    let gw = Gw::start(&one_tenant(
        &[dead, live.addr],
        "health = { passive_failures = 2, passive_eject = \"30s\" }",
        "",
    ))
    .await;
    let c = h1_client();
    for _ in 0..10 {
        assert_eq!(get(&c, gw.addr, "ville.test", "/").await.status, 200);
    }
    let metrics = admin_metrics(&gw).await;
    // Two failures (each retried) eject the dead server; later requests go straight to live.
    assert!(
        metrics.contains("rempart_upstream_retries_total{tenant=\"ville\",pool=\"web\"} 2"),
        "{metrics}"
    );
}

pub async fn admin_metrics(gw: &Gw) -> String {
    let admin = gw.running().admin_addr;
    let got = get_with(
        &h1_client(),
        admin,
        &admin.to_string(),
        "/metrics",
        &[("authorization", &format!("Bearer {}", gw.token))],
    )
    .await;
    assert_eq!(got.status, 200);
    got.body
}
