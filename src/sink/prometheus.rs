//! The Prometheus exposition: data families rendered from a snapshot, and the exporter's own
//! health, encoded once per refresh (plain and gzip) so a scrape only copies bytes.
//!
//! Data families are written straight from the snapshot as text, once per refresh (no registry
//! and no per-series objects, so 50,000 users cost one pass): a unit that disappears from the
//! data disappears from /metrics at the next refresh, with no expiry bookkeeping. The exporter's
//! counters live in a registry that outlives refreshes.

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

/// The `result` label of a success or a failure.
fn result(ok: bool) -> &'static str {
    if ok { "success" } else { "failure" }
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
    budget_syncs: IntCounterVec,
    state_saves: IntCounterVec,
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
        let refreshes = counter_vec(
            &r,
            "kiro_exporter_refresh_total",
            "Refreshes by result (success, error).",
            &["result"],
        )
        .expect("static descriptor");
        for result in ["success", "error"] {
            refreshes.with_label_values(&[result]).inc_by(0);
        }
        let failures = counter_vec(
            &r,
            "kiro_exporter_refresh_failures_total",
            "Failed refreshes by kind (no_data, io, bad_input, engine, decode, reconciliation, timeout, aws, config).",
            &["kind"],
        )
        .expect("static descriptor");
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
        let notifications = counter_vec(
            &r,
            "kiro_exporter_notifications_total",
            "Notification messages by channel and result (success, failure, retry).",
            &["channel", "result"],
        )
        .expect("static descriptor");
        let cloudwatch_datums = counter_vec(
            &r,
            "kiro_exporter_cloudwatch_datums_total",
            "Datums pushed to CloudWatch by result (success, failure).",
            &["result"],
        )
        .expect("static descriptor");
        let budget_syncs = counter_vec(
            &r,
            "kiro_exporter_budget_syncs_total",
            "AWS Budgets reconciliations by result (success, failure); a failure is retried after the next refresh.",
            &["result"],
        )
        .expect("static descriptor");
        let state_saves = counter_vec(
            &r,
            "kiro_exporter_state_saves_total",
            "Alert state file saves by result (success, failure), one per evaluation; after a failure the state is kept in memory and saved at the next evaluation.",
            &["result"],
        )
        .expect("static descriptor");
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
            budget_syncs,
            state_saves,
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

    /// Counts one AWS Budgets reconciliation.
    pub fn record_budget_sync(&self, ok: bool) {
        self.budget_syncs.with_label_values(&[result(ok)]).inc();
    }

    /// Counts one save of the alert state file.
    pub fn record_state_save(&self, ok: bool) {
        self.state_saves.with_label_values(&[result(ok)]).inc();
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

/// One gauge family of the data, written straight to text: no registry, no per-series
/// objects, so a snapshot of tens of thousands of users is encoded in one pass over it.
struct Family {
    name: &'static str,
    help: String,
    /// Label names in output order (sorted, as the text format's writers order them).
    labels: &'static [&'static str],
    body: Vec<u8>,
}

impl Family {
    fn new(name: &'static str, help: impl Into<String>, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help: help.into(),
            labels,
            body: Vec::new(),
        }
    }

    /// One sample; `values` in the order of `labels`.
    fn sample(&mut self, values: &[&str], v: f64) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        let b = &mut self.body;
        b.extend_from_slice(self.name.as_bytes());
        if !self.labels.is_empty() {
            let mut sep = b'{';
            for (name, value) in self.labels.iter().zip(values) {
                b.push(sep);
                b.extend_from_slice(name.as_bytes());
                b.extend_from_slice(b"=\"");
                escape_label_value(b, value);
                b.push(b'"');
                sep = b',';
            }
            b.push(b'}');
        }
        b.push(b' ');
        write_value(b, v);
        b.push(b'\n');
    }

    /// HELP, TYPE and the samples; nothing for a family without samples.
    fn write_to(&self, out: &mut Vec<u8>) {
        if self.body.is_empty() {
            return;
        }
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(self.name.as_bytes());
        out.push(b' ');
        for c in self.help.bytes() {
            match c {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                c => out.push(c),
            }
        }
        out.extend_from_slice(b"\n# TYPE ");
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(b" gauge\n");
        out.extend_from_slice(&self.body);
    }
}

fn escape_label_value(out: &mut Vec<u8>, v: &str) {
    if !v.bytes().any(|c| matches!(c, b'\\' | b'"' | b'\n')) {
        out.extend_from_slice(v.as_bytes());
        return;
    }
    for c in v.bytes() {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            c => out.push(c),
        }
    }
}

