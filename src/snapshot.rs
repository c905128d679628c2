//! A snapshot: what one successful refresh found, per watched billing period, with every
//! derived number computed once when it is built. Immutable once built; sinks only read it
//! and compute nothing of their own, so /metrics, CloudWatch, alerts, the landing page and the
//! report cannot disagree.
//!
//! One meaning of **total cost**: the whole Kiro bill of the period, tax included
//! ([`PeriodView::total_cost_usd`] = Σ units + unattributed + tax = `kiro_total_usd`). Per user,
//! per cost center and per account figures exclude tax and unattributed lines: AWS does not
//! bill tax to a user, so it is not allocated.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::allocation::savings::{self, Savings, SavingsSettings};
use crate::allocation::{Allocation, PlanTable, Rollup, SeatKey, SeatRef, same_seat};
use crate::source::activity::Activity;

/// The result of one successful refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    /// One view per watched period, oldest first.
    pub periods: Vec<PeriodView>,
    /// Names of the user ids, where known (Identity Store, else the activity report's
    /// e-mail), with only the fields configured for export filled.
    pub people: BTreeMap<String, crate::source::identity::Person>,
}

/// The month-end forecast of a period ([`crate::allocation::forecast::FORECAST_METHOD`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Forecast {
    /// Factor usage-driven cost is scaled by.
    pub factor: Decimal,
    /// Per cost center ("" = untagged), tax and unattributed lines excluded.
    pub cost_centers: BTreeMap<String, Decimal>,
    /// Per seat (account, region, user), summed over its cost centers.
    pub seats: BTreeMap<SeatKey, Decimal>,
    /// Per usage account.
    pub accounts: BTreeMap<String, Decimal>,
    /// The whole bill at month end: units forecast + unattributed + tax as billed so far.
    pub total: Decimal,
}

/// One billing period and everything derived from it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodView {
    pub allocation: Allocation,
    /// Sum over all units (users only: tax and unattributed excluded).
    pub totals: Rollup,
    /// The whole Kiro bill of the period, tax included: the one "total cost" of every sink.
    pub total_cost_usd: Decimal,
    /// Per cost center ("" = untagged), sorted by name.
    pub cost_centers: BTreeMap<String, Rollup>,
    /// Per usage account.
    pub accounts: BTreeMap<String, Rollup>,
    pub forecast: Forecast,
    pub savings: Savings,
    /// The plan table the period is priced with: the configured one, with the monthly fees
    /// learned from the bill where it shows them.
    pub plans: PlanTable,
    /// Per seat (account, region, user): its main cost center (see
    /// [`Allocation::seat_cost_centers`]).
    pub seat_cost_centers: BTreeMap<SeatKey, String>,
    /// Sorted user ids with at least one untagged unit.
    pub untagged_users: Vec<String>,
    /// Sorted user ids charged a subscription in more than one account.
    pub duplicate_subscriptions: Vec<String>,
    /// Distinct (account, user) per plan name ("" = no subscription line).
    pub users_by_plan: BTreeMap<String, usize>,
    /// What the activity report says people used, when it is read.
    pub activity: Option<Activity>,
    /// Per cost center: credits the activity report counts beyond what the bill shows yet
    /// (the bill lags; in-plan use is not always billed). Only with the activity report.
    pub unbilled_credits: BTreeMap<String, Decimal>,
}

