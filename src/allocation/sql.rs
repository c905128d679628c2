//! The allocation query: one SQL template, rendered for the embedded engine (DataFusion) and
//! for Amazon Athena (Trino).
//!
//! The template does all the money: it scopes to Kiro lines of one billing period, attributes
//! each line to a user, a region and a cost center, classifies it (tax, seat fee, credits,
//! other; [`render`] says how) and sums per (usage account, region, user, cost center) as
//! DECIMAL(38, 10). Optional columns the export lacks are left out of the text. The files are scanned once:
//! the plan (the usage type of a seat's dearest seat-fee line in the month, the latest of equal
//! ones: an upgrade re-rates the month at the higher tier) is picked by a window over the
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
    /// Apache DataFusion: a map is read with the embedded engine's own [`MAP_VALUE`] function
    /// (`map_value(map, key)`, registered where the `sql` feature runs the template); the hive
    /// partition column keeps its directory name `BILLING_PERIOD`; parameters are `$1, $2, …`.
    DataFusion,
    /// Trino as run by Athena: `element_at` returns the value (NULL for a missing key; `m['k']`
    /// would fail); parameters are positional `?`.
    Trino,
}

/// The DataFusion function that reads one key of a map (the value, or NULL).
pub const MAP_VALUE: &str = "map_value";

/// The cost column the allocation sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
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

/// The CUR columns the query needs in every export, besides the cost column and the partition
/// column.
pub const REQUIRED_COLUMNS: &[&str] = &[
    "line_item_product_code",
    "line_item_usage_account_id",
    "line_item_line_item_type",
    "line_item_usage_type",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
    "line_item_usage_amount",
    "line_item_unblended_cost",
    "pricing_unit",
    "tags",
];

/// Columns the query reads when the export has them: AWS's own CID table has no
/// `line_item_user_identifier`, a narrow export may lack `line_item_operation`,
/// `product_region_code` or `product`, and `line_item_net_unblended_cost` exists only where an
/// account has a discount. `product` (a map holding every product attribute, by far the
/// widest column) is read only when `product_region_code` is not there.
pub const OPTIONAL_COLUMNS: &[&str] = &[
    "line_item_user_identifier",
    "line_item_resource_id",
    "line_item_operation",
    "product_region_code",
    "product",
    "line_item_net_unblended_cost",
];

/// Which optional columns an export has (learned from its files or its table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Columns {
    pub user_identifier: bool,
    pub resource_id: bool,
    pub operation: bool,
    pub region_code: bool,
    pub product: bool,
    pub net_unblended_cost: bool,
}

impl Default for Columns {
    /// Every optional column present.
    fn default() -> Self {
        Self {
            user_identifier: true,
            resource_id: true,
            operation: true,
            region_code: true,
            product: true,
            net_unblended_cost: true,
        }
    }
}

impl Columns {
    /// The optional columns among `names` (compared case-insensitively); an error naming both
    /// user columns when neither is there.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let names: Vec<String> = names.into_iter().map(str::to_ascii_lowercase).collect();
        let has = |c: &str| names.iter().any(|n| n == c);
        let c = Self {
            user_identifier: has("line_item_user_identifier"),
            resource_id: has("line_item_resource_id"),
            operation: has("line_item_operation"),
            region_code: has("product_region_code"),
            product: has("product"),
            net_unblended_cost: has("line_item_net_unblended_cost"),
        };
        if !c.user_identifier && !c.resource_id {
            return Err(
                "neither line_item_user_identifier nor line_item_resource_id is in the export: \
                 one of them is needed to tell users apart (export with \"Include resource IDs\")"
                    .to_owned(),
            );
        }
        Ok(c)
    }

    /// The optional columns that are missing, by name.
    pub fn missing(&self) -> Vec<&'static str> {
        let present = [
            self.user_identifier,
            self.resource_id,
            self.operation,
            self.region_code,
            self.product,
            self.net_unblended_cost,
        ];
        OPTIONAL_COLUMNS
            .iter()
            .zip(present)
            .filter(|(_, p)| !p)
            .map(|(c, _)| *c)
            .collect()
    }

    /// The columns the query reads: the required ones and the optional ones present.
    pub fn read(&self) -> Vec<&'static str> {
        let missing = self.missing();
        REQUIRED_COLUMNS
            .iter()
            .chain(OPTIONAL_COLUMNS)
            .filter(|c| !missing.contains(c))
            .filter(|c| !(self.region_code && **c == "product"))
            .copied()
            .collect()
    }
}

