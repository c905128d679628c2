//! The allocation query: one SQL template, rendered for the embedded engine (DataFusion) and
//! for Amazon Athena (Trino).
//!
//! The template does all the money: it scopes to Kiro lines of one billing period, attributes
//! each line to a user and a cost center, classifies it (tax, subscription, credits, other) and
//! sums per (usage account, user, cost center) as DECIMAL(38, 10). The files are scanned once:
//! the plan (the usage type of a user's latest subscription line) is picked by a window over the
//! grouped rows, not by a second pass over the lines, since neither engine materialises a CTE
//! that is read twice. The dialects differ only in
//! the slots below: map access, the partition column's name and how parameters are written.
//! Values that come from users (the period and the tag key) are passed as parameters, never
//! spliced into the text; identifiers (table, cost column) come from closed sets or are
//! validated by [`validate_identifier`].

use super::row::Col;
use crate::period::{BillingPeriod, PARTITION_COLUMN};
use serde::{Deserialize, Serialize};

/// Which SQL engine the text is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Apache DataFusion: `element_at` on a map returns a list; the hive partition column keeps
    /// its directory name `BILLING_PERIOD`; parameters are `$1, $2, …`.
    DataFusion,
    /// Trino as run by Athena: `element_at` returns the value (NULL for a missing key; `m['k']`
    /// would fail); parameters are positional `?`.
    Trino,
}

/// The cost column the allocation sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CostColumn {
    /// `line_item_unblended_cost`: what was billed before discounts.
    #[default]
    #[serde(rename = "line_item_unblended_cost")]
    Unblended,
    /// `line_item_net_unblended_cost`: after discounts, when the export carries it.
    #[serde(rename = "line_item_net_unblended_cost")]
    NetUnblended,
}

impl CostColumn {
    pub fn column(self) -> &'static str {
        match self {
            Self::Unblended => "line_item_unblended_cost",
            Self::NetUnblended => "line_item_net_unblended_cost",
        }
    }
}

/// The CUR columns the query reads, besides the cost column and the partition column.
pub const NEEDED_COLUMNS: &[&str] = &[
    "line_item_product_code",
    "line_item_usage_account_id",
    "line_item_user_identifier",
    "line_item_resource_id",
    "line_item_line_item_type",
    "line_item_usage_type",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_usage_amount",
    "pricing_unit",
    "tags",
];

/// The result columns, in order ([`super::row::Col`]).
pub use super::row::RESULT_COLUMNS;

/// What the query is about.
#[derive(Debug, Clone)]
pub struct QuerySpec<'a> {
    /// The table to read; for Athena `database.table` (validated identifiers).
    pub table: &'a str,
    /// Key in the `tags` map that holds the cost center, e.g. `userAttribute/costCenter`.
    pub cost_center_tag: &'a str,
    pub cost_column: CostColumn,
    pub period: BillingPeriod,
}

/// SQL text with its parameters, in placeholder order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub sql: String,
    pub params: Vec<String>,
}

/// A table or database name that may be placed in SQL text: ASCII letters, digits and `_`,
/// not starting with a digit, optionally `schema.table`.
pub fn validate_identifier(name: &str) -> Result<(), String> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 255
            && !p.starts_with(|c: char| c.is_ascii_digit())
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() <= 2 && parts.iter().all(|p| ok_part(p)) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid table name: use letters, digits and '_' (optionally database.table)"
        ))
    }
}

/// A cost allocation tag key as AWS allows it: letters, digits, spaces and `_ . : / = + - @`,
/// 1 to 512 characters (the `userAttribute/` prefix included).
pub fn validate_tag_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || " _.:/=+-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a valid tag key: use letters, digits, spaces and _ . : / = + - @"
        ))
    }
}

