//! The HTTP endpoints: `/metrics` (the cached exposition, gzip when asked), `/healthz`,
//! `/readyz` (503 until the first snapshot) and a landing page at `/`.
//!
//! Requests only read the bytes the last refresh published; nothing is computed or queried at
//! scrape time. Credentials are checked by [`auth`]; a bcrypt check (slow on purpose) runs on
//! a blocking thread, so unauthenticated clients cannot stall the runtime that serves
//! Prometheus. [`handle`] answers a request without a socket, [`serve`] runs the listener and
//! drains open connections on shutdown.

pub mod auth;
pub mod exposition;
pub mod reload;
pub mod tls;
pub mod web_config;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::config_error::{ConfigError, ensure};
use auth::{Access, WebSecurity};
pub use exposition::{Body, Exposition};
use reload::LiveSecurity;
use web_config::{WebConfigError, WebSources};

/// Default port: outside the fully allocated 9100–9999 exporter range.
pub const DEFAULT_PORT: u16 = 19877;

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address for /metrics, /healthz, /readyz and the landing page. Port 0 picks a free port
    /// (the address is printed at start-up).
    pub listen: SocketAddr,
    /// On SIGTERM/SIGINT, open requests get this long to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Web configuration file in the Prometheus exporter-toolkit format (TLS, basic auth with
    /// bcrypt hashes, extra headers); empty = plain HTTP without authentication.
    pub web_config_file: PathBuf,
    /// File holding a bearer token that is accepted as `Authorization: Bearer TOKEN`;
    /// empty = none.
    pub bearer_token_file: PathBuf,
    /// Paths answered without credentials when authentication is on (e.g. `["/healthz",
    /// "/readyz"]` for probes that cannot authenticate).
    pub unauthenticated_paths: Vec<String>,
    /// Connections served at once; more clients wait in the listen backlog.
    pub max_connections: usize,
    /// Time a client has for the TLS handshake and for sending each request's headers.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            shutdown_grace: Duration::from_secs(10),
            web_config_file: PathBuf::new(),
            bearer_token_file: PathBuf::new(),
            unauthenticated_paths: Vec::new(),
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerSettings {
    /// Checks values (no I/O); errors name the key under `server`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.max_connections > 0,
            "server.max_connections",
            "must be at least 1",
        )?;
        ensure(
            self.header_read_timeout >= Duration::from_millis(100),
            "server.header_read_timeout",
            "must be at least 100ms",
        )?;
        if let Some(p) = self
            .unauthenticated_paths
            .iter()
            .find(|p| !p.starts_with('/'))
        {
            return Err(ConfigError::key(
                "server.unauthenticated_paths",
                format!("{p:?} is not a path (it must start with '/')"),
            ));
        }
        ensure(
            !self.shutdown_grace.is_zero(),
            "server.shutdown_grace",
            "must be greater than 0",
        )
    }

    /// Where the endpoints' security comes from (the web configuration and token files).
    pub fn web_sources(&self) -> WebSources {
        let path = |p: &Path| (!p.as_os_str().is_empty()).then(|| p.to_owned());
        WebSources {
            web_config: path(&self.web_config_file),
            bearer_token_file: path(&self.bearer_token_file),
            open_paths: self.unauthenticated_paths.clone(),
        }
    }

    /// Reads the web configuration and bearer token files into what the server enforces.
    pub fn security(&self) -> Result<WebSecurity, WebConfigError> {
        self.web_sources().load()
    }

    /// What the listener runs with (reads the web configuration and token files).
    pub fn serve_options(&self) -> Result<ServeOptions, WebConfigError> {
        Ok(ServeOptions {
            security: Arc::new(LiveSecurity::load(self.web_sources())?),
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            grace: self.shutdown_grace,
        })
    }
}

const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the last refresh published.
#[derive(Debug, Clone)]
pub struct Published {
    pub exposition: Exposition,
    /// Whether a snapshot has been published (false until the first refresh succeeds).
    pub ready: bool,
    pub landing: Bytes,
}

/// Shared state: one writer (the refresh loop), many readers (requests).
#[derive(Debug)]
pub struct State {
    published: ArcSwap<Published>,
    /// The newest monthly report files by name, served at `/reports/NAME`.
    reports: ArcSwap<std::collections::BTreeMap<String, Bytes>>,
}

/// Report files kept for `/reports/` (the newest by name: the file name carries the month).
pub const REPORTS_SERVED: usize = 6;

impl State {
    pub fn new(initial: Published) -> Self {
        Self {
            published: ArcSwap::from_pointee(initial),
            reports: ArcSwap::from_pointee(std::collections::BTreeMap::new()),
        }
    }

    /// Serves a report file at `/reports/NAME` (the oldest beyond [`REPORTS_SERVED`] are
    /// dropped).
    pub fn put_report(&self, name: &str, bytes: Bytes) {
        let mut next = (*self.reports.load_full()).clone();
        next.insert(name.to_owned(), bytes);
        while next.len() > REPORTS_SERVED {
            next.pop_first();
        }
        self.reports.store(Arc::new(next));
    }

