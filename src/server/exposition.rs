//! The exposition as it is kept and served: the data families compressed once per refresh,
//! the exporter's own metrics after them.
//!
//! The families are a raw deflate stream ended with a sync flush (byte-aligned, no final
//! block), with the CRC-32 and length of the text they hold. The exporter's own metrics are
//! compressed on their own at each publish and ended with the final block; a stream that
//! stops at a sync flush can be followed by any other (as `gzjoin` joins gzip files). So:
//! - a gzip scrape is a gzip header, the families, the own metrics and a trailer whose CRC
//!   continues the families' over the own metrics: the stored pieces in a row, nothing copied;
//! - a plain scrape is inflated from the families as it is sent, a bounded chunk at a time,
//!   and followed by the own metrics as text.
//!
//! At 50,000 users the families are about 90 MB as text and 20 MB compressed: only the
//! compressed copy is kept between refreshes. Prometheus asks for gzip; a plain scrape costs an
//! inflate of the families (a few hundred milliseconds of one core at that size).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use hyper::body::{Frame, SizeHint};

/// A compression or inflation that failed: only possible through a programming error (the
/// streams are ours), reported rather than served.
#[derive(Debug, thiserror::Error)]
#[error("exposition {what}: {detail}")]
pub struct ExpositionError {
    what: &'static str,
    detail: String,
}

impl ExpositionError {
    fn new(what: &'static str, detail: impl ToString) -> Self {
        Self {
            what,
            detail: detail.to_string(),
        }
    }
}

/// Compression level: deflate's fastest (the families are compressed once per refresh, at
/// 50,000 users about 90 MB of text).
fn level() -> Compression {
    Compression::fast()
}

/// Data families, compressed: a raw deflate stream left open with a sync flush, and the
/// CRC-32 and length of their text. Cloning shares the bytes.
#[derive(Debug, Clone, Default)]
pub struct Families {
    deflate: Bytes,
    crc: u32,
    len: u64,
}

/// Compresses data families as they are written, so their text is never held whole.
pub struct FamiliesWriter {
    compress: Compress,
    out: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
}

/// Free room kept in the output before each call to the compressor.
const ROOM: usize = 64 * 1024;

impl Default for FamiliesWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl FamiliesWriter {
    pub fn new() -> Self {
        Self {
            compress: Compress::new(level(), false),
            out: Vec::new(),
            crc: crc32fast::Hasher::new(),
            len: 0,
        }
    }

    /// Adds `data` to the families' text.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ExpositionError> {
        self.crc.update(data);
        self.len += data.len() as u64;
        feed(&mut self.compress, &mut self.out, data)
    }

    /// The families, their stream flushed to a byte boundary and left open.
    pub fn finish(mut self) -> Result<Families, ExpositionError> {
        end(&mut self.compress, &mut self.out, FlushCompress::Sync)?;
        self.out.shrink_to_fit();
        Ok(Families {
            deflate: Bytes::from(self.out),
            crc: self.crc.finalize(),
            len: self.len,
        })
    }
}

/// Compresses all of `data` into `out`, without flushing.
fn feed(c: &mut Compress, out: &mut Vec<u8>, mut data: &[u8]) -> Result<(), ExpositionError> {
    while !data.is_empty() {
        out.reserve(ROOM);
        let before = c.total_in();
        c.compress_vec(data, out, FlushCompress::None)
            .map_err(|e| ExpositionError::new("compression", e))?;
        data = &data[(c.total_in() - before) as usize..];
    }
    Ok(())
}

/// Flushes `c` into `out` with `flush` until it has nothing more to write: zlib's rule, a
/// flush is complete when the compressor leaves free room in the output.
fn end(c: &mut Compress, out: &mut Vec<u8>, flush: FlushCompress) -> Result<(), ExpositionError> {
    loop {
        out.reserve(ROOM);
        let status = c
            .compress_vec(&[], out, flush)
            .map_err(|e| ExpositionError::new("compression", e))?;
        if status == Status::StreamEnd || out.len() < out.capacity() {
            return Ok(());
        }
    }
}

/// gzip's header: deflate, no name or time, fastest compression, unknown system.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff];

