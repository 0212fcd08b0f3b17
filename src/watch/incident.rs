//! Security incidents (distinct from the residents' status incidents): opened when a
//! tenant's level reaches the incident level (or by an operator), they hold a timeline of
//! level changes with their evidence, the playbook's actions applied and undone, operators'
//! acknowledgement, notes and resolution, and the peak figures (rates, top sources and
//! fingerprints). "What is hitting us and since when" is one incident. Pure: every method
//! takes `now`; `watch::store` keeps them, `watch::alert` tells operators.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::level::{Cause, Change, Level};
use crate::common::TimeZone;

/// Incidents kept in memory (the most recent; an active one is never dropped; older ones
/// are read from the database when asked for).
pub const KEPT: usize = 200;
/// Events kept per incident (later ones are counted, not kept): with `KEPT`, the incidents
/// in memory stay under about 25 MiB whatever happens (a few KiB each in practice).
pub const MAX_EVENTS: usize = 500;
/// Top sources and fingerprints kept per incident.
const TOP: usize = 10;

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Nobody has taken it yet.
    Open,
    /// An operator took it.
    Acknowledged,
    /// Closed by an operator.
    Resolved,
}

/// What happened, in the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The incident opened.
    Opened,
    /// The level rose.
    Raised,
    /// The level fell.
    Lowered,
    /// Back to vert: the attack is over.
    Calm,
    /// A defence switched on by the playbook.
    Applied,
    /// A defence switched off by the playbook.
    Undone,
    /// An operator took the incident.
    Acknowledged,
    /// An operator's note.
    Note,
    /// An operator closed it.
    Resolved,
    /// Not acknowledged in time: escalated.
    Escalated,
}

/// One entry of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When (unix ms).
    pub at_ms: u64,
    /// What.
    pub kind: EventKind,
    /// In words.
    pub text: String,
    /// The evidence (signals, values against usual), for level changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

/// The highest figures seen while the incident was active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Peaks {
    /// Requests per second (10 s mean).
    pub requests_per_s: f64,
    /// Share of requests from client prefixes not seen the day before.
    pub new_sources_share: f64,
    /// Distinct client prefixes in one second.
    pub sources_per_s: f64,
    /// Share of failing origin answers.
    pub origin_errors_share: f64,
    /// Requests shed per second.
    pub shed_per_s: f64,
    /// Failed logins per second.
    pub login_failures_per_s: f64,
    /// Connections closed by the gateway per second.
    pub conn_trips_per_s: f64,
    /// Data-guard refusals in one second.
    pub guard_breaches: f64,
}

impl Peaks {
    /// Each figure the larger of the two.
    pub fn merge(&mut self, o: &Peaks) {
        let m = |a: &mut f64, b: f64| *a = a.max(b);
        m(&mut self.requests_per_s, o.requests_per_s);
        m(&mut self.new_sources_share, o.new_sources_share);
        m(&mut self.sources_per_s, o.sources_per_s);
        m(&mut self.origin_errors_share, o.origin_errors_share);
        m(&mut self.shed_per_s, o.shed_per_s);
        m(&mut self.login_failures_per_s, o.login_failures_per_s);
        m(&mut self.conn_trips_per_s, o.conn_trips_per_s);
        m(&mut self.guard_breaches, o.guard_breaches);
    }
}

/// A source (client prefix) or fingerprint and its highest rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Top {
    /// Prefix or fingerprint.
    pub label: String,
    /// Highest requests per second seen.
    pub rate: f64,
}

fn merge_top(into: &mut Vec<Top>, seen: &[(String, f64)]) -> bool {
    let mut changed = false;
    for (label, rate) in seen {
        match into.iter_mut().find(|t| &t.label == label) {
            Some(t) if t.rate < *rate => {
                t.rate = *rate;
                changed = true;
            }
            Some(_) => {}
            None => {
                into.push(Top {
                    label: label.clone(),
                    rate: *rate,
                });
                changed = true;
            }
        }
    }
    into.sort_by(|a, b| b.rate.total_cmp(&a.rate));
    into.truncate(TOP);
    changed
}

/// An operator's mark (acknowledgement, resolution).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Who.
    pub by: String,
    /// When (unix ms).
    pub at_ms: u64,
}

