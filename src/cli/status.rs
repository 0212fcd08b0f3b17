//! `rempart status`: operators' side of the status pages. Everything but `export` goes
//! through the running gateway's admin API; `export` reads the configuration and the status
//! database directly and writes the static site (no gateway needed).

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{admin_call, admin_failure, admin_of};
use crate::status::model::parse_time;

/// `rempart status` actions.
#[derive(Debug, Subcommand)]
pub enum StatusAction {
    /// Show components (shown, detected, override) and incidents, drafts included.
    List {
        /// Only this tenant.
        tenant: Option<String>,
    },
    /// Open an incident (a draft unless `--publish`).
    Open {
        /// Tenant id.
        tenant: String,
        /// Title in French.
        #[arg(long)]
        title: String,
        /// First public message in French.
        #[arg(long)]
        message: String,
        /// Title in English.
        #[arg(long)]
        title_en: Option<String>,
        /// Message in English.
        #[arg(long)]
        message_en: Option<String>,
        /// none, minor (default), major or critical.
        #[arg(long, value_parser = ["none", "minor", "major", "critical"])]
        impact: Option<String>,
        /// Affected component (repeat for several).
        #[arg(long = "component")]
        components: Vec<String>,
        /// Show it to residents now.
        #[arg(long)]
        publish: bool,
    },
    /// Announce a maintenance window (a draft unless `--publish`).
    Maintenance {
        /// Tenant id.
        tenant: String,
        /// Title in French.
        #[arg(long)]
        title: String,
        /// Message in French.
        #[arg(long)]
        message: String,
        /// Start: `2026-12-01T20:00` (local time of the page), with `Z`/offset, unix seconds
        /// or `+2h`.
        #[arg(long)]
        from: String,
        /// End, same forms.
        #[arg(long)]
        until: String,
        /// Affected component (repeat for several).
        #[arg(long = "component")]
        components: Vec<String>,
        /// Title in English.
        #[arg(long)]
        title_en: Option<String>,
        /// Message in English.
        #[arg(long)]
        message_en: Option<String>,
        /// Show it to residents now.
        #[arg(long)]
        publish: bool,
    },
    /// Add a public update to an incident's timeline.
    Update {
        /// Tenant id.
        tenant: String,
        /// Incident id.
        id: u64,
        /// investigating, identified, monitoring, resolved (incidents); scheduled,
        /// in_progress, verifying, completed (maintenance).
        #[arg(long)]
        status: String,
        /// Message in French.
        #[arg(long)]
        message: String,
        /// Message in English.
        #[arg(long)]
        message_en: Option<String>,
    },
    /// Show a draft to residents.
    Publish {
        /// Tenant id.
        tenant: String,
        /// Incident id.
        id: u64,
    },
    /// Set a component's state by hand, or `auto` to return to detection.
    Component {
        /// Tenant id.
        tenant: String,
        /// Component id.
        component: String,
        /// operational, degraded_performance, partial_outage, major_outage,
        /// under_maintenance or auto.
        state: String,
    },
    /// Serve the maintenance page instead of forwarding (a route, or the whole tenant).
    MaintenanceMode {
        /// Tenant id.
        tenant: String,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// Route name (the whole tenant when absent).
        #[arg(long)]
        route: Option<String>,
    },
    /// Write the whole status site as static files (HTML, Atom, JSON) under DIR.
    Export {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs `rempart status ACTION` for the gateway configured in `config`.
pub async fn run(config: &Path, action: StatusAction) -> i32 {
    if let StatusAction::Export { out } = &action {
        return export(config, out);
    }
    let (address, token) = match admin_of(config, "changing the status page") {
        Ok(x) => x,
        Err(code) => return code,
    };
    let now = crate::clock::unix_now();
    let zone = crate::config::load(config)
        .map(|c| c.status.time_zone)
        .unwrap_or(crate::common::TimeZone::Paris);
    let (method, path, body) = match action {
        StatusAction::Export { .. } => return 0,
        StatusAction::List { tenant } => (
            http::Method::GET,
            tenant.map_or_else(
                || "/admin/status".to_owned(),
                |t| format!("/admin/status/{t}"),
            ),
            None,
        ),
        StatusAction::Open {
            tenant,
            title,
            message,
            title_en,
            message_en,
            impact,
            components,
            publish,
        } => (
            http::Method::POST,
            format!("/admin/status/{tenant}/incidents"),
            Some(serde_json::json!({
                "title": title, "message": message, "title_en": title_en, "message_en": message_en,
                "impact": impact, "components": components, "publish": publish,
            })),
        ),
        StatusAction::Maintenance {
            tenant,
            title,
            message,
            from,
            until,
            components,
            title_en,
            message_en,
            publish,
        } => {
            let (Some(starts), Some(ends)) =
                (parse_time(&from, now, zone), parse_time(&until, now, zone))
            else {
                eprintln!("cannot read --from/--until; write 2026-12-01T20:00, 2026-12-01T20:00+01:00, unix seconds or +2h");
                return 2;
            };
            (
                http::Method::POST,
                format!("/admin/status/{tenant}/incidents"),
                Some(serde_json::json!({
                    "kind": "maintenance", "title": title, "message": message, "title_en": title_en,
                    "message_en": message_en, "components": components, "publish": publish,
                    "starts_at": starts, "ends_at": ends,
                })),
            )
        }
        StatusAction::Update {
            tenant,
            id,
            status,
            message,
            message_en,
        } => (
            http::Method::POST,
            format!("/admin/status/{tenant}/incidents/{id}/updates"),
            Some(
                serde_json::json!({ "status": status, "message": message, "message_en": message_en }),
            ),
        ),
        StatusAction::Publish { tenant, id } => (
            http::Method::PATCH,
            format!("/admin/status/{tenant}/incidents/{id}"),
            Some(serde_json::json!({ "published": true })),
        ),
        StatusAction::Component {
            tenant,
            component,
            state,
        } => (
            http::Method::PUT,
            format!("/admin/status/{tenant}/components/{component}"),
            Some(serde_json::json!({ "state": state })),
        ),
        StatusAction::MaintenanceMode {
            tenant,
            state,
            route,
        } => (
            http::Method::POST,
            "/admin/maintenance".to_owned(),
            Some(serde_json::json!({ "tenant": tenant, "route": route, "on": state == "on" })),
        ),
    };
    let listing = method == http::Method::GET;
    match admin_call(address, &token, method, path, body.map(|b| b.to_string())).await {
        Ok((200 | 201, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if listing {
                print_boards(&v);
            } else if let Some(id) = v.get("id") {
                let published = v["published"] == true;
                println!(
                    "incident {id}: {} ({})",
                    v["updates"]
                        .as_array()
                        .and_then(|u| u.last())
                        .map_or("?", |u| u["status"].as_str().unwrap_or("?")),
                    if published {
                        "published"
                    } else {
                        "draft: publish with `rempart status publish`"
                    }
                );
            } else {
                println!("ok");
            }
            0
        }
        other => admin_failure(other, address),
    }
}

fn print_boards(v: &serde_json::Value) {
    let boards = match v.get("tenants").and_then(|t| t.as_array()) {
        Some(ts) => ts.clone(),
        None => vec![v.clone()],
    };
    for b in boards {
        println!("{}:", b["tenant"].as_str().unwrap_or("?"));
        for c in b["components"].as_array().cloned().unwrap_or_default() {
            let over = c["override"]
                .as_str()
                .map_or_else(String::new, |o| format!(" (set by hand: {o})"));
            println!(
                "  {}: {} (detected {}){over}",
                c["id"].as_str().unwrap_or("?"),
                c["shown"].as_str().unwrap_or("?"),
                c["detected"].as_str().unwrap_or("?"),
            );
        }
        for i in b["incidents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .take(20)
        {
            let last = i["updates"]
                .as_array()
                .and_then(|u| u.last())
                .cloned()
                .unwrap_or_default();
            println!(
                "  #{} [{}] {} · {}{}",
                i["id"],
                last["status"].as_str().unwrap_or("?"),
                i["title"].as_str().unwrap_or("?"),
                if i["published"] == true {
                    "published"
                } else {
                    "DRAFT"
                },
                if i["automatic"] == true {
                    " · automatic"
                } else {
                    ""
                },
            );
        }
        let e = &b["export"];
        if e["publish_ok"] == false {
            println!(
                "  off-site copy: LAST PUBLISH FAILED: {}",
                e["publish_error"].as_str().unwrap_or("?")
            );
        } else if e["publish_ok"] == true {
            println!("  off-site copy: published");
        }
    }
}

fn export(config: &Path, out: &Path) -> i32 {
    let runtime = match crate::config::load(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    if !runtime.tenants.iter().any(|t| t.status.is_some()) {
        eprintln!(
            "no tenant in {} has a [tenants.status] page",
            config.display()
        );
        return 2;
    }
    let now = crate::clock::unix_now();
    let service = if runtime.status.database.exists() {
        match crate::status::StatusService::read_only(&runtime, now) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        }
    } else {
        eprintln!(
            "note: no status database at {} yet; exporting pages without history",
            runtime.status.database.display()
        );
        crate::status::StatusService::empty(&runtime, now)
    };
    match crate::status::export::export_all(&service, out) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            0
        }
        Err(e) => {
            eprintln!("cannot write under {}: {e}", out.display());
            1
        }
    }
}
