//! Bad input, generated: mutations of the shipped configuration files must load into a clean
//! error or valid settings, never a panic (a handful go through the binary to check the exit
//! status and the one-line message); malformed HTTP requests never crash the server or get a
//! 5xx; CUR rows with arbitrary text and numbers allocate and reconcile, or are refused with a
//! one-line error, never a panic.

use std::collections::HashMap;
use std::path::Path;

use kiro_cost_exporter::config;
use proptest::prelude::*;

use crate::support::*;

const SHIPPED: &[&str] = &[
    "local.toml",
    "athena.toml",
    "alerts.toml",
    "budgets.toml",
    "cloudwatch.toml",
    "demo.yaml",
];

/// One edit of a configuration text.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(usize),
    DuplicateLine(usize),
    /// Replaces the value after `=` or `:` on a line.
    Value(usize, String),
    Truncate(usize),
    Insert(usize, String),
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"\"".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("1e309".to_owned()),
        Just("nan".to_owned()),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("\"99999999999999999999h\"".to_owned()),
        Just("\"0.0.0.0:99999\"".to_owned()),
        Just("\"\\u0000\"".to_owned()),
        "[ -~]{0,12}".prop_map(|s| s),
        "\"[a-z/]{0,8}\"".prop_map(|s| s),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::DeleteLine),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), value()).prop_map(|(l, v)| Edit::Value(l, v)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), "[ -~\\n\\t\\[\\]{}=:\"'#-]{0,20}").prop_map(|(l, s)| Edit::Insert(l, s)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for e in edits {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match e {
            Edit::DeleteLine(i) => {
                lines.remove(i % n);
            }
            Edit::DuplicateLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::Value(i, v) => {
                let l = &mut lines[i % n];
                if let Some(at) = l.find(['=', ':']) {
                    l.truncate(at + 1);
                    l.push(' ');
                    l.push_str(v);
                }
            }
            Edit::Truncate(i) => {
                let l = &mut lines[i % n];
                let mut cut = i % (l.len() + 1);
                while !l.is_char_boundary(cut) {
                    cut -= 1;
                }
                l.truncate(cut);
            }
            Edit::Insert(i, s) => lines.insert(i % (n + 1), s.clone()),
        }
    }
    lines.join("\n")
}

/// Loads and validates as `check-config` does; panics only if the loader does.
fn check(path: &Path) -> Result<(), String> {
    let settings = config::load_with_env(Some(path), HashMap::new()).map_err(|e| e.to_string())?;
    settings.validate().map_err(|e| e.to_string())?;
    settings.server.security().map_err(|e| e.to_string())?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_configs_load_or_fail_cleanly(
        file in 0..SHIPPED.len(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let name = SHIPPED[file];
        let original = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(name),
        ).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, apply(&original, &edits)).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&path));
        prop_assert!(outcome.is_ok(), "loading panicked on {:?}", edits);
        if let Ok(Err(message)) = outcome {
            prop_assert!(!message.is_empty() && !message.contains('\n'), "{message:?}");
        }
    }
}

#[test]
fn mutated_configs_through_the_binary_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let original =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/local.toml"))
            .unwrap();
    let bad = [
        original.replace("interval = \"1h\"", "interval = \"soon\""),
        original.replace("[server]", "[server"),
        original.replace("max_connections = 256", "max_connections = -3"),
        original.replace("target_partitions = 0", "target_partitions = \"many\""),
        // A table that is no longer a setting.
        format!("{original}\n[source.datafusion]\n\"execution.batch_size\" = \"8192\"\n"),
        // Cut inside a string, as a half-written file would be.
        original[..original.find("retry_max = \"").unwrap() + 14].to_owned(),
    ];
    for (i, text) in bad.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let o = run(&["check-config", "--config", path.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "case {i}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "case {i}: {err}");
        assert!(!err.contains("panicked"), "case {i}: {err}");
    }
}

