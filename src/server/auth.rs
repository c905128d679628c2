//! Who may reach the HTTP endpoints and how: TLS and basic authentication from a web
//! configuration file in the Prometheus exporter-toolkit format (`--web.config.file`), an
//! optional bearer token, extra response headers, and which paths stay open.
//!
//! The file is the one operators already write for node_exporter and Prometheus:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   min_version: TLS12          # TLS12 (default) or TLS13
//!   client_auth_type: RequireAndVerifyClientCert   # optional; needs client_ca_file
//!   client_ca_file: clients.pem
//! basic_auth_users:
//!   prometheus: $2y$10$…        # bcrypt, e.g. `htpasswd -nBC 10 "" | tr -d ':\n'`
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! ```
//!
//! Keys the daemon does not implement (cipher suites, rate limits, HTTP/2) are rejected with
//! their name rather than silently ignored.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hyper::header::{self, HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Headers the exporter-toolkit format allows in `http_server_config.headers`.
const ALLOWED_HEADERS: &[&str] = &[
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// What the server enforces; the default enforces nothing (plain HTTP, no authentication).
#[derive(Clone, Default)]
pub struct WebSecurity {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User name to bcrypt hash.
    users: BTreeMap<String, String>,
    bearer_token: Option<String>,
    /// Paths answered without credentials.
    open_paths: Vec<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Credentials already checked against their bcrypt hash (a digest of user and password),
    /// so a scrape does not pay bcrypt's deliberate cost every time.
    verified: Arc<Mutex<HashSet<[u8; 32]>>>,
    gate: LoginGate,
}

/// Bounds the bcrypt work unauthenticated clients can cause: at most [`LOGINS_PENDING`]
/// checks wait or run (more are answered 429 at once, so a storm of bad logins cannot hold
/// every connection slot), and at most half the cores verify at once (so the rest stay free
/// for the scrapes that matter).
#[derive(Clone)]
struct LoginGate {
    pending: Arc<tokio::sync::Semaphore>,
    running: Arc<tokio::sync::Semaphore>,
}

/// Basic-auth checks that may wait for bcrypt at once.
pub const LOGINS_PENDING: usize = 16;

impl Default for LoginGate {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            pending: Arc::new(tokio::sync::Semaphore::new(LOGINS_PENDING)),
            running: Arc::new(tokio::sync::Semaphore::new((cores / 2).max(1))),
        }
    }
}

impl std::fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No hashes, no token.
        f.debug_struct("WebSecurity")
            .field("tls", &self.tls.is_some())
            .field("basic_auth_users", &self.users.keys().collect::<Vec<_>>())
            .field("bearer_token", &self.bearer_token.is_some())
            .field("open_paths", &self.open_paths)
            .finish()
    }
}

/// Outcome of the authentication check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// No or wrong credentials: 401 with a `WWW-Authenticate` challenge.
    Denied,
    /// Too many logins waiting for a bcrypt check: 429, try again later.
    Busy,
}

impl WebSecurity {
    /// Reads the web configuration file (if any) and the bearer token file (if any).
    pub fn load(
        web_config: Option<&Path>,
        bearer_token_file: Option<&Path>,
        open_paths: Vec<String>,
    ) -> Result<Self, WebConfigError> {
        let mut s = Self {
            open_paths,
            ..Self::default()
        };
        if let Some(path) = web_config {
            let invalid = |message: String| WebConfigError::Invalid {
                path: path.to_owned(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let file: FileConfig = if text.trim().is_empty() {
                FileConfig::default()
            } else {
                let parsed = config::Config::builder()
                    .add_source(config::File::from_str(&text, config::FileFormat::Yaml))
                    .build()
                    .map_err(|e| invalid(crate::config_error::one_line(&e.to_string())))?;
                serde_path_to_error::deserialize(parsed).map_err(|e| {
                    let message = e.inner().to_string();
                    let message = message.split(" for key `").next().unwrap_or(&message);
                    invalid(format!("{}: {message}", e.path()))
                })?
            };
            let base = path.parent().unwrap_or(Path::new("."));
            if let Some(tls) = file.tls_server_config {
                s.tls = Some(Arc::new(tls_config(&tls, base).map_err(invalid)?));
            }
            for (user, hash) in &file.basic_auth_users {
                bcrypt_parts(hash).map_err(|m| invalid(format!("basic_auth_users.{user}: {m}")))?;
            }
            s.users = file.basic_auth_users;
            if let Some(http) = file.http_server_config {
                for (name, value) in http.headers {
                    let Some(allowed) = ALLOWED_HEADERS
                        .iter()
                        .find(|h| h.eq_ignore_ascii_case(&name))
                    else {
                        return Err(invalid(format!(
                            "http_server_config.headers.{name}: not one of {}",
                            ALLOWED_HEADERS.join(", ")
                        )));
                    };
                    let value = HeaderValue::from_str(&value).map_err(|_| {
                        invalid(format!(
                            "http_server_config.headers.{name}: not a valid header value"
                        ))
                    })?;
                    // HeaderName lower-cases the canonical spelling.
                    let name = HeaderName::from_bytes(allowed.as_bytes())
                        .map_err(|e| invalid(format!("http_server_config.headers.{name}: {e}")))?;
                    s.headers.push((name, value));
                }
            }
        }
        if let Some(path) = bearer_token_file {
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

    /// Whether any credentials are required.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty() || self.bearer_token.is_some()
    }

    /// Checks the request's `Authorization` header for `path` as far as it can without
    /// bcrypt: open paths, bearer tokens, malformed headers, unknown users and credentials
    /// already verified are decided here; a basic-auth pair still to verify is returned as
    /// [`PendingBasic`] for [`Self::verify`].
    pub fn check_fast(
        &self,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<Access, PendingBasic> {
        if !self.requires_auth() || self.open_paths.iter().any(|p| p == path) {
            return Ok(Access::Allowed);
        }
        let Some(value) = authorization.and_then(|v| v.to_str().ok()) else {
            return Ok(Access::Denied);
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let ok = self
                .bearer_token
                .as_ref()
                .is_some_and(|t| constant_time_eq(t.as_bytes(), rest.as_bytes()));
            return Ok(if ok { Access::Allowed } else { Access::Denied });
        }
        if !scheme.eq_ignore_ascii_case("basic") || self.users.is_empty() {
            return Ok(Access::Denied);
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return Ok(Access::Denied);
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return Ok(Access::Denied);
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return Ok(Access::Denied);
        };
        if let Some(hash) = self.users.get(user) {
            let key = credential_digest(user, password, hash);
            if self.verified.lock().is_ok_and(|v| v.contains(&key)) {
                return Ok(Access::Allowed);
            }
        }
        Err(PendingBasic {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// Verifies a basic-auth pair on a blocking thread, through the login gate: `Busy` when
    /// too many are already waiting.
    pub async fn verify(self: &Arc<Self>, pending: PendingBasic) -> Access {
        let Ok(_waiting) = self.gate.pending.clone().try_acquire_owned() else {
            return Access::Busy;
        };
        let Ok(_running) = self.gate.running.clone().acquire_owned().await else {
            return Access::Denied;
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.check_slow(pending))
            .await
            .unwrap_or(Access::Denied)
    }

    /// Verifies a basic-auth pair against its bcrypt hash (an unknown user costs the same
    /// time, so timing does not tell users apart). Blocking.
    #[allow(clippy::disallowed_methods)] // runs on a blocking thread (Self::verify)
    fn check_slow(&self, pending: PendingBasic) -> Access {
        let PendingBasic { user, password } = pending;
        let Some(hash) = self.users.get(&user) else {
            let _ = bcrypt::verify(&password, DUMMY_HASH);
            return Access::Denied;
        };
        if bcrypt::verify(&password, hash).unwrap_or(false) {
            if let Ok(mut v) = self.verified.lock() {
                if v.len() > 1024 {
                    v.clear();
                }
                v.insert(credential_digest(&user, &password, hash));
            }
            Access::Allowed
        } else {
            Access::Denied
        }
    }
}

/// A basic-auth pair that needs a bcrypt check.
pub struct PendingBasic {
    user: String,
    password: String,
}

/// A valid bcrypt hash (cost 10) of a random string, verified against for unknown users.
const DUMMY_HASH: &str = "$2y$10$UdYQ2hEBaT3bAOz9c6Q2LeUiUqSx2MEQ0zDgSqgLNmt7v3Q7vQ1nS";

fn credential_digest(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [user, password, hash] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
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

fn tls_version(v: &str, key: &str) -> Result<&'static rustls::SupportedProtocolVersion, String> {
    match v {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS10" | "TLS11" => Err(format!(
            "tls_server_config.{key}: {v} is not supported (TLS12 or TLS13)"
        )),
        _ => Err(format!(
            "tls_server_config.{key}: {v:?} is not a TLS version (TLS12 or TLS13)"
        )),
    }
}

fn tls_config(t: &TlsFile, base: &Path) -> Result<rustls::ServerConfig, String> {
    let min = tls_version(t.min_version.as_deref().unwrap_or("TLS12"), "min_version")?;
    let max = tls_version(t.max_version.as_deref().unwrap_or("TLS13"), "max_version")?;
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };
    let certs: Vec<CertificateDer<'static>> = match (&t.cert_file, &t.cert) {
        (Some(_), Some(_)) => {
            return Err("tls_server_config: give cert or cert_file, not both".into());
        }
        (Some(f), None) => {
            let f = resolve(f);
            CertificateDer::pem_file_iter(&f)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("tls_server_config.cert_file {}: {e}", f.display()))?
        }
        (None, Some(pem)) => CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls_server_config.cert: {e}"))?,
        (None, None) => return Err("tls_server_config: cert_file is required".into()),
    };
    if certs.is_empty() {
        return Err("tls_server_config: no certificate in cert_file".into());
    }
    let key: PrivateKeyDer<'static> = match (&t.key_file, &t.key) {
        (Some(_), Some(_)) => {
            return Err("tls_server_config: give key or key_file, not both".into());
        }
        (Some(f), None) => {
            let f = resolve(f);
            PrivateKeyDer::from_pem_file(&f)
                .map_err(|e| format!("tls_server_config.key_file {}: {e}", f.display()))?
        }
        (None, Some(pem)) => PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("tls_server_config.key: {e}"))?,
        (None, None) => return Err("tls_server_config: key_file is required".into()),
    };
    // Index in ascending order of versions.
    let all = [&rustls::version::TLS12, &rustls::version::TLS13];
    let rank = |v: &rustls::SupportedProtocolVersion| {
        all.iter().position(|a| a.version == v.version).unwrap_or(0)
    };
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = all
        .into_iter()
        .filter(|v| rank(v) >= rank(min) && rank(v) <= rank(max))
        .collect();
    if versions.is_empty() {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" => {
            let ca = t.client_ca_file.as_ref().ok_or(
                "tls_server_config.client_ca_file is required with RequireAndVerifyClientCert",
            )?;
            let ca = resolve(ca);
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&ca)
                .map_err(|e| format!("tls_server_config.client_ca_file {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| {
                    format!("tls_server_config.client_ca_file {}: {e}", ca.display())
                })?;
                roots
                    .add(c)
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: {other:?} is not supported \
                 (NoClientCert or RequireAndVerifyClientCert)"
            ));
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: the certificate and key do not match: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Value of the `WWW-Authenticate` challenge.
pub fn challenge(sec: &WebSecurity) -> HeaderValue {
    if sec.users.is_empty() {
        HeaderValue::from_static("Bearer realm=\"kiro-cost-exporter\"")
    } else {
        HeaderValue::from_static("Basic realm=\"kiro-cost-exporter\", charset=\"UTF-8\"")
    }
}

/// The `Authorization` header of a request.
pub fn authorization<B>(req: &hyper::Request<B>) -> Option<&HeaderValue> {
    req.headers().get(header::AUTHORIZATION)
}
