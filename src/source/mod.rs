//! Sources run the allocation query for a billing period and return an [`Allocation`].
//!
//! The daemon owns scheduling, retries and timeouts; a source only knows how to ask its engine.

pub mod activity;
pub mod athena;
pub mod delivery;
pub mod export;
pub mod identity;
pub mod local;
#[cfg(feature = "sql")]
pub mod map_value;
mod pages;
pub mod scan;

use crate::failure::FailureKind;
use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::allocation::daily::{DailyCredits, DayRow};
use crate::allocation::q_developer::QRow;
use crate::allocation::sql;
use crate::allocation::{Allocation, AllocationSettings, ReconciliationError};
use crate::config_error::{ConfigError, ensure};
use crate::period::BillingPeriod;

pub use athena::{AthenaSettings, AthenaSource};
pub use local::LocalSource;

pub use crate::period::PARTITION_COLUMN;

/// Which engine runs the allocation query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The embedded scan over a CUR 2.0 export on local disk or in S3.
    #[default]
    Local,
    /// Amazon Athena over the CUR 2.0 table in S3 (`[source.athena]`).
    Athena,
}

/// `[source]`: which engine allocates, and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceSettings {
    pub engine: Engine,
    /// Local engine: the export root (the folder that holds `data/BILLING_PERIOD=…`), on local
    /// disk or in S3 (`s3://bucket/prefix/export-name`, read with the `[aws]` settings).
    pub cur: PathBuf,
    /// Local engine: files, and row groups of a file, scanned at once; 0 = one per core.
    pub target_partitions: usize,
    /// Athena engine: where and how the allocation query runs.
    pub athena: AthenaSettings,
}

impl Default for SourceSettings {
    fn default() -> Self {
        Self {
            engine: Engine::Local,
            cur: PathBuf::from("cur"),
            target_partitions: 0,
            athena: AthenaSettings::default(),
        }
    }
}

impl SourceSettings {
    /// Checks values (no I/O); `[source.athena]` only when Athena is the engine.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.engine {
            Engine::Athena => self.athena.validate(),
            Engine::Local => {
                ensure(
                    !self.cur.as_os_str().is_empty(),
                    "source.cur",
                    "must name the CUR export folder or s3:// prefix",
                )?;
                match self.s3_cur() {
                    Some(url) => crate::aws::S3Location::validate_setting("source.cur", url),
                    None => Ok(()),
                }
            }
        }
    }

    /// `source.cur` when it is an `s3://` location.
    pub fn s3_cur(&self) -> Option<&str> {
        self.cur.to_str().filter(|c| c.starts_with("s3://"))
    }

    /// The local engine over `self.cur` (a folder, or an S3 prefix read with `aws`'s region,
    /// endpoint and the default credential chain).
    pub async fn local(
        &self,
        allocation: AllocationSettings,
        aws: &crate::aws::AwsContext,
    ) -> Result<LocalSource, SourceError> {
        let export = match self.s3_cur() {
            Some(url) => {
                let location = crate::aws::S3Location::parse(url)
                    .map_err(|message| SourceError::AwsSetup { message })?;
                export::Export::s3(&location, aws.config().await)?
            }
            None => export::Export::local(&self.cur),
        };
        let source = LocalSource::over(export, allocation);
        Ok(match self.target_partitions {
            0 => source,
            n => source.with_target_partitions(n),
        })
    }

    /// The source `engine` names (Athena resolves its AWS settings, the local engine on S3
    /// `[aws]`'s; no call is made yet).
    pub async fn build(
        &self,
        allocation: AllocationSettings,
        aws: &crate::aws::AwsContext,
    ) -> Result<std::sync::Arc<dyn Source>, SourceError> {
        self.build_as(allocation, aws, true).await
    }

    /// As [`Self::build`], for a command that allocates each period once: the local engine
    /// keeps nothing for a next call ([`LocalSource::once`]).
    pub async fn build_once(
        &self,
        allocation: AllocationSettings,
        aws: &crate::aws::AwsContext,
    ) -> Result<std::sync::Arc<dyn Source>, SourceError> {
        self.build_as(allocation, aws, false).await
    }

    async fn build_as(
        &self,
        allocation: AllocationSettings,
        aws: &crate::aws::AwsContext,
        keep: bool,
    ) -> Result<std::sync::Arc<dyn Source>, SourceError> {
        Ok(match self.engine {
            Engine::Local => {
                let local = self.local(allocation, aws).await?;
                std::sync::Arc::new(if keep { local } else { local.once() })
            }
            Engine::Athena => {
                std::sync::Arc::new(AthenaSource::new(self.athena.clone(), allocation).await?)
            }
        })
    }
}

