//! The watch's settings: how levels move, the detectors' thresholds, the playbook of each
//! level (global, and a tenant's own) and the operators' alert channels.

use std::path::Path;
use std::sync::Arc;

use super::Collector;
use crate::common::Level;
use crate::config::file::{AlertFile, LevelActionsFile, PlaybookFile, WatchFile};
use crate::config::runtime::{
    AlertChannel, AlertTarget, ChallengeScope, LevelActions, NoticeMode, Playbook, WatchSettings,
    WatchThresholds,
};

/// Default path of the incidents' database (next to the configuration).
pub const DEFAULT_DATABASE: &str = "rempart-watch.db";
/// Default calm before a level falls one step.
pub const DEFAULT_QUIET: &str = "5m";
/// Default traffic learnt before rates alone raise past jaune.
pub const DEFAULT_LEARNING: &str = "1h";
/// Default delay before an unacknowledged incident is escalated.
pub const DEFAULT_ESCALATE_AFTER: &str = "15m";
/// Default messages per minute and channel.
pub const DEFAULT_MAX_PER_MINUTE: u32 = 6;

/// The default tables: orange tightens, rouge switches every defence on and drafts a
/// notice for residents.
fn default_table(level: Level) -> LevelActionsFile {
    match level {
        Level::Vert | Level::Jaune => LevelActionsFile::default(),
        Level::Orange => LevelActionsFile {
            challenge: Some("heavy".into()),
            limit_factor: Some(0.5),
            difficulty_bonus: Some(1),
            ..LevelActionsFile::default()
        },
        Level::Rouge => LevelActionsFile {
            under_attack: Some(true),
            limit_factor: Some(0.25),
            difficulty_bonus: Some(2),
            maintenance_nonessential: Some(true),
            status_notice: Some("draft".into()),
            ..LevelActionsFile::default()
        },
    }
}

fn table(file: &PlaybookFile, level: Level) -> Option<&LevelActionsFile> {
    match level {
        Level::Vert => None,
        Level::Jaune => file.jaune.as_ref(),
        Level::Orange => file.orange.as_ref(),
        Level::Rouge => file.rouge.as_ref(),
    }
}

/// The playbook from the global tables, `own` (a tenant's) replacing them level by level;
/// each level starts from the one below.
pub(super) fn playbook(
    c: &mut Collector,
    path: &str,
    global: &PlaybookFile,
    own: Option<(&str, &PlaybookFile)>,
) -> Playbook {
    let mut levels = [LevelActions::default(); 4];
    for level in [Level::Jaune, Level::Orange, Level::Rouge] {
        let mut actions = levels[level as usize - 1];
        let default = default_table(level);
        let (p, t) = match own.and_then(|(op, o)| table(o, level).map(|t| (op, t))) {
            Some((op, t)) => (format!("{op}.{}", level.name()), t),
            None => match table(global, level) {
                Some(t) => (format!("{path}.{}", level.name()), t),
                None => (format!("{path}.{}", level.name()), &default),
            },
        };
        apply(c, &p, t, &mut actions);
        levels[level as usize] = actions;
    }
    Playbook { levels }
}

fn apply(c: &mut Collector, p: &str, t: &LevelActionsFile, a: &mut LevelActions) {
    if let Some(v) = &t.challenge {
        a.challenge = match v.as_str() {
            "off" => ChallengeScope::Off,
            "heavy" => ChallengeScope::Heavy,
            "all" => ChallengeScope::All,
            other => {
                c.push(
                    format!("{p}.challenge"),
                    format!("unknown value `{other}`"),
                    Some("use \"off\", \"heavy\" (routes whose cost is above 1) or \"all\""),
                );
                a.challenge
            }
        };
    }
    if let Some(f) = t.limit_factor {
        if !(0.1..=1.0).contains(&f) {
            c.push(
                format!("{p}.limit_factor"),
                format!("{f} is out of range"),
                Some("use 0.1 to 1 (0.5 halves the per-address and per-prefix limits)"),
            );
        } else {
            a.limit_factor = f;
        }
    }
    if let Some(b) = t.difficulty_bonus {
        if b > 6 {
            c.push(
                format!("{p}.difficulty_bonus"),
                format!("{b} is out of range"),
                Some("use 0 to 6 bits (each bit doubles a browser's work)"),
            );
        } else {
            a.difficulty_bonus = b;
        }
    }
    if let Some(u) = t.under_attack {
        a.under_attack = u;
    }
    if let Some(m) = t.maintenance_nonessential {
        a.maintenance_nonessential = m;
    }
    if let Some(n) = &t.status_notice {
        a.status_notice = match n.as_str() {
            "off" => NoticeMode::Off,
            "draft" => NoticeMode::Draft,
            "publish" => NoticeMode::Publish,
            other => {
                c.push(
                    format!("{p}.status_notice"),
                    format!("unknown value `{other}`"),
                    Some("use \"off\", \"draft\" (an operator publishes it) or \"publish\""),
                );
                a.status_notice
            }
        };
    }
}

