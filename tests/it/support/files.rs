//! Parquet files written by hand: one record batch, a copy of a CUR file with a column retyped,
//! or written again without dictionaries; and the files under a folder.

use std::path::Path;

/// Writes one record batch as a Parquet file.
pub fn write_batch(path: &Path, batch: &arrow::array::RecordBatch) {
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// A copy of a CUR file with `column` as text.
pub fn retyped(good: &Path, column: &str, out: &Path) {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(good).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let batch = reader.map(Result::unwrap).next().unwrap();
    let i = batch.schema().index_of(column).unwrap();
    let mut fields: Vec<arrow::datatypes::Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[i] = arrow::datatypes::Field::new(column, arrow::datatypes::DataType::Utf8, true);
    let mut cols = batch.columns().to_vec();
    cols[i] = arrow::compute::cast(&cols[i], &arrow::datatypes::DataType::Utf8).unwrap();
    write_batch(
        out,
        &arrow::array::RecordBatch::try_new(
            std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
            cols,
        )
        .unwrap(),
    );
}

/// The block under `key: |` of a ConfigMap in a manifest, unindented.
pub fn literal_block(rendered: &str, key: &str) -> String {
    let mut out = String::new();
    let mut lines = rendered
        .lines()
        .skip_while(|l| l.trim() != format!("{key}: |"))
        .skip(1);
    for l in lines.by_ref() {
        if !l.is_empty() && !l.starts_with("    ") {
            break;
        }
        out.push_str(l.strip_prefix("    ").unwrap_or(l));
        out.push('\n');
    }
    out
}

/// The files under `dir`, in its subfolders too.
pub fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Every Parquet file under `dir` written again without dictionaries: plain pages in every
/// column, tag maps included, as writers that fall back or never encode them leave it.
pub fn rewrite_without_dictionaries(dir: &Path) {
    rewrite_with(
        dir,
        parquet::file::properties::WriterProperties::builder()
            .set_dictionary_enabled(false)
            .build(),
    );
}

/// Every Parquet file under `dir` written again, the same rows, with the writer's `props`
/// (page versions, sizes, encodings, compression).
pub fn rewrite_with(dir: &Path, props: parquet::file::properties::WriterProperties) {
    for path in walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
    {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&path).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        let out = std::fs::File::create(&path).unwrap();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(out, batches[0].schema(), Some(props.clone()))
                .unwrap();
        for b in &batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
    }
}
