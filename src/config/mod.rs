//! Configuration: read a TOML file, validate it completely, and report every problem as
//! `FILE:LINE:COL: key.path: message (hint)`. `file` holds the serde types, `validate` the
//! checks, `runtime` the validated model, `reload` the watch-and-swap machinery.

pub mod certificate;
pub mod file;
pub mod runtime;
pub mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use runtime::Runtime;

/// One located problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Key path.
    pub key: String,
    /// Message.
    pub message: String,
    /// Hint.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

/// A refused configuration: every problem found.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// Problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Runtime, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        diagnostics: vec![Diagnostic {
            file: path.to_owned(),
            line: 1,
            column: 1,
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
            hint: Some("check the path given to --config".into()),
        }],
    })?;
    load_str(&text, path)
}

/// Validates `text` as if read from `path`.
pub fn load_str(text: &str, path: &Path) -> Result<Runtime, ConfigError> {
    let parsed = parse_all(text, path)?;
    validate::validate(parsed, path).map_err(|problems| {
        let doc = toml_edit::Document::parse(text.to_owned()).ok();
        let mut diagnostics: Vec<Diagnostic> = problems
            .into_iter()
            .map(|p| {
                let offset = doc.as_ref().and_then(|d| locate(d, &p.path)).unwrap_or(0);
                let (line, column) = line_col(text, offset);
                Diagnostic {
                    file: path.to_owned(),
                    line,
                    column,
                    key: p.path,
                    message: p.message,
                    hint: p.hint,
                }
            })
            .collect();
        diagnostics.sort_by_key(|d| (d.line, d.column));
        ConfigError { diagnostics }
    })
}

/// Type errors reported at most per file (each costs a parse).
const MAX_TYPE_ERRORS: usize = 32;

/// Parses `text` into the file model, reporting every type error and unknown key, not only
/// the first: after each error the offending item is taken out and the rest parsed again.
/// (A syntax error stops at once: what follows it has no reliable reading.)
fn parse_all(text: &str, path: &Path) -> Result<file::FileConfig, ConfigError> {
    let original = toml_edit::Document::parse(text.to_owned()).ok();
    let mut current = text.to_owned();
    let mut diagnostics = Vec::new();
    // Items taken out so far: a table missing one of them is no news.
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..MAX_TYPE_ERRORS {
        let error = match toml::from_str::<file::FileConfig>(&current) {
            Ok(parsed) if diagnostics.is_empty() => return Ok(parsed),
            Ok(_) => break,
            Err(e) => e,
        };
        let offset = error.span().map(|s| s.start);
        let doc = toml_edit::Document::parse(current.clone()).ok();
        let segments = doc
            .as_ref()
            .zip(offset)
            .and_then(|(d, o)| path_at(d.as_item(), o));
        let key = segments.as_deref().map(render_path);
        // Where it is in the file as written (the text parsed may have lost items already).
        let position = match (&key, &original) {
            (Some(k), Some(orig)) => locate(orig, k).map(|o| line_col(text, o)),
            _ => None,
        }
        .or_else(|| offset.map(|o| line_col(&current, o)))
        .unwrap_or((1, 1));
        let message = error.message().trim().to_owned();
        let hint = if message.contains("unknown field") {
            Some("check the spelling against docs/config.md".to_owned())
        } else {
            None
        };
        let consequence = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
            .zip(key.as_deref())
            .is_some_and(|(field, at)| removed.contains(&format!("{at}.{field}")));
        let key = key.unwrap_or_else(|| key_at(&current, offset));
        if !consequence {
            diagnostics.push(Diagnostic {
                file: path.to_owned(),
                line: position.0,
                column: position.1,
                key: key.clone(),
                message,
                hint,
            });
        }
        removed.push(key);
        let (Some(doc), Some(segments)) = (doc, segments) else {
            break;
        };
        let mut doc = doc.into_mut();
        if !remove_at(doc.as_item_mut(), &segments) {
            break;
        }
        current = doc.to_string();
    }
    diagnostics.sort_by_key(|d| (d.line, d.column));
    diagnostics.dedup();
    Err(ConfigError { diagnostics })
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// `a.b[2].c`.
fn render_path(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The path of the item that starts last at or before `offset`: the key or array element
/// an error at `offset` is about.
fn path_at(item: &toml_edit::Item, offset: usize) -> Option<Vec<Segment>> {
    let mut best = None;
    walk_item(item, &mut Vec::new(), offset, &mut best);
    best.map(|(_, path)| path)
}

type Best = Option<(usize, Vec<Segment>)>;

fn candidate(start: Option<usize>, path: &[Segment], offset: usize, best: &mut Best) {
    if let Some(start) = start.filter(|s| *s <= offset) {
        if best.as_ref().is_none_or(|(b, _)| start >= *b) {
            *best = Some((start, path.to_vec()));
        }
    }
}

/// One child at `segment`, starting at byte `start`: a candidate itself, then what it holds
/// (`walk`).
fn child(
    segment: Segment,
    start: Option<usize>,
    path: &mut Vec<Segment>,
    offset: usize,
    best: &mut Best,
    walk: impl FnOnce(&mut Vec<Segment>, &mut Best),
) {
    path.push(segment);
    candidate(start, path, offset, best);
    walk(path, best);
    path.pop();
}

fn key_start(key: Option<&toml_edit::Key>) -> Option<usize> {
    key.and_then(toml_edit::Key::span).map(|s| s.start)
}

fn walk_item(item: &toml_edit::Item, path: &mut Vec<Segment>, offset: usize, best: &mut Best) {
    match item {
        toml_edit::Item::Table(t) => walk_table(t, path, offset, best),
        toml_edit::Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                let start = t.span().map(|s| s.start);
                child(Segment::Index(i), start, path, offset, best, |p, b| {
                    walk_table(t, p, offset, b)
                });
            }
        }
        toml_edit::Item::Value(v) => walk_value(v, path, offset, best),
        toml_edit::Item::None => {}
    }
}

