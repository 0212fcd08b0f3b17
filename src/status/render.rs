//! Renders a tenant's status site from a snapshot of its board: the HTML page (French and
//! English), the Atom feed and the JSON summary (schema close to the de-facto `summary.json`
//! of hosted status pages; documented in `docs/status.md`). Pure: the snapshot carries `now`.
//! Pages are rendered once per change and served from memory.

use askama::Template;
use serde_json::json;

use super::model::{
    indicator, indicator_text, local_time, rfc3339, short_day, summarize_day, uptime_over,
    ComponentState, DayTally, Impact, Incident, IncidentKind, DAY_S, HISTORY_DAYS,
};
use crate::common::{Language, TimeZone};

/// One component as the page shows it.
#[derive(Debug, Clone)]
pub struct ComponentSnapshot {
    /// Identifier.
    pub id: String,
    /// Name in French.
    pub name: String,
    /// Name in English.
    pub name_en: Option<String>,
    /// State shown.
    pub state: ComponentState,
    /// Unix seconds of the last change of `state`.
    pub changed_at: u64,
    /// Daily tallies of the last `HISTORY_DAYS`, oldest first (today last).
    pub days: Vec<DayTally>,
}

impl ComponentSnapshot {
    fn name(&self, lang: Language) -> &str {
        match lang {
            Language::En => self.name_en.as_deref().unwrap_or(&self.name),
            Language::Fr => &self.name,
        }
    }
}

/// Everything a tenant's status site shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Tenant id.
    pub tenant_id: String,
    /// Tenant display name.
    pub tenant_name: String,
    /// Default language.
    pub language: Language,
    /// Public address of the page, when configured.
    pub url: Option<String>,
    /// Time zone of dates.
    pub zone: TimeZone,
    /// Components in page order.
    pub components: Vec<ComponentSnapshot>,
    /// Published incidents and maintenances of the last 90 days, newest first.
    pub incidents: Vec<Incident>,
    /// Other ways to reach the council.
    pub alternatives: Vec<String>,
    /// Residents may subscribe by e-mail.
    pub subscriptions: bool,
    /// Render time (unix seconds).
    pub now: u64,
}

/// Where the rendered pages live: served by the gateway (language switch by query) or as the
/// exported static copy (one file per language).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Served by Rempart.
    Served,
    /// Static files.
    Static,
}

struct Labels {
    lang: &'static str,
    other_lang: &'static str,
    other_label: &'static str,
    title: &'static str,
    skip: &'static str,
    updated: &'static str,
    active: &'static str,
    maintenances: &'static str,
    services: &'static str,
    days_ago: &'static str,
    today: &'static str,
    uptime: &'static str,
    no_data: &'static str,
    alternatives: &'static str,
    past: &'static str,
    no_past: &'static str,
    follow: &'static str,
    feed: &'static str,
    json: &'static str,
    footer: &'static str,
    impact: &'static str,
    affects: &'static str,
    window: &'static str,
    subscribe: &'static str,
    email: &'static str,
    which: &'static str,
    subscribe_button: &'static str,
    privacy: &'static str,
}

const FR: Labels = Labels {
    lang: "fr",
    other_lang: "en",
    other_label: "English",
    title: "État des services",
    skip: "Aller au contenu",
    updated: "Mis à jour le",
    active: "Incidents en cours",
    maintenances: "Maintenances",
    services: "Services",
    days_ago: "il y a 90 jours",
    today: "aujourd'hui",
    uptime: "disponibilité",
    no_data: "pas de mesure",
    alternatives: "Pour nous joindre autrement",
    past: "Incidents des 90 derniers jours",
    no_past: "Aucun incident signalé.",
    follow: "Suivre les mises à jour",
    feed: "Flux Atom des incidents",
    json: "Résumé JSON",
    footer: "Page publiée par la collectivité, servie même quand ses services sont indisponibles.",
    impact: "Impact",
    affects: "Services concernés",
    window: "Période",
    subscribe: "Recevoir les informations par courriel",
    email: "Adresse électronique",
    which: "Services suivis (aucun coché : tous)",
    subscribe_button: "S'abonner",
    privacy: "Seule votre adresse est conservée, jusqu'à votre désabonnement (un lien dans chaque message).",
};

