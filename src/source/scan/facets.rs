//! `inspect` by the scan: what [`crate::allocation::sql::render_inspect`] asks of a period's
//! Kiro lines (per facet, each value with its lines and cost), read from the files without a
//! query engine.
//!
//! A file's Kiro lines are first counted per distinct (line type, usage type, operation,
//! pricing unit), with their cost; the facets are made of those combinations once all files
//! are read, so each line's strings are looked at once and classified once per combination.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Decimal128Type;
use futures::StreamExt;
use object_store::ObjectStore;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, ArrowReaderMetadata, RowFilter};
use rust_decimal::Decimal;

use super::{
    BATCH_ROWS, Category, LineType, ScanError, ScanSpec, Strings, coalesce, decimals, is_read,
    money, row_groups_read, with_dictionaries,
};
use crate::allocation::sql::CostColumn;
use object_store::path::Path as Key;

/// (line type, usage type, operation, pricing unit) as the file spells them.
type Combination = (String, String, String, String);

/// What a file's (or several files') Kiro lines carry: lines and cost (fixed point at the
/// scan's scale) per combination, and lines per tag key.
#[derive(Debug, Default)]
pub struct Facets {
    combinations: HashMap<Combination, (i64, i128)>,
    tag_keys: HashMap<String, i64>,
}

/// One value of a facet: its lines and cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FacetValue {
    pub facet: &'static str,
    pub value: String,
    pub lines: i64,
    pub cost: Decimal,
}

fn add_to(sum: &mut (i64, i128), lines: i64, cost: i128) -> Result<(), ScanError> {
    sum.0 += lines;
    sum.1 = sum.1.checked_add(cost).ok_or_else(|| ScanError::Column {
        column: "line_item_unblended_cost",
        message: "the sum of the Kiro lines' cost overflows DECIMAL(38, 10)".into(),
    })?;
    Ok(())
}

impl Facets {
    /// Adds `other`'s lines to these.
    pub fn merge(&mut self, other: Facets) -> Result<(), ScanError> {
        for (k, (lines, cost)) in other.combinations {
            add_to(self.combinations.entry(k).or_default(), lines, cost)?;
        }
        for (k, lines) in other.tag_keys {
            *self.tag_keys.entry(k).or_default() += lines;
        }
        Ok(())
    }