fn walk_table(t: &toml_edit::Table, path: &mut Vec<Segment>, offset: usize, best: &mut Best) {
    for (name, item) in t.iter() {
        let start = key_start(t.key(name));
        child(
            Segment::Key(name.to_owned()),
            start,
            path,
            offset,
            best,
            |p, b| walk_item(item, p, offset, b),
        );
    }
}

fn walk_value(v: &toml_edit::Value, path: &mut Vec<Segment>, offset: usize, best: &mut Best) {
    match v {
        toml_edit::Value::InlineTable(t) => {
            for (name, value) in t.iter() {
                let start = key_start(t.key(name));
                child(
                    Segment::Key(name.to_owned()),
                    start,
                    path,
                    offset,
                    best,
                    |p, b| walk_value(value, p, offset, b),
                );
            }
        }
        toml_edit::Value::Array(a) => {
            for (i, value) in a.iter().enumerate() {
                let start = value.span().map(|s| s.start);
                child(Segment::Index(i), start, path, offset, best, |p, b| {
                    walk_value(value, p, offset, b)
                });
            }
        }
        _ => {}
    }
}

/// Removes the item at `path`; `false` when there is none.
fn remove_at(item: &mut toml_edit::Item, path: &[Segment]) -> bool {
    use toml_edit::{Item, Value};
    match path {
        [] => false,
        [last] => match (last, item) {
            (Segment::Key(k), Item::Table(t)) => t.remove(k).is_some(),
            (Segment::Key(k), Item::Value(Value::InlineTable(t))) => t.remove(k).is_some(),
            (Segment::Index(i), Item::ArrayOfTables(a)) if *i < a.len() => {
                a.remove(*i);
                true
            }
            (Segment::Index(i), Item::Value(Value::Array(a))) if *i < a.len() => {
                a.remove(*i);
                true
            }
            _ => false,
        },
        [first, rest @ ..] => match (first, item) {
            (Segment::Key(k), Item::Table(t)) => t.get_mut(k).is_some_and(|i| remove_at(i, rest)),
            (Segment::Key(k), Item::Value(Value::InlineTable(t))) => {
                remove_value(t.get_mut(k), rest)
            }
            (Segment::Index(i), Item::ArrayOfTables(a)) => match a.get_mut(*i) {
                Some(t) => match rest {
                    [Segment::Key(k)] => t.remove(k).is_some(),
                    [Segment::Key(k), deeper @ ..] => {
                        t.get_mut(k).is_some_and(|i| remove_at(i, deeper))
                    }
                    _ => false,
                },
                None => false,
            },
            (Segment::Index(i), Item::Value(Value::Array(a))) => remove_value(a.get_mut(*i), rest),
            _ => false,
        },
    }
}

