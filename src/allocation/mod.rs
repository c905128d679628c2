//! The money: what one billing period of Kiro costs, per (usage account, user, cost center),
//! and the roll-ups every sink reads.
//!
//! Engines run the query in [`sql`] and hand back one [`GroupRow`] per (account, user, cost
//! center) group; [`Allocation::assemble`] turns those rows into units, tax, the unattributed
//! remainder and the independent total, the same way for every engine.

pub mod forecast;
pub mod plans;
pub mod row;
pub mod savings;
pub mod sql;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;
use crate::period::BillingPeriod;
pub use plans::{Plan, PlanTable};

/// `[allocation]`: how lines are attributed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllocationConfig {
    /// Key in the CUR `tags` map that holds the cost center.
    pub cost_center_tag: String,
    /// `line_item_unblended_cost` or `line_item_net_unblended_cost`.
    pub cost_column: sql::CostColumn,
}

impl Default for AllocationConfig {
    fn default() -> Self {
        let d = AllocationSettings::default();
        Self {
            cost_center_tag: d.cost_center_tag,
            cost_column: d.cost_column,
        }
    }
}

impl AllocationConfig {
    /// Checks values (no I/O); errors name the key under `allocation`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        sql::validate_tag_key(&self.cost_center_tag)
            .map_err(|m| ConfigError::key("allocation.cost_center_tag", m))
    }

    /// The settings every engine allocates with: these and the plan table.
    pub fn with_plans(&self, plans: &PlanTable) -> AllocationSettings {
        AllocationSettings {
            cost_center_tag: self.cost_center_tag.clone(),
            cost_column: self.cost_column,
            plans: plans.clone(),
        }
    }
}

/// Settings that change what the allocation computes (the same for every engine).
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationSettings {
    pub cost_center_tag: String,
    pub cost_column: sql::CostColumn,
    pub plans: PlanTable,
}

impl Default for AllocationSettings {
    fn default() -> Self {
        Self {
            cost_center_tag: "userAttribute/costCenter".to_owned(),
            cost_column: sql::CostColumn::default(),
            plans: PlanTable::default(),
        }
    }
}

/// One result row of the allocation query: a (usage account, user, cost center) group.
/// `user_id` is empty for lines that name no user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupRow {
    pub account_id: String,
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
}

/// What one unit (usage account, user, cost center) cost in the period.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UserCost {
    pub account_id: String,
    pub user_id: String,
    /// Empty when the lines carried no cost-center tag (or an empty one).
    pub cost_center: String,
    /// Plan name from the plan table; empty when the user has no subscription line.
    pub plan: String,
    pub credits_used: Decimal,
    pub subscription_usd: Decimal,
    pub overage_usd: Decimal,
    pub other_usd: Decimal,
    pub total_usd: Decimal,
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
}

/// The allocation of one billing period.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub period: BillingPeriod,
    /// Sorted by (account, user, cost center).
    pub units: Vec<UserCost>,
    pub tax_usd: Decimal,
    /// Non-tax cost of lines that name no user (e.g. an enterprise discount line).
    pub unattributed_usd: Decimal,
    /// Every Kiro line of the period, summed on its own.
    pub kiro_total_usd: Decimal,
    /// The newest end time of an hourly credits line: how current the bill is. Seat, tax and
    /// discount lines span the whole month and say nothing about freshness.
    pub data_as_of: Option<DateTime<Utc>>,
    pub stats: QueryStats,
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

impl Allocation {
    /// Builds the allocation from the query's group rows (in any order).
    pub fn assemble(
        period: BillingPeriod,
        rows: Vec<GroupRow>,
        plans: &PlanTable,
        stats: QueryStats,
    ) -> Result<Self, ReconciliationError> {
        let mut units = Vec::with_capacity(rows.len());
        let (mut tax, mut unattributed, mut total) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
        let mut data_as_of = None;
        for row in rows {
            tax += row.tax_usd;
            total += row.all_cost_usd;
            data_as_of = data_as_of.max(row.usage_end_max);
            if row.user_id.is_empty() {
                unattributed += row.total_usd;
            } else if row.billed_lines > 0 {
                units.push(UserCost {
                    plan: row
                        .plan_usage_type
                        .as_deref()
                        .map(|u| plans.name_for_usage_type(u))
                        .unwrap_or_default(),
                    account_id: row.account_id,
                    user_id: row.user_id,
                    cost_center: row.cost_center,
                    credits_used: row.credits_used.normalize(),
                    subscription_usd: row.subscription_usd.normalize(),
                    overage_usd: row.overage_usd.normalize(),
                    other_usd: row.other_usd.normalize(),
                    total_usd: row.total_usd.normalize(),
                });
            }
        }
        units.sort();
        let allocation = Self {
            period,
            units,
            tax_usd: tax.normalize(),
            unattributed_usd: unattributed.normalize(),
            kiro_total_usd: total.normalize(),
            data_as_of,
            stats,
        };
        allocation.reconcile()?;
        Ok(allocation)
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
        let mut out: BTreeMap<&str, (Rollup, BTreeSet<&str>)> = BTreeMap::new();
        for u in &self.units {
            let (r, users) = out.entry(key(u)).or_default();
            users.insert(&u.user_id);
            r.credits_used += u.credits_used;
            r.subscription_usd += u.subscription_usd;
            r.overage_usd += u.overage_usd;
            r.other_usd += u.other_usd;
            r.total_usd += u.total_usd;
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

    /// Sorted user ids charged a subscription in more than one account.
    pub fn duplicate_subscriptions(&self) -> Vec<&str> {
        let mut per_account: BTreeMap<(&str, &str), Decimal> = BTreeMap::new();
        for u in &self.units {
            *per_account.entry((&u.user_id, &u.account_id)).or_default() += u.subscription_usd;
        }
        let mut accounts: BTreeMap<&str, usize> = BTreeMap::new();
        for ((user, _), paid) in per_account {
            if paid > Decimal::ZERO {
                *accounts.entry(user).or_default() += 1;
            }
        }
        accounts
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(u, _)| u)
            .collect()
    }

    /// Each seat's main cost center: of the (account, user)'s units, the one with most cost
    /// (the first in unit order on a tie). Included credits and savings count there.
    pub fn seat_cost_centers(&self) -> BTreeMap<(&str, &str), &str> {
        let mut out: BTreeMap<(&str, &str), (&str, Decimal)> = BTreeMap::new();
        for u in self.units.iter().filter(|u| !u.user_id.is_empty()) {
            let e = out
                .entry((&u.account_id, &u.user_id))
                .or_insert((&u.cost_center, u.total_usd));
            if u.total_usd > e.1 {
                *e = (&u.cost_center, u.total_usd);
            }
        }
        out.into_iter().map(|(k, (cc, _))| (k, cc)).collect()
    }

    /// Distinct users with a unit, per plan name ("" = no subscription line).
    pub fn users_by_plan(&self) -> BTreeMap<&str, usize> {
        let mut sets: BTreeMap<&str, BTreeSet<(&str, &str)>> = BTreeMap::new();
        for u in &self.units {
            sets.entry(&u.plan)
                .or_default()
                .insert((&u.account_id, &u.user_id));
        }
        sets.into_iter().map(|(p, s)| (p, s.len())).collect()
    }

    /// Sum over all units.
    pub fn totals(&self) -> Rollup {
        self.rollup_by(|_| "").remove("").unwrap_or_default()
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
            usage_end_max: None,
        }
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
