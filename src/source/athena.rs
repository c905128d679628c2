//! Amazon Athena: the allocation query on the CUR 2.0 table in S3, for exports too big for one
//! machine.
//!
//! One allocation is StartQueryExecution (the Trino rendering of the one SQL template, with the
//! period and tag key as execution parameters) → GetQueryExecution polled with a doubling
//! interval → GetQueryResults paged 1,000 rows at a time → typed rows, decimals parsed without
//! loss. With `allocation.q_developer` a second query (the Q Developer seats, [`sql::render_q_developer`])
//! runs meanwhile, the same way. A query still queued or running at `query_timeout` is stopped. Throttling and 5xx
//! answers are retried by the SDK's standard retry strategy (capped, jittered exponential
//! backoff; `max_attempts` attempts per call).
//!
//! With `skip_unchanged` set, a period whose objects in S3 have not changed since its last
//! query is answered from that query's result: one ListObjectsV2 instead of a scan.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_athena::types::{
    QueryExecutionContext, QueryExecutionState, ResultConfiguration, ResultReuseByAgeConfiguration,
    ResultReuseConfiguration,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Inspection, Source, SourceError};
use crate::allocation::daily::DailyCredits;
use crate::allocation::row::{COLUMNS, Cell, Col, Kind, RowBuilder};
use crate::allocation::sql::{self, Columns, Dialect, QuerySpec};
use crate::allocation::{Allocation, AllocationSettings, GroupRow, QueryStats};
use crate::aws::{AwsSettings, S3Location};
use crate::config_error::ConfigError;
use crate::period::{BillingPeriod, PARTITION_COLUMN};

/// The IAM actions this source's own calls take (a test checks them against the calls in this
/// file and `deploy/iam/athena.json`).
pub const IAM_ACTIONS: &[&str] = &[
    "athena:StartQueryExecution",
    "athena:GetQueryExecution",
    "athena:GetQueryResults",
    "athena:StopQueryExecution",
    "athena:GetTableMetadata",
    "s3:ListBucket",
];

/// What Athena itself does with the caller's credentials while it runs a query: read the Glue
/// table, read the export, write and read the results.
pub const IAM_ACTIONS_FOR_ATHENA: &[&str] = &[
    "glue:GetDatabase",
    "glue:GetTable",
    "glue:GetPartition",
    "glue:GetPartitions",
    "s3:GetBucketLocation",
    "s3:ListBucket",
    "s3:GetObject",
    "s3:PutObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
];

/// Rows per GetQueryResults page (Athena's maximum).
const PAGE_SIZE: i32 = 1000;

/// `[source.athena]`: the CUR 2.0 table in the Glue catalog and the workgroup that queries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AthenaSettings {
    /// AWS region; empty = the default chain (`AWS_REGION`, the profile).
    pub region: String,
    /// Named profile of the shared AWS config; empty = the default chain.
    pub profile: String,
    /// Endpoint override for every AWS call of the source (emulators, VPC endpoints).
    pub endpoint_url: String,
    /// Glue data catalog.
    pub catalog: String,
    pub database: String,
    pub table: String,
    pub workgroup: String,
    /// `s3://bucket/prefix/` for query results; empty = the workgroup's own setting.
    pub output_location: String,
    /// Reuse a result of the same query up to this old (0 = never; Athena allows up to 7 days).
    #[serde(with = "humantime_serde")]
    pub result_reuse_max_age: Duration,
    /// A query still queued or running after this long is stopped.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// First delay between GetQueryExecution polls; doubles up to `poll_interval_max`.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_interval_max: Duration,
    /// Attempts per API call (throttling and 5xx are retried with capped, jittered backoff).
    pub max_attempts: u32,
    /// First retry delay of an API call; the SDK's backoff is capped at `retry_max_backoff`.
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// `s3://bucket/prefix/data/` of the CUR export. When set, a period whose newest object
    /// under `BILLING_PERIOD=YYYY-MM/` has not changed since the last query is not queried
    /// again (one ListObjectsV2 instead of a scan).
    pub skip_unchanged: String,
}

