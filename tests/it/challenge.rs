//! Proof-of-work challenge, pass cookies, under-attack mode, and load shedding with automatic
//! challenges, over real sockets.

use std::time::Duration;

use crate::support::*;

const BROWSER: [(&str, &str); 3] = [
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
    ),
    ("accept", "text/html"),
    ("accept-language", "fr-FR,fr;q=0.9"),
];

fn under_attack_config(origin: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "{}\n[tenants.shield]\nunder_attack = true\nchallenge_difficulty = 10\nchallenge_wait = \"1s\"\n{extra}",
        one_tenant(&[origin], "", "")
    )
}

/// Solves the page's challenge and claims the pass; returns the cookie pair `name=value`.
async fn solve_page(c: &H1Client, gw: &Gw, page: &Got, headers: &[(&str, &str)]) -> String {
    let (token, difficulty) = challenge_of(&page.body);
    let n = rempart::shield::pass::solve(&token, difficulty);
    let got = get_with(
        c,
        gw.addr,
        "ville.test",
        &format!("/.rempart/pass?t={token}&n={n}&r=%2Fheaders%3Fa%3D1"),
        headers,
    )
    .await;
    assert_eq!(got.status, 303, "{}", got.body);
    assert_eq!(got.headers.get("location").unwrap(), "/headers?a=1");
    let cookie = got.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn under_attack_challenges_then_the_pass_reaches_the_origin() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&under_attack_config(origin.addr, "")).await;
    let c = h1_client();

    let page = get_with(&c, gw.addr, "ville.test", "/headers?a=1", &BROWSER).await;
    assert_eq!(page.status, 403);
    assert_eq!(page.headers.get("x-rempart-challenge").unwrap(), "pow");
    assert_eq!(page.headers.get("cache-control").unwrap(), "no-store");
    assert!(
        page.body.contains("Vérification de votre navigateur"),
        "{}",
        page.body
    );
    assert!(page.body.len() < 4096);
    assert_eq!(
        origin.count(),
        0,
        "a challenged request never reaches the origin"
    );
    // The script is served by Rempart itself, and exempt paths are never challenged.
    let js = get_with(&c, gw.addr, "ville.test", "/.rempart/pow.js", &BROWSER).await;
    assert_eq!(js.status, 200);
    assert!(js.body.contains("new Worker"));
    assert_eq!(
        get(&c, gw.addr, "ville.test", "/robots.txt").await.status,
        200
    );

    let cookie = solve_page(&c, &gw, &page, &BROWSER).await;
    let with_pass = [
        BROWSER[0],
        BROWSER[1],
        BROWSER[2],
        ("cookie", cookie.as_str()),
    ];
    let got = get_with(&c, gw.addr, "ville.test", "/headers", &with_pass).await;
    assert_eq!(got.status, 200, "{}", got.body);
    // Our cookie is not forwarded to the origin.
    assert!(!got.body.contains("rempart_pass"), "{}", got.body);

    // The pass is bound to the client: another user agent with the same cookie is challenged.
    let other = [
        ("user-agent", "curl/8"),
        ("accept", "*/*"),
        ("cookie", cookie.as_str()),
    ];
    assert_eq!(
        get_with(&c, gw.addr, "ville.test", "/", &other)
            .await
            .status,
        403
    );
    // A forged cookie is worthless.
    let forged = [
        BROWSER[0],
        BROWSER[1],
        BROWSER[2],
        (
            "cookie",
            "rempart_pass=0100ffffffffffffffff00000000000000000000000000000000",
        ),
    ];
    assert_eq!(
        get_with(&c, gw.addr, "ville.test", "/", &forged)
            .await
            .status,
        403
    );
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_shield_decisions_total{tenant=\"ville\",rule=\"challenge\",action=\"passed\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn replays_and_wrong_work_get_a_fresh_challenge() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&under_attack_config(origin.addr, "")).await;
    let c = h1_client();
    let page = get_with(&c, gw.addr, "ville.test", "/", &BROWSER).await;
    let (token, difficulty) = challenge_of(&page.body);
    let n = rempart::shield::pass::solve(&token, difficulty);
    let url = format!("/.rempart/pass?t={token}&n={n}&r=/");
    assert_eq!(
        get_with(&c, gw.addr, "ville.test", &url, &BROWSER)
            .await
            .status,
        303
    );
    // The same answer again: refused, and the client gets a new challenge, not a dead end.
    let again = get_with(&c, gw.addr, "ville.test", &url, &BROWSER).await;
    assert_eq!(again.status, 403);
    assert_ne!(challenge_of(&again.body).0, token);
    // Solved from another network prefix's point of view: the binding differs (other UA).
    let page = get_with(&c, gw.addr, "ville.test", "/", &BROWSER).await;
    let (token, difficulty) = challenge_of(&page.body);
    let n = rempart::shield::pass::solve(&token, difficulty);
    let got = get_with(
        &c,
        gw.addr,
        "ville.test",
        &format!("/.rempart/pass?t={token}&n={n}"),
        &[("user-agent", "other"), ("accept", "*/*")],
    )
    .await;
    assert_eq!(got.status, 403);
    // Garbage never reaches the origin and never errors.
    for junk in [
        "/.rempart/pass",
        "/.rempart/pass?t=zz&n=1",
        "/.rempart/pass?t=%00&w=1",
    ] {
        assert_eq!(
            get_with(&c, gw.addr, "ville.test", junk, &BROWSER)
                .await
                .status,
            403
        );
    }
    assert_eq!(
        get(&c, gw.addr, "ville.test", "/.rempart/nope")
            .await
            .status,
        404
    );
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn without_javascript_the_wait_path_gives_a_pass() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&under_attack_config(origin.addr, "")).await;
    let c = h1_client();
    let page = get_with(&c, gw.addr, "ville.test", "/ecole", &BROWSER).await;
    // The meta refresh is in <noscript>, pointing at the wait path.
    let start = page.body.find("content=\"1;url=").expect("meta refresh") + 15;
    let url = page.body[start..start + page.body[start..].find('"').unwrap()]
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert!(
        url.starts_with("/.rempart/pass?t=") && url.contains("&w=1"),
        "{url}"
    );
    // Too early: a fresh challenge.
    assert_eq!(
        get_with(&c, gw.addr, "ville.test", &url, &BROWSER)
            .await
            .status,
        403
    );
    // After the wait (1 s), the same link works.
    // Each refused try is answered with a fresh challenge; the original link stays valid
    // until its wait is over (polled against a deadline).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let got = loop {
        let got = get_with(&c, gw.addr, "ville.test", &url, &BROWSER).await;
        if got.status == 303 || tokio::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got.status, 303, "{}", got.body);
    assert_eq!(got.headers.get("location").unwrap(), "/ecole");
}

