//! `rempart watch`: the vigilance levels of a running gateway with their evidence and the
//! defences they switch on, an operator's level with an expiry, security incidents (list,
//! show, report, open, acknowledge, note, resolve) and the live events (admin API).

use std::path::Path;

use clap::Subcommand;

use super::{admin_call, admin_failure, admin_of};

/// `rempart watch` actions.
#[derive(Debug, Subcommand)]
pub enum WatchAction {
    /// The global level, each tenant's with its evidence and defences, active incidents.
    Status {
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a tenant's level until an expiry (the signals are ignored meanwhile; then the level
    /// falls step by step like after any attack).
    Level {
        /// Tenant id.
        tenant: String,
        /// vert, jaune, orange or rouge.
        level: String,
        /// How long (`2h`).
        #[arg(long = "for")]
        duration: String,
        /// Why (kept in the logs and the incident).
        #[arg(long)]
        reason: String,
    },
    /// Security incidents.
    Incident {
        /// What to do with incidents.
        #[command(subcommand)]
        action: IncidentAction,
    },
    /// Follow level changes and incident events as they happen (Ctrl-C to stop).
    Events,
}

/// `rempart watch incident` actions.
#[derive(Debug, Subcommand)]
pub enum IncidentAction {
    /// Every incident kept, newest first.
    List {
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// What is hitting us and since when: one incident's report (Markdown: summary, peak
    /// figures, top sources, what the defence did, timeline).
    Show {
        /// Incident number.
        id: u64,
        /// The incident as JSON instead.
        #[arg(long)]
        json: bool,
        /// Cluster mode: the node the incident belongs to (numbers are each node's own;
        /// `list` shows them as NODE/NUMBER).
        #[arg(long)]
        node: Option<String>,
    },
    /// Open an incident by hand (say, an agent reports a phishing mail).
    Open {
        /// Tenant id.
        tenant: String,
        /// vert, jaune, orange or rouge.
        level: String,
        /// What happened.
        text: String,
        /// Who (default: the login name).
        #[arg(long)]
        by: Option<String>,
    },
    /// Take an incident (stops its escalation).
    Ack {
        /// Incident number.
        id: u64,
        /// Who (default: the login name).
        #[arg(long)]
        by: Option<String>,
        /// Cluster mode: the node the incident belongs to (numbers are each node's own;
        /// `list` shows them as NODE/NUMBER).
        #[arg(long)]
        node: Option<String>,
    },
    /// Add a note to an incident's timeline.
    Note {
        /// Incident number.
        id: u64,
        /// The note.
        text: String,
        /// Who (default: the login name).
        #[arg(long)]
        by: Option<String>,
        /// Cluster mode: the node the incident belongs to (numbers are each node's own;
        /// `list` shows them as NODE/NUMBER).
        #[arg(long)]
        node: Option<String>,
    },
    /// Close an incident.
    Resolve {
        /// Incident number.
        id: u64,
        /// What was done (optional).
        #[arg(default_value = "")]
        text: String,
        /// Who (default: the login name).
        #[arg(long)]
        by: Option<String>,
        /// Cluster mode: the node the incident belongs to (numbers are each node's own;
        /// `list` shows them as NODE/NUMBER).
        #[arg(long)]
        node: Option<String>,
    },
}

/// The `?node=` of an incident of another node (names are letters, digits, `.`, `_`, `-`).
fn on(node: &Option<String>) -> String {
    node.as_ref().map_or_else(String::new, |n| {
        format!(
            "?node={}",
            n.chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .collect::<String>()
        )
    })
}

/// The operator's name: `--by`, else the login name.
fn operator(by: Option<String>) -> String {
    by.or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "operator".to_owned())
}

/// Runs `action` against the gateway of `config`; the exit code.
pub async fn run(config: &Path, action: WatchAction) -> i32 {
    let (address, token) = match admin_of(config, "asking the watch") {
        Ok(x) => x,
        Err(code) => return code,
    };
    let call = |method: http::Method, path: String, body: Option<serde_json::Value>| {
        let token = token.clone();
        async move { admin_call(address, &token, method, path, body.map(|b| b.to_string())).await }
    };
    match action {
        WatchAction::Status { json } => {
            match call(http::Method::GET, "/admin/watch".into(), None).await {
                Ok((200, body)) => {
                    print!("{}", if json { body } else { table(&body) });
                    0
                }
                other => admin_failure(other, address),
            }
        }
        WatchAction::Level {
            tenant,
            level,
            duration,
            reason,
        } => {
            let body = serde_json::json!({
                "tenant": tenant, "level": level, "for": duration, "reason": reason,
            });
            match call(http::Method::POST, "/admin/watch/level".into(), Some(body)).await {
                Ok((200, _)) => {
                    println!("{tenant}: {level} for {duration}");
                    0
                }
                other => admin_failure(other, address),
            }
        }
        WatchAction::Events => events(address, &token).await,
        WatchAction::Incident { action } => {
            let (method, path, body) = match &action {
                IncidentAction::List { .. } => {
                    (http::Method::GET, "/admin/watch/incidents".to_owned(), None)
                }
                IncidentAction::Show {
                    id,
                    json: true,
                    node,
                } => (
                    http::Method::GET,
                    format!("/admin/watch/incidents/{id}{}", on(node)),
                    None,
                ),
                IncidentAction::Show {
                    id,
                    json: false,
                    node,
                } => (
                    http::Method::GET,
                    format!("/admin/watch/incidents/{id}/report{}", on(node)),
                    None,
                ),
                IncidentAction::Open {
                    tenant,
                    level,
                    text,
                    by,
                } => (
                    http::Method::POST,
                    "/admin/watch/incidents".to_owned(),
                    Some(
                        serde_json::json!({"tenant": tenant, "level": level, "text": text, "by": operator(by.clone())}),
                    ),
                ),
                IncidentAction::Ack { id, by, node } => (
                    http::Method::POST,
                    format!("/admin/watch/incidents/{id}/ack{}", on(node)),
                    Some(serde_json::json!({"by": operator(by.clone())})),
                ),
                IncidentAction::Note { id, text, by, node } => (
                    http::Method::POST,
                    format!("/admin/watch/incidents/{id}/note{}", on(node)),
                    Some(serde_json::json!({"by": operator(by.clone()), "text": text})),
                ),
                IncidentAction::Resolve { id, text, by, node } => (
                    http::Method::POST,
                    format!("/admin/watch/incidents/{id}/resolve{}", on(node)),
                    Some(serde_json::json!({"by": operator(by.clone()), "text": text})),
                ),
            };
            match call(method, path, body).await {
                Ok((200, body)) => {
                    match action {
                        IncidentAction::List { json: false } => print!("{}", incident_table(&body)),
                        IncidentAction::List { json: true } | IncidentAction::Show { .. } => {
                            print!("{body}");
                            if !body.ends_with('\n') {
                                println!();
                            }
                        }
                        _ => {
                            let v: serde_json::Value =
                                serde_json::from_str(&body).unwrap_or_default();
                            println!("incident {}: done", v["incident"]);
                        }
                    }
                    0
                }
                other => admin_failure(other, address),
            }
        }
    }
}

/// Prints the event stream's data lines until it ends.
async fn events(address: std::net::SocketAddr, token: &str) -> i32 {
    use http_body_util::{BodyExt, Empty};
    let connect = async {
        let stream = tokio::net::TcpStream::connect(address).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::get("/admin/watch/events")
            .header(http::header::HOST, address.to_string())
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::<bytes::Bytes>::new())?;
        anyhow::Ok(sender.send_request(req).await?)
    };
    let resp = match connect.await {
        Ok(r) if r.status() == 200 => r,
        Ok(r) => return admin_failure(Ok((r.status().as_u16(), String::new())), address),
        Err(e) => return admin_failure(Err(e), address),
    };
    let mut body = resp.into_body();
    let mut pending = String::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                println!("{data}");
            }
        }
    }
    0
}

