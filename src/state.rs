//! The daemon's persisted state: one JSON file (`alerts.state_file`) shared by the sinks that
//! must remember across restarts what they delivered (the alerts, the monthly report). Each
//! sink owns its sections of the document and decodes them itself; this module only loads,
//! keeps and writes the document, and knows nothing of what the sections mean.
//!
//! Writes are atomic ([`atomic_write`]: temp file in the same folder, fsync, rename, fsync of
//! the folder), and run on a blocking thread, never on the async runtime's workers. A file that
//! cannot be parsed is moved aside (`<name>.corrupt-<timestamp>`, never overwritten) and the
//! daemon starts with an empty state, saying so in the log.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The document's format version.
const VERSION: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path}: the save did not finish: {message}")]
    Interrupted { path: PathBuf, message: String },
}

/// Writes `bytes` to `path` atomically: a temp file in the same folder, fsync, rename, fsync
/// of the folder. A reader sees the old file or the new one, never a part. Blocking.
#[allow(clippy::disallowed_methods)] // callers run it on a blocking thread
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The state file and its document, shared by the sinks that persist something.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    doc: Mutex<Map<String, Value>>,
}

/// What opening found.
#[derive(Debug)]
pub struct Opened {
    pub state: Arc<StateFile>,
    /// Set when the file was unreadable or corrupt and was moved aside: where to, and why.
    pub moved_aside: Option<(PathBuf, String)>,
}

fn empty() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("version".into(), Value::from(VERSION));
    m
}

impl StateFile {
    /// Reads the file. Missing: an empty state. Unparsable or of an unknown version: moved
    /// aside and an empty state, with the reason; only a failure to move it aside is an error.
    pub fn open(path: &Path) -> Result<Opened, StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let (doc, moved_aside) = match std::fs::read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (empty(), None),
            Err(e) => return Err(io(e)),
            Ok(bytes) => match serde_json::from_slice::<Map<String, Value>>(&bytes) {
                Ok(doc) if doc.get("version").and_then(Value::as_u64) == Some(VERSION) => {
                    (doc, None)
                }
                other => {
                    let reason = match other {
                        Ok(doc) => format!(
                            "unknown version {}",
                            doc.get("version").unwrap_or(&Value::Null)
                        ),
                        Err(e) => format!("not a valid state file: {e}"),
                    };
                    (empty(), Some((move_aside(path).map_err(io)?, reason)))
                }
            },
        };
        Ok(Opened {
            state: Arc::new(Self {
                path: path.to_owned(),
                doc: Mutex::new(doc),
            }),
            moved_aside,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn doc(&self) -> MutexGuard<'_, Map<String, Value>> {
        // The document is only ever replaced whole, so a poisoned lock still holds a whole one.
        self.doc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decodes section `name` (absent: the default). A section that does not decode means the
    /// file was not written by this daemon: it is moved aside like a corrupt file, the whole
    /// state starts empty, and the reason is returned for the log.
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> (T, Option<String>) {
        let value = self.doc().get(name).cloned();
        let Some(value) = value else {
            return (T::default(), None);
        };
        match serde_json::from_value(value) {
            Ok(v) => (v, None),
            Err(e) => {
                let mut reason = format!("section {name:?} is not valid: {e}");
                match move_aside(&self.path) {
                    Ok(aside) => reason.push_str(&format!("; moved to {}", aside.display())),
                    Err(e) => reason.push_str(&format!("; could not move it aside: {e}")),
                }
                *self.doc() = empty();
                (T::default(), Some(reason))
            }
        }
    }

    /// Replaces section `name` in memory; [`Self::save`] writes it.
    pub fn put<T: Serialize>(&self, name: &str, value: &T) {
        let v = serde_json::to_value(value).unwrap_or(Value::Null);
        self.doc().insert(name.to_owned(), v);
    }

    /// Removes section `name` in memory.
    pub fn remove(&self, name: &str) {
        self.doc().remove(name);
    }

    /// Writes the document atomically, on a blocking thread.
    pub async fn save(&self) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(&*self.doc()).unwrap_or_default();
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || atomic_write(&path, &bytes)).await;
        match written {
            Ok(r) => r.map_err(|source| StateError::Io {
                path: self.path.clone(),
                source,
            }),
            Err(e) => Err(StateError::Interrupted {
                path: self.path.clone(),
                message: e.to_string(),
            }),
        }
    }
}

/// Renames `path` to `<path>.corrupt-<timestamp>`.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{stamp}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[tokio::test]
    async fn sections_round_trip_and_a_corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let s = StateFile::open(&path).unwrap();
        assert!(s.moved_aside.is_none());
        let periods: BTreeSet<String> = ["2026-10".to_owned()].into();
        s.state.put("reports", &periods);
        s.state.save().await.unwrap();
        let again = StateFile::open(&path).unwrap().state;
        assert_eq!(again.section::<BTreeSet<String>>("reports").0, periods);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );

        std::fs::write(&path, b"{ not json").unwrap();
        let bad = StateFile::open(&path).unwrap();
        let (aside, reason) = bad.moved_aside.unwrap();
        assert!(reason.contains("not a valid state file"), "{reason}");
        assert_eq!(std::fs::read(aside).unwrap(), b"{ not json");
        assert!(
            bad.state
                .section::<BTreeSet<String>>("reports")
                .0
                .is_empty()
        );
    }
}
