//! A snapshot: the allocations of every watched billing period from one refresh. Immutable once
//! built; sinks only read it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::Allocation;

/// The result of one successful refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    /// One allocation per watched period, oldest first.
    pub allocations: Vec<Allocation>,
}

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

    /// Month-end cost forecast per cost center at `now` ([`FORECAST_METHOD`]).
    pub fn forecast_cost_centers(&self, now: DateTime<Utc>) -> BTreeMap<&str, Decimal> {
        let f = self.extrapolation_factor(now);
        let mut out: BTreeMap<&str, Decimal> = BTreeMap::new();
        for u in &self.units {
            let projected = u.subscription_usd + u.other_usd + u.overage_usd * f;
            *out.entry(&u.cost_center).or_default() += projected;
        }
        for v in out.values_mut() {
            *v = v.round_dp(6);
        }
        out
    }
}

impl Snapshot {
    /// The allocation of the newest period.
    pub fn current(&self) -> Option<&Allocation> {
        self.allocations.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocation::{QueryStats, UserCost};
    use chrono::Duration;

    fn alloc(as_of_days: Option<i64>) -> Allocation {
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
        assert_eq!(a.extrapolation_factor(during), Decimal::from(3));
        let f = a.forecast_cost_centers(during);
        assert_eq!(f["a"], Decimal::from(20 - 1 + 30));
        assert_eq!(f["b"], Decimal::from(39));
    }

    #[test]
    fn complete_month_is_its_own_forecast() {
        let later = alloc(Some(10)).period.end() + Duration::days(2);
        for (a, now) in [
            (alloc(Some(30)), later),
            (alloc(None), later),
            (alloc(Some(10)), later),
        ] {
            let f = a.forecast_cost_centers(now);
            assert_eq!(f["a"], Decimal::from(29));
            assert_eq!(
                f.values().copied().sum::<Decimal>(),
                a.units.iter().map(|u| u.total_usd).sum()
            );
        }
    }
}
