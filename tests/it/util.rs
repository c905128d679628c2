//! Shared fixtures: hand-made CUR lines, small exports on disk, the binary under test, and the
//! reconciliation check every money test applies.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{DateTime, Duration, TimeZone, Utc};
use kiro_cost_exporter::allocation::{Allocation, AllocationSettings};
use kiro_cost_exporter::curgen::{CurLine, ExportWriter, LineSink};
use kiro_cost_exporter::period::BillingPeriod;
use kiro_cost_exporter::source::{LocalSource, Source, SourceError};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

pub const ACCOUNT: &str = "111122223333";
pub const ACCOUNT_2: &str = "444455556666";
pub const TAG: &str = "userAttribute/costCenter";

/// Environment for a daemon that refreshes every second and retries after a second.
pub const FAST: &[(&str, &str)] = &[
    ("KIRO_EXPORTER__REFRESH__INTERVAL", "1s"),
    ("KIRO_EXPORTER__REFRESH__JITTER", "0s"),
    ("KIRO_EXPORTER__REFRESH__RETRY_INITIAL", "1s"),
    ("KIRO_EXPORTER__REFRESH__RETRY_MAX", "1s"),
];

pub fn period(s: &str) -> BillingPeriod {
    s.parse().unwrap()
}

pub fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

pub fn at(p: BillingPeriod, day: u32, hour: u32) -> DateTime<Utc> {
    p.start() + Duration::days(i64::from(day) - 1) + Duration::hours(i64::from(hour))
}

pub fn arn(user: &str) -> String {
    format!("arn:aws:identitystore::999988887777:user/{user}")
}

/// A Kiro line in October 2026 for `user` in `ACCOUNT`, with the cost center tag `cc`
/// (`None`: no tag at all). Change fields with struct update syntax.
pub fn line(user: &str, cc: Option<&str>) -> CurLine {
    let p = period("2026-10");
    CurLine {
        period: p,
        product_code: "Kiro",
        account_id: ACCOUNT.to_owned(),
        region: "us-east-1",
        user_identifier: if user.is_empty() {
            String::new()
        } else {
            arn(user)
        },
        resource_id: String::new(),
        line_type: "Usage",
        usage_type: "USE1-KiroEnterprise-Credits".to_owned(),
        operation: "Credits",
        pricing_unit: "Credits",
        usage_start: at(p, 2, 10),
        usage_end: at(p, 2, 11),
        usage_amount: 0.0,
        unblended_cost: 0.0,
        net_unblended_cost: 0.0,
        rate: 0.04,
        description: "Kiro credits".to_owned(),
        tags: cc
            .map(|v| vec![(TAG.to_owned(), v.to_owned())])
            .unwrap_or_default(),
    }
}

/// A seat line for `plan` (usage type suffix) starting on `day`.
pub fn seat(user: &str, cc: Option<&str>, plan: &str, day: u32, cost: f64) -> CurLine {
    let p = period("2026-10");
    CurLine {
        line_type: "FlatRateSubscription",
        usage_type: format!("USE1-KiroEnterprise-{plan}"),
        operation: "monthly-subscription",
        pricing_unit: "Users",
        usage_start: at(p, day, 0),
        usage_end: p.end(),
        usage_amount: 1.0,
        unblended_cost: cost,
        net_unblended_cost: cost,
        description: format!("Kiro {plan} subscription"),
        ..line(user, cc)
    }
}

/// Credits used on `day`, of which `overage` credits are charged at $0.04.
pub fn credits(user: &str, cc: Option<&str>, day: u32, amount: f64, overage: f64) -> CurLine {
    let p = period("2026-10");
    let cost = (overage * 0.04 * 10_000.0).round() / 10_000.0;
    CurLine {
        usage_start: at(p, day, 10),
        usage_end: at(p, day, 11),
        usage_amount: amount,
        unblended_cost: cost,
        net_unblended_cost: cost,
        ..line(user, cc)
    }
}

/// A temporary CUR export written from lines.
pub struct Export {
    pub dir: tempfile::TempDir,
}

