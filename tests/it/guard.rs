//! The data guard end to end: a back-office application (the demo's "Portail des agents",
//! synthetic residents) behind the gateway; accounts from each source, records counted from
//! the origin's count, a JSON array and record identifiers; each budget action; suspension
//! and lift by an operator; personal data masked through chunked answers (h1 and h2), a
//! public page cut before the NIR it leaks, and a compressed answer refused.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::support::*;

const JWT_SECRET: &str = "secret of the town's single sign-on, 32+ bytes";

fn config(origin: std::net::SocketAddr) -> String {
    format!(
        r#"[guard]
max_accounts = 1000

[[tenants]]
id = "agents"
name = "Portail des agents"
hosts = ["agents.test"]

[tenants.guard]
accounts = [{{ jwt_secret_file = "jwt.key" }}, {{ basic = true }}]
groups = {{ batch = ["export-nuit"] }}
group_header = "X-Remote-Groups"

[[tenants.pools]]
name = "app"
servers = [{{ address = "{origin}" }}]

[[tenants.routes]]
path_prefix = "/"
pool = "app"

[[tenants.routes]]
name = "usagers"
path_prefix = "/api/usagers"
pool = "app"

[tenants.routes.guard]
record_header = "X-Record-Count"
json_records = "data"
record_ids = ["/api/usagers/{{id}}"]
slow_delay = "400ms"
budgets = [
  {{ records = 10, per = "1h", action = "log" }},
  {{ records = 20, per = "1h", action = "alert" }},
  {{ records = 60, per = "1h", action = "slow" }},
  {{ records = 100, per = "1h", action = "block" }},
  {{ records = 1000, per = "1h", action = "block", group = "batch" }},
  {{ records = 10, per = "1h", action = "block", group = "stagiaires" }},
]

[[tenants.routes]]
name = "export"
path_prefix = "/api/export.csv"
pool = "app"

[tenants.routes.guard]
count_persons = true
pii_mask = ["nir", "iban"]
budgets = [{{ records = 100000, per = "1h", action = "alert" }}]

[[tenants.routes]]
name = "compresse"
path_prefix = "/api/compresse"
pool = "app"

[tenants.routes.guard]
pii_mask = ["nir"]

[[tenants.routes]]
name = "brotli"
path_prefix = "/api/brotli"
pool = "app"

[tenants.routes.guard]
pii_mask = ["nir"]

[[tenants.routes]]
name = "debug"
path_prefix = "/debug"
pool = "app"

[tenants.routes.guard]
pii_block = ["nir", "iban"]

[[tenants]]
id = "social"
name = "Action sociale"
hosts = ["social.test"]

[tenants.guard]
origin_account_header = "X-Agent"

[[tenants.pools]]
name = "app"
servers = [{{ address = "{origin}" }}]

[[tenants.routes]]
path_prefix = "/"
pool = "app"

[[tenants.routes]]
name = "usagers"
path_prefix = "/api/usagers"
pool = "app"

[tenants.routes.guard]
json_records = "data"
budgets = [{{ records = 30, per = "1h", action = "suspend" }}]

[[tenants.routes]]
name = "export"
path_prefix = "/api/export.csv"
pool = "app"

[tenants.routes.guard]
count_persons = true
budgets = [{{ records = 100000, per = "1h", action = "log" }}]
"#
    )
}

async fn start() -> Gw {
    let origin = rempart::demo::backoffice::start().await.unwrap();
    Gw::start_with_files(&config(origin), &[("jwt.key", JWT_SECRET)], quiet_options()).await
}

