//! The one error type of settings: a problem named by its key (or by the file), so
//! `check-config` and start-up say exactly what to fix. Every component's settings validate
//! into it; it depends on nothing else in the crate, so components never import the
//! configuration that composes them.

use std::path::PathBuf;

/// A configuration problem, naming the key (or the file) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("config key {key}: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    /// A problem with the value of `key` (its full dotted path, e.g. `refresh.interval`).
    pub fn key(key: &str, message: impl Into<String>) -> Self {
        Self::Key {
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// The same problem, its key placed under `section` (`rules[2].name` → `alerts.rules[2].name`).
    pub fn within(self, section: &str) -> Self {
        match self {
            Self::Key { key, message } => Self::Key {
                key: format!("{section}.{key}"),
                message,
            },
            other => other,
        }
    }
}

/// `Err` naming `key` when `ok` is false.
pub fn ensure(ok: bool, key: &str, message: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::key(key, message))
    }
}

/// A parser's message on one line: TOML errors come with a snippet of the file (`7 | [source]`
/// and a caret line), which is dropped; the position and the reason are kept.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| {
            // Snippet lines: `7 | [source]`, `| ^^^^`, `|`.
            let snippet = l
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start()
                .starts_with('|');
            !l.is_empty() && !snippet
        })
        .collect::<Vec<_>>()
        .join(": ")
}