/// The result columns, in order ([`super::row::Col`]).
pub use super::row::RESULT_COLUMNS;

/// Operations whose lines are never credits or seats by default: AWS's own Kiro dashboard
/// drops `q-developer-snapshot` lines.
pub fn default_ignored_operations() -> Vec<String> {
    vec!["q-developer-snapshot".to_owned()]
}

/// What the query is about.
#[derive(Debug, Clone)]
pub struct QuerySpec<'a> {
    /// The table to read; for Athena `database.table` (validated identifiers).
    pub table: &'a str,
    /// Key in the `tags` map that holds the cost center, e.g. `userAttribute/costCenter`.
    pub cost_center_tag: &'a str,
    pub cost_column: CostColumn,
    pub period: BillingPeriod,
    /// The optional columns the export has.
    pub columns: Columns,
    /// Operations that are never credits or seats (compared case-insensitively).
    pub ignored_operations: &'a [String],
    /// Filter on the partition column; off when the files read were chosen for the period.
    pub period_filter: bool,
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

/// The first two CTEs every query over the lines shares: `lines` (Kiro lines of the period,
/// with what the allocation reads of them) and `attributed` (each line's user, region and
/// category). Parameters go through `param`.
#[allow(
    clippy::too_many_lines,
    reason = "SQL text: the two CTEs read top to bottom as the query Athena runs"
)]
fn line_ctes(
    dialect: Dialect,
    spec: &QuerySpec<'_>,
    product: Product,
    param: &mut dyn FnMut(String) -> String,
) -> String {
    let map_get = |map: &str, key: &str| match dialect {
        Dialect::DataFusion => format!("{MAP_VALUE}({map}, {key})"),
        Dialect::Trino => format!("element_at({map}, {key})"),
    };
    let tag = map_get("tags", &param(spec.cost_center_tag.to_owned()));
    let period_filter = period_predicate(dialect, spec, param);
    let c = &spec.columns;
    let user_column = |col: &str| format!("COALESCE({col}, '')");
    let from_resource = "CASE WHEN strpos(COALESCE(line_item_resource_id, ''), 'user/') > 0 \
                         THEN line_item_resource_id ELSE '' END";
    let principal = match (c.user_identifier, c.resource_id) {
        (true, true) => format!(
            "CASE WHEN {uid} <> '' THEN line_item_user_identifier ELSE {from_resource} END",
            uid = user_column("line_item_user_identifier")
        ),
        (true, false) => user_column("line_item_user_identifier"),
        (false, _) => from_resource.to_owned(),
    };
    let usage_type = "COALESCE(line_item_usage_type, '')";
    let prefix = format!(
        "CASE WHEN strpos({usage_type}, '-') > 0 \
         THEN substr({usage_type}, 1, strpos({usage_type}, '-') - 1) ELSE '' END"
    );
    let region = if c.region_code {
        format!("COALESCE(NULLIF(product_region_code, ''), {prefix})")
    } else if c.product {
        format!(
            "COALESCE(NULLIF({}, ''), {prefix})",
            map_get("product", "'region'")
        )
    } else {
        prefix
    };
    let operation = if c.operation {
        "lower(COALESCE(line_item_operation, ''))"
    } else {
        "''"
    };
    let cost = match spec.cost_column {
        CostColumn::NetUnblended if c.net_unblended_cost => {
            "COALESCE(line_item_net_unblended_cost, line_item_unblended_cost, 0)"
        }
        _ => "COALESCE(line_item_unblended_cost, 0)",
    };
    let ignored: Vec<String> = spec
        .ignored_operations
        .iter()
        .map(|o| param(o.to_ascii_lowercase()))
        .collect();
    let ignored = if ignored.is_empty() {
        String::new()
    } else {
        format!(
            "\n            WHEN operation IN ({}) THEN 'other'",
            ignored.join(", ")
        )
    };
    let table = spec.table;
    let scope = match product {
        Product::Kiro => "line_item_product_code = 'Kiro'".to_owned(),
        Product::QDeveloper => format!(
            "line_item_product_code = '{}' AND {operation} = '{}'",
            super::q_developer::PRODUCT_CODE,
            super::q_developer::SEAT_OPERATION
        ),
    };
    format!(
        r#"WITH lines AS (
    SELECT
        COALESCE(line_item_usage_account_id, '') AS account_id,
        {principal} AS principal,
        COALESCE({tag}, '') AS cost_center,
        {region} AS region,
        COALESCE(line_item_line_item_type, '') AS line_type,
        {usage_type} AS usage_type,
        {operation} AS operation,
        line_item_usage_start_date AS usage_start,
        line_item_usage_end_date AS usage_end,
        CAST(COALESCE(line_item_usage_amount, 0) AS DECIMAL(38, 10)) AS usage_amount,
        CAST({cost} AS DECIMAL(38, 10)) AS cost,
        lower(COALESCE(pricing_unit, '')) AS unit
    FROM {table}
    WHERE {period_filter}{scope}
),
attributed AS (
    SELECT
        account_id,
        region,
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
            WHEN line_type = 'Tax' THEN 'tax'{ignored}
            WHEN line_type IN ('Usage', 'FlatRateSubscription')
                AND (operation = 'credits' OR lower(usage_type) LIKE '%-credits' OR unit = 'credits')
                THEN 'credits'
            WHEN line_type = 'FlatRateSubscription' THEN 'subscription'
            ELSE 'other'
        END AS category,
        line_type,
        operation,
        unit
    FROM lines
)"#
    )
}

