//! The allocation, built for its one question: a scan of a CUR 2.0 export's Parquet files that
//! gives, to the last digit, what the SQL template ([`crate::allocation::sql::render`]) gives,
//! without a query engine.
//!
//! Per file: `line_item_product_code = 'Kiro'` is evaluated first, on that column alone (row
//! groups whose statistics exclude `Kiro` are not read at all); the other columns are decoded
//! only for the Kiro lines. On local disk the flat string columns and the `tags` map are read
//! page by page for those lines (`scan/paged.rs`, `pages.rs`) and the Arrow reader decodes the
//! amounts, costs and dates of the same rows; in S3 (or where a file uses an encoding the page
//! reader leaves alone) arrow-rs's row filter picks the lines and its reader decodes them all,
//! with the same result. Each line is attributed (user, region, cost
//! center) and classified (tax, credits, seat fee, other) with the template's rules, the
//! string work memoised per distinct value (a month has a handful of line types, operations,
//! usage types and units), and summed into per-seat groups keyed by small integers, in
//! fixed-point at the template's scale (DECIMAL(38, 10): amounts are converted by the same
//! Arrow kernel the engines' `CAST` uses, so any order of files gives the same digits). A
//! file's groups ([`FileGroups`]) name their keys by slot in the period's [`Pool`], so they
//! merge with other files' ([`Merged`]: sums added, maxima taken) by adding into arrays,
//! exactly as the template's groups would merge, and a refresh scans only the files that
//! changed; [`combine`] then picks each seat's plan and gives the result rows.
//!
//! Memory stays bounded: row groups stream in batches, a few at a time, and only the groups
//! are kept.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Decimal128Type, Int64Type, TimeUnit};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path as Key;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, RowFilter, RowSelection,
};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::errors::ParquetError;
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::statistics::Statistics;
use parquet::schema::types::{ColumnDescPtr, SchemaDescriptor};
use rust_decimal::Decimal;

pub mod facets;
mod paged;

use super::pages::{self, PageError};
use crate::allocation::GroupRow;
use crate::allocation::daily::DayRow;
use crate::allocation::q_developer::{PRODUCT_CODE, QRow, SEAT_OPERATION};
use crate::allocation::sql::{Columns, CostColumn};
use paged::PagePlan;

/// The template's DECIMAL scale.
const SCALE: u32 = 10;
/// Rows decoded at a time.
const BATCH_ROWS: usize = 8192;

/// What the scan needs to know besides the files: the settings the template is rendered with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScanSpec {
    pub cost_center_tag: String,
    pub cost_column: CostColumn,
    /// The optional columns the export has.
    pub columns: Columns,
    /// Operations that are never credits or seats, lower-cased as the template's parameters.
    pub ignored_operations: Vec<String>,
    /// Read Q Developer seat lines too, as [`crate::allocation::sql::render_q_developer`].
    pub q_developer: bool,
    /// Sum each seat's credits per usage day too, as [`crate::allocation::sql::render_daily`].
    pub daily: bool,
}

impl ScanSpec {
    pub fn new(
        cost_center_tag: &str,
        cost_column: CostColumn,
        columns: Columns,
        ignored_operations: &[String],
        q_developer: bool,
    ) -> Self {
        Self {
            cost_center_tag: cost_center_tag.to_owned(),
            cost_column,
            columns,
            ignored_operations: ignored_operations
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            q_developer,
            daily: false,
        }
    }

    /// The same scan, summing each seat's credits per usage day too
    /// ([`crate::allocation::daily`]).
    #[must_use]
    pub fn with_daily(mut self) -> Self {
        self.daily = true;
        self
    }

    /// The columns read, besides the product code (read too when Q Developer lines are, to
    /// tell them from Kiro's): the template's ([`Columns::read`]), the net cost only when it
    /// is the cost column.
    fn read(&self) -> Vec<&'static str> {
        self.columns
            .read()
            .into_iter()
            .filter(|c| self.q_developer || *c != "line_item_product_code")
            .filter(|c| {
                *c != "line_item_net_unblended_cost" || self.cost_column == CostColumn::NetUnblended
            })
            .collect()
    }
}

/// Why a file could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("column {column}: {message}")]
    Column {
        column: &'static str,
        message: String,
    },
    #[error("the scan of a row group stopped: {0}")]
    Stopped(String),
    /// A shape the page reader leaves to the Arrow reader (never reaches a user: the file is
    /// then read by the Arrow reader).
    #[error("{0}")]
    Unsupported(String),
}

impl ScanError {
    fn of_page(column: &'static str, e: PageError) -> Self {
        match e {
            PageError::Unsupported(why) => Self::Unsupported(format!("{column}: {why}")),
            PageError::Corrupt(message) => Self::Column { column, message },
            PageError::Parquet(e) => Self::Parquet(e),
        }
    }
}

/// A line's category, in the template's order of rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Tax,
    Credits,
    Subscription,
    Other,
}

impl Category {
    /// The template's rules in order: tax; an ignored operation is other; usage or a seat-fee
    /// line that counts credits (by operation, usage type or pricing unit) is credits; another
    /// seat-fee line is subscription; the rest other.
    #[inline]
    fn of(line_type: LineType, ignored: bool, counts_credits: bool) -> Self {
        match line_type {
            LineType::Tax => Self::Tax,
            _ if ignored => Self::Other,
            LineType::Usage | LineType::FlatRateSubscription if counts_credits => Self::Credits,
            LineType::FlatRateSubscription => Self::Subscription,
            _ => Self::Other,
        }
    }
}

/// The sums of one (account, region, user, cost center) over its lines other than the seat
/// fees of a named user (those are [`SeatFee`]s), in fixed point at scale 10 and timestamps in
/// the files' unit. The template's `total_usd` is not kept: it is the sum of the categories but
/// tax. `all_cost_usd` is summed on its own, as the reconciliation's reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    credits_used: i128,
    subscription_usd: i128,
    overage_usd: i128,
    other_usd: i128,
    tax_usd: i128,
    all_cost_usd: i128,
    billed_lines: i64,
    usage_end_max: Option<i64>,
    last_seat_fee: Option<i64>,
}

impl Sums {
    /// Adds one line of `category`: its usage amount, cost, start and end.
    #[inline]
    fn add(
        &mut self,
        category: Category,
        amount: i128,
        cost: i128,
        starts: Option<i64>,
        ends: Option<i64>,
    ) {
        self.all_cost_usd = self.all_cost_usd.saturating_add(cost);
        match category {
            Category::Tax => self.tax_usd = self.tax_usd.saturating_add(cost),
            Category::Credits => {
                self.credits_used = self.credits_used.saturating_add(amount);
                self.overage_usd = self.overage_usd.saturating_add(cost);
                self.usage_end_max = self.usage_end_max.max(ends);
            }
            Category::Subscription => {
                self.last_seat_fee = self.last_seat_fee.max(starts);
                self.subscription_usd = self.subscription_usd.saturating_add(cost);
            }
            Category::Other => self.other_usd = self.other_usd.saturating_add(cost),
        }
        if category != Category::Tax {
            self.billed_lines += 1;
        }
    }

    /// Adds another file's sums of the same unit (sums added, maxima taken).
    fn merge(&mut self, o: &Self) {
        self.credits_used = self.credits_used.saturating_add(o.credits_used);
        self.subscription_usd = self.subscription_usd.saturating_add(o.subscription_usd);
        self.overage_usd = self.overage_usd.saturating_add(o.overage_usd);
        self.other_usd = self.other_usd.saturating_add(o.other_usd);
        self.tax_usd = self.tax_usd.saturating_add(o.tax_usd);
        self.all_cost_usd = self.all_cost_usd.saturating_add(o.all_cost_usd);
        self.billed_lines += o.billed_lines;
        self.usage_end_max = self.usage_end_max.max(o.usage_end_max);
        self.last_seat_fee = self.last_seat_fee.max(o.last_seat_fee);
    }
}

/// The lines of one seat fee (the template's per-seat group of a named user's subscription
/// lines: one usage type, one start); all of its cost is subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatFee {
    subscription_usd: i128,
    /// The dearest line's cost.
    sub_cost: i128,
    /// The dearest full-month line's cost (usage amount 1).
    full_fee: Option<i128>,
    lines: i64,
}

impl SeatFee {
    fn merge(&mut self, o: &Self) {
        self.subscription_usd = self.subscription_usd.saturating_add(o.subscription_usd);
        self.sub_cost = self.sub_cost.max(o.sub_cost);
        self.full_fee = self.full_fee.max(o.full_fee);
        self.lines += o.lines;
    }
}

