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
}
