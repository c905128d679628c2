//! Delivery, shared by the alerts and the monthly report: Feishu custom-bot webhooks (signed,
//! interactive cards, [`feishu`]) and a generic JSON webhook (Alertmanager's webhook payload).
//!
//! Each channel sends one message at a time, at most one per `min_interval` (Feishu allows 5 a
//! second and 100 a minute per bot): messages queue and wait, none is dropped. A transport
//! error, a 429 or 5xx, or Feishu's "frequency limited" answer is retried with capped, jittered
//! exponential backoff; any other non-zero Feishu `code` is a failure at once. Results are
//! counted in `kiro_exporter_notifications_total{channel,result}`. Webhook URLs and secrets are
//! read from the environment or a file and appear in no log, error or metric.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prometheus::IntCounterVec;
pub mod feishu;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::telemetry::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Feishu (or Lark) custom bot.
    #[default]
    Feishu,
    /// Any HTTP endpoint taking Alertmanager's webhook JSON.
    Webhook,
}

/// `[[alerts.channels]]`: where notices go. The URL and secret are named, not given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelConfig {
    /// Rules name channels by this.
    pub name: String,
    pub kind: ChannelKind,
    /// Environment variable holding the webhook URL …
    pub url_env: String,
    /// … or a file holding it (e.g. a mounted secret); the file wins when both are set.
    pub url_file: Option<PathBuf>,
    /// Feishu: environment variable holding the bot's signing secret (unset: no signature) …
    pub secret_env: String,
    /// … or a file holding it.
    pub secret_file: Option<PathBuf>,
    /// At most one message per this interval.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// Attempts per message.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Per attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A card larger than this (serialized JSON) is split into several messages.
    pub max_message_bytes: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            name: "feishu".into(),
            kind: ChannelKind::Feishu,
            url_env: "KIRO_FEISHU_WEBHOOK_URL".into(),
            url_file: None,
            secret_env: "KIRO_FEISHU_SECRET".into(),
            secret_file: None,
            min_interval: Duration::from_millis(650),
            max_attempts: 5,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            max_message_bytes: 18_000,
        }
    }
}

impl ChannelConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name must not be empty".into());
        }
        if self.url_env.is_empty() && self.url_file.is_none() {
            return Err(format!(
                "channel {:?}: set url_env or url_file (the webhook URL is a secret and never goes in the file)",
                self.name
            ));
        }
        if self.max_attempts == 0 {
            return Err(format!(
                "channel {:?}: max_attempts must be at least 1",
                self.name
            ));
        }
        if self.max_message_bytes < 2_000 {
            return Err(format!(
                "channel {:?}: max_message_bytes must be at least 2000",
                self.name
            ));
        }
        if self.retry_max < self.retry_initial || self.timeout.is_zero() {
            return Err(format!(
                "channel {:?}: retry_max must be at least retry_initial, and timeout above 0",
                self.name
            ));
        }
        Ok(())
    }
}

/// A secret string: shown as `<redacted>` by `Debug`, with no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a channel could not be set up or a message not delivered. Never holds a URL or secret.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("channel {channel}: {what} is not set (environment variable {var} is empty or unset)")]
    MissingEnv {
        channel: String,
        what: &'static str,
        var: String,
    },
    #[error("channel {channel}: cannot read {what} from {path}: {source}")]
    File {
        channel: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("channel {channel}: the webhook URL is not an http(s) URL")]
    BadUrl { channel: String },
    #[error("channel {channel}: TLS setup failed: {message}")]
    Tls { channel: String, message: String },
    #[error("channel {channel}: {message}")]
    Delivery {
        channel: String,
        message: String,
        retryable: bool,
    },
}

impl NotifyError {
    fn retryable(&self) -> bool {
        matches!(
            self,
            Self::Delivery {
                retryable: true,
                ..
            }
        )
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A channel, ready to send.
pub struct Channel {
    pub config: ChannelConfig,
    url: Secret,
    secret: Option<Secret>,
    client: Client,
    last_sent: tokio::sync::Mutex<Option<Instant>>,
    counter: IntCounterVec,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.config.name)
            .field("kind", &self.config.kind)
            .field("url", &self.url)
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

fn read_secret(
    channel: &str,
    what: &'static str,
    file: Option<&PathBuf>,
    var: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, NotifyError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| NotifyError::File {
            channel: channel.to_owned(),
            what,
            path: path.clone(),
            source,
        })?;
        return Ok(Some(Secret(text.trim().to_owned())).filter(|s| !s.0.is_empty()));
    }
    if var.is_empty() {
        return Ok(None);
    }
    Ok(env(var)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .map(Secret))
}

