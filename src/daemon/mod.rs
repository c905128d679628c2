//! The refresh loop: on a schedule (interval plus jitter), allocate every watched billing
//! period, build a snapshot (its views computed once) and publish it with its encoded
//! exposition and landing page, then hand it to every sink. A failed refresh keeps the last
//! good snapshot, is counted by kind, and is retried with capped exponential backoff. Sources
//! only allocate and sinks only deliver; scheduling, timeouts, retries and the counting of
//! every sink's failures live here, once.

pub mod schedule;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::watch;

use crate::allocation::savings::{Prior, SavingsSettings, Window};
use crate::failure::FailureKind;
use crate::history::{HistorySettings, HistoryStore, Kept, MonthRecord};
use crate::period::BillingPeriod;
use crate::server::exposition::Families;
use crate::server::{Published, State};
use crate::sink::prometheus::{self as prom, EncodeError};
use crate::sink::{Delivery, Sink, landing};
use crate::snapshot::history::{record_of, view_of};
use crate::snapshot::{Snapshot, SnapshotBuilder};
use crate::source::{Source, SourceError};
use crate::telemetry::Telemetry;
pub use schedule::{RefreshSettings, backoff, watched_periods};
use std::collections::BTreeMap;

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
    Encode(#[from] EncodeError),
}

impl RefreshError {
    /// Fixed label value for the exporter's failure counter.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Source(e) => e.kind(),
            Self::Timeout(_) => FailureKind::Timeout,
            Self::NoData(_) => FailureKind::NoData,
            Self::Encode(_) => FailureKind::Encode,
        }
    }
}

/// Owns the refresh loop and everything it publishes.
pub struct Refresher {
    source: Arc<dyn Source>,
    settings: RefreshSettings,
    /// Builds each snapshot: the plan table, savings settings, activity report and names.
    builder: Arc<SnapshotBuilder>,
    state: Arc<State>,
    telemetry: Arc<Telemetry>,
    /// The last good snapshot and its data families, compressed.
    last_good: Option<(Arc<Snapshot>, Families)>,
    sinks: Vec<Box<dyn Sink>>,
    prometheus: prom::PrometheusSettings,
    last_error: Option<String>,
    after_refresh: Option<Box<dyn Fn() + Send + Sync>>,
    /// Asks for the exposition to be encoded again between refreshes (the exporter's own
    /// metrics changed, e.g. a web config reload).
    republish: Arc<tokio::sync::Notify>,
    /// What the landing page shows besides the snapshot.
    landing: landing::LandingSettings,
    /// Each sink's last success and last error, for the landing page.
    sink_health: BTreeMap<String, landing::SinkHealth>,
    /// The closed months kept, when `history.months` is not 0.
    history: Option<History>,
}

/// The closed months the daemon keeps ([`crate::history`]).
struct History {
    settings: HistorySettings,
    store: Option<HistoryStore>,
    kept: Kept,
    /// Months that could not be allocated in this run (no data, or a failure, logged): not
    /// tried again until a restart.
    unavailable: std::collections::BTreeSet<BillingPeriod>,
    idle_below: rust_decimal::Decimal,
    grace_days: u32,
}

impl History {
    /// What history says of `snapshot`'s months: the kept months of its window, each seat's
    /// tenure, and whether every month wanted is read.
    fn view(&self, snapshot: &Snapshot) -> crate::history::HistoryView {
        let watched: Vec<BillingPeriod> = snapshot
            .periods
            .iter()
            .map(|v| v.allocation.period)
            .collect();
        let window = self.window(&watched);
        let mut view = view_of(
            &self.kept,
            &window,
            snapshot,
            self.idle_below,
            self.grace_days,
        );
        view.settled = window
            .iter()
            .all(|p| self.kept.contains(*p) || self.unavailable.contains(p));
        view
    }

    /// The closed months wanted when `watched` are watched.
    fn window(&self, watched: &[BillingPeriod]) -> Vec<BillingPeriod> {
        watched
            .last()
            .map_or_else(Vec::new, |&newest| self.settings.wanted(newest, watched))
    }
}

