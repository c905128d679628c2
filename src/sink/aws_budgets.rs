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

/// A budget the config declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub name: String,
    /// `None`: all of Kiro.
    pub cost_center: Option<String>,
    pub limit: Decimal,
}

/// The comparable part of a notification and its subscribers.
type NotificationKey = (String, String, String);

fn notification_key(n: &Notification) -> NotificationKey {
    (
        n.notification_type().as_str().to_owned(),
        n.comparison_operator().as_str().to_owned(),
        format!("{}", n.threshold()),
    )
}

fn spec_notification(n: &NotificationSpec) -> Notification {
    Notification::builder()
        .notification_type(match n.kind {
            Kind::Actual => NotificationType::Actual,
            Kind::Forecasted => NotificationType::Forecasted,
        })
        .comparison_operator(ComparisonOperator::GreaterThan)
        .threshold(n.threshold_percent)
        .threshold_type(ThresholdType::Percentage)
        .build()
        .expect("type, operator and threshold set")
}

/// What an owned budget looks like now.
#[derive(Debug, Clone)]
pub struct Current {
    pub budget: Budget,
    /// Notification → its subscribers (type, address), sorted.
    pub notifications: BTreeMap<NotificationKey, (Notification, Vec<(String, String)>)>,
}

/// One change of a plan.
#[derive(Debug, Clone)]
pub enum Change {
    Create(Desired),
    Update {
        desired: Desired,
        limit_from: Option<String>,
        filter_changed: bool,
    },
    AddNotification {
        budget: String,
        notification: Notification,
    },
    RemoveNotification {
        budget: String,
        notification: Notification,
    },
    Delete {
        budget: String,
    },
}

