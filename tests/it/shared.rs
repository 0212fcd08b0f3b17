//! Residents behind one address (a town hall's NAT, a carrier's CGNAT): their passes, the
//! limits that scale with the verified clients behind an address, the bots among them, and
//! the town's own trusted networks, over real sockets.

use std::net::IpAddr;

use crate::support::*;

const BROWSER: [(&str, &str); 3] = [
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
    ),
    ("accept", "text/html"),
    ("accept-language", "fr-FR,fr;q=0.9"),
];

/// A client whose connections leave from `source` (any 127.0.0.0/8 address is local).
fn client_from(source: &str) -> H1Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_local_address(Some(source.parse::<IpAddr>().unwrap()));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

/// Asks for a page without a pass, solves its challenge and claims the pass: the cookie
/// pair `name=value`.
async fn earn_pass(c: &H1Client, gw: &Gw) -> String {
    let page = get_with(c, gw.addr, "ville.test", "/", &BROWSER).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(page.headers.get("x-rempart-challenge").unwrap(), "pow");
    let attr = |name: &str| {
        let start = page.body.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
        page.body[start..start + page.body[start..].find('"').unwrap()].to_owned()
    };
    let token = attr("data-token");
    let n = rempart::shield::pass::solve(&token, attr("data-difficulty").parse().unwrap());
    let got = get_with(
        c,
        gw.addr,
        "ville.test",
        &format!("/.rempart/pass?t={token}&n={n}&r=%2F"),
        &BROWSER,
    )
    .await;
    assert_eq!(got.status, 303, "{}", got.body);
    let cookie = got.headers.get("set-cookie").unwrap().to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// `requests` GETs at once with `cookie`: their statuses.
async fn burst(c: &H1Client, gw: &Gw, cookie: &str, requests: usize) -> Vec<u16> {
    let headers = [BROWSER[0], BROWSER[1], BROWSER[2], ("cookie", cookie)];
    let calls = (0..requests).map(|_| get_with(c, gw.addr, "ville.test", "/", &headers));
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|g| g.status)
        .collect()
}

fn limited_config(origin: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "{}\n[tenants.shield]\nunder_attack = true\nchallenge_difficulty = 8\naddress_rate = 5\n{extra}",
        one_tenant(&[origin], "", "")
    )
}

#[tokio::test]
async fn two_browsers_behind_one_address_passing_in_the_same_second_have_a_budget_each() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&format!(
        "{}\n[tenants.shield]\nunder_attack = true\nchallenge_difficulty = 8\npass_rate = 4\n",
        one_tenant(&[origin.addr], "", "")
    ))
    .await;
    let c = h1_client();
    // Same address, same user agent, same second: two passes all the same.
    let first = earn_pass(&c, &gw).await;
    let second = earn_pass(&c, &gw).await;
    assert_ne!(first, second, "each pass has its own identity");
    // One browser past its pass's rate is refused; the other keeps its own budget.
    let statuses = burst(&c, &gw, &first, 12).await;
    assert!(statuses.contains(&429), "{statuses:?}");
    let got = get_with(
        &c,
        gw.addr,
        "ville.test",
        "/",
        &[BROWSER[0], BROWSER[1], BROWSER[2], ("cookie", &second)],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
}