const EN: Labels = Labels {
    lang: "en",
    other_lang: "fr",
    other_label: "Français",
    title: "Service status",
    skip: "Skip to content",
    updated: "Updated",
    active: "Current incidents",
    maintenances: "Maintenance",
    services: "Services",
    days_ago: "90 days ago",
    today: "today",
    uptime: "uptime",
    no_data: "no data",
    alternatives: "Other ways to reach us",
    past: "Incidents in the last 90 days",
    no_past: "No incidents reported.",
    follow: "Follow updates",
    feed: "Atom feed of incidents",
    json: "JSON summary",
    footer: "Page published by the council, served even when its services are down.",
    impact: "Impact",
    affects: "Affected services",
    window: "Window",
    subscribe: "Get updates by e-mail",
    email: "E-mail address",
    which: "Services to follow (none ticked: all)",
    subscribe_button: "Subscribe",
    privacy: "Only your address is kept, until you unsubscribe (a link in every message).",
};

fn labels(lang: Language) -> &'static Labels {
    match lang {
        Language::Fr => &FR,
        Language::En => &EN,
    }
}

fn impact_label(impact: Impact, lang: Language) -> &'static str {
    match (impact, lang) {
        (Impact::None, Language::Fr) => "aucun",
        (Impact::Minor, Language::Fr) => "mineur",
        (Impact::Major, Language::Fr) => "majeur",
        (Impact::Critical, Language::Fr) => "critique",
        (Impact::None, Language::En) => "none",
        (Impact::Minor, Language::En) => "minor",
        (Impact::Major, Language::En) => "major",
        (Impact::Critical, Language::En) => "critical",
    }
}

struct BarView {
    class: &'static str,
    /// Date and uptime, on days that were not fully operational (a tooltip; the bars are
    /// decorative, the uptime line says it in words): 90 plain bars stay small.
    title: Option<String>,
}

struct ComponentView {
    id: String,
    name: String,
    label: &'static str,
    class: &'static str,
    uptime: String,
    bars: Vec<BarView>,
}

struct UpdateView {
    status: &'static str,
    at: String,
    message: String,
}

struct IncidentView {
    class: &'static str,
    title: String,
    meta: String,
    updates: Vec<UpdateView>,
}

#[derive(Template)]
#[template(path = "status/page.html")]
struct PageTemplate<'a> {
    t: &'a Labels,
    tenant: &'a str,
    other_href: &'a str,
    feed_href: &'a str,
    json_href: &'a str,
    indicator: &'a str,
    indicator_text: &'a str,
    updated: String,
    active: Vec<IncidentView>,
    maintenances: Vec<IncidentView>,
    components: Vec<ComponentView>,
    alternatives: &'a [String],
    past: Vec<IncidentView>,
    subscribe_action: Option<String>,
}

struct EntryView {
    id: String,
    title: String,
    updated: String,
    content: String,
}

#[derive(Template)]
#[template(path = "status/feed.xml")]
struct FeedTemplate<'a> {
    lang: &'a str,
    feed_id: String,
    title: String,
    tenant: &'a str,
    updated: String,
    self_href: String,
    page_href: String,
    entries: Vec<EntryView>,
}

/// Percentage with a comma in French.
fn percent(value: f64, lang: Language) -> String {
    let s = format!("{:.2}", value * 100.0);
    match lang {
        Language::Fr => format!("{} %", s.replace('.', ",")),
        Language::En => format!("{s}%"),
    }
}

fn incident_view(i: &Incident, snap: &Snapshot, lang: Language) -> IncidentView {
    let t = labels(lang);
    let names: Vec<&str> = i
        .components
        .iter()
        .filter_map(|id| snap.components.iter().find(|c| &c.id == id))
        .map(|c| c.name(lang))
        .collect();
    // French puts a space before the colon.
    let sep = if lang == Language::Fr { " : " } else { ": " };
    let mut meta = format!("{}{sep}{}", t.impact, impact_label(i.impact, lang));
    if !names.is_empty() {
        meta.push_str(&format!(" · {}{sep}{}", t.affects, names.join(", ")));
    }
    if let (IncidentKind::Maintenance, Some(start)) = (i.kind, i.starts_at) {
        meta.push_str(&format!(
            " · {}{sep}{}",
            t.window,
            local_time(start, snap.zone, lang)
        ));
        if let Some(end) = i.ends_at {
            meta.push_str(&format!(" → {}", local_time(end, snap.zone, lang)));
        }
    }
    IncidentView {
        class: match (i.kind, i.is_open()) {
            (_, false) => "done",
            (IncidentKind::Maintenance, true) => "mnt",
            (IncidentKind::Incident, true) => "",
        },
        title: i.title(lang).to_owned(),
        meta,
        // Newest update first, as residents read a timeline.
        updates: i
            .updates
            .iter()
            .rev()
            .map(|u| UpdateView {
                status: u.status.label(lang),
                at: local_time(u.at, snap.zone, lang),
                message: u.message(lang).to_owned(),
            })
            .collect(),
    }
}