impl Refresher {
    /// A refresher with nothing published yet but the exporter's own metrics.
    pub fn new(
        source: Arc<dyn Source>,
        settings: RefreshSettings,
        builder: Arc<SnapshotBuilder>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, RefreshError> {
        let exposition = prom::encode(None, &telemetry)?;
        let state = Arc::new(State::new(Published {
            exposition,
            ready: false,
            landing: landing::render(
                None,
                &landing::LandingSettings::default(),
                &landing::Health::default(),
            ),
        }));
        Ok(Self {
            source,
            settings,
            builder,
            state,
            telemetry,
            last_good: None,
            sinks: Vec::new(),
            prometheus: prom::PrometheusSettings::default(),
            last_error: None,
            after_refresh: None,
            republish: Arc::new(tokio::sync::Notify::new()),
            landing: landing::LandingSettings::default(),
            sink_health: BTreeMap::new(),
            history: None,
        })
    }

    /// Keeps `settings.months` closed months (read back from `settings.dir` when set), and
    /// gives each seat its tenure with `savings`' idle threshold and grace days.
    pub fn with_history(mut self, settings: HistorySettings, savings: &SavingsSettings) -> Self {
        if settings.months == 0 {
            return self;
        }
        let store =
            (!settings.dir.as_os_str().is_empty()).then(|| HistoryStore::new(&settings.dir));
        let mut kept = Kept::default();
        if let Some(store) = &store {
            let (months, problems) = store.load(|r| kept.insert(&r));
            for p in problems {
                tracing::warn!("history: {p}; that month is allocated again");
            }
            tracing::info!(dir = %settings.dir.display(), months, "history read");
        }
        self.history = Some(History {
            settings,
            store,
            kept,
            unavailable: Default::default(),
            idle_below: savings.idle_below_credits,
            grace_days: savings.idle_grace_days,
        });
        self
    }

    /// Records the snapshot's closed months, then allocates one closed month history lacks
    /// (newest first). Never fails the refresh: what goes wrong is logged, and a month that
    /// cannot be allocated is not tried again in this run.
    async fn keep_history(&mut self, snapshot: &Snapshot) -> bool {
        let Some(h) = &mut self.history else {
            return false;
        };
        let unavailable = h.unavailable.len();
        let watched: Vec<BillingPeriod> = snapshot
            .periods
            .iter()
            .map(|v| v.allocation.period)
            .collect();
        let mut fresh: Vec<MonthRecord> = Vec::new();
        for v in &snapshot.periods {
            if v.allocation.period.end() <= snapshot.taken_at {
                let r = record_of(v, snapshot.taken_at);
                if !h.kept.holds(&r) {
                    fresh.push(r);
                }
            }
        }
        let missing: Vec<BillingPeriod> = watched.last().map_or_else(Vec::new, |&newest| {
            h.settings
                .wanted(newest, &watched)
                .into_iter()
                .filter(|p| !h.kept.contains(*p) && !h.unavailable.contains(p))
                .collect()
        });
        // One month allocated a refresh; months without data cost nothing and are passed over.
        for p in missing {
            let allocated =
                tokio::time::timeout(self.settings.timeout, self.source.allocate_once(p)).await;
            match allocated {
                Ok(Ok(a)) => {
                    self.telemetry.record_history_allocation();
                    let built = self.builder.build(snapshot.taken_at, vec![a]).await;
                    if let Some(v) = built.snapshot.periods.first() {
                        fresh.push(record_of(v, snapshot.taken_at));
                    }
                    break;
                }
                Ok(Err(e @ (SourceError::NoPartition { .. } | SourceError::NoObjects { .. }))) => {
                    tracing::info!(period = %p, "history: no data for this month: {e}");
                    h.unavailable.insert(p);
                }
                Ok(Err(e)) => {
                    tracing::warn!(period = %p, kind = e.kind().as_str(), "history: cannot allocate this month, not tried again until a restart: {e}");
                    h.unavailable.insert(p);
                    break;
                }
                Err(_) => {
                    tracing::warn!(period = %p, "history: allocating this month took longer than refresh.timeout; not tried again until a restart");
                    h.unavailable.insert(p);
                    break;
                }
            }
        }
        let changed = !fresh.is_empty() || h.unavailable.len() != unavailable;
        for r in fresh {
            if let Some(store) = h.store.clone() {
                let record = r.clone();
                let saved = tokio::task::spawn_blocking(move || store.save(&record)).await;
                match saved {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("history: {e}; kept in memory only"),
                    Err(e) => tracing::warn!("history: the save did not finish: {e}"),
                }
            }
            h.kept.insert(&r);
        }
        // Months that left the window are let go.
        if let Some(&newest) = watched.last() {
            let wanted = h.settings.wanted(newest, &watched);
            h.kept
                .retain(|p| wanted.contains(&p) || watched.contains(&p));
            self.telemetry
                .set_history_months(h.kept.periods().filter(|p| wanted.contains(p)).count());
        }
        changed
    }

    /// Keeps history's months and, when that changed what history holds, gives the last good
    /// snapshot its new history (and exposition), so that the sinks that follow, `/metrics`
    /// and the landing page all see the same months.
    async fn update_history(&mut self) -> Result<bool, RefreshError> {
        let Some((snapshot, _)) = &self.last_good else {
            return Ok(false);
        };
        let snapshot = snapshot.clone();
        let changed = self.keep_history(&snapshot).await;
        drop(snapshot);
        let (Some(h), Some((snapshot, _)), true) = (&self.history, &mut self.last_good, changed)
        else {
            return Ok(false);
        };
        // Held nowhere else by now: changed in place, not copied.
        let s = Arc::make_mut(snapshot);
        s.history = h.view(s);
        let families = prom::compress_snapshot_with(s, &self.prometheus)?;
        self.last_good = Some((snapshot.clone(), families));
        self.publish()?;
        Ok(true)
    }

    /// History still lacks months it can read: the last good snapshot says it is not settled.
    fn history_unsettled(&self) -> bool {
        self.last_good
            .as_ref()
            .is_some_and(|(s, _)| s.history.kept && !s.history.settled)
    }

    /// Reads one more month into history, without waiting for the next refresh, and hands the
    /// sinks the snapshot that shows it (the monthly report waits for history). `false` when
    /// nothing changed: nothing more to read now.
    async fn catch_up_history(&mut self) -> bool {
        match self.update_history().await {
            Ok(true) => {
                if !self.sinks.is_empty() {
                    self.deliver().await;
                    if let Err(e) = self.publish() {
                        tracing::warn!("cannot encode the exposition again: {e}");
                    }
                }
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!("cannot encode the exposition again: {e}");
                false
            }
        }
    }

    /// What the landing page shows besides the snapshot (locale, dashboard link, budgets).
    pub fn with_landing(mut self, settings: landing::LandingSettings) -> Self {
        self.landing = settings;
        self
    }

    /// Runs `hook` after every refresh, successful or not, once its result is published (the
    /// binary returns the query's transient memory to the OS there).
    pub fn after_refresh(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.after_refresh = Some(Box::new(hook));
        self
    }

    /// Hands every successful refresh's snapshot to `sink`, in the order sinks are added.
    pub fn with_sink(mut self, sink: Box<dyn Sink>) -> Self {
        self.telemetry.register_sink(sink.name());
        self.sink_health
            .insert(sink.name().to_owned(), landing::SinkHealth::default());
        self.sinks.push(sink);
        self
    }

    /// What `/metrics` carries (`[prometheus]`).
    pub fn with_prometheus(mut self, settings: prom::PrometheusSettings) -> Self {
        self.prometheus = settings;
        self
    }

    /// Notifying this encodes the exposition again with the exporter's own metrics as they are
    /// now, without waiting for the next refresh.
    pub fn republisher(&self) -> Arc<tokio::sync::Notify> {
        self.republish.clone()
    }

    /// The exporter's own metrics.
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.telemetry.clone()
    }

