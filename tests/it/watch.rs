//! The watch on a running gateway: a burst of requests far above what the tenant usually sees
//! raises its vigilance level within seconds (`rempart_watch_level`); failed logins on a
//! login route are credential stuffing; the playbook's defences follow the level (challenge,
//! maintenance of non-essential routes, a notice drafted for residents) and are undone when
//! it falls; the security incident keeps the timeline; alerts reach a real SMTP server, a
//! signed webhook, a Matrix room and a syslog collector, are escalated when nobody takes the
//! incident, and survive a restart; operators work incidents with the CLI and follow the
//! event stream.

use std::time::Duration;

use crate::support::*;

fn level_of(metrics: &str, name: &str) -> Option<u32> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

fn tenant_level(metrics: &str, tenant: &str) -> Option<u32> {
    level_of(
        metrics,
        &format!("rempart_watch_level{{tenant=\"{tenant}\"}} "),
    )
}

/// Learns nothing before acting on rates (a test has no history), incidents from orange.
const WATCH_NOW: &str = "\n[watch]\nlearning = \"0s\"\n";

fn tenant_of<'a>(v: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == id)
        .unwrap_or_else(|| panic!("no tenant {id} in {v}"))
}

async fn watch_status(gw: &Gw) -> serde_json::Value {
    let got = admin_call(gw, "GET", "/admin/watch", None).await;
    assert_eq!(got.status, 200, "{}", got.body);
    serde_json::from_str(&got.body).unwrap()
}

/// Sets `tenant`'s level as an operator (once the tenant is watched: its first second).
async fn set_level(gw: &Gw, tenant: &str, level: &str, duration: &str) {
    let body = format!(
        r#"{{"tenant": "{tenant}", "level": "{level}", "for": "{duration}", "reason": "exercice"}}"#
    );
    let set = eventually(Duration::from_secs(10), || async {
        admin_call(gw, "POST", "/admin/watch/level", Some(&body))
            .await
            .status
            == 200
    })
    .await;
    assert!(set, "{tenant} never watched");
}