    /// Each facet's values, as the template orders them: by facet, most lines first, then by
    /// value. The facets and their rules are the template's: `line_type`, `operation` (lower
    /// case), `pricing_unit` (lower case), `usage_type`, `seat_usage_type` (of the lines
    /// classified as subscription), `other` (`line type | operation | unit | usage type` of
    /// the lines classified as other) and `tag_key` (lines carrying each key, no cost).
    pub fn values(&self, spec: &ScanSpec) -> Result<Vec<FacetValue>, ScanError> {
        let mut by: HashMap<(&'static str, String), (i64, i128)> = HashMap::new();
        for ((line_type, usage_type, operation, unit), &(lines, cost)) in &self.combinations {
            let operation = operation.to_lowercase();
            let unit = unit.to_lowercase();
            let category = Category::of(
                LineType::of(Some(line_type)),
                spec.ignored_operations.contains(&operation),
                operation == "credits"
                    || usage_type.to_lowercase().ends_with("-credits")
                    || unit == "credits",
            );
            let mut facets = vec![
                ("line_type", line_type.clone()),
                ("operation", operation.clone()),
                ("pricing_unit", unit.clone()),
                ("usage_type", usage_type.clone()),
            ];
            match category {
                Category::Subscription => facets.push(("seat_usage_type", usage_type.clone())),
                Category::Other => facets.push((
                    "other",
                    format!("{line_type} | {operation} | {unit} | {usage_type}"),
                )),
                Category::Tax | Category::Credits => {}
            }
            for key in facets {
                add_to(by.entry(key).or_default(), lines, cost)?;
            }
        }
        let mut out = by
            .into_iter()
            .map(|((facet, value), (lines, cost))| {
                Ok(FacetValue {
                    facet,
                    value,
                    lines,
                    cost: money(cost)?,
                })
            })
            .collect::<Result<Vec<_>, ScanError>>()?;
        out.extend(self.tag_keys.iter().map(|(k, &lines)| FacetValue {
            facet: "tag_key",
            value: k.clone(),
            lines,
            cost: Decimal::ZERO,
        }));
        out.sort_by(|a, b| (a.facet, b.lines, &a.value).cmp(&(b.facet, a.lines, &b.value)));
        Ok(out)
    }

    /// Adds the Kiro lines of `b` (columns: line type, usage type, pricing unit, the cost
    /// columns, tags, and the operation where the export has it).
    fn add(&mut self, b: &RecordBatch, spec: &ScanSpec) -> Result<(), ScanError> {
        let col = |name: &'static str| {
            b.column_by_name(name).ok_or(ScanError::Column {
                column: name,
                message: "not read".into(),
            })
        };
        let line_type = Strings::of(col("line_item_line_item_type")?, "line_item_line_item_type")?;
        let usage_type = Strings::of(col("line_item_usage_type")?, "line_item_usage_type")?;
        let unit = Strings::of(col("pricing_unit")?, "pricing_unit")?;
        let operation = match b.column_by_name("line_item_operation") {
            Some(op) if spec.columns.operation => Some(Strings::of(op, "line_item_operation")?),
            _ => None,
        };
        // COALESCE(net, unblended, 0), as the allocation reads the cost.
        let cost_column = match b.column_by_name("line_item_net_unblended_cost") {
            Some(net) => coalesce(net, col("line_item_unblended_cost")?)?,
            None => col("line_item_unblended_cost")?.clone(),
        };
        let cost = decimals(&cost_column, spec.cost_column.column())?;
        let cost = cost.as_primitive::<Decimal128Type>();
        let mut here: HashMap<(&str, &str, &str, &str), (i64, i128)> = HashMap::new();
        for i in 0..b.num_rows() {
            let key = (
                line_type.get(i).unwrap_or(""),
                usage_type.get(i).unwrap_or(""),
                operation.as_ref().and_then(|o| o.get(i)).unwrap_or(""),
                unit.get(i).unwrap_or(""),
            );
            let c = if cost.is_null(i) { 0 } else { cost.value(i) };
            add_to(here.entry(key).or_default(), 1, c)?;
        }
        for ((l, u, o, p), (lines, c)) in here {
            let key = (l.to_owned(), u.to_owned(), o.to_owned(), p.to_owned());
            add_to(self.combinations.entry(key).or_default(), lines, c)?;
        }
        let tags = col("tags")?;
        let map = tags.as_map_opt().ok_or_else(|| ScanError::Column {
            column: "tags",
            message: format!("expected MAP<STRING,STRING>, found {}", tags.data_type()),
        })?;
        let keys = Strings::of(map.keys(), "tags")?;
        let mut counted: HashMap<&str, i64> = HashMap::new();
        let offsets = map.value_offsets();
        for row in 0..b.num_rows() {
            if map.is_null(row) {
                continue;
            }
            for i in offsets[row] as usize..offsets[row + 1] as usize {
                if let Some(k) = keys.get(i) {
                    *counted.entry(k).or_default() += 1;
                }
            }
        }
        for (k, lines) in counted {
            *self.tag_keys.entry(k.to_owned()).or_default() += lines;
        }
        Ok(())
    }
}

