//! Which files of a billing period are the current data: the period's manifest when the export
//! has one, else the newest delivery. Data Exports writes
//! `<export>/data/BILLING_PERIOD=YYYY-MM/…` and, after every data file of a refresh is in
//! place, `<export>/metadata/BILLING_PERIOD=YYYY-MM/<export>-Manifest.json`, whose `dataFiles`
//! lists the files of that refresh (the Data Exports delivery docs recommend reading it). In
//! "create new" mode every refresh keeps its files, in a folder named after its `executionId`;
//! summing two of them would count the month twice, so exactly one delivery is ever read.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::period::{BillingPeriod, PARTITION_COLUMN};

/// How the files of a period were chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chosen {
    /// The files the manifest lists.
    Manifest(PathBuf),
    /// No manifest: the partition's files (overwrite mode).
    Partition,
    /// No manifest, "create new" mode: the newest delivery folder.
    NewestDelivery(PathBuf),
}

/// Why no file set could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {path} cannot be read: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error("manifest {manifest} lists {file}, which is not in the local copy of the export")]
    Missing { manifest: PathBuf, file: PathBuf },
    #[error("no .parquet files in {dir}")]
    NoFiles { dir: PathBuf },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    data_files: Vec<String>,
}

/// The newest `*-Manifest.json` of the period under `root/metadata/`, if any.
fn manifest(root: &Path, period: BillingPeriod) -> Result<Option<PathBuf>, DeliveryError> {
    let dir = root
        .join("metadata")
        .join(format!("{PARTITION_COLUMN}={period}"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(None);
    };
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        let is_manifest = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with("Manifest.json"));
        if !is_manifest || !path.is_file() {
            continue;
        }
        let modified =
            e.metadata()
                .and_then(|m| m.modified())
                .map_err(|source| DeliveryError::Io {
                    path: path.clone(),
                    source,
                })?;
        if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
            newest = Some((modified, path));
        }
    }
    Ok(newest.map(|(_, p)| p))
}

/// The local path of a manifest's data file URI: what follows `/data/` under `root/data/`.
fn local_path(root: &Path, uri: &str) -> Option<PathBuf> {
    let marker = format!("/data/{PARTITION_COLUMN}=");
    let i = uri.find(&marker)?;
    Some(root.join(&uri[i + 1..]))
}

fn parquet_files(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), DeliveryError> {
    let io = |source| DeliveryError::Io {
        path: dir.to_owned(),
        source,
    };
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(dir).map_err(io)?.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            dirs.push(p);
        } else if p.is_file() && p.extension().is_some_and(|x| x == "parquet") {
            files.push(p);
        }
    }
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

/// The files of `period` to read, for an export whose root (the folder holding `data/`) is
/// `root` and whose period folder is `partition`. Blocking.
pub fn choose(
    root: &Path,
    partition: &Path,
    period: BillingPeriod,
) -> Result<(Vec<PathBuf>, Chosen), DeliveryError> {
    if let Some(m) = manifest(root, period)? {
        let text = std::fs::read(&m).map_err(|source| DeliveryError::Io {
            path: m.clone(),
            source,
        })?;
        let parsed: Manifest =
            serde_json::from_slice(&text).map_err(|e| DeliveryError::BadManifest {
                path: m.clone(),
                reason: e.to_string(),
            })?;
        let mut files = Vec::with_capacity(parsed.data_files.len());
        for uri in &parsed.data_files {
            let file = local_path(root, uri).ok_or_else(|| DeliveryError::BadManifest {
                path: m.clone(),
                reason: format!("{uri:?} is not under data/{PARTITION_COLUMN}=…"),
            })?;
            if !file.is_file() {
                return Err(DeliveryError::Missing { manifest: m, file });
            }
            files.push(file);
        }
        if files.is_empty() {
            return Err(DeliveryError::NoFiles {
                dir: partition.to_owned(),
            });
        }
        return Ok((files, Chosen::Manifest(m)));
    }
    let (files, dirs) = parquet_files(partition)?;
    // "Create new" mode: one folder per delivery; the newest (by its files' modification
    // time) is the current one.
    let mut newest: Option<(std::time::SystemTime, PathBuf, Vec<PathBuf>)> = None;
    for d in dirs {
        let (inner, _) = parquet_files(&d)?;
        let mut latest = None;
        for f in &inner {
            let t = std::fs::metadata(f)
                .and_then(|m| m.modified())
                .map_err(|source| DeliveryError::Io {
                    path: f.clone(),
                    source,
                })?;
            latest = latest.max(Some(t));
        }
        if let Some(t) = latest
            && newest.as_ref().is_none_or(|(n, _, _)| t > *n)
        {
            newest = Some((t, d, inner));
        }
    }
    match newest {
        Some((_, d, inner)) if files.is_empty() => Ok((inner, Chosen::NewestDelivery(d))),
        _ if !files.is_empty() => Ok((files, Chosen::Partition)),
        _ => Err(DeliveryError::NoFiles {
            dir: partition.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_uris_map_to_the_local_copy() {
        let root = Path::new("/exports/kiro");
        assert_eq!(
            local_path(
                root,
                "s3://bucket/prefix/kiro/data/BILLING_PERIOD=2026-10/exec-1/kiro-00001.snappy.parquet"
            ),
            Some(root.join("data/BILLING_PERIOD=2026-10/exec-1/kiro-00001.snappy.parquet"))
        );
        assert_eq!(local_path(root, "s3://bucket/elsewhere/x.parquet"), None);
    }
}
