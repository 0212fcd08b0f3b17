//! A config cannot empty the gateway: an empty or half-written file, or one that loses the
//! admin token, is refused at reload (by the admin API or a file change) and the running
//! configuration keeps serving; an editor writing the file in place in several steps ends
//! with the complete file loaded, never the cut one.

use std::io::Write;
use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn empty_cut_or_tokenless_configs_are_refused_and_the_old_one_serves() {
    let a = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(&[a.addr], "", "")).await;
    let c = h1_client();
    let attempts: [(&str, String, &str); 3] = [
        ("empty", String::new(), "no tenant"),
        (
            "listeners only",
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n".to_owned(),
            "no tenant",
        ),
        (
            "admin without a token",
            format!(
                "[admin]\naddress = \"127.0.0.1:0\"\n\n{}",
                one_tenant(&[a.addr], "", "")
            ),
            "admin token would disappear",
        ),
    ];
    for (what, text, why) in attempts {
        let raw = if what == "admin without a token" {
            with_defaults(&text)
        } else {
            text
        };
        std::fs::write(&gw.path, raw).unwrap();
        let (status, body) = gw.admin_reload().await;
        assert_eq!(status, 422, "{what}: {body}");
        assert!(body.contains(why), "{what}: {body}");
        assert_eq!(
            get(&c, gw.addr, "ville.test", "/").await.status,
            200,
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_file_written_in_place_in_steps_is_loaded_whole() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let gw = Gw::start_with(&one_tenant(&[a.addr], "", ""), watching_options()).await;
    let c = h1_client();
    let full = with_defaults(&one_tenant(&[b.addr], "", ""));
    // Cut where what was written so far is valid on its own: listener and admin, no tenant
    // (the window in which an editor writing in place would empty the gateway).
    let (first, rest) = full.split_at(full.find("[[tenants]]").unwrap());
    // In place: truncate, write the first part, pause (as a slow editor or a full disk
    // would), finish.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&gw.path)
        .unwrap();
    f.write_all(first.as_bytes()).unwrap();
    f.flush().unwrap();
    // While the file is cut, every request is still served by the running configuration.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(get(&c, gw.addr, "ville.test", "/").await.status, 200);
    }
    f.write_all(rest.as_bytes()).unwrap();
    f.flush().unwrap();
    drop(f);
    let switched = eventually(Duration::from_secs(10), || async {
        get(&c, gw.addr, "ville.test", "/").await.body == "hello from b"
    })
    .await;
    assert!(switched);
}
