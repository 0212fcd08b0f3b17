//! Passes cannot be farmed: pass claims are rate-limited per address and network before any
//! crypto, the replay guard is shared out per network (a flood only pushes out its own
//! entries), and passes without JavaScript are budgeted per network; residents elsewhere
//! keep earning passes throughout.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::support::*;

const BROWSER: [(&str, &str); 3] = [
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    ("accept", "text/html"),
    ("accept-language", "fr-FR"),
];

/// A client whose connections come from `source` (any address of 127.0.0.0/8).
fn client_from(source: &str) -> H1Client {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(source.parse::<IpAddr>().unwrap()));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

async fn fetch(c: &H1Client, addr: SocketAddr, path: &str) -> Got {
    let mut b = http::Request::get(format!("http://{addr}{path}")).header("host", "ville.test");
    for (k, v) in BROWSER {
        b = b.header(k, v);
    }
    collect(
        c.request(b.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap(),
    )
    .await
}

/// The token, difficulty and no-JavaScript wait of a challenge page.
fn challenge_of(body: &str) -> (String, u8, u32) {
    let attr = |name: &str| {
        let start = body.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
        body[start..start + body[start..].find('"').unwrap()].to_owned()
    };
    // The `<noscript>` meta refresh: `content="WAIT;url=/.rempart/pass?..."`.
    let url_at = body.find(";url=/.rempart/pass").expect("meta refresh");
    let wait_at = body[..url_at].rfind('"').unwrap() + 1;
    let wait = body[wait_at..url_at].parse().unwrap();
    (
        attr("data-token"),
        attr("data-difficulty").parse().unwrap(),
        wait,
    )
}

/// A resident at `source`: a first visit, the proof of work, the claim. `true` when the
/// pass was granted at the first claim.
async fn resident_earns_a_pass(addr: SocketAddr, source: &str) -> bool {
    let c = client_from(source);
    let page = fetch(&c, addr, "/").await;
    assert_eq!(page.status, 403, "{}", page.body);
    let (token, difficulty, _) = challenge_of(&page.body);
    let n = rempart::shield::pass::solve(&token, difficulty);
    let got = fetch(&c, addr, &format!("/.rempart/pass?t={token}&n={n}&r=/")).await;
    got.status == 303 && got.headers.contains_key("set-cookie")
}

fn config(origin: SocketAddr) -> String {
    format!(
        "{}\n[tenants.shield]\nunder_attack = true\nchallenge_difficulty = 8\nchallenge_wait = \"1s\"\n",
        one_tenant(&[origin], "", "")
    )
}

#[tokio::test]
async fn a_pass_claim_flood_from_one_address_leaves_residents_their_passes() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(origin.addr)).await;
    let addr = gw.addr;
    // The attacker solves 300 challenges, then claims them as fast as it can, in parallel.
    let attacker = client_from("127.0.0.2");
    let mut claims = Vec::new();
    for _ in 0..300 {
        let page = fetch(&attacker, addr, "/").await;
        let (token, difficulty, _) = challenge_of(&page.body);
        let n = rempart::shield::pass::solve(&token, difficulty);
        claims.push(format!("/.rempart/pass?t={token}&n={n}&r=/"));
    }
    let granted = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let claims = Arc::new(std::sync::Mutex::new(claims));
    let flood: Vec<_> = (0..30)
        .map(|_| {
            let (c, claims) = (attacker.clone(), claims.clone());
            let (granted, limited) = (granted.clone(), limited.clone());
            tokio::spawn(async move {
                loop {
                    let Some(url) = claims.lock().unwrap().pop() else {
                        return;
                    };
                    // Each claim twice: the replay must be refused too.
                    for _ in 0..2 {
                        match fetch(&c, addr, &url).await.status {
                            303 => granted.fetch_add(1, Ordering::Relaxed),
                            429 => limited.fetch_add(1, Ordering::Relaxed),
                            _ => 0,
                        };
                    }
                }
            })
        })
        .collect();
    // Meanwhile, residents of 20 other networks each earn a pass at the first try.
    let residents: Vec<_> = (10..30)
        .map(|net| {
            tokio::spawn(resident_earns_a_pass(
                addr,
                Box::leak(format!("127.0.{net}.1").into_boxed_str()),
            ))
        })
        .collect();
    for r in residents {
        assert!(
            r.await.unwrap(),
            "a resident was refused a pass during the flood"
        );
    }
    for f in flood {
        f.await.unwrap();
    }
    let (granted, limited) = (
        granted.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
    );
    // 600 claims (300 of them replays): cut to the local rate, each token at most once.
    assert!(limited > 0, "granted {granted}, limited {limited}");
    assert!(granted <= 300, "granted {granted}: a replay was accepted");
    // After the flood, a resident of the attacker's own network still gets in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if resident_earns_a_pass(addr, "127.0.0.3").await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the attacker's neighbour never got a pass"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn passes_without_javascript_are_budgeted_per_network() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(origin.addr)).await;
    let addr = gw.addr;
    let bot = client_from("127.0.1.2");
    // 60 challenges read at once, each waited (1 s) in parallel, then claimed under the
    // local rate: only the network's budget (30) turns into passes.
    let mut links = Vec::new();
    for _ in 0..60 {
        let page = fetch(&bot, addr, "/").await;
        let (token, _, wait) = challenge_of(&page.body);
        assert_eq!(wait, 1);
        links.push(format!("/.rempart/pass?t={token}&w=1&r=/"));
    }
    let mut granted = 0;
    let mut claimed = 0;
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(30);
    while claimed < links.len() {
        assert!(tokio::time::Instant::now() < deadline);
        match fetch(&bot, addr, &links[claimed]).await.status {
            303 => granted += 1,
            // Too early (the 1 s wait) or over the local rate: try again shortly.
            403 if granted == 0 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            429 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            _ => {}
        }
        claimed += 1;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // The burst (30), plus one per 10 s of refill while the claims went on (a slow machine
    // takes longer, and earns that much more).
    let refilled = started.elapsed().as_secs() / 10 + 1;
    assert!(
        (30..=30 + refilled).contains(&granted),
        "granted {granted} of 60 in {:?}",
        started.elapsed()
    );
    // The network's next challenge asks for a longer wait, and says so.
    let page = fetch(&bot, addr, "/").await;
    let (_, _, wait) = challenge_of(&page.body);
    assert!(wait > 1, "wait {wait}");
    // Another network is not affected.
    let page = fetch(&client_from("127.0.2.2"), addr, "/").await;
    assert_eq!(challenge_of(&page.body).2, 1);
}
