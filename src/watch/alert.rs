//! Alerts to operators: what the outbox stores for an incident's notice (`AlertMessage`),
//! which channels receive it, and how each kind of channel says it: an e-mail, a signed JSON
//! webhook, a Matrix room message (Tchap is Matrix), an RFC 5424 syslog line for a SIEM.
//! The rendering is pure; `AlertCourier` delivers through `outbox::send`.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use super::certificates::{Kind, Reminder};
use super::incident::{Incident, Notice, State};
use super::level::Level;
use crate::config::runtime::{AlertChannel, AlertTarget, Smtp};
use crate::outbox::send::{self, HttpsClient, Mail};
use crate::outbox::{Courier, Delivery, Failure, Message};

/// What is stored in the outbox for one notice of one incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertMessage {
    /// What happened.
    pub notice: Notice,
    /// The incident's number.
    pub incident: u64,
    /// Tenant id.
    pub tenant: String,
    /// Tenant name.
    pub tenant_name: String,
    /// The level now.
    pub level: Level,
    /// The highest level reached.
    pub peak: Level,
    /// Where the incident stands.
    pub state: State,
    /// When it opened (unix ms).
    pub opened_ms: u64,
    /// When this was told (unix ms).
    pub at_ms: u64,
    /// The latest events (level changes with their evidence, actions, operators' marks).
    pub lines: Vec<String>,
    /// The local time of the opening, for people.
    pub opened_local: String,
    /// A certificate reminder (`Notice::Certificate`; no incident then, `incident` is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Reminder>,
}

/// Events shown in a message at most (the incident report has them all).
const LINES: usize = 12;

impl AlertMessage {
    /// The message for `notice` of `incident` at `now_ms`.
    pub fn new(
        incident: &Incident,
        notice: Notice,
        now_ms: u64,
        zone: crate::common::TimeZone,
    ) -> Self {
        let lines = incident
            .events
            .iter()
            .rev()
            .take(LINES)
            .rev()
            .map(|e| {
                let mut line = format!("{} {}", super::incident::local_time(e.at_ms, zone), e.text);
                if !e.evidence.is_empty() {
                    line.push_str(" [");
                    line.push_str(&e.evidence.join("; "));
                    line.push(']');
                }
                line
            })
            .collect();
        Self {
            notice,
            incident: incident.id,
            tenant: incident.tenant.clone(),
            tenant_name: incident.tenant_name.clone(),
            level: incident.level,
            peak: incident.peak,
            state: incident.state,
            opened_ms: incident.opened_ms,
            at_ms: now_ms,
            lines,
            opened_local: super::incident::local_time(incident.opened_ms, zone),
            certificate: None,
        }
    }

    /// The message for a certificate `reminder` of tenant `tenant_name` at `now_ms`.
    pub fn certificate(
        reminder: Reminder,
        tenant_name: &str,
        now_ms: u64,
        zone: crate::common::TimeZone,
    ) -> Self {
        let end = super::incident::local_time(reminder.not_after_s.saturating_mul(1000), zone);
        let mut lines = vec![format!(
            "Noms : {} · fin de validité : {end}",
            reminder.hosts.join(", ")
        )];
        lines.push(match (reminder.kind, reminder.acme) {
            (Kind::Renewed, _) => "Le nouveau certificat est servi ; rien d'autre à faire.".into(),
            (_, true) => "Certificat de l'autorité ACME : son renouvellement automatique échoue \
                          depuis des jours. Voir les lignes rempart::acme du journal et \
                          rempart_acme_orders_total{result=\"failed\"} (nom non résolu vers ce \
                          serveur, port 80 ou 443 fermé, autorité injoignable)."
                .into(),
            (_, false) => "Certificat lu d'un fichier : le renouveler (certbot, lego ou \
                           l'autorité de la collectivité), l'écrire à sa place ; Rempart le \
                           relit et le sert sans interruption."
                .into(),
        });
        Self {
            notice: Notice::Certificate,
            incident: 0,
            tenant: reminder.tenant.clone(),
            tenant_name: tenant_name.to_owned(),
            level: reminder.level,
            peak: reminder.level,
            state: State::Open,
            opened_ms: now_ms,
            at_ms: now_ms,
            lines,
            opened_local: super::incident::local_time(now_ms, zone),
            certificate: Some(reminder),
        }
    }

    /// The outbox group: an incident's opening is never merged away; its later notices
    /// replace one another while they wait.
    pub fn group(&self) -> String {
        if let Some(c) = &self.certificate {
            return format!("certificate-{}", c.tenant);
        }
        match self.notice {
            Notice::Opened => format!("incident-{}-opened", self.incident),
            Notice::Escalated => format!("incident-{}-escalated", self.incident),
            _ => format!("incident-{}", self.incident),
        }
    }

