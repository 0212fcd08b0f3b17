//! The status model, pure: component states and their labels, incidents and maintenance
//! windows with their public updates, the debounced detector that turns health samples into
//! a component state, and the daily history behind the 90-day bars. Every function takes
//! `now` as input; nothing here reads a clock or touches a socket.

use serde::{Deserialize, Serialize};

pub use crate::common::DAY_S;
use crate::common::{civil_from_days, days_from_civil, Language, TimeZone};

/// Days of history kept and shown.
pub const HISTORY_DAYS: u64 = 90;

/// A citizen service's state, as residents read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    /// Working normally.
    Operational,
    /// Slow or failing now and then.
    DegradedPerformance,
    /// Part of the service fails.
    PartialOutage,
    /// The service is down.
    MajorOutage,
    /// Planned work.
    UnderMaintenance,
}

impl ComponentState {
    /// Every state, in history-column order.
    pub const ALL: [ComponentState; 5] = [
        ComponentState::Operational,
        ComponentState::DegradedPerformance,
        ComponentState::PartialOutage,
        ComponentState::MajorOutage,
        ComponentState::UnderMaintenance,
    ];

    /// Position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// How bad it is for residents (0 = fine).
    pub fn severity(self) -> u8 {
        match self {
            ComponentState::Operational => 0,
            ComponentState::UnderMaintenance => 1,
            ComponentState::DegradedPerformance => 2,
            ComponentState::PartialOutage => 3,
            ComponentState::MajorOutage => 4,
        }
    }

    /// The machine name (as in the JSON summary and the admin API).
    pub fn name(self) -> &'static str {
        match self {
            ComponentState::Operational => "operational",
            ComponentState::DegradedPerformance => "degraded_performance",
            ComponentState::PartialOutage => "partial_outage",
            ComponentState::MajorOutage => "major_outage",
            ComponentState::UnderMaintenance => "under_maintenance",
        }
    }

    /// Parses a machine name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The label residents read.
    pub fn label(self, lang: Language) -> &'static str {
        match (self, lang) {
            (ComponentState::Operational, Language::Fr) => "Opérationnel",
            (ComponentState::DegradedPerformance, Language::Fr) => "Perturbé",
            (ComponentState::PartialOutage, Language::Fr) => "Panne partielle",
            (ComponentState::MajorOutage, Language::Fr) => "Panne majeure",
            (ComponentState::UnderMaintenance, Language::Fr) => "Maintenance",
            (ComponentState::Operational, Language::En) => "Operational",
            (ComponentState::DegradedPerformance, Language::En) => "Degraded performance",
            (ComponentState::PartialOutage, Language::En) => "Partial outage",
            (ComponentState::MajorOutage, Language::En) => "Major outage",
            (ComponentState::UnderMaintenance, Language::En) => "Under maintenance",
        }
    }

    /// Short CSS class.
    pub fn class(self) -> &'static str {
        match self {
            ComponentState::Operational => "ok",
            ComponentState::DegradedPerformance => "deg",
            ComponentState::PartialOutage => "part",
            ComponentState::MajorOutage => "maj",
            ComponentState::UnderMaintenance => "mnt",
        }
    }
}

/// Whether a notice is about an unplanned incident or planned maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// Something broke.
    Incident,
    /// Planned work.
    Maintenance,
}

/// Stage of an incident (investigating .. resolved) or a maintenance (scheduled .. completed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// Looking for the cause.
    Investigating,
    /// Cause known, being fixed.
    Identified,
    /// Fixed, watching.
    Monitoring,
    /// Over.
    Resolved,
    /// Maintenance announced.
    Scheduled,
    /// Maintenance under way.
    InProgress,
    /// Maintenance work done, checking.
    Verifying,
    /// Maintenance over.
    Completed,
}

impl IncidentStatus {
    /// Every status.
    pub const ALL: [IncidentStatus; 8] = [
        IncidentStatus::Investigating,
        IncidentStatus::Identified,
        IncidentStatus::Monitoring,
        IncidentStatus::Resolved,
        IncidentStatus::Scheduled,
        IncidentStatus::InProgress,
        IncidentStatus::Verifying,
        IncidentStatus::Completed,
    ];

