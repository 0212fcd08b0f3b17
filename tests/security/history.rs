//! Good history is not a free pass: a client served normally before an attack keeps a better
//! place at the admission gate, but under attack it is challenged like anyone without a pass,
//! and its own flood is limited like anyone's (over HTTP/1.1 and HTTP/2).

use crate::support::*;

use super::h2_status_body;

const BROWSER: [(&str, &str); 3] = [
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    ("accept", "text/html"),
    ("accept-language", "fr-FR"),
];

/// A tenant limiting each address to 5 requests a second, whose clients count as good
/// history as soon as they are served (the default waits two minutes, which a test cannot).
fn config(origin: std::net::SocketAddr) -> String {
    format!(
        "{}\n[tenants.shield]\naddress_rate = 5\nprefix_rate = 1000\ngood_history_after = \"0s\"\n",
        one_tenant(&[origin], "", "")
    )
}

/// Requests of the client's own flood, one after the other as fast as answered.
const FLOOD: usize = 40;

async fn under_attack(gw: &Gw, on: bool) {
    let body = if on {
        r#"{"tenant":"ville","on":true,"for":"1h"}"#
    } else {
        r#"{"tenant":"ville","on":false}"#
    };
    let got = admin_call(gw, "POST", "/admin/shield/under-attack", Some(body)).await;
    assert_eq!(got.status, 200, "{}", got.body);
}

#[tokio::test]
async fn a_client_served_before_the_attack_is_challenged_and_limited_like_anyone() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(origin.addr)).await;
    let c = h1_client();
    // Calm: served on both protocols, which makes this address good history.
    let got = get_with(&c, gw.addr, "ville.test", "/", &BROWSER).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let (status, body) = h2_status_body(gw.addr, "http://ville.test/", &BROWSER).await;
    assert_eq!(status, 200, "{body}");
    let seen = origin.count();

    // Under attack: challenged like a newcomer, on both protocols; the origin sees nothing.
    under_attack(&gw, true).await;
    let got = get_with(&c, gw.addr, "ville.test", "/", &BROWSER).await;
    assert_eq!(got.status, 403, "{}", got.body);
    assert!(got.headers.contains_key("x-rempart-challenge"));
    let (status, body) = h2_status_body(gw.addr, "http://ville.test/", &BROWSER).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("data-token"), "{body}");
    assert_eq!(origin.count(), seen);

    // Calm again: its own flood is served up to its address's limit, then refused (a
    // browser over it is sent to the challenge, which reaches no origin).
    under_attack(&gw, false).await;
    let started = tokio::time::Instant::now();
    let (mut served, mut challenged) = (0usize, 0usize);
    for _ in 0..FLOOD {
        match get_with(&c, gw.addr, "ville.test", "/", &BROWSER)
            .await
            .status
        {
            200 => served += 1,
            403 => challenged += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    let elapsed = started.elapsed();
    // At 5 a second, the flood is mostly refused whatever the history; the bound allows for
    // a slow run (the window moves on while the flood is sent).
    let allowed = 5 * (elapsed.as_secs() as usize + 2);
    assert!(
        served <= allowed && challenged > 0,
        "{served} of {FLOOD} served, {challenged} challenged, in {elapsed:?}"
    );
    assert_eq!(origin.count(), seen + served);
}
