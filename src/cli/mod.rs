//! Subcommands: `run`, `check`, `demo`, `reload`, `upgrade`, `bans`, `shield`, `status`, `watch`,
//! `guard`, `drill`, `completions`. Each returns a process exit code.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod cluster;
pub mod guard;
pub mod manual;
pub mod status;
pub mod watch;

pub use guard::GuardAction;

/// Rempart: an edge gateway that keeps public services reachable under attack.
#[derive(Debug, Parser)]
#[command(
    name = "rempart",
    version,
    about,
    long_about = "Rempart is an edge gateway that keeps public services reachable, and citizens' \
data safe, while they are under cyber attack. It sits in front of a town's web servers: it \
shields them from floods (rate limits, proof-of-work challenges, load shedding, bans), watches \
them and raises a vigilance level with its defences, keeps a status page and stale copies of \
public pages up when every origin is down, and counts what each account takes out of back-office \
applications. One binary, one TOML file: `rempart run --config /etc/rempart/rempart.toml`."
)]
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
    /// Replace a running gateway's binary without refusing a connection: it starts the new
    /// binary on its listening sockets, hands over its bans, and drains once the new process
    /// serves; a new binary that fails leaves it serving (admin API; SIGUSR2 does the same).
    Upgrade {
        /// Configuration file of the running gateway (gives the admin address and token).
        #[arg(long, short)]
        config: PathBuf,
        /// The new binary (default: the file the gateway was started from, as a package
        /// upgrade replaces it).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// List, add or remove bans on a running gateway (admin API).
    Bans {
        /// Configuration file of the running gateway (gives the admin address and token).
        #[arg(long, short)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        action: BanAction,
    },
    /// Run a flood drill against a gateway on loopback: residents and an attack mix from a
    /// scenario file; reports residents' success rate and what reached the origin.
    Drill {
        /// Gateway address (loopback only). Given more than once, the nodes of a cluster:
        /// each source address goes to one of them, as a load balancer hashing addresses
        /// sends it. An exfiltration scenario without one starts its own gateway and
        /// back-office application on loopback.
        #[arg(long)]
        target: Vec<std::net::SocketAddr>,
        /// Scenario file (see bench/scenarios/).
        #[arg(long)]
        scenario: PathBuf,
        /// A population of residents laid over the scenario's (its `[legit]`, with groups
        /// behind shared addresses, and the share of bots on those addresses), for example
        /// bench/scenarios/residents-shared.toml.
        #[arg(long)]
        residents: Option<PathBuf>,
        /// Address of a `rempart drill-origin` behind the gateway, to report what reached it.
        #[arg(long)]
        origin: Option<std::net::SocketAddr>,
        /// Process id of the gateway, to report its CPU and memory (more than once: the
        /// nodes', summed).
        #[arg(long)]
        pid: Vec<u32>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Serve an origin of limited capacity for drills (loopback only).
    DrillOrigin {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Requests served at once.
        #[arg(long, default_value_t = 8)]
        workers: usize,
        /// Time each request takes (`5ms`).
        #[arg(long, default_value = "5ms")]
        service: String,
    },
    /// Status pages: incidents, maintenance, component states, static export.
    Status {
        /// Configuration file (gives the admin address and token, or the database for
        /// `export`).
        #[arg(long, short)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        action: status::StatusAction,
    },
    /// The data guard: `scan` counts the personal data in files (a data protection officer
    /// checks an export before publishing it); `accounts`, `show`, `lift`, `suspend` and
    /// `budgets` ask a running gateway; `report` reads the access journal (breach scope).
    Guard {
        /// What to do.
        #[command(subcommand)]
        action: GuardAction,
    },
    /// A cluster node's link to Redis and the nodes it sees (admin API; exit 1 while
    /// degraded).
    Cluster {
        /// Configuration file of the running gateway (gives the admin address and token).
        #[arg(long, short)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        action: cluster::ClusterAction,
    },
    /// The watch of a running gateway: each tenant's vigilance level and its evidence, an
    /// operator's level (admin API).
    Watch {
        /// Configuration file of the running gateway (gives the admin address and token).
        #[arg(long, short)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        action: watch::WatchAction,
    },
    /// Print the completion script of SHELL (bash: source it, or install it as
    /// /usr/share/bash-completion/completions/rempart; zsh: as _rempart in a $fpath directory).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (rempart.8 and one per command) into a directory (packaging).
    #[command(hide = true)]
    Man {
        /// Directory to write into (made when absent).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Flood shield of a running gateway: status and under-attack mode (admin API).
    Shield {
        /// Configuration file of the running gateway (gives the admin address and token).
        #[arg(long, short)]
        config: PathBuf,
        /// What to do.
        #[command(subcommand)]
        action: ShieldAction,
    },
}

/// Counts the items in `path`, read in pieces (a file of any size in little memory).
pub(crate) fn scan_file(
    path: &std::path::Path,
) -> std::io::Result<[u64; crate::guard::scan::Kind::COUNT]> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut counts = [0u64; crate::guard::scan::Kind::COUNT];
    let mut scanner = crate::guard::scan::Scanner::new();
    let mut add = |f: crate::guard::scan::Found| counts[f.kind as usize] += 1;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        scanner.feed(&buf[..n], &mut add);
    }
    scanner.finish(&mut add);
    Ok(counts)
}

