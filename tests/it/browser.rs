//! Real-browser tests: Debian's headless Chromium, driven by playwright-core
//! (`tests/browser/`), goes through the proof-of-work challenge to the origin page, with
//! JavaScript (WebCrypto in a secure context, the script's own SHA-256 elsewhere) and
//! without (the meta-refresh wait). Screenshots land in `target/browser/`.

use std::path::{Path, PathBuf};

use crate::support::*;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Whether Chromium, node and playwright-core are here. Under CI they must be: a missing
/// piece fails the test instead of skipping it.
fn browser_available() -> bool {
    let chromium =
        Path::new(&std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()))
            .exists();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let playwright = browser_dir().join("node_modules/playwright-core").exists();
    let ok = chromium && node && playwright;
    if !ok {
        let msg = format!(
            "browser test needs chromium ({chromium}), node ({node}) and playwright-core ({playwright}); scripts/test installs them"
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipped outside CI: {msg}");
    }
    ok
}

#[derive(Debug, serde::Deserialize)]
struct Run {
    ok: bool,
    error: Option<String>,
    ms: Option<u64>,
    url: Option<String>,
    challenge_title: Option<String>,
    second_visit_challenged: Option<bool>,
    second_visit_text: Option<String>,
    cookies: Option<Vec<serde_json::Value>>,
    axe_violations: Option<Vec<serde_json::Value>>,
}

