//! AWS Budgets: one monthly cost budget per cost center (and one for all of Kiro), declared in
//! config and reconciled like a plan: describe the budgets this daemon owns (by name prefix),
//! create the missing, update those whose limit, filter or notifications differ, and delete
//! owned budgets no longer declared only when `prune` is on. A budget without the prefix is
//! never touched.

use crate::failure::FailureKind;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_budgets::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_budgets::types::{
    Budget, BudgetType, ComparisonOperator, Dimension, Expression, ExpressionDimensionValues,
    Notification, NotificationType, Spend, Subscriber, SubscriptionType, TagValues, ThresholdType,
    TimeUnit,
};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::BudgetLimits;
use super::{Delivery, Sink, SinkError};
use crate::config_error::ConfigError;
use crate::snapshot::Snapshot;
pub use crate::telemetry::BudgetReading;
use crate::telemetry::Telemetry;

mod plan;
mod reconciler;
mod sink;

pub use plan::{Change, Current, Desired};
use plan::{NotificationKey, notification_key, spec_notification};
pub use reconciler::{BudgetError, Reconciler};
pub use sink::BudgetsSink;

/// The IAM actions keeping budgets takes: every Describe* call is `budgets:ViewBudget`, every
/// Create/Update/Delete `budgets:ModifyBudget` (`deploy/iam/budgets.json`).
pub const IAM_ACTIONS: &[&str] = &["budgets:ViewBudget", "budgets:ModifyBudget"];

/// The `cost_center` label of the budget for all of Kiro.
pub const TOTAL_LABEL: &str = "(all)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Kind {
    Actual,
    Forecasted,
}

/// A notification: at `threshold_percent` of the limit, actual or forecasted spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSpec {
    #[serde(rename = "type")]
    pub kind: Kind,
    pub threshold_percent: f64,
}

/// `[budgets.subscribers]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Subscribers {
    /// At most one SNS topic ARN.
    pub sns: Vec<String>,
    /// At most ten addresses.
    pub emails: Vec<String>,
}

/// `[budgets]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetSettings {
    /// Reconcile budgets from `serve` (and allow `budgets sync`).
    pub enabled: bool,
    /// The payer (or member) account that holds the budgets.
    pub account_id: String,
    /// Budgets whose name starts with this are owned by the daemon; no other is touched.
    pub name_prefix: String,
    /// Limit for cost centers not listed in `cost_centers` (with `auto_cost_centers`, and for
    /// forecast rules relative to a budget).
    pub default_limit_usd: Option<Decimal>,
    /// Cost center → monthly limit in USD.
    pub cost_centers: BTreeMap<String, Decimal>,
    /// A budget for all of Kiro.
    pub total_limit_usd: Option<Decimal>,
    /// Cost centers seen in the data but not listed get `default_limit_usd`.
    pub auto_cost_centers: bool,
    /// Delete owned budgets whose cost center left the config.
    pub prune: bool,
    /// Service filter value for Kiro in Budgets.
    pub service: String,
    /// Cost allocation tag that holds the cost center (activate it in the billing console).
    pub tag_key: String,
    pub notifications: Vec<NotificationSpec>,
    pub subscribers: Subscribers,
    /// `serve` reconciles at most once per this interval (after a refresh).
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            account_id: String::new(),
            name_prefix: "kiro-".into(),
            default_limit_usd: None,
            cost_centers: BTreeMap::new(),
            total_limit_usd: None,
            auto_cost_centers: false,
            prune: false,
            service: "Kiro".into(),
            tag_key: "userAttribute/costCenter".into(),
            notifications: vec![
                NotificationSpec {
                    kind: Kind::Actual,
                    threshold_percent: 80.0,
                },
                NotificationSpec {
                    kind: Kind::Actual,
                    threshold_percent: 100.0,
                },
                NotificationSpec {
                    kind: Kind::Forecasted,
                    threshold_percent: 100.0,
                },
            ],
            subscribers: Subscribers::default(),
            sync_interval: Duration::from_secs(3600),
        }
    }
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e.chars().any(|c| c.is_whitespace() || c == ',')
        && !domain.contains('@')
}

