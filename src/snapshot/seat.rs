//! One seat (account, region, user) as every sink shows it: its plan, what it cost and used,
//! what its plan includes, its forecast and its saving, derived once with the snapshot.

use rust_decimal::Decimal;

/// A seat's key: the usage account, the region of its Kiro profile and the user id.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeatId {
    pub account_id: String,
    /// `""` when the lines say none.
    pub region: String,
    pub user_id: String,
}

impl SeatId {
    pub fn new(account_id: &str, region: &str, user_id: &str) -> Self {
        Self {
            account_id: account_id.to_owned(),
            region: region.to_owned(),
            user_id: user_id.to_owned(),
        }
    }
}

/// Everything the sinks show about one seat. Amounts are summed over the seat's cost centers;
/// its included credits and saving count in its main cost center.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeatView {
    pub id: SeatId,
    /// The plan name (`""`: no seat-fee line).
    pub plan: String,
    /// Where the seat has most cost (`""` = untagged).
    pub cost_center: String,
    pub cost_usd: Decimal,
    pub overage_usd: Decimal,
    /// Seat fees billed.
    pub subscription_usd: Decimal,
    /// Credits the bill shows.
    pub billed_credits: Decimal,
    /// Credits the activity report counts, when it is read and shows the seat.
    pub activity_credits: Option<Decimal>,
    /// Credits used: the larger of the bill's and the activity report's count (the report sees
    /// use the bill shows a day later, or not at all inside the plan).
    pub credits_used: Decimal,
    /// Credits the plan includes a month; `None` without a plan the table knows.
    pub included_credits: Option<Decimal>,
    /// Month-end forecast (cost so far plus what the seat adds by month end).
    pub forecast_usd: Decimal,
    /// Monthly saving its recommendation promises (zero without one).
    pub saving_usd: Decimal,
    /// The user holds seats in more than one region of this account.
    pub in_several_regions: bool,
}

impl SeatView {
    /// Billed less than a whole seat-month: seat fees below the plan's monthly fee in `plans`
    /// (as learned from the bill) by more than a cent, as for a seat subscribed mid-month,
    /// which AWS bills pro rata. False without a plan the table knows.
    pub fn part_month(&self, plans: &crate::allocation::PlanTable) -> bool {
        plans
            .by_name(&self.plan)
            .is_some_and(|p| self.subscription_usd + Decimal::new(1, 2) < p.monthly_usd)
    }

    /// Credits used over included credits, when the plan includes any.
    pub fn credits_used_ratio(&self) -> Option<Decimal> {
        self.included_credits
            .filter(|i| *i > Decimal::ZERO)
            .map(|i| self.credits_used / i)
    }
}

/// What a group of seats (a cost center, an account, all) carries beyond its units' sums.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SeatTotals {
    /// Credits the seats' plans include, each seat counted once, in its main cost center.
    pub included_credits: Decimal,
    /// Savings of the seats' recommendations.
    pub savings_usd: Decimal,
    /// How many recommendations there are.
    pub recommendations: usize,
}
