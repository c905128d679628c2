//! The exporter's own health (prefix `kiro_exporter_`) and its logs.
//!
//! Counters and gauges live in a registry that outlives refreshes; every counter exists from
//! start for the label values it can take. One `result` vocabulary ([`Outcome`]) for every
//! counter that has one. Each sink is counted the same way
//! (`kiro_exporter_sink_errors_total{sink,kind}`,
//! `kiro_exporter_sink_last_success_timestamp_seconds{sink}`, node_exporter's per-collector
//! health), besides the sinks' own counters.

use crate::failure::FailureKind;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{Gauge, GaugeVec, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;

/// The `result` label of every counter that has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// An attempt that failed and was tried again (notifications).
    Retry,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Retry => "retry",
        }
    }

    pub fn of(ok: bool) -> Self {
        if ok { Self::Success } else { Self::Failure }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A `tracing` filter, e.g. `info` or `kiro_cost_exporter=debug`. `RUST_LOG` wins when set.
    pub level: String,
    /// `text` (one readable line per event; coloured only on a terminal) or `json` (one JSON
    /// object per line, for journald forwarders, Fluent Bit, CloudWatch Logs and the like).
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl LogSettings {
    /// Checks values (no I/O); errors name the key under `log`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|e| ConfigError::key("log.level", e.to_string()))
    }

    /// Starts logging to standard error at this level (`RUST_LOG` wins when set), in this
    /// format. Text is coloured only when standard error is a terminal and `NO_COLOR` is unset.
    pub fn init(&self) {
        use std::io::IsTerminal as _;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&self.level));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match self.format {
            LogFormat::Text => {
                let colour = std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
                builder.with_ansi(colour).try_init()
            }
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_ansi(false)
                .try_init(),
        };
    }
}

/// A descriptor the registry refused: only possible through a programming error.
#[derive(Debug, thiserror::Error)]
#[error("cannot register the exporter's metrics: {0}")]
pub struct TelemetryError(#[from] prometheus::Error);

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<GaugeVec, prometheus::Error> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn gauge(r: &Registry, name: &str, help: &str) -> Result<Gauge, prometheus::Error> {
    let g = Gauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// What AWS Budgets reported for one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetReading {
    pub budget: String,
    /// The cost center it limits, or `(all)`.
    pub cost_center: String,
    pub limit_usd: f64,
    pub actual_usd: Option<f64>,
    pub forecast_usd: Option<f64>,
}

/// The exporter's own metrics.
pub struct Telemetry {
    registry: Registry,
    refreshes: IntCounterVec,
    failures: IntCounterVec,
    last_success: Gauge,
    duration: Gauge,
    scanned_bytes: GaugeVec,
    read_bytes: prometheus::IntCounter,
    cache_bytes: Gauge,
    closed_revisions: prometheus::IntCounter,
    history: HistoryMetrics,
    activity_malformed: Gauge,
    identity_lookups: IntCounterVec,
    web_config: WebConfigGauges,
    budgets: BudgetGauges,
    sinks: SinkMetrics,
}

/// How the sinks delivered: notifications, CloudWatch datums, budget syncs, state saves,
/// errors by sink and kind, each sink's last success.
struct SinkMetrics {
    notifications: IntCounterVec,
    cloudwatch_datums: IntCounterVec,
    budget_syncs: IntCounterVec,
    state_saves: IntCounterVec,
    sink_errors: IntCounterVec,
    sink_last_success: GaugeVec,
}

/// The closed months history holds, and how many it allocated.
struct HistoryMetrics {
    allocations: prometheus::IntCounter,
    months: Gauge,
}

impl HistoryMetrics {
    fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let allocations = prometheus::IntCounter::new(
            "kiro_exporter_history_allocations_total",
            "Closed months allocated for history (history.months): each once, and again only when its kept record is lost.",
        )?;
        r.register(Box::new(allocations.clone()))?;
        let months = gauge(
            r,
            "kiro_exporter_history_months",
            "Closed months history holds (history.months), read from history.dir at start or allocated since.",
        )?;
        Ok(Self {
            allocations,
            months,
        })
    }
}

/// Whether the web config file was last read well, and when.
struct WebConfigGauges {
    reload_ok: Gauge,
    reload_at: Gauge,
}

