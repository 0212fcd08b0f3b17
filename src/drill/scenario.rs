//! Drill scenarios (TOML files in `bench/scenarios/`): a legitimate population and an attack
//! mix, bounded in time and size.

use std::time::Duration;

use serde::Deserialize;

use crate::config::validate::parse_duration;

/// Longest drill.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Most distinct source addresses (127.100.0.0 upwards).
pub const MAX_SOURCES: u32 = 2_000_000;
/// Most concurrent connections per attack.
pub const MAX_CONNECTIONS: u32 = 20_000;

/// A scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// What it shows.
    pub name: String,
    /// Length of the drill (`20s`).
    pub duration: String,
    /// Host header sent.
    #[serde(default = "default_host")]
    pub host: String,
    /// Residents.
    pub legit: LegitFile,
    /// Attacks, all running at once.
    #[serde(default)]
    pub attack: Vec<AttackFile>,
    /// Fraction of every attack's connections that leave from the residents' shared
    /// addresses (a bot on the same NAT as the town hall, on the same carrier).
    #[serde(default)]
    pub bots_behind_shared: f64,
}

/// A population of residents laid over any scenario (`rempart drill --residents`): its
/// `[legit]` replaces the scenario's, and its bots' share on shared addresses applies to
/// every attack.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResidentsFile {
    /// What it shows.
    pub name: String,
    /// The residents.
    pub legit: LegitFile,
    /// See `ScenarioFile::bots_behind_shared`.
    #[serde(default)]
    pub bots_behind_shared: f64,
}

/// Residents who share a few addresses of one /24 (an office behind its NAT, a mobile
/// carrier's CGNAT).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedGroupFile {
    /// Shown in the report (`office`, `carrier`).
    pub name: String,
    /// Browsers.
    pub clients: u32,
    /// Addresses they share, in one /24 (1 to 254).
    pub addresses: u32,
}

fn default_host() -> String {
    "ville.test".into()
}

/// The legitimate population.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegitFile {
    /// Browsers.
    pub clients: u32,
    /// Mean think time between page loads (`1s`).
    #[serde(default = "default_think")]
    pub think: String,
    /// Assets loaded with each page.
    #[serde(default)]
    pub assets: u32,
    /// Pages visited.
    #[serde(default = "default_paths")]
    pub paths: Vec<String>,
    /// Fraction of browsers speaking HTTP/2 (h2c prior knowledge).
    #[serde(default)]
    pub h2_fraction: f64,
    /// A page load counts as a success when every response is 2xx within this time.
    #[serde(default = "default_budget")]
    pub budget: String,
    /// Host residents ask for, when not the scenario's (for example the status page's host
    /// while the main host is flooded).
    pub host: Option<String>,
    /// Residents behind shared addresses, on top of `clients` (who each have their own).
    #[serde(default)]
    pub shared: Vec<SharedGroupFile>,
}

fn default_think() -> String {
    "1s".into()
}

fn default_budget() -> String {
    "1s".into()
}

fn default_paths() -> Vec<String> {
    vec!["/".into()]
}

/// One attack.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackFile {
    /// `flood`, `login_post`, `slowloris`, `slow_body` or `h2_rapid_reset`.
    pub kind: String,
    /// Distinct source addresses.
    pub sources: u32,
    /// Concurrent connections.
    pub connections: u32,
    /// Total requests per second aimed at (flood, login_post, h2_rapid_reset); 0 = as fast
    /// as the connections go.
    #[serde(default)]
    pub rate: u32,
    /// Requests per connection before moving to the next source address.
    #[serde(default = "default_per_connection")]
    pub requests_per_connection: u32,
    /// Random query strings (cache busting).
    #[serde(default)]
    pub cache_bust: bool,
    /// A different browser-like user agent on each connection.
    #[serde(default)]
    pub rotate_user_agents: bool,
    /// Fraction of connections whose bot solves challenges.
    #[serde(default)]
    pub smart_fraction: f64,
    /// When the attack starts (`0s`).
    #[serde(default)]
    pub start: Option<String>,
    /// Paths attacked.
    #[serde(default = "default_paths")]
    pub paths: Vec<String>,
}

fn default_per_connection() -> u32 {
    100
}

/// Kinds of attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttackKind {
    /// GET flood.
    Flood,
    /// POST flood on a login form.
    LoginPost,
    /// Headers sent one line every few seconds.
    Slowloris,
    /// A POST announcing a 64 KiB body, sent a few bytes every second (slowhttptest -B).
    SlowBody,
    /// HTTP/2 streams opened and cancelled at once.
    H2RapidReset,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name.
    pub name: String,
    /// Duration.
    pub duration: Duration,
    /// Host header.
    pub host: String,
    /// Residents.
    pub legit: Legit,
    /// Attacks.
    pub attacks: Vec<Attack>,
    /// Fraction of each attack's connections on the shared addresses.
    pub bots_behind_shared: f64,
}