fn level(c: &mut Collector, path: &str, value: Option<&str>, default: Level) -> Level {
    match value {
        None => default,
        Some(v) => Level::parse(v).unwrap_or_else(|| {
            c.push(
                path,
                format!("unknown level `{v}`"),
                Some("use \"vert\", \"jaune\", \"orange\" or \"rouge\""),
            );
            default
        }),
    }
}

fn positive(c: &mut Collector, path: &str, value: Option<f64>, default: f64) -> f64 {
    match value {
        None => default,
        Some(v) if v.is_finite() && v > 0.0 && v <= 1e9 => v,
        Some(v) => {
            c.push(
                path,
                format!("{v} is out of range"),
                Some("use a positive number"),
            );
            default
        }
    }
}

fn read_secret(
    c: &mut Collector,
    path: &str,
    file: Option<&String>,
    base: &Path,
) -> Option<String> {
    let f = file?;
    let full = base.join(f);
    match std::fs::read_to_string(&full) {
        Ok(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Ok(_) => {
            c.push(path, format!("`{}` is empty", full.display()), None);
            None
        }
        Err(e) => {
            c.push(path, format!("cannot read `{}`: {e}", full.display()), None);
            None
        }
    }
}

fn web_address(
    c: &mut Collector,
    path: &str,
    url: Option<&String>,
    what: &str,
) -> Option<http::Uri> {
    let Some(raw) = url else {
        c.push(path, format!("{what} needs `url`"), None);
        return None;
    };
    match raw.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Some(u),
        _ => {
            c.push(
                path,
                format!("`{raw}` is not an http or https address"),
                Some("write for example \"https://alertes.ville.fr/rempart\""),
            );
            None
        }
    }
}

fn alert(
    c: &mut Collector,
    i: usize,
    a: &AlertFile,
    base: &Path,
    incident_level: Level,
    has_smtp: bool,
) -> Option<AlertChannel> {
    let p = format!("watch.alerts[{i}]");
    let target = match a.kind.as_str() {
        "email" => {
            if a.to.is_empty() {
                c.push(
                    format!("{p}.to"),
                    "no recipient",
                    Some("give to = [\"astreinte@ville.fr\"]"),
                );
            }
            for (ri, r) in a.to.iter().enumerate() {
                if r.parse::<lettre::message::Mailbox>().is_err() {
                    c.push(
                        format!("{p}.to[{ri}]"),
                        format!("`{r}` is not an e-mail address"),
                        None,
                    );
                }
            }
            if !has_smtp {
                c.push(
                    format!("{p}.kind"),
                    "e-mail alerts need a mail server",
                    Some("add a [status.smtp] table"),
                );
            }
            AlertTarget::Email { to: a.to.clone() }
        }
        "webhook" => AlertTarget::Webhook {
            url: web_address(c, &format!("{p}.url"), a.url.as_ref(), "a webhook")?,
            secret: read_secret(c, &format!("{p}.secret_file"), a.secret_file.as_ref(), base),
        },
        "matrix" => {
            let homeserver = web_address(c, &format!("{p}.url"), a.url.as_ref(), "a Matrix room")?;
            let room = match &a.room {
                Some(r) if r.starts_with('!') && r.contains(':') => r.clone(),
                Some(r) => {
                    c.push(
                        format!("{p}.room"),
                        format!("`{r}` is not a room id"),
                        Some("a room id looks like \"!AbCdEf:matrix.ville.fr\" (room settings, advanced)"),
                    );
                    return None;
                }
                None => {
                    c.push(format!("{p}.room"), "a Matrix alert needs `room`", None);
                    return None;
                }
            };
            let Some(token) =
                read_secret(c, &format!("{p}.secret_file"), a.secret_file.as_ref(), base)
            else {
                if a.secret_file.is_none() {
                    c.push(
                        format!("{p}.secret_file"),
                        "a Matrix alert needs the file of the bot account's access token",
                        None,
                    );
                }
                return None;
            };
            AlertTarget::Matrix {
                homeserver,
                room,
                token,
            }
        }
        "syslog" => {
            let address = match a.address.as_deref().map(str::parse::<std::net::SocketAddr>) {
                Some(Ok(addr)) => addr,
                Some(Err(_)) => {
                    c.push(
                        format!("{p}.address"),
                        format!(
                            "`{}` is not an address and port",
                            a.address.as_deref().unwrap_or("")
                        ),
                        Some("write for example \"192.0.2.10:514\""),
                    );
                    return None;
                }
                None => {
                    c.push(
                        format!("{p}.address"),
                        "a syslog alert needs `address`",
                        None,
                    );
                    return None;
                }
            };
            let tcp = match a.transport.as_deref() {
                None | Some("udp") => false,
                Some("tcp") => true,
                Some(other) => {
                    c.push(
                        format!("{p}.transport"),
                        format!("unknown transport `{other}`"),
                        Some("use \"udp\" or \"tcp\""),
                    );
                    false
                }
            };
            AlertTarget::Syslog { address, tcp }
        }
        other => {
            c.push(
                format!("{p}.kind"),
                format!("unknown kind `{other}`"),
                Some("use \"email\", \"webhook\", \"matrix\" or \"syslog\""),
            );
            return None;
        }
    };
    let max_per_minute = a.max_per_minute.unwrap_or(DEFAULT_MAX_PER_MINUTE);
    if !(1..=600).contains(&max_per_minute) {
        c.push(
            format!("{p}.max_per_minute"),
            format!("{max_per_minute} is out of range"),
            Some("use 1 to 600"),
        );
    }
    Some(AlertChannel {
        name: a.name.clone().unwrap_or_else(|| format!("{}-{i}", a.kind)),
        target,
        least: level(c, &format!("{p}.level"), a.level.as_deref(), incident_level),
        tenants: a.tenants.clone(),
        escalation: a.escalation,
        max_per_minute: max_per_minute.clamp(1, 600),
    })
}

