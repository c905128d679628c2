//! The refresh loop: on a schedule (interval plus jitter), allocate every watched billing
//! period, build a snapshot and publish it with its encoded exposition. A failed refresh keeps
//! the last good snapshot, is counted by kind, and is retried with capped exponential backoff.
//! Sources only allocate; scheduling, timeouts and retries live here, once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use rand::Rng;
use tokio::sync::watch;

use crate::alert::AlertEngine;
use crate::alert::budgets::Reconciler;
use crate::alert::notify::{Channel, ChannelKind};
use crate::allocation::savings::SavingsSettings;
use crate::allocation::{PlanTable, Snapshot};
use crate::config::RefreshSettings;
use crate::config::ReportSettings;
use crate::period::BillingPeriod;
use crate::server::{Published, State, landing_page};
use crate::sink::cloudwatch::CloudWatchSink;
use crate::sink::prometheus::{self as prom, ExporterMetrics};
use crate::source::{Source, SourceError};

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("refresh timed out after {0:?} (refresh.timeout)")]
    Timeout(Duration),
    #[error("no CUR partition for any watched period ({0})")]
    NoData(String),
    #[error(transparent)]
    Encode(#[from] prom::EncodeError),
}

impl RefreshError {
    /// Fixed label value for the exporter's failure counter.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Source(e) => e.kind(),
            Self::Timeout(_) => "timeout",
            Self::NoData(_) => "no_data",
            Self::Encode(_) => "encode",
        }
    }
}

/// The billing periods a refresh at `now` allocates: the one configured, or the current month
/// and, until `previous_month_final_day`, the previous one. Oldest first.
pub fn watched_periods(now: DateTime<Utc>, settings: &RefreshSettings) -> Vec<BillingPeriod> {
    if let Some(p) = settings.period {
        return vec![p];
    }
    let current = BillingPeriod::containing(now);
    if now.day() <= settings.previous_month_final_day {
        vec![current.previous(), current]
    } else {
        vec![current]
    }
}

/// The next delay after a failure: doubles from `retry_initial`, capped at `retry_max` and at
/// the refresh interval.
pub fn backoff(failures: u32, settings: &RefreshSettings) -> Duration {
    let exp = settings
        .retry_initial
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(20)));
    exp.min(settings.retry_max).min(settings.interval)
}

/// Owns the refresh loop and everything it publishes.
pub struct Refresher {
    source: Arc<dyn Source>,
    settings: RefreshSettings,
    plans: PlanTable,
    savings: SavingsSettings,
    state: Arc<State>,
    metrics: ExporterMetrics,
    /// The last good snapshot and its encoded data families.
    last_good: Option<(Arc<Snapshot>, Bytes)>,
    alerts: Option<AlertEngine>,
    report: Option<ScheduledReport>,
    cloudwatch: Option<CloudWatchSink>,
    budgets: Option<(Reconciler, Option<Instant>)>,
    last_error: Option<String>,
    after_refresh: Option<Box<dyn Fn() + Send + Sync>>,
}

/// The monthly report as `serve` sends it: the previous month, on `schedule_day`.
pub struct ScheduledReport {
    pub settings: ReportSettings,
    pub s3: Option<aws_sdk_s3::Client>,
    pub dashboard_url: String,
}

impl Refresher {
    /// A refresher with nothing published yet but the exporter's own metrics.
    pub fn new(
        source: Arc<dyn Source>,
        settings: RefreshSettings,
        plans: PlanTable,
        savings: SavingsSettings,
    ) -> Self {
        let metrics = ExporterMetrics::new(source.engine(), settings.interval);
        let exposition = prom::encode(None, &metrics).expect("exporter metrics encode");
        let state = Arc::new(State::new(Published {
            exposition,
            snapshot: None,
            last_error: None,
            landing: landing_page(None, None, Utc::now()),
        }));
        Self {
            source,
            settings,
            plans,
            savings,
            state,
            metrics,
            last_good: None,
            alerts: None,
            report: None,
            cloudwatch: None,
            budgets: None,
            last_error: None,
            after_refresh: None,
        }
    }

