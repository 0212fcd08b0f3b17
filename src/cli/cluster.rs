//! `rempart cluster status`: a cluster node's link to Redis and the nodes it sees (admin
//! API).

use std::path::Path;

use clap::Subcommand;

use super::{admin_call, admin_failure, admin_of};

/// `rempart cluster` actions.
#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// This node, whether Redis is reachable (degraded: it defends alone), the last
    /// exchange, the changes waiting, and the nodes seen.
    Status {
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `action` against the gateway of `config`; the exit code (1 when the node is
/// degraded, so a monitoring check can call it).
pub async fn run(config: &Path, action: ClusterAction) -> i32 {
    let (address, token) = match admin_of(config, "asking the cluster's state") {
        Ok(x) => x,
        Err(code) => return code,
    };
    let ClusterAction::Status { json } = action;
    match admin_call(
        address,
        &token,
        http::Method::GET,
        "/admin/cluster".into(),
        None,
    )
    .await
    {
        Ok((200, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if json {
                println!("{body}");
            } else {
                print!("{}", describe(&v, crate::clock::unix_now_ms()));
            }
            i32::from(v["degraded"].as_bool().unwrap_or(true))
        }
        Ok((404, _)) => {
            eprintln!("this gateway is not in cluster mode (no [cluster] in its configuration)");
            2
        }
        other => admin_failure(other, address),
    }
}

fn ago(now_ms: u64, at: Option<u64>) -> String {
    at.map_or_else(
        || "never".to_owned(),
        |t| format!("{:.1} s ago", now_ms.saturating_sub(t) as f64 / 1000.0),
    )
}

/// The status as text.
fn describe(v: &serde_json::Value, now_ms: u64) -> String {
    let mut out = format!(
        "node {} on {}: {}\nlast exchange with Redis: {}\nchanges waiting for Redis: {}\nbans sent: {}, received: {}\n",
        v["node"].as_str().unwrap_or("?"),
        v["redis"].as_str().unwrap_or("?"),
        if v["degraded"].as_bool().unwrap_or(true) {
            format!(
                "DEGRADED since {} (Redis out of reach: defending alone){}",
                ago(now_ms, v["degraded_since_ms"].as_u64()),
                v["degraded_why"]
                    .as_str()
                    .map(|why| format!("\n  last failure: {why}"))
                    .unwrap_or_default()
            )
        } else {
            "connected".to_owned()
        },
        ago(now_ms, v["last_sync_ms"].as_u64()),
        v["pending"].as_u64().unwrap_or(0),
        v["bans_sent"].as_u64().unwrap_or(0),
        v["bans_received"].as_u64().unwrap_or(0),
    );
    let roles: Vec<&str> = [
        ("acme_lease", "orders the certificates"),
        ("status_lease", "writes the status boards"),
    ]
    .into_iter()
    .filter(|(key, _)| v[*key].as_bool().unwrap_or(false))
    .map(|(_, role)| role)
    .collect();
    if !roles.is_empty() {
        out.push_str(&format!("this node {}\n", roles.join(" and ")));
    }
    let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("nodes seen: {}\n", nodes.len()));
    for n in nodes {
        out.push_str(&format!(
            "  {}{} (version {}, heartbeat {})\n",
            n["node"].as_str().unwrap_or("?"),
            if n["this"].as_bool().unwrap_or(false) {
                " (this node)"
            } else {
                ""
            },
            n["version"].as_str().unwrap_or("?"),
            ago(now_ms, n["at_ms"].as_u64()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_status_reads_for_people() {
        let v = serde_json::json!({
            "node": "mairie-1", "redis": "redis://10.0.0.5:6379/0", "degraded": false,
            "last_sync_ms": 9_000, "pending": 0, "bans_sent": 3, "bans_received": 5,
            "nodes": [
                {"node": "agglo-1", "version": "0.1.0", "at_ms": 9_500, "this": false},
                {"node": "mairie-1", "version": "0.1.0", "at_ms": 9_000, "this": true}
            ]
        });
        let text = super::describe(&v, 10_000);
        assert!(
            text.contains("node mairie-1 on redis://10.0.0.5:6379/0: connected"),
            "{text}"
        );
        assert!(text.contains("nodes seen: 2"), "{text}");
        assert!(
            text.contains("mairie-1 (this node) (version 0.1.0, heartbeat 1.0 s ago)"),
            "{text}"
        );
        let mut down = v.clone();
        down["degraded"] = true.into();
        down["degraded_since_ms"] = 4_000.into();
        assert!(super::describe(&down, 10_000).contains("DEGRADED since 6.0 s ago"));
    }
}
