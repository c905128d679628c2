//! Savings: what to change, per seat, and what it would save in a month.
//!
//! For every seat (account, region, user) on a plan of the plan table, usage is projected to the
//! month's end the way the forecast is (credits × [`Allocation::extrapolation_factor`]) and each
//! seat is priced as `monthly + max(0, credits − included) × overage per credit`. Then:
//! 1. **idle**: a seat with fewer than `idle_below_credits` credits, once `idle_grace_days` of
//!    the month are covered by the data, is better cancelled: it saves its whole cost;
//! 2. **duplicate**: of a user's remaining seats in several accounts or regions, the one with most credits
//!    is kept; each other one is cancelled and its credits move to the kept seat (the saving is
//!    the seat's cost minus what the kept seat pays extra for those credits; a seat whose
//!    credits would cost more on the kept seat than the seat itself stays);
//! 3. **right-size**: the kept seat moves to the cheapest plan for its (merged) credits, if that
//!    is not its plan: a downgrade or an upgrade, saving the difference.
//!
//! 4. **Q Developer**: a user's Amazon Q Developer Pro seat, where the same user holds a Kiro seat
//!    in the period ([`super::q_developer`]), is better cancelled: it saves what the period
//!    billed for it. Q Developer reaches end of support on 2027-04-30.
//!
//! The savings of one user add up to: cost of all seats as they are − cost of the recommended
//! seat with all remaining credits.
//!
//! **Which use decides** ([`Window`]). A closed month is decided from all of it, unprojected.
//! A month still running is decided, seat by seat, from the first of:
//! 1. the trailing 30 days of use the activity report shows, across months, for seats billed
//!    the month before (the window is a month of use: nothing is projected); where the report
//!    gives no such window, the trailing 30 days of the bill's credits lines by usage date
//!    ([`Window::BillTrailing`]: the month before's last days and the running month so far),
//!    while the month before is allocated beside the running one;
//! 2. the month so far, projected to its end, once its data covers `min_days` days (14);
//! 3. the last closed month, whole, while fewer days of the running month are known, for
//!    seats billed then too.
//!
//! A seat's credits are never fewer than what the running month shows of it already. A seat
//! none of these covers (new this month, in its first `min_days` days) gets no advice: a few
//! days' use projected to a month is not a reason to change a colleague's seat. When nothing
//! covers any seat, the month has no recommendations and its [`Basis`] says so. Every
//! recommendation carries the window it was decided from.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Allocation, Plan, PlanTable, SeatRef, main_unit, same_seat};
use crate::config_error::{ConfigError, ensure};

/// Thresholds of the savings rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SavingsSettings {
    /// A seat with fewer credits than this is idle.
    pub idle_below_credits: Decimal,
    /// Days of the month the data must cover before a seat can be called idle.
    pub idle_grace_days: u32,
    /// Days of a running month the data must cover before any recommendation is made from it
    /// (idle waits for the longer of this and `idle_grace_days`).
    pub min_days: u32,
}

impl SavingsSettings {
    /// Checks values (no I/O); errors name the key under `savings`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            !self.idle_below_credits.is_sign_negative(),
            "savings.idle_below_credits",
            "must not be negative",
        )?;
        ensure(
            self.idle_grace_days <= 31,
            "savings.idle_grace_days",
            "must be a number of days from 0 to 31",
        )?;
        ensure(
            self.min_days <= 31,
            "savings.min_days",
            "must be a number of days from 0 to 31",
        )
    }
}

impl Default for SavingsSettings {
    fn default() -> Self {
        Self {
            idle_below_credits: Decimal::ONE,
            idle_grace_days: 7,
            min_days: 14,
        }
    }
}

/// Why a seat should change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Idle,
    Duplicate,
    Downgrade,
    Upgrade,
    /// A Q Developer Pro seat of a user who holds a Kiro seat: one job paid twice.
    QDeveloper,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Duplicate => "duplicate",
            Self::Downgrade => "downgrade",
            Self::Upgrade => "upgrade",
            Self::QDeveloper => "q_developer",
        }
    }
}

/// The use a recommendation was decided from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Window {
    /// The period's own data: a closed month whole, a running month so far (projected).
    #[default]
    Month,
    /// The trailing days the activity report covers, `from` to `to`, across months.
    Trailing { from: NaiveDate, to: NaiveDate },
    /// The trailing days of the bill's credits lines by usage date, `from` (in the month before)
    /// to `to` (the running month's newest day), where the activity report gives no window.
    BillTrailing { from: NaiveDate, to: NaiveDate },
    /// The last closed month, whole: the running month has too few days yet.
    LastClosed(crate::period::BillingPeriod),
}

