//! Flood shield, first part: per-address limits with 429 + Retry-After, default exemptions,
//! log-only mode, metrics.

use crate::support::*;

#[tokio::test]
async fn address_limit_answers_429_and_spares_the_origin() {
    let origin = Origin::start("a").await;
    let config = format!(
        "{}\n[tenants.shield]\naddress_rate = 5\n",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let c = h1_client();
    let mut limited = 0;
    for _ in 0..20 {
        let got = get(&c, gw.addr, "ville.test", "/recherche?q=x").await;
        if got.status == 429 {
            limited += 1;
            assert_eq!(got.headers.get("retry-after").unwrap(), "1");
            assert!(got.body.contains("Trop de demandes") && got.body.contains("Ville de Test"));
        } else {
            assert_eq!(got.status, 200);
        }
    }
    assert!(limited >= 14, "only {limited} of 20 limited");
    assert!(origin.count() <= 6, "origin saw {}", origin.count());
    // Exemptions on by default: robots.txt and .well-known are never limited.
    for path in ["/robots.txt", "/.well-known/acme-challenge/x"] {
        assert_eq!(
            get(&c, gw.addr, "ville.test", path).await.status,
            200,
            "{path}"
        );
    }
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains(&format!("rempart_shield_decisions_total{{tenant=\"ville\",rule=\"address_rate\",action=\"limited\"}} {limited}")),
        "{m}"
    );
    assert!(
        m.contains("rempart_requests_total{tenant=\"ville\",route=\"/\",status_class=\"4xx\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn log_mode_only_counts() {
    let origin = Origin::start("a").await;
    let config = format!(
        "{}\n[tenants.shield]\nmode = \"log\"\naddress_rate = 2\n",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let c = h1_client();
    for _ in 0..10 {
        assert_eq!(get(&c, gw.addr, "ville.test", "/").await.status, 200);
    }
    assert_eq!(origin.count(), 10);
    let m = crate::health::admin_metrics(&gw).await;
    assert!(m.contains("rempart_shield_decisions_total{tenant=\"ville\",rule=\"address_rate\",action=\"logged\"} 8"), "{m}");
}
