//! The Prometheus exposition: data families rendered from a snapshot, and the exporter's own
//! health, encoded once per refresh (plain and gzip) so a scrape only copies bytes.
//!
//! Data families are built in a fresh registry for every snapshot: a unit that disappears from
//! the data disappears from /metrics at the next refresh, with no expiry bookkeeping. The
//! exporter's counters live in a registry that outlives refreshes.

use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use prometheus::{Encoder, Gauge, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::allocation::savings::{self, SavingsSettings};
use crate::allocation::snapshot::FORECAST_METHOD;
use crate::allocation::{PlanTable, Snapshot};

/// Labels of the per-unit families.
pub const UNIT_LABELS: [&str; 5] = [
    "account_id",
    "user_id",
    "cost_center",
    "plan",
    "billing_period",
];

/// An encoding problem; only possible through a programming error (conflicting descriptors).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode metrics: {0}")]
pub struct EncodeError(#[from] prometheus::Error);

fn f(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

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

/// The exporter's own metrics (prefix `kiro_exporter_`).
pub struct ExporterMetrics {
    registry: Registry,
    refreshes: IntCounterVec,
    failures: IntCounterVec,
    last_success: Gauge,
    duration: Gauge,
    scanned_bytes: GaugeVec,
    notifications: IntCounterVec,
    cloudwatch_datums: IntCounterVec,
    budget_limit: GaugeVec,
    budget_actual: GaugeVec,
    budget_forecast: GaugeVec,
}

impl ExporterMetrics {
    /// `interval` is the configured refresh interval, published so that staleness alerts can
    /// compare the last success against it.
    pub fn new(engine: &str, interval: Duration) -> Self {
        let r = Registry::new();
        let every = Gauge::new(
            "kiro_exporter_refresh_interval_seconds",
            "Configured time between refreshes (refresh.interval).",
        )
        .expect("static descriptor");
        r.register(Box::new(every.clone())).expect("unique");
        every.set(interval.as_secs_f64());
        let build = gauge_vec(
            &r,
            "kiro_exporter_build_info",
            "Build information; always 1.",
            &["version", "engine"],
        )
        .expect("static descriptor");
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), engine])
            .set(1.0);
        let refreshes = IntCounterVec::new(
            Opts::new(
                "kiro_exporter_refresh_total",
                "Refreshes by result (success, error).",
            ),
            &["result"],
        )
        .expect("static descriptor");
        r.register(Box::new(refreshes.clone())).expect("unique");
        for result in ["success", "error"] {
            refreshes.with_label_values(&[result]).inc_by(0);
        }
        let failures = IntCounterVec::new(
            Opts::new("kiro_exporter_refresh_failures_total", "Failed refreshes by kind (no_data, io, bad_input, engine, decode, reconciliation, timeout, aws, config)."),
            &["kind"],
        )
        .expect("static descriptor");
        r.register(Box::new(failures.clone())).expect("unique");
        let last_success = Gauge::new(
            "kiro_exporter_last_success_timestamp_seconds",
            "Unix time of the last successful refresh; 0 before the first.",
        )
        .expect("static descriptor");
        r.register(Box::new(last_success.clone())).expect("unique");
        let duration = Gauge::new(
            "kiro_exporter_refresh_duration_seconds",
            "Wall time of the last refresh, successful or not.",
        )
        .expect("static descriptor");
        r.register(Box::new(duration.clone())).expect("unique");
        let scanned_bytes = gauge_vec(
            &r,
            "kiro_exporter_query_scanned_bytes",
            "Bytes the query engine read for a billing period in the last successful refresh.",
            &["billing_period"],
        )
        .expect("static descriptor");
        let notifications = IntCounterVec::new(
            Opts::new(
                "kiro_exporter_notifications_total",
                "Notification messages by channel and result (success, failure, retry).",
            ),
            &["channel", "result"],
        )
        .expect("static descriptor");
        r.register(Box::new(notifications.clone())).expect("unique");
        let cloudwatch_datums = IntCounterVec::new(
            Opts::new(
                "kiro_exporter_cloudwatch_datums_total",
                "Datums pushed to CloudWatch by result (success, failure).",
            ),
            &["result"],
        )
        .expect("static descriptor");
        r.register(Box::new(cloudwatch_datums.clone()))
            .expect("unique");
        let budget = |name: &str, help: &str| {
            gauge_vec(&r, name, help, &["budget", "cost_center"]).expect("static descriptor")
        };
        let budget_limit = budget(
            "kiro_budget_limit_usd",
            "Monthly limit of an AWS Budget the exporter owns (cost_center \"(all)\": all of Kiro).",
        );
        let budget_actual = budget(
            "kiro_budget_actual_usd",
            "Actual spend AWS Budgets reports for the budget this month.",
        );
        let budget_forecast = budget(
            "kiro_budget_forecast_usd",
            "Forecasted spend AWS Budgets reports for the budget this month.",
        );
        Self {
            registry: r,
            refreshes,
            failures,
            last_success,
            duration,
            scanned_bytes,
            notifications,
            cloudwatch_datums,
            budget_limit,
            budget_actual,
            budget_forecast,
        }
    }

    /// Replaces the budget gauges with what AWS Budgets reported.
    pub fn set_budgets(&self, readings: &[crate::alert::budgets::BudgetReading]) {
        self.budget_limit.reset();
        self.budget_actual.reset();
        self.budget_forecast.reset();
        for b in readings {
            let l = [b.budget.as_str(), b.cost_center.as_str()];
            self.budget_limit.with_label_values(&l).set(b.limit_usd);
            if let Some(v) = b.actual_usd {
                self.budget_actual.with_label_values(&l).set(v);
            }
            if let Some(v) = b.forecast_usd {
                self.budget_forecast.with_label_values(&l).set(v);
            }
        }
    }

    /// The CloudWatch datums counter, for the sink to count into.
    pub fn cloudwatch_datums(&self) -> IntCounterVec {
        self.cloudwatch_datums.clone()
    }

    /// The notifications counter, for the channels to count into.
    pub fn notifications(&self) -> IntCounterVec {
        self.notifications.clone()
    }

    pub fn record_success(&self, snapshot: &Snapshot, took: Duration) {
        self.refreshes.with_label_values(&["success"]).inc();
        self.last_success
            .set(snapshot.taken_at.timestamp_millis() as f64 / 1000.0);
        self.duration.set(took.as_secs_f64());
        self.scanned_bytes.reset();
        for a in &snapshot.allocations {
            if let Some(b) = a.stats.scanned_bytes {
                self.scanned_bytes
                    .with_label_values(&[&a.period.to_string()])
                    .set(b as f64);
            }
        }
    }

    pub fn record_failure(&self, kind: &str, took: Duration) {
        self.refreshes.with_label_values(&["error"]).inc();
        self.failures.with_label_values(&[kind]).inc();
        self.duration.set(took.as_secs_f64());
    }
}