#[tokio::test]
async fn a_burst_far_above_the_usual_raises_the_level() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&(one_tenant(&[origin.addr], "", "") + WATCH_NOW)).await;
    // A quiet tenant (nothing learnt yet: 5 requests/s are usual) at green.
    let first = crate::health::admin_metrics(&gw).await;
    assert_ne!(tenant_level(&first, "ville"), Some(3), "{first}");
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
                assert!(
                    got.status == 200 || got.status == 403,
                    "served, or challenged once orange: {}",
                    got.status
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let raised = eventually(Duration::from_secs(15), || async {
        let m = crate::health::admin_metrics(&gw).await;
        tenant_level(&m, "ville").is_some_and(|l| l >= 2)
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
    assert!(
        level_of(&m, "rempart_watch_global_level ").is_some_and(|l| l >= 2),
        "{m}"
    );
    let rate = m
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"rempart_watch_signal{tenant="ville",signal="request_rate"} "#)
        })
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(rate.is_some_and(|r| r > 5.0), "{m}");
    // Operators see why, and the incident it opened.
    let v = watch_status(&gw).await;
    let ville = tenant_of(&v, "ville");
    assert!(
        ville["evidence"][0]
            .as_str()
            .unwrap()
            .starts_with("request_rate"),
        "{v}"
    );
    assert_eq!(ville["incident"], 1, "{v}");
    assert!(v["global"] == "orange" || v["global"] == "rouge", "{v}");
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
    assert_eq!(tenant_level(&m, "ville"), Some(3));
    let v = watch_status(&gw).await;
    assert_eq!(tenant_of(&v, "ville")["level"], "rouge");
    assert!(tenant_of(&v, "ville")["override_until_ms"]
        .as_u64()
        .is_some());
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
async fn failed_logins_on_a_login_route_are_credential_stuffing() {
    let origin = Origin::start("a").await;
    let config = format!(
        r#"[[tenants]]
id = "ville"
name = "Ville de Test"
hosts = ["ville.test"]

[[tenants.pools]]
name = "web"
servers = [{{ address = "{}" }}]

[[tenants.routes]]
name = "connexion"
path_prefix = "/status"
pool = "web"
login = true

[[tenants.routes]]
path_prefix = "/"
pool = "web"
{WATCH_NOW}"#,
        origin.addr
    );
    let gw = Gw::start(&config).await;
    let c = h1_client();
    // Refused passwords, three a second for a few seconds: well under any rate rule, but
    // a stuffing pattern.
    let stuffed = eventually(Duration::from_secs(20), || async {
        for _ in 0..3 {
            assert_eq!(
                get(&c, gw.addr, "ville.test", "/status/401").await.status,
                401
            );
        }
        let v = watch_status(&gw).await;
        tenant_of(&v, "ville")["level"] == "orange"
    })
    .await;
    let v = watch_status(&gw).await;
    assert!(stuffed, "{v}");
    let evidence = tenant_of(&v, "ville")["evidence"].to_string();
    assert!(evidence.contains("login_failures"), "{v}");
}

/// A tenant with a heavy search route, a non-essential agenda and a status page.
fn playbook_config(origin: std::net::SocketAddr) -> String {
    format!(
        r#"[[tenants]]
id = "ville"
name = "Ville de Test"
hosts = ["ville.test"]

[[tenants.pools]]
name = "web"
servers = [{{ address = "{origin}" }}]

[[tenants.routes]]
name = "recherche"
path_prefix = "/recherche"
pool = "web"
cost = 5

[[tenants.routes]]
name = "agenda"
path_prefix = "/agenda"
pool = "web"
essential = false

[[tenants.routes]]
name = "site"
path_prefix = "/"
pool = "web"

[tenants.status]
hosts = ["statut.ville.test"]

[[tenants.status.components]]
id = "site"
name = "Site"
routes = ["site"]
{WATCH_NOW}"#
    )
}

#[tokio::test]
async fn the_playbook_follows_the_level_and_the_incident_keeps_what_it_did() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&playbook_config(origin.addr)).await;
    let c = h1_client();
    let status_of = |path: &'static str| {
        let c = c.clone();
        let addr = gw.addr;
        async move { get(&c, addr, "ville.test", path).await.status }
    };
    assert_eq!(status_of("/recherche?q=x").await, 200);
    // Orange: clients without a pass are challenged on the heavy route only.
    set_level(&gw, "ville", "orange", "1h").await;
    let page = get(&c, gw.addr, "ville.test", "/recherche?q=x").await;
    assert_eq!(page.status, 403);
    assert_eq!(page.headers.get("x-rempart-challenge").unwrap(), "pow");
    assert_eq!(status_of("/").await, 200);
    assert_eq!(status_of("/agenda").await, 200);
    // Rouge: everyone without a pass is challenged, the agenda is in maintenance, and a
    // notice for residents waits as a draft on the status page.
    set_level(&gw, "ville", "rouge", "1h").await;
    assert_eq!(status_of("/").await, 403);
    assert_eq!(status_of("/agenda").await, 503);
    let board = admin_call(&gw, "GET", "/admin/status/ville", None).await;
    assert!(
        board.body.contains("attaque informatique"),
        "{}",
        board.body
    );
    assert!(
        board.body.contains(r#""published":false"#),
        "{}",
        board.body
    );
    // The incident says what the defence did, with the level changes.
    let v = watch_status(&gw).await;
    let actions = tenant_of(&v, "ville")["actions"].to_string();
    assert!(actions.contains("under-attack mode"), "{v}");
    let id = tenant_of(&v, "ville")["incident"].as_u64().unwrap();
    // Back to vert (an operator's call): every defence undone, the notice closed.
    set_level(&gw, "ville", "vert", "1m").await;
    assert_eq!(status_of("/").await, 200);
    assert_eq!(status_of("/agenda").await, 200);
    assert_eq!(status_of("/recherche?q=y").await, 200);
    let got = admin_call(&gw, "GET", &format!("/admin/watch/incidents/{id}"), None).await;
    let incident: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert!(incident["calm_ms"].is_u64(), "{incident}");
    let kinds: Vec<&str> = incident["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"opened"), "{kinds:?}");
    assert!(
        kinds.contains(&"applied") && kinds.contains(&"undone"),
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"undone"), "{kinds:?}");
    assert!(kinds.contains(&"calm"), "{kinds:?}");
    let report = admin_call(
        &gw,
        "GET",
        &format!("/admin/watch/incidents/{id}/report"),
        None,
    )
    .await;
    assert!(
        report.body.contains("switched on: under-attack mode"),
        "{}",
        report.body
    );
    assert!(
        report.body.contains("switched off: under-attack mode"),
        "{}",
        report.body
    );
    let board = admin_call(&gw, "GET", "/admin/status/ville", None).await;
    assert!(
        board.body.contains(r#""status":"resolved""#),
        "{}",
        board.body
    );
}

#[tokio::test]
async fn alerts_reach_mail_webhook_matrix_and_syslog_escalate_and_survive_a_restart() {
    let Some(smtp) = smtp_sink() else {
        return;
    };
    let origin = Origin::start("a").await;
    let (hook, hooks) = receiver().await;
    let (matrix, rooms) = receiver().await;
    let (escalation, escalations) = receiver().await;
    let syslog = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A receiver down at first: its alert waits in the outbox across a restart.
    let later = closed_port().await;
    let config = format!(
        r#"[status.smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "Rempart <rempart@ville.test>"

{tenant}
escalate_after = "2s"

[[watch.alerts]]
name = "astreinte"
kind = "email"
to = ["astreinte@ville.test"]

[[watch.alerts]]
name = "siem-hook"
kind = "webhook"
url = "http://{hook}/rempart"
secret_file = "hook.key"

[[watch.alerts]]
name = "tchap"
kind = "matrix"
url = "http://{matrix}"
room = "!salle:ville.test"
secret_file = "matrix.token"

[[watch.alerts]]
name = "siem"
kind = "syslog"
address = "{syslog}"

[[watch.alerts]]
name = "chef"
kind = "webhook"
url = "http://{escalation}/escalade"
escalation = true

[[watch.alerts]]
name = "plus-tard"
kind = "webhook"
url = "http://{later}/plus-tard"
"#,
        smtp_port = smtp.port,
        tenant = one_tenant(&[origin.addr], "", "") + WATCH_NOW,
        syslog = syslog.local_addr().unwrap(),
    );
    let mut gw = Gw::start_with_files(
        &config,
        &[
            ("hook.key", "cle-du-webhook"),
            ("matrix.token", "jeton-matrix"),
        ],
        quiet_options(),
    )
    .await;
    set_level(&gw, "ville", "rouge", "1h").await;
    // E-mail to the on-call person.
    let mailed = eventually(Duration::from_secs(20), || async {
        !smtp.messages.lock().unwrap().is_empty()
    })
    .await;
    assert!(mailed, "no alert e-mail");
    let mail = smtp.messages.lock().unwrap()[0].clone();
    assert_eq!(mail["to"][0], "astreinte@ville.test");
    let subject = mail["subject"].as_str().unwrap();
    assert!(
        subject.contains("incident 1") && subject.contains("rouge"),
        "{subject}"
    );
    assert!(
        mail["body"]
            .as_str()
            .unwrap()
            .contains("rempart watch incident show 1"),
        "{mail}"
    );
    // A signed webhook.
    let hooked = eventually(Duration::from_secs(20), || async {
        !hooks.lock().unwrap().is_empty()
    })
    .await;
    assert!(hooked, "no webhook");
    let (path, headers, body) = hooks.lock().unwrap()[0].clone();
    assert_eq!(path, "/rempart");
    let timestamp = headers["x-rempart-timestamp"].to_str().unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"cle-du-webhook");
    let tag = ring::hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        headers["x-rempart-signature"].to_str().unwrap(),
        format!("sha256={hex}")
    );
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["event"], "watch.incident.opened");
    assert_eq!(doc["incident"]["tenant"], "ville");
    // A Matrix room message, with the bot's token and an idempotent transaction.
    let posted = eventually(Duration::from_secs(20), || async {
        !rooms.lock().unwrap().is_empty()
    })
    .await;
    assert!(posted, "no Matrix message");
    let (path, headers, body) = rooms.lock().unwrap()[0].clone();
    assert!(
        path.starts_with(
            "/_matrix/client/v3/rooms/%21salle%3Aville.test/send/m.room.message/rempart-"
        ),
        "{path}"
    );
    assert_eq!(headers["authorization"], "Bearer jeton-matrix");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["msgtype"], "m.text");
    // An RFC 5424 line for the SIEM (critical at rouge, facility security).
    let mut buf = [0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(20), syslog.recv_from(&mut buf))
        .await
        .expect("no syslog line")
        .unwrap();
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(line.starts_with("<34>1 "), "{line}");
    assert!(
        line.contains(r#"[rempart@32473 incident="1" tenant="ville" level="rouge""#),
        "{line}"
    );
    // Nobody acknowledged it within 2 s: escalated to the escalation channel only.
    let escalated = eventually(Duration::from_secs(20), || async {
        !escalations.lock().unwrap().is_empty()
    })
    .await;
    assert!(escalated, "no escalation");
    let doc: serde_json::Value = serde_json::from_str(&escalations.lock().unwrap()[0].2).unwrap();
    assert_eq!(doc["event"], "watch.incident.escalated");
    // The unreachable receiver's alert waits.
    let v = watch_status(&gw).await;
    assert!(v["alerts"]["pending"].as_u64().unwrap() >= 1, "{v}");
    // Restart with the receiver back: the waiting alert goes out, the incident is kept.
    let (back, seen_later) = receiver_on(later).await;
    assert_eq!(back, later);
    gw.restart().await;
    let delivered = eventually(Duration::from_secs(20), || async {
        !seen_later.lock().unwrap().is_empty()
    })
    .await;
    assert!(delivered, "the waiting alert was lost in the restart");
    let got = admin_call(&gw, "GET", "/admin/watch/incidents/1", None).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let incident: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert!(incident["escalated_ms"].is_u64(), "{incident}");
    // The attack was still on: the level (and its defences) is taken up again.
    let resumed = eventually(Duration::from_secs(10), || async {
        let v = watch_status(&gw).await;
        v["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["tenant"] == "ville" && t["level"] == "rouge" && t["incident"] == 1)
    })
    .await;
    assert!(resumed, "{}", watch_status(&gw).await);
    let page = get(&h1_client(), gw.addr, "ville.test", "/").await;
    assert_eq!(
        page.status, 403,
        "under-attack mode again after the restart"
    );
}

#[tokio::test]
async fn operators_work_incidents_with_the_cli_and_follow_the_events() {
    let origin = Origin::start("a").await;
    let admin_port = closed_port().await.port();
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:{admin_port}\"\ntoken_file = \"admin.token\"\n\n{}",
        one_tenant(&[origin.addr], "", "") + WATCH_NOW
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
    assert!(out.contains("global level: orange"), "{out}");
    assert!(
        out.contains("ville\torange (set by an operator)\t1\t"),
        "{out}"
    );
    assert!(
        out.contains("challenge clients without a pass on heavy routes"),
        "{out}"
    );
    let (code, out) = cli(&["level", "ville", "violet", "--for", "1h", "--reason", "x"]).await;
    assert_eq!(code, 2, "{out}");
    // Work the incident the level opened.
    let (code, out) = cli(&["incident", "list"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1\tville\torange\torange\topen\ttrue"),
        "{out}"
    );
    let (code, out) = cli(&["incident", "ack", "1", "--by", "alice"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(&["incident", "ack", "1", "--by", "bob"]).await;
    assert_eq!(code, 1, "acknowledged twice: {out}");
    let (code, out) = cli(&[
        "incident",
        "note",
        "1",
        "filtrage demandé à l'hébergeur",
        "--by",
        "alice",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    // A second incident by hand is refused while this one is on.
    let (code, _) = cli(&["incident", "open", "ville", "orange", "hameçonnage signalé"]).await;
    assert_eq!(code, 1);
    let (code, out) = cli(&[
        "incident",
        "resolve",
        "1",
        "fin de l'exercice",
        "--by",
        "alice",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    // What is hitting us and since when: one command.
    let (code, report) = cli(&["incident", "show", "1"]).await;
    assert_eq!(code, 0, "{report}");
    assert!(
        report.starts_with("# Security incident 1 — Ville de Test"),
        "{report}"
    );
    assert!(report.contains("acknowledged by alice"), "{report}");
    assert!(
        report.contains("alice: filtrage demandé à l'hébergeur"),
        "{report}"
    );
    assert!(
        report.contains("resolved by alice: fin de l'exercice"),
        "{report}"
    );
    let (code, json) = cli(&["incident", "show", "1", "--json"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["state"], "resolved");
    let (code, _) = cli(&["incident", "show", "99"]).await;
    assert_eq!(code, 2, "unknown incident");
    // Resolved: a report by hand may open the next one.
    let (code, out) = cli(&[
        "incident",
        "open",
        "ville",
        "jaune",
        "hameçonnage signalé",
        "--by",
        "bob",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("incident 2"), "{out}");
    // The event stream replays the recent events, then follows.
    let admin = gw.running().admin_addr;
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!(
                "GET /admin/watch/events HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while !(seen.contains(r#""type":"level""#) && seen.contains(r#""notice":"resolved""#)) {
            let n = stream.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "stream closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    assert!(found.is_ok(), "{seen}");
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");
}

#[tokio::test]
async fn an_origin_whose_health_checks_fail_raises_the_level() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_tenant(
        &[origin.addr],
        r#"health = { path = "/healthz", interval = "100ms", timeout = "500ms", healthy_threshold = 1, unhealthy_threshold = 1 }"#,
        "",
    ))
    .await;
    let ville_level = |v: &serde_json::Value| tenant_of(v, "ville")["level"].clone();
    let first = eventually(Duration::from_secs(10), || async {
        watch_status(&gw)
            .await
            .get("tenants")
            .and_then(|t| t.as_array())
            .is_some_and(|t| t.iter().any(|x| x["tenant"] == "ville"))
    })
    .await;
    assert!(first);
    assert_eq!(ville_level(&watch_status(&gw).await), "vert");
    origin
        .state
        .healthy
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let down = eventually(Duration::from_secs(15), || async {
        ville_level(&watch_status(&gw).await) == "orange"
    })
    .await;
    let v = watch_status(&gw).await;
    assert!(down, "{v}");
    assert!(
        tenant_of(&v, "ville")["evidence"]
            .to_string()
            .contains("origin_down"),
        "{v}"
    );
}