/// What one file's Kiro lines carry. `meta` is the file's footer, already read and checked.
pub async fn facets_of_file(
    store: Arc<dyn ObjectStore>,
    key: Key,
    size: u64,
    meta: ArrowReaderMetadata,
    spec: &ScanSpec,
) -> Result<Facets, ScanError> {
    let meta = with_dictionaries(meta)?;
    let schema = meta.metadata().file_metadata().schema_descr_ptr();
    let root = |name: &'static str| {
        meta.schema().index_of(name).map_err(|_| ScanError::Column {
            column: name,
            message: "not in the file".into(),
        })
    };
    let code = root("line_item_product_code")?;
    let mut roots = [
        "line_item_line_item_type",
        "line_item_usage_type",
        "pricing_unit",
        "line_item_unblended_cost",
        "tags",
    ]
    .into_iter()
    .map(root)
    .collect::<Result<Vec<_>, _>>()?;
    // Optional columns another file of the period may lack: where this one lacks them, its
    // lines read them as NULL, as the template's table does.
    let optional = |name: &str| meta.schema().index_of(name).ok();
    if spec.columns.operation {
        roots.extend(optional("line_item_operation"));
    }
    if spec.cost_column == CostColumn::NetUnblended && spec.columns.net_unblended_cost {
        roots.extend(optional("line_item_net_unblended_cost"));
    }
    let row_groups = row_groups_read(meta.metadata(), false);
    let mut out = Facets::default();
    if row_groups.is_empty() {
        return Ok(out);
    }
    let filter = ArrowPredicateFn::new(
        ProjectionMask::roots(&schema, [code]),
        |batch: RecordBatch| is_read(batch.column(0), false),
    );
    let reader = crate::source::export::Ranges::new(store, key, size);
    let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta.clone())
        .with_projection(ProjectionMask::roots(&schema, roots))
        .with_row_groups(row_groups)
        .with_row_filter(RowFilter::new(vec![Box::new(filter)]))
        .with_batch_size(BATCH_ROWS)
        .build()?;
    futures::pin_mut!(stream);
    while let Some(batch) = stream.next().await {
        out.add(&batch?, spec)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocation::sql::Columns;

    fn spec(ignored: &[String]) -> ScanSpec {
        ScanSpec::new(
            "userAttribute/costCenter",
            CostColumn::Unblended,
            Columns::default(),
            ignored,
            false,
        )
    }

    fn combination(l: &str, u: &str, o: &str, p: &str) -> Combination {
        (l.into(), u.into(), o.into(), p.into())
    }

    #[test]
    fn facets_follow_the_templates_rules_and_order() {
        let mut f = Facets::default();
        let one = 10i128.pow(super::super::SCALE);
        f.combinations.insert(
            combination(
                "FlatRateSubscription",
                "USE1-Kiro-Pro",
                "Subscribe",
                "Month",
            ),
            (3, 60 * one),
        );
        f.combinations.insert(
            combination("Usage", "USE1-Kiro-Credits", "Credits", "Credits"),
            (5, 2 * one),
        );
        // The same operation in another case: one value of the operation facet.
        f.combinations.insert(
            combination("Usage", "USE1-Kiro-Credits", "credits", "credits"),
            (1, one / 2),
        );
        f.combinations.insert(
            combination("Usage", "USE1-Kiro-Snapshot", "Snapshot", "Hrs"),
            (2, one),
        );
        f.combinations
            .insert(combination("Tax", "USE1-Kiro-Pro", "", ""), (1, one / 10));
        f.tag_keys.insert("userAttribute/costCenter".into(), 9);
        let values = f.values(&spec(&["snapshot".to_owned()])).unwrap();
        let of = |facet: &str| -> Vec<(String, i64, Decimal)> {
            values
                .iter()
                .filter(|v| v.facet == facet)
                .map(|v| (v.value.clone(), v.lines, v.cost))
                .collect()
        };
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(
            of("operation"),
            vec![
                ("credits".into(), 6, d("2.5")),
                ("subscribe".into(), 3, d("60")),
                ("snapshot".into(), 2, d("1")),
                ("".into(), 1, d("0.1")),
            ]
        );
        assert_eq!(
            of("seat_usage_type"),
            vec![("USE1-Kiro-Pro".into(), 3, d("60"))]
        );
        // The ignored operation is other, whatever else it is.
        assert_eq!(
            of("other"),
            vec![(
                "Usage | snapshot | hrs | USE1-Kiro-Snapshot".into(),
                2,
                d("1")
            )]
        );
        assert_eq!(
            of("tag_key"),
            vec![("userAttribute/costCenter".into(), 9, Decimal::ZERO)]
        );
        // Facets in name order; the lines of every facet but tag_key and the classified ones
        // are all the lines, and so is the cost.
        let facets: Vec<&str> = values.iter().map(|v| v.facet).collect();
        let mut sorted = facets.clone();
        sorted.sort();
        assert_eq!(facets, sorted);
        for facet in ["line_type", "operation", "pricing_unit", "usage_type"] {
            let (lines, cost) = of(facet)
                .iter()
                .fold((0, Decimal::ZERO), |(l, c), v| (l + v.1, c + v.2));
            assert_eq!((facet, lines, cost), (facet, 12, d("63.6")));
        }
    }
}
