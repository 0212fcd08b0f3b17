//! Watch timelines: days of a town's traffic on simulated time, fed second by second through
//! the watch's real code (the per-tenant signals with their sets of client prefixes, the
//! sampler's report, the baseline, the assessment, the level machine, incidents and the
//! alert outbox), so that a week of learning and a day of attacks take seconds. What is
//! modelled is only the traffic: residents by hour of the week (a morning peak, a quieter
//! afternoon, nights and weekends), a population of resident prefixes that come back, a few
//! newcomers a day; then phases: a normal day, a legitimate surge (school registrations
//! open), a flood from many sources, low-and-slow, credential stuffing on the login route, a
//! data-guard breach. The report gives, per attack, the time to each level and the time back
//! to vert, and for the normal parts every level change and every alert (false alarms).
//! The socket path from a request to the signals is covered by the end-to-end tests.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::common::Level;
use crate::signals::{
    source_key, Consumer, LocalReason, Report, TenantReport, TenantSignals, Totals,
};
use crate::watch::incident::Incident;
use crate::watch::service::{Effects, WatchService};

/// A timeline scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineScenario {
    /// Its name.
    pub name: String,
    /// The timeline.
    pub timeline: Timeline,
}

fn default_peak() -> f64 {
    40.0
}
fn default_residents() -> u32 {
    3_000
}
fn default_learn_days() -> u32 {
    14
}
fn default_seed() -> u64 {
    0x5eed_2026
}

/// The town and its days.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeline {
    /// Residents' requests per second at the busiest hour of a weekday.
    #[serde(default = "default_peak")]
    pub peak_rate: f64,
    /// Client prefixes residents come from (households' boxes, offices, mobile carriers).
    #[serde(default = "default_residents")]
    pub residents: u32,
    /// Days of ordinary traffic learnt before the phases (which start on the next Monday).
    #[serde(default = "default_learn_days")]
    pub learn_days: u32,
    /// Seed of the traffic's randomness.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The phases, in order.
    pub phases: Vec<Phase>,
}

/// What a phase adds to the residents' traffic.
#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    /// Residents only.
    Normal,
    /// Residents, `factor` times as many (a quarter of the extra from newcomers).
    Surge,
    /// `sources` new prefixes sending `per_source` requests a second each.
    Flood,
    /// The same, each far under any per-address limit.
    LowAndSlow,
    /// Failed logins on the login route from `sources` prefixes, `per_source` a second each.
    Stuffing,
    /// An account refused by the data guard every other second.
    GuardBreach,
}

impl PhaseKind {
    fn is_attack(self) -> bool {
        !matches!(self, PhaseKind::Normal | PhaseKind::Surge)
    }
}

/// One phase.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Its name in the report.
    pub name: String,
    /// What it adds.
    pub kind: PhaseKind,
    /// How long (`2h`).
    pub duration: String,
    /// When it starts, local time of the phases' week (`mon 08:00`, `wed 21:30`); default:
    /// when the previous one ends.
    pub at: Option<String>,
    /// `surge`: the residents' traffic times this (default 5).
    pub factor: Option<f64>,
    /// Attack sources (defaults: flood 10000, low-and-slow 20000, stuffing 200).
    pub sources: Option<u32>,
    /// Requests per second and source (defaults: flood 0.5, low-and-slow 0.02, stuffing
    /// 0.05).
    pub per_source: Option<f64>,
}

/// What one phase did to the watch.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: PhaseKind,
    /// Local start (`wed 09:00`).
    pub start: String,
    /// Seconds.
    pub duration_s: u64,
    /// Requests per second on average (residents and attack).
    pub mean_rate: f64,
    /// Seconds from the start to the first time the level was at least jaune, orange,
    /// rouge.
    pub time_to: [Option<u64>; 3],
    /// The highest level.
    pub max_level: Level,
    /// Level changes during the phase.
    pub changes: u32,
    /// Alerts queued during the phase (one per channel and notice).
    pub alerts: u64,
    /// Attacks: seconds from the end of the phase to vert.
    pub back_to_vert_s: Option<u64>,
    /// Attacks: the shortest time between two steps down on the way back (seconds).
    pub min_step_down_gap_s: Option<u64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineReport {
    /// Scenario name.
    pub name: String,
    /// Days learnt first.
    pub learn_days: u32,
    /// Level changes while learning (the first hour learns before the rate may raise past
    /// jaune).
    pub learning_changes: u32,
    /// The highest level while learning.
    pub learning_max_level: Level,
    /// Alerts queued while learning.
    pub learning_alerts: u64,
    /// Per phase.
    pub phases: Vec<PhaseResult>,
    /// Wall-clock seconds the simulation took.
    pub wall_s: f64,
}