/// The status as a table: the global level, each tenant's with its evidence and defences,
/// then active incidents.
fn table(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return format!("{body}\n");
    };
    let mut out = format!(
        "global level: {}\n\ntenant\tlevel\tincident\tevidence\tdefences\n",
        v["global"].as_str().unwrap_or("?")
    );
    let strings = |x: &serde_json::Value| -> Vec<String> {
        x.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect()
    };
    for t in v["tenants"].as_array().into_iter().flatten() {
        let level = t["level"].as_str().unwrap_or("?");
        let mut notes = Vec::new();
        if t["override_until_ms"].is_u64() {
            notes.push("set by an operator");
        }
        if t["learning"].as_bool() == Some(true) {
            notes.push("learning");
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        let incident = t["incident"]
            .as_u64()
            .map_or("-".to_owned(), |i| i.to_string());
        out.push_str(&format!(
            "{}\t{level}{notes}\t{incident}\t{}\t{}\n",
            t["tenant"].as_str().unwrap_or("?"),
            strings(&t["evidence"]).join("; "),
            strings(&t["actions"]).join("; "),
        ));
    }
    if let Some(a) = v["alerts"].as_object() {
        out.push_str(&format!(
            "\nalerts: {} waiting, {} sent, {} given up\n",
            a.get("pending")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            a.get("sent")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            a.get("failed")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
        ));
    }
    out
}

fn incident_table(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return format!("{body}\n");
    };
    let mut out = String::from("incident\ttenant\tlevel\tpeak\tstate\tactive\topened (unix ms)\n");
    for i in v["incidents"].as_array().into_iter().flatten() {
        let number = match i["node"].as_str() {
            Some(node) => format!("{node}/{}", i["id"]),
            None => i["id"].to_string(),
        };
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            number,
            i["tenant"].as_str().unwrap_or("?"),
            i["level"].as_str().unwrap_or("?"),
            i["peak"].as_str().unwrap_or("?"),
            i["state"].as_str().unwrap_or("?"),
            i["active"],
            i["opened_ms"],
        ));
    }
    out
}