/// A security incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Number, from 1.
    pub id: u64,
    /// The tenant's id.
    pub tenant: String,
    /// The tenant's name.
    pub tenant_name: String,
    /// When it opened (unix ms).
    pub opened_ms: u64,
    /// The level now.
    pub level: Level,
    /// The highest level reached.
    pub peak: Level,
    /// Where it stands.
    pub state: State,
    /// When the level came back to vert.
    pub calm_ms: Option<u64>,
    /// Who took it.
    pub acknowledged: Option<Mark>,
    /// Who closed it.
    pub resolved: Option<Mark>,
    /// When it was escalated.
    pub escalated_ms: Option<u64>,
    /// Peak figures.
    pub peaks: Peaks,
    /// The heaviest client prefixes.
    pub top_sources: Vec<Top>,
    /// The heaviest client fingerprints (JA4 and HTTP).
    pub top_fingerprints: Vec<Top>,
    /// The heaviest paths (sampled; segments that may name a person shown as `*`).
    #[serde(default)]
    pub top_paths: Vec<Top>,
    /// The timeline.
    pub events: Vec<Event>,
    /// Events left out past `MAX_EVENTS`.
    #[serde(default)]
    pub events_left_out: u64,
}

impl Incident {
    /// A new open incident of `tenant` at `level`, with nothing in it yet.
    fn new(id: u64, tenant: &str, tenant_name: &str, level: Level, now_ms: u64) -> Self {
        Self {
            id,
            tenant: tenant.to_owned(),
            tenant_name: tenant_name.to_owned(),
            opened_ms: now_ms,
            level,
            peak: level,
            state: State::Open,
            calm_ms: None,
            acknowledged: None,
            resolved: None,
            escalated_ms: None,
            peaks: Peaks::default(),
            top_sources: Vec::new(),
            top_fingerprints: Vec::new(),
            top_paths: Vec::new(),
            events: Vec::new(),
            events_left_out: 0,
        }
    }

    /// Whether the attack is still on (not calm, not resolved).
    pub fn active(&self) -> bool {
        self.calm_ms.is_none() && self.state != State::Resolved
    }

    fn push(&mut self, at_ms: u64, kind: EventKind, text: String, evidence: Vec<String>) {
        if self.events.len() >= MAX_EVENTS {
            self.events_left_out += 1;
            return;
        }
        self.events.push(Event {
            at_ms,
            kind,
            text,
            evidence,
        });
    }

    /// A title for messages: tenant, number, peak level.
    pub fn title(&self) -> String {
        format!(
            "Incident {} · {} · niveau {}",
            self.id, self.tenant_name, self.level
        )
    }
}

/// What operators must be told about an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// It opened.
    Opened,
    /// Its level rose.
    Raised,
    /// Its level fell.
    Lowered,
    /// Back to vert.
    Calm,
    /// An operator took it.
    Acknowledged,
    /// An operator closed it.
    Resolved,
    /// Nobody took it in time.
    Escalated,
    /// Not an incident: a certificate ends soon, has ended, or was renewed
    /// (`AlertMessage::certificate`).
    Certificate,
}

/// An incident to save, and what to tell about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Told {
    /// The incident as it is now.
    pub incident: Incident,
    /// What happened.
    pub notice: Notice,
}

/// When incidents open and escalate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The level that opens an incident.
    pub open_at: Level,
    /// Escalate an incident not acknowledged after this long (0: never).
    pub escalate_after_ms: u64,
}

/// Why an operator's action was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refused {
    /// No incident has this number.
    Unknown,
    /// It is resolved already.
    Resolved,
    /// It is acknowledged already.
    Acknowledged,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Unknown => "no incident has this number",
            Refused::Resolved => "the incident is resolved already",
            Refused::Acknowledged => "the incident is acknowledged already",
        })
    }
}

/// The incidents of every tenant, most recent last.
#[derive(Debug, Clone)]
pub struct Incidents {
    rules: Rules,
    list: VecDeque<Incident>,
    next_id: u64,
}

fn describe_cause(change: &Change) -> String {
    let (from, to) = (change.from, change.to);
    match &change.cause {
        Cause::Raised => format!("level {from} -> {to}: the signals call for it"),
        Cause::Calmed => format!("level {from} -> {to}: calm for the quiet period"),
        Cause::Operator(reason) => format!("level {from} -> {to}: set by an operator ({reason})"),
        Cause::OverrideExpired => format!("level {from} -> {to}: the operator's level expired"),
    }
}

