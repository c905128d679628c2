//! A snapshot: what one successful refresh found, per watched billing period, with every
//! derived number computed once: when it is built, or for the seats' views, when first asked
//! for (a command that prints the allocation alone never makes them). Immutable once built;
//! sinks only read it and compute nothing of their own, so /metrics, CloudWatch, alerts, the
//! landing page and the report cannot disagree.
//!
//! [`Snapshot::build`] is the one way a snapshot is made, from the allocations, what the
//! activity report says and who the people are; [`SnapshotBuilder`] gathers those for the
//! daemon, for every command that shows a period and for the report of a month the snapshot
//! no longer holds.
//!
//! One meaning of **total cost**: the whole Kiro bill of the period, tax included
//! ([`PeriodView::total_cost_usd`] = Σ units + unattributed + tax = `kiro_total_usd`). Per user,
//! per cost center and per account figures exclude tax and unattributed lines: AWS does not
//! bill tax to a user, so it is not allocated.

mod builder;
mod seat;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::allocation::savings::{self, Prior, Savings, SavingsSettings, Window, Windows};
use crate::allocation::{
    Allocation, PlanTable, Rollup, SeatKey, SeatRef, main_unit, named_seats, same_seat,
};
use crate::source::activity::Activity;
use crate::source::identity::{Person, assign_cost_centers};

pub mod history;
pub use builder::{Built, SnapshotBuilder};
pub use seat::{SeatId, SeatTotals, SeatView};

/// Who the users are: names by user id (only the fields configured for export), and the
/// groups of ids that are one person (one e-mail).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct People {
    pub names: BTreeMap<String, Person>,
    /// Ids from two Identity Center instances behind one e-mail: one person holding two seats.
    pub same_person: Vec<Vec<String>>,
}

/// The result of one successful refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    /// One view per watched period, oldest first.
    pub periods: Vec<PeriodView>,
    /// Names of the user ids, where known (Identity Store, else the activity report's
    /// e-mail), with only the fields configured for export filled.
    pub people: BTreeMap<String, crate::source::identity::Person>,
    /// The closed months history keeps and each seat's tenure (the daemon's; empty
    /// elsewhere).
    pub history: crate::history::HistoryView,
}

/// The month-end forecast of a period ([`crate::allocation::forecast::FORECAST_METHOD`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Forecast {
    /// Factor usage-driven cost is scaled by.
    pub factor: Decimal,
    /// Per cost center ("" = untagged), tax and unattributed lines excluded.
    pub cost_centers: BTreeMap<String, Decimal>,
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
    /// Credits included a month per plan name the units carry (plans the table knows).
    pub included_by_plan: BTreeMap<String, Decimal>,
    /// The seats' views and their totals ([`Self::seats`]), made when first asked for.
    seat_views: LazySeats,
    /// Sorted user ids with at least one untagged unit.
    pub untagged_users: Vec<String>,
    /// Sorted user ids charged a subscription in more than one account.
    pub duplicate_subscriptions: Vec<String>,
    /// Distinct (account, user) per plan name ("" = no subscription line).
    pub users_by_plan: BTreeMap<String, usize>,
    /// What the activity report says people used, when it is read.
    pub activity: Option<Activity>,
    /// Per cost center: credits the activity report counts beyond what the bill shows yet for
    /// the same seat (the bill lags; in-plan use is not always billed). Only with the activity
    /// report.
    pub unbilled_credits: BTreeMap<String, Decimal>,
    /// Report users with no seat in the period's bill (e.g. a free tier): never billed, so not
    /// bill lag. Only with the activity report.
    pub without_seat: WithoutSeat,
}

/// The views of a period's seats and their totals, made from the allocation, the savings and
/// the plans' included credits of their [`PeriodView`] and from what each seat takes from
/// outside the allocation (`inputs`), the first time any of them is asked for: a command that
/// prints the allocation alone (`query`) never makes them. Made once; every sink reads the same.
#[derive(Debug, Clone, Default)]
struct LazySeats {
    /// Per named seat, in seat order: its credits by the activity report and its forecast
    /// extra.
    inputs: Vec<(Option<Decimal>, Decimal)>,
    made: std::sync::OnceLock<SeatParts>,
}

/// Views of the same period are equal when what their seats are made from is: the rest is in
/// the view.
impl PartialEq for LazySeats {
    fn eq(&self, other: &Self) -> bool {
        self.inputs == other.inputs
    }
}