fn write_value(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{v}");
    }
}

/// Label names of the per-unit families, in output order.
pub const UNIT_LABELS: &[&str] = &[
    "account_id",
    "billing_period",
    "cost_center",
    "plan",
    "user_id",
];
const CC_LABELS: &[&str] = &["billing_period", "cost_center"];
const PERIOD_LABEL: &[&str] = &["billing_period"];

/// Encodes the data families of a snapshot as Prometheus text, families in name order. Done
/// once per refresh; a scrape only copies the result.
pub fn encode_snapshot(
    s: &Snapshot,
    plans: &PlanTable,
    savings_settings: &SavingsSettings,
) -> Vec<u8> {
    let unit = |name, help| Family::new(name, help, UNIT_LABELS);
    let mut credits = unit(
        "kiro_user_credits_used",
        "Kiro credits used in the billing period, per unit (account, user, cost center).",
    );
    let mut included = unit(
        "kiro_user_credits_included",
        "Credits included in the unit's plan per month (from the plan table).",
    );
    let mut sub = unit(
        "kiro_user_subscription_usd",
        "Subscription (seat) cost in USD, per unit.",
    );
    let mut over = unit(
        "kiro_user_overage_usd",
        "Overage cost of credits beyond the plan, in USD, per unit.",
    );
    let mut cost = unit(
        "kiro_user_cost_usd",
        "Total cost in USD per unit, tax excluded (subscription + overage + refunds, credits, discounts).",
    );
    let cc = |name, help: &str| Family::new(name, help, CC_LABELS);
    let mut cc_cost = cc(
        "kiro_cost_center_cost_usd",
        "Cost in USD per cost center (\"\" = untagged), tax and unattributed lines excluded.",
    );
    let mut cc_over = cc(
        "kiro_cost_center_overage_usd",
        "Overage cost in USD per cost center.",
    );
    let mut cc_credits = cc(
        "kiro_cost_center_credits_used",
        "Credits used per cost center.",
    );
    let mut cc_users = cc(
        "kiro_cost_center_users",
        "Distinct users with cost in the cost center.",
    );
    let mut cc_forecast = cc(
        "kiro_cost_center_forecast_usd",
        &format!("Month-end cost forecast in USD per cost center: {FORECAST_METHOD}."),
    );
    let mut cc_savings = cc(
        "kiro_cost_center_savings_usd",
        "Monthly saving in USD per cost center if every recommendation is applied.",
    );
    let mut acc_cost = Family::new(
        "kiro_account_cost_usd",
        "Cost in USD per usage account, tax and unattributed lines excluded.",
        &["account_id", "billing_period"],
    );
    let period = |name, help| Family::new(name, help, PERIOD_LABEL);
    let mut total = period(
        "kiro_cost_usd",
        "All Kiro cost in USD in the billing period: users + unattributed + tax.",
    );
    let mut tax = period(
        "kiro_tax_usd",
        "Tax on Kiro in USD (not allocated to users).",
    );
    let mut unattributed = period(
        "kiro_unattributed_usd",
        "Kiro cost in USD on lines that name no user (e.g. discounts).",
    );
    let mut untagged = period(
        "kiro_untagged_users",
        "Users with cost on lines without a cost-center tag.",
    );
    let mut dups = period(
        "kiro_duplicate_subscriptions",
        "Users charged a subscription in more than one account.",
    );
    let mut as_of = period(
        "kiro_data_as_of_timestamp_seconds",
        "Unix time of the newest hourly usage in the data: CUR lags a day or more behind real usage.",
    );
    let mut idle = period(
        "kiro_idle_seats",
        "Seats with (almost) no credits used after the grace days.",
    );
    let mut total_savings = period(
        "kiro_savings_usd",
        "Monthly saving in USD if every recommendation is applied.",
    );
    let mut users = Family::new(
        "kiro_users",
        "Distinct (account, user) pairs with cost, per plan (\"\" = no subscription line).",
        &["billing_period", "plan"],
    );
    let mut rec_info = Family::new(
        "kiro_user_recommended_plan_info",
        "A seat that should change: recommended_plan is the cheaper plan, or \"\" to cancel (reason idle or duplicate); always 1.",
        &[
            "account_id",
            "billing_period",
            "cost_center",
            "plan",
            "reason",
            "recommended_plan",
            "user_id",
        ],
    );
    let mut rec_saving = Family::new(
        "kiro_user_savings_usd",
        "Monthly saving in USD if the seat's recommendation is applied (usage projected to month end).",
        &[
            "account_id",
            "billing_period",
            "cost_center",
            "plan",
            "reason",
            "user_id",
        ],
    );
    for a in &s.allocations {
        let p = a.period.to_string();
        let p = p.as_str();
        let sv = savings::recommend(a, plans, savings_settings, s.taken_at);
        let mut by_cc: std::collections::BTreeMap<&str, Decimal> =
            std::collections::BTreeMap::new();
        for rec in &sv.recommendations {
            let reason = rec.reason.as_str();
            let (acc, user, cc, plan) = (
                rec.account_id.as_str(),
                rec.user_id.as_str(),
                rec.cost_center.as_str(),
                rec.plan.as_str(),
            );
            rec_info.sample(
                &[acc, p, cc, plan, reason, &rec.recommended_plan, user],
                1.0,
            );
            rec_saving.sample(&[acc, p, cc, plan, reason, user], f(rec.saving_usd));
            *by_cc.entry(cc).or_default() += rec.saving_usd;
        }
        for (cc, v) in by_cc {
            cc_savings.sample(&[p, cc], f(v));
        }
        idle.sample(&[p], sv.idle_seats as f64);
        total_savings.sample(&[p], f(sv.total_usd));
        for u in &a.units {
            let l = [
                u.account_id.as_str(),
                p,
                u.cost_center.as_str(),
                u.plan.as_str(),
                u.user_id.as_str(),
            ];
            credits.sample(&l, f(u.credits_used));
            if let Some(plan) = plans.by_name(&u.plan) {
                included.sample(&l, f(plan.included_credits));
            }
            sub.sample(&l, f(u.subscription_usd));
            over.sample(&l, f(u.overage_usd));
            cost.sample(&l, f(u.total_usd));
        }
        for (cc, r) in a.cost_centers() {
            let l = [p, cc];
            cc_cost.sample(&l, f(r.total_usd));
            cc_over.sample(&l, f(r.overage_usd));
            cc_credits.sample(&l, f(r.credits_used));
            cc_users.sample(&l, r.users as f64);
        }
        for (cc, v) in a.forecast_cost_centers(s.taken_at) {
            cc_forecast.sample(&[p, cc], f(v));
        }
        for (acc, r) in a.accounts() {
            acc_cost.sample(&[acc, p], f(r.total_usd));
        }
        total.sample(&[p], f(a.kiro_total_usd));
        tax.sample(&[p], f(a.tax_usd));
        unattributed.sample(&[p], f(a.unattributed_usd));
        for (plan, n) in a.users_by_plan() {
            users.sample(&[p, plan], n as f64);
        }
        untagged.sample(&[p], a.untagged_users().len() as f64);
        dups.sample(&[p], a.duplicate_subscriptions().len() as f64);
        if let Some(t) = a.data_as_of {
            as_of.sample(&[p], t.timestamp() as f64);
        }
    }
    let mut families = [
        credits,
        included,
        sub,
        over,
        cost,
        cc_cost,
        cc_over,
        cc_credits,
        cc_users,
        cc_forecast,
        cc_savings,
        acc_cost,
        total,
        tax,
        unattributed,
        untagged,
        dups,
        as_of,
        idle,
        total_savings,
        users,
        rec_info,
        rec_saving,
    ];
    families.sort_by_key(|fam| fam.name);
    let mut out = Vec::with_capacity(families.iter().map(|fam| fam.body.len() + 256).sum());
    for fam in &families {
        fam.write_to(&mut out);
    }
    out
}

/// An encoded exposition, plain and gzip.
#[derive(Debug, Clone)]
pub struct Exposition {
    pub plain: Bytes,
    pub gzip: Bytes,
}

/// The exposition: the snapshot's pre-encoded families (if any) and the exporter's own
/// metrics, plain and gzip-compressed, ready to be served as they are.
pub fn encode(data: Option<&[u8]>, exporter: &ExporterMetrics) -> Result<Exposition, EncodeError> {
    let own = exporter.registry.gather();
    let mut plain = Vec::with_capacity(data.map_or(0, <[u8]>::len) + 16 * 1024);
    if let Some(d) = data {
        plain.extend_from_slice(d);
    }
    TextEncoder::new().encode(&own, &mut plain)?;
    let mut gz = GzEncoder::new(
        Vec::with_capacity(plain.len() / 8 + 64),
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