fn describe_notification(n: &Notification) -> String {
    format!("{} > {}%", n.notification_type().as_str(), n.threshold())
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = |d: &Desired| {
            d.cost_center.as_ref().map_or_else(
                || "all of Kiro".to_owned(),
                |cc| format!("cost center {cc}"),
            )
        };
        match self {
            Self::Create(d) => write!(
                f,
                "+ create {}: {} USD a month, {}",
                d.name,
                d.limit,
                scope(d)
            ),
            Self::Update {
                desired,
                limit_from,
                filter_changed,
            } => {
                write!(f, "~ update {}:", desired.name)?;
                if let Some(from) = limit_from {
                    write!(f, " limit {from} -> {} USD", desired.limit)?;
                }
                if *filter_changed {
                    write!(f, " filter -> Kiro, {}", scope(desired))?;
                }
                Ok(())
            }
            Self::AddNotification {
                budget,
                notification,
            } => write!(
                f,
                "+ notify {budget}: {}",
                describe_notification(notification)
            ),
            Self::RemoveNotification {
                budget,
                notification,
            } => write!(
                f,
                "- notify {budget}: {}",
                describe_notification(notification)
            ),
            Self::Delete { budget } => write!(f, "- delete {budget} (prune)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("AWS Budgets {operation}: {message}")]
pub struct BudgetError {
    pub operation: &'static str,
    pub message: String,
}

fn sdk<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> BudgetError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    move |e| BudgetError {
        operation,
        message: crate::aws::error_message(&e),
    }
}

fn limit_of(b: &Budget) -> Option<Decimal> {
    b.budget_limit().and_then(|s| s.amount().parse().ok())
}

fn amount(s: Option<&Spend>) -> Option<f64> {
    s.and_then(|s| s.amount().parse::<f64>().ok())
}

/// Reconciles budgets with AWS Budgets.
pub struct Reconciler {
    client: aws_sdk_budgets::Client,
    settings: BudgetSettings,
}

impl Reconciler {
    pub fn new(shared: &aws_config::SdkConfig, settings: BudgetSettings) -> Self {
        Self {
            client: aws_sdk_budgets::Client::new(shared),
            settings,
        }
    }

    pub fn settings(&self) -> &BudgetSettings {
        &self.settings
    }

    /// The owned budgets, with their notifications and subscribers.
    pub async fn current(&self) -> Result<BTreeMap<String, Current>, BudgetError> {
        let account = &self.settings.account_id;
        let mut budgets = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .describe_budgets()
                .account_id(account)
                // Without it, FilterExpression is left out of the answer.
                .show_filter_expression(true)
                .set_next_token(token)
                .send()
                .await
                .map_err(sdk("DescribeBudgets"))?;
            budgets.extend(page.budgets().iter().cloned());
            token = page
                .next_token()
                .map(str::to_owned)
                .filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        let mut out = BTreeMap::new();
        for b in budgets
            .into_iter()
            .filter(|b| b.budget_name().starts_with(&self.settings.name_prefix))
        {
            let name = b.budget_name().to_owned();
            let notes = self
                .client
                .describe_notifications_for_budget()
                .account_id(account)
                .budget_name(&name)
                .send()
                .await
                .map_err(sdk("DescribeNotificationsForBudget"))?;
            let mut notifications = BTreeMap::new();
            for n in notes.notifications() {
                let subs = self
                    .client
                    .describe_subscribers_for_notification()
                    .account_id(account)
                    .budget_name(&name)
                    .notification(n.clone())
                    .send()
                    .await
                    .map_err(sdk("DescribeSubscribersForNotification"))?;
                let mut list: Vec<(String, String)> = subs
                    .subscribers()
                    .iter()
                    .map(|s| {
                        (
                            s.subscription_type().as_str().to_owned(),
                            s.address().to_owned(),
                        )
                    })
                    .collect();
                list.sort();
                notifications.insert(notification_key(n), (n.clone(), list));
            }
            out.insert(
                name,
                Current {
                    budget: b,
                    notifications,
                },
            );
        }
        Ok(out)
    }

    /// The changes that bring AWS in line with `desired`.
    pub fn plan(&self, desired: &[Desired], current: &BTreeMap<String, Current>) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut wanted_subs: Vec<(String, String)> = self
            .settings
            .subscriber_list()
            .iter()
            .map(|s| {
                (
                    s.subscription_type().as_str().to_owned(),
                    s.address().to_owned(),
                )
            })
            .collect();
        wanted_subs.sort();
        let wanted_notes: BTreeMap<NotificationKey, Notification> = self
            .settings
            .notifications
            .iter()
            .map(spec_notification)
            .map(|n| (notification_key(&n), n))
            .collect();
        for d in desired {
            let Some(cur) = current.get(&d.name) else {
                changes.push(Change::Create(d.clone()));
                for n in wanted_notes.values() {
                    if !wanted_subs.is_empty() {
                        changes.push(Change::AddNotification {
                            budget: d.name.clone(),
                            notification: n.clone(),
                        });
                    }
                }
                continue;
            };
            let limit = limit_of(&cur.budget);
            let want_filter = self.settings.filter(d.cost_center.as_deref());
            let filter_changed = cur.budget.filter_expression() != Some(&want_filter);
            let limit_changed = limit != Some(d.limit);
            if limit_changed || filter_changed {
                changes.push(Change::Update {
                    desired: d.clone(),
                    limit_from: limit_changed
                        .then(|| limit.map_or_else(|| "none".to_owned(), |l| l.to_string())),
                    filter_changed,
                });
            }
            for (k, (n, subs)) in &cur.notifications {
                if !wanted_notes.contains_key(k) || *subs != wanted_subs {
                    changes.push(Change::RemoveNotification {
                        budget: d.name.clone(),
                        notification: n.clone(),
                    });
                }
            }
            for (k, n) in &wanted_notes {
                let same = cur
                    .notifications
                    .get(k)
                    .is_some_and(|(_, subs)| *subs == wanted_subs);
                if !same && !wanted_subs.is_empty() {
                    changes.push(Change::AddNotification {
                        budget: d.name.clone(),
                        notification: n.clone(),
                    });
                }
            }
        }
        if self.settings.prune {
            let declared: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
            for name in current.keys() {
                if !declared.contains(name.as_str()) {
                    changes.push(Change::Delete {
                        budget: name.clone(),
                    });
                }
            }
        }
        changes
    }

    fn budget(&self, d: &Desired) -> Budget {
        Budget::builder()
            .budget_name(&d.name)
            .budget_type(BudgetType::Cost)
            .time_unit(TimeUnit::Monthly)
            .budget_limit(
                Spend::builder()
                    .amount(d.limit.to_string())
                    .unit("USD")
                    .build()
                    .expect("amount and unit set"),
            )
            .filter_expression(self.settings.filter(d.cost_center.as_deref()))
            .build()
            .expect("name, type and time unit set")
    }

    /// Applies a plan, in order.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), BudgetError> {
        let account = &self.settings.account_id;
        for c in changes {
            match c {
                Change::Create(d) => {
                    let created = self
                        .client
                        .create_budget()
                        .account_id(account)
                        .budget(self.budget(d))
                        .send()
                        .await;
                    match created {
                        Ok(_) => {}
                        // Another exporter of the same bill (an HA pair) created it since the
                        // listing: make it what this configuration says.
                        Err(e) if e.code() == Some("DuplicateRecordException") => {
                            self.client
                                .update_budget()
                                .account_id(account)
                                .new_budget(self.budget(d))
                                .send()
                                .await
                                .map_err(sdk("UpdateBudget"))?;
                        }
                        Err(e) => return Err(sdk("CreateBudget")(e)),
                    }
                }
                Change::Update { desired, .. } => {
                    self.client
                        .update_budget()
                        .account_id(account)
                        .new_budget(self.budget(desired))
                        .send()
                        .await
                        .map_err(sdk("UpdateBudget"))?;
                }
                Change::AddNotification {
                    budget,
                    notification,
                } => {
                    let added = self
                        .client
                        .create_notification()
                        .account_id(account)
                        .budget_name(budget)
                        .notification(notification.clone())
                        .set_subscribers(Some(self.settings.subscriber_list()))
                        .send()
                        .await;
                    match added {
                        // Already there (added by another exporter of the same bill).
                        Ok(_) => {}
                        Err(e) if e.code() == Some("DuplicateRecordException") => {}
                        Err(e) => return Err(sdk("CreateNotification")(e)),
                    }
                }
                Change::RemoveNotification {
                    budget,
                    notification,
                } => {
                    self.client
                        .delete_notification()
                        .account_id(account)
                        .budget_name(budget)
                        .notification(notification.clone())
                        .send()
                        .await
                        .map_err(sdk("DeleteNotification"))?;
                }
                Change::Delete { budget } => {
                    self.client
                        .delete_budget()
                        .account_id(account)
                        .budget_name(budget)
                        .send()
                        .await
                        .map_err(sdk("DeleteBudget"))?;
                }
            }
        }
        Ok(())
    }

    /// Describes, plans and (unless `dry_run`) applies; returns the plan.
    pub async fn sync<'a>(
        &self,
        seen: impl IntoIterator<Item = &'a str>,
        dry_run: bool,
    ) -> Result<Vec<Change>, BudgetError> {
        let desired = self.settings.desired(seen);
        let current = self.current().await?;
        let changes = self.plan(&desired, &current);
        if !dry_run {
            self.apply(&changes).await?;
        }
        Ok(changes)
    }

    /// Limit, actual and forecasted spend of every owned budget, as AWS reports them.
    pub async fn readings(&self) -> Result<Vec<BudgetReading>, BudgetError> {
        let desired = self.settings.desired(std::iter::empty());
        let total_name = format!("{}total", self.settings.name_prefix);
        let cc_prefix = format!("{}cc-", self.settings.name_prefix);
        Ok(self
            .current()
            .await?
            .into_iter()
            .map(|(name, c)| {
                let cost_center = if name == total_name {
                    TOTAL_LABEL.to_owned()
                } else {
                    desired
                        .iter()
                        .find(|d| d.name == name)
                        .and_then(|d| d.cost_center.clone())
                        .unwrap_or_else(|| {
                            name.strip_prefix(&cc_prefix).unwrap_or(&name).to_owned()
                        })
                };
                let spend = c.budget.calculated_spend();
                BudgetReading {
                    limit_usd: limit_of(&c.budget)
                        .and_then(|d| rust_decimal::prelude::ToPrimitive::to_f64(&d))
                        .unwrap_or(0.0),
                    actual_usd: amount(spend.and_then(|s| s.actual_spend())),
                    forecast_usd: amount(spend.and_then(|s| s.forecasted_spend())),
                    budget: name,
                    cost_center,
                }
            })
            .collect())
    }
}

