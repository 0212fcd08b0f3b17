//! Sends what residents and receivers must hear about: confirmation messages and public
//! updates by e-mail (SMTP through lettre, throttled to `max_per_second`, retried, a
//! one-click unsubscribe in every message: RFC 8058 headers and a link), signed JSON
//! webhooks (HMAC-SHA256 over timestamp and body) and Mastodon-compatible status posts for
//! the town's social account (retried). Addresses never reach the logs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio_util::sync::CancellationToken;

use super::model::{local_time, rfc3339, Incident, Update};
use super::subscribe::{log_label, Purpose, Subscriber};
use super::{Notice, StatusService};
use crate::config::runtime::{Language, Smtp, Webhook, WebhookKind};
pub use crate::outbox::send::Mail;

/// Messages waiting for the mail server at most.
const MAIL_QUEUE: usize = 100_000;
/// Attempts per message and per webhook delivery.
const ATTEMPTS: u32 = 3;

fn record(service: &StatusService, f: impl FnOnce(&mut super::Deliveries)) {
    if let Ok(mut d) = service.deliveries.lock() {
        f(&mut d);
    }
}

/// Sends one message, `ATTEMPTS` times at most unless the server refuses it for good;
/// `None` when shutting down.
async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    message: Message,
    shutdown: &CancellationToken,
) -> Option<Result<(), String>> {
    let mut outcome = Err(String::new());
    for attempt in 1..=ATTEMPTS {
        match transport.send(message.clone()).await {
            Ok(_) => return Some(Ok(())),
            Err(e) if e.is_permanent() => return Some(Err(format!("refused: {e}"))),
            Err(e) => outcome = Err(e.to_string()),
        }
        if attempt < ATTEMPTS {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(Duration::from_secs(2u64 << attempt)) => {}
            }
        }
    }
    Some(outcome)
}