/// One raw HTTP/1 request, as a client (or an attacker) might write it.
#[derive(Debug, Clone)]
struct RawRequest {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Sent instead of all the above when set.
    garbage: Option<Vec<u8>>,
}

impl RawRequest {
    fn bytes(&self) -> Vec<u8> {
        if let Some(g) = &self.garbage {
            return g.clone();
        }
        let mut out = format!("{} {} {}\r\n", self.method, self.target, self.version).into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn raw_request() -> impl Strategy<Value = RawRequest> {
    let method = prop_oneof![
        8 => prop::sample::select(vec!["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH", "PRI"]).prop_map(str::to_owned),
        1 => "[A-Z]{1,12}",
        1 => "[ -~]{0,8}",
    ];
    let target = prop_oneof![
        4 => prop::sample::select(vec![
            "/", "/metrics", "/healthz", "/readyz", "/metrics?debug=1", "*",
            "http://127.0.0.1/metrics", "//metrics", "/metrics/../metrics", "/%00", "/%ZZ",
            "/metrics#frag", "/favicon.ico", "/debug/pprof",
        ]).prop_map(str::to_owned),
        2 => "/[ -~]{0,64}",
        1 => "/[a-z%0-9]{200,400}",
        1 => "\\PC{0,32}",
        1 => Just(format!("/{}", "a".repeat(9_000))),
    ];
    let version = prop_oneof![
        10 => Just("HTTP/1.1".to_owned()),
        1 => prop::sample::select(vec!["HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1 x", "http/1.1", ""]).prop_map(str::to_owned),
        1 => "[ -~]{0,10}",
    ];
    let name = prop_oneof![
        12 => prop::sample::select(vec![
            "Host", "Accept-Encoding", "Content-Length", "Transfer-Encoding", "Connection",
            "Authorization", "Expect", "Upgrade", "Content-Type", "Range",
        ]).prop_map(str::to_owned),
        1 => "[A-Za-z-]{1,20}",
        1 => "[ -~]{0,20}",
    ];
    let value = prop_oneof![
        12 => prop::sample::select(vec![
            "gzip", "identity, gzip;q=0", "chunked", "-1", "0", "99999999999999999999",
            "close", "keep-alive", "100-continue", "h2c", "Basic !!!", "Bearer",
            "bytes=0-10", "127.0.0.1",
        ]).prop_map(str::to_owned),
        2 => "[ -~]{0,40}",
        1 => "\\PC{0,20}",
        1 => Just("x".repeat(20_000)),
    ];
    let headers = proptest::collection::vec((name, value), 0..6);
    let body = prop_oneof![
        3 => Just(Vec::new()),
        1 => proptest::collection::vec(any::<u8>(), 0..128),
    ];
    let garbage = prop_oneof![
        9 => Just(None),
        1 => proptest::collection::vec(any::<u8>(), 0..512).prop_map(Some),
    ];
    (method, target, version, headers, body, garbage).prop_map(
        |(method, target, version, headers, body, garbage)| RawRequest {
            method,
            target,
            version,
            headers,
            body,
            garbage,
        },
    )
}

/// Sends `bytes` on a new connection; the first response (head, and the body its
/// Content-Length announces unless `head_only`), or what came back before the server closed the
/// connection or went quiet for `quiet`.
fn exchange(
    addr: std::net::SocketAddr,
    bytes: &[u8],
    head_only: bool,
    quiet: std::time::Duration,
) -> Vec<u8> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(quiet)).unwrap();
    s.set_write_timeout(Some(quiet)).unwrap();
    // The server may answer and close before it has read everything: not an error here.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            match length {
                _ if head_only => return out,
                Some(n) if out.len() >= end + 4 + n => return out,
                _ => {}
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn malformed_http_never_breaks_the_server() {
    let e = Export::write([
        seat("alice", Some("CC-A"), "Pro", 1, 20.0),
        credits("alice", Some("CC-A"), 3, 1_100.0, 100.0),
    ]);
    let mut d = Daemon::start(
        &["--cur", e.path().to_str().unwrap(), "--period", "2026-10"],
        &[("KIRO_EXPORTER__SERVER__HEADER_READ_TIMEOUT", "1s")],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(wait_status(&d.url("/readyz"), 200, 60));
    let addr = d.addr;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let quiet = std::time::Duration::from_millis(1500);
    let answered = std::cell::Cell::new(0usize);
    let log = d.stderr_log.clone();
    let child = std::cell::RefCell::new(&mut d.child);
    let result = runner.run(&raw_request(), |req| {
        let head_only = req.method == "HEAD" && req.garbage.is_none();
        let reply = exchange(addr, &req.bytes(), head_only, quiet);
        prop_assert!(
            child.borrow_mut().try_wait().unwrap().is_none(),
            "the daemon exited on {req:?}"
        );
        if reply.is_empty() {
            return Ok(());
        }
        answered.set(answered.get() + 1);
        let text = String::from_utf8_lossy(&reply);
        let status: u16 = text
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        prop_assert!(
            (200..500).contains(&status),
            "not an HTTP/1 answer below 500 to {req:?}: {:?}",
            &text[..text.len().min(200)]
        );
        let head = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        prop_assert!(!head.contains("\r\nserver:"), "{head}");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\nlog: {}", log.lock().unwrap());
    }
    let answered = answered.get();
    assert!(answered > 100, "most requests get an answer: {answered}");
    // Still serving, completely and correctly.
    let m = rt.block_on(scrape(&d));
    assert_scrape_reconciles(&m, "2026-10");
    assert_eq!(
        crate::support::value(
            &m,
            "kiro_user_cost_usd",
            &[
                ("account_id", ACCOUNT),
                ("region", "us-east-1"),
                ("user_id", "alice"),
                ("cost_center", "CC-A"),
                ("plan", "Pro"),
                ("billing_period", "2026-10"),
            ]
        ),
        Some(24.0)
    );
    assert!(!d.log().contains("panicked"), "{}", d.log());
    d.terminate();
    assert!(d.wait_exit(15).success(), "{}", d.log());
}

/// Text a CUR column may hold: anything, from the usual to the hostile.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9._-]{1,12}",
        1 => Just(String::new()),
        1 => Just("a,b;\"c\"\n'd'\\e\t{f}=g".to_owned()),
        1 => Just("ünïcødé 成本中心 🚀".to_owned()),
        1 => Just("x".repeat(2_000)),
        1 => "\\PC{0,24}",
    ]
}

/// A cost or amount as CUR writes it (a double), within what a bill holds.
pub fn cost() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => (-100_000i64..1_000_000i64).prop_map(|c| c as f64 / 10_000.0),
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => Just(1e-12),
    ]
}