/// The sums of one (account, user, cost center)'s Q Developer seat lines, in fixed point at
/// scale 10 (the Q Developer query's `fee_usd`, `tax_usd`, `all_cost_usd`, `billed_lines`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QSums {
    fee_usd: i128,
    tax_usd: i128,
    all_cost_usd: i128,
    billed_lines: i64,
}

impl QSums {
    #[inline]
    fn add(&mut self, tax: bool, cost: i128) {
        self.all_cost_usd = self.all_cost_usd.saturating_add(cost);
        if tax {
            self.tax_usd = self.tax_usd.saturating_add(cost);
        } else {
            self.fee_usd = self.fee_usd.saturating_add(cost);
            self.billed_lines += 1;
        }
    }

    fn merge(&mut self, o: &Self) {
        self.fee_usd = self.fee_usd.saturating_add(o.fee_usd);
        self.tax_usd = self.tax_usd.saturating_add(o.tax_usd);
        self.all_cost_usd = self.all_cost_usd.saturating_add(o.all_cost_usd);
        self.billed_lines += o.billed_lines;
    }
}

/// A Q Developer group's key: (account, user, cost center), as ids in the period's [`Pool`].
pub type QKey = [u32; 3];

/// A result row's key: (account, region, user, cost center), as ids in the period's [`Pool`].
pub type UnitKey = [u32; 4];

/// A seat's day: (account, region, user) as ids in the period's [`Pool`], and the day of the
/// line's start (days since 1970-01-01, UTC).
pub type DayKey = ([u32; 3], i32);

/// A seat fee's key: its unit, usage type (a [`Pool`] id) and start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeatKey {
    unit: UnitKey,
    usage_type: u32,
    start: Option<i64>,
}

/// A period's strings (accounts, regions, users, cost centers, usage types), each held once
/// however many files and refreshes name it, and its keys: each result row's key and each seat
/// fee's key gets a slot, a small integer, the first time a file names it. The files' groups
/// hold only slots, so merging them is adding into arrays, not hashing.
#[derive(Debug, Default)]
pub struct Pool {
    ids: FastMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
    unit_slots: FastMap<UnitKey, u32>,
    /// Per unit slot: its key and its seat's slot.
    units: Vec<(UnitKey, u32)>,
    seat_slots: FastMap<[u32; 3], u32>,
    fee_slots: FastMap<FeeKey, u32>,
    /// Per seat-fee slot: its key.
    fees: Vec<FeeKey>,
}

/// A seat fee's key in the [`Pool`]: its unit's slot, usage type and start (24 bytes, where a
/// [`SeatKey`] with the unit's four ids takes 40; a period of 50k users holds about 260,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FeeKey {
    unit: u32,
    usage_type: u32,
    start: Option<i64>,
}

impl Pool {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let name: Arc<str> = Arc::from(s);
        let id = self.names.len() as u32;
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    fn is_empty(&self, id: u32) -> bool {
        self.names[id as usize].is_empty()
    }

    /// The slot of a result row's key.
    fn unit_slot(&mut self, k: UnitKey) -> u32 {
        if let Some(&slot) = self.unit_slots.get(&k) {
            return slot;
        }
        let seats = self.seat_slots.len() as u32;
        let seat = *self.seat_slots.entry([k[0], k[1], k[2]]).or_insert(seats);
        let slot = self.units.len() as u32;
        self.units.push((k, seat));
        self.unit_slots.insert(k, slot);
        slot
    }

    /// The slot of a seat fee's key.
    fn fee_slot(&mut self, k: SeatKey) -> u32 {
        let key = FeeKey {
            unit: self.unit_slot(k.unit),
            usage_type: k.usage_type,
            start: k.start,
        };
        if let Some(&slot) = self.fee_slots.get(&key) {
            return slot;
        }
        let slot = self.fees.len() as u32;
        self.fees.push(key);
        self.fee_slots.insert(key, slot);
        slot
    }

    /// Approximate bytes held.
    pub fn memory_size(&self) -> usize {
        let entry = |key: usize, n: usize| n * (2 * key + 8 + 1);
        self.names.iter().map(|n| n.len() + 64).sum::<usize>()
            + entry(std::mem::size_of::<UnitKey>(), self.units.capacity())
            + entry(std::mem::size_of::<FeeKey>(), self.fees.capacity())
            + self.seat_slots.capacity() * 17
    }
}

/// A period's pool, shared by the scans of its files.
pub type SharedPool = Arc<std::sync::Mutex<Pool>>;

/// One file's groups: (slot, sums) by slot in the period's [`Pool`], each slot once.
#[derive(Debug, Clone, Default)]
pub struct FileGroups {
    units: Vec<(u32, Sums)>,
    seat_fees: Vec<(u32, SeatFee)>,
    /// Q Developer groups by key, each key once, sorted.
    q: Vec<(QKey, QSums)>,
    /// Credits per seat and usage day, each key once, sorted (only when the scan sums them).
    daily: Vec<(DayKey, i128)>,
    /// The timestamps' unit (the same in every file of a period).
    unit: Option<TimeUnit>,
}

/// `a` and `b`, both by slot with each slot once, as one such list: the sums of a slot in both
/// merged.
fn merge_slots<K: Ord + Copy, T: Copy>(
    a: Vec<(K, T)>,
    b: Vec<(K, T)>,
    merge: impl Fn(&mut T, &T),
) -> Vec<(K, T)> {
    let mut all = a;
    all.extend(b);
    all.sort_unstable_by_key(|(slot, _)| *slot);
    let mut out: Vec<(K, T)> = Vec::with_capacity(all.len());
    for (slot, v) in all {
        match out.last_mut() {
            Some((last, mine)) if *last == slot => merge(mine, &v),
            _ => out.push((slot, v)),
        }
    }
    out.shrink_to_fit();
    out
}

impl FileGroups {
    /// Adds `other`'s groups (of the same period) to these.
    fn merge(&mut self, other: FileGroups) {
        if self.unit.is_none() {
            self.unit = other.unit;
        }
        let units = std::mem::take(&mut self.units);
        self.units = merge_slots(units, other.units, Sums::merge);
        let fees = std::mem::take(&mut self.seat_fees);
        self.seat_fees = merge_slots(fees, other.seat_fees, SeatFee::merge);
        let q = std::mem::take(&mut self.q);
        self.q = merge_slots(q, other.q, QSums::merge);
        let daily = std::mem::take(&mut self.daily);
        self.daily = merge_slots(daily, other.daily, add_credits);
    }

    fn is_empty(&self) -> bool {
        self.units.is_empty()
            && self.seat_fees.is_empty()
            && self.q.is_empty()
            && self.daily.is_empty()
    }
}

/// The merged groups of a period's files, in arrays by slot.
#[derive(Debug, Default)]
pub struct Merged {
    units: Vec<Option<Sums>>,
    fees: Vec<Option<SeatFee>>,
    q: std::collections::BTreeMap<QKey, QSums>,
    daily: std::collections::BTreeMap<DayKey, i128>,
    unit: Option<TimeUnit>,
}

/// Adds one day's credits of a seat to another sum of the same.
fn add_credits(mine: &mut i128, other: &i128) {
    *mine = mine.saturating_add(*other);
}

/// `v` into `out[slot]`: put there, or merged with what is there.
#[inline]
fn add_at<T: Copy>(out: &mut Vec<Option<T>>, slot: u32, v: &T, merge: impl Fn(&mut T, &T)) {
    let slot = slot as usize;
    if slot >= out.len() {
        out.resize(slot + 1, None);
    }
    match &mut out[slot] {
        Some(mine) => merge(mine, v),
        empty => *empty = Some(*v),
    }
}

impl Merged {
    /// How many result rows' groups there are.
    pub fn len(&self) -> usize {
        self.units.iter().flatten().count()
    }

    /// Whether there is no group at all.
    pub fn is_empty(&self) -> bool {
        self.units.iter().all(Option::is_none)
            && self.fees.iter().all(Option::is_none)
            && self.q.is_empty()
            && self.daily.is_empty()
    }

    fn add_q(&mut self, q: &[(QKey, QSums)]) {
        for (k, s) in q {
            self.q.entry(*k).or_default().merge(s);
        }
    }

    fn reserve(&mut self, pool: &SharedPool) {
        let (units, fees) = {
            let pool = pool
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (pool.units.len(), pool.fees.len())
        };
        self.units.resize(self.units.len().max(units), None);
        self.fees.resize(self.fees.len().max(fees), None);
    }

