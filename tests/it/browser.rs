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
