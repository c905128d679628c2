//! The embedded engine over a CUR 2.0 export on local disk or in S3 ([`super::export`]).
//!
//! The export root holds `data/BILLING_PERIOD=YYYY-MM/…`. The period's files are the ones its
//! manifest lists, or the newest delivery ([`super::delivery`]): never two versions. Before a
//! scan, their footers are read and checked (a file that is not Parquet, or lacks a required
//! column, is named) and the optional columns present are learned. Each file that changed is
//! then scanned into its per-seat groups ([`super::scan`]), kept until it changes again, and
//! the groups of every file are combined into the result rows. DataFusion runs the SQL
//! template over the same files for `inspect` and for [`LocalSource::allocate_by_sql`], the
//! definition the scan is checked against.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::file::metadata::ParquetMetaDataReader;
use rust_decimal::Decimal;

use super::export::{Export, Object};
use super::scan;
use super::{Inspection, Source, SourceError};
use crate::allocation::daily::{DailyCredits, DayRow};
use crate::allocation::q_developer::QRow;
use crate::allocation::row::{Cell, Col, Kind, RowBuilder};
use crate::allocation::sql::{self, Columns, Dialect, QuerySpec};
use crate::allocation::{Allocation, AllocationSettings, GroupRow, QueryStats};
use crate::period::BillingPeriod;

pub use crate::period::PARTITION_COLUMN;
const TABLE: &str = "cur";
const RESULT_SCALE: i8 = 10;

/// Allocation over a CUR 2.0 export (local disk or S3) with DataFusion.
#[derive(Debug, Clone)]
pub struct LocalSource {
    export: Export,
    settings: AllocationSettings,
    target_partitions: usize,
    /// DataFusion options set on top of [`DEFAULT_OPTIONS`] (keys without `datafusion.`).
    options: BTreeMap<String, String>,
    /// Shared by every query: the export's store, and DataFusion's cache of file footers.
    runtime: Arc<RuntimeEnv>,
    cache: Arc<std::sync::Mutex<Cache>>,
    /// Whether per-file groups and allocations are kept for the next call ([`Self::once`]).
    keep: bool,
    /// Whether the scan sums credits per seat and usage day too ([`Source::daily_credits`]).
    daily: bool,
}

/// What earlier refreshes learned, so an unchanged export costs a listing and no scan.
#[derive(Debug, Default)]
struct Cache {
    /// Per file: its version when read, and its footer.
    footers: std::collections::HashMap<String, (Version, ArrowReaderMetadata)>,
    /// Per period: the versions of the files it was allocated from, and the allocation.
    results: BTreeMap<BillingPeriod, (Versions, Allocation)>,
    /// Per file: its per-seat groups ([`scan::KeptGroups`]), so a refresh reads only the
    /// files that changed.
    partials: std::collections::HashMap<String, Partial>,
    /// Per period: the strings its files' groups name ([`scan::Pool`]).
    pools: BTreeMap<BillingPeriod, scan::SharedPool>,
    /// Per period: the versions of the files its credits per day were summed from, and them.
    daily: BTreeMap<BillingPeriod, (Versions, Arc<DailyCredits>)>,
}

/// One file's per-seat groups, valid for the file's version and the scan that made them.
#[derive(Debug)]
struct Partial {
    version: Version,
    /// Hash of the scan's settings and the table schema.
    query: u64,
    groups: Arc<scan::KeptGroups>,
    /// The pool its ids are of.
    pool: scan::SharedPool,
}

/// A file's version as listed: size, ETag (or the file system's equivalent), modification
/// time.
type Version = (u64, Option<String>, chrono::DateTime<chrono::Utc>);

/// The versions of a period's files, by key.
type Versions = Vec<(String, Version)>;

/// Periods whose allocation is kept (the watched ones are at most two).
const CACHED_PERIODS: usize = 4;

fn version(o: &Object) -> Version {
    (o.size, o.e_tag.clone(), o.modified)
}

/// The versions of `objects`, by key.
fn versions(objects: &[Object]) -> Versions {
    objects
        .iter()
        .map(|o| (o.key.to_string(), version(o)))
        .collect()
}

