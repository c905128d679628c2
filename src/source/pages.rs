//! String columns read page by page, straight into the scan's keys: no Arrow arrays.
//!
//! The scan reads the product code (and the operation of Amazon Q lines) this way to pick the
//! rows it keeps, then the other flat string columns and the `tags` map's keys and values
//! ([`read_entries`]) of the rows it keeps. The user identifier and resource id are the costly
//! ones: other services' lines give them a distinct value each, so the writer's
//! dictionary fills and its pages fall back to plain strings, which an Arrow reader copies
//! into arrays before anything can look at them. Here a plain page is walked by its lengths,
//! a dictionary page's entries are mapped once each (when first kept), and a data page none
//! of whose rows is kept is skipped without being decompressed.
//!
//! Only what Parquet writers use for such columns is read here: PLAIN and dictionary
//! (PLAIN_DICTIONARY, RLE_DICTIONARY) values, RLE levels, data pages v1 and v2, a flat column
//! at most optional, a map's leaves repeated once. Anything else is [`PageError::Unsupported`], and
//! the scan then reads the file with the Arrow reader instead.

use std::sync::Arc;

use bytes::{Buf as _, Bytes};
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::page::{Page, PageReader as _};
use parquet::errors::ParquetError;
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::schema::types::ColumnDescriptor;

/// Why a column could not be read page by page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// A shape this reader leaves to the Arrow reader (an encoding, a nested column).
    #[error("not read page by page: {0}")]
    Unsupported(String),
    /// The file is damaged or not what its footer says.
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Parquet(#[from] ParquetError),
}

fn corrupt(what: impl Into<String>) -> PageError {
    PageError::Corrupt(what.into())
}

/// The encodings (of values and levels) this reader knows, as a column chunk lists them
/// (older writers list BIT_PACKED for levels they wrote as RLE; such pages are checked as
/// they are read).
#[allow(deprecated)]
const KNOWN: &[Encoding] = &[
    Encoding::PLAIN,
    Encoding::PLAIN_DICTIONARY,
    Encoding::RLE_DICTIONARY,
    Encoding::RLE,
    Encoding::BIT_PACKED,
];

/// Whether the column chunk can be read here, judging by the footer: a flat BYTE_ARRAY column
/// (at most optional) whose chunk lists only known encodings. Pages are checked again as they
/// are read.
pub fn readable(descr: &ColumnDescriptor, chunk: &ColumnChunkMetaData) -> bool {
    descr.physical_type() == PhysicalType::BYTE_ARRAY
        && descr.max_rep_level() == 0
        && descr.max_def_level() <= 1
        && chunk.encodings().all(|e| KNOWN.contains(&e))
}

/// One column chunk's bytes, fetched alone, read where the footer says they are in the file.
#[derive(Clone)]
pub struct Chunk {
    /// Where the chunk starts in the file.
    pub start: u64,
    pub bytes: Bytes,
}

impl Chunk {
    fn at(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let from = start
            .checked_sub(self.start)
            .map(|o| o as usize)
            .filter(|&o| o.saturating_add(length) <= self.bytes.len())
            .ok_or_else(|| {
                ParquetError::General(format!(
                    "bytes {start}..+{length} are outside the column chunk ({}..+{})",
                    self.start,
                    self.bytes.len()
                ))
            })?;
        Ok(self.bytes.slice(from..from + length))
    }
}