/// The global `[watch]` table.
pub(super) fn settings(
    c: &mut Collector,
    file: &WatchFile,
    base: &Path,
    tenant_ids: &[&str],
    has_smtp: bool,
) -> WatchSettings {
    let incident_level = level(
        c,
        "watch.incident_level",
        file.incident_level.as_deref(),
        Level::Orange,
    );
    if incident_level == Level::Vert {
        c.push(
            "watch.incident_level",
            "an incident at vert would open for every second of traffic",
            Some("use \"jaune\", \"orange\" or \"rouge\""),
        );
    }
    let t = &file.thresholds;
    let rate_ratios = t.rate_ratios.unwrap_or([3.0, 8.0, 20.0]);
    if !(rate_ratios[0] > 1.0
        && rate_ratios[0] < rate_ratios[1]
        && rate_ratios[1] < rate_ratios[2]
        && rate_ratios[2] <= 1e6)
    {
        c.push(
            "watch.thresholds.rate_ratios",
            format!("{rate_ratios:?} must rise, from above 1"),
            Some("for example [3, 8, 20]: three times the usual rate for jaune, eight for orange, twenty for rouge"),
        );
    }
    let thresholds = WatchThresholds {
        rate_ratios,
        min_rate: positive(c, "watch.thresholds.min_rate", t.min_rate, 5.0),
        login_failures: positive(c, "watch.thresholds.login_failures", t.login_failures, 2.0),
        connection_trips: positive(
            c,
            "watch.thresholds.connection_trips",
            t.connection_trips,
            50.0,
        ),
    };
    let mut alerts = Vec::new();
    for (i, a) in file.alerts.iter().enumerate() {
        for (ti, id) in a.tenants.iter().enumerate() {
            if !tenant_ids.contains(&id.as_str()) {
                c.push(
                    format!("watch.alerts[{i}].tenants[{ti}]"),
                    format!("no tenant has id `{id}`"),
                    None,
                );
            }
        }
        if let Some(ch) = alert(c, i, a, base, incident_level, has_smtp) {
            if alerts.iter().any(|o: &AlertChannel| o.name == ch.name) {
                c.push(
                    format!("watch.alerts[{i}].name"),
                    format!("`{}` names two channels", ch.name),
                    None,
                );
            }
            alerts.push(ch);
        }
    }
    WatchSettings {
        database: base.join(file.database.as_deref().unwrap_or(DEFAULT_DATABASE)),
        quiet: c.duration("watch.quiet", file.quiet.as_deref(), DEFAULT_QUIET),
        learning: c.duration_or_zero("watch.learning", file.learning.as_deref(), DEFAULT_LEARNING),
        incident_level,
        escalate_after: c.duration_or_zero(
            "watch.escalate_after",
            file.escalate_after.as_deref(),
            DEFAULT_ESCALATE_AFTER,
        ),
        thresholds,
        playbook: Arc::new(playbook(c, "watch.playbook", &file.playbook, None)),
        alerts,
    }
}