    /// Runs `hook` after every refresh, successful or not, once its result is published (the
    /// binary returns the query's transient memory to the OS there).
    pub fn after_refresh(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.after_refresh = Some(Box::new(hook));
        self
    }

    /// The counter notification channels count into (`kiro_exporter_notifications_total`).
    pub fn notifications_counter(&self) -> prometheus::IntCounterVec {
        self.metrics.notifications()
    }

    /// The counter the CloudWatch sink counts datums into.
    pub fn cloudwatch_counter(&self) -> prometheus::IntCounterVec {
        self.metrics.cloudwatch_datums()
    }

    /// Pushes each successful refresh's snapshot to CloudWatch.
    pub fn with_cloudwatch(mut self, sink: CloudWatchSink) -> Self {
        self.cloudwatch = Some(sink);
        self
    }

    /// Reconciles AWS Budgets after a successful refresh, at most once per
    /// `budgets.sync_interval`, and exports what they report.
    pub fn with_budgets(mut self, reconciler: Reconciler) -> Self {
        self.budgets = Some((reconciler, None));
        self
    }

    /// Evaluates alert rules after each successful refresh, and sends the monthly report when
    /// it is due.
    pub fn with_alerts(mut self, engine: AlertEngine, report: Option<ScheduledReport>) -> Self {
        self.alerts = Some(engine);
        self.report = report;
        self
    }

    /// The state the HTTP server reads.
    pub fn state(&self) -> Arc<State> {
        self.state.clone()
    }

    async fn build(&self, now: DateTime<Utc>) -> Result<(Snapshot, Bytes), RefreshError> {
        let periods = watched_periods(now, &self.settings);
        let mut allocations = Vec::with_capacity(periods.len());
        let mut missing = Vec::new();
        for &p in &periods {
            match self.source.allocate(p).await {
                Ok(a) => allocations.push(a),
                // Early in a month (or right after an export starts) a partition may not exist
                // yet; that period is skipped unless it was asked for explicitly.
                Err(e @ (SourceError::NoPartition { .. } | SourceError::NoObjects { .. }))
                    if self.settings.period.is_none() =>
                {
                    tracing::info!(period = %p, "no data for this period yet: {e}");
                    missing.push(e.to_string());
                }
                Err(e) => return Err(e.into()),
            }
        }
        if allocations.is_empty() {
            return Err(RefreshError::NoData(missing.join("; ")));
        }
        let snapshot = Snapshot {
            taken_at: now,
            allocations,
        };
        let families = prom::encode_snapshot(&snapshot, &self.plans, &self.savings);
        Ok((snapshot, Bytes::from(families)))
    }

    /// Runs one refresh and publishes its outcome.
    pub async fn refresh(&mut self) -> Result<(), RefreshError> {
        let started = Instant::now();
        let outcome =
            match tokio::time::timeout(self.settings.timeout, self.build(Utc::now())).await {
                Ok(r) => r,
                Err(_) => Err(RefreshError::Timeout(self.settings.timeout)),
            };
        let took = started.elapsed();
        let error = match outcome {
            Ok((snapshot, families)) => {
                self.metrics.record_success(&snapshot, took);
                for a in &snapshot.allocations {
                    tracing::info!(
                        period = %a.period,
                        units = a.units.len(),
                        total_usd = %a.kiro_total_usd,
                        scanned_bytes = a.stats.scanned_bytes,
                        query_ms = a.stats.elapsed.as_millis() as u64,
                        "allocated"
                    );
                }
                self.last_good = Some((Arc::new(snapshot), families));
                None
            }
            Err(e) => {
                self.metrics.record_failure(e.kind(), took);
                tracing::warn!(
                    kind = e.kind(),
                    "refresh failed, keeping the last good snapshot: {e}"
                );
                Some(e)
            }
        };
        self.last_error = error.as_ref().map(ToString::to_string);
        self.publish()?;
        if error.is_none()
            && (self.alerts.is_some() || self.cloudwatch.is_some() || self.budgets.is_some())
        {
            self.push_cloudwatch().await;
            self.sync_budgets().await;
            self.notify().await;
            // The sinks' counters changed.
            self.publish()?;
        }
        error.map_or(Ok(()), Err)
    }