    /// The machine name.
    pub fn name(self) -> &'static str {
        match self {
            IncidentStatus::Investigating => "investigating",
            IncidentStatus::Identified => "identified",
            IncidentStatus::Monitoring => "monitoring",
            IncidentStatus::Resolved => "resolved",
            IncidentStatus::Scheduled => "scheduled",
            IncidentStatus::InProgress => "in_progress",
            IncidentStatus::Verifying => "verifying",
            IncidentStatus::Completed => "completed",
        }
    }

    /// Parses a machine name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Whether the notice is over.
    pub fn is_final(self) -> bool {
        matches!(self, IncidentStatus::Resolved | IncidentStatus::Completed)
    }

    /// Whether this status belongs to `kind`.
    pub fn fits(self, kind: IncidentKind) -> bool {
        match kind {
            IncidentKind::Incident => matches!(
                self,
                IncidentStatus::Investigating
                    | IncidentStatus::Identified
                    | IncidentStatus::Monitoring
                    | IncidentStatus::Resolved
            ),
            IncidentKind::Maintenance => matches!(
                self,
                IncidentStatus::Scheduled
                    | IncidentStatus::InProgress
                    | IncidentStatus::Verifying
                    | IncidentStatus::Completed
            ),
        }
    }

    /// The label residents read.
    pub fn label(self, lang: Language) -> &'static str {
        match (self, lang) {
            (IncidentStatus::Investigating, Language::Fr) => "Analyse en cours",
            (IncidentStatus::Identified, Language::Fr) => "Cause identifiée",
            (IncidentStatus::Monitoring, Language::Fr) => "Sous surveillance",
            (IncidentStatus::Resolved, Language::Fr) => "Résolu",
            (IncidentStatus::Scheduled, Language::Fr) => "Programmée",
            (IncidentStatus::InProgress, Language::Fr) => "En cours",
            (IncidentStatus::Verifying, Language::Fr) => "Vérifications",
            (IncidentStatus::Completed, Language::Fr) => "Terminée",
            (IncidentStatus::Investigating, Language::En) => "Investigating",
            (IncidentStatus::Identified, Language::En) => "Identified",
            (IncidentStatus::Monitoring, Language::En) => "Monitoring",
            (IncidentStatus::Resolved, Language::En) => "Resolved",
            (IncidentStatus::Scheduled, Language::En) => "Scheduled",
            (IncidentStatus::InProgress, Language::En) => "In progress",
            (IncidentStatus::Verifying, Language::En) => "Verifying",
            (IncidentStatus::Completed, Language::En) => "Completed",
        }
    }
}

/// How much an incident hurts residents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    /// No visible effect.
    None,
    /// Some residents notice.
    Minor,
    /// Many residents cannot use a service.
    Major,
    /// Nothing works.
    Critical,
}

impl Impact {
    /// The machine name.
    pub fn name(self) -> &'static str {
        match self {
            Impact::None => "none",
            Impact::Minor => "minor",
            Impact::Major => "major",
            Impact::Critical => "critical",
        }
    }

    /// Parses a machine name.
    pub fn parse(s: &str) -> Option<Self> {
        [Impact::None, Impact::Minor, Impact::Major, Impact::Critical]
            .into_iter()
            .find(|c| c.name() == s)
    }
}

/// One public update of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// Identifier, unique within the incident.
    pub id: u32,
    /// Unix seconds.
    pub at: u64,
    /// Stage reached.
    pub status: IncidentStatus,
    /// Message in French.
    pub message: String,
    /// Message in English, when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_en: Option<String>,
}

impl Update {
    /// The message in `lang`, falling back to French.
    pub fn message(&self, lang: Language) -> &str {
        match lang {
            Language::En => self.message_en.as_deref().unwrap_or(&self.message),
            Language::Fr => &self.message,
        }
    }
}

