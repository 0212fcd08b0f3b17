//! E-mail subscriptions and webhooks over real sockets: double opt-in through a real SMTP
//! server (aiosmtpd, started by the test), delivery of public updates, one-click
//! unsubscribe that deletes the address, a signed JSON webhook and a Mastodon-style post.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

use crate::support::*;

/// A form posted to `gw` for `ville.test`.
pub(crate) async fn form(gw: &Gw, path: &str, body: &str) -> Got {
    let req = Request::post(format!("http://{}{path}", gw.addr))
        .header("host", "ville.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    collect(h1_client().request(req).await.unwrap()).await
}

/// The path and query of a link under `http://ville.test`.
fn local_part(link: &str) -> String {
    link.strip_prefix("http://ville.test").unwrap().to_owned()
}

fn link_in(body: &str, marker: &str) -> String {
    let start = body
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {body}"));
    let begin = body[..start].rfind("http://").unwrap();
    let end = start
        + body[start..]
            .find(char::is_whitespace)
            .unwrap_or(body.len() - start);
    body[begin..end].to_owned()
}

#[tokio::test]
async fn double_opt_in_updates_one_click_unsubscribe_and_webhooks() {
    let Some(smtp) = smtp_sink() else { return };
    let (hooks, seen) = receiver().await;
    let config = format!(
        r#"[status]
smtp = {{ host = "127.0.0.1", port = {port}, tls = "none", from = "Ville de Test <statut@ville.test>", max_per_second = 100 }}
webhooks = [
  {{ url = "http://{hooks}/hook", kind = "json", secret_file = "hook.secret" }},
  {{ url = "http://{hooks}", kind = "mastodon", secret_file = "mastodon.token" }},
]

[[tenants]]
id = "ville"
name = "Ville de Test"
hosts = ["ville.test"]

[[tenants.pools]]
name = "web"
servers = [{{ address = "127.0.0.1:9" }}]

[[tenants.routes]]
name = "etat-civil"
path_prefix = "/"
pool = "web"

[tenants.status]
url = "http://ville.test/statut/"

[[tenants.status.components]]
id = "etat-civil"
name = "État civil"
routes = ["etat-civil"]

[[tenants.status.components]]
id = "ecoles"
name = "Inscriptions scolaires"
"#,
        port = smtp.port
    );
    let gw = Gw::start_with_files(
        &config,
        &[
            ("hook.secret", "s3cret-hook-key"),
            ("mastodon.token", "mastodon-token-123"),
        ],
        quiet_options(),
    )
    .await;
    let c = h1_client();
    let page = get(&c, gw.addr, "ville.test", "/statut/").await;
    assert!(page.body.contains("action=\"subscribe\""), "{}", page.body);

    // Bad input: a clear 400, nothing stored; GET on the form target is refused.
    let bad = form(&gw, "/statut/subscribe", "email=not-an-address").await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        get(&c, gw.addr, "ville.test", "/statut/subscribe")
            .await
            .status,
        405
    );

    // Subscribe to one component.
    let ok = form(
        &gw,
        "/statut/subscribe",
        "email=marie.dupont%40exemple.fr&component=etat-civil&lang=fr",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("Vérifiez votre messagerie"));
    let messages = smtp.messages.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            !messages.lock().unwrap().is_empty()
        })
        .await
    );
    let confirm = messages.lock().unwrap()[0].clone();
    assert_eq!(confirm["to"][0], "marie.dupont@exemple.fr");
    assert!(confirm["subject"].as_str().unwrap().contains("Confirmez"));
    let confirm_link = link_in(confirm["body"].as_str().unwrap(), "confirm?t=");

    // A public incident before confirmation: webhooks get it, the address does not.
    let first = admin_call(&gw, "POST", "/admin/status/ville/incidents", Some(r#"{"title": "Panne du site", "components": ["etat-civil"], "message": "Le site est en panne.", "publish": true}"#)).await;
    assert_eq!(first.status, 201);
    let seen2 = seen.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            seen2.lock().unwrap().len() >= 2
        })
        .await
    );

    // Confirm: GET shows a button (mail scanners change nothing), POST confirms.
    let shown = get(&c, gw.addr, "ville.test", &local_part(&confirm_link)).await;
    assert_eq!(shown.status, 200);
    assert!(shown.body.contains("<form method=\"post\""));
    let board = admin_call(&gw, "GET", "/admin/status/ville", None).await;
    assert!(board.body.contains("\"pending\":1"), "{}", board.body);
    let done = form(&gw, &local_part(&confirm_link), "").await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Abonnement confirmé"));
    assert_eq!(
        form(
            &gw,
            "/statut/confirm?t=1.00000000000000000000000000000000",
            ""
        )
        .await
        .status,
        400
    );

    // An update on the followed component reaches the subscriber.
    let id = serde_json::from_str::<serde_json::Value>(&first.body).unwrap()["id"]
        .as_u64()
        .unwrap();
    let upd = admin_call(
        &gw,
        "POST",
        &format!("/admin/status/ville/incidents/{id}/updates"),
        Some(
            r#"{"status": "identified", "message": "Un disque a lâché ; remplacement en cours."}"#,
        ),
    )
    .await;
    assert_eq!(upd.status, 201);
    assert!(
        eventually(Duration::from_secs(10), || async {
            messages.lock().unwrap().len() >= 2
        })
        .await
    );
    let update = messages.lock().unwrap()[1].clone();
    assert_eq!(
        messages.lock().unwrap().len(),
        2,
        "no mail for the incident published before confirmation"
    );
    assert!(
        update["subject"]
            .as_str()
            .unwrap()
            .contains("Panne du site"),
        "{update}"
    );
    let body = update["body"].as_str().unwrap();
    assert!(body.contains("Un disque a lâché"), "{body}");
    assert!(body.contains("Services concernés : État civil"));
    assert_eq!(
        update["list_unsubscribe_post"],
        "List-Unsubscribe=One-Click"
    );
    let unsubscribe = link_in(body, "unsubscribe?t=");
    assert_eq!(update["list_unsubscribe"], format!("<{unsubscribe}>"));

    // Webhooks: signed JSON and a Mastodon status, for both public updates.
    assert!(
        eventually(Duration::from_secs(10), || async {
            seen.lock().unwrap().len() >= 4
        })
        .await
    );
    {
        let seen = seen.lock().unwrap();
        let json: Vec<_> = seen.iter().filter(|(p, _, _)| p == "/hook").collect();
        assert_eq!(json.len(), 2);
        let (_, headers, body) = json
            .iter()
            .find(|(_, _, b)| b.contains("Un disque"))
            .unwrap();
        let ts = headers["x-rempart-timestamp"].to_str().unwrap();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret-hook-key");
        let tag = ring::hmac::sign(&key, format!("{ts}.{body}").as_bytes());
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            headers["x-rempart-signature"],
            format!("sha256={hex}").as_str()
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["update"]["status"], "identified");
        let masto: Vec<_> = seen
            .iter()
            .filter(|(p, _, _)| p == "/api/v1/statuses")
            .collect();
        assert_eq!(masto.len(), 2);
        assert_eq!(masto[0].1["authorization"], "Bearer mastodon-token-123");
        let status: String = form_urlencoded::parse(masto[0].2.as_bytes())
            .find(|(k, _)| k == "status")
            .unwrap()
            .1
            .into_owned();
        assert!(
            status.contains("Panne du site") && status.contains("http://ville.test/statut/"),
            "{status}"
        );
    }

    // An update on another component only: not sent to this subscriber.
    let other = admin_call(&gw, "POST", "/admin/status/ville/incidents", Some(r#"{"title": "Inscriptions fermées", "components": ["ecoles"], "message": "Fermé ce soir.", "publish": true}"#)).await;
    assert_eq!(other.status, 201);
    assert!(
        eventually(Duration::from_secs(10), || async {
            seen.lock().unwrap().len() >= 6
        })
        .await
    );

    // One-click unsubscribe as a mail client sends it: the address is deleted.
    let gone = form(&gw, &local_part(&unsubscribe), "List-Unsubscribe=One-Click").await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    assert!(gone.body.contains("Votre adresse a été effacée"));
    let board = admin_call(&gw, "GET", "/admin/status/ville", None).await;
    assert!(
        board.body.contains("\"confirmed\":0") && board.body.contains("\"pending\":0"),
        "{}",
        board.body
    );
    let again = admin_call(
        &gw,
        "POST",
        &format!("/admin/status/ville/incidents/{id}/updates"),
        Some(r#"{"status": "resolved", "message": "Réparé."}"#),
    )
    .await;
    assert_eq!(again.status, 201);
    assert!(
        eventually(Duration::from_secs(10), || async {
            seen.lock().unwrap().len() >= 8
        })
        .await
    );
    // A barrier instead of a wait: notices and mails are handled in order, so a message
    // for that update would arrive before this new confirmation request.
    assert_eq!(
        form(&gw, "/statut/subscribe", "email=paul%40exemple.fr")
            .await
            .status,
        200
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            messages.lock().unwrap().len() >= 3
        })
        .await
    );
    let all = messages.lock().unwrap().clone();
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(
        all[2]["to"][0], "paul@exemple.fr",
        "no mail after unsubscribing nor for unfollowed services"
    );
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_status_deliveries_total{kind=\"webhook\",result=\"ok\"} 8"),
        "{m}"
    );
    let sent = eventually(Duration::from_secs(5), || async {
        crate::health::admin_metrics(&gw)
            .await
            .contains("rempart_status_deliveries_total{kind=\"mail\",result=\"ok\"} 3")
    })
    .await;
    assert!(sent);
}

