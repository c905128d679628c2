//! AWS emulators on loopback for the real AWS SDK, and a proxy in front of them that injects
//! faults and bridges dialects.
//!
//! - [`Emulator`]: moto or ministack, each from its own virtualenv under `target/test-venvs/`
//!   (made by `.ci/run`), on a free 127.0.0.1 port, with its state in a temp dir; killed on drop.
//! - [`Proxy`]: a loopback HTTP proxy that forwards to an emulator, records every call's
//!   `X-Amz-Target`, answers the first N calls with throttling errors and 500s, and can bridge
//!   the Athena dialect gap of ministack (see [`duckdb_bridge`]).

#![allow(dead_code)]

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::support::{LoopbackServer, external, free_port, root};

pub const REGION: &str = "us-east-1";
/// The secret access key the binary gets; it must never show in its output.
pub const SECRET_KEY: &str = "kiroTestSecretAccessKey0123456789abcdefgh";

/// Environment for the binary: static credentials, the region, nothing from the host's AWS
/// files or instance metadata.
pub fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "AKIATESTKIROEXPORTER"),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        ),
    ]
}

/// Which emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// moto: canned Athena results and scripted state transitions.
    Moto,
    /// ministack: Athena runs real SQL (DuckDB) over Parquet in its own S3.
    Ministack,
}

/// A running emulator, killed (and its state removed) on drop.
pub struct Emulator {
    child: Child,
    pub port: u16,
    pub kind: Kind,
    _state: tempfile::TempDir,
    log: PathBuf,
}

impl Emulator {
    /// Starts the emulator, or returns `None` (the test skips) when it is not installed and
    /// not required.
    pub fn start(kind: Kind) -> Option<Self> {
        let venvs = root().join("target/test-venvs");
        let (name, program) = match kind {
            Kind::Moto => (
                "moto (PyPI moto[server])",
                venvs.join("moto/bin/moto_server"),
            ),
            Kind::Ministack => (
                "ministack (PyPI ministack cbor2 duckdb)",
                venvs.join("ministack/bin/ministack"),
            ),
        };
        let program = external(name, &program)?;
        let state = tempfile::tempdir().unwrap();
        let log = state.path().join("emulator.log");
        let port = free_port();
        let mut cmd = Command::new(&program);
        match kind {
            Kind::Moto => {
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            }
            Kind::Ministack => {
                cmd.env("BIND_HOST", "127.0.0.1")
                    .env("GATEWAY_PORT", port.to_string())
                    .env("S3_DATA_DIR", state.path().join("s3"))
                    .env("MINISTACK_REGION", REGION)
                    .env("ATHENA_ENGINE", "duckdb");
            }
        }
        let out = std::fs::File::create(&log).unwrap();
        cmd.current_dir(state.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().unwrap();
        let emulator = Self {
            child,
            port,
            kind,
            _state: state,
            log,
        };
        emulator.wait_ready();
        Some(emulator)
    }

    fn wait_ready(&self) {
        let path = match self.kind {
            Kind::Moto => "/moto-api/",
            Kind::Ministack => "/_ministack/health",
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_status(self.port, "GET", path, &[], b"") == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} did not become ready on port {}; log:\n{}",
                self.kind,
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A JSON POST to the emulator's own API (e.g. moto's `/moto-api/...`); returns the status.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> u16 {
        http_status(
            self.port,
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
        .unwrap_or_else(|| panic!("POST {path} to {:?} failed", self.kind))
    }

    /// An AWS JSON-protocol call by hand, for services the project has no SDK crate for
    /// (Glue's CreateDatabase). Emulators do not check signatures.
    pub fn aws_json(&self, service: &str, target: &str, body: &serde_json::Value) -> u16 {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"
        );
        http_status(
            self.port,
            "POST",
            "/",
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", target),
                ("authorization", &auth),
            ],
            body.to_string().as_bytes(),
        )
        .unwrap_or_else(|| panic!("{target} to {:?} failed", self.kind))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking HTTP/1.1 request on loopback; `None` when the connection fails.
fn http_status(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Static test credentials and the emulator's endpoint for an SDK config.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await
}

pub async fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let aws = kiro_cost_exporter::aws::AwsSettings {
        endpoint_url: endpoint.to_owned(),
        ..Default::default()
    };
    aws.s3_client(&sdk_config(endpoint).await)
}

/// Uploads every file under `dir` to `s3://bucket/prefix/<relative path>`.
pub async fn upload_dir(s3: &aws_sdk_s3::Client, dir: &Path, bucket: &str, prefix: &str) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            s3.put_object()
                .bucket(bucket)
                .key(format!("{prefix}{rel}"))
                .body(aws_sdk_s3::primitives::ByteStream::from(
                    std::fs::read(&p).unwrap(),
                ))
                .send()
                .await
                .unwrap();
            n += 1;
        }
    }
    n
}

