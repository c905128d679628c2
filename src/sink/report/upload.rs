//! The report's upload to S3 and its presigned download link.

use super::*;

/// Where the report is uploaded: the S3 client and the credentials it signs with (their expiry
/// bounds the download link's life).
#[derive(Debug, Clone)]
pub struct ReportS3 {
    pub client: aws_sdk_s3::Client,
    pub credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl ReportS3 {
    /// The uploader of `settings.s3`, when it is set.
    pub async fn of(settings: &ReportSettings, aws: &crate::aws::AwsContext) -> Option<Self> {
        if settings.s3.is_empty() {
            return None;
        }
        Some(Self::new(aws.settings(), aws.config().await))
    }

    /// The client and credentials of `shared`.
    pub fn new(aws: &crate::aws::AwsSettings, shared: &aws_config::SdkConfig) -> Self {
        Self {
            client: aws.s3_client(shared),
            credentials: shared.credentials_provider(),
        }
    }
}

/// A presigned download link and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub url: String,
    /// `link_ttl` from now, or sooner: a link signed with temporary credentials (an ECS task
    /// role, an instance profile, web identity) dies with them.
    pub expires: chrono::DateTime<chrono::Utc>,
}

/// When a link signed now for `ttl` with credentials expiring at `credentials` stops working.
pub fn link_expiry(
    now: chrono::DateTime<chrono::Utc>,
    ttl: Duration,
    credentials: Option<std::time::SystemTime>,
) -> chrono::DateTime<chrono::Utc> {
    let by_ttl = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::zero());
    match credentials.map(chrono::DateTime::<chrono::Utc>::from) {
        Some(c) if c < by_ttl => c,
        _ => by_ttl,
    }
}

/// Uploads the CSV and returns a presigned GET link valid for `ttl` (or until the signing
/// credentials expire, when that is sooner).
pub async fn upload(
    store: &ReportS3,
    location: &S3Location,
    name: &str,
    bytes: Vec<u8>,
    ttl: Duration,
) -> Result<Link, ReportError> {
    let s3 = &store.client;
    let key = format!("{}{name}", location.prefix);
    let fail = |message: String| ReportError::Upload {
        location: format!("s3://{}/{key}", location.bucket),
        message,
    };
    s3.put_object()
        .bucket(&location.bucket)
        .key(&key)
        .content_type("text/csv; charset=utf-8")
        .content_disposition(format!("attachment; filename=\"{name}\""))
        .body(bytes.into())
        .send()
        .await
        .map_err(|e| fail(crate::aws::error_message(&e)))?;
    let presigning = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)
        .map_err(|e| fail(e.to_string()))?;
    let request = s3
        .get_object()
        .bucket(&location.bucket)
        .key(&key)
        .presigned(presigning)
        .await
        .map_err(|e| fail(crate::aws::error_message(&e)))?;
    let credentials = match &store.credentials {
        Some(p) => {
            use aws_credential_types::provider::ProvideCredentials;
            p.provide_credentials().await.ok().and_then(|c| c.expiry())
        }
        None => None,
    };
    Ok(Link {
        url: request.uri().to_owned(),
        expires: link_expiry(chrono::Utc::now(), ttl, credentials),
    })
}
