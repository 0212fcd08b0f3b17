//! The small shared vocabulary every layer may use: page languages, time zones and civil
//! dates, durations as operators write them, the path prefix of Rempart's own pages and the
//! stable key of a tenant. A leaf: it imports nothing from the crate, so `config`, `status`,
//! `shield`, `proxy` and `server` can all use it without importing one another.

use std::time::Duration;

use http::HeaderValue;

/// Seconds in a day.
pub const DAY_S: u64 = 86_400;

/// Path prefix of Rempart's own pages on every tenant host.
pub const LOCAL_PREFIX: &str = "/.rempart/";

/// Page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// French (default).
    Fr,
    /// English.
    En,
}

/// Local time rule for dates shown to residents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeZone {
    /// Coordinated universal time.
    Utc,
    /// Central European time with the EU summer-time rule (Europe/Paris).
    Paris,
    /// A fixed offset in minutes (overseas territories: for example +240 for La Réunion).
    Fixed(i32),
}

impl TimeZone {
    /// Parses `UTC`, `Europe/Paris` or a fixed offset such as `+04:00` / `-04:00`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "UTC" | "Etc/UTC" => return Some(TimeZone::Utc),
            "Europe/Paris" => return Some(TimeZone::Paris),
            _ => {}
        }
        let (sign, rest) = match s.as_bytes().first()? {
            b'+' => (1, &s[1..]),
            b'-' => (-1, &s[1..]),
            _ => return None,
        };
        let (h, m) = rest.split_once(':')?;
        let h: i32 = h.parse().ok()?;
        let m: i32 = m.parse().ok()?;
        ((0..=14).contains(&h) && (0..60).contains(&m))
            .then_some(TimeZone::Fixed(sign * (h * 60 + m)))
    }

    /// Offset from UTC in minutes at `unix_s`.
    pub fn offset_minutes(self, unix_s: u64) -> i32 {
        match self {
            TimeZone::Utc => 0,
            TimeZone::Fixed(m) => m,
            TimeZone::Paris => {
                // Summer time from the last Sunday of March to the last Sunday of October,
                // both at 01:00 UTC.
                let (year, _, _) = civil_from_days((unix_s / DAY_S) as i64);
                let start = last_sunday_s(year, 3) + 3600;
                let end = last_sunday_s(year, 10) + 3600;
                if (start..end).contains(&(unix_s as i64)) {
                    120
                } else {
                    60
                }
            }
        }
    }
}

fn last_sunday_s(year: i64, month: u32) -> i64 {
    let last_day = days_from_civil(year, month, 31);
    // 1970-01-01 was a Thursday; weekday 0 = Sunday.
    let weekday = (last_day + 4).rem_euclid(7);
    (last_day - weekday) * DAY_S as i64
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Parses `500ms`, `10s`, `2m`, `1h`, `365d` (and combinations are refused: keep it
/// obvious).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration `{raw}` has no unit"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration `{raw}` does not start with a number"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(format!("duration `{raw}` has unknown unit `{unit}`")),
    };
    Ok(d)
}

/// A tenant's stable key: a hash of its id, the same on every node and across reloads (an
/// index in the configuration shifts when tenants are reordered). Sketches and tables of
/// per-tenant state are keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantKey(pub u64);

impl TenantKey {
    /// The key of the tenant with this id (FNV-1a: stable across builds and nodes).
    pub fn of(id: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Self(h)
    }
}

/// Picks the page language from an `Accept-Language` value: the first of `fr`/`en` the
/// client ranks highest, else `default`.
pub fn negotiate_language(accept_language: Option<&HeaderValue>, default: Language) -> Language {
    let Some(raw) = accept_language.and_then(|v| v.to_str().ok()) else {
        return default;
    };
    let mut best: Option<(f32, Language)> = None;
    for part in raw.split(',') {
        let mut it = part.split(';');
        let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .find_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
            })
            .unwrap_or(1.0);
        let lang = if tag == "fr" || tag.starts_with("fr-") {
            Language::Fr
        } else if tag == "en" || tag.starts_with("en-") {
            Language::En
        } else {
            continue;
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, lang));
        }
    }
    best.map_or(default, |(_, l)| l)
}