impl Default for AthenaSettings {
    fn default() -> Self {
        Self {
            region: String::new(),
            profile: String::new(),
            endpoint_url: String::new(),
            catalog: "AwsDataCatalog".to_owned(),
            database: "cur".to_owned(),
            table: "kiro_data".to_owned(),
            workgroup: "primary".to_owned(),
            output_location: String::new(),
            result_reuse_max_age: Duration::ZERO,
            query_timeout: Duration::from_secs(240),
            poll_interval: Duration::from_millis(500),
            poll_interval_max: Duration::from_secs(5),
            max_attempts: 5,
            retry_initial_backoff: Duration::from_millis(500),
            retry_max_backoff: Duration::from_secs(20),
            skip_unchanged: String::new(),
        }
    }
}

impl AthenaSettings {
    /// Region, profile and endpoint as [`AwsSettings`].
    pub fn aws(&self) -> AwsSettings {
        AwsSettings {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }

    /// Checks values (no I/O); errors name the key under `source.athena`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("source.athena.{k}");
        for (k, v) in [("database", &self.database), ("table", &self.table)] {
            if v.contains('.') {
                return Err(ConfigError::key(
                    &key(k),
                    "must be a single name, without '.'",
                ));
            }
            sql::validate_identifier(v).map_err(|m| ConfigError::key(&key(k), m))?;
        }
        if self.catalog.is_empty() {
            return Err(ConfigError::key(&key("catalog"), "must not be empty"));
        }
        if self.workgroup.is_empty() {
            return Err(ConfigError::key(&key("workgroup"), "must not be empty"));
        }
        for (k, v) in [
            ("output_location", &self.output_location),
            ("skip_unchanged", &self.skip_unchanged),
        ] {
            if !v.is_empty() {
                S3Location::parse(v).map_err(|m| ConfigError::key(&key(k), m))?;
            }
        }
        self.aws().validate("source.athena")?;
        if self.result_reuse_max_age > Duration::from_secs(7 * 24 * 3600) {
            return Err(ConfigError::key(
                &key("result_reuse_max_age"),
                "must be at most 7d (Athena's limit is 10080 minutes)",
            ));
        }
        if self.query_timeout.is_zero() {
            return Err(ConfigError::key(
                &key("query_timeout"),
                "must be greater than 0",
            ));
        }
        if self.poll_interval.is_zero() || self.poll_interval_max < self.poll_interval {
            return Err(ConfigError::key(
                &key("poll_interval"),
                "must be greater than 0 and at most poll_interval_max",
            ));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::key(&key("max_attempts"), "must be at least 1"));
        }
        if self.retry_max_backoff < self.retry_initial_backoff {
            return Err(ConfigError::key(
                &key("retry_max_backoff"),
                "must be at least retry_initial_backoff",
            ));
        }
        Ok(())
    }
}

/// What a period's objects looked like when it was last queried.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    objects: u64,
    bytes: u64,
    newest: Option<DateTime<Utc>>,
    newest_key: String,
}

/// Allocation through Amazon Athena.
pub struct AthenaSource {
    athena: aws_sdk_athena::Client,
    s3: aws_sdk_s3::Client,
    settings: AthenaSettings,
    allocation: AllocationSettings,
    skip_unchanged: Option<S3Location>,
    last: Mutex<HashMap<BillingPeriod, (Fingerprint, Allocation)>>,
    /// The last credits per day queried, with the partition's fingerprint then.
    last_daily: Mutex<Option<(Fingerprint, std::sync::Arc<DailyCredits>)>>,
    /// The optional columns of the table, once `GetTableMetadata` has said.
    columns: tokio::sync::OnceCell<Columns>,
    /// Whether the fallback to every optional column was logged already.
    columns_warned: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for AthenaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AthenaSource")
            .field("database", &self.settings.database)
            .field("table", &self.settings.table)
            .field("workgroup", &self.settings.workgroup)
            .finish_non_exhaustive()
    }
}

impl AthenaSource {
    /// Resolves AWS settings (default credential chain; region, profile and endpoint from
    /// `settings` when set) and builds the clients. No call is made yet.
    pub async fn new(
        settings: AthenaSettings,
        allocation: AllocationSettings,
    ) -> Result<Self, SourceError> {
        let (retry, timeouts) = Self::retry_and_timeouts(&settings);
        let shared = settings
            .aws()
            .loader()
            .retry_config(retry)
            .timeout_config(timeouts)
            .load()
            .await;
        Self::from_sdk_config(&shared, settings, allocation)
    }