    /// Adds one file's groups.
    pub fn add(&mut self, g: &FileGroups, pool: &SharedPool) {
        self.reserve(pool);
        self.unit = self.unit.or(g.unit);
        for (slot, s) in &g.units {
            add_at(&mut self.units, *slot, s, Sums::merge);
        }
        for (slot, f) in &g.seat_fees {
            add_at(&mut self.fees, *slot, f, SeatFee::merge);
        }
        self.add_q(&g.q);
        for (k, c) in &g.daily {
            add_credits(self.daily.entry(*k).or_default(), c);
        }
    }

    /// Adds the groups of a kept file.
    pub fn add_kept(&mut self, g: &KeptGroups, pool: &SharedPool) {
        self.reserve(pool);
        self.unit = self.unit.or(g.unit);
        for (slot, s) in &g.narrow {
            add_at(&mut self.units, *slot, &s.wide(), Sums::merge);
        }
        for (slot, s) in &g.wide {
            add_at(&mut self.units, *slot, s, Sums::merge);
        }
        for (slot, f) in &g.seat_fees {
            add_at(&mut self.fees, *slot, f, SeatFee::merge);
        }
        self.add_q(&g.q);
    }
}

/// A unit's sums as the daemon keeps them between refreshes: in 64 bits, which hold any amount
/// up to about 922 million dollars at the scale of 10 decimals; a unit whose sums do not fit is
/// kept wide ([`KeptGroups`]). `NONE` stands for a missing timestamp.
#[derive(Debug, Clone, Copy)]
struct NarrowSums {
    credits_used: i64,
    subscription_usd: i64,
    overage_usd: i64,
    other_usd: i64,
    tax_usd: i64,
    all_cost_usd: i64,
    billed_lines: i64,
    usage_end_max: i64,
    last_seat_fee: i64,
}

impl NarrowSums {
    const NONE: i64 = i64::MIN;

    /// `s` in 64 bits, if every amount fits (and no timestamp is `NONE` itself).
    fn of(s: &Sums) -> Option<Self> {
        let n = |v: i128| i64::try_from(v).ok();
        let t = |v: Option<i64>| match v {
            None => Some(Self::NONE),
            Some(Self::NONE) => None,
            Some(x) => Some(x),
        };
        Some(Self {
            credits_used: n(s.credits_used)?,
            subscription_usd: n(s.subscription_usd)?,
            overage_usd: n(s.overage_usd)?,
            other_usd: n(s.other_usd)?,
            tax_usd: n(s.tax_usd)?,
            all_cost_usd: n(s.all_cost_usd)?,
            billed_lines: s.billed_lines,
            usage_end_max: t(s.usage_end_max)?,
            last_seat_fee: t(s.last_seat_fee)?,
        })
    }

    fn wide(&self) -> Sums {
        let t = |v: i64| (v != Self::NONE).then_some(v);
        Sums {
            credits_used: self.credits_used.into(),
            subscription_usd: self.subscription_usd.into(),
            overage_usd: self.overage_usd.into(),
            other_usd: self.other_usd.into(),
            tax_usd: self.tax_usd.into(),
            all_cost_usd: self.all_cost_usd.into(),
            billed_lines: self.billed_lines,
            usage_end_max: t(self.usage_end_max),
            last_seat_fee: t(self.last_seat_fee),
        }
    }
}

/// One file's groups as the daemon keeps them between refreshes ([`FileGroups::keep`]): by
/// slot, without spare room, each unit's sums in 64 bits where they fit. Merged
/// ([`Merged::add_kept`]) they are the groups the file's scan made, to the last digit.
#[derive(Debug, Default)]
pub struct KeptGroups {
    narrow: Box<[(u32, NarrowSums)]>,
    wide: Box<[(u32, Sums)]>,
    seat_fees: Box<[(u32, SeatFee)]>,
    q: Box<[(QKey, QSums)]>,
    unit: Option<TimeUnit>,
}

impl KeptGroups {
    /// How many result rows' groups there are.
    pub fn len(&self) -> usize {
        self.narrow.len() + self.wide.len()
    }

    /// Whether there is no group at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.seat_fees.is_empty() && self.q.is_empty()
    }

    /// Approximate bytes held.
    pub fn memory_size(&self) -> usize {
        std::mem::size_of_val(&*self.narrow)
            + std::mem::size_of_val(&*self.wide)
            + std::mem::size_of_val(&*self.seat_fees)
            + std::mem::size_of_val(&*self.q)
    }
}

impl FileGroups {
    /// These groups in the compact form kept between refreshes. Credits per day are summed
    /// by scans whose groups are not kept ([`ScanSpec::with_daily`]), so they have none.
    pub fn keep(self) -> KeptGroups {
        debug_assert!(self.daily.is_empty(), "credits per day are never kept");
        let mut narrow = Vec::with_capacity(self.units.len());
        let mut wide = Vec::new();
        for (k, s) in self.units {
            match NarrowSums::of(&s) {
                Some(n) => narrow.push((k, n)),
                None => wide.push((k, s)),
            }
        }
        KeptGroups {
            narrow: narrow.into_boxed_slice(),
            wide: wide.into_boxed_slice(),
            seat_fees: self.seat_fees.into_boxed_slice(),
            q: self.q.into_boxed_slice(),
            unit: self.unit,
        }
    }
}

/// Scans one file: its per-seat groups. `meta` is the file's footer, already read and checked.
pub async fn scan_file(
    store: Arc<dyn ObjectStore>,
    key: Key,
    size: u64,
    meta: ArrowReaderMetadata,
    spec: &ScanSpec,
    pool: &SharedPool,
    concurrency: usize,
) -> Result<FileGroups, ScanError> {
    let meta = with_dictionaries(meta)?;
    let md = meta.metadata().clone();
    let parquet_schema = md.file_metadata().schema_descr_ptr();
    let root = |name: &'static str| {
        meta.schema().index_of(name).map_err(|_| ScanError::Column {
            column: name,
            message: "not in the file".into(),
        })
    };
    let code = root("line_item_product_code")?;
    // Q Developer lines are told apart by operation (read only with it).
    let operation = if spec.q_developer {
        Some(root("line_item_operation")?)
    } else {
        None
    };
    let wanted = spec.read();
    let mut roots = Vec::with_capacity(wanted.len());
    for &name in &wanted {
        roots.push(root(name)?);
    }
    // Row groups whose statistics say no line is Kiro's are not read.
    let row_groups = row_groups_read(&md, spec.q_developer);
    if row_groups.is_empty() {
        return Ok(FileGroups::default());
    }
    // On local disk (no offset index read) the flat string columns are read page by page
    // ([`paged`]); in S3 the Arrow reader fetches only the pages its row filter keeps, where
    // the page reader would fetch whole column chunks.
    let plan = if md.offset_index().is_none() {
        PagePlan::of(&parquet_schema, spec, &wanted, meta.schema())
    } else {
        None
    };
    // The row groups in `concurrency` streams, each its own task.
    let chunks = concurrency.clamp(1, row_groups.len());
    let per = row_groups.len().div_ceil(chunks);
    let tasks: Vec<_> = row_groups
        .chunks(per)
        .map(|rgs| {
            let reader = super::export::Ranges::new(store.clone(), key.clone(), size);
            let meta = meta.clone();
            let arrow = ArrowPlan {
                schema: parquet_schema.clone(),
                code,
                operation,
                roots: roots.clone(),
            };
            let rgs = rgs.to_vec();
            let spec = spec.clone();
            let pool = pool.clone();
            let (plan, store, key) = (plan.clone(), store.clone(), key.clone());
            tokio::spawn(async move {
                if let Some(plan) = plan {
                    let mut acc = Accumulator::new(&spec);
                    match plan.read(&store, &key, size, &meta, &rgs, &mut acc).await {
                        Ok(()) => return Ok(acc.finish(&pool)),
                        Err(ScanError::Unsupported(why)) => {
                            tracing::debug!(file = %key, %why, "read with the Arrow reader");
                        }
                        Err(e) => return Err(e),
                    }
                }
                let mut acc = Accumulator::new(&spec);
                arrow.read(reader, meta, rgs, &mut acc).await?;
                Ok::<_, ScanError>(acc.finish(&pool))
            })
        })
        .collect();
    let mut out = FileGroups::default();
    for r in futures::future::join_all(tasks).await {
        let groups = r.map_err(|e| ScanError::Stopped(e.to_string()))??;
        if out.is_empty() {
            out = groups;
        } else {
            out.merge(groups);
        }
    }
    Ok(out)
}