impl Length for Chunk {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl ChunkReader for Chunk {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let rest = (self.start + self.bytes.len() as u64).saturating_sub(start) as usize;
        Ok(self.at(start, rest)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.at(start, length)
    }
}

/// Reads a run-length / bit-packed hybrid stream (definition levels, dictionary indices) of
/// values `bit_width` bits wide: `n` values into `out`.
fn hybrid(buf: &[u8], bit_width: u8, n: usize, out: &mut Vec<u32>) -> Result<(), PageError> {
    if bit_width > 32 {
        return Err(corrupt(format!("a bit width of {bit_width}")));
    }
    out.clear();
    out.reserve(n);
    let mask = if bit_width == 32 {
        u32::MAX
    } else {
        (1u32 << bit_width) - 1
    };
    let mut pos = 0;
    while out.len() < n {
        let header = uleb128(buf, &mut pos)?;
        let left = n - out.len();
        if header & 1 == 1 {
            // Bit-packed: groups of eight values.
            let count = (header >> 1) as usize * 8;
            let bytes = (header >> 1) as usize * bit_width as usize;
            let end = pos.saturating_add(bytes).min(buf.len());
            let packed = &buf[pos..end];
            pos = end;
            let take = count.min(left);
            if take == 0 {
                return Err(corrupt("an empty bit-packed run"));
            }
            unpack(packed, bit_width, mask, take, out);
        } else {
            let count = (header >> 1) as usize;
            let width = (bit_width as usize).div_ceil(8);
            let bytes = buf
                .get(pos..pos + width)
                .ok_or_else(|| corrupt("a run past the end of its page"))?;
            pos += width;
            let mut value = [0u8; 4];
            value[..width].copy_from_slice(bytes);
            if count == 0 {
                return Err(corrupt("an empty run"));
            }
            out.resize(
                out.len() + count.min(left),
                u32::from_le_bytes(value) & mask,
            );
        }
    }
    Ok(())
}

/// `take` values of `bit_width` bits from `packed` (least significant bits first; missing
/// trailing bytes read as zero). Up to 16 bits wide, each group of eight values (`bit_width`
/// bytes) is read with one load and split with constant shifts ([`groups`]).
fn unpack(packed: &[u8], bit_width: u8, mask: u32, take: usize, out: &mut Vec<u32>) {
    let w = bit_width as usize;
    let full = take / 8;
    let done = match bit_width {
        0 => {
            out.resize(out.len() + full * 8, 0);
            full * 8
        }
        1 => groups::<1>(packed, full, out),
        2 => groups::<2>(packed, full, out),
        3 => groups::<3>(packed, full, out),
        4 => groups::<4>(packed, full, out),
        5 => groups::<5>(packed, full, out),
        6 => groups::<6>(packed, full, out),
        7 => groups::<7>(packed, full, out),
        8 => groups::<8>(packed, full, out),
        9 => groups::<9>(packed, full, out),
        10 => groups::<10>(packed, full, out),
        11 => groups::<11>(packed, full, out),
        12 => groups::<12>(packed, full, out),
        13 => groups::<13>(packed, full, out),
        14 => groups::<14>(packed, full, out),
        15 => groups::<15>(packed, full, out),
        16 => groups::<16>(packed, full, out),
        _ => 0,
    };
    for i in done..take {
        let bit = i * w;
        let (byte, shift) = (bit / 8, bit % 8);
        let word = u64::from_le_bytes(load(packed, byte));
        out.push((word >> shift) as u32 & mask);
    }
}

/// `n` whole groups of eight values `W` bits wide (`W` bytes a group) from `packed`, a load
/// per group (eight bytes up to 8 bits wide, sixteen above); returns how many values that is.
/// `W` is a constant, so the shifts and the mask are too.
fn groups<const W: usize>(packed: &[u8], n: usize, out: &mut Vec<u32>) -> usize {
    out.reserve(n * 8);
    for group in 0..n {
        let at = group * W;
        let values: [u32; 8] = if W <= 8 {
            let word = u64::from_le_bytes(load::<8>(packed, at));
            let mask = (1u64 << W) - 1;
            std::array::from_fn(|j| ((word >> (j * W)) & mask) as u32)
        } else {
            let word = u128::from_le_bytes(load::<16>(packed, at));
            let mask = (1u128 << W) - 1;
            std::array::from_fn(|j| ((word >> (j * W)) & mask) as u32)
        };
        out.extend_from_slice(&values);
    }
    n * 8
}

/// The `N` bytes of `packed` from `at`, those past its end read as zero.
fn load<const N: usize>(packed: &[u8], at: usize) -> [u8; N] {
    let mut b = [0u8; N];
    match packed.get(at..at + N) {
        Some(whole) => b.copy_from_slice(whole),
        None => {
            let rest = packed.get(at..).unwrap_or(&[]);
            let k = rest.len().min(N);
            b[..k].copy_from_slice(&rest[..k]);
        }
    }
    b
}

fn uleb128(buf: &[u8], pos: &mut usize) -> Result<u64, PageError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| corrupt("a run header past the end of its page"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(corrupt("a run header longer than 64 bits"))
}

/// PLAIN BYTE_ARRAY values: each a little-endian 32-bit length and its bytes.
struct Plain<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Plain<'a> {
    fn next(&mut self) -> Result<&'a [u8], PageError> {
        let len = self
            .buf
            .get(self.pos..self.pos + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| corrupt("a value past the end of its page"))?;
        let start = self.pos + 4;
        let v = self
            .buf
            .get(start..start.saturating_add(len))
            .ok_or_else(|| corrupt("a value past the end of its page"))?;
        self.pos = start + len;
        Ok(v)
    }
}

