//! The month-end forecast, per seat (account, region, user), then summed where it is shown:
//! - **credits**: the seat's credits are extrapolated over the hours of the month the data
//!   covers, and the overage beyond its plan's included credits is priced at the plan's rate
//!   (never below the overage billed so far); a seat whose tier the plan table does not know
//!   has its overage dollars extrapolated instead;
//! - **seat fees**: a fee billed at once is what it is; a fee spread daily on a seat still
//!   active goes on at its daily rate to the month's end;
//! - everything else (refunds, credits, discounts, unattributed lines, tax) counts as billed.
//!
//! A month that is over, or whose data reaches its end, is its own forecast. One definition,
//! read by every sink through the snapshot's views.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{Allocation, PlanTable, SeatKey};

/// How the month-end forecast is made, for HELP texts and documentation.
pub const FORECAST_METHOD: &str = "credits extrapolated over the hours of the month covered by \
the data and overage priced beyond each plan's included credits; seat fees spread daily carried \
to month end for active seats; other charges counted once; a month that is over, or whose data \
reaches its end, is its own forecast";

impl Allocation {
    /// Factor by which usage is scaled to the month's end at `now`: month hours divided by the
    /// hours of data, or 1 once the month is over, the data reaches its end, or there is no
    /// usage.
    pub fn extrapolation_factor(&self, now: DateTime<Utc>) -> Decimal {
        let (start, end) = (self.period.start(), self.period.end());
        match self.data_as_of {
            Some(as_of) if as_of < end && as_of > start && now < end => {
                let covered = (as_of - start).num_seconds();
                let month = (end - start).num_seconds();
                Decimal::from(month) / Decimal::from(covered)
            }
            _ => Decimal::ONE,
        }
    }

