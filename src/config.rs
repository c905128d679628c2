//! Typed settings: built-in defaults < `--config FILE` (TOML or YAML) < environment
//! (`KIRO_EXPORTER__SECTION__KEY`), then command-line overrides.
//!
//! Loading is parse-then-validate: [`load`] reads and deserializes (unknown keys and wrong
//! types are rejected with the full key path), [`Settings::validate`] checks values without any
//! I/O. Every error names the key, so `check-config` and start-up can say exactly what to fix.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alert::AlertSettings;
use crate::alert::budgets::BudgetSettings;
use crate::allocation::savings::SavingsSettings;
use crate::allocation::sql::{self, CostColumn};
use crate::allocation::{AllocationSettings, PlanTable};
use crate::period::BillingPeriod;
use crate::sink::cloudwatch::CloudWatchSettings;

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "KIRO_EXPORTER";
/// Default port: outside the fully allocated 9100–9999 exporter range.
pub const DEFAULT_PORT: u16 = 19877;

/// A configuration problem, naming the key (or the file) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("config key {key}: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    fn key(key: &str, message: impl Into<String>) -> Self {
        Self::Key {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// All settings of the daemon and its commands.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub source: SourceSettings,
    pub allocation: AllocationConfig,
    /// The plan table (`[[plans]]`): names, usage type suffixes, prices and included credits.
    pub plans: PlanTable,
    pub server: ServerSettings,
    pub refresh: RefreshSettings,
    /// Thresholds of the savings recommendations (idle seats, right-sizing).
    pub savings: SavingsSettings,
    /// Threshold rules, their state file and the channels they notify.
    pub alerts: AlertSettings,
    /// Monthly limits per cost center (rules relative to a budget use them), and the AWS
    /// Budgets the daemon keeps in line with them.
    pub budgets: BudgetSettings,
    /// The monthly per-user report.
    pub report: ReportSettings,
    /// CloudWatch custom metrics pushed after each refresh.
    pub cloudwatch: CloudWatchSettings,
    /// AWS access for CloudWatch and the report's S3 upload (Athena has its own in
    /// `[source.athena]`).
    pub aws: AwsSettings,
    pub log: LogSettings,
}

/// `[aws]`: region, profile and endpoint for the AWS calls outside Athena.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    /// Empty = the default chain (`AWS_REGION`, the profile).
    pub region: String,
    pub profile: String,
    /// Endpoint override (emulators, VPC endpoints).
    pub endpoint_url: String,
}

impl AwsSettings {
    /// The shared SDK configuration: default credential chain, with these overrides.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        self.loader().load().await
    }

    /// The SDK configuration loader with these overrides, for callers that add their own
    /// retry or timeout settings.
    pub fn loader(&self) -> aws_config::ConfigLoader {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if !self.region.is_empty() {
            loader = loader.region(aws_config::Region::new(self.region.clone()));
        }
        if !self.profile.is_empty() {
            loader = loader.profile_name(&self.profile);
        }
        if !self.endpoint_url.is_empty() {
            loader = loader.endpoint_url(&self.endpoint_url);
        }
        loader
    }

    /// An S3 client on `shared`; emulators and VPC endpoints address buckets by path.
    pub fn s3_client(&self, shared: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(shared)
            .force_path_style(!self.endpoint_url.is_empty())
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

/// `[report]`: the monthly per-user CSV and its summary card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSettings {
    /// Folder the CSV is written to.
    pub out_dir: PathBuf,
    /// `s3://bucket/prefix/` to upload the CSV to, with a presigned download link on the card;
    /// empty = no upload.
    pub s3: String,
    /// Lifetime of the presigned link (at most 7 days).
    #[serde(with = "humantime_serde")]
    pub link_ttl: Duration,
    /// `serve` sends the previous month's report on this day of the month (0 = never).
    pub schedule_day: u32,
    /// Channels the summary card goes to (Feishu channels of `[[alerts.channels]]`); empty =
    /// every Feishu channel.
    pub channels: Vec<String>,
    /// Cost centers and savings items listed on the card.
    pub top: usize,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            out_dir: PathBuf::from("reports"),
            s3: String::new(),
            link_ttl: Duration::from_secs(7 * 86_400),
            schedule_day: 5,
            channels: Vec::new(),
            top: 5,
        }
    }
}