/// The current dictionary: its entries' bounds in its page, and each entry mapped once, when
/// first kept.
struct Dictionary<T> {
    page: Bytes,
    bounds: Vec<(u32, u32)>,
    mapped: Vec<Option<T>>,
}

impl<T: Copy> Dictionary<T> {
    fn of(page: Bytes, n: usize) -> Result<Self, PageError> {
        let mut bounds = Vec::with_capacity(n);
        let mut p = Plain { buf: &page, pos: 0 };
        for _ in 0..n {
            let v = p.next()?;
            let start = v.as_ptr() as usize - page.as_ptr() as usize;
            bounds.push((start as u32, (start + v.len()) as u32));
        }
        Ok(Self {
            page,
            bounds,
            mapped: vec![None; n],
        })
    }

    fn get(
        &mut self,
        i: u32,
        f: &mut impl FnMut(&[u8]) -> Result<T, PageError>,
    ) -> Result<T, PageError> {
        let i = i as usize;
        match self.mapped.get(i) {
            Some(Some(v)) => Ok(*v),
            Some(None) => {
                let (s, e) = self.bounds[i];
                let v = f(&self.page[s as usize..e as usize])?;
                self.mapped[i] = Some(v);
                Ok(v)
            }
            None => Err(corrupt(format!(
                "a dictionary index of {i}, beyond its {} entries",
                self.mapped.len()
            ))),
        }
    }
}

/// Buffers reused from page to page.
#[derive(Default)]
pub struct Scratch {
    /// Per value of a page: its rank among the page's non-NULL values (`u32::MAX`: NULL).
    ranks: Vec<u32>,
    indices: Vec<u32>,
    /// The rows of a page kept, from its first.
    local: Vec<u32>,
}

/// The rows of a row group read: all, or these (ascending).
#[derive(Clone, Copy)]
pub enum Select<'a> {
    All,
    Rows(&'a [u32]),
}

/// A data page's parts.
struct DataPage {
    buf: Bytes,
    /// Values (rows: the column is flat) in the page.
    n: usize,
    encoding: Encoding,
    /// Whether the column may hold NULLs (then the page has definition levels).
    optional: bool,
    /// The definition levels' bytes in `buf` (empty for a required column).
    levels: std::ops::Range<usize>,
}

