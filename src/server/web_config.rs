//! The web configuration file in the Prometheus exporter-toolkit format
//! (`--web.config.file`), read with the meaning exporter-toolkit gives it, so the file an
//! operator wrote for node_exporter means the same here:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt            # or cert: inline PEM
//!   key_file: server.key             # or key: inline PEM
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: clients.pem      # or client_ca: inline PEM
//!   client_allowed_sans: [prometheus.example.net]
//!   min_version: TLS12               # TLS12 (default) or TLS13
//!   max_version: TLS13
//!   cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
//!   curve_preferences: [X25519, CurveP256]
//!   prefer_server_cipher_suites: true
//! http_server_config:
//!   http2: true                      # HTTP/2 over TLS
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! rate_limit:
//!   interval: 1s                     # one request per interval, bursts of `burst`
//!   burst: 10
//! basic_auth_users:
//!   prometheus: $2y$10$…             # bcrypt, e.g. `htpasswd -nBC 10 "" | tr -d ':\n'`
//! ```
//!
//! What exporter-toolkit refuses is refused, naming the key; what rustls cannot do (TLS 1.0
//! and 1.1, CBC suites, P-521) is refused by name ([`super::tls`]). The file and the files it
//! names are read again when they change ([`super::reload`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::auth::{RateLimit, WebSecurity};
use super::tls::{self, TlsFile};

/// A web configuration that cannot be used; names the file and the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read the web config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("web config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    http_server_config: Option<HttpFile>,
    rate_limit: Option<RateLimitFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    http2: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFile {
    #[serde(default)]
    interval: Option<GoDuration>,
    #[serde(default)]
    burst: Option<u32>,
}

/// A Go `time.Duration` as YAML gives it: a string such as `1s` or `1m30s`, or an integer
/// count of nanoseconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum GoDuration {
    Nanos(u64),
    Text(String),
}

impl GoDuration {
    fn get(&self) -> Result<Duration, String> {
        match self {
            Self::Nanos(n) => Ok(Duration::from_nanos(*n)),
            Self::Text(s) => parse_go_duration(s),
        }
    }
}

/// Go's `time.ParseDuration` for non-negative durations: decimal numbers, each with a unit
/// (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), e.g. `1.5s`, `1m30s`; `0` alone.
fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 1s, 500ms, 1m30s)");
    let text = s.strip_prefix('+').unwrap_or(s);
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(bad());
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += number * nanos;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// The headers `http_server_config.headers` may set, with the values allowed where
/// exporter-toolkit restricts them (names and values exactly as it spells them).
const EXTRA_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Where the endpoints' security comes from: the web configuration file, the bearer token file
/// and the paths left open.
#[derive(Debug, Clone, Default)]
pub struct WebSources {
    pub web_config: Option<PathBuf>,
    pub bearer_token_file: Option<PathBuf>,
    pub open_paths: Vec<String>,
}

impl WebSources {
    /// Reads the files into what the server enforces.
    pub fn load(&self) -> Result<WebSecurity, WebConfigError> {
        self.load_noting(&mut Vec::new())
    }

    /// The files a load reads: the two named here and those the web configuration names.
    pub(super) fn own_files(&self) -> impl Iterator<Item = &Path> {
        self.web_config
            .iter()
            .chain(self.bearer_token_file.iter())
            .map(PathBuf::as_path)
    }

    /// [`Self::load`], noting in `files` every file the web configuration names (read or not),
    /// so a reload can watch them even when this load fails.
    pub(super) fn load_noting(
        &self,
        files: &mut Vec<PathBuf>,
    ) -> Result<WebSecurity, WebConfigError> {
        let mut s = WebSecurity::open(self.open_paths.clone());
        if let Some(path) = &self.web_config {
            load_web_config(path, &mut s, files)?;
        }
        if let Some(path) = &self.bearer_token_file {
            let token = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let token = token.trim().to_owned();
            if token.is_empty() {
                return Err(WebConfigError::Invalid {
                    path: path.to_owned(),
                    message: "the bearer token file is empty".into(),
                });
            }
            s.bearer_token = Some(token);
        }
        Ok(s)
    }
}