/// Residents, validated.
#[derive(Debug, Clone)]
pub struct Legit {
    /// Browsers.
    pub clients: u32,
    /// Mean think time.
    pub think: Duration,
    /// Assets per page.
    pub assets: u32,
    /// Pages.
    pub paths: Vec<String>,
    /// Fraction on HTTP/2.
    pub h2_fraction: f64,
    /// Success budget per page load.
    pub budget: Duration,
    /// Host residents ask for.
    pub host: String,
    /// Groups behind shared addresses.
    pub shared: Vec<SharedGroupFile>,
}

/// An attack, validated.
#[derive(Debug, Clone)]
pub struct Attack {
    /// Kind.
    pub kind: AttackKind,
    /// Source addresses.
    pub sources: u32,
    /// Connections.
    pub connections: u32,
    /// Requests per second (0 = unpaced).
    pub rate: u32,
    /// Requests per connection.
    pub requests_per_connection: u32,
    /// Cache busting.
    pub cache_bust: bool,
    /// User-agent rotation.
    pub rotate_user_agents: bool,
    /// Fraction solving challenges.
    pub smart_fraction: f64,
    /// Start offset.
    pub start: Duration,
    /// Paths.
    pub paths: Vec<String>,
}

fn duration(field: &str, raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| format!("{field}: {e}"))
}

impl Scenario {
    /// Parses and validates a scenario file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let f: ScenarioFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let d = duration("duration", &f.duration)?;
        if d > MAX_DURATION || d.is_zero() {
            return Err(format!("duration: must be between 1s and {MAX_DURATION:?}"));
        }
        let paths_ok =
            |paths: &[String]| paths.iter().all(|p| p.starts_with('/')) && !paths.is_empty();
        let legit = legit(f.legit, &f.host)?;
        let mut attacks = Vec::new();
        for (i, a) in f.attack.into_iter().enumerate() {
            let kind = match a.kind.as_str() {
                "flood" => AttackKind::Flood,
                "login_post" => AttackKind::LoginPost,
                "slowloris" => AttackKind::Slowloris,
                "slow_body" => AttackKind::SlowBody,
                "h2_rapid_reset" => AttackKind::H2RapidReset,
                other => {
                    return Err(format!(
                        "attack[{i}].kind: unknown `{other}` (flood, login_post, slowloris, slow_body, h2_rapid_reset)"
                    ))
                }
            };
            if a.sources == 0 || a.sources > MAX_SOURCES {
                return Err(format!("attack[{i}].sources: 1 to {MAX_SOURCES}"));
            }
            if a.connections == 0 || a.connections > MAX_CONNECTIONS {
                return Err(format!("attack[{i}].connections: 1 to {MAX_CONNECTIONS}"));
            }
            if !paths_ok(&a.paths) {
                return Err(format!("attack[{i}].paths: each path must start with '/'"));
            }
            attacks.push(Attack {
                kind,
                sources: a.sources,
                connections: a.connections,
                rate: a.rate.min(1_000_000),
                requests_per_connection: a.requests_per_connection.max(1),
                cache_bust: a.cache_bust,
                rotate_user_agents: a.rotate_user_agents,
                smart_fraction: a.smart_fraction.clamp(0.0, 1.0),
                start: match a.start {
                    Some(s) => parse_duration(&s)
                        .or_else(|e| {
                            if s == "0s" {
                                Ok(Duration::ZERO)
                            } else {
                                Err(e)
                            }
                        })
                        .map_err(|e| format!("attack[{i}].start: {e}"))?,
                    None => Duration::ZERO,
                },
                paths: a.paths,
            });
        }
        Ok(Self {
            name: f.name,
            duration: d,
            host: f.host,
            legit,
            attacks,
            bots_behind_shared: fraction("bots_behind_shared", f.bots_behind_shared)?,
        })
    }

    /// The scenario with the residents of a `ResidentsFile` (its text) instead of its own.
    pub fn with_residents(mut self, text: &str) -> Result<Self, String> {
        let f: ResidentsFile = toml::from_str(text).map_err(|e| e.to_string())?;
        self.legit = legit(f.legit, &self.host)?;
        self.bots_behind_shared = fraction("bots_behind_shared", f.bots_behind_shared)?;
        self.name = format!("{} + {}", self.name, f.name);
        Ok(self)
    }

    /// Every shared address of the residents' groups, group by group.
    pub fn shared_addresses(&self) -> Vec<std::net::Ipv4Addr> {
        self.legit
            .shared
            .iter()
            .enumerate()
            .flat_map(|(g, group)| (0..group.addresses).map(move |a| shared_source(g, a)))
            .collect()
    }
}

fn fraction(field: &str, value: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{field}: a fraction between 0 and 1"))
    }
}

