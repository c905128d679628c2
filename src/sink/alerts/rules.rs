//! Threshold rules over a snapshot: which (rule, subject) pairs fire for the current period.
//!
//! A rule names a scope (user, cost center, account, total), a measure, a threshold and
//! optional filters; it fires for a subject whose measure is at or above the threshold. Only
//! the newest period of the snapshot (the current month) is evaluated. Total cost is the whole
//! bill, tax included, as everywhere ([`crate::snapshot`]).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

use crate::period::BillingPeriod;
use crate::sink::BudgetLimits;
use crate::snapshot::{PeriodView, SeatId, SeatTotals, SeatView};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One (account, user): all the user's cost centers in that account.
    User,
    CostCenter,
    Account,
    Total,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    CostUsd,
    OverageUsd,
    CreditsUsed,
    /// Credits used over the included credits of the plans in scope.
    CreditsUsedRatio,
    /// Month-end forecast (the same as the exported `kiro_cost_center_forecast_usd`).
    ForecastUsd,
    UntaggedUsers,
    DuplicateSubscriptions,
    /// Possible monthly saving from the savings recommendations.
    SavingsUsd,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CostUsd => "cost_usd",
            Self::OverageUsd => "overage_usd",
            Self::CreditsUsed => "credits_used",
            Self::CreditsUsedRatio => "credits_used_ratio",
            Self::ForecastUsd => "forecast_usd",
            Self::UntaggedUsers => "untagged_users",
            Self::DuplicateSubscriptions => "duplicate_subscriptions",
            Self::SavingsUsd => "savings_usd",
        }
    }

    /// Whether the measure means something for the scope.
    pub fn applies_to(self, scope: Scope) -> bool {
        match self {
            Self::UntaggedUsers | Self::DuplicateSubscriptions => scope == Scope::Total,
            _ => true,
        }
    }

    /// How a value is shown, as the report card and the landing page write it
    /// ([`crate::locale`]): money as currency (`$1,234.50`), a ratio as a percentage, counts and
    /// credits grouped (`12,345 credits`).
    pub fn format(self, v: f64) -> String {
        use crate::locale::{money, percent, quantity};
        let d = rust_decimal::Decimal::from_f64_retain(v).unwrap_or_default();
        let whole = |d: rust_decimal::Decimal| {
            d.round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        };
        match self {
            Self::CostUsd | Self::OverageUsd | Self::ForecastUsd | Self::SavingsUsd => money(d),
            Self::CreditsUsedRatio => percent(d),
            Self::CreditsUsed => format!("{} credits", quantity(whole(d))),
            Self::UntaggedUsers | Self::DuplicateSubscriptions => quantity(whole(d)),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// `[[alerts.rules]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique; it keys the alert state, so renaming a rule starts it afresh.
    pub name: String,
    pub scope: Scope,
    pub measure: Measure,
    /// Fires at or above this value. With `relative_to_budget`, a ratio of the cost center's
    /// budget (`1.0` = the whole budget).
    pub threshold: f64,
    /// Cost-center scope only: compare with `threshold × budgets.cost_centers[cc]` (or
    /// `budgets.default_limit_usd`); a cost center without a budget never fires.
    #[serde(default)]
    pub relative_to_budget: bool,
    /// Only these cost centers (user and cost-center scopes; `"untagged"` for lines without
    /// the tag); empty = all.
    #[serde(default)]
    pub cost_centers: Vec<String>,
    /// Only users on these plans (user scope); empty = all.
    #[serde(default)]
    pub plans: Vec<String>,
    #[serde(default)]
    pub severity: Severity,
    /// Channel names (`[[alerts.channels]]`); empty = every channel.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Overrides `alerts.repeat_interval` for this rule.
    #[serde(default, with = "humantime_serde::option")]
    pub repeat_interval: Option<std::time::Duration>,
}

impl Rule {
    /// A rule with no filters, severity warning, every channel and the default repeat.
    pub fn new(name: &str, scope: Scope, measure: Measure, threshold: f64) -> Self {
        Self {
            name: name.into(),
            scope,
            measure,
            threshold,
            relative_to_budget: false,
            cost_centers: vec![],
            plans: vec![],
            severity: Severity::default(),
            channels: vec![],
            repeat_interval: None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if !self.threshold.is_finite() || self.threshold < 0.0 {
            return Err(format!(
                "rule {:?}: threshold must be a number >= 0",
                self.name
            ));
        }
        if !self.measure.applies_to(self.scope) {
            return Err(format!(
                "rule {:?}: measure {} applies to scope total only",
                self.name,
                self.measure.as_str()
            ));
        }
        if self.relative_to_budget && self.scope != Scope::CostCenter {
            return Err(format!(
                "rule {:?}: relative_to_budget needs scope cost_center",
                self.name
            ));
        }
        if !self.plans.is_empty() && self.scope != Scope::User {
            return Err(format!(
                "rule {:?}: a plans filter needs scope user",
                self.name
            ));
        }
        if !self.cost_centers.is_empty() && !matches!(self.scope, Scope::User | Scope::CostCenter) {
            return Err(format!(
                "rule {:?}: a cost_centers filter needs scope user or cost_center",
                self.name
            ));
        }
        Ok(())
    }
}

/// One rule firing for one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    pub rule: String,
    pub severity: Severity,
    pub scope: Scope,
    pub measure: Measure,
    /// Stable identity within the scope: `account/user`, the cost center, the account, `total`.
    pub subject: String,
    /// What a person reads: the user and cost center, the cost center, …
    pub subject_label: String,
    pub period: BillingPeriod,
    pub value: f64,
    /// The effective threshold (budget-relative ones already multiplied out).
    pub threshold: f64,
}

/// What a subject measures: borrowed from the snapshot's views, nothing computed.
#[derive(Default)]
struct Values {
    cost: Decimal,
    overage: Decimal,
    credits: Decimal,
    included: Decimal,
    forecast: Decimal,
    savings: Decimal,
}

impl Measure {
    /// The measure of a subject's values; `None` where it means nothing (a ratio of no
    /// included credits).
    fn of(self, v: &Values, view: &PeriodView) -> Option<f64> {
        let d = match self {
            Self::CostUsd => v.cost,
            Self::OverageUsd => v.overage,
            Self::CreditsUsed => v.credits,
            Self::CreditsUsedRatio => {
                if v.included.is_zero() {
                    return None;
                }
                v.credits / v.included
            }
            Self::ForecastUsd => v.forecast,
            Self::SavingsUsd => v.savings,
            Self::UntaggedUsers => Decimal::from(view.untagged_users.len()),
            Self::DuplicateSubscriptions => Decimal::from(view.duplicate_subscriptions.len()),
        };
        Some(crate::allocation::amount::as_f64(d))
    }
}

impl Values {
    fn of(
        r: &crate::allocation::Rollup,
        forecast: Option<&Decimal>,
        seats: Option<&SeatTotals>,
    ) -> Self {
        let seats = seats.copied().unwrap_or_default();
        Self {
            cost: r.total_usd,
            overage: r.overage_usd,
            credits: r.credits_used,
            included: seats.included_credits,
            forecast: forecast.copied().unwrap_or_default(),
            savings: seats.savings_usd,
        }
    }

    fn of_seat(s: &SeatView) -> Self {
        Self {
            cost: s.cost_usd,
            overage: s.overage_usd,
            credits: s.credits_used,
            included: s.included_credits.unwrap_or_default(),
            forecast: s.forecast_usd,
            savings: s.saving_usd,
        }
    }
}

/// Puts each user-scope firing's person in front of its label (`Alice Liddell · 9067…
/// (platform, Pro, account …)`), where the exporter knows them. The subject (the alert's
/// identity) stays the id.
pub fn name_users(
    firing: &mut [Firing],
    people: &BTreeMap<String, crate::source::identity::Person>,
) {
    for f in firing.iter_mut().filter(|f| f.scope == Scope::User) {
        let user = f.subject.rsplit('/').next().unwrap_or_default();
        let Some(p) = people.get(user) else { continue };
        let name = [&p.display_name, &p.user_name, &p.email]
            .into_iter()
            .find(|n| !n.is_empty());
        if let Some(name) = name {
            f.subject_label = format!("{name} · {}", f.subject_label);
        }
    }
}

/// The subject of a user-scope alert: `account/user`, or `account/region/user` when the user
/// holds seats in more than one region of the account (so each seat's alert is its own).
pub fn seat_subject(account: &str, region: &str, user: &str, regions_of_user: usize) -> String {
    if regions_of_user > 1 {
        format!("{account}/{region}/{user}")
    } else {
        format!("{account}/{user}")
    }
}

/// The firing (rule, subject) pairs of one period, read from its view: every figure is the
/// snapshot's (costs, forecasts, savings, included credits, main cost centers); a rule only
/// compares.
pub fn evaluate(rules: &[Rule], view: &PeriodView, budgets: &BudgetLimits) -> Vec<Firing> {
    // The whole bill: the one meaning of total cost (tax included).
    let total = Values {
        cost: view.total_cost_usd,
        overage: view.totals.overage_usd,
        credits: view.totals.credits_used,
        included: view.seat_totals().included_credits,
        forecast: view.forecast.total,
        savings: view.seat_totals().savings_usd,
    };
    let measure = |m: Measure, v: &Values| m.of(v, view);
    let mut out = Vec::new();
    for rule in rules {
        let mut fire = |subject: String, label: String, value: Option<f64>, threshold: f64| {
            if let Some(value) = value
                && value >= threshold
            {
                out.push(Firing {
                    rule: rule.name.clone(),
                    severity: rule.severity,
                    scope: rule.scope,
                    measure: rule.measure,
                    subject,
                    subject_label: label,
                    period: view.allocation.period,
                    value,
                    threshold,
                });
            }
        };
        match rule.scope {
            Scope::User => {
                for s in view.seats().iter().filter(|s| rule.matches_seat(s)) {
                    let (subject, label) = seat_subject_label(s);
                    fire(
                        subject,
                        label,
                        measure(rule.measure, &Values::of_seat(s)),
                        rule.threshold,
                    );
                }
            }
            Scope::CostCenter => {
                for (cc, r) in view
                    .cost_centers
                    .iter()
                    .filter(|(cc, _)| rule.matches_cost_center(cc))
                {
                    let threshold = if rule.relative_to_budget {
                        match budgets.limit(cc).and_then(|l| l.to_f64()) {
                            Some(limit) => rule.threshold * limit,
                            None => continue,
                        }
                    } else {
                        rule.threshold
                    };
                    let label = if cc.is_empty() {
                        "untagged (no cost center)".to_owned()
                    } else {
                        format!("cost center {cc}")
                    };
                    let v = Values::of(
                        r,
                        view.forecast.cost_centers.get(cc),
                        view.cost_center_seats().get(cc),
                    );
                    fire(cc.clone(), label, measure(rule.measure, &v), threshold);
                }
            }
            Scope::Account => {
                for (account, r) in &view.accounts {
                    let v = Values::of(
                        r,
                        view.forecast.accounts.get(account),
                        view.account_seats().get(account),
                    );
                    fire(
                        account.clone(),
                        format!("account {account}"),
                        measure(rule.measure, &v),
                        rule.threshold,
                    );
                }
            }
            Scope::Total => fire(
                "total".into(),
                "all Kiro users".into(),
                measure(rule.measure, &total),
                rule.threshold,
            ),
        }
    }
    out
}

/// A user-scope alert's subject and what a person reads:
/// `user (cost center, plan, account …[, region])`.
fn seat_subject_label(s: &SeatView) -> (String, String) {
    let SeatId {
        account_id: account,
        region,
        user_id: user,
    } = &s.id;
    let seats = if s.in_several_regions { 2 } else { 1 };
    let at = if s.in_several_regions {
        format!("account {account}, {region}")
    } else {
        format!("account {account}")
    };
    let label = format!(
        "{user} ({}, {}, {at})",
        crate::allocation::cost_center_label(&s.cost_center),
        if s.plan.is_empty() {
            "no plan"
        } else {
            &s.plan
        },
    );
    (seat_subject(account, region, user, seats), label)
}

impl Rule {
    /// Whether the rule's cost-center filter lets `cc` through.
    fn matches_cost_center(&self, cc: &str) -> bool {
        self.cost_centers.is_empty()
            || self
                .cost_centers
                .iter()
                .any(|c| c == crate::allocation::cost_center_label(cc))
    }

    /// Whether the rule's filters let the seat through.
    fn matches_seat(&self, s: &SeatView) -> bool {
        self.matches_cost_center(&s.cost_center)
            && (self.plans.is_empty() || self.plans.contains(&s.plan))
    }
}

/// The rules shipped as defaults (also in `config/alerts.toml`).
pub fn default_rules() -> Vec<Rule> {
    let rule = |name: &str, scope, measure, threshold: f64, severity| Rule {
        severity,
        ..Rule::new(name, scope, measure, threshold)
    };
    vec![
        rule(
            "user-credits-80pct",
            Scope::User,
            Measure::CreditsUsedRatio,
            0.8,
            Severity::Info,
        ),
        rule(
            "user-credits-100pct",
            Scope::User,
            Measure::CreditsUsedRatio,
            1.0,
            Severity::Warning,
        ),
        rule(
            "user-overage",
            Scope::User,
            Measure::OverageUsd,
            0.01,
            Severity::Warning,
        ),
        Rule {
            relative_to_budget: true,
            ..rule(
                "cost-center-forecast-over-budget",
                Scope::CostCenter,
                Measure::ForecastUsd,
                1.0,
                Severity::Critical,
            )
        },
        rule(
            "untagged-users",
            Scope::Total,
            Measure::UntaggedUsers,
            1.0,
            Severity::Warning,
        ),
        rule(
            "duplicate-subscriptions",
            Scope::Total,
            Measure::DuplicateSubscriptions,
            1.0,
            Severity::Warning,
        ),
        Rule {
            repeat_interval: Some(std::time::Duration::from_secs(7 * 86_400)),
            ..rule(
                "savings-weekly-digest",
                Scope::Total,
                Measure::SavingsUsd,
                1.0,
                Severity::Info,
            )
        },
    ]
}

#[cfg(test)]
mod format_tests {
    use super::Measure;

    #[test]
    fn values_are_written_as_the_report_and_the_landing_page_write_them() {
        assert_eq!(Measure::CostUsd.format(1234.5), "$1,234.50");
        assert_eq!(Measure::SavingsUsd.format(-207.6), "-$207.60");
        assert_eq!(Measure::OverageUsd.format(0.01), "$0.01");
        assert_eq!(Measure::CreditsUsedRatio.format(0.805), "81%");
        assert_eq!(Measure::CreditsUsed.format(12_345.4), "12,345 credits");
        assert_eq!(Measure::UntaggedUsers.format(1_200.0), "1,200");
    }
}