#[tokio::test]
async fn a_shared_address_serves_its_verified_clients_while_its_bots_are_challenged_and_limited() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&limited_config(origin.addr, "")).await;
    let c = h1_client();
    // Eight browsers behind 127.0.0.1 earn a pass each (eight challenges: more than the
    // address's 5 requests a second without a pass, still answered with the challenge).
    let mut passes = Vec::new();
    for _ in 0..8 {
        passes.push(earn_pass(&c, &gw).await);
    }
    assert_eq!(origin.count(), 0);
    // All eight browse at once, four requests each: 32 requests, six times the single
    // client's limit. Every one is served.
    let bursts = passes.iter().map(|p| burst(&c, &gw, p, 4));
    let statuses: Vec<u16> = futures_util::future::join_all(bursts)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(origin.count(), 32);
    // A bot behind the same address, without a pass: a browser-like one gets the challenge,
    // a script the 429, however many residents hold passes; none reaches the origin.
    let before = origin.count();
    for _ in 0..10 {
        let got = get_with(&c, gw.addr, "ville.test", "/recherche", &BROWSER).await;
        assert_eq!(got.status, 403);
        assert!(got.headers.contains_key("x-rempart-challenge"));
    }
    let mut script = Vec::new();
    for _ in 0..10 {
        script.push(
            get_with(
                &c,
                gw.addr,
                "ville.test",
                "/recherche",
                &[("user-agent", "python-requests/2.31")],
            )
            .await
            .status,
        );
    }
    assert!(script.contains(&429), "{script:?}");
    assert!(script.iter().all(|s| *s == 429 || *s == 403), "{script:?}");
    assert_eq!(origin.count(), before);
    let m = crate::health::admin_metrics(&gw).await;
    let value = |rule: &str, action: &str| {
        let key = format!(
            "rempart_shield_decisions_total{{tenant=\"ville\",rule=\"{rule}\",action=\"{action}\"}} "
        );
        m.lines()
            .find_map(|l| l.strip_prefix(&key))
            .map_or(0, |v| v.parse::<u64>().unwrap())
    };
    assert!(value("address_rate", "shared") > 0, "{m}");
    assert!(value("address_rate", "challenged") > 0, "{m}");
    assert!(value("address_rate", "limited") > 0, "{m}");
    // The shared address was never banned, nor is another address helped by it.
    let (status, bans) = {
        let got = admin_call(&gw, "GET", "/admin/bans", None).await;
        (got.status, got.body)
    };
    assert_eq!(status, 200);
    assert!(!bans.contains("127.0.0.1"), "{bans}");
    let other = client_from("127.0.0.2");
    let cookie = earn_pass(&other, &gw).await;
    let statuses = burst(&other, &gw, &cookie, 32).await;
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn trusted_networks_are_never_challenged_and_limited_per_browser() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&limited_config(
        origin.addr,
        "trusted_networks = [\"127.0.0.1/32\", \"2001:db8:5::/48\"]\npass_rate = 20\n",
    ))
    .await;
    let town_hall = h1_client();
    // Under attack, yet an agent of the town hall reaches the origin at once, and gets a
    // pass without any proof of work.
    let got = get_with(&town_hall, gw.addr, "ville.test", "/", &BROWSER).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let cookie = got
        .headers
        .get("set-cookie")
        .expect("a pass")
        .to_str()
        .unwrap();
    assert!(cookie.starts_with("rempart_pass=") && cookie.contains("HttpOnly"));
    let cookie = cookie.split(';').next().unwrap().to_owned();
    // With it, the browser is a verified client: no new pass, its own budget.
    let with_pass = [
        BROWSER[0],
        BROWSER[1],
        BROWSER[2],
        ("cookie", cookie.as_str()),
    ];
    let got = get_with(&town_hall, gw.addr, "ville.test", "/", &with_pass).await;
    assert_eq!(got.status, 200);
    assert!(got.headers.get("set-cookie").is_none());
    // Scripts without a cookie are never challenged either: limited per address (429).
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            get_with(
                &town_hall,
                gw.addr,
                "ville.test",
                "/",
                &[("user-agent", "curl/8.5.0")],
            )
            .await
            .status,
        );
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    // A neighbour outside the town's networks is challenged as usual.
    let outside = client_from("127.0.0.2");
    let got = get_with(&outside, gw.addr, "ville.test", "/", &BROWSER).await;
    assert_eq!(got.status, 403);
    assert!(got.headers.contains_key("x-rempart-challenge"));
    let m = crate::health::admin_metrics(&gw).await;
    // One pass for the browser, one for each script request let through (a script that
    // keeps no cookie stays one unverified client of its address).
    let granted = 1 + statuses.iter().filter(|s| **s == 200).count();
    assert!(
        m.contains(&format!("rempart_shield_decisions_total{{tenant=\"ville\",rule=\"trusted_network\",action=\"pass_granted\"}} {granted}")),
        "{m}"
    );
    assert!(
        m.contains("rempart_shield_decisions_total{tenant=\"ville\",rule=\"trusted_network\",action=\"allowed\"} 14"),
        "{m}"
    );
    assert!(
        m.contains("rempart_shield_decisions_total{tenant=\"ville\",rule=\"challenge\",action=\"issued\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn a_bad_trusted_network_is_refused_with_its_place() {
    let origin = Origin::start("a").await;
    let config = limited_config(
        origin.addr,
        "trusted_networks = [\"192.0.2.0/24\", \"mairie\"]\n",
    );
    let err = rempart::config::load_str(
        &format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n{config}"),
        std::path::Path::new("rempart.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("trusted_networks[1]"), "{err}");
    assert!(
        err.contains("`mairie` is not an address or a CIDR"),
        "{err}"
    );
}

#[tokio::test]
async fn a_full_address_closes_its_oldest_silent_connection_for_a_newcomer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start("a").await;
    let gw = Gw::start(&format!(
        "[limits]\nmax_connections_per_address = 3\n\n{}",
        one_tenant(&[origin.addr], "", "")
    ))
    .await;
    let accepted = |n: u32| {
        let gw = &gw;
        async move {
            let m = crate::health::admin_metrics(gw).await;
            m.contains(&format!(
                "rempart_downstream_connections_total{{result=\"accepted\"}} {n}"
            ))
        }
    };
    // A slowloris bot takes every slot of the address, one after the other: heads never
    // finished.
    let mut silent = Vec::new();
    for n in 1..=3 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: ville.test\r\n")
            .await
            .unwrap();
        silent.push(s);
        assert!(eventually(std::time::Duration::from_secs(10), || accepted(n)).await);
    }
    // A resident behind the same address still gets in: the oldest silent connection makes
    // room.
    let answer = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: ville.test\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut out = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        silent[0].read_to_end(&mut out),
    )
    .await;
    assert!(closed.is_ok(), "the oldest silent connection is closed");
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    // The two others are still held.
    let mut byte = [0u8; 1];
    for s in &silent[1..] {
        assert!(matches!(
            s.try_read(&mut byte),
            Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
        ));
    }
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_downstream_connections_total{result=\"evicted_per_address\"} 1"),
        "{m}"
    );
    assert!(!m.contains("result=\"rejected_per_address\""), "{m}");
    // Connections that were answered keep their slots: `shield::connections_per_address_are_capped`
    // holds the cap with answered keep-alive connections and the newcomer is refused.
}