/// Sends queued messages one at a time, at most `max_per_second`, each tried `ATTEMPTS`
/// times unless the server refuses it for good.
async fn mailer(
    service: Arc<StatusService>,
    mut rx: tokio::sync::mpsc::Receiver<Mail>,
    shutdown: CancellationToken,
) {
    // One transport (and its connection pool) while the settings stay the same.
    let mut cached: Option<(Smtp, AsyncSmtpTransport<Tokio1Executor>)> = None;
    loop {
        let mail = tokio::select! {
            () = shutdown.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let Some(smtp) = service.settings().smtp else {
            tracing::warn!(target: "rempart::status", "no [status.smtp]: message dropped");
            continue;
        };
        let label = log_label(&mail.to);
        if cached.as_ref().is_none_or(|(s, _)| *s != smtp) {
            cached = match crate::outbox::send::mail_transport(&smtp) {
                Ok(t) => Some((smtp.clone(), t)),
                Err(e) => {
                    tracing::error!(target: "rempart::status", error = %e, "cannot set up the mail transport");
                    None
                }
            };
        }
        let outcome = match (&cached, crate::outbox::send::mail_message(&smtp, &mail)) {
            (_, Err(e)) => Err(e),
            (None, Ok(_)) => Err("cannot set up the mail transport".to_owned()),
            (Some((_, transport)), Ok(m)) => match send(transport, m, &shutdown).await {
                Some(r) => r,
                None => return,
            },
        };
        match outcome {
            Ok(()) => {
                tracing::info!(target: "rempart::status", to = %label, "message sent");
                record(&service, |d| d.mails_sent += 1);
            }
            Err(e) => {
                tracing::error!(target: "rempart::status", to = %label, error = %e, "message not sent");
                record(&service, |d| {
                    d.mails_failed += 1;
                    d.last_error = Some(format!("mail: {e}"));
                });
            }
        }
        let pause = Duration::from_secs(1) / smtp.max_per_second.max(1);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

fn confirm_mail(service: &StatusService, s: &Subscriber) -> Option<Mail> {
    let info = service.tenant_info(&s.tenant)?;
    let name = info.name;
    let base = info.url?;
    let base = if base.ends_with('/') {
        base
    } else {
        format!("{base}/")
    };
    let link = format!("{base}confirm?t={}", service.token(s.id, Purpose::Confirm));
    let (subject, body) = match s.language() {
        Language::Fr => (
            format!("[{name}] Confirmez votre abonnement"),
            format!(
                "Bonjour,\n\nVous avez demandé à recevoir par courriel les informations sur l'état des services de {name}.\n\nPour confirmer, ouvrez ce lien :\n{link}\n\nSi vous n'êtes pas à l'origine de cette demande, ignorez ce message : sans confirmation, votre adresse est effacée sous deux jours.\n"
            ),
        ),
        Language::En => (
            format!("[{name}] Confirm your subscription"),
            format!(
                "Hello,\n\nYou asked to receive e-mail updates on the status of {name}'s services.\n\nTo confirm, open this link:\n{link}\n\nIf you did not ask for this, ignore this message: without confirmation your address is deleted within two days.\n"
            ),
        ),
    };
    Some(Mail {
        to: s.email.clone(),
        subject,
        body,
        unsubscribe: None,
    })
}

fn update_mail(
    service: &StatusService,
    info: &super::TenantInfo,
    s: &Subscriber,
    incident: &Incident,
    update: &Update,
    zone: crate::common::TimeZone,
) -> Option<Mail> {
    let (name, components) = (&info.name, &info.components);
    let base = info.url.clone()?;
    let base = if base.ends_with('/') {
        base
    } else {
        format!("{base}/")
    };
    let lang = s.language();
    let unsubscribe = format!(
        "{base}unsubscribe?t={}",
        service.token(s.id, Purpose::Unsubscribe)
    );
    let affected: Vec<String> = incident
        .components
        .iter()
        .filter_map(|id| components.iter().find(|c| &c.0 == id))
        .map(|(_, fr, en)| match lang {
            Language::En => en.clone().unwrap_or_else(|| fr.clone()),
            Language::Fr => fr.clone(),
        })
        .collect();
    let status = update.status.label(lang);
    let title = incident.title(lang);
    let when = local_time(update.at, zone, lang);
    let body = match lang {
        Language::Fr => format!(
            "{title}\n{status} · {when}\n\n{}\n\n{}Suivre l'état des services : {base}\n\n--\nVous recevez ce message car vous êtes abonné(e) aux informations de {name}.\nSe désabonner en un clic : {unsubscribe}\n",
            update.message(lang),
            if affected.is_empty() { String::new() } else { format!("Services concernés : {}\n", affected.join(", ")) },
        ),
        Language::En => format!(
            "{title}\n{status} · {when}\n\n{}\n\n{}Follow the status of services: {base}\n\n--\nYou receive this message because you subscribed to updates from {name}.\nUnsubscribe in one click: {unsubscribe}\n",
            update.message(lang),
            if affected.is_empty() { String::new() } else { format!("Affected services: {}\n", affected.join(", ")) },
        ),
    };
    Some(Mail {
        to: s.email.clone(),
        subject: format!("[{name}] {title} : {status}"),
        body,
        unsubscribe: Some(unsubscribe),
    })
}

/// The request a webhook receives for `update` of `incident`.
pub fn webhook_request(
    hook: &Webhook,
    tenant: (&str, &str, Option<&str>),
    incident: &Incident,
    update: &Update,
    now: u64,
) -> Option<http::Request<Full<Bytes>>> {
    let (id, name, url) = tenant;
    let lang = Language::Fr;
    match hook.kind {
        WebhookKind::Json => {
            let body = serde_json::json!({
                "event": "incident.update",
                "tenant": { "id": id, "name": name, "url": url },
                "incident": {
                    "id": incident.id.to_string(),
                    "kind": incident.kind,
                    "name": incident.title,
                    "name_en": incident.title_en,
                    "status": incident.status().name(),
                    "impact": incident.impact.name(),
                    "components": incident.components,
                    "created_at": rfc3339(incident.created_at),
                    "updated_at": rfc3339(incident.updated_at),
                },
                "update": {
                    "id": format!("{}-{}", incident.id, update.id),
                    "status": update.status.name(),
                    "body": update.message,
                    "body_en": update.message_en,
                    "created_at": rfc3339(update.at),
                },
            })
            .to_string();
            let mut b = http::Request::post(hook.url.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::USER_AGENT, "rempart")
                .header(
                    "x-rempart-delivery",
                    format!("{id}-{}-{}", incident.id, update.id),
                )
                .header("x-rempart-timestamp", now.to_string());
            if let Some(secret) = &hook.secret {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
                let mut signed = now.to_string().into_bytes();
                signed.push(b'.');
                signed.extend_from_slice(body.as_bytes());
                let tag = ring::hmac::sign(&key, &signed);
                b = b.header(
                    "x-rempart-signature",
                    format!("sha256={}", crate::outbox::send::hex(tag.as_ref())),
                );
            }
            b.body(Full::new(Bytes::from(body))).ok()
        }
        WebhookKind::Mastodon => {
            let mut text = format!(
                "{name} · {} : {}\n{}",
                update.status.label(lang),
                incident.title(lang),
                update.message(lang)
            );
            let link = url.map(|u| format!("\n{u}")).unwrap_or_default();
            // Mastodon counts characters; keep room for the link.
            let room = 500usize.saturating_sub(link.chars().count() + 1);
            if text.chars().count() > room {
                text = text
                    .chars()
                    .take(room.saturating_sub(1))
                    .collect::<String>()
                    + "…";
            }
            text.push_str(&link);
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("status", &text)
                .append_pair("visibility", "public")
                .finish();
            let base = hook.url.to_string();
            let endpoint = format!("{}/api/v1/statuses", base.trim_end_matches('/'));
            http::Request::post(endpoint)
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .header(http::header::USER_AGENT, "rempart")
                .header(
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", hook.secret.as_deref().unwrap_or("")),
                )
                .header(
                    "idempotency-key",
                    format!("rempart-{id}-{}-{}", incident.id, update.id),
                )
                .body(Full::new(Bytes::from(form)))
                .ok()
        }
    }
}

async fn deliver(
    service: Arc<StatusService>,
    client: crate::outbox::send::HttpsClient,
    hook: Webhook,
    tenant: (String, String, Option<String>),
    incident: Incident,
    update: Update,
) {
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let Some(req) = webhook_request(
            &hook,
            (&tenant.0, &tenant.1, tenant.2.as_deref()),
            &incident,
            &update,
            crate::clock::unix_now(),
        ) else {
            return;
        };
        match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {
                tracing::info!(target: "rempart::status", url = %hook.url, incident = incident.id, "webhook delivered");
                record(&service, |d| d.webhooks_delivered += 1);
                return;
            }
            Ok(Ok(resp)) => last = format!("answered {}", resp.status()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer in 10 s".into(),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_secs(1u64 << attempt)).await;
        }
    }
    tracing::error!(target: "rempart::status", url = %hook.url, incident = incident.id, error = %last, "webhook not delivered");
    record(&service, |d| {
        d.webhooks_failed += 1;
        d.last_error = Some(format!("webhook {}: {last}", hook.url));
    });
}

/// Turns notices into messages and deliveries until `shutdown`.
pub async fn run(service: Arc<StatusService>, shutdown: CancellationToken) {
    let Some(mut notices) = service.take_notices() else {
        return;
    };
    let (mail_tx, mail_rx) = tokio::sync::mpsc::channel(MAIL_QUEUE);
    tokio::spawn(mailer(service.clone(), mail_rx, shutdown.clone()));
    let client = crate::outbox::send::https_client();
    loop {
        let notice = tokio::select! {
            () = shutdown.cancelled() => return,
            n = notices.recv() => match n { Some(n) => n, None => return },
        };
        let settings = service.settings();
        let mut mails = Vec::new();
        match notice {
            Notice::Confirm { subscriber } => mails.extend(confirm_mail(&service, &subscriber)),
            Notice::Update {
                incident,
                update_id,
            } => {
                let Some(update) = incident.updates.iter().find(|u| u.id == update_id).cloned()
                else {
                    continue;
                };
                let Some(info) = service.tenant_info(&incident.tenant) else {
                    continue;
                };
                if settings.smtp.is_some() {
                    for s in service.recipients(&incident.tenant, &incident.components) {
                        mails.extend(update_mail(
                            &service,
                            &info,
                            &s,
                            &incident,
                            &update,
                            settings.time_zone,
                        ));
                    }
                }
                for hook in settings
                    .webhooks
                    .iter()
                    .filter(|h| h.tenants.is_empty() || h.tenants.contains(&incident.tenant))
                {
                    let Some(client) = &client else {
                        continue;
                    };
                    tokio::spawn(deliver(
                        service.clone(),
                        client.clone(),
                        hook.clone(),
                        (incident.tenant.clone(), info.name.clone(), info.url.clone()),
                        (*incident).clone(),
                        update.clone(),
                    ));
                }
            }
        }
        for m in mails {
            if mail_tx.try_send(m).is_err() {
                tracing::error!(target: "rempart::status", "mail queue full: message dropped");
                record(&service, |d| d.mails_failed += 1);
            }
        }
    }
}