impl Incidents {
    /// The book, from what was kept (any order) and the largest number handed out.
    pub fn new(rules: Rules, mut kept: Vec<Incident>, last_id: u64) -> Self {
        kept.sort_by_key(|i| i.id);
        let next_id = kept.iter().map(|i| i.id).max().unwrap_or(0).max(last_id) + 1;
        let mut list: VecDeque<Incident> = kept.into();
        while list.len() > KEPT {
            list.pop_front();
        }
        Self {
            rules,
            list,
            next_id,
        }
    }

    /// Changes the rules (a reload).
    pub fn set_rules(&mut self, rules: Rules) {
        self.rules = rules;
    }

    /// Every incident kept, oldest first.
    pub fn all(&self) -> impl DoubleEndedIterator<Item = &Incident> {
        self.list.iter()
    }

    /// Incident number `id`.
    pub fn get(&self, id: u64) -> Option<&Incident> {
        self.list.iter().find(|i| i.id == id)
    }

    fn active_mut(&mut self, tenant: &str) -> Option<&mut Incident> {
        self.list
            .iter_mut()
            .rev()
            .find(|i| i.tenant == tenant && i.active())
    }

    /// The active incident of `tenant`, if any.
    pub fn active(&self, tenant: &str) -> Option<&Incident> {
        self.list
            .iter()
            .rev()
            .find(|i| i.tenant == tenant && i.active())
    }

    fn insert(&mut self, incident: Incident) {
        self.list.push_back(incident);
        if self.list.len() > KEPT {
            // The oldest that is over; active ones stay.
            if let Some(pos) = self.list.iter().position(|i| !i.active()) {
                self.list.remove(pos);
            }
        }
    }

    /// A level change of `tenant`: opens an incident when the level reaches the incident
    /// level, or adds to the active one (its actions, `before` and `after` the change, as
    /// the playbook describes them).
    #[allow(clippy::too_many_arguments)]
    pub fn on_change(
        &mut self,
        tenant: &str,
        tenant_name: &str,
        change: &Change,
        evidence: Vec<String>,
        before: &[String],
        after: &[String],
        now_ms: u64,
    ) -> Option<Told> {
        let open_at = self.rules.open_at;
        let text = describe_cause(change);
        let notice;
        if let Some(incident) = self.active_mut(tenant) {
            let kind = if change.to > change.from {
                EventKind::Raised
            } else {
                EventKind::Lowered
            };
            incident.push(now_ms, kind, text, evidence);
            incident.level = change.to;
            incident.peak = incident.peak.max(change.to);
            notice = if change.to == Level::Vert {
                incident.calm_ms = Some(now_ms);
                incident.push(
                    now_ms,
                    EventKind::Calm,
                    "back to vert: the attack is over".into(),
                    Vec::new(),
                );
                Notice::Calm
            } else if kind == EventKind::Raised {
                Notice::Raised
            } else {
                Notice::Lowered
            };
        } else if change.to >= open_at && change.to > change.from {
            let id = self.next_id;
            self.next_id += 1;
            let mut incident = Incident::new(id, tenant, tenant_name, change.to, now_ms);
            incident.push(now_ms, EventKind::Opened, text, evidence);
            self.insert(incident);
            notice = Notice::Opened;
        } else {
            return None;
        }
        // The tenant's latest incident is the one just touched (active, or just calm).
        let incident = self.list.iter_mut().rev().find(|i| i.tenant == tenant)?;
        for a in after.iter().filter(|a| !before.contains(a)) {
            incident.push(now_ms, EventKind::Applied, a.clone(), Vec::new());
        }
        for a in before.iter().filter(|a| !after.contains(a)) {
            incident.push(now_ms, EventKind::Undone, a.clone(), Vec::new());
        }
        Some(Told {
            incident: incident.clone(),
            notice,
        })
    }

