//! Bad input, generated: mutations of the shipped configuration files must load into a clean
//! error or valid settings, never a panic; a handful go through the binary to check the exit
//! status and the one-line message.

use std::collections::HashMap;
use std::path::Path;

use kiro_cost_exporter::config;
use proptest::prelude::*;

use crate::util::*;

const SHIPPED: &[&str] = &[
    "local.toml",
    "athena.toml",
    "alerts.toml",
    "budgets.toml",
    "cloudwatch.toml",
    "demo.yaml",
];

/// One edit of a configuration text.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(usize),
    DuplicateLine(usize),
    /// Replaces the value after `=` or `:` on a line.
    Value(usize, String),
    Truncate(usize),
    Insert(usize, String),
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"\"".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("1e309".to_owned()),
        Just("nan".to_owned()),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("\"99999999999999999999h\"".to_owned()),
        Just("\"0.0.0.0:99999\"".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        "[ -~]{0,12}".prop_map(|s| s),
        "\"[a-z/]{0,8}\"".prop_map(|s| s),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::DeleteLine),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), value()).prop_map(|(l, v)| Edit::Value(l, v)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), "[ -~\\n\\t\\[\\]{}=:\"'#-]{0,20}").prop_map(|(l, s)| Edit::Insert(l, s)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for e in edits {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match e {
            Edit::DeleteLine(i) => {
                lines.remove(i % n);
            }
            Edit::DuplicateLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::Value(i, v) => {
                let l = &mut lines[i % n];
                if let Some(at) = l.find(['=', ':']) {
                    l.truncate(at + 1);
                    l.push(' ');
                    l.push_str(v);
                }
            }
            Edit::Truncate(i) => {
                let l = &mut lines[i % n];
                let mut cut = i % (l.len() + 1);
                while !l.is_char_boundary(cut) {
                    cut -= 1;
                }
                l.truncate(cut);
            }
            Edit::Insert(i, s) => lines.insert(i % (n + 1), s.clone()),
        }
    }
    lines.join("\n")
}

/// Loads and validates as `check-config` does; panics only if the loader does.
fn check(path: &Path) -> Result<(), String> {
    let settings = config::load_with_env(Some(path), HashMap::new()).map_err(|e| e.to_string())?;
    settings.validate().map_err(|e| e.to_string())?;
    settings.server.security().map_err(|e| e.to_string())?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_configs_load_or_fail_cleanly(
        file in 0..SHIPPED.len(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let name = SHIPPED[file];
        let original = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(name),
        ).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, apply(&original, &edits)).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&path));
        prop_assert!(outcome.is_ok(), "loading panicked on {:?}", edits);
        if let Ok(Err(message)) = outcome {
            prop_assert!(!message.is_empty() && !message.contains('\n'), "{message:?}");
        }
    }
}

#[test]
fn mutated_configs_through_the_binary_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let original =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/local.toml"))
            .unwrap();
    let bad = [
        original.replace("interval = \"1h\"", "interval = \"soon\""),
        original.replace("[server]", "[server"),
        original.replace("max_connections = 256", "max_connections = -3"),
        original.replace("target_partitions = 0", "target_partitions = \"many\""),
        original.replace(
            "# \"execution.batch_size\" = \"8192\"",
            "\"execution.no_such_option\" = \"1\"",
        ),
        // Cut inside a string, as a half-written file would be.
        original[..original.find("retry_max = \"").unwrap() + 14].to_owned(),
    ];
    for (i, text) in bad.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let o = run(&["check-config", "--config", path.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "case {i}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "case {i}: {err}");
        assert!(!err.contains("panicked"), "case {i}: {err}");
    }
}