    /// A served report file.
    pub fn report(&self, name: &str) -> Option<Bytes> {
        self.reports.load().get(name).cloned()
    }

    /// The names of the report files served.
    pub fn report_names(&self) -> Vec<String> {
        self.reports.load().keys().cloned().collect()
    }

    pub fn publish(&self, p: Published) {
        self.published.store(Arc::new(p));
    }

    pub fn load(&self) -> Arc<Published> {
        self.published.load_full()
    }
}

fn accepts_gzip<B>(req: &Request<B>) -> bool {
    let values = req.headers().get_all(header::ACCEPT_ENCODING);
    values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    head: bool,
) -> Response<Body> {
    let len = body.len() as u64;
    with_length(status, content_type, Body::from(body), len, head)
}

/// A response of `len` bytes (its body left out for HEAD), with the headers every answer has.
fn with_length(
    status: StatusCode,
    content_type: &'static str,
    body: Body,
    len: u64,
    head: bool,
) -> Response<Body> {
    let mut r = Response::new(if head { Body::empty() } else { body });
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Answers one request: checks its credentials (a bcrypt check on a blocking thread, through
/// the login gate), then answers from the published state, with the configured extra headers.
pub async fn handle_secured<B>(
    req: &Request<B>,
    state: &State,
    security: &Arc<WebSecurity>,
) -> Response<Body> {
    let access = match security.check_fast(req.uri().path(), auth::authorization(req)) {
        Ok(access) => access,
        Err(pending) => security.verify(pending).await,
    };
    let mut r = match access {
        Access::Allowed => handle(req, state),
        // As exporter-toolkit: before credentials and without the extra headers.
        Access::RateLimited => {
            return response(
                StatusCode::TOO_MANY_REQUESTS,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"Too Many Requests\n"),
                req.method() == Method::HEAD,
            );
        }
        Access::Denied => {
            let mut r = response(
                StatusCode::UNAUTHORIZED,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"unauthorized\n"),
                req.method() == Method::HEAD,
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, auth::challenge(security));
            r
        }
        Access::Busy => {
            let mut r = response(
                StatusCode::TOO_MANY_REQUESTS,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"too many login attempts at once; try again\n"),
                req.method() == Method::HEAD,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    };
    for (name, value) in &security.headers {
        r.headers_mut().insert(name.clone(), value.clone());
    }
    r
}

/// Answers one request from the published state.
pub fn handle<B>(req: &Request<B>, state: &State) -> Response<Body> {
    let text = "text/plain; charset=utf-8";
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            Bytes::from_static(b"method not allowed\n"),
            false,
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let published = state.load();
    match req.uri().path() {
        "/metrics" => {
            let gzip = accepts_gzip(req);
            let e = &published.exposition;
            let (body, len) = match gzip {
                true => (e.gzip(), e.gzip_len()),
                false => (e.plain(), e.plain_len()),
            };
            let mut r = with_length(StatusCode::OK, METRICS_CONTENT_TYPE, body, len, head);
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            if gzip {
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r
        }
        "/healthz" => response(StatusCode::OK, text, Bytes::from_static(b"ok\n"), head),
        "/readyz" => match published.ready {
            true => response(StatusCode::OK, text, Bytes::from_static(b"ready\n"), head),
            false => response(
                StatusCode::SERVICE_UNAVAILABLE,
                text,
                Bytes::from_static(b"no snapshot yet\n"),
                head,
            ),
        },
        "/" => response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            published.landing.clone(),
            head,
        ),
        path if path.starts_with("/reports/") => {
            let name = &path["/reports/".len()..];
            match state.report(name) {
                Some(bytes) => {
                    let mut r = response(StatusCode::OK, "text/csv; charset=utf-8", bytes, head);
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
                    {
                        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
                    }
                    r
                }
                None => response(
                    StatusCode::NOT_FOUND,
                    text,
                    Bytes::from_static(b"no such report\n"),
                    head,
                ),
            }
        }
        _ => response(
            StatusCode::NOT_FOUND,
            text,
            Bytes::from_static(b"not found\n"),
            head,
        ),
    }
}

/// Limits and protection of the listener.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The endpoints' security as the files say now (read again when they change).
    pub security: Arc<LiveSecurity>,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Time a client has for the TLS handshake and for each request's headers.
    pub header_read_timeout: Duration,
    /// On shutdown, open connections get this long to finish.
    pub grace: Duration,
}

/// Largest request head (request line and headers) a client may send (hyper's buffer
/// limit, which must be at least 8 KiB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Serves HTTP (or HTTPS, when the web configuration has TLS; HTTP/2 too where the client
/// offers it and `http_server_config.http2` allows) on `listener` until `shutdown` resolves,
/// then stops accepting and gives open connections `grace` to finish. Each connection takes
/// the security in force when it is accepted, each request the one in force when it arrives.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    let refusals = Arc::new(HandshakeRefusals::default());
    tokio::pin!(shutdown);
    loop {
        // Wait for a free connection slot before accepting: excess clients queue in the
        // kernel's backlog instead of costing memory here.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer): (_, SocketAddr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let connection = Connection {
                    state: state.clone(),
                    live: options.security.clone(),
                    header_read_timeout: options.header_read_timeout,
                    refusals: refusals.clone(),
                    peer,
                };
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _permit = permit;
                    connection.run(stream, watcher).await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(options.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?options.grace,
            "connections still open after the grace period; closing them"
        );
    }
}

