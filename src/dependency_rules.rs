//! The dependency directions of `docs/architecture.md`, checked: every top-level module may
//! import only the modules listed for it here. A test reads the source files (comments
//! left out) and fails on any `crate::<module>` path that is not allowed, naming the file
//! and line, so an import against the architecture cannot land unnoticed.

/// Each module and the modules it may import. Lower layers come first: a module never
/// imports one listed after it, besides the wiring at the end.
pub const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves: the vocabulary and tools every layer uses.
    ("clock", &[]),
    ("common", &[]),
    ("error", &[]),
    ("metrics", &[]),
    ("telemetry", &[]),
    // The service manager's protocol (systemd notify), the upgrade's handover.
    ("service", &[]),
    ("handover", &[]),
    // Decision cores and their state.
    ("canonical", &[]),
    ("guard", &[]),
    ("shield", &["clock", "common"]),
    (
        "config",
        &["canonical", "common", "guard", "metrics", "shield"],
    ),
    ("signals", &["config"]),
    ("acme", &["config"]),
    ("outbox", &["clock", "config"]),
    ("state", &["clock", "common", "shield"]),
    (
        "cluster",
        &[
            "acme", "clock", "common", "config", "shield", "state", "status", "watch",
        ],
    ),
    (
        "status",
        &["clock", "common", "config", "outbox", "signals"],
    ),
    (
        "watch",
        &["clock", "common", "config", "metrics", "outbox", "signals"],
    ),
    ("degraded", &["clock", "common", "config", "status"]),
    // HTTP plumbing, then the request pipeline over it.
    (
        "proxy",
        &["clock", "common", "config", "error", "metrics", "shield"],
    ),
    (
        "pipeline",
        &[
            "acme",
            "canonical",
            "clock",
            "common",
            "config",
            "degraded",
            "error",
            "guard",
            "metrics",
            "proxy",
            "shield",
            "signals",
            "state",
            "status",
        ],
    ),
    // The edges: connections in, operators' API, reloads.
    (
        "server",
        &[
            "clock", "common", "config", "metrics", "pipeline", "proxy", "shield", "signals",
        ],
    ),
    (
        "admin",
        &[
            "clock", "cluster", "common", "config", "guard", "handover", "metrics", "pipeline",
            "reload", "shield", "state", "status", "watch",
        ],
    ),
    ("reload", &["config", "metrics", "pipeline", "service"]),
    // Wiring and tools.
    (
        "app",
        &[
            "acme",
            "admin",
            "clock",
            "common",
            "config",
            "handover",
            "metrics",
            "pipeline",
            "reload",
            "server",
            "shield",
            "cluster",
            "guard",
            "signals",
            "state",
            "status",
            "telemetry",
            "watch",
        ],
    ),
    ("demo", &["app", "guard"]),
    (
        "drill",
        &[
            "clock", "common", "config", "guard", "metrics", "shield", "signals", "watch",
        ],
    ),
    (
        "cli",
        &[
            "app",
            "clock",
            "common",
            "config",
            "demo",
            "drill",
            "guard",
            "status",
            "telemetry",
        ],
    ),
    (
        "fuzzing",
        &[
            "canonical",
            "guard",
            "pipeline",
            "proxy",
            "server",
            "shield",
        ],
    ),
];

/// The `crate::<module>` names used in `source`, with their line numbers (comments left out).
pub fn imports(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c}`: every first segment in the group.
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.push((n + 1, name));
                    }
                }
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((n + 1, name));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn imports_are_read_from_code_not_comments() {
        let found = imports(
            "use crate::{clock, common::Language};\n// crate::server in a comment\nlet x = crate::metrics::X; // crate::admin\n",
        );
        let names: Vec<_> = found.iter().map(|(n, m)| (*n, m.as_str())).collect();
        assert_eq!(names, [(1, "clock"), (1, "common"), (3, "metrics")]);
    }

    #[test]
    fn every_module_imports_only_what_the_architecture_allows() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut violations = Vec::new();
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let Some(module) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            if matches!(module.as_str(), "lib" | "main" | "dependency_rules") {
                continue;
            }
            let allowed = ALLOWED
                .iter()
                .find(|(m, _)| *m == module)
                .map(|(_, a)| *a)
                .unwrap_or_else(|| panic!("module `{module}` is not in dependency_rules::ALLOWED"));
            seen.push(module.clone());
            let mut files = Vec::new();
            if path.is_dir() {
                rust_files(&path, &mut files);
            } else {
                files.push(path);
            }
            for file in files {
                let text = std::fs::read_to_string(&file).unwrap();
                for (line, import) in imports(&text) {
                    if import != module && !allowed.contains(&import.as_str()) {
                        violations.push(format!(
                            "{}:{line}: `{module}` imports `crate::{import}`",
                            file.strip_prefix(&src).unwrap_or(&file).display()
                        ));
                    }
                }
            }
        }
        assert!(
            violations.is_empty(),
            "imports against docs/architecture.md (change the code, or the rule and the doc together):\n{}",
            violations.join("\n")
        );
        for (module, _) in ALLOWED {
            assert!(seen.iter().any(|m| m == module), "`{module}` has no source");
        }
    }
}
