//! Sources run the allocation query for a billing period and return an [`Allocation`].
//!
//! The daemon owns scheduling, retries and timeouts; a source only knows how to ask its engine.

pub mod athena;
pub mod local;

use std::path::PathBuf;

use async_trait::async_trait;

use crate::allocation::{Allocation, ReconciliationError};
use crate::period::BillingPeriod;

pub use athena::AthenaSource;
pub use local::LocalSource;

/// Something that can allocate a billing period.
#[async_trait]
pub trait Source: Send + Sync {
    /// Runs the allocation for `period`.
    async fn allocate(&self, period: BillingPeriod) -> Result<Allocation, SourceError>;

    /// The engine's name, for logs and metric labels.
    fn engine(&self) -> &'static str;
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
    #[error("AWS setup: {message}")]
    AwsSetup { message: String },
    #[error("{operation} failed: {message}")]
    Aws {
        operation: &'static str,
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

impl SourceError {
    /// A fixed, low-cardinality label for the exporter's own metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingExport { .. } | Self::NoPartition { .. } | Self::NoFiles { .. } => {
                "no_data"
            }
            Self::Io { .. } => "io",
            Self::NotParquet { .. } | Self::MissingColumn { .. } | Self::WrongType { .. } => {
                "bad_input"
            }
            Self::Engine { .. } => "engine",
            Self::Decode { .. } => "decode",
            Self::Reconciliation(_) => "reconciliation",
            Self::AwsSetup { .. } => "config",
            Self::Aws { .. } => "aws",
            Self::NoObjects { .. } => "no_data",
            Self::QueryFailed { .. } => "engine",
            Self::QueryTimeout { .. } => "timeout",
        }
    }
}
