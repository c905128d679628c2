//! Amazon Q Developer Pro seats, read beside Kiro's from the same bill.
//!
//! Q Developer's IDE plugins and paid subscriptions reach end of support on 2027-04-30, and
//! organisations move people to Kiro meanwhile: a user who holds a Q Developer Pro seat and a
//! Kiro seat in the same month pays twice for one job. The bill writes Q Developer seats as
//! `line_item_product_code = 'AmazonQ'` lines of operation `number-q-dev-subscriptions`, the
//! user's Identity Center id in the resource id, as it does for Kiro (shared/facts; AWS's own
//! Q Developer chargeback sample groups those lines by `line_item_resource_id`).
//!
//! Q Developer cost is not Kiro cost: it is kept apart ([`QDeveloper`]), never in the Kiro
//! units, totals or reconciliation, and it reconciles with the bill's Q Developer lines on its
//! own: Σ seats' fees + unattributed + tax = every Q Developer seat line summed on its own.

use std::collections::{BTreeMap, HashSet};

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::period::BillingPeriod;

/// `line_item_product_code` of Amazon Q lines.
pub const PRODUCT_CODE: &str = "AmazonQ";

/// `line_item_operation` of Q Developer Pro seat lines (compared case-insensitively).
pub const SEAT_OPERATION: &str = "number-q-dev-subscriptions";

/// What the bill calls the seat, as the recommendations name it.
pub const PLAN_NAME: &str = "Q Developer Pro";

/// The day Q Developer's IDE plugins and paid subscriptions reach end of support (AWS docs).
pub fn end_of_support() -> NaiveDate {
    NaiveDate::from_ymd_opt(2027, 4, 30).unwrap_or_default()
}

/// One result row of the Q Developer query: a (usage account, user, cost center) group of Q
/// Developer seat lines. `user_id` is empty for lines that name no user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QRow {
    pub account_id: String,
    pub user_id: String,
    pub cost_center: String,
    /// Cost of the group's non-tax lines: seat fees, and their refunds and credits.
    pub fee_usd: Decimal,
    pub tax_usd: Decimal,
    /// Cost of all the group's lines, summed on its own (the reconciliation's reference).
    pub all_cost_usd: Decimal,
    /// Number of non-tax lines.
    pub billed_lines: i64,
}

/// A user's Q Developer Pro seat in one account, under one cost center.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct QSeat {
    pub account_id: String,
    pub user_id: String,
    /// Empty when the lines carried no cost-center tag.
    pub cost_center: String,
    /// What the period billed for it (tax apart).
    pub fee_usd: Decimal,
    /// The same user holds a Kiro seat in the period: one job paid twice.
    pub also_kiro: bool,
}

/// A period's Q Developer Pro seats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QDeveloper {
    /// Whether the seats were read at all (`allocation.q_developer`).
    pub read: bool,
    /// Sorted by (account, user, cost center).
    pub seats: Vec<QSeat>,
    pub tax_usd: Decimal,
    /// Non-tax cost of Q Developer seat lines that name no user.
    pub unattributed_usd: Decimal,
    /// Every Q Developer seat line of the period, summed on its own.
    pub total_usd: Decimal,
}

/// Q Developer figures of one cost center.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QRollup {
    /// Distinct users with a Q Developer seat.
    pub users: usize,
    pub fee_usd: Decimal,
    /// Distinct users who also hold a Kiro seat.
    pub duplicate_users: usize,
    /// What those users' Q Developer seats cost.
    pub duplicate_usd: Decimal,
}

/// The Q Developer books do not balance.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "Q Developer allocation for {period} does not reconcile: seats {seats} + unattributed {unattributed} + tax {tax} != Q Developer total {total}"
)]
pub struct QReconciliationError {
    pub period: BillingPeriod,
    pub seats: Decimal,
    pub unattributed: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
}

impl QDeveloper {
    /// The seats from the query's rows (in any order); `kiro_users` are the join keys
    /// ([`super::user_id::join_key`]) of the users who hold a Kiro seat in the period.
    pub fn assemble(
        period: BillingPeriod,
        rows: Vec<QRow>,
        kiro_users: &HashSet<String>,
    ) -> Result<Self, QReconciliationError> {
        let mut out = Self {
            read: true,
            ..Self::default()
        };
        let mut seats: BTreeMap<(String, String, String), Decimal> = BTreeMap::new();
        for row in rows {
            out.tax_usd += row.tax_usd;
            out.total_usd += row.all_cost_usd;
            if row.user_id.is_empty() {
                out.unattributed_usd += row.fee_usd;
            } else if row.billed_lines > 0 {
                *seats
                    .entry((row.account_id, row.user_id, row.cost_center))
                    .or_default() += row.fee_usd;
            }
            // A group of tax lines alone names no seat (no fee; its cost is in the tax).
        }
        out.seats = seats
            .into_iter()
            .map(|((account_id, user_id, cost_center), fee)| QSeat {
                also_kiro: kiro_users.contains(super::user_id::join_key_of(&user_id).as_ref()),
                account_id,
                user_id,
                cost_center,
                fee_usd: fee.normalize(),
            })
            .collect();
        out.tax_usd = out.tax_usd.normalize();
        out.unattributed_usd = out.unattributed_usd.normalize();
        out.total_usd = out.total_usd.normalize();
        out.reconcile(period)?;
        Ok(out)
    }

