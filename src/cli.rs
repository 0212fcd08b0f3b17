//! Subcommands: `run`, `check`, `demo`, `reload`. Each returns a process exit code.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Rempart: an edge gateway that keeps public services reachable under attack.
#[derive(Debug, Parser)]
#[command(name = "rempart", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Log format: json (default) or text.
        #[arg(long, default_value = "json")]
        log_format: String,
        /// Do not write access-log lines.
        #[arg(long)]
        no_access_log: bool,
    },
    /// Validate a configuration file: exit 0, or print every problem and exit 2.
    Check {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a demo origin and the gateway on loopback, print the URLs.
    Demo {
        /// Port of the demo gateway (an ephemeral one is used when it is taken).
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Ask a running gateway to reload its configuration (admin API).
    Reload {
        /// Configuration file of the running gateway (gives the admin address and token).
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// `rempart check`.
pub fn check(config: &std::path::Path) -> i32 {
    match crate::config::load(config) {
        Ok(rt) => {
            println!(
                "{}: ok ({} tenant(s), {} listener(s))",
                config.display(),
                rt.tenants.len(),
                rt.listeners.len()
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "{} problem(s) found in {}",
                e.diagnostics.len(),
                config.display()
            );
            2
        }
    }
}

/// `rempart reload`.
pub async fn reload(config: &std::path::Path) -> i32 {
    // The admin address and token come from the file as it is now; the gateway re-reads it.
    let (address, token) = match crate::config::load(config) {
        Ok(rt) => (rt.admin.address, rt.admin.token),
        Err(e) => {
            eprintln!("{e}");
            eprintln!("not reloading: the file does not validate (the running gateway keeps its configuration)");
            return 2;
        }
    };
    let Some(token) = token else {
        eprintln!("admin.token_file or admin.token_env must be set to use the admin API");
        return 2;
    };
    match post_reload(address, &token).await {
        Ok((200, body)) => {
            let changes = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("changes").and_then(|c| c.as_str()).map(str::to_owned))
                .unwrap_or_default();
            println!("reloaded: {changes}");
            0
        }
        Ok((422, body)) => {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                for e in v
                    .get("errors")
                    .and_then(|e| e.as_array())
                    .into_iter()
                    .flatten()
                {
                    eprintln!("{}", e.as_str().unwrap_or_default());
                }
            }
            eprintln!("reload refused; the gateway keeps serving its previous configuration");
            2
        }
        Ok((status, body)) => {
            eprintln!("admin API answered {status}: {}", body.trim());
            1
        }
        Err(e) => {
            eprintln!("cannot reach the admin API at {address}: {e}");
            1
        }
    }
}

async fn post_reload(address: std::net::SocketAddr, token: &str) -> anyhow::Result<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::post("/admin/reload")
        .header(http::header::HOST, address.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<bytes::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