/// Which engine runs the allocation query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Embedded Apache DataFusion over a CUR 2.0 export on disk.
    #[default]
    Local,
    /// Amazon Athena over the CUR 2.0 table in S3 (`[source.athena]`).
    Athena,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Athena => "athena",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceSettings {
    pub engine: Engine,
    /// Local engine: the export root (the folder that holds `data/BILLING_PERIOD=…`).
    pub cur: PathBuf,
    /// Local engine: partitions DataFusion plans with; 0 = one per core.
    pub target_partitions: usize,
    /// Local engine: DataFusion session options on top of the engine's defaults, keys as in
    /// DataFusion's configuration reference without `datafusion.` (e.g.
    /// `"execution.parquet.pushdown_filters" = "false"`).
    pub datafusion: BTreeMap<String, String>,
    /// Athena engine: where and how the allocation query runs.
    pub athena: AthenaSettings,
}

impl Default for SourceSettings {
    fn default() -> Self {
        Self {
            engine: Engine::Local,
            cur: PathBuf::from("cur"),
            target_partitions: 0,
            datafusion: BTreeMap::new(),
            athena: AthenaSettings::default(),
        }
    }
}

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
                crate::source::athena::S3Location::parse(v)
                    .map_err(|m| ConfigError::key(&key(k), m))?;
            }
        }
        let scheme_ok = ["http://", "https://"]
            .iter()
            .any(|p| self.endpoint_url.starts_with(p));
        if !self.endpoint_url.is_empty() && !scheme_ok {
            return Err(ConfigError::key(
                &key("endpoint_url"),
                "must start with http:// or https://",
            ));
        }
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllocationConfig {
    /// Key in the CUR `tags` map that holds the cost center.
    pub cost_center_tag: String,
    /// `line_item_unblended_cost` or `line_item_net_unblended_cost`.
    pub cost_column: CostColumn,
}

