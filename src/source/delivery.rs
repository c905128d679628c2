//! Which files of a billing period are the current data: the period's manifest when the export
//! has one, else the newest delivery. Data Exports writes
//! `<export>/data/BILLING_PERIOD=YYYY-MM/…` and, after every data file of a refresh is in
//! place, `<export>/metadata/BILLING_PERIOD=YYYY-MM/<export>-Manifest.json`, whose `dataFiles`
//! lists the files of that refresh (the Data Exports delivery docs recommend reading it). In
//! "create new" mode every refresh keeps its files, in a folder named after its `executionId`;
//! summing two of them would count the month twice, so exactly one delivery is ever read.

use std::path::PathBuf;

use object_store::path::Path as Key;
use serde::Deserialize;

use crate::period::PARTITION_COLUMN;

/// An object of the export: its key and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: Key,
    pub size: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
    /// ETag (S3) or the file system's equivalent.
    pub e_tag: Option<String>,
}

impl From<object_store::ObjectMeta> for Object {
    fn from(m: object_store::ObjectMeta) -> Self {
        Self {
            key: m.location,
            size: m.size,
            modified: m.last_modified,
            e_tag: m.e_tag,
        }
    }
}

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
    #[error("manifest {path} cannot be read: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error("manifest {manifest} lists {file}, which is not in the export")]
    Missing { manifest: PathBuf, file: PathBuf },
    #[error("no .parquet files in {dir}")]
    NoFiles { dir: PathBuf },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    data_files: Vec<String>,
}

/// The newest `*-Manifest.json` among the objects of the period's `metadata/` folder.
pub fn newest_manifest(objects: &[Object]) -> Option<&Object> {
    objects
        .iter()
        .filter(|o| {
            o.key
                .filename()
                .is_some_and(|n| n.ends_with("Manifest.json"))
        })
        .max_by(|a, b| a.modified.cmp(&b.modified).then(a.key.cmp(&b.key)))
}

/// The key of a manifest's data file URI in this export: what follows `/data/` under
/// `root/data/` (the export may be a copy, or under another prefix than the manifest says).
fn key_in_export(root: &Key, uri: &str) -> Option<Key> {
    let marker = format!("/data/{PARTITION_COLUMN}=");
    let i = uri.find(&marker)?;
    let mut key = root.clone();
    for part in uri[i + 1..].split('/').filter(|p| !p.is_empty()) {
        key = key.join(part);
    }
    Some(key)
}

fn is_parquet(o: &Object) -> bool {
    o.key.extension() == Some("parquet")
}