/// One accepted connection.
struct Connection {
    state: Arc<State>,
    live: Arc<LiveSecurity>,
    header_read_timeout: Duration,
    refusals: Arc<HandshakeRefusals>,
    peer: SocketAddr,
}

impl Connection {
    async fn run(
        self,
        stream: tokio::net::TcpStream,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let peer = self.peer;
        let (state, live) = (self.state.clone(), self.live.clone());
        let svc = service_fn(move |req: Request<Incoming>| {
            let (state, security) = (state.clone(), live.current());
            async move { Ok::<_, Infallible>(handle_secured(&req, &state, &security).await) }
        });
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(MAX_HEADER_BYTES);
        let Some(tls) = self.live.current().tls.clone() else {
            let result = watcher
                .watch(http.serve_connection(TokioIo::new(stream), svc))
                .await;
            log_connection_end(peer, result);
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let handshake = tokio::time::timeout(self.header_read_timeout, acceptor.accept(stream));
        let tls_stream = match handshake.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.refusals.record(peer, &e);
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            let mut h2 = http2::Builder::new(TokioExecutor::new());
            h2.timer(TokioTimer::new())
                .max_header_list_size(MAX_HEADER_BYTES as u32);
            let result = watcher
                .watch(h2.serve_connection(TokioIo::new(tls_stream), svc))
                .await;
            log_connection_end(peer, result);
        } else {
            let result = watcher
                .watch(http.serve_connection(TokioIo::new(tls_stream), svc))
                .await;
            log_connection_end(peer, result);
        }
    }
}

fn log_connection_end(peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Refused TLS handshakes an operator can fix (a client certificate not accepted, no common
/// version, suite or curve, plain HTTP on the TLS port) are logged at WARN once per reason and
/// client address every [`HandshakeRefusals::EVERY`]; the rest (a client that hung up) at DEBUG.
#[derive(Debug, Default)]
struct HandshakeRefusals {
    logged:
        std::sync::Mutex<std::collections::HashMap<(std::net::IpAddr, String), std::time::Instant>>,
}

impl HandshakeRefusals {
    const EVERY: Duration = Duration::from_secs(600);
    /// Reasons remembered at most; beyond, the oldest memory is dropped.
    const KEPT: usize = 1024;

    fn record(&self, peer: SocketAddr, e: &std::io::Error) {
        let Some(tls_error) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        };
        let reason = tls_error.to_string();
        let now = std::time::Instant::now();
        let Ok(mut logged) = self.logged.lock() else {
            return;
        };
        let key = (peer.ip(), reason);
        if logged
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < Self::EVERY)
        {
            tracing::debug!(%peer, error = %key.1, "TLS handshake refused");
            return;
        }
        if logged.len() >= Self::KEPT {
            logged.retain(|_, at| now.duration_since(*at) < Self::EVERY);
            if logged.len() >= Self::KEPT {
                logged.clear();
            }
        }
        tracing::warn!(client = %peer.ip(), error = %key.1, "TLS handshake refused (logged once per client and reason every 10 minutes)");
        logged.insert(key, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(Published {
            exposition: Exposition::new(None, Bytes::from_static(b"plain")).unwrap(),
            ready: false,
            landing: Bytes::from_static(b"<!doctype html>"),
        })
    }

    fn get(path: &str, accept: Option<&str>) -> Request<()> {
        let mut b = Request::get(path);
        if let Some(a) = accept {
            b = b.header(header::ACCEPT_ENCODING, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn routes_and_encodings() {
        let s = state();
        let plain = handle(&get("/metrics", None), &s);
        assert_eq!(plain.headers()[header::CONTENT_LENGTH], "5");
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let head = handle(&Request::head("/metrics").body(()).unwrap(), &s);
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "5");
        for a in ["gzip", "deflate, gzip;q=0.5", "*", "GZIP"] {
            let r = handle(&get("/metrics", Some(a)), &s);
            assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip", "{a}");
        }
        for a in ["identity", "gzip;q=0", "gzip; q=0.0", "br"] {
            let r = handle(&get("/metrics", Some(a)), &s);
            assert!(r.headers().get(header::CONTENT_ENCODING).is_none(), "{a}");
        }
        assert_eq!(
            handle(&get("/readyz", None), &s).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(handle(&get("/healthz", None), &s).status(), StatusCode::OK);
        assert_eq!(
            handle(&get("/nope", None), &s).status(),
            StatusCode::NOT_FOUND
        );
        let post = Request::post("/metrics").body(()).unwrap();
        assert_eq!(handle(&post, &s).status(), StatusCode::METHOD_NOT_ALLOWED);
        let r = handle(&get("/", None), &s);
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(r.headers().get(header::SERVER).is_none());
    }
}