    fn what(&self) -> &'static str {
        match self.notice {
            Notice::Opened => "nouvel incident de sécurité",
            Notice::Raised => "niveau relevé",
            Notice::Lowered => "niveau abaissé",
            Notice::Calm => "retour au vert, attaque terminée",
            Notice::Acknowledged => "pris en charge",
            Notice::Resolved => "clos",
            Notice::Escalated => "ESCALADE : non pris en charge",
            Notice::Certificate => "certificat TLS",
        }
    }

    /// One line for subjects and chat: `[Rempart] Ville : incident 3, niveau rouge (nouvel
    /// incident de sécurité)`.
    pub fn headline(&self) -> String {
        if let Some(c) = &self.certificate {
            let host = c.hosts.first().map_or("", String::as_str);
            let what = match c.kind {
                Kind::Expiring if c.days_left == 0 => "expire aujourd'hui".to_owned(),
                Kind::Expiring if c.days_left == 1 => "expire demain".to_owned(),
                Kind::Expiring => format!("expire dans {} jours", c.days_left),
                Kind::Expired => "a EXPIRÉ : les navigateurs refusent le site".to_owned(),
                Kind::Renewed => "renouvelé".to_owned(),
            };
            return format!(
                "[Rempart] {} : certificat TLS de {host} {what}",
                self.tenant_name
            );
        }
        format!(
            "[Rempart] {} : incident {}, niveau {} ({})",
            self.tenant_name,
            self.incident,
            self.level,
            self.what()
        )
    }

    /// The text of an e-mail or chat message.
    pub fn text(&self) -> String {
        if self.certificate.is_some() {
            let mut out = format!("{}\n\n", self.headline());
            for l in &self.lines {
                out.push_str("- ");
                out.push_str(l);
                out.push('\n');
            }
            out.push_str("\nCertificats servis : rempart check (avertit à 14 jours de la fin)\n");
            return out;
        }
        let mut out = format!(
            "{}\n\nOuvert le {} · plus haut niveau : {} · état : {}\n\n",
            self.headline(),
            self.opened_local,
            self.peak,
            match self.state {
                State::Open => "non pris en charge",
                State::Acknowledged => "pris en charge",
                State::Resolved => "clos",
            }
        );
        for l in &self.lines {
            out.push_str("- ");
            out.push_str(l);
            out.push('\n');
        }
        out.push_str(&format!(
            "\nTout l'incident : rempart watch incident show {}\nPrendre en charge : rempart watch incident ack {}\n",
            self.incident, self.incident
        ));
        out
    }
}

/// Whether `channel` receives `message`.
pub fn wants(channel: &AlertChannel, message: &AlertMessage) -> bool {
    if !channel.tenants.is_empty() && !channel.tenants.contains(&message.tenant) {
        return false;
    }
    if channel.escalation {
        return message.notice == Notice::Escalated;
    }
    message.peak >= channel.least
}

/// The signed JSON document a webhook receives (HMAC-SHA256 over `timestamp.body` in
/// `X-Rempart-Signature`, the same scheme as the status webhooks).
pub fn webhook_request(
    url: &http::Uri,
    secret: Option<&str>,
    message: &AlertMessage,
    delivery: &str,
    now_s: u64,
) -> Option<http::Request<Full<Bytes>>> {
    let event = match &message.certificate {
        Some(c) => format!(
            "watch.certificate.{}",
            serde_json::to_value(c.kind).ok()?.as_str()?
        ),
        None => format!(
            "watch.incident.{}",
            serde_json::to_value(message.notice).ok()?.as_str()?
        ),
    };
    let body = serde_json::json!({
        "event": event,
        "delivery": delivery,
        "incident": message,
    })
    .to_string();
    let mut b = http::Request::post(url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "rempart")
        .header("x-rempart-delivery", delivery)
        .header("x-rempart-timestamp", now_s.to_string());
    if let Some(secret) = secret {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let mut signed = now_s.to_string().into_bytes();
        signed.push(b'.');
        signed.extend_from_slice(body.as_bytes());
        let tag = ring::hmac::sign(&key, &signed);
        b = b.header(
            "x-rempart-signature",
            format!("sha256={}", send::hex(tag.as_ref())),
        );
    }
    b.body(Full::new(Bytes::from(body))).ok()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A Matrix room message (client-server API: `PUT
/// /_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}`, the transaction id making a
/// retry idempotent).
pub fn matrix_request(
    homeserver: &http::Uri,
    room: &str,
    token: &str,
    message: &AlertMessage,
    txn: &str,
) -> Option<http::Request<Full<Bytes>>> {
    let mut html = format!(
        "<p><strong>{}</strong></p><ul>",
        html_escape(&message.headline())
    );
    for l in &message.lines {
        html.push_str(&format!("<li>{}</li>", html_escape(l)));
    }
    if message.certificate.is_some() {
        html.push_str("</ul><p><code>rempart check</code></p>");
    } else {
        html.push_str(&format!(
            "</ul><p><code>rempart watch incident show {}</code></p>",
            message.incident
        ));
    }
    let body = serde_json::json!({
        "msgtype": "m.text",
        "body": message.text(),
        "format": "org.matrix.custom.html",
        "formatted_body": html,
    })
    .to_string();
    let base = homeserver.to_string();
    let room: String = form_urlencoded::byte_serialize(room.as_bytes()).collect();
    let url = format!(
        "{}/_matrix/client/v3/rooms/{room}/send/m.room.message/rempart-{txn}",
        base.trim_end_matches('/')
    );
    http::Request::put(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "rempart")
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body)))
        .ok()
}

fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The syslog line (RFC 5424): facility security/authorization (4), severity from the
/// level (notice at vert, warning at jaune, error at orange, critical at rouge), structured
/// data `[rempart@32473 incident tenant level peak notice]`, the headline and latest event.
pub fn syslog_line(message: &AlertMessage, hostname: &str, now_ms: u64) -> String {
    let severity = match message.level {
        Level::Vert => 5,
        Level::Jaune => 4,
        Level::Orange => 3,
        Level::Rouge => 2,
    };
    let pri = 4 * 8 + severity;
    let secs = now_ms / 1000;
    let (y, mo, d) = crate::common::civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    let timestamp = format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t / 3600,
        t / 60 % 60,
        t % 60,
        now_ms % 1000
    );
    let host: String = hostname
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let host = if host.is_empty() {
        "-".to_owned()
    } else {
        host
    };
    let notice = serde_json::to_value(message.notice)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut msg = message.headline();
    if let Some(last) = message.lines.last() {
        msg.push_str(" — ");
        msg.push_str(last);
    }
    format!(
        "<{pri}>1 {timestamp} {host} rempart {} {} [rempart@32473 incident=\"{}\" tenant=\"{}\" level=\"{}\" peak=\"{}\" notice=\"{}\"] {}",
        std::process::id(),
        if message.certificate.is_some() {
            "CERTIFICATE"
        } else {
            "INCIDENT"
        },
        message.incident,
        sd_escape(&message.tenant),
        message.level,
        message.peak,
        notice,
        msg.replace(['\n', '\r'], " ")
    )
}

/// What the courier needs from the configuration (swapped on reload).
#[derive(Debug, Clone, Default)]
pub struct Channels {
    /// The alert channels.
    pub alerts: Vec<AlertChannel>,
    /// The mail server.
    pub smtp: Option<Smtp>,
}

/// Delivers alert messages from the outbox.
pub struct AlertCourier {
    channels: RwLock<Arc<Channels>>,
    /// Made at the first webhook or Matrix message (the system's certificates cost a few
    /// MiB once parsed: not for a gateway that never sends one).
    client: std::sync::OnceLock<Option<HttpsClient>>,
    hostname: String,
    mail: tokio::sync::Mutex<Option<(Smtp, lettre::AsyncSmtpTransport<lettre::Tokio1Executor>)>>,
}