async fn drive(url: String, mode: &'static str, shot: &str, host_rule: Option<String>) -> Run {
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
    std::fs::create_dir_all(&shots).unwrap();
    let prefix = shots.join(shot).display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new("node");
        cmd.current_dir(browser_dir())
            .arg("challenge.mjs")
            .arg(&url)
            .arg(mode)
            .arg("hello from")
            .arg(&prefix);
        if let Some(rule) = host_rule {
            cmd.arg(rule);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "no result from the browser script ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Challenges passed so far on the gateway (the server's own count: the browser may leave
/// the challenge page before the script observing it has looked).
async fn passes(gw: &Gw) -> u64 {
    let m = crate::health::admin_metrics(gw).await;
    m.lines()
        .find(|l| l.contains("rule=\"challenge\",action=\"passed\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn assert_through(run: &Run, what: &str, passes_before: u64, passes_after: u64) {
    assert!(run.ok, "{what}: {:?}", run.error);
    // The browser went through the challenge: the server granted exactly one pass.
    assert_eq!(passes_after, passes_before + 1, "{what}: {run:?}");
    if let Some(title) = run.challenge_title.as_deref().filter(|t| !t.is_empty()) {
        assert!(title.contains("Vérification"), "{what}: {title}");
    }
    assert!(
        run.url.as_deref().unwrap_or("").ends_with("/bienvenue?x=1"),
        "{what}: {:?}",
        run.url
    );
    let cookies = run.cookies.as_ref().unwrap();
    assert!(
        cookies.iter().any(|c| c["name"] == "rempart_pass"
            && c["httpOnly"] == true
            && c["sameSite"] == "Lax"),
        "{what}: {cookies:?}"
    );
    assert_eq!(run.second_visit_challenged, Some(false), "{what}");
    assert!(run
        .second_visit_text
        .as_deref()
        .unwrap_or("")
        .contains("hello from"));
}

#[tokio::test]
async fn chromium_passes_the_challenge_with_and_without_javascript() {
    if !browser_available() {
        return;
    }
    let origin = Origin::start("a").await;
    let config = format!(
        "default_tenant = \"ville\"\n{}\n[tenants.shield]\nunder_attack = true\nchallenge_difficulty = 14\nchallenge_wait = \"2s\"\n",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let port = gw.addr.port();

    // 127.0.0.1 is a secure context: the worker hashes with WebCrypto.
    let before = passes(&gw).await;
    let js = drive(
        format!("http://127.0.0.1:{port}/bienvenue?x=1"),
        "js",
        "challenge-js-webcrypto",
        None,
    )
    .await;
    assert_through(&js, "javascript, webcrypto", before, passes(&gw).await);
    // The challenge page passes an automated accessibility audit (axe-core, WCAG 2.1 A/AA):
    // no serious or critical violation.
    let violations = js.axe_violations.clone().expect("axe audit ran");
    let blocking: Vec<_> = violations
        .iter()
        .filter(|v| v["impact"] == "serious" || v["impact"] == "critical")
        .collect();
    assert!(blocking.is_empty(), "{violations:?}");
    eprintln!("axe violations on the challenge page: {violations:?}");
    assert!(js.ms.unwrap() < 5_000, "{:?}", js.ms);

    // A plain-HTTP host name is not a secure context: no WebCrypto, the script's SHA-256.
    let before = passes(&gw).await;
    let fallback = drive(
        format!("http://ville.test:{port}/bienvenue?x=1"),
        "js",
        "challenge-js-fallback",
        Some("MAP ville.test 127.0.0.1".into()),
    )
    .await;
    assert_through(
        &fallback,
        "javascript, own sha-256",
        before,
        passes(&gw).await,
    );

    // No JavaScript: the meta refresh waits 2 s, then the pass is granted.
    let before = passes(&gw).await;
    let nojs = drive(
        format!("http://127.0.0.1:{port}/bienvenue?x=1"),
        "nojs",
        "challenge-nojs",
        None,
    )
    .await;
    assert_through(&nojs, "no javascript", before, passes(&gw).await);
    assert!(
        nojs.ms.unwrap() >= 2_000 && nojs.ms.unwrap() < 15_000,
        "{:?}",
        nojs.ms
    );
}

/// Runs `pages.mjs` on `targets` (name, URL); returns each page's report.
async fn pages(port: u16, targets: &[(&str, String)]) -> Vec<serde_json::Value> {
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
    std::fs::create_dir_all(&shots).unwrap();
    let mut args = vec![
        "pages.mjs".to_owned(),
        format!("MAP ville.test 127.0.0.1:{port}, MAP statut.ville.test 127.0.0.1:{port}"),
        shots.display().to_string(),
    ];
    args.extend(targets.iter().map(|(n, u)| format!("{n}={u}")));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .current_dir(browser_dir())
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| {
            panic!(
                "no result from pages.mjs ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert_eq!(v["ok"], true, "{v}");
    v["pages"].as_array().unwrap().clone()
}

/// No violation at all from axe-core (WCAG 2.1 A/AA and best practices) on our own pages.
fn assert_accessible(page: &serde_json::Value, key: &str) {
    let violations = page[key].as_array().unwrap();
    assert!(violations.is_empty(), "{}: {violations:?}", page["name"]);
}

#[tokio::test]
async fn status_fallback_and_maintenance_pages_render_switch_language_and_pass_axe() {
    if !browser_available() {
        return;
    }
    // Every origin is down (nothing listens); no health probe, so the component stays
    // operational until an operator says otherwise.
    let down = closed_port().await;
    let config = format!(
        r#"[[tenants]]
id = "ville"
name = "Ville de Saint-Exemple"
hosts = ["ville.test"]

[[tenants.pools]]
name = "web"
servers = [{{ address = "{down}" }}]
health = {{ passive_failures = 0 }}

[[tenants.routes]]
name = "demarches"
path_prefix = "/"
pool = "web"

[[tenants.routes]]
name = "ecoles"
path_prefix = "/ecoles"
pool = "web"
maintenance = true

[tenants.status]
hosts = ["statut.ville.test"]
alternatives = ["Accueil de la mairie : 02 40 00 00 00, du lundi au vendredi de 8 h 30 à 17 h"]

[[tenants.status.components]]
id = "demarches"
name = "Démarches en ligne"
name_en = "Online services"
routes = ["demarches"]

[[tenants.status.components]]
id = "ecoles"
name = "Inscriptions scolaires"
name_en = "School registration"
routes = ["ecoles"]
"#
    );
    let gw = Gw::start(&config).await;
    let port = gw.addr.port();
    let normal = pages(
        port,
        &[
            ("status-normal", format!("http://statut.ville.test:{port}/")),
            (
                "fallback",
                format!("http://ville.test:{port}/etat-civil/acte"),
            ),
            (
                "maintenance",
                format!("http://ville.test:{port}/ecoles/inscription"),
            ),
        ],
    )
    .await;
    let status = &normal[0];
    assert_eq!(status["status"], 200);
    assert_eq!(status["lang"], "fr");
    assert!(status["text"]
        .as_str()
        .unwrap()
        .contains("Tous les services fonctionnent normalement"));
    assert!(
        status["bytes"].as_u64().unwrap() < 50 * 1024,
        "{}",
        status["bytes"]
    );
    assert_eq!(status["first_focus"], "Aller au contenu");
    assert_eq!(status["switched_lang"], "en");
    assert!(status["switched_title"]
        .as_str()
        .unwrap()
        .contains("Service status"));
    assert_accessible(status, "violations");
    assert_accessible(status, "switched_violations");
    let fallback = &normal[1];
    assert_eq!(fallback["status"], 502);
    let text = fallback["text"].as_str().unwrap();
    assert!(
        text.contains("Démarches en ligne") && text.contains("Accueil de la mairie"),
        "{text}"
    );
    assert_accessible(fallback, "violations");
    let maintenance = &normal[2];
    assert_eq!(maintenance["status"], 503);
    assert!(maintenance["text"]
        .as_str()
        .unwrap()
        .contains("Service en maintenance"));
    assert_accessible(maintenance, "violations");

    // An incident: the page shows it, in both languages, still accessible.
    let created = admin_call(
        &gw,
        "POST",
        "/admin/status/ville/incidents",
        Some(r#"{"title": "Démarches en ligne indisponibles", "title_en": "Online services down", "impact": "major", "components": ["demarches"], "message": "Le serveur ne répond plus. Les équipes interviennent.", "message_en": "The server is not responding. Staff are on it.", "publish": true}"#),
    )
    .await;
    assert_eq!(created.status, 201);
    let set = admin_call(
        &gw,
        "PUT",
        "/admin/status/ville/components/demarches",
        Some(r#"{"state": "major_outage"}"#),
    )
    .await;
    assert_eq!(set.status, 200);
    let incident = pages(
        port,
        &[(
            "status-incident",
            format!("http://ville.test:{port}/statut/"),
        )],
    )
    .await;
    let page = &incident[0];
    let text = page["text"].as_str().unwrap();
    assert!(text.contains("Panne majeure en cours"), "{text}");
    assert!(text.contains("Démarches en ligne indisponibles"));
    assert!(text.contains("Le serveur ne répond plus"));
    assert_eq!(page["switched_lang"], "en");
    assert_accessible(page, "violations");
    assert_accessible(page, "switched_violations");
    for shot in [
        "status-normal.png",
        "status-normal-en.png",
        "status-incident.png",
        "status-incident-en.png",
        "fallback.png",
        "maintenance.png",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/browser")
            .join(shot);
        assert!(path.metadata().is_ok_and(|m| m.len() > 1000), "{shot}");
    }
}
