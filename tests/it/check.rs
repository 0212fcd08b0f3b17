//! `rempart check`: every problem reported as FILE:LINE:COL: key: message (hint), exit 2;
//! shipped examples pass.

use std::process::Command;

const GOOD_TAIL: &str = r#"
[[tenants]]
id = "ville"
name = "Ville"
hosts = ["ville.test"]

[[tenants.pools]]
name = "web"
servers = [{ address = "127.0.0.1:8081" }]

[[tenants.routes]]
path_prefix = "/"
pool = "web"

[[listeners]]
address = "127.0.0.1:8080"
"#;

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rempart"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "bad.toml"),
    )
}

#[test]
fn bad_configs_are_reported_with_their_line() {
    // (config, expected fragments of stderr)
    let cases: Vec<(String, Vec<&str>)> = vec![
        (format!("[timeouts]\nupstream_conect = \"1s\"\n{GOOD_TAIL}"), vec!["bad.toml:2:1: timeouts.upstream_conect: unknown field `upstream_conect`", "docs/config.md"]),
        (format!("[timeouts]\nupstream_connect = \"soon\"\n{GOOD_TAIL}"), vec!["bad.toml:2:1: timeouts.upstream_connect: duration `soon`", "(write a number followed by ms, s, m or h"]),
        (format!("[[listeners]]\naddress = \"0.0.0.0\"\n{GOOD_TAIL}"), vec!["bad.toml:2:1: listeners[0].address: `0.0.0.0` is not a socket address (write IP:PORT"]),
        (format!("[admin]\naddress = \"0.0.0.0:9180\"\n{GOOD_TAIL}"), vec!["bad.toml:2:1: admin.address: `0.0.0.0:9180` is not a loopback address"]),
        (format!("[[listeners]]\naddress = \"127.0.0.1:443\"\nprotocol = \"https\"\n{GOOD_TAIL}"), vec!["bad.toml:3:1: listeners[0].protocol: an https listener needs"]),
        (GOOD_TAIL.replace("pool = \"web\"\n", "pool = \"wbe\"\n"), vec!["bad.toml:13:1: tenants[0].routes[0].pool: no pool named `wbe` in this tenant (known pools: web)"]),
        (GOOD_TAIL.replace("127.0.0.1:8081", "http://127.0.0.1:8081"), vec!["bad.toml:9:14: tenants[0].pools[0].servers[0].address: `http://127.0.0.1:8081` is not HOST:PORT"]),
        (GOOD_TAIL.replace("[\"ville.test\"]", "[\"ville.test\", \"https://x.fr/\"]"), vec!["bad.toml:5:24: tenants[0].hosts[1]: `https://x.fr/` is not a host name"]),
        (format!("default_tenant = \"mairie\"\n{GOOD_TAIL}"), vec!["bad.toml:1:1: default_tenant: no tenant has id `mairie`"]),
        (format!("[limits]\nmax_header_bytes = \"big\"\n{GOOD_TAIL}"), vec!["bad.toml:2:"]),
        ("[[tenants]\nid = 1\n".to_owned(), vec!["bad.toml:1:"]),
    ];
    for (text, expected) in cases {
        let (code, _, stderr) = check(&text);
        assert_eq!(code, 2, "{text}\n{stderr}");
        for e in expected {
            assert!(stderr.contains(e), "expected {e:?} in:\n{stderr}");
        }
    }
}

#[test]
fn several_problems_are_all_reported_in_file_order() {
    let text = GOOD_TAIL
        .replace("pool = \"web\"\n", "pool = \"wbe\"\n")
        .replace("127.0.0.1:8081", "nope");
    let (code, _, stderr) = check(&format!("[timeouts]\nrequest = \"0s\"\n{text}"));
    assert_eq!(code, 2);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("bad.toml:"))
        .collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with("bad.toml:2:1: timeouts.request"),
        "{stderr}"
    );
    assert!(lines[1].contains("servers[0].address"), "{stderr}");
    assert!(lines[2].contains("routes[0].pool"), "{stderr}");
}

#[test]
fn shipped_examples_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(env!("CARGO_BIN_EXE_rempart"))
                .args(["check", "--config"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn guard_scan_counts_personal_data_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.json");
    // Written in pieces larger than the scanner's reads would cut items: one line per record.
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!(
            "{{\"id\":\"CMD-2024-{i:06}\",\"tel\":\"06 12 34 {:02} {:02}\",\"mail\":\"agent{i}@ville-exemple.fr\"}}\n",
            i % 100,
            i / 100 % 100
        ));
    }
    std::fs::write(&export, &text).unwrap();
    let clean = dir.path().join("clean.csv");
    std::fs::write(&clean, "commune;population\nSaint-Exemple;12000\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rempart"))
        .args(["guard", "scan", "--json"])
        .arg(&export)
        .arg(&clean)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = report["files"].as_array().unwrap();
    assert_eq!(files[0]["phone"], 20_000);
    assert_eq!(files[0]["email"], 20_000);
    assert_eq!(files[0]["nir"], 0);
    assert_eq!(files[1]["phone"], 0);
    assert_eq!(files[1]["email"], 0);
}