impl Window {
    /// The name `query --format json` gives the kind of window.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Month => "month",
            Self::Trailing { .. } => "trailing_days",
            Self::BillTrailing { .. } => "bill_trailing_days",
            Self::LastClosed(_) => "last_closed_month",
        }
    }

    /// The first and last day of the window, when it is not the period's own.
    pub fn days(self) -> Option<(NaiveDate, NaiveDate)> {
        match self {
            Self::Month => None,
            Self::Trailing { from, to } | Self::BillTrailing { from, to } => Some((from, to)),
            Self::LastClosed(p) => Some((
                p.start().date_naive(),
                p.end().date_naive() - chrono::Days::new(1),
            )),
        }
    }
}

/// Use beyond the running month's own data: what each seat (account, region, user) used in
/// `window`. Seats it does not name are decided from the month itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prior {
    pub window: Window,
    pub credits: BTreeMap<(String, String, String), Decimal>,
}

/// One recommended change to one seat.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub account_id: String,
    /// The region of the seat's Kiro profile.
    pub region: String,
    pub user_id: String,
    /// The cost center where the seat has most cost.
    pub cost_center: String,
    pub plan: String,
    /// The plan to move to; empty: cancel the seat.
    pub recommended_plan: String,
    pub reason: Reason,
    /// Credits projected to the month's end (after duplicates' credits moved here).
    pub projected_credits: Decimal,
    pub saving_usd: Decimal,
    /// The use it was decided from.
    pub window: Window,
}

/// What a period's recommendations were decided from: the days of the month its data covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Basis {
    /// The first day of the data: the month's first day.
    pub from: Option<NaiveDate>,
    /// The last day the data covers (none: no day yet).
    pub to: Option<NaiveDate>,
    /// Days of the month the data covers.
    pub days: u32,
    /// Credits were projected to the month's end (the month is still running).
    pub projected: bool,
    /// No recommendation: a running month with fewer than `min_days` days of data and no
    /// other window.
    pub withheld: bool,
    /// The days a running month needs (`savings.min_days`).
    pub min_days: u32,
    /// The window beyond the month that decided the seats it covers (`Month`: none).
    pub window: Window,
}

/// All recommendations of a period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Savings {
    /// Sorted by (account, region, user).
    pub recommendations: Vec<Recommendation>,
    pub total_usd: Decimal,
    pub idle_seats: usize,
    /// What they were decided from.
    pub basis: Basis,
}

/// The days of `a`'s month its data covers at `now`, and the basis of a decision from them
/// and `windows`.
fn basis(
    a: &Allocation,
    settings: &SavingsSettings,
    now: DateTime<Utc>,
    windows: Windows<'_>,
) -> Basis {
    let running = now < a.period.end();
    let days = match a.data_as_of {
        _ if !running => i64::from(a.period.days()),
        Some(t) => (t.min(a.period.end()) - a.period.start()).num_days(),
        None => 0,
    }
    .max(0);
    let from = a.period.start().date_naive();
    let month_ok = !running || days >= i64::from(settings.min_days);
    let (trailing, last) = match running {
        true => (windows.trailing, windows.last_closed),
        false => (None, None),
    };
    let bill = windows.bill_trailing.filter(|_| running);
    let window = match (trailing.or(bill), last) {
        (Some(t), _) => t.window,
        (None, Some(l)) if !month_ok => l.window,
        _ => Window::Month,
    };
    Basis {
        from: Some(from),
        to: (days > 0).then(|| from + chrono::Days::new(days as u64 - 1)),
        days: days as u32,
        projected: running && a.extrapolation_factor(now) != Decimal::ONE,
        withheld: !month_ok && trailing.is_none() && bill.is_none() && last.is_none(),
        min_days: settings.min_days,
        window,
    }
}

/// Use beyond a running month's own data (a closed month ignores both).
#[derive(Debug, Clone, Copy, Default)]
pub struct Windows<'a> {
    /// The trailing days the activity report covers, for the seats it decides.
    pub trailing: Option<&'a Prior>,
    /// The trailing days of the bill's credits by usage date, for the seats the report's
    /// window does not decide.
    pub bill_trailing: Option<&'a Prior>,
    /// The last closed month, for its seats while the running month has too few days.
    pub last_closed: Option<&'a Prior>,
}

type SeatUse<'a> = HashMap<SeatRef<'a>, Decimal, foldhash::fast::RandomState>;

