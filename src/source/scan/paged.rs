//! The scan of a file on local disk: the flat string columns read page by page
//! ([`pages`]), the rest by the Arrow reader for the rows kept.
//!
//! Per row group: the product code (and, for Amazon Q's lines, the operation) picks the rows
//! kept; the other flat string columns (account, line type, usage type, operation, pricing
//! unit, region, user identifier, and the resource id where a kept line has no identifier)
//! are read for those rows only, each value mapped once per dictionary entry or distinct
//! plain value; the Arrow reader then decodes the tags, amounts, costs and dates of those
//! rows. A file the page reader cannot read (an encoding it leaves to Arrow) is read by the
//! Arrow reader alone, with the same result.

use super::*;
use crate::source::pages::Select;

/// A column chunk to read by pages: its bytes, footer and schema.
type Col<'c> = (pages::Chunk, &'c ColumnChunkMetaData, ColumnDescPtr);

/// The string columns read page by page, as they appear in the template.
const BY_PAGES: &[&str] = &[
    "line_item_product_code",
    "line_item_operation",
    "line_item_user_identifier",
    "line_item_resource_id",
    "line_item_usage_account_id",
    "line_item_line_item_type",
    "line_item_usage_type",
    "pricing_unit",
    "product_region_code",
];

/// The page-read columns' plain values, each mapped once per distinct value (dictionary
/// entries are mapped once each by the page reader).
#[derive(Default)]
pub(super) struct ByBytes {
    accounts: FastMap<Box<[u8]>, u32>,
    line_types: FastMap<Box<[u8]>, LineType>,
    usage_types: FastMap<Box<[u8]>, UsageType>,
    operations: FastMap<Box<[u8]>, Operation>,
    units: FastMap<Box<[u8]>, bool>,
    regions: FastMap<Box<[u8]>, u32>,
    identifiers: FastMap<Box<[u8]>, u32>,
    resources: FastMap<Box<[u8]>, u32>,
    cost_centers: FastMap<Box<[u8]>, u32>,
}

/// `f` of the string `v`, remembered in `m` by its bytes.
fn memo<T: Copy>(
    m: &mut FastMap<Box<[u8]>, T>,
    v: &[u8],
    f: impl FnOnce(&str) -> T,
) -> Result<T, PageError> {
    if let Some(&t) = m.get(v) {
        return Ok(t);
    }
    let t = f(utf8(v)?);
    m.insert(v.into(), t);
    Ok(t)
}

/// A string value's text (Parquet strings are UTF-8; the Arrow reader refuses others too).
fn utf8(v: &[u8]) -> Result<&str, PageError> {
    std::str::from_utf8(v).map_err(|_| PageError::Corrupt("a value that is not UTF-8".into()))
}

/// A column's leaf index, where the column is flat.
fn leaf(schema: &SchemaDescriptor, name: &str) -> Option<usize> {
    schema
        .columns()
        .iter()
        .position(|c| c.path().parts() == [name])
}

/// Reads `col` for the rows `select` keeps into `out` (cleared first).
#[allow(clippy::too_many_arguments)]
fn read<T: Copy>(
    col: Col<'_>,
    name: &'static str,
    rows: usize,
    select: Select<'_>,
    null: T,
    scratch: &mut pages::Scratch,
    out: &mut Vec<T>,
    f: impl FnMut(&[u8]) -> Result<T, PageError>,
) -> Result<(), ScanError> {
    out.clear();
    let (chunk, meta, descr) = col;
    pages::read_column(&chunk, meta, &descr, rows, select, null, scratch, out, f)
        .map_err(|e| ScanError::of_page(name, e))
}

/// The columns read page by page, by leaf (`None`: not in the export), and the projection of
/// those the Arrow reader reads.
#[derive(Clone)]
pub(super) struct PagePlan {
    code: usize,
    operation: Option<usize>,
    identifier: Option<usize>,
    resource: Option<usize>,
    account: usize,
    line_type: usize,
    usage_type: usize,
    unit: usize,
    region: Option<usize>,
    /// The `tags` map's key and value leaves.
    tags: Option<(usize, usize)>,
    others: ProjectionMask,
}