/// A page the gateway answers with itself: `status`, HTML in UTF-8, never stored by caches
/// (the caller adds the page's own fields).
pub fn html_page(status: http::StatusCode, body: String) -> http::Response<bytes::Bytes> {
    let mut resp = http::Response::new(bytes::Bytes::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}

/// A string the client chose (a path, a host name, a user agent), made safe to log: control
/// characters, invisible and direction-changing characters, spaces, quotes and backslashes
/// escaped (`\x1b`, `\u{202e}`), and cut after `max` bytes of input (marked with `…`), so
/// a line of the log can neither be forged nor made to hide text.
pub struct LogText<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> LogText<'a> {
    /// `text`, cut after `max` bytes.
    pub fn new(text: &'a str, max: usize) -> Self {
        Self { text, max }
    }
}

impl std::fmt::Display for LogText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for (i, c) in self.text.char_indices() {
            if i >= self.max {
                return f.write_char('…');
            }
            match c {
                '\\' | '"' | ' ' => write!(f, "\\x{:02x}", c as u32)?,
                c if c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
                '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}' => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A vigilance level, lowest first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Green: nothing unusual.
    #[default]
    Vert,
    /// Yellow: something to watch.
    Jaune,
    /// Orange: an attack or distress, defences tightened.
    Orange,
    /// Red: a serious attack, every defence on.
    Rouge,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 4] = [Level::Vert, Level::Jaune, Level::Orange, Level::Rouge];

    /// Name in configuration, logs and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Level::Vert => "vert",
            Level::Jaune => "jaune",
            Level::Orange => "orange",
            Level::Rouge => "rouge",
        }
    }

    /// Parses a level's name (French, or English: green, yellow, orange, red).
    pub fn parse(name: &str) -> Option<Level> {
        match name.trim().to_ascii_lowercase().as_str() {
            "vert" | "green" => Some(Level::Vert),
            "jaune" | "yellow" => Some(Level::Jaune),
            "orange" => Some(Level::Orange),
            "rouge" | "red" => Some(Level::Rouge),
            _ => None,
        }
    }

    /// The level one step lower (green stays green).
    pub fn lower(self) -> Level {
        match self {
            Level::Rouge => Level::Orange,
            Level::Orange => Level::Jaune,
            Level::Jaune | Level::Vert => Level::Vert,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn client_strings_are_escaped_and_cut_for_the_log() {
        let shown = |s: &str, max: usize| LogText::new(s, max).to_string();
        assert_eq!(shown("/d%C3%A9marches/état", 256), "/d%C3%A9marches/état");
        assert_eq!(
            shown("a\x1b[31mred\r\nstatus=200", 256),
            "a\\x1b[31mred\\x0d\\x0astatus=200"
        );
        assert_eq!(shown("x\u{202e}gpj.exe", 256), "x\\u{202e}gpj.exe");
        assert_eq!(shown("a b\"c\\", 256), "a\\x20b\\x22c\\x5c");
        assert_eq!(
            shown(&"a".repeat(300), 256),
            format!("{}…", "a".repeat(256))
        );
        assert_eq!(shown("ééé", 3), "éé…");
    }
    use super::*;

    fn lang(al: &str, default: Language) -> Language {
        negotiate_language(Some(&HeaderValue::from_str(al).unwrap()), default)
    }

    #[test]
    fn language_follows_preference() {
        assert_eq!(lang("en-GB,en;q=0.9,fr;q=0.5", Language::Fr), Language::En);
        assert_eq!(lang("de,fr;q=0.4,en;q=0.3", Language::En), Language::Fr);
        assert_eq!(lang("de", Language::Fr), Language::Fr);
        assert_eq!(negotiate_language(None, Language::En), Language::En);
    }
}