    /// Checks Σ seats' fees + unattributed + tax = Q Developer total, exactly.
    pub fn reconcile(&self, period: BillingPeriod) -> Result<(), QReconciliationError> {
        let seats = self.fee_usd();
        if seats + self.unattributed_usd + self.tax_usd == self.total_usd {
            Ok(())
        } else {
            Err(QReconciliationError {
                period,
                seats,
                unattributed: self.unattributed_usd,
                tax: self.tax_usd,
                total: self.total_usd,
            })
        }
    }

    /// What the seats cost (tax apart).
    pub fn fee_usd(&self) -> Decimal {
        self.seats.iter().map(|s| s.fee_usd).sum()
    }

    /// The seats of users who also hold a Kiro seat.
    pub fn duplicates(&self) -> impl Iterator<Item = &QSeat> {
        self.seats.iter().filter(|s| s.also_kiro)
    }

    /// Per cost center ("" = untagged), sorted by name.
    pub fn cost_centers(&self) -> BTreeMap<&str, QRollup> {
        let mut users: BTreeMap<&str, (HashSet<&str>, HashSet<&str>)> = BTreeMap::new();
        let mut out: BTreeMap<&str, QRollup> = BTreeMap::new();
        for s in &self.seats {
            let r = out.entry(&s.cost_center).or_default();
            let (all, dup) = users.entry(&s.cost_center).or_default();
            r.fee_usd += s.fee_usd;
            all.insert(&s.user_id);
            if s.also_kiro {
                r.duplicate_usd += s.fee_usd;
                dup.insert(&s.user_id);
            }
        }
        for (cc, (all, dup)) in users {
            if let Some(r) = out.get_mut(cc) {
                r.users = all.len();
                r.duplicate_users = dup.len();
            }
        }
        out
    }

    /// Gives untagged seats the cost center `of_user` names for their user (as the Kiro
    /// units get theirs); totals are unchanged.
    pub fn assign_untagged(&mut self, of_user: impl Fn(&str) -> Option<String>) {
        if !self.seats.iter().any(|s| s.cost_center.is_empty()) {
            return;
        }
        let mut merged: BTreeMap<(String, String, String), QSeat> = BTreeMap::new();
        for mut s in std::mem::take(&mut self.seats) {
            if s.cost_center.is_empty()
                && let Some(cc) = of_user(&s.user_id).filter(|cc| !cc.is_empty())
            {
                s.cost_center = cc;
            }
            let key = (
                s.account_id.clone(),
                s.user_id.clone(),
                s.cost_center.clone(),
            );
            match merged.entry(key) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(s);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let m = o.get_mut();
                    m.fee_usd = (m.fee_usd + s.fee_usd).normalize();
                }
            }
        }
        self.seats = merged.into_values().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(account: &str, user: &str, fee: i64, tax: i64) -> QRow {
        QRow {
            account_id: account.into(),
            user_id: user.into(),
            cost_center: "cc".into(),
            fee_usd: Decimal::from(fee),
            tax_usd: Decimal::from(tax),
            all_cost_usd: Decimal::from(fee + tax),
            billed_lines: i64::from(fee != 0),
        }
    }

    #[test]
    fn seats_reconcile_on_their_own_and_name_kiro_holders() {
        let p: BillingPeriod = "2026-11".parse().unwrap();
        let kiro: HashSet<String> = ["94482488-3041-7026-18f3-be45837cd0e4".to_owned()].into();
        let rows = vec![
            row("1", "94482488-3041-7026-18F3-BE45837CD0E4", 19, 2),
            row("1", "b", 19, 0),
            row("1", "", -3, 0),
            row("1", "t", 0, 1),
        ];
        let q = QDeveloper::assemble(p, rows, &kiro).unwrap();
        assert_eq!(q.seats.len(), 2, "a tax-only group is no seat");
        assert!(q.seats[0].also_kiro, "ids meet on their join key");
        assert!(!q.seats[1].also_kiro);
        assert_eq!(q.fee_usd(), Decimal::from(38));
        assert_eq!(q.tax_usd, Decimal::from(3));
        assert_eq!(q.unattributed_usd, Decimal::from(-3));
        assert_eq!(q.total_usd, Decimal::from(38));
        q.reconcile(p).unwrap();
        let cc = &q.cost_centers()["cc"];
        assert_eq!((cc.users, cc.duplicate_users), (2, 1));
        assert_eq!(cc.duplicate_usd, Decimal::from(19));
        let mut lost = row("1", "c", 19, 0);
        lost.all_cost_usd = Decimal::from(20);
        let e = QDeveloper::assemble(p, vec![lost], &kiro).unwrap_err();
        assert!(e.to_string().contains("does not reconcile"), "{e}");
    }
}