/// An incident or a maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Identifier (unique across tenants).
    pub id: u64,
    /// Tenant id.
    pub tenant: String,
    /// Incident or maintenance.
    pub kind: IncidentKind,
    /// Title in French.
    pub title: String,
    /// Title in English, when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_en: Option<String>,
    /// Impact.
    pub impact: Impact,
    /// Ids of the components concerned.
    pub components: Vec<String>,
    /// Shown to residents (drafts are not).
    pub published: bool,
    /// Opened by the detector, not yet touched by an operator.
    pub automatic: bool,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the last change.
    pub updated_at: u64,
    /// Unix seconds when resolved or completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<u64>,
    /// Maintenance window start (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<u64>,
    /// Maintenance window end (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<u64>,
    /// Timeline, oldest first (never empty).
    pub updates: Vec<Update>,
}

impl Incident {
    /// The current stage (the last update's).
    pub fn status(&self) -> IncidentStatus {
        self.updates
            .last()
            .map_or(IncidentStatus::Investigating, |u| u.status)
    }

    /// The title in `lang`, falling back to French.
    pub fn title(&self, lang: Language) -> &str {
        match lang {
            Language::En => self.title_en.as_deref().unwrap_or(&self.title),
            Language::Fr => &self.title,
        }
    }

    /// Whether the notice is still open at `now` (a maintenance is open from its start to its
    /// completion or end).
    pub fn is_open(&self) -> bool {
        !self.status().is_final()
    }

    /// Whether a maintenance window covers `now` and is not completed.
    pub fn maintenance_active(&self, now: u64) -> bool {
        self.kind == IncidentKind::Maintenance
            && self.is_open()
            && (self.status() == IncidentStatus::InProgress
                || self.status() == IncidentStatus::Verifying
                || (self.starts_at.is_some_and(|s| s <= now)
                    && self.ends_at.is_none_or(|e| now < e)))
    }

    /// Adds an update, keeping the timestamps right.
    pub fn push_update(
        &mut self,
        status: IncidentStatus,
        message: String,
        message_en: Option<String>,
        now: u64,
    ) {
        let id = self.updates.last().map_or(1, |u| u.id + 1);
        self.updates.push(Update {
            id,
            at: now,
            status,
            message,
            message_en,
        });
        self.updated_at = now;
        self.resolved_at = status.is_final().then_some(now);
    }
}

/// What the detector sees of a component over one sampling interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Upstream servers behind the component.
    pub servers: u32,
    /// Of which available (healthy and not ejected).
    pub available: u32,
    /// Upstream requests finished in the interval.
    pub requests: u64,
    /// Of which failed (no answer, timeout or 5xx).
    pub failures: u64,
    /// Of which slower than the component's threshold.
    pub slow: u64,
}

/// Requests in an interval below which error and latency ratios are not trusted.
pub const MIN_REQUESTS: u64 = 10;

/// The state a sample suggests, before debouncing: no server available is a major outage,
/// some unavailable or half the requests failing a partial outage, a tenth failing or a
/// fifth slow a degraded performance.
pub fn raw_state(sample: &Sample) -> ComponentState {
    if sample.servers > 0 && sample.available == 0 {
        return ComponentState::MajorOutage;
    }
    let trusted = sample.requests >= MIN_REQUESTS;
    let failing = trusted && sample.failures * 2 >= sample.requests;
    if sample.available < sample.servers || failing {
        return ComponentState::PartialOutage;
    }
    if trusted && (sample.failures * 10 >= sample.requests || sample.slow * 5 >= sample.requests) {
        return ComponentState::DegradedPerformance;
    }
    ComponentState::Operational
}

/// Debounce: a new state counts only once every sample for `hold_ms` suggested it, so one
/// failed check does not flip the public page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    stable: ComponentState,
    candidate: ComponentState,
    since_ms: u64,
}