/// Something that can allocate a billing period.
#[async_trait]
pub trait Source: Send + Sync {
    /// Runs the allocation for `period`.
    async fn allocate(&self, period: BillingPeriod) -> Result<Allocation, SourceError>;

    /// Each seat's credits per usage day of `period` ([`crate::allocation::daily`]): asked for
    /// the month before a running one, whose last days the bill's trailing window covers.
    async fn daily_credits(
        &self,
        period: BillingPeriod,
    ) -> Result<std::sync::Arc<DailyCredits>, SourceError>;

    /// What the period's Kiro lines carry (`inspect`).
    async fn inspect(&self, period: BillingPeriod) -> Result<Inspection, SourceError>;

    /// The engine's name, for logs and metric labels.
    fn engine(&self) -> &'static str;

    /// Approximate bytes the source keeps between refreshes, where it keeps any.
    fn cache_bytes(&self) -> Option<u64> {
        None
    }

    /// Runs the allocation for `period` once, keeping nothing for later calls (a closed month
    /// history records once): by default [`Source::allocate`].
    async fn allocate_once(&self, period: BillingPeriod) -> Result<Allocation, SourceError> {
        self.allocate(period).await
    }
}

/// What a period's Kiro lines carry, per facet: each value seen with its lines and cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    pub period: BillingPeriod,
    /// `line_type`, `operation`, `pricing_unit`, `usage_type`, `seat_usage_type`, `tag_key`,
    /// `other` (`line type | operation | unit | usage type` of lines classified as other).
    pub facets: BTreeMap<String, Vec<(String, i64, rust_decimal::Decimal)>>,
    /// Optional columns the export lacks.
    pub missing_columns: Vec<&'static str>,
}

impl Inspection {
    pub fn new(period: BillingPeriod, columns: crate::allocation::sql::Columns) -> Self {
        Self {
            period,
            facets: BTreeMap::new(),
            missing_columns: columns.missing(),
        }
    }

    pub fn add(&mut self, facet: &str, value: String, lines: i64, cost: rust_decimal::Decimal) {
        self.facets
            .entry(facet.to_owned())
            .or_default()
            .push((value, lines, cost.normalize()));
    }

    /// The values of a facet, most lines first.
    pub fn facet(&self, name: &str) -> &[(String, i64, rust_decimal::Decimal)] {
        self.facets.get(name).map_or(&[], Vec::as_slice)
    }
}

/// Why an allocation failed. Every variant names what was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("CUR export folder {path} does not exist")]
    MissingExport { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no partition BILLING_PERIOD={period} under {data_dir} (periods present: {available})")]
    NoPartition {
        period: BillingPeriod,
        data_dir: PathBuf,
        available: String,
    },
    #[error("no .parquet files in {dir}")]
    NoFiles { dir: PathBuf },
    #[error("{file} is not a readable Parquet file: {reason}")]
    NotParquet { file: PathBuf, reason: String },
    #[error(
        "{file} has no column {column}, which the allocation needs (is this a CUR 2.0 export?)"
    )]
    MissingColumn { file: PathBuf, column: String },
    #[error("{file}: column {column} has type {found}, expected {expected}")]
    WrongType {
        file: PathBuf,
        column: String,
        found: String,
        expected: String,
    },
    #[error("query engine failed for {period}: {message}")]
    Engine {
        period: BillingPeriod,
        message: String,
    },
    #[error("cannot decode result column {column}: {message}")]
    Decode { column: String, message: String },
    #[error(transparent)]
    Reconciliation(#[from] ReconciliationError),
    #[error(transparent)]
    QReconciliation(#[from] crate::allocation::q_developer::QReconciliationError),
    #[error(transparent)]
    Delivery(#[from] delivery::DeliveryError),
    #[error("AWS setup: {message}")]
    AwsSetup { message: String },
    #[error("{operation} failed: {message}")]
    Aws {
        operation: &'static str,
        message: String,
    },
    #[error("{operation} {location}: {message}")]
    Store {
        operation: String,
        location: String,
        message: String,
    },
    #[error("no CUR objects under {location}")]
    NoObjects { location: String },
    #[error("Athena query {query_id} for {period} ended {state}: {reason}")]
    QueryFailed {
        period: BillingPeriod,
        query_id: String,
        state: String,
        reason: String,
    },
    #[error(
        "Athena query {query_id} for {period} was still {state} after {} (source.athena.query_timeout); {}",
        humantime::format_duration(*timeout),
        if *stopped { "it was stopped" } else { "stopping it failed" }
    )]
    QueryTimeout {
        period: BillingPeriod,
        query_id: String,
        timeout: std::time::Duration,
        state: String,
        stopped: bool,
    },
}

