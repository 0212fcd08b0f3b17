//! The operations files shipped in `contrib/`: Prometheus alert rules that load
//! (`promtool check rules`) and a Grafana dashboard, both naming only metrics a running
//! gateway exports.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::support::*;

fn rules_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus/rempart-rules.yml")
}

/// The `rempart_*` names in `text`.
fn rempart_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("rempart_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The sample names an exposition declares (`# TYPE` lines), whether or not a sample was
/// recorded yet: a counter's `_total`, a histogram's `_bucket`, `_sum` and `_count`.
fn exported(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                names.insert(format!("{name}{s}"));
            }
        }
    }
    names
}

/// Every `expr` of a Grafana dashboard's panels.
fn dashboard_expressions(dashboard: &serde_json::Value, out: &mut Vec<String>) {
    match dashboard {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_expressions(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                dashboard_expressions(v, out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn prometheus_rules_and_grafana_dashboard_name_only_metrics_the_gateway_exports() {
    let rules = std::fs::read_to_string(rules_path()).unwrap();
    // The expressions only: comments and annotations may name things in prose.
    let rule_expressions: String = rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr:"))
        .collect::<Vec<_>>()
        .join("\n");
    let wanted_by_rules = rempart_names(&rule_expressions);
    assert!(wanted_by_rules.len() >= 4, "{wanted_by_rules:?}");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/rempart.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut panel_expressions = Vec::new();
    dashboard_expressions(&dashboard, &mut panel_expressions);
    let wanted_by_dashboard = rempart_names(&panel_expressions.join("\n"));
    assert!(wanted_by_dashboard.len() >= 10, "{wanted_by_dashboard:?}");
    let wanted: BTreeSet<String> = wanted_by_rules
        .union(&wanted_by_dashboard)
        .cloned()
        .collect();
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    assert_eq!(
        get(&h1_client(), gw.addr, "ville.test", "/").await.status,
        200
    );
    let exposition = crate::health::admin_metrics(&gw).await;
    let have = exported(&exposition);
    let missing: Vec<_> = wanted.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}\n{exposition}"
    );
}

#[test]
fn prometheus_rules_pass_promtool() {
    match std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(rules_path())
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            let msg =
                format!("promtool not found ({e}): Debian's prometheus, scripts/test installs it");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
            eprintln!("skipped outside CI: {msg}");
        }
    }
}