/// How the seats of one period are decided ([`Window`]).
struct Decide<'a> {
    factor: Decimal,
    /// The month's own data may decide: closed, or `min_days` covered.
    month_ok: bool,
    /// The month's data covers `idle_grace_days`.
    grace_over: bool,
    idle_below: Decimal,
    trailing: Option<(Window, SeatUse<'a>)>,
    bill_trailing: Option<(Window, SeatUse<'a>)>,
    last_closed: Option<(Window, SeatUse<'a>)>,
}

/// What decides one seat: its credits for a month, whether it is idle, and the window.
struct Use {
    credits: Decimal,
    idle: bool,
    window: Window,
}

impl<'a> Decide<'a> {
    fn new(
        a: &Allocation,
        settings: &SavingsSettings,
        now: DateTime<Utc>,
        basis: &Basis,
        windows: Windows<'a>,
    ) -> Self {
        let running = now < a.period.end();
        let by_seat = |p: Option<&'a Prior>| {
            p.filter(|_| running).map(|p| {
                let m: SeatUse<'a> = p
                    .credits
                    .iter()
                    .map(|((a, r, u), c)| ((a.as_str(), r.as_str(), u.as_str()), *c))
                    .collect();
                (p.window, m)
            })
        };
        Self {
            factor: a.extrapolation_factor(now),
            month_ok: !running || basis.days >= settings.min_days,
            grace_over: basis.days >= settings.idle_grace_days,
            idle_below: settings.idle_below_credits,
            trailing: by_seat(windows.trailing),
            bill_trailing: by_seat(windows.bill_trailing),
            last_closed: by_seat(windows.last_closed),
        }
    }

    /// How `seat`, with `so_far` credits in the month's own data, is decided; `None`: no
    /// window covers it (no advice).
    fn seat(&self, seat: SeatRef<'_>, so_far: Decimal) -> Option<Use> {
        let from = |(w, m): &(Window, SeatUse<'_>)| {
            m.get(&seat).map(|c| {
                let credits = (*c).max(so_far);
                Use {
                    credits,
                    idle: credits < self.idle_below,
                    window: *w,
                }
            })
        };
        let trailing = self.trailing.as_ref().and_then(from);
        if let Some(u) = trailing.or_else(|| self.bill_trailing.as_ref().and_then(from)) {
            return Some(u);
        }
        if self.month_ok {
            return Some(Use {
                credits: so_far * self.factor,
                idle: self.grace_over && so_far < self.idle_below,
                window: Window::Month,
            });
        }
        self.last_closed.as_ref().and_then(from)
    }
}

/// What a month on `plan` with `credits` costs.
pub fn plan_cost(plan: &Plan, credits: Decimal) -> Decimal {
    plan.monthly_usd
        + (credits - plan.included_credits).max(Decimal::ZERO) * plan.overage_usd_per_credit
}

/// The cheapest plan for `credits`; on a tie, `current` if it is among the cheapest, else the
/// one with most included credits.
pub fn cheapest<'a>(plans: &'a PlanTable, credits: Decimal, current: &'a Plan) -> &'a Plan {
    let mut best = current;
    let mut best_cost = plan_cost(current, credits);
    for p in plans.plans() {
        let c = plan_cost(p, credits);
        if c < best_cost
            || (c == best_cost
                && best.name != current.name
                && p.included_credits > best.included_credits)
        {
            best = p;
            best_cost = c;
        }
    }
    best
}

/// A seat as billed: its plan (if in the table), credits, and its main cost center.
#[derive(Clone, Copy)]
struct Billed<'a> {
    plan: Option<&'a Plan>,
    credits: Decimal,
    cost_center: &'a str,
}

#[derive(Debug)]
struct Seat<'a> {
    account_id: &'a str,
    region: &'a str,
    plan: &'a Plan,
    credits: Decimal,
    cost_center: &'a str,
    window: Window,
}

/// Recommendations for an allocation at `now`, from the bill alone.
pub fn recommend(
    a: &Allocation,
    plans: &PlanTable,
    settings: &SavingsSettings,
    now: DateTime<Utc>,
) -> Savings {
    recommend_with_use(
        a,
        plans,
        settings,
        now,
        &BTreeMap::new(),
        Windows::default(),
    )
}

