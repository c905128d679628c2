//! Credits by usage day: what each seat (account, region, user) used on each day of a period,
//! as the bill's credits lines date it (`line_item_usage_start_date`, the day in UTC).
//!
//! A running month without an activity report is decided from the bill's own trailing 30 days
//! ([`super::savings::Window::BillTrailing`]): the days of the month before that fall in the
//! window come from here. Every engine computes the same rows: the SQL template's
//! [`super::sql::render_daily`] (Athena, and DataFusion in the tests) and the embedded scan.
//! A line is counted as the allocation counts it as credits ([`super::sql::render`]'s
//! categories), on its user as the allocation names them; lines that name no user and lines
//! without a start are in the allocation but on no day.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::SeatKey;
use super::region::region_name;
use crate::period::BillingPeriod;

/// One result row of the daily query: a seat's credits on one day, the region as the lines
/// give it (a region name or a usage type's prefix, mapped here as the allocation maps it).
#[derive(Debug, Clone, PartialEq)]
pub struct DayRow {
    pub account_id: String,
    pub region: String,
    pub user_id: String,
    pub day: NaiveDate,
    pub credits: Decimal,
}

/// Each seat's credits per usage day of one period.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyCredits {
    pub period: BillingPeriod,
    /// Per seat, its days with credits, in order.
    pub seats: BTreeMap<SeatKey, Vec<(NaiveDate, Decimal)>>,
}

impl DailyCredits {
    /// The period's rows, regions mapped as the allocation maps them ([`region_name`]); rows
    /// that become one (two spellings of a region) are summed, days without credits left out.
    pub fn from_rows(period: BillingPeriod, rows: impl IntoIterator<Item = DayRow>) -> Self {
        let mut by_day: BTreeMap<(SeatKey, NaiveDate), Decimal> = BTreeMap::new();
        let mut regions: BTreeMap<String, String> = BTreeMap::new();
        for r in rows {
            let region = regions
                .entry(r.region)
                .or_insert_with_key(|k| region_name(k))
                .clone();
            *by_day
                .entry(((r.account_id, region, r.user_id), r.day))
                .or_default() += r.credits;
        }
        let mut seats: BTreeMap<SeatKey, Vec<(NaiveDate, Decimal)>> = BTreeMap::new();
        for ((seat, day), credits) in by_day {
            if !credits.is_zero() {
                seats
                    .entry(seat)
                    .or_default()
                    .push((day, credits.normalize()));
            }
        }
        Self { period, seats }
    }

    /// `seat`'s credits on the days from `from` on.
    pub fn since(&self, seat: &SeatKey, from: NaiveDate) -> Decimal {
        self.seats
            .get(seat)
            .map(|days| {
                days.iter()
                    .filter(|(d, _)| *d >= from)
                    .map(|(_, c)| *c)
                    .sum::<Decimal>()
            })
            .unwrap_or_default()
            .normalize()
    }

    /// All credits of all days.
    pub fn total(&self) -> Decimal {
        self.seats
            .values()
            .flat_map(|days| days.iter().map(|(_, c)| *c))
            .sum::<Decimal>()
            .normalize()
    }

    /// Approximate bytes held.
    pub fn memory_size(&self) -> usize {
        self.seats
            .iter()
            .map(|((a, r, u), days)| a.len() + r.len() + u.len() + 96 + days.len() * 20)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(region: &str, user: &str, day: u32, credits: i64) -> DayRow {
        DayRow {
            account_id: "111".into(),
            region: region.into(),
            user_id: user.into(),
            day: NaiveDate::from_ymd_opt(2026, 10, day).unwrap(),
            credits: Decimal::from(credits),
        }
    }

    #[test]
    fn regions_are_mapped_and_the_days_from_a_date_summed() {
        let d = DailyCredits::from_rows(
            "2026-10".parse().unwrap(),
            [
                row("USE1", "u1", 30, 5),
                row("us-east-1", "u1", 30, 2),
                row("us-east-1", "u1", 2, 10),
                row("EUC1", "u2", 31, 4),
                row("EUC1", "u3", 31, 0),
            ],
        );
        let seat = |r: &str, u: &str| ("111".to_owned(), r.to_owned(), u.to_owned());
        assert_eq!(d.seats[&seat("us-east-1", "u1")].len(), 2);
        assert!(!d.seats.contains_key(&seat("eu-central-1", "u3")));
        let from = NaiveDate::from_ymd_opt(2026, 10, 30).unwrap();
        assert_eq!(d.since(&seat("us-east-1", "u1"), from), Decimal::from(7));
        assert_eq!(d.since(&seat("eu-central-1", "u2"), from), Decimal::from(4));
        assert_eq!(d.since(&seat("eu-central-1", "u3"), from), Decimal::ZERO);
        assert_eq!(d.total(), Decimal::from(21));
    }
}
