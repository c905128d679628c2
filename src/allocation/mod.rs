//! The money: what one billing period of Kiro costs, per (usage account, user, cost center),
//! and the roll-ups every sink reads.
//!
//! Engines run the query in [`sql`] and hand back one [`GroupRow`] per (account, user, cost
//! center) group; [`Allocation::assemble`] turns those rows into units, tax, the unattributed
//! remainder and the independent total, the same way for every engine.

pub mod amount;
pub mod daily;
pub mod forecast;
pub mod plans;
pub mod q_developer;
pub mod region;
pub mod row;
pub mod savings;
pub mod sql;
pub mod user_id;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;
use crate::period::BillingPeriod;
pub use plans::{Plan, PlanTable};

/// The one name every sink gives cost without a cost-center tag: the `cost_center` label in
/// Prometheus, the `CostCenter` dimension in CloudWatch, cards, the report CSV and the landing
/// page (the report's `zh-CN` locale says 未设置). Inside the allocation untagged is `""`.
pub const UNTAGGED: &str = "untagged";

/// `cost_center` as sinks show it: [`UNTAGGED`] for `""`.
pub fn cost_center_label(cost_center: &str) -> &str {
    if cost_center.is_empty() {
        UNTAGGED
    } else {
        cost_center
    }
}

/// `[allocation]`: how lines are attributed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllocationConfig {
    /// Key in the CUR `tags` map that holds the cost center.
    pub cost_center_tag: String,
    /// `line_item_unblended_cost` or `line_item_net_unblended_cost` (a null net cost falls
    /// back to the unblended cost, line by line).
    pub cost_column: sql::CostColumn,
    /// Operations whose lines are never credits or seats; their cost stays in `other_usd` (or
    /// unattributed), so the total still equals the bill.
    pub ignored_operations: Vec<String>,
    /// Read Amazon Q Developer Pro seat lines beside Kiro's and flag users who hold both.
    pub q_developer: bool,
}

impl Default for AllocationConfig {
    fn default() -> Self {
        let d = AllocationSettings::default();
        Self {
            cost_center_tag: d.cost_center_tag,
            cost_column: d.cost_column,
            ignored_operations: d.ignored_operations,
            q_developer: d.q_developer,
        }
    }
}

impl AllocationConfig {
    /// Checks values (no I/O); errors name the key under `allocation`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        sql::validate_tag_key(&self.cost_center_tag)
            .map_err(|m| ConfigError::key("allocation.cost_center_tag", m))?;
        if let Some(op) = self
            .ignored_operations
            .iter()
            .find(|o| o.trim().is_empty() || o.len() > 200)
        {
            return Err(ConfigError::key(
                "allocation.ignored_operations",
                format!("{op:?} is not an operation name"),
            ));
        }
        Ok(())
    }

    /// The settings every engine allocates with: these and the plan table.
    pub fn with_plans(&self, plans: &PlanTable) -> AllocationSettings {
        AllocationSettings {
            cost_center_tag: self.cost_center_tag.clone(),
            cost_column: self.cost_column,
            ignored_operations: self.ignored_operations.clone(),
            q_developer: self.q_developer,
            plans: plans.clone(),
        }
    }
}

/// Settings that change what the allocation computes (the same for every engine).
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationSettings {
    pub cost_center_tag: String,
    pub cost_column: sql::CostColumn,
    pub ignored_operations: Vec<String>,
    /// Read Q Developer seats too ([`q_developer`]).
    pub q_developer: bool,
    pub plans: PlanTable,
}

impl Default for AllocationSettings {
    fn default() -> Self {
        Self {
            cost_center_tag: "userAttribute/costCenter".to_owned(),
            cost_column: sql::CostColumn::default(),
            ignored_operations: sql::default_ignored_operations(),
            q_developer: true,
            plans: PlanTable::default(),
        }
    }
}

/// One result row of the allocation query: a (usage account, region key, user, cost center)
/// group. `user_id` is empty for lines that name no user; `region` is the raw region key
/// (`product_region_code`, `product['region']` or the usage type's prefix, see
/// [`region::region_name`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupRow {
    pub account_id: String,
    pub region: String,
    pub user_id: String,
    pub cost_center: String,
    /// Usage type of the user's latest subscription line in this account, if any.
    pub plan_usage_type: Option<String>,
    pub credits_used: Decimal,
    pub subscription_usd: Decimal,
    pub overage_usd: Decimal,
    pub other_usd: Decimal,
    /// Cost of the group's non-tax lines.
    pub total_usd: Decimal,
    pub tax_usd: Decimal,
    /// Cost of all the group's lines, summed on its own (the reconciliation's reference).
    pub all_cost_usd: Decimal,
    /// Number of non-tax lines.
    pub billed_lines: i64,
    pub usage_end_max: Option<DateTime<Utc>>,
    /// The seat's monthly fee as a full-month seat line of its plan billed it.
    pub plan_fee_usd: Option<Decimal>,
    /// Start of the seat's latest seat-fee line in the group.
    pub last_seat_fee: Option<DateTime<Utc>>,
    /// Seat-fee lines of the group (counted by start).
    pub seat_fee_lines: i64,
}

/// A seat: (usage account, region, user).
pub type SeatKey = (String, String, String);

