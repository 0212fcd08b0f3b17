//! Configuration: read a TOML file, validate it completely, and report every problem as
//! `FILE:LINE:COL: key.path: message (hint)`. `file` holds the serde types, `validate` the
//! checks, `runtime` the validated model, `reload` the watch-and-swap machinery.

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
    let parsed: file::FileConfig = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            let message = e.message().trim().to_owned();
            let hint = if message.contains("unknown field") {
                Some("check the spelling against docs/config.md".to_owned())
            } else {
                None
            };
            return Err(ConfigError {
                diagnostics: vec![Diagnostic {
                    file: path.to_owned(),
                    line,
                    column,
                    key: key_at(text, e.span().map(|s| s.start)),
                    message,
                    hint,
                }],
            });
        }
    };
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
