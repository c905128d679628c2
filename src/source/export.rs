//! Where a CUR 2.0 export is, for the embedded engine: a folder on local disk or an S3 prefix
//! (`s3://bucket/prefix/export-name`), both through the `object_store` crate, so listing,
//! choosing a period's files ([`super::delivery`]), reading footers and the scan itself are
//! one implementation. S3 is reached with the AWS SDK's credential chain and `[aws]` region and
//! endpoint (so emulators work); only the byte ranges of the columns read are fetched, and
//! the bytes fetched are counted.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::ProvideCredentials;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::SourceError;
use crate::aws::S3Location;
use crate::period::{BillingPeriod, PARTITION_COLUMN};

/// The IAM actions reading an export in S3 takes: listing the period's prefixes, and ranged
/// GETs of footers and columns. `deploy/iam/local-engine-s3.json` grants exactly these (a test
/// checks them against the calls in this file).
pub const IAM_ACTIONS: &[&str] = &["s3:ListBucket", "s3:GetObject"];

/// A CUR export on local disk or in S3.
#[derive(Clone)]
pub struct Export {
    store: Arc<dyn ObjectStore>,
    /// `file://` or `s3://bucket`: what object keys are appended to for DataFusion.
    base: String,
    /// The export root's key (the folder that holds `data/`, or `data/` itself).
    root: Key,
    /// The local folder, for local exports.
    local: Option<PathBuf>,
    /// How the export is named in messages.
    shown: String,
    read_bytes: Arc<AtomicU64>,
}

impl fmt::Debug for Export {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Export({})", self.shown)
    }
}

pub use super::delivery::Object;

impl Export {
    /// An export on local disk: `root` is the export root or its `data/` folder.
    pub fn local(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let abs = std::path::absolute(&root).unwrap_or_else(|_| root.clone());
        let key = Key::from_absolute_path(&abs).unwrap_or_default();
        let read_bytes = Arc::new(AtomicU64::new(0));
        Self {
            store: Arc::new(Counting {
                inner: Arc::new(LocalFileSystem::new()),
                read: read_bytes.clone(),
            }),
            base: "file://".to_owned(),
            root: key,
            local: Some(root.clone()),
            shown: root.display().to_string(),
            read_bytes,
        }
    }