/// A seat's key as borrowed from its units.
pub type SeatRef<'a> = (&'a str, &'a str, &'a str);

/// What is known of a seat beyond its costs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seat {
    /// Plan name (the table's, or the tier as billed when the table does not know it); empty
    /// when the seat has no seat-fee line.
    pub plan: String,
    /// Start of its latest seat-fee line: the month's first day when the fee is billed at
    /// once, the latest day billed when it is spread daily.
    pub last_seat_fee: Option<DateTime<Utc>>,
    /// Its seat-fee lines: one when the fee is billed at once (two after an upgrade), one a
    /// day when it is spread daily.
    pub seat_fee_lines: i64,
}

/// What one unit (usage account, region, user, cost center) cost in the period.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct UserCost {
    pub account_id: String,
    /// The region of the seat's Kiro profile (`""` when the lines say none).
    pub region: String,
    pub user_id: String,
    /// Empty when the lines carried no cost-center tag (or an empty one).
    pub cost_center: String,
    /// Plan name from the plan table (an unknown tier as billed); empty when the seat has no
    /// seat-fee line.
    pub plan: String,
    pub credits_used: Decimal,
    pub subscription_usd: Decimal,
    pub overage_usd: Decimal,
    pub other_usd: Decimal,
    pub total_usd: Decimal,
}

impl UserCost {
    /// A unit of `seat` in `cost_center`, with nothing added yet.
    fn empty(seat: &SeatKey, cost_center: String) -> Self {
        Self {
            account_id: seat.0.clone(),
            region: seat.1.clone(),
            user_id: seat.2.clone(),
            cost_center,
            ..Self::default()
        }
    }

    /// The unit's seat: (account, region, user).
    pub fn seat(&self) -> SeatRef<'_> {
        (&self.account_id, &self.region, &self.user_id)
    }
}

/// Whether two units are of one seat (for `chunk_by` over [`Allocation::units_by_seat`]).
pub fn same_seat(a: &&UserCost, b: &&UserCost) -> bool {
    a.seat() == b.seat()
}

/// The named seats of `order` (the units in seat order, as [`Allocation::units_by_seat`]
/// gives them): each one seat's units; the run of units without a user is passed over.
pub fn named_seats<'a, 'u>(order: &'a [&'u UserCost]) -> impl Iterator<Item = &'a [&'u UserCost]> {
    // A run is one seat: its units share the user, named or not.
    order
        .chunk_by(same_seat)
        .filter(|run| !run[0].user_id.is_empty())
}

/// Of one seat's units (a run of [`Allocation::units_by_seat`]), the one with most cost, the
/// first on a tie: the seat's main cost center, where its included credits and savings count.
/// `run` is not empty (`chunk_by` yields no empty run).
pub fn main_unit<'a>(run: &[&'a UserCost]) -> &'a UserCost {
    run.iter()
        .fold(run[0], |m, u| if u.total_usd > m.total_usd { u } else { m })
}

/// How a query went, for the exporter's own metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryStats {
    /// Wall time of the query in the engine.
    pub elapsed: Duration,
    /// Bytes the engine read (Athena's `DataScannedInBytes`; Parquet bytes for the local engine).
    pub scanned_bytes: Option<u64>,
    /// Rows read from the files, where the engine reports it.
    pub scanned_rows: Option<u64>,
    /// Number of files read, where the engine reports it.
    pub files: Option<u64>,
    /// Bytes fetched from the export's store (the embedded engine: footers and the column
    /// ranges scanned).
    pub fetched_bytes: Option<u64>,
}

/// The allocation of one billing period.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub period: BillingPeriod,
    /// Sorted by (account, region, user, cost center).
    pub units: Vec<UserCost>,
    /// Every seat with a unit.
    pub seats: BTreeMap<SeatKey, Seat>,
    /// Monthly fees per plan name as full-month seat lines billed them (the most frequent
    /// amount); the plan table's price stands where a plan has none.
    pub learned_fees: BTreeMap<String, Decimal>,
    /// Tiers billed that the plan table does not know: no included credits are assumed.
    pub unknown_plans: BTreeSet<String>,
    pub tax_usd: Decimal,
    /// Non-tax cost of lines that name no user (e.g. an enterprise discount line).
    pub unattributed_usd: Decimal,
    /// Every Kiro line of the period, summed on its own.
    pub kiro_total_usd: Decimal,
    /// The newest end time of an hourly credits line: how current the bill is. Seat, tax and
    /// discount lines span the whole month and say nothing about freshness.
    pub data_as_of: Option<DateTime<Utc>>,
    pub stats: QueryStats,
    /// Cost of lines without a cost-center tag that a user attribute assigned to a cost center
    /// (`identity.cost_center_from`), per cost center; counted apart so the tags' coverage
    /// stays visible.
    pub assigned_cost_centers: BTreeMap<String, Decimal>,
    /// Amazon Q Developer Pro seats of the period ([`q_developer`]): apart from every Kiro
    /// figure above.
    pub q_developer: q_developer::QDeveloper,
    /// Each seat's credits per usage day ([`daily`]), when asked of the source
    /// ([`crate::source::Source::daily_credits`]): for the month before a running one.
    pub daily_credits: Option<std::sync::Arc<daily::DailyCredits>>,
}