#[tokio::test]
async fn admin_api_switches_under_attack_mode() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    let c = h1_client();
    assert_eq!(
        get_with(&c, gw.addr, "ville.test", "/", &BROWSER)
            .await
            .status,
        200
    );
    let admin = gw.running().admin_addr;
    let token = gw.token.clone();
    let call = |body: &'static str| {
        let token = token.trim().to_owned();
        async move {
            let req = hyper::Request::post(format!("http://{admin}/admin/shield/under-attack"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    body.as_bytes(),
                )))
                .unwrap();
            collect(h1_client().request(req).await.unwrap()).await
        }
    };
    let on = call(r#"{"tenant":"ville","on":true,"for":"2h"}"#).await;
    assert_eq!(on.status, 200, "{}", on.body);
    assert!(on.body.contains("\"under_attack\":true"), "{}", on.body);
    assert_eq!(
        get_with(&c, gw.addr, "ville.test", "/", &BROWSER)
            .await
            .status,
        403
    );
    assert_eq!(call(r#"{"tenant":"nope","on":true}"#).await.status, 404);
    assert_eq!(
        call(r#"{"tenant":"ville","on":true,"for":"soon"}"#)
            .await
            .status,
        400
    );
    assert_eq!(call(r#"{"tenant":"ville","on":false}"#).await.status, 200);
    assert_eq!(
        get_with(&c, gw.addr, "ville.test", "/", &BROWSER)
            .await
            .status,
        200
    );
}

fn one_slot_pool(origin: std::net::SocketAddr, shield: &str) -> String {
    let pool =
        "max_concurrency = 1\nmin_concurrency = 1\nqueue_size = 1\nqueue_timeout = \"200ms\"";
    format!(
        "{}\n[tenants.shield]\nchallenge_difficulty = 8\n{shield}",
        one_tenant(&[origin], pool, "")
    )
}

fn slow(c: &H1Client, gw: &Gw, ms: u32) -> tokio::task::JoinHandle<Got> {
    let c = c.clone();
    let addr = gw.addr;
    tokio::spawn(async move {
        get_with(&c, addr, "ville.test", &format!("/slow?ms={ms}"), &BROWSER).await
    })
}

#[tokio::test]
async fn without_auto_challenge_a_full_pool_answers_503() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_slot_pool(origin.addr, "auto_challenge = false")).await;
    let c = h1_client();
    // One slow request holds the only slot; later ones wait 200 ms at most, then 503.
    let holder = slow(&c, &gw, 800);
    assert!(eventually(Duration::from_secs(2), || async { origin.count() >= 1 }).await);
    let got = get_with(&c, gw.addr, "ville.test", "/", &BROWSER).await;
    assert_eq!(got.status, 503, "{}", got.body);
    assert_eq!(got.headers.get("retry-after").unwrap(), "5");
    assert!(got.body.contains("Service très demandé"), "{}", got.body);
    assert_eq!(holder.await.unwrap().status, 200);
    // The origin only ever saw the one request at a time.
    assert_eq!(origin.count(), 1);
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains(
            "rempart_admission_shed_total{tenant=\"ville\",pool=\"web\",priority=\"unknown\"} 1"
        ),
        "{m}"
    );
    assert!(
        m.contains("rempart_admission_limit{tenant=\"ville\",pool=\"web\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn under_pressure_clients_without_a_pass_are_challenged_and_passes_go_through() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_slot_pool(origin.addr, "")).await;
    let c = h1_client();
    // Calm: no challenge.
    assert_eq!(
        get_with(&c, gw.addr, "ville.test", "/", &BROWSER)
            .await
            .status,
        200
    );
    let holder = slow(&c, &gw, 800);
    assert!(eventually(Duration::from_secs(2), || async { origin.count() >= 2 }).await);
    // This one waits for the slot, is shed after 200 ms, and, holding no pass, gets the
    // challenge instead of an error (harder while shedding: policy difficulty + 2).
    let page = get_with(&c, gw.addr, "ville.test", "/", &BROWSER).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(page.headers.get("x-rempart-challenge").unwrap(), "pow");
    assert_eq!(challenge_of(&page.body).1, 10);
    // Under pressure now: the next client without a pass is challenged at once (no wait).
    let started = std::time::Instant::now();
    let again = get_with(&c, gw.addr, "ville.test", "/ecole", &BROWSER).await;
    assert_eq!(again.status, 403);
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        origin.count(),
        2,
        "challenged requests never reach the origin"
    );
    // Once it holds a pass, it goes through (verified: first in the queue).
    let cookie = solve_page(&c, &gw, &page, &BROWSER).await;
    assert_eq!(holder.await.unwrap().status, 200);
    let with_pass = [
        BROWSER[0],
        BROWSER[1],
        BROWSER[2],
        ("cookie", cookie.as_str()),
    ];
    assert_eq!(
        get_with(&c, gw.addr, "ville.test", "/", &with_pass)
            .await
            .status,
        200
    );
    let status = {
        let admin = gw.running().admin_addr;
        let token = gw.token.clone();
        let req = hyper::Request::get(format!("http://{admin}/admin/shield"))
            .header("authorization", format!("Bearer {}", token.trim()))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        collect(h1_client().request(req).await.unwrap()).await
    };
    assert!(
        status.body.contains("\"shedding_for_s\":0"),
        "{}",
        status.body
    );
}
