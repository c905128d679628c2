//! Writes generated lines as a CUR 2.0 export: the full column set of the Athena DDL
//! (`cur2_columns.txt`), MAP columns as Parquet maps, snappy-compressed, one folder per billing
//! period and several files per period when it is large.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Float64Builder, MapBuilder, MapFieldNames, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{CurLine, LineSink};
use crate::period::{BillingPeriod, PARTITION_COLUMN};

const COLUMNS: &str = include_str!("cur2_columns.txt");
const BATCH_ROWS: usize = 8_192;
/// Rows per row group unless told otherwise.
pub const ROW_GROUP_ROWS: usize = 131_072;

/// Failure to write an export.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {message}")]
    Parquet { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Double,
    Timestamp,
    MapStr,
    MapDouble,
}

fn map_type(value: DataType) -> DataType {
    let entries = Field::new(
        "key_value",
        DataType::Struct(
            vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", value, true),
            ]
            .into(),
        ),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

static COLUMN_KINDS: LazyLock<Vec<(String, Kind)>> = LazyLock::new(|| {
    COLUMNS
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, ty)| {
            let kind = match ty.trim() {
                "STRING" => Kind::Str,
                "DOUBLE" => Kind::Double,
                "TIMESTAMP" => Kind::Timestamp,
                "MAP<STRING,STRING>" => Kind::MapStr,
                "MAP<STRING,DOUBLE>" => Kind::MapDouble,
                other => unreachable!("column type {other} in cur2_columns.txt"),
            };
            (name.to_owned(), kind)
        })
        .collect()
});

/// The Arrow schema of a CUR 2.0 Parquet file as the generator writes it.
pub fn cur_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(
            COLUMN_KINDS
                .iter()
                .map(|(name, kind)| {
                    let t = match kind {
                        Kind::Str => DataType::Utf8,
                        Kind::Double => DataType::Float64,
                        Kind::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
                        Kind::MapStr => map_type(DataType::Utf8),
                        Kind::MapDouble => map_type(DataType::Float64),
                    };
                    Field::new(name, t, true)
                })
                .collect::<Vec<_>>(),
        ))
    });
    SCHEMA.clone()
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn product_name(code: &str) -> &str {
    match code {
        "Kiro" => "Kiro",
        "AmazonEC2" => "Amazon Elastic Compute Cloud",
        "AmazonS3" => "Amazon Simple Storage Service",
        "AWSLambda" => "AWS Lambda",
        "AmazonCloudWatch" => "AmazonCloudWatch",
        "AmazonRDS" => "Amazon Relational Database Service",
        "AmazonQ" => "Amazon Q",
        other => other,
    }
}

/// Value of a string column for a line; `None` writes NULL.
fn string_value(name: &str, l: &CurLine, row_id: u64, payer: &str) -> Option<String> {
    let s = |v: &str| Some(v.to_owned());
    match name {
        "bill_bill_type" => s("Anniversary"),
        "bill_billing_entity" => s("AWS"),
        "bill_invoicing_entity" | "line_item_legal_entity" => s("Amazon Web Services, Inc."),
        "bill_payer_account_id" => s(payer),
        "bill_payer_account_name" => s("Example Corp Management"),
        "identity_line_item_id" => Some(format!(
            "{:016x}{:024x}",
            row_id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            row_id
        )),
        "identity_time_interval" => Some(format!("{}/{}", iso(l.usage_start), iso(l.usage_end))),
        "line_item_currency_code" | "pricing_currency" => s("USD"),
        "line_item_line_item_description" => s(&l.description),
        "line_item_line_item_type" => s(l.line_type),
        "line_item_operation" | "product_operation" => s(l.operation),
        "line_item_product_code" | "product_servicecode" => s(l.product_code),
        "line_item_resource_id" => s(&l.resource_id),
        "line_item_usage_account_id" => s(&l.account_id),
        "line_item_usage_account_name" => {
            // The last four characters (not bytes: an identifier may be any text here).
            let id = &l.account_id;
            let start = id.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
            Some(format!("workloads-{}", &id[start..]))
        }
        "line_item_usage_type" | "product_usagetype" => s(&l.usage_type),
        "line_item_user_identifier" => s(&l.user_identifier),
        "line_item_unblended_rate"
        | "line_item_net_unblended_rate"
        | "line_item_blended_rate"
        | "pricing_public_on_demand_rate" => Some(l.rate.to_string()),
        "line_item_tax_type" => s(if l.line_type == "Tax" { "VAT" } else { "" }),
        "pricing_unit" | "product_pricing_unit" => s(l.pricing_unit),
        "pricing_term" => s(if l.line_type == "Usage" {
            "OnDemand"
        } else {
            ""
        }),
        "product_region_code" => s(l.region),
        "product_location_type" => s("AWS Region"),
        "product_product_family" => s(if l.product_code == "Kiro" {
            "Kiro"
        } else {
            "Compute"
        }),
        _ => None,
    }
}

