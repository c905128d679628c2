//! Alert state: each (rule, subject, billing period) is firing or resolved, and each channel
//! has been told so or not. Persisted in the state file's `alerts` section ([`crate::state`]),
//! so a restart neither notifies again nor forgets.
//!
//! A notice is *due* for a channel when an alert starts firing, when `repeat_interval` has
//! passed since that channel was last told, and once when it resolves (only to channels that
//! were told it fired). A notice counts as given only once the channel delivered it; an
//! undelivered one stays due and goes out at the next evaluation. Alerts of other periods than
//! the one evaluated (last month's, after the month turned) expire without a notice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::rules::Firing;
use crate::period::BillingPeriod;

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

/// The alerts, keyed by rule, subject and period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertState {
    pub alerts: BTreeMap<String, Alert>,
}

impl AlertState {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::alerts::rules::{Measure, Scope, Severity};
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
        let mut s = AlertState::default();
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
        let alerts: BTreeMap<String, Alert> = [(
            "k".into(),
            Alert {
                firing: firing("y"),
                since: t,
                resolved_at: None,
                told: BTreeMap::new(),
            },
        )]
        .into();
        let json = serde_json::to_value(&alerts).unwrap();
        assert_eq!(json["k"]["rule"], "r");
        assert_eq!(json["k"]["subject"], "y");
    }
}
