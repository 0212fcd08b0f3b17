//! Public status pages over real sockets: automatic component states from a failing origin
//! (debounced), the incident lifecycle through the admin API, feed and JSON content,
//! persistence across a restart, the static export and the publish command.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::*;

/// One tenant with a status page on `statut.ville.test` and `/statut`; `extra` is appended
/// to the `[tenants.status]` table, `global` to the file's `[status]` table.
fn status_config(origin: std::net::SocketAddr, extra: &str, global: &str) -> String {
    format!(
        r#"[status]
{global}

[[tenants]]
id = "ville"
name = "Ville de Test"
hosts = ["ville.test"]

[[tenants.pools]]
name = "web"
servers = [{{ address = "{origin}" }}]
health = {{ path = "/healthz", interval = "100ms", timeout = "500ms", healthy_threshold = 1, unhealthy_threshold = 1 }}

[[tenants.routes]]
name = "etat-civil"
path_prefix = "/"
pool = "web"

[tenants.status]
hosts = ["statut.ville.test"]
debounce = "1s"
alternatives = ["Accueil de la mairie : 02 40 00 00 00"]
{extra}

[[tenants.status.components]]
id = "etat-civil"
name = "État civil"
name_en = "Civil registry"
routes = ["etat-civil"]
"#
    )
}

/// The raw (compressed) body of a gzip answer.
async fn gzip_body(c: &H1Client, addr: std::net::SocketAddr, path: &str) -> Vec<u8> {
    use http_body_util::BodyExt;
    let req = hyper::Request::get(format!("http://{addr}{path}"))
        .header("host", "ville.test")
        .header("accept-encoding", "gzip")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    resp.into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

async fn summary(gw: &Gw) -> serde_json::Value {
    let got = get(&h1_client(), gw.addr, "statut.ville.test", "/summary.json").await;
    assert_eq!(got.status, 200, "{}", got.body);
    serde_json::from_str(&got.body).unwrap()
}

async fn component_status(gw: &Gw) -> String {
    summary(gw).await["components"][0]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn component_state_follows_a_failing_origin_after_the_debounce() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&status_config(origin.addr, "", "")).await;
    let c = h1_client();
    let page = get(&c, gw.addr, "statut.ville.test", "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Opérationnel"), "{}", page.body);
    assert!(page
        .body
        .contains("Tous les services fonctionnent normalement"));
    assert!(page.body.contains("Accueil de la mairie : 02 40 00 00 00"));
    assert_eq!(component_status(&gw).await, "operational");

    // The origin's health check starts failing: the page must not flip before the debounce.
    let failed_at = Instant::now();
    origin.state.healthy.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), || async {
            component_status(&gw).await == "major_outage"
        })
        .await,
        "the component never showed the outage"
    );
    assert!(
        failed_at.elapsed() >= Duration::from_secs(1),
        "flipped after {:?}, before the 1 s debounce",
        failed_at.elapsed()
    );
    let json = summary(&gw).await;
    assert_eq!(json["status"]["indicator"], "critical");
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_status_component_state{tenant=\"ville\",component=\"etat-civil\"} 4"),
        "{m}"
    );
    // An automatic incident is opened as a draft: operators see it, residents do not.
    let board = admin_call(&gw, "GET", "/admin/status/ville", None).await;
    assert_eq!(board.status, 200);
    let board: serde_json::Value = serde_json::from_str(&board.body).unwrap();
    let incident = &board["incidents"][0];
    assert_eq!(incident["automatic"], true);
    assert_eq!(incident["published"], false);
    assert!(json["incidents"].as_array().unwrap().is_empty());
    let feed = get(&c, gw.addr, "statut.ville.test", "/feed.atom").await;
    assert!(!feed.body.contains("<entry>"), "{}", feed.body);

    // Back up: the page recovers and the automatic incident is closed.
    origin.state.healthy.store(true, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), || async {
            component_status(&gw).await == "operational"
        })
        .await
    );
    let board = admin_call(&gw, "GET", "/admin/status/ville", None).await;
    let board: serde_json::Value = serde_json::from_str(&board.body).unwrap();
    assert_eq!(board["incidents"][0]["updates"][1]["status"], "resolved");
}

#[tokio::test]
async fn automatic_incidents_are_published_when_the_tenant_allows_it() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&status_config(origin.addr, "auto_publish = true", "")).await;
    origin.state.healthy.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), || async {
            summary(&gw).await["incidents"]
                .as_array()
                .is_some_and(|a| a.len() == 1)
        })
        .await
    );
    let json = summary(&gw).await;
    assert_eq!(json["incidents"][0]["status"], "investigating");
    assert!(json["incidents"][0]["name"]
        .as_str()
        .unwrap()
        .contains("État civil"));
}

