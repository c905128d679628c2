//! History as the snapshot sees it: a period's view as a [`MonthRecord`], and the months'
//! totals and seats' tenure ([`HistoryView`]) from the kept records and the snapshot's own
//! months.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{PeriodView, Snapshot};
use crate::history::{
    HistoryView, Kept, KeptMonth, KeptSeat, MonthRecord, MonthTotals, SeatKey, SeatMonth, tenure_of,
};
use crate::period::BillingPeriod;

/// A period's cost per cost center, as history keeps it.
fn cost_centers(view: &PeriodView) -> BTreeMap<String, Decimal> {
    view.cost_centers
        .iter()
        .map(|(cc, r)| (cc.clone(), r.total_usd))
        .collect()
}

/// The record of a period's view.
pub fn record_of(view: &PeriodView, at: DateTime<Utc>) -> MonthRecord {
    MonthRecord {
        period: view.allocation.period,
        recorded_at: at,
        total_usd: view.total_cost_usd,
        cost_centers: cost_centers(view),
        seats: view
            .seats()
            .iter()
            .map(|s| SeatMonth {
                account_id: s.id.account_id.clone(),
                region: s.id.region.clone(),
                user_id: s.id.user_id.clone(),
                plan: s.plan.clone(),
                credits_used: s.credits_used,
                cost_usd: s.cost_usd,
                part_month: s.part_month(&view.plans),
            })
            .collect(),
    }
}

/// The view of the `kept` months among `window` (closed months) and `snapshot`'s own months,
/// which stand for their records. A seat is idle in a month when it pays a seat fee and uses
/// fewer than `idle_below` credits; the running month counts only once `grace_days` of it
/// are in the data. Tenure is given for the seats of the snapshot's months.
pub fn view_of(
    kept: &Kept,
    window: &[BillingPeriod],
    snapshot: &Snapshot,
    idle_below: Decimal,
    grace_days: u32,
) -> HistoryView {
    // The snapshot's seats by number: the kept number where history knows the seat, else a
    // new one past them.
    let mut extra: HashMap<SeatKey, u32> = HashMap::new();
    let mut watched_seats: Vec<(u32, SeatKey)> = Vec::new();
    let number = |key: SeatKey, extra: &mut HashMap<SeatKey, u32>| -> u32 {
        if let Some(id) = kept.id_of(&key) {
            return id;
        }
        let next = (kept.seats() + extra.len()) as u32;
        *extra.entry(key).or_insert(next)
    };
    // Per month, oldest first: its totals and its seats' months.
    enum Source<'a> {
        Kept(&'a KeptMonth),
        Watched(Vec<KeptSeat>, bool),
    }
    let mut months: BTreeMap<BillingPeriod, (MonthTotals, Source<'_>)> = BTreeMap::new();
    for &p in window {
        if let Some(m) = kept.month(p) {
            let totals = MonthTotals {
                period: p,
                total_usd: m.total_usd,
                cost_centers: m.cost_centers.clone(),
            };
            months.insert(p, (totals, Source::Kept(m)));
        }
    }
    for v in &snapshot.periods {
        let p = v.allocation.period;
        let running = snapshot.taken_at < p.end();
        let counts = !running || v.savings.basis.days >= grace_days;
        let seats = v
            .seats()
            .iter()
            .map(|s| {
                let key = (
                    s.id.account_id.clone(),
                    s.id.region.clone(),
                    s.id.user_id.clone(),
                );
                let seat = number(key.clone(), &mut extra);
                watched_seats.push((seat, key));
                KeptSeat {
                    seat,
                    billed: !s.plan.is_empty(),
                    // Tenure does not ask; only a kept month decides as the last closed one.
                    part_month: false,
                    credits_used: s.credits_used,
                    cost_usd: s.cost_usd,
                }
            })
            .collect();
        let totals = MonthTotals {
            period: p,
            total_usd: v.total_cost_usd,
            cost_centers: cost_centers(v),
        };
        months.insert(p, (totals, Source::Watched(seats, counts)));
    }
    // Per seat number, its months oldest first.
    let mut per_seat: Vec<Vec<Month>> = vec![Vec::new(); kept.seats() + extra.len()];
    for (p, (_, source)) in &months {
        let (seats, counts) = match source {
            Source::Kept(m) => (m.seats.as_slice(), true),
            Source::Watched(seats, counts) => (seats.as_slice(), *counts),
        };
        for s in seats {
            if let Some(ms) = per_seat.get_mut(s.seat as usize) {
                ms.push((
                    *p,
                    s.billed,
                    used(s.credits_used, idle_below),
                    s.cost_usd,
                    counts,
                ));
            }
        }
    }
    // The last closed month's seats, as of its end (the months after it left out).
    let closed = BillingPeriod::containing(snapshot.taken_at).previous();
    let closed_tenure = months.get(&closed).map(|(_, source)| {
        let seats: Vec<u32> = match source {
            Source::Kept(m) => m.seats.iter().map(|s| s.seat).collect(),
            Source::Watched(seats, _) => seats.iter().map(|s| s.seat).collect(),
        };
        let tenure = tenure_as_of(closed, &seats, &per_seat, &watched_seats, kept);
        (closed, tenure)
    });
    let tenure = watched_seats
        .into_iter()
        .filter_map(|(id, key)| {
            let ms = per_seat.get(id as usize)?;
            tenure_of(ms).map(|t| (key, t))
        })
        .collect();
    HistoryView {
        months: months.into_values().map(|(t, _)| t).collect(),
        tenure,
        closed_tenure,
        kept: true,
        settled: false,
    }
}

/// A seat's month: (period, billed, used, cost, counts).
type Month = (BillingPeriod, bool, bool, Decimal, bool);

/// The tenure of `seats` (by number) as of `p`'s end, from each seat's months oldest first
/// (`per_seat`); keys from `watched` or else `kept`.
fn tenure_as_of(
    p: BillingPeriod,
    seats: &[u32],
    per_seat: &[Vec<Month>],
    watched: &[(u32, SeatKey)],
    kept: &Kept,
) -> BTreeMap<SeatKey, crate::history::Tenure> {
    let by_id: HashMap<u32, &SeatKey> = watched.iter().map(|(i, k)| (*i, k)).collect();
    seats
        .iter()
        .filter_map(|&id| {
            let ms = per_seat.get(id as usize)?;
            let upto = ms.partition_point(|m| m.0 <= p);
            let key = by_id.get(&id).copied().or_else(|| kept.key(id))?;
            tenure_of(&ms[..upto]).map(|t| (key.clone(), t))
        })
        .collect()
}

/// Whether a seat month counts as used: `credits` at least `idle_below`.
fn used(credits: Decimal, idle_below: Decimal) -> bool {
    credits >= idle_below
}