use super::Rng;

/// `rate` rounded at random so that its mean is `rate`, with a little noise.
fn count(rng: &mut Rng, rate: f64) -> u64 {
    let r = (rate * (0.85 + 0.3 * rng.unit())).max(0.0);
    let whole = r.floor();
    whole as u64 + u64::from(rng.unit() < r - whole)
}

/// Residents' share of the peak rate at each hour of a weekday.
const WEEKDAY: [f64; 24] = [
    0.05, 0.03, 0.03, 0.03, 0.03, 0.05, 0.1, 0.3, 0.8, 1.0, 1.0, 0.9, 0.6, 0.7, 0.9, 0.9, 0.8, 0.6,
    0.4, 0.3, 0.25, 0.2, 0.12, 0.08,
];
/// Weekends, as a share of the weekday.
const WEEKEND: f64 = 0.35;

/// Residents' requests per second at `local_s` (seconds since the epoch, local time): the
/// hourly profile, interpolated within the hour.
fn residents_rate(peak: f64, local_s: i64) -> f64 {
    let day = local_s.div_euclid(86_400);
    let weekday = (day + 3).rem_euclid(7); // 0 = Monday
    let s = local_s.rem_euclid(86_400) as f64 / 3_600.0;
    let h = s.floor() as usize % 24;
    let frac = s - s.floor();
    let here = WEEKDAY[h];
    let next = WEEKDAY[(h + 1) % 24];
    let v = here + (next - here) * frac;
    peak * v * if weekday >= 5 { WEEKEND } else { 1.0 }
}

/// Parses `mon 08:00` into seconds from Monday 00:00.
fn week_offset(at: &str) -> anyhow::Result<i64> {
    let (day, time) = at
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("`{at}`: write a day and a time, `mon 08:00`"))?;
    let d = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .position(|x| x.eq_ignore_ascii_case(day))
        .ok_or_else(|| anyhow::anyhow!("`{day}` is not a day (mon..sun)"))?;
    let (h, m) = time
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("`{time}` is not a time (08:00)"))?;
    let (h, m): (i64, i64) = (h.parse()?, m.parse()?);
    anyhow::ensure!(
        (0..24).contains(&h) && (0..60).contains(&m),
        "`{time}` is not a time"
    );
    Ok(d as i64 * 86_400 + h * 3_600 + m * 60)
}

fn local_label(local_s: i64) -> String {
    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        [(local_s.div_euclid(86_400) + 3).rem_euclid(7) as usize];
    let s = local_s.rem_euclid(86_400);
    format!("{day} {:02}:{:02}", s / 3_600, s / 60 % 60)
}

/// Records the level the watch hands to the playbook, at simulated time.
struct Recorder {
    now_ms: Arc<AtomicU64>,
    changes: Mutex<Vec<(u64, Level)>>,
}

impl Effects for Recorder {
    fn level(&self, _tenant: &str, level: Level) {
        let now = self.now_ms.load(Ordering::Relaxed);
        self.changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((now, level));
    }
    fn notice(&self, _: &str, _: Option<crate::config::runtime::NoticeMode>, _: &Incident) {}
}

/// The gateway configuration the watch reads: one tenant with a login route, an alert
/// channel (never delivered: the drill counts what is queued), the incidents' database in
/// `dir`.
pub fn config_text() -> String {
    r#"[[listeners]]
address = "127.0.0.1:0"

[admin]
address = "127.0.0.1:0"

[status]
time_zone = "Europe/Paris"

[watch]
database = "watch.db"

[[watch.alerts]]
name = "astreinte"
kind = "webhook"
url = "http://127.0.0.1:9/alertes"

[[tenants]]
id = "ville"
name = "Ville de Saint-Exemple"
hosts = ["ville.test"]

[[tenants.pools]]
name = "web"
servers = [{ address = "127.0.0.1:9" }]

[[tenants.routes]]
name = "connexion"
path_prefix = "/connexion"
pool = "web"
login = true

[[tenants.routes]]
path_prefix = "/"
pool = "web"
"#
    .to_owned()
}

/// Monday 2026-11-02 00:00 in Paris (23:00 UTC the day before), the start of learning.
const EPOCH_UNIX_S: i64 = 1_793_574_000;

struct Sim {
    signals: TenantSignals,
    previous: Totals,
    watch: Arc<WatchService>,
    config: Arc<crate::config::Runtime>,
    recorder: Arc<Recorder>,
    rng: Rng,
    peak: f64,
    residents: u32,
    /// Seconds since the epoch (simulated).
    t: i64,
    newcomers: u64,
}