/// Renders the allocation query.
pub fn render(dialect: Dialect, spec: &QuerySpec<'_>) -> Rendered {
    let mut params = Vec::new();
    let mut param = |value: String| {
        params.push(value);
        match dialect {
            Dialect::DataFusion => format!("${}", params.len()),
            Dialect::Trino => "?".to_owned(),
        }
    };
    let tag_param = param(spec.cost_center_tag.to_owned());
    let tag = match dialect {
        Dialect::DataFusion => format!("element_at(tags, {tag_param})[1]"),
        Dialect::Trino => format!("element_at(tags, {tag_param})"),
    };
    let period_column = match dialect {
        Dialect::DataFusion => format!("\"{PARTITION_COLUMN}\""),
        Dialect::Trino => PARTITION_COLUMN.to_ascii_lowercase(),
    };
    let period = param(spec.period.to_string());
    let table = spec.table;
    let cost = spec.cost_column.column();
    let select = Col::ALL
        .iter()
        .map(|c| format!("    {}", c.select()))
        .collect::<Vec<_>>()
        .join(",\n");
    let sql = format!(
        r#"WITH lines AS (
    SELECT
        COALESCE(line_item_usage_account_id, '') AS account_id,
        CASE
            WHEN COALESCE(line_item_user_identifier, '') <> '' THEN line_item_user_identifier
            WHEN strpos(COALESCE(line_item_resource_id, ''), 'user/') > 0 THEN line_item_resource_id
            ELSE ''
        END AS principal,
        COALESCE({tag}, '') AS cost_center,
        COALESCE(line_item_line_item_type, '') AS line_type,
        COALESCE(line_item_usage_type, '') AS usage_type,
        line_item_usage_start_date AS usage_start,
        line_item_usage_end_date AS usage_end,
        CAST(COALESCE(line_item_usage_amount, 0) AS DECIMAL(38, 10)) AS usage_amount,
        CAST(COALESCE({cost}, 0) AS DECIMAL(38, 10)) AS cost,
        (COALESCE(pricing_unit, '') = 'Credits'
            OR (COALESCE(pricing_unit, '') = '' AND COALESCE(line_item_usage_type, '') LIKE '%-Credits')) AS is_credits
    FROM {table}
    WHERE {period_column} = {period} AND line_item_product_code = 'Kiro'
),
attributed AS (
    SELECT
        account_id,
        CASE
            WHEN strpos(principal, 'user/') > 0 THEN substr(principal, strpos(principal, 'user/') + 5)
            ELSE principal
        END AS user_id,
        cost_center,
        usage_type,
        usage_start,
        usage_end,
        usage_amount,
        cost,
        CASE
            WHEN line_type = 'Tax' THEN 'tax'
            WHEN line_type = 'FlatRateSubscription' THEN 'subscription'
            WHEN line_type = 'Usage' AND is_credits THEN 'credits'
            ELSE 'other'
        END AS category
    FROM lines
),
keyed AS (
    SELECT
        attributed.*,
        CASE WHEN category = 'subscription' AND user_id <> '' THEN usage_type END AS sub_type,
        CASE WHEN category = 'subscription' AND user_id <> '' THEN usage_start END AS sub_start
    FROM attributed
),
grouped AS (
    SELECT
        account_id,
        user_id,
        cost_center,
        sub_type,
        sub_start,
        MAX(CASE WHEN category = 'subscription' THEN cost END) AS sub_cost,
        SUM(CASE WHEN category = 'credits' THEN usage_amount ELSE 0 END) AS credits_used,
        SUM(CASE WHEN category = 'subscription' THEN cost ELSE 0 END) AS subscription_usd,
        SUM(CASE WHEN category = 'credits' THEN cost ELSE 0 END) AS overage_usd,
        SUM(CASE WHEN category = 'other' THEN cost ELSE 0 END) AS other_usd,
        SUM(CASE WHEN category <> 'tax' THEN cost ELSE 0 END) AS total_usd,
        SUM(CASE WHEN category = 'tax' THEN cost ELSE 0 END) AS tax_usd,
        SUM(cost) AS all_cost_usd,
        SUM(CASE WHEN category <> 'tax' THEN 1 ELSE 0 END) AS billed_lines,
        MAX(CASE WHEN category = 'credits' THEN usage_end END) AS usage_end_max
    FROM keyed
    GROUP BY account_id, user_id, cost_center, sub_type, sub_start
),
planned AS (
    SELECT
        grouped.*,
        FIRST_VALUE(sub_type) OVER (
            PARTITION BY account_id, user_id
            ORDER BY CASE WHEN sub_type IS NULL THEN 1 ELSE 0 END,
                sub_start DESC NULLS LAST, sub_cost DESC NULLS LAST, sub_type DESC
        ) AS plan_usage_type
    FROM grouped
)
SELECT
{select}
FROM planned
GROUP BY account_id, user_id, cost_center
ORDER BY account_id, user_id, cost_center"#
    );
    Rendered { sql, params }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> QuerySpec<'static> {
        QuerySpec {
            table: "cur",
            cost_center_tag: "userAttribute/costCenter",
            cost_column: CostColumn::Unblended,
            period: "2026-10".parse().unwrap(),
        }
    }

    #[test]
    fn dialects_differ_only_in_their_slots() {
        let df = render(Dialect::DataFusion, &spec());
        let trino = render(Dialect::Trino, &spec());
        assert_eq!(df.params, vec!["userAttribute/costCenter", "2026-10"]);
        assert_eq!(trino.params, df.params);
        assert!(df.sql.contains("element_at(tags, $1)[1]"));
        assert!(df.sql.contains("\"BILLING_PERIOD\" = $2"));
        assert!(trino.sql.contains("element_at(tags, ?)"));
        assert!(trino.sql.contains("billing_period = ?"));
        assert!(
            !trino.sql.contains("tags["),
            "Trino fails on a missing key with m['k']"
        );
        let normalise = |s: &str| {
            s.replace("element_at(tags, $1)[1]", "TAG")
                .replace("element_at(tags, ?)", "TAG")
                .replace("\"BILLING_PERIOD\" = $2", "PERIOD")
                .replace("billing_period = ?", "PERIOD")
        };
        assert_eq!(normalise(&df.sql), normalise(&trino.sql));
    }

    #[test]
    fn user_values_never_reach_the_text() {
        let mut s = spec();
        s.cost_center_tag = "userAttribute/x') OR 1=1 --";
        let r = render(Dialect::Trino, &s);
        assert!(!r.sql.contains("OR 1=1"));
        assert!(validate_tag_key(s.cost_center_tag).is_err());
        assert!(validate_tag_key("userAttribute/costCenter").is_ok());
        assert!(validate_tag_key("resourceTags/user:Cost Center@x").is_ok());
        assert!(validate_identifier("cur.kiro_data").is_ok());
        assert!(validate_identifier("cur;drop").is_err());
        assert!(validate_identifier("a.b.c").is_err());
        assert!(validate_identifier("1cur").is_err());
    }

    #[test]
    fn result_columns_are_what_the_query_selects() {
        let r = render(Dialect::DataFusion, &spec());
        let select = r.sql.rsplit_once("\nSELECT\n").unwrap().1;
        for c in RESULT_COLUMNS {
            assert!(
                select.contains(&format!("    {c},\n")) || select.contains(&format!("AS {c}")),
                "{c}"
            );
        }
    }
}