/// The files of a period to read. `root` is the export root (the key holding `data/` and
/// `metadata/`), `partition` the objects under the period's `data/BILLING_PERIOD=…/` (sorted
/// by key), `manifest` the newest manifest with its bytes; `name` names a key in messages.
pub fn choose(
    root: &Key,
    partition: &[Object],
    manifest: Option<(&Object, &[u8])>,
    name: impl Fn(&Key) -> PathBuf,
) -> Result<(Vec<Object>, Chosen), DeliveryError> {
    let dir = || {
        partition
            .first()
            .and_then(|o| {
                let parts: Vec<_> = o.key.parts().collect();
                let i = parts
                    .iter()
                    .position(|p| p.as_ref().starts_with(PARTITION_COLUMN))?;
                Some(name(&Key::from_iter(parts[..=i].iter().cloned())))
            })
            .unwrap_or_else(|| name(root))
    };
    if let Some((m, text)) = manifest {
        let path = name(&m.key);
        let parsed: Manifest =
            serde_json::from_slice(text).map_err(|e| DeliveryError::BadManifest {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let mut files = Vec::with_capacity(parsed.data_files.len());
        for uri in &parsed.data_files {
            let key = key_in_export(root, uri).ok_or_else(|| DeliveryError::BadManifest {
                path: path.clone(),
                reason: format!("{uri:?} is not under data/{PARTITION_COLUMN}=…"),
            })?;
            let Some(o) = partition.iter().find(|o| o.key == key) else {
                return Err(DeliveryError::Missing {
                    manifest: path,
                    file: name(&key),
                });
            };
            files.push(o.clone());
        }
        if files.is_empty() {
            return Err(DeliveryError::NoFiles { dir: dir() });
        }
        return Ok((files, Chosen::Manifest(path)));
    }
    // Files directly in the partition folder (overwrite mode), or one folder per delivery
    // ("create new" mode), the newest by its files' modification time being the current one.
    // Depth below the partition folder: 1 = in it, 2 = in a delivery folder.
    let below = |o: &Object| {
        let parts: Vec<_> = o.key.parts().collect();
        let i = parts
            .iter()
            .rposition(|p| p.as_ref().starts_with(&format!("{PARTITION_COLUMN}=")))?;
        Some((
            parts.len() - i - 1,
            Key::from_iter(parts[..parts.len() - 1].iter().cloned()),
        ))
    };
    let mut direct = Vec::new();
    let mut folders: std::collections::BTreeMap<Key, Vec<Object>> = Default::default();
    for o in partition.iter().filter(|o| is_parquet(o)) {
        match below(o) {
            Some((1, _)) => direct.push(o.clone()),
            Some((2, folder)) => folders.entry(folder).or_default().push(o.clone()),
            _ => {}
        }
    }
    if !direct.is_empty() {
        return Ok((direct, Chosen::Partition));
    }
    let newest = folders
        .into_iter()
        .filter_map(|(folder, files)| {
            let latest = files.iter().map(|f| f.modified).max()?;
            Some((latest, folder, files))
        })
        .max_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    match newest {
        Some((_, folder, files)) => Ok((files, Chosen::NewestDelivery(name(&folder)))),
        None => Err(DeliveryError::NoFiles { dir: dir() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, minute: i64) -> Object {
        Object {
            key: Key::from(key),
            size: 1,
            modified: chrono::DateTime::UNIX_EPOCH + chrono::Duration::minutes(minute),
            e_tag: None,
        }
    }

    #[test]
    fn manifest_uris_map_to_the_export() {
        let root = Key::from("exports/kiro");
        assert_eq!(
            key_in_export(
                &root,
                "s3://bucket/prefix/kiro/data/BILLING_PERIOD=2026-10/exec-1/kiro-00001.snappy.parquet"
            ),
            Some(Key::from(
                "exports/kiro/data/BILLING_PERIOD=2026-10/exec-1/kiro-00001.snappy.parquet"
            ))
        );
        assert_eq!(
            key_in_export(&root, "s3://bucket/elsewhere/x.parquet"),
            None
        );
    }

    #[test]
    fn the_newest_delivery_folder_is_read_alone() {
        let root = Key::from("e");
        let p = "e/data/BILLING_PERIOD=2026-10";
        let listed = [
            object(&format!("{p}/exec-a/f-1.parquet"), 1),
            object(&format!("{p}/exec-a/f-2.parquet"), 2),
            object(&format!("{p}/exec-b/f-1.parquet"), 3),
        ];
        let name = |k: &Key| PathBuf::from(k.to_string());
        let (files, chosen) = choose(&root, &listed, None, name).unwrap();
        assert_eq!(files, vec![listed[2].clone()]);
        assert_eq!(
            chosen,
            Chosen::NewestDelivery(PathBuf::from(format!("{p}/exec-b")))
        );
        let manifest = object("e/metadata/BILLING_PERIOD=2026-10/k-Manifest.json", 4);
        let text = r#"{"dataFiles":["s3://b/x/k/data/BILLING_PERIOD=2026-10/exec-a/f-1.parquet"]}"#;
        let (files, _) = choose(&root, &listed, Some((&manifest, text.as_bytes())), name).unwrap();
        assert_eq!(files, vec![listed[0].clone()]);
        let text = r#"{"dataFiles":["s3://b/x/k/data/BILLING_PERIOD=2026-10/exec-c/f-1.parquet"]}"#;
        let e = choose(&root, &listed, Some((&manifest, text.as_bytes())), name).unwrap_err();
        assert!(e.to_string().contains("exec-c/f-1.parquet"), "{e}");
    }
}