impl WebConfigGauges {
    /// Named as Prometheus names its own configuration reloads.
    fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let reload_ok = gauge(
            r,
            "kiro_exporter_web_config_last_reload_successful",
            "Whether the last reading of the web config file (and the files it names) succeeded; 0 keeps the previous settings in force.",
        )?;
        reload_ok.set(1.0);
        let reload_at = gauge(
            r,
            "kiro_exporter_web_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful reading of the web config file (the start, until it changes).",
        )?;
        reload_at.set(Utc::now().timestamp_millis() as f64 / 1000.0);
        Ok(Self {
            reload_ok,
            reload_at,
        })
    }
}

/// What AWS Budgets reports for the budgets the exporter owns.
struct BudgetGauges {
    limit: GaugeVec,
    actual: GaugeVec,
    forecast: GaugeVec,
}

impl BudgetGauges {
    fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let budget = |name: &str, help: &str| gauge_vec(r, name, help, &["budget", "cost_center"]);
        Ok(Self {
            limit: budget(
                "kiro_budget_limit_usd",
                "Monthly limit of an AWS Budget the exporter owns (cost_center \"(all)\": all of Kiro).",
            )?,
            actual: budget(
                "kiro_budget_actual_usd",
                "Actual spend AWS Budgets reports for the budget this month.",
            )?,
            forecast: budget(
                "kiro_budget_forecast_usd",
                "Forecasted spend AWS Budgets reports for the budget this month.",
            )?,
        })
    }
}

impl SinkMetrics {
    fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let notifications = counter_vec(
            r,
            "kiro_exporter_notifications_total",
            "Notification messages by channel and result (success, failure, retry).",
            &["channel", "result"],
        )?;
        let cloudwatch_datums = counter_vec(
            r,
            "kiro_exporter_cloudwatch_datums_total",
            "Datums pushed to CloudWatch by result (success, failure).",
            &["result"],
        )?;
        let budget_syncs = counter_vec(
            r,
            "kiro_exporter_budget_syncs_total",
            "AWS Budgets reconciliations by result (success, failure); a failure is retried after the next refresh.",
            &["result"],
        )?;
        let state_saves = counter_vec(
            r,
            "kiro_exporter_state_saves_total",
            "State file saves by result (success, failure); after a failure the state is kept in memory and saved at the next evaluation.",
            &["result"],
        )?;
        for c in [&cloudwatch_datums, &budget_syncs, &state_saves] {
            for o in [Outcome::Success, Outcome::Failure] {
                c.with_label_values(&[o.as_str()]).inc_by(0);
            }
        }
        let sink_errors = counter_vec(
            r,
            "kiro_exporter_sink_errors_total",
            "Failed deliveries of a snapshot by sink (cloudwatch, aws_budgets, alerts, report) and kind.",
            &["sink", "kind"],
        )?;
        let sink_last_success = gauge_vec(
            r,
            "kiro_exporter_sink_last_success_timestamp_seconds",
            "Unix time a sink last delivered a snapshot completely; 0 before its first.",
            &["sink"],
        )?;
        Ok(Self {
            notifications,
            cloudwatch_datums,
            budget_syncs,
            state_saves,
            sink_errors,
            sink_last_success,
        })
    }
}

/// `kiro_exporter_build_info`: the version, the commit built (`build.rs`), the compiler and
/// the engine, as Prometheus' own exporters name their builds.
fn build_info(r: &Registry, engine: &str) -> Result<(), TelemetryError> {
    gauge_vec(
        r,
        "kiro_exporter_build_info",
        "Build information: version, the commit built (revision), the compiler (rustc) and the engine; always 1.",
        &["version", "revision", "rustc", "engine"],
    )?
    .with_label_values(&[
        env!("CARGO_PKG_VERSION"),
        env!("KIRO_EXPORTER_REVISION"),
        env!("KIRO_EXPORTER_RUSTC"),
        engine,
    ])
    .set(1.0);
    Ok(())
}