/// Whose lines a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Product {
    Kiro,
    /// Amazon Q Developer Pro seat lines: product `AmazonQ`, operation
    /// `number-q-dev-subscriptions` (in an export without the operation column, none: they
    /// cannot be told from Amazon Q's other lines, and the sources do not ask).
    QDeveloper,
}

/// `<partition column> = <period> AND `, or nothing when the files read were chosen for the
/// period already.
fn period_predicate(
    dialect: Dialect,
    spec: &QuerySpec<'_>,
    param: &mut dyn FnMut(String) -> String,
) -> String {
    if !spec.period_filter {
        return String::new();
    }
    let column = match dialect {
        Dialect::DataFusion => format!("\"{PARTITION_COLUMN}\""),
        Dialect::Trino => PARTITION_COLUMN.to_ascii_lowercase(),
    };
    format!("{column} = {} AND ", param(spec.period.to_string()))
}

/// A parameter writer for `dialect` that collects the values in placeholder order.
fn params_for(dialect: Dialect, params: &mut Vec<String>) -> impl FnMut(String) -> String + '_ {
    move |value: String| {
        params.push(value);
        match dialect {
            Dialect::DataFusion => format!("${}", params.len()),
            Dialect::Trino => "?".to_owned(),
        }
    }
}

/// The keys of the per-seat groups the allocation sums in before it picks the plan.
const GROUP_KEYS: &str = "account_id, region, user_id, cost_center, sub_type, sub_start";

/// The per-seat group's aggregates over `keyed` lines: name, expression (the embedded
/// engine's scan computes the same, `source::scan::Sums` and `source::scan::SeatFee`).
const GROUP_AGGREGATES: &[(&str, &str)] = &[
    (
        "sub_cost",
        "MAX(CASE WHEN category = 'subscription' THEN cost END)",
    ),
    (
        "full_fee",
        "MAX(CASE WHEN category = 'subscription' AND usage_amount = 1 THEN cost END)",
    ),
    (
        "last_seat_fee",
        "MAX(CASE WHEN category = 'subscription' THEN usage_start END)",
    ),
    (
        "credits_used",
        "SUM(CASE WHEN category = 'credits' THEN usage_amount ELSE 0 END)",
    ),
    (
        "subscription_usd",
        "SUM(CASE WHEN category = 'subscription' THEN cost ELSE 0 END)",
    ),
    (
        "overage_usd",
        "SUM(CASE WHEN category = 'credits' THEN cost ELSE 0 END)",
    ),
    (
        "other_usd",
        "SUM(CASE WHEN category = 'other' THEN cost ELSE 0 END)",
    ),
    (
        "total_usd",
        "SUM(CASE WHEN category <> 'tax' THEN cost ELSE 0 END)",
    ),
    (
        "tax_usd",
        "SUM(CASE WHEN category = 'tax' THEN cost ELSE 0 END)",
    ),
    ("all_cost_usd", "SUM(cost)"),
    (
        "billed_lines",
        "SUM(CASE WHEN category <> 'tax' THEN 1 ELSE 0 END)",
    ),
    (
        "usage_end_max",
        "MAX(CASE WHEN category = 'credits' THEN usage_end END)",
    ),
];