fn overall(snap: &Snapshot) -> &'static str {
    let states: Vec<ComponentState> = snap.components.iter().map(|c| c.state).collect();
    let impacts: Vec<Impact> = snap
        .incidents
        .iter()
        .filter(|i| i.kind == IncidentKind::Incident && i.is_open())
        .map(|i| i.impact)
        .collect();
    indicator(&states, &impacts)
}

/// The HTML page in `lang`.
pub fn page(snap: &Snapshot, lang: Language, flavor: Flavor) -> String {
    let t = labels(lang);
    let today = snap.now / DAY_S;
    let components = snap
        .components
        .iter()
        .map(|c| {
            let first_day = today + 1 - c.days.len() as u64;
            let bars = c
                .days
                .iter()
                .enumerate()
                .map(|(k, tally)| {
                    let s = summarize_day(tally);
                    let day = short_day(first_day + k as u64, lang);
                    match s.uptime {
                        None => BarView {
                            class: "no",
                            title: None,
                        },
                        Some(u) => BarView {
                            class: s.worst.class(),
                            title: (s.worst != ComponentState::Operational || u < 1.0)
                                .then(|| format!("{day} : {}", percent(u, lang))),
                        },
                    }
                })
                .collect();
            ComponentView {
                id: c.id.clone(),
                name: c.name(lang).to_owned(),
                label: c.state.label(lang),
                class: c.state.class(),
                uptime: uptime_over(&c.days).map_or_else(
                    || t.no_data.to_owned(),
                    |u| format!("{} {}", percent(u, lang), t.uptime),
                ),
                bars,
            }
        })
        .collect();
    let ind = overall(snap);
    let mut active = Vec::new();
    let mut maintenances = Vec::new();
    let mut past = Vec::new();
    for i in &snap.incidents {
        let view = incident_view(i, snap, lang);
        match (i.kind, i.is_open()) {
            (IncidentKind::Incident, true) => active.push(view),
            (IncidentKind::Maintenance, true) => maintenances.push(view),
            (_, false) => past.push(view),
        }
    }
    let (other_href, feed_href, json_href) = match (flavor, lang) {
        (Flavor::Served, Language::Fr) => ("?lang=en", "feed.atom", "summary.json"),
        (Flavor::Served, Language::En) => ("?lang=fr", "feed.atom", "summary.json"),
        (Flavor::Static, Language::Fr) => ("index.en.html", "feed.atom", "summary.json"),
        (Flavor::Static, Language::En) => ("index.html", "feed.atom", "summary.json"),
    };
    let tpl = PageTemplate {
        t,
        tenant: &snap.tenant_name,
        other_href,
        feed_href,
        json_href,
        indicator: ind,
        indicator_text: indicator_text(ind, lang),
        updated: local_time(snap.now, snap.zone, lang),
        active,
        maintenances,
        components,
        alternatives: &snap.alternatives,
        past,
        subscribe_action: match (snap.subscriptions, flavor) {
            (false, _) => None,
            (true, Flavor::Served) => Some("subscribe".to_owned()),
            // The static copy posts to the live page when its address is known.
            (true, Flavor::Static) => snap
                .url
                .as_ref()
                .map(|_| format!("{}subscribe", base_url(snap))),
        },
    };
    tpl.render().unwrap_or_else(|_| t.title.to_owned())
}

fn base_url(snap: &Snapshot) -> String {
    snap.url.as_ref().map_or_else(String::new, |u| {
        if u.ends_with('/') {
            u.clone()
        } else {
            format!("{u}/")
        }
    })
}

