//! The senders the outbox and the status notifier deliver through: SMTP (lettre), HTTP(S)
//! (hyper, system certificates) and syslog (RFC 5424 over UDP, or TCP with octet counting,
//! RFC 6587).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::AsyncWriteExt;

use super::Failure;
use crate::config::runtime::{Smtp, SmtpTls};

/// One message to send.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Mail {
    /// Recipient (personal data: never logged).
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// One-click unsubscribe address (RFC 8058), for updates.
    pub unsubscribe: Option<String>,
}

/// A mail transport for `smtp` (connection pool included).
pub fn mail_transport(smtp: &Smtp) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let builder = match smtp.tls {
        SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
            .map_err(|e| e.to_string())?,
        SmtpTls::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host).map_err(|e| e.to_string())?
        }
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
    };
    let mut builder = builder
        .port(smtp.port)
        .timeout(Some(Duration::from_secs(20)));
    if let Some((user, password)) = &smtp.credentials {
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            user.clone(),
            password.clone(),
        ));
    }
    Ok(builder.build())
}

/// The message `mail` from `smtp`'s sender.
pub fn mail_message(smtp: &Smtp, mail: &Mail) -> Result<Message, String> {
    let mut b = Message::builder()
        .from(smtp.from.parse().map_err(|e| format!("from: {e}"))?)
        .to(mail
            .to
            .parse()
            .map_err(|_| "recipient address refused".to_owned())?)
        .subject(mail.subject.clone())
        .header(ContentType::TEXT_PLAIN);
    if let Some(link) = &mail.unsubscribe {
        b = b
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{link}>"),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_owned(),
            ));
    }
    b.body(mail.body.clone()).map_err(|e| e.to_string())
}

/// The HTTP(S) client of webhooks and Matrix.
pub type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A client verifying servers against the system's certificates; `None` without them.
pub fn https_client() -> Option<HttpsClient> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| tracing::error!(target: "rempart::outbox", error = %e, "no system certificates: https webhooks cannot be verified"))
        .ok()?
        .https_or_http()
        .enable_http1()
        .build();
    Some(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends `mail` through `transport` once.
pub async fn mail(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    smtp: &Smtp,
    mail: &Mail,
) -> Result<(), Failure> {
    let message = mail_message(smtp, mail).map_err(Failure::permanent)?;
    match transport.send(message).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(Failure::permanent(format!("refused: {e}"))),
        Err(e) => Err(Failure::transient(e.to_string())),
    }
}

/// Sends `request`; a 2xx answer is a delivery, 4xx (but 408 and 429) a permanent refusal.
pub async fn http(
    client: &HttpsClient,
    request: http::Request<Full<Bytes>>,
) -> Result<(), Failure> {
    match tokio::time::timeout(Duration::from_secs(20), client.request(request)).await {
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => {
            let status = resp.status();
            let message = format!("answered {status}");
            if status.is_client_error()
                && status != http::StatusCode::REQUEST_TIMEOUT
                && status != http::StatusCode::TOO_MANY_REQUESTS
            {
                Err(Failure::permanent(message))
            } else {
                Err(Failure::transient(message))
            }
        }
        Ok(Err(e)) => Err(Failure::transient(e.to_string())),
        Err(_) => Err(Failure::transient("no answer in 20 s")),
    }
}

/// Sends one RFC 5424 `line` to a syslog collector: a datagram over UDP, or an
/// octet-counted frame over a fresh TCP connection.
pub async fn syslog(address: SocketAddr, tcp: bool, line: &str) -> Result<(), Failure> {
    let io = |e: std::io::Error| Failure::transient(e.to_string());
    if tcp {
        let mut stream = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(address),
        )
        .await
        .map_err(|_| Failure::transient("no connection in 10 s"))?
        .map_err(io)?;
        let frame = format!("{} {line}", line.len());
        stream.write_all(frame.as_bytes()).await.map_err(io)?;
        stream.shutdown().await.map_err(io)
    } else {
        let bind: SocketAddr = if address.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(bind).await.map_err(io)?;
        socket.send_to(line.as_bytes(), address).await.map_err(io)?;
        Ok(())
    }
}
