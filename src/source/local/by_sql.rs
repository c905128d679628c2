//! The SQL template run by DataFusion over the period's files (feature `sql`): the
//! definition the scan is checked against, in the tests and the benchmark. The binary is
//! built without it; the daemon and every command use the scan.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use rust_decimal::Decimal;

use super::{LocalSource, PeriodFiles};
use crate::allocation::daily::DailyCredits;
use crate::allocation::q_developer::QRow;
use crate::allocation::row::{Cell, Col, Kind, RowBuilder};
use crate::allocation::sql::{self, Columns, Dialect, QuerySpec};
use crate::allocation::{Allocation, GroupRow, QueryStats};
use crate::period::BillingPeriod;
use crate::source::export::{Export, Object};
use crate::source::{Inspection, SourceError};

const TABLE: &str = "cur";
const RESULT_SCALE: i8 = 10;

/// A runtime with the export's store registered, for the queries' listing tables.
pub(super) fn runtime(export: &Export) -> Arc<RuntimeEnv> {
    let runtime = Arc::new(RuntimeEnv::default());
    if let Some(url) = export.store_url() {
        runtime.register_object_store(url.as_ref(), export.store());
    }
    runtime
}

/// DataFusion options the local engine sets unless the configuration says otherwise
/// (`[source.datafusion]`, keys without the `datafusion.` prefix).
///
/// - `pushdown_filters` off (DataFusion's default, stated because it was measured): evaluating
///   `line_item_product_code = 'Kiro'` while decoding would skip the other columns of other
///   services' lines, but in an export where Kiro lines are interleaved with those lines the
///   row selections are so fragmented that building them costs more than decoding
///   (`benches/perf.rs`: 3.4 s against 4.1–5.0 s at 50,000 users).
pub const DEFAULT_OPTIONS: &[(&str, &str)] = &[("execution.parquet.pushdown_filters", "false")];

/// A DataFusion session configuration with the engine's defaults, `target_partitions` and
/// `options` applied; an unknown key or a bad value is named.
pub fn session_config(
    target_partitions: usize,
    options: &BTreeMap<String, String>,
) -> Result<SessionConfig, String> {
    let mut config = SessionConfig::new()
        .with_target_partitions(target_partitions.max(1))
        .with_information_schema(false);
    let defaults = DEFAULT_OPTIONS.iter().map(|&(k, v)| (k, v));
    let given = options.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    for (key, value) in defaults.chain(given) {
        let key = key.strip_prefix("datafusion.").unwrap_or(key);
        config
            .options_mut()
            .set(&format!("datafusion.{key}"), value)
            .map_err(|e| {
                let e = crate::config_error::one_line(&e.to_string());
                format!("datafusion option {key:?} = {value:?}: {e}")
            })?;
    }
    Ok(config)
}

impl LocalSource {
    /// DataFusion options on top of [`DEFAULT_OPTIONS`] (checked by [`session_config`]).
    pub fn with_options(mut self, options: BTreeMap<String, String>) -> Self {
        self.options = options;
        self
    }

