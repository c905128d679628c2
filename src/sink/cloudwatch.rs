//! CloudWatch custom metrics: the snapshot's roll-ups pushed with PutMetricData after each
//! refresh, for teams that alarm in AWS.
//!
//! The current month goes out month to date without a `BillingPeriod` dimension, so alarms can
//! name a fixed dimension set all year; the previous month, while it is still watched (its bill
//! is not final yet), carries `BillingPeriod`. Totals have no other dimension, cost centers
//! `CostCenter` (`untagged` for none), accounts `AccountId`; per-user metrics (`AccountId`,
//! `UserId`, `CostCenter`) only with `per_user = true`, since every distinct metric is billed
//! monthly. Datums go out in batches of at most 1,000 (the API's limit), a few calls at a time;
//! throttling and 5xx answers are retried by the SDK with capped, jittered backoff.

use crate::failure::FailureKind;
use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudwatch::primitives::DateTime as AwsDateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use futures::StreamExt;
use prometheus::IntCounterVec;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Delivery, Sink, SinkError};
use crate::allocation::Rollup;
use crate::config_error::{ConfigError, ensure};
use crate::snapshot::{PeriodView, Snapshot};
use crate::telemetry::Outcome;

/// The dimension value for units without a cost center.
pub use crate::allocation::UNTAGGED;

/// The IAM actions the sink takes (`deploy/iam/cloudwatch.json`, scoped to the namespace).
pub const IAM_ACTIONS: &[&str] = &["cloudwatch:PutMetricData"];
/// Most datums PutMetricData takes in one call.
pub const MAX_DATUMS_PER_CALL: usize = 1000;
/// Price of a custom metric per month, for the first 10,000 (USD).
pub const METRIC_MONTH_USD: f64 = 0.30;

/// `[cloudwatch]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudWatchSettings {
    /// Push after every successful refresh (region and endpoint from `[aws]`).
    pub enabled: bool,
    pub namespace: String,
    /// Also push per-user metrics: 3 more custom metrics per user, each billed every month.
    pub per_user: bool,
    /// Datums per PutMetricData call (at most 1,000).
    pub batch_size: usize,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Attempts per call; throttling and 5xx back off between them.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
}

impl Default for CloudWatchSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            namespace: "Kiro/Cost".into(),
            per_user: false,
            batch_size: MAX_DATUMS_PER_CALL,
            concurrency: 4,
            max_attempts: 5,
            retry_initial_backoff: Duration::from_millis(500),
            retry_max_backoff: Duration::from_secs(20),
        }
    }
}

impl CloudWatchSettings {
    /// Checks values (no I/O); errors name the key under `cloudwatch`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("cloudwatch.{k}");
        let ns_ok = !self.namespace.is_empty()
            && self.namespace.len() <= 255
            && !self.namespace.starts_with("AWS/")
            && self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_/#:".contains(c));
        ensure(
            ns_ok,
            &key("namespace"),
            "must be 1-255 of letters, digits and . - _ / # :, not starting with AWS/",
        )?;
        ensure(
            (1..=MAX_DATUMS_PER_CALL).contains(&self.batch_size),
            &key("batch_size"),
            "must be from 1 to 1000",
        )?;
        ensure(
            (1..=32).contains(&self.concurrency),
            &key("concurrency"),
            "must be from 1 to 32",
        )?;
        ensure(
            self.max_attempts > 0,
            &key("max_attempts"),
            "must be at least 1",
        )?;
        ensure(
            self.retry_max_backoff >= self.retry_initial_backoff,
            &key("retry_max_backoff"),
            "must be at least retry_initial_backoff",
        )
    }

    /// The sink, when `cloudwatch.enabled`; it needs a region.
    pub async fn build(&self, cx: &super::SinkContext) -> super::Built {
        if !self.enabled {
            return Ok(None);
        }
        let shared = cx.aws.regional("cloudwatch.enabled").await?;
        if let Some(note) = self.per_user_cost_note() {
            tracing::warn!("{note}");
        }
        Ok(Some(Box::new(CloudWatchSink::new(
            shared,
            self.clone(),
            cx.telemetry.cloudwatch_datums(),
        ))))
    }

    /// What per-user metrics cost, for `check-config`'s warning.
    pub fn per_user_cost_note(&self) -> Option<String> {
        self.per_user.then(|| {
            format!(
                "cloudwatch.per_user = true: each user adds {PER_USER_METRICS} custom metrics \
                 (about ${:.2} per user per month at ${METRIC_MONTH_USD:.2} per metric-month for \
                 the first 10,000 metrics; 1,000 users ≈ ${:.0} a month)",
                PER_USER_METRICS as f64 * METRIC_MONTH_USD,
                1000.0 * PER_USER_METRICS as f64 * METRIC_MONTH_USD
            )
        })
    }
}