/// Keeps AWS Budgets in line after a refresh, at most once per `budgets.sync_interval`, and
/// exports what they report.
pub struct BudgetsSink {
    reconciler: Reconciler,
    last_sync: Option<std::time::Instant>,
    telemetry: std::sync::Arc<Telemetry>,
}

impl BudgetsSink {
    pub fn new(reconciler: Reconciler, telemetry: std::sync::Arc<Telemetry>) -> Self {
        Self {
            reconciler,
            last_sync: None,
            telemetry,
        }
    }
}

#[async_trait]
impl Sink for BudgetsSink {
    fn name(&self) -> &'static str {
        "aws_budgets"
    }

    /// Plan and apply, then read back; a failure is retried after the next refresh.
    async fn deliver(
        &mut self,
        snapshot: &Snapshot,
        _now: DateTime<Utc>,
    ) -> Result<Delivery, SinkError> {
        let interval = self.reconciler.settings().sync_interval;
        if self.last_sync.is_some_and(|t| t.elapsed() < interval) {
            return Ok(Delivery::NotDue);
        }
        let seen: Vec<&str> = snapshot
            .current()
            .map(|v| v.cost_centers.keys().map(String::as_str).collect())
            .unwrap_or_default();
        match self.reconciler.sync(seen, false).await {
            Ok(changes) => {
                for c in &changes {
                    tracing::info!("budgets: {c}");
                }
                self.last_sync = Some(std::time::Instant::now());
            }
            Err(e) => {
                self.telemetry.record_budget_sync(false);
                return Err(SinkError::new(
                    FailureKind::Aws,
                    format!("budgets sync failed; retried after the next refresh: {e}"),
                ));
            }
        }
        match self.reconciler.readings().await {
            Ok(r) => {
                self.telemetry.record_budget_sync(true);
                self.telemetry.set_budgets(&r);
                Ok(Delivery::Done)
            }
            Err(e) => {
                self.telemetry.record_budget_sync(false);
                // Read back at the next refresh, not after the next sync interval.
                self.last_sync = None;
                Err(SinkError::new(
                    FailureKind::Aws,
                    format!("cannot read the budgets back; retried after the next refresh: {e}"),
                ))
            }
        }
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