fn double_value(name: &str, l: &CurLine) -> Option<f64> {
    match name {
        "line_item_unblended_cost" | "line_item_blended_cost" => Some(l.unblended_cost),
        "line_item_net_unblended_cost" => l.net_unblended_cost,
        "line_item_usage_amount" | "line_item_normalized_usage_amount" => Some(l.usage_amount),
        "pricing_public_on_demand_cost" => Some(if l.line_type == "Usage" {
            l.unblended_cost
        } else {
            0.0
        }),
        _ => None,
    }
}

fn timestamp_value(name: &str, l: &CurLine) -> Option<DateTime<Utc>> {
    match name {
        "bill_billing_period_start_date" => Some(l.period.start()),
        "bill_billing_period_end_date" => Some(l.period.end()),
        "line_item_usage_start_date" => Some(l.usage_start),
        "line_item_usage_end_date" => Some(l.usage_end),
        _ => None,
    }
}

fn names() -> MapFieldNames {
    MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    }
}

/// The CUR 2.0 schema without the columns in `omit`.
pub fn schema_without(omit: &[&str]) -> SchemaRef {
    if omit.is_empty() {
        return cur_schema();
    }
    let full = cur_schema();
    Arc::new(Schema::new(
        full.fields()
            .iter()
            .filter(|f| !omit.contains(&f.name().as_str()))
            .cloned()
            .collect::<Vec<_>>(),
    ))
}

/// Builds one record batch of `lines` in the CUR 2.0 schema, without the columns in `omit`.
pub fn batch(lines: &[CurLine], first_row_id: u64, payer: &str, omit: &[&str]) -> RecordBatch {
    let columns: Vec<ArrayRef> = COLUMN_KINDS
        .iter()
        .filter(|(name, _)| !omit.contains(&name.as_str()))
        .map(|(name, kind)| -> ArrayRef {
            match kind {
                Kind::Str => {
                    let mut b = StringBuilder::with_capacity(lines.len(), lines.len() * 8);
                    for (i, l) in lines.iter().enumerate() {
                        b.append_option(string_value(name, l, first_row_id + i as u64, payer));
                    }
                    Arc::new(b.finish())
                }
                Kind::Double => {
                    let mut b = Float64Builder::with_capacity(lines.len());
                    for l in lines {
                        b.append_option(double_value(name, l));
                    }
                    Arc::new(b.finish())
                }
                Kind::Timestamp => {
                    let mut b = TimestampMillisecondBuilder::with_capacity(lines.len());
                    for l in lines {
                        b.append_option(timestamp_value(name, l).map(|t| t.timestamp_millis()));
                    }
                    Arc::new(b.finish())
                }
                Kind::MapStr => {
                    let mut b =
                        MapBuilder::new(Some(names()), StringBuilder::new(), StringBuilder::new())
                            .with_keys_field(Arc::new(Field::new("key", DataType::Utf8, false)))
                            .with_values_field(Arc::new(Field::new("value", DataType::Utf8, true)));
                    for l in lines {
                        match name.as_str() {
                            "tags" => {
                                for (k, v) in &l.tags {
                                    b.keys().append_value(k);
                                    b.values().append_value(v);
                                }
                            }
                            "product" => {
                                b.keys().append_value("product_name");
                                b.values().append_value(product_name(l.product_code));
                                b.keys().append_value("region");
                                b.values().append_value(l.region);
                            }
                            _ => {}
                        }
                        b.append(true).expect("keys and values appended in pairs");
                    }
                    Arc::new(b.finish())
                }
                Kind::MapDouble => {
                    let mut b =
                        MapBuilder::new(Some(names()), StringBuilder::new(), Float64Builder::new())
                            .with_keys_field(Arc::new(Field::new("key", DataType::Utf8, false)))
                            .with_values_field(Arc::new(Field::new(
                                "value",
                                DataType::Float64,
                                true,
                            )));
                    for _ in lines {
                        b.append(true).expect("empty map");
                    }
                    Arc::new(b.finish())
                }
            }
        })
        .collect();
    RecordBatch::try_new(schema_without(omit), columns).expect("columns follow the schema")
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct WriteSummary {
    /// Per period: files and rows written.
    pub periods: BTreeMap<BillingPeriod, (usize, u64)>,
    pub kiro_lines: u64,
    pub total_lines: u64,
}

/// A [`LineSink`] that writes lines as Parquet files, one folder per period, and lets an
/// observer see each line.
pub struct ExportWriter<F: FnMut(&CurLine)> {
    data_dir: PathBuf,
    export_name: String,
    rows_per_file: usize,
    observe: F,
    buffer: Vec<CurLine>,
    current: Option<(BillingPeriod, PathBuf, ArrowWriter<File>, usize)>,
    summary: WriteSummary,
    payer: String,
    /// Columns left out of the files.
    omit: &'static [&'static str],
    row_group_rows: usize,
}