/// The Arrow reader's scan: the product code (and the operation of Amazon Q's lines) in row
/// filters, the other columns decoded for the rows they keep.
struct ArrowPlan {
    schema: Arc<SchemaDescriptor>,
    /// The product code's and the operation's (with Q Developer lines) root columns.
    code: usize,
    operation: Option<usize>,
    /// The columns read.
    roots: Vec<usize>,
}

impl ArrowPlan {
    async fn read(
        self,
        reader: super::export::Ranges,
        meta: ArrowReaderMetadata,
        rgs: Vec<usize>,
        acc: &mut Accumulator<'_>,
    ) -> Result<(), ScanError> {
        let (schema, code) = (&self.schema, self.code);
        let q = acc.spec.q_developer;
        let filter = ArrowPredicateFn::new(
            ProjectionMask::roots(schema, [code]),
            move |batch: RecordBatch| is_read(batch.column(0), q),
        );
        let mut filters: Vec<Box<dyn parquet::arrow::arrow_reader::ArrowPredicate>> =
            vec![Box::new(filter)];
        // Of Amazon Q's lines, the Q Developer seat lines only, as the template's WHERE
        // keeps them: decoded for the rows the first filter kept, no other.
        if let Some(op) = self.operation {
            filters.push(Box::new(ArrowPredicateFn::new(
                ProjectionMask::roots(schema, [code, op]),
                |batch: RecordBatch| q_seat_or_kiro(&batch),
            )));
        }
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta)
            .with_projection(ProjectionMask::roots(schema, self.roots))
            .with_row_groups(rgs)
            .with_row_filter(RowFilter::new(filters))
            .with_batch_size(BATCH_ROWS)
            .build()?;
        futures::pin_mut!(stream);
        while let Some(batch) = stream.next().await {
            acc.add(&batch?, None)?;
        }
        Ok(())
    }
}

/// The string columns read as Arrow dictionaries (a month has few distinct values in each,
/// and Parquet already stores them as dictionaries), so the per-value work is done per
/// dictionary entry.
///
/// Not the user and resource identifiers: other services' resource ids are unique per line, so
/// writers fall back to plain pages there, which the reader would hash back into a dictionary.
const DICTIONARY_COLUMNS: &[&str] = &[
    "line_item_product_code",
    "line_item_usage_account_id",
    "line_item_line_item_type",
    "line_item_usage_type",
    "line_item_operation",
    "pricing_unit",
    "product_region_code",
];

/// `meta` with [`DICTIONARY_COLUMNS`] read as dictionaries of strings.
fn with_dictionaries(meta: ArrowReaderMetadata) -> Result<ArrowReaderMetadata, ScanError> {
    use arrow::datatypes::{Field, Schema};
    let schema = meta.schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            _ if DICTIONARY_COLUMNS.contains(&f.name().as_str()) => as_dictionary(f),
            DataType::Map(entries, sorted) if f.name() == "tags" => f
                .as_ref()
                .clone()
                .with_data_type(DataType::Map(dictionary_entries(entries), *sorted)),
            _ => f.as_ref().clone(),
        })
        .collect();
    let hinted = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_schema(hinted);
    Ok(ArrowReaderMetadata::try_new(
        meta.metadata().clone(),
        options,
    )?)
}

/// `f` read as a dictionary of strings, if it is a string column; else as it is.
fn as_dictionary(f: &arrow::datatypes::FieldRef) -> arrow::datatypes::Field {
    match f.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => f.as_ref().clone().with_data_type(
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(f.data_type().clone())),
        ),
        _ => f.as_ref().clone(),
    }
}

/// A map's entries with string keys and values read as dictionaries: a month's tags have few
/// distinct keys and values, so no line's tag strings are copied.
fn dictionary_entries(entries: &arrow::datatypes::FieldRef) -> arrow::datatypes::FieldRef {
    let DataType::Struct(kv) = entries.data_type() else {
        return entries.clone();
    };
    let kv: Vec<arrow::datatypes::Field> = kv.iter().map(as_dictionary).collect();
    Arc::new(
        entries
            .as_ref()
            .clone()
            .with_data_type(DataType::Struct(kv.into())),
    )
}

/// Whether a row group's statistics of the product code leave room for `Kiro` (or, with `q`,
/// for `AmazonQ`).
pub fn may_hold(stats: Option<&Statistics>, q: bool) -> bool {
    let Some(Statistics::ByteArray(s)) = stats else {
        return true;
    };
    match (s.min_opt(), s.max_opt()) {
        (Some(min), Some(max)) => {
            let within =
                |code: &str| min.data() <= code.as_bytes() && code.as_bytes() <= max.data();
            within("Kiro") || (q && within(PRODUCT_CODE))
        }
        _ => true,
    }
}

/// The row groups whose product code statistics leave room for `Kiro` (with `q`, or for
/// `AmazonQ`): the others are not read.
fn row_groups_read(md: &parquet::file::metadata::ParquetMetaData, q: bool) -> Vec<usize> {
    let code_leaf = md
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| {
            c.path().parts().first().map(String::as_str) == Some("line_item_product_code")
        })
        .unwrap_or(0);
    md.row_groups()
        .iter()
        .enumerate()
        .filter(|(_, rg)| may_hold(rg.column(code_leaf).statistics(), q))
        .map(|(i, _)| i)
        .collect()
}

/// `line_item_product_code = 'Kiro'` (or, with `q`, `'AmazonQ'`), NULL as false.
fn is_read(column: &ArrayRef, q: bool) -> Result<BooleanArray, arrow::error::ArrowError> {
    let strings = Strings::of(column, "line_item_product_code")
        .map_err(|e| arrow::error::ArrowError::InvalidArgumentError(e.to_string()))?;
    Ok(strings.test(|code| code == "Kiro" || (q && code == PRODUCT_CODE)))
}

/// Of the lines [`is_read`] kept (columns: product code, operation), Kiro's and the Q Developer
/// seat lines.
fn q_seat_or_kiro(batch: &RecordBatch) -> Result<BooleanArray, arrow::error::ArrowError> {
    let bad = |e: ScanError| arrow::error::ArrowError::InvalidArgumentError(e.to_string());
    let code = batch
        .column_by_name("line_item_product_code")
        .ok_or_else(|| arrow::error::ArrowError::SchemaError("no product code".into()))?;
    let op = batch
        .column_by_name("line_item_operation")
        .ok_or_else(|| arrow::error::ArrowError::SchemaError("no operation".into()))?;
    let kiro = Strings::of(code, "line_item_product_code")
        .map_err(bad)?
        .test(|c| c == "Kiro");
    let seat = Strings::of(op, "line_item_operation")
        .map_err(bad)?
        .test(|o| o.to_lowercase() == SEAT_OPERATION);
    arrow::compute::or_kleene(&kiro, &seat)
}

/// A string column, whichever string type the file gives it.
enum Strings<'a> {
    Utf8(&'a arrow::array::StringArray),
    Large(&'a arrow::array::LargeStringArray),
    View(&'a arrow::array::StringViewArray),
    /// Dictionary-encoded: per row its key into the values.
    Dict(&'a arrow::array::Int32DictionaryArray, Box<Strings<'a>>),
}

impl<'a> Strings<'a> {
    fn of(a: &'a ArrayRef, column: &'static str) -> Result<Self, ScanError> {
        Self::of_dyn(a.as_ref(), column)
    }

    fn of_dyn(a: &'a dyn Array, column: &'static str) -> Result<Self, ScanError> {
        Ok(match a.data_type() {
            DataType::Utf8 => Self::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => Self::Large(a.as_string::<i64>()),
            DataType::Utf8View => Self::View(a.as_string_view()),
            DataType::Dictionary(k, _) if **k == DataType::Int32 => {
                let d = a.as_dictionary::<arrow::datatypes::Int32Type>();
                Self::Dict(d, Box::new(Self::of_dyn(d.values().as_ref(), column)?))
            }
            other => {
                return Err(ScanError::Column {
                    column,
                    message: format!("expected STRING, found {other}"),
                });
            }
        })
    }

    /// `test` of every value, NULL as false; per dictionary entry where the column is
    /// dictionary-encoded, not per row.
    fn test(&self, test: impl Fn(&str) -> bool) -> BooleanArray {
        match (self, self.by_entry(&test)) {
            (Self::Dict(d, _), Some(by_entry)) => {
                let keys = d.keys();
                (0..keys.len())
                    .map(|i| {
                        Some(
                            !keys.is_null(i)
                                && by_entry.get(keys.value(i) as usize).copied() == Some(true),
                        )
                    })
                    .collect()
            }
            _ => (0..self.len())
                .map(|i| Some(self.get(i).is_some_and(&test)))
                .collect(),
        }
    }

    /// Where the column is dictionary-encoded: `test` of each dictionary entry, by index.
    fn by_entry(&self, test: impl Fn(&str) -> bool) -> Option<Vec<bool>> {
        match self {
            Self::Dict(d, values) => Some(
                (0..d.values().len())
                    .map(|i| values.get(i).is_some_and(&test))
                    .collect(),
            ),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Utf8(a) => a.len(),
            Self::Large(a) => a.len(),
            Self::View(a) => a.len(),
            Self::Dict(d, _) => d.len(),
        }
    }

    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Self::Utf8(a) => (!a.is_null(i)).then(|| a.value(i)),
            Self::Large(a) => (!a.is_null(i)).then(|| a.value(i)),
            Self::View(a) => (!a.is_null(i)).then(|| a.value(i)),
            Self::Dict(d, values) => {
                if d.is_null(i) {
                    return None;
                }
                values.get(d.keys().value(i) as usize)
            }
        }
    }
}