fn basic(user: &str) -> String {
    let pair = format!("{user}:mot-de-passe");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn jwt(secret: &str, sub: &str) -> String {
    let signed = format!(
        "{}.{}",
        b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64url(format!(r#"{{"sub":"{sub}"}}"#).as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, signed.as_bytes());
    format!("Bearer {signed}.{}", b64url(tag.as_ref()))
}

async fn page(gw: &Gw, host: &str, path: &str, auth: &str) -> Got {
    get_with(
        &h1_client(),
        gw.addr,
        host,
        path,
        &[("authorization", auth)],
    )
    .await
}

async fn accounts(gw: &Gw, tenant: &str) -> serde_json::Value {
    let got = admin_call(
        gw,
        "GET",
        &format!("/admin/guard/accounts?tenant={tenant}"),
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let v: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    v["tenants"][0]["accounts"].clone()
}

fn row<'a>(accounts: &'a serde_json::Value, label: &str) -> &'a serde_json::Value {
    accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["label"] == label)
        .unwrap_or_else(|| panic!("no account {label} in {accounts}"))
}

#[tokio::test]
async fn a_bulk_pull_meets_each_action_in_turn_and_is_stopped_at_its_budget_plus_one_page() {
    let gw = start().await;
    let pirate = basic("pirate");
    let mut served = 0;
    let mut slowed = Vec::new();
    let refused = loop {
        let started = Instant::now();
        let got = page(
            &gw,
            "agents.test",
            &format!("/api/usagers?page={}&per_page=20", served + 1),
            &pirate,
        )
        .await;
        if got.status != 200 {
            break got;
        }
        // The origin's count and agent fields never reach the client.
        assert!(got.headers.get("x-record-count").is_none());
        assert!(
            got.body.contains("\"nir\""),
            "records are served unmasked here"
        );
        slowed.push(started.elapsed());
        served += 1;
        assert!(served <= 10, "never stopped");
    };
    // 20 records a page: page 6 takes the account to 120, over the 100 of its block budget;
    // the next request is refused.
    assert_eq!(served, 6);
    assert_eq!(refused.status, 403);
    assert!(
        refused.body.contains("Quota de consultation atteint"),
        "{}",
        refused.body
    );
    // Over the slow budget (60) after page 4: pages 5 and 6 waited.
    assert!(slowed[4] >= Duration::from_millis(400), "{slowed:?}");
    assert!(slowed[5] >= Duration::from_millis(400), "{slowed:?}");
    // Another adviser keeps working, with her own budget.
    let marie = page(
        &gw,
        "agents.test",
        "/api/usagers?page=3&per_page=20",
        &basic("marie"),
    )
    .await;
    assert_eq!(marie.status, 200);
    let m = crate::health::admin_metrics(&gw).await;
    // Marie's 20 records crossed the log budget (10) too.
    for (action, n) in [("log", 2), ("alert", 1), ("slow", 1), ("block", 1)] {
        let line =
            format!("rempart_guard_actions_total{{tenant=\"agents\",action=\"{action}\"}} {n}");
        assert!(m.contains(&line), "{line}\n{m}");
    }
    assert!(
        m.contains("rempart_guard_actions_total{tenant=\"agents\",action=\"refused_quota\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("rempart_guard_records_total{tenant=\"agents\",route=\"usagers\"} 140"),
        "{m}"
    );
    let list = accounts(&gw, "agents").await;
    let p = row(&list, "pirate");
    assert_eq!(p["who"], "basic");
    assert_eq!(p["records"], 120);
    assert_eq!(p["action"]["action"], "block");
    assert_eq!(p["prefixes"][0]["prefix"], "127.0.0.0/24");
    assert_eq!(row(&list, "marie")["records"], 20);
    // The account names are hashes; an operator finds one by its name.
    let id = p["account"].as_str().unwrap().to_owned();
    let by_name = admin_call(
        &gw,
        "GET",
        "/admin/guard/accounts/agents/-?name=pirate&source=basic",
        None,
    )
    .await;
    assert_eq!(by_name.status, 200, "{}", by_name.body);
    assert!(by_name.body.contains(&id), "{}", by_name.body);
}

#[tokio::test]
async fn record_identifiers_count_one_record_each_and_distinct_ones_are_estimated() {
    let gw = start().await;
    let who = basic("enumerateur");
    for id in 1..=30 {
        let got = page(&gw, "agents.test", &format!("/api/usagers/{id}"), &who).await;
        assert_eq!(got.status, 200);
    }
    // The same records again: counted as taken, not as new identifiers.
    for id in 1..=5 {
        page(&gw, "agents.test", &format!("/api/usagers/{id}"), &who).await;
    }
    let list = accounts(&gw, "agents").await;
    let a = row(&list, "enumerateur");
    assert_eq!(a["records"], 35);
    // Few identifiers are counted exactly (many are estimated, within 6.5 %).
    assert_eq!(a["distinct_ids"], 30, "{a}");
}

#[tokio::test]
async fn a_verified_token_names_its_account_and_a_forged_one_is_never_trusted() {
    let gw = start().await;
    let alice = jwt(JWT_SECRET, "alice");
    let got = page(
        &gw,
        "agents.test",
        "/api/usagers?page=1&per_page=20",
        &alice,
    )
    .await;
    assert_eq!(got.status, 200);
    // A token signed with another key, claiming to be alice: the request is served (the
    // application decides who logs in), but counted apart, never as alice.
    let forged = jwt(
        "not the town's secret, but long enough to look real",
        "alice",
    );
    for p in 1..=3 {
        let got = page(
            &gw,
            "agents.test",
            &format!("/api/usagers?page={p}&per_page=10"),
            &forged,
        )
        .await;
        assert_eq!(got.status, 200);
    }
    let list = accounts(&gw, "agents").await;
    let a = row(&list, "alice");
    assert_eq!(
        (a["who"].as_str(), a["records"].as_u64()),
        (Some("jwt"), Some(20))
    );
    let unverified: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["who"] == "unverified")
        .collect();
    assert_eq!(unverified.len(), 1, "{list}");
    assert_eq!(unverified[0]["records"], 30);
    assert!(
        unverified[0]["label"].is_null(),
        "an unverified claim is no name"
    );
}

#[tokio::test]
async fn a_suspended_account_is_refused_on_every_guarded_route_until_an_operator_lifts_it() {
    let gw = start().await;
    // Tenant "social" reads the account from the application's answer (`X-Agent`).
    let paul = basic("paul");
    let first = page(&gw, "social.test", "/api/usagers?page=1&per_page=20", &paul).await;
    assert_eq!(first.status, 200);
    assert!(
        first.headers.get("x-agent").is_none(),
        "the origin's account field is stripped"
    );
    let second = page(&gw, "social.test", "/api/usagers?page=2&per_page=20", &paul).await;
    assert_eq!(
        second.status, 200,
        "the answer that crosses the budget is still sent"
    );
    // 40 records: over the suspend budget (30). Refused everywhere the guard watches...
    let refused = page(&gw, "social.test", "/api/usagers?page=3&per_page=20", &paul).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("Compte suspendu"), "{}", refused.body);
    let export = page(&gw, "social.test", "/api/export.csv?n=5", &paul).await;
    assert_eq!(export.status, 403);
    // ...but not on the public pages, nor for another agent.
    assert_eq!(
        page(&gw, "social.test", "/healthz", &paul).await.status,
        200
    );
    assert_eq!(
        page(
            &gw,
            "social.test",
            "/api/usagers?page=1&per_page=5",
            &basic("lea")
        )
        .await
        .status,
        200
    );
    let list = accounts(&gw, "social").await;
    let p = row(&list, "paul");
    assert_eq!(
        (p["who"].as_str(), p["suspended"].as_bool()),
        (Some("origin"), Some(true))
    );
    let id = p["account"].as_str().unwrap();
    let lifted = admin_call(
        &gw,
        "POST",
        &format!("/admin/guard/accounts/social/{id}/lift"),
        None,
    )
    .await;
    assert_eq!(lifted.status, 200, "{}", lifted.body);
    assert_eq!(
        page(&gw, "social.test", "/api/usagers?page=3&per_page=20", &paul)
            .await
            .status,
        200
    );
    let again = admin_call(
        &gw,
        "POST",
        &format!("/admin/guard/accounts/social/{id}/lift"),
        None,
    )
    .await;
    assert_eq!(again.status, 404, "not suspended any more");
    // An operator may suspend an account by its name.
    let s = admin_call(
        &gw,
        "POST",
        "/admin/guard/accounts/social/-/suspend?name=lea&source=origin",
        None,
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(
        page(
            &gw,
            "social.test",
            "/api/usagers?page=1&per_page=5",
            &basic("lea")
        )
        .await
        .status,
        403
    );
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_guard_actions_total{tenant=\"social\",action=\"suspend\"} 1"),
        "{m}"
    );
}

/// The CSV export with NIR and IBAN masked: same length, no NIR or IBAN left, phones and
/// e-mails untouched.
fn assert_masked(body: &[u8], n: usize, original: &[u8]) {
    assert_eq!(body.len(), original.len());
    let counts = rempart::guard::scan::count(body);
    assert_eq!(
        counts,
        [0, 0, 0, n as u64, n as u64, 0],
        "{}",
        String::from_utf8_lossy(&body[..300])
    );
    let text = String::from_utf8_lossy(body);
    assert!(text.contains("X XX XX XX XXX XXX XX"), "{}", &text[..300]);
    assert!(
        text.contains("XXXX XXXX XXXX XXXX XXXX XXXX XXX"),
        "{}",
        &text[..300]
    );
    assert_eq!(text.lines().count(), n + 1);
}

#[tokio::test]
async fn personal_data_is_masked_in_answers_streamed_in_small_pieces_on_h1_and_h2() {
    let origin = rempart::demo::backoffice::start().await.unwrap();
    let gw =
        Gw::start_with_files(&config(origin), &[("jwt.key", JWT_SECRET)], quiet_options()).await;
    let original = get(&h1_client(), origin, "x", "/api/export.csv?n=200")
        .await
        .body;
    assert_eq!(
        rempart::guard::scan::count(original.as_bytes()),
        [200, 200, 0, 200, 200, 0]
    );
    let h1 = page(&gw, "agents.test", "/api/export.csv?n=200", &basic("marie")).await;
    assert_eq!(h1.status, 200);
    assert!(h1.headers.get("content-length").is_none());
    assert_masked(h1.body.as_bytes(), 200, original.as_bytes());
    let mut sender = h2c::<Full<Bytes>>(gw.addr).await;
    let req = http::Request::get("http://agents.test/api/export.csv?n=200")
        .version(http::Version::HTTP_2)
        .header("authorization", basic("marie"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_masked(&body, 200, original.as_bytes());
    // The persons the answers showed count as records (one NIR, one IBAN... per person).
    let list = accounts(&gw, "agents").await;
    let m = row(&list, "marie");
    assert_eq!(m["records"], 400);
    assert_eq!(m["pii"]["nir"], 400);
    let metrics = crate::health::admin_metrics(&gw).await;
    assert!(
        metrics.contains(
            "rempart_guard_pii_items_total{tenant=\"agents\",route=\"export\",kind=\"iban\"} 400"
        ),
        "{metrics}"
    );
    // The same answer on a route that only counts: unchanged, length kept.
    let social = page(&gw, "social.test", "/api/export.csv?n=20", &basic("lea")).await;
    assert_eq!(
        rempart::guard::scan::count(social.body.as_bytes()),
        [20, 20, 0, 20, 20, 0]
    );
}

#[tokio::test]
async fn a_page_that_leaks_a_nir_is_cut_before_it_and_a_compressed_answer_is_refused() {
    let gw = start().await;
    let nir = rempart::demo::backoffice::person(42).nir;
    let reply = raw(
        gw.addr,
        b"GET /debug HTTP/1.1\r\nHost: agents.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(!reply.contains(&nir), "{reply}");
    assert!(!reply.ends_with("</pre>"), "the answer is cut: {reply}");
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_guard_actions_total{tenant=\"agents\",action=\"cut\"} 1"),
        "{m}"
    );
    // The watch hears of it within seconds: the tenant is orange, the guard as evidence.
    let watched = eventually(Duration::from_secs(10), || async {
        let got = admin_call(&gw, "GET", "/admin/watch", None).await;
        let v: serde_json::Value = serde_json::from_str(&got.body).unwrap_or_default();
        v["tenants"].as_array().is_some_and(|t| {
            t.iter().any(|x| {
                x["tenant"] == "agents"
                    && x["level"] == "orange"
                    && x["evidence"].to_string().contains("guard_breaches")
            })
        })
    })
    .await;
    assert!(
        watched,
        "{}",
        admin_call(&gw, "GET", "/admin/watch", None).await.body
    );
    // On HTTP/2 the stream is reset before the NIR.
    let mut sender = h2c::<Full<Bytes>>(gw.addr).await;
    let req = http::Request::get("http://agents.test/debug")
        .version(http::Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut seen = Vec::new();
    let mut failed = false;
    match sender.send_request(req).await {
        // Reset before the head was sent.
        Err(_) => failed = true,
        Ok(resp) => {
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => seen.extend_from_slice(f.data_ref().map_or(&b""[..], |d| &d[..])),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
        }
    }
    assert!(failed, "the stream must not end normally");
    assert!(!String::from_utf8_lossy(&seen).contains(&nir));
    // An application that gzips whatever it is asked: decoded to be read, masked, and sent
    // on uncompressed.
    let got = page(&gw, "agents.test", "/api/compresse", &basic("marie")).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.headers.get("content-encoding").is_none());
    let records: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(
        records["data"][0]["nir"], "X XX XX XX XXX XXX XX",
        "{}",
        got.body
    );
    assert_eq!(
        rempart::guard::scan::count(got.body.as_bytes()),
        [0, 3, 0, 3, 3, 0]
    );
    // A coding it cannot decode: refused rather than passed unread.
    let got = page(&gw, "agents.test", "/api/brotli", &basic("marie")).await;
    assert_eq!(got.status, 502, "{}", got.body);
}

/// `rempart guard ARGS`: exit code and output.
async fn guard_cli(args: &[&str]) -> (i32, String) {
    let mut all = vec!["guard"];
    all.extend_from_slice(args);
    rempart_cli(&all).await
}

#[tokio::test]
async fn the_journal_keeps_suspensions_across_a_restart_and_the_report_gives_the_figures_sent() {
    // An admin port the CLI can find in the configuration.
    let admin_port = closed_port().await.port();
    let origin = rempart::demo::backoffice::start().await.unwrap();
    let text = format!(
        "[admin]\naddress = \"127.0.0.1:{admin_port}\"\ntoken_file = \"admin.token\"\n\n{}",
        config(origin)
    );
    let mut gw = Gw::start_with_files(&text, &[("jwt.key", JWT_SECRET)], quiet_options()).await;
    let config = gw.path.display().to_string();
    // Paul (named by the application) pulls 40 records with their persons' data, then is
    // suspended by his budget; Léa exports 20 residents, 5 of them twice.
    let paul = basic("paul");
    for p in 1..=2 {
        assert_eq!(
            page(
                &gw,
                "social.test",
                &format!("/api/usagers?page={p}&per_page=20"),
                &paul
            )
            .await
            .status,
            200
        );
    }
    assert_eq!(
        page(&gw, "social.test", "/api/usagers?page=3&per_page=20", &paul)
            .await
            .status,
        403
    );
    let lea = basic("lea");
    assert_eq!(
        page(&gw, "social.test", "/api/export.csv?n=20", &lea)
            .await
            .status,
        200
    );
    assert_eq!(
        page(&gw, "social.test", "/api/export.csv?n=5", &lea)
            .await
            .status,
        200
    );
    let before = accounts(&gw, "social").await;
    let paul_id = row(&before, "paul")["account"].as_str().unwrap().to_owned();
    gw.restart().await;
    // Same identifier, still suspended, after the restart.
    assert_eq!(
        page(&gw, "social.test", "/api/usagers?page=1&per_page=5", &paul)
            .await
            .status,
        403
    );
    let after = admin_call(&gw, "GET", "/admin/guard/accounts?tenant=social", None).await;
    let after: serde_json::Value = serde_json::from_str(&after.body).unwrap();
    assert_eq!(
        after["tenants"][0]["suspended"],
        serde_json::json!([paul_id]),
        "{after}"
    );
    // The report, by name (the journal keeps the key of the hashes), in JSON and Markdown.
    let (code, out) = guard_cli(&[
        "report", "-c", &config, "--tenant", "social", "--source", "origin", "--json", "lea",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["records"], 25, "{r}");
    assert_eq!(r["answers"], 2);
    // Twenty residents, five of them exported twice: distinct counts are estimates, within
    // the error the report states (13 %, two standard errors).
    let within = |v: &serde_json::Value| (18..=22).contains(&v.as_u64().unwrap());
    assert!(within(&r["distinct_persons"]), "{r}");
    assert_eq!(r["distinct_persons_error"], 0.13);
    assert_eq!(r["kinds"]["nir"]["items"], 25);
    assert!(within(&r["kinds"]["nir"]["distinct"]), "{r}");
    assert_eq!(r["kinds"]["card"]["items"], 0);
    assert_eq!(r["routes"][0]["route"], "export");
    assert_eq!(r["prefixes"][0], "127.0.0.0/24");
    assert_eq!(r["suspended"], false);
    let (code, md) = guard_cli(&["report", "-c", &config, "--tenant", "social", &paul_id]).await;
    assert_eq!(code, 0, "{md}");
    assert!(md.contains("Records taken: 40."), "{md}");
    assert!(md.contains("Suspended now: yes"), "{md}");
    assert!(md.contains("| usagers | 40 |"), "{md}");
    assert!(md.contains("suspend 40 records on usagers"), "{md}");
    // The admin CLI lifts it, by name.
    let (code, out) = guard_cli(&[
        "lift", "-c", &config, "--source", "origin", "social", "paul",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        page(&gw, "social.test", "/api/usagers?page=1&per_page=5", &paul)
            .await
            .status,
        200
    );
    let (code, out) = guard_cli(&["accounts", "-c", &config, "--tenant", "social"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\torigin\tpaul\t"), "{out}");
}

#[tokio::test]
async fn the_demo_back_office_lets_an_agent_work_and_stops_a_bulk_pull() {
    let site = Origin::start("site").await;
    let backoffice = rempart::demo::backoffice::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), TOKEN).unwrap();
    let path = dir.path().join("rempart.toml");
    std::fs::write(&path, rempart::demo::config_text(site.addr, backoffice, 0)).unwrap();
    let running = rempart::app::start(&path, quiet_options()).await.unwrap();
    let addr = running.listen_addrs[0];
    let host = "agents.saint-exemple.localhost";
    let c = h1_client();
    let get_page = |n: u64| {
        let c = c.clone();
        async move {
            get_with(
                &c,
                addr,
                host,
                &format!("/api/usagers?page={n}&per_page=50"),
                &[("authorization", &basic("agent"))],
            )
            .await
        }
    };
    let mut served = 0;
    while get_page(served + 1).await.status == 200 {
        served += 1;
        assert!(served < 20, "never stopped");
    }
    // 300 records an hour: the seventh page of 50 crosses it, the eighth is refused.
    assert_eq!(served, 7);
    let export = get_with(
        &c,
        addr,
        host,
        "/api/export.csv?n=10",
        &[("authorization", &basic("collegue"))],
    )
    .await;
    assert_eq!(export.status, 200);
    assert_eq!(
        rempart::guard::scan::count(export.body.as_bytes())[..2],
        [0, 0]
    );
    running.shutdown().await;
}

fn sources_config(origin: std::net::SocketAddr, trusted: bool) -> String {
    let forwarding = if trusted {
        "[forwarding]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n"
    } else {
        ""
    };
    format!(
        r#"{forwarding}[[tenants]]
id = "ecoles"
name = "Inscriptions scolaires"
hosts = ["ecoles.test"]

[tenants.guard]
accounts = [{{ cookie = "SESSION" }}, {{ header = "X-Remote-User" }}]
group_header = "X-Remote-Groups"
# Working hours that are never now (one minute a week, on a day that is not today).
office_hours = "{day} 03:00-03:01"

[[tenants.pools]]
name = "app"
servers = [{{ address = "{origin}" }}]

[[tenants.routes]]
path_prefix = "/"
pool = "app"

[tenants.routes.guard]
json_records = "data"
budgets = [
  {{ records = 1000, per = "1h", action = "log" }},
  {{ records = 4, per = "1h", action = "block", group = "stagiaires" }},
]
"#,
        // Not today, so that the test never runs inside the window.
        day = if chrono_weekday_is_monday() {
            "tue"
        } else {
            "mon"
        }
    )
}

/// Whether today (UTC, near enough: the window is one minute) is a Monday.
fn chrono_weekday_is_monday() -> bool {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    (days + 3) % 7 == 0
}

#[tokio::test]
async fn a_session_cookie_and_a_trusted_proxys_header_name_accounts() {
    let origin = rempart::demo::backoffice::start().await.unwrap();
    let gw = Gw::start(&sources_config(origin, true)).await;
    let c = h1_client();
    let path = "/api/usagers?page=1&per_page=4";
    let cookie = get_with(
        &c,
        gw.addr,
        "ecoles.test",
        path,
        &[("cookie", "theme=clair; SESSION=f81d4fae7dec11d0")],
    )
    .await;
    assert_eq!(cookie.status, 200);
    let header = get_with(
        &c,
        gw.addr,
        "ecoles.test",
        path,
        &[("x-remote-user", "m.durand")],
    )
    .await;
    assert_eq!(header.status, 200);
    // The cookie comes first when both are there.
    get_with(
        &c,
        gw.addr,
        "ecoles.test",
        path,
        &[
            ("cookie", "SESSION=f81d4fae7dec11d0"),
            ("x-remote-user", "m.durand"),
        ],
    )
    .await;
    let list = accounts(&gw, "ecoles").await;
    let rows = list.as_array().unwrap();
    let by_cookie = rows.iter().find(|a| a["who"] == "cookie").unwrap();
    // A session is a secret: no name is ever kept for it.
    assert!(by_cookie["label"].is_null(), "{list}");
    assert_eq!(by_cookie["records"], 8);
    let by_header = row(&list, "m.durand");
    assert_eq!(
        (by_header["who"].as_str(), by_header["records"].as_u64()),
        (Some("header"), Some(4))
    );
    // Outside working hours: flagged, once per session.
    assert_eq!(by_header["flags"][0]["flag"], "outside_hours", "{list}");
    assert_eq!(by_cookie["flags"].as_array().unwrap().len(), 1, "{list}");
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_guard_actions_total{tenant=\"ecoles\",action=\"outside_hours\"} 2"),
        "{m}"
    );
    // The single sign-on names a trainee's group: the group's budget (4 records) applies.
    let trainee = [
        ("x-remote-user", "l.martin"),
        ("x-remote-groups", "agents, stagiaires"),
    ];
    assert_eq!(
        get_with(&c, gw.addr, "ecoles.test", path, &trainee)
            .await
            .status,
        200
    );
    assert_eq!(
        get_with(&c, gw.addr, "ecoles.test", path, &trainee)
            .await
            .status,
        200
    );
    assert_eq!(
        get_with(&c, gw.addr, "ecoles.test", path, &trainee)
            .await
            .status,
        403
    );

    // Without trusted proxies the header is anybody's claim: not read.
    let untrusted = Gw::start(&sources_config(origin, false)).await;
    get_with(
        &c,
        untrusted.addr,
        "ecoles.test",
        path,
        &[("x-remote-user", "m.durand")],
    )
    .await;
    let list = accounts(&untrusted, "ecoles").await;
    assert_eq!(list[0]["who"], "anonymous", "{list}");
    assert!(list[0]["label"].is_null());
}

#[tokio::test]
async fn an_account_group_has_its_own_budgets() {
    let gw = start().await;
    // The nightly export account (a group by its name) may take 300 records an hour.
    let batch = basic("export-nuit");
    for p in 1..=15 {
        let got = page(
            &gw,
            "agents.test",
            &format!("/api/usagers?page={p}&per_page=20"),
            &batch,
        )
        .await;
        assert_eq!(got.status, 200, "page {p}");
    }
    // A trainee (a group named by the single sign-on's field, from a trusted proxy) may take
    // 10: the page that crosses it is sent, the next refused. Without trusted proxies in this
    // configuration the field is not believed: the same agent gets the route's own budgets.
    let trainee = basic("stagiaire");
    let c = h1_client();
    let ask = |n: u32| {
        let c = c.clone();
        let (addr, trainee) = (gw.addr, trainee.clone());
        async move {
            get_with(
                &c,
                addr,
                "agents.test",
                &format!("/api/usagers?page={n}&per_page=20"),
                &[
                    ("authorization", &trainee),
                    ("x-remote-groups", "stagiaires"),
                ],
            )
            .await
            .status
        }
    };
    assert_eq!(ask(1).await, 200);
    assert_eq!(
        ask(2).await,
        200,
        "not a trusted proxy: the route's own budget (100)"
    );
    let list = accounts(&gw, "agents").await;
    assert_eq!(row(&list, "export-nuit")["records"], 300);
    assert!(row(&list, "export-nuit")["action"].is_null(), "{list}");
    let budgets = admin_call(&gw, "GET", "/admin/guard/budgets", None).await;
    assert!(
        budgets.body.contains("\"group\":\"batch\""),
        "{}",
        budgets.body
    );
}