/// The seats' views and their totals.
#[derive(Debug, Clone, Default, PartialEq)]
struct SeatParts {
    seats: Vec<SeatView>,
    cost_centers: BTreeMap<String, SeatTotals>,
    accounts: BTreeMap<String, SeatTotals>,
    all: SeatTotals,
}

/// The activity report's users that have no seat in the bill, and their credits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WithoutSeat {
    pub users: usize,
    pub credits: Decimal,
}

fn owned<'a, V>(m: impl IntoIterator<Item = (&'a str, V)>) -> BTreeMap<String, V> {
    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// What a scoped thread returned; its panic, continued here.
pub(crate) fn joined<T>(t: std::thread::ScopedJoinHandle<'_, T>) -> T {
    t.join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

impl PeriodView {
    /// Derives every view of `allocation` as of `now`, from the bill alone (no activity
    /// report, nobody named).
    pub fn build(
        allocation: Allocation,
        plans: &PlanTable,
        savings_settings: &SavingsSettings,
        now: DateTime<Utc>,
    ) -> Self {
        Self::derive(
            allocation,
            None,
            &People::default(),
            plans,
            savings_settings,
            now,
        )
    }

    /// Derives every view of `allocation`, what `activity` says people used and who `people`
    /// are, as of `now`: lines without a cost-center tag go to their user's cost-center
    /// attribute (when `identity.cost_center_from` is on), and ids that are one person count
    /// as duplicate subscriptions.
    pub fn derive(
        allocation: Allocation,
        activity: Option<Activity>,
        people: &People,
        plans: &PlanTable,
        savings_settings: &SavingsSettings,
        now: DateTime<Utc>,
    ) -> Self {
        Self::derive_with(
            allocation,
            activity,
            people,
            (plans, savings_settings),
            now,
            (None, None),
        )
    }

    /// [`Self::derive`], with what each seat billed in the last closed month used (`last`,
    /// for a running month) and the bill's trailing window (`bill`): its seats are decided
    /// from the activity report's trailing window, else the bill's, or from that month while
    /// the running one has too few days.
    pub fn derive_with(
        mut allocation: Allocation,
        activity: Option<Activity>,
        people: &People,
        (plans, savings_settings): (&PlanTable, &SavingsSettings),
        now: DateTime<Utc>,
        (last, bill): (Option<&Prior>, Option<&Prior>),
    ) -> Self {
        assign_cost_centers(&mut allocation, &people.names);
        let plans = plans.with_fees(&allocation.learned_fees);
        let plans = match &activity {
            Some(a) => {
                let (plans, differ) = plans.with_allowances(&a.allowances());
                warn_allowances(differ);
                plans
            }
            None => plans,
        };
        let order = allocation.units_by_seat();
        // The roll-ups and the forecast on a thread of their own while the seats are decided.
        let (rollups, (extra, forecast), advice) = std::thread::scope(|s| {
            let others = s.spawn(|| {
                let rollups = Rollups::of(&allocation, &people.same_person);
                (rollups, forecast_of(&allocation, &order, &plans, now))
            });
            let advice = Advice::of(
                &allocation,
                activity,
                (&plans, savings_settings),
                now,
                (last, bill),
            );
            let (rollups, forecast) = joined(others);
            (rollups, forecast, advice)
        });
        let Advice {
            activity,
            used,
            savings,
            included_by_plan,
        } = advice;
        let seat_views = LazySeats {
            inputs: seat_inputs(&order, &extra, &used),
            made: std::sync::OnceLock::new(),
        };
        let (unbilled, without_seat) = if activity.is_some() {
            unbilled(&order, &used)
        } else {
            (BTreeMap::new(), WithoutSeat::default())
        };
        drop(order);
        Self {
            totals: rollups.totals,
            total_cost_usd: allocation.kiro_total_usd,
            cost_centers: rollups.cost_centers,
            accounts: rollups.accounts,
            savings,
            included_by_plan,
            seat_views,
            untagged_users: rollups.untagged_users,
            duplicate_subscriptions: rollups.duplicate_subscriptions,
            users_by_plan: rollups.users_by_plan,
            forecast,
            plans,
            allocation,
            activity,
            unbilled_credits: unbilled,
            without_seat,
        }
    }

    /// Every named seat, sorted by (account, region, user): what sinks show about a seat.
    pub fn seats(&self) -> &[SeatView] {
        &self.seat_parts().seats
    }

    /// Per cost center ("" = untagged): included credits of the seats whose main cost center
    /// it is, and the savings recommended there.
    pub fn cost_center_seats(&self) -> &BTreeMap<String, SeatTotals> {
        &self.seat_parts().cost_centers
    }

    /// Per usage account: the same as [`Self::cost_center_seats`].
    pub fn account_seats(&self) -> &BTreeMap<String, SeatTotals> {
        &self.seat_parts().accounts
    }

    /// All seats: the same as [`Self::cost_center_seats`].
    pub fn seat_totals(&self) -> &SeatTotals {
        &self.seat_parts().all
    }

    /// The seats' views and totals, made on the first call.
    fn seat_parts(&self) -> &SeatParts {
        self.seat_views.made.get_or_init(|| {
            let order = self.allocation.units_by_seat();
            let seats = seat_views(
                &order,
                &self.seat_views.inputs,
                &self.savings,
                &self.included_by_plan,
            );
            let (cost_centers, accounts, all) = seat_totals(&seats, &self.savings);
            SeatParts {
                seats,
                cost_centers,
                accounts,
                all,
            }
        })
    }

    /// Seats billed less than a whole seat-month ([`SeatView::part_month`]).
    pub fn part_month_seats(&self) -> std::collections::HashSet<SeatKey> {
        self.seats()
            .iter()
            .filter(|s| s.part_month(&self.plans))
            .map(|s| {
                let id = &s.id;
                (id.account_id.clone(), id.region.clone(), id.user_id.clone())
            })
            .collect()
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

    /// The view of the seat `id`, if it has units.
    pub fn seat(&self, id: &SeatId) -> Option<&SeatView> {
        let seats = self.seats();
        seats
            .binary_search_by(|s| s.id.cmp(id))
            .ok()
            .map(|i| &seats[i])
    }
}

/// The period's roll-ups: what needs the allocation alone.
struct Rollups {
    totals: Rollup,
    cost_centers: BTreeMap<String, Rollup>,
    accounts: BTreeMap<String, Rollup>,
    untagged_users: Vec<String>,
    duplicate_subscriptions: Vec<String>,
    users_by_plan: BTreeMap<String, usize>,
}

impl Rollups {
    fn of(allocation: &Allocation, same_person: &[Vec<String>]) -> Self {
        let (totals, cost_centers, accounts) = allocation.rollups();
        Self {
            totals,
            cost_centers: owned(cost_centers),
            accounts: owned(accounts),
            untagged_users: owned_list(allocation.untagged_users()),
            duplicate_subscriptions: duplicates(allocation, same_person),
            users_by_plan: owned(allocation.users_by_plan()),
        }
    }
}

/// The forecast's extra cost per seat (what each is expected to cost beyond its bill so far)
/// and the period's forecast, each seat's extra in its main cost center (`order`: the units
/// in seat order).
fn forecast_of(
    allocation: &Allocation,
    order: &[&crate::allocation::UserCost],
    plans: &PlanTable,
    now: DateTime<Utc>,
) -> (BTreeMap<SeatKey, Decimal>, Forecast) {
    let seat_cost_centers: HashMap<SeatRef<'_>, &str, foldhash::fast::RandomState> = order
        .chunk_by(same_seat)
        .map(|run| (run[0].seat(), main_unit(run).cost_center.as_str()))
        .collect();
    let main_cc = |seat: SeatRef<'_>| seat_cost_centers.get(&seat).copied().unwrap_or("");
    let extra = allocation.forecast_extra(plans, now);
    let forecast = forecast(allocation, &extra, now, main_cc);
    (extra, forecast)
}

/// What the seats' advice is decided from and the advice: the activity report aligned to the
/// bill's ids, each seat's credits by the report, the savings, and the included credits of
/// each plan the units carry.
struct Advice {
    activity: Option<Activity>,
    used: BTreeMap<SeatKey, Decimal>,
    savings: Savings,
    included_by_plan: BTreeMap<String, Decimal>,
}

impl Advice {
    fn of(
        allocation: &Allocation,
        activity: Option<Activity>,
        (plans, savings_settings): (&PlanTable, &SavingsSettings),
        now: DateTime<Utc>,
        (last, bill): (Option<&Prior>, Option<&Prior>),
    ) -> Self {
        // The report's ids in the bill's spelling, so that they meet their seats.
        let activity = activity.map(|a| a.aligned_to(allocation.units.iter().map(|u| u.seat())));
        let used: BTreeMap<SeatKey, Decimal> = activity
            .as_ref()
            .map(|a| {
                a.users
                    .iter()
                    .map(|(k, u)| (k.clone(), u.credits_used))
                    .collect()
            })
            .unwrap_or_default();
        let trailing = last.and_then(|l| trailing_of(activity.as_ref()?.trailing.as_ref()?, l));
        let windows = Windows {
            trailing: trailing.as_ref(),
            bill_trailing: bill,
            last_closed: last,
        };
        let savings =
            savings::recommend_with_use(allocation, plans, savings_settings, now, &used, windows);
        let included_by_plan: BTreeMap<String, Decimal> = allocation
            .units
            .iter()
            .map(|u| u.plan.as_str())
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .filter_map(|p| Some((p.to_owned(), plans.by_name(p)?.included_credits)))
            .collect();
        Self {
            activity,
            used,
            savings,
            included_by_plan,
        }
    }
}

/// The trailing window's credits of the seats billed in the last closed month (`last`) whose
/// account and region the report covers: only a seat that was there before this month has a
/// trailing month of use.
fn trailing_of(t: &crate::source::activity::Trailing, last: &Prior) -> Option<Prior> {
    let credits: BTreeMap<SeatKey, Decimal> = last
        .credits
        .keys()
        .filter(|(a, r, _)| t.covered.contains(&(a.clone(), r.clone())))
        .map(|k| (k.clone(), t.credits.get(k).copied().unwrap_or_default()))
        .collect();
    (!credits.is_empty()).then_some(Prior {
        window: Window::Trailing {
            from: t.from,
            to: t.to,
        },
        credits,
    })
}

/// The bill's trailing window of `running`: the [`crate::source::activity::TRAILING_DAYS`] days to the running month's
/// newest day (the month before's last day while the running month has no credits yet), each
/// seat of `last` (billed a whole seat-month in the month before) with its credits on those
/// days: the month before's by usage day ([`Allocation::daily_credits`] of `before`) and the
/// running month's so far. `None` when `before` carries no credits per day, the bill has not
/// passed its end yet (no credits line in the running month nor on the month before's last
/// day: a lagging bill would make seats look idle), or the running month covers the whole
/// window itself. The window starts no earlier than the month before.
pub fn bill_trailing_of(before: &Allocation, running: &Allocation, last: &Prior) -> Option<Prior> {
    let daily = before.daily_credits.as_ref()?;
    // The last whole day before `t` (a day in progress counts its hours in the running month's
    // credits, never as a day of the window).
    let last_day = |t: DateTime<Utc>| (t - chrono::Duration::days(1)).date_naive();
    // The bill has passed the month before's end: the running month has credits lines, or the
    // month before has some on its last day. Otherwise its last days may be missing yet.
    let before_end = before.period.end() - chrono::Duration::days(1);
    let complete = running.data_as_of.is_some() || before.data_as_of? > before_end;
    if !complete || daily.period != before.period {
        return None;
    }
    let to = match running.data_as_of {
        Some(t) => last_day(t.min(running.period.end())),
        None => last_day(before.period.end()),
    };
    let from = (to - chrono::Days::new(u64::from(crate::source::activity::TRAILING_DAYS) - 1))
        .max(before.period.start().date_naive());
    if from >= running.period.start().date_naive() {
        return None;
    }
    let mut so_far: HashMap<SeatRef<'_>, Decimal, foldhash::fast::RandomState> = HashMap::default();
    for u in &running.units {
        *so_far.entry(u.seat()).or_default() += u.credits_used;
    }
    let credits = last
        .credits
        .keys()
        .map(|k| {
            let running = so_far.get(&(k.0.as_str(), k.1.as_str(), k.2.as_str()));
            let c = daily.since(k, from) + running.copied().unwrap_or_default();
            (k.clone(), c.normalize())
        })
        .collect::<BTreeMap<_, _>>();
    (!credits.is_empty()).then_some(Prior {
        window: Window::BillTrailing { from, to },
        credits,
    })
}

/// The last closed month as a window: what each seat billed a whole seat-month in `view`
/// used. A seat subscribed during that month (billed pro rata) has less than a month of use
/// there, so it is left to the running month.
pub fn last_closed_of(view: &PeriodView) -> Prior {
    Prior {
        window: Window::LastClosed(view.allocation.period),
        credits: view
            .seats()
            .iter()
            .filter(|s| !s.plan.is_empty() && !s.part_month(&view.plans))
            .map(|s| {
                let id = &s.id;
                let key = (id.account_id.clone(), id.region.clone(), id.user_id.clone());
                (key, s.credits_used)
            })
            .collect(),
    }
}

/// Warns once per plan and pair of values that the activity report's `Usage_Limit` differs
/// from the plan table, which then gives way to the report.
fn warn_allowances(differ: Vec<(String, Decimal, Decimal)>) {
    static WARNED: std::sync::Mutex<BTreeSet<(String, Decimal, Decimal)>> =
        std::sync::Mutex::new(BTreeSet::new());
    let mut warned = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for d in differ {
        if warned.insert(d.clone()) {
            let (plan, table, report) = d;
            tracing::warn!(
                plan = %plan,
                "the activity report's Usage_Limit gives plan {plan} {report} included credits, the plan table {table}; the report's figure is used (correct [[plans]] to silence this)"
            );
        }
    }
}

/// The month-end forecast: cost as billed per cost center and account, plus what each seat
/// adds by month end (`extra`) where the seat has most cost (`main_cc`).
fn forecast<'a>(
    allocation: &'a Allocation,
    extra: &'a BTreeMap<SeatKey, Decimal>,
    now: DateTime<Utc>,
    main_cc: impl Fn(SeatRef<'a>) -> &'a str,
) -> Forecast {
    // Per cost center and account as billed (a few keys).
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
        total: Decimal::ZERO,
    };
    for ((a, r, u), more) in extra {
        let cc = main_cc((a, r, u));
        *forecast.cost_centers.entry(cc.to_owned()).or_default() += *more;
        *forecast.accounts.entry(a.clone()).or_default() += *more;
    }
    // Sums of exact amounts and of extras rounded to 6 decimals: a month that is its own
    // forecast forecasts exactly what it cost.
    forecast.total = forecast.cost_centers.values().copied().sum::<Decimal>()
        + allocation.unattributed_usd
        + allocation.tax_usd;
    forecast
}

/// Per cost center: credits the activity report (`used`) counts beyond the bill's credits of
/// the same named seat, in the seat's main cost center; and the report's users without a
/// seat. `order`: the units in seat order, walked once alongside `used` (sorted the same way).
fn unbilled(
    order: &[&crate::allocation::UserCost],
    used: &BTreeMap<SeatKey, Decimal>,
) -> (BTreeMap<String, Decimal>, WithoutSeat) {
    let mut out: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut without = WithoutSeat::default();
    let mut seats = named_seats(order).peekable();
    for ((a, r, u), seen) in used {
        let key = (a.as_str(), r.as_str(), u.as_str());
        while seats.next_if(|run| run[0].seat() < key).is_some() {}
        match seats.peek().filter(|run| run[0].seat() == key) {
            Some(run) => {
                let billed: Decimal = run.iter().map(|u| u.credits_used).sum();
                *out.entry(main_unit(run).cost_center.clone()).or_default() +=
                    (*seen - billed).max(Decimal::ZERO);
            }
            None => {
                without.users += 1;
                without.credits += *seen;
            }
        }
    }
    (out, without)
}

/// Included credits (each seat once, in its main cost center) and savings per cost center,
/// per account and in all.
fn seat_totals(
    seats: &[SeatView],
    savings: &Savings,
) -> (
    BTreeMap<String, SeatTotals>,
    BTreeMap<String, SeatTotals>,
    SeatTotals,
) {
    type Fast = foldhash::fast::RandomState;
    // Summed in hash maps (a few names each, met once per seat and recommendation), then
    // sorted once.
    let mut cost_centers: HashMap<&str, SeatTotals, Fast> = HashMap::default();
    let mut accounts: HashMap<&str, SeatTotals, Fast> = HashMap::default();
    let mut all = SeatTotals::default();
    for s in seats {
        let inc = s.included_credits.unwrap_or_default();
        cost_centers
            .entry(&s.cost_center)
            .or_default()
            .included_credits += inc;
        accounts
            .entry(&s.id.account_id)
            .or_default()
            .included_credits += inc;
        all.included_credits += inc;
    }
    for r in &savings.recommendations {
        for t in [
            cost_centers.entry(&r.cost_center).or_default(),
            accounts.entry(&r.account_id).or_default(),
        ] {
            t.savings_usd += r.saving_usd;
            t.recommendations += 1;
        }
    }
    all.savings_usd = savings.total_usd;
    all.recommendations = savings.recommendations.len();
    (owned(cost_centers), owned(accounts), all)
}

/// Per named seat of `order` (the units in seat order), in that order: its credits by the
/// activity report (`used`) and its forecast extra (`extra`), both sorted by seat as `order`
/// is and walked once alongside it.
fn seat_inputs(
    order: &[&crate::allocation::UserCost],
    extra: &BTreeMap<SeatKey, Decimal>,
    used: &BTreeMap<SeatKey, Decimal>,
) -> Vec<(Option<Decimal>, Decimal)> {
    let mut used = used.iter().peekable();
    let mut extra = extra.iter().peekable();
    named_seats(order)
        .map(|run| {
            let seat = run[0].seat();
            (
                at_seat(&mut used, seat),
                at_seat(&mut extra, seat).unwrap_or_default(),
            )
        })
        .collect()
}

/// One view per named seat, in seat order: `order` is the units in seat order, `inputs` what
/// each named seat takes from outside the allocation ([`seat_inputs`]). A large period's seats
/// are made in two halves, the second on a thread of its own.
fn seat_views(
    order: &[&crate::allocation::UserCost],
    inputs: &[(Option<Decimal>, Decimal)],
    savings: &Savings,
    included_by_plan: &BTreeMap<String, Decimal>,
) -> Vec<SeatView> {
    /// Units from which the second half is made on a thread of its own.
    const SPLIT_FROM: usize = 4096;
    let mut saving: HashMap<SeatRef<'_>, Decimal, foldhash::fast::RandomState> = HashMap::default();
    for r in &savings.recommendations {
        *saving
            .entry((&r.account_id, &r.region, &r.user_id))
            .or_default() += r.saving_usd;
    }
    let runs: Vec<&[&crate::allocation::UserCost]> = named_seats(order).collect();
    // The halves split between two seats.
    let mid = if order.len() >= SPLIT_FROM {
        runs.len() / 2
    } else {
        runs.len()
    };
    let (head, tail) = runs.split_at(mid);
    let (inputs_head, inputs_tail) = inputs.split_at(mid.min(inputs.len()));
    let saving = &saving;
    let mut seats = std::thread::scope(|s| {
        let tail = (!tail.is_empty())
            .then(|| s.spawn(move || views_of(tail, inputs_tail, saving, included_by_plan)));
        let mut seats = views_of(head, inputs_head, saving, included_by_plan);
        if let Some(tail) = tail {
            seats.extend(joined(tail));
        }
        seats
    });
    // A user with seats in two regions of one account: each seat is named with its region.
    let mut regions: HashMap<(&str, &str), usize, foldhash::fast::RandomState> = HashMap::default();
    for s in &seats {
        *regions
            .entry((&s.id.account_id, &s.id.user_id))
            .or_default() += 1;
    }
    let several: Vec<bool> = seats
        .iter()
        .map(|s| regions[&(s.id.account_id.as_str(), s.id.user_id.as_str())] > 1)
        .collect();
    for (s, several) in seats.iter_mut().zip(several) {
        s.in_several_regions = several;
    }
    seats
}

/// The views of the named seats `runs` (each one seat's units), each with its credits by the
/// report and its forecast extra (`inputs`, one per run) and its savings (`saving`).
fn views_of(
    runs: &[&[&crate::allocation::UserCost]],
    inputs: &[(Option<Decimal>, Decimal)],
    saving: &HashMap<SeatRef<'_>, Decimal, foldhash::fast::RandomState>,
    included_by_plan: &BTreeMap<String, Decimal>,
) -> Vec<SeatView> {
    let mut seats: Vec<SeatView> = Vec::with_capacity(runs.len());
    for (run, &(activity_credits, extra)) in runs.iter().zip(inputs) {
        let seat @ (account, region, user) = run[0].seat();
        let plan = run
            .iter()
            .map(|u| u.plan.as_str())
            .find(|p| !p.is_empty())
            .unwrap_or_default();
        let cost: Decimal = run.iter().map(|u| u.total_usd).sum();
        let billed: Decimal = run.iter().map(|u| u.credits_used).sum();
        seats.push(SeatView {
            plan: plan.to_owned(),
            cost_center: main_unit(run).cost_center.clone(),
            cost_usd: cost,
            overage_usd: run.iter().map(|u| u.overage_usd).sum(),
            subscription_usd: run.iter().map(|u| u.subscription_usd).sum(),
            billed_credits: billed,
            activity_credits,
            credits_used: activity_credits.map_or(billed, |a| a.max(billed)),
            included_credits: included_by_plan.get(plan).copied(),
            forecast_usd: cost + extra,
            saving_usd: saving.get(&seat).copied().unwrap_or_default(),
            in_several_regions: false,
            id: SeatId {
                account_id: account.to_owned(),
                region: region.to_owned(),
                user_id: user.to_owned(),
            },
        });
    }
    seats
}

/// The value at `seat` of a map walked in seat order, `seats` coming in that order: entries
/// before `seat` are passed over for good.
fn at_seat<'a>(
    entries: &mut std::iter::Peekable<impl Iterator<Item = (&'a SeatKey, &'a Decimal)>>,
    seat: SeatRef<'_>,
) -> Option<Decimal> {
    let as_ref = |k: &'a SeatKey| (k.0.as_str(), k.1.as_str(), k.2.as_str());
    while entries.next_if(|(k, _)| as_ref(k) < seat).is_some() {}
    entries.next_if(|(k, _)| as_ref(k) == seat).map(|(_, v)| *v)
}

fn owned_list(v: Vec<&str>) -> Vec<String> {
    v.into_iter().map(str::to_owned).collect()
}

/// Users charged a subscription in more than one account, and the ids of one person (one
/// e-mail, ids from two Identity Center instances) of whom more than one is billed: sorted.
fn duplicates(allocation: &Allocation, same_person: &[Vec<String>]) -> Vec<String> {
    let mut out: BTreeSet<&str> = allocation.duplicate_subscriptions().into_iter().collect();
    if !same_person.is_empty() {
        let billed: BTreeSet<&str> = allocation
            .units
            .iter()
            .map(|u| u.user_id.as_str())
            .collect();
        for group in same_person {
            let present: Vec<&str> = group
                .iter()
                .map(String::as_str)
                .filter(|id| billed.contains(id))
                .collect();
            if present.len() > 1 {
                out.extend(present);
            }
        }
    }
    out.into_iter().map(str::to_owned).collect()
}

impl Snapshot {
    /// The one way a snapshot is made: the views of every period's allocation and activity
    /// (oldest first) as of `taken_at`, with `people` named. A running month's seats are
    /// decided with the month before it as well: the snapshot's own view of it, else
    /// `last_closed` (history's record). Nothing changes it afterwards.
    pub fn build(
        taken_at: DateTime<Utc>,
        periods: Vec<(Allocation, Option<Activity>)>,
        people: People,
        plans: &PlanTable,
        savings_settings: &SavingsSettings,
        last_closed: Option<Prior>,
    ) -> Self {
        let mut views: Vec<PeriodView> = Vec::with_capacity(periods.len());
        for (a, act) in periods {
            let p = a.period;
            // A running month's last closed month: the snapshot's own view of it, else the
            // one given (history's).
            let before = views.last().filter(|v| {
                v.allocation.period == p.previous() && v.allocation.period.end() <= taken_at
            });
            let own = before.map(last_closed_of);
            let last = own.as_ref().or(last_closed
                .as_ref()
                .filter(|l| l.window == Window::LastClosed(p.previous())));
            let running = taken_at < p.end();
            // The bill's trailing window, from the month before's credits per day.
            let bill = before
                .zip(own.as_ref())
                .and_then(|(v, own)| bill_trailing_of(&v.allocation, &a, own));
            views.push(PeriodView::derive_with(
                a,
                act,
                &people,
                (plans, savings_settings),
                taken_at,
                (last.filter(|_| running), bill.as_ref().filter(|_| running)),
            ));
        }
        Self {
            taken_at,
            periods: views,
            people: people.names,
            history: crate::history::HistoryView::default(),
        }
    }

    /// A snapshot of the bill alone: no activity report, nobody named.
    pub fn of_bill(
        taken_at: DateTime<Utc>,
        allocations: Vec<Allocation>,
        plans: &PlanTable,
        savings_settings: &SavingsSettings,
    ) -> Self {
        Self::build(
            taken_at,
            allocations.into_iter().map(|a| (a, None)).collect(),
            People::default(),
            plans,
            savings_settings,
            None,
        )
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

    /// A large period's seat views, made in two halves split between two seats, are those
    /// made in one go: one unit, then seats of three units each (so the middle falls inside a
    /// seat), some users with a seat in two regions, and extras, credits and savings on some.
    #[test]
    fn seat_views_in_two_halves_are_those_made_at_once() {
        let seats = 1 + 2000;
        let mut units = Vec::new();
        for i in 0..seats {
            let (region, user) = if i % 7 == 3 {
                ("us-west-2", format!("u{:05}", i - 1))
            } else {
                ("us-east-1", format!("u{i:05}"))
            };
            for cc in if i == 0 {
                &["a"][..]
            } else {
                &["a", "b", "c"][..]
            } {
                units.push(crate::allocation::UserCost {
                    account_id: format!("{:012}", i / 500),
                    region: region.to_owned(),
                    user_id: user.clone(),
                    cost_center: (*cc).to_owned(),
                    plan: "Pro".to_owned(),
                    credits_used: Decimal::from(i % 13),
                    total_usd: Decimal::new(i as i64 * 7 + cc.len() as i64, 2),
                    ..Default::default()
                });
            }
        }
        let mut order: Vec<&crate::allocation::UserCost> = units.iter().collect();
        order.sort_by(|a, b| a.seat().cmp(&b.seat()));
        assert!(order.len() >= 4096, "{} units: made at once", order.len());
        let mid = order.len() / 2;
        assert!(
            same_seat(&order[mid - 1], &order[mid]),
            "the middle is between seats"
        );
        let key = |u: &crate::allocation::UserCost| {
            let (a, r, u) = u.seat();
            (a.to_owned(), r.to_owned(), u.to_owned())
        };
        let extra: BTreeMap<SeatKey, Decimal> = order
            .iter()
            .step_by(5)
            .map(|u| (key(u), Decimal::from(3)))
            .collect();
        let used: BTreeMap<SeatKey, Decimal> = order
            .iter()
            .step_by(4)
            .map(|u| (key(u), Decimal::from(50)))
            .collect();
        let savings = Savings {
            recommendations: order
                .iter()
                .step_by(9)
                .map(|u| crate::allocation::savings::Recommendation {
                    account_id: u.account_id.clone(),
                    region: u.region.clone(),
                    user_id: u.user_id.clone(),
                    cost_center: u.cost_center.clone(),
                    plan: u.plan.clone(),
                    recommended_plan: String::new(),
                    reason: crate::allocation::savings::Reason::Idle,
                    projected_credits: Decimal::ZERO,
                    saving_usd: Decimal::from(20),
                    window: crate::allocation::savings::Window::Month,
                })
                .collect(),
            ..Savings::default()
        };
        let included = BTreeMap::from([("Pro".to_owned(), Decimal::from(1000))]);
        let inputs = seat_inputs(&order, &extra, &used);
        let split = seat_views(&order, &inputs, &savings, &included);
        let saving = savings.recommendations.iter().fold(
            HashMap::<SeatRef<'_>, Decimal, foldhash::fast::RandomState>::default(),
            |mut m, r| {
                *m.entry((&r.account_id, &r.region, &r.user_id)).or_default() += r.saving_usd;
                m
            },
        );
        let runs: Vec<&[&crate::allocation::UserCost]> = order.chunk_by(same_seat).collect();
        let mut whole = views_of(&runs, &inputs, &saving, &included);
        assert_eq!(whole.len(), seats);
        for (s, t) in whole.iter_mut().zip(&split) {
            s.in_several_regions = t.in_several_regions;
        }
        assert_eq!(split, whole);
        assert!(split.iter().any(|s| s.in_several_regions));
        assert!(split.iter().any(|s| s.saving_usd > Decimal::ZERO));
        assert!(split.iter().any(|s| s.activity_credits.is_some()));
        assert!(split.iter().any(|s| s.forecast_usd > s.cost_usd));
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
        let seat = v.seat(&SeatId::new("1", "", "u")).unwrap();
        assert_eq!(seat.cost_center, "b", "the unit with most cost");
        assert_eq!(v.forecast.cost_centers["a"], Decimal::from(29));
        assert_eq!(v.forecast.cost_centers["b"], Decimal::from(39 + 20));
        assert_eq!(seat.forecast_usd, Decimal::from(29 + 39 + 20));
        assert_eq!(seat.cost_usd, Decimal::from(29 + 39));
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