/// A `MAP<STRING, STRING>` column: the value of one key per row (the first entry with that
/// key, as `map_value` and Athena's `element_at` take it).
struct MapLookup<'a> {
    map: &'a arrow::array::MapArray,
    keys: Strings<'a>,
    values: Strings<'a>,
    /// The key looked up.
    key: &'a str,
    /// With dictionary-encoded keys: which dictionary entries are the key, so that an entry is
    /// matched by its index, not by comparing strings.
    key_is: Option<Vec<bool>>,
}

impl<'a> MapLookup<'a> {
    fn of(a: &'a ArrayRef, column: &'static str, key: &'a str) -> Result<Self, ScanError> {
        let map = a.as_map_opt().ok_or_else(|| ScanError::Column {
            column,
            message: format!("expected MAP<STRING,STRING>, found {}", a.data_type()),
        })?;
        let keys = Strings::of(map.keys(), column)?;
        let key_is = keys.by_entry(|k| k == key);
        Ok(Self {
            map,
            keys,
            values: Strings::of(map.values(), column)?,
            key,
            key_is,
        })
    }

    /// The index into the values of row `row`'s entry for the key.
    fn entry(&self, row: usize) -> Option<usize> {
        if self.map.is_null(row) {
            return None;
        }
        let offsets = self.map.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        match (&self.keys, &self.key_is) {
            (Strings::Dict(d, _), Some(is)) => (start..end).find(|&i| {
                !d.is_null(i) && is.get(d.keys().value(i) as usize).copied() == Some(true)
            }),
            _ => (start..end).find(|&i| self.keys.get(i) == Some(self.key)),
        }
    }

    fn get(&self, row: usize) -> Option<&'a str> {
        self.entry(row).and_then(|i| self.values.get(i))
    }
}

/// A fast hash for the scan's own keys (small integers and short strings; nothing an outside
/// party chooses reaches a table that could be flooded beyond a file's distinct values).
type Fast = foldhash::fast::RandomState;
type FastMap<K, V> = HashMap<K, V, Fast>;

/// A line type as the template tells them apart (the comparisons are case-sensitive there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineType {
    Tax,
    Usage,
    FlatRateSubscription,
    Other,
}

/// What the template derives from a usage type: whether it ends in `-credits` (any case), its
/// prefix before the first `-` (the region when no region column names one), and itself.
#[derive(Debug, Clone, Copy)]
struct UsageType {
    credits: bool,
    prefix: u32,
    id: u32,
}

/// What the template derives from an operation: credits consumption, or an ignored one.
#[derive(Debug, Clone, Copy)]
struct Operation {
    credits: bool,
    ignored: bool,
    /// Q Developer's seat operation.
    q_seat: bool,
}

/// A string column's values mapped once per distinct value: per dictionary (the files'
/// dictionary pages arrive as Arrow dictionaries, one values array per column chunk), or per
/// string where a column is not dictionary-encoded.
struct Memo<T> {
    strings: FastMap<Box<str>, T>,
    /// The last dictionary seen and its entries mapped.
    dict: Option<(ArrayRef, Vec<T>)>,
}

impl<T: Copy> Memo<T> {
    fn new() -> Self {
        Self {
            strings: FastMap::default(),
            dict: None,
        }
    }

    /// [`Self::map`] over a column the export may lack: without it, every one of the `rows`
    /// rows is `f(None)`, as the template reads a missing column as NULL.
    fn map_optional(
        &mut self,
        a: Option<&ArrayRef>,
        rows: usize,
        column: &'static str,
        out: &mut Vec<T>,
        mut f: impl FnMut(Option<&str>) -> T,
    ) -> Result<(), ScanError> {
        match a {
            Some(a) => self.map(a, column, out, f),
            None => {
                out.clear();
                out.resize(rows, f(None));
                Ok(())
            }
        }
    }

    /// `out[i]` = `f(value of row i)` for every row of `a` (NULL as `None`), `f` called once
    /// per distinct value.
    fn map(
        &mut self,
        a: &ArrayRef,
        column: &'static str,
        out: &mut Vec<T>,
        mut f: impl FnMut(Option<&str>) -> T,
    ) -> Result<(), ScanError> {
        out.clear();
        if let DataType::Dictionary(k, _) = a.data_type()
            && **k == DataType::Int32
        {
            let d = a.as_dictionary::<arrow::datatypes::Int32Type>();
            let values = d.values();
            let fresh = !matches!(&self.dict, Some((v, _)) if Arc::ptr_eq(v, values));
            if fresh {
                let strings = Strings::of(values, column)?;
                let table = (0..values.len()).map(|i| f(strings.get(i))).collect();
                self.dict = Some((values.clone(), table));
            }
            let table = self.dict.as_ref().map(|(_, t)| t.as_slice()).unwrap_or(&[]);
            let null = f(None);
            let keys = d.keys();
            out.extend((0..d.len()).map(|i| {
                if keys.is_null(i) {
                    null
                } else {
                    table.get(keys.value(i) as usize).copied().unwrap_or(null)
                }
            }));
            return Ok(());
        }
        let strings = Strings::of(a, column)?;
        let null = f(None);
        for i in 0..a.len() {
            let v = match strings.get(i) {
                None => null,
                Some(s) => match self.strings.get(s) {
                    Some(&v) => v,
                    None => {
                        let v = f(Some(s));
                        self.strings.insert(s.into(), v);
                        v
                    }
                },
            };
            out.push(v);
        }
        Ok(())
    }
}

/// Per-seat groups of the lines seen so far, with the per-value work memoised; their strings
/// in a pool of its own until [`Accumulator::finish`].
struct Accumulator<'s> {
    spec: &'s ScanSpec,
    names: Pool,
    accounts: Memo<u32>,
    line_types: Memo<LineType>,
    usage_types: Memo<UsageType>,
    operations: Memo<Operation>,
    units: Memo<bool>,
    /// User identifiers to user ids (`u32::MAX`: empty, so the resource id decides).
    identifiers: Memo<u32>,
    /// Resource ids to user ids (the empty name where the id names no user).
    resources: Memo<u32>,
    /// The string columns the page reader reads, per distinct value of their plain pages.
    by_bytes: paged::ByBytes,
    /// Region codes (`u32::MAX`: empty, so the usage type's prefix decides).
    regions: Memo<u32>,
    /// Cost-center values of the tag to their ids.
    cost_centers: FastMap<Box<str>, u32>,
    units_sums: FastMap<UnitKey, Sums>,
    seat_fees: FastMap<SeatKey, SeatFee>,
    /// Product codes: whether a line is Q Developer's (the others read are Kiro's).
    products: Memo<bool>,
    q_sums: FastMap<QKey, QSums>,
    /// Credits per seat and usage day (only when the spec asks for them).
    daily: FastMap<DayKey, i128>,
    unit: Option<TimeUnit>,
    /// Per-row buffers, reused from batch to batch.
    rows: Rows,
}