impl Debounce {
    /// Starts operational.
    pub fn new(now_ms: u64) -> Self {
        Self {
            stable: ComponentState::Operational,
            candidate: ComponentState::Operational,
            since_ms: now_ms,
        }
    }

    /// The debounced state.
    pub fn state(&self) -> ComponentState {
        self.stable
    }

    /// Feeds one raw state; returns the new debounced state when it changes.
    pub fn observe(
        &mut self,
        raw: ComponentState,
        now_ms: u64,
        hold_ms: u64,
    ) -> Option<ComponentState> {
        if raw != self.candidate {
            self.candidate = raw;
            self.since_ms = now_ms;
        }
        if self.candidate != self.stable && now_ms.saturating_sub(self.since_ms) >= hold_ms {
            self.stable = self.candidate;
            return Some(self.stable);
        }
        None
    }
}

/// Seconds spent in each state (in `ComponentState::ALL` order) during one UTC day.
pub type DayTally = [u32; 5];

/// Adds the time from `from_s` to `to_s` spent in `state` to `add(day, state, seconds)`,
/// split at UTC midnights.
pub fn accrue(state: ComponentState, from_s: u64, to_s: u64, mut add: impl FnMut(u64, usize, u32)) {
    let mut t = from_s;
    while t < to_s {
        let day = t / DAY_S;
        let end = ((day + 1) * DAY_S).min(to_s);
        add(
            day,
            state.index(),
            u32::try_from(end - t).unwrap_or(u32::MAX),
        );
        t = end;
    }
}

/// What one day's bar shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DaySummary {
    /// Worst state that lasted at least a minute (operational when nothing was observed).
    pub worst: ComponentState,
    /// Share of the observed time the service worked (partial outage counts 30 % down),
    /// `None` when nothing was observed.
    pub uptime: Option<f64>,
}

/// Summarises a day's tally.
pub fn summarize_day(tally: &DayTally) -> DaySummary {
    let observed: u64 = tally.iter().map(|&s| u64::from(s)).sum();
    let worst = ComponentState::ALL
        .into_iter()
        .filter(|s| tally[s.index()] >= 60)
        .max_by_key(|s| s.severity())
        .unwrap_or(ComponentState::Operational);
    let uptime = (observed > 0).then(|| {
        let down = f64::from(tally[ComponentState::MajorOutage.index()])
            + 0.3 * f64::from(tally[ComponentState::PartialOutage.index()]);
        (1.0 - down / observed as f64).clamp(0.0, 1.0)
    });
    DaySummary { worst, uptime }
}

/// Uptime over several days (observed time only), `None` when nothing was observed.
pub fn uptime_over<'a>(days: impl IntoIterator<Item = &'a DayTally>) -> Option<f64> {
    let mut total = [0u64; 5];
    for d in days {
        for (t, s) in total.iter_mut().zip(d) {
            *t += u64::from(*s);
        }
    }
    let observed: u64 = total.iter().sum();
    (observed > 0).then(|| {
        let down = total[ComponentState::MajorOutage.index()] as f64
            + 0.3 * total[ComponentState::PartialOutage.index()] as f64;
        (1.0 - down / observed as f64).clamp(0.0, 1.0)
    })
}

/// Overall indicator of a page, from its components' states and open incidents, as in the
/// de-facto `summary.json`: `none`, `minor`, `major`, `critical` or `maintenance`.
pub fn indicator(states: &[ComponentState], open_impacts: &[Impact]) -> &'static str {
    let worst = states.iter().map(|s| s.severity()).max().unwrap_or(0);
    let impact = open_impacts.iter().copied().max().unwrap_or(Impact::None);
    if worst >= ComponentState::MajorOutage.severity() || impact == Impact::Critical {
        "critical"
    } else if worst >= ComponentState::PartialOutage.severity() || impact == Impact::Major {
        "major"
    } else if worst >= ComponentState::DegradedPerformance.severity() || impact == Impact::Minor {
        "minor"
    } else if worst == ComponentState::UnderMaintenance.severity() {
        "maintenance"
    } else {
        "none"
    }
}