fn valid_sns_arn(a: &str) -> bool {
    let parts: Vec<&str> = a.split(':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "sns"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && !parts[5].is_empty()
}

impl BudgetSettings {
    /// Checks values (no I/O); errors name the key under `budgets`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("budgets.{k}");
        let positive = |d: &Decimal| !d.is_sign_negative() && !d.is_zero();
        for (cc, limit) in &self.cost_centers {
            if !positive(limit) {
                return Err(ConfigError::key(
                    &key(&format!("cost_centers.{cc}")),
                    "must be a positive amount in USD",
                ));
            }
        }
        for (k, v) in [
            ("default_limit_usd", &self.default_limit_usd),
            ("total_limit_usd", &self.total_limit_usd),
        ] {
            if v.as_ref().is_some_and(|d| !positive(d)) {
                return Err(ConfigError::key(
                    &key(k),
                    "must be a positive amount in USD",
                ));
            }
        }
        if self.enabled
            && !(self.account_id.len() == 12 && self.account_id.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(ConfigError::key(
                &key("account_id"),
                "must be a 12-digit AWS account id",
            ));
        }
        let prefix_ok = !self.name_prefix.is_empty()
            && self.name_prefix.len() <= 50
            && !self.name_prefix.contains([':', '\\']);
        if !prefix_ok {
            return Err(ConfigError::key(
                &key("name_prefix"),
                "must be 1-50 characters without ':' or '\\'",
            ));
        }
        if self.notifications.len() > 10 {
            return Err(ConfigError::key(
                &key("notifications"),
                "at most 10 per budget",
            ));
        }
        for (i, n) in self.notifications.iter().enumerate() {
            if !(n.threshold_percent > 0.0 && n.threshold_percent <= 1000.0) {
                return Err(ConfigError::key(
                    &key(&format!("notifications[{i}].threshold_percent")),
                    "must be above 0 and at most 1000 (%)",
                ));
            }
        }
        if self.subscribers.sns.len() > 1 {
            return Err(ConfigError::key(
                &key("subscribers.sns"),
                "at most one SNS topic",
            ));
        }
        if self.subscribers.emails.len() > 10 {
            return Err(ConfigError::key(
                &key("subscribers.emails"),
                "at most 10 addresses",
            ));
        }
        for (i, a) in self.subscribers.sns.iter().enumerate() {
            if !valid_sns_arn(a) {
                return Err(ConfigError::key(
                    &key(&format!("subscribers.sns[{i}]")),
                    format!("{a:?} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC)"),
                ));
            }
        }
        for (i, e) in self.subscribers.emails.iter().enumerate() {
            if !valid_email(e) {
                return Err(ConfigError::key(
                    &key(&format!("subscribers.emails[{i}]")),
                    format!("{e:?} is not an e-mail address"),
                ));
            }
        }
        if !self.notifications.is_empty()
            && self.subscribers.sns.is_empty()
            && self.subscribers.emails.is_empty()
            && self.enabled
        {
            return Err(ConfigError::key(
                &key("subscribers"),
                "notifications need at least one SNS topic or e-mail address",
            ));
        }
        if self.sync_interval < Duration::from_secs(60) {
            return Err(ConfigError::key(
                &key("sync_interval"),
                "must be at least 1m",
            ));
        }
        Ok(())
    }

    /// The sink, when `budgets.enabled`.
    pub async fn build(&self, cx: &super::SinkContext) -> super::Built {
        if !self.enabled {
            return Ok(None);
        }
        let reconciler = Reconciler::new(cx.aws.config().await, self.clone());
        Ok(Some(Box::new(BudgetsSink::new(
            reconciler,
            cx.telemetry.clone(),
        ))))
    }

    /// The limits forecast rules compare with.
    pub fn limits(&self) -> BudgetLimits {
        BudgetLimits {
            default_limit_usd: self.default_limit_usd,
            cost_centers: self.cost_centers.clone(),
        }
    }

    /// The budgets the config declares, given the cost centers seen in the data.
    pub fn desired<'a>(&self, seen: impl IntoIterator<Item = &'a str>) -> Vec<Desired> {
        let mut centers: BTreeMap<String, Decimal> = self.cost_centers.clone();
        if self.auto_cost_centers
            && let Some(default) = self.default_limit_usd
        {
            for cc in seen {
                if !cc.is_empty() {
                    centers.entry(cc.to_owned()).or_insert(default);
                }
            }
        }
        let mut out: Vec<Desired> = centers
            .into_iter()
            .map(|(cc, limit)| Desired {
                name: self.budget_name(&cc),
                cost_center: Some(cc),
                limit,
            })
            .collect();
        if let Some(limit) = self.total_limit_usd {
            out.push(Desired {
                name: format!("{}total", self.name_prefix),
                cost_center: None,
                limit,
            });
        }
        out
    }

    /// `prefix + cost center`, with the characters Budgets refuses replaced, at most 100 long.
    pub fn budget_name(&self, cost_center: &str) -> String {
        let name: String = format!("{}cc-{cost_center}", self.name_prefix)
            .chars()
            .map(|c| if c == ':' || c == '\\' { '_' } else { c })
            .collect();
        name.chars().take(100).collect()
    }

    fn filter(&self, cost_center: Option<&str>) -> Expression {
        let service = Expression::builder()
            .dimensions(
                ExpressionDimensionValues::builder()
                    .key(Dimension::Service)
                    .values(&self.service)
                    .build()
                    .expect("key and values set"),
            )
            .build();
        match cost_center {
            None => service,
            Some(cc) => Expression::builder()
                .and(service)
                .and(
                    Expression::builder()
                        .tags(TagValues::builder().key(&self.tag_key).values(cc).build())
                        .build(),
                )
                .build(),
        }
    }

    fn subscriber_list(&self) -> Vec<Subscriber> {
        let sub = |t: SubscriptionType, a: &str| {
            Subscriber::builder()
                .subscription_type(t)
                .address(a)
                .build()
                .expect("type and address set")
        };
        self.subscribers
            .sns
            .iter()
            .map(|a| sub(SubscriptionType::Sns, a))
            .chain(
                self.subscribers
                    .emails
                    .iter()
                    .map(|a| sub(SubscriptionType::Email, a)),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_arns() {
        assert!(valid_email("finops@example.com"));
        assert!(!valid_email("finops@example"));
        assert!(!valid_email("fin ops@example.com"));
        assert!(!valid_email("@example.com"));
        assert!(valid_sns_arn("arn:aws:sns:us-east-1:123456789012:kiro"));
        assert!(!valid_sns_arn("arn:aws:sqs:us-east-1:123456789012:kiro"));
        assert!(!valid_sns_arn("arn:aws:sns:us-east-1:1234:kiro"));
    }

    #[test]
    fn names_are_prefixed_and_safe() {
        let s = BudgetSettings::default();
        assert_eq!(s.budget_name("platform"), "kiro-cc-platform");
        assert_eq!(s.budget_name("a:b\\c"), "kiro-cc-a_b_c");
        assert_eq!(s.budget_name(&"x".repeat(200)).len(), 100);
    }
}
