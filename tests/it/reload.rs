//! Hot reload: under continuous load with zero failed requests, invalid files refused while
//! traffic continues, file-change trigger.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_request_and_bad_file_is_refused() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let gw = Gw::start(&one_tenant(&[a.addr], "", "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), gw.addr);
        workers.push(tokio::spawn(async move {
            let c = h1_client();
            while !stop.load(Ordering::Relaxed) {
                let got = get(&c, addr, "ville.test", "/").await;
                if got.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.lock().unwrap().push(got.status);
                }
            }
        }));
    }
    // Alternate the pool between a and b, ten times, under load.
    for i in 0..10 {
        let target = if i % 2 == 0 { b.addr } else { a.addr };
        let before = ok.load(Ordering::Relaxed);
        gw.write_config(&one_tenant(&[target], "", ""));
        let (status, body) = gw.admin_reload().await;
        assert_eq!(status, 200, "{body}");
        assert!(
            eventually(Duration::from_secs(5), || async {
                ok.load(Ordering::Relaxed) > before + 20
            })
            .await
        );
    }
    // An invalid file: refused with file:line, traffic continues on the previous config.
    gw.write_config(&one_tenant(&[a.addr], "balance = \"fastest\"", ""));
    let (status, body) = gw.admin_reload().await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("rempart.toml:") && body.contains("tenants[0].pools[0].balance"),
        "{body}"
    );
    let before = ok.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(5), || async {
            ok.load(Ordering::Relaxed) > before + 50
        })
        .await
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(
        failed.lock().unwrap().is_empty(),
        "failed requests: {:?}",
        failed.lock().unwrap()
    );
    assert!(a.count() > 0 && b.count() > 0);
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_config_reloads_total{result=\"ok\"} 10"),
        "{m}"
    );
    assert!(
        m.contains("rempart_config_reloads_total{result=\"refused\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn changing_the_file_reloads_it() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let gw = Gw::start_with(&one_tenant(&[a.addr], "", ""), watching_options()).await;
    let c = h1_client();
    assert_eq!(
        get(&c, gw.addr, "ville.test", "/").await.body,
        "hello from a"
    );
    gw.write_config(&one_tenant(&[b.addr], "", ""));
    let switched = eventually(Duration::from_secs(10), || async {
        get(&c, gw.addr, "ville.test", "/").await.body == "hello from b"
    })
    .await;
    assert!(switched);
}