impl Channel {
    /// Reads the URL (required) and secret (optional) and builds the HTTP client.
    pub fn new(
        config: ChannelConfig,
        env: &dyn Fn(&str) -> Option<String>,
        counter: IntCounterVec,
    ) -> Result<Self, NotifyError> {
        let name = config.name.clone();
        let url = read_secret(
            &name,
            "the webhook URL",
            config.url_file.as_ref(),
            &config.url_env,
            env,
        )?
        .ok_or_else(|| NotifyError::MissingEnv {
            channel: name.clone(),
            what: "the webhook URL",
            var: config.url_env.clone(),
        })?;
        let parsed: Result<hyper::Uri, _> = url.expose().parse();
        if !parsed.is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https"))) {
            return Err(NotifyError::BadUrl { channel: name });
        }
        let secret = if config.kind == ChannelKind::Feishu {
            read_secret(
                &name,
                "the signing secret",
                config.secret_file.as_ref(),
                &config.secret_env,
                env,
            )?
        } else {
            None
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| NotifyError::Tls {
                channel: name.clone(),
                message: e.to_string(),
            })?
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        // The channel's series exist at 0 from the start, so the first failure is an increase.
        for result in [Outcome::Success, Outcome::Failure, Outcome::Retry] {
            counter
                .with_label_values(&[name.as_str(), result.as_str()])
                .inc_by(0);
        }
        Ok(Self {
            config,
            url,
            secret,
            client,
            last_sent: tokio::sync::Mutex::new(None),
            counter,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Sends one message body (already in the channel's format), paced and retried.
    pub async fn send(&self, body: &Value) -> Result<(), NotifyError> {
        let mut last = self.last_sent.lock().await;
        if let Some(at) = *last {
            let wait = self.config.min_interval.saturating_sub(at.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.retry_initial)
            .with_max_delay(self.config.retry_max)
            .with_max_times(self.config.max_attempts.saturating_sub(1) as usize)
            .with_jitter();
        let name = self.config.name.clone();
        let result = (|| self.attempt(body))
            .retry(backoff)
            .when(NotifyError::retryable)
            .notify(|e, after| {
                self.counter
                    .with_label_values(&[&name, Outcome::Retry.as_str()])
                    .inc();
                tracing::warn!(channel = %name, retry_in = ?after, "notification not delivered, retrying: {e}");
            })
            .await;
        *last = Some(Instant::now());
        let label = Outcome::of(result.is_ok()).as_str();
        self.counter.with_label_values(&[&name, label]).inc();
        result
    }

    async fn attempt(&self, body: &Value) -> Result<(), NotifyError> {
        let mut body = body.clone();
        if let Some(secret) = &self.secret {
            let timestamp = chrono::Utc::now().timestamp();
            body["timestamp"] = Value::String(timestamp.to_string());
            body["sign"] = Value::String(feishu::sign(timestamp, secret.expose()));
        }
        let fail = |message: String, retryable: bool| NotifyError::Delivery {
            channel: self.config.name.clone(),
            message,
            retryable,
        };
        let request = hyper::Request::post(self.url.expose())
            .header("content-type", "application/json; charset=utf-8")
            .header(
                "user-agent",
                concat!("kiro-cost-exporter/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| fail("cannot build the request".into(), false))?;
        let exchange = async {
            let resp = self.client.request(request).await.map_err(|e| {
                // The error's source chain may carry the URL; keep only its kind.
                let kind = if e.is_connect() {
                    "cannot connect"
                } else {
                    "transport error"
                };
                fail(kind.into(), true)
            })?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|_| fail("answer cut off".into(), true))?
                .to_bytes();
            Ok::<_, NotifyError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.config.timeout, exchange)
            .await
            .map_err(|_| fail(format!("no answer within {:?}", self.config.timeout), true))??;
        if !status.is_success() {
            let retryable = status.as_u16() == 429 || status.is_server_error();
            return Err(fail(format!("HTTP {status}"), retryable));
        }
        if self.config.kind == ChannelKind::Webhook {
            return Ok(());
        }
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
            fail(
                format!("HTTP {status} with an answer that is not JSON"),
                false,
            )
        })?;
        let code = answer
            .get("code")
            .or_else(|| answer.get("StatusCode"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if code == 0 {
            return Ok(());
        }
        let msg = answer
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        Err(fail(
            format!("Feishu answered code {code}: {msg}"),
            code == feishu::RATE_LIMITED,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret("https://open.feishu.cn/open-apis/bot/v2/hook/abc".into());
        assert_eq!(format!("{s:?}"), "<redacted>");
    }
}