/// Roll-up of the units that share a key (a cost center or an account).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    /// Distinct users.
    pub users: usize,
    pub credits_used: Decimal,
    pub subscription_usd: Decimal,
    pub overage_usd: Decimal,
    pub other_usd: Decimal,
    pub total_usd: Decimal,
}

impl Rollup {
    /// Adds `u`'s amounts (not its user: distinct users are counted apart).
    fn add(&mut self, u: &UserCost) {
        self.credits_used += u.credits_used;
        self.subscription_usd += u.subscription_usd;
        self.overage_usd += u.overage_usd;
        self.other_usd += u.other_usd;
        self.total_usd += u.total_usd;
    }
}

/// The books do not balance: a line was lost or counted twice. Never expected; reported
/// rather than exported.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "allocation for {period} does not reconcile: units {units} + unattributed {unattributed} + tax {tax} != Kiro total {total}"
)]
pub struct ReconciliationError {
    pub period: BillingPeriod,
    pub units: Decimal,
    pub unattributed: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
}

/// A group row's seat.
fn seat_of(r: &GroupRow) -> SeatRef<'_> {
    (&r.account_id, &r.region, &r.user_id)
}

/// What a seat's latest seat fee says: when, the plan's usage type, the full-month fee.
type PlanSeen = (Option<DateTime<Utc>>, Option<String>, Option<Decimal>);

/// The units with billed lines (`merged`: unit, billed lines, seat index), each on its seat's
/// plan (`plan_of`, an index into `names`), amounts normalised, in order.
fn units_of(
    merged: Vec<(UserCost, i64, usize)>,
    plan_of: &[usize],
    names: &[String],
) -> Vec<UserCost> {
    let mut units: Vec<UserCost> = merged
        .into_iter()
        .filter(|(_, lines, _)| *lines > 0)
        .map(|(mut u, _, ix)| {
            u.plan.clone_from(&names[plan_of[ix]]);
            for d in [
                &mut u.credits_used,
                &mut u.subscription_usd,
                &mut u.overage_usd,
                &mut u.other_usd,
                &mut u.total_usd,
            ] {
                *d = amount::normalized(*d);
            }
            u
        })
        .collect();
    // Units are distinct by (account, region, user, cost center): no two compare equal.
    // Already in order unless two spellings of a region met.
    if !units.is_sorted() {
        units.sort_unstable();
    }
    units
}

/// Each seat's plan from its latest seat-fee line (`keys` and `seat_plan` by seat index): the
/// plan per seat index, the seats with billed lines (`billed`), the fee learned per plan (the
/// most frequent full-month fee, the larger on a tie), and the tiers the table does not know.
/// A plan's name is resolved once per usage type as billed, and a seat refers to it by index.
fn seat_plans(
    keys: Vec<(SeatKey, usize)>,
    seat_plan: Vec<(PlanSeen, i64)>,
    billed: &[bool],
    plans: &PlanTable,
) -> SeatPlans {
    type Fast = foldhash::fast::RandomState;
    // The plans' names, the first one empty (no seat-fee line), and per name the full-month
    // fees billed with their counts.
    let mut names: Vec<String> = vec![String::new()];
    let mut fees: Vec<BTreeMap<Decimal, usize>> = vec![BTreeMap::new()];
    let mut unknown_plans = BTreeSet::new();
    // Per usage type as billed (a few distinct ones), its plan's index in `names`.
    let mut name_of_usage: HashMap<String, usize, Fast> = HashMap::default();
    let mut plan_of: Vec<usize> = Vec::with_capacity(seat_plan.len());
    let mut seats: Vec<(SeatKey, Seat)> = Vec::with_capacity(seat_plan.len());
    for (ix, ((key, _), ((last, usage_type, fee), seat_fee_lines))) in
        keys.into_iter().zip(seat_plan).enumerate()
    {
        let plan = match usage_type {
            None => 0,
            Some(u) => match name_of_usage.get(&u) {
                Some(&plan) => plan,
                None => {
                    let name = plans.name_for_usage_type(&u);
                    let plan = match names.iter().position(|n| *n == name) {
                        Some(plan) => plan,
                        None => {
                            if plans.by_name(&name).is_none() {
                                unknown_plans.insert(name.clone());
                            }
                            names.push(name);
                            fees.push(BTreeMap::new());
                            names.len() - 1
                        }
                    };
                    name_of_usage.insert(u, plan);
                    plan
                }
            },
        };
        if let Some(fee) = fee.filter(|f| *f > Decimal::ZERO)
            && plan != 0
        {
            *fees[plan].entry(amount::normalized(fee)).or_default() += 1;
        }
        plan_of.push(plan);
        if billed[ix] {
            seats.push((
                key,
                Seat {
                    plan: names[plan].clone(),
                    last_seat_fee: last,
                    seat_fee_lines,
                },
            ));
        }
    }
    let seats: BTreeMap<SeatKey, Seat> = seats.into_iter().collect();
    let learned_fees: BTreeMap<String, Decimal> = names
        .iter()
        .zip(fees)
        .filter_map(|(plan, counts)| {
            let (fee, _) = counts.into_iter().max_by_key(|(fee, n)| (*n, *fee))?;
            Some((plan.clone(), fee))
        })
        .collect();
    SeatPlans {
        plan_of,
        names,
        seats,
        learned_fees,
        unknown_plans,
    }
}