/// A sentence for the indicator.
pub fn indicator_text(indicator: &str, lang: Language) -> &'static str {
    match (indicator, lang) {
        ("critical", Language::Fr) => "Panne majeure en cours",
        ("major", Language::Fr) => "Panne partielle en cours",
        ("minor", Language::Fr) => "Certains services sont perturbés",
        ("maintenance", Language::Fr) => "Maintenance en cours",
        (_, Language::Fr) => "Tous les services fonctionnent normalement",
        ("critical", Language::En) => "Major outage",
        ("major", Language::En) => "Partial outage",
        ("minor", Language::En) => "Some services are degraded",
        ("maintenance", Language::En) => "Maintenance in progress",
        (_, Language::En) => "All services are operating normally",
    }
}

/// RFC 3339 UTC timestamp (`2026-11-27T14:05:00Z`), for feeds and JSON.
pub fn rfc3339(unix_s: u64) -> String {
    let (y, mo, d) = civil_from_days((unix_s / DAY_S) as i64);
    let s = unix_s % DAY_S;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// Date and time for residents, in the page's time zone: `27/11/2026 15:05` in French,
/// `2026-11-27 15:05` in English, followed by the UTC offset.
pub fn local_time(unix_s: u64, zone: TimeZone, lang: Language) -> String {
    let offset = zone.offset_minutes(unix_s);
    let local = unix_s as i64 + i64::from(offset) * 60;
    let (y, mo, d) = civil_from_days(local.div_euclid(DAY_S as i64));
    let s = local.rem_euclid(DAY_S as i64);
    let (h, mi) = (s / 3600, (s / 60) % 60);
    let zone_name = match offset {
        0 => "UTC".to_owned(),
        _ => format!(
            "UTC{}{}{}",
            if offset < 0 { '-' } else { '+' },
            offset.abs() / 60,
            if offset % 60 == 0 {
                String::new()
            } else {
                format!(":{:02}", offset.abs() % 60)
            }
        ),
    };
    match lang {
        Language::Fr => format!("{d:02}/{mo:02}/{y} {h:02}:{mi:02} ({zone_name})"),
        Language::En => format!("{y}-{mo:02}-{d:02} {h:02}:{mi:02} ({zone_name})"),
    }
}

/// Short date of a day number (`27/11` or `Nov 27`), for bar tooltips.
pub fn short_day(day: u64, lang: Language) -> String {
    let (y, mo, d) = civil_from_days(day as i64);
    match lang {
        Language::Fr => format!("{d:02}/{mo:02}/{y}"),
        Language::En => format!("{y}-{mo:02}-{d:02}"),
    }
}

/// Parses a time for operators: unix seconds, `+30m` / `+2h` from `now`, or a date and time
/// `2026-12-01T20:00` (in `zone`), optionally with seconds and `Z` or an offset such as
/// `+01:00`.
pub fn parse_time(s: &str, now: u64, zone: TimeZone) -> Option<u64> {
    let s = s.trim();
    if let Some(rel) = s.strip_prefix('+') {
        let d = crate::config::validate::parse_duration(rel).ok()?;
        return Some(now + d.as_secs());
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.split('-');
    let (y, mo, da) = (
        d.next()?.parse::<i64>().ok()?,
        d.next()?.parse::<u32>().ok()?,
        d.next()?.parse::<u32>().ok()?,
    );
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let (clock, offset) = if let Some(c) = time.strip_suffix('Z') {
        (c, Some(0i64))
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, o) = time.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (oh, om) = o[1..].split_once(':')?;
        (
            c,
            Some(sign * (oh.parse::<i64>().ok()? * 60 + om.parse::<i64>().ok()?)),
        )
    } else {
        (time, None)
    };
    let mut c = clock.split(':');
    let h = c.next()?.parse::<i64>().ok()?;
    let mi = c.next()?.parse::<i64>().ok()?;
    let se = c.next().map_or(Some(0), |x| x.parse::<i64>().ok())?;
    if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&se) {
        return None;
    }
    let local = days_from_civil(y, mo, da) * DAY_S as i64 + h * 3600 + mi * 60 + se;
    let offset_min = match offset {
        Some(o) => o,
        // Local time: the zone's offset at that moment (checked at the guessed instant).
        None => i64::from(zone.offset_minutes(u64::try_from(local).ok()?)),
    };
    u64::try_from(local - offset_min * 60).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_times() {
        let now = 1_795_784_700;
        assert_eq!(parse_time("+2h", now, TimeZone::Utc), Some(now + 7200));
        assert_eq!(parse_time("1795784700", now, TimeZone::Utc), Some(now));
        assert_eq!(
            parse_time("2026-11-27T13:05:00Z", now, TimeZone::Paris),
            Some(now)
        );
        assert_eq!(
            parse_time("2026-11-27T14:05+01:00", now, TimeZone::Utc),
            Some(now)
        );
        assert_eq!(
            parse_time("2026-11-27 14:05", now, TimeZone::Paris),
            Some(now)
        );
        assert_eq!(parse_time("2026-13-27T14:05", now, TimeZone::Paris), None);
        assert_eq!(parse_time("tomorrow", now, TimeZone::Paris), None);
    }

    #[test]
    fn raw_states_follow_health_and_errors() {
        let s = |servers, available, requests, failures, slow| Sample {
            servers,
            available,
            requests,
            failures,
            slow,
        };
        assert_eq!(raw_state(&s(2, 2, 0, 0, 0)), ComponentState::Operational);
        assert_eq!(raw_state(&s(2, 0, 0, 0, 0)), ComponentState::MajorOutage);
        assert_eq!(raw_state(&s(2, 1, 0, 0, 0)), ComponentState::PartialOutage);
        assert_eq!(
            raw_state(&s(1, 1, 100, 50, 0)),
            ComponentState::PartialOutage
        );
        assert_eq!(
            raw_state(&s(1, 1, 100, 10, 0)),
            ComponentState::DegradedPerformance
        );
        assert_eq!(
            raw_state(&s(1, 1, 100, 0, 20)),
            ComponentState::DegradedPerformance
        );
        // Too few requests to judge by ratios.
        assert_eq!(raw_state(&s(1, 1, 4, 4, 4)), ComponentState::Operational);
        // A component without servers (manual only) is judged by requests alone.
        assert_eq!(raw_state(&s(0, 0, 0, 0, 0)), ComponentState::Operational);
    }

    #[test]
    fn debounce_needs_the_whole_hold() {
        let mut d = Debounce::new(0);
        assert_eq!(d.observe(ComponentState::MajorOutage, 1_000, 5_000), None);
        // One good sample in between restarts the wait.
        assert_eq!(d.observe(ComponentState::Operational, 2_000, 5_000), None);
        assert_eq!(d.observe(ComponentState::MajorOutage, 3_000, 5_000), None);
        assert_eq!(d.observe(ComponentState::MajorOutage, 7_999, 5_000), None);
        assert_eq!(
            d.observe(ComponentState::MajorOutage, 8_000, 5_000),
            Some(ComponentState::MajorOutage)
        );
        assert_eq!(d.state(), ComponentState::MajorOutage);
        assert_eq!(d.observe(ComponentState::MajorOutage, 9_000, 5_000), None);
        assert_eq!(d.observe(ComponentState::Operational, 10_000, 5_000), None);
        assert_eq!(
            d.observe(ComponentState::Operational, 15_000, 5_000),
            Some(ComponentState::Operational)
        );
    }

    #[test]
    fn accrual_splits_at_midnight() {
        let mut got = Vec::new();
        accrue(
            ComponentState::MajorOutage,
            DAY_S - 10,
            DAY_S + 5,
            |d, s, n| got.push((d, s, n)),
        );
        assert_eq!(got, vec![(0, 3, 10), (1, 3, 5)]);
    }

    #[test]
    fn day_summary_and_uptime() {
        let mut t: DayTally = [0; 5];
        t[ComponentState::Operational.index()] = 86_400 - 864;
        t[ComponentState::MajorOutage.index()] = 864;
        let s = summarize_day(&t);
        assert_eq!(s.worst, ComponentState::MajorOutage);
        assert!((s.uptime.unwrap_or(0.0) - 0.99).abs() < 1e-9);
        // A 30-second blip does not colour the day.
        let mut blip: DayTally = [0; 5];
        blip[0] = 86_370;
        blip[ComponentState::MajorOutage.index()] = 30;
        assert_eq!(summarize_day(&blip).worst, ComponentState::Operational);
        assert_eq!(summarize_day(&[0; 5]).uptime, None);
        assert!((uptime_over([&t, &[86_400, 0, 0, 0, 0]]).unwrap_or(0.0) - 0.995).abs() < 1e-9);
    }

    #[test]
    fn indicators() {
        use ComponentState::*;
        assert_eq!(indicator(&[Operational, Operational], &[]), "none");
        assert_eq!(
            indicator(&[Operational, UnderMaintenance], &[]),
            "maintenance"
        );
        assert_eq!(indicator(&[DegradedPerformance], &[]), "minor");
        assert_eq!(indicator(&[Operational], &[Impact::Major]), "major");
        assert_eq!(indicator(&[MajorOutage], &[Impact::Minor]), "critical");
    }

    #[test]
    fn dates_and_zones() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_784_700), "2026-11-27T13:05:00Z");
        assert_eq!(days_from_civil(2026, 11, 27), 20_784);
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        // Paris: winter +1, summer +2; 2026 switches on 29 March and 25 October.
        let winter = 1_795_784_700;
        assert_eq!(TimeZone::Paris.offset_minutes(winter), 60);
        let summer = days_from_civil(2026, 7, 14) as u64 * DAY_S;
        assert_eq!(TimeZone::Paris.offset_minutes(summer), 120);
        let before_switch = days_from_civil(2026, 3, 29) as u64 * DAY_S + 3599;
        assert_eq!(TimeZone::Paris.offset_minutes(before_switch), 60);
        assert_eq!(TimeZone::Paris.offset_minutes(before_switch + 1), 120);
        assert_eq!(
            local_time(winter, TimeZone::Paris, Language::Fr),
            "27/11/2026 14:05 (UTC+1)"
        );
        assert_eq!(TimeZone::parse("+04:00"), Some(TimeZone::Fixed(240)));
        assert_eq!(TimeZone::parse("-04:00"), Some(TimeZone::Fixed(-240)));
        assert_eq!(TimeZone::parse("Mars/Olympus"), None);
        assert_eq!(
            local_time(winter, TimeZone::Fixed(240), Language::En),
            "2026-11-27 17:05 (UTC+4)"
        );
    }

    #[test]
    fn incident_timeline() {
        let mut i = Incident {
            id: 1,
            tenant: "ville".into(),
            kind: IncidentKind::Incident,
            title: "Panne".into(),
            title_en: None,
            impact: Impact::Major,
            components: vec!["etat-civil".into()],
            published: true,
            automatic: false,
            created_at: 10,
            updated_at: 10,
            resolved_at: None,
            starts_at: None,
            ends_at: None,
            updates: Vec::new(),
        };
        i.push_update(IncidentStatus::Investigating, "On cherche".into(), None, 10);
        assert!(i.is_open());
        i.push_update(
            IncidentStatus::Resolved,
            "Réparé".into(),
            Some("Fixed".into()),
            20,
        );
        assert!(!i.is_open());
        assert_eq!(i.resolved_at, Some(20));
        assert_eq!(i.updates[1].id, 2);
        assert_eq!(i.updates[1].message(Language::En), "Fixed");
        assert_eq!(i.title(Language::En), "Panne");
        assert!(IncidentStatus::Scheduled.fits(IncidentKind::Maintenance));
        assert!(!IncidentStatus::Scheduled.fits(IncidentKind::Incident));
    }
}
