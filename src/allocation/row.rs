//! The allocation query's result, typed: one enum names every result column (its name, what
//! it holds and the aggregate that selects it), and one builder turns a row's cells into a
//! [`GroupRow`] whatever order an engine delivers them in. Both engines decode through it, so
//! a column added to the query is a variant here, and the compiler finds every place that
//! must learn it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::GroupRow;

/// The result columns, in SELECT order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    AccountId,
    Region,
    UserId,
    CostCenter,
    PlanUsageType,
    CreditsUsed,
    SubscriptionUsd,
    OverageUsd,
    OtherUsd,
    TotalUsd,
    TaxUsd,
    AllCostUsd,
    BilledLines,
    UsageEndMax,
    /// The seat's monthly fee as billed on a full-month seat line of its plan, if any.
    PlanFeeUsd,
    /// Start of the seat's latest seat-fee line (fees dated on the 1st, or spread daily).
    LastSeatFee,
    /// How many seat-fee lines (by start) the group has: one a month, or one a day.
    SeatFeeLines,
}

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// DECIMAL(38, 10) amounts.
    Money,
    /// A count of lines.
    Count,
    /// A UTC timestamp.
    Time,
}

/// How many result columns there are.
pub const COLUMNS: usize = 17;

impl Col {
    /// Every column, in SELECT order.
    pub const ALL: [Col; COLUMNS] = [
        Col::AccountId,
        Col::Region,
        Col::UserId,
        Col::CostCenter,
        Col::PlanUsageType,
        Col::CreditsUsed,
        Col::SubscriptionUsd,
        Col::OverageUsd,
        Col::OtherUsd,
        Col::TotalUsd,
        Col::TaxUsd,
        Col::AllCostUsd,
        Col::BilledLines,
        Col::UsageEndMax,
        Col::PlanFeeUsd,
        Col::LastSeatFee,
        Col::SeatFeeLines,
    ];

    /// The column's name in the result.
    pub const fn name(self) -> &'static str {
        match self {
            Col::AccountId => "account_id",
            Col::Region => "region",
            Col::UserId => "user_id",
            Col::CostCenter => "cost_center",
            Col::PlanUsageType => "plan_usage_type",
            Col::CreditsUsed => "credits_used",
            Col::SubscriptionUsd => "subscription_usd",
            Col::OverageUsd => "overage_usd",
            Col::OtherUsd => "other_usd",
            Col::TotalUsd => "total_usd",
            Col::TaxUsd => "tax_usd",
            Col::AllCostUsd => "all_cost_usd",
            Col::BilledLines => "billed_lines",
            Col::UsageEndMax => "usage_end_max",
            Col::PlanFeeUsd => "plan_fee_usd",
            Col::LastSeatFee => "last_seat_fee",
            Col::SeatFeeLines => "seat_fee_lines",
        }
    }

    pub const fn kind(self) -> Kind {
        match self {
            Col::AccountId | Col::Region | Col::UserId | Col::CostCenter | Col::PlanUsageType => {
                Kind::Text
            }
            Col::CreditsUsed
            | Col::SubscriptionUsd
            | Col::OverageUsd
            | Col::OtherUsd
            | Col::TotalUsd
            | Col::TaxUsd
            | Col::AllCostUsd
            | Col::PlanFeeUsd => Kind::Money,
            Col::BilledLines | Col::SeatFeeLines => Kind::Count,
            Col::UsageEndMax | Col::LastSeatFee => Kind::Time,
        }
    }

    /// The expression the final SELECT computes the column with, over the per-plan groups.
    pub fn select(self) -> String {
        match self {
            Col::AccountId | Col::Region | Col::UserId | Col::CostCenter => self.name().to_owned(),
            Col::PlanUsageType | Col::UsageEndMax | Col::LastSeatFee => {
                format!("MAX({0}) AS {0}", self.name())
            }
            Col::SeatFeeLines => "COUNT(sub_start) AS seat_fee_lines".to_owned(),
            Col::PlanFeeUsd => {
                "MAX(CASE WHEN sub_type = plan_usage_type THEN full_fee END) AS plan_fee_usd"
                    .to_owned()
            }
            _ => format!("SUM({0}) AS {0}", self.name()),
        }
    }
}

/// The result columns' names, in SELECT order.
pub const RESULT_COLUMNS: [&str; COLUMNS] = {
    let mut out = [""; COLUMNS];
    let mut i = 0;
    while i < COLUMNS {
        out[i] = Col::ALL[i].name();
        i += 1;
    }
    out
};