/// `keyed`: the attributed lines with their seat's usage type and start.
const KEYED: &str = r#"keyed AS (
    SELECT
        attributed.*,
        CASE WHEN category = 'subscription' AND user_id <> '' THEN usage_type END AS sub_type,
        CASE WHEN category = 'subscription' AND user_id <> '' THEN usage_start END AS sub_start
    FROM attributed
)"#;

/// The per-seat groups over `keyed`.
fn grouped_select() -> String {
    let aggregates = GROUP_AGGREGATES
        .iter()
        .map(|(name, expr)| format!("        {expr} AS {name}"))
        .collect::<Vec<_>>()
        .join(",\n");
    format!(
        "    SELECT\n        {GROUP_KEYS},\n{aggregates}\n    FROM keyed\n    GROUP BY {GROUP_KEYS}"
    )
}

/// The plan of each seat (a window over the groups) and the result rows, over `grouped`.
fn planned_and_result() -> String {
    let select = Col::ALL
        .iter()
        .map(|c| format!("    {}", c.select()))
        .collect::<Vec<_>>()
        .join(",\n");
    format!(
        r#"planned AS (
    SELECT
        grouped.*,
        FIRST_VALUE(sub_type) OVER (
            PARTITION BY account_id, region, user_id
            ORDER BY CASE WHEN sub_type IS NULL THEN 1 ELSE 0 END,
                sub_cost DESC NULLS LAST, sub_start DESC NULLS LAST, sub_type DESC
        ) AS plan_usage_type
    FROM grouped
)
SELECT
{select}
FROM planned
GROUP BY account_id, region, user_id, cost_center
ORDER BY account_id, region, user_id, cost_center"#
    )
}

/// Renders the allocation query.
///
/// A line's category, in this order: `Tax` lines are tax; lines of an ignored operation are
/// other; `Usage` or `FlatRateSubscription` lines with operation `Credits`, a usage type ending
/// in `-Credits` or pricing unit `Credits` (case-insensitive) are credits consumption; other
/// `FlatRateSubscription` lines are seat fees; the rest is other. The region of a line is
/// `product_region_code` (or `product['region']` in an export without that column), else the
/// usage type's prefix (mapped to a region name afterwards).
pub fn render(dialect: Dialect, spec: &QuerySpec<'_>) -> Rendered {
    let mut params = Vec::new();
    let lines = line_ctes(
        dialect,
        spec,
        Product::Kiro,
        &mut params_for(dialect, &mut params),
    );
    let sql = format!(
        "{lines},\n{KEYED},\ngrouped AS (\n{}\n),\n{}",
        grouped_select(),
        planned_and_result()
    );
    Rendered { sql, params }
}

/// The result columns of [`render_q_developer`], in order.
pub const Q_RESULT_COLUMNS: &[&str] = &[
    "account_id",
    "user_id",
    "cost_center",
    "fee_usd",
    "tax_usd",
    "all_cost_usd",
    "billed_lines",
];