/// The report of `rempart guard scan`: a table (file, then a column per kind), or JSON.
pub fn scan_report(
    rows: &[(String, [u64; crate::guard::scan::Kind::COUNT])],
    json: bool,
) -> String {
    use crate::guard::scan::Kind;
    if json {
        let files: Vec<serde_json::Value> = rows
            .iter()
            .map(|(file, counts)| {
                let mut o = serde_json::Map::new();
                o.insert("file".into(), file.clone().into());
                for k in Kind::ALL {
                    o.insert(k.name().into(), counts[k as usize].into());
                }
                serde_json::Value::Object(o)
            })
            .collect();
        return format!("{}\n", serde_json::json!({ "files": files }));
    }
    let mut out = String::from("file");
    for k in Kind::ALL {
        out.push('\t');
        out.push_str(k.name());
    }
    out.push('\n');
    for (file, c) in rows {
        out.push_str(file);
        for n in c {
            out.push_str(&format!("\t{n}"));
        }
        out.push('\n');
    }
    out
}

/// `rempart shield` actions.
#[derive(Debug, Subcommand)]
pub enum ShieldAction {
    /// Show each tenant's under-attack mode, shedding and admission gates.
    Status,
    /// Challenge every client without a valid pass on TENANT (`on`), or stop (`off`).
    UnderAttack {
        /// Tenant id.
        tenant: String,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// How long (`30m`, `2h`); until switched off when absent.
        #[arg(long = "for")]
        duration: Option<String>,
    },
}