impl PagePlan {
    /// The plan for a file: `None` where a column the page reader reads is not flat (the Arrow
    /// reader then reads the file, or names what is wrong with it).
    pub(super) fn of(
        schema: &Arc<SchemaDescriptor>,
        spec: &ScanSpec,
        wanted: &[&'static str],
        arrow: &arrow::datatypes::Schema,
    ) -> Option<Self> {
        let c = spec.columns;
        let optional = |name: &str, present: bool| match present {
            true => leaf(schema, name).map(Some),
            false => Some(None),
        };
        let entries = |leaf: &str| {
            schema
                .columns()
                .iter()
                .position(|c| c.path().parts() == ["tags", "key_value", leaf])
        };
        let tags = entries("key").zip(entries("value"));
        let others = wanted
            .iter()
            .filter(|n| !BY_PAGES.contains(n))
            .filter(|n| tags.is_none() || **n != "tags")
            .map(|n| arrow.index_of(n).ok())
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            code: leaf(schema, "line_item_product_code")?,
            operation: optional("line_item_operation", c.operation)?,
            identifier: optional("line_item_user_identifier", c.user_identifier)?,
            resource: optional("line_item_resource_id", c.resource_id)?,
            account: leaf(schema, "line_item_usage_account_id")?,
            line_type: leaf(schema, "line_item_line_item_type")?,
            usage_type: leaf(schema, "line_item_usage_type")?,
            unit: leaf(schema, "pricing_unit")?,
            region: optional("product_region_code", c.region_code)?,
            tags,
            others: ProjectionMask::roots(schema, others),
        })
    }

    /// Reads the row groups `rgs` into `acc`. [`ScanError::Unsupported`] where a column holds
    /// what the page reader leaves to the Arrow reader (then nothing was added to `acc`
    /// that the caller keeps: it starts again with a new one).
    pub(super) async fn read(
        &self,
        store: &Arc<dyn ObjectStore>,
        key: &Key,
        size: u64,
        meta: &ArrowReaderMetadata,
        rgs: &[usize],
        acc: &mut Accumulator<'_>,
    ) -> Result<(), ScanError> {
        let md = meta.metadata();
        let schema = md.file_metadata().schema_descr();
        // The resource id is fetched only where a kept line has no user identifier.
        let leaves: Vec<usize> = [
            Some(self.code),
            self.operation,
            self.identifier,
            Some(self.account),
            Some(self.line_type),
            Some(self.usage_type),
            Some(self.unit),
            self.region,
        ]
        .into_iter()
        .flatten()
        .chain(self.tags.iter().flat_map(|&(k, v)| [k, v]))
        .collect();
        let mut scratch = pages::Scratch::default();
        let mut rows = Rows::default();
        let fetch_error =
            |e: object_store::Error| ScanError::Parquet(ParquetError::External(e.into()));
        for &rg in rgs {
            let group = md.row_group(rg);
            let n = usize::try_from(group.num_rows()).unwrap_or(0);
            for &l in leaves.iter().chain(&self.resource) {
                let tag_leaf = self.tags.is_some_and(|(k, v)| l == k || l == v);
                if !tag_leaf && !pages::readable(schema.column(l).as_ref(), group.column(l)) {
                    return Err(ScanError::Unsupported(format!(
                        "column {} of row group {rg}",
                        schema.column(l).path()
                    )));
                }
            }
            let range = |l: usize| {
                let (start, len) = group.column(l).byte_range();
                start..start + len
            };
            let ranges: Vec<_> = leaves.iter().map(|&l| range(l)).collect();
            let fetched = store.get_ranges(key, &ranges).await.map_err(fetch_error)?;
            let column = |l: usize| {
                let i = leaves.iter().position(|&x| x == l).unwrap_or(0);
                let chunk = pages::Chunk {
                    start: ranges[i].start,
                    bytes: fetched[i].clone(),
                };
                (chunk, group.column(l), schema.column(l))
            };
            let kept = self.kept(&column, n, acc.spec.q_developer, &mut scratch, &mut rows)?;
            if kept.is_empty() {
                continue;
            }
            acc.read_pages(self, &column, n, &kept, &mut rows, &mut scratch)?;
            if let Some((k, v)) = self.tags {
                acc.cost_centers_of(column(k), column(v), n, &kept, &mut rows, &mut scratch)?;
            }
            if rows.users.contains(&u32::MAX) {
                let resource = match self.resource {
                    Some(l) => {
                        let r = range(l);
                        let fetched = store
                            .get_ranges(key, std::slice::from_ref(&r))
                            .await
                            .map_err(fetch_error)?;
                        let bytes = fetched.into_iter().next().unwrap_or_default();
                        let chunk = pages::Chunk {
                            start: r.start,
                            bytes,
                        };
                        Some((chunk, group.column(l), schema.column(l)))
                    }
                    None => None,
                };
                acc.resources_of(resource, n, &kept, &mut rows.users, &mut scratch)?;
            }
            self.read_others(store, key, size, meta, rg, n, &kept, &rows, acc)
                .await?;
        }
        Ok(())
    }

    /// The Arrow reader's columns of row group `rg`'s `kept` rows, added to `acc` with the
    /// page reader's `rows`.
    #[allow(clippy::too_many_arguments)]
    async fn read_others(
        &self,
        store: &Arc<dyn ObjectStore>,
        key: &Key,
        size: u64,
        meta: &ArrowReaderMetadata,
        rg: usize,
        n: usize,
        kept: &[u32],
        rows: &Rows,
        acc: &mut Accumulator<'_>,
    ) -> Result<(), ScanError> {
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        for &r in kept {
            let r = r as usize;
            match runs.last_mut() {
                Some(last) if last.end == r => last.end = r + 1,
                _ => runs.push(r..r + 1),
            }
        }
        let selection = RowSelection::from_consecutive_ranges(runs.into_iter(), n);
        let reader = crate::source::export::Ranges::new(store.clone(), key.clone(), size);
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta.clone())
            .with_projection(self.others.clone())
            .with_row_groups(vec![rg])
            .with_row_selection(selection)
            .with_batch_size(BATCH_ROWS)
            .build()?;
        futures::pin_mut!(stream);
        let mut at = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if at + batch.num_rows() > kept.len() {
                break;
            }
            let tags = self.tags.is_some();
            acc.add(&batch, Some(Picked { rows, at, tags }))?;
            at += batch.num_rows();
        }
        if at != kept.len() {
            return Err(ScanError::Stopped(format!(
                "row group {rg}: {at} lines read of the {} kept",
                kept.len()
            )));
        }
        Ok(())
    }

    /// The rows of a row group of `n` rows the scan keeps (Kiro's, and with Q Developer lines
    /// Amazon Q's seat lines), as the Arrow path's row filters keep them; `rows.q` says, per
    /// kept row, whether it is a Q Developer line.
    fn kept<'c>(
        &self,
        column: &impl Fn(usize) -> Col<'c>,
        n: usize,
        q_lines: bool,
        scratch: &mut pages::Scratch,
        rows: &mut Rows,
    ) -> Result<Vec<u32>, ScanError> {
        let mut codes: Vec<u8> = Vec::with_capacity(n);
        let code = column(self.code);
        read(
            code,
            "line_item_product_code",
            n,
            Select::All,
            0,
            scratch,
            &mut codes,
            |v| {
                Ok(match v {
                    b"Kiro" => 1,
                    v if q_lines && v == PRODUCT_CODE.as_bytes() => 2,
                    _ => 0,
                })
            },
        )?;
        let amazon_q: Vec<u32> = (0..n as u32).filter(|&i| codes[i as usize] == 2).collect();
        let mut seats = Vec::new();
        if let (Some(op), false) = (self.operation, amazon_q.is_empty()) {
            let select = Select::Rows(&amazon_q);
            read(
                column(op),
                "line_item_operation",
                n,
                select,
                false,
                scratch,
                &mut seats,
                |v| Ok(utf8(v)?.to_lowercase() == SEAT_OPERATION),
            )?;
        }
        let (mut kept, mut seat) = (Vec::new(), seats.into_iter());
        rows.q.clear();
        for (i, &c) in codes.iter().enumerate() {
            let q = match c {
                1 => false,
                2 if seat.next() == Some(true) => true,
                _ => continue,
            };
            kept.push(i as u32);
            rows.q.push(q);
        }
        Ok(kept)
    }
}