    fn publish(&self) -> Result<(), RefreshError> {
        let (snapshot, families) = match &self.last_good {
            Some((s, f)) => (Some(s.clone()), Some(f.as_ref())),
            None => (None, None),
        };
        let exposition = prom::encode(families, &self.metrics)?;
        self.state.publish(Published {
            landing: landing_page(snapshot.as_deref(), self.last_error.as_deref(), Utc::now()),
            exposition,
            snapshot,
            last_error: self.last_error.clone(),
        });
        Ok(())
    }

    /// Pushes the last good snapshot to CloudWatch; a failure is logged and counted, and
    /// /metrics goes on serving.
    async fn push_cloudwatch(&self) {
        let (Some(sink), Some((snapshot, _))) = (&self.cloudwatch, &self.last_good) else {
            return;
        };
        match sink.push(snapshot).await {
            Ok(p) => tracing::info!(
                distinct_metrics = p.datums,
                calls = p.calls,
                "pushed to CloudWatch"
            ),
            Err(e) => tracing::error!("{e}"),
        }
    }

    /// Budgets: plan and apply, then read back; failures are logged and retried next time.
    async fn sync_budgets(&mut self) {
        let (Some((reconciler, last)), Some((snapshot, _))) =
            (self.budgets.as_mut(), self.last_good.as_ref())
        else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < reconciler.settings().sync_interval) {
            return;
        }
        let seen: Vec<&str> = snapshot
            .current()
            .map(|a| a.cost_centers().into_keys().collect())
            .unwrap_or_default();
        match reconciler.sync(seen, false).await {
            Ok(changes) => {
                for c in &changes {
                    tracing::info!("budgets: {c}");
                }
                *last = Some(Instant::now());
            }
            Err(e) => {
                self.metrics.record_budget_sync(false);
                tracing::error!("budgets sync failed; retried after the next refresh: {e}");
                return;
            }
        }
        match reconciler.readings().await {
            Ok(r) => {
                self.metrics.record_budget_sync(true);
                self.metrics.set_budgets(&r);
            }
            Err(e) => {
                self.metrics.record_budget_sync(false);
                // Read back at the next refresh, not after the next sync interval.
                *last = None;
                tracing::error!(
                    "cannot read the budgets back; retried after the next refresh: {e}"
                );
            }
        }
    }

    /// Alert evaluation and the scheduled report; failures are logged and retried at the next
    /// refresh (nothing undelivered is marked delivered).
    async fn notify(&mut self) {
        let (Some(engine), Some((snapshot, _))) = (self.alerts.as_mut(), self.last_good.as_ref())
        else {
            return;
        };
        let now = Utc::now();
        let evaluated = engine.evaluate(snapshot, now).await;
        self.metrics.record_state_save(!matches!(
            evaluated,
            Err(crate::alert::AlertError::State(_))
        ));
        match evaluated {
            Ok(round) if round.due > 0 || round.firing > 0 => tracing::info!(
                firing = round.firing,
                due = round.due,
                delivered = round.delivered,
                undelivered = round.undelivered,
                messages = round.messages,
                "alerts evaluated"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(
                "alert evaluation failed; what was delivered stays recorded in memory and is saved at the next evaluation: {e}"
            ),
        }
        let Some(report) = &self.report else {
            return;
        };
        let day = report.settings.schedule_day;
        if day == 0 || now.day() < day {
            return;
        }
        let period = BillingPeriod::containing(now).previous();
        if engine.state().reports.contains(&period) {
            return;
        }
        let allocation = match snapshot.allocations.iter().find(|a| a.period == period) {
            Some(a) => a.clone(),
            None => match self.source.allocate(period).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(%period, "monthly report: cannot allocate the month: {e}");
                    return;
                }
            },
        };
        let savings =
            crate::allocation::savings::recommend(&allocation, &self.plans, &self.savings, now);
        let wanted = &report.settings.channels;
        // Channels that got this period's card on an earlier, partly failed attempt.
        let done = engine
            .state()
            .report_channels
            .get(&period)
            .cloned()
            .unwrap_or_default();
        let channels: Vec<&Channel> = engine
            .channels()
            .iter()
            .filter(|c| {
                c.config.kind == ChannelKind::Feishu
                    && (wanted.is_empty() || wanted.iter().any(|w| w == c.name()))
                    && !done.contains(c.name())
            })
            .collect();
        match crate::report::run(
            &allocation,
            &savings,
            &report.settings,
            report.s3.as_ref(),
            &channels,
            &report.dashboard_url,
        )
        .await
        {
            Ok(out) => {
                let state = engine.state_mut();
                state.reports.insert(period);
                state.report_channels.remove(&period);
                while state.reports.len() > 24 {
                    state.reports.pop_first();
                }
                save_state(engine, &self.metrics, "the report");
                // Logged once recorded, so whoever reads the line finds the state file saying so.
                tracing::info!(%period, path = %out.path.display(), uploaded = out.link.is_some(), cards = out.cards_sent, "monthly report sent");
            }
            Err(e) => {
                if let crate::report::ReportError::Undelivered { delivered, .. } = &e
                    && !delivered.is_empty()
                {
                    // Recorded so that the retry does not send these channels the card again.
                    engine
                        .state_mut()
                        .report_channels
                        .entry(period)
                        .or_default()
                        .extend(delivered.iter().cloned());
                    save_state(engine, &self.metrics, "the report's deliveries");
                }
                tracing::error!(%period, "monthly report failed; retried at the next refresh for the channels that lack it: {e}")
            }
        }
    }

    /// Refreshes now and then on schedule until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            let delay = tokio::select! {
                r = self.refresh() => match r {
                    Ok(()) => {
                        failures = 0;
                        let jitter = self.settings.jitter.as_millis() as u64;
                        let extra = if jitter == 0 { 0 } else { rand::rng().random_range(0..=jitter) };
                        self.settings.interval + Duration::from_millis(extra)
                    }
                    Err(_) => {
                        failures += 1;
                        backoff(failures, &self.settings)
                    }
                },
                _ = shutdown.wait_for(|s| *s) => return,
            };
            if let Some(hook) = &self.after_refresh {
                hook();
            }
            tracing::debug!(?delay, "next refresh");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Saves the alert state after recording `what` in it; a failure is counted and logged, and