/// Renders the Q Developer query: the period's Amazon Q Developer Pro seat lines (see
/// [`super::q_developer`]), each attributed to a user and a cost center by the same rules as
/// Kiro's lines, summed per (usage account, user, cost center): non-tax cost (`fee_usd`),
/// tax, all cost on its own and the non-tax lines.
pub fn render_q_developer(dialect: Dialect, spec: &QuerySpec<'_>) -> Rendered {
    over_lines(
        dialect,
        spec,
        Product::QDeveloper,
        "
SELECT
    account_id,
    user_id,
    cost_center,
    SUM(CASE WHEN line_type <> 'Tax' THEN cost ELSE 0 END) AS fee_usd,
    SUM(CASE WHEN line_type = 'Tax' THEN cost ELSE 0 END) AS tax_usd,
    SUM(cost) AS all_cost_usd,
    SUM(CASE WHEN line_type <> 'Tax' THEN 1 ELSE 0 END) AS billed_lines
FROM attributed
GROUP BY account_id, user_id, cost_center
ORDER BY account_id, user_id, cost_center",
    )
}

/// `select` (a query over the `attributed` lines) after the lines' CTEs of `product`.
fn over_lines(dialect: Dialect, spec: &QuerySpec<'_>, product: Product, select: &str) -> Rendered {
    let mut params = Vec::new();
    let lines = line_ctes(
        dialect,
        spec,
        product,
        &mut params_for(dialect, &mut params),
    );
    Rendered {
        sql: format!("{lines}{select}"),
        params,
    }
}

/// The result columns of [`render_daily`], in order.
pub const DAILY_RESULT_COLUMNS: &[&str] =
    &["account_id", "region", "user_id", "usage_day", "credits"];

/// Renders the daily query ([`super::daily`]): the period's credits lines, attributed and
/// classified as [`render`] does, summed per (usage account, region, user, day of the line's
/// start in UTC); lines that name no user or have no start are left out.
pub fn render_daily(dialect: Dialect, spec: &QuerySpec<'_>) -> Rendered {
    over_lines(
        dialect,
        spec,
        Product::Kiro,
        "
SELECT
    account_id,
    region,
    user_id,
    CAST(usage_start AS DATE) AS usage_day,
    SUM(usage_amount) AS credits
FROM attributed
WHERE category = 'credits' AND user_id <> '' AND usage_start IS NOT NULL
GROUP BY account_id, region, user_id, CAST(usage_start AS DATE)
ORDER BY account_id, region, user_id, usage_day",
    )
}