impl Accumulator<'_> {
    /// The page-read columns of the `kept` rows of a row group of `n` rows, into `rows` (the
    /// users: the identifier's, `u32::MAX` where it is empty, for [`Self::resources_of`]).
    fn read_pages<'c>(
        &mut self,
        plan: &PagePlan,
        column: &impl Fn(usize) -> Col<'c>,
        n: usize,
        kept: &[u32],
        rows: &mut Rows,
        scratch: &mut pages::Scratch,
    ) -> Result<(), ScanError> {
        let (names, by, spec) = (&mut self.names, &mut self.by_bytes, self.spec);
        let select = Select::Rows(kept);
        let empty = names.id("");
        read(
            column(plan.account),
            "line_item_usage_account_id",
            n,
            select,
            empty,
            scratch,
            &mut rows.accounts,
            |v| memo(&mut by.accounts, v, |s| names.id(s)),
        )?;
        read(
            column(plan.line_type),
            "line_item_line_item_type",
            n,
            select,
            LineType::of(None),
            scratch,
            &mut rows.line_types,
            |v| memo(&mut by.line_types, v, |s| LineType::of(Some(s))),
        )?;
        let null = UsageType::of(names, None);
        read(
            column(plan.usage_type),
            "line_item_usage_type",
            n,
            select,
            null,
            scratch,
            &mut rows.usage_types,
            |v| memo(&mut by.usage_types, v, |s| UsageType::of(names, Some(s))),
        )?;
        let null = Operation::of(spec, None);
        match plan.operation {
            Some(l) => read(
                column(l),
                "line_item_operation",
                n,
                select,
                null,
                scratch,
                &mut rows.operations,
                |v| memo(&mut by.operations, v, |s| Operation::of(spec, Some(s))),
            )?,
            None => {
                rows.operations.clear();
                rows.operations.resize(kept.len(), null);
            }
        }
        read(
            column(plan.unit),
            "pricing_unit",
            n,
            select,
            false,
            scratch,
            &mut rows.units,
            |v| memo(&mut by.units, v, |s| is_credits_unit(Some(s))),
        )?;
        match plan.region {
            Some(l) => read(
                column(l),
                "product_region_code",
                n,
                select,
                u32::MAX,
                scratch,
                &mut rows.regions,
                |v| memo(&mut by.regions, v, |s| region_of(names, Some(s))),
            )?,
            None => {
                rows.regions.clear();
                rows.regions.resize(kept.len(), u32::MAX);
            }
        }
        match plan.identifier {
            Some(l) => read(
                column(l),
                "line_item_user_identifier",
                n,
                select,
                u32::MAX,
                scratch,
                &mut rows.users,
                |v| memo(&mut by.identifiers, v, |s| identifier_of(names, Some(s))),
            )?,
            None => {
                rows.users.clear();
                rows.users.resize(kept.len(), u32::MAX);
            }
        }
        Ok(())
    }

    /// The cost center of each of the `kept` rows, from the `tags` map's key and value leaves:
    /// the value of the first entry whose key is the cost-center tag, as [`MapLookup`] finds it.
    fn cost_centers_of(
        &mut self,
        keys: Col<'_>,
        values: Col<'_>,
        n: usize,
        kept: &[u32],
        rows: &mut Rows,
        scratch: &mut pages::Scratch,
    ) -> Result<(), ScanError> {
        const TAGS: &str = "tags";
        let tag = self.spec.cost_center_tag.as_bytes();
        // Per kept row: the entry holding the tag (`u32::MAX`: none).
        let mut entry = vec![u32::MAX; kept.len()];
        {
            let found = std::cell::Cell::from_mut(&mut entry[..]).as_slice_of_cells();
            let (chunk, meta, descr) = keys;
            pages::read_entries(
                &chunk,
                meta,
                &descr,
                n,
                kept,
                scratch,
                |row, _| found[row].get() == u32::MAX,
                |v| Ok(v == tag),
                |row, e, is_tag| {
                    if is_tag == Some(true) {
                        found[row].set(e);
                    }
                },
            )
            .map_err(|e| ScanError::of_page(TAGS, e))?;
        }
        let (names, by) = (&mut self.names, &mut self.by_bytes);
        let empty = names.id("");
        rows.cost_centers.clear();
        rows.cost_centers.resize(kept.len(), empty);
        let (chunk, meta, descr) = values;
        let out = &mut rows.cost_centers;
        pages::read_entries(
            &chunk,
            meta,
            &descr,
            n,
            kept,
            scratch,
            |row, e| entry[row] == e,
            |v| memo(&mut by.cost_centers, v, |s| names.id(s)),
            |row, _, id| out[row] = id.unwrap_or(empty),
        )
        .map_err(|e| ScanError::of_page(TAGS, e))?;
        Ok(())
    }

    /// Where `users` has no user yet (`u32::MAX`), the user the resource id names, or else the
    /// empty name.
    fn resources_of(
        &mut self,
        resource: Option<Col<'_>>,
        n: usize,
        kept: &[u32],
        users: &mut [u32],
        scratch: &mut pages::Scratch,
    ) -> Result<(), ScanError> {
        let (names, by) = (&mut self.names, &mut self.by_bytes);
        let empty = names.id("");
        let mut resources = Vec::new();
        if let Some(col) = resource {
            let need: Vec<u32> = kept
                .iter()
                .zip(users.iter())
                .filter(|(_, u)| **u == u32::MAX)
                .map(|(&r, _)| r)
                .collect();
            let select = Select::Rows(&need);
            read(
                col,
                "line_item_resource_id",
                n,
                select,
                empty,
                scratch,
                &mut resources,
                |v| memo(&mut by.resources, v, |s| resource_of(names, Some(s), empty)),
            )?;
        }
        let mut resources = resources.into_iter();
        for u in users.iter_mut().filter(|u| **u == u32::MAX) {
            *u = resources.next().unwrap_or(empty);
        }
        Ok(())
    }
}