impl<F: FnMut(&CurLine)> ExportWriter<F> {
    pub fn new(
        root: &Path,
        export_name: &str,
        rows_per_file: usize,
        observe: F,
    ) -> Result<Self, WriteError> {
        let data_dir = root.join("data");
        std::fs::create_dir_all(&data_dir).map_err(|source| WriteError::Io {
            path: data_dir.clone(),
            source,
        })?;
        Ok(Self {
            data_dir,
            export_name: export_name.to_owned(),
            rows_per_file: rows_per_file.max(1),
            observe,
            buffer: Vec::with_capacity(BATCH_ROWS),
            current: None,
            summary: WriteSummary::default(),
            payer: String::new(),
            omit: &[],
            row_group_rows: ROW_GROUP_ROWS,
        })
    }

    /// Leaves `columns` out of the files (an export of another shape).
    pub fn omitting(mut self, columns: &'static [&'static str]) -> Self {
        self.omit = columns;
        self
    }

    /// Rows per Parquet row group.
    pub fn with_row_group_rows(mut self, rows: usize) -> Self {
        self.row_group_rows = rows.max(1);
        self
    }

    fn open(&mut self, period: BillingPeriod) -> Result<(), WriteError> {
        let entry = self.summary.periods.entry(period).or_default();
        entry.0 += 1;
        let dir = self.data_dir.join(format!("{PARTITION_COLUMN}={period}"));
        std::fs::create_dir_all(&dir).map_err(|source| WriteError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!(
            "{}-{:05}.snappy.parquet",
            self.export_name, entry.0
        ));
        let file = File::create(&path).map_err(|source| WriteError::Io {
            path: path.clone(),
            source,
        })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(self.row_group_rows))
            .build();
        let writer =
            ArrowWriter::try_new(file, schema_without(self.omit), Some(props)).map_err(|e| {
                WriteError::Parquet {
                    path: path.clone(),
                    message: e.to_string(),
                }
            })?;
        self.current = Some((period, path, writer, 0));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), WriteError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let period = self.buffer[0].period;
        if self
            .current
            .as_ref()
            .is_none_or(|c| c.0 != period || c.3 >= self.rows_per_file)
        {
            self.close()?;
            self.open(period)?;
        }
        let lines = std::mem::take(&mut self.buffer);
        let b = batch(
            &lines,
            self.summary.total_lines - lines.len() as u64,
            &self.payer,
            self.omit,
        );
        let (_, path, writer, rows) = self.current.as_mut().expect("opened above");
        writer.write(&b).map_err(|e| WriteError::Parquet {
            path: path.clone(),
            message: e.to_string(),
        })?;
        *rows += lines.len();
        self.summary.periods.entry(period).or_default().1 += lines.len() as u64;
        self.buffer = lines;
        self.buffer.clear();
        Ok(())
    }

    fn close(&mut self) -> Result<(), WriteError> {
        if let Some((_, path, writer, _)) = self.current.take() {
            writer.close().map_err(|e| WriteError::Parquet {
                path,
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Writes what is buffered and closes the last file.
    pub fn finish(mut self) -> Result<WriteSummary, WriteError> {
        self.flush()?;
        self.close()?;
        Ok(self.summary)
    }
}

impl<F: FnMut(&CurLine)> LineSink for ExportWriter<F> {
    type Error = WriteError;

    fn line(&mut self, line: CurLine) -> Result<(), WriteError> {
        if self.payer.is_empty() {
            self.payer = line.account_id.clone();
        }
        if self.buffer.first().is_some_and(|f| f.period != line.period)
            || self.buffer.len() >= BATCH_ROWS
        {
            self.flush()?;
        }
        (self.observe)(&line);
        self.summary.total_lines += 1;
        self.summary.kiro_lines += u64::from(line.product_code == "Kiro");
        self.buffer.push(line);
        Ok(())
    }

    fn end_period(&mut self, _period: BillingPeriod) -> Result<(), WriteError> {
        self.flush()?;
        self.close()
    }
}