    /// An export under `location`, read with `shared`'s credentials, region and endpoint.
    pub fn s3(location: &S3Location, shared: &aws_config::SdkConfig) -> Result<Self, SourceError> {
        let setup = |message: String| SourceError::AwsSetup { message };
        let region = shared.region().map(ToString::to_string).ok_or_else(|| {
            setup(format!(
                "reading the export {location} needs an AWS region: set aws.region, AWS_REGION or a profile's region"
            ))
        })?;
        let credentials = shared.credentials_provider().ok_or_else(|| {
            setup(format!(
                "reading the export {location} needs AWS credentials, and the default chain has none"
            ))
        })?;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&location.bucket)
            .with_region(region)
            .with_credentials(Arc::new(SdkCredentials::new(credentials)))
            .with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(10),
                    base: 2.0,
                },
                max_retries: 8,
                retry_timeout: Duration::from_secs(120),
            });
        if let Some(endpoint) = shared.endpoint_url() {
            builder = builder
                .with_endpoint(endpoint.trim_end_matches('/'))
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let inner = builder
            .build()
            .map_err(|e| setup(format!("S3 client for {location}: {e}")))?;
        let read_bytes = Arc::new(AtomicU64::new(0));
        let counting = Counting {
            inner: Arc::new(inner),
            read: read_bytes.clone(),
        };
        Ok(Self {
            store: Arc::new(counting),
            base: format!("s3://{}", location.bucket),
            root: Key::from(location.prefix.trim_end_matches('/')),
            local: None,
            shown: location.to_string(),
            read_bytes,
        })
    }

    /// Whether the export is on local disk (not in S3).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// The store, for DataFusion to read the files through.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The URL the store is registered under (`s3://bucket`), `None` for the local file system
    /// (DataFusion's default).
    #[cfg(feature = "sql")]
    pub fn store_url(&self) -> Option<datafusion::execution::object_store::ObjectStoreUrl> {
        if self.local.is_some() {
            return None;
        }
        datafusion::execution::object_store::ObjectStoreUrl::parse(&self.base).ok()
    }

    /// The URL of an object for DataFusion.
    pub fn url_of(&self, key: &Key) -> String {
        format!("{}/{key}", self.base)
    }

    /// How an object is named in messages: its local path or `s3://bucket/key`.
    pub fn name_of(&self, key: &Key) -> PathBuf {
        match &self.local {
            Some(_) => PathBuf::from(format!("/{key}")),
            None => PathBuf::from(self.url_of(key)),
        }
    }

    /// Bytes fetched from the store so far (S3: the ranges of every GET).
    pub fn read_bytes(&self) -> u64 {
        self.read_bytes.load(Ordering::Relaxed)
    }

    fn error(&self, what: &str, key: &Key, e: object_store::Error) -> SourceError {
        SourceError::Store {
            operation: what.to_owned(),
            location: self.name_of(key).display().to_string(),
            message: describe(
                &e,
                if what == "list" {
                    "s3:ListBucket"
                } else {
                    "s3:GetObject"
                },
            ),
        }
    }

    /// The key under which the `BILLING_PERIOD=` partitions are: `root/data` when it exists.
    async fn data(&self) -> Result<Key, SourceError> {
        if let Some(local) = &self.local {
            if !local.is_dir() {
                return Err(SourceError::MissingExport {
                    path: local.clone(),
                });
            }
            return Ok(if local.join("data").is_dir() {
                self.root.clone().join("data")
            } else {
                self.root.clone()
            });
        }
        let top = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(|e| self.error("list", &self.root, e))?;
        if top.common_prefixes.is_empty() && top.objects.is_empty() {
            return Err(SourceError::NoObjects {
                location: self.shown.clone(),
            });
        }
        let data = self.root.clone().join("data");
        Ok(if top.common_prefixes.contains(&data) {
            data
        } else {
            self.root.clone()
        })
    }

    /// The export root (which holds `metadata/`): the configured root, or its parent when the
    /// configured root is the `data/` folder itself.
    fn root_of(&self, data: &Key) -> Key {
        if *data != self.root {
            return self.root.clone();
        }
        let parts: Vec<_> = self.root.parts().collect();
        match parts.split_last() {
            Some((_, rest)) => Key::from_iter(rest.iter().cloned()),
            None => self.root.clone(),
        }
    }

    /// Billing periods present, sorted.
    pub async fn periods(&self) -> Result<Vec<BillingPeriod>, SourceError> {
        let data = self.data().await?;
        self.periods_under(&data).await
    }

    async fn periods_under(&self, data: &Key) -> Result<Vec<BillingPeriod>, SourceError> {
        let listed = self
            .store
            .list_with_delimiter(Some(data))
            .await
            .map_err(|e| self.error("list", data, e))?;
        let mut out: Vec<BillingPeriod> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| {
                p.filename()?
                    .strip_prefix(PARTITION_COLUMN)?
                    .strip_prefix('=')?
                    .parse()
                    .ok()
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn list(&self, prefix: &Key) -> Result<Vec<Object>, SourceError> {
        let mut out = Vec::new();
        let mut stream = self.store.list(Some(prefix));
        while let Some(m) = stream.next().await {
            out.push(Object::from(m.map_err(|e| self.error("list", prefix, e))?));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The period's files to read (its manifest's, or the newest delivery's), and how they
    /// were chosen.
    pub async fn period_files(
        &self,
        period: BillingPeriod,
    ) -> Result<(Vec<Object>, super::delivery::Chosen), SourceError> {
        let data = self.data().await?;
        let partition = data.clone().join(format!("{PARTITION_COLUMN}={period}"));
        let objects = self.list(&partition).await?;
        if objects.is_empty() {
            let available = self.periods_under(&data).await?;
            return Err(SourceError::NoPartition {
                period,
                data_dir: self.name_of(&data),
                available: if available.is_empty() {
                    "none".into()
                } else {
                    available
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        }
        let root = self.root_of(&data);
        let metadata = root
            .clone()
            .join("metadata")
            .join(format!("{PARTITION_COLUMN}={period}").as_str());
        let manifests = self.list(&metadata).await?;
        let manifest = super::delivery::newest_manifest(&manifests);
        let manifest = match manifest {
            Some(m) => {
                let bytes = self
                    .store
                    .get(&m.key)
                    .await
                    .map_err(|e| self.error("get", &m.key, e))?
                    .bytes()
                    .await
                    .map_err(|e| self.error("get", &m.key, e))?;
                Some((m.clone(), bytes))
            }
            None => None,
        };
        let chosen = super::delivery::choose(
            &root,
            &objects,
            manifest.as_ref().map(|(m, b)| (m, b.as_ref())),
            |k| self.name_of(k),
        )?;
        Ok(chosen)
    }
}

/// Byte ranges of one object, for reading a Parquet file (its footer, then the pages the scan
/// needs) through the store: one ranged GET per range, several at once.
#[derive(Clone)]
pub struct Ranges {
    store: Arc<dyn ObjectStore>,
    key: Key,
    size: u64,
}

impl Ranges {
    /// The object `key` of `size` bytes.
    pub fn new(store: Arc<dyn ObjectStore>, key: Key, size: u64) -> Self {
        Self { store, key, size }
    }
}

impl parquet::arrow::async_reader::AsyncFileReader for Ranges {
    fn get_bytes(
        &mut self,
        range: Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        parquet::arrow::async_reader::MetadataFetch::fetch(self, range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        use futures::FutureExt;
        async move {
            self.store
                .get_ranges(&self.key, &ranges)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<
        'a,
        parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>,
    > {
        use futures::FutureExt;
        async move {
            let size = self.size;
            let md = parquet::file::metadata::ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self.clone(), size)
                .await?;
            Ok(Arc::new(md))
        }
        .boxed()
    }
}

impl parquet::arrow::async_reader::MetadataFetch for Ranges {
    fn fetch(
        &mut self,
        range: Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        use futures::FutureExt;
        async move {
            self.store
                .get_range(&self.key, range)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }
}

/// What went wrong with a store call, in one line; for a denial, the permission it needs.
pub fn describe(e: &object_store::Error, permission: &str) -> String {
    match e {
        object_store::Error::PermissionDenied { .. } => format!(
            "access denied (403): the exporter's role needs {permission} on it ({})",
            one_line(e)
        ),
        object_store::Error::Unauthenticated { .. } => {
            format!(
                "not authenticated: check the AWS credentials ({})",
                one_line(e)
            )
        }
        object_store::Error::NotFound { .. } => {
            format!("not found (removed while being read?): {}", one_line(e))
        }
        e => one_line(e),
    }
}

fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        source = inner.source();
    }
    crate::config_error::one_line(&s)
}

/// The AWS SDK's credential chain (environment, profile, web identity, ECS, instance role) as
/// object_store's credential provider, cached until shortly before the credentials expire.
#[derive(Debug)]
struct SdkCredentials {
    provider: aws_credential_types::provider::SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl SdkCredentials {
    fn new(provider: aws_credential_types::provider::SharedCredentialsProvider) -> Self {
        Self {
            provider,
            cached: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl object_store::CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((c, expiry)) = cached.as_ref() {
            let fresh = expiry.is_none_or(|t| {
                t.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > Duration::from_secs(300))
            });
            if fresh {
                return Ok(c.clone());
            }
        }
        let c = self.provider.provide_credentials().await.map_err(|e| {
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            }
        })?;
        let out = Arc::new(AwsCredential {
            key_id: c.access_key_id().to_owned(),
            secret_key: c.secret_access_key().to_owned(),
            token: c.session_token().map(str::to_owned),
        });
        *cached = Some((out.clone(), c.expiry()));
        Ok(out)
    }
}

/// A store that counts the bytes its reads return.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn ObjectStore>,
    read: Arc<AtomicU64>,
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Key,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Key,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        // A HEAD transfers no body; its range is the whole object's.
        let head = options.head;
        let r = self.inner.get_opts(location, options).await?;
        if head {
            return Ok(r);
        }
        tracing::debug!(%location, range = ?r.range, "get");
        self.read
            .fetch_add(r.range.end.saturating_sub(r.range.start), Ordering::Relaxed);
        Ok(r)
    }

    async fn get_ranges(
        &self,
        location: &Key,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let r = self.inner.get_ranges(location, ranges).await?;
        tracing::debug!(%location, ?ranges, "get ranges");
        self.read.fetch_add(
            r.iter().map(|b| b.len() as u64).sum::<u64>(),
            Ordering::Relaxed,
        );
        Ok(r)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Key>>,
    ) -> BoxStream<'static, object_store::Result<Key>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Key>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Key>,
        offset: &Key,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Key>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Key,
        to: &Key,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
