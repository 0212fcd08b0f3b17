//! The real binary: `rempart run` writes JSON access-log lines without query strings or
//! cookies, reloads on SIGHUP, `rempart reload` works, SIGTERM drains and exits 0, and the
//! service manager (systemd `Type=notify`) hears when it is ready, reloading and stopping.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_logs_reloads_and_stops_cleanly() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    // A fixed free port for the gateway: bind 0, read, release.
    let port = closed_port().await.port();
    let write = |origin: std::net::SocketAddr| {
        // The town hall's network is trusted: its requests are marked in the access log.
        let text = with_defaults(&format!(
            "[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n{}\n[tenants.shield]\ntrusted_networks = [\"127.0.0.1/32\"]\n",
            one_tenant(&[origin], "", "")
        ));
        std::fs::write(dir.path().join("rempart.toml"), text).unwrap();
    };
    write(a.addr);
    let config = dir.path().join("rempart.toml");
    let child = Command::new(env!("CARGO_BIN_EXE_rempart"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await
    );
    let c = h1_client();
    let got = get_with(
        &c,
        addr,
        "ville.test",
        "/dossier?nir=180057512345678&token=secret",
        &[("cookie", "session=abc123")],
    )
    .await;
    assert_eq!(got.status, 200);

    // SIGHUP reload.
    write(b.addr);
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        eventually(Duration::from_secs(10), || async {
            // A pooled connection may be reset while the reload happens (seen once in CI,
            // 2026-11-27, not yet explained): poll through transport errors.
            try_get(&c, addr, "ville.test", "/")
                .await
                .is_some_and(|g| g.body == "hello from b")
        })
        .await
    );

    // `rempart reload` through the admin API (admin port 0 in the file is not reachable
    // from outside, so only check the refusal path: an invalid file is not sent).
    std::fs::write(&config, "[[tenants]]\nid = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rempart"))
        .args(["reload", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not reloading"));
    // The gateway still serves.
    assert_eq!(get(&c, addr, "ville.test", "/").await.body, "hello from b");

    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(status.status.success());
    let stdout = String::from_utf8_lossy(&status.stdout).into_owned();
    let access: Vec<serde_json::Value> = BufReader::new(stdout.as_bytes())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .filter(|v| v["target"] == "rempart::access")
        .collect();
    let first = access
        .iter()
        .find(|v| v["path"] == "/dossier")
        .unwrap_or_else(|| panic!("no access line in {stdout}"));
    assert_eq!(first["tenant"], "ville");
    assert_eq!(first["status"], 200);
    assert_eq!(first["method"], "GET");
    // Personal data stays out of logs: the client shows as its /24 by default.
    assert_eq!(first["client"], "127.0.0.0/24");
    assert_eq!(first["upstream"], a.addr.to_string());
    assert!(first["duration_ms"].as_f64().is_some());
    assert_eq!(first["network"], "trusted");
    assert!(
        !stdout.contains("180057512345678")
            && !stdout.contains("abc123")
            && !stdout.contains("secret")
    );
    assert!(stdout.contains("configuration reloaded"), "{stdout}");
}

/// Waits for the first datagram on `sock` that contains `line`; returns it.
pub(crate) async fn notified(sock: &tokio::net::UnixDatagram, line: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no `{line}` from the gateway"))
            .unwrap();
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.lines().any(|l| l == line) {
            return msg;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_tells_the_service_manager_when_ready_reloading_and_stopping() {
    let origin = Origin::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port().await.port();
    let text = with_defaults(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n{}",
        one_tenant(&[origin.addr], "", "")
    ));
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    let config = dir.path().join("rempart.toml");
    std::fs::write(&config, text).unwrap();
    // The service manager's end: a datagram socket named by NOTIFY_SOCKET, as systemd gives
    // a `Type=notify` unit, with a watchdog of 400 ms (pings every 200 ms).
    let socket_path = dir.path().join("notify.sock");
    let manager = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rempart"))
        .args(["run", "--log-format", "text", "--no-access-log", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();

    let ready = notified(&manager, "READY=1").await;
    assert!(ready.contains(&format!("127.0.0.1:{port}")), "{ready}");
    // Ready means served: the first request after READY=1 is answered, without retrying.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let c = h1_client();
    assert_eq!(get(&c, addr, "ville.test", "/").await.body, "hello from a");
    // The watchdog is pinged, again and again.
    notified(&manager, "WATCHDOG=1").await;
    notified(&manager, "WATCHDOG=1").await;

    // `systemctl reload` sends SIGHUP: reloading, then ready again.
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    notified(&manager, "RELOADING=1").await;
    let back = notified(&manager, "READY=1").await;
    assert!(back.contains("configuration reloaded"), "{back}");

    // A refused file: still ready, on the previous configuration, and it says so.
    std::fs::write(&config, "[[tenants]]\nid = \"x\"\n").unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let refused = notified(&manager, "READY=1").await;
    assert!(refused.contains("refused"), "{refused}");
    assert_eq!(get(&c, addr, "ville.test", "/").await.body, "hello from a");

    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    notified(&manager, "STOPPING=1").await;
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(status.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_from_the_socket_systemd_passes() {
    let origin = Origin::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    let port = closed_port().await.port();
    let text = with_defaults(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:{port}\"\n\n{}",
        one_tenant(&[origin.addr], "", "")
    ));
    let config = dir.path().join("rempart.toml");
    std::fs::write(&config, text).unwrap();
    // systemd's own tool binds the socket, then starts the gateway with it as fd 3
    // (LISTEN_FDS=1, LISTEN_PID), as a `.socket` unit does.
    let activator = Command::new("systemd-socket-activate")
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(env!("CARGO_BIN_EXE_rempart"))
        .args(["run", "--no-access-log", "--log-format", "text", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("systemd-socket-activate (Debian's systemd package) is needed");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The first connection starts the gateway; it waits in the socket's queue meanwhile.
    let c = h1_client();
    assert!(
        eventually(Duration::from_secs(20), || async {
            try_get(&c, addr, "ville.test", "/")
                .await
                .is_some_and(|g| g.body == "hello from a")
        })
        .await
    );
    assert!(Command::new("kill")
        .args(["-TERM", &activator.id().to_string()])
        .status()
        .unwrap()
        .success());
    let ended = tokio::task::spawn_blocking(move || activator.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&ended.stdout);
    assert!(ended.status.success(), "{}: {log}", ended.status);
    assert!(log.contains("listening socket inherited"), "{log}");
}
