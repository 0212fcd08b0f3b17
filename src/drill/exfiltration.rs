//! The exfiltration drill (`bench/scenarios/exfiltration.toml`): advisers working normally
//! through a guarded back-office tenant while one compromised account pulls records as fast
//! as it is served, on real sockets against a gateway on loopback; then the same population
//! over days of simulated time (`guard::simulate`: the fast puller, and a slow one that
//! stays under its budgets, from one prefix or several). Reports what the compromised
//! account took before it was stopped, how soon it was flagged, and advisers wrongly
//! slowed, refused or flagged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde::Deserialize;

use crate::config::validate::parse_duration;
use crate::guard::simulate::{self, Plan};

/// An exfiltration scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExfiltrationFile {
    /// What it shows.
    pub name: String,
    /// The drill's settings.
    pub exfiltration: Settings,
}

/// The drill's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Advisers working normally.
    #[serde(default = "default_advisers")]
    pub advisers: u32,
    /// Records per page the compromised account asks for.
    #[serde(default = "default_page")]
    pub page: u64,
    /// Length of the live run (`15s`).
    #[serde(default = "default_live")]
    pub live_duration: String,
    /// Mean pause between an adviser's requests in the live run (`2s`).
    #[serde(default = "default_think")]
    pub adviser_think: String,
    /// Seeds of the simulated runs.
    #[serde(default = "default_seeds")]
    pub seeds: u32,
    /// Host of the back-office tenant.
    #[serde(default = "default_host")]
    pub host: String,
}

fn default_advisers() -> u32 {
    50
}
fn default_page() -> u64 {
    20
}
fn default_live() -> String {
    "15s".into()
}
fn default_think() -> String {
    "2s".into()
}
fn default_seeds() -> u32 {
    5
}
fn default_host() -> String {
    "agents.drill.test".into()
}

impl ExfiltrationFile {
    /// Parses a scenario; `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let f: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        let live = parse_duration(&f.exfiltration.live_duration)
            .map_err(|e| format!("exfiltration.live_duration: {e}"))?;
        if live.is_zero() || live > super::scenario::MAX_DURATION {
            return Err("exfiltration.live_duration: between 1s and 10m".into());
        }
        parse_duration(&f.exfiltration.adviser_think)
            .map_err(|e| format!("exfiltration.adviser_think: {e}"))?;
        if !(1..=1000).contains(&f.exfiltration.advisers)
            || !(1..=500).contains(&f.exfiltration.page)
        {
            return Err("exfiltration: advisers 1 to 1000, page 1 to 500".into());
        }
        Ok(f)
    }
}

/// The gateway configuration the drill runs against when it starts its own: the demo's
/// back-office application behind a tenant whose route has the simulated budgets (300
/// records an hour, then 403; 1,500 a day, then suspension).
pub fn gateway_config(host: &str, backoffice: SocketAddr) -> String {
    format!(
        r#"[[listeners]]
address = "127.0.0.1:0"

[[tenants]]
id = "agents"
name = "Portail des agents"
hosts = ["{host}"]

[tenants.guard]
accounts = [{{ basic = true }}]

[[tenants.pools]]
name = "app"
servers = [{{ address = "{backoffice}" }}]

[[tenants.routes]]
path_prefix = "/"
pool = "app"

[[tenants.routes]]
name = "usagers"
path_prefix = "/api/usagers"
pool = "app"

[tenants.routes.guard]
json_records = "data"
record_ids = ["/api/usagers/{{id}}"]
budgets = [
  {{ records = 300, per = "1h", action = "block" }},
  {{ records = 1500, per = "24h", action = "suspend" }},
]
"#
    )
}

/// What the live run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Live {
    /// Records the compromised account was served.
    pub puller_records: u64,
    /// Pages it was served.
    pub puller_pages: u64,
    /// The status that stopped it (0: never stopped).
    pub puller_stopped_by: u16,
    /// Seconds from its first request to the refusal.
    pub puller_stopped_after_s: Option<f64>,
    /// Requests the advisers made.
    pub adviser_requests: u64,
    /// Records they were served.
    pub adviser_records: u64,
    /// Their requests refused or failed.
    pub adviser_refused: u64,
}

/// The simulated runs, summed up over the seeds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Simulated {
    /// Runs.
    pub runs: u32,
    /// Most records the fast puller took before it was stopped.
    pub fast_puller_records_max: u64,
    /// Latest it was stopped, simulated seconds.
    pub fast_stopped_after_s_max: u64,
    /// Latest the slow puller (250 records an hour, under the hourly budget) was flagged,
    /// simulated seconds, and what flagged it first.
    pub slow_flagged_after_s_max: u64,
    /// What flagged the slow puller first, per run.
    pub slow_flagged_by: Vec<String>,
    /// Most records the slow puller took before it was stopped.
    pub slow_puller_records_max: u64,
    /// Advisers refused or slowed, over every run.
    pub advisers_hindered: u32,
    /// Advisers flagged, over every run.
    pub advisers_flagged: u32,
}