/// One cell of a result row, as an engine decoded it (`None`: SQL NULL).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(Option<String>),
    Money(Option<Decimal>),
    Count(Option<i64>),
    Time(Option<DateTime<Utc>>),
}

/// A cell that does not fit its column: a programming error in an engine's decoder.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("result column {column}: expected {expected:?}, the engine decoded {found:?}")]
pub struct CellError {
    pub column: &'static str,
    pub expected: Kind,
    pub found: Cell,
}

/// Builds one [`GroupRow`] from its cells. NULL text is empty (the plan stays `None`), NULL
/// amounts and counts are 0.
#[derive(Debug, Clone, Default)]
pub struct RowBuilder {
    row: GroupRow,
}

impl RowBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets column `col` to `cell`.
    pub fn set(&mut self, col: Col, cell: Cell) -> Result<&mut Self, CellError> {
        let r = &mut self.row;
        match (col, cell) {
            (Col::PlanUsageType, Cell::Text(v)) => r.plan_usage_type = v,
            (Col::AccountId, Cell::Text(v)) => r.account_id = v.unwrap_or_default(),
            (Col::Region, Cell::Text(v)) => r.region = v.unwrap_or_default(),
            (Col::PlanFeeUsd, Cell::Money(v)) => r.plan_fee_usd = v,
            (Col::LastSeatFee, Cell::Time(v)) => r.last_seat_fee = v,
            (Col::UserId, Cell::Text(v)) => r.user_id = v.unwrap_or_default(),
            (Col::CostCenter, Cell::Text(v)) => r.cost_center = v.unwrap_or_default(),
            (Col::BilledLines, Cell::Count(v)) => r.billed_lines = v.unwrap_or(0),
            (Col::SeatFeeLines, Cell::Count(v)) => r.seat_fee_lines = v.unwrap_or(0),
            (Col::UsageEndMax, Cell::Time(v)) => r.usage_end_max = v,
            (col, Cell::Money(v)) if col.kind() == Kind::Money => {
                let v = v.unwrap_or(Decimal::ZERO);
                match col {
                    Col::CreditsUsed => r.credits_used = v,
                    Col::SubscriptionUsd => r.subscription_usd = v,
                    Col::OverageUsd => r.overage_usd = v,
                    Col::OtherUsd => r.other_usd = v,
                    Col::TotalUsd => r.total_usd = v,
                    Col::TaxUsd => r.tax_usd = v,
                    _ => r.all_cost_usd = v,
                }
            }
            (col, found) => {
                return Err(CellError {
                    column: col.name(),
                    expected: col.kind(),
                    found,
                });
            }
        }
        Ok(self)
    }

    /// The row, with what was set (unset columns as NULL).
    pub fn finish(&mut self) -> GroupRow {
        std::mem::take(&mut self.row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_is_set_by_its_kind_and_a_wrong_kind_is_named() {
        let mut b = RowBuilder::new();
        for (i, col) in Col::ALL.into_iter().enumerate() {
            let cell = match col.kind() {
                Kind::Text => Cell::Text(Some(col.name().to_owned())),
                Kind::Money => Cell::Money(Some(Decimal::from(i as i64))),
                Kind::Count => Cell::Count(Some(7)),
                Kind::Time => Cell::Time(DateTime::from_timestamp(1_700_000_000, 0)),
            };
            b.set(col, cell).unwrap();
        }
        let r = b.finish();
        assert_eq!(
            (
                r.account_id.as_str(),
                r.region.as_str(),
                r.user_id.as_str(),
                r.cost_center.as_str()
            ),
            ("account_id", "region", "user_id", "cost_center")
        );
        assert_eq!(r.plan_usage_type.as_deref(), Some("plan_usage_type"));
        let money = [
            r.credits_used,
            r.subscription_usd,
            r.overage_usd,
            r.other_usd,
            r.total_usd,
            r.tax_usd,
            r.all_cost_usd,
        ];
        assert_eq!(money, [5, 6, 7, 8, 9, 10, 11].map(Decimal::from));
        assert_eq!(r.plan_fee_usd, Some(Decimal::from(14)));
        assert!(r.last_seat_fee.is_some());
        assert_eq!((r.billed_lines, r.seat_fee_lines), (7, 7));
        assert!(r.usage_end_max.is_some());
        let e = RowBuilder::new()
            .set(Col::TaxUsd, Cell::Text(Some("x".into())))
            .unwrap_err();
        assert!(e.to_string().contains("tax_usd"), "{e}");
        assert_eq!(RESULT_COLUMNS[Col::UsageEndMax as usize], "usage_end_max");
    }
}
