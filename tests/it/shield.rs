//! Flood shield, first part: per-address limits with 429 + Retry-After, default exemptions,
//! log-only mode, metrics.

use crate::support::*;

#[tokio::test]
async fn address_limit_answers_429_and_spares_the_origin() {
    let origin = Origin::start("a").await;
    let config = format!(
        "{}\n[tenants.shield]\naddress_rate = 5\n",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let c = h1_client();
    let mut limited = 0;
    for _ in 0..20 {
        let got = get(&c, gw.addr, "ville.test", "/recherche?q=x").await;
        if got.status == 429 {
            limited += 1;
            assert_eq!(got.headers.get("retry-after").unwrap(), "1");
            assert!(got.body.contains("Trop de demandes") && got.body.contains("Ville de Test"));
        } else {
            assert_eq!(got.status, 200);
        }
    }
    assert!(limited >= 14, "only {limited} of 20 limited");
    assert!(origin.count() <= 6, "origin saw {}", origin.count());
    // Exemptions on by default: robots.txt and .well-known are never limited.
    for path in ["/robots.txt", "/.well-known/acme-challenge/x"] {
        assert_eq!(
            get(&c, gw.addr, "ville.test", path).await.status,
            200,
            "{path}"
        );
    }
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains(&format!("rempart_shield_decisions_total{{tenant=\"ville\",rule=\"address_rate\",action=\"limited\"}} {limited}")),
        "{m}"
    );
    assert!(
        m.contains("rempart_requests_total{tenant=\"ville\",route=\"/\",status_class=\"4xx\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn log_mode_only_counts() {
    let origin = Origin::start("a").await;
    let config = format!(
        "{}\n[tenants.shield]\nmode = \"log\"\naddress_rate = 2\n",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let c = h1_client();
    for _ in 0..10 {
        assert_eq!(get(&c, gw.addr, "ville.test", "/").await.status, 200);
    }
    assert_eq!(origin.count(), 10);
    let m = crate::health::admin_metrics(&gw).await;
    assert!(m.contains("rempart_shield_decisions_total{tenant=\"ville\",rule=\"address_rate\",action=\"logged\"} 8"), "{m}");
}

#[tokio::test]
async fn bans_through_the_cli_refuse_then_release() {
    let origin = Origin::start("a").await;
    let admin_port = closed_port().await.port();
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:{admin_port}\"\ntoken_file = \"admin.token\"\n\n{}",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let c = h1_client();
    let path = gw.path.clone();
    let run = |args: Vec<String>| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_rempart"))
                .arg("bans")
                .arg("--config")
                .arg(&path)
                .args(&args)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let (code, _, err) = run(vec![
        "add".into(),
        "127.0.0.0/8".into(),
        "--reason".into(),
        "drill: loopback flood".into(),
        "--for".into(),
        "1h".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{err}");
    let got = get(&c, gw.addr, "ville.test", "/").await;
    assert_eq!(got.status, 403);
    assert!(got.body.contains("Accès refusé"), "{}", got.body);
    assert_eq!(origin.count(), 0);
    let (code, out, _) = run(vec!["list".into()]).await.unwrap();
    assert_eq!(code, Some(0));
    assert!(
        out.contains("127.0.0.0/8") && out.contains("drill: loopback flood"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("127.0.0.0/8") && l.contains(" 1  ")),
        "hit count: {out}"
    );
    let (code, _, err) = run(vec![
        "add".into(),
        "not-an-ip".into(),
        "--reason".into(),
        "x".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not an address or CIDR"), "{err}");
    let (code, _, _) = run(vec!["remove".into(), "127.0.0.0/8".into()])
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    assert_eq!(get(&c, gw.addr, "ville.test", "/").await.status, 200);
    let (code, _, _) = run(vec!["remove".into(), "127.0.0.0/8".into()])
        .await
        .unwrap();
    assert_eq!(code, Some(2));
}

#[tokio::test]
async fn deny_and_allow_lists_apply_and_reload_on_change() {
    let origin = Origin::start("a").await;
    let config = format!(
        "{}\n[tenants.shield]\naddress_rate = 3\ndeny_file = \"deny.txt\"\nallow_file = \"allow.txt\"\n",
        one_tenant(&[origin.addr], "", "")
    );
    // The lists must exist before the gateway validates its config.
    let gw = Gw::start_with_files(
        &config,
        &[
            ("deny.txt", "# nobody yet\n192.0.2.1\n"),
            ("allow.txt", "127.0.0.1 # monitoring\n"),
        ],
        watching_options(),
    )
    .await;
    let c = h1_client();
    // Allow-listed: the address limit does not apply.
    for _ in 0..10 {
        assert_eq!(get(&c, gw.addr, "ville.test", "/").await.status, 200);
    }
    // Deny ourselves by editing the list: the gateway reloads it.
    std::fs::write(gw.dir.path().join("deny.txt.tmp"), "127.0.0.0/8\n").unwrap();
    std::fs::rename(
        gw.dir.path().join("deny.txt.tmp"),
        gw.dir.path().join("deny.txt"),
    )
    .unwrap();
    let denied = eventually(std::time::Duration::from_secs(10), || async {
        get(&c, gw.addr, "ville.test", "/").await.status == 403
    })
    .await;
    assert!(denied, "deny list change was not picked up");
    // A broken list is refused with its file and line; the previous lists keep applying.
    std::fs::write(
        gw.dir.path().join("deny.txt"),
        "127.0.0.0/8\nnot-a-network\n",
    )
    .unwrap();
    let (status, body) = gw.admin_reload().await;
    assert_eq!(status, 422);
    assert!(body.contains("deny.txt:2"), "{body}");
    assert_eq!(get(&c, gw.addr, "ville.test", "/").await.status, 403);
}

#[tokio::test]
async fn connections_per_address_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start("a").await;
    let gw = Gw::start(&format!(
        "[limits]\nmax_connections_per_address = 2\n\n{}",
        one_tenant(&[origin.addr], "", "")
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: ville.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    // The third is closed without an answer.
    let mut third = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let _ = third
        .write_all(b"GET / HTTP/1.1\r\nHost: ville.test\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        third.read_to_end(&mut out),
    )
    .await
    .unwrap();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_downstream_connections_total{result=\"rejected_per_address\"} 1"),
        "{m}"
    );
    // Closing one frees a slot.
    drop(held.pop());
    let freed = eventually(std::time::Duration::from_secs(5), || async {
        let answer = raw(
            gw.addr,
            b"GET / HTTP/1.1\r\nHost: ville.test\r\nConnection: close\r\n\r\n",
            std::time::Duration::from_secs(2),
        )
        .await;
        answer.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(freed);
}

#[tokio::test]
async fn far_over_the_limit_earns_an_explained_ban() {
    let origin = Origin::start("a").await;
    let config = format!(
        "{}\n[tenants.shield]\naddress_rate = 3\nban_rate = 6\nban_for = \"1h\"\n",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let c = h1_client();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(get(&c, gw.addr, "ville.test", "/").await.status);
    }
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&403), "{statuses:?}");
    let admin = gw.running().admin_addr;
    let got = get_with(
        &c,
        admin,
        &admin.to_string(),
        "/admin/bans",
        &[("authorization", &format!("Bearer {}", gw.token))],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    let ban = &v["bans"][0];
    assert_eq!(ban["target"], "127.0.0.1/32");
    let reason = ban["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("automatic: ")
            && reason.contains("ban_rate 6")
            && reason.contains("tenant ville"),
        "{reason}"
    );
    assert!(ban["hits"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn connections_close_after_max_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start("a").await;
    let gw = Gw::start(&format!(
        "[limits]\nmax_requests_per_connection = 3\n\n{}",
        one_tenant(&[origin.addr], "", "")
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut pending = Vec::new();
    for i in 1..=3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: ville.test\r\n\r\n")
            .await
            .unwrap();
        // Read one whole response: head, then the 12-byte body ("hello from a").
        let head_end = loop {
            if let Some(p) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed before response {i}");
            pending.extend_from_slice(&buf[..n]);
        };
        while pending.len() < head_end + 12 {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            pending.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(
            head.contains("connection: close"),
            i == 3,
            "response {i}: {head}"
        );
        pending.drain(..head_end + 12);
    }
    // After the third response the gateway closes the connection.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn slow_post_is_cut_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start("a").await;
    let gw = Gw::start(&format!(
        "[timeouts]\ndownstream_body_grace = \"300ms\"\n\n[limits]\nmin_body_rate = 1000\n\n{}",
        one_tenant(&[origin.addr], "", "")
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: ville.test\r\nContent-Length: 100000\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("trop lentement"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    // A body at a normal pace passes.
    let c = h1_client();
    let req = http::Request::post(gw.url("/upload"))
        .header("host", "ville.test")
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b'x';
            50_000
        ])))
        .unwrap();
    let got = collect(c.request(req).await.unwrap()).await;
    assert_eq!((got.status, got.body.as_str()), (200, "50000"));
}

#[tokio::test]
async fn heavy_hitters_are_listed_for_operators() {
    let origin = Origin::start("a").await;
    let config = format!(
        "{}\n[tenants.shield]\naddress_rate = 10\nprefix_rate = 10\n",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let c = h1_client();
    for _ in 0..20 {
        get(&c, gw.addr, "ville.test", "/").await;
    }
    let admin = gw.running().admin_addr;
    let auth = format!("Bearer {}", gw.token);
    let got = get_with(
        &c,
        admin,
        &admin.to_string(),
        "/admin/top",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(got.status, 200);
    let v: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(v["addresses"][0]["client"], "127.0.0.1", "{v}");
    assert_eq!(v["addresses"][0]["tenant_id"], "ville");
    assert!(v["addresses"][0]["rate"].as_f64().unwrap() >= 5.0);
    assert_eq!(v["prefixes"][0]["client"], "127.0.0.0/24", "{v}");
    // Metrics show the prefixes (never full addresses).
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_shield_top_prefix_rate{tenant=\"ville\",prefix=\"127.0.0.0/24\"}"),
        "{m}"
    );
    assert!(!m.contains("127.0.0.1\""), "{m}");
    assert_eq!(
        get(&c, admin, &admin.to_string(), "/admin/top")
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn costly_routes_use_up_the_budget_faster() {
    let origin = Origin::start("a").await;
    let config = format!(
        "{}\n[[tenants.routes]]\nname = \"recherche\"\npath_prefix = \"/recherche\"\npool = \"web\"\ncost = 5\n\n[tenants.shield]\naddress_rate = 10\n",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let c = h1_client();
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(
                get(&c, gw.addr, "ville.test", "/recherche?q=etat+civil")
                    .await
                    .status,
            );
        }
        v
    };
    // 5 + 5 = 10 fits the budget of 10 per second; the third search (15) does not.
    assert_eq!(statuses, vec![200, 200, 429, 429]);
}

#[tokio::test]
async fn tarpit_holds_over_limit_requests_before_the_429() {
    let origin = Origin::start("a").await;
    let config = format!(
        "{}\n[tenants.shield]\naddress_rate = 1\nover_limit = \"tarpit\"\ntarpit_for = \"400ms\"\n",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let c = h1_client();
    let first = std::time::Instant::now();
    assert_eq!(get(&c, gw.addr, "ville.test", "/").await.status, 200);
    assert!(first.elapsed() < std::time::Duration::from_millis(300));
    let held = std::time::Instant::now();
    let got = get(&c, gw.addr, "ville.test", "/").await;
    assert_eq!(got.status, 429);
    assert!(
        held.elapsed() >= std::time::Duration::from_millis(400),
        "{:?}",
        held.elapsed()
    );
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn legal_pages_stay_reachable_under_attack_mode() {
    let origin = Origin::start("a").await;
    let config = format!(
        "{}\n[tenants.shield]\nunder_attack = true\n",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let c = h1_client();
    for path in ["/mentions-legales", "/accessibilite", "/robots.txt"] {
        assert_eq!(
            get(&c, gw.addr, "ville.test", path).await.status,
            200,
            "{path}"
        );
    }
    assert_eq!(get(&c, gw.addr, "ville.test", "/").await.status, 403);
}

#[tokio::test]
async fn api_routes_want_a_key_are_limited_per_key_and_never_challenged() {
    let origin = Origin::start("a").await;
    // The file holds the SHA-256 of the key, never the key.
    let keys = "# partenaire transport\n2534b85a918523e962bfcd66aca18e28284889b02660197f447beb1d1b5c52c1\n";
    let config = format!(
        "{}\n[[tenants.routes]]\nname = \"api\"\npath_prefix = \"/api\"\npool = \"web\"\napi_key_header = \"X-Api-Key\"\napi_keys_file = \"keys.txt\"\napi_key_rate = 3\n[tenants.shield]\nunder_attack = true\n",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start_with_files(&config, &[("keys.txt", keys)], Default::default()).await;
    let c = h1_client();
    // No key, wrong key: 401, the origin never sees them.
    assert_eq!(
        get(&c, gw.addr, "ville.test", "/api/horaires").await.status,
        401
    );
    let wrong = [("x-api-key", "devine")];
    assert_eq!(
        get_with(&c, gw.addr, "ville.test", "/api/horaires", &wrong)
            .await
            .status,
        401
    );
    assert_eq!(origin.count(), 0);
    // A valid key goes through although the tenant is under attack (no challenge), up to
    // its rate.
    let good = [("x-api-key", "cle-application-1234567890")];
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            get_with(&c, gw.addr, "ville.test", "/api/horaires", &good)
                .await
                .status,
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // The rest of the site is challenged.
    assert_eq!(get(&c, gw.addr, "ville.test", "/").await.status, 403);
}