impl Telemetry {
    /// `interval` is the configured refresh interval, published so that staleness alerts can
    /// compare the last success against it.
    pub fn new(engine: &str, interval: Duration) -> Result<Self, TelemetryError> {
        let r = Registry::new();
        gauge(
            &r,
            "kiro_exporter_refresh_interval_seconds",
            "Configured time between refreshes (refresh.interval).",
        )?
        .set(interval.as_secs_f64());
        build_info(&r, engine)?;
        let refreshes = counter_vec(
            &r,
            "kiro_exporter_refresh_total",
            "Refreshes by result (success, failure).",
            &["result"],
        )?;
        for o in [Outcome::Success, Outcome::Failure] {
            refreshes.with_label_values(&[o.as_str()]).inc_by(0);
        }
        let kinds: Vec<&str> = FailureKind::REFRESH.iter().map(|k| k.as_str()).collect();
        let failures = counter_vec(
            &r,
            "kiro_exporter_refresh_failures_total",
            &format!("Failed refreshes by kind ({}).", kinds.join(", ")),
            &["kind"],
        )?;
        // Counters exist at 0 for their known label values from the start: a first failure
        // after a start is an increase that alerts can see.
        for kind in kinds {
            failures.with_label_values(&[kind]).inc_by(0);
        }
        let last_success = gauge(
            &r,
            "kiro_exporter_last_success_timestamp_seconds",
            "Unix time of the last successful refresh; 0 before the first.",
        )?;
        let duration = gauge(
            &r,
            "kiro_exporter_refresh_duration_seconds",
            "Wall time of the last refresh, successful or not.",
        )?;
        let scanned_bytes = gauge_vec(
            &r,
            "kiro_exporter_query_scanned_bytes",
            "Bytes the query engine read for a billing period in the last successful refresh.",
            &["billing_period"],
        )?;
        let sinks = SinkMetrics::register(&r)?;
        let read_bytes = prometheus::IntCounter::new(
            "kiro_exporter_source_read_bytes_total",
            "Bytes the embedded engine fetched from the export (local disk or S3: footers and the column ranges scanned).",
        )?;
        r.register(Box::new(read_bytes.clone()))?;
        let cache_bytes = gauge(
            &r,
            "kiro_exporter_source_cache_bytes",
            "Approximate bytes the embedded engine keeps between refreshes (file footers and the allocations of unchanged periods).",
        )?;
        let closed_revisions = prometheus::IntCounter::new(
            "kiro_exporter_closed_period_revisions_total",
            "Times a month's total changed after its monthly report was sent (AWS may update a month for two weeks after it ends).",
        )?;
        r.register(Box::new(closed_revisions.clone()))?;
        let history = HistoryMetrics::register(&r)?;
        let activity_malformed = gauge(
            &r,
            "kiro_exporter_activity_malformed_files",
            "Activity report files of the watched periods skipped at the last refresh because they could not be read (named in the log).",
        )?;
        let identity_lookups = counter_vec(
            &r,
            "kiro_exporter_identity_lookups_total",
            "Identity Store DescribeUser lookups by result (success, not_found, failure); a failure is retried at the next refresh.",
            &["result"],
        )?;
        for result in ["success", "not_found", "failure"] {
            identity_lookups.with_label_values(&[result]).inc_by(0);
        }
        let web_config = WebConfigGauges::register(&r)?;
        let budgets = BudgetGauges::register(&r)?;
        Ok(Self {
            registry: r,
            refreshes,
            failures,
            last_success,
            duration,
            scanned_bytes,
            read_bytes,
            cache_bytes,
            closed_revisions,
            history,
            activity_malformed,
            identity_lookups,
            web_config,
            budgets,
            sinks,
        })
    }

    /// The registry the exposition encodes.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Replaces the budget gauges with what AWS Budgets reported.
    pub fn set_budgets(&self, readings: &[BudgetReading]) {
        self.budgets.limit.reset();
        self.budgets.actual.reset();
        self.budgets.forecast.reset();
        for b in readings {
            let l = [b.budget.as_str(), b.cost_center.as_str()];
            self.budgets.limit.with_label_values(&l).set(b.limit_usd);
            if let Some(v) = b.actual_usd {
                self.budgets.actual.with_label_values(&l).set(v);
            }
            if let Some(v) = b.forecast_usd {
                self.budgets.forecast.with_label_values(&l).set(v);
            }
        }
    }