/// The exposition as served: the data families (if any) and the exporter's own metrics.
#[derive(Debug, Clone)]
pub struct Exposition {
    families: Families,
    own: Bytes,
    own_deflate: Bytes,
    /// gzip's trailer: the CRC-32 and length of the whole text.
    trailer: Bytes,
}

impl Exposition {
    /// The exposition of `families` followed by the exporter's own metrics `own` (text).
    pub fn new(families: Option<Families>, own: Bytes) -> Result<Self, ExpositionError> {
        let families = families.unwrap_or_default();
        let mut c = Compress::new(level(), false);
        let mut own_deflate = Vec::with_capacity(own.len() / 4 + 64);
        feed(&mut c, &mut own_deflate, &own)?;
        end(&mut c, &mut own_deflate, FlushCompress::Finish)?;
        own_deflate.shrink_to_fit();
        let mut crc = crc32fast::Hasher::new_with_initial_len(families.crc, families.len);
        crc.update(&own);
        let total = families.len + own.len() as u64;
        let mut trailer = [0; 8];
        trailer[..4].copy_from_slice(&crc.finalize().to_le_bytes());
        // ISIZE: the length modulo 2^32, as RFC 1952 defines it.
        trailer[4..].copy_from_slice(&(total as u32).to_le_bytes());
        Ok(Self {
            families,
            own,
            own_deflate: Bytes::from(own_deflate),
            trailer: Bytes::copy_from_slice(&trailer),
        })
    }

    /// The plain text's length.
    pub fn plain_len(&self) -> u64 {
        self.families.len + self.own.len() as u64
    }

    /// The gzip body's pieces: header, the families' stream, the own metrics' and trailer.
    fn gzip_pieces(&self) -> [Bytes; 4] {
        [
            Bytes::from_static(&GZIP_HEADER),
            self.families.deflate.clone(),
            self.own_deflate.clone(),
            self.trailer.clone(),
        ]
    }

    /// The gzip body's length.
    pub fn gzip_len(&self) -> u64 {
        self.gzip_pieces().iter().map(|p| p.len() as u64).sum()
    }

    /// The gzip body: the stored pieces in a row.
    pub fn gzip(&self) -> Body {
        Body::chunks(self.gzip_pieces())
    }

    /// The plain body: the families inflated as they are sent, then the own metrics.
    pub fn plain(&self) -> Body {
        if self.families.len == 0 {
            return Body::from(self.own.clone());
        }
        Body(Inner::Inflate(Box::new(self.inflating())))
    }

    /// The plain text, whole (for tools and tests; the server streams it).
    pub fn to_plain(&self) -> Result<Vec<u8>, ExpositionError> {
        let mut out = Vec::with_capacity(self.plain_len() as usize);
        let mut inflating = self.inflating();
        while let Some(chunk) = inflating.next()? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// The families, to be inflated, and the own metrics after them.
    fn inflating(&self) -> Inflating {
        Inflating {
            input: self.families.deflate.clone(),
            inflate: Decompress::new(false),
            left: self.families.len,
            then: Some(self.own.clone()),
        }
    }

    /// The gzip body, whole.
    pub fn to_gzip(&self) -> Vec<u8> {
        self.gzip_pieces().concat()
    }
}

/// A response body: bytes already made, or the families inflated as they are sent.
#[derive(Debug)]
pub struct Body(Inner);

#[derive(Debug)]
enum Inner {
    Chunks(VecDeque<Bytes>),
    Inflate(Box<Inflating>),
}

/// A plain scrape under way.
#[derive(Debug)]
struct Inflating {
    input: Bytes,
    inflate: Decompress,
    /// Text still to inflate.
    left: u64,
    /// What follows the families.
    then: Option<Bytes>,
}

/// The most text a plain scrape inflates at a time.
const CHUNK: usize = 256 * 1024;

impl Body {
    fn chunks(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        Self(Inner::Chunks(
            chunks.into_iter().filter(|c| !c.is_empty()).collect(),
        ))
    }

    /// No body (HEAD).
    pub fn empty() -> Self {
        Self(Inner::Chunks(VecDeque::new()))
    }