impl DataPage {
    /// The data page `page`; `None` for a dictionary page, which becomes `dict`.
    fn of<T: Copy>(
        page: Page,
        optional: bool,
        dict: &mut Option<Dictionary<T>>,
    ) -> Result<Option<Self>, PageError> {
        Ok(Some(match page {
            Page::DictionaryPage {
                buf,
                num_values,
                encoding,
                ..
            } => {
                if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) {
                    return Err(PageError::Unsupported(format!(
                        "a dictionary page encoded {encoding}"
                    )));
                }
                *dict = Some(Dictionary::of(buf, num_values as usize)?);
                return Ok(None);
            }
            Page::DataPage {
                buf,
                num_values,
                encoding,
                def_level_encoding,
                ..
            } => {
                let levels = if !optional {
                    0..0
                } else if def_level_encoding != Encoding::RLE {
                    return Err(PageError::Unsupported(format!(
                        "definition levels encoded {def_level_encoding}"
                    )));
                } else {
                    let len = buf
                        .get(..4)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                        .ok_or_else(|| corrupt("a data page without its levels"))?;
                    4..4 + len
                };
                Self {
                    buf,
                    n: num_values as usize,
                    encoding,
                    optional,
                    levels,
                }
            }
            Page::DataPageV2 {
                buf,
                num_values,
                encoding,
                def_levels_byte_len,
                rep_levels_byte_len,
                ..
            } => {
                if rep_levels_byte_len != 0 {
                    return Err(PageError::Unsupported("repetition levels".into()));
                }
                Self {
                    buf,
                    n: num_values as usize,
                    encoding,
                    optional,
                    levels: 0..def_levels_byte_len as usize,
                }
            }
        }))
    }

    /// Pushes onto `out` the value of each of the page's rows in `local` (ascending, from the
    /// page's first row).
    fn read<T: Copy>(
        &self,
        local: &[u32],
        dict: &mut Option<Dictionary<T>>,
        null: T,
        (ranks, indices): (&mut Vec<u32>, &mut Vec<u32>),
        out: &mut Vec<T>,
        f: &mut impl FnMut(&[u8]) -> Result<T, PageError>,
    ) -> Result<(), PageError> {
        let Some(&last) = local.last() else {
            return Ok(());
        };
        let values = self
            .buf
            .get(self.levels.end..)
            .ok_or_else(|| corrupt("levels past the end of their page"))?;
        // Levels and values are decoded only as far as the last row kept.
        let upto = last as usize + 1;
        let present = if self.optional {
            hybrid(&self.buf[self.levels.clone()], 1, upto, ranks)?;
            let mut k = 0;
            for r in ranks.iter_mut() {
                if *r == 1 {
                    *r = k;
                    k += 1;
                } else {
                    *r = u32::MAX;
                }
            }
            k as usize
        } else {
            upto
        };
        let rank = |i: u32| if self.optional { ranks[i as usize] } else { i };
        match self.encoding {
            Encoding::PLAIN => {
                let mut plain = Plain {
                    buf: values,
                    pos: 0,
                };
                let mut at = 0;
                for &i in local {
                    let k = rank(i);
                    if k == u32::MAX {
                        out.push(null);
                        continue;
                    }
                    while at < k {
                        plain.next()?;
                        at += 1;
                    }
                    out.push(f(plain.next()?)?);
                    at += 1;
                }
            }
            Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY => {
                let dict = dict
                    .as_mut()
                    .ok_or_else(|| corrupt("dictionary indices without a dictionary page"))?;
                let (&width, packed) = values
                    .split_first()
                    .ok_or_else(|| corrupt("dictionary indices without their bit width"))?;
                hybrid(packed, width, present, indices)?;
                for &i in local {
                    let k = rank(i);
                    out.push(match indices.get(k as usize) {
                        Some(&e) => dict.get(e, f)?,
                        None => null,
                    });
                }
            }
            other => {
                return Err(PageError::Unsupported(format!("values encoded {other}")));
            }
        }
        Ok(())
    }
}

/// Reads a flat string column chunk of `rows` rows and, for each row `select` keeps, pushes
/// onto `out` `f` of its value, or `null` for a NULL. `f` is called once per dictionary entry
/// kept, and once per plain value kept. A data page none of whose rows is kept is skipped
/// unread (not decompressed).
#[allow(clippy::too_many_arguments)]
pub fn read_column<T: Copy>(
    chunk: &Chunk,
    meta: &ColumnChunkMetaData,
    descr: &ColumnDescriptor,
    rows: usize,
    select: Select<'_>,
    null: T,
    scratch: &mut Scratch,
    out: &mut Vec<T>,
    mut f: impl FnMut(&[u8]) -> Result<T, PageError>,
) -> Result<(), PageError> {
    if !readable(descr, meta) {
        return Err(PageError::Unsupported(format!(
            "column {} of type {} with encodings {:?}",
            descr.path(),
            descr.physical_type(),
            meta.encodings().collect::<Vec<_>>()
        )));
    }
    let optional = descr.max_def_level() == 1;
    let mut pages = SerializedPageReader::new(Arc::new(chunk.clone()), meta, rows, None)?;
    let mut dict: Option<Dictionary<T>> = None;
    let (mut row, mut next) = (0usize, 0usize);
    loop {
        if let Select::Rows(kept) = select {
            match pages.peek_next_page()? {
                None => break,
                Some(m) if !m.is_dict => {
                    let n = m.num_rows.or(m.num_levels).unwrap_or(0);
                    let none = kept.get(next).is_none_or(|&r| r as usize >= row + n);
                    if n > 0 && none {
                        pages.skip_next_page()?;
                        row += n;
                        continue;
                    }
                }
                Some(_) => {}
            }
        }
        let Some(page) = pages.get_next_page()? else {
            break;
        };
        let Some(page) = DataPage::of(page, optional, &mut dict)? else {
            continue;
        };
        let n = page.n;
        if row + n > rows {
            return Err(corrupt("more values than the row group has rows"));
        }
        let local = &mut scratch.local;
        local.clear();
        match select {
            Select::All => local.extend(0..n as u32),
            Select::Rows(kept) => {
                while let Some(&r) = kept.get(next).filter(|&&r| (r as usize) < row + n) {
                    local.push((r as usize - row) as u32);
                    next += 1;
                }
            }
        }
        scratch.ranks.clear();
        let buffers = (&mut scratch.ranks, &mut scratch.indices);
        page.read(&scratch.local, &mut dict, null, buffers, out, &mut f)?;
        row += n;
    }
    let all_kept = match select {
        Select::All => true,
        Select::Rows(kept) => next == kept.len(),
    };
    if row != rows || !all_kept {
        return Err(corrupt(format!(
            "{row} values in a column chunk of {rows} rows"
        )));
    }
    Ok(())
}