/// Per-user metric names.
const PER_USER_METRICS: usize = 3;

/// One value to push: a metric name, its dimensions (name, value) and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub name: &'static str,
    pub dimensions: Vec<(&'static str, String)>,
    pub value: f64,
    pub unit: StandardUnit,
}

fn usd(d: Decimal) -> f64 {
    d.round_dp(6).to_f64().unwrap_or(0.0)
}

fn cc_name(cc: &str) -> String {
    crate::allocation::cost_center_label(cc).to_owned()
}

/// The datums of a snapshot.
pub fn datums(snapshot: &Snapshot, per_user: bool) -> Vec<Datum> {
    let newest = snapshot.current().map(|v| v.allocation.period);
    let mut out = Vec::new();
    for v in &snapshot.periods {
        // The current month: month to date, alarmable; an earlier one: by BillingPeriod.
        let period_dim: Vec<(&'static str, String)> = if Some(v.allocation.period) == newest {
            vec![]
        } else {
            vec![("BillingPeriod", v.allocation.period.to_string())]
        };
        push_period(&mut out, v, &period_dim, per_user);
    }
    out
}

/// `extra` dimensions followed by the period's.
fn with_period(
    extra: &[(&'static str, String)],
    period_dim: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    extra.iter().chain(period_dim).cloned().collect()
}

fn push_period(
    out: &mut Vec<Datum>,
    v: &PeriodView,
    period_dim: &[(&'static str, String)],
    per_user: bool,
) {
    let dims = |extra: &[(&'static str, String)]| with_period(extra, period_dim);
    let mut add =
        |name: &'static str, dimensions: Vec<(&'static str, String)>, value: f64, unit| {
            out.push(Datum {
                name,
                dimensions,
                value,
                unit,
            });
        };
    let rollups = |add: &mut dyn FnMut(&'static str, f64, StandardUnit), r: &Rollup| {
        add("CostUsd", usd(r.total_usd), StandardUnit::None);
        add("OverageUsd", usd(r.overage_usd), StandardUnit::None);
        add(
            "SubscriptionUsd",
            usd(r.subscription_usd),
            StandardUnit::None,
        );
        add("CreditsUsed", usd(r.credits_used), StandardUnit::Count);
        add("Users", r.users as f64, StandardUnit::Count);
    };
    // Total: the whole bill, tax and lines with no user included, as kiro_cost_usd.
    let total_dims = dims(&[]);
    rollups(
        &mut |n, value, u| {
            let value = if n == "CostUsd" {
                usd(v.total_cost_usd)
            } else {
                value
            };
            add(n, total_dims.clone(), value, u)
        },
        &v.totals,
    );
    add(
        "ForecastUsd",
        total_dims.clone(),
        usd(v.forecast.total),
        StandardUnit::None,
    );
    add(
        "UntaggedUsers",
        total_dims.clone(),
        v.untagged_users.len() as f64,
        StandardUnit::Count,
    );
    add(
        "DuplicateSubscriptions",
        total_dims,
        v.duplicate_subscriptions.len() as f64,
        StandardUnit::Count,
    );
    for (cc, r) in &v.cost_centers {
        let d = dims(&[("CostCenter", cc_name(cc))]);
        rollups(&mut |n, value, u| add(n, d.clone(), value, u), r);
        add(
            "ForecastUsd",
            d,
            usd(v.forecast.cost_centers.get(cc).copied().unwrap_or_default()),
            StandardUnit::None,
        );
    }
    for (account, r) in &v.accounts {
        let d = dims(&[("AccountId", account.clone())]);
        rollups(&mut |n, value, u| add(n, d.clone(), value, u), r);
    }
    if per_user {
        push_users(out, v, period_dim);
    }
}

/// Per-unit metrics (`cloudwatch.per_user`): each costs a custom metric.
fn push_users(out: &mut Vec<Datum>, v: &PeriodView, period_dim: &[(&'static str, String)]) {
    let dims = |extra: &[(&'static str, String)]| with_period(extra, period_dim);
    let mut add =
        |name: &'static str, dimensions: Vec<(&'static str, String)>, value: f64, unit| {
            out.push(Datum {
                name,
                dimensions,
                value,
                unit,
            });
        };
    for u in v.allocation.units.iter().filter(|u| !u.user_id.is_empty()) {
        let mut seat = vec![
            ("AccountId", u.account_id.clone()),
            ("UserId", u.user_id.clone()),
            ("CostCenter", cc_name(&u.cost_center)),
        ];
        // A seat is per account and region; the region where the bill names one.
        if !u.region.is_empty() {
            seat.push(("Region", u.region.clone()));
        }
        let d = dims(&seat);
        add(
            "UserCostUsd",
            d.clone(),
            usd(u.total_usd),
            StandardUnit::None,
        );
        add(
            "UserOverageUsd",
            d.clone(),
            usd(u.overage_usd),
            StandardUnit::None,
        );
        add(
            "UserCreditsUsed",
            d,
            usd(u.credits_used),
            StandardUnit::Count,
        );
    }
}

#[derive(Debug, thiserror::Error)]
#[error("CloudWatch PutMetricData: {failed} of {total} datums not delivered ({message})")]
pub struct PushError {
    pub failed: usize,
    pub total: usize,
    pub message: String,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    pub datums: usize,
    pub calls: usize,
}

/// Pushes snapshots to CloudWatch.
pub struct CloudWatchSink {
    client: aws_sdk_cloudwatch::Client,
    settings: CloudWatchSettings,
    counter: IntCounterVec,
}

impl CloudWatchSink {
    /// `shared` supplies region, credentials and endpoint; retries follow `settings`.
    pub fn new(
        shared: &aws_config::SdkConfig,
        settings: CloudWatchSettings,
        counter: IntCounterVec,
    ) -> Self {
        let retry = crate::aws::retry_config(
            settings.max_attempts,
            settings.retry_initial_backoff,
            settings.retry_max_backoff,
        );
        let conf = aws_sdk_cloudwatch::config::Builder::from(shared)
            .retry_config(retry)
            .build();
        for o in [Outcome::Success, Outcome::Failure] {
            counter.with_label_values(&[o.as_str()]).inc_by(0);
        }
        Self {
            client: aws_sdk_cloudwatch::Client::from_conf(conf),
            settings,
            counter,
        }
    }

    pub fn client(&self) -> &aws_sdk_cloudwatch::Client {
        &self.client
    }

    /// Pushes the snapshot's datums; every datum is counted as delivered or not.
    pub async fn push(&self, snapshot: &Snapshot) -> Result<Pushed, PushError> {
        let all = datums(snapshot, self.settings.per_user);
        let ts = AwsDateTime::from_millis(snapshot.taken_at.timestamp_millis());
        let total = all.len();
        let batches: Vec<Vec<MetricDatum>> = all
            .chunks(self.settings.batch_size)
            .map(|chunk| chunk.iter().map(|d| to_sdk(d, ts)).collect())
            .collect();
        let calls = batches.len();
        let results: Vec<(usize, Result<(), String>)> = futures::stream::iter(batches)
            .map(|batch| async move {
                let n = batch.len();
                let r = self
                    .client
                    .put_metric_data()
                    .namespace(&self.settings.namespace)
                    .set_metric_data(Some(batch))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| crate::aws::error_message(&e));
                (n, r)
            })
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        let mut failed = 0;
        let mut message = String::new();
        for (n, r) in results {
            match r {
                Ok(()) => self
                    .counter
                    .with_label_values(&[Outcome::Success.as_str()])
                    .inc_by(n as u64),
                Err(e) => {
                    self.counter
                        .with_label_values(&[Outcome::Failure.as_str()])
                        .inc_by(n as u64);
                    failed += n;
                    message = e;
                }
            }
        }
        if failed > 0 {
            return Err(PushError {
                failed,
                total,
                message,
            });
        }
        Ok(Pushed {
            datums: total,
            calls,
        })
    }
}

#[async_trait]
impl Sink for CloudWatchSink {
    fn name(&self) -> &'static str {
        "cloudwatch"
    }

    async fn deliver(
        &mut self,
        snapshot: &Snapshot,
        _now: DateTime<Utc>,
    ) -> Result<Delivery, SinkError> {
        let p = self
            .push(snapshot)
            .await
            .map_err(|e| SinkError::new(FailureKind::Aws, e))?;
        tracing::info!(
            distinct_metrics = p.datums,
            calls = p.calls,
            "pushed to CloudWatch"
        );
        Ok(Delivery::Done)
    }
}

fn to_sdk(d: &Datum, ts: AwsDateTime) -> MetricDatum {
    MetricDatum::builder()
        .metric_name(d.name)
        .set_dimensions(Some(
            d.dimensions
                .iter()
                .map(|(k, v)| Dimension::builder().name(*k).value(v).build())
                .collect(),
        ))
        .value(d.value)
        .unit(d.unit.clone())
        .timestamp(ts)
        .storage_resolution(60)
        .build()
}

/// Distinct (metric name, dimension names) the sink pushes for a snapshot, e.g. to check that
/// alarms refer to metrics that exist.
pub fn shapes(datums: &[Datum]) -> BTreeMap<(&'static str, Vec<&'static str>), usize> {
    let mut out = BTreeMap::new();
    for d in datums {
        let mut names: Vec<&'static str> = d.dimensions.iter().map(|(k, _)| *k).collect();
        names.sort_unstable();
        *out.entry((d.name, names)).or_default() += 1;
    }
    out
}