    /// The CloudWatch datums counter, for the sink to count into.
    pub fn cloudwatch_datums(&self) -> IntCounterVec {
        self.sinks.cloudwatch_datums.clone()
    }

    /// The notifications counter, for the channels to count into.
    pub fn notifications(&self) -> IntCounterVec {
        self.sinks.notifications.clone()
    }

    /// Counts one AWS Budgets reconciliation.
    pub fn record_budget_sync(&self, ok: bool) {
        self.sinks
            .budget_syncs
            .with_label_values(&[Outcome::of(ok).as_str()])
            .inc();
    }

    /// Counts one save of the state file.
    pub fn record_state_save(&self, ok: bool) {
        self.sinks
            .state_saves
            .with_label_values(&[Outcome::of(ok).as_str()])
            .inc();
    }

    /// Counts a refresh's Identity Store lookups.
    pub fn record_identity_lookups(&self, l: &crate::source::identity::Lookups) {
        for (result, n) in [
            (Outcome::Success.as_str(), l.found),
            ("not_found", l.not_found),
            (Outcome::Failure.as_str(), l.failed),
        ] {
            self.identity_lookups
                .with_label_values(&[result])
                .inc_by(n as u64);
        }
    }

    /// The web config was read again: successfully (now in force) or not (the previous one
    /// stays).
    pub fn record_web_config_reload(&self, ok: bool) {
        self.web_config.reload_ok.set(if ok { 1.0 } else { 0.0 });
        if ok {
            self.web_config
                .reload_at
                .set(Utc::now().timestamp_millis() as f64 / 1000.0);
        }
    }

    /// Activity report files skipped at the last read.
    pub fn set_activity_malformed(&self, files: usize) {
        self.activity_malformed.set(files as f64);
    }

    /// A closed month was allocated for history.
    pub fn record_history_allocation(&self) {
        self.history.allocations.inc();
    }

    /// Closed months history holds.
    pub fn set_history_months(&self, months: usize) {
        self.history.months.set(months as f64);
    }

    /// A month whose report was sent changed afterwards.
    pub fn record_closed_revision(&self) {
        self.closed_revisions.inc();
    }

    /// A sink exists: its last success reads 0 until its first.
    pub fn register_sink(&self, sink: &str) {
        self.sinks
            .sink_last_success
            .with_label_values(&[sink])
            .set(0.0);
    }

    /// A sink delivered a snapshot completely at `at`.
    pub fn record_sink_success(&self, sink: &str, at: DateTime<Utc>) {
        self.sinks
            .sink_last_success
            .with_label_values(&[sink])
            .set(at.timestamp_millis() as f64 / 1000.0);
    }

    /// A sink failed with an error of `kind`.
    pub fn record_sink_error(&self, sink: &str, kind: FailureKind) {
        self.sinks
            .sink_errors
            .with_label_values(&[sink, kind.as_str()])
            .inc();
    }

    /// A refresh succeeded at `taken_at` after `took`; `scanned` are the bytes per period.
    pub fn record_success(
        &self,
        taken_at: DateTime<Utc>,
        took: Duration,
        scanned: impl IntoIterator<Item = (String, Option<u64>)>,
    ) {
        self.refreshes
            .with_label_values(&[Outcome::Success.as_str()])
            .inc();
        self.last_success
            .set(taken_at.timestamp_millis() as f64 / 1000.0);
        self.duration.set(took.as_secs_f64());
        self.scanned_bytes.reset();
        for (period, bytes) in scanned {
            if let Some(b) = bytes {
                self.scanned_bytes
                    .with_label_values(&[&period])
                    .set(b as f64);
            }
        }
    }

    /// What the source keeps between refreshes.
    pub fn set_cache_bytes(&self, bytes: u64) {
        self.cache_bytes.set(bytes as f64);
    }

    /// The embedded engine fetched `bytes` from the export.
    pub fn add_read_bytes(&self, bytes: u64) {
        self.read_bytes.inc_by(bytes);
    }

    /// A refresh failed with an error of `kind` after `took`.
    pub fn record_failure(&self, kind: FailureKind, took: Duration) {
        self.refreshes
            .with_label_values(&[Outcome::Failure.as_str()])
            .inc();
        self.failures.with_label_values(&[kind.as_str()]).inc();
        self.duration.set(took.as_secs_f64());
    }
}
