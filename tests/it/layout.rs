//! The code's shape, as docs/development.md draws it: the top-level modules of `src/` import
//! one another without a cycle (`crate::` paths outside test modules), and nothing imports the
//! configuration that composes the components' settings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::X` edges from each top-level module (the binary's `main` and `cli` excluded).
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            if ["main", "lib", "cli"].contains(&top.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for part in line.split("crate::").skip(1) {
                    let target: String = part
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !target.is_empty() && target != top {
                        out.entry(top.clone()).or_default().insert(target);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn top_level_modules_form_a_dag_and_nothing_imports_the_config() {
    let edges = edges();
    assert!(edges.len() > 8, "{edges:?}");
    for (from, to) in &edges {
        assert!(
            !to.contains("config") || from == "config",
            "{from} imports the configuration; components own their settings"
        );
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(n) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == n) {
            panic!("import cycle: {} -> {n}", path[i..].join(" -> "));
        }
        path.push(n.to_owned());
        for m in edges.get(n).into_iter().flatten() {
            visit(m, edges, path, done);
        }
        path.pop();
        done.insert(n.to_owned());
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        visit(n, &edges, &mut Vec::new(), &mut done);
    }
    // Every consumer of the snapshot is a sink (or the daemon that hands it over, or query's
    // output).
    for (from, to) in &edges {
        if to.contains("snapshot") {
            assert!(
                ["sink", "daemon", "output"].contains(&from.as_str()),
                "{from} reads the snapshot outside sink/"
            );
        }
    }
}

/// The code of a file outside its test module, without comment lines.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("#[cfg(test)]")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn sinks_render_what_the_snapshot_computed_and_do_not_import_each_other() {
    let sink_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sink");
    // The sinks: every module under src/sink/ but the shared vocabulary in mod.rs.
    let sinks: Vec<String> = std::fs::read_dir(&sink_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "mod.rs")
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(sinks.len() >= 6, "{sinks:?}");
    // What the snapshot derives once: a sink that calls these computes a figure again.
    let computing = [
        ".by_name(",
        "savings::recommend",
        "recommend_with_use(",
        "forecast_extra(",
        "seat_cost_centers(",
        "units_by_seat(",
        "main_unit(",
        "duplicate_subscriptions(",
        "PlanTable",
    ];
    for sink in &sinks {
        let root = sink_dir.join(sink);
        let paths = if root.is_dir() {
            files(&root)
        } else {
            vec![sink_dir.join(format!("{sink}.rs"))]
        };
        for path in paths {
            let code = code(&path);
            let shown = path.strip_prefix(&sink_dir).unwrap().display().to_string();
            for call in computing {
                assert!(
                    !code.contains(call),
                    "sink/{shown} calls {call}: read the figure from the snapshot's views"
                );
            }
            for other in sinks.iter().filter(|o| *o != sink) {
                for import in [format!("crate::sink::{other}"), format!("super::{other}")] {
                    // The module itself, not a longer name that starts the same.
                    let imports = code.match_indices(&import).any(|(i, _)| {
                        code[i + import.len()..]
                            .chars()
                            .next()
                            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
                    });
                    assert!(
                        !imports,
                        "sink/{shown} imports the {other} sink ({import}): share through \
                         sink/mod.rs, the snapshot or locale"
                    );
                }
            }
        }
    }
}
