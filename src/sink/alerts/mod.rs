//! Threshold alerts: rules evaluated on each snapshot, a persisted firing/resolved state, and
//! delivery to Feishu or a generic webhook, grouped into one message per channel.

pub mod cards;
pub mod rules;
pub mod state;

use crate::failure::FailureKind;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::BudgetLimits;
use super::{Delivery, Sink, SinkError};
use crate::config_error::ConfigError;
use crate::notify::{Channel, ChannelConfig, ChannelKind};
use crate::snapshot::Snapshot;
use crate::state::StateFile;
use crate::telemetry::Telemetry;
use rules::Rule;
use state::{AlertState, Notice};

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
    /// Whether alerts are on: at least one channel to notify.
    pub fn is_on(&self) -> bool {
        !self.channels.is_empty()
    }

    /// The sink, when a channel is configured.
    pub async fn build(&self, cx: &crate::sink::SinkContext) -> crate::sink::Built {
        if !self.is_on() {
            return Ok(None);
        }
        let file = cx
            .state_file
            .clone()
            .ok_or(crate::sink::BuildError::NoStateFile("alerts"))?;
        tracing::info!(
            channels = cx.channels.len(),
            rules = self.rules.len(),
            state_file = %self.state_file.display(),
            "alerts enabled"
        );
        Ok(Some(Box::new(AlertsSink::new(
            self.clone(),
            cx.budgets.clone(),
            cx.channels.clone(),
            file,
            cx.telemetry.clone(),
        ))))
    }

    /// Checks values (no I/O); errors name the key under `alerts`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("alerts.{k}");
        if self.repeat_interval < Duration::from_secs(60) {
            return Err(ConfigError::key(
                &key("repeat_interval"),
                "must be at least 1m",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("alerts.rules[{i}]");
            r.validate().map_err(|m| ConfigError::key(&at, m))?;
            if !names.insert(&r.name) {
                return Err(ConfigError::key(
                    &at,
                    format!("rule name {:?} is used twice", r.name),
                ));
            }
            for ch in &r.channels {
                if !self.channels.iter().any(|c| &c.name == ch) {
                    return Err(ConfigError::key(
                        &format!("{at}.channels"),
                        format!("no channel named {ch:?} in [[alerts.channels]]"),
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.channels.iter().enumerate() {
            c.validate()
                .map_err(|m| ConfigError::key(&format!("alerts.channels[{i}]"), m))?;
            if !names.insert(&c.name) {
                return Err(ConfigError::key(
                    &format!("alerts.channels[{i}].name"),
                    format!("channel name {:?} is used twice", c.name),
                ));
            }
        }
        if self.state_file.as_os_str().is_empty() {
            return Err(ConfigError::key(&key("state_file"), "must name a file"));
        }
        Ok(())
    }
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

/// The state file's section that holds the alerts.
const SECTION: &str = "alerts";

/// Rules, their state and the channels they notify, evaluated on each snapshot.
pub struct AlertsSink {
    settings: AlertSettings,
    channels: Vec<Arc<Channel>>,
    state: AlertState,
    file: Arc<StateFile>,
    budgets: BudgetLimits,
    telemetry: Arc<Telemetry>,
}

impl AlertsSink {
    /// The alerts of `file`'s `alerts` section; `channels` are shared with the report.
    pub fn new(
        settings: AlertSettings,
        budgets: BudgetLimits,
        channels: Vec<Arc<Channel>>,
        file: Arc<StateFile>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let (alerts, problem) = file.section(SECTION);
        if let Some(reason) = problem {
            tracing::error!(file = %file.path().display(), "state file unusable ({reason}); starting with no alerts");
        }
        Self {
            settings,
            channels,
            state: AlertState { alerts },
            file,
            budgets,
            telemetry,
        }
    }

    pub fn state(&self) -> &AlertState {
        &self.state
    }

    pub fn channels(&self) -> &[Arc<Channel>] {
        &self.channels
    }

    /// Records the state in the file and writes it.
    async fn save(&self) -> Result<(), SinkError> {
        self.file.put(SECTION, &self.state.alerts);
        self.file
            .save()
            .await
            .map_err(|e| SinkError::new(FailureKind::State, e))
    }

    /// Evaluates the rules on the snapshot's current period, sends what is due, and saves
    /// after every message, so a crash never sends a delivered notice twice.
    pub async fn evaluate(
        &mut self,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
    ) -> Result<Round, SinkError> {
        let Some(current) = snapshot.current() else {
            return Ok(Round::default());
        };
        let mut firing = rules::evaluate(&self.settings.rules, current, &self.budgets);
        rules::name_users(&mut firing, &snapshot.people);
        let all: Vec<String> = self.channels.iter().map(|c| c.name().to_owned()).collect();
        let rules = &self.settings.rules;
        let default_repeat = self.settings.repeat_interval;
        let due = self.state.evaluate(
            current.allocation.period,
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
                ChannelKind::Feishu => cards::feishu_cards(
                    &mine,
                    &self.settings.dashboard_url,
                    channel.config.max_message_bytes,
                ),
                ChannelKind::Webhook => vec![(
                    cards::webhook_payload(channel.name(), &mine, &self.settings.dashboard_url),
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
                self.save().await?;
            }
        }
        self.save().await?;
        Ok(round)
    }
}

#[async_trait]
impl Sink for AlertsSink {
    fn name(&self) -> &'static str {
        "alerts"
    }

    async fn deliver(
        &mut self,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
    ) -> Result<Delivery, SinkError> {
        let evaluated = self.evaluate(snapshot, now).await;
        // One save counted per evaluation, whatever else failed.
        self.telemetry
            .record_state_save(!matches!(&evaluated, Err(e) if e.kind == FailureKind::State));
        match evaluated {
            Ok(round) => {
                if round.due > 0 || round.firing > 0 {
                    tracing::info!(
                        firing = round.firing,
                        due = round.due,
                        delivered = round.delivered,
                        messages = round.messages,
                        "alerts evaluated"
                    );
                }
                if round.undelivered > 0 {
                    return Err(SinkError {
                        kind: FailureKind::Delivery,
                        message: format!(
                            "{} of {} notices not delivered; they stay due for the next evaluation",
                            round.undelivered,
                            round.undelivered + round.delivered
                        ),
                    });
                }
                Ok(Delivery::Done)
            }
            Err(e) if e.kind == FailureKind::State => Err(SinkError {
                kind: e.kind,
                message: format!(
                    "{}; what was delivered stays recorded in memory and is saved at the next evaluation",
                    e.message
                ),
            }),
            Err(e) => Err(e),
        }
    }
}