/// What `inspect` asks of a period's Kiro lines: per facet (`line_type`, `operation`,
/// `pricing_unit`, `usage_type`, `seat_usage_type`, `tag_key`, and `other`, the lines the
/// classification put in other), each value with its lines and cost.
pub fn render_inspect(dialect: Dialect, spec: &QuerySpec<'_>) -> Rendered {
    let mut params = Vec::new();
    let mut param = params_for(dialect, &mut params);
    let lines = line_ctes(dialect, spec, Product::Kiro, &mut param);
    // The tag keys present, read from the table itself (the lines CTE keeps only the one key).
    let filter = period_predicate(dialect, spec, &mut param);
    let table = spec.table;
    let keys = match dialect {
        Dialect::DataFusion => format!(
            "SELECT 'tag_key' AS facet, k AS value, COUNT(*) AS lines, CAST(0 AS DECIMAL(38, 10)) AS cost \
             FROM (SELECT unnest(map_keys(tags)) AS k FROM {table} \
             WHERE {filter}line_item_product_code = 'Kiro') GROUP BY k"
        ),
        Dialect::Trino => format!(
            "SELECT 'tag_key' AS facet, k AS value, COUNT(*) AS lines, CAST(0 AS DECIMAL(38, 10)) AS cost \
             FROM {table} CROSS JOIN UNNEST(map_keys(tags)) AS t (k) \
             WHERE {filter}line_item_product_code = 'Kiro' GROUP BY k"
        ),
    };
    let facet = |name: &str, expr: &str, filter: &str| {
        format!(
            "SELECT '{name}' AS facet, {expr} AS value, COUNT(*) AS lines, SUM(cost) AS cost \
             FROM attributed{filter} GROUP BY {expr}"
        )
    };
    let other = "line_type || ' | ' || operation || ' | ' || unit || ' | ' || usage_type";
    let sql = [
        facet("line_type", "line_type", ""),
        facet("operation", "operation", ""),
        facet("pricing_unit", "unit", ""),
        facet("usage_type", "usage_type", ""),
        facet(
            "seat_usage_type",
            "usage_type",
            " WHERE category = 'subscription'",
        ),
        facet("other", other, " WHERE category = 'other'"),
        keys,
    ]
    .join("\nUNION ALL\n");
    drop(param);
    Rendered {
        sql: format!("{lines}\n{sql}\nORDER BY facet, lines DESC, value"),
        params,
    }
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
            columns: Columns::default(),
            ignored_operations: &[],
            period_filter: true,
        }
    }

    #[test]
    fn dialects_differ_only_in_their_slots() {
        let df = render(Dialect::DataFusion, &spec());
        let trino = render(Dialect::Trino, &spec());
        assert_eq!(df.params, vec!["userAttribute/costCenter", "2026-10"]);
        assert_eq!(trino.params, df.params);
        assert!(df.sql.contains("map_value(tags, $1)"));
        assert!(df.sql.contains("\"BILLING_PERIOD\" = $2"));
        assert!(trino.sql.contains("element_at(tags, ?)"));
        assert!(trino.sql.contains("billing_period = ?"));
        assert!(
            !trino.sql.contains("tags["),
            "Trino fails on a missing key with m['k']"
        );
        let normalise = |s: &str| {
            s.replace("map_value(tags, $1)", "TAG")
                .replace("element_at(tags, ?)", "TAG")
                .replace("map_value(product, 'region')", "REGION")
                .replace("element_at(product, 'region')", "REGION")
                .replace("\"BILLING_PERIOD\" = $2", "PERIOD")
                .replace("billing_period = ?", "PERIOD")
        };
        assert_eq!(normalise(&df.sql), normalise(&trino.sql));
    }

    #[test]
    fn optional_columns_are_left_out_and_ignored_operations_are_parameters() {
        let ignored = ["q-developer-snapshot".to_owned(), "Other-OP".to_owned()];
        let mut s = spec();
        s.ignored_operations = &ignored;
        s.period_filter = false;
        s.cost_column = CostColumn::NetUnblended;
        let all = render(Dialect::DataFusion, &s);
        assert!(
            all.sql
                .contains("COALESCE(line_item_net_unblended_cost, line_item_unblended_cost, 0)")
        );
        assert_eq!(
            all.params,
            [
                "userAttribute/costCenter",
                "q-developer-snapshot",
                "other-op"
            ]
        );
        assert!(all.sql.contains("WHEN operation IN ($2, $3) THEN 'other'"));
        assert!(!all.sql.contains("BILLING_PERIOD"));
        for c in OPTIONAL_COLUMNS.iter().filter(|c| **c != "product") {
            assert!(all.sql.contains(c), "{c}");
        }
        // The product map, the widest column, only when the region code is not there.
        assert!(!all.sql.contains("map_value(product"));
        assert!(!s.columns.read().contains(&"product"));
        let mut no_code = s.clone();
        no_code.columns.region_code = false;
        let by_map = render(Dialect::DataFusion, &no_code);
        assert!(by_map.sql.contains("map_value(product, 'region')"));
        assert!(!by_map.sql.contains("product_region_code"));
        // A CID-shaped export: no user identifier, no operation, no product, no net cost.
        s.columns = Columns::from_names(
            REQUIRED_COLUMNS
                .iter()
                .copied()
                .chain(["line_item_resource_id"]),
        )
        .unwrap();
        let cid = render(Dialect::DataFusion, &s);
        for c in [
            "line_item_user_identifier",
            "line_item_operation",
            "product_region_code",
            "map_value(product",
            "line_item_net_unblended_cost",
        ] {
            assert!(!cid.sql.contains(c), "{c} is not in the export");
        }
        assert!(cid.sql.contains("line_item_resource_id"));
        assert_eq!(
            s.columns.missing(),
            [
                "line_item_user_identifier",
                "line_item_operation",
                "product_region_code",
                "product",
                "line_item_net_unblended_cost"
            ]
        );
        let e = Columns::from_names(REQUIRED_COLUMNS.iter().copied()).unwrap_err();
        assert!(
            e.contains("line_item_user_identifier") && e.contains("line_item_resource_id"),
            "{e}"
        );
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