/// `rempart bans` actions.
#[derive(Debug, Subcommand)]
pub enum BanAction {
    /// Show active bans with their reason, expiry and hits.
    List,
    /// Ban an address or network.
    Add {
        /// Address or CIDR (`192.0.2.7`, `198.51.100.0/24`).
        target: String,
        /// Why (shown to other operators).
        #[arg(long)]
        reason: String,
        /// How long (`30m`, `2h`); forever when absent.
        #[arg(long = "for")]
        duration: Option<String>,
    },
    /// Lift a ban.
    Remove {
        /// Address or CIDR, as listed.
        target: String,
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
            // Valid, but about to hurt: said, not refused (a certificate expiring tomorrow
            // still serves today).
            let now = crate::clock::unix_now();
            for t in &rt.tenants {
                if let Some(facts) = &t.certificate_facts {
                    for warning in facts.warnings(&t.hosts, now) {
                        eprintln!(
                            "{}: warning: tenants.{}.tls: {warning}",
                            config.display(),
                            t.id
                        );
                    }
                }
            }
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

/// The admin address and token from a config file, or an exit code after saying why.
pub(crate) fn admin_of(
    config: &std::path::Path,
    doing: &str,
) -> Result<(std::net::SocketAddr, String), i32> {
    // The admin address and token come from the file as it is now.
    let (address, token) = match crate::config::load(config) {
        Ok(rt) => (rt.admin.address, rt.admin.token),
        Err(e) => {
            eprintln!("{e}");
            eprintln!("not {doing}: the file does not validate (the running gateway keeps its configuration)");
            return Err(2);
        }
    };
    match token {
        Some(t) => Ok((address, t)),
        None => {
            eprintln!("admin.token_file or admin.token_env must be set to use the admin API");
            Err(2)
        }
    }
}

/// `rempart bans ...`.
pub async fn bans(config: &std::path::Path, action: BanAction) -> i32 {
    let (address, token) = match admin_of(config, "changing bans") {
        Ok(x) => x,
        Err(code) => return code,
    };
    let call = match &action {
        BanAction::List => {
            admin_call(
                address,
                &token,
                http::Method::GET,
                "/admin/bans".into(),
                None,
            )
            .await
        }
        BanAction::Add {
            target,
            reason,
            duration,
        } => {
            let body =
                serde_json::json!({ "target": target, "reason": reason, "duration": duration });
            admin_call(
                address,
                &token,
                http::Method::POST,
                "/admin/bans".into(),
                Some(body.to_string()),
            )
            .await
        }
        BanAction::Remove { target } => {
            let path = format!("/admin/bans?target={}", target.replace('/', "%2F"));
            admin_call(address, &token, http::Method::DELETE, path, None).await
        }
    };
    match call {
        Ok((200, body)) => {
            if matches!(action, BanAction::List) {
                print_bans(&body);
            } else {
                println!("ok");
            }
            0
        }
        other => admin_failure(other, address),
    }
}

/// `rempart drill ...`.
pub async fn drill(
    targets: &[std::net::SocketAddr],
    scenario: &std::path::Path,
    residents: Option<&std::path::Path>,
    origin: Option<std::net::SocketAddr>,
    pids: &[u32],
    json: bool,
) -> i32 {
    let text = match std::fs::read_to_string(scenario) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", scenario.display());
            return 2;
        }
    };
    if text.contains("[exfiltration]") {
        return drill_exfiltration(targets.first().copied(), scenario, &text, json).await;
    }
    if text.contains("[timeline]") {
        return drill_timeline(scenario, &text, json).await;
    }
    if targets.is_empty() {
        eprintln!("--target: the gateway to drill (a loopback address)");
        return 2;
    }
    let mut parsed = match crate::drill::scenario::Scenario::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", scenario.display());
            return 2;
        }
    };
    if let Some(path) = residents {
        let laid = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| parsed.with_residents(&text));
        parsed = match laid {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return 2;
            }
        };
    }
    match crate::drill::run(targets, parsed, origin, pids).await {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                print!("{report}");
            }
            0
        }
        Err(e) => {
            eprintln!("drill failed: {e}");
            2
        }
    }
}

/// `rempart drill` with a watch timeline: simulated days through the watch's real code.
async fn drill_timeline(scenario: &std::path::Path, text: &str, json: bool) -> i32 {
    use crate::drill::timeline;
    let parsed: timeline::TimelineScenario = match toml::from_str(text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", scenario.display());
            return 2;
        }
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir()?;
        timeline::run(&parsed, dir.path())
    })
    .await;
    match outcome {
        Ok(Ok(report)) => {
            if json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                print!("{}", timeline::table(&report));
            }
            0
        }
        Ok(Err(e)) => {
            eprintln!("drill failed: {e}");
            2
        }
        Err(e) => {
            eprintln!("drill failed: {e}");
            1
        }
    }
}