/// A number no bill holds.
pub fn insane() -> impl Strategy<Value = f64> {
    prop::sample::select(vec![
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e30,
        -1e30,
        f64::MAX,
    ])
}

pub fn cur_line() -> impl Strategy<Value = kiro_cost_exporter::curgen::CurLine> {
    let usage = prop_oneof![
        4 => prop::sample::select(vec![
            "USE1-KiroEnterprise-Pro", "USE1-KiroEnterprise-ProPlus", "USE1-KiroEnterprise-Power",
            "USE1-KiroEnterprise-Credits", "EUC1-KiroEnterprise-Pro",
        ]).prop_map(str::to_owned),
        1 => text(),
    ];
    let line_type = prop::sample::select(vec![
        "Usage",
        "FlatRateSubscription",
        "Tax",
        "Credit",
        "Refund",
        "Fee",
    ]);
    let account = prop_oneof![3 => Just(ACCOUNT.to_owned()), 1 => text()];
    // Kiro's lines, and Amazon Q's: Q Developer seat lines (any case of the operation) and
    // others, which never count.
    let product = prop_oneof![
        5 => Just(("Kiro", None)),
        1 => prop::sample::select(vec![
            "number-q-dev-subscriptions",
            "Number-Q-Dev-Subscriptions",
            "monthly-subscription",
        ]).prop_map(|op| ("AmazonQ", Some(op))),
    ];
    (
        text(),
        account,
        proptest::option::of(text()),
        usage,
        line_type,
        cost(),
        cost(),
        1u32..29,
        product,
        0u8..4,
    )
        .prop_map(
            |(user, account, cc, usage, line_type, amount, money, day, (code, op), tags)| {
                let mut base = line(&user, cc.as_deref());
                // Tag maps as exports hold them: other keys first, and the cost-center key a
                // second time (the first entry is the one read).
                if tags & 1 == 1 {
                    base.tags
                        .insert(0, ("resourceTags/user:Owner".to_owned(), user.clone()));
                }
                if tags & 2 == 2 {
                    base.tags
                        .push((crate::support::TAG.to_owned(), "second".to_owned()));
                }
                kiro_cost_exporter::curgen::CurLine {
                    product_code: code,
                    operation: op.unwrap_or(base.operation),
                    account_id: account,
                    usage_type: usage,
                    line_type,
                    usage_amount: amount,
                    unblended_cost: money,
                    net_unblended_cost: Some(money),
                    usage_start: at(period("2026-10"), day, 3),
                    ..base
                }
            },
        )
}