/// Residents' browsers (cumulative shares) and their fingerprint buckets: phones and
/// computers, a few browsers, none with most of the traffic.
const BROWSERS: [(f64, &str); 8] = [
    (0.30, "chrome-windows"),
    (0.50, "chrome-android"),
    (0.68, "safari-ios"),
    (0.76, "firefox"),
    (0.84, "edge"),
    (0.90, "safari-macos"),
    (0.95, "samsung-internet"),
    (1.00, "other"),
];

fn browser_bucket(u: f64) -> u8 {
    let name = BROWSERS
        .iter()
        .find(|(upto, _)| u < *upto)
        .map_or("other", |(_, n)| n);
    crate::signals::fingerprint_bucket(name, name)
}

/// What one simulated second sends.
#[derive(Clone, Copy, Default)]
struct Extra {
    kind: Option<PhaseKind>,
    factor: f64,
    sources: u32,
    per_source: f64,
    campaign: u64,
}

impl Sim {
    fn local_s(&self) -> i64 {
        // Paris in winter (the epoch and a few weeks after stay in winter time).
        EPOCH_UNIX_S + self.t + 3_600
    }

    fn resident(&mut self) {
        // Popular prefixes (mobile carriers, the town hall) come back most.
        let u = self.rng.unit();
        let idx = (u * u * u * f64::from(self.residents)) as u64;
        self.signals.request(None);
        self.signals.source(source_key(1 << 64 | u128::from(idx)));
        let b = browser_bucket(self.rng.unit());
        self.signals.fingerprint(b);
    }

    fn newcomer(&mut self) {
        self.newcomers += 1;
        self.signals.request(None);
        self.signals
            .source(source_key(2 << 64 | u128::from(self.newcomers)));
        let b = browser_bucket(self.rng.unit());
        self.signals.fingerprint(b);
    }

    /// One second: traffic, then the sampler's report to the watch. Requests sent.
    fn second(&mut self, extra: Extra) -> u64 {
        let local = self.local_s();
        let unix_ms = ((EPOCH_UNIX_S + self.t) * 1_000) as u64;
        self.recorder.now_ms.store(unix_ms, Ordering::Relaxed);
        let mut sent = 0;
        let base = residents_rate(self.peak, local);
        let factor = if extra.kind == Some(PhaseKind::Surge) {
            extra.factor
        } else {
            1.0
        };
        // Residents: a few newcomers a day (1 %), the others come back; a surge brings a
        // quarter of its extra as newcomers.
        let residents = count(&mut self.rng, base);
        for _ in 0..residents {
            if self.rng.unit() < 0.01 {
                self.newcomer();
            } else {
                self.resident();
            }
        }
        sent += residents;
        if factor > 1.0 {
            let surge = count(&mut self.rng, base * (factor - 1.0));
            for _ in 0..surge {
                if self.rng.unit() < 0.25 {
                    self.newcomer();
                } else {
                    self.resident();
                }
            }
            sent += surge;
        }
        match extra.kind {
            Some(PhaseKind::Flood | PhaseKind::LowAndSlow | PhaseKind::Stuffing) => {
                let n = count(&mut self.rng, f64::from(extra.sources) * extra.per_source);
                // One tool: one fingerprint per campaign.
                let tool =
                    crate::signals::fingerprint_bucket("attack-tool", &extra.campaign.to_string());
                for _ in 0..n {
                    self.signals.fingerprint(tool);
                    let bot = self.rng.next() % u64::from(extra.sources.max(1));
                    self.signals.request(None);
                    self.signals.source(source_key(
                        3 << 64 | u128::from(extra.campaign) << 32 | u128::from(bot),
                    ));
                    if extra.kind == Some(PhaseKind::Stuffing) {
                        self.signals.login_failure();
                    }
                }
                sent += n;
            }
            Some(PhaseKind::GuardBreach) if self.t % 2 == 0 => {
                self.signals.request(Some(LocalReason::Guarded));
                self.signals.source(source_key(1 << 64 | 7));
                sent += 1;
            }
            _ => {}
        }
        // The sampler: windows and days turn in local time, then the report.
        let next = local + 1;
        let now = self.signals.totals();
        let report = Report {
            at_unix_ms: unix_ms,
            config: self.config.clone(),
            tenants: vec![TenantReport {
                totals: now.since(&self.previous),
                pools: Vec::new(),
                distinct_sources: self.signals.take_distinct_sources(),
                top_sources: Vec::new(),
                top_fingerprints: Vec::new(),
                fingerprints: self.signals.take_fingerprints(),
                routes: Vec::new(),
                top_paths: Vec::new(),
            }],
            gateway: Totals::default(),
        };
        self.previous = now;
        self.watch.on_report(&report);
        if next.div_euclid(86_400) != local.div_euclid(86_400) {
            self.signals.turn_day();
        }
        if next.div_euclid(600) != local.div_euclid(600) {
            self.signals.turn_window();
        }
        self.t += 1;
        sent
    }