impl Cache {
    /// Approximate bytes held.
    fn bytes(&self) -> u64 {
        let footers: usize = self
            .footers
            .iter()
            .map(|(k, (_, m))| k.len() + m.metadata().memory_size())
            .sum();
        let partials: usize = self
            .partials
            .iter()
            .map(|(k, p)| k.len() + p.groups.memory_size())
            .sum::<usize>()
            + self
                .pools
                .values()
                .map(|p| {
                    p.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .memory_size()
                })
                .sum::<usize>();
        let results: usize = self
            .results
            .values()
            .map(|(files, a)| {
                files.iter().map(|(k, _)| k.len() + 64).sum::<usize>()
                    + a.units.len() * (std::mem::size_of::<crate::allocation::UserCost>() + 96)
                    + a.seats.len() * 160
            })
            .sum();
        let daily: usize = self.daily.values().map(|(_, d)| d.memory_size()).sum();
        (footers + partials + results + daily) as u64
    }
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

/// What the footer check found for one period.
#[derive(Debug)]
struct PeriodFiles {
    /// The files to read.
    objects: Vec<Object>,
    /// The optional columns present in at least one file (the others read them as NULL).
    columns: Columns,
    /// The columns read, with the types the files use.
    schema: Schema,
    /// Per file (as `objects`): rows, and compressed bytes of the columns read.
    sizes: Vec<(u64, u64)>,
    /// Per file (as `objects`): its footer.
    footers: Vec<ArrowReaderMetadata>,
    files: u64,
}

impl LocalSource {
    /// `root` is the export root (the folder holding `data/`), or the `data/` folder itself.
    pub fn new(root: impl Into<PathBuf>, settings: AllocationSettings) -> Self {
        Self::over(Export::local(root), settings)
    }

    /// The engine over `export` (local or S3).
    pub fn over(export: Export, settings: AllocationSettings) -> Self {
        let runtime = Arc::new(RuntimeEnv::default());
        if let Some(url) = export.store_url() {
            runtime.register_object_store(url.as_ref(), export.store());
        }
        Self {
            export,
            settings,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            options: BTreeMap::new(),
            runtime,
            cache: Arc::new(std::sync::Mutex::new(Cache::default())),
            keep: true,
            daily: false,
        }
    }