    /// The state the HTTP server reads.
    pub fn state(&self) -> Arc<State> {
        self.state.clone()
    }

    async fn build(&self, now: DateTime<Utc>) -> Result<(Snapshot, Families), RefreshError> {
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
        self.add_daily_credits(now, &mut allocations).await;
        if let Some(bytes) = self.source.cache_bytes() {
            self.telemetry.set_cache_bytes(bytes);
        }
        self.telemetry.add_read_bytes(
            allocations
                .iter()
                .filter_map(|a| a.stats.fetched_bytes)
                .sum(),
        );
        // The month before the running one, as history kept it, once it is no longer watched.
        let last_closed = self.history.as_ref().and_then(|h| {
            let running = allocations
                .last()
                .map(|a| a.period)
                .filter(|p| now < p.end())?;
            let before = running.previous();
            let credits = h.kept.billed_credits(before)?;
            Some(Prior {
                window: Window::LastClosed(before),
                credits,
            })
        });
        let built = self.builder.build_with(now, allocations, last_closed).await;
        if let Some(malformed) = built.activity_malformed {
            self.telemetry.set_activity_malformed(malformed);
        }
        if let Some(lookups) = &built.lookups {
            self.telemetry.record_identity_lookups(lookups);
        }
        let mut snapshot = built.snapshot;
        if let Some(h) = &self.history {
            snapshot.history = h.view(&snapshot);
        }
        let families = prom::compress_snapshot_with(&snapshot, &self.prometheus)?;
        Ok((snapshot, families))
    }