fn legit(f: LegitFile, host: &str) -> Result<Legit, String> {
    if f.paths.is_empty() || !f.paths.iter().all(|p| p.starts_with('/')) {
        return Err("legit.paths: each path must start with '/'".into());
    }
    if f.shared.len() > MAX_SHARED_GROUPS {
        return Err(format!("legit.shared: at most {MAX_SHARED_GROUPS} groups"));
    }
    for (i, g) in f.shared.iter().enumerate() {
        if !(1..=254).contains(&g.addresses) {
            return Err(format!("legit.shared[{i}].addresses: 1 to 254 (one /24)"));
        }
        if g.clients > 10_000 {
            return Err(format!("legit.shared[{i}].clients: at most 10000"));
        }
    }
    Ok(Legit {
        clients: f.clients.min(10_000),
        think: duration("legit.think", &f.think)?,
        assets: f.assets.min(50),
        paths: f.paths,
        h2_fraction: f.h2_fraction.clamp(0.0, 1.0),
        budget: duration("legit.budget", &f.budget)?,
        host: f.host.unwrap_or_else(|| host.to_owned()),
        shared: f.shared,
    })
}

/// Most groups of residents behind shared addresses.
pub const MAX_SHARED_GROUPS: usize = 64;

/// The `a`-th shared address of group `g`: each group in its own /24 of 127.9.0.0/16.
pub fn shared_source(g: usize, a: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(
        127,
        9,
        u8::try_from(g).unwrap_or(u8::MAX),
        u8::try_from(a % 254 + 1).unwrap_or(1),
    )
}

/// The `i`-th attack source address: spread over 4,096 /24 networks of 127.100.0.0/10 so
/// that per-prefix limits meet what real floods look like (few addresses per network).
pub fn attack_source(i: u32) -> std::net::Ipv4Addr {
    let prefix = i % 4096;
    let host = (i / 4096) % 254 + 1;
    std::net::Ipv4Addr::new(
        127,
        100 + u8::try_from(prefix / 256).unwrap_or(0),
        u8::try_from(prefix % 256).unwrap_or(0),
        u8::try_from(host).unwrap_or(1),
    )
}

/// The `i`-th resident's address: each in its own /24 of 127.10.0.0/16.
pub fn legit_source(i: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(
        127,
        10 + u8::try_from(i / 256).unwrap_or(0),
        u8::try_from(i % 256).unwrap_or(0),
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_parses_and_bounds() {
        let s = Scenario::parse(
            r#"
name = "x"
duration = "5s"
[legit]
clients = 3
[[attack]]
kind = "flood"
sources = 10000
connections = 100
rate = 1000
"#,
        )
        .unwrap();
        assert_eq!(s.attacks[0].kind, AttackKind::Flood);
        assert_eq!(s.legit.budget, Duration::from_secs(1));
        assert!(
            Scenario::parse("name = \"x\"\nduration = \"1h\"\n[legit]\nclients = 1\n").is_err()
        );
        assert!(Scenario::parse(
            "name = \"x\"\nduration = \"5s\"\nbogus = 1\n[legit]\nclients = 1\n"
        )
        .is_err());
    }

    #[test]
    fn residents_are_laid_over_a_scenario() {
        let s = Scenario::parse(
            "name = \"x\"\nduration = \"5s\"\n[legit]\nclients = 3\n[[attack]]\nkind = \"flood\"\nsources = 10\nconnections = 10\n",
        )
        .unwrap()
        .with_residents(
            "name = \"y\"\nbots_behind_shared = 0.1\n[legit]\nclients = 1\n[[legit.shared]]\nname = \"office\"\nclients = 200\naddresses = 1\n[[legit.shared]]\nname = \"carrier\"\nclients = 500\naddresses = 4\n",
        )
        .unwrap();
        assert_eq!(s.name, "x + y");
        assert_eq!(s.legit.clients, 1);
        assert_eq!(s.attacks.len(), 1);
        let shared = s.shared_addresses();
        assert_eq!(shared.len(), 5);
        assert!(shared.iter().all(std::net::Ipv4Addr::is_loopback));
        // The office's address and the carrier's four: two /24s, apart from everyone else.
        assert_eq!(shared[0].octets()[..3], [127, 9, 0]);
        assert!(shared[1..].iter().all(|a| a.octets()[..3] == [127, 9, 1]));
        assert!(!shared.contains(&legit_source(0)) && !shared.contains(&attack_source(0)));
        let bad = |text: &str| {
            Scenario::parse("name = \"x\"\nduration = \"5s\"\n[legit]\nclients = 3\n")
                .unwrap()
                .with_residents(text)
                .is_err()
        };
        assert!(bad("name = \"y\"\n[legit]\nclients = 1\n[[legit.shared]]\nname = \"o\"\nclients = 2\naddresses = 0\n"));
        assert!(bad(
            "name = \"y\"\nbots_behind_shared = 2.0\n[legit]\nclients = 1\n"
        ));
    }

    #[test]
    fn sources_are_loopback_and_distinct() {
        let a: std::collections::HashSet<_> = (0..1_000_000).map(attack_source).collect();
        assert_eq!(a.len(), 1_000_000);
        assert!(a.iter().all(|ip| ip.is_loopback()));
        assert!(legit_source(300).is_loopback());
        assert!(!a.contains(&legit_source(0)));
    }
}