/// Builds the data families of a snapshot in a registry of their own.
pub fn snapshot_registry(
    s: &Snapshot,
    plans: &PlanTable,
    savings_settings: &SavingsSettings,
) -> Result<Registry, prometheus::Error> {
    let r = Registry::new();
    let ul = &UNIT_LABELS;
    let credits = gauge_vec(
        &r,
        "kiro_user_credits_used",
        "Kiro credits used in the billing period, per unit (account, user, cost center).",
        ul,
    )?;
    let included = gauge_vec(
        &r,
        "kiro_user_credits_included",
        "Credits included in the unit's plan per month (from the plan table).",
        ul,
    )?;
    let sub = gauge_vec(
        &r,
        "kiro_user_subscription_usd",
        "Subscription (seat) cost in USD, per unit.",
        ul,
    )?;
    let over = gauge_vec(
        &r,
        "kiro_user_overage_usd",
        "Overage cost of credits beyond the plan, in USD, per unit.",
        ul,
    )?;
    let cost = gauge_vec(
        &r,
        "kiro_user_cost_usd",
        "Total cost in USD per unit, tax excluded (subscription + overage + refunds, credits, discounts).",
        ul,
    )?;
    let ccl = &["cost_center", "billing_period"];
    let cc_cost = gauge_vec(
        &r,
        "kiro_cost_center_cost_usd",
        "Cost in USD per cost center (\"\" = untagged), tax and unattributed lines excluded.",
        ccl,
    )?;
    let cc_over = gauge_vec(
        &r,
        "kiro_cost_center_overage_usd",
        "Overage cost in USD per cost center.",
        ccl,
    )?;
    let cc_credits = gauge_vec(
        &r,
        "kiro_cost_center_credits_used",
        "Credits used per cost center.",
        ccl,
    )?;
    let cc_users = gauge_vec(
        &r,
        "kiro_cost_center_users",
        "Distinct users with cost in the cost center.",
        ccl,
    )?;
    let cc_forecast = gauge_vec(
        &r,
        "kiro_cost_center_forecast_usd",
        &format!("Month-end cost forecast in USD per cost center: {FORECAST_METHOD}."),
        ccl,
    )?;
    let acc_cost = gauge_vec(
        &r,
        "kiro_account_cost_usd",
        "Cost in USD per usage account, tax and unattributed lines excluded.",
        &["account_id", "billing_period"],
    )?;
    let pl = &["billing_period"];
    let total = gauge_vec(
        &r,
        "kiro_cost_usd",
        "All Kiro cost in USD in the billing period: users + unattributed + tax.",
        pl,
    )?;
    let tax = gauge_vec(
        &r,
        "kiro_tax_usd",
        "Tax on Kiro in USD (not allocated to users).",
        pl,
    )?;
    let unattributed = gauge_vec(
        &r,
        "kiro_unattributed_usd",
        "Kiro cost in USD on lines that name no user (e.g. discounts).",
        pl,
    )?;
    let users = gauge_vec(
        &r,
        "kiro_users",
        "Distinct (account, user) pairs with cost, per plan (\"\" = no subscription line).",
        &["plan", "billing_period"],
    )?;
    let untagged = gauge_vec(
        &r,
        "kiro_untagged_users",
        "Users with cost on lines without a cost-center tag.",
        pl,
    )?;
    let dups = gauge_vec(
        &r,
        "kiro_duplicate_subscriptions",
        "Users charged a subscription in more than one account.",
        pl,
    )?;
    let as_of = gauge_vec(
        &r,
        "kiro_data_as_of_timestamp_seconds",
        "Unix time of the newest hourly usage in the data: CUR lags a day or more behind real usage.",
        pl,
    )?;
    let rec_info = gauge_vec(
        &r,
        "kiro_user_recommended_plan_info",
        "A seat that should change: recommended_plan is the cheaper plan, or \"\" to cancel (reason idle or duplicate); always 1.",
        &[
            "account_id",
            "user_id",
            "cost_center",
            "plan",
            "recommended_plan",
            "reason",
            "billing_period",
        ],
    )?;
    let rec_saving = gauge_vec(
        &r,
        "kiro_user_savings_usd",
        "Monthly saving in USD if the seat's recommendation is applied (usage projected to month end).",
        &[
            "account_id",
            "user_id",
            "cost_center",
            "plan",
            "reason",
            "billing_period",
        ],
    )?;
    let idle = gauge_vec(
        &r,
        "kiro_idle_seats",
        "Seats with (almost) no credits used after the grace days.",
        pl,
    )?;
    let cc_savings = gauge_vec(
        &r,
        "kiro_cost_center_savings_usd",
        "Monthly saving in USD per cost center if every recommendation is applied.",
        ccl,
    )?;
    let total_savings = gauge_vec(
        &r,
        "kiro_savings_usd",
        "Monthly saving in USD if every recommendation is applied.",
        pl,
    )?;
    for a in &s.allocations {
        let period = a.period.to_string();
        let sv = savings::recommend(a, plans, savings_settings, s.taken_at);
        let mut by_cc: std::collections::BTreeMap<&str, Decimal> =
            std::collections::BTreeMap::new();
        for rec in &sv.recommendations {
            let reason = rec.reason.as_str();
            rec_info
                .with_label_values(&[
                    rec.account_id.as_str(),
                    &rec.user_id,
                    &rec.cost_center,
                    &rec.plan,
                    &rec.recommended_plan,
                    reason,
                    &period,
                ])
                .set(1.0);
            rec_saving
                .with_label_values(&[
                    rec.account_id.as_str(),
                    &rec.user_id,
                    &rec.cost_center,
                    &rec.plan,
                    reason,
                    &period,
                ])
                .set(f(rec.saving_usd));
            *by_cc.entry(&rec.cost_center).or_default() += rec.saving_usd;
        }
        for (cc, v) in by_cc {
            cc_savings.with_label_values(&[cc, &period]).set(f(v));
        }
        idle.with_label_values(&[&period]).set(sv.idle_seats as f64);
        total_savings
            .with_label_values(&[&period])
            .set(f(sv.total_usd));
        for u in &a.units {
            let labels = [
                u.account_id.as_str(),
                &u.user_id,
                &u.cost_center,
                &u.plan,
                &period,
            ];
            credits.with_label_values(&labels).set(f(u.credits_used));
            if let Some(p) = plans.by_name(&u.plan) {
                included
                    .with_label_values(&labels)
                    .set(f(p.included_credits));
            }
            sub.with_label_values(&labels).set(f(u.subscription_usd));
            over.with_label_values(&labels).set(f(u.overage_usd));
            cost.with_label_values(&labels).set(f(u.total_usd));
        }
        for (cc, r) in a.cost_centers() {
            let l = [cc, period.as_str()];
            cc_cost.with_label_values(&l).set(f(r.total_usd));
            cc_over.with_label_values(&l).set(f(r.overage_usd));
            cc_credits.with_label_values(&l).set(f(r.credits_used));
            cc_users.with_label_values(&l).set(r.users as f64);
        }
        for (cc, v) in a.forecast_cost_centers(s.taken_at) {
            cc_forecast.with_label_values(&[cc, &period]).set(f(v));
        }
        for (acc, r) in a.accounts() {
            acc_cost
                .with_label_values(&[acc, &period])
                .set(f(r.total_usd));
        }
        total.with_label_values(&[&period]).set(f(a.kiro_total_usd));
        tax.with_label_values(&[&period]).set(f(a.tax_usd));
        unattributed
            .with_label_values(&[&period])
            .set(f(a.unattributed_usd));
        for (plan, n) in a.users_by_plan() {
            users.with_label_values(&[plan, &period]).set(n as f64);
        }
        untagged
            .with_label_values(&[&period])
            .set(a.untagged_users().len() as f64);
        dups.with_label_values(&[&period])
            .set(a.duplicate_subscriptions().len() as f64);
        if let Some(t) = a.data_as_of {
            as_of
                .with_label_values(&[&period])
                .set(t.timestamp() as f64);
        }
    }
    Ok(r)
}

/// An encoded exposition, plain and gzip.
#[derive(Debug, Clone)]
pub struct Exposition {
    pub plain: Bytes,
    pub gzip: Bytes,
}

/// Encodes the data of `data` (if any) and the exporter's metrics.
pub fn encode(
    data: Option<&Registry>,
    exporter: &ExporterMetrics,
) -> Result<Exposition, EncodeError> {
    let enc = TextEncoder::new();
    let mut plain = Vec::with_capacity(64 * 1024);
    if let Some(r) = data {
        enc.encode(&r.gather(), &mut plain)?;
    }
    enc.encode(&exporter.registry.gather(), &mut plain)?;
    let mut gz = GzEncoder::new(
        Vec::with_capacity(plain.len() / 4 + 64),
        Compression::fast(),
    );
    gz.write_all(&plain)
        .map_err(|e| prometheus::Error::Msg(e.to_string()))?;
    let gzip = gz
        .finish()
        .map_err(|e| prometheus::Error::Msg(e.to_string()))?;
    Ok(Exposition {
        plain: Bytes::from(plain),
        gzip: Bytes::from(gzip),
    })
}
