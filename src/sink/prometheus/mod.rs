//! The Prometheus exposition: data families rendered from a snapshot's views, and the
//! exporter's own health, encoded once per refresh (plain and gzip) so a scrape only copies
//! bytes.
//!
//! Data families are written straight from the snapshot as text, once per refresh (no registry
//! and no per-series objects, so 50,000 users cost one pass): a unit that disappears from the
//! data disappears from /metrics at the next refresh, with no expiry bookkeeping. Their names,
//! HELP texts and labels are in one [`catalog`]; the exporter's counters live in a registry
//! that outlives refreshes ([`crate::telemetry`]).

pub mod catalog;
pub mod rules;

use std::io::Write as _;

use prometheus::{Encoder, TextEncoder};

use crate::allocation::amount::as_f64 as f;
use crate::allocation::cost_center_label;
use crate::server::Exposition;
use crate::server::exposition::{ExpositionError, Families, FamiliesWriter};
use crate::snapshot::{PeriodView, Snapshot};
use crate::telemetry::Telemetry;
use catalog::{Def, F};

/// An encoding problem; only possible through a programming error (conflicting descriptors,
/// a compressor's misuse).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot encode metrics: {0}")]
    Exposition(#[from] ExpositionError),
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
    fn new(def: &Def) -> Self {
        Self {
            name: def.name,
            help: def.help(),
            labels: def.labels,
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
    fn write_to(&self, out: &mut FamiliesWriter) -> Result<(), ExpositionError> {
        if self.body.is_empty() {
            return Ok(());
        }
        let mut head = Vec::with_capacity(self.help.len() + 2 * self.name.len() + 32);
        self.write_head(&mut head);
        out.write(&head)?;
        out.write(&self.body)
    }

    fn write_head(&self, out: &mut Vec<u8>) {
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

/// `[prometheus]`: what `/metrics` carries.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusSettings {
    /// Per-user series (cost, credits, activity, savings and `kiro_user_info`); false: the
    /// roll-ups only (per cost center, account, plan and period), for Prometheus tenants with a
    /// series limit. The series count per setting is in docs/metrics.md.
    pub per_user: bool,
}

impl Default for PrometheusSettings {
    fn default() -> Self {
        Self { per_user: true }
    }
}

/// The families that carry one series per user (or seat).
const PER_USER: &[F] = &[
    F::UserCreditsUsed,
    F::UserCreditsIncluded,
    F::UserSubscription,
    F::UserOverage,
    F::UserCost,
    F::RecommendedPlanInfo,
    F::UserSavings,
    F::ActivityCredits,
    F::ActivityOverageCredits,
    F::Messages,
    F::LastActive,
    F::OverageCap,
    F::UserInfo,
    F::UserQDeveloperCost,
    F::LicenceSince,
    F::MonthsActive,
    F::MonthsIdle,
    F::IdleStretchCost,
];

/// The data families of a snapshot as Prometheus text, families in name order (`per_user =
/// false`: the roll-ups only), compressed as they are encoded: what a refresh keeps and
/// `/metrics` serves (the text is never held whole; each family's samples are freed once
/// compressed).
pub fn compress_snapshot_with(
    s: &Snapshot,
    settings: &PrometheusSettings,
) -> Result<Families, EncodeError> {
    let mut out = FamiliesWriter::new();
    for family in families(s, settings) {
        family.write_to(&mut out)?;
    }
    Ok(out.finish()?)
}

/// [`compress_snapshot_with`] with the default settings (the per-user families too).
pub fn compress_snapshot(s: &Snapshot) -> Result<Families, EncodeError> {
    compress_snapshot_with(s, &PrometheusSettings::default())
}

/// The data families, in name order, with their samples.
fn families(s: &Snapshot, settings: &PrometheusSettings) -> Vec<Family> {
    let mut fam: Vec<Family> = catalog::DATA.iter().map(Family::new).collect();
    let mut sample = |which: F, values: &[&str], v: f64| fam[which as usize].sample(values, v);
    for view in &s.periods {
        let a = &view.allocation;
        let p = a.period.to_string();
        let p = p.as_str();
        // Rules join on this to alert on the current month only.
        let state = if a.period == crate::period::BillingPeriod::containing(s.taken_at) {
            "current"
        } else {
            "closing"
        };
        sample(F::PeriodInfo, &[p, state], 1.0);
        sample_savings(view, p, &mut sample);
        let sv = &view.savings;
        sample(F::IdleSeats, &[p], sv.idle_seats as f64);
        sample(F::Savings, &[p], f(sv.total_usd));
        sample(F::SavingsBasis, &[p], f64::from(sv.basis.days) * 86_400.0);
        sample(
            F::SavingsWithheld,
            &[p],
            f64::from(u8::from(sv.basis.withheld)),
        );
        for u in &a.units {
            let l = [
                u.account_id.as_str(),
                p,
                cost_center_label(&u.cost_center),
                u.plan.as_str(),
                u.region.as_str(),
                u.user_id.as_str(),
            ];
            sample(F::UserCreditsUsed, &l, f(u.credits_used));
            if let Some(included) = view.included_by_plan.get(&u.plan) {
                sample(F::UserCreditsIncluded, &l, f(*included));
            }
            sample(F::UserSubscription, &l, f(u.subscription_usd));
            sample(F::UserOverage, &l, f(u.overage_usd));
            sample(F::UserCost, &l, f(u.total_usd));
        }
        for (cc, r) in &view.cost_centers {
            let l = [p, cost_center_label(cc)];
            sample(F::CostCenterCost, &l, f(r.total_usd));
            sample(F::CostCenterOverage, &l, f(r.overage_usd));
            sample(F::CostCenterCreditsUsed, &l, f(r.credits_used));
            sample(F::CostCenterUsers, &l, r.users as f64);
        }
        for (cc, v) in &view.forecast.cost_centers {
            sample(F::CostCenterForecast, &[p, cost_center_label(cc)], f(*v));
        }
        for (cc, v) in &view.allocation.assigned_cost_centers {
            sample(F::AssignedCost, &[p, cost_center_label(cc)], f(*v));
        }
        for (acc, r) in &view.accounts {
            sample(F::AccountCost, &[acc, p], f(r.total_usd));
        }
        sample(F::Cost, &[p], f(view.total_cost_usd));
        sample(F::Tax, &[p], f(a.tax_usd));
        sample(F::Unattributed, &[p], f(a.unattributed_usd));
        for (plan, n) in &view.users_by_plan {
            sample(F::Users, &[p, plan], *n as f64);
        }
        sample(F::UntaggedUsers, &[p], view.untagged_users.len() as f64);
        sample(
            F::DuplicateSubscriptions,
            &[p],
            view.duplicate_subscriptions.len() as f64,
        );
        if let Some(t) = a.data_as_of {
            sample(F::DataAsOf, &[p], t.timestamp() as f64);
        }
        if let Some(act) = &view.activity {
            sample_activity(view, act, p, &mut sample);
        }
        sample_q_developer(&a.q_developer, p, &mut sample);
    }
    sample_history(s, &mut sample);
    for (id, p) in &s.people {
        sample(
            F::UserInfo,
            &[&p.display_name, &p.email, id, &p.user_name],
            1.0,
        );
    }
    if !settings.per_user {
        for &which in PER_USER {
            fam[which as usize].body.clear();
        }
    }
    fam.sort_by_key(|family| family.name);
    fam
}

/// The savings recommendations: one info series and one saving per seat, per cost center.
fn sample_savings(view: &PeriodView, p: &str, sample: &mut impl FnMut(F, &[&str], f64)) {
    let sv = &view.savings;
    for rec in &sv.recommendations {
        let reason = rec.reason.as_str();
        let (acc, region, user, cc, plan) = (
            rec.account_id.as_str(),
            rec.region.as_str(),
            rec.user_id.as_str(),
            cost_center_label(&rec.cost_center),
            rec.plan.as_str(),
        );
        sample(
            F::RecommendedPlanInfo,
            &[
                acc,
                p,
                cc,
                plan,
                reason,
                &rec.recommended_plan,
                region,
                user,
            ],
            1.0,
        );
        sample(
            F::UserSavings,
            &[acc, p, cc, plan, reason, region, user],
            f(rec.saving_usd),
        );
    }
    for (cc, t) in view.cost_center_seats() {
        if t.recommendations > 0 {
            sample(
                F::CostCenterSavings,
                &[p, cost_center_label(cc)],
                f(t.savings_usd),
            );
        }
    }
}

/// The months history keeps, and the tenure of the newest period's seats.
fn sample_history(s: &Snapshot, sample: &mut impl FnMut(F, &[&str], f64)) {
    let h = &s.history;
    for m in &h.months {
        let p = m.period.to_string();
        sample(F::HistoryCost, &[&p], f(m.total_usd));
        for (cc, v) in &m.cost_centers {
            sample(
                F::HistoryCostCenterCost,
                &[&p, cost_center_label(cc)],
                f(*v),
            );
        }
    }
    let Some(view) = s.current() else { return };
    for seat in view.seats() {
        let id = &seat.id;
        let key = (id.account_id.clone(), id.region.clone(), id.user_id.clone());
        let Some(t) = h.tenure.get(&key) else {
            continue;
        };
        let l = [
            id.account_id.as_str(),
            id.region.as_str(),
            id.user_id.as_str(),
        ];
        sample(
            F::LicenceSince,
            &l,
            t.licence_since.start().timestamp() as f64,
        );
        sample(F::MonthsActive, &l, f64::from(t.months_active));
        sample(F::MonthsIdle, &l, f64::from(t.months_idle));
        sample(F::IdleStretchCost, &l, f(t.idle_cost_usd));
    }
}

/// Q Developer Pro seats, where they were read: per cost center and per user.
fn sample_q_developer(
    q: &crate::allocation::q_developer::QDeveloper,
    p: &str,
    sample: &mut impl FnMut(F, &[&str], f64),
) {
    if !q.read {
        return;
    }
    for (cc, r) in q.cost_centers() {
        let l = [p, cost_center_label(cc)];
        sample(F::QDeveloperCost, &l, f(r.fee_usd));
        sample(F::QDeveloperUsers, &l, r.users as f64);
        sample(F::QDeveloperDuplicateUsers, &l, r.duplicate_users as f64);
        sample(F::QDeveloperDuplicateCost, &l, f(r.duplicate_usd));
    }
    for s in &q.seats {
        let also = if s.also_kiro { "true" } else { "false" };
        sample(
            F::UserQDeveloperCost,
            &[
                &s.account_id,
                also,
                p,
                cost_center_label(&s.cost_center),
                &s.user_id,
            ],
            f(s.fee_usd),
        );
    }
}

/// What the activity report says: per seat, the period's freshness, unbilled credits, users
/// without a seat.
fn sample_activity(
    view: &PeriodView,
    act: &crate::source::activity::Activity,
    p: &str,
    sample: &mut impl FnMut(F, &[&str], f64),
) {
    for ((acc, region, user), u) in &act.users {
        let l = [acc.as_str(), p, region.as_str(), user.as_str()];
        sample(F::ActivityCredits, &l, f(u.credits_used));
        sample(F::ActivityOverageCredits, &l, f(u.overage_credits_used));
        if let Some(t) = u.last_active {
            sample(F::LastActive, &l, t.timestamp() as f64);
        }
        // With overage off, Kiro fills the cap with a preset that caps nothing.
        if let Some(cap) = u.overage_cap.filter(|_| u.overage_enabled != Some(false)) {
            sample(F::OverageCap, &l, f(cap));
        }
        for (client, n) in &u.messages {
            sample(
                F::Messages,
                &[
                    acc.as_str(),
                    p,
                    client.as_str(),
                    region.as_str(),
                    user.as_str(),
                ],
                *n as f64,
            );
        }
    }
    if let Some(t) = act.as_of {
        sample(F::ActivityAsOf, &[p], t.timestamp() as f64);
    }
    for (cc, n) in &view.unbilled_credits {
        sample(F::UnbilledCredits, &[p, cost_center_label(cc)], f(*n));
    }
    sample(F::UsersWithoutSeat, &[p], view.without_seat.users as f64);
    sample(F::CreditsWithoutSeat, &[p], f(view.without_seat.credits));
}

/// The exposition: the snapshot's compressed families (if any) and the exporter's own
/// metrics, ready to be served as they are.
pub fn encode(data: Option<&Families>, exporter: &Telemetry) -> Result<Exposition, EncodeError> {
    let own = encode_own(exporter)?;
    Ok(Exposition::new(data.cloned(), bytes::Bytes::from(own))?)
}

/// The exporter's own metrics as text.
pub fn encode_own(exporter: &Telemetry) -> Result<Vec<u8>, EncodeError> {
    let mut own = Vec::with_capacity(16 * 1024);
    TextEncoder::new().encode(&exporter.registry().gather(), &mut own)?;
    Ok(own)
}
