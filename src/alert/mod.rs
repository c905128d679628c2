//! Threshold alerts: rules evaluated on each snapshot, a persisted firing/resolved state, and
//! delivery to Feishu or a generic webhook, grouped into one message per channel.

pub mod budgets;
pub mod notify;
pub mod rules;
pub mod state;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};

use crate::allocation::savings::SavingsSettings;
use crate::allocation::{PlanTable, Snapshot};
use notify::{Channel, ChannelConfig, ChannelKind, NotifyError};
use rules::{BudgetLimits, Rule};
use state::{AlertState, Notice, StateError};

/// `[alerts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// Where the alert state (and which monthly reports went out) persists.
    pub state_file: PathBuf,
    /// A firing alert is notified again after this long.
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// Linked from every card, when set.
    pub dashboard_url: String,
    /// `[[alerts.rules]]`; when none are given, the default rules apply.
    pub rules: Vec<Rule>,
    /// `[[alerts.channels]]`; without channels, alerts are not evaluated.
    pub channels: Vec<ChannelConfig>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            state_file: PathBuf::from("kiro-cost-exporter-state.json"),
            repeat_interval: Duration::from_secs(24 * 3600),
            dashboard_url: String::new(),
            rules: rules::default_rules(),
            channels: Vec::new(),
        }
    }
}

impl AlertSettings {
    /// Checks values (no I/O); errors say which part is wrong.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let key = |k: &str| format!("alerts.{k}");
        if self.repeat_interval < Duration::from_secs(60) {
            return Err((key("repeat_interval"), "must be at least 1m".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            r.validate()
                .map_err(|m| (format!("alerts.rules[{i}]"), m))?;
            if !names.insert(&r.name) {
                return Err((
                    format!("alerts.rules[{i}]"),
                    format!("rule name {:?} is used twice", r.name),
                ));
            }
            for ch in &r.channels {
                if !self.channels.iter().any(|c| &c.name == ch) {
                    return Err((
                        format!("alerts.rules[{i}].channels"),
                        format!("no channel named {ch:?} in [[alerts.channels]]"),
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.channels.iter().enumerate() {
            c.validate()
                .map_err(|m| (format!("alerts.channels[{i}]"), m))?;
            if !names.insert(&c.name) {
                return Err((
                    format!("alerts.channels[{i}].name"),
                    format!("channel name {:?} is used twice", c.name),
                ));
            }
        }
        if self.state_file.as_os_str().is_empty() {
            return Err((key("state_file"), "must name a file".into()));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
}

/// What one evaluation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    pub firing: usize,
    pub due: usize,
    pub delivered: usize,
    pub undelivered: usize,
    pub messages: usize,
}

/// Rules, state and channels, evaluated after each refresh.
pub struct AlertEngine {
    settings: AlertSettings,
    channels: Vec<Channel>,
    state: AlertState,
    plans: PlanTable,
    savings: SavingsSettings,
    budgets: BudgetLimits,
}

impl AlertEngine {
    /// Sets up the channels (reading their secrets through `env`) and loads the state; a
    /// corrupt state file is moved aside and reported in the log.
    pub fn new(
        settings: AlertSettings,
        plans: PlanTable,
        savings: SavingsSettings,
        budgets: BudgetLimits,
        env: &dyn Fn(&str) -> Option<String>,
        counter: IntCounterVec,
    ) -> Result<Self, AlertError> {
        let channels = settings
            .channels
            .iter()
            .map(|c| Channel::new(c.clone(), env, counter.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let loaded = AlertState::load(&settings.state_file)?;
        if let Some((aside, reason)) = &loaded.moved_aside {
            tracing::error!(
                file = %settings.state_file.display(),
                moved_to = %aside.display(),
                "alert state file unreadable ({reason}); moved aside, starting with no alerts"
            );
        }
        Ok(Self {
            settings,
            channels,
            state: loaded.state,
            plans,
            savings,
            budgets,
        })
    }

    pub fn state(&self) -> &AlertState {
        &self.state
    }

    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    pub fn settings(&self) -> &AlertSettings {
        &self.settings
    }

    /// Saves the state (atomically).
    pub fn save(&self) -> Result<(), AlertError> {
        Ok(self.state.save(&self.settings.state_file)?)
    }

    /// Mutable state, saved by the caller (the report records its deliveries here).
    pub fn state_mut(&mut self) -> &mut AlertState {
        &mut self.state
    }

    /// Evaluates the rules on the snapshot's current period, sends what is due, and saves.
    pub async fn evaluate(
        &mut self,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
    ) -> Result<Round, AlertError> {
        let Some(current) = snapshot.current() else {
            return Ok(Round::default());
        };
        let firing = rules::evaluate(
            &self.settings.rules,
            current,
            &self.plans,
            &self.savings,
            &self.budgets,
            now,
        );
        let all: Vec<String> = self.channels.iter().map(|c| c.name().to_owned()).collect();
        let rules = &self.settings.rules;
        let default_repeat = self.settings.repeat_interval;
        let due = self.state.evaluate(
            current.period,
            &firing,
            now,
            |name| {
                rules.iter().find(|r| r.name == name).map(|r| {
                    if r.channels.is_empty() {
                        all.clone()
                    } else {
                        r.channels.clone()
                    }
                })
            },
            |name| {
                rules
                    .iter()
                    .find(|r| r.name == name)
                    .and_then(|r| r.repeat_interval)
                    .unwrap_or(default_repeat)
            },
        );
        let mut round = Round {
            firing: firing.len(),
            due: due.len(),
            ..Round::default()
        };
        for channel in &self.channels {
            let mine: Vec<&Notice> = due.iter().filter(|n| n.channel == channel.name()).collect();
            if mine.is_empty() {
                continue;
            }
            let batches: Vec<(serde_json::Value, Vec<&Notice>)> = match channel.config.kind {
                ChannelKind::Feishu => {
                    let cards = notify::feishu_cards(
                        &mine,
                        &self.settings.dashboard_url,
                        channel.config.max_message_bytes,
                    );
                    // Cards keep the notices' order; hand each card its own notices.
                    split_like(&mine, &cards)
                }
                ChannelKind::Webhook => vec![(
                    notify::webhook_payload(channel.name(), &mine, &self.settings.dashboard_url),
                    mine.clone(),
                )],
            };
            for (body, notices) in batches {
                round.messages += 1;
                match channel.send(&body).await {
                    Ok(()) => {
                        for n in &notices {
                            self.state.delivered(n, now);
                        }
                        round.delivered += notices.len();
                    }
                    Err(e) => {
                        round.undelivered += notices.len();
                        tracing::error!(
                            channel = channel.name(),
                            notices = notices.len(),
                            "notification failed; it stays due for the next evaluation: {e}"
                        );
                    }
                }
                // Saved after each message, so a crash never sends a delivered notice twice.
                self.state.save(&self.settings.state_file)?;
            }
        }
        self.state.save(&self.settings.state_file)?;
        Ok(round)
    }
}

/// Pairs each card with the notices it shows (cards hold consecutive runs of notices).
fn split_like<'a>(
    notices: &[&'a Notice],
    cards: &[serde_json::Value],
) -> Vec<(serde_json::Value, Vec<&'a Notice>)> {
    let mut out = Vec::new();
    let mut rest = notices;
    for card in cards {
        let shown = card["card"]["body"]["elements"]
            .as_array()
            .map_or(0, |e| e.iter().filter(|e| e["tag"] == "markdown").count());
        let (mine, tail) = rest.split_at(shown.min(rest.len()));
        out.push((card.clone(), mine.to_vec()));
        rest = tail;
    }
    out
}
