//! History as the snapshot sees it: a period's view as a [`MonthRecord`], and the months'
//! totals and seats' tenure ([`HistoryView`]) from the kept records and the snapshot's own
//! months.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{PeriodView, Snapshot};
use crate::history::{HistoryView, MonthRecord, MonthTotals, SeatMonth, tenure_of};
use crate::period::BillingPeriod;

/// The record of a period's view.
pub fn record_of(view: &PeriodView, at: DateTime<Utc>) -> MonthRecord {
    MonthRecord {
        period: view.allocation.period,
        recorded_at: at,
        total_usd: view.total_cost_usd,
        cost_centers: view
            .cost_centers
            .iter()
            .map(|(cc, r)| (cc.clone(), r.total_usd))
            .collect(),
        seats: view
            .seats
            .iter()
            .map(|s| SeatMonth {
                account_id: s.id.account_id.clone(),
                region: s.id.region.clone(),
                user_id: s.id.user_id.clone(),
                plan: s.plan.clone(),
                credits_used: s.credits_used,
                cost_usd: s.cost_usd,
            })
            .collect(),
    }
}

/// The view of `records` (closed months) and `snapshot`'s own months, which stand for
/// their records. A seat is idle in a month when it pays a seat fee and uses fewer than
/// `idle_below` credits; the running month counts only once `grace_days` of it are in
/// the data.
pub fn view_of<'a>(
    records: impl IntoIterator<Item = &'a MonthRecord>,
    snapshot: &Snapshot,
    idle_below: Decimal,
    grace_days: u32,
) -> HistoryView {
    // The kept records are borrowed, not copied (a year of seats at 50k users is large).
    let mut months: BTreeMap<BillingPeriod, (Cow<'a, MonthRecord>, bool)> = records
        .into_iter()
        .map(|r| (r.period, (Cow::Borrowed(r), true)))
        .collect();
    for v in &snapshot.periods {
        let running = snapshot.taken_at < v.allocation.period.end();
        let counts = !running || v.savings.basis.days >= grace_days;
        months.insert(
            v.allocation.period,
            (Cow::Owned(record_of(v, snapshot.taken_at)), counts),
        );
    }
    let totals = months
        .values()
        .map(|(r, _)| MonthTotals {
            period: r.period,
            total_usd: r.total_usd,
            cost_centers: r.cost_centers.clone(),
        })
        .collect();
    // Per seat, its months oldest first: (period, billed, used, cost, counts).
    type Month = (BillingPeriod, bool, bool, Decimal, bool);
    let mut seats: BTreeMap<(String, String, String), Vec<Month>> = BTreeMap::new();
    for (r, counts) in months.values() {
        for s in &r.seats {
            seats
                .entry((s.account_id.clone(), s.region.clone(), s.user_id.clone()))
                .or_default()
                .push((
                    r.period,
                    !s.plan.is_empty(),
                    used(s.credits_used, idle_below),
                    s.cost_usd,
                    *counts,
                ));
        }
    }
    let tenure = seats
        .into_iter()
        .filter_map(|(k, ms)| tenure_of(&ms).map(|t| (k, t)))
        .collect();
    HistoryView {
        months: totals,
        tenure,
    }
}

/// Whether a seat month counts as used: `credits` at least `idle_below`.
fn used(credits: Decimal, idle_below: Decimal) -> bool {
    credits >= idle_below
}