/// A batch's columns mapped per row.
#[derive(Default)]
struct Rows {
    /// Per row: a Q Developer line (only when Q Developer lines are read).
    q: Vec<bool>,
    accounts: Vec<u32>,
    line_types: Vec<LineType>,
    usage_types: Vec<UsageType>,
    operations: Vec<Operation>,
    units: Vec<bool>,
    identifiers: Vec<u32>,
    resources: Vec<u32>,
    /// Per row: its user id (the identifier's user, or else the resource id's).
    users: Vec<u32>,
    regions: Vec<u32>,
    /// Per row, where the page reader read the tags: its cost center's id.
    cost_centers: Vec<u32>,
}

impl Rows {
    /// `o`'s rows `range`, in place of these.
    fn copy_from(&mut self, o: &Rows, range: std::ops::Range<usize>) {
        fn copy<T: Copy>(to: &mut Vec<T>, from: &[T], range: std::ops::Range<usize>) {
            to.clear();
            to.extend_from_slice(from.get(range).unwrap_or(&[]));
        }
        copy(&mut self.q, &o.q, range.clone());
        copy(&mut self.accounts, &o.accounts, range.clone());
        copy(&mut self.line_types, &o.line_types, range.clone());
        copy(&mut self.usage_types, &o.usage_types, range.clone());
        copy(&mut self.operations, &o.operations, range.clone());
        copy(&mut self.units, &o.units, range.clone());
        copy(&mut self.users, &o.users, range.clone());
        copy(&mut self.cost_centers, &o.cost_centers, range.clone());
        copy(&mut self.regions, &o.regions, range);
    }
}

/// A row group's kept rows as the page reader ([`paged`]) mapped them, from row `at` on.
#[derive(Clone, Copy)]
struct Picked<'a> {
    rows: &'a Rows,
    at: usize,
    /// Whether the page reader read the cost centers (`rows.cost_centers`) too.
    tags: bool,
}

impl LineType {
    /// As the template tells them apart (case-sensitive).
    fn of(s: Option<&str>) -> Self {
        match s.unwrap_or("") {
            "Tax" => Self::Tax,
            "Usage" => Self::Usage,
            "FlatRateSubscription" => Self::FlatRateSubscription,
            _ => Self::Other,
        }
    }
}

impl UsageType {
    fn of(names: &mut Pool, s: Option<&str>) -> Self {
        let s = s.unwrap_or("");
        let prefix = s.find('-').map_or("", |p| &s[..p]);
        Self {
            credits: s.to_lowercase().ends_with("-credits"),
            prefix: names.id(prefix),
            id: names.id(s),
        }
    }
}

impl Operation {
    fn of(spec: &ScanSpec, s: Option<&str>) -> Self {
        let lower = s.unwrap_or("").to_lowercase();
        Self {
            credits: lower == "credits",
            ignored: spec.ignored_operations.contains(&lower),
            q_seat: lower == SEAT_OPERATION,
        }
    }
}

/// Whether a pricing unit is credits.
fn is_credits_unit(s: Option<&str>) -> bool {
    s.unwrap_or("").to_lowercase() == "credits"
}

/// A region code's id (`u32::MAX`: empty, so the usage type's prefix decides).
fn region_of(names: &mut Pool, s: Option<&str>) -> u32 {
    match s {
        Some(v) if !v.is_empty() => names.id(v),
        _ => u32::MAX,
    }
}

/// A user identifier's user (`u32::MAX`: empty, so the resource id decides).
fn identifier_of(names: &mut Pool, s: Option<&str>) -> u32 {
    match s {
        Some(v) if !v.is_empty() => names.id(user_of(v)),
        _ => u32::MAX,
    }
}

/// The user a resource id names, or else `empty`.
fn resource_of(names: &mut Pool, s: Option<&str>, empty: u32) -> u32 {
    match s {
        Some(v) if v.contains("user/") => names.id(user_of(v)),
        _ => empty,
    }
}

const CAST: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow::util::display::FormatOptions::new(),
};

/// A money or amount column as DECIMAL(38, 10), with the template's `COALESCE(x, 0)`.
fn decimals(a: &ArrayRef, column: &'static str) -> Result<ArrayRef, ScanError> {
    cast_with_options(a, &DataType::Decimal128(38, SCALE as i8), &CAST).map_err(|e| {
        ScanError::Column {
            column,
            message: e.to_string(),
        }
    })
}

/// `first` where it is not NULL, else `second` (of the same type, or both as DOUBLE).
fn coalesce(first: &ArrayRef, second: &ArrayRef) -> Result<ArrayRef, ScanError> {
    let (first, second) = if first.data_type() == second.data_type() {
        (first.clone(), second.clone())
    } else {
        (
            cast_with_options(first, &DataType::Float64, &CAST)?,
            cast_with_options(second, &DataType::Float64, &CAST)?,
        )
    };
    let present = arrow::compute::is_not_null(&first)?;
    Ok(arrow::compute::kernels::zip::zip(
        &present, &first, &second,
    )?)
}

/// A timestamp column's raw values (in its own unit) and that unit.
fn timestamps(a: &ArrayRef, column: &'static str) -> Result<(ArrayRef, TimeUnit), ScanError> {
    let DataType::Timestamp(unit, _) = a.data_type() else {
        return Err(ScanError::Column {
            column,
            message: format!("expected TIMESTAMP, found {}", a.data_type()),
        });
    };
    let raw = cast_with_options(a, &DataType::Int64, &CAST)?;
    Ok((raw, *unit))
}

/// The user id in a principal: what follows its first `user/`, else the whole of it.
fn user_of(principal: &str) -> &str {
    match principal.find("user/") {
        Some(p) => &principal[p + 5..],
        None => principal,
    }
}

impl<'s> Accumulator<'s> {
    fn new(spec: &'s ScanSpec) -> Self {
        Self {
            spec,
            names: Pool::default(),
            accounts: Memo::new(),
            line_types: Memo::new(),
            usage_types: Memo::new(),
            operations: Memo::new(),
            units: Memo::new(),
            identifiers: Memo::new(),
            resources: Memo::new(),
            by_bytes: paged::ByBytes::default(),
            regions: Memo::new(),
            cost_centers: FastMap::default(),
            units_sums: FastMap::default(),
            seat_fees: FastMap::default(),
            products: Memo::new(),
            q_sums: FastMap::default(),
            daily: FastMap::default(),
            unit: None,
            rows: Rows::default(),
        }
    }