    /// The whole body, collected.
    pub async fn into_bytes(self) -> Result<Bytes, std::io::Error> {
        Ok(http_body_util::BodyExt::collect(self).await?.to_bytes())
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Self::chunks([b])
    }
}

impl Inflating {
    fn next(&mut self) -> Result<Option<Bytes>, ExpositionError> {
        if self.left == 0 {
            return Ok(self.then.take());
        }
        let want = (CHUNK as u64).min(self.left) as usize;
        let mut out = Vec::with_capacity(want);
        while out.len() < want {
            let before = (self.inflate.total_in(), out.len());
            let start = before.0 as usize;
            self.inflate
                .decompress_vec(&self.input[start..], &mut out, FlushDecompress::None)
                .map_err(|e| ExpositionError::new("inflation", e))?;
            if (self.inflate.total_in(), out.len()) == before {
                return Err(ExpositionError::new("inflation", "the stream ended early"));
            }
        }
        self.left -= out.len() as u64;
        Ok(Some(Bytes::from(out)))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let next = match &mut self.0 {
            Inner::Chunks(c) => Ok(c.pop_front()),
            Inner::Inflate(i) => i.next(),
        };
        Poll::Ready(match next {
            Ok(chunk) => chunk.map(|c| Ok(Frame::data(c))),
            Err(e) => {
                tracing::error!("{e}");
                Some(Err(std::io::Error::other(e)))
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Chunks(c) => c.is_empty(),
            Inner::Inflate(i) => i.left == 0 && i.then.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(match &self.0 {
            Inner::Chunks(c) => c.iter().map(|c| c.len() as u64).sum(),
            Inner::Inflate(i) => i.left + i.then.as_ref().map_or(0, |t| t.len() as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .expect("a valid gzip stream");
        out
    }

    /// Text of `n` bytes that compresses like an exposition (repeated names, varied values).
    fn text(n: usize) -> Vec<u8> {
        let mut t = Vec::with_capacity(n + 100);
        let mut i = 0u64;
        while t.len() < n {
            t.extend_from_slice(
                format!(
                    "kiro_user_cost_usd{{user_id=\"u-{i}\"}} {}\n",
                    i * 7919 % 1000
                )
                .as_bytes(),
            );
            i += 1;
        }
        t.truncate(n);
        t
    }

    #[tokio::test]
    async fn gzip_and_plain_bodies_carry_the_same_text() {
        // Empty families, small ones, and ones over several inflate chunks and output reserves.
        for (n, own) in [
            (0, &b"kiro_exporter_up 1\n"[..]),
            (10, b""),
            (3 * CHUNK + 17, b"# own\nx 1\n"),
        ] {
            let data = text(n);
            let mut w = FamiliesWriter::new();
            // Written in uneven pieces, as families are.
            for piece in data.chunks(1 + n / 7) {
                w.write(piece).unwrap();
            }
            let fam = w.finish().unwrap();
            assert_eq!(fam.len, n as u64);
            let e = Exposition::new(Some(fam), Bytes::copy_from_slice(own)).unwrap();
            let want = [&data[..], own].concat();
            let plain = e.plain();
            assert_eq!(
                hyper::body::Body::size_hint(&plain).exact(),
                Some(want.len() as u64)
            );
            assert_eq!(plain.into_bytes().await.unwrap(), want, "plain, {n} bytes");
            assert_eq!(e.plain_len(), want.len() as u64);
            assert_eq!(e.to_plain().unwrap(), want);
            let gz = e.gzip().into_bytes().await.unwrap();
            assert_eq!(gz.len() as u64, e.gzip_len());
            assert_eq!(gz, e.to_gzip());
            assert_eq!(gunzip(&gz), want, "gzip, {n} bytes");
        }
    }

    #[test]
    fn no_families_is_the_own_metrics_alone() {
        let e = Exposition::new(None, Bytes::from_static(b"up 1\n")).unwrap();
        assert_eq!(e.to_plain().unwrap(), b"up 1\n");
        assert_eq!(gunzip(&e.to_gzip()), b"up 1\n");
    }

    #[test]
    fn compressed_families_are_smaller_than_their_text() {
        let data = text(1 << 20);
        let mut w = FamiliesWriter::new();
        w.write(&data).unwrap();
        let fam = w.finish().unwrap();
        assert!(fam.deflate.len() < data.len() / 4, "{}", fam.deflate.len());
    }
}