/// `rempart drill` with an exfiltration scenario: against `target`, or against a gateway and
/// the demo's back-office application it starts on loopback.
async fn drill_exfiltration(
    target: Option<std::net::SocketAddr>,
    path: &std::path::Path,
    text: &str,
    json: bool,
) -> i32 {
    use crate::drill::exfiltration as ex;
    let scenario = match ex::ExfiltrationFile::parse(text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return 2;
        }
    };
    let mut own = None;
    let target = match target {
        Some(t) => t,
        None => {
            let started = async {
                let backoffice = crate::demo::backoffice::start().await?;
                let dir = tempfile::tempdir()?;
                let config = dir.path().join("rempart.toml");
                std::fs::write(
                    &config,
                    ex::gateway_config(&scenario.exfiltration.host, backoffice),
                )?;
                let options = crate::app::Options {
                    access_log: false,
                    watch_file: false,
                    sighup: false,
                    upgrades: false,
                };
                let running = crate::app::start(&config, options).await?;
                anyhow::Ok((running, dir))
            };
            match started.await {
                Ok((running, dir)) => {
                    let addr = running.listen_addrs[0];
                    own = Some((running, dir));
                    addr
                }
                Err(e) => {
                    eprintln!("cannot start the drill's gateway: {e}");
                    return 2;
                }
            }
        }
    };
    let live = ex::live(target, &scenario.exfiltration).await;
    if let Some((running, _dir)) = own {
        running.shutdown().await;
    }
    let live = match live {
        Ok(l) => l,
        Err(e) => {
            eprintln!("drill failed: {e}");
            return 2;
        }
    };
    let seeds = scenario.exfiltration.seeds;
    let simulated = tokio::task::spawn_blocking(move || ex::simulated(seeds))
        .await
        .unwrap_or_default();
    let report = ex::Report {
        name: scenario.name,
        live,
        simulated,
    };
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print!("{report}");
    }
    0
}

/// `rempart drill-origin`.
pub async fn drill_origin(listen: std::net::SocketAddr, workers: usize, service: &str) -> i32 {
    let service = match crate::config::validate::parse_duration(service) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("--service: {e}");
            return 2;
        }
    };
    match crate::drill::origin::run(listen, workers, service).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("drill origin failed: {e}");
            2
        }
    }
}

/// `rempart shield ...`.
pub async fn shield(config: &std::path::Path, action: ShieldAction) -> i32 {
    let (address, token) = match admin_of(config, "changing the shield") {
        Ok(x) => x,
        Err(code) => return code,
    };
    let call = match &action {
        ShieldAction::Status => {
            admin_call(
                address,
                &token,
                http::Method::GET,
                "/admin/shield".into(),
                None,
            )
            .await
        }
        ShieldAction::UnderAttack {
            tenant,
            state,
            duration,
        } => {
            let body =
                serde_json::json!({ "tenant": tenant, "on": state == "on", "for": duration });
            admin_call(
                address,
                &token,
                http::Method::POST,
                "/admin/shield/under-attack".into(),
                Some(body.to_string()),
            )
            .await
        }
    };
    match call {
        Ok((200, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let tenants = match v.get("tenants").and_then(|t| t.as_array()) {
                Some(ts) => ts.clone(),
                None => vec![v],
            };
            for t in tenants {
                let attack = if t["under_attack"] == true {
                    match t["under_attack_remaining_s"].as_u64() {
                        Some(s) => format!("ON ({}m left)", s.div_ceil(60)),
                        None => "ON".into(),
                    }
                } else {
                    "off".into()
                };
                let shedding = t["shedding_for_s"]
                    .as_u64()
                    .map_or_else(|| "no".into(), |s| format!("yes, for {s}s"));
                println!(
                    "{}: under-attack {attack}; shedding {shedding}",
                    t["tenant"].as_str().unwrap_or("?")
                );
                for p in t["pools"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "  pool {}: limit {}, in flight {}, queued {}",
                        p["pool"].as_str().unwrap_or("?"),
                        p["limit"],
                        p["in_flight"],
                        p["queued"]
                    );
                }
            }
            0
        }
        other => admin_failure(other, address),
    }
}