#[tokio::test]
async fn incident_lifecycle_feed_json_languages_and_restart() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&status_config(
        origin.addr,
        "url = \"https://statut.ville.test/\"",
        "",
    ))
    .await;
    let c = h1_client();

    // A draft is invisible to residents.
    let created = admin_call(
        &gw,
        "POST",
        "/admin/status/ville/incidents",
        Some(r#"{"title": "Prise de rendez-vous indisponible", "title_en": "Appointments unavailable", "impact": "major", "components": ["etat-civil"], "message": "Nous analysons le problème.", "message_en": "We are investigating."}"#),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = serde_json::from_str::<serde_json::Value>(&created.body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let page = get(&c, gw.addr, "ville.test", "/statut/").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("Prise de rendez-vous"));

    // Published, then updated twice.
    let published = admin_call(
        &gw,
        "PATCH",
        &format!("/admin/status/ville/incidents/{id}"),
        Some(r#"{"published": true}"#),
    )
    .await;
    assert_eq!(published.status, 200, "{}", published.body);
    for (status, msg) in [
        (
            "identified",
            "La cause est identifiée : une panne électrique.",
        ),
        ("resolved", "Le service est rétabli."),
    ] {
        let body = format!(r#"{{"status": "{status}", "message": "{msg}"}}"#);
        let r = admin_call(
            &gw,
            "POST",
            &format!("/admin/status/ville/incidents/{id}/updates"),
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    // Bad input is refused with a reason and changes nothing.
    let bad = admin_call(
        &gw,
        "POST",
        &format!("/admin/status/ville/incidents/{id}/updates"),
        Some(r#"{"status": "scheduled", "message": "x"}"#),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(
        admin_call(&gw, "POST", "/admin/status/ville/incidents", Some("{nope"))
            .await
            .status,
        400
    );
    assert_eq!(
        admin_call(&gw, "GET", "/admin/status/nowhere", None)
            .await
            .status,
        404
    );

    let page = get(&c, gw.addr, "ville.test", "/statut/").await;
    assert!(page.body.contains("Prise de rendez-vous indisponible"));
    assert!(page.body.contains("Résolu"));
    assert!(page.body.contains("une panne électrique"));
    assert!(page.body.contains("<html lang=\"fr\">"));
    assert!(page.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    // English by switch and by Accept-Language; French by default.
    let en = get(&c, gw.addr, "ville.test", "/statut/?lang=en").await;
    assert!(en.body.contains("<html lang=\"en\">"));
    assert!(en.body.contains("Appointments unavailable"));
    let en = get_with(
        &c,
        gw.addr,
        "statut.ville.test",
        "/",
        &[("accept-language", "en-GB,en;q=0.9,fr;q=0.5")],
    )
    .await;
    assert!(en.body.contains("Civil registry"));
    // The base path without its slash redirects; other methods are refused; ETags work.
    let bare = get(&c, gw.addr, "ville.test", "/statut").await;
    assert_eq!(bare.status, 308);
    assert_eq!(bare.headers["location"], "/statut/");
    let etag = page.headers["etag"].to_str().unwrap().to_owned();
    let again = get_with(
        &c,
        gw.addr,
        "ville.test",
        "/statut/",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status, 304);
    // Compressed once at rendering, for clients that accept gzip.
    let gz = get_with(
        &c,
        gw.addr,
        "ville.test",
        "/statut/",
        &[("accept-encoding", "gzip, br")],
    )
    .await;
    assert_eq!(gz.headers["content-encoding"], "gzip");
    assert_ne!(gz.headers["etag"], page.headers["etag"]);
    assert!(gz.headers["vary"]
        .to_str()
        .unwrap()
        .contains("Accept-Encoding"));
    let raw = gzip_body(&c, gw.addr, "/statut/").await;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut text).unwrap();
    assert_eq!(text, page.body);
    assert_eq!(
        origin.count(),
        0,
        "status requests must never reach the origin"
    );

    // Atom: one entry per public update, newest first.
    let feed = get(&c, gw.addr, "statut.ville.test", "/feed.atom").await;
    assert_eq!(feed.status, 200);
    assert!(feed.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/atom+xml"));
    assert_eq!(feed.body.matches("<entry>").count(), 3, "{}", feed.body);
    let resolved = feed.body.find("[Résolu]").unwrap();
    let first = feed.body.find("[Analyse en cours]").unwrap();
    assert!(resolved < first);
    assert!(feed.body.contains("https://statut.ville.test/feed.atom"));

    // A maintenance window in progress shows on the component; an override wins.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = format!(
        r#"{{"kind": "maintenance", "title": "Mise à jour du logiciel d'état civil", "components": ["etat-civil"], "message": "Intervention programmée.", "publish": true, "starts_at": {}, "ends_at": {}}}"#,
        now - 60,
        now + 3600
    );
    assert_eq!(
        admin_call(&gw, "POST", "/admin/status/ville/incidents", Some(&body))
            .await
            .status,
        201
    );
    let json = summary(&gw).await;
    assert_eq!(json["components"][0]["status"], "under_maintenance");
    assert_eq!(json["scheduled_maintenances"][0]["status"], "scheduled");
    assert_eq!(json["status"]["indicator"], "maintenance");
    let set = admin_call(
        &gw,
        "PUT",
        "/admin/status/ville/components/etat-civil",
        Some(r#"{"state": "degraded_performance"}"#),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(component_status(&gw).await, "degraded_performance");

    // Restart on the same database: nothing is lost.
    let mut gw = gw;
    gw.restart().await;
    let json = summary(&gw).await;
    assert_eq!(json["components"][0]["status"], "degraded_performance");
    assert_eq!(json["scheduled_maintenances"].as_array().unwrap().len(), 1);
    let page = get(&c, gw.addr, "ville.test", "/statut/").await;
    assert!(page.body.contains("Prise de rendez-vous indisponible"));
    assert!(page.body.contains("une panne électrique"));
    let feed = get(&c, gw.addr, "statut.ville.test", "/feed.atom").await;
    assert_eq!(feed.body.matches("<entry>").count(), 4);
}

#[tokio::test]
async fn export_directory_and_publish_command_after_an_update() {
    let origin = Origin::start("a").await;
    let outside = tempfile::tempdir().unwrap();
    let published = outside.path().join("published");
    let command = format!(
        "rm -rf '{p}' && cp -r \"$REMPART_STATUS_DIR\" '{p}'",
        p = published.display()
    );
    let global = format!(
        "export_dir = \"export\"\npublish_command = \"{}\"",
        command.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let gw = Gw::start(&status_config(origin.addr, "", &global)).await;
    let created = admin_call(
        &gw,
        "POST",
        "/admin/status/ville/incidents",
        Some(r#"{"title": "Coupure du site des écoles", "message": "Le site est coupé.", "publish": true}"#),
    )
    .await;
    assert_eq!(created.status, 201);
    let copy = published.join("ville").join("index.html");
    assert!(
        eventually(Duration::from_secs(10), || async {
            std::fs::read_to_string(&copy).is_ok_and(|s| s.contains("Coupure du site des écoles"))
        })
        .await,
        "the publish command never copied the page"
    );
    let export = gw.dir.path().join("export").join("ville");
    for f in [
        "index.html",
        "index.en.html",
        "feed.atom",
        "summary.json",
        "index.html.gz",
    ] {
        assert!(export.join(f).is_file(), "{f} missing");
    }
    let english = std::fs::read_to_string(export.join("index.en.html")).unwrap();
    assert!(english.contains("href=\"index.html\""));
    let board = admin_call(&gw, "GET", "/admin/status/ville", None).await;
    let board: serde_json::Value = serde_json::from_str(&board.body).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            let b = admin_call(&gw, "GET", "/admin/status/ville", None).await;
            serde_json::from_str::<serde_json::Value>(&b.body).unwrap()["export"]["publish_ok"]
                == true
        })
        .await,
        "{board}"
    );
}

#[tokio::test]
async fn a_failing_publish_command_is_retried_and_reported() {
    let origin = Origin::start("a").await;
    let global = "export_dir = \"export\"\npublish_command = \"echo upload refused >&2; exit 3\"\npublish_attempts = 2";
    let gw = Gw::start(&status_config(origin.addr, "", global)).await;
    admin_call(
        &gw,
        "POST",
        "/admin/status/ville/incidents",
        Some(r#"{"title": "Test", "message": "Test.", "publish": true}"#),
    )
    .await;
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    let reported = eventually(Duration::from_secs(15), || async {
        let b = admin_call(&gw, "GET", "/admin/status/ville", None).await;
        let export = serde_json::from_str::<serde_json::Value>(&b.body).unwrap()["export"].clone();
        let done = export["publish_ok"] == false;
        *last.lock().unwrap() = export;
        done
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(reported, "{last}");
    assert_eq!(last["publish_attempts"], 2);
    let error = last["publish_error"].as_str().unwrap();
    assert!(
        error.contains("exit status: 3") && error.contains("upload refused"),
        "{error}"
    );
}

/// Runs `rempart status -c CONFIG ARGS...` (the real binary).
async fn status_cli(config: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_rempart"))
        .args(["status", "-c", config])
        .args(args)
        .output()
        .await
        .unwrap()
}

fn succeeded(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn operators_use_the_cli_and_export_without_a_gateway() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&status_config(origin.addr, "", "")).await;
    // The CLI finds the admin listener through the config: name its real address.
    let text = std::fs::read_to_string(&gw.path).unwrap();
    let admin = gw.running().admin_addr;
    std::fs::write(
        &gw.path,
        text.replace(
            "[admin]\naddress = \"127.0.0.1:0\"",
            &format!("[admin]\naddress = \"{admin}\""),
        ),
    )
    .unwrap();
    let config = gw.path.to_str().unwrap().to_owned();
    let out = status_cli(
        &config,
        &[
            "open",
            "ville",
            "--title",
            "Téléservices lents",
            "--message",
            "Les démarches en ligne sont lentes.",
            "--impact",
            "minor",
            "--component",
            "etat-civil",
            "--publish",
        ],
    )
    .await;
    assert!(succeeded(&out).contains("published"));
    let out = status_cli(
        &config,
        &[
            "maintenance",
            "ville",
            "--title",
            "Migration",
            "--message",
            "Migration du serveur.",
            "--from",
            "+1h",
            "--until",
            "+3h",
        ],
    )
    .await;
    assert!(succeeded(&out).contains("draft"));
    // A wrong state is refused with the admin API's reason and exit code 2.
    let out = status_cli(&config, &["component", "ville", "etat-civil", "broken"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown state"));
    let listing = succeeded(&status_cli(&config, &["list"]).await);
    assert!(listing.contains("etat-civil: operational"), "{listing}");
    assert!(
        listing.contains("Téléservices lents · published"),
        "{listing}"
    );
    assert!(listing.contains("Migration · DRAFT"), "{listing}");

    // Export reads the database directly, here after the gateway stopped.
    let mut gw = gw;
    gw.running.take().unwrap().shutdown().await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap().to_owned();
    succeeded(&status_cli(&config, &["export", "--out", &out_dir]).await);
    let page = std::fs::read_to_string(dir.path().join("ville/index.html")).unwrap();
    assert!(page.contains("Téléservices lents"));
    assert!(!page.contains("Migration"), "drafts are never exported");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("ville/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["status"]["indicator"], "minor");
}

#[tokio::test]
async fn the_demo_configuration_serves_its_status_page() {
    let origin = Origin::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    let path = dir.path().join("rempart.toml");
    std::fs::write(
        &path,
        rempart::demo::config_text(origin.addr, origin.addr, 0),
    )
    .unwrap();
    let running = rempart::app::start(&path, quiet_options()).await.unwrap();
    let addr = running.listen_addrs[0];
    let c = h1_client();
    let page = get(&c, addr, "statut.saint-exemple.localhost", "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Demandes d&#39;actes d&#39;état civil")
            || page.body.contains("Demandes d'actes d'état civil"),
        "{}",
        page.body
    );
    let copy = dir.path().join("statut-copie/saint-exemple/index.html");
    assert!(eventually(Duration::from_secs(5), || async { copy.exists() }).await);
    running.shutdown().await;
}

#[tokio::test]
async fn a_status_page_added_by_reload_persists_like_one_from_start() {
    use rempart::status::subscribe::Purpose;
    let origin = Origin::start("a").await;
    let mut gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    gw.write_config(&status_config(origin.addr, "auto_publish = true", ""));
    let (code, body) = gw.admin_reload().await;
    assert_eq!(code, 200, "{body}");
    let token = gw
        .running()
        .gateway
        .current()
        .status
        .token(7, Purpose::Unsubscribe);
    let created = admin_call(
        &gw,
        "POST",
        "/admin/status/ville/incidents",
        Some(r#"{"title": "Ajouté après rechargement", "message": "Test.", "publish": true}"#),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    gw.restart().await;
    let json = summary(&gw).await;
    assert_eq!(json["incidents"][0]["name"], "Ajouté après rechargement");
    // Links already mailed stay valid: the tokens come from the database's secret.
    let after = gw
        .running()
        .gateway
        .current()
        .status
        .token(7, Purpose::Unsubscribe);
    assert_eq!(token, after);
}