impl Default for AllocationConfig {
    fn default() -> Self {
        let d = AllocationSettings::default();
        Self {
            cost_center_tag: d.cost_center_tag,
            cost_column: d.cost_column,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address for /metrics, /healthz, /readyz and the landing page. Port 0 picks a free port
    /// (the address is printed at start-up).
    pub listen: SocketAddr,
    /// On SIGTERM/SIGINT, open requests get this long to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Web configuration file in the Prometheus exporter-toolkit format (TLS, basic auth with
    /// bcrypt hashes, extra headers); empty = plain HTTP without authentication.
    pub web_config_file: PathBuf,
    /// File holding a bearer token that is accepted as `Authorization: Bearer TOKEN`;
    /// empty = none.
    pub bearer_token_file: PathBuf,
    /// Paths answered without credentials when authentication is on (e.g. `["/healthz",
    /// "/readyz"]` for probes that cannot authenticate).
    pub unauthenticated_paths: Vec<String>,
    /// Connections served at once; more clients wait in the listen backlog.
    pub max_connections: usize,
    /// Time a client has for the TLS handshake and for sending each request's headers.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            shutdown_grace: Duration::from_secs(10),
            web_config_file: PathBuf::new(),
            bearer_token_file: PathBuf::new(),
            unauthenticated_paths: Vec::new(),
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerSettings {
    /// Reads the web configuration and bearer token files into what the server enforces.
    pub fn security(&self) -> Result<crate::web::WebSecurity, crate::web::WebConfigError> {
        let path = |p: &Path| (!p.as_os_str().is_empty()).then(|| p.to_owned());
        crate::web::WebSecurity::load(
            path(&self.web_config_file).as_deref(),
            path(&self.bearer_token_file).as_deref(),
            self.unauthenticated_paths.clone(),
        )
    }

    /// What the listener runs with.
    pub fn serve_options(&self) -> Result<crate::server::ServeOptions, crate::web::WebConfigError> {
        Ok(crate::server::ServeOptions {
            security: std::sync::Arc::new(self.security()?),
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            grace: self.shutdown_grace,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshSettings {
    /// Time between refreshes. CUR data changes a few times a day.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Random delay up to this much added to each interval, so many daemons do not query at once.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// The previous month is refreshed until this day of the month, when its bill is final.
    pub previous_month_final_day: u32,
    /// First retry delay after a failed refresh; doubles up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// A refresh that takes longer fails.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Watch this one billing period only (replaying history, tests).
    pub period: Option<BillingPeriod>,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            jitter: Duration::from_secs(120),
            previous_month_final_day: 5,
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(900),
            timeout: Duration::from_secs(600),
            period: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A `tracing` filter, e.g. `info` or `kiro_cost_exporter=debug`. `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
        }
    }
}

/// Reads settings from the defaults, an optional file and the process environment.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    load_with_env(file, std::env::vars().collect())
}

/// A parser's message on one line: TOML errors come with a snippet of the file (`7 | [source]`
/// and a caret line), which is dropped; the position and the reason are kept.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| {
            // Snippet lines: `7 | [source]`, `| ^^^^`, `|`.
            let snippet = l
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start()
                .starts_with('|');
            !l.is_empty() && !snippet
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// [`load`] with an explicit environment (tests pass their own instead of mutating the
/// process's).
pub fn load_with_env(
    file: Option<&Path>,
    env: HashMap<String, String>,
) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        let file_err = |message: String| ConfigError::File {
            path: path.to_owned(),
            message,
        };
        if !path.is_file() {
            return Err(file_err("not found (or not a file)".into()));
        }
        let format = match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("toml") => config::FileFormat::Toml,
            Some("yaml" | "yml") => config::FileFormat::Yaml,
            _ => {
                return Err(file_err(
                    "unknown format: name it *.toml, *.yaml or *.yml".into(),
                ));
            }
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        // Parse the file on its own first so that a syntax error is reported against the file.
        config::Config::builder()
            .add_source(config::File::from_str(&text, format))
            .build()
            .map_err(|e| file_err(one_line(&e.to_string())))?;
        builder = builder.add_source(config::File::from_str(&text, format));
    }
    let env: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env)),
    );
    let merged = builder
        .build()
        .map_err(|e| ConfigError::key("(environment)", e.to_string()))?;
    let settings: Settings = serde_path_to_error::deserialize(merged).map_err(|e| {
        let key = e.path().to_string();
        let message = e.inner().to_string();
        // The config crate appends its own idea of the key; ours is the full path.
        let message = message
            .split(" for key `")
            .next()
            .unwrap_or(&message)
            .to_owned();
        ConfigError::key(if key == "." { "(top level)" } else { &key }, message)
    })?;
    Ok(settings)
}

impl Settings {
    /// Checks values (no I/O). The first problem found is returned, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.refresh;
        if r.interval < Duration::from_secs(1) {
            return Err(ConfigError::key("refresh.interval", "must be at least 1s"));
        }
        if r.jitter > r.interval {
            return Err(ConfigError::key(
                "refresh.jitter",
                "must not exceed refresh.interval",
            ));
        }
        if !(1..=28).contains(&r.previous_month_final_day) {
            return Err(ConfigError::key(
                "refresh.previous_month_final_day",
                "must be a day from 1 to 28",
            ));
        }
        if r.retry_initial.is_zero() {
            return Err(ConfigError::key(
                "refresh.retry_initial",
                "must be greater than 0",
            ));
        }
        if r.retry_max < r.retry_initial {
            return Err(ConfigError::key(
                "refresh.retry_max",
                "must be at least refresh.retry_initial",
            ));
        }
        if r.timeout.is_zero() {
            return Err(ConfigError::key(
                "refresh.timeout",
                "must be greater than 0",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError::key(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        if self.server.header_read_timeout < Duration::from_millis(100) {
            return Err(ConfigError::key(
                "server.header_read_timeout",
                "must be at least 100ms",
            ));
        }
        if let Some(p) = self
            .server
            .unauthenticated_paths
            .iter()
            .find(|p| !p.starts_with('/'))
        {
            return Err(ConfigError::key(
                "server.unauthenticated_paths",
                format!("{p:?} is not a path (it must start with '/')"),
            ));
        }
        sql::validate_tag_key(&self.allocation.cost_center_tag)
            .map_err(|m| ConfigError::key("allocation.cost_center_tag", m))?;
        self.plans
            .validate()
            .map_err(|m| ConfigError::key("plans", m))?;
        if self.savings.idle_below_credits.is_sign_negative() {
            return Err(ConfigError::key(
                "savings.idle_below_credits",
                "must not be negative",
            ));
        }
        if self.savings.idle_grace_days > 31 {
            return Err(ConfigError::key(
                "savings.idle_grace_days",
                "must be a number of days from 0 to 31",
            ));
        }
        crate::source::local::session_config(1, &self.source.datafusion)
            .map_err(|m| ConfigError::key("source.datafusion", m))?;
        if self.source.engine == Engine::Athena {
            self.source.athena.validate()?;
            if self.source.athena.query_timeout * 2 >= r.timeout {
                return Err(ConfigError::key(
                    "source.athena.query_timeout",
                    "must be less than half of refresh.timeout (a refresh may query two months), \
                     so a slow query is stopped, not abandoned",
                ));
            }
        }
        if self.source.engine == Engine::Local && self.source.cur.as_os_str().is_empty() {
            return Err(ConfigError::key(
                "source.cur",
                "must name the CUR export folder",
            ));
        }
        self.alerts
            .validate()
            .map_err(|(k, m)| ConfigError::key(&k, m))?;
        self.cloudwatch
            .validate()
            .map_err(|(k, m)| ConfigError::key(&k, m))?;
        self.budgets
            .validate()
            .map_err(|(k, m)| ConfigError::key(&k, m))?;
        if !self.report.s3.is_empty() {
            crate::source::athena::S3Location::parse(&self.report.s3)
                .map_err(|m| ConfigError::key("report.s3", m))?;
        }
        if self.report.link_ttl.is_zero() || self.report.link_ttl > Duration::from_secs(7 * 86_400)
        {
            return Err(ConfigError::key(
                "report.link_ttl",
                "must be between 1s and 7d (the longest a presigned link lives)",
            ));
        }
        if self.report.schedule_day > 28 {
            return Err(ConfigError::key(
                "report.schedule_day",
                "must be a day from 1 to 28, or 0 for never",
            ));
        }
        for (i, ch) in self.report.channels.iter().enumerate() {
            match self.alerts.channels.iter().find(|c| &c.name == ch) {
                Some(c) if c.kind == crate::alert::notify::ChannelKind::Feishu => {}
                _ => {
                    return Err(ConfigError::key(
                        &format!("report.channels[{i}]"),
                        format!("no Feishu channel named {ch:?} in [[alerts.channels]]"),
                    ));
                }
            }
        }
        if self.server.shutdown_grace.is_zero() {
            return Err(ConfigError::key(
                "server.shutdown_grace",
                "must be greater than 0",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::key("log.level", e.to_string()))?;
        Ok(())
    }

    /// The settings that shape the allocation.
    pub fn allocation_settings(&self) -> AllocationSettings {
        AllocationSettings {
            cost_center_tag: self.allocation.cost_center_tag.clone(),
            cost_column: self.allocation.cost_column,
            plans: self.plans.clone(),
        }
    }

    /// The effective settings as TOML, with secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(ext: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("c.{ext}"));
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn defaults_are_valid() {
        let s = load_with_env(None, HashMap::new()).unwrap();
        assert_eq!(s, Settings::default());
        s.validate().unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:19877");
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let (_d, p) = file(
            "toml",
            "[refresh]\ninterval = \"10m\"\njitter = \"1m\"\n[source]\ncur = \"/data/a\"\n",
        );
        let s = load_with_env(
            Some(&p),
            env(&[
                ("KIRO_EXPORTER__REFRESH__INTERVAL", "90s"),
                ("KIRO_EXPORTER__SERVER__LISTEN", "127.0.0.1:9999"),
            ]),
        )
        .unwrap();
        assert_eq!(s.refresh.interval, Duration::from_secs(90));
        assert_eq!(s.refresh.jitter, Duration::from_secs(60));
        assert_eq!(s.source.cur, PathBuf::from("/data/a"));
        assert_eq!(s.server.listen.port(), 9999);
        assert_eq!(
            s.refresh.retry_max,
            Duration::from_secs(900),
            "untouched keys keep defaults"
        );
    }

    #[test]
    fn athena_settings_load_and_validate() {
        let (_d, p) = file(
            "toml",
            "[source]\nengine = \"athena\"\n[source.athena]\ndatabase = \"billing\"\nquery_timeout = \"2m\"\nresult_reuse_max_age = \"1h\"\n",
        );
        let s = load_with_env(
            Some(&p),
            env(&[("KIRO_EXPORTER__SOURCE__ATHENA__TABLE", "kiro_cur")]),
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.source.engine, Engine::Athena);
        assert_eq!(s.source.athena.database, "billing");
        assert_eq!(s.source.athena.table, "kiro_cur");
        assert_eq!(s.source.athena.query_timeout, Duration::from_secs(120));
        assert_eq!(s.source.athena.workgroup, "primary");

        let bad = |edit: fn(&mut Settings), key: &str| {
            let mut t = s.clone();
            edit(&mut t);
            let e = t.validate().unwrap_err().to_string();
            assert!(e.starts_with(&format!("config key {key}: ")), "{e}");
        };
        bad(
            |t| t.source.athena.table = "kiro;drop".into(),
            "source.athena.table",
        );
        bad(
            |t| t.source.athena.database = "a.b".into(),
            "source.athena.database",
        );
        bad(
            |t| t.source.athena.output_location = "/tmp/results".into(),
            "source.athena.output_location",
        );
        bad(
            |t| t.source.athena.skip_unchanged = "s3://Bad_Bucket/x".into(),
            "source.athena.skip_unchanged",
        );
        bad(
            |t| t.source.athena.endpoint_url = "localhost:4566".into(),
            "source.athena.endpoint_url",
        );
        bad(
            |t| t.source.athena.result_reuse_max_age = Duration::from_secs(8 * 86400),
            "source.athena.result_reuse_max_age",
        );
        bad(
            |t| t.source.athena.query_timeout = Duration::from_secs(3600),
            "source.athena.query_timeout",
        );
        bad(
            |t| t.source.athena.max_attempts = 0,
            "source.athena.max_attempts",
        );
        // The local engine does not look at [source.athena].
        let mut local = s.clone();
        local.source.engine = Engine::Local;
        local.source.athena.table = "kiro;drop".into();
        local.validate().unwrap();
    }

    #[test]
    fn yaml_is_read_too() {
        let (_d, p) = file(
            "yaml",
            "allocation:\n  cost_center_tag: userAttribute/Department\n  cost_column: line_item_net_unblended_cost\n",
        );
        let s = load_with_env(Some(&p), HashMap::new()).unwrap();
        assert_eq!(s.allocation.cost_center_tag, "userAttribute/Department");
        assert_eq!(s.allocation.cost_column, CostColumn::NetUnblended);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "toml",
                "[refresh]\nintervall = \"1h\"\n",
                "config key refresh.intervall: unknown field `intervall`",
            ),
            (
                "toml",
                "[refresh]\ninterval = \"soon\"\n",
                "refresh.interval",
            ),
            (
                "toml",
                "[server]\nlisten = \"localhost\"\n",
                "server.listen",
            ),
            (
                "toml",
                "[refresh]\nperiod = \"2026-13\"\n",
                "refresh.period",
            ),
            (
                "toml",
                "[allocation]\ncost_column = \"line_item_blended_cost\"\n",
                "allocation.cost_column",
            ),
            (
                "toml",
                "[sauce]\nx = 1\n",
                "config key sauce: unknown field `sauce`",
            ),
            ("yaml", "refresh: [1, 2\n", "config file"),
            ("toml", "[refresh\n", "config file"),
        ];
        for (ext, text, want) in cases {
            let (_d, p) = file(ext, text);
            let e = load_with_env(Some(&p), HashMap::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = load_with_env(
            None,
            env(&[("KIRO_EXPORTER__REFRESH__PREVIOUS_MONTH_FINAL_DAY", "x")]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("refresh.previous_month_final_day"),
            "{e}"
        );
    }

    #[test]
    fn validation_names_the_key() {
        let check = |f: &dyn Fn(&mut Settings), want: &str| {
            let mut s = Settings::default();
            f(&mut s);
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        check(&|s| s.refresh.interval = Duration::ZERO, "refresh.interval");
        check(
            &|s| s.savings.idle_grace_days = 40,
            "savings.idle_grace_days",
        );
        check(
            &|s| s.refresh.jitter = Duration::from_secs(7200),
            "refresh.jitter",
        );
        check(
            &|s| s.refresh.previous_month_final_day = 31,
            "refresh.previous_month_final_day",
        );
        check(
            &|s| s.refresh.retry_max = Duration::from_secs(1),
            "refresh.retry_max",
        );
        check(
            &|s| s.allocation.cost_center_tag = "a'b".into(),
            "allocation.cost_center_tag",
        );
        check(
            &|s| s.server.shutdown_grace = Duration::ZERO,
            "server.shutdown_grace",
        );
        check(&|s| s.log.level = "[[[".into(), "log.level");
    }

    #[test]
    fn missing_file_and_unknown_format() {
        let e = load_with_env(Some(Path::new("/nonexistent/x.toml")), HashMap::new()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.toml"), "{e}");
        let (_d, p) = file("ini", "a=1");
        assert!(
            load_with_env(Some(&p), HashMap::new())
                .unwrap_err()
                .to_string()
                .contains("unknown format")
        );
    }
}