/// Recommendations at `now` with the credits each seat (account, region, user) used as another
/// source saw them (the activity report): a seat is idle only when neither source shows use,
/// and seats are sized by the larger of the two counts, since in-plan use does not always
/// produce a billing record.
pub fn recommend_with_use(
    a: &Allocation,
    plans: &PlanTable,
    settings: &SavingsSettings,
    now: DateTime<Utc>,
    used: &BTreeMap<(String, String, String), Decimal>,
    windows: Windows<'_>,
) -> Savings {
    let basis = basis(a, settings, now, windows);
    if basis.withheld {
        return Savings {
            basis,
            ..Savings::default()
        };
    }
    let decide = Decide::new(a, settings, now, &basis, windows);
    let mut seats = billed_seats(a, plans, used);
    // Per user, then account and region.
    seats.sort_unstable_by(|(h1, (a1, r1, u1), _), (h2, (a2, r2, u2), _)| {
        (h1, u1, a1, r1).cmp(&(h2, u2, a2, r2))
    });
    let seats = seats.chunk_by(|(_, (_, _, u1), _), (_, (_, _, u2), _)| u1 == u2);
    let mut out = Savings {
        basis,
        ..Savings::default()
    };
    for user_seats in seats {
        let user = user_seats[0].1.2;
        let mut active: Vec<Seat> = Vec::new();
        for &(
            _,
            (account, region, _),
            Billed {
                plan,
                credits,
                cost_center: cc,
            },
        ) in user_seats
        {
            let Some(plan) = plan else { continue };
            let Some(use_) = decide.seat((account, region, user), credits) else {
                continue;
            };
            let seat = Seat {
                account_id: account,
                region,
                plan,
                credits: use_.credits,
                cost_center: cc,
                window: use_.window,
            };
            if use_.idle && plan_cost(plan, seat.credits) > Decimal::ZERO {
                out.idle_seats += 1;
                out.recommendations.push(rec(
                    user,
                    &seat,
                    "",
                    Reason::Idle,
                    seat.credits,
                    plan_cost(plan, seat.credits),
                ));
            } else {
                active.push(seat);
            }
        }
        merge_and_size(user, active, plans, &mut out);
    }
    // A Q Developer Pro seat beside a Kiro seat is cancelled: it saves what it was billed in
    // the period. Billed seats decide, not use, so there is nothing to project.
    for q in a.q_developer.duplicates() {
        if q.fee_usd > Decimal::ZERO {
            out.recommendations.push(Recommendation {
                account_id: q.account_id.clone(),
                region: String::new(),
                user_id: q.user_id.clone(),
                cost_center: q.cost_center.clone(),
                plan: super::q_developer::PLAN_NAME.to_owned(),
                recommended_plan: String::new(),
                reason: Reason::QDeveloper,
                projected_credits: Decimal::ZERO,
                saving_usd: q.fee_usd.round_dp(6),
                window: Window::Month,
            });
        }
    }
    sort_by_seat(&mut out.recommendations);
    out.total_usd = out.recommendations.iter().map(|r| r.saving_usd).sum();
    out
}

/// Each seat's credits summed over its cost centers (the larger of the bill's and `used`'s
/// count), its plan and main cost center, with a hash of its user: grouping by user compares
/// numbers first, strings only on a hash collision (the groups' order does not matter: the
/// recommendations are sorted by seat at the end).
fn billed_seats<'a>(
    a: &'a Allocation,
    plans: &'a PlanTable,
    used: &BTreeMap<(String, String, String), Decimal>,
) -> Vec<(u64, SeatRef<'a>, Billed<'a>)> {
    let used: HashMap<SeatRef<'_>, Decimal, foldhash::fast::RandomState> = used
        .iter()
        .map(|((a, r, u), d)| ((a.as_str(), r.as_str(), u.as_str()), *d))
        .collect();
    let hasher = foldhash::fast::FixedState::default();
    a.units_by_seat()
        .chunk_by(same_seat)
        .map(|run| {
            let first = run[0];
            let main = main_unit(run);
            let mut credits: Decimal = run.iter().map(|u| u.credits_used).sum();
            if let Some(seen) = used.get(&first.seat()) {
                credits = credits.max(*seen);
            }
            let billed = Billed {
                plan: plans.by_name(&first.plan),
                credits,
                cost_center: &main.cost_center,
            };
            let seat = first.seat();
            (
                std::hash::BuildHasher::hash_one(&hasher, seat.2),
                seat,
                billed,
            )
        })
        .collect()
}

