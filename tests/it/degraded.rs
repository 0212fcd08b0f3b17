//! Degraded mode over real sockets: stale copies of public pages when the origin dies or
//! fails, `no-store` and personal answers never kept, the fallback page when no copy exists,
//! and maintenance mode from the config and the admin API.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// An origin with a few public and personal pages, which can fail (`/flaky` answers 503
/// once `failing` is set) or die altogether (`stop`).
struct PagesOrigin {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    stop: CancellationToken,
}

async fn pages_origin() -> PagesOrigin {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let (f, s) = (failing.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = s.cancelled() => return,
                r = listener.accept() => match r { Ok((st, _)) => st, Err(_) => return },
            };
            let (f, s) = (f.clone(), s.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let f = f.clone();
                    async move {
                        let html = |body: &str| {
                            Response::builder()
                                .header("content-type", "text/html; charset=utf-8")
                                .body(Full::new(Bytes::from(format!(
                                    "<!doctype html><html><body class=\"p\"><p>{body}</p></body></html>"
                                ))))
                                .unwrap()
                        };
                        let mut resp = match req.uri().path() {
                            "/horaires" => html("Horaires de la mairie : 8 h 30 - 17 h"),
                            "/compte" => {
                                let mut r = html("Votre compte");
                                r.headers_mut()
                                    .insert("cache-control", "no-store".parse().unwrap());
                                r
                            }
                            "/session" => {
                                let mut r = html("Bonjour");
                                r.headers_mut()
                                    .insert("set-cookie", "sid=1".parse().unwrap());
                                r
                            }
                            "/flaky" if f.load(Ordering::SeqCst) => Response::builder()
                                .status(503)
                                .body(Full::new(Bytes::from_static(b"origin error")))
                                .unwrap(),
                            "/flaky" => html("Menus de la cantine"),
                            _ => html("Autre page"),
                        };
                        resp.headers_mut().insert("x-origin", "1".parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    () = s.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    });
    PagesOrigin {
        addr,
        failing,
        stop,
    }
}

fn config(origin: SocketAddr, route_extra: &str) -> String {
    format!(
        r#"[[tenants]]
id = "ville"
name = "Ville de Test"
hosts = ["ville.test"]

[[tenants.pools]]
name = "web"
servers = [{{ address = "{origin}" }}]
health = {{ passive_failures = 0 }}

[[tenants.routes]]
name = "demarches"
path_prefix = "/demarches"
pool = "web"
maintenance = true

[[tenants.routes]]
name = "site"
path_prefix = "/"
pool = "web"
{route_extra}

[tenants.status]
alternatives = ["Accueil de la mairie : 02 40 00 00 00"]

[[tenants.status.components]]
id = "site"
name = "Site de la ville"
routes = ["site"]
"#
    )
}

#[tokio::test]
async fn stale_copies_cover_a_dead_origin_and_personal_pages_never_are_kept() {
    let origin = pages_origin().await;
    let gw = Gw::start(&config(origin.addr, "")).await;
    let c = h1_client();
    for path in ["/horaires", "/compte", "/session", "/flaky"] {
        assert_eq!(get(&c, gw.addr, "ville.test", path).await.status, 200);
    }
    // A request carrying a cookie gets a page that may be personal: not kept either.
    let with_cookie = get_with(
        &c,
        gw.addr,
        "ville.test",
        "/cookie-page",
        &[("cookie", "sid=2")],
    )
    .await;
    assert_eq!(with_cookie.status, 200);

    // The origin fails on one page: its copy answers, with the notice.
    origin.failing.store(true, Ordering::SeqCst);
    let flaky = get(&c, gw.addr, "ville.test", "/flaky").await;
    assert_eq!(flaky.status, 200, "{}", flaky.body);
    assert!(flaky.body.contains("Menus de la cantine"));
    assert_eq!(flaky.headers["x-rempart-stale"], "1");

    // The origin dies.
    origin.stop.cancel();
    let page = get_with(
        &c,
        gw.addr,
        "ville.test",
        "/horaires",
        &[("accept-language", "fr")],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Horaires de la mairie"));
    assert!(
        page.body
            .contains("vous consultez une copie enregistrée le"),
        "{}",
        page.body
    );
    assert!(page.body.contains("href=\"/statut/\""));
    // The notice sits right after the body tag, before the page's own content.
    let notice = page.body.find("role=\"status\"").unwrap();
    assert!(page.body.find("<body class=\"p\">").unwrap() < notice);
    assert!(notice < page.body.find("Horaires").unwrap());
    assert_eq!(page.headers["cache-control"], "no-store");
    assert_eq!(page.headers["x-origin"], "1");
    assert!(page.headers.contains_key("age"));
    let en = get_with(
        &c,
        gw.addr,
        "ville.test",
        "/horaires",
        &[("accept-language", "en")],
    )
    .await;
    assert!(en.body.contains("you are reading a copy saved on"));

    // `no-store`, a cookie set, a cookie sent, or never seen: the fallback page.
    for (path, headers) in [
        ("/compte", &[][..]),
        ("/session", &[][..]),
        ("/cookie-page", &[("cookie", "sid=2")][..]),
        ("/jamais-vue", &[][..]),
    ] {
        let got = get_with(&c, gw.addr, "ville.test", path, headers).await;
        assert_eq!(got.status, 502, "{path}: {}", got.body);
        assert!(
            got.body.contains("Site de la ville"),
            "{path}: {}",
            got.body
        );
        assert!(got.body.contains("href=\"/statut/\""));
        assert!(got.body.contains("Accueil de la mairie : 02 40 00 00 00"));
        assert!(!got.body.contains("Votre compte") && !got.body.contains("Bonjour"));
    }
    // A POST is never answered from a copy.
    let post = Request::post(format!("http://{}/horaires", gw.addr))
        .header("host", "ville.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(c.request(post).await.unwrap().status(), 502);
    // The status page stays up with every origin down.
    assert_eq!(get(&c, gw.addr, "ville.test", "/statut/").await.status, 200);
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_stale_served_total{tenant=\"ville\"} 3"),
        "{m}"
    );
}

#[tokio::test]
async fn routes_without_stale_copies_get_the_fallback_page() {
    let origin = pages_origin().await;
    let gw = Gw::start(&config(origin.addr, "stale_if_error = \"0s\"")).await;
    let c = h1_client();
    assert_eq!(
        get(&c, gw.addr, "ville.test", "/horaires").await.status,
        200
    );
    origin.stop.cancel();
    let got = get(&c, gw.addr, "ville.test", "/horaires").await;
    assert_eq!(got.status, 502);
    assert!(got.body.contains("Site de la ville"));
}

#[tokio::test]
async fn maintenance_mode_from_config_and_admin_api() {
    let origin = pages_origin().await;
    let gw = Gw::start(&config(origin.addr, "")).await;
    let c = h1_client();
    let m = get(&c, gw.addr, "ville.test", "/demarches/inscription").await;
    assert_eq!(m.status, 503);
    assert_eq!(m.headers["retry-after"], "600");
    assert!(m.body.contains("Service en maintenance"), "{}", m.body);
    assert!(m.body.contains("href=\"/statut/\""));
    assert_eq!(
        get(&c, gw.addr, "ville.test", "/horaires").await.status,
        200
    );

    let on = admin_call(
        &gw,
        "POST",
        "/admin/maintenance",
        Some(r#"{"tenant": "ville", "route": "site", "on": true}"#),
    )
    .await;
    assert_eq!(on.status, 200, "{}", on.body);
    assert_eq!(
        get(&c, gw.addr, "ville.test", "/horaires").await.status,
        503
    );
    let list = admin_call(&gw, "GET", "/admin/maintenance", None).await;
    assert!(list.body.contains("\"route\":\"site\""), "{}", list.body);
    let off = admin_call(
        &gw,
        "POST",
        "/admin/maintenance",
        Some(r#"{"tenant": "ville", "route": "site", "on": false}"#),
    )
    .await;
    assert_eq!(off.status, 200);
    assert_eq!(
        get(&c, gw.addr, "ville.test", "/horaires").await.status,
        200
    );
    let bad = admin_call(
        &gw,
        "POST",
        "/admin/maintenance",
        Some(r#"{"tenant": "ville", "route": "nope", "on": true}"#),
    )
    .await;
    assert_eq!(bad.status, 400);
    let en = get_with(
        &c,
        gw.addr,
        "ville.test",
        "/demarches/",
        &[("accept-language", "en")],
    )
    .await;
    assert!(en.body.contains("Service under maintenance"));
}

#[tokio::test]
async fn copies_on_disk_survive_a_restart_during_the_outage() {
    let origin = pages_origin().await;
    let config = format!(
        "[degraded]\nstale_disk_dir = \"stale\"\n\n{}",
        config(origin.addr, "")
    );
    let mut gw = Gw::start(&config).await;
    let c = h1_client();
    assert_eq!(
        get(&c, gw.addr, "ville.test", "/horaires").await.status,
        200
    );
    let dir = gw.dir.path().join("stale");
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            std::fs::read_dir(&dir).is_ok_and(|d| {
                d.flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "stale"))
            })
        })
        .await,
        "no copy written under {}",
        dir.display()
    );
    // The origin dies, then the gateway restarts: its memory is empty, the disk is not.
    origin.stop.cancel();
    gw.restart().await;
    let page = get(&c, gw.addr, "ville.test", "/horaires").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Horaires de la mairie"));
    assert_eq!(page.headers["x-rempart-stale"], "1");
    assert_eq!(get(&c, gw.addr, "ville.test", "/compte").await.status, 502);
}