/// Whether every number in the lines is one a bill can hold.
fn sane(lines: &[kiro_cost_exporter::curgen::CurLine]) -> bool {
    lines.iter().all(|l| {
        [
            l.usage_amount,
            l.unblended_cost,
            l.net_unblended_cost.unwrap_or(0.0),
        ]
        .iter()
        .all(|v| v.is_finite() && v.abs() < 1e12)
    })
}

#[test]
fn arbitrary_cur_rows_allocate_and_reconcile_or_fail_cleanly() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let (allocated, refused) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    // Lines with ordinary numbers, one of which is sometimes given a number no bill holds.
    let bills = (
        proptest::collection::vec(cur_line(), 1..10),
        proptest::option::weighted(0.3, (any::<prop::sample::Index>(), 0..3usize, insane())),
    )
        .prop_map(|(mut lines, spoil)| {
            if let Some((i, field, v)) = spoil {
                let n = i.index(lines.len());
                let l = &mut lines[n];
                match field {
                    0 => l.usage_amount = v,
                    1 => l.unblended_cost = v,
                    _ => l.net_unblended_cost = Some(v),
                }
            }
            lines
        });
    let result = runner.run(&bills, |lines| {
        let sane = sane(&lines);
        let e = Export::write(lines.clone());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(e.allocate("2026-10"))
        }));
        prop_assert!(outcome.is_ok(), "allocation panicked on {lines:?}");
        match outcome.unwrap() {
            Ok(a) => {
                allocated.set(allocated.get() + 1);
                let reconciles = std::panic::catch_unwind(|| assert_reconciles(&a));
                prop_assert!(reconciles.is_ok(), "does not reconcile: {lines:?}");
            }
            Err(err) => {
                refused.set(refused.get() + 1);
                let message = err.to_string();
                prop_assert!(
                    !sane,
                    "a bill with ordinary numbers was refused ({message}): {lines:?}"
                );
                prop_assert!(
                    matches!(
                        err.kind().as_str(),
                        "decode" | "bad_input" | "engine" | "reconciliation"
                    ),
                    "{}: {message}",
                    err.kind()
                );
                prop_assert!(
                    !message.is_empty() && !message.contains('\n'),
                    "{message:?}"
                );
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (allocated, refused) = (allocated.get(), refused.get());
    assert!(allocated > 0, "some bills allocate");
    eprintln!("{allocated} allocated, {refused} refused");
}