    /// Builds the source on an already resolved SDK configuration (its region, credentials,
    /// endpoint, retry and timeout settings are used as they are).
    pub fn from_sdk_config(
        shared: &aws_config::SdkConfig,
        settings: AthenaSettings,
        allocation: AllocationSettings,
    ) -> Result<Self, SourceError> {
        if shared.region().is_none() {
            return Err(SourceError::AwsSetup {
                message:
                    "no AWS region: set source.athena.region, AWS_REGION or a profile's region"
                        .into(),
            });
        }
        let skip_unchanged = if settings.skip_unchanged.is_empty() {
            None
        } else {
            Some(
                S3Location::parse(&settings.skip_unchanged).map_err(|message| {
                    SourceError::AwsSetup {
                        message: format!("source.athena.skip_unchanged: {message}"),
                    }
                })?,
            )
        };
        Ok(Self {
            athena: aws_sdk_athena::Client::new(shared),
            s3: settings.aws().s3_client(shared),
            settings,
            allocation,
            skip_unchanged,
            last: Mutex::new(HashMap::new()),
            last_daily: Mutex::new(None),
            columns: tokio::sync::OnceCell::new(),
            columns_warned: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The SDK settings the source uses for `settings`: standard retry strategy with its
    /// attempts and backoff, connect and attempt timeouts.
    pub fn retry_and_timeouts(settings: &AthenaSettings) -> (RetryConfig, TimeoutConfig) {
        (
            crate::aws::retry_config(
                settings.max_attempts,
                settings.retry_initial_backoff,
                settings.retry_max_backoff,
            ),
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
    }

    /// The Athena client, as configured (tests use it to prepare tables).
    pub fn athena_client(&self) -> &aws_sdk_athena::Client {
        &self.athena
    }

    /// Lists the period's partition and sums it up.
    async fn fingerprint(
        &self,
        location: &S3Location,
        period: BillingPeriod,
    ) -> Result<Fingerprint, SourceError> {
        let prefix = format!("{}{PARTITION_COLUMN}={period}/", location.prefix);
        let mut fp = Fingerprint {
            objects: 0,
            bytes: 0,
            newest: None,
            newest_key: String::new(),
        };
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&location.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| SourceError::Aws {
                operation: "s3:ListObjectsV2",
                message: format!(
                    "s3://{}/{prefix}: {}",
                    location.bucket,
                    crate::aws::error_message(&e)
                ),
            })?;
            for object in page.contents() {
                fp.objects += 1;
                fp.bytes += object.size().unwrap_or(0).max(0) as u64;
                let modified = object
                    .last_modified()
                    .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
                if modified >= fp.newest {
                    fp.newest = modified;
                    fp.newest_key = object.key().unwrap_or_default().to_owned();
                }
            }
        }
        Ok(fp)
    }

    /// The optional columns the table has, from `athena:GetTableMetadata`. A table without
    /// either user column is an error naming both; when the call fails (or the catalog does
    /// not describe the table), every optional column is assumed, as the shipped DDL creates
    /// them, and that is logged once.
    async fn columns(&self) -> Result<Columns, SourceError> {
        if let Some(c) = self.columns.get() {
            return Ok(*c);
        }
        let answer = self
            .athena
            .get_table_metadata()
            .catalog_name(&self.settings.catalog)
            .database_name(&self.settings.database)
            .table_name(&self.settings.table)
            .send()
            .await;
        let fallback = |why: String| {
            if !self
                .columns_warned
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    "cannot learn the columns of {}.{} ({why}); assuming every optional column ({})",
                    self.settings.database,
                    self.settings.table,
                    sql::OPTIONAL_COLUMNS.join(", ")
                );
            }
            Ok(Columns::default())
        };
        let meta = match answer {
            Ok(a) => a,
            Err(e) => {
                return fallback(format!(
                    "GetTableMetadata: {}",
                    crate::aws::error_message(&e)
                ));
            }
        };
        let names: Vec<&str> = meta
            .table_metadata()
            .map(|t| t.columns().iter().map(|c| c.name()).collect())
            .unwrap_or_default();
        if names.is_empty() {
            return fallback("GetTableMetadata listed no columns".to_owned());
        }
        let columns = Columns::from_names(names).map_err(|_| SourceError::MissingColumn {
            file: std::path::PathBuf::from(format!(
                "{}.{}",
                self.settings.database, self.settings.table
            )),
            column: "line_item_user_identifier or line_item_resource_id".to_owned(),
        })?;
        let _ = self.columns.set(columns);
        Ok(columns)
    }

