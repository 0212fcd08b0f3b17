//! Client-address claims never reach the origin: the fields by which a client names its
//! address, scheme, port, server or path are dropped from untrusted clients (the built-in
//! list and the tenant's own), and `X-Real-IP`, when asked for, is the gateway's.

use super::h2_status_body;
use crate::support::*;

const CLAIMS: &[(&str, &str)] = &[
    ("X-Real-IP", "6.6.6.6"),
    ("True-Client-IP", "6.6.6.6"),
    ("CF-Connecting-IP", "6.6.6.6"),
    ("X-Client-IP", "6.6.6.6"),
    ("X-Forwarded-Port", "8443"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Forwarded-Server", "intranet"),
    ("X-Original-URL", "/admin/delete"),
    ("X-Rewrite-URL", "/admin/delete"),
    ("X-Remote-User", "maire"),
];

fn assert_no_claim(seen: &std::collections::HashMap<String, String>) {
    for (name, _) in CLAIMS {
        let name = name.to_ascii_lowercase();
        if name == "x-real-ip" {
            assert_eq!(
                seen.get(&name).map(String::as_str),
                Some("127.0.0.1"),
                "{seen:?}"
            );
        } else {
            assert!(
                !seen.contains_key(&name),
                "{name} reached the origin: {seen:?}"
            );
        }
    }
    assert_eq!(seen.get("x-request-id").map(String::as_str), Some("kept"));
}

#[tokio::test]
async fn client_address_claims_are_dropped_on_h1_and_h2() {
    let origin = Origin::start("a").await;
    let config = format!(
        "[forwarding]\nx_real_ip = true\n\n{}",
        one_tenant(&[origin.addr], "", "").replace(
            "contact = \"Mairie : 02 00 00 00 00\"\n",
            "contact = \"Mairie : 02 00 00 00 00\"\nstrip_headers = [\"X-Remote-User\"]\n",
        )
    );
    let gw = Gw::start(&config).await;
    let mut headers: Vec<(&str, &str)> = CLAIMS.to_vec();
    headers.push(("X-Request-Id", "kept"));
    let got = get_with(&h1_client(), gw.addr, "ville.test", "/headers", &headers).await;
    assert_eq!(got.status, 200);
    assert_no_claim(&serde_json::from_str(&got.body).unwrap());
    let (status, body) = h2_status_body(gw.addr, "http://ville.test/headers", &headers).await;
    assert_eq!(status, 200);
    assert_no_claim(&serde_json::from_str(&body).unwrap());
}