fn parse(text: &str) -> Result<FileConfig, String> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    let parsed = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Yaml))
        .build()
        .map_err(|e| crate::config_error::one_line(&e.to_string()))?;
    serde_path_to_error::deserialize(parsed).map_err(|e| {
        let message = e.inner().to_string();
        let message = message.split(" for key `").next().unwrap_or(&message);
        format!("{}: {message}", e.path())
    })
}

fn load_web_config(
    path: &Path,
    s: &mut WebSecurity,
    files: &mut Vec<PathBuf>,
) -> Result<(), WebConfigError> {
    let invalid = |message: String| WebConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file = parse(&text).map_err(invalid)?;
    let http = file.http_server_config.unwrap_or_default();
    let http2 = http.http2.unwrap_or(true);
    if let Some(t) = &file.tls_server_config {
        if t.is_enabled() {
            let mut reader = tls::Files {
                base: path.parent().unwrap_or(Path::new(".")),
                read: files,
            };
            let config =
                tls::server_config(t, &tls::HttpOptions { http2 }, &mut reader).map_err(invalid)?;
            s.tls = Some(std::sync::Arc::new(config));
        } else if let Some(key) = t.tls_only_keys().first() {
            // exporter-toolkit would serve plain HTTP and drop the key; say so instead.
            return Err(invalid(format!(
                "tls_server_config.{key} is set but TLS is off (no cert_file or cert, key_file or \
                 key): the endpoints would be plain HTTP"
            )));
        }
    }
    for (user, hash) in &file.basic_auth_users {
        bcrypt_parts(hash).map_err(|m| invalid(format!("basic_auth_users.{user}: {m}")))?;
    }
    s.users = file.basic_auth_users;
    for (name, value) in http.headers {
        let Some((canonical, allowed)) = EXTRA_HEADERS.iter().find(|(h, _)| *h == name) else {
            return Err(invalid(format!(
                "http_server_config.headers.{name}: HTTP header {name:?} can not be configured \
                 (only {})",
                EXTRA_HEADERS
                    .iter()
                    .map(|(h, _)| *h)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(invalid(format!(
                "http_server_config.headers.{name}: invalid value {value:?} (expected one of {})",
                allowed.join(", ")
            )));
        }
        let value = HeaderValue::from_str(&value).map_err(|_| {
            invalid(format!(
                "http_server_config.headers.{name}: not a valid header value"
            ))
        })?;
        let name = HeaderName::from_bytes(canonical.as_bytes())
            .map_err(|e| invalid(format!("http_server_config.headers.{name}: {e}")))?;
        s.headers.push((name, value));
    }
    if let Some(r) = file.rate_limit {
        let interval = match &r.interval {
            Some(i) => i
                .get()
                .map_err(|m| invalid(format!("rate_limit.interval: {m}")))?,
            None => Duration::ZERO,
        };
        let burst = r.burst.unwrap_or(0);
        if interval.is_zero() {
            if burst > 0 {
                return Err(invalid(
                    "rate_limit.burst is set but rate_limit.interval is 0 (no limit): set an \
                     interval"
                        .into(),
                ));
            }
        } else {
            s.rate_limit = Some(RateLimit::new(interval, burst));
        }
    }
    Ok(())
}

/// Checks that `hash` looks like a bcrypt hash (`$2a$`, `$2b$` or `$2y$`, cost 4 to 31).
fn bcrypt_parts(hash: &str) -> Result<(), String> {
    let parts: Vec<&str> = hash.split('$').collect();
    let ok = parts.len() == 4
        && parts[0].is_empty()
        && matches!(parts[1], "2a" | "2b" | "2y" | "2x")
        && parts[2].parse::<u32>().is_ok_and(|c| (4..=31).contains(&c))
        && parts[3].len() == 53;
    if ok {
        Ok(())
    } else {
        Err("not a bcrypt hash ($2y$10$ followed by 53 characters)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (text, ms) in [
            ("0", 0),
            ("1s", 1000),
            ("1.5s", 1500),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("1h", 3_600_000),
            ("250us", 0),
        ] {
            assert_eq!(parse_go_duration(text).unwrap().as_millis(), ms, "{text}");
        }
        for bad in ["", "1", "1d", "s", "-1s", "1 s", "1.2.3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