    /// What each seat will cost at month end beyond what it was billed so far (0 for a month
    /// that is its own forecast), by the method in the module documentation.
    pub fn forecast_extra(
        &self,
        plans: &PlanTable,
        now: DateTime<Utc>,
    ) -> BTreeMap<SeatKey, Decimal> {
        let factor = self.extrapolation_factor(now);
        let mut out = BTreeMap::new();
        if factor == Decimal::ONE {
            return out;
        }
        // Per seat: credits, overage billed, seat fees billed.
        let mut billed: BTreeMap<(&str, &str, &str), (Decimal, Decimal, Decimal)> = BTreeMap::new();
        for u in &self.units {
            let b = billed
                .entry((&u.account_id, &u.region, &u.user_id))
                .or_default();
            b.0 += u.credits_used;
            b.1 += u.overage_usd;
            b.2 += u.subscription_usd;
        }
        let end = self.period.end();
        let as_of = self.data_as_of.unwrap_or(end);
        for ((account, region, user), (credits, overage, fees)) in billed {
            let key = (account.to_owned(), region.to_owned(), user.to_owned());
            let seat = self.seats.get(&key);
            let plan = seat.and_then(|s| plans.by_name(&s.plan));
            let overage_forecast = match plan {
                Some(p) => {
                    let projected = credits * factor;
                    ((projected - p.included_credits).max(Decimal::ZERO) * p.overage_usd_per_credit)
                        .max(overage)
                }
                None => overage * factor,
            };
            // A fee spread daily (a line a day) on a seat billed until the data's last day or
            // the one before goes on at its daily rate.
            let fee_forecast = match seat {
                Some(s)
                    if s.seat_fee_lines >= 3
                        && s.last_seat_fee
                            .is_some_and(|t| t >= as_of - chrono::Duration::days(2)) =>
                {
                    let next = s
                        .last_seat_fee
                        .map_or(end, |t| t + chrono::Duration::days(1));
                    let remaining =
                        Decimal::from((end - next).num_hours().max(0)) / Decimal::from(24);
                    fees + fees / Decimal::from(s.seat_fee_lines) * remaining
                }
                _ => fees,
            };
            let extra = (overage_forecast - overage) + (fee_forecast - fees);
            out.insert(key, extra.round_dp(6));
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::allocation::{QueryStats, Seat, UserCost};
    use chrono::Duration;

    pub(crate) fn alloc(as_of_days: Option<i64>) -> Allocation {
        let period = "2026-11".parse().unwrap(); // 30 days
        let unit = |cc: &str, sub: i64, over: i64| UserCost {
            account_id: "1".into(),
            user_id: "u".into(),
            cost_center: cc.into(),
            plan: "Pro".into(),
            credits_used: Decimal::ZERO,
            subscription_usd: Decimal::from(sub),
            overage_usd: Decimal::from(over),
            other_usd: Decimal::from(-1),
            total_usd: Decimal::from(sub + over - 1),
            ..UserCost::default()
        };
        Allocation {
            period,
            units: vec![unit("a", 20, 10), unit("b", 40, 0)],
            seats: Default::default(),
            learned_fees: Default::default(),
            unknown_plans: Default::default(),
            tax_usd: Decimal::ZERO,
            unattributed_usd: Decimal::ZERO,
            kiro_total_usd: Decimal::from(68),
            data_as_of: as_of_days.map(|d| period.start() + Duration::days(d)),
            stats: QueryStats::default(),
            assigned_cost_centers: Default::default(),
            q_developer: Default::default(),
            daily_credits: None,
        }
    }

    fn seat(plan: &str, last_fee_day: i64, lines: i64) -> Seat {
        let period: crate::period::BillingPeriod = "2026-11".parse().unwrap();
        Seat {
            plan: plan.into(),
            last_seat_fee: Some(period.start() + Duration::days(last_fee_day)),
            seat_fee_lines: lines,
        }
    }

    #[test]
    fn credits_are_extrapolated_and_overage_priced_beyond_the_plan() {
        // A Pro seat at 900 of 1,000 credits after 10 of 30 days: 2,700 at month end, 1,700
        // beyond the plan at $0.04 = $68, though no overage is billed yet.
        let mut a = alloc(Some(10));
        a.units.truncate(1);
        a.units[0].credits_used = Decimal::from(900);
        a.units[0].overage_usd = Decimal::ZERO;
        let key = ("1".to_owned(), String::new(), "u".to_owned());
        a.seats.insert(key.clone(), seat("Pro", 0, 1));
        let during = a.period.start() + Duration::days(11);
        assert_eq!(a.extrapolation_factor(during), Decimal::from(3));
        let extra = a.forecast_extra(&PlanTable::default(), during);
        assert_eq!(extra[&key], Decimal::from(68));
        // An unknown tier: its overage dollars are extrapolated instead (none here).
        a.seats.insert(key.clone(), seat("Ultra", 0, 1));
        assert_eq!(
            a.forecast_extra(&PlanTable::default(), during)[&key],
            Decimal::ZERO
        );
    }

    #[test]
    fn seat_fees_spread_daily_go_on_to_month_end() {
        // $20 a month billed daily: 10 lines of $0.666…, the last on day 10 (data as of day 10).
        let mut a = alloc(Some(10));
        a.units.truncate(1);
        a.units[0].credits_used = Decimal::ZERO;
        a.units[0].overage_usd = Decimal::ZERO;
        a.units[0].subscription_usd = Decimal::from(20) * Decimal::from(10) / Decimal::from(30);
        let key = ("1".to_owned(), String::new(), "u".to_owned());
        a.seats.insert(key.clone(), seat("Pro", 9, 10));
        let during = a.period.start() + Duration::days(11);
        let extra = a.forecast_extra(&PlanTable::default(), during)[&key];
        assert!(
            (extra - Decimal::from(20) * Decimal::from(20) / Decimal::from(30)).abs()
                < Decimal::new(1, 5),
            "{extra}"
        );
        // A fee billed at once on the 1st is already the month's.
        a.seats.insert(key.clone(), seat("Pro", 0, 1));
        assert_eq!(
            a.forecast_extra(&PlanTable::default(), during)[&key],
            Decimal::ZERO
        );
    }

    #[test]
    fn complete_month_is_its_own_forecast() {
        let later = alloc(Some(10)).period.end() + Duration::days(2);
        for a in [alloc(Some(30)), alloc(None), alloc(Some(10))] {
            assert_eq!(a.extrapolation_factor(later), Decimal::ONE);
            assert!(a.forecast_extra(&PlanTable::default(), later).is_empty());
        }
    }
}