fn owned<V: Clone>(m: BTreeMap<&str, V>) -> BTreeMap<String, V> {
    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

impl PeriodView {
    /// Derives every view of `allocation` as of `now`, from the bill alone.
    pub fn build(
        allocation: Allocation,
        plans: &PlanTable,
        savings_settings: &SavingsSettings,
        now: DateTime<Utc>,
    ) -> Self {
        Self::build_with_activity(allocation, None, plans, savings_settings, now)
    }

    /// Derives every view of `allocation` and what `activity` says people used, as of `now`.
    pub fn build_with_activity(
        allocation: Allocation,
        activity: Option<Activity>,
        plans: &PlanTable,
        savings_settings: &SavingsSettings,
        now: DateTime<Utc>,
    ) -> Self {
        let plans = plans.with_fees(&allocation.learned_fees);
        let order = allocation.units_by_seat();
        let seat_cost_centers: BTreeMap<SeatKey, String> = allocation
            .seat_cost_centers()
            .into_iter()
            .map(|((a, r, u), cc)| ((a.to_owned(), r.to_owned(), u.to_owned()), cc.to_owned()))
            .collect();
        let extra = allocation.forecast_extra(&plans, now);
        // Per cost center and account as billed (a few keys), per seat from its units.
        let mut cost_centers: BTreeMap<&str, Decimal> = BTreeMap::new();
        let mut accounts: BTreeMap<&str, Decimal> = BTreeMap::new();
        for u in &allocation.units {
            *cost_centers.entry(&u.cost_center).or_default() += u.total_usd;
            *accounts.entry(&u.account_id).or_default() += u.total_usd;
        }
        let mut forecast = Forecast {
            factor: allocation.extrapolation_factor(now),
            cost_centers: owned(cost_centers),
            accounts: owned(accounts),
            seats: order
                .chunk_by(same_seat)
                .map(|run| {
                    let (a, r, u) = run[0].seat();
                    let key = (a.to_owned(), r.to_owned(), u.to_owned());
                    (key, run.iter().map(|u| u.total_usd).sum())
                })
                .collect(),
            total: Decimal::ZERO,
        };
        // What a seat adds by month end accrues where the seat has most cost.
        for (seat, more) in &extra {
            let cc = seat_cost_centers.get(seat).cloned().unwrap_or_default();
            *forecast.cost_centers.entry(cc).or_default() += *more;
            *forecast.seats.entry(seat.clone()).or_default() += *more;
            *forecast.accounts.entry(seat.0.clone()).or_default() += *more;
        }
        // Sums of exact amounts and of extras rounded to 6 decimals: a month that is its own
        // forecast forecasts exactly what it cost.
        forecast.total = forecast.cost_centers.values().copied().sum::<Decimal>()
            + allocation.unattributed_usd
            + allocation.tax_usd;
        let used: BTreeMap<SeatKey, Decimal> = activity
            .as_ref()
            .map(|a| {
                a.users
                    .iter()
                    .map(|(k, u)| (k.clone(), u.credits_used))
                    .collect()
            })
            .unwrap_or_default();
        // The bill's credits per seat, against the report's, in the seat's main cost center.
        let mut unbilled: BTreeMap<String, Decimal> = BTreeMap::new();
        if activity.is_some() {
            let billed: HashMap<SeatRef<'_>, Decimal, foldhash::fast::RandomState> = order
                .chunk_by(same_seat)
                .map(|run| (run[0].seat(), run.iter().map(|u| u.credits_used).sum()))
                .collect();
            for (seat, seen) in &used {
                let (a, r, u) = seat;
                let billed_here = billed.get(&(a.as_str(), r.as_str(), u.as_str()));
                let gap = *seen - billed_here.copied().unwrap_or_default();
                let cc = seat_cost_centers.get(seat).cloned().unwrap_or_default();
                *unbilled.entry(cc).or_default() += gap.max(Decimal::ZERO);
            }
        }
        drop(order);
        Self {
            totals: allocation.totals(),
            total_cost_usd: allocation.kiro_total_usd,
            cost_centers: owned(allocation.cost_centers()),
            accounts: owned(allocation.accounts()),
            savings: savings::recommend_with_use(&allocation, &plans, savings_settings, now, &used),
            seat_cost_centers,
            untagged_users: owned_list(allocation.untagged_users()),
            duplicate_subscriptions: owned_list(allocation.duplicate_subscriptions()),
            users_by_plan: owned(allocation.users_by_plan()),
            forecast,
            plans,
            allocation,
            activity,
            unbilled_credits: unbilled,
        }
    }

    /// Cost centers, most expensive first.
    pub fn cost_centers_by_cost(&self) -> Vec<(&str, &Rollup)> {
        let mut ccs: Vec<(&str, &Rollup)> = self
            .cost_centers
            .iter()
            .map(|(k, r)| (k.as_str(), r))
            .collect();
        ccs.sort_by_key(|(_, r)| std::cmp::Reverse(r.total_usd));
        ccs
    }

    /// A seat's main cost center.
    pub fn seat_cost_center(&self, seat: &SeatKey) -> &str {
        self.seat_cost_centers.get(seat).map_or("", String::as_str)
    }
}

fn owned_list(v: Vec<&str>) -> Vec<String> {
    v.into_iter().map(str::to_owned).collect()
}

impl Snapshot {
    /// Builds the views of every period's allocation and activity (oldest first) as of
    /// `taken_at`.
    pub fn build_with_activity(
        taken_at: DateTime<Utc>,
        periods: Vec<(Allocation, Option<Activity>)>,
        plans: &PlanTable,
        savings_settings: &SavingsSettings,
    ) -> Self {
        Self {
            taken_at,
            periods: periods
                .into_iter()
                .map(|(a, act)| {
                    PeriodView::build_with_activity(a, act, plans, savings_settings, taken_at)
                })
                .collect(),
            people: BTreeMap::new(),
        }
    }

    /// Builds the views of every period's allocation (oldest first) as of `taken_at`.
    pub fn build(
        taken_at: DateTime<Utc>,
        allocations: Vec<Allocation>,
        plans: &PlanTable,
        savings_settings: &SavingsSettings,
    ) -> Self {
        Self {
            taken_at,
            periods: allocations
                .into_iter()
                .map(|a| PeriodView::build(a, plans, savings_settings, taken_at))
                .collect(),
            people: BTreeMap::new(),
        }
    }

    /// The newest period.
    pub fn current(&self) -> Option<&PeriodView> {
        self.periods.last()
    }

    /// The view of `period`, if watched.
    pub fn period(&self, period: crate::period::BillingPeriod) -> Option<&PeriodView> {
        self.periods.iter().find(|v| v.allocation.period == period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    /// Two units of one seat (costs 29 and 39), with tax and a discount line.
    fn alloc() -> Allocation {
        Allocation {
            tax_usd: Decimal::from(7),
            unattributed_usd: Decimal::from(-2),
            kiro_total_usd: Decimal::from(73),
            ..crate::allocation::forecast::tests::alloc(Some(10))
        }
    }

    #[test]
    fn views_are_derived_once_with_one_total() {
        let a = alloc();
        a.reconcile().unwrap();
        let during = a.period.start() + Duration::days(11);
        let v = PeriodView::build(
            a.clone(),
            &PlanTable::default(),
            &SavingsSettings::default(),
            during,
        );
        assert_eq!(
            v.total_cost_usd,
            Decimal::from(73),
            "the bill, tax included"
        );
        assert_eq!(
            v.totals.total_usd + a.unattributed_usd + a.tax_usd,
            v.total_cost_usd
        );
        assert_eq!(v.forecast.factor, Decimal::from(3));
        // No seat information: credits and fees as billed, overage dollars extrapolated
        // (10 → 30) into the seat's main cost center.
        let seat = ("1".to_owned(), String::new(), "u".to_owned());
        assert_eq!(v.seat_cost_center(&seat), "b", "the unit with most cost");
        assert_eq!(v.forecast.cost_centers["a"], Decimal::from(29));
        assert_eq!(v.forecast.cost_centers["b"], Decimal::from(39 + 20));
        assert_eq!(v.forecast.seats[&seat], Decimal::from(29 + 39 + 20));
        assert_eq!(v.forecast.total, Decimal::from(29 + 59 - 2 + 7));
        // A month that is over is its own forecast.
        let later = PeriodView::build(
            a.clone(),
            &PlanTable::default(),
            &SavingsSettings::default(),
            a.period.end() + Duration::days(2),
        );
        assert_eq!(later.forecast.total, later.total_cost_usd);
    }
}
