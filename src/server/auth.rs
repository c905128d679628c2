//! Who may reach the HTTP endpoints: basic authentication (bcrypt hashes from the web
//! configuration, [`super::web_config`]), an optional bearer token, the paths that stay open,
//! exporter-toolkit's request rate limit, and the extra response headers. A [`WebSecurity`] is
//! one reading of the files; [`super::reload`] swaps in a new one when they change.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::header::{self, HeaderName, HeaderValue};

/// What the server enforces; the default enforces nothing (plain HTTP, no authentication).
pub struct WebSecurity {
    /// TLS, with HTTP/2 offered by ALPN unless `http_server_config.http2` is false.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User name to bcrypt hash.
    pub(super) users: BTreeMap<String, String>,
    pub(super) bearer_token: Option<String>,
    /// Paths answered without credentials.
    open_paths: Vec<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `rate_limit`: requests beyond it are answered 429 before anything else.
    pub(super) rate_limit: Option<RateLimit>,
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

impl Default for WebSecurity {
    fn default() -> Self {
        Self::open(Vec::new())
    }
}

/// exporter-toolkit's `rate_limit`: Go's token bucket (`rate.NewLimiter(rate.Every(interval),
/// burst)`), full at the start, one token back per interval, at most `burst`; a burst of 0
/// refuses every request, as Go's does.
#[derive(Debug)]
pub(super) struct RateLimit {
    interval: Duration,
    burst: u32,
    /// Tokens available and when they were counted.
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub(super) fn new(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst,
            bucket: Mutex::new((f64::from(burst), Instant::now())),
        }
    }

    /// Takes a token if there is one.
    fn allow(&self) -> bool {
        let Ok(mut bucket) = self.bucket.lock() else {
            return false;
        };
        let now = Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() / self.interval.as_secs_f64();
        bucket.0 = (bucket.0 + refill).min(f64::from(self.burst));
        bucket.1 = now;
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
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
    /// Over `rate_limit`: 429, before credentials are looked at.
    RateLimited,
    /// No or wrong credentials: 401 with a `WWW-Authenticate` challenge.
    Denied,
    /// Too many logins waiting for a bcrypt check: 429, try again later.
    Busy,
}

impl WebSecurity {
    /// Plain HTTP without authentication, `open_paths` answered without credentials once
    /// credentials are configured.
    pub fn open(open_paths: Vec<String>) -> Self {
        Self {
            tls: None,
            users: BTreeMap::new(),
            bearer_token: None,
            open_paths,
            headers: Vec::new(),
            rate_limit: None,
            verified: Arc::default(),
            gate: LoginGate::default(),
        }
    }

    /// Keeps `previous`'s bound on bcrypt work for this newer reading of the files, so a reload
    /// does not reset it.
    pub(super) fn carry_over(&mut self, previous: &Self) {
        self.gate = previous.gate.clone();
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
        if self.rate_limit.as_ref().is_some_and(|r| !r.allow()) {
            return Ok(Access::RateLimited);
        }
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
