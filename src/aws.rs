//! What every AWS client of the daemon shares: the `[aws]` settings (region, profile,
//! endpoint) and the SDK configuration built from them, S3 locations, one retry policy
//! helper, and reading an SDK error as one line.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;

/// Region, profile and endpoint of the AWS calls (`[aws]`, and `[source.athena]` for the
/// Athena source's own).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    /// Empty = the default chain (`AWS_REGION`, the profile).
    pub region: String,
    /// Named profile of the shared AWS config; empty = the default chain.
    pub profile: String,
    /// Endpoint override (emulators, VPC endpoints).
    pub endpoint_url: String,
}

impl AwsSettings {
    /// Checks values (no I/O); `section` is where the keys live (`aws`, `source.athena`).
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let scheme_ok = ["http://", "https://"]
            .iter()
            .any(|p| self.endpoint_url.starts_with(p));
        if !self.endpoint_url.is_empty() && !scheme_ok {
            return Err(ConfigError::key(
                &format!("{section}.endpoint_url"),
                "must start with http:// or https://",
            ));
        }
        Ok(())
    }

    /// The shared SDK configuration: default credential chain, with these overrides.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        self.loader().load().await
    }

    /// The SDK configuration loader with these overrides, for callers that add their own
    /// retry or timeout settings.
    pub fn loader(&self) -> aws_config::ConfigLoader {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if !self.region.is_empty() {
            loader = loader.region(aws_config::Region::new(self.region.clone()));
        }
        if !self.profile.is_empty() {
            loader = loader.profile_name(&self.profile);
        }
        if !self.endpoint_url.is_empty() {
            loader = loader.endpoint_url(&self.endpoint_url);
        }
        loader
    }

    /// An S3 client on `shared`; emulators and VPC endpoints address buckets by path.
    pub fn s3_client(&self, shared: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(shared)
            .force_path_style(!self.endpoint_url.is_empty())
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

/// A setting that calls AWS found no region to call it in.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{setting} needs an AWS region: set aws.region, AWS_REGION or a profile's region")]
pub struct NoRegion {
    /// The setting that turned the AWS client on.
    pub setting: String,
}

/// The `[aws]` settings and the one SDK configuration every client of the process shares,
/// loaded on first use (a process that calls no AWS API never loads it).
#[derive(Debug, Default)]
pub struct AwsContext {
    settings: AwsSettings,
    config: tokio::sync::OnceCell<aws_config::SdkConfig>,
}

impl AwsContext {
    pub fn new(settings: AwsSettings) -> Self {
        Self {
            settings,
            config: tokio::sync::OnceCell::new(),
        }
    }

    /// The `[aws]` settings.
    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// The shared SDK configuration ([`AwsSettings::sdk_config`]), loaded once.
    pub async fn config(&self) -> &aws_config::SdkConfig {
        self.config.get_or_init(|| self.settings.sdk_config()).await
    }

    /// The shared SDK configuration for a client that `setting` turned on and that needs a
    /// region (CloudWatch, Identity Store).
    pub async fn regional(&self, setting: &str) -> Result<&aws_config::SdkConfig, NoRegion> {
        let shared = self.config().await;
        match shared.region() {
            Some(_) => Ok(shared),
            None => Err(NoRegion {
                setting: setting.to_owned(),
            }),
        }
    }

    /// An S3 client on the shared configuration ([`AwsSettings::s3_client`]).
    pub async fn s3_client(&self) -> aws_sdk_s3::Client {
        let shared = self.config().await;
        self.settings.s3_client(shared)
    }
}

/// The SDK's standard retry strategy (throttling, 5xx and transport errors) with capped,
/// jittered exponential backoff: `attempts` in all, the first delay `initial`, at most `max`.
pub fn retry_config(attempts: u32, initial: Duration, max: Duration) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(initial)
        .with_max_backoff(max)
}

/// An `s3://bucket/prefix/` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Key prefix, empty or ending in `/`.
    pub prefix: String,
}

impl S3Location {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3:// location"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            return Err(format!("{url:?}: {bucket:?} is not a valid bucket name"));
        }
        let mut prefix = prefix.to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix,
        })
    }

    /// Checks an optional location setting: empty is fine, anything else must parse.
    pub fn validate_setting(key: &str, value: &str) -> Result<(), ConfigError> {
        if value.is_empty() {
            return Ok(());
        }
        Self::parse(value)
            .map(|_| ())
            .map_err(|m| ConfigError::key(key, m))
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// `Code: message` of a service error, or the whole chain of a transport or timeout error.
/// Holds no credentials: the SDK never puts them in errors.
pub fn error_message<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(e).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_locations() {
        let l = S3Location::parse("s3://my-cur/exports/kiro/data").unwrap();
        assert_eq!(l.bucket, "my-cur");
        assert_eq!(l.prefix, "exports/kiro/data/");
        assert_eq!(l.to_string(), "s3://my-cur/exports/kiro/data/");
        assert_eq!(S3Location::parse("s3://my-cur").unwrap().prefix, "");
        assert!(S3Location::parse("https://my-cur/x").is_err());
        assert!(S3Location::parse("s3://My_Bucket/x").is_err());
    }
}
