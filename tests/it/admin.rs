//! Admin listener: token required, metrics exposed.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

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

#[tokio::test]
async fn the_token_is_checked_before_the_body_is_read() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let admin = gw.running().admin_addr;
    let c = h1_client();
    let call = |token: Option<&str>, content_type: &str, body: &'static str| {
        let mut req = Request::builder()
            .method("POST")
            .uri(format!("http://{admin}/admin/bans"))
            .header("host", admin.to_string())
            .header("content-type", content_type.to_owned());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        c.request(
            req.body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
    };
    // Without the token, a broken body, a wrong content type or a good body: 401 alike.
    for (content_type, body) in [
        ("application/json", "{not json"),
        ("text/plain", "x"),
        (
            "application/json",
            "{\"target\":\"192.0.2.1\",\"reason\":\"t\"}",
        ),
    ] {
        let got = collect(call(None, content_type, body).await.unwrap()).await;
        assert_eq!(got.status, 401, "{content_type} {body}");
        let got = collect(
            call(Some("wrong-token-xxxxxxxxxxxx"), content_type, body)
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(got.status, 401, "{content_type} {body}");
    }
    // Nothing was banned; with the token the broken body is judged.
    assert!(admin_call(&gw, "GET", "/admin/bans", None)
        .await
        .body
        .contains("\"bans\":[]"));
    let got = collect(
        call(Some(&gw.token), "application/json", "{not json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 400);
    // Health needs no token.
    assert_eq!(
        get(&c, admin, &admin.to_string(), "/healthz").await.status,
        200
    );
}