/// What [`seat_plans`] finds.
struct SeatPlans {
    /// By seat index, its plan's index in `names`.
    plan_of: Vec<usize>,
    /// The plans' names, the first one empty.
    names: Vec<String>,
    seats: BTreeMap<SeatKey, Seat>,
    learned_fees: BTreeMap<String, Decimal>,
    unknown_plans: BTreeSet<String>,
}

impl Allocation {
    /// Builds the allocation from the query's group rows (in any order): maps region keys to
    /// regions (merging the groups that name one region two ways), picks each seat's plan
    /// from the plans its groups picked (the latest, where one seat's lines name its region two
    /// ways), learns the plans' fees, and checks the books.
    pub fn assemble(
        period: BillingPeriod,
        mut rows: Vec<GroupRow>,
        plans: &PlanTable,
        stats: QueryStats,
    ) -> Result<Self, ReconciliationError> {
        type Fast = foldhash::fast::RandomState;
        let (mut tax, mut unattributed, mut total) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
        let mut data_as_of = None;
        // Region keys as the bill writes them, to region names (a few distinct ones).
        let mut regions: HashMap<String, String, Fast> = HashMap::default();
        for row in &mut rows {
            let name = match regions.get(&row.region) {
                Some(name) => name.clone(),
                None => {
                    let name = region::region_name(&row.region);
                    regions.insert(row.region.clone(), name.clone());
                    name
                }
            };
            row.region = name;
        }
        // The rows by seat: already so as the engines sort them, unless two spellings of a
        // region met (or rows came in another order); a stable sort keeps their order within
        // a seat, which decides between two plans picked at the same time.
        if !rows.is_sorted_by(|a, b| seat_of(a) <= seat_of(b)) {
            rows.sort_by(|a, b| seat_of(a).cmp(&seat_of(b)));
        }
        // Per seat, in order: its key and index; (latest seat fee, plan usage type, full-month
        // fee of that plan) and its seat-fee lines.
        let mut keys: Vec<(SeatKey, usize)> = Vec::with_capacity(rows.len());
        let mut seat_plan: Vec<(PlanSeen, i64)> = Vec::with_capacity(rows.len());
        // Per (seat, cost center): the unit, its billed lines and its seat index; a seat's
        // units follow one another, from `seat_units` on for the seat at hand.
        let mut merged: Vec<(UserCost, i64, usize)> = Vec::with_capacity(rows.len());
        let mut seat_units = 0;
        for row in rows {
            tax += row.tax_usd;
            total += row.all_cost_usd;
            data_as_of = data_as_of.max(row.usage_end_max);
            if row.user_id.is_empty() {
                unattributed += row.total_usd;
                continue;
            }
            let same_seat = keys.last().is_some_and(|((a, r, u), _)| {
                (a.as_str(), r.as_str(), u.as_str()) == seat_of(&row)
            });
            if !same_seat {
                keys.push(((row.account_id, row.region, row.user_id), keys.len()));
                seat_plan.push(((None, None, None), 0));
                seat_units = merged.len();
            }
            let ix = keys.len() - 1;
            let (e, fee_lines) = &mut seat_plan[ix];
            *fee_lines += row.seat_fee_lines;
            if row.plan_usage_type.is_some() && (e.1.is_none() || row.last_seat_fee > e.0) {
                *e = (row.last_seat_fee, row.plan_usage_type, row.plan_fee_usd);
            }
            e.0 = e.0.max(row.last_seat_fee);
            let unit = merged[seat_units..]
                .iter()
                .position(|(u, _, _)| u.cost_center == row.cost_center);
            let i = match unit {
                Some(at) => seat_units + at,
                None => {
                    merged.push((UserCost::empty(&keys[ix].0, row.cost_center), 0, ix));
                    merged.len() - 1
                }
            };
            let (u, lines, _) = &mut merged[i];
            u.credits_used += row.credits_used;
            u.subscription_usd += row.subscription_usd;
            u.overage_usd += row.overage_usd;
            u.other_usd += row.other_usd;
            u.total_usd += row.total_usd;
            *lines += row.billed_lines;
        }
        // Seats with a unit that has billed lines (seats of users with tax lines only have
        // none), and the plan each is on.
        let mut billed = vec![false; seat_plan.len()];
        for (_, lines, ix) in &merged {
            if *lines > 0 {
                billed[*ix] = true;
            }
        }
        let SeatPlans {
            plan_of,
            names,
            seats,
            learned_fees,
            unknown_plans,
        } = seat_plans(keys, seat_plan, &billed, plans);
        let units = units_of(merged, &plan_of, &names);
        let allocation = Self {
            period,
            units,
            seats,
            learned_fees,
            unknown_plans,
            tax_usd: tax.normalize(),
            unattributed_usd: unattributed.normalize(),
            kiro_total_usd: total.normalize(),
            data_as_of,
            stats,
            assigned_cost_centers: BTreeMap::new(),
            q_developer: q_developer::QDeveloper::default(),
            daily_credits: None,
        };
        allocation.reconcile()?;
        Ok(allocation)
    }