/// What the proxy does to the calls it forwards.
#[derive(Default)]
pub struct ProxyState {
    /// Faults still to inject: > 0 counts down, < 0 is forever, 0 is none.
    faults: AtomicI64,
    /// Only calls whose target contains this get faults (`None`: every call).
    only: Mutex<Option<String>>,
    injected: AtomicUsize,
    /// Rewrite Athena's StartQueryExecution for a DuckDB-backed emulator.
    bridge: bool,
    /// Calls whose path contains this are answered 403 AccessDenied (S3's XML).
    deny: Mutex<Option<String>>,
    /// `X-Amz-Target` (or method and path) of every call received, faults included.
    calls: Mutex<Vec<String>>,
    /// JSON bodies of the calls forwarded, by target.
    bodies: Mutex<Vec<(String, serde_json::Value)>>,
}

/// A loopback proxy in front of an emulator; stopped on drop.
pub struct Proxy {
    pub port: u16,
    pub state: Arc<ProxyState>,
    _server: LoopbackServer,
}

impl Proxy {
    /// Forwards to `upstream` (`http://127.0.0.1:PORT`). `bridge`: see [`duckdb_bridge`].
    pub fn start(upstream: &str, bridge: bool) -> Self {
        let state = Arc::new(ProxyState {
            bridge,
            ..Default::default()
        });
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let shared = state.clone();
        let server = LoopbackServer::start(move |req| {
            forward(req, client.clone(), upstream.clone(), shared.clone())
        });
        Self {
            port: server.port,
            state,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Fails the next `n` calls (alternately throttled and 500); `None`: every call from now.
    pub fn fail_next(&self, n: Option<u32>) {
        *self.state.only.lock().unwrap() = None;
        self.state
            .faults
            .store(n.map_or(-1, i64::from), Ordering::SeqCst);
    }

    /// Like [`Proxy::fail_next`], for the calls whose target contains `target` only
    /// (e.g. `AmazonAthena.StartQueryExecution`); the others go through.
    pub fn fail_matching(&self, target: &str, n: Option<u32>) {
        *self.state.only.lock().unwrap() = Some(target.to_owned());
        self.state
            .faults
            .store(n.map_or(-1, i64::from), Ordering::SeqCst);
    }

    /// Answers the calls whose path contains `path` with S3's 403 AccessDenied (`None`: none).
    pub fn deny(&self, path: Option<&str>) {
        *self.state.deny.lock().unwrap() = path.map(str::to_owned);
    }

    pub fn injected(&self) -> usize {
        self.state.injected.load(Ordering::SeqCst)
    }

    /// Calls received so far whose target ends with `suffix` (e.g. `StartQueryExecution`).
    pub fn count(&self, suffix: &str) -> usize {
        self.state
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.ends_with(suffix))
            .count()
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.calls.lock().unwrap().clone()
    }

    /// The JSON bodies forwarded for calls whose target ends with `suffix`.
    pub fn bodies(&self, suffix: &str) -> Vec<serde_json::Value> {
        self.state
            .bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.ends_with(suffix))
            .map(|(_, b)| b.clone())
            .collect()
    }
}

async fn forward(
    req: Request<Incoming>,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    upstream: String,
    state: Arc<ProxyState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || format!("{} {}", req.method(), req.uri().path()),
            str::to_owned,
        );
    state.calls.lock().unwrap().push(target.clone());
    let rest = !req.headers().contains_key("x-amz-target")
        && !req.headers().contains_key("smithy-protocol");
    let denied = state
        .deny
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|d| req.uri().path().contains(d.as_str()));
    if denied {
        return Ok(s3_error(403, "AccessDenied", "Access Denied"));
    }
    let left = state.faults.load(Ordering::SeqCst);
    let applies = state
        .only
        .lock()
        .unwrap()
        .as_ref()
        .is_none_or(|t| target.contains(t.as_str()));
    if left != 0 && applies {
        if left > 0 {
            state.faults.fetch_sub(1, Ordering::SeqCst);
        }
        let n = state.injected.fetch_add(1, Ordering::SeqCst);
        if rest {
            // S3's REST API: throttling is 503 SlowDown.
            return Ok(if n.is_multiple_of(2) {
                s3_error(503, "SlowDown", "Please reduce your request rate.")
            } else {
                s3_error(500, "InternalError", "injected fault")
            });
        }
        let cbor = req
            .headers()
            .get("smithy-protocol")
            .is_some_and(|v| v == "rpc-v2-cbor");
        return Ok(fault(n.is_multiple_of(2), cbor));
    }
    let head = req.method() == hyper::Method::HEAD;
    let (parts, body) = req.into_parts();
    let mut body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        state.bodies.lock().unwrap().push((target.clone(), v));
    }
    if state.bridge && target == "AmazonAthena.StartQueryExecution" {
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        duckdb_bridge(&mut v);
        body = Bytes::from(v.to_string());
    }
    let uri = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut out = Request::builder().method(parts.method).uri(uri);
    for (k, v) in &parts.headers {
        if k != "content-length" && k != "host" {
            out = out.header(k, v);
        }
    }
    let answer = match client.request(out.body(Full::new(body)).unwrap()).await {
        Ok(a) => a,
        Err(e) => {
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(format!("proxy: {e}"))))
                .unwrap());
        }
    };
    let (parts, body) = answer.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut resp = Response::builder().status(parts.status);
    for (k, v) in &parts.headers {
        // A HEAD answer's length is the object's, not its (empty) body's.
        let length = k == "content-length" && !head;
        if !length && k != "transfer-encoding" {
            resp = resp.header(k, v);
        }
    }
    Ok(resp.body(Full::new(body)).unwrap())
}