    /// Maps the batch's string columns per row, once per distinct value; or takes them from
    /// `picked`, where the page reader mapped them.
    fn map_rows(&mut self, b: &RecordBatch, picked: Option<Picked<'_>>) -> Result<(), ScanError> {
        if let Some(p) = picked {
            self.rows.copy_from(p.rows, p.at..p.at + b.num_rows());
            return Ok(());
        }
        let col = |name: &'static str| {
            b.column_by_name(name).ok_or(ScanError::Column {
                column: name,
                message: "not read".into(),
            })
        };
        let (names, rows, spec) = (&mut self.names, &mut self.rows, self.spec);
        if spec.q_developer {
            self.products.map(
                col("line_item_product_code")?,
                "line_item_product_code",
                &mut rows.q,
                |s| s == Some(PRODUCT_CODE),
            )?;
        }
        self.accounts.map(
            col("line_item_usage_account_id")?,
            "line_item_usage_account_id",
            &mut rows.accounts,
            |s| names.id(s.unwrap_or("")),
        )?;
        self.line_types.map(
            col("line_item_line_item_type")?,
            "line_item_line_item_type",
            &mut rows.line_types,
            LineType::of,
        )?;
        self.usage_types.map(
            col("line_item_usage_type")?,
            "line_item_usage_type",
            &mut rows.usage_types,
            |s| UsageType::of(names, s),
        )?;
        let (n, c) = (b.num_rows(), spec.columns);
        let optional = |name: &str, present: bool| b.column_by_name(name).filter(|_| present);
        self.operations.map_optional(
            optional("line_item_operation", c.operation),
            n,
            "line_item_operation",
            &mut rows.operations,
            |s| Operation::of(spec, s),
        )?;
        self.units
            .map(col("pricing_unit")?, "pricing_unit", &mut rows.units, |s| {
                is_credits_unit(s)
            })?;
        self.regions.map_optional(
            optional("product_region_code", c.region_code),
            n,
            "product_region_code",
            &mut rows.regions,
            |s| region_of(names, s),
        )?;
        self.identifiers.map_optional(
            optional("line_item_user_identifier", c.user_identifier),
            n,
            "line_item_user_identifier",
            &mut rows.identifiers,
            |s| identifier_of(names, s),
        )?;
        let empty = names.id("");
        self.resources.map_optional(
            optional("line_item_resource_id", c.resource_id),
            n,
            "line_item_resource_id",
            &mut rows.resources,
            |s| resource_of(names, s, empty),
        )?;
        rows.users.clear();
        rows.users.extend(
            rows.identifiers
                .iter()
                .zip(&rows.resources)
                .map(|(&i, &r)| if i == u32::MAX { r } else { i }),
        );
        Ok(())
    }

    /// Adds a batch of Kiro lines (with their user ids and Q Developer lines in `picked`, when
    /// the page reader found them).
    fn add(&mut self, b: &RecordBatch, picked: Option<Picked<'_>>) -> Result<(), ScanError> {
        let col = |name: &'static str| {
            b.column_by_name(name).ok_or(ScanError::Column {
                column: name,
                message: "not read".into(),
            })
        };
        self.map_rows(b, picked)?;
        let c = self.spec.columns;
        // The region from the product map, where the export has no region-code column.
        let product = match (c.region_code, c.product, b.column_by_name("product")) {
            (false, true, Some(p)) => Some(MapLookup::of(p, "product", "region")?),
            _ => None,
        };
        let tag = self.spec.cost_center_tag.as_str();
        let tags = match picked {
            Some(p) if p.tags => None,
            _ => Some(MapLookup::of(col("tags")?, "tags", tag)?),
        };
        // Cost-center ids per entry of the tag values' dictionary, found on first use.
        let mut cost_centers = match tags.as_ref().map(|t| &t.values) {
            Some(Strings::Dict(d, _)) => vec![u32::MAX; d.values().len()],
            _ => Vec::new(),
        };
        let amount = decimals(col("line_item_usage_amount")?, "line_item_usage_amount")?;
        let amount = amount.as_primitive::<Decimal128Type>();
        // COALESCE(net, unblended, 0): the net cost where there is one, taken before the
        // cast, as the template does.
        let cost_column = match b.column_by_name("line_item_net_unblended_cost") {
            Some(net) => coalesce(net, col("line_item_unblended_cost")?)?,
            None => col("line_item_unblended_cost")?.clone(),
        };
        let cost = decimals(&cost_column, self.spec.cost_column.column())?;
        let cost = cost.as_primitive::<Decimal128Type>();
        let (start, unit) = timestamps(
            col("line_item_usage_start_date")?,
            "line_item_usage_start_date",
        )?;
        let (end, _) = timestamps(col("line_item_usage_end_date")?, "line_item_usage_end_date")?;
        self.unit = Some(unit);
        let (start, end) = (
            start.as_primitive::<Int64Type>(),
            end.as_primitive::<Int64Type>(),
        );
        let one = 10i128.pow(SCALE);
        let per_day = self.spec.daily.then(|| ticks_per_day(unit));
        let rows = std::mem::take(&mut self.rows);
        let q_lines = self.spec.q_developer;
        for i in 0..b.num_rows() {
            let user_id = rows.users[i];
            let cost_center = match &tags {
                Some(tags) => self.cost_center_at(tags, &mut cost_centers, i),
                None => rows.cost_centers[i],
            };
            if q_lines && rows.q[i] {
                self.add_q([rows.accounts[i], user_id, cost_center], &rows, i, cost);
                continue;
            }
            let ut = rows.usage_types[i];
            let region = match rows.regions[i] {
                u32::MAX => match product.as_ref().and_then(|p| p.get(i)) {
                    Some(r) if !r.is_empty() => self.names.id(r),
                    _ => ut.prefix,
                },
                id => id,
            };
            let op = rows.operations[i];
            let category = Category::of(
                rows.line_types[i],
                op.ignored,
                op.credits || ut.credits || rows.units[i],
            );
            let amount = if amount.is_null(i) {
                0
            } else {
                amount.value(i)
            };
            let cost = if cost.is_null(i) { 0 } else { cost.value(i) };
            let starts = (!start.is_null(i)).then(|| start.value(i));
            let ends = (!end.is_null(i)).then(|| end.value(i));
            let unit = [rows.accounts[i], region, user_id, cost_center];
            if category == Category::Subscription && !self.names.is_empty(user_id) {
                let key = SeatKey {
                    unit,
                    usage_type: ut.id,
                    start: starts,
                };
                self.add_fee(key, cost, amount == one);
                continue;
            }
            if let (Some(per_day), Category::Credits) = (per_day, category) {
                self.add_day(unit, starts, per_day, amount);
            }
            self.units_sums
                .entry(unit)
                .or_default()
                .add(category, amount, cost, starts, ends);
        }
        self.rows = rows;
        Ok(())
    }

    /// Adds a seat-fee line of `cost` to its seat fee (`full`: a full month's line).
    #[inline]
    fn add_fee(&mut self, key: SeatKey, cost: i128, full: bool) {
        let fee = SeatFee {
            subscription_usd: cost,
            sub_cost: cost,
            full_fee: full.then_some(cost),
            lines: 1,
        };
        match self.seat_fees.get_mut(&key) {
            Some(mine) => mine.merge(&fee),
            None => {
                self.seat_fees.insert(key, fee);
            }
        }
    }

    /// Adds a credits line of `unit` that starts at `starts` to its seat's day, where the line
    /// names a user and has a start, as the daily query counts it.
    #[inline]
    fn add_day(&mut self, unit: UnitKey, starts: Option<i64>, per_day: i64, amount: i128) {
        if let Some(t) = starts
            && !self.names.is_empty(unit[2])
        {
            let day = t.div_euclid(per_day) as i32;
            let sum = self.daily.entry(([unit[0], unit[1], unit[2]], day));
            add_credits(sum.or_default(), &amount);
        }
    }

    /// Adds row `i`, a Q Developer line: a seat line is summed apart, never a Kiro figure.
    #[inline]
    fn add_q(
        &mut self,
        key: QKey,
        rows: &Rows,
        i: usize,
        cost: &arrow::array::PrimitiveArray<Decimal128Type>,
    ) {
        if rows.operations[i].q_seat {
            let cost = if cost.is_null(i) { 0 } else { cost.value(i) };
            let tax = rows.line_types[i] == LineType::Tax;
            self.q_sums.entry(key).or_default().add(tax, cost);
        }
    }

    /// The cost center of row `i` (its value in `tags`); with dictionary-encoded values
    /// each entry's id is found once, in `memo` (per entry of the dictionary, `u32::MAX`: not
    /// yet).
    #[inline]
    fn cost_center_at(&mut self, tags: &MapLookup<'_>, memo: &mut [u32], i: usize) -> u32 {
        match (tags.entry(i), &tags.values) {
            (Some(e), Strings::Dict(d, values)) if !d.is_null(e) => {
                let k = d.keys().value(e) as usize;
                match memo.get(k) {
                    Some(&id) if id != u32::MAX => id,
                    _ => {
                        let id = self.cost_center_id(values.get(k));
                        if let Some(slot) = memo.get_mut(k) {
                            *slot = id;
                        }
                        id
                    }
                }
            }
            (e, values) => self.cost_center_id(e.and_then(|e| values.get(e))),
        }
    }

    /// The id of a line's cost center (`""`: no tag, or an empty one), remembered by value.
    #[inline]
    fn cost_center_id(&mut self, tag: Option<&str>) -> u32 {
        match tag {
            None | Some("") => self.names.id(""),
            Some(v) => match self.cost_centers.get(v) {
                Some(&id) => id,
                None => {
                    let id = self.names.id(v);
                    self.cost_centers.insert(v.into(), id);
                    id
                }
            },
        }
    }

    /// The groups, their strings and keys moved to the period's `pool` (locked once), by slot.
    fn finish(self, pool: &SharedPool) -> FileGroups {
        let mut pool = pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ids: Vec<u32> = self.names.names.iter().map(|n| pool.id(n)).collect();
        let id = |i: u32| ids[i as usize];
        let unit = |u: UnitKey| u.map(id);
        let mut units: Vec<(u32, Sums)> = self
            .units_sums
            .into_iter()
            .map(|(k, v)| (pool.unit_slot(unit(k)), v))
            .collect();
        let mut q: Vec<(QKey, QSums)> = self
            .q_sums
            .into_iter()
            .map(|(k, v)| (k.map(id), v))
            .collect();
        let mut daily: Vec<(DayKey, i128)> = self
            .daily
            .into_iter()
            .map(|((seat, day), v)| ((seat.map(id), day), v))
            .collect();
        let mut seat_fees: Vec<(u32, SeatFee)> = self
            .seat_fees
            .into_iter()
            .map(|(k, v)| {
                let k = SeatKey {
                    unit: unit(k.unit),
                    usage_type: id(k.usage_type),
                    start: k.start,
                };
                (pool.fee_slot(k), v)
            })
            .collect();
        drop(pool);
        units.sort_unstable_by_key(|(slot, _)| *slot);
        seat_fees.sort_unstable_by_key(|(slot, _)| *slot);
        q.sort_unstable_by_key(|(k, _)| *k);
        daily.sort_unstable_by_key(|(k, _)| *k);
        FileGroups {
            units,
            seat_fees,
            q,
            daily,
            unit: self.unit,
        }
    }
}