/// Recommendations by (account, region, user): one a seat (a Q Developer seat has no region),
/// so the key orders them all.
fn sort_by_seat(recommendations: &mut [Recommendation]) {
    recommendations.sort_unstable_by(|x, y| {
        (&x.account_id, &x.region, &x.user_id, x.reason).cmp(&(
            &y.account_id,
            &y.region,
            &y.user_id,
            y.reason,
        ))
    });
}

/// A user's seats in use: the one with most credits is kept, another seat whose credits fit
/// there for less than its fee is a duplicate, and the kept seat is sized for all of them.
fn merge_and_size(user: &str, mut active: Vec<Seat<'_>>, plans: &PlanTable, out: &mut Savings) {
    // Keep the seat with most credits (then the dearer plan, then the first account).
    active.sort_by(|x, y| {
        y.credits
            .cmp(&x.credits)
            .then(y.plan.monthly_usd.cmp(&x.plan.monthly_usd))
            .then(x.account_id.cmp(y.account_id))
            .then(x.region.cmp(y.region))
    });
    let Some((kept, others)) = active.split_first() else {
        return;
    };
    let mut merged = kept.credits;
    for s in others {
        let extra = plan_cost(kept.plan, merged + s.credits) - plan_cost(kept.plan, merged);
        let saving = plan_cost(s.plan, s.credits) - extra;
        // Only when moving the credits costs less than the seat; otherwise both stay.
        if saving > Decimal::ZERO {
            merged += s.credits;
            out.recommendations
                .push(rec(user, s, "", Reason::Duplicate, s.credits, saving));
        }
    }
    let best = cheapest(plans, merged, kept.plan);
    if best.name != kept.plan.name {
        let reason = if best.monthly_usd < kept.plan.monthly_usd {
            Reason::Downgrade
        } else {
            Reason::Upgrade
        };
        let saving = plan_cost(kept.plan, merged) - plan_cost(best, merged);
        out.recommendations
            .push(rec(user, kept, &best.name, reason, merged, saving));
    }
}