    /// This second's figures of `tenant`: the active incident's peaks and top lists grow;
    /// the incident when they did (to be saved).
    pub fn observe(
        &mut self,
        tenant: &str,
        peaks: &Peaks,
        sources: &[(String, f64)],
        fingerprints: &[(String, f64)],
        paths: &[(String, f64)],
    ) -> Option<&Incident> {
        let incident = self.active_mut(tenant)?;
        let before = incident.peaks;
        incident.peaks.merge(peaks);
        let grew = incident.peaks != before;
        let s = merge_top(&mut incident.top_sources, sources);
        let f = merge_top(&mut incident.top_fingerprints, fingerprints);
        let p = merge_top(&mut incident.top_paths, paths);
        (grew || s || f || p).then_some(&*incident)
    }

    /// Incidents nobody acknowledged in time, escalated now (once each).
    pub fn escalate(&mut self, now_ms: u64) -> Vec<Told> {
        let after = self.rules.escalate_after_ms;
        if after == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for incident in self.list.iter_mut().filter(|i| {
            i.active()
                && i.state == State::Open
                && i.escalated_ms.is_none()
                && now_ms.saturating_sub(i.opened_ms) >= after
        }) {
            incident.escalated_ms = Some(now_ms);
            let minutes = now_ms.saturating_sub(incident.opened_ms) / 60_000;
            incident.push(
                now_ms,
                EventKind::Escalated,
                format!("not acknowledged after {minutes} min: escalated"),
                Vec::new(),
            );
            out.push(Told {
                incident: incident.clone(),
                notice: Notice::Escalated,
            });
        }
        out
    }

    fn find_mut(&mut self, id: u64) -> Result<&mut Incident, Refused> {
        self.list
            .iter_mut()
            .find(|i| i.id == id)
            .ok_or(Refused::Unknown)
    }

    /// An operator takes incident `id`.
    pub fn acknowledge(&mut self, id: u64, by: &str, now_ms: u64) -> Result<Told, Refused> {
        let incident = self.find_mut(id)?;
        match incident.state {
            State::Resolved => return Err(Refused::Resolved),
            State::Acknowledged => return Err(Refused::Acknowledged),
            State::Open => {}
        }
        incident.state = State::Acknowledged;
        incident.acknowledged = Some(Mark {
            by: by.to_owned(),
            at_ms: now_ms,
        });
        incident.push(
            now_ms,
            EventKind::Acknowledged,
            format!("acknowledged by {by}"),
            Vec::new(),
        );
        Ok(Told {
            incident: incident.clone(),
            notice: Notice::Acknowledged,
        })
    }

    /// An operator adds a note to incident `id`.
    pub fn note(
        &mut self,
        id: u64,
        by: &str,
        text: &str,
        now_ms: u64,
    ) -> Result<Incident, Refused> {
        let incident = self.find_mut(id)?;
        incident.push(now_ms, EventKind::Note, format!("{by}: {text}"), Vec::new());
        Ok(incident.clone())
    }

    /// An operator closes incident `id` (a later rise opens a new one).
    pub fn resolve(&mut self, id: u64, by: &str, text: &str, now_ms: u64) -> Result<Told, Refused> {
        let incident = self.find_mut(id)?;
        if incident.state == State::Resolved {
            return Err(Refused::Resolved);
        }
        incident.state = State::Resolved;
        incident.resolved = Some(Mark {
            by: by.to_owned(),
            at_ms: now_ms,
        });
        let text = if text.is_empty() {
            format!("resolved by {by}")
        } else {
            format!("resolved by {by}: {text}")
        };
        incident.push(now_ms, EventKind::Resolved, text, Vec::new());
        Ok(Told {
            incident: incident.clone(),
            notice: Notice::Resolved,
        })
    }

    /// An operator opens an incident by hand for `tenant` (say, a report from an agent);
    /// `None` when the tenant has an active one already (add a note to it instead).
    pub fn open(
        &mut self,
        tenant: &str,
        tenant_name: &str,
        level: Level,
        by: &str,
        text: &str,
        now_ms: u64,
    ) -> Option<Told> {
        if self.active(tenant).is_some() {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut incident = Incident::new(id, tenant, tenant_name, level, now_ms);
        incident.push(
            now_ms,
            EventKind::Opened,
            format!("opened by {by}: {text}"),
            Vec::new(),
        );
        self.insert(incident.clone());
        Some(Told {
            incident,
            notice: Notice::Opened,
        })
    }
}

/// `ms` as local time in `zone`: `2026-12-07 09:15:02 (+01:00)`.
pub fn local_time(ms: u64, zone: TimeZone) -> String {
    let s = ms / 1000;
    let offset = zone.offset_minutes(s);
    let local = s as i64 + i64::from(offset) * 60;
    let (y, m, d) = crate::common::civil_from_days(local.div_euclid(86_400));
    let secs = local.rem_euclid(86_400);
    let sign = if offset < 0 { '-' } else { '+' };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} ({sign}{:02}:{:02})",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        offset.abs() / 60,
        offset.abs() % 60
    )
}