    fn level(&self) -> Level {
        self.recorder
            .changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last()
            .map_or(Level::Vert, |c| c.1)
    }

    fn alerts(&self) -> u64 {
        self.watch.flush();
        self.watch
            .outbox_counts()
            .map_or(0, |c| c.pending + c.sent + c.failed)
    }
}

/// Runs `scenario` with its state in `dir`.
pub fn run(scenario: &TimelineScenario, dir: &Path) -> anyhow::Result<TimelineReport> {
    let started = std::time::Instant::now();
    let tl = &scenario.timeline;
    anyhow::ensure!(
        tl.peak_rate > 0.0 && tl.peak_rate <= 5_000.0,
        "peak_rate: 0 to 5000"
    );
    anyhow::ensure!(tl.residents > 0, "residents: at least 1");
    let path = dir.join("rempart.toml");
    std::fs::write(&path, config_text())?;
    let config = Arc::new(crate::config::load(&path)?);
    let recorder = Arc::new(Recorder {
        now_ms: Arc::new(AtomicU64::new(0)),
        changes: Mutex::new(Vec::new()),
    });
    let metrics = crate::metrics::Metrics::default();
    let watch = WatchService::open(&config, &metrics, recorder.clone())?;
    let mut sim = Sim {
        signals: TenantSignals::default(),
        previous: Totals::default(),
        watch,
        config,
        recorder: recorder.clone(),
        rng: Rng(tl.seed | 1),
        peak: tl.peak_rate,
        residents: tl.residents,
        t: 0,
        newcomers: 0,
    };
    // Learning: ordinary days.
    let learn_end = i64::from(tl.learn_days) * 86_400;
    while sim.t < learn_end {
        sim.second(Extra::default());
    }
    let (learning_changes, learning_max_level) =
        recorder.changes.lock().map_or((0, Level::Vert), |c| {
            (
                c.len() as u32,
                c.iter().map(|x| x.1).max().unwrap_or_default(),
            )
        });
    let learning_alerts = sim.alerts();
    // The phases' week starts on the next Monday.
    let week = learn_end.div_euclid(7 * 86_400) * 7 * 86_400
        + if learn_end % (7 * 86_400) == 0 {
            0
        } else {
            7 * 86_400
        };
    while sim.t < week {
        sim.second(Extra::default());
    }
    let mut results: Vec<PhaseResult> = Vec::new();
    let mut ends: Vec<(usize, i64)> = Vec::new();
    for (pi, phase) in tl.phases.iter().enumerate() {
        let duration = crate::common::parse_duration(&phase.duration)
            .map_err(|e| anyhow::anyhow!("phase `{}`: {e}", phase.name))?
            .as_secs() as i64;
        anyhow::ensure!(
            duration > 0 && duration <= 7 * 86_400,
            "phase `{}`: 1 s to 7 days",
            phase.name
        );
        if let Some(at) = &phase.at {
            let start = week + week_offset(at)?;
            anyhow::ensure!(
                start >= sim.t,
                "phase `{}` starts at {at}, before the previous one ends",
                phase.name
            );
            while sim.t < start {
                sim.second(Extra::default());
            }
        }
        let extra = Extra {
            kind: Some(phase.kind),
            factor: phase.factor.unwrap_or(5.0),
            sources: phase.sources.unwrap_or(match phase.kind {
                PhaseKind::Flood => 10_000,
                PhaseKind::LowAndSlow => 20_000,
                PhaseKind::Stuffing => 200,
                _ => 0,
            }),
            per_source: phase.per_source.unwrap_or(match phase.kind {
                PhaseKind::Flood => 0.5,
                PhaseKind::LowAndSlow => 0.02,
                PhaseKind::Stuffing => 0.05,
                _ => 0.0,
            }),
            campaign: pi as u64,
        };
        let alerts_before = sim.alerts();
        let changes_before = recorder.changes.lock().map_or(0, |c| c.len());
        let start = sim.t;
        let start_label = local_label(sim.local_s());
        let mut time_to = [None; 3];
        let mut max_level = sim.level();
        let mut sent = 0u64;
        while sim.t < start + duration {
            sent += sim.second(extra);
            let level = sim.level();
            max_level = max_level.max(level);
            for (i, l) in [Level::Jaune, Level::Orange, Level::Rouge]
                .iter()
                .enumerate()
            {
                if level >= *l && time_to[i].is_none() {
                    time_to[i] = Some((sim.t - start) as u64);
                }
            }
        }
        let changes = recorder.changes.lock().map_or(0, |c| c.len()) - changes_before;
        results.push(PhaseResult {
            name: phase.name.clone(),
            kind: phase.kind,
            start: start_label,
            duration_s: duration as u64,
            mean_rate: sent as f64 / duration as f64,
            time_to,
            max_level,
            changes: changes as u32,
            alerts: sim.alerts() - alerts_before,
            back_to_vert_s: None,
            min_step_down_gap_s: None,
        });
        if phase.kind.is_attack() {
            ends.push((pi, sim.t));
        }
    }
    // An hour of ordinary traffic after the last phase, for the way down.
    let tail_end = sim.t + 3_600;
    while sim.t < tail_end {
        sim.second(Extra::default());
    }
    let changes = recorder
        .changes
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    let epoch_ms = (EPOCH_UNIX_S * 1_000) as u64;
    for (pi, end) in ends {
        let end_ms = epoch_ms + (end as u64) * 1_000;
        let after: Vec<&(u64, Level)> = changes.iter().filter(|c| c.0 >= end_ms).collect();
        let vert = after
            .iter()
            .find(|c| c.1 == Level::Vert)
            .map(|c| (c.0 - end_ms) / 1_000);
        let downs: Vec<u64> = after
            .iter()
            .take_while(|c| vert.is_none_or(|v| c.0 <= end_ms + v * 1_000))
            .map(|c| c.0)
            .collect();
        let gap = downs.windows(2).map(|w| (w[1] - w[0]) / 1_000).min();
        results[pi].back_to_vert_s = vert;
        results[pi].min_step_down_gap_s = gap;
    }
    Ok(TimelineReport {
        name: scenario.name.clone(),
        learn_days: tl.learn_days,
        learning_changes,
        learning_max_level,
        learning_alerts,
        phases: results,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

fn secs(v: Option<u64>) -> String {
    v.map_or("-".to_owned(), |s| {
        if s >= 120 {
            format!("{} min {:02} s", s / 60, s % 60)
        } else {
            format!("{s} s")
        }
    })
}

/// The report as a Markdown table.
pub fn table(r: &TimelineReport) -> String {
    let mut out = format!(
        "{}: {} days learnt first ({} level changes while learning, highest {}, {} alerts), simulated in {:.1} s\n\n",
        r.name, r.learn_days, r.learning_changes, r.learning_max_level, r.learning_alerts, r.wall_s
    );
    out.push_str("| phase | kind | start | length | req/s | to jaune | to orange | to rouge | highest | changes | alerts | back to vert | shortest step down |\n");
    out.push_str(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for p in &r.phases {
        let kind = serde_json::to_value(p.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push_str(&format!(
            "| {} | {kind} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            p.name,
            p.start,
            secs(Some(p.duration_s)),
            p.mean_rate,
            secs(p.time_to[0]),
            secs(p.time_to[1]),
            secs(p.time_to[2]),
            p.max_level,
            p.changes,
            p.alerts,
            secs(p.back_to_vert_s),
            secs(p.min_step_down_gap_s),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_town_is_busy_on_weekday_mornings_and_quiet_at_night() {
        let monday_10 = 10 * 3_600;
        let monday_3 = 3 * 3_600;
        let saturday_10 = 5 * 86_400 + 10 * 3_600;
        // 1970-01-05 was a Monday.
        let base = 4 * 86_400;
        assert_eq!(residents_rate(40.0, base + monday_10), 40.0);
        assert!(residents_rate(40.0, base + monday_3) < 2.0);
        assert_eq!(residents_rate(40.0, base + saturday_10), 14.0);
        assert_eq!(
            week_offset("wed 09:30").unwrap(),
            2 * 86_400 + 9 * 3_600 + 1_800
        );
        assert!(week_offset("mercredi 9h").is_err());
        assert_eq!(
            local_label(base + 2 * 86_400 + 9 * 3_600 + 1_800),
            "wed 09:30"
        );
        // The epoch is a Monday, midnight in Paris.
        assert_eq!(local_label(EPOCH_UNIX_S + 3_600), "mon 00:00");
    }
}