    /// For one allocation per period (a command, not the daemon): nothing is kept for a
    /// next call, and each file's groups are merged as soon as the file is read, so memory
    /// holds one merged set of groups instead of one per file, and the allocation is not
    /// copied into a cache.
    pub fn once(mut self) -> Self {
        self.keep = false;
        self
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Approximate bytes the engine keeps between refreshes (footers and allocations).
    pub fn cache_bytes(&self) -> u64 {
        self.cache().bytes()
    }

    /// DataFusion options on top of [`DEFAULT_OPTIONS`] (checked by [`session_config`]).
    pub fn with_options(mut self, options: BTreeMap<String, String>) -> Self {
        self.options = options;
        self
    }

    /// Number of partitions DataFusion plans with (default: the number of cores).
    pub fn with_target_partitions(mut self, n: usize) -> Self {
        self.target_partitions = n.max(1);
        self
    }

    /// Billing periods present in the export, sorted.
    pub async fn periods(&self) -> Result<Vec<BillingPeriod>, SourceError> {
        self.export.periods().await
    }

    /// Bytes fetched from the export's store so far.
    pub fn read_bytes(&self) -> u64 {
        self.export.read_bytes()
    }

    /// The period's files, chosen and checked: every footer is read (concurrently; on S3 a
    /// ranged GET of the file's tail) and the columns the query reads are checked.
    async fn files(&self, period: BillingPeriod) -> Result<PeriodFiles, SourceError> {
        let (objects, chosen) = self.export.period_files(period).await?;
        tracing::debug!(%period, files = objects.len(), ?chosen, "files of the period");
        self.check(period, objects).await
    }

    /// The footers of `objects`: read concurrently, or known from an earlier refresh when the
    /// file has not changed; remembered for the next refresh, and those of files no longer
    /// among the period's forgotten.
    async fn footers(
        &self,
        period: BillingPeriod,
        objects: &[Object],
    ) -> Result<Vec<ArrowReaderMetadata>, SourceError> {
        let store = self.export.store();
        let jobs: Vec<_> = {
            let cache = self.cache();
            objects
                .iter()
                .map(|o| {
                    let known = cache
                        .footers
                        .get(o.key.as_ref())
                        .filter(|(v, _)| *v == version(o))
                        .map(|(_, m)| m.clone());
                    (
                        super::export::Ranges::new(store.clone(), o.key.clone(), o.size),
                        self.export.name_of(&o.key),
                        o.size,
                        known,
                    )
                })
                .collect()
        };
        let index_policy = if self.export.is_local() {
            parquet::file::metadata::PageIndexPolicy::Skip
        } else {
            parquet::file::metadata::PageIndexPolicy::Optional
        };
        let footers: Vec<Result<ArrowReaderMetadata, SourceError>> = futures::stream::iter(
            jobs.into_iter()
                .map(|(fetch, name, size, known)| async move {
                    if let Some(m) = known {
                        return Ok(m);
                    }
                    let not_parquet = |e: parquet::errors::ParquetError| match e {
                        // The store could not give the bytes (permissions, network): not the
                        // file's fault.
                        parquet::errors::ParquetError::External(inner) => SourceError::Store {
                            operation: "reading the footer of".to_owned(),
                            location: name.display().to_string(),
                            message: match inner.downcast_ref::<object_store::Error>() {
                                Some(e) => super::export::describe(e, "s3:GetObject"),
                                None => crate::config_error::one_line(&inner.to_string()),
                            },
                        },
                        e => SourceError::NotParquet {
                            file: name.clone(),
                            reason: crate::config_error::one_line(&e.to_string()),
                        },
                    };
                    // In S3, with the offset index where the file has one, the scan fetches
                    // only the pages that hold Kiro lines. On local disk whole column chunks
                    // cost nothing to reach, and the reader's page selection costs more than
                    // it saves (docs/performance.md).
                    let md = ParquetMetaDataReader::new()
                        .with_prefetch_hint(Some(64 * 1024))
                        .with_offset_index_policy(index_policy)
                        .load_and_finish(fetch, size)
                        .await
                        .map_err(not_parquet)?;
                    ArrowReaderMetadata::try_new(Arc::new(md), Default::default())
                        .map_err(not_parquet)
                }),
        )
        .buffered(16)
        .collect()
        .await;
        let footers = footers.into_iter().collect::<Result<Vec<_>, _>>()?;
        {
            // Footers of files no longer among the period's are forgotten.
            let mut cache = self.cache();
            let partition = format!("{PARTITION_COLUMN}={period}/");
            let current: std::collections::HashSet<&str> =
                objects.iter().map(|o| o.key.as_ref()).collect();
            cache
                .footers
                .retain(|k, _| !k.contains(&partition) || current.contains(k.as_str()));
            for (o, m) in objects.iter().zip(&footers) {
                cache
                    .footers
                    .insert(o.key.to_string(), (version(o), m.clone()));
            }
        }
        Ok(footers)
    }

    /// Checks the footers of `objects` (read concurrently, or known from an earlier refresh
    /// when the file has not changed).
    async fn check(
        &self,
        period: BillingPeriod,
        objects: Vec<Object>,
    ) -> Result<PeriodFiles, SourceError> {
        let footers = self.footers(period, &objects).await?;
        let cost = self.settings.cost_column.column();
        // Every column the query may read: the required ones must be in every file.
        let wanted: Vec<&str> = sql::REQUIRED_COLUMNS
            .iter()
            .chain(sql::OPTIONAL_COLUMNS)
            .copied()
            .collect();
        let mut fields: Vec<Option<(Field, PathBuf)>> = vec![None; wanted.len()];
        let mut sizes = Vec::with_capacity(objects.len());
        for (o, meta) in objects.iter().zip(&footers) {
            let path = self.export.name_of(&o.key);
            let schema = meta.schema();
            for (slot, name) in fields.iter_mut().zip(&wanted) {
                let Ok(field) = schema.field_with_name(name) else {
                    let required = sql::REQUIRED_COLUMNS.contains(name)
                        || (*name == cost && cost != "line_item_net_unblended_cost");
                    if required {
                        return Err(SourceError::MissingColumn {
                            file: path.clone(),
                            column: (*name).to_owned(),
                        });
                    }
                    continue;
                };
                check_type(&path, field)?;
                match slot {
                    None => *slot = Some((field.clone().with_nullable(true), path.clone())),
                    Some((first, first_path)) if first.data_type() != field.data_type() => {
                        return Err(SourceError::WrongType {
                            file: path.clone(),
                            column: (*name).to_owned(),
                            found: field.data_type().to_string(),
                            expected: format!(
                                "{} as in {}",
                                first.data_type(),
                                first_path.display()
                            ),
                        });
                    }
                    Some(_) => {}
                }
            }
            sizes.push(scanned_size(meta.metadata(), &wanted));
        }
        let present = wanted
            .iter()
            .zip(&fields)
            .filter(|(_, f)| f.is_some())
            .map(|(n, _)| *n);
        let columns = Columns::from_names(present).map_err(|_| SourceError::MissingColumn {
            file: self.export.name_of(&objects[0].key),
            column: "line_item_user_identifier or line_item_resource_id".to_owned(),
        })?;
        // Strings are read as views into the Parquet pages (DataFusion's default for files,
        // `schema_force_view_types`): declaring them so spares a copy of every string value
        // into a plain string array.
        let schema = Schema::new(
            fields
                .into_iter()
                .flatten()
                .map(|(f, _)| {
                    if matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
                        f.with_data_type(DataType::Utf8View)
                    } else {
                        f
                    }
                })
                .collect::<Vec<_>>(),
        );
        let files = objects.len() as u64;
        Ok(PeriodFiles {
            objects,
            columns,
            schema,
            sizes,
            footers,
            files,
        })
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
        ctx.register_udf(super::map_value::udf());
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

    /// Each file's groups kept from an earlier refresh, where the file and the scan are the
    /// same (`query` hashes the scan's settings), and the period's string pool; nothing when
    /// this source keeps nothing.
    fn known_groups(
        &self,
        period: BillingPeriod,
        files: &PeriodFiles,
        query: u64,
    ) -> (Vec<Option<Arc<scan::KeptGroups>>>, scan::SharedPool) {
        if !self.keep {
            return (vec![None; files.objects.len()], scan::SharedPool::default());
        }
        let mut cache = self.cache();
        let pool = cache.pools.entry(period).or_default().clone();
        let known = files
            .objects
            .iter()
            .map(|o| {
                cache
                    .partials
                    .get(o.key.as_ref())
                    .filter(|p| {
                        p.version == version(o) && p.query == query && Arc::ptr_eq(&p.pool, &pool)
                    })
                    .map(|p| p.groups.clone())
            })
            .collect();
        (known, pool)
    }

    /// What the scan of files with `columns` is asked.
    fn scan_spec(&self, columns: Columns) -> scan::ScanSpec {
        let spec = scan::ScanSpec::new(
            &self.settings.cost_center_tag,
            self.settings.cost_column,
            columns,
            &self.settings.ignored_operations,
            self.settings.q_developer && columns.operation,
        );
        if self.daily { spec.with_daily() } else { spec }
    }

    /// The period's result rows: each file's per-seat groups ([`scan`]; read again only for
    /// files that changed, or when the settings changed), merged. Returns the rows, and how
    /// many files, rows and bytes were scanned.
    async fn allocate_files(
        &self,
        period: BillingPeriod,
        files: &PeriodFiles,
    ) -> Result<Scanned, SourceError> {
        use std::hash::{Hash, Hasher};
        let spec = self.scan_spec(files.columns);
        let query = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            spec.hash(&mut h);
            format!("{:?}", files.schema).hash(&mut h);
            h.finish()
        };
        let (mut known, pool) = self.known_groups(period, files, query);
        let changed: Vec<usize> = (0..files.objects.len())
            .filter(|&i| known[i].is_none())
            .collect();
        let scanned = changed.iter().fold((0, 0, 0), |(f, r, b), &i| {
            (f + 1, r + files.sizes[i].0, b + files.sizes[i].1)
        });
        tracing::debug!(%period, files = files.objects.len(), changed = changed.len(), "scanning the files that changed");
        let cores = self.target_partitions.max(1);
        let store = self.export.store();
        // Files a few at a time; each file's row groups are read in parallel too.
        let spec = Arc::new(spec);
        let jobs: Vec<_> = changed
            .into_iter()
            .map(|i| {
                let o = &files.objects[i];
                let (store, spec, pool) = (store.clone(), spec.clone(), pool.clone());
                let (key, size, meta) = (o.key.clone(), o.size, files.footers[i].clone());
                let name = self.export.name_of(&o.key);
                async move {
                    scan::scan_file(store, key, size, meta, &spec, &pool, cores)
                        .await
                        .map(|groups| (i, groups))
                        .map_err(|e| SourceError::Engine {
                            period,
                            message: format!("{}: {e}", name.display()),
                        })
                }
            })
            .collect();
        let started = Instant::now();
        let mut read = futures::stream::iter(jobs).buffer_unordered(cores.clamp(1, 4));
        let mut all = scan::Merged::default();
        let mut fresh = Vec::new();
        while let Some(done) = read.next().await {
            let (i, groups) = done?;
            if self.keep {
                // Kept compact as soon as read: the other files' scans go on meanwhile.
                fresh.push((i, groups.keep()));
            } else {
                all.add(&groups, &pool);
            }
        }
        drop(read);
        if self.keep {
            let mut cache = self.cache();
            let partition = format!("{PARTITION_COLUMN}={period}/");
            let current: std::collections::HashSet<&str> =
                files.objects.iter().map(|o| o.key.as_ref()).collect();
            cache
                .partials
                .retain(|k, _| !k.contains(&partition) || current.contains(k.as_str()));
            for (i, groups) in fresh {
                let o = &files.objects[i];
                let groups = Arc::new(groups);
                cache.partials.insert(
                    o.key.to_string(),
                    Partial {
                        version: version(o),
                        query,
                        groups: groups.clone(),
                        pool: pool.clone(),
                    },
                );
                known[i] = Some(groups);
            }
            let groups: usize = known.iter().flatten().map(|g| g.len()).sum();
            tracing::debug!(%period, elapsed = ?started.elapsed(), groups, "scanned");
            for groups in known.into_iter().flatten() {
                all.add_kept(&groups, &pool);
            }
        }
        tracing::debug!(%period, elapsed = ?started.elapsed(), units = all.len(), "merged");
        let pool = pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let combined = (|| {
            Ok::<_, scan::ScanError>(Scanned {
                rows: scan::combine(&all, &pool)?,
                q_rows: scan::combine_q(&all, &pool)?,
                daily: scan::combine_daily(&all, &pool)?,
                scanned,
            })
        })();
        combined.map_err(|e| SourceError::Engine {
            period,
            message: e.to_string(),
        })
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
            super::DailyColumns::new,
            super::DailyColumns::decode,
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
}

/// A file's rows, and the compressed bytes of the columns in `wanted`: what a scan reads.
fn scanned_size(md: &parquet::file::metadata::ParquetMetaData, wanted: &[&str]) -> (u64, u64) {
    let rows = md.file_metadata().num_rows().max(0) as u64;
    let mut bytes = 0u64;
    for rg in md.row_groups() {
        for col in rg.columns() {
            let top = col
                .column_path()
                .parts()
                .first()
                .map(String::as_str)
                .unwrap_or("");
            if wanted.contains(&top) {
                bytes += col.compressed_size().max(0) as u64;
            }
        }
    }
    (rows, bytes)
}

/// The parameters of `rendered` as DataFusion values, in placeholder order.
fn param_values(rendered: &sql::Rendered) -> Vec<ScalarValue> {
    rendered
        .params
        .iter()
        .map(|p| ScalarValue::Utf8(Some(p.clone())))
        .collect()
}

fn check_type(file: &Path, field: &Field) -> Result<(), SourceError> {
    let t = field.data_type();
    let is_str =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let (ok, expected) = match field.name().as_str() {
        "tags" | "product" => (
            match t {
                DataType::Map(entries, _) => match entries.data_type() {
                    DataType::Struct(kv) => {
                        kv.len() == 2 && is_str(kv[0].data_type()) && is_str(kv[1].data_type())
                    }
                    _ => false,
                },
                _ => false,
            },
            "MAP<STRING,STRING>",
        ),
        "line_item_usage_start_date" | "line_item_usage_end_date" => {
            (matches!(t, DataType::Timestamp(_, _)), "TIMESTAMP")
        }
        "line_item_usage_amount" | "line_item_unblended_cost" | "line_item_net_unblended_cost" => (
            t.is_floating()
                || t.is_integer()
                || matches!(t, DataType::Decimal128(_, _) | DataType::Decimal256(_, _)),
            "DOUBLE",
        ),
        _ => (is_str(t), "STRING"),
    };
    if ok {
        Ok(())
    } else {
        Err(SourceError::WrongType {
            file: file.to_owned(),
            column: field.name().clone(),
            found: t.to_string(),
            expected: expected.to_owned(),
        })
    }
}

#[async_trait]
impl Source for LocalSource {
    async fn allocate(&self, period: BillingPeriod) -> Result<Allocation, SourceError> {
        let started = Instant::now();
        let read_before = self.export.read_bytes();
        let (objects, chosen) = self.export.period_files(period).await?;
        tracing::debug!(%period, files = objects.len(), ?chosen, "files of the period");
        let versions = versions(&objects);
        let unchanged = self
            .cache()
            .results
            .get(&period)
            .filter(|(v, _)| *v == versions)
            .map(|(_, a)| a.clone());
        if let Some(mut a) = unchanged {
            // No file of the period changed: the same answer, without a scan.
            tracing::debug!(%period, "export unchanged; not scanned again");
            a.stats = QueryStats {
                elapsed: started.elapsed(),
                scanned_bytes: Some(0),
                scanned_rows: Some(0),
                files: Some(objects.len() as u64),
                fetched_bytes: Some(self.export.read_bytes().saturating_sub(read_before)),
            };
            return Ok(a);
        }
        let files = self.check(period, objects).await?;
        let Scanned {
            rows,
            q_rows,
            scanned: (scanned_files, scanned_rows, scanned_bytes),
            ..
        } = self.allocate_files(period, &files).await?;
        tracing::debug!(%period, scanned_files, files = files.files, "allocated");
        let stats = QueryStats {
            elapsed: started.elapsed(),
            scanned_bytes: Some(scanned_bytes),
            scanned_rows: Some(scanned_rows),
            files: Some(files.files),
            fetched_bytes: Some(self.export.read_bytes().saturating_sub(read_before)),
        };
        let mut allocation = Allocation::assemble(period, rows, &self.settings.plans, stats)?;
        if self.settings.q_developer && files.columns.operation {
            allocation = allocation.with_q_developer(q_rows)?;
        }
        tracing::debug!(%period, units = allocation.units.len(), "assembled");
        if !self.keep {
            return Ok(allocation);
        }
        let mut cache = self.cache();
        cache.results.insert(period, (versions, allocation.clone()));
        while cache.results.len() > CACHED_PERIODS {
            cache.results.pop_first();
        }
        // Footers and per-file groups of periods no longer kept go with them.
        let kept: Vec<String> = cache
            .results
            .keys()
            .map(|p| format!("{PARTITION_COLUMN}={p}/"))
            .collect();
        let of_kept = |key: &str| kept.iter().any(|k| key.contains(k.as_str()));
        cache.partials.retain(|k, _| of_kept(k));
        cache.footers.retain(|k, _| of_kept(k));
        let periods: Vec<BillingPeriod> = cache.results.keys().copied().collect();
        cache.pools.retain(|p, _| periods.contains(p));
        Ok(allocation)
    }

