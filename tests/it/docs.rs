//! The documentation a newcomer reads: every relative link and anchor in the README, the
//! changelog and `docs/` leads somewhere, every page of `docs/` is in its index, and the
//! configuration reference lists exactly the keys the settings accept, with their defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kiro_cost_exporter::config::Settings;

use crate::support::keys::accepted_keys;
use crate::support::{repo_files, root};

/// README.md, CHANGELOG.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md"), root().join("CHANGELOG.md")];
    out.extend(repo_files("docs", ".md"));
    out
}

/// The lines outside fenced code blocks (the fences' own lines excluded).
fn unfenced(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        let fence = line.trim_start().starts_with("```");
        fenced ^= fence;
        !fence && !fenced
    })
}

/// The lines outside fenced code blocks, with inline code spans removed.
fn prose(text: &str) -> Vec<String> {
    unfenced(text)
        .map(|line| line.split('`').step_by(2).collect::<String>())
        .collect()
}

/// GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as
/// hyphens, a repeated one numbered.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in unfenced(text) {
        let heading = line.trim_start_matches('#');
        if heading.len() == line.len() || !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of a page's inline links and images, `[text](target)`.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            out.push(rest[..end].trim().to_owned());
            rest = &rest[end..];
        }
    }
    out
}

/// Why a relative link from `page` to `target` leads nowhere, if it does.
fn broken(page: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let file = if path.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().unwrap().join(path)
    };
    if !file.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    if anchor.is_empty() {
        return None;
    }
    let text = std::fs::read_to_string(&file).ok()?;
    (!anchors(&text).contains(anchor))
        .then(|| format!("{} has no heading #{anchor}", file.display()))
}

#[test]
fn every_relative_link_and_anchor_leads_somewhere() {
    let mut bad = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for target in links(&text) {
            checked += 1;
            if let Some(why) = broken(&page, &target) {
                bad.push(format!("{}: ({target}): {why}", page.display()));
            }
        }
    }
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
    assert!(
        checked > 50,
        "only {checked} links found: the reader is broken"
    );
}

#[test]
fn the_link_check_finds_a_broken_link_or_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("a.md");
    std::fs::write(
        dir.path().join("b.md"),
        "# Title\n## `query` output, in short\n## Twice\n## Twice\n",
    )
    .unwrap();
    let text = "[ok](b.md#query-output-in-short) [ok](b.md#twice-1) `[code](nowhere.md)`\n\
                [gone](c.md) [no anchor](b.md#nothing) [here](#own)\n## Own\n";
    std::fs::write(&page, text).unwrap();
    let found: Vec<(String, bool)> = links(text)
        .into_iter()
        .map(|t| {
            let bad = broken(&page, &t).is_some();
            (t, bad)
        })
        .collect();
    assert_eq!(
        found,
        [
            ("b.md#query-output-in-short".to_owned(), false),
            ("b.md#twice-1".to_owned(), false),
            ("c.md".to_owned(), true),
            ("b.md#nothing".to_owned(), true),
            ("#own".to_owned(), false),
        ]
    );
}

#[test]
fn every_docs_page_is_in_the_index_and_the_readme_links_the_index() {
    let index = std::fs::read_to_string(root().join("docs/README.md")).unwrap();
    let linked: BTreeSet<String> = links(&index).into_iter().collect();
    for page in pages()
        .iter()
        .filter(|p| p.starts_with(root().join("docs")))
    {
        let name = page.file_name().unwrap().to_str().unwrap();
        assert!(
            name == "README.md" || linked.contains(name),
            "docs/README.md does not link {name}"
        );
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(links(&readme).contains(&"docs/README.md".to_owned()));
}

/// The reference's keys: `## \`[table]\`` headings (and `[[array]]` ones, whose entries are
/// `array[].key`), and each table row's key in its first cell, with the default cell.
fn documented(text: &str) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    let mut table: Option<String> = None;
    for line in text.lines() {
        if let Some(h) = line
            .strip_prefix("## `[")
            .and_then(|h| h.strip_suffix("]`"))
        {
            let name = h.trim_start_matches('[').trim_end_matches(']');
            out.insert(name.to_owned(), None);
            let array = h.starts_with('[');
            table = Some(if array {
                format!("{name}[]")
            } else {
                name.to_owned()
            });
            continue;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        let key = cells
            .first()
            .and_then(|c| c.strip_prefix("| `")?.strip_suffix('`'));
        if let (Some(table), Some(key)) = (&table, key) {
            let default = cells
                .get(1)
                .and_then(|c| c.strip_prefix('`')?.strip_suffix('`'));
            out.insert(format!("{table}.{key}"), default.map(str::to_owned));
        }
    }
    out
}

#[test]
fn the_configuration_reference_lists_every_key_the_settings_accept() {
    let accepted = accepted_keys::<Settings>();
    for key in [
        "server.listen",
        "plans[].name",
        "alerts.rules[].repeat_interval",
        "source.athena.skip_unchanged",
    ] {
        assert!(
            accepted.contains(key),
            "the walk missed {key}: {accepted:?}"
        );
    }
    let text = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let reference = documented(&text);
    let keys: BTreeSet<String> = reference.keys().cloned().collect();
    let undocumented: Vec<_> = accepted.difference(&keys).collect();
    let refused: Vec<_> = keys.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && refused.is_empty(),
        "keys the settings accept but docs/configuration.md does not list: {undocumented:?}; \
         keys it lists that the settings refuse: {refused:?}"
    );
}

/// The value at a dotted path of the default settings as `check-config` prints them.
fn default_at<'a>(defaults: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = path.split('.');
    let mut value = defaults.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

/// The defaults the reference writes for keys outside arrays of tables: the key, the text as
/// written, and its value as TOML.
fn documented_defaults() -> Vec<(String, String, toml::Value)> {
    let text = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    documented(&text)
        .into_iter()
        .filter_map(|(key, written)| {
            let written = written.filter(|_| !key.contains("[]"))?;
            let parsed: toml::Table = toml::from_str(&format!("v = {written}"))
                .unwrap_or_else(|e| panic!("{key}: the default `{written}` is not TOML: {e}"));
            let value = parsed["v"].clone();
            Some((key, written, value))
        })
        .collect()
}

#[test]
fn the_configuration_references_defaults_are_the_settings_defaults() {
    let defaults = toml::Table::try_from(Settings::default()).unwrap();
    let documented = documented_defaults();
    for (key, written, value) in &documented {
        let actual = default_at(&defaults, key).unwrap_or_else(|| panic!("{key} has no default"));
        assert_eq!(
            value, actual,
            "{key}: docs/configuration.md says `{written}`"
        );
    }
    assert!(
        documented.len() > 80,
        "only {} defaults checked",
        documented.len()
    );
}

/// What the reference says reaches the daemon: a file setting every scalar key it documents to
/// its documented default loads, and gives the default settings.
#[test]
fn the_documented_defaults_load_as_a_configuration() {
    let mut file = toml::Table::new();
    for (key, _, value) in documented_defaults() {
        let mut table = &mut file;
        let parts: Vec<&str> = key.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            table = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
        }
        table.insert(parts[parts.len() - 1].to_owned(), value);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("documented.toml");
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    let loaded = kiro_cost_exporter::config::load_with_env(Some(&path), Default::default())
        .unwrap_or_else(|e| panic!("the documented defaults are refused: {e}"));
    assert_eq!(loaded, Settings::default());
}
