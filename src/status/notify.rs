//! Sends what residents and receivers must hear about: confirmation messages and public
//! updates by e-mail (SMTP through lettre, at `max_per_second`, a one-click unsubscribe in
//! every message: RFC 8058 headers and a link), signed JSON webhooks (HMAC-SHA256 over
//! timestamp and body) and Mastodon-compatible status posts for the town's social account.
//! Everything goes through the durable outbox in the status database (`outbox`): written
//! before it is sent, retried with backoff for a day, never lost to a restart; a resident's
//! message is deleted once sent or given up, and dropped if they unsubscribe before it
//! leaves. Addresses never reach the logs.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use tokio_util::sync::CancellationToken;

use super::model::{local_time, rfc3339, Incident, Update};
use super::subscribe::{log_label, Purpose, Subscriber};
use super::{Notice, StatusService};
use crate::config::runtime::{Language, Smtp, Webhook, WebhookKind};
pub use crate::outbox::send::Mail;
use crate::outbox::send::{self, HttpsClient};
use crate::outbox::{Courier, Delivery, Failure, Message, Outbox, Retention};

/// The outbox channel of residents' e-mails.
const MAIL: &str = "mail";

fn record(service: &StatusService, f: impl FnOnce(&mut super::Deliveries)) {
    if let Ok(mut d) = service.deliveries.lock() {
        f(&mut d);
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

/// What the status notifier stores in the outbox.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Stored {
    /// A message to a subscriber (dropped if they unsubscribe meanwhile).
    Mail {
        /// The subscriber's id.
        subscriber: u64,
        /// The message.
        mail: Mail,
    },
    /// A public update for a webhook receiver.
    Webhook {
        /// Tenant id, name and status page address.
        tenant: (String, String, Option<String>),
        /// The incident as it was.
        incident: Box<Incident>,
        /// Which update.
        update: u32,
    },
}

/// The outbox channel of the webhook receiving at `url`.
fn webhook_channel(url: &http::Uri) -> String {
    format!("webhook {url}")
}

/// Delivers the status notifier's messages from its outbox.
struct StatusCourier {
    service: Arc<StatusService>,
    /// Made at the first webhook delivery.
    client: std::sync::OnceLock<Option<HttpsClient>>,
    /// One transport (and its connection pool) while the settings stay the same.
    mail: tokio::sync::Mutex<Option<(Smtp, lettre::AsyncSmtpTransport<lettre::Tokio1Executor>)>>,
}

impl Courier for Arc<StatusCourier> {
    fn per_minute(&self, channel: &str) -> Option<u32> {
        let settings = self.service.settings();
        if channel == MAIL {
            return settings
                .smtp
                .map(|s| s.max_per_second.clamp(1, 1_000).saturating_mul(60));
        }
        // A webhook receiver: one update a second at most.
        settings
            .webhooks
            .iter()
            .any(|h| webhook_channel(&h.url) == channel)
            .then_some(60)
    }

    fn deliver(&self, m: Message) -> Delivery {
        let this = self.clone();
        Box::pin(async move {
            let stored: Stored = serde_json::from_str(&m.payload)
                .map_err(|e| Failure::permanent(format!("unreadable message: {e}")))?;
            let settings = this.service.settings();
            match stored {
                Stored::Mail { subscriber, mail } => {
                    if !this.service.has_subscriber(subscriber) {
                        return Err(Failure::permanent("the subscriber left meanwhile"));
                    }
                    let smtp = settings
                        .smtp
                        .ok_or_else(|| Failure::permanent("no [status.smtp] mail server"))?;
                    let mut cached = this.mail.lock().await;
                    if cached.as_ref().is_none_or(|(s, _)| *s != smtp) {
                        let t = send::mail_transport(&smtp).map_err(Failure::transient)?;
                        *cached = Some((smtp.clone(), t));
                    }
                    let Some((_, transport)) = cached.as_ref() else {
                        return Err(Failure::transient("no mail transport"));
                    };
                    let label = log_label(&mail.to);
                    let outcome = send::mail(transport, &smtp, &mail).await;
                    match &outcome {
                        Ok(()) => {
                            tracing::info!(target: "rempart::status", to = %label, "message sent");
                            record(&this.service, |d| d.mails_sent += 1);
                        }
                        Err(e) => {
                            tracing::warn!(target: "rempart::status", to = %label, error = %e.message, permanent = e.permanent, "message not sent");
                            record(&this.service, |d| {
                                if e.permanent {
                                    d.mails_failed += 1;
                                }
                                d.last_error = Some(format!("mail: {}", e.message));
                            });
                        }
                    }
                    outcome
                }
                Stored::Webhook {
                    tenant,
                    incident,
                    update,
                } => {
                    let hook = settings
                        .webhooks
                        .iter()
                        .find(|h| webhook_channel(&h.url) == m.channel)
                        .cloned()
                        .ok_or_else(|| Failure::permanent("webhook no longer configured"))?;
                    let update = incident
                        .updates
                        .iter()
                        .find(|u| u.id == update)
                        .cloned()
                        .ok_or_else(|| Failure::permanent("no such update"))?;
                    let client = this
                        .client
                        .get_or_init(send::https_client)
                        .as_ref()
                        .ok_or_else(|| {
                            Failure::transient("no HTTP client (no system certificates)")
                        })?;
                    let req = webhook_request(
                        &hook,
                        (&tenant.0, &tenant.1, tenant.2.as_deref()),
                        &incident,
                        &update,
                        crate::clock::unix_now(),
                    )
                    .ok_or_else(|| Failure::permanent("cannot build the request"))?;
                    let outcome = send::http(client, req).await;
                    match &outcome {
                        Ok(()) => {
                            tracing::info!(target: "rempart::status", url = %hook.url, incident = incident.id, "webhook delivered");
                            record(&this.service, |d| d.webhooks_delivered += 1);
                        }
                        Err(e) => {
                            tracing::warn!(target: "rempart::status", url = %hook.url, incident = incident.id, error = %e.message, "webhook not delivered");
                            record(&this.service, |d| {
                                if e.permanent {
                                    d.webhooks_failed += 1;
                                }
                                d.last_error = Some(format!("webhook {}: {}", hook.url, e.message));
                            });
                        }
                    }
                    outcome
                }
            }
        })
    }
}

/// Opens the outbox in the status database and starts its delivery.
async fn open_outbox(
    service: &Arc<StatusService>,
    courier: &Arc<StatusCourier>,
    shutdown: &CancellationToken,
) -> Option<Arc<Outbox>> {
    let path = service.settings().database;
    let opened =
        tokio::task::spawn_blocking(move || Outbox::open_with(&path, Retention::Delete)).await;
    match opened {
        Ok(Ok(outbox)) => {
            tokio::spawn(crate::outbox::run(
                outbox.clone(),
                Arc::new(courier.clone()),
                shutdown.clone(),
            ));
            Some(outbox)
        }
        Ok(Err(e)) => {
            tracing::error!(target: "rempart::status", error = %e, "cannot open the status outbox: messages are not sent");
            None
        }
        Err(_) => None,
    }
}

/// Turns notices into messages and deliveries until `shutdown`: each is written to the
/// outbox in the status database first (a restart loses none), then sent at the mail
/// server's pace and retried.
pub async fn run(service: Arc<StatusService>, shutdown: CancellationToken) {
    let Some(mut notices) = service.take_notices() else {
        return;
    };
    let courier = Arc::new(StatusCourier {
        service: service.clone(),
        client: std::sync::OnceLock::new(),
        mail: tokio::sync::Mutex::new(None),
    });
    // Messages left from before a restart go out at once; otherwise the outbox opens with
    // the first message (the database exists once a tenant has a status page).
    let mut outbox = if service.settings().database.exists() {
        open_outbox(&service, &courier, &shutdown).await
    } else {
        None
    };
    loop {
        let notice = tokio::select! {
            () = shutdown.cancelled() => return,
            n = notices.recv() => match n { Some(n) => n, None => return },
        };
        if outbox.is_none() {
            outbox = open_outbox(&service, &courier, &shutdown).await;
        }
        let Some(outbox) = outbox.clone() else {
            continue;
        };
        let settings = service.settings();
        let now = crate::clock::unix_now_ms();
        let put_mail = |subscriber: u64, mail: Mail, group: String| {
            if let Ok(payload) = serde_json::to_string(&Stored::Mail { subscriber, mail }) {
                outbox.put(MAIL, &group, payload, now);
            }
        };
        match notice {
            Notice::Confirm { subscriber } => {
                if let Some(m) = confirm_mail(&service, &subscriber) {
                    put_mail(subscriber.id, m, format!("confirm-{}", subscriber.id));
                }
            }
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
                        if let Some(m) =
                            update_mail(&service, &info, &s, &incident, &update, settings.time_zone)
                        {
                            let group = format!("update-{}-{}-{}", s.id, incident.id, update.id);
                            put_mail(s.id, m, group);
                        }
                    }
                }
                for hook in settings
                    .webhooks
                    .iter()
                    .filter(|h| h.tenants.is_empty() || h.tenants.contains(&incident.tenant))
                {
                    let stored = Stored::Webhook {
                        tenant: (incident.tenant.clone(), info.name.clone(), info.url.clone()),
                        incident: Box::new((*incident).clone()),
                        update: update.id,
                    };
                    if let Ok(payload) = serde_json::to_string(&stored) {
                        let group = format!("incident-{}-{}", incident.id, update.id);
                        outbox.put(&webhook_channel(&hook.url), &group, payload, now);
                    }
                }
            }
        }
    }
}