    /// Adds the period's Q Developer seats from the Q Developer query's rows, each flagged
    /// when its user holds a Kiro seat (a seat-fee line) in the period; checks their books.
    pub fn with_q_developer(
        mut self,
        rows: Vec<q_developer::QRow>,
    ) -> Result<Self, q_developer::QReconciliationError> {
        // Only the Kiro users who may also hold a Q Developer seat: the Q users are few.
        let q_users: std::collections::HashSet<String, foldhash::fast::RandomState> = rows
            .iter()
            .filter(|r| !r.user_id.is_empty())
            .map(|r| user_id::join_key(&r.user_id))
            .collect();
        let kiro_users: std::collections::HashSet<String> = self
            .seats
            .iter()
            .filter(|(_, s)| !s.plan.is_empty())
            .filter_map(|((_, _, user), _)| {
                let key = user_id::join_key_of(user);
                q_users.contains(key.as_ref()).then(|| key.into_owned())
            })
            .collect();
        self.q_developer = q_developer::QDeveloper::assemble(self.period, rows, &kiro_users)?;
        Ok(self)
    }

    /// Gives the units without a cost-center tag the cost center `of_user` names for their
    /// user (merging with a unit already under that cost center), and counts what moved in
    /// [`Self::assigned_cost_centers`]. Totals are unchanged.
    pub fn assign_untagged(&mut self, of_user: impl Fn(&str) -> Option<String>) {
        self.q_developer.assign_untagged(&of_user);
        // Most calls assign nothing (no directory, or no untagged unit): the units stay as
        // they are, sorted, without being rebuilt.
        if !self
            .units
            .iter()
            .any(|u| u.cost_center.is_empty() && of_user(&u.user_id).is_some_and(|c| !c.is_empty()))
        {
            return;
        }
        let mut merged: BTreeMap<(String, String, String, String), UserCost> = BTreeMap::new();
        for mut u in std::mem::take(&mut self.units) {
            if u.cost_center.is_empty()
                && let Some(cc) = of_user(&u.user_id).filter(|cc| !cc.is_empty())
            {
                *self.assigned_cost_centers.entry(cc.clone()).or_default() += u.total_usd;
                u.cost_center = cc;
            }
            let key = (
                u.account_id.clone(),
                u.region.clone(),
                u.user_id.clone(),
                u.cost_center.clone(),
            );
            match merged.entry(key) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(u);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let m = o.get_mut();
                    m.credits_used = (m.credits_used + u.credits_used).normalize();
                    m.subscription_usd = (m.subscription_usd + u.subscription_usd).normalize();
                    m.overage_usd = (m.overage_usd + u.overage_usd).normalize();
                    m.other_usd = (m.other_usd + u.other_usd).normalize();
                    m.total_usd = (m.total_usd + u.total_usd).normalize();
                }
            }
        }
        self.units = merged.into_values().collect();
        self.units.sort();
        for v in self.assigned_cost_centers.values_mut() {
            *v = v.normalize();
        }
    }

    /// Checks Σ units.total + unattributed + tax = Kiro total, exactly.
    pub fn reconcile(&self) -> Result<(), ReconciliationError> {
        let units: Decimal = self.units.iter().map(|u| u.total_usd).sum();
        if units + self.unattributed_usd + self.tax_usd == self.kiro_total_usd {
            Ok(())
        } else {
            Err(ReconciliationError {
                period: self.period,
                units,
                unattributed: self.unattributed_usd,
                tax: self.tax_usd,
                total: self.kiro_total_usd,
            })
        }
    }

    fn rollup_by<'a>(&'a self, key: impl Fn(&'a UserCost) -> &'a str) -> BTreeMap<&'a str, Rollup> {
        type Users<'a> = std::collections::HashSet<&'a str, foldhash::fast::RandomState>;
        let mut out: BTreeMap<&str, (Rollup, Users<'a>)> = BTreeMap::new();
        for u in &self.units {
            let (r, users) = out.entry(key(u)).or_default();
            users.insert(&u.user_id);
            r.add(u);
        }
        out.into_iter()
            .map(|(k, (mut r, users))| {
                r.users = users.len();
                (k, r)
            })
            .collect()
    }

    /// Roll-ups per cost center ("" = untagged), sorted by name.
    pub fn cost_centers(&self) -> BTreeMap<&str, Rollup> {
        self.rollup_by(|u| &u.cost_center)
    }

    /// Roll-ups per cost center, most expensive first.
    pub fn cost_centers_by_cost(&self) -> Vec<(&str, Rollup)> {
        let mut ccs: Vec<(&str, Rollup)> = self.cost_centers().into_iter().collect();
        ccs.sort_by_key(|(_, r)| std::cmp::Reverse(r.total_usd));
        ccs
    }

    /// Roll-ups per usage account.
    pub fn accounts(&self) -> BTreeMap<&str, Rollup> {
        self.rollup_by(|u| &u.account_id)
    }

    /// Sorted user ids that have at least one untagged unit.
    pub fn untagged_users(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self
            .units
            .iter()
            .filter(|u| u.cost_center.is_empty())
            .map(|u| u.user_id.as_str())
            .collect();
        set.into_iter().collect()
    }

    /// The units in seat order (account, region, user), so that `chunk_by(same_seat)` yields
    /// each seat's units once: the units as kept (sorted), or sorted here when they are not.
    pub fn units_by_seat(&self) -> Vec<&UserCost> {
        let mut order: Vec<&UserCost> = self.units.iter().collect();
        if !order.is_sorted_by(|a, b| a.seat() <= b.seat()) {
            order.sort_by(|a, b| a.seat().cmp(&b.seat()));
        }
        order
    }

    /// Sorted user ids charged a seat fee in more than one (account, region): a Kiro profile
    /// is per account and region, so each such seat is billed.
    pub fn duplicate_subscriptions(&self) -> Vec<&str> {
        let mut paid_seats: HashMap<&str, usize, foldhash::fast::RandomState> = HashMap::default();
        for run in self.units_by_seat().chunk_by(same_seat) {
            let paid: Decimal = run.iter().map(|u| u.subscription_usd).sum();
            if paid > Decimal::ZERO {
                *paid_seats.entry(&run[0].user_id).or_default() += 1;
            }
        }
        let mut users: Vec<&str> = paid_seats
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(u, _)| u)
            .collect();
        users.sort_unstable();
        users
    }

    /// Each seat's main cost center: of the (account, region, user)'s units, the one with most cost
    /// (the first in unit order on a tie). Included credits and savings count there.
    pub fn seat_cost_centers(&self) -> BTreeMap<SeatRef<'_>, &str> {
        let mut out: Vec<(SeatRef<'_>, &str)> = Vec::new();
        let order = self.units_by_seat();
        for run in named_seats(&order) {
            out.push((run[0].seat(), &main_unit(run).cost_center));
        }
        // In key order already: collecting is a bulk build.
        out.into_iter().collect()
    }

    /// Distinct seats (account, region, user) with a unit, per plan name ("" = no subscription line).
    pub fn users_by_plan(&self) -> BTreeMap<&str, usize> {
        let mut out: BTreeMap<&str, usize> = BTreeMap::new();
        let mut plans: Vec<&str> = Vec::new();
        for run in self.units_by_seat().chunk_by(same_seat) {
            plans.clear();
            plans.extend(run.iter().map(|u| u.plan.as_str()));
            plans.sort_unstable();
            plans.dedup();
            for p in &plans {
                *out.entry(p).or_default() += 1;
            }
        }
        out
    }

    /// Sum over all units.
    pub fn totals(&self) -> Rollup {
        self.rollup_by(|_| "").remove("").unwrap_or_default()
    }

    /// [`Self::totals`], [`Self::cost_centers`] and [`Self::accounts`] in one pass over the
    /// units: each unit's user is looked up once, and its account and cost center are those
    /// of the unit before it more often than not (the units are kept in seat order).
    pub fn rollups(&self) -> (Rollup, BTreeMap<&str, Rollup>, BTreeMap<&str, Rollup>) {
        type Fast = foldhash::fast::RandomState;
        /// One key's sums and the indexes of its distinct users.
        #[derive(Default)]
        struct Sums {
            rollup: Rollup,
            users: std::collections::HashSet<u32, Fast>,
        }
        /// The slot of `key` among `slots`, the last one found first.
        fn slot<'a>(
            key: &'a str,
            index: &mut HashMap<&'a str, usize, Fast>,
            slots: &mut Vec<Sums>,
            last: &mut Option<(&'a str, usize)>,
        ) -> usize {
            if let Some((k, i)) = *last
                && k == key
            {
                return i;
            }
            let i = *index.entry(key).or_insert_with(|| {
                slots.push(Sums::default());
                slots.len() - 1
            });
            *last = Some((key, i));
            i
        }
        let mut users: HashMap<&str, u32, Fast> = HashMap::default();
        let mut all = Rollup::default();
        let (mut cc_index, mut cc_slots, mut cc_last) = (HashMap::default(), Vec::new(), None);
        let (mut acc_index, mut acc_slots, mut acc_last) = (HashMap::default(), Vec::new(), None);
        for u in &self.units {
            let next = users.len() as u32;
            let user = *users.entry(u.user_id.as_str()).or_insert(next);
            all.add(u);
            let cc = slot(&u.cost_center, &mut cc_index, &mut cc_slots, &mut cc_last);
            let acc = slot(&u.account_id, &mut acc_index, &mut acc_slots, &mut acc_last);
            for sums in [&mut cc_slots[cc], &mut acc_slots[acc]] {
                sums.users.insert(user);
                sums.rollup.add(u);
            }
        }
        all.users = users.len();
        fn done<'a>(
            index: HashMap<&'a str, usize, Fast>,
            slots: &mut [Sums],
        ) -> BTreeMap<&'a str, Rollup> {
            index
                .into_iter()
                .map(|(k, i)| {
                    let Sums { mut rollup, users } = std::mem::take(&mut slots[i]);
                    rollup.users = users.len();
                    (k, rollup)
                })
                .collect()
        }
        let cost_centers = done(cc_index, &mut cc_slots);
        let accounts = done(acc_index, &mut acc_slots);
        (all, cost_centers, accounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        account: &str,
        user: &str,
        cc: &str,
        plan: Option<&str>,
        sub: i64,
        over: i64,
        tax: i64,
    ) -> GroupRow {
        let (sub, over, tax) = (Decimal::from(sub), Decimal::from(over), Decimal::from(tax));
        GroupRow {
            account_id: account.into(),
            user_id: user.into(),
            cost_center: cc.into(),
            plan_usage_type: plan.map(str::to_owned),
            credits_used: Decimal::from(100),
            subscription_usd: sub,
            overage_usd: over,
            other_usd: Decimal::ZERO,
            total_usd: sub + over,
            tax_usd: tax,
            all_cost_usd: sub + over + tax,
            billed_lines: i64::from(sub + over != Decimal::ZERO),
            ..GroupRow::default()
        }
    }

    #[test]
    fn two_spellings_of_a_region_are_one_unit_in_order() {
        let p: BillingPeriod = "2026-10".parse().unwrap();
        let with_region = |region: &str, user: &str, over: i64| GroupRow {
            region: region.into(),
            ..row(
                "1",
                user,
                "cc",
                Some("USE1-KiroEnterprise-Pro"),
                20,
                over,
                0,
            )
        };
        // Sorted as the engines sort them, by the region as written: `USE1` after `EUC1` and
        // before `eu-central-1` and `us-east-1`.
        let rows = vec![
            with_region("EUC1", "b", 1),
            with_region("USE1", "a", 2),
            with_region("USE1", "b", 3),
            with_region("us-east-1", "a", 4),
        ];
        let a =
            Allocation::assemble(p, rows, &PlanTable::default(), QueryStats::default()).unwrap();
        a.reconcile().unwrap();
        let units: Vec<(&str, &str, Decimal)> = a
            .units
            .iter()
            .map(|u| (u.region.as_str(), u.user_id.as_str(), u.overage_usd))
            .collect();
        assert_eq!(
            units,
            vec![
                ("eu-central-1", "b", Decimal::from(1)),
                ("us-east-1", "a", Decimal::from(6)),
                ("us-east-1", "b", Decimal::from(3)),
            ]
        );
        assert!(a.units.is_sorted());
        assert_eq!(a.kiro_total_usd, Decimal::from(90));
    }

    #[test]
    fn rows_in_any_order_give_one_allocation() {
        let p: BillingPeriod = "2026-10".parse().unwrap();
        let at = |region: &str, user: &str, cc: &str, plan: Option<&str>, over: i64| GroupRow {
            region: region.into(),
            last_seat_fee: plan.map(|_| p.start() + chrono::Duration::days(over)),
            ..row(
                "1",
                user,
                cc,
                plan,
                if plan.is_some() { 20 } else { 0 },
                over,
                1,
            )
        };
        let rows = vec![
            at("USE1", "a", "x", Some("USE1-KiroEnterprise-Pro"), 1),
            at("USE1", "a", "y", None, 2),
            at(
                "us-east-1",
                "a",
                "x",
                Some("USE1-KiroEnterprise-ProPlus"),
                3,
            ),
            at("us-east-1", "a", "w", None, 4),
            at("EUC1", "b", "x", Some("EUC1-KiroEnterprise-Pro"), 5),
            at("eu-central-1", "b", "", None, 6),
            at("us-east-1", "", "", None, 7),
            at("us-east-1", "c", "x", None, 8),
        ];
        let of = |rows: Vec<GroupRow>| {
            Allocation::assemble(p, rows, &PlanTable::default(), QueryStats::default()).unwrap()
        };
        let sorted = of(rows.clone());
        sorted.reconcile().unwrap();
        assert_eq!(sorted.units.len(), 6);
        assert!(sorted.units.is_sorted());
        // One seat of `a` in us-east-1, on the plan of its latest seat fee, in three units.
        let a: Vec<(&str, &str, Decimal)> = sorted
            .units
            .iter()
            .filter(|u| u.user_id == "a")
            .map(|u| (u.cost_center.as_str(), u.plan.as_str(), u.overage_usd))
            .collect();
        assert_eq!(
            a,
            vec![
                ("w", "Pro+", Decimal::from(4)),
                ("x", "Pro+", Decimal::from(4)),
                ("y", "Pro+", Decimal::from(2)),
            ]
        );
        assert_eq!(sorted.unattributed_usd, Decimal::from(7));
        assert_eq!(sorted.tax_usd, Decimal::from(8));
        for turn in 1..rows.len() {
            let mut turned = rows.clone();
            turned.rotate_left(turn);
            let mut reversed = turned.clone();
            reversed.reverse();
            for rows in [turned, reversed] {
                let other = of(rows);
                assert_eq!(other.units, sorted.units, "turned by {turn}");
                assert_eq!(other.seats, sorted.seats, "turned by {turn}");
                assert_eq!(other.learned_fees, sorted.learned_fees);
                assert_eq!(other.unknown_plans, sorted.unknown_plans);
                assert_eq!(
                    (other.tax_usd, other.unattributed_usd, other.kiro_total_usd),
                    (
                        sorted.tax_usd,
                        sorted.unattributed_usd,
                        sorted.kiro_total_usd
                    )
                );
            }
        }
    }

    /// The one-pass roll-ups are the three roll-ups made apart, to the digit, whether the
    /// units come in seat order or not: users in several accounts and cost centers, accounts
    /// and cost centers met again after others, and an untagged unit (a line without a user
    /// is unattributed, not a unit).
    #[test]
    fn rollups_in_one_pass_are_those_made_apart() {
        let p: BillingPeriod = "2026-10".parse().unwrap();
        let pro = Some("USE1-KiroEnterprise-Pro");
        let rows = vec![
            row("1", "a", "x", pro, 20, 3, 1),
            row("1", "a", "y", None, 0, 4, 0),
            row("1", "b", "x", pro, 20, 0, 0),
            row("2", "a", "x", pro, 20, 7, 0),
            row("2", "c", "", pro, 20, 1, 0),
            row("2", "", "y", None, 0, 2, 0),
            row("3", "b", "z", pro, 20, 0, 2),
            row("1", "d", "y", pro, 20, 5, 0),
        ];
        let mut a =
            Allocation::assemble(p, rows, &PlanTable::default(), QueryStats::default()).unwrap();
        a.reconcile().unwrap();
        for turn in [false, true] {
            if turn {
                // Units out of seat order: accounts and cost centers met again after others.
                a.units.reverse();
                a.units.rotate_left(3);
            }
            let (all, cost_centers, accounts) = a.rollups();
            assert_eq!(all, a.totals());
            assert_eq!(cost_centers, a.cost_centers());
            assert_eq!(accounts, a.accounts());
            assert_eq!(all.users, 4, "a, b, c and d");
            assert_eq!(cost_centers["x"].users, 2);
            assert_eq!(accounts["1"].users, 3);
            assert_eq!(
                all.total_usd + a.unattributed_usd + a.tax_usd,
                a.kiro_total_usd,
                "the books"
            );
            assert_eq!(
                cost_centers.values().map(|r| r.total_usd).sum::<Decimal>(),
                all.total_usd
            );
        }
    }

    #[test]
    fn assigning_untagged_units_merges_them_and_keeps_the_books() {
        let p: BillingPeriod = "2026-10".parse().unwrap();
        let rows = vec![
            row("1", "a", "", Some("USE1-KiroEnterprise-Pro"), 20, 3, 1),
            row("1", "a", "cc", None, 0, 4, 0),
            row("1", "b", "", Some("USE1-KiroEnterprise-Pro"), 20, 0, 0),
            row("1", "c", "", Some("USE1-KiroEnterprise-Pro"), 20, 0, 0),
        ];
        let mut a =
            Allocation::assemble(p, rows, &PlanTable::default(), QueryStats::default()).unwrap();
        let total = a.kiro_total_usd;
        a.assign_untagged(|u| match u {
            "a" => Some("cc".into()),
            "b" => Some("other".into()),
            _ => None,
        });
        a.reconcile().unwrap();
        assert_eq!(a.kiro_total_usd, total);
        let of = |u: &str| -> Vec<(&str, Decimal)> {
            a.units
                .iter()
                .filter(|x| x.user_id == u)
                .map(|x| (x.cost_center.as_str(), x.total_usd))
                .collect()
        };
        assert_eq!(of("a"), vec![("cc", Decimal::from(27))]);
        assert_eq!(
            of("a")[0].1,
            a.units[0].subscription_usd + a.units[0].overage_usd
        );
        assert_eq!(of("b"), vec![("other", Decimal::from(20))]);
        assert_eq!(of("c"), vec![("", Decimal::from(20))]);
        assert_eq!(a.units[0].plan, "Pro");
        assert_eq!(
            a.assigned_cost_centers,
            BTreeMap::from([
                ("cc".to_owned(), Decimal::from(23)),
                ("other".to_owned(), Decimal::from(20))
            ])
        );
        assert_eq!(a.untagged_users(), vec!["c"]);
    }

    #[test]
    fn assembles_units_tax_and_unattributed() {
        let p: BillingPeriod = "2026-10".parse().unwrap();
        let rows = vec![
            row(
                "1",
                "b",
                "cc",
                Some("USE1-KiroEnterprise-Power"),
                200,
                4,
                10,
            ),
            row("1", "a", "", None, 20, 0, 0),
            row("1", "t", "cc", None, 0, 0, 3),
            row("1", "", "", None, -5, 0, 1),
            row("2", "b", "cc", Some("EUC1-KiroEnterprise-Pro"), 20, 0, 0),
        ];
        let a =
            Allocation::assemble(p, rows, &PlanTable::default(), QueryStats::default()).unwrap();
        assert_eq!(a.units.len(), 3, "tax-only user t has no unit");
        assert_eq!(a.units[0].user_id, "a");
        assert_eq!(a.units[1].plan, "Power");
        assert_eq!(a.tax_usd, Decimal::from(14));
        assert_eq!(a.unattributed_usd, Decimal::from(-5));
        assert_eq!(a.kiro_total_usd, Decimal::from(253));
        assert_eq!(a.untagged_users(), vec!["a"]);
        assert_eq!(a.duplicate_subscriptions(), vec!["b"]);
        assert_eq!(a.cost_centers()["cc"].users, 1);
        assert_eq!(a.cost_centers()["cc"].total_usd, Decimal::from(224));
        assert!(a.reconcile().is_ok());
    }

    #[test]
    fn a_lost_line_fails_reconciliation() {
        let p: BillingPeriod = "2026-10".parse().unwrap();
        let mut r = row("1", "a", "", None, 20, 0, 0);
        r.all_cost_usd = Decimal::from(21);
        let e = Allocation::assemble(p, vec![r], &PlanTable::default(), QueryStats::default())
            .unwrap_err();
        assert!(e.to_string().contains("does not reconcile"), "{e}");
    }
}
