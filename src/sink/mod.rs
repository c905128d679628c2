//! Sinks: every consumer of a snapshot. They read the snapshot's views and compute nothing of
//! their own, so every figure means the same wherever it is shown.
//!
//! Two kinds:
//! - what the HTTP server serves, rendered once per refresh: the Prometheus exposition
//!   ([`prometheus`]) and the landing page ([`landing`]);
//! - what is pushed or sent, behind the [`Sink`] seam the daemon loops over: CloudWatch
//!   ([`cloudwatch`]), AWS Budgets ([`aws_budgets`]), alerts ([`alerts`]) and the monthly report
//!   ([`report`]). Each decides when it is due; the daemon counts each one's failures by kind
//!   and its last success the same way.

pub mod alerts;
pub mod aws_budgets;
pub mod cloudwatch;
pub mod landing;
pub mod prometheus;
pub mod report;

use std::collections::BTreeMap;
use std::sync::Arc;

use rust_decimal::Decimal;

use crate::failure::FailureKind;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::snapshot::Snapshot;

/// What a sink did with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered completely.
    Done,
    /// Nothing was due this time (an interval not yet over, a report day not yet reached).
    NotDue,
}

/// Why a sink did not deliver: a fixed `kind` label and a message naming what failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// The `kind` label of `kiro_exporter_sink_errors_total`.
    pub kind: FailureKind,
    pub message: String,
}

impl SinkError {
    pub fn new(kind: FailureKind, e: impl std::fmt::Display) -> Self {
        Self {
            kind,
            message: e.to_string(),
        }
    }
}

/// A consumer of snapshots that pushes or sends them somewhere.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Fixed name: the `sink` label of the exporter's metrics.
    fn name(&self) -> &'static str;

    /// Delivers what is due of `snapshot` at `now`. A failure is retried at a later snapshot;
    /// nothing undelivered may be recorded as delivered.
    async fn deliver(
        &mut self,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
    ) -> Result<Delivery, SinkError>;
}

/// Monthly limits per cost center (`[budgets]`): what the budgets sink keeps AWS Budgets at,
/// what alert rules relative to a budget compare with, what the landing page shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetLimits {
    pub default_limit_usd: Option<Decimal>,
    pub cost_centers: BTreeMap<String, Decimal>,
}

impl BudgetLimits {
    pub fn limit(&self, cost_center: &str) -> Option<Decimal> {
        self.cost_centers
            .get(cost_center)
            .copied()
            .or(self.default_limit_usd)
    }
}

/// The monthly report's file name for a period (written by the report, linked by the landing
/// page).
pub fn report_file_name(period: crate::period::BillingPeriod) -> String {
    format!("kiro-cost-report-{period}.csv")
}

/// What sinks are built with, made once by `serve`. Each sink's settings build their sink from
/// it (`build(&self, cx)`), or build nothing when the sink is off.
pub struct SinkContext {
    /// The one AWS SDK configuration of the process.
    pub aws: Arc<crate::aws::AwsContext>,
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// The state file of the alerts and the report, opened when either is on.
    pub state_file: Option<Arc<crate::state::StateFile>>,
    /// The notification channels (`[[alerts.channels]]`), shared by the alerts and the report.
    pub channels: Vec<Arc<crate::notify::Channel>>,
    /// What the HTTP server serves (written reports at `/reports/`).
    pub server: Arc<crate::server::State>,
    /// Allocates a month the snapshot no longer holds (the report).
    pub source: Arc<dyn crate::source::Source>,
    /// Builds a view of such a month as the daemon builds its snapshot.
    pub builder: Arc<crate::snapshot::SnapshotBuilder>,
    /// Grafana's overview dashboard (`alerts.dashboard_url`), linked from cards; empty = none.
    pub dashboard_url: String,
    /// Budgets per cost center (`[budgets]`).
    pub budgets: BudgetLimits,
}

/// A sink that cannot be built from its settings and context.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    NoRegion(#[from] crate::aws::NoRegion),
    #[error("{0} needs the state file, which was not opened")]
    NoStateFile(&'static str),
}

/// What a sink's settings build: the sink, or nothing when it is off.
pub type Built = Result<Option<Box<dyn Sink>>, BuildError>;