/// An S3 error response (REST XML).
fn s3_error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>proxy</RequestId></Error>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A throttling error (400) or a 500, in the protocol the caller speaks: AWS JSON, or Smithy
/// RPC v2 CBOR (CloudWatch's).
fn fault(throttle: bool, cbor: bool) -> Response<Full<Bytes>> {
    let (status, code, message) = match (throttle, cbor) {
        (true, false) => (400, "TooManyRequestsException", "Rate exceeded"),
        (true, true) => (400, "Throttling", "Rate exceeded"),
        (false, _) => (500, "InternalServerException", "injected fault"),
    };
    let builder = Response::builder().status(status);
    if cbor {
        // A CBOR map {"__type": code, "message": message}, encoded by hand.
        let text = |s: &str| {
            let mut v = vec![0x60 | s.len() as u8];
            v.extend_from_slice(s.as_bytes());
            v
        };
        let mut body = vec![0xa2];
        for part in ["__type", code, "message", message] {
            body.extend(text(part));
        }
        return builder
            .header("smithy-protocol", "rpc-v2-cbor")
            .header("content-type", "application/cbor")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
    }
    let body = serde_json::json!({ "__type": code, "message": message }).to_string();
    builder
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-errortype", code)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// The gap between Athena (Trino) and ministack (DuckDB), bridged on the wire so that the
/// daemon sends production SQL, unchanged:
/// 1. ministack ignores `ExecutionParameters`: each `?` outside string literals is replaced by
///    its parameter (already a quoted SQL literal, as Athena takes them);
/// 2. on a map (`tags`, `product`), Trino's `element_at(m, k)` is the value, DuckDB's is a list
///    of it: `[1]` is appended (an empty list gives NULL, as Trino does for a missing key);
/// 3. ministack ignores partition projection's `storage.location.template` and matches
///    partition folders by name, case-sensitively, while Hive lower-cases bare identifiers: the
///    DDL's partition column is quoted as the export's folders spell it (`BILLING_PERIOD`);
///    DuckDB resolves the query's `billing_period` to it case-insensitively.
pub fn duckdb_bridge(request: &mut serde_json::Value) {
    let params: Vec<String> = request
        .get("ExecutionParameters")
        .and_then(|p| p.as_array())
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    let query = request["QueryString"].as_str().unwrap().to_owned();
    let mut out = String::with_capacity(query.len());
    let substitute = !params.is_empty();
    let mut params = params.into_iter();
    let mut in_string = false;
    for c in query.chars() {
        match c {
            '\'' => {
                in_string = !in_string;
                out.push(c);
            }
            '?' if substitute && !in_string => {
                out.push_str(&params.next().expect("a parameter for each ?"))
            }
            _ => out.push(c),
        }
    }
    let mut query = out;
    for map in ["element_at(tags,", "element_at(product,"] {
        let mut bridged = String::with_capacity(query.len());
        let mut rest = query.as_str();
        while let Some(i) = rest.find(map) {
            let (head, tail) = rest.split_at(i);
            bridged.push_str(head);
            let close = tail.find(')').unwrap();
            bridged.push_str(&tail[..=close]);
            bridged.push_str("[1]");
            rest = &tail[close + 1..];
        }
        bridged.push_str(rest);
        query = bridged;
    }
    let query = query.replace(
        "PARTITIONED BY (billing_period string)",
        "PARTITIONED BY (`BILLING_PERIOD` string)",
    );
    request["QueryString"] = serde_json::Value::String(query);
    if let Some(o) = request.as_object_mut() {
        o.remove("ExecutionParameters");
    }
}

#[test]
fn the_bridge_rewrites_only_what_differs() {
    let mut v = serde_json::json!({
        "QueryString": "SELECT COALESCE(element_at(tags, ?), '') AS cc, 'what?' FROM t WHERE p = ?",
        "ExecutionParameters": ["'userAttribute/costCenter'", "'2026-10'"],
    });
    duckdb_bridge(&mut v);
    assert_eq!(
        v["QueryString"],
        "SELECT COALESCE(element_at(tags, 'userAttribute/costCenter')[1], '') AS cc, 'what?' FROM t WHERE p = '2026-10'"
    );
    assert!(v.get("ExecutionParameters").is_none());
}
