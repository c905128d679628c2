//! Alert state: each (rule, subject, billing period) is firing or resolved, and each channel
//! has been told so or not. Persisted as JSON, written atomically (temp file, fsync, rename,
//! fsync of the folder), so a restart neither notifies again nor forgets.
//!
//! A notice is *due* for a channel when an alert starts firing, when `repeat_interval` has
//! passed since that channel was last told, and once when it resolves (only to channels that
//! were told it fired). A notice counts as given only once the channel delivered it; an
//! undelivered one stays due and goes out at the next evaluation. Alerts of other periods than
//! the one evaluated (last month's, after the month turned) expire without a notice.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::rules::Firing;
use crate::period::BillingPeriod;

const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("alert state file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a channel was last told about an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Told {
    pub at: DateTime<Utc>,
}

/// One alert: a rule firing (or just resolved) for a subject in a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule's latest firing for the subject (its value and threshold as last seen).
    #[serde(flatten)]
    pub firing: Firing,
    pub since: DateTime<Utc>,
    /// Set when the rule stopped firing; the alert is removed once every channel that was
    /// told it fired has been told it resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Channels told it fired, and when last.
    pub told: BTreeMap<String, Told>,
}

impl Alert {
    pub fn key(&self) -> String {
        key(&self.firing.rule, &self.firing.subject, self.firing.period)
    }

    pub fn is_resolved(&self) -> bool {
        self.resolved_at.is_some()
    }
}

fn key(rule: &str, subject: &str, period: BillingPeriod) -> String {
    format!("{rule}|{subject}|{period}")
}

/// Why a notice goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    Firing,
    Repeat,
    Resolved,
}

/// One alert due on one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub channel: String,
    pub kind: NoticeKind,
    pub alert: Alert,
}

/// The persisted state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub version: u32,
    pub alerts: BTreeMap<String, Alert>,
    /// Billing periods whose monthly report has been delivered.
    #[serde(default)]
    pub reports: BTreeSet<BillingPeriod>,
    /// Channels that already have the report card of a period whose report is not yet
    /// delivered everywhere, so that a retry sends it only to the others.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub report_channels: BTreeMap<BillingPeriod, BTreeSet<String>>,
}

/// What loading found.
#[derive(Debug)]
pub struct Loaded {
    pub state: AlertState,
    /// Set when the file was unreadable or corrupt and was moved aside: where to, and why.
    pub moved_aside: Option<(PathBuf, String)>,
}

