//! The embedded engine over a CUR 2.0 export on local disk or in S3 ([`super::export`]).
//!
//! The export root holds `data/BILLING_PERIOD=YYYY-MM/…`. The period's files are the ones its
//! manifest lists, or the newest delivery ([`super::delivery`]): never two versions. Before a
//! scan, their footers are read and checked (a file that is not Parquet, or lacks a required
//! column, is named) and the optional columns present are learned. Each file that changed is
//! then scanned into its per-seat groups ([`super::scan`]), kept until it changes again, and
//! the groups of every file are combined into the result rows; `inspect` reads its facets by
//! the same files' Kiro lines ([`scan::facets`]). With the `sql` feature (the tests and the
//! benchmark), DataFusion runs the SQL template over the same files (`allocate_by_sql`,
//! `daily_credits_by_sql`, `inspect_by_sql`): the definition the scan is checked against.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use futures::StreamExt;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::file::metadata::ParquetMetaDataReader;

use super::export::{Export, Object};
use super::scan;
use super::{Inspection, Source, SourceError};
use crate::allocation::daily::{DailyCredits, DayRow};
use crate::allocation::q_developer::QRow;
use crate::allocation::sql::{self, Columns};
use crate::allocation::{Allocation, AllocationSettings, GroupRow, QueryStats};
use crate::period::BillingPeriod;

#[cfg(feature = "sql")]
mod by_sql;
#[cfg(feature = "sql")]
pub use by_sql::{DEFAULT_OPTIONS, decode, decode_q, session_config};

pub use crate::period::PARTITION_COLUMN;

/// Allocation over a CUR 2.0 export (local disk or S3) by the engine's own scan.
#[derive(Debug, Clone)]
pub struct LocalSource {
    export: Export,
    settings: AllocationSettings,
    target_partitions: usize,
    /// With the `sql` feature: DataFusion options set on top of `DEFAULT_OPTIONS` (keys
    /// without `datafusion.`).
    #[cfg(feature = "sql")]
    options: BTreeMap<String, String>,
    /// With the `sql` feature: shared by every SQL query: the export's store.
    #[cfg(feature = "sql")]
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
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
        Self {
            #[cfg(feature = "sql")]
            runtime: by_sql::runtime(&export),
            #[cfg(feature = "sql")]
            options: BTreeMap::new(),
            export,
            settings,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
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

    /// Files, and row groups of a file, scanned at once (default: the number of cores).
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
        let spec = self.scan_spec(files.columns);
        let store = self.export.store();
        let cores = self.target_partitions.max(1);
        let jobs: Vec<_> = files
            .objects
            .iter()
            .zip(&files.footers)
            .map(|(o, meta)| {
                let (store, spec) = (store.clone(), &spec);
                let (key, size, meta) = (o.key.clone(), o.size, meta.clone());
                let name = self.export.name_of(&o.key);
                async move {
                    scan::facets::facets_of_file(store, key, size, meta, spec)
                        .await
                        .map_err(|e| SourceError::Engine {
                            period,
                            message: format!("{}: {e}", name.display()),
                        })
                }
            })
            .collect();
        let mut read = futures::stream::iter(jobs).buffer_unordered(cores.clamp(1, 4));
        let mut facets = scan::facets::Facets::default();
        let engine = |e: scan::ScanError| SourceError::Engine {
            period,
            message: e.to_string(),
        };
        while let Some(done) = read.next().await {
            facets.merge(done?).map_err(engine)?;
        }
        let mut out = Inspection::new(period, files.columns);
        for v in facets.values(&spec).map_err(engine)? {
            out.add(v.facet, v.value, v.lines, v.cost);
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