/// Removes the item at `path` below `value` (inline tables and arrays).
fn remove_value(value: Option<&mut toml_edit::Value>, path: &[Segment]) -> bool {
    let Some(value) = value else {
        return false;
    };
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match (first, value) {
        (Segment::Key(k), toml_edit::Value::InlineTable(t)) if rest.is_empty() => {
            t.remove(k).is_some()
        }
        (Segment::Key(k), toml_edit::Value::InlineTable(t)) => remove_value(t.get_mut(k), rest),
        (Segment::Index(i), toml_edit::Value::Array(a)) if rest.is_empty() && *i < a.len() => {
            a.remove(*i);
            true
        }
        (Segment::Index(i), toml_edit::Value::Array(a)) => remove_value(a.get_mut(*i), rest),
        _ => false,
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// Best-effort key name for a parse error: the word at the start of its line.
fn key_at(text: &str, offset: Option<usize>) -> String {
    let Some(offset) = offset else {
        return "(syntax)".into();
    };
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let key: String = line
        .trim()
        .chars()
        .take_while(|c| {
            c.is_ascii_alphanumeric() || *c == '_' || *c == '.' || *c == '[' || *c == ']'
        })
        .collect();
    if key.is_empty() {
        "(syntax)".into()
    } else {
        key
    }
}

/// Byte offset of the deepest existing item along `path` (`a.b[2].c`).
fn locate(doc: &toml_edit::Document<String>, path: &str) -> Option<usize> {
    locate_item(doc.as_item(), path)
}

/// Walks `path` from `start`, remembering the last span seen (spans survive cloning).
fn locate_item(start: &toml_edit::Item, path: &str) -> Option<usize> {
    let mut item = start;
    let mut best = None;
    let segments: Vec<&str> = path.split('.').collect();
    for (n, segment) in segments.iter().enumerate() {
        let (name, index) = match segment.split_once('[') {
            Some((nm, rest)) => (nm, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*segment, None),
        };
        let (key_span, next) = match item {
            toml_edit::Item::Table(t) => match t.get_key_value(name) {
                Some((k, v)) => (k.span(), v),
                None => break,
            },
            toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => match t.get_key_value(name)
            {
                Some((k, v)) => (k.span(), v),
                None => break,
            },
            _ => break,
        };
        best = key_span.map(|s| s.start).or(best);
        item = next;
        if let Some(i) = index {
            let rest = segments[n + 1..].join(".");
            match item {
                toml_edit::Item::ArrayOfTables(a) => match a.get(i) {
                    Some(t) => {
                        let here = t.span().map(|s| s.start).or(best);
                        if rest.is_empty() {
                            return here;
                        }
                        return locate_item(&toml_edit::Item::Table(t.clone()), &rest).or(here);
                    }
                    None => break,
                },
                toml_edit::Item::Value(toml_edit::Value::Array(a)) => match a.get(i) {
                    Some(v) => {
                        let here = v.span().map(|s| s.start).or(best);
                        if rest.is_empty() {
                            return here;
                        }
                        return locate_item(&toml_edit::Item::Value(v.clone()), &rest).or(here);
                    }
                    None => break,
                },
                _ => break,
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: &str = r#"
[[listeners]]
address = "127.0.0.1:0"

[[tenants]]
id = "ville"
name = "Ville"
hosts = ["ville.test"]

[[tenants.pools]]
name = "web"
servers = [{ address = "127.0.0.1:1" }, { address = "nope" }]

[[tenants.routes]]
path_prefix = "/"
pool = "missing"
"#;

    #[test]
    fn problems_point_at_their_line() {
        let err = load_str(BAD, Path::new("bad.toml")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("bad.toml:12:"), "{text}");
        assert!(
            text.contains("tenants[0].pools[0].servers[1].address"),
            "{text}"
        );
        assert!(text.contains("bad.toml:16:"), "{text}");
        assert!(text.contains("known pools: web"), "{text}");
    }

    #[test]
    fn every_type_error_is_reported_with_its_line() {
        let text = "[[listeners]]\naddress = 80\n\n[limits]\nmax_body_bytes = \"big\"\nmax_connections = 10\n\n[timeouts]\nupstream_conect = \"1s\"\n\n[[tenants]]\nid = \"v\"\nname = 3\nhosts = [\"v.test\"]\n";
        let err = load_str(text, Path::new("c.toml")).unwrap_err();
        let found: Vec<(usize, &str)> = err
            .diagnostics
            .iter()
            .map(|d| (d.line, d.key.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (2, "listeners[0].address"),
                (5, "limits.max_body_bytes"),
                (9, "timeouts.upstream_conect"),
                (13, "tenants[0].name"),
            ],
            "{err}"
        );
    }

    #[test]
    fn an_empty_or_cut_file_is_refused() {
        for text in ["", "\n", "[[listeners]]\naddress = \"127.0.0.1:0\"\n"] {
            let err = load_str(text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(err.contains("no tenant"), "{err}");
        }
        let err = load_str("", Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("no listener"), "{err}");
    }

    #[test]
    fn durations_and_sizes_have_upper_bounds() {
        let tenant = "[[tenants]]\nid = \"v\"\nname = \"V\"\nhosts = [\"v.test\"]\n[[tenants.pools]]\nname = \"web\"\nservers = [{ address = \"127.0.0.1:9\" }]\n[[tenants.routes]]\npool = \"web\"\n";
        let text = format!(
            "[timeouts]\nrequest = \"99999999h\"\n\n[limits]\nmax_body_bytes = 99999999999999\n\n{tenant}"
        );
        let err = load_str(
            &format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n{text}"),
            Path::new("c.toml"),
        )
        .unwrap_err();
        let keys: Vec<(usize, &str)> = err
            .diagnostics
            .iter()
            .map(|d| (d.line, d.key.as_str()))
            .collect();
        assert_eq!(
            keys,
            [(4, "timeouts.request"), (7, "limits.max_body_bytes")],
            "{err}"
        );
    }

    #[test]
    fn good_history_waits_whole_minutes_up_to_a_day() {
        let tenant = |wait: &str| {
            format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n[[tenants]]\nid = \"v\"\nname = \"V\"\nhosts = [\"v.test\"]\n[[tenants.pools]]\nname = \"web\"\nservers = [{{ address = \"127.0.0.1:9\" }}]\n[[tenants.routes]]\npool = \"web\"\n[tenants.shield]\ngood_history_after = \"{wait}\"\n")
        };
        for (wait, minutes) in [("0s", 0), ("90s", 1), ("2m", 2), ("24h", 24 * 60)] {
            let config = load_str(&tenant(wait), Path::new("c.toml")).unwrap();
            assert_eq!(
                config.tenants[0].shield.good_history_after_min, minutes,
                "{wait}"
            );
        }
        let err = load_str(&tenant("25h"), Path::new("c.toml")).unwrap_err();
        assert_eq!(err.diagnostics[0].line, 13, "{err}");
        assert_eq!(
            err.diagnostics[0].key, "tenants[0].shield.good_history_after",
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let err = load_str(
            "[timeouts]\nupstream_conect = \"1s\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        let d = &err.diagnostics[0];
        assert_eq!(d.line, 2, "{err}");
        assert!(d.message.contains("unknown field"), "{err}");
    }
}