    /// A session over exactly `objects` (the period's partition is already chosen, so the
    /// query needs no partition column), registered as [`TABLE`] with `schema`.
    fn session(
        &self,
        objects: &[Object],
        schema: &Schema,
    ) -> Result<SessionContext, datafusion::error::DataFusionError> {
        let config = session_config(self.target_partitions, &self.options)
            .map_err(datafusion::error::DataFusionError::Configuration)?;
        let ctx = SessionContext::new_with_config_rt(config, self.runtime.clone());
        ctx.register_udf(crate::source::map_value::udf());
        let urls = objects
            .iter()
            .map(|o| match self.export.store_url() {
                Some(_) => ListingTableUrl::parse(self.export.url_of(&o.key)),
                None => ListingTableUrl::parse(self.export.name_of(&o.key).display().to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(Arc::new(schema.clone()));
        ctx.register_table(TABLE, Arc::new(ListingTable::try_new(config)?))?;
        Ok(ctx)
    }

    /// The query `render` makes for the period's columns.
    fn render(
        &self,
        period: BillingPeriod,
        columns: Columns,
        render: fn(Dialect, &QuerySpec<'_>) -> sql::Rendered,
    ) -> sql::Rendered {
        let spec = QuerySpec {
            table: TABLE,
            cost_center_tag: &self.settings.cost_center_tag,
            cost_column: self.settings.cost_column,
            period,
            columns,
            ignored_operations: &self.settings.ignored_operations,
            period_filter: false,
        };
        render(Dialect::DataFusion, &spec)
    }

    /// Runs `rendered` over `objects`.
    async fn query(
        &self,
        objects: &[Object],
        schema: &Schema,
        rendered: &sql::Rendered,
    ) -> Result<Vec<RecordBatch>, datafusion::error::DataFusionError> {
        let ctx = self.session(objects, schema)?;
        ctx.sql(&rendered.sql)
            .await?
            .with_param_values(param_values(rendered))?
            .collect()
            .await
    }

    async fn run(
        &self,
        period: BillingPeriod,
        files: &PeriodFiles,
        render: fn(Dialect, &QuerySpec<'_>) -> sql::Rendered,
    ) -> Result<Vec<RecordBatch>, datafusion::error::DataFusionError> {
        let rendered = self.render(period, files.columns, render);
        self.query(&files.objects, &files.schema, &rendered).await
    }

    /// Each seat's credits per usage day by the SQL template ([`sql::render_daily`]) run by
    /// DataFusion: what the scan's daily sums are checked against (tests), not cached.
    pub async fn daily_credits_by_sql(
        &self,
        period: BillingPeriod,
    ) -> Result<DailyCredits, SourceError> {
        let files = self.files(period).await?;
        let batches = self
            .run(period, &files, sql::render_daily)
            .await
            .map_err(|e| SourceError::Engine {
                period,
                message: e.to_string(),
            })?;
        let rows = decode_text(
            &batches,
            crate::source::DailyColumns::new,
            crate::source::DailyColumns::decode,
        )?;
        Ok(DailyCredits::from_rows(period, rows))
    }

    /// The period's allocation by the SQL template ([`sql::render`]) run by DataFusion over
    /// the period's files in one query: the definition the scan is checked against (tests and
    /// the benchmark), not cached.
    pub async fn allocate_by_sql(&self, period: BillingPeriod) -> Result<Allocation, SourceError> {
        let started = Instant::now();
        let files = self.files(period).await?;
        let batches =
            self.run(period, &files, sql::render)
                .await
                .map_err(|e| SourceError::Engine {
                    period,
                    message: e.to_string(),
                })?;
        let rows = decode(&batches)?;
        let q_rows = if self.settings.q_developer && files.columns.operation {
            let batches = self
                .run(period, &files, sql::render_q_developer)
                .await
                .map_err(|e| SourceError::Engine {
                    period,
                    message: e.to_string(),
                })?;
            Some(decode_q(&batches)?)
        } else {
            None
        };
        let stats = QueryStats {
            elapsed: started.elapsed(),
            scanned_bytes: Some(files.sizes.iter().map(|s| s.1).sum()),
            scanned_rows: Some(files.sizes.iter().map(|s| s.0).sum()),
            files: Some(files.files),
            fetched_bytes: None,
        };
        let allocation = Allocation::assemble(period, rows, &self.settings.plans, stats)?;
        Ok(match q_rows {
            Some(q) => allocation.with_q_developer(q)?,
            None => allocation,
        })
    }

    /// What the period's Kiro lines carry by the SQL template ([`sql::render_inspect`]) run
    /// by DataFusion: what the scan's `inspect` is checked against (tests).
    pub async fn inspect_by_sql(&self, period: BillingPeriod) -> Result<Inspection, SourceError> {
        let files = self.files(period).await?;
        let engine = |e: datafusion::error::DataFusionError| SourceError::Engine {
            period,
            message: e.to_string(),
        };
        let batches = self
            .run(period, &files, sql::render_inspect)
            .await
            .map_err(engine)?;
        let mut out = Inspection::new(period, files.columns);
        for b in &batches {
            let col = |name: &str, to: &DataType| {
                let c = b.column_by_name(name).ok_or_else(|| SourceError::Decode {
                    column: name.to_owned(),
                    message: "missing from the inspection result".into(),
                })?;
                cast(c, to).map_err(|e| SourceError::Decode {
                    column: name.to_owned(),
                    message: e.to_string(),
                })
            };
            let facet = col("facet", &DataType::Utf8)?;
            let value = col("value", &DataType::Utf8)?;
            let lines = col("lines", &DataType::Int64)?;
            let cost = col("cost", &DataType::Decimal128(38, RESULT_SCALE))?;
            let (facet, value) = (facet.as_string::<i32>(), value.as_string::<i32>());
            let (lines, cost) = (
                lines.as_primitive::<Int64Type>(),
                cost.as_primitive::<Decimal128Type>(),
            );
            for r in 0..b.num_rows() {
                let c = if cost.is_null(r) {
                    Decimal::ZERO
                } else {
                    Decimal::try_from_i128_with_scale(cost.value(r), RESULT_SCALE as u32)
                        .unwrap_or_default()
                };
                out.add(
                    facet.value(r),
                    if value.is_null(r) {
                        String::new()
                    } else {
                        value.value(r).to_owned()
                    },
                    lines.value(r),
                    c,
                );
            }
        }
        Ok(out)
    }
}

/// The parameters of `rendered` as DataFusion values, in placeholder order.
fn param_values(rendered: &sql::Rendered) -> Vec<ScalarValue> {
    rendered
        .params
        .iter()
        .map(|p| ScalarValue::Utf8(Some(p.clone())))
        .collect()
}

/// Each row of `batches` read as text (NULL has no value), as Athena's results are read, and
/// decoded by `decode` with what `index` makes of each batch's column names.
fn decode_text<I, T>(
    batches: &[RecordBatch],
    index: impl Fn(&[String]) -> Result<I, SourceError>,
    decode: impl Fn(&I, &[Option<&str>]) -> Result<T, SourceError>,
) -> Result<Vec<T>, SourceError> {
    let mut out = Vec::new();
    for batch in batches {
        let names: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let columns = batch
            .columns()
            .iter()
            .zip(&names)
            .map(|(c, name)| {
                cast(c, &DataType::Utf8).map_err(|e| SourceError::Decode {
                    column: name.clone(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let index = index(&names)?;
        for r in 0..batch.num_rows() {
            let values: Vec<Option<&str>> = columns
                .iter()
                .map(|c| (!c.is_null(r)).then(|| c.as_string::<i32>().value(r)))
                .collect();
            out.push(decode(&index, &values)?);
        }
    }
    Ok(out)
}

/// Turns the Q Developer query's record batches into its rows (every column read as text,
/// as Athena's results are).
pub fn decode_q(batches: &[RecordBatch]) -> Result<Vec<QRow>, SourceError> {
    decode_text(
        batches,
        crate::source::QColumns::new,
        crate::source::QColumns::decode,
    )
}

/// Turns the query's record batches into group rows.
pub fn decode(batches: &[RecordBatch]) -> Result<Vec<GroupRow>, SourceError> {
    let decode_err = |column: &str, message: String| SourceError::Decode {
        column: column.to_owned(),
        message,
    };
    let mut out = Vec::new();
    for batch in batches {
        // Each result column cast to the type its kind is read as.
        let columns = Col::ALL
            .iter()
            .map(|&col| {
                let to = match col.kind() {
                    Kind::Text => DataType::Utf8,
                    Kind::Money => DataType::Decimal128(38, RESULT_SCALE),
                    Kind::Count => DataType::Int64,
                    Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, None),
                };
                let c = batch
                    .column_by_name(col.name())
                    .ok_or_else(|| decode_err(col.name(), "missing from the result".into()))?;
                let c = cast(c, &to).map_err(|e| decode_err(col.name(), e.to_string()))?;
                Ok((col, c))
            })
            .collect::<Result<Vec<_>, SourceError>>()?;
        let mut row = RowBuilder::new();
        for r in 0..batch.num_rows() {
            for (col, a) in &columns {
                let null = a.is_null(r);
                let cell = match col.kind() {
                    Kind::Text => {
                        Cell::Text((!null).then(|| a.as_string::<i32>().value(r).to_owned()))
                    }
                    Kind::Money => Cell::Money(if null {
                        None
                    } else {
                        let v = a.as_primitive::<Decimal128Type>().value(r);
                        Some(
                            Decimal::try_from_i128_with_scale(v, RESULT_SCALE as u32)
                                .map_err(|e| decode_err(col.name(), e.to_string()))?,
                        )
                    }),
                    Kind::Count => {
                        Cell::Count((!null).then(|| a.as_primitive::<Int64Type>().value(r)))
                    }
                    Kind::Time => Cell::Time(if null {
                        None
                    } else {
                        DateTime::<Utc>::from_timestamp_micros(
                            a.as_primitive::<TimestampMicrosecondType>().value(r),
                        )
                    }),
                };
                row.set(*col, cell)
                    .map_err(|e| decode_err(col.name(), e.to_string()))?;
            }
            out.push(row.finish());
        }
    }
    Ok(out)
}
