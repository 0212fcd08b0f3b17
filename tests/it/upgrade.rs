//! Binary upgrades under load: 64 keep-alive connections stay busy while the real binary is
//! upgraded five times (`POST /admin/upgrade`, as `rempart upgrade` does), then a sixth time
//! to a binary that cannot start. Not one request fails, bans survive, and the failed
//! upgrade leaves the running process serving.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::support::*;

/// Every gateway process the test made, ended with the test (even a failed one).
struct Processes(Vec<u32>);

impl Drop for Processes {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    reconnects: AtomicU64,
    errors: Mutex<Vec<String>>,
}

/// One client connection after another, each kept alive for as long as the gateway keeps it,
/// sending GETs back to back until `stop`.
async fn keep_busy(addr: std::net::SocketAddr, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            tally.errors.lock().unwrap().push("connect refused".into());
            continue;
        };
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
        else {
            continue;
        };
        tokio::spawn(conn);
        tally.reconnects.fetch_add(1, Ordering::Relaxed);
        while !stop.load(Ordering::Relaxed) {
            // A connection the gateway closed between two requests is not a failure: nothing
            // was sent on it.
            if sender.ready().await.is_err() {
                break;
            }
            let req = http::Request::get("/")
                .header("host", "ville.test")
                .body(Full::new(Bytes::new()))
                .unwrap();
            match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let closing = resp
                        .headers()
                        .get(http::header::CONNECTION)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    match resp.into_body().collect().await.map(|b| b.to_bytes()) {
                        Ok(body) if status == 200 && body == "hello from a" => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            tally
                                .errors
                                .lock()
                                .unwrap()
                                .push(format!("{status}: {other:?}"));
                        }
                    }
                    if closing {
                        break;
                    }
                }
                Err(e) => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    tally.errors.lock().unwrap().push(e.to_string());
                    break;
                }
            }
        }
    }
}

/// `POST /admin/upgrade` with `body`: status and JSON answer.
async fn upgrade(admin: std::net::SocketAddr, body: &str) -> (u16, serde_json::Value) {
    let got = post_json(admin, "/admin/upgrade", body).await;
    (got.0, serde_json::from_str(&got.1).unwrap_or_default())
}