/// The drill's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Scenario name.
    pub name: String,
    /// The live run.
    pub live: Live,
    /// The simulated runs.
    pub simulated: Simulated,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (l, s) = (&self.live, &self.simulated);
        writeln!(f, "scenario: {}", self.name)?;
        writeln!(f, "live run (real sockets, budget 300 records an hour):")?;
        writeln!(
            f,
            "  compromised account: {} records in {} pages, stopped by {} after {}",
            l.puller_records,
            l.puller_pages,
            if l.puller_stopped_by == 0 {
                "nothing".to_owned()
            } else {
                l.puller_stopped_by.to_string()
            },
            l.puller_stopped_after_s
                .map_or("-".into(), |s| format!("{s:.3} s"))
        )?;
        writeln!(
            f,
            "  advisers: {} requests, {} records, {} refused",
            l.adviser_requests, l.adviser_records, l.adviser_refused
        )?;
        writeln!(
            f,
            "simulated ({} runs, two days of history, 50 advisers):",
            s.runs
        )?;
        writeln!(
            f,
            "  fast puller: at most {} records, stopped within {} s",
            s.fast_puller_records_max, s.fast_stopped_after_s_max
        )?;
        writeln!(
            f,
            "  slow puller (250/h): flagged within {} s (by {}), at most {} records before suspension",
            s.slow_flagged_after_s_max,
            s.slow_flagged_by.join(", "),
            s.slow_puller_records_max
        )?;
        writeln!(
            f,
            "  advisers hindered: {}, flagged: {}",
            s.advisers_hindered, s.advisers_flagged
        )
    }
}

fn basic(user: &str) -> String {
    let pair = format!("{user}:x");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

/// One GET: status and the records it carried (elements of `data`, or 1 for a record).
async fn fetch(
    client: &Client,
    target: SocketAddr,
    host: &str,
    path: &str,
    user: &str,
) -> (u16, u64) {
    let Ok(req) = http::Request::get(format!("http://{target}{path}"))
        .header(http::header::HOST, host)
        .header(http::header::AUTHORIZATION, basic(user))
        .body(Empty::new())
    else {
        return (0, 0);
    };
    let Ok(resp) = client.request(req).await else {
        return (0, 0);
    };
    let status = resp.status().as_u16();
    let Ok(body) = resp.into_body().collect().await else {
        return (status, 0);
    };
    let records = match serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) {
        Ok(v) => v["data"].as_array().map_or(1, |a| a.len() as u64),
        Err(_) => 0,
    };
    (status, if status == 200 { records } else { 0 })
}

/// Runs the live part against `target` (loopback only).
pub async fn live(target: SocketAddr, s: &Settings) -> anyhow::Result<Live> {
    super::require_loopback(target.ip())?;
    let duration = parse_duration(&s.live_duration).map_err(anyhow::Error::msg)?;
    let think = parse_duration(&s.adviser_think).map_err(anyhow::Error::msg)?;
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let end = Instant::now() + duration;
    let (requests, records, refused) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut advisers = Vec::new();
    for i in 0..s.advisers {
        let (client, host) = (client.clone(), s.host.clone());
        let (requests, records, refused) = (requests.clone(), records.clone(), refused.clone());
        advisers.push(tokio::spawn(async move {
            let mut n = u64::from(i) * 7919;
            let user = format!("conseiller{i:02}");
            // Spread the first requests over the first pause.
            let first = think.mul_f64(f64::from(i % 50) / 50.0);
            tokio::time::sleep(first).await;
            while Instant::now() < end {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let path = if n % 4 == 0 {
                    format!("/api/usagers?page={}&per_page=5", 1 + (n >> 33) % 1000)
                } else {
                    format!("/api/usagers/{}", 1 + (n >> 33) % 99_000)
                };
                let (status, got) = fetch(&client, target, &host, &path, &user).await;
                requests.fetch_add(1, Ordering::Relaxed);
                records.fetch_add(got, Ordering::Relaxed);
                if status != 200 {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                // Pauses of half to one and a half the mean.
                let pause = think.mul_f64(0.5 + ((n >> 20) % 1000) as f64 / 1000.0);
                tokio::time::sleep(pause).await;
            }
        }));
    }
    // The compromised account: page after page, as fast as it is served.
    let mut out = Live::default();
    let started = Instant::now();
    let mut page = 1;
    while Instant::now() < end {
        let path = format!("/api/usagers?page={page}&per_page={}", s.page);
        let (status, got) = fetch(&client, target, &s.host, &path, "compromis").await;
        if status != 200 {
            out.puller_stopped_by = status;
            out.puller_stopped_after_s = Some(started.elapsed().as_secs_f64());
            break;
        }
        out.puller_pages += 1;
        out.puller_records += got;
        page += 1;
    }
    for a in advisers {
        let _ = a.await;
    }
    out.adviser_requests = requests.load(Ordering::Relaxed);
    out.adviser_records = records.load(Ordering::Relaxed);
    out.adviser_refused = refused.load(Ordering::Relaxed);
    Ok(out)
}

/// Runs the simulated part over `seeds` seeds.
pub fn simulated(seeds: u32) -> Simulated {
    let mut out = Simulated::default();
    for seed in 0..u64::from(seeds) {
        let fast = simulate::run(&Plan::standard(None, 1, seed));
        let slow = simulate::run(&Plan::standard(Some(250), 1 + (seed % 2) as u32 * 7, seed));
        out.runs += 1;
        out.fast_puller_records_max = out.fast_puller_records_max.max(fast.puller_records);
        out.fast_stopped_after_s_max = out
            .fast_stopped_after_s_max
            .max(fast.stopped_after_s.unwrap_or(u64::MAX));
        out.slow_flagged_after_s_max = out
            .slow_flagged_after_s_max
            .max(slow.flagged_after_s.unwrap_or(u64::MAX));
        out.slow_flagged_by
            .push(slow.flagged_by.unwrap_or_else(|| "nothing".into()));
        out.slow_puller_records_max = out.slow_puller_records_max.max(slow.puller_records);
        out.advisers_hindered += fast.advisers_hindered + slow.advisers_hindered;
        out.advisers_flagged += fast.advisers_flagged + slow.advisers_flagged;
    }
    out
}