impl Export {
    pub fn write(lines: impl IntoIterator<Item = CurLine>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ExportWriter::new(dir.path(), "test-export", 100_000, |_| {}).unwrap();
        for l in lines {
            w.line(l).unwrap();
        }
        w.finish().unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn partition(&self, p: &str) -> PathBuf {
        self.path().join("data").join(format!("BILLING_PERIOD={p}"))
    }

    pub async fn allocate(&self, p: &str) -> Result<Allocation, SourceError> {
        self.allocate_with(p, AllocationSettings::default()).await
    }

    pub async fn allocate_with(
        &self,
        p: &str,
        settings: AllocationSettings,
    ) -> Result<Allocation, SourceError> {
        LocalSource::new(self.path(), settings)
            .allocate(period(p))
            .await
    }
}

/// The reconciliation invariant (DESIGN.md): Σ units.total + unattributed + tax = Kiro total,
/// to 1e-6, checked in floating point independently of the allocation's own exact check.
pub fn assert_reconciles(a: &Allocation) {
    a.reconcile().unwrap();
    let units: f64 = a.units.iter().map(|u| u.total_usd.to_f64().unwrap()).sum();
    let lhs = units + a.unattributed_usd.to_f64().unwrap() + a.tax_usd.to_f64().unwrap();
    let rhs = a.kiro_total_usd.to_f64().unwrap();
    assert!(
        (lhs - rhs).abs() < 1e-6,
        "units {units} + unattributed {} + tax {} != total {rhs}",
        a.unattributed_usd,
        a.tax_usd
    );
}

/// Same invariant over `query --format json` output.
pub fn assert_json_reconciles(v: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let units: f64 = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| f(&u["total_usd"]))
        .sum();
    let lhs = units + f(&v["unattributed_usd"]) + f(&v["tax_usd"]);
    assert!(
        (lhs - f(&v["kiro_total_usd"])).abs() < 1e-6,
        "json does not reconcile: {lhs} vs {}",
        v["kiro_total_usd"]
    );
    let cc: f64 = v["cost_centers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| f(&c["total_usd"]))
        .sum();
    assert!(
        (cc - units).abs() < 1e-6,
        "cost centers {cc} != users {units}"
    );
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiro-cost-exporter")
}

/// Runs the binary with arguments and an environment free of KIRO_EXPORTER__ overrides.
pub fn run(args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("KIRO_EXPORTER__") {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn utc(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

/// The daemon under test: a real `serve` process on a free loopback port. Killed on drop, so a
/// failing test does not leave it running.
pub struct Daemon {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub stderr_log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    /// Starts `serve --listen 127.0.0.1:0` with `args` and extra environment variables, and
    /// waits for its address.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_wrapped(&[], args, env)
    }

    /// Like [`Daemon::start`], with the binary run by `wrapper` (a program and its arguments,
    /// which end by running the binary with the rest: `unshare`, `sh -c '…; exec "$@"'`).
    pub fn start_wrapped(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut cmd = match wrapper {
            [] => std::process::Command::new(bin()),
            [program, rest @ ..] => {
                let mut c = std::process::Command::new(program);
                c.args(rest).arg(bin());
                c
            }
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("KIRO_EXPORTER__") {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_LOG", "info");
        cmd.envs(env.iter().copied());
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut d = Self {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            stderr_log: log,
        };
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("daemon printed no address; stderr: {}", d.log()));
        let url = line.split("://").nth(1).unwrap().split('/').next().unwrap();
        d.addr = url.parse().unwrap();
        d
    }

    pub fn log(&self) -> String {
        self.stderr_log.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit, at most `secs`.
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "daemon did not exit within {secs}s; stderr: {}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Scrapes until `f` holds, at most 30 s; the scrape that satisfied it.
pub async fn wait_for(
    d: &Daemon,
    what: &str,
    f: impl Fn(&std::collections::BTreeMap<Series, f64>) -> bool,
) -> std::collections::BTreeMap<Series, f64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let m = scrape(d).await;
        if f(&m) {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; log: {}",
            d.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Waits until the daemon's log contains `needle`, at most `secs`; the log then.
pub fn wait_log(d: &Daemon, needle: &str, secs: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let log = d.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in the log within {secs}s:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A plain HTTP response.
pub struct Http {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: bytes::Bytes,
}

/// GET with a real HTTP client (hyper), optionally asking for gzip.
pub async fn get(url: &str, gzip: bool) -> Result<Http, String> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut req = hyper::Request::get(url);
    if gzip {
        req = req.header("accept-encoding", "gzip");
    }
    let resp = client
        .request(req.body(http_body_util::Empty::new()).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Http {
        status,
        headers,
        body,
    })
}

/// Polls `url` until it answers `status`, at most `secs`.
pub async fn wait_status(url: &str, status: u16, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if get(url, false).await.is_ok_and(|r| r.status == status) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} never answered {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A series: metric name and sorted labels.
pub type Series = (String, std::collections::BTreeMap<String, String>);

/// Parses an exposition with a grammar-based parser of the Prometheus text format.
pub fn parse_exposition(text: &str) -> std::collections::BTreeMap<Series, f64> {
    use openmetrics_parser::PrometheusValue;
    let exp = openmetrics_parser::prometheus::parse_prometheus(text)
        .unwrap_or_else(|e| panic!("exposition does not parse: {e:?}"));
    let mut out = std::collections::BTreeMap::new();
    for (name, family) in exp.families {
        for s in family.iter_samples() {
            let labels = s
                .get_labelset()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let v = match &s.value {
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                PrometheusValue::Counter(c) => c.value.as_f64(),
                other => panic!("unexpected sample type in {name}: {other:?}"),
            };
            assert!(
                out.insert((name.clone(), labels), v).is_none(),
                "duplicate series in {name}"
            );
        }
    }
    out
}

/// Scrapes and parses /metrics.
pub async fn scrape(d: &Daemon) -> std::collections::BTreeMap<Series, f64> {
    let r = get(&d.url("/metrics"), false).await.unwrap();
    assert_eq!(r.status, 200);
    parse_exposition(std::str::from_utf8(&r.body).unwrap())
}

/// The value of a series, by name and labels.
pub fn value(
    m: &std::collections::BTreeMap<Series, f64>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let key = (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    m.get(&key).copied()
}

/// The reconciliation invariant on scraped values of one period: Σ kiro_user_cost_usd +
/// kiro_unattributed_usd + kiro_tax_usd = kiro_cost_usd, to 1e-6.
pub fn assert_scrape_reconciles(m: &std::collections::BTreeMap<Series, f64>, period: &str) {
    let p = [("billing_period", period)];
    let users: f64 = m
        .iter()
        .filter(|((n, l), _)| n == "kiro_user_cost_usd" && l["billing_period"] == period)
        .map(|(_, v)| v)
        .sum();
    let lhs = users
        + value(m, "kiro_unattributed_usd", &p).unwrap()
        + value(m, "kiro_tax_usd", &p).unwrap();
    let total = value(m, "kiro_cost_usd", &p).unwrap();
    assert!(
        (lhs - total).abs() < 1e-6,
        "scrape does not reconcile: users {users} + unattributed + tax = {lhs} != {total}"
    );
}

/// The path of an external program, or `None` (skip) when it is missing and not required.
pub fn external(name: &str, path: &Path) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_owned());
    }
    let required = std::env::var("KIRO_EXPORTER_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{name} is required (KIRO_EXPORTER_REQUIRE_EXTERNAL=1) but {} does not exist; .ci/run installs it",
        path.display()
    );
    eprintln!(
        "SKIPPED: {name} not found at {}; install it (see .ci/run) to run this test",
        path.display()
    );
    None
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP/1 server on a free 127.0.0.1 port, on its own thread and runtime (so that tests
/// blocking on a child process do not stall it), stopped and joined on drop.
pub struct LoopbackServer {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackServer {
    pub fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<
                Output = Result<
                    hyper::Response<http_body_util::Full<bytes::Bytes>>,
                    std::convert::Infallible,
                >,
            > + Send
            + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (conn, _) = tokio::select! {
                        c = listener.accept() => match c { Ok(c) => c, Err(_) => continue },
                        _ = &mut stopped => return,
                    };
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(handler);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                            .await;
                    });
                }
            });
        });
        Self {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes one record batch as a Parquet file.
pub fn write_batch(path: &Path, batch: &datafusion::arrow::array::RecordBatch) {
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// A copy of a CUR file with `column` as text.
pub fn retyped(good: &Path, column: &str, out: &Path) {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(good).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let batch = reader.map(Result::unwrap).next().unwrap();
    let i = batch.schema().index_of(column).unwrap();
    let mut fields: Vec<datafusion::arrow::datatypes::Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[i] = datafusion::arrow::datatypes::Field::new(
        column,
        datafusion::arrow::datatypes::DataType::Utf8,
        true,
    );
    let mut cols = batch.columns().to_vec();
    cols[i] =
        datafusion::arrow::compute::cast(&cols[i], &datafusion::arrow::datatypes::DataType::Utf8)
            .unwrap();
    write_batch(
        out,
        &datafusion::arrow::array::RecordBatch::try_new(
            std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
            cols,
        )
        .unwrap(),
    );
}