#[tokio::test]
async fn a_residents_message_waits_for_the_mail_server_across_a_restart() {
    // The mail server is down when the resident subscribes.
    let port = closed_port().await.port();
    let config = format!(
        r#"[status]
smtp = {{ host = "127.0.0.1", port = {port}, tls = "none", from = "Ville de Test <statut@ville.test>" }}

[[tenants]]
id = "ville"
name = "Ville de Test"
hosts = ["ville.test"]

[[tenants.pools]]
name = "web"
servers = [{{ address = "127.0.0.1:9" }}]

[[tenants.routes]]
path_prefix = "/"
pool = "web"

[tenants.status]
url = "http://ville.test/statut/"

[[tenants.status.components]]
id = "site"
name = "Site"
"#
    );
    let mut gw = Gw::start(&config).await;
    let ok = form(
        &gw,
        "/statut/subscribe",
        "email=jean.martin%40exemple.fr&lang=fr",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // Refused by the closed port: the message waits in the status database.
    let db = gw.dir.path().join("rempart-status.db");
    let waiting = eventually(Duration::from_secs(10), || async {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.query_row(
                "SELECT COUNT(*) FROM outbox WHERE channel = 'mail' AND attempts >= 1",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
                == 1
        })
        .await
        .unwrap()
    })
    .await;
    assert!(waiting, "the confirmation is not waiting in the outbox");
    // The mail server comes back and the gateway restarts: the message goes out.
    let Some(smtp) = smtp_sink_on(port) else {
        return;
    };
    gw.restart().await;
    let sent = eventually(Duration::from_secs(20), || async {
        !smtp.messages.lock().unwrap().is_empty()
    })
    .await;
    assert!(sent, "the waiting confirmation was lost");
    let mail = smtp.messages.lock().unwrap()[0].clone();
    assert_eq!(mail["to"][0], "jean.martin@exemple.fr");
    assert!(
        mail["subject"].as_str().unwrap().contains("Confirmez"),
        "{mail}"
    );
    // Sent: the row, and the address in it, are gone.
    let db = gw.dir.path().join("rempart-status.db");
    let left = tokio::task::spawn_blocking(move || {
        rusqlite::Connection::open(db)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0))
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(left, 0);
}