    /// Starts the query and returns its execution id.
    async fn start(
        &self,
        period: BillingPeriod,
        render: fn(Dialect, &QuerySpec<'_>) -> sql::Rendered,
    ) -> Result<String, SourceError> {
        let table = format!("{}.{}", self.settings.database, self.settings.table);
        let columns = self.columns().await?;
        let spec = QuerySpec {
            table: &table,
            cost_center_tag: &self.allocation.cost_center_tag,
            cost_column: self.allocation.cost_column,
            period,
            columns,
            ignored_operations: &self.allocation.ignored_operations,
            period_filter: true,
        };
        let rendered = render(Dialect::Trino, &spec);
        let mut request = self
            .athena
            .start_query_execution()
            .query_string(rendered.sql)
            .set_execution_parameters(Some(
                rendered.params.iter().map(|p| string_literal(p)).collect(),
            ))
            .query_execution_context(
                QueryExecutionContext::builder()
                    .catalog(&self.settings.catalog)
                    .database(&self.settings.database)
                    .build(),
            )
            .work_group(&self.settings.workgroup);
        if !self.settings.output_location.is_empty() {
            request = request.result_configuration(
                ResultConfiguration::builder()
                    .output_location(&self.settings.output_location)
                    .build(),
            );
        }
        let reuse = self.settings.result_reuse_max_age;
        if !reuse.is_zero() {
            let minutes = reuse.as_secs().div_ceil(60).clamp(1, 10_080) as i32;
            request = request.result_reuse_configuration(
                ResultReuseConfiguration::builder()
                    .result_reuse_by_age_configuration(
                        ResultReuseByAgeConfiguration::builder()
                            .enabled(true)
                            .max_age_in_minutes(minutes)
                            .build(),
                    )
                    .build(),
            );
        }
        let out = request.send().await.map_err(|e| SourceError::Aws {
            operation: "athena:StartQueryExecution",
            message: format!(
                "workgroup {}: {}",
                self.settings.workgroup,
                crate::aws::error_message(&e)
            ),
        })?;
        out.query_execution_id()
            .map(str::to_owned)
            .ok_or_else(|| SourceError::Aws {
                operation: "athena:StartQueryExecution",
                message: "the answer has no QueryExecutionId".into(),
            })
    }

    /// Polls until the query ends; stops it at the timeout.
    async fn wait(
        &self,
        period: BillingPeriod,
        id: &str,
        started: Instant,
    ) -> Result<Execution, SourceError> {
        let mut delay = self.settings.poll_interval;
        loop {
            let out = self
                .athena
                .get_query_execution()
                .query_execution_id(id)
                .send()
                .await
                .map_err(|e| SourceError::Aws {
                    operation: "athena:GetQueryExecution",
                    message: format!("query {id}: {}", crate::aws::error_message(&e)),
                })?;
            let execution = out.query_execution();
            let status = execution.and_then(|e| e.status());
            let state = status.and_then(|s| s.state()).cloned();
            match state {
                Some(QueryExecutionState::Succeeded) => {
                    let stats = execution.and_then(|e| e.statistics());
                    return Ok(Execution {
                        scanned_bytes: stats
                            .and_then(|s| s.data_scanned_in_bytes())
                            .map(|b| b.max(0) as u64),
                        engine_time: stats
                            .and_then(|s| s.engine_execution_time_in_millis())
                            .map(|ms| Duration::from_millis(ms.max(0) as u64)),
                        reused: stats
                            .and_then(|s| s.result_reuse_information())
                            .is_some_and(|r| r.reused_previous_result()),
                    });
                }
                Some(s @ (QueryExecutionState::Failed | QueryExecutionState::Cancelled)) => {
                    let reason = status
                        .and_then(|s| s.state_change_reason())
                        .filter(|r| !r.is_empty())
                        .or_else(|| {
                            status
                                .and_then(|s| s.athena_error())
                                .and_then(|e| e.error_message())
                        })
                        .unwrap_or("Athena gave no reason")
                        .to_owned();
                    return Err(SourceError::QueryFailed {
                        period,
                        query_id: id.to_owned(),
                        state: s.as_str().to_owned(),
                        reason,
                    });
                }
                _ => {}
            }
            if started.elapsed() >= self.settings.query_timeout {
                let stopped = self
                    .athena
                    .stop_query_execution()
                    .query_execution_id(id)
                    .send()
                    .await;
                if let Err(e) = &stopped {
                    tracing::warn!(query_id = id, error = %crate::aws::error_message(e), "cannot stop the timed-out query");
                }
                return Err(SourceError::QueryTimeout {
                    period,
                    query_id: id.to_owned(),
                    timeout: self.settings.query_timeout,
                    state: state.map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned()),
                    stopped: stopped.is_ok(),
                });
            }
            let left = self
                .settings
                .query_timeout
                .saturating_sub(started.elapsed());
            tokio::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(self.settings.poll_interval_max);
        }
    }