impl AlertCourier {
    /// A courier for `channels`.
    pub fn new(channels: Channels) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        Self {
            channels: RwLock::new(Arc::new(channels)),
            client: std::sync::OnceLock::new(),
            hostname,
            mail: tokio::sync::Mutex::new(None),
        }
    }

    /// New settings (a reload).
    pub fn set(&self, channels: Channels) {
        *self
            .channels
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(channels);
    }

    fn client(&self) -> Result<&HttpsClient, Failure> {
        self.client
            .get_or_init(send::https_client)
            .as_ref()
            .ok_or_else(|| Failure::transient("no HTTP client (no system certificates)"))
    }

    fn current(&self) -> Arc<Channels> {
        self.channels
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Courier for Arc<AlertCourier> {
    fn per_minute(&self, channel: &str) -> Option<u32> {
        self.current()
            .alerts
            .iter()
            .find(|c| c.name == channel)
            .map(|c| c.max_per_minute)
    }

    fn deliver(&self, m: Message) -> Delivery {
        let this = self.clone();
        Box::pin(async move {
            let settings = this.current();
            let channel = settings
                .alerts
                .iter()
                .find(|c| c.name == m.channel)
                .ok_or_else(|| Failure::permanent("channel no longer configured"))?;
            let message: AlertMessage = serde_json::from_str(&m.payload)
                .map_err(|e| Failure::permanent(format!("unreadable message: {e}")))?;
            let now_ms = crate::clock::unix_now_ms();
            match &channel.target {
                AlertTarget::Email { to } => {
                    let smtp = settings
                        .smtp
                        .clone()
                        .ok_or_else(|| Failure::transient("no [status.smtp] mail server"))?;
                    let mut cached = this.mail.lock().await;
                    if cached.as_ref().is_none_or(|(s, _)| *s != smtp) {
                        let t = send::mail_transport(&smtp).map_err(Failure::transient)?;
                        *cached = Some((smtp.clone(), t));
                    }
                    let Some((_, transport)) = cached.as_ref() else {
                        return Err(Failure::transient("no mail transport"));
                    };
                    for rcpt in to {
                        let mail = Mail {
                            to: rcpt.clone(),
                            subject: message.headline(),
                            body: message.text(),
                            unsubscribe: None,
                        };
                        send::mail(transport, &smtp, &mail).await?;
                    }
                    Ok(())
                }
                AlertTarget::Webhook { url, secret } => {
                    let client = this.client()?;
                    let req = webhook_request(
                        url,
                        secret.as_deref(),
                        &message,
                        &m.delivery_id(),
                        now_ms / 1000,
                    )
                    .ok_or_else(|| Failure::permanent("cannot build the request"))?;
                    send::http(client, req).await
                }
                AlertTarget::Matrix {
                    homeserver,
                    room,
                    token,
                } => {
                    let client = this.client()?;
                    let req = matrix_request(homeserver, room, token, &message, &m.delivery_id())
                        .ok_or_else(|| Failure::permanent("cannot build the request"))?;
                    send::http(client, req).await
                }
                AlertTarget::Syslog { address, tcp } => {
                    send::syslog(
                        *address,
                        *tcp,
                        &syslog_line(&message, &this.hostname, now_ms),
                    )
                    .await
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::incident::{Incidents, Rules};
    use crate::watch::level::{Cause, Change};

    fn message() -> AlertMessage {
        let mut b = Incidents::new(
            Rules {
                open_at: Level::Orange,
                escalate_after_ms: 0,
            },
            Vec::new(),
            0,
        );
        let told = b
            .on_change(
                "ville",
                "Ville de <Saint-Exemple>",
                &Change {
                    from: Level::Vert,
                    to: Level::Rouge,
                    cause: Cause::Raised,
                    at_ms: 1_796_631_302_000,
                },
                vec!["request_rate 5000.0 (usual 40.0) -> rouge".into()],
                &[],
                &["under-attack mode".into()],
                1_796_631_302_000,
            )
            .unwrap();
        AlertMessage::new(
            &told.incident,
            told.notice,
            1_796_631_302_000,
            crate::common::TimeZone::Paris,
        )
    }

    fn channel(least: Level, escalation: bool, tenants: &[&str]) -> AlertChannel {
        AlertChannel {
            name: "c".into(),
            target: AlertTarget::Email { to: vec![] },
            least,
            tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
            escalation,
            max_per_minute: 6,
        }
    }

    #[test]
    fn who_receives_what() {
        let m = message();
        assert!(wants(&channel(Level::Orange, false, &[]), &m));
        assert!(wants(&channel(Level::Rouge, false, &["ville"]), &m));
        assert!(!wants(&channel(Level::Rouge, false, &["autre"]), &m));
        assert!(
            !wants(&channel(Level::Orange, true, &[]), &m),
            "escalations only"
        );
        let mut e = m.clone();
        e.notice = Notice::Escalated;
        assert!(wants(&channel(Level::Orange, true, &[]), &e));
        assert_ne!(m.group(), e.group(), "an escalation is never merged away");
    }

    #[test]
    fn a_certificate_reminder_reads_as_one_in_every_channel() {
        let reminder = Reminder {
            kind: Kind::Expiring,
            tenant: "ville".into(),
            hosts: vec!["ville.fr".into(), "www.ville.fr".into()],
            not_after_s: 1_797_000_000,
            days_left: 6,
            acme: true,
            level: Level::Orange,
        };
        let m = AlertMessage::certificate(
            reminder.clone(),
            "Ville",
            1_796_500_000_000,
            crate::common::TimeZone::Paris,
        );
        assert_eq!(
            m.headline(),
            "[Rempart] Ville : certificat TLS de ville.fr expire dans 6 jours"
        );
        assert!(m.text().contains("ville.fr, www.ville.fr"), "{}", m.text());
        assert!(
            m.text().contains("rempart_acme_orders_total"),
            "{}",
            m.text()
        );
        assert!(!m.text().contains("incident show"), "{}", m.text());
        // Routed like an alert of its level, never to escalation-only channels.
        assert!(wants(&channel(Level::Orange, false, &["ville"]), &m));
        assert!(!wants(&channel(Level::Rouge, false, &[]), &m));
        assert!(!wants(&channel(Level::Orange, true, &[]), &m));
        // Its own outbox group: a later reminder replaces a waiting one, never an incident's.
        assert_eq!(m.group(), "certificate-ville");
        let url: http::Uri = "http://127.0.0.1:9/hook".parse().unwrap();
        let hook = webhook_request(&url, None, &m, "1-0", 1).unwrap();
        let body = futures_body(hook);
        assert!(
            body.contains("\"event\":\"watch.certificate.expiring\""),
            "{body}"
        );
        let line = syslog_line(&m, "gw1", 1_796_500_000_000);
        assert!(line.contains(" CERTIFICATE [rempart@32473"), "{line}");
        // Stored in the outbox and read back (older messages had no certificate).
        let back: AlertMessage = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        let old: AlertMessage =
            serde_json::from_str(&serde_json::to_string(&message()).unwrap()).unwrap();
        assert_eq!(old.certificate, None);
        let expired = AlertMessage::certificate(
            Reminder {
                kind: Kind::Expired,
                days_left: -1,
                acme: false,
                level: Level::Rouge,
                ..reminder
            },
            "Ville",
            1_796_500_000_000,
            crate::common::TimeZone::Paris,
        );
        assert!(
            expired.headline().contains("a EXPIRÉ"),
            "{}",
            expired.headline()
        );
        assert!(expired.text().contains("certbot"), "{}", expired.text());
    }

    #[test]
    fn each_channel_says_it_its_way() {
        let m = message();
        assert_eq!(
            m.headline(),
            "[Rempart] Ville de <Saint-Exemple> : incident 1, niveau rouge (nouvel incident de sécurité)"
        );
        let text = m.text();
        assert!(
            text.contains("2026-12-07 09:15:02 (+01:00) level vert -> rouge"),
            "{text}"
        );
        assert!(text.contains("under-attack mode"), "{text}");
        // Webhook: signed over timestamp and body.
        let req = webhook_request(
            &"http://127.0.0.1:9/h".parse().unwrap(),
            Some("k"),
            &m,
            "1-0",
            1_000,
        )
        .unwrap();
        let sig = req.headers()["x-rempart-signature"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = futures_body(req);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
        let expected = ring::hmac::sign(&key, format!("1000.{body}").as_bytes());
        assert_eq!(sig, format!("sha256={}", send::hex(expected.as_ref())));
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["event"], "watch.incident.opened");
        assert_eq!(doc["incident"]["level"], "rouge");
        // Matrix: the room id escaped in the path, HTML escaped, a transaction id.
        let req = matrix_request(
            &"http://127.0.0.1:9/".parse().unwrap(),
            "!r:ville.fr",
            "tok",
            &m,
            "1-0",
        )
        .unwrap();
        assert_eq!(
            req.uri().path(),
            "/_matrix/client/v3/rooms/%21r%3Aville.fr/send/m.room.message/rempart-1-0"
        );
        assert_eq!(req.headers()["authorization"], "Bearer tok");
        let doc: serde_json::Value = serde_json::from_str(&futures_body(req)).unwrap();
        assert!(doc["formatted_body"]
            .as_str()
            .unwrap()
            .contains("Ville de &lt;Saint-Exemple&gt;"));
        // Syslog: RFC 5424 header, critical at rouge, structured data.
        let line = syslog_line(&m, "gw1", 1_796_631_302_123);
        assert!(
            line.starts_with("<34>1 2026-12-07T08:15:02.123Z gw1 rempart "),
            "{line}"
        );
        assert!(line.contains("[rempart@32473 incident=\"1\" tenant=\"ville\" level=\"rouge\" peak=\"rouge\" notice=\"opened\"]"), "{line}");
        assert!(!line.contains('\n'));
    }

    fn futures_body(req: http::Request<Full<Bytes>>) -> String {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(req.into_body().collect()).unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}
