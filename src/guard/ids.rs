//! Record identifiers in request paths: a route's templates (`/dossiers/{id}`,
//! `/api/usagers/{id}/documents`) name where a record's identifier stands, so that the
//! distinct records an account opens can be counted (the classic enumeration walks
//! `/dossiers/1`, `/dossiers/2`...). Matched on the canonical path, segment by segment.

/// One template's segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// This exact segment.
    Literal(String),
    /// The identifier.
    Id,
    /// Any one segment.
    Any,
}

/// A path template with one `{id}` segment (`{*}` matches any one segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTemplate {
    parts: Vec<Part>,
    /// The template ends with `/...`: longer paths match too.
    prefix: bool,
}

impl IdTemplate {
    /// Parses `/dossiers/{id}` (and `/dossiers/{id}/...` for the paths under it). `Err` says
    /// what is wrong.
    pub fn parse(template: &str) -> Result<Self, String> {
        let rest = template
            .strip_prefix('/')
            .ok_or("a template starts with '/'")?;
        let (rest, prefix) = match rest.strip_suffix("/...") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let mut parts = Vec::new();
        for segment in rest.split('/') {
            parts.push(match segment {
                "{id}" => Part::Id,
                "{*}" => Part::Any,
                "" => return Err("empty segment".into()),
                s if s.contains(['{', '}']) => {
                    return Err(format!("`{s}`: only whole segments `{{id}}` and `{{*}}`"))
                }
                s => Part::Literal(s.to_owned()),
            });
        }
        match parts.iter().filter(|p| **p == Part::Id).count() {
            1 => Ok(Self { parts, prefix }),
            n => Err(format!("{n} `{{id}}` segments; a template has exactly one")),
        }
    }

    /// The identifier in `path` (a canonical path, without its query), if it matches.
    pub fn id<'p>(&self, path: &'p str) -> Option<&'p str> {
        let mut segments = path.strip_prefix('/')?.split('/');
        let mut id = None;
        for part in &self.parts {
            let segment = segments.next()?;
            match part {
                Part::Literal(l) if l == segment => {}
                Part::Literal(_) => return None,
                Part::Id if !segment.is_empty() => id = Some(segment),
                Part::Id => return None,
                Part::Any => {}
            }
        }
        match segments.next() {
            None => id,
            Some("") if self.prefix || segments.next().is_none() => id,
            Some(_) if self.prefix => id,
            Some(_) => None,
        }
    }
}

/// The identifier of the first of `templates` that `path` matches.
pub fn find_id<'p>(templates: &[IdTemplate], path: &'p str) -> Option<&'p str> {
    templates.iter().find_map(|t| t.id(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_read_where_the_template_says() {
        let t = IdTemplate::parse("/dossiers/{id}").unwrap();
        assert_eq!(t.id("/dossiers/12345"), Some("12345"));
        assert_eq!(t.id("/dossiers/12345/"), Some("12345"));
        assert_eq!(t.id("/dossiers/12345/pieces"), None);
        assert_eq!(t.id("/dossiers/"), None);
        assert_eq!(t.id("/dossiers"), None);
        assert_eq!(t.id("/autres/12345"), None);
        let under = IdTemplate::parse("/api/{*}/usagers/{id}/...").unwrap();
        assert_eq!(under.id("/api/v2/usagers/u-77/documents/3"), Some("u-77"));
        assert_eq!(under.id("/api/v2/usagers/u-77"), Some("u-77"));
        let templates = [t, under];
        assert_eq!(find_id(&templates, "/api/v1/usagers/9/x"), Some("9"));
        assert_eq!(find_id(&templates, "/accueil"), None);
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for bad in [
            "dossiers/{id}",
            "/dossiers",
            "/{id}/{id}",
            "/d/x{id}",
            "/a//{id}",
        ] {
            assert!(IdTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