/// The levels and values of a page of a repeated leaf.
struct RepeatedPage<'a> {
    reps: &'a [u8],
    defs: &'a [u8],
    values: &'a [u8],
}

impl<'a> RepeatedPage<'a> {
    fn of(page: &'a Page) -> Result<Option<(Self, usize, Encoding)>, PageError> {
        let split = |buf: &'a [u8], at: usize| {
            let len = buf
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| corrupt("a data page without its levels"))?;
            buf.get(at + 4..at + 4 + len)
                .map(|l| (l, at + 4 + len))
                .ok_or_else(|| corrupt("levels past the end of their page"))
        };
        Ok(Some(match page {
            Page::DictionaryPage { .. } => return Ok(None),
            Page::DataPage {
                buf,
                num_values,
                encoding,
                def_level_encoding,
                rep_level_encoding,
                ..
            } => {
                if *def_level_encoding != Encoding::RLE || *rep_level_encoding != Encoding::RLE {
                    return Err(PageError::Unsupported("levels not RLE".into()));
                }
                let (reps, at) = split(buf, 0)?;
                let (defs, at) = split(buf, at)?;
                let values = &buf[at..];
                (Self { reps, defs, values }, *num_values as usize, *encoding)
            }
            Page::DataPageV2 {
                buf,
                num_values,
                encoding,
                def_levels_byte_len,
                rep_levels_byte_len,
                ..
            } => {
                let (r, d) = (*rep_levels_byte_len as usize, *def_levels_byte_len as usize);
                let (reps, defs, values) = (buf.get(..r), buf.get(r..r + d), buf.get(r + d..));
                let (Some(reps), Some(defs), Some(values)) = (reps, defs, values) else {
                    return Err(corrupt("levels past the end of their page"));
                };
                (Self { reps, defs, values }, *num_values as usize, *encoding)
            }
        }))
    }
}