impl AlertState {
    /// Reads the state file. Missing: an empty state. Unparsable: the file is renamed to
    /// `<name>.corrupt-<timestamp>` (never overwritten) and an empty state is returned with the
    /// reason; only a failure to move it aside is an error.
    pub fn load(path: &Path) -> Result<Loaded, StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Loaded {
                    state: Self::new(),
                    moved_aside: None,
                });
            }
            Err(e) => return Err(io(e)),
        };
        match serde_json::from_slice::<AlertState>(&bytes) {
            Ok(state) if state.version == VERSION => Ok(Loaded {
                state,
                moved_aside: None,
            }),
            other => {
                let reason = match other {
                    Ok(s) => format!("unknown version {}", s.version),
                    Err(e) => format!("not a valid alert state: {e}"),
                };
                let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
                let mut aside = path.as_os_str().to_owned();
                aside.push(format!(".corrupt-{stamp}"));
                let aside = PathBuf::from(aside);
                std::fs::rename(path, &aside).map_err(io)?;
                Ok(Loaded {
                    state: Self::new(),
                    moved_aside: Some((aside, reason)),
                })
            }
        }
    }

    pub fn new() -> Self {
        Self {
            version: VERSION,
            ..Default::default()
        }
    }

    /// Writes the state atomically: a temp file in the same folder, fsync, rename, fsync of
    /// the folder.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        let json = serde_json::to_vec_pretty(self).expect("alert state serializes");
        tmp.write_all(&json).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Folds one evaluation of `period` into the state and returns the notices now due.
    /// `channels_of(rule)` lists a rule's channels (`None`: the rule is gone from the config);
    /// `repeat_of(rule)` its repeat interval.
    pub fn evaluate(
        &mut self,
        period: BillingPeriod,
        firing: &[Firing],
        now: DateTime<Utc>,
        channels_of: impl Fn(&str) -> Option<Vec<String>>,
        repeat_of: impl Fn(&str) -> Duration,
    ) -> Vec<Notice> {
        // Other periods' alerts and alerts of removed rules expire silently.
        self.alerts
            .retain(|_, a| a.firing.period == period && channels_of(&a.firing.rule).is_some());
        // A channel the rule no longer notifies will not be told it resolved.
        for a in self.alerts.values_mut() {
            let channels = channels_of(&a.firing.rule).unwrap_or_default();
            a.told.retain(|ch, _| channels.contains(ch));
        }
        let mut seen = BTreeSet::new();
        for f in firing {
            let k = key(&f.rule, &f.subject, f.period);
            seen.insert(k.clone());
            let a = self.alerts.entry(k).or_insert_with(|| Alert {
                firing: f.clone(),
                since: now,
                resolved_at: None,
                told: BTreeMap::new(),
            });
            a.firing = f.clone();
            // Firing again before the resolution went out: it simply goes on firing.
            a.resolved_at = None;
        }
        for (k, a) in self.alerts.iter_mut() {
            if !seen.contains(k) && a.resolved_at.is_none() {
                a.resolved_at = Some(now);
            }
        }
        // A resolved alert no channel was told about is done.
        self.alerts
            .retain(|_, a| !(a.is_resolved() && a.told.is_empty()));

        let mut due = Vec::new();
        for a in self.alerts.values() {
            let channels = channels_of(&a.firing.rule).unwrap_or_default();
            let repeat = repeat_of(&a.firing.rule);
            for ch in channels {
                let kind = match (a.is_resolved(), a.told.get(&ch)) {
                    (true, Some(_)) => Some(NoticeKind::Resolved),
                    (true, None) => None,
                    (false, None) => Some(NoticeKind::Firing),
                    (false, Some(t)) => {
                        let next = t.at
                            + chrono::Duration::from_std(repeat).unwrap_or(chrono::Duration::MAX);
                        (now >= next).then_some(NoticeKind::Repeat)
                    }
                };
                if let Some(kind) = kind {
                    due.push(Notice {
                        channel: ch,
                        kind,
                        alert: a.clone(),
                    });
                }
            }
        }
        due
    }

    /// Records that `notice` was delivered at `now`.
    pub fn delivered(&mut self, notice: &Notice, now: DateTime<Utc>) {
        let k = notice.alert.key();
        let Some(a) = self.alerts.get_mut(&k) else {
            return;
        };
        match notice.kind {
            NoticeKind::Firing | NoticeKind::Repeat => {
                a.told.insert(notice.channel.clone(), Told { at: now });
            }
            NoticeKind::Resolved => {
                a.told.remove(&notice.channel);
                if a.told.is_empty() {
                    self.alerts.remove(&k);
                }
            }
        }
    }

    /// Alerts firing now.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values().filter(|a| !a.is_resolved())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::rules::{Measure, Scope, Severity};
    use chrono::TimeZone;

    fn firing(subject: &str) -> Firing {
        Firing {
            rule: "r".into(),
            severity: Severity::Warning,
            scope: Scope::User,
            measure: Measure::OverageUsd,
            subject: subject.into(),
            subject_label: subject.into(),
            period: "2026-10".parse().unwrap(),
            value: 2.0,
            threshold: 1.0,
        }
    }

    #[test]
    fn a_channel_dropped_from_the_rule_is_not_owed_a_resolution() {
        let period = "2026-10".parse().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 10, 20, 0, 0, 0).unwrap();
        let repeat = |_: &str| Duration::from_secs(3600);
        let mut s = AlertState::new();
        let both = |_: &str| Some(vec!["a".to_owned(), "b".to_owned()]);
        let due = s.evaluate(period, &[firing("x")], t, both, repeat);
        assert_eq!(due.len(), 2);
        for n in &due {
            s.delivered(n, t);
        }
        // Channel b leaves the rule, then the alert resolves: only a is told.
        let only_a = |_: &str| Some(vec!["a".to_owned()]);
        let due = s.evaluate(period, &[], t, only_a, repeat);
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].channel.as_str(), due[0].kind),
            ("a", NoticeKind::Resolved)
        );
        s.delivered(&due[0], t);
        assert!(s.alerts.is_empty(), "nothing left owed");
        // The state file keeps the flat shape.
        let json = serde_json::to_value(&AlertState {
            alerts: [(
                "k".into(),
                Alert {
                    firing: firing("y"),
                    since: t,
                    resolved_at: None,
                    told: BTreeMap::new(),
                },
            )]
            .into(),
            ..AlertState::new()
        })
        .unwrap();
        assert_eq!(json["alerts"]["k"]["rule"], "r");
        assert_eq!(json["alerts"]["k"]["subject"], "y");
    }
}