async fn post_json(admin: std::net::SocketAddr, path: &str, body: &str) -> (u16, String) {
    let req = http::Request::post(format!("http://{admin}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("host", admin.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = h1_client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The real binary started on a configuration of its own (listener and admin API on fixed
/// loopback ports, so the upgraded process finds them in the file).
struct Started {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

/// Starts the real binary with `tenants` (TOML) behind a listener and an admin API.
async fn start_binary(tenants: &str) -> Started {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    let port = closed_port().await.port();
    let admin_port = closed_port().await.port();
    let text = with_defaults(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n[admin]\naddress = \"127.0.0.1:{admin_port}\"\ntoken_file = \"admin.token\"\n\n{tenants}"
    ));
    let config = dir.path().join("rempart.toml");
    std::fs::write(&config, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rempart"))
        .args(["run", "--no-access-log", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Started {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
        _dir: dir,
    }
}

/// Waits for a process that drains and ends on its own, and checks it ended well.
async fn ended_cleanly(mut child: std::process::Child) {
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

async fn admin_get(admin: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let req = http::Request::get(format!("http://{admin}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("host", admin.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = h1_client().request(req).await.unwrap();
    serde_json::from_slice(&got.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

/// The new process defends like the old one from its first request: a proof of work the
/// old process accepted is refused as a replay by the new one, and the operator's
/// vigilance level holds, with its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_challenges_and_vigilance_levels_cross_an_upgrade() {
    let origin = Origin::start("a").await;
    let started = start_binary(&format!(
        "{}\n[tenants.shield]\nunder_attack = true\nchallenge_difficulty = 8\nchallenge_wait = \"1s\"\n",
        one_tenant(&[origin.addr], "", ""),
    ))
    .await;
    let (first, addr, admin) = (started.child, started.addr, started.admin);
    let mut processes = Processes(vec![first.id()]);
    assert!(
        eventually(Duration::from_secs(15), || async {
            try_get(&h1_client(), admin, &admin.to_string(), "/healthz")
                .await
                .is_some()
        })
        .await
    );
    // A resident answers the challenge: the old process accepts the proof of work once.
    let browser = [(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
    )];
    let c = h1_client();
    let page = get_with(&c, addr, "ville.test", "/", &browser).await;
    assert_eq!(page.status, 403, "{}", page.body);
    let (token, difficulty) = challenge_of(&page.body);
    let n = rempart::shield::pass::solve(&token, difficulty);
    let claim = format!("/.rempart/pass?t={token}&n={n}&r=%2F");
    let claimed = get_with(&c, addr, "ville.test", &claim, &browser).await;
    assert_eq!(claimed.status, 303, "{}", claimed.body);
    // The operator raises the town's level to rouge for two hours (once it is watched).
    let set = eventually(Duration::from_secs(15), || async {
        post_json(
            admin,
            "/admin/watch/level",
            r#"{"tenant": "ville", "level": "rouge", "for": "2h", "reason": "exercice"}"#,
        )
        .await
        .0 == 200
    })
    .await;
    assert!(set, "ville never watched");
    let until = |v: &serde_json::Value| {
        v["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant"] == "ville")
            .map(|t| (t["level"].clone(), t["override_until_ms"].as_u64()))
    };
    let before = until(&admin_get(admin, "/admin/watch").await).unwrap();
    assert_eq!(before.0, "rouge");

    let (status, answer) = upgrade(admin, "{}").await;
    assert_eq!(status, 200, "{answer}");
    let pid = u32::try_from(answer["pid"].as_u64().unwrap()).unwrap();
    processes.0.push(pid);
    // The old process drains and ends; from now on the new one answers alone.
    ended_cleanly(first).await;

    // The same proof of work again, on the new process: a replay, refused with a fresh
    // challenge.
    let again = get_with(&h1_client(), addr, "ville.test", &claim, &browser).await;
    assert_eq!(again.status, 403, "a replayed proof of work was accepted");
    assert!(again.body.contains("data-token"), "{}", again.body);
    // The operator's level held, with the same end, without a new incident or alert.
    let after = eventually(Duration::from_secs(15), || async {
        until(&admin_get(admin, "/admin/watch").await).is_some()
    })
    .await;
    assert!(after, "ville never watched by the new process");
    let after = until(&admin_get(admin, "/admin/watch").await).unwrap();
    assert_eq!(after, before);
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_upgrades_under_load_lose_no_request_and_a_broken_binary_changes_nothing() {
    let origin = Origin::start("a").await;
    // A second tenant, the town hall's network trusted: its browsers get passes without a
    // challenge, signed with the key made at start (no `secret_file`).
    let started = start_binary(&format!(
        "{}\n[[tenants]]\nid = \"mairie\"\nname = \"Mairie\"\nhosts = [\"mairie.test\"]\n[tenants.shield]\ntrusted_networks = [\"127.0.0.1/32\"]\n[[tenants.pools]]\nname = \"web\"\nservers = [{{ address = \"{}\" }}]\n[[tenants.routes]]\npool = \"web\"\n",
        one_tenant(&[origin.addr], "", ""),
        origin.addr
    ))
    .await;
    let (first, addr, admin) = (started.child, started.addr, started.admin);
    let mut processes = Processes(vec![first.id()]);
    // Listeners and admin API both up (the admin API comes last).
    assert!(
        eventually(Duration::from_secs(15), || async {
            try_get(&h1_client(), addr, "ville.test", "/")
                .await
                .is_some()
                && try_get(&h1_client(), admin, &admin.to_string(), "/healthz")
                    .await
                    .is_some()
        })
        .await
    );
    // A ban the upgrades must carry.
    let (status, body) = post_json(
        admin,
        "/admin/bans",
        r#"{"target": "198.51.100.0/24", "reason": "flood from a hosting range", "duration": "2h"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The operator put the town hall's site under attack for two hours.
    let (status, body) = post_json(
        admin,
        "/admin/shield/under-attack",
        r#"{"tenant": "mairie", "on": true, "for": "2h"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A resident's pass, and the proof that it is valid: with it, no new one is handed out.
    let c = h1_client();
    let browser = [(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
    )];
    let first_visit = get_with(&c, addr, "mairie.test", "/", &browser).await;
    let pass = first_visit
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no pass: {:?}", first_visit.headers));
    assert!(pass.starts_with("rempart_pass="), "{pass}");
    let with_pass = [browser[0], ("cookie", pass.as_str())];
    let again = get_with(&c, addr, "mairie.test", "/", &with_pass).await;
    assert_eq!(again.status, 200);
    assert!(
        again.headers.get("set-cookie").is_none(),
        "the pass was refused"
    );

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..64)
        .map(|_| tokio::spawn(keep_busy(addr, tally.clone(), stop.clone())))
        .collect();
    let served_since = |before: u64, tally: &Tally| tally.ok.load(Ordering::Relaxed) > before + 200;
    assert!(
        eventually(Duration::from_secs(20), || async {
            served_since(0, &tally)
        })
        .await,
        "no load"
    );

    let mut pids = vec![first.id()];
    for round in 1..=5 {
        let (status, answer) = upgrade(admin, "{}").await;
        assert_eq!(status, 200, "upgrade {round}: {answer}");
        let pid = u32::try_from(answer["pid"].as_u64().unwrap()).unwrap();
        assert!(!pids.contains(&pid));
        pids.push(pid);
        processes.0.push(pid);
        // The new process serves the load before the next round.
        let before = tally.ok.load(Ordering::Relaxed);
        assert!(
            eventually(Duration::from_secs(20), || async {
                served_since(before, &tally)
            })
            .await,
            "no traffic after upgrade {round}"
        );
    }
    // The first process drained and ended on its own.
    ended_cleanly(first).await;

    // A binary that cannot start: refused with its reason; the running process goes on.
    let (status, answer) = upgrade(admin, r#"{"binary": "/bin/false"}"#).await;
    assert_eq!(status, 500, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("exited"),
        "{answer}"
    );
    let before = tally.ok.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(20), || async {
            served_since(before, &tally)
        })
        .await
    );

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failed = tally.failed.load(Ordering::Relaxed);
    let errors = tally.errors.lock().unwrap().clone();
    assert_eq!(failed, 0, "{errors:?}");
    eprintln!(
        "{} requests served, {} connections, 0 failed, across 5 upgrades and a refused one",
        tally.ok.load(Ordering::Relaxed),
        tally.reconnects.load(Ordering::Relaxed)
    );

    // The resident's pass crossed five processes: still valid, no new one.
    let after = get_with(&h1_client(), addr, "mairie.test", "/", &with_pass).await;
    assert_eq!(after.status, 200);
    assert!(
        after.headers.get("set-cookie").is_none(),
        "the pass was refused after the upgrades"
    );

    // So did the under-attack mode, with its end.
    let req = http::Request::get(format!("http://{admin}/admin/shield"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("host", admin.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let shield = h1_client().request(req).await.unwrap();
    let shield: serde_json::Value =
        serde_json::from_slice(&shield.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let mairie = shield["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "mairie")
        .unwrap()
        .clone();
    assert_eq!(mairie["under_attack"], true, "{mairie}");
    let left = mairie["under_attack_remaining_s"].as_u64().unwrap();
    assert!((7000..=7200).contains(&left), "{mairie}");

    // The ban crossed five processes.
    let req = http::Request::get(format!("http://{admin}/admin/bans"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("host", admin.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let bans = h1_client().request(req).await.unwrap();
    let bans = bans.into_body().collect().await.unwrap().to_bytes();
    let bans = String::from_utf8_lossy(&bans);
    assert!(bans.contains("198.51.100.0/24"), "{bans}");
    assert!(bans.contains("flood from a hosting range"), "{bans}");

    // The last process stops cleanly on SIGTERM.
    let last = *pids.last().unwrap();
    assert!(Command::new("kill")
        .args(["-TERM", &last.to_string()])
        .status()
        .unwrap()
        .success());
    assert!(
        eventually(Duration::from_secs(40), || async {
            !std::path::Path::new(&format!("/proc/{last}")).exists()
                || std::fs::read_to_string(format!("/proc/{last}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        })
        .await
    );
}