fn print_bans(body: &str) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        println!("{body}");
        return;
    };
    let now = v["now_ms"].as_u64().unwrap_or(0);
    let bans = v["bans"].as_array().cloned().unwrap_or_default();
    if bans.is_empty() {
        println!("no active ban");
        return;
    }
    println!(
        "{:<22} {:>10} {:>8}  reason",
        "target", "expires in", "hits"
    );
    for b in bans {
        let expires = b["expires_ms"].as_u64().map_or("never".to_owned(), |e| {
            format!("{}s", e.saturating_sub(now) / 1000)
        });
        println!(
            "{:<22} {:>10} {:>8}  {}",
            b["target"].as_str().unwrap_or("?"),
            expires,
            b["hits"].as_u64().unwrap_or(0),
            b["reason"].as_str().unwrap_or("")
        );
    }
}

/// `rempart reload`.
pub async fn reload(config: &std::path::Path) -> i32 {
    let (address, token) = match admin_of(config, "reloading") {
        Ok(x) => x,
        Err(code) => return code,
    };
    match admin_call(
        address,
        &token,
        http::Method::POST,
        "/admin/reload".into(),
        None,
    )
    .await
    {
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

/// `rempart upgrade`: the running gateway starts `binary` (default: the one it was started
/// from, which a package upgrade replaced) on its listening sockets and drains once the new
/// process serves.
pub async fn upgrade(config: &std::path::Path, binary: Option<&std::path::Path>) -> i32 {
    let (address, token) = match admin_of(config, "upgrading") {
        Ok(x) => x,
        Err(code) => return code,
    };
    let body = match binary {
        Some(path) => serde_json::json!({ "binary": path }).to_string(),
        None => "{}".to_owned(),
    };
    match admin_call(
        address,
        &token,
        http::Method::POST,
        "/admin/upgrade".into(),
        Some(body),
    )
    .await
    {
        Ok((200, body)) => {
            let pid = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("pid").and_then(serde_json::Value::as_u64))
                .unwrap_or_default();
            println!("upgraded: process {pid} serves; the previous one drains and ends");
            0
        }
        Ok((status, body)) => {
            let why = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| format!("admin API answered {status}: {}", body.trim()));
            eprintln!("not upgraded: {why}");
            eprintln!("the running gateway goes on serving");
            1
        }
        Err(e) => {
            eprintln!("cannot reach the admin API at {address}: {e}");
            1
        }
    }
}

/// Says why an admin call did not succeed; the exit code: 2 for a request the gateway
/// refused as wrong (400, 404), 1 otherwise.
pub(crate) fn admin_failure(
    call: anyhow::Result<(u16, String)>,
    address: std::net::SocketAddr,
) -> i32 {
    match call {
        Ok((status, body)) => {
            eprintln!("admin API answered {status}: {}", body.trim());
            if status == 404 || status == 400 {
                2
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("cannot reach the admin API at {address}: {e}");
            1
        }
    }
}

pub(crate) async fn admin_call(
    address: std::net::SocketAddr,
    token: &str,
    method: http::Method,
    path: String,
    json: Option<String>,
) -> anyhow::Result<(u16, String)> {
    // An operator's command never hangs: a gateway that does not answer in 30 s is an
    // answer too.
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        admin_exchange(address, token, method, path, json),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer in 30 s"))?
}

async fn admin_exchange(
    address: std::net::SocketAddr,
    token: &str,
    method: http::Method,
    path: String,
    json: Option<String>,
) -> anyhow::Result<(u16, String)> {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, address.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    if json.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(bytes::Bytes::from(json.unwrap_or_default())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