/// A timestamp unit's ticks in a day.
fn ticks_per_day(unit: TimeUnit) -> i64 {
    const SECONDS: i64 = 86_400;
    match unit {
        TimeUnit::Second => SECONDS,
        TimeUnit::Millisecond => SECONDS * 1_000,
        TimeUnit::Microsecond => SECONDS * 1_000_000,
        TimeUnit::Nanosecond => SECONDS * 1_000_000_000,
    }
}

fn to_time(unit: Option<TimeUnit>, v: Option<i64>) -> Option<DateTime<Utc>> {
    let v = v?;
    // As the engines' result is read: truncated to microseconds.
    let micros = match unit.unwrap_or(TimeUnit::Microsecond) {
        TimeUnit::Second => v.checked_mul(1_000_000)?,
        TimeUnit::Millisecond => v.checked_mul(1_000)?,
        TimeUnit::Microsecond => v,
        TimeUnit::Nanosecond => v / 1_000,
    };
    DateTime::<Utc>::from_timestamp_micros(micros)
}

/// A fixed-point sum as a decimal; a sum beyond what the result holds is an error, as the
/// engines' DECIMAL(38, 10) sums overflow.
fn money(v: i128) -> Result<Decimal, ScanError> {
    Decimal::try_from_i128_with_scale(v, SCALE).map_err(|e| ScanError::Column {
        column: "line_item_unblended_cost",
        message: format!("a sum does not fit DECIMAL(38, 10): {e}"),
    })
}

/// The result rows from the merged groups of a period's files (their strings in `pool`): each
/// seat's plan (the usage type of its dearest seat fee, as the month is billed at the highest
/// tier; then the latest; then the greater name), then per (account, region, user, cost
/// center) the sums, as the template's `planned` window and final `SELECT`.
pub fn combine(all: &Merged, pool: &Pool) -> Result<Vec<GroupRow>, ScanError> {
    // The plan of each seat (a fee slot per seat slot): the order of the window's ORDER BY
    // (sub_cost DESC NULLS LAST, sub_start DESC NULLS LAST, sub_type DESC).
    let rank = |k: &FeeKey, f: &SeatFee| {
        (
            k.start.is_some(),
            f.sub_cost,
            k.start,
            pool.name(k.usage_type),
        )
    };
    let fees = || {
        all.fees.iter().enumerate().filter_map(|(slot, f)| {
            let k = &pool.fees[slot];
            f.as_ref().map(|f| (k, k.unit as usize, f))
        })
    };
    let mut plans: Vec<Option<(&FeeKey, &SeatFee)>> = vec![None; pool.seat_slots.len()];
    for (k, unit, f) in fees() {
        let plan = &mut plans[pool.units[unit].1 as usize];
        match plan {
            Some((bk, bf)) if rank(k, f) <= rank(bk, bf) => {}
            _ => *plan = Some((k, f)),
        }
    }
    /// A result row with its sums still in fixed point, and its plan's full-month fee.
    #[derive(Default)]
    struct Pending {
        sums: Sums,
        seat_fee_lines: i64,
        plan_fee: Option<i128>,
    }
    let mut rows: Vec<Option<Pending>> = Vec::new();
    rows.resize_with(pool.units.len(), || None);
    for (slot, s) in all.units.iter().enumerate() {
        if let Some(s) = s {
            rows[slot].get_or_insert_default().sums.merge(s);
        }
    }
    for (k, unit, f) in fees() {
        let p = rows[unit].get_or_insert_default();
        let s = &mut p.sums;
        s.subscription_usd = s.subscription_usd.saturating_add(f.subscription_usd);
        s.all_cost_usd = s.all_cost_usd.saturating_add(f.subscription_usd);
        s.billed_lines += f.lines;
        s.last_seat_fee = s.last_seat_fee.max(k.start);
        if k.start.is_some() {
            p.seat_fee_lines += 1;
        }
        let plan = plans[pool.units[unit].1 as usize];
        if plan.is_some_and(|(pk, _)| pk.usage_type == k.usage_type) {
            p.plan_fee = p.plan_fee.max(f.full_fee);
        }
    }
    // The result's order, (account, region, user, cost center), sorted as slots: the rows
    // are made in it rather than moved about by a sort.
    let names = |slot: usize| pool.units[slot].0.map(|id| pool.name(id));
    let mut order: Vec<usize> = (0..rows.len()).filter(|&s| rows[s].is_some()).collect();
    order.sort_unstable_by(|&a, &b| names(a).cmp(&names(b)));
    // Made into room for all of them at once: a collect through `?` would grow it by
    // doubling, moving every row made so far each time.
    let mut out = Vec::with_capacity(order.len());
    for slot in order {
        let Some(p) = rows[slot].take() else { continue };
        let (k, seat) = &pool.units[slot];
        out.push({
            let s = p.sums;
            let total = s
                .subscription_usd
                .saturating_add(s.overage_usd)
                .saturating_add(s.other_usd);
            let plan = plans[*seat as usize].map(|(pk, _)| pool.name(pk.usage_type).to_owned());
            GroupRow {
                account_id: pool.name(k[0]).to_owned(),
                region: pool.name(k[1]).to_owned(),
                user_id: pool.name(k[2]).to_owned(),
                cost_center: pool.name(k[3]).to_owned(),
                plan_usage_type: plan,
                credits_used: money(s.credits_used)?,
                subscription_usd: money(s.subscription_usd)?,
                overage_usd: money(s.overage_usd)?,
                other_usd: money(s.other_usd)?,
                total_usd: money(total)?,
                tax_usd: money(s.tax_usd)?,
                all_cost_usd: money(s.all_cost_usd)?,
                plan_fee_usd: p.plan_fee.map(money).transpose()?,
                billed_lines: s.billed_lines,
                seat_fee_lines: p.seat_fee_lines,
                usage_end_max: to_time(all.unit, s.usage_end_max),
                last_seat_fee: to_time(all.unit, s.last_seat_fee),
            }
        });
    }
    Ok(out)
}

/// The Q Developer query's rows from the merged groups of a period's files (their strings in
/// `pool`), sorted by (account, user, cost center) as the query orders them.
pub fn combine_q(all: &Merged, pool: &Pool) -> Result<Vec<QRow>, ScanError> {
    let mut out: Vec<QRow> = all
        .q
        .iter()
        .map(|(k, s)| {
            Ok(QRow {
                account_id: pool.name(k[0]).to_owned(),
                user_id: pool.name(k[1]).to_owned(),
                cost_center: pool.name(k[2]).to_owned(),
                fee_usd: money(s.fee_usd)?,
                tax_usd: money(s.tax_usd)?,
                all_cost_usd: money(s.all_cost_usd)?,
                billed_lines: s.billed_lines,
            })
        })
        .collect::<Result<_, ScanError>>()?;
    out.sort_by(|a, b| {
        (&a.account_id, &a.user_id, &a.cost_center).cmp(&(
            &b.account_id,
            &b.user_id,
            &b.cost_center,
        ))
    });
    Ok(out)
}

/// The daily query's rows ([`crate::allocation::sql::render_daily`]) from the merged groups of
/// a period's files scanned with [`ScanSpec::with_daily`] (their strings in `pool`).
pub fn combine_daily(all: &Merged, pool: &Pool) -> Result<Vec<DayRow>, ScanError> {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    all.daily
        .iter()
        .map(|((seat, day), credits)| {
            let day = epoch
                .checked_add_signed(chrono::Duration::days(i64::from(*day)))
                .ok_or_else(|| ScanError::Column {
                    column: "line_item_usage_start_date",
                    message: format!("day {day} after 1970-01-01 is not a date"),
                })?;
            Ok(DayRow {
                account_id: pool.name(seat[0]).to_owned(),
                region: pool.name(seat[1]).to_owned(),
                user_id: pool.name(seat[2]).to_owned(),
                day,
                credits: money(*credits)?,
            })
        })
        .collect()
}
