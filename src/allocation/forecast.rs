//! The month-end forecast: usage-driven cost extrapolated over the hours of the month the data
//! covers; subscriptions, other charges, unattributed lines and tax counted as billed so far.
//! One definition, read by every sink through the snapshot's views.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{Allocation, UserCost};

/// How the month-end forecast is made, for HELP texts and documentation.
pub const FORECAST_METHOD: &str = "month-to-date subscriptions and other charges counted once, \
overage extrapolated linearly over the hours of the month covered by the data (data_as_of); \
a month that is over, or whose data reaches its end, is its own forecast";

impl Allocation {
    /// Factor by which usage-driven cost is scaled to the month's end at `now`: month hours
    /// divided by the hours of data, or 1 once the month is over, the data reaches its end, or
    /// there is no usage.
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
}

/// A unit's month-end cost when usage-driven cost is scaled by `factor`.
pub fn unit_forecast(u: &UserCost, factor: Decimal) -> Decimal {
    u.subscription_usd + u.other_usd + u.overage_usd * factor
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::allocation::QueryStats;
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
        };
        Allocation {
            period,
            units: vec![unit("a", 20, 10), unit("b", 40, 0)],
            tax_usd: Decimal::ZERO,
            unattributed_usd: Decimal::ZERO,
            kiro_total_usd: Decimal::from(68),
            data_as_of: as_of_days.map(|d| period.start() + Duration::days(d)),
            stats: QueryStats::default(),
        }
    }

    #[test]
    fn overage_is_extrapolated_subscriptions_are_not() {
        let a = alloc(Some(10));
        a.reconcile().unwrap();
        let during = a.period.start() + Duration::days(11);
        let f = a.extrapolation_factor(during);
        assert_eq!(f, Decimal::from(3));
        assert_eq!(unit_forecast(&a.units[0], f), Decimal::from(20 - 1 + 30));
        assert_eq!(unit_forecast(&a.units[1], f), Decimal::from(39));
    }

    #[test]
    fn complete_month_is_its_own_forecast() {
        let later = alloc(Some(10)).period.end() + Duration::days(2);
        for a in [alloc(Some(30)), alloc(None), alloc(Some(10))] {
            let f = a.extrapolation_factor(later);
            assert_eq!(f, Decimal::ONE);
            assert_eq!(unit_forecast(&a.units[0], f), Decimal::from(29));
        }
    }
}