    /// Reads every result page and decodes the rows as group rows.
    async fn results(&self, id: &str) -> Result<(Vec<GroupRow>, u32), SourceError> {
        let (names, raw, pages) = self.raw_results(id).await?;
        let index = ColumnIndex::new(&names)?;
        let rows = decode_rows(&raw, |values| index.decode(values))?;
        Ok((rows, pages))
    }

    /// Reads every result page: the column names and the rows' text values (NULL as `None`).
    async fn raw_results(
        &self,
        id: &str,
    ) -> Result<(Vec<String>, Vec<Vec<Option<String>>>, u32), SourceError> {
        let mut rows = Vec::new();
        let mut columns: Option<Vec<String>> = None;
        let mut token: Option<String> = None;
        let mut pages = 0u32;
        loop {
            let out = self
                .athena
                .get_query_results()
                .query_execution_id(id)
                .max_results(PAGE_SIZE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| SourceError::Aws {
                    operation: "athena:GetQueryResults",
                    message: format!("query {id}: {}", crate::aws::error_message(&e)),
                })?;
            pages += 1;
            let Some(set) = out.result_set() else {
                break;
            };
            let names = match &columns {
                Some(c) => c,
                None => {
                    let from_metadata: Vec<String> = set
                        .result_set_metadata()
                        .map(|m| {
                            m.column_info()
                                .iter()
                                .map(|c| c.name().to_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    columns.insert(from_metadata)
                }
            };
            for (i, row) in set.rows().iter().enumerate() {
                let values: Vec<Option<&str>> =
                    row.data().iter().map(|d| d.var_char_value()).collect();
                // The first row of the first page is the header.
                if pages == 1 && i == 0 && is_header(&values, names) {
                    continue;
                }
                rows.push(values.into_iter().map(|v| v.map(str::to_owned)).collect());
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok((columns.unwrap_or_default(), rows, pages))
    }
}

/// What a finished query reported.
struct Execution {
    scanned_bytes: Option<u64>,
    engine_time: Option<Duration>,
    reused: bool,
}

#[async_trait]
impl Source for AthenaSource {
    async fn allocate(&self, period: BillingPeriod) -> Result<Allocation, SourceError> {
        let started = Instant::now();
        let fingerprint = match &self.skip_unchanged {
            Some(location) => {
                let fp = self.fingerprint(location, period).await?;
                if fp.objects == 0 {
                    return Err(SourceError::NoObjects {
                        location: format!("{location}{PARTITION_COLUMN}={period}/"),
                    });
                }
                let last = self.last.lock().expect("cache lock");
                if let Some((seen, allocation)) = last.get(&period)
                    && *seen == fp
                {
                    tracing::debug!(%period, objects = fp.objects, "CUR partition unchanged; not queried again");
                    let mut allocation = allocation.clone();
                    allocation.stats = QueryStats {
                        elapsed: started.elapsed(),
                        scanned_bytes: Some(0),
                        scanned_rows: None,
                        files: Some(fp.objects),
                        fetched_bytes: None,
                    };
                    return Ok(allocation);
                }
                Some(fp)
            }
            None => None,
        };
        let id = self.start(period, sql::render).await?;
        tracing::debug!(%period, query_id = %id, "Athena query started");
        // The Q Developer seats are a second, small query, run meanwhile.
        // Without an operation column its seat lines cannot be told from Amazon Q's others.
        let q_id = match self.allocation.q_developer && self.columns().await?.operation {
            true => Some(self.start(period, sql::render_q_developer).await?),
            false => None,
        };
        let execution = self.wait(period, &id, started).await?;
        let (rows, pages) = self.results(&id).await?;
        let q_rows = match &q_id {
            Some(q_id) => {
                self.wait(period, q_id, started).await?;
                let (names, raw, _) = self.raw_results(q_id).await?;
                let index = super::QColumns::new(&names)?;
                let rows = decode_rows(&raw, |values| index.decode(values))?;
                Some(rows)
            }
            None => None,
        };
        tracing::info!(
            %period,
            query_id = %id,
            scanned_bytes = execution.scanned_bytes,
            engine_ms = execution.engine_time.map(|d| d.as_millis() as u64),
            reused = execution.reused,
            rows = rows.len(),
            pages,
            "Athena query done"
        );
        let stats = QueryStats {
            elapsed: started.elapsed(),
            scanned_bytes: execution.scanned_bytes,
            scanned_rows: None,
            files: fingerprint.as_ref().map(|f| f.objects),
            fetched_bytes: None,
        };
        let mut allocation = Allocation::assemble(period, rows, &self.allocation.plans, stats)?;
        if let Some(q) = q_rows {
            allocation = allocation.with_q_developer(q)?;
        }
        if let Some(fp) = fingerprint {
            self.last
                .lock()
                .expect("cache lock")
                .insert(period, (fp, allocation.clone()));
        }
        Ok(allocation)
    }

    async fn daily_credits(
        &self,
        period: BillingPeriod,
    ) -> Result<std::sync::Arc<DailyCredits>, SourceError> {
        let started = Instant::now();
        let fingerprint = match &self.skip_unchanged {
            Some(location) => Some(self.fingerprint(location, period).await?),
            None => None,
        };
        if let Some(fp) = &fingerprint {
            let last = self.last_daily.lock().expect("cache lock");
            if let Some((seen, daily)) = last
                .as_ref()
                .filter(|(seen, d)| seen == fp && d.period == period)
            {
                tracing::debug!(%period, objects = seen.objects, "CUR partition unchanged; credits per day not queried again");
                return Ok(daily.clone());
            }
        }
        let id = self.start(period, sql::render_daily).await?;
        let execution = self.wait(period, &id, started).await?;
        let (names, raw, pages) = self.raw_results(&id).await?;
        let index = super::DailyColumns::new(&names)?;
        let rows = decode_rows(&raw, |values| index.decode(values))?;
        tracing::info!(
            %period,
            query_id = %id,
            scanned_bytes = execution.scanned_bytes,
            rows = rows.len(),
            pages,
            "Athena query of credits per day done"
        );
        let daily = std::sync::Arc::new(DailyCredits::from_rows(period, rows));
        if let Some(fp) = fingerprint {
            *self.last_daily.lock().expect("cache lock") = Some((fp, daily.clone()));
        }
        Ok(daily)
    }

    async fn inspect(&self, period: BillingPeriod) -> Result<Inspection, SourceError> {
        let started = Instant::now();
        let columns = self.columns().await?;
        let id = self.start(period, sql::render_inspect).await?;
        self.wait(period, &id, started).await?;
        let (names, raw, _) = self.raw_results(&id).await?;
        let at = |wanted: &str| {
            names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(wanted))
                .ok_or_else(|| SourceError::Decode {
                    column: wanted.to_owned(),
                    message: "missing from the inspection result".into(),
                })
        };
        let (f, v, l, c) = (at("facet")?, at("value")?, at("lines")?, at("cost")?);
        let mut out = Inspection::new(period, columns);
        for row in raw {
            let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let lines = get(l).parse::<i64>().unwrap_or(0);
            let cost = parse_decimal(&get(c)).unwrap_or_default();
            out.add(&get(f), get(v), lines, cost);
        }
        Ok(out)
    }

    fn engine(&self) -> &'static str {
        "athena"
    }
}

/// Each of `raw`'s rows (text values, NULL as `None`) decoded by `decode`.
fn decode_rows<T>(
    raw: &[Vec<Option<String>>],
    decode: impl Fn(&[Option<&str>]) -> Result<T, SourceError>,
) -> Result<Vec<T>, SourceError> {
    raw.iter()
        .map(|values| {
            let values: Vec<Option<&str>> = values.iter().map(Option::as_deref).collect();
            decode(&values)
        })
        .collect()
}

/// A Trino string literal, as Athena's execution parameters take them.
fn string_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn is_header(values: &[Option<&str>], names: &[String]) -> bool {
    values.len() == names.len()
        && values
            .iter()
            .zip(names)
            .all(|(v, n)| v.is_some_and(|v| v.eq_ignore_ascii_case(n)))
}

/// Positions of the result columns, by name.
struct ColumnIndex {
    at: [usize; COLUMNS],
}

impl ColumnIndex {
    fn new(names: &[String]) -> Result<Self, SourceError> {
        let mut at = [0usize; COLUMNS];
        for (slot, col) in at.iter_mut().zip(Col::ALL) {
            *slot = names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(col.name()))
                .ok_or_else(|| SourceError::Decode {
                    column: col.name().to_owned(),
                    message: format!("missing from the result (columns: {})", names.join(", ")),
                })?;
        }
        Ok(Self { at })
    }

    /// One row of Athena's text values (NULL has no value).
    fn decode(&self, values: &[Option<&str>]) -> Result<GroupRow, SourceError> {
        let mut row = RowBuilder::new();
        for (col, &i) in Col::ALL.into_iter().zip(&self.at) {
            let v = values.get(i).copied().flatten();
            let bad = |what: &str, v: &str| SourceError::Decode {
                column: col.name().to_owned(),
                message: format!("{v:?} is not {what}"),
            };
            let cell = match col.kind() {
                Kind::Text => Cell::Text(v.map(str::to_owned)),
                Kind::Money => Cell::Money(
                    v.map(|v| parse_decimal(v).ok_or_else(|| bad("a decimal number", v)))
                        .transpose()?,
                ),
                Kind::Count => Cell::Count(
                    v.map(|v| v.parse::<i64>().map_err(|_| bad("a count", v)))
                        .transpose()?,
                ),
                Kind::Time => Cell::Time(
                    v.map(|v| parse_timestamp(v).ok_or_else(|| bad("a timestamp", v)))
                        .transpose()?,
                ),
            };
            row.set(col, cell).map_err(|e| SourceError::Decode {
                column: col.name().to_owned(),
                message: e.to_string(),
            })?;
        }
        Ok(row.finish())
    }
}

/// A decimal as engines print it: `12.3400000000`, `-0.5`, or `0E-10`.
pub fn parse_decimal(v: &str) -> Option<Decimal> {
    let v = v.trim();
    Decimal::from_str_exact(v)
        .ok()
        .or_else(|| Decimal::from_scientific(v).ok())
}

/// A timestamp as Trino (`2026-10-31 00:00:00.000`, optionally with ` UTC`) or another engine
/// (`2026-10-31T00:00:00+00:00`) prints it; without a zone it is UTC.
pub fn parse_timestamp(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    let v = v.strip_suffix(" UTC").unwrap_or(v);
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_quoted() {
        assert_eq!(string_literal("2026-10"), "'2026-10'");
        assert_eq!(string_literal("a'b"), "'a''b'");
    }

    #[test]
    fn engine_number_formats() {
        assert_eq!(parse_decimal("12.3400000000"), Some(Decimal::new(1234, 2)));
        assert_eq!(parse_decimal("0E-10"), Some(Decimal::ZERO));
        assert_eq!(parse_decimal("-0.0400000000"), Some(Decimal::new(-4, 2)));
        assert_eq!(
            parse_decimal("1234567890123456.1234567891"),
            Some("1234567890123456.1234567891".parse().unwrap())
        );
        assert_eq!(parse_decimal("12,5"), None);
        let t = parse_timestamp("2026-10-31 00:00:00.000").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-10-31T00:00:00+00:00");
        assert_eq!(parse_timestamp("2026-10-31 00:00:00.000 UTC"), Some(t));
        assert_eq!(parse_timestamp("2026-10-31 00:00:00"), Some(t));
        assert_eq!(parse_timestamp("2026-10-31 00:00:00+00:00"), Some(t));
        assert_eq!(parse_timestamp("2026-10-31T02:00:00+02:00"), Some(t));
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}