/// Reads a leaf of a `MAP` (or list) column whose entries repeat once per row (repetition
/// level 1), for the rows `kept` keeps (ascending): for each entry of a kept row that
/// `wanted(kept index, entry index)` asks for, calls `visit(kept index, entry index, value)`
/// with `f` of the entry's value, or `None` where the value is NULL. `f` is called once per
/// dictionary entry, and once per plain value visited.
#[allow(clippy::too_many_arguments)]
pub fn read_entries<T: Copy>(
    chunk: &Chunk,
    meta: &ColumnChunkMetaData,
    descr: &ColumnDescriptor,
    rows: usize,
    kept: &[u32],
    scratch: &mut Scratch,
    mut wanted: impl FnMut(usize, u32) -> bool,
    mut f: impl FnMut(&[u8]) -> Result<T, PageError>,
    mut visit: impl FnMut(usize, u32, Option<T>),
) -> Result<(), PageError> {
    let max_def = descr.max_def_level();
    let optional_leaf = descr.self_type().is_optional();
    let entry_def = (max_def - i16::from(optional_leaf)) as u32;
    let known = descr.physical_type() == PhysicalType::BYTE_ARRAY
        && descr.max_rep_level() == 1
        && entry_def >= 1
        && meta.encodings().all(|e| KNOWN.contains(&e));
    if !known {
        return Err(PageError::Unsupported(format!(
            "column {} with encodings {:?}",
            descr.path(),
            meta.encodings().collect::<Vec<_>>()
        )));
    }
    let (max_def, def_width) = (max_def as u32, 32 - (max_def as u32).leading_zeros());
    let mut pages = SerializedPageReader::new(Arc::new(chunk.clone()), meta, rows, None)?;
    let mut dict: Option<Dictionary<T>> = None;
    let mut reps = Vec::new();
    // The row of the current slot (rows seen, so far), its entry, the next kept row.
    let (mut seen, mut entry, mut next) = (0usize, 0u32, 0usize);
    while let Some(page) = pages.get_next_page()? {
        let Some((levels, n, encoding)) = RepeatedPage::of(&page)? else {
            if let Page::DictionaryPage {
                buf, num_values, ..
            } = page
            {
                dict = Some(Dictionary::of(buf, num_values as usize)?);
            }
            continue;
        };
        hybrid(levels.reps, 1, n, &mut reps)?;
        hybrid(levels.defs, def_width as u8, n, &mut scratch.ranks)?;
        let present = scratch.ranks.iter().filter(|&&d| d == max_def).count();
        let mut plain = Plain {
            buf: levels.values,
            pos: 0,
        };
        let dictionary = matches!(
            encoding,
            Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY
        );
        if dictionary {
            let (&width, packed) = levels
                .values
                .split_first()
                .ok_or_else(|| corrupt("dictionary indices without their bit width"))?;
            hybrid(packed, width, present, &mut scratch.indices)?;
        } else if encoding != Encoding::PLAIN {
            return Err(PageError::Unsupported(format!("values encoded {encoding}")));
        }
        let (mut rank, mut plain_done) = (0, 0);
        for (&rep, &def) in reps.iter().zip(&scratch.ranks).take(n) {
            if rep == 0 {
                seen += 1;
                entry = 0;
                while kept.get(next).is_some_and(|&r| (r as usize) < seen - 1) {
                    next += 1;
                }
            } else {
                entry += 1;
            }
            let has_value = def == max_def;
            let is_kept = kept.get(next).is_some_and(|&r| r as usize == seen - 1);
            if is_kept && def >= entry_def && wanted(next, entry) {
                let value = match (has_value, dictionary) {
                    (false, _) => None,
                    (true, true) => {
                        let e = *scratch
                            .indices
                            .get(rank)
                            .ok_or_else(|| corrupt("fewer indices than values"))?;
                        let d = dict.as_mut().ok_or_else(|| {
                            corrupt("dictionary indices without a dictionary page")
                        })?;
                        Some(d.get(e, &mut f)?)
                    }
                    (true, false) => {
                        // Plain values before this one were skipped: catch up.
                        while plain_done < rank {
                            plain.next()?;
                            plain_done += 1;
                        }
                        let v = plain.next()?;
                        plain_done += 1;
                        Some(f(v)?)
                    }
                };
                visit(next, entry, value);
            }
            if has_value {
                rank += 1;
            }
        }
    }
    if seen != rows {
        return Err(corrupt(format!(
            "{seen} rows in a column chunk of {rows} rows"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_runs_read_as_the_format_defines_them() {
        // A run of five 3s (bit width 2), then one bit-packed group of eight values 0..7
        // (bit width 3: 24 bits).
        let packed: u32 = (0..8).fold(0, |acc, v| acc | (v << (3 * v)));
        let mut buf = vec![5 << 1, 3];
        let mut out = Vec::new();
        hybrid(&buf, 2, 5, &mut out).unwrap();
        assert_eq!(out, [3; 5]);
        buf = vec![(1 << 1) | 1];
        buf.extend_from_slice(&packed.to_le_bytes()[..3]);
        hybrid(&buf, 3, 8, &mut out).unwrap();
        assert_eq!(out, (0..8).collect::<Vec<_>>());
        // Fewer values wanted than the group holds: the rest is padding.
        hybrid(&buf, 3, 5, &mut out).unwrap();
        assert_eq!(out, [0, 1, 2, 3, 4]);
        // Every width, groups and a partial group: packed as the format packs them.
        for width in 1u8..=24 {
            let values: Vec<u32> = (0..21u32)
                .map(|i| i.wrapping_mul(2_654_435_761) & ((1 << width) - 1))
                .collect();
            let mut bits: Vec<bool> = Vec::new();
            for v in values.iter().chain(&[0, 0, 0]) {
                bits.extend((0..width).map(|b| v >> b & 1 == 1));
            }
            let mut packed = vec![(3 << 1) | 1];
            packed.extend(bits.chunks(8).map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i))
            }));
            hybrid(&packed, width, values.len(), &mut out).unwrap();
            assert_eq!(out, values, "width {width}");
        }
        // A bit width of zero: every value is 0.
        hybrid(&[4 << 1], 0, 4, &mut out).unwrap();
        assert_eq!(out, [0; 4]);
        // A stream that ends before its values is refused, not read past.
        assert!(hybrid(&[9 << 1], 8, 9, &mut out).is_err());
        assert!(hybrid(&[], 1, 1, &mut out).is_err());
    }
}