    /// The month before a running one, allocated beside it, with its credits per usage day
    /// (for the bill's trailing window). Failing that, it is logged and the running month is
    /// decided without that window: the refresh goes on.
    async fn add_daily_credits(
        &self,
        now: DateTime<Utc>,
        allocations: &mut [crate::allocation::Allocation],
    ) {
        let [.., before, running] = allocations else {
            return;
        };
        if now >= running.period.end() || before.period != running.period.previous() {
            return;
        }
        match self.source.daily_credits(before.period).await {
            Ok(d) => before.daily_credits = Some(d),
            Err(e) => {
                tracing::warn!(period = %before.period, "credits per day not read ({e}); the running month is decided without the bill's trailing window")
            }
        }
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
                self.telemetry.record_success(
                    snapshot.taken_at,
                    took,
                    snapshot.periods.iter().map(|v| {
                        let a = &v.allocation;
                        (a.period.to_string(), a.stats.scanned_bytes)
                    }),
                );
                for v in &snapshot.periods {
                    let a = &v.allocation;
                    if !a.unknown_plans.is_empty() {
                        let tiers: Vec<&str> = a.unknown_plans.iter().map(String::as_str).collect();
                        tracing::warn!(
                            period = %a.period,
                            "tiers the plan table does not know: {}; no included credits are assumed for them and their seats are not right-sized (add them under [[plans]])",
                            tiers.join(", ")
                        );
                    }
                    tracing::info!(
                        period = %a.period,
                        units = a.units.len(),
                        total_usd = %v.total_cost_usd,
                        scanned_bytes = a.stats.scanned_bytes,
                        query_ms = a.stats.elapsed.as_millis() as u64,
                        "allocated"
                    );
                }
                self.last_good = Some((Arc::new(snapshot), families));
                None
            }
            Err(e) => {
                self.telemetry.record_failure(e.kind(), took);
                tracing::warn!(
                    kind = e.kind().as_str(),
                    "refresh failed, keeping the last good snapshot: {e}"
                );
                Some(e)
            }
        };
        self.last_error = error.as_ref().map(ToString::to_string);
        self.publish()?;
        if error.is_none() {
            // Before the sinks: the monthly report waits for history's months.
            self.update_history().await?;
        }
        if error.is_none() && !self.sinks.is_empty() {
            self.deliver().await;
            // The sinks' counters changed.
            self.publish()?;
        }
        error.map_or(Ok(()), Err)
    }

    fn publish(&mut self) -> Result<(), RefreshError> {
        // The families are compressed once per refresh and shared with every exposition
        // published from them; only the exporter's own metrics are encoded again.
        let exposition = prom::encode(self.last_good.as_ref().map(|(_, f)| f), &self.telemetry)?;
        let snapshot = self.last_good.as_ref().map(|(s, _)| s.as_ref());
        self.state.publish(Published {
            landing: landing::render(
                snapshot,
                &self.landing,
                &landing::Health {
                    last_error: self.last_error.clone(),
                    sinks: self.sink_health.clone(),
                    reports: self.state.report_names(),
                },
            ),
            exposition,
            ready: snapshot.is_some(),
        });
        Ok(())
    }

    /// Hands the last good snapshot to every sink; a failure is logged and counted by sink and
    /// kind, and the sink tries again at the next refresh.
    async fn deliver(&mut self) {
        let Some((snapshot, _)) = &self.last_good else {
            return;
        };
        let now = Utc::now();
        for sink in &mut self.sinks {
            match sink.deliver(snapshot, now).await {
                Ok(Delivery::Done) => {
                    self.telemetry.record_sink_success(sink.name(), now);
                    if let Some(h) = self.sink_health.get_mut(sink.name()) {
                        h.last_success = Some(now);
                    }
                }
                Ok(Delivery::NotDue) => {}
                Err(e) => {
                    self.telemetry.record_sink_error(sink.name(), e.kind);
                    if let Some(h) = self.sink_health.get_mut(sink.name()) {
                        h.last_error = Some((now, e.to_string()));
                    }
                    tracing::error!(sink = sink.name(), kind = e.kind.as_str(), "{e}");
                }
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
            // History reads the months it lacks one at a time right away, not one a refresh
            // interval, so a report waiting for them goes out minutes after a start.
            while self.history_unsettled() {
                tokio::select! {
                    more = self.catch_up_history() => if !more { break },
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
            if let Some(hook) = &self.after_refresh {
                hook();
            }
            tracing::debug!(?delay, "next refresh");
            let next = tokio::time::Instant::now() + delay;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => break,
                    () = self.republish.notified() => {
                        if let Err(e) = self.publish() {
                            tracing::warn!("cannot encode the exposition again: {e}");
                        }
                    }
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        }
    }
}