/// Where each of `wanted` is among a result's column `names` (compared case-insensitively);
/// a column missing is named.
fn positions<const N: usize>(names: &[String], wanted: &[&str]) -> Result<[usize; N], SourceError> {
    let mut at = [0usize; N];
    for (slot, col) in at.iter_mut().zip(wanted) {
        *slot = names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(col))
            .ok_or_else(|| SourceError::Decode {
                column: (*col).to_owned(),
                message: format!("missing from the result (columns: {})", names.join(", ")),
            })?;
    }
    Ok(at)
}

/// Positions of the Q Developer query's result columns ([`sql::Q_RESULT_COLUMNS`]), by name:
/// both engines decode its rows from text through it.
pub(crate) struct QColumns {
    at: [usize; 7],
}

impl QColumns {
    pub(crate) fn new(names: &[String]) -> Result<Self, SourceError> {
        Ok(Self {
            at: positions(names, sql::Q_RESULT_COLUMNS)?,
        })
    }

    /// One row's text values (NULL has no value).
    pub(crate) fn decode(&self, values: &[Option<&str>]) -> Result<QRow, SourceError> {
        let v = |i: usize| values.get(self.at[i]).copied().flatten();
        let money = |i: usize| match v(i) {
            None => Ok(rust_decimal::Decimal::ZERO),
            Some(s) => athena::parse_decimal(s).ok_or_else(|| SourceError::Decode {
                column: sql::Q_RESULT_COLUMNS[i].to_owned(),
                message: format!("{s:?} is not a decimal number"),
            }),
        };
        let lines = match v(6) {
            None => 0,
            Some(s) => s.trim().parse::<i64>().map_err(|_| SourceError::Decode {
                column: sql::Q_RESULT_COLUMNS[6].to_owned(),
                message: format!("{s:?} is not a count"),
            })?,
        };
        Ok(QRow {
            account_id: v(0).unwrap_or_default().to_owned(),
            user_id: v(1).unwrap_or_default().to_owned(),
            cost_center: v(2).unwrap_or_default().to_owned(),
            fee_usd: money(3)?.normalize(),
            tax_usd: money(4)?.normalize(),
            all_cost_usd: money(5)?.normalize(),
            billed_lines: lines,
        })
    }
}

/// Positions of the daily query's result columns ([`sql::DAILY_RESULT_COLUMNS`]), by name: both
/// engines decode its rows from text through it.
pub(crate) struct DailyColumns {
    at: [usize; 5],
}

impl DailyColumns {
    pub(crate) fn new(names: &[String]) -> Result<Self, SourceError> {
        Ok(Self {
            at: positions(names, sql::DAILY_RESULT_COLUMNS)?,
        })
    }

    /// One row's text values (NULL has no value): the day as `YYYY-MM-DD`.
    pub(crate) fn decode(&self, values: &[Option<&str>]) -> Result<DayRow, SourceError> {
        let v = |i: usize| values.get(self.at[i]).copied().flatten();
        let text = |i: usize| v(i).unwrap_or_default().to_owned();
        let bad = |i: usize, what: &str| SourceError::Decode {
            column: sql::DAILY_RESULT_COLUMNS[i].to_owned(),
            message: format!("{:?} is not {what}", v(i).unwrap_or_default()),
        };
        let day = v(3)
            .and_then(|s| chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok())
            .ok_or_else(|| bad(3, "a date (YYYY-MM-DD)"))?;
        let credits = match v(4) {
            None => rust_decimal::Decimal::ZERO,
            Some(s) => athena::parse_decimal(s).ok_or_else(|| bad(4, "a decimal number"))?,
        };
        Ok(DayRow {
            account_id: text(0),
            region: text(1),
            user_id: text(2),
            day,
            credits,
        })
    }
}

impl SourceError {
    /// A fixed, low-cardinality label for the exporter's own metrics.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::MissingExport { .. }
            | Self::NoPartition { .. }
            | Self::NoFiles { .. }
            | Self::NoObjects { .. } => FailureKind::NoData,
            Self::Io { .. } | Self::Store { .. } => FailureKind::Io,
            Self::NotParquet { .. } | Self::MissingColumn { .. } | Self::WrongType { .. } => {
                FailureKind::BadInput
            }
            Self::Engine { .. } | Self::QueryFailed { .. } => FailureKind::Engine,
            Self::Decode { .. } => FailureKind::Decode,
            Self::Reconciliation(_) | Self::QReconciliation(_) => FailureKind::Reconciliation,
            Self::Delivery(e) => match e {
                delivery::DeliveryError::NoFiles { .. } => FailureKind::NoData,
                delivery::DeliveryError::BadManifest { .. }
                | delivery::DeliveryError::Missing { .. } => FailureKind::BadInput,
            },
            Self::AwsSetup { .. } => FailureKind::Config,
            Self::Aws { .. } => FailureKind::Aws,
            Self::QueryTimeout { .. } => FailureKind::Timeout,
        }
    }
}
