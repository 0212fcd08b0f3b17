//! `rempart watch`: the vigilance level of each tenant of a running gateway, with its
//! evidence, and an operator's level with an expiry (admin API).

use std::path::Path;

use clap::Subcommand;

use super::{admin_call, admin_failure, admin_of};

/// `rempart watch` actions.
#[derive(Debug, Subcommand)]
pub enum WatchAction {
    /// Each tenant's level and the evidence behind it.
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
        /// Why (kept in the logs).
        #[arg(long)]
        reason: String,
    },
}

/// Runs `action` against the gateway of `config`; the exit code.
pub async fn run(config: &Path, action: WatchAction) -> i32 {
    let (address, token) = match admin_of(config, "asking the watch") {
        Ok(x) => x,
        Err(code) => return code,
    };
    match action {
        WatchAction::Status { json } => {
            match admin_call(
                address,
                &token,
                http::Method::GET,
                "/admin/watch".into(),
                None,
            )
            .await
            {
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
            let path = "/admin/watch/level".to_owned();
            match admin_call(
                address,
                &token,
                http::Method::POST,
                path,
                Some(body.to_string()),
            )
            .await
            {
                Ok((200, _)) => {
                    println!("{tenant}: {level} for {duration}");
                    0
                }
                other => admin_failure(other, address),
            }
        }
    }
}

/// The status as a table: tenant, level, then its evidence.
fn table(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return format!("{body}\n");
    };
    let mut out = String::from("tenant\tlevel\tevidence\n");
    for t in v["tenants"].as_array().into_iter().flatten() {
        let evidence: Vec<&str> = t["evidence"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str())
            .collect();
        let level = t["level"].as_str().unwrap_or("?");
        let set = if t["override_until_ms"].is_u64() {
            " (set by an operator)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{}\t{level}{set}\t{}\n",
            t["tenant"].as_str().unwrap_or("?"),
            evidence.join("; ")
        ));
    }
    out
}