/// The Atom feed: one entry per public update, newest first (at most 50).
pub fn feed(snap: &Snapshot) -> String {
    let lang = snap.language;
    let t = labels(lang);
    let base = base_url(snap);
    let mut entries: Vec<((u64, u64, u32), EntryView)> = snap
        .incidents
        .iter()
        .flat_map(|i| {
            i.updates.iter().map(move |u| {
                let prefix = u.status.label(lang);
                (
                    (u.at, i.id, u.id),
                    EntryView {
                        id: format!(
                            "urn:rempart:status:{}:incident:{}:update:{}",
                            snap.tenant_id, i.id, u.id
                        ),
                        title: format!("[{prefix}] {}", i.title(lang)),
                        updated: rfc3339(u.at),
                        content: u.message(lang).to_owned(),
                    },
                )
            })
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    entries.truncate(50);
    let updated = entries
        .first()
        .map_or_else(|| rfc3339(snap.now), |e| e.1.updated.clone());
    FeedTemplate {
        lang: t.lang,
        feed_id: format!("urn:rempart:status:{}", snap.tenant_id),
        title: format!("{} · {}", t.title, snap.tenant_name),
        tenant: &snap.tenant_name,
        updated,
        self_href: format!("{base}feed.atom"),
        page_href: if base.is_empty() {
            "./".to_owned()
        } else {
            base.clone()
        },
        entries: entries.into_iter().map(|(_, e)| e).collect(),
    }
    .render()
    .unwrap_or_default()
}

fn incident_json(i: &Incident, snap: &Snapshot) -> serde_json::Value {
    let lang = snap.language;
    json!({
        "id": i.id.to_string(),
        "name": i.title(lang),
        "status": i.status().name(),
        "impact": i.impact.name(),
        "created_at": rfc3339(i.created_at),
        "updated_at": rfc3339(i.updated_at),
        "resolved_at": i.resolved_at.map(rfc3339),
        "scheduled_for": i.starts_at.map(rfc3339),
        "scheduled_until": i.ends_at.map(rfc3339),
        "shortlink": snap.url,
        "incident_updates": i.updates.iter().rev().map(|u| json!({
            "id": format!("{}-{}", i.id, u.id),
            "status": u.status.name(),
            "body": u.message(lang),
            "created_at": rfc3339(u.at),
            "updated_at": rfc3339(u.at),
            "display_at": rfc3339(u.at),
        })).collect::<Vec<_>>(),
        "components": i.components.iter().filter_map(|id| snap.components.iter().find(|c| &c.id == id)).map(|c| json!({
            "id": c.id, "name": c.name(lang), "status": c.state.name(),
        })).collect::<Vec<_>>(),
    })
}

/// The JSON summary (`summary.json`).
pub fn summary(snap: &Snapshot) -> String {
    let lang = snap.language;
    let ind = overall(snap);
    let open = |kind| {
        snap.incidents
            .iter()
            .filter(move |i| i.kind == kind && i.is_open())
            .map(|i| incident_json(i, snap))
            .collect::<Vec<_>>()
    };
    let updated = snap
        .incidents
        .iter()
        .map(|i| i.updated_at)
        .chain(snap.components.iter().map(|c| c.changed_at))
        .max()
        .unwrap_or(snap.now);
    let value = json!({
        "page": {
            "id": snap.tenant_id,
            "name": snap.tenant_name,
            "url": snap.url,
            "time_zone": match snap.zone { TimeZone::Utc => "UTC".to_owned(), TimeZone::Paris => "Europe/Paris".to_owned(), TimeZone::Fixed(m) => format!("{}{:02}:{:02}", if m < 0 { '-' } else { '+' }, m.abs() / 60, m.abs() % 60) },
            "updated_at": rfc3339(updated),
        },
        "status": { "indicator": ind, "description": indicator_text(ind, lang) },
        "components": snap.components.iter().enumerate().map(|(k, c)| json!({
            "id": c.id,
            "name": c.name(lang),
            "status": c.state.name(),
            "position": k + 1,
            "updated_at": rfc3339(c.changed_at),
            "group": false,
            "only_show_if_degraded": false,
            "uptime_90_days": uptime_over(&c.days),
        })).collect::<Vec<_>>(),
        "incidents": open(IncidentKind::Incident),
        "scheduled_maintenances": open(IncidentKind::Maintenance),
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// Pads or trims day tallies to exactly `HISTORY_DAYS` ending today.
pub fn window(days: impl Fn(u64) -> Option<DayTally>, today: u64) -> Vec<DayTally> {
    (0..HISTORY_DAYS)
        .rev()
        .map(|back| days(today.saturating_sub(back)).unwrap_or([0; 5]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::model::IncidentStatus;

    fn snapshot() -> Snapshot {
        let now = 20_784 * DAY_S + 47_100;
        let mut incident = Incident {
            id: 3,
            tenant: "ville".into(),
            kind: IncidentKind::Incident,
            title: "Démarches <indisponibles>".into(),
            title_en: Some("Online services down".into()),
            impact: Impact::Major,
            components: vec!["etat-civil".into()],
            published: true,
            automatic: false,
            created_at: now - 600,
            updated_at: now - 600,
            resolved_at: None,
            starts_at: None,
            ends_at: None,
            updates: Vec::new(),
        };
        incident.push_update(
            IncidentStatus::Investigating,
            "Nous analysons & corrigeons.".into(),
            Some("We are looking into it.".into()),
            now - 600,
        );
        let mut days = window(|_| Some([86_400, 0, 0, 0, 0]), now / DAY_S);
        days[89] = [40_000, 0, 0, 7_100, 0];
        Snapshot {
            tenant_id: "ville".into(),
            tenant_name: "Ville de Saint-Exemple".into(),
            language: Language::Fr,
            url: Some("https://statut.ville.test".into()),
            zone: TimeZone::Paris,
            components: vec![ComponentSnapshot {
                id: "etat-civil".into(),
                name: "État civil".into(),
                name_en: Some("Civil registry".into()),
                state: ComponentState::MajorOutage,
                changed_at: now - 700,
                days,
            }],
            incidents: vec![incident],
            alternatives: vec!["Mairie : 02 40 00 00 00".into()],
            subscriptions: true,
            now,
        }
    }

    #[test]
    fn page_shows_state_incident_and_escapes() {
        let snap = snapshot();
        let fr = page(&snap, Language::Fr, Flavor::Served);
        assert!(fr.contains("<html lang=\"fr\">"));
        assert!(fr.contains("Panne majeure en cours"));
        assert!(fr.contains("Panne majeure"));
        assert!(
            fr.contains("Démarches &#60;indisponibles&#62;")
                || fr.contains("Démarches &lt;indisponibles&gt;")
        );
        assert!(fr.contains("Mairie : 02 40 00 00 00"));
        assert!(fr.contains("27/11/2026 13:55 (UTC+1)"), "{fr}");
        assert_eq!(fr.matches("<i class=").count(), 90);
        assert!(fr.len() < 50 * 1024, "{} bytes", fr.len());
        let en = page(&snap, Language::En, Flavor::Served);
        assert!(en.contains("<html lang=\"en\">"));
        assert!(en.contains("Online services down"));
        assert!(en.contains("Civil registry"));
        assert!(en.contains("href=\"?lang=fr\""));
        let st = page(&snap, Language::Fr, Flavor::Static);
        assert!(st.contains("href=\"index.en.html\""));
    }

    #[test]
    fn feed_and_summary() {
        let snap = snapshot();
        let atom = feed(&snap);
        assert!(atom.starts_with("<?xml"));
        assert!(atom.contains("<id>urn:rempart:status:ville:incident:3:update:1</id>"));
        assert!(
            atom.contains("[Analyse en cours] Démarches &#60;indisponibles&#62;")
                || atom.contains("[Analyse en cours] Démarches &lt;indisponibles&gt;"),
            "{atom}"
        );
        assert!(atom.contains("https://statut.ville.test/feed.atom"));
        let json: serde_json::Value = serde_json::from_str(&summary(&snap)).unwrap();
        assert_eq!(json["status"]["indicator"], "critical");
        assert_eq!(json["components"][0]["status"], "major_outage");
        assert_eq!(json["incidents"][0]["status"], "investigating");
        assert_eq!(
            json["incidents"][0]["incident_updates"][0]["body"],
            "Nous analysons & corrigeons."
        );
        assert_eq!(json["page"]["time_zone"], "Europe/Paris");
    }
}

#[derive(Template)]
#[template(path = "status/message.html")]
struct MessageTemplate<'a> {
    lang: &'a str,
    tenant: &'a str,
    title: &'a str,
    message: &'a str,
    form_action: Option<&'a str>,
    button: &'a str,
    back: &'a str,
}

/// A small page answering a subscription step, with an optional one-button form.
pub fn message_page(
    tenant: &str,
    lang: Language,
    title: &str,
    message: &str,
    form: Option<(&str, &str)>,
) -> String {
    MessageTemplate {
        lang: if lang == Language::En { "en" } else { "fr" },
        tenant,
        title,
        message,
        form_action: form.map(|f| f.0),
        button: form.map_or("", |f| f.1),
        back: if lang == Language::En {
            "Back to the status page"
        } else {
            "Retour à l'état des services"
        },
    }
    .render()
    .unwrap_or_else(|_| title.to_owned())
}
