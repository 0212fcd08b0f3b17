//! The watch on a running gateway: a burst of requests far above what the tenant usually sees
//! raises its vigilance level within seconds, shown in `rempart_watch_level`.

use std::time::Duration;

use crate::support::*;

fn level_of(metrics: &str, tenant: &str) -> Option<u32> {
    let line = format!("rempart_watch_level{{tenant=\"{tenant}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_burst_far_above_the_usual_raises_the_level() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[origin.addr], "", "")).await;
    // A quiet tenant (nothing learnt yet: 5 requests/s are usual) at green.
    let first = crate::health::admin_metrics(&gw).await;
    assert_ne!(level_of(&first, "ville"), Some(3), "{first}");
    // 600 requests as fast as they are served: 60/s over the 10 s window at least, twelve
    // times the usual rate, orange or more.
    let c = h1_client();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let c = c.clone();
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            for i in 0..75 {
                let got = get(&c, addr, "ville.test", &format!("/p-{t}-{i}")).await;
                assert_eq!(got.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let raised = eventually(Duration::from_secs(15), || async {
        let m = crate::health::admin_metrics(&gw).await;
        level_of(&m, "ville").is_some_and(|l| l >= 2)
    })
    .await;
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        raised,
        "{}",
        m.lines()
            .filter(|l| l.contains("watch"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Operators see why.
    let status = admin_call(&gw, "GET", "/admin/watch", None).await;
    assert_eq!(status.status, 200);
    let v: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    let ville = &v["tenants"][0];
    assert_eq!(ville["tenant"], "ville");
    assert!(
        ville["evidence"][0]
            .as_str()
            .unwrap()
            .starts_with("request_rate"),
        "{v}"
    );
    // An operator sets rouge for an hour, with a reason.
    let set = admin_call(
        &gw,
        "POST",
        "/admin/watch/level",
        Some(r#"{"tenant": "ville", "level": "rouge", "for": "1h", "reason": "exercice"}"#),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let m = crate::health::admin_metrics(&gw).await;
    assert_eq!(level_of(&m, "ville"), Some(3));
    let v: serde_json::Value =
        serde_json::from_str(&admin_call(&gw, "GET", "/admin/watch", None).await.body).unwrap();
    assert_eq!(v["tenants"][0]["level"], "rouge");
    assert!(v["tenants"][0]["override_until_ms"].as_u64().is_some());
    for bad in [
        r#"{"tenant": "ville", "level": "violet", "for": "1h", "reason": "x"}"#,
        r#"{"tenant": "ville", "level": "rouge", "for": "1h", "reason": " "}"#,
        r#"{"tenant": "ville", "level": "rouge", "for": "0s", "reason": "x"}"#,
    ] {
        assert_eq!(
            admin_call(&gw, "POST", "/admin/watch/level", Some(bad))
                .await
                .status,
            400,
            "{bad}"
        );
    }
    let unknown = r#"{"tenant": "autre", "level": "rouge", "for": "1h", "reason": "x"}"#;
    assert_eq!(
        admin_call(&gw, "POST", "/admin/watch/level", Some(unknown))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn operators_set_and_read_levels_with_the_cli() {
    let origin = Origin::start("a").await;
    let admin_port = closed_port().await.port();
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:{admin_port}\"\ntoken_file = \"admin.token\"\n\n{}",
        one_tenant(&[origin.addr], "", "")
    );
    let gw = Gw::start(&config).await;
    let config = gw.path.display().to_string();
    let cli = |args: &[&str]| {
        let mut all = vec!["watch", "--config", config.as_str()];
        all.extend_from_slice(args);
        let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            rempart_cli(&all).await
        }
    };
    // The tenant is watched from its first second of signals.
    let set = eventually(Duration::from_secs(10), || async {
        let args = [
            "level", "ville", "orange", "--for", "10m", "--reason", "exercice",
        ];
        cli(&args).await.0 == 0
    })
    .await;
    assert!(set);
    let (code, out) = cli(&["status"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ville\torange (set by an operator)"), "{out}");
    let (code, out) = cli(&["level", "ville", "violet", "--for", "1h", "--reason", "x"]).await;
    assert_eq!(code, 2, "{out}");
}