fn duration(ms: u64) -> String {
    let m = ms / 60_000;
    if m >= 60 {
        format!("{} h {:02} min", m / 60, m % 60)
    } else if ms >= 60_000 {
        format!("{m} min")
    } else {
        format!("{} s", ms / 1000)
    }
}

/// The incident as a Markdown report an operator can hand to the CERT or the ANSSI:
/// summary, peak figures, top sources, what the defence did, the full timeline.
pub fn report(i: &Incident, zone: TimeZone, now_ms: u64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let t = |ms| local_time(ms, zone);
    let _ = writeln!(out, "# Security incident {} — {}\n", i.id, i.tenant_name);
    let _ = writeln!(out, "| | |\n| --- | --- |");
    let _ = writeln!(out, "| Tenant | {} (`{}`) |", i.tenant_name, i.tenant);
    let _ = writeln!(out, "| Opened | {} |", t(i.opened_ms));
    let _ = writeln!(out, "| Highest level | {} |", i.peak);
    let _ = writeln!(out, "| Level now | {} |", i.level);
    let end = i.calm_ms.or(i.resolved.as_ref().map(|r| r.at_ms));
    match i.calm_ms {
        Some(c) => {
            let _ = writeln!(out, "| Back to vert | {} |", t(c));
        }
        None => {
            let _ = writeln!(out, "| Back to vert | not yet |");
        }
    }
    let _ = writeln!(
        out,
        "| Duration | {}{} |",
        duration(end.unwrap_or(now_ms).saturating_sub(i.opened_ms)),
        if end.is_none() { " (still on)" } else { "" }
    );
    let state = match i.state {
        State::Open => "open (not acknowledged)".to_owned(),
        State::Acknowledged => "acknowledged".to_owned(),
        State::Resolved => "resolved".to_owned(),
    };
    let _ = writeln!(out, "| State | {state} |");
    if let Some(a) = &i.acknowledged {
        let _ = writeln!(out, "| Acknowledged | {} by {} |", t(a.at_ms), a.by);
    }
    if let Some(r) = &i.resolved {
        let _ = writeln!(out, "| Resolved | {} by {} |", t(r.at_ms), r.by);
    }
    if let Some(e) = i.escalated_ms {
        let _ = writeln!(out, "| Escalated | {} |", t(e));
    }
    let p = &i.peaks;
    let _ = writeln!(out, "\n## Peak figures\n\n| figure | peak |\n| --- | --- |");
    let _ = writeln!(
        out,
        "| requests per second (10 s mean) | {:.0} |",
        p.requests_per_s
    );
    let _ = writeln!(
        out,
        "| distinct client prefixes per second | {:.0} |",
        p.sources_per_s
    );
    let _ = writeln!(
        out,
        "| share of requests from prefixes not seen the day before | {:.0} % |",
        p.new_sources_share * 100.0
    );
    let _ = writeln!(
        out,
        "| share of failing origin answers | {:.0} % |",
        p.origin_errors_share * 100.0
    );
    let _ = writeln!(out, "| requests shed per second | {:.0} |", p.shed_per_s);
    let _ = writeln!(
        out,
        "| failed logins per second | {:.1} |",
        p.login_failures_per_s
    );
    let _ = writeln!(
        out,
        "| connections closed by the gateway per second | {:.0} |",
        p.conn_trips_per_s
    );
    let _ = writeln!(
        out,
        "| data-guard refusals per second | {:.0} |",
        p.guard_breaches
    );
    for (title, list) in [
        ("Top sources (client prefixes)", &i.top_sources),
        ("Top fingerprints (JA4, HTTP)", &i.top_fingerprints),
        ("Top paths (sampled)", &i.top_paths),
    ] {
        let _ = writeln!(out, "\n## {title}\n");
        if list.is_empty() {
            let _ = writeln!(out, "None above half their limit.");
            continue;
        }
        let _ = writeln!(out, "| source | highest requests/s |\n| --- | --- |");
        for s in list {
            let _ = writeln!(out, "| `{}` | {:.0} |", s.label.replace('|', "\\|"), s.rate);
        }
    }
    let _ = writeln!(out, "\n## What the defence did\n");
    let actions: Vec<&Event> = i
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Applied | EventKind::Undone))
        .collect();
    if actions.is_empty() {
        let _ = writeln!(out, "No automatic action.");
    }
    for e in actions {
        let verb = if e.kind == EventKind::Applied {
            "switched on"
        } else {
            "switched off"
        };
        let _ = writeln!(out, "- {}: {verb}: {}", t(e.at_ms), e.text);
    }
    let _ = writeln!(
        out,
        "\n## Timeline\n\n| time | event | details |\n| --- | --- | --- |"
    );
    for e in &i.events {
        let kind = serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut details = e.text.replace('|', "\\|");
        if !e.evidence.is_empty() {
            details.push_str(" — ");
            details.push_str(&e.evidence.join("; ").replace('|', "\\|"));
        }
        let _ = writeln!(out, "| {} | {kind} | {details} |", t(e.at_ms));
    }
    if i.events_left_out > 0 {
        let _ = writeln!(out, "\n({} later events left out.)", i.events_left_out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(from: Level, to: Level, at_ms: u64) -> Change {
        Change {
            from,
            to,
            cause: if to > from {
                Cause::Raised
            } else {
                Cause::Calmed
            },
            at_ms,
        }
    }

    fn book() -> Incidents {
        Incidents::new(
            Rules {
                open_at: Level::Orange,
                escalate_after_ms: 15 * 60_000,
            },
            Vec::new(),
            0,
        )
    }

    fn orange() -> Vec<String> {
        vec!["challenge heavy".into(), "limits x0.5".into()]
    }

    fn rouge() -> Vec<String> {
        vec!["under-attack mode".into(), "limits x0.25".into()]
    }

    #[test]
    fn an_attack_opens_one_incident_with_its_evidence_actions_and_end() {
        let mut b = book();
        // Jaune alone opens nothing.
        assert!(b
            .on_change(
                "ville",
                "Ville",
                &change(Level::Vert, Level::Jaune, 1_000),
                vec![],
                &[],
                &[],
                1_000
            )
            .is_none());
        let told = b
            .on_change(
                "ville",
                "Ville",
                &change(Level::Jaune, Level::Rouge, 2_000),
                vec!["request_rate 5000 (usual 40) -> rouge".into()],
                &[],
                &rouge(),
                2_000,
            )
            .unwrap();
        assert_eq!(told.notice, Notice::Opened);
        let id = told.incident.id;
        assert_eq!(id, 1);
        assert_eq!(told.incident.events[0].evidence.len(), 1);
        assert_eq!(
            told.incident
                .events
                .iter()
                .filter(|e| e.kind == EventKind::Applied)
                .count(),
            2
        );
        b.observe(
            "ville",
            &Peaks {
                requests_per_s: 5_000.0,
                ..Peaks::default()
            },
            &[("203.0.113.0/24".into(), 900.0)],
            &[],
            &[("/recherche".into(), 3_000.0)],
        )
        .unwrap();
        // Another tenant's calm seconds touch nothing.
        assert!(b
            .observe("autre", &Peaks::default(), &[], &[], &[])
            .is_none());
        let down = b
            .on_change(
                "ville",
                "Ville",
                &change(Level::Rouge, Level::Orange, 400_000),
                vec![],
                &rouge(),
                &orange(),
                400_000,
            )
            .unwrap();
        assert_eq!((down.notice, down.incident.id), (Notice::Lowered, id));
        let undone: Vec<&str> = down
            .incident
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Undone)
            .map(|e| e.text.as_str())
            .collect();
        assert_eq!(undone, ["under-attack mode", "limits x0.25"]);
        b.on_change(
            "ville",
            "Ville",
            &change(Level::Orange, Level::Jaune, 460_000),
            vec![],
            &orange(),
            &[],
            460_000,
        );
        let calm = b
            .on_change(
                "ville",
                "Ville",
                &change(Level::Jaune, Level::Vert, 520_000),
                vec![],
                &[],
                &[],
                520_000,
            )
            .unwrap();
        assert_eq!(calm.notice, Notice::Calm);
        assert_eq!(calm.incident.calm_ms, Some(520_000));
        assert_eq!(calm.incident.peak, Level::Rouge);
        assert_eq!(calm.incident.peaks.requests_per_s, 5_000.0);
        assert!(b.active("ville").is_none());
        // The next attack is a new incident.
        let next = b
            .on_change(
                "ville",
                "Ville",
                &change(Level::Vert, Level::Orange, 900_000),
                vec![],
                &[],
                &orange(),
                900_000,
            )
            .unwrap();
        assert_eq!((next.notice, next.incident.id), (Notice::Opened, 2));
    }

    #[test]
    fn operators_acknowledge_note_resolve_and_escalation_waits_for_nobody() {
        let mut b = book();
        let id = b
            .on_change(
                "ville",
                "Ville",
                &change(Level::Vert, Level::Orange, 0),
                vec![],
                &[],
                &[],
                0,
            )
            .unwrap()
            .incident
            .id;
        assert!(b.escalate(14 * 60_000).is_empty());
        let e = b.escalate(15 * 60_000);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].notice, Notice::Escalated);
        assert!(b.escalate(30 * 60_000).is_empty(), "once");
        let ack = b.acknowledge(id, "alice", 16 * 60_000).unwrap();
        assert_eq!(ack.incident.state, State::Acknowledged);
        assert_eq!(
            b.acknowledge(id, "bob", 17 * 60_000),
            Err(Refused::Acknowledged)
        );
        b.note(id, "alice", "blocked at the firewall", 18 * 60_000)
            .unwrap();
        let r = b.resolve(id, "alice", "", 19 * 60_000).unwrap();
        assert_eq!(r.incident.state, State::Resolved);
        assert_eq!(
            b.resolve(id, "alice", "", 20 * 60_000),
            Err(Refused::Resolved)
        );
        assert_eq!(b.acknowledge(99, "x", 0), Err(Refused::Unknown));
        // Resolved while the level is still orange: a further rise opens a new one.
        let again = b
            .on_change(
                "ville",
                "Ville",
                &change(Level::Orange, Level::Rouge, 21 * 60_000),
                vec![],
                &[],
                &[],
                21 * 60_000,
            )
            .unwrap();
        assert_eq!((again.notice, again.incident.id), (Notice::Opened, 2));
        // An acknowledged incident is never escalated.
        b.acknowledge(2, "alice", 22 * 60_000).unwrap();
        assert!(b.escalate(60 * 60_000).is_empty());
        let report = report(b.get(1).unwrap(), TimeZone::Utc, 60 * 60_000);
        assert!(report.contains("| Escalated |"), "{report}");
        assert!(
            report.contains("alice: blocked at the firewall"),
            "{report}"
        );
    }

    #[test]
    fn incidents_by_hand_and_numbers_survive_a_restart() {
        let mut b = book();
        let t = b
            .open(
                "ville",
                "Ville",
                Level::Orange,
                "alice",
                "an agent reports phishing",
                5,
            )
            .unwrap();
        assert!(b
            .open("ville", "Ville", Level::Rouge, "bob", "again", 6)
            .is_none());
        let kept: Vec<Incident> = b.all().cloned().collect();
        let mut after = Incidents::new(b.rules, kept, 7);
        assert_eq!(after.get(t.incident.id).unwrap().tenant, "ville");
        after.resolve(t.incident.id, "alice", "", 10).unwrap();
        let n = after
            .open("ville", "Ville", Level::Orange, "alice", "x", 11)
            .unwrap();
        assert_eq!(n.incident.id, 8, "never reuses a number handed out");
    }

    #[test]
    fn local_times_in_the_towns_zone() {
        // 2026-12-07 08:15:02 UTC is 09:15:02 in Paris (winter).
        let ms = 1_796_631_302_000;
        assert_eq!(
            local_time(ms, TimeZone::Utc),
            "2026-12-07 08:15:02 (+00:00)"
        );
        assert_eq!(
            local_time(ms, TimeZone::Paris),
            "2026-12-07 09:15:02 (+01:00)"
        );
    }
}