/// what was recorded stays in memory for the next save.
fn save_state(engine: &AlertEngine, metrics: &ExporterMetrics, what: &str) {
    let saved = engine.save();
    metrics.record_state_save(saved.is_ok());
    if let Err(e) = saved {
        tracing::error!("cannot record {what} in the state file; it stays recorded in memory: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn previous_month_is_watched_until_its_final_day() {
        let s = RefreshSettings::default();
        let d = |day| Utc.with_ymd_and_hms(2026, 1, day, 12, 0, 0).unwrap();
        assert_eq!(
            watched_periods(d(5), &s)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["2025-12", "2026-01"]
        );
        assert_eq!(
            watched_periods(d(6), &s)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["2026-01"]
        );
        let fixed = RefreshSettings {
            period: Some("2024-02".parse().unwrap()),
            ..s
        };
        assert_eq!(watched_periods(d(1), &fixed).len(), 1);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = RefreshSettings {
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(300),
            ..RefreshSettings::default()
        };
        let secs: Vec<u64> = (1..=6).map(|n| backoff(n, &s).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 300, 300]);
        let short = RefreshSettings {
            interval: Duration::from_secs(45),
            ..s
        };
        assert_eq!(
            backoff(3, &short).as_secs(),
            45,
            "never longer than the interval"
        );
        assert_eq!(backoff(u32::MAX, &short).as_secs(), 45);
    }
}