    fn cache_bytes(&self) -> Option<u64> {
        Some(LocalSource::cache_bytes(self))
    }

    async fn daily_credits(&self, period: BillingPeriod) -> Result<Arc<DailyCredits>, SourceError> {
        let (objects, _) = self.export.period_files(period).await?;
        let versions = versions(&objects);
        let known = self
            .cache()
            .daily
            .get(&period)
            .filter(|(v, _)| *v == versions)
            .map(|(_, d)| d.clone());
        if let Some(d) = known {
            tracing::debug!(%period, "export unchanged; credits per day not summed again");
            return Ok(d);
        }
        let files = self.check(period, objects).await?;
        // A scan of its own, kept as its result only: the allocation's per-file groups stay as
        // they are.
        let mut daily = self.clone();
        daily.keep = false;
        daily.daily = true;
        let scanned = daily.allocate_files(period, &files).await?;
        let credits = Arc::new(DailyCredits::from_rows(period, scanned.daily));
        tracing::debug!(%period, seats = credits.seats.len(), "credits per day summed");
        if self.keep {
            let mut cache = self.cache();
            cache.daily.insert(period, (versions, credits.clone()));
            while cache.daily.len() > 1 {
                cache.daily.pop_first();
            }
        }
        Ok(credits)
    }

    async fn allocate_once(&self, period: BillingPeriod) -> Result<Allocation, SourceError> {
        // The same source (footer cache, store) without keeping the month's groups and result.
        let mut once = self.clone();
        once.keep = false;
        once.allocate(period).await
    }

    async fn inspect(&self, period: BillingPeriod) -> Result<Inspection, SourceError> {
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

    fn engine(&self) -> &'static str {
        "local"
    }
}

/// What [`LocalSource::allocate_files`] gives: the result rows of the allocation, of the Q
/// Developer query and of the daily query (when the source sums days), and how many files, rows
/// and bytes were scanned.
struct Scanned {
    rows: Vec<GroupRow>,
    q_rows: Vec<QRow>,
    daily: Vec<DayRow>,
    scanned: (u64, u64, u64),
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
    decode_text(batches, super::QColumns::new, super::QColumns::decode)
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