fn rec(
    user: &str,
    s: &Seat<'_>,
    to: &str,
    reason: Reason,
    credits: Decimal,
    saving: Decimal,
) -> Recommendation {
    Recommendation {
        account_id: s.account_id.to_owned(),
        region: s.region.to_owned(),
        user_id: user.to_owned(),
        cost_center: s.cost_center.to_owned(),
        plan: s.plan.name.clone(),
        recommended_plan: to.to_owned(),
        reason,
        projected_credits: credits.round_dp(6),
        saving_usd: saving.round_dp(6),
        window: s.window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocation::{QueryStats, UserCost};
    use chrono::Duration;

    fn d(v: i64) -> Decimal {
        Decimal::from(v)
    }

    fn unit(account: &str, user: &str, plan: &str, credits: i64) -> UserCost {
        UserCost {
            account_id: account.into(),
            user_id: user.into(),
            cost_center: "CC".into(),
            plan: plan.into(),
            credits_used: d(credits),
            subscription_usd: d(20),
            overage_usd: Decimal::ZERO,
            other_usd: Decimal::ZERO,
            total_usd: d(20),
            ..UserCost::default()
        }
    }

    /// A 30-day month whose data covers `days` days, evaluated right after.
    fn alloc(units: Vec<UserCost>, days: i64) -> (Allocation, DateTime<Utc>) {
        let period: crate::period::BillingPeriod = "2026-11".parse().unwrap();
        let as_of = period.start() + Duration::days(days);
        let kiro_total_usd = units.iter().map(|u| u.total_usd).sum();
        let a = Allocation {
            period,
            units,
            seats: Default::default(),
            learned_fees: Default::default(),
            unknown_plans: Default::default(),
            tax_usd: Decimal::ZERO,
            unattributed_usd: Decimal::ZERO,
            kiro_total_usd,
            data_as_of: Some(as_of),
            stats: QueryStats::default(),
            assigned_cost_centers: Default::default(),
            q_developer: Default::default(),
            daily_credits: None,
        };
        a.reconcile().unwrap();
        (a, as_of)
    }

    fn one(units: Vec<UserCost>, days: i64) -> Savings {
        let (a, now) = alloc(units, days);
        recommend(&a, &PlanTable::default(), &SavingsSettings::default(), now)
    }

    #[test]
    fn exactly_the_included_credits_is_no_overage() {
        let pro = PlanTable::default().by_name("Pro").unwrap().clone();
        assert_eq!(plan_cost(&pro, d(1000)), d(20));
        assert_eq!(plan_cost(&pro, d(1001)), Decimal::new(2004, 2));
        // A full month at exactly 1,000 credits on Pro: nothing to change.
        assert!(
            one(vec![unit("1", "u", "Pro", 1000)], 30)
                .recommendations
                .is_empty()
        );
    }

    #[test]
    fn upgrade_pays_only_past_the_break_even() {
        // Pro → Pro+ pays once overage exceeds $20: 1,500 credits over 1,000 → $20 (tie: stay).
        assert!(
            one(vec![unit("1", "u", "Pro", 1500)], 30)
                .recommendations
                .is_empty()
        );
        let s = one(vec![unit("1", "u", "Pro", 1501)], 30);
        assert_eq!(s.recommendations.len(), 1);
        let r = &s.recommendations[0];
        assert_eq!(
            (r.reason, r.recommended_plan.as_str()),
            (Reason::Upgrade, "Pro+")
        );
        assert_eq!(r.saving_usd, Decimal::new(4, 2));
    }

    #[test]
    fn power_user_using_little_is_downgraded() {
        let s = one(vec![unit("1", "u", "Power", 900)], 30);
        let r = &s.recommendations[0];
        assert_eq!(
            (r.reason, r.recommended_plan.as_str(), r.saving_usd),
            (Reason::Downgrade, "Pro", d(180))
        );
        // Just past Pro+'s credits the cheapest is still Pro+ … until the break-even.
        let s = one(vec![unit("1", "u", "Power", 2000)], 30);
        assert_eq!(
            (s.recommendations[0].recommended_plan.as_str(), s.total_usd),
            ("Pro+", d(160))
        );
    }

    #[test]
    fn a_running_month_is_projected_once_it_has_enough_days() {
        // 15 of 30 days: 600 credits project to 1,200 — Pro pays $8 overage, no change.
        let s = one(vec![unit("1", "u", "Pro", 600)], 15);
        assert!(s.recommendations.is_empty());
        // 900 credits project to 1,800: overage $32 > $20 step to Pro+.
        let s = one(vec![unit("1", "u", "Pro", 900)], 15);
        assert_eq!(s.recommendations[0].reason, Reason::Upgrade);
        assert_eq!(s.recommendations[0].projected_credits, d(1800));
        assert_eq!(s.total_usd, d(12));
        assert_eq!(
            s.basis,
            Basis {
                from: NaiveDate::from_ymd_opt(2026, 11, 1),
                to: NaiveDate::from_ymd_opt(2026, 11, 15),
                days: 15,
                projected: true,
                withheld: false,
                min_days: 14,
                window: Window::Month,
            }
        );
    }

    fn prior(window: Window, seats: &[(&str, i64)]) -> Prior {
        Prior {
            window,
            credits: seats
                .iter()
                .map(|(u, c)| (("1".to_owned(), String::new(), (*u).to_owned()), d(*c)))
                .collect(),
        }
    }

    /// Seats two days into a month: `u` Power with 63 credits, `v` and `w` Pro unused, `x`
    /// Pro with 50 credits.
    fn early_month() -> (Allocation, DateTime<Utc>) {
        alloc(
            vec![
                unit("1", "u", "Power", 63),
                unit("1", "v", "Pro", 0),
                unit("1", "w", "Pro", 0),
                unit("1", "x", "Pro", 50),
            ],
            2,
        )
    }

    fn decided(s: &Savings) -> Vec<(&str, Reason, &str, Decimal, Window)> {
        s.recommendations
            .iter()
            .map(|r| {
                let to = r.recommended_plan.as_str();
                (r.user_id.as_str(), r.reason, to, r.saving_usd, r.window)
            })
            .collect()
    }

    #[test]
    fn a_running_month_is_decided_from_the_trailing_window_across_months() {
        let (a, now) = early_month();
        let window = Window::Trailing {
            from: NaiveDate::from_ymd_opt(2026, 10, 4).unwrap(),
            to: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
        };
        // `w` is new this month (not in the window): no advice from two days.
        let trailing = prior(window, &[("u", 9_000), ("v", 0), ("x", 0)]);
        let windows = Windows {
            trailing: Some(&trailing),
            ..Windows::default()
        };
        let s = recommend_with_use(
            &a,
            &PlanTable::default(),
            &SavingsSettings::default(),
            now,
            &BTreeMap::new(),
            windows,
        );
        // 9,000 credits a month is Power's (Pro Max would cost $260): `u` keeps it; `x` used
        // 50 credits this month, so the window's zero does not make it idle.
        assert_eq!(decided(&s), vec![("v", Reason::Idle, "", d(20), window)]);
        assert_eq!((s.basis.window, s.basis.withheld), (window, false));
        assert_eq!(s.total_usd, d(20));
    }

    #[test]
    fn the_bills_trailing_window_decides_the_seats_the_reports_does_not() {
        let (a, now) = early_month();
        let report = Window::Trailing {
            from: NaiveDate::from_ymd_opt(2026, 10, 4).unwrap(),
            to: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
        };
        let bill = Window::BillTrailing {
            from: NaiveDate::from_ymd_opt(2026, 10, 4).unwrap(),
            to: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
        };
        let october = Window::LastClosed("2026-10".parse().unwrap());
        // The report knows `u` only; the bill's window `u`, `v` and `x`; October all four.
        let trailing = prior(report, &[("u", 9_000)]);
        let by_bill = prior(bill, &[("u", 10), ("v", 0), ("x", 700)]);
        let last = prior(october, &[("u", 0), ("v", 5_000), ("w", 0), ("x", 0)]);
        let plans = PlanTable::default();
        let settings = SavingsSettings::default();
        let windows = Windows {
            trailing: Some(&trailing),
            bill_trailing: Some(&by_bill),
            last_closed: Some(&last),
        };
        let s = recommend_with_use(&a, &plans, &settings, now, &BTreeMap::new(), windows);
        // `u` by the report (Power kept), `v` idle by the bill's 30 days, `x` kept on Pro by
        // them (700 credits), `w` by October (idle): a seat new this month would get nothing.
        assert_eq!(
            decided(&s),
            vec![
                ("v", Reason::Idle, "", d(20), bill),
                ("w", Reason::Idle, "", d(20), october),
            ]
        );
        assert_eq!(s.basis.window, report);
        // Without the report, the basis names the bill's window.
        let windows = Windows {
            trailing: None,
            ..windows
        };
        let s = recommend_with_use(&a, &plans, &settings, now, &BTreeMap::new(), windows);
        assert_eq!(s.basis.window, bill);
        assert_eq!(bill.kind(), "bill_trailing_days");
        assert!(
            decided(&s).contains(&("u", Reason::Downgrade, "Pro", d(180), bill)),
            "{s:?}"
        );
        // A closed month is decided from itself alone, whatever windows are given.
        let (a, as_of) = alloc(vec![unit("1", "v", "Pro", 900)], 30);
        let later = as_of + Duration::days(3);
        let s = recommend_with_use(&a, &plans, &settings, later, &BTreeMap::new(), windows);
        assert!(s.recommendations.is_empty(), "{s:?}");
        assert_eq!(s.basis.window, Window::Month);
    }

    #[test]
    fn a_few_days_of_a_running_month_fall_back_to_the_last_closed_month() {
        let (a, now) = early_month();
        let october = Window::LastClosed("2026-10".parse().unwrap());
        let last = prior(october, &[("u", 600), ("v", 0), ("x", 0)]);
        let windows = Windows {
            last_closed: Some(&last),
            ..Windows::default()
        };
        let plans = PlanTable::default();
        let settings = SavingsSettings::default();
        let s = recommend_with_use(&a, &plans, &settings, now, &BTreeMap::new(), windows);
        assert_eq!(
            decided(&s),
            vec![
                ("u", Reason::Downgrade, "Pro", d(180), october),
                ("v", Reason::Idle, "", d(20), october),
            ]
        );
        assert_eq!((s.basis.window, s.basis.withheld), (october, false));
        // Once the month has its `min_days`, the month decides: 63 credits in 15 of 30 days.
        let (a, now) = alloc(vec![unit("1", "u", "Power", 63)], 15);
        let s = recommend_with_use(&a, &plans, &settings, now, &BTreeMap::new(), windows);
        assert_eq!(
            decided(&s),
            vec![("u", Reason::Downgrade, "Pro", d(180), Window::Month)]
        );
        assert_eq!(s.recommendations[0].projected_credits, d(126));
        assert_eq!(s.basis.window, Window::Month);
        // A closed month is decided from itself alone.
        let (a, as_of) = alloc(vec![unit("1", "u", "Power", 9_000)], 30);
        let later = as_of + Duration::days(3);
        let s = recommend_with_use(&a, &plans, &settings, later, &BTreeMap::new(), windows);
        assert!(s.recommendations.is_empty(), "{s:?}");
        assert_eq!(s.basis.window, Window::Month);
    }

    #[test]
    fn a_few_days_of_a_running_month_decide_nothing() {
        // Two days of a Power seat at 62.7 credits project to 940: a downgrade to Pro from
        // two days is not advice anyone should act on; nor is an idle seat after 13 days.
        for (units, days) in [
            (vec![unit("1", "u", "Power", 63)], 2),
            (vec![unit("1", "u", "Power", 63)], 13),
            (vec![unit("1", "u", "Pro", 0)], 13),
            (
                vec![unit("1", "u", "Pro", 800), unit("2", "u", "Pro", 100)],
                13,
            ),
        ] {
            let s = one(units, days);
            assert!(s.recommendations.is_empty(), "{days}: {s:?}");
            assert_eq!(s.total_usd, Decimal::ZERO);
            assert!(s.basis.withheld && s.basis.projected, "{days}");
            assert_eq!(s.basis.days, days as u32);
        }
        // From the 14th day on, the projection decides.
        let s = one(vec![unit("1", "u", "Power", 63)], 14);
        assert_eq!(s.recommendations[0].reason, Reason::Downgrade);
        assert!(!s.basis.withheld);
        // A closed month is decided from all of it, unprojected, whatever min_days says.
        let (a, as_of) = alloc(vec![unit("1", "u", "Power", 63)], 30);
        let settings = SavingsSettings {
            min_days: 31,
            ..SavingsSettings::default()
        };
        let s = recommend(
            &a,
            &PlanTable::default(),
            &settings,
            as_of + Duration::days(2),
        );
        assert_eq!(s.recommendations[0].reason, Reason::Downgrade);
        assert_eq!((s.basis.days, s.basis.projected), (30, false));
    }

    #[test]
    fn idle_only_after_the_grace_days_and_under_the_threshold() {
        let (a, now) = alloc(vec![unit("1", "u", "Pro", 0)], 6);
        let early = SavingsSettings {
            min_days: 0,
            ..SavingsSettings::default()
        };
        assert!(
            recommend(&a, &PlanTable::default(), &early, now)
                .recommendations
                .is_empty(),
            "within grace"
        );
        let (a, now) = alloc(vec![unit("1", "u", "Pro", 0)], 7);
        let s = recommend(&a, &PlanTable::default(), &early, now);
        assert_eq!(
            (s.idle_seats, s.recommendations[0].reason, s.total_usd),
            (1, Reason::Idle, d(20))
        );
        assert_eq!(s.recommendations[0].recommended_plan, "");
        assert!(
            one(vec![unit("1", "u", "Pro", 1)], 30)
                .recommendations
                .iter()
                .all(|r| r.reason != Reason::Idle),
            "1 credit is not under 1"
        );
    }

    #[test]
    fn duplicate_seat_is_cancelled_and_its_credits_move() {
        let s = one(
            vec![unit("1", "u", "Pro", 800), unit("2", "u", "Pro", 100)],
            30,
        );
        assert_eq!(s.recommendations.len(), 1);
        let r = &s.recommendations[0];
        assert_eq!((r.account_id.as_str(), r.reason), ("2", Reason::Duplicate));
        assert_eq!(r.saving_usd, d(20), "900 credits fit in the kept Pro seat");
        // Moving 700 credits onto a seat at 800 costs $20 of overage there: exactly the seat's
        // price, so nothing is saved and nothing is recommended.
        let s = one(
            vec![unit("1", "u", "Pro", 800), unit("2", "u", "Pro", 700)],
            30,
        );
        assert!(s.recommendations.is_empty(), "{s:?}");
        // 699 credits cost $19.96 there: cancelling saves 4 cents.
        let s = one(
            vec![unit("1", "u", "Pro", 800), unit("2", "u", "Pro", 699)],
            30,
        );
        assert_eq!(s.total_usd, Decimal::new(4, 2));
    }

    #[test]
    fn duplicate_that_would_cost_more_merged_stays() {
        // The kept seat is at its limit: 1,000 more credits would cost $40 of overage there,
        // more than the $20 Pro seat that carries them now.
        let s = one(
            vec![unit("1", "u", "Pro", 1000), unit("2", "u", "Pro", 1000)],
            30,
        );
        assert!(
            s.recommendations
                .iter()
                .all(|r| r.reason != Reason::Duplicate),
            "{s:?}"
        );
        assert!(
            s.recommendations
                .iter()
                .all(|r| r.saving_usd > Decimal::ZERO)
        );
    }

    #[test]
    fn unknown_plans_and_users_without_seats_are_left_alone() {
        assert!(
            one(vec![unit("1", "u", "", 0), unit("1", "v", "Ultra", 0)], 30)
                .recommendations
                .is_empty()
        );
    }
}
