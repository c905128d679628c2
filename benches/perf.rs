//! Performance harness: the allocation and the exposition at enterprise scale, side by side with
//! DuckDB and a plain Parquet read, and /metrics under a scrape load.
//!
//! `cargo bench --bench perf` (release build; scales 1k, 10k and 50k users, one month, noise
//! ratio 5). `cargo test --bench perf -- --smoke` runs the smallest scale once as a check that
//! the harness works (CI does this; its numbers are debug-build numbers and mean nothing).
//! `--help` lists the knobs. Exports are generated once with `generate-cur` and kept under
//! `target/tmp/perf/`; the results go to `target/tmp/perf/results.json` and a table on stdout.
//!
//! Per scale it measures:
//! - the local engine: the whole `query` process (wall time, peak RSS as `query --stats`
//!   reports its own, see [`own_peak`]) and the
//!   engine's own time (`query --stats`), median of `--runs` after one warm-up run;
//! - DuckDB (Python package in a virtualenv) on the same files with the same SQL text, timed by
//!   DuckDB's profiler, and the ratio ours / DuckDB measured in the same run;
//! - the floor: a plain Parquet read of only the needed columns on every core;
//! - the refresh's own cost: writing the snapshot's families as text, and the exposition
//!   (plain + gzip);
//! - the daemon (`serve`): exposition size, scrape latency p50/p99 plain and gzip under a
//!   bounded load of keep-alive clients on loopback, RSS and open file descriptors while
//!   serving;
//! - the same load against a naive server that encodes (and compresses) on every scrape: the
//!   baseline the daemon's cached exposition must beat.
//!
//! It checks what it measures: DuckDB's total equals ours, the allocation reconciles, and every
//! scrape returns the whole exposition; a failed check exits non-zero. Timings are reported,
//! never asserted.
// A measuring harness: it may unwrap, its helper threads sleep, and it measures its children
// with wait4 and stops them with kill.
#![allow(clippy::unwrap_used, clippy::disallowed_methods, unsafe_code)]
#![warn(clippy::too_many_lines)]

/// The daemon harness the integration tests use.
#[path = "../tests/it/support/process.rs"]
#[allow(dead_code)]
mod process;

use std::convert::Infallible;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kiro_cost_exporter::allocation::Allocation;
use kiro_cost_exporter::allocation::sql::{self, Columns, Dialect, QuerySpec};
use kiro_cost_exporter::config::Settings;
use kiro_cost_exporter::period::BillingPeriod;
use kiro_cost_exporter::sink::prometheus as prom;
use kiro_cost_exporter::snapshot::Snapshot;
use kiro_cost_exporter::source::Source;
use kiro_cost_exporter::source::local::{LocalSource, PARTITION_COLUMN};
use kiro_cost_exporter::source::scan;
use kiro_cost_exporter::telemetry::Telemetry;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kiro-cost-exporter");

const PERIOD: &str = "2026-10";
const DUCKDB: &str = "duckdb==2.0.0";

/// Performance harness of kiro-cost-exporter (see the module documentation).
#[derive(Debug, Parser)]
#[command(name = "perf")]
struct Args {
    /// Users per export, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000, 50_000])]
    scales: Vec<usize>,
    /// Lines of other services per Kiro line.
    #[arg(long, default_value_t = 5.0)]
    noise_ratio: f64,
    /// How the export's files are laid out: `generator` (generate-cur's defaults: 500k-row
    /// files, 128k-row groups, Kiro lines interleaved, one tag key), `aws-1m-groups` (one file
    /// a month in 1M-row groups, as AWS has been seen writing), `blocks` (a month's Kiro lines
    /// together, then other services'), `wide-tags` (24 more tag keys on every line); several
    /// separated by commas are measured one after the other.
    #[arg(long, value_delimiter = ',', default_values_t = [String::from("generator")])]
    shapes: Vec<String>,
    /// Measured runs per engine (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Scrapes per encoding (plain, gzip) and server.
    #[arg(long, default_value_t = 400)]
    scrapes: usize,
    /// Time limit of one scrape load, whatever the count reached.
    #[arg(long, default_value = "30s")]
    scrape_time: humantime::Duration,
    /// Concurrent keep-alive scrape clients (2: an HA pair of Prometheus servers).
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Where exports, the DuckDB virtualenv and results go.
    #[arg(long, default_value = concat!(env!("CARGO_TARGET_TMPDIR"), "/perf"))]
    dir: PathBuf,
    /// Python with the `duckdb` package; default: a virtualenv under --dir, created on first
    /// use with pip.
    #[arg(long, env = "KIRO_BENCH_PYTHON")]
    python: Option<PathBuf>,
    /// moto's server, for the S3 path (the export uploaded to moto's S3 on loopback); the
    /// measurement is skipped when it is missing.
    #[arg(long, env = "KIRO_BENCH_MOTO", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-venvs/moto/bin/moto_server"))]
    moto: PathBuf,
    /// Measure the allocation only (engines, floor, refreshes): no S3 path, no scrape loads.
    #[arg(long)]
    allocation_only: bool,
    /// Smoke test: the smallest scale, one measured run, a short scrape load.
    #[arg(long)]
    smoke: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.scales = vec![args.scales.iter().copied().min().unwrap_or(1_000)];
        args.runs = 1;
        args.scrapes = 40;
        args.scrape_time = Duration::from_secs(20).into();
    }
    ensure!(args.runs >= 1, "--runs must be at least 1");
    ensure!(args.clients >= 1, "--clients must be at least 1");
    fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let python = match &args.python {
        Some(p) => p.clone(),
        None => duckdb_venv(&args.dir)?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for shape in &args.shapes {
        ensure!(
            shape_args(shape).is_some(),
            "--shapes: unknown shape {shape:?} (generator, aws-1m-groups, blocks, wide-tags)"
        );
    }
    for shape in &args.shapes {
        for &users in &args.scales {
            eprintln!("== {users} users, shape {shape}");
            let mut r = measure_scale(&args, &python, &rt, users, shape)
                .with_context(|| format!("scale {users} users, shape {shape}"))?;
            r["shape"] = json!(shape);
            results.push(r);
        }
    }
    let report = json!({
        "machine": machine(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "version": env!("CARGO_PKG_VERSION"),
        "period": PERIOD,
        "noise_ratio": args.noise_ratio,
        "runs": args.runs,
        "clients": args.clients,
        "scales": results,
    });
    let out = args.dir.join(if args.smoke {
        "results-smoke.json"
    } else {
        "results.json"
    });
    fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
    print_tables(&report);
    println!("\nresults: {}", out.display());
    Ok(())
}

/// Cores, CPU model and kernel, for the results file.
fn machine() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned());
    json!({
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu": model,
        "os": std::env::consts::OS,
        "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
    })
}

/// A virtualenv with DuckDB under `dir`, created on first use.
fn duckdb_venv(dir: &Path) -> anyhow::Result<PathBuf> {
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let marker = venv.join(".duckdb");
    if fs::read_to_string(&marker).is_ok_and(|v| v == DUCKDB) {
        return Ok(python);
    }
    eprintln!("installing {DUCKDB} into {}", venv.display());
    run_ok(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run_ok(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        DUCKDB,
    ]))?;
    fs::write(&marker, DUCKDB)?;
    Ok(python)
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `generate-cur` flags of a named export shape (`--shapes`).
fn shape_args(shape: &str) -> Option<&'static [&'static str]> {
    Some(match shape {
        "generator" => &[],
        "aws-1m-groups" => &[
            "--rows-per-file",
            "100000000",
            "--row-group-rows",
            "1048576",
        ],
        "blocks" => &["--layout", "blocks"],
        "wide-tags" => &["--extra-tags", "24"],
        _ => return None,
    })
}

/// The export of `users` users, generated on first use. Returns its root and the generator's
/// line counts.
fn export(args: &Args, users: usize, shape: &str) -> anyhow::Result<(PathBuf, Value)> {
    let suffix = if shape == "generator" {
        String::new()
    } else {
        format!("-{shape}")
    };
    let root = args.dir.join(format!(
        "cur-{users}u-noise{}-{PERIOD}{suffix}",
        args.noise_ratio
    ));
    let marker = root.join("generated.json");
    if let Ok(text) = fs::read_to_string(&marker) {
        return Ok((root, serde_json::from_str(&text)?));
    }
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    eprintln!("generating {users} users into {}", root.display());
    let started = Instant::now();
    let out = run_ok(
        Command::new(BIN)
            .arg("generate-cur")
            .arg("--out")
            .arg(&root)
            .args(["--users", &users.to_string()])
            .args(["--noise-ratio", &args.noise_ratio.to_string()])
            .args(["--start", PERIOD, "--months", "1", "--seed", "1"])
            .args(shape_args(shape).unwrap_or_default()),
    )?;
    // "N Kiro lines, M lines in all, under …"
    let last = out.lines().last().unwrap_or("");
    let nums: Vec<u64> = last
        .split([' ', ','])
        .filter_map(|w| w.parse().ok())
        .collect();
    ensure!(nums.len() >= 2, "unexpected generate-cur output: {last:?}");
    let info = json!({
        "kiro_lines": nums[0],
        "lines": nums[1],
        "bytes": dir_size(&root)?,
        "generate_seconds": started.elapsed().as_secs_f64(),
    });
    fs::write(&marker, serde_json::to_vec_pretty(&info)?)?;
    Ok((root, info))
}

fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The peak RSS a child reported of itself (`peak_rss_bytes`, its `VmHWM`). Preferred to
/// `wait4`'s: a child spawned with `vfork` (as `Command` does) is charged the parent's own peak
/// up to its `exec`, so after the harness has grown, `wait4` reports the harness, not the child.
fn own_peak(reported: &Value) -> Option<u64> {
    reported["peak_rss_bytes"].as_u64()
}

/// Runs a child to its end; returns its wall time and peak RSS in bytes (see [`own_peak`]).
fn run_measured(cmd: &mut Command) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unwaited child; `status` and `usage` are valid for writes.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    ensure!(waited == pid, "wait4: {}", std::io::Error::last_os_error());
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed (wait status {status})"
    );
    // Linux reports ru_maxrss in KiB.
    Ok((elapsed, usage.ru_maxrss.max(0) as u64 * 1024))
}

/// `query`'s runs on one export: process wall times, engine times, its peak RSS, the last
/// run's statistics and output.
struct QueryRuns {
    walls: Vec<f64>,
    engine: Vec<f64>,
    rss: u64,
    stats: Value,
    output: Value,
}

/// Runs `query --stats` on `root` once to warm up, then `args.runs` times.
fn measure_query(args: &Args, root: &Path, work: &Path) -> anyhow::Result<QueryRuns> {
    eprintln!("local engine: {} runs", args.runs);
    let (mut walls, mut engine, mut rss) = (Vec::new(), Vec::new(), 0u64);
    let mut stats = Value::Null;
    for i in 0..=args.runs {
        let stdout = File::create(work.join("query.json"))?;
        let stderr = File::create(work.join("query.stats"))?;
        let (wall, peak) = run_measured(
            Command::new(BIN)
                .arg("query")
                .arg("--cur")
                .arg(root)
                .args(["--period", PERIOD, "--format", "json", "--stats"])
                .stdout(stdout)
                .stderr(stderr),
        )?;
        let text = fs::read_to_string(work.join("query.stats"))?;
        stats = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .context("query --stats printed no statistics")?;
        if i > 0 {
            walls.push(wall.as_secs_f64());
            engine.push(stats["elapsed_seconds"].as_f64().unwrap_or(f64::NAN));
            rss = rss.max(own_peak(&stats).unwrap_or(peak));
        }
    }
    let output = serde_json::from_slice(&fs::read(work.join("query.json"))?)?;
    Ok(QueryRuns {
        walls,
        engine,
        rss,
        stats,
        output,
    })
}

/// DuckDB's runs on the same files with the same SQL text: its JSON, peak RSS and times.
fn measure_duckdb(
    args: &Args,
    python: &Path,
    root: &Path,
    work: &Path,
    settings: &Settings,
) -> anyhow::Result<(Value, u64, Vec<f64>)> {
    eprintln!("DuckDB: {} runs", args.runs);
    let spec = QuerySpec {
        table: "cur",
        cost_center_tag: &settings.allocation.cost_center_tag,
        cost_column: settings.allocation.cost_column,
        period: PERIOD.parse()?,
        columns: Columns::default(),
        ignored_operations: &settings.allocation.ignored_operations,
        period_filter: true,
    };
    let rendered = sql::render(Dialect::DataFusion, &spec);
    // DuckDB's map lookup: `element_at` returns the list of matches, as DataFusion's does;
    // ours is `map_value` (the first match, or NULL).
    let duck_sql = rendered
        .sql
        .replace("map_value(tags, $1)", "element_at(tags, $1)[1]");
    ensure!(
        !duck_sql.contains("map_value("),
        "a map_value call left for DuckDB"
    );
    let sql_file = work.join("allocation.sql");
    fs::write(&sql_file, &duck_sql)?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/duckdb_allocation.py");
    // DuckDB's process, measured as ours is: its peak RSS beside our `query`'s.
    let duck_out = work.join("duckdb.json");
    let (_, duck_rss) = run_measured(
        Command::new(python)
            .arg(script)
            .arg(root)
            .arg(&sql_file)
            .arg(args.runs.to_string())
            .args(&rendered.params)
            .stdout(File::create(&duck_out)?),
    )?;
    let duck: Value =
        serde_json::from_slice(&fs::read(&duck_out)?).context("DuckDB's script printed no JSON")?;
    let duck_rss = own_peak(&duck).unwrap_or(duck_rss);
    let duck_times: Vec<f64> = duck["seconds"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    Ok((duck, duck_rss, duck_times))
}

/// The Parquet floor's runs after one warm-up: times and rows read.
fn measure_floor(args: &Args, root: &Path, settings: &Settings) -> anyhow::Result<(Vec<f64>, u64)> {
    eprintln!("Parquet floor: {} runs", args.runs);
    let mut floor = Vec::new();
    let mut floor_rows = 0;
    for _ in 0..=args.runs {
        let (t, rows) = parquet_floor(root, settings.allocation.cost_column.column())?;
        floor.push(t.as_secs_f64());
        floor_rows = rows;
    }
    floor.remove(0);
    Ok((floor, floor_rows))
}

/// Refreshes in process: the SQL template by DataFusion, an unchanged export (a listing, no
/// scan), and one changed file (only it scanned again); each must give `allocation`.
fn measure_refreshes(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    source: &LocalSource,
    allocation: &Allocation,
    root: &Path,
) -> anyhow::Result<Value> {
    let period: BillingPeriod = PERIOD.parse()?;
    eprintln!("DataFusion SQL: {} runs", args.runs);
    let mut sql_times = Vec::new();
    for i in 0..=args.runs {
        let t = Instant::now();
        let by_sql = rt.block_on(source.allocate_by_sql(period))?;
        if i > 0 {
            sql_times.push(t.elapsed().as_secs_f64());
        }
        ensure!(
            by_sql.units == allocation.units && by_sql.seats == allocation.seats,
            "the SQL template and the scan disagree"
        );
    }
    let mut unchanged = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        let again = rt.block_on(source.allocate(period))?;
        unchanged.push(t.elapsed().as_secs_f64());
        ensure!(
            again.units == allocation.units && again.stats.scanned_rows == Some(0),
            "an unchanged refresh scanned again or changed the answer"
        );
    }
    let mut one_changed = Vec::new();
    let first_file = period_files(root)?
        .into_iter()
        .next()
        .context("the export has no file")?;
    for _ in 0..args.runs {
        let f = File::options().write(true).open(&first_file)?;
        f.set_modified(f.metadata()?.modified()? + Duration::from_secs(1))?;
        drop(f);
        let t = Instant::now();
        let again = rt.block_on(source.allocate(period))?;
        one_changed.push(t.elapsed().as_secs_f64());
        ensure!(
            again.units == allocation.units,
            "a refresh after one file changed gave another answer"
        );
    }
    Ok(json!({
        "datafusion_sql_seconds": median(&sql_times),
        "datafusion_sql_runs": sql_times,
        "unchanged_refresh_seconds": median(&unchanged),
        "unchanged_refresh_runs": unchanged,
        "one_file_changed_refresh_seconds": median(&one_changed),
    }))
}

fn measure_scale(
    args: &Args,
    python: &Path,
    rt: &tokio::runtime::Runtime,
    users: usize,
    shape: &str,
) -> anyhow::Result<Value> {
    let (root, generated) = export(args, users, shape)?;
    let work = args.dir.join(format!("work-{users}u"));
    fs::create_dir_all(&work)?;
    let settings = Settings::default();
    let q = measure_query(args, &root, &work)?;
    let (duck, duck_rss, duck_times) = measure_duckdb(args, python, &root, &work, &settings)?;
    let (floor, floor_rows) = measure_floor(args, &root, &settings)?;

    eprintln!("refresh: allocation in process, snapshot families, encoding");
    let source = LocalSource::new(&root, settings.allocation_settings());
    let allocation = rt.block_on(source.allocate(PERIOD.parse()?))?;
    check_allocation(&allocation, &duck, &q.output)?;
    let refreshes = measure_refreshes(args, rt, &source, &allocation, &root)?;
    let (local_median, duck_median, floor_median) =
        (median(&q.engine), median(&duck_times), median(&floor));
    let sql_median = refreshes["datafusion_sql_seconds"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let mut allocation_json = json!({
        "result_units": q.output["users"].as_array().map_or(0, Vec::len),
        "local_engine_seconds": local_median,
        "local_engine_runs": q.engine,
        "local_process_seconds": median(&q.walls),
        "local_process_runs": q.walls,
        "local_peak_rss_bytes": q.rss,
        "scanned_rows": q.stats["scanned_rows"],
        "scanned_bytes": q.stats["scanned_bytes"],
        "files": q.stats["files"],
        "local_outside_engine_seconds": median(&q.walls) - local_median,
        "duckdb_seconds": duck_median,
        "duckdb_peak_rss_bytes": duck_rss,
        "duckdb": duck,
        "ratio_process_to_duckdb": median(&q.walls) / duck_median,
        "ratio_local_to_datafusion_sql": local_median / sql_median,
        "ratio_local_to_duckdb": local_median / duck_median,
        "parquet_floor_seconds": floor_median,
        "parquet_floor_runs": floor,
        "parquet_floor_rows": floor_rows,
        "ratio_local_to_floor": local_median / floor_median,
    });
    merge(&mut allocation_json, refreshes);
    if args.allocation_only {
        return Ok(json!({"users": users, "export": generated, "allocation": allocation_json}));
    }
    allocation_json["s3"] = if args.moto.exists() {
        eprintln!("S3 path: the export in moto's S3 on loopback");
        measure_s3(args, rt, &root, &work, &q.output)?
    } else {
        eprintln!("S3 path: skipped ({} not found)", args.moto.display());
        Value::Null
    };
    let (snapshot, mut refresh, metrics) = measure_encoding(args, &allocation, &settings)?;
    let (scrape, served) = measure_scrapes(args, rt, &root, &work, snapshot, settings, metrics)?;
    merge(&mut refresh, served);
    Ok(json!({
        "users": users,
        "export": generated,
        "allocation": allocation_json,
        "refresh": refresh,
        "scrape": scrape,
    }))
}

/// The refresh's own cost: the snapshot's views and families, and the exposition (plain and
/// gzip), after one warm-up run.
fn measure_encoding(
    args: &Args,
    allocation: &Allocation,
    settings: &Settings,
) -> anyhow::Result<(Snapshot, Value, Telemetry)> {
    let metrics = Telemetry::new("local", Duration::from_secs(3600))?;
    let (mut build, mut encode, mut exposition) = (Vec::new(), Vec::new(), None);
    let mut snapshot = None;
    for _ in 0..=args.runs {
        let t = Instant::now();
        // The snapshot's views (roll-ups, forecast, savings) and the data families.
        let snap = Snapshot::of_bill(
            chrono::Utc::now(),
            vec![allocation.clone()],
            &settings.plans,
            &settings.savings,
        );
        let families = prom::compress_snapshot(&snap)?;
        build.push(t.elapsed().as_secs_f64());
        snapshot = Some(snap);
        let t = Instant::now();
        exposition = Some(prom::encode(Some(&families), &metrics)?);
        encode.push(t.elapsed().as_secs_f64());
    }
    build.remove(0);
    encode.remove(0);
    let exposition = exposition.expect("at least one run");
    let refresh = json!({
        "families_seconds": median(&build),
        "encode_seconds": median(&encode),
        "total_seconds": median(&build) + median(&encode),
        "exposition_plain_bytes": exposition.plain_len(),
        "exposition_gzip_bytes": exposition.gzip_len(),
    });
    Ok((snapshot.context("no run")?, refresh, metrics))
}

/// Adds `from`'s keys to the object `into`.
fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// The daemon (`serve`) and a naive server of the same snapshot under the scrape load; and
/// what the daemon served (its refresh time, exposition size and series).
fn measure_scrapes(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    root: &Path,
    work: &Path,
    snapshot: Snapshot,
    settings: Settings,
    metrics: Telemetry,
) -> anyhow::Result<(Value, Value)> {
    eprintln!("daemon: scrape load");
    let daemon = start_daemon(root, work)?;
    let served_plain = scrape_once(daemon.addr, false)?;
    let served_gzip = scrape_once(daemon.addr, true)?;
    let daemon_plain = load(daemon.addr, false, args, served_plain.len())?;
    let daemon_gzip = load(daemon.addr, true, args, served_gzip.len())?;
    let usage = process::usage(daemon.child.id())?;
    let refresh_seconds = scrape_value(&served_plain, "kiro_exporter_refresh_duration_seconds");
    drop(daemon);

    eprintln!("naive server: scrape load");
    let naive = NaiveServer::start(rt, snapshot, settings, metrics)?;
    let naive_plain = load(naive.addr, false, args, 0)?;
    let naive_gzip = load(naive.addr, true, args, 0)?;
    drop(naive);
    let scrape = json!({
        "daemon_plain": daemon_plain,
        "daemon_gzip": daemon_gzip,
        "naive_plain": naive_plain,
        "naive_gzip": naive_gzip,
        "daemon_rss_bytes": usage.rss_bytes,
        "daemon_peak_rss_bytes": usage.peak_rss_bytes,
        "daemon_open_fds": usage.fds,
    });
    let served = json!({
        "daemon_refresh_seconds": refresh_seconds,
        "served_plain_bytes": served_plain.len(),
        "series": served_plain.split(|&b| b == b'\n').filter(|l| !l.is_empty() && l[0] != b'#').count(),
    });
    Ok((scrape, served))
}

/// The export in moto's S3 on loopback: `query --cur s3://…` (engine time and bytes fetched,
/// median of `--runs` after a warm-up; its answer must equal the local run's), and the cost of
/// an unchanged refresh over S3 in process.
fn measure_s3(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    root: &Path,
    work: &Path,
    local: &Value,
) -> anyhow::Result<Value> {
    let port = process::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let log = File::create(work.join("moto.log"))?;
    let mut moto = Command::new(&args.moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", args.moto.display()))?;
    let result = measure_s3_at(args, rt, root, &endpoint, local);
    let _ = moto.kill();
    let _ = moto.wait();
    result
}

/// The bench's credentials (moto accepts any).
const BENCH_KEY: (&str, &str) = ("AKIABENCHKIRO", "bench-secret");

/// [`measure_s3`] against the S3 at `endpoint`.
fn measure_s3_at(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    root: &Path,
    endpoint: &str,
    local: &Value,
) -> anyhow::Result<Value> {
    let aws = kiro_cost_exporter::aws::AwsSettings {
        region: "us-east-1".into(),
        endpoint_url: endpoint.into(),
        ..Default::default()
    };
    let shared = rt.block_on(async {
        aws.loader()
            .credentials_provider(aws_credential_types::Credentials::new(
                BENCH_KEY.0,
                BENCH_KEY.1,
                None,
                None,
                "bench",
            ))
            .load()
            .await
    });
    let client = aws.s3_client(&shared);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rt
        .block_on(client.create_bucket().bucket("kiro-bench").send())
        .is_err()
    {
        ensure!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let started = Instant::now();
    let uploaded = upload(rt, &client, root)?;
    let upload_seconds = started.elapsed().as_secs_f64();
    let (engine, fetched) = s3_query_runs(args, endpoint, local)?;
    let settings = Settings::default();
    let chunks = column_chunk_bytes(root, settings.allocation.cost_column.column())?;
    let location = kiro_cost_exporter::aws::S3Location::parse("s3://kiro-bench/exp")
        .map_err(anyhow::Error::msg)?;
    let export = kiro_cost_exporter::source::export::Export::s3(&location, &shared)?;
    let source = LocalSource::over(export, settings.allocation_settings());
    let period: BillingPeriod = PERIOD.parse()?;
    rt.block_on(source.allocate(period))?;
    let mut unchanged = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        let a = rt.block_on(source.allocate(period))?;
        unchanged.push(t.elapsed().as_secs_f64());
        ensure!(
            a.stats.scanned_rows == Some(0),
            "an unchanged S3 refresh scanned"
        );
    }
    Ok(json!({
        "export_bytes": uploaded,
        "upload_seconds": upload_seconds,
        "engine_seconds": median(&engine),
        "engine_runs": engine,
        "fetched_bytes": fetched,
        "column_chunk_bytes": chunks,
        "unchanged_refresh_seconds": median(&unchanged),
        "unchanged_refresh_runs": unchanged,
    }))
}

/// Uploads every file under `root` to `s3://kiro-bench/exp/`; the bytes uploaded.
fn upload(
    rt: &tokio::runtime::Runtime,
    client: &aws_sdk_s3::Client,
    root: &Path,
) -> anyhow::Result<u64> {
    let mut uploaded = 0u64;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let key = format!(
                "exp/{}",
                path.strip_prefix(root)?
                    .to_string_lossy()
                    .replace('\\', "/")
            );
            let body = aws_sdk_s3::primitives::ByteStream::from(fs::read(&path)?);
            rt.block_on(
                client
                    .put_object()
                    .bucket("kiro-bench")
                    .key(key)
                    .body(body)
                    .send(),
            )?;
            uploaded += fs::metadata(&path)?.len();
        }
    }
    Ok(uploaded)
}

/// `query --cur s3://kiro-bench/exp` once to warm up and `args.runs` times: engine times and
/// bytes fetched; each answer must equal `local`.
fn s3_query_runs(args: &Args, endpoint: &str, local: &Value) -> anyhow::Result<(Vec<f64>, u64)> {
    let env = [
        ("AWS_ACCESS_KEY_ID", BENCH_KEY.0),
        ("AWS_SECRET_ACCESS_KEY", BENCH_KEY.1),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ENDPOINT_URL", endpoint),
    ];
    let (mut engine, mut fetched) = (Vec::new(), 0u64);
    for i in 0..=args.runs {
        let out = Command::new(BIN)
            .args(["query", "--cur", "s3://kiro-bench/exp", "--period", PERIOD])
            .args(["--format", "json", "--stats"])
            .envs(env)
            .output()?;
        ensure!(
            out.status.success(),
            "query over S3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stats: Value = String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .context("query --stats printed no statistics")?;
        let answer: Value = serde_json::from_slice(&out.stdout)?;
        ensure!(answer == *local, "the S3 answer differs from the local one");
        if i > 0 {
            engine.push(stats["elapsed_seconds"].as_f64().unwrap_or(f64::NAN));
            fetched = stats["fetched_bytes"].as_u64().unwrap_or(0);
        }
    }
    Ok((engine, fetched))
}

/// DuckDB's total equals ours, and ours reconciles (units + unattributed + tax = Kiro total).
fn check_allocation(a: &Allocation, duck: &Value, query: &Value) -> anyhow::Result<()> {
    let tolerance = Decimal::new(1, 6);
    let units: Decimal = a.units.iter().map(|u| u.total_usd).sum();
    let gap = units + a.unattributed_usd + a.tax_usd - a.kiro_total_usd;
    ensure!(
        gap.abs() <= tolerance,
        "allocation does not reconcile: units {units} + unattributed {} + tax {} != total {}",
        a.unattributed_usd,
        a.tax_usd,
        a.kiro_total_usd
    );
    let duck_total = Decimal::from_str(duck["all_cost_usd"].as_str().unwrap_or("?"))
        .with_context(|| format!("DuckDB's total {}", duck["all_cost_usd"]))?;
    ensure!(
        (duck_total - a.kiro_total_usd).abs() <= tolerance,
        "DuckDB's total {duck_total} differs from ours {}",
        a.kiro_total_usd
    );
    let process_total = query["kiro_total_usd"].as_f64().unwrap_or(f64::NAN);
    ensure!(
        (process_total - a.kiro_total_usd.to_f64().unwrap_or(0.0)).abs() < 1e-6,
        "`query` printed a total of {process_total}, the engine in process {}",
        a.kiro_total_usd
    );
    Ok(())
}

/// The period's Parquet files, sorted.
fn period_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = root
        .join("data")
        .join(format!("{PARTITION_COLUMN}={PERIOD}"));
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    Ok(files)
}

/// The columns the scan reads, the cost column among them.
fn needed_columns(cost_column: &str) -> Vec<&str> {
    Columns::default()
        .read()
        .into_iter()
        .chain([cost_column])
        .collect()
}

/// What a reader without the offset index fetches of the export (footers aside): the whole
/// chunks of the needed columns, in the row groups the scan reads (those whose product-code
/// statistics leave room for `Kiro` or `AmazonQ`).
fn column_chunk_bytes(root: &Path, cost_column: &str) -> anyhow::Result<u64> {
    let needed = needed_columns(cost_column);
    let mut total = 0u64;
    for f in period_files(root)? {
        let b = ParquetRecordBatchReaderBuilder::try_new(File::open(&f)?)?;
        for rg in b.metadata().row_groups() {
            let product = rg
                .columns()
                .iter()
                .find(|c| c.column_path().string() == "line_item_product_code");
            if !scan::may_hold(product.and_then(|c| c.statistics()), true) {
                continue;
            }
            total += rg
                .columns()
                .iter()
                .filter(|c| needed.contains(&c.column_path().parts()[0].as_str()))
                .map(|c| u64::try_from(c.compressed_size()).unwrap_or(0))
                .sum::<u64>();
        }
    }
    Ok(total)
}

/// The floor: every row group of the period's files read with only the needed columns, the
/// row groups spread over all cores. Returns the time and the rows read.
fn parquet_floor(root: &Path, cost_column: &str) -> anyhow::Result<(Duration, u64)> {
    let files = period_files(root)?;
    let needed = needed_columns(cost_column);
    let started = Instant::now();
    let mut work = Vec::new();
    for f in &files {
        let b = ParquetRecordBatchReaderBuilder::try_new(File::open(f)?)?;
        for rg in 0..b.metadata().num_row_groups() {
            work.push((f.clone(), rg));
        }
    }
    let next = AtomicUsize::new(0);
    let rows = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((f, rg)) = work.get(i) else {
                            return Ok(());
                        };
                        let b = ParquetRecordBatchReaderBuilder::try_new(File::open(f)?)?;
                        let schema = b.parquet_schema();
                        let roots: Vec<usize> = b
                            .schema()
                            .fields()
                            .iter()
                            .enumerate()
                            .filter(|(_, fld)| needed.contains(&fld.name().as_str()))
                            .map(|(i, _)| i)
                            .collect();
                        let mask = ProjectionMask::roots(schema, roots);
                        let reader = b.with_projection(mask).with_row_groups(vec![*rg]).build()?;
                        for batch in reader {
                            rows.fetch_add(batch?.num_rows(), Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("floor reader panicked")?;
        }
        Ok(())
    })?;
    Ok((started.elapsed(), rows.into_inner() as u64))
}

/// `serve` on the export with an hourly refresh, started by the tests' harness, and ready.
fn start_daemon(root: &Path, work: &Path) -> anyhow::Result<process::Daemon> {
    let config = work.join("serve.toml");
    fs::write(
        &config,
        format!("[source]\ncur = {root:?}\n[refresh]\ninterval = \"1h\"\nperiod = \"{PERIOD}\"\n"),
    )?;
    let mut d = process::Daemon::start(&["--config", config.to_str().context("path")?], &[]);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if get(d.addr, "/readyz", false).is_ok_and(|(status, _)| status == 200) {
            return Ok(d);
        }
        if let Some(status) = d.child.try_wait()? {
            bail!("serve exited with {status}: {}", d.log());
        }
        ensure!(
            Instant::now() < deadline,
            "serve not ready after 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The baseline: a server that encodes the snapshot (and compresses it) on every scrape.
struct NaiveServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl NaiveServer {
    fn start(
        rt: &tokio::runtime::Runtime,
        snapshot: Snapshot,
        settings: Settings,
        metrics: Telemetry,
    ) -> anyhow::Result<Self> {
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::new((snapshot, settings, metrics));
        rt.spawn(async move {
            loop {
                let stream = tokio::select! {
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                    _ = &mut stopped => return,
                };
                let shared = shared.clone();
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let gzip = req
                        .headers()
                        .get(header::ACCEPT_ENCODING)
                        .is_some_and(|v| v.as_bytes().windows(4).any(|w| w == b"gzip"));
                    let (snapshot, _settings, metrics) = &*shared;
                    let families = prom::compress_snapshot(snapshot).expect("encodes");
                    let e = prom::encode(Some(&families), metrics).expect("encodes");
                    let mut r = Response::new(if gzip { e.gzip() } else { e.plain() });
                    if gzip {
                        r.headers_mut()
                            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    }
                    async move { Ok::<_, Infallible>(r) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        Ok(Self {
            addr,
            stop: Some(stop),
        })
    }
}

impl Drop for NaiveServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// One HTTP/1.1 GET on a kept-alive connection; returns status and body.
fn request(
    stream: &mut BufReader<TcpStream>,
    path: &str,
    gzip: bool,
) -> anyhow::Result<(u16, Bytes)> {
    let enc = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    write!(
        stream.get_mut(),
        "GET {path} HTTP/1.1\r\nHost: bench\r\n{enc}Connection: keep-alive\r\n\r\n"
    )?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let mut len = None;
    loop {
        line.clear();
        stream.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = Some(v.trim().parse::<usize>()?);
        }
    }
    let len = len.context("response without Content-Length")?;
    let mut body = vec![0; len];
    stream.read_exact(&mut body)?;
    Ok((status, Bytes::from(body)))
}

fn connect(addr: SocketAddr) -> anyhow::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_nodelay(true)?;
    Ok(BufReader::with_capacity(256 * 1024, s))
}

fn get(addr: SocketAddr, path: &str, gzip: bool) -> anyhow::Result<(u16, Bytes)> {
    request(&mut connect(addr)?, path, gzip)
}

/// The exposition as served, decompressed when asked for gzip.
fn scrape_once(addr: SocketAddr, gzip: bool) -> anyhow::Result<Bytes> {
    let (status, body) = get(addr, "/metrics", gzip)?;
    ensure!(status == 200, "/metrics answered {status}");
    Ok(body)
}

fn scrape_value(exposition: &[u8], name: &str) -> Option<f64> {
    std::str::from_utf8(exposition)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `--scrapes` GETs of /metrics from `--clients` keep-alive connections, stopped at
/// `--scrape-time`. Every body must be `expect_len` bytes long (when not 0).
fn load(addr: SocketAddr, gzip: bool, args: &Args, expect_len: usize) -> anyhow::Result<Value> {
    let issued = AtomicUsize::new(0);
    let deadline = Instant::now() + *args.scrape_time;
    let started = Instant::now();
    let per_client = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.clients)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<Vec<f64>> {
                    let mut conn = connect(addr)?;
                    let mut lat = Vec::new();
                    while issued.fetch_add(1, Ordering::Relaxed) < args.scrapes
                        && Instant::now() < deadline
                    {
                        let t = Instant::now();
                        let (status, body) = request(&mut conn, "/metrics", gzip)?;
                        lat.push(t.elapsed().as_secs_f64());
                        ensure!(status == 200, "/metrics answered {status}");
                        ensure!(
                            expect_len == 0 || body.len() == expect_len,
                            "incomplete scrape: {} of {expect_len} bytes",
                            body.len()
                        );
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scrape client panicked"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut all: Vec<f64> = per_client.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    ensure!(!all.is_empty(), "no scrape completed");
    Ok(json!({
        "scrapes": all.len(),
        "p50_seconds": percentile(&all, 50.0),
        "p99_seconds": percentile(&all, 99.0),
        "max_seconds": all.last(),
        "per_second": all.len() as f64 / elapsed,
    }))
}

/// Seconds as milliseconds, one decimal.
fn ms(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |s| format!("{:.1}", s * 1000.0))
}

/// Bytes as megabytes, one decimal.
fn mb(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |b| format!("{:.1}", b / 1e6))
}

/// A ratio, two decimals.
fn ratio(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |r| format!("{r:.2}"))
}

/// p50/p99 of a scrape load, in ms.
fn p50_p99(v: &Value) -> String {
    format!("{}/{}", ms(&v["p50_seconds"]), ms(&v["p99_seconds"]))
}

/// A table column: its header and how a scale's result gives its cell.
type Column = (&'static str, fn(&Value) -> String);

const ALLOCATION_COLUMNS: &[Column] = &[
    ("shape", |s| {
        s["shape"].as_str().unwrap_or("generator").to_owned()
    }),
    ("users", |s| s["users"].to_string()),
    ("files", |s| s["allocation"]["files"].to_string()),
    ("CUR rows", |s| s["export"]["lines"].to_string()),
    ("Kiro rows", |s| s["export"]["kiro_lines"].to_string()),
    ("MB", |s| mb(&s["export"]["bytes"])),
    ("engine", |s| ms(&s["allocation"]["local_engine_seconds"])),
    ("process", |s| ms(&s["allocation"]["local_process_seconds"])),
    ("outside engine", |s| {
        ms(&s["allocation"]["local_outside_engine_seconds"])
    }),
    ("peak RSS MB", |s| {
        mb(&s["allocation"]["local_peak_rss_bytes"])
    }),
    ("DuckDB", |s| ms(&s["allocation"]["duckdb_seconds"])),
    ("DuckDB RSS MB", |s| {
        mb(&s["allocation"]["duckdb_peak_rss_bytes"])
    }),
    ("ours/DuckDB", |s| {
        ratio(&s["allocation"]["ratio_local_to_duckdb"])
    }),
    ("process/DuckDB", |s| {
        ratio(&s["allocation"]["ratio_process_to_duckdb"])
    }),
    ("DataFusion SQL", |s| {
        ms(&s["allocation"]["datafusion_sql_seconds"])
    }),
    ("ours/SQL", |s| {
        ratio(&s["allocation"]["ratio_local_to_datafusion_sql"])
    }),
    ("Parquet floor", |s| {
        ms(&s["allocation"]["parquet_floor_seconds"])
    }),
    ("ours/floor", |s| {
        ratio(&s["allocation"]["ratio_local_to_floor"])
    }),
    ("unchanged refresh", |s| {
        ms(&s["allocation"]["unchanged_refresh_seconds"])
    }),
    ("1 file changed", |s| {
        ms(&s["allocation"]["one_file_changed_refresh_seconds"])
    }),
    ("S3 engine", |s| {
        ms(&s["allocation"]["s3"]["engine_seconds"])
    }),
    ("S3 fetched MB", |s| {
        mb(&s["allocation"]["s3"]["fetched_bytes"])
    }),
    ("column chunks MB", |s| {
        mb(&s["allocation"]["s3"]["column_chunk_bytes"])
    }),
    ("S3 unchanged", |s| {
        ms(&s["allocation"]["s3"]["unchanged_refresh_seconds"])
    }),
];

const SCRAPE_COLUMNS: &[Column] = &[
    ("users", |s| s["users"].to_string()),
    ("series", |s| s["refresh"]["series"].to_string()),
    ("plain MB", |s| mb(&s["refresh"]["exposition_plain_bytes"])),
    ("gzip MB", |s| mb(&s["refresh"]["exposition_gzip_bytes"])),
    ("families+encode", |s| ms(&s["refresh"]["total_seconds"])),
    ("daemon refresh", |s| {
        ms(&s["refresh"]["daemon_refresh_seconds"])
    }),
    ("plain p50/p99", |s| p50_p99(&s["scrape"]["daemon_plain"])),
    ("gzip p50/p99", |s| p50_p99(&s["scrape"]["daemon_gzip"])),
    ("naive plain p50/p99", |s| {
        p50_p99(&s["scrape"]["naive_plain"])
    }),
    ("naive gzip p50/p99", |s| {
        p50_p99(&s["scrape"]["naive_gzip"])
    }),
    ("daemon RSS MB", |s| mb(&s["scrape"]["daemon_rss_bytes"])),
];

/// A table of `columns` with a row per scale.
fn table(columns: &[Column], scales: &[Value]) -> Vec<Vec<String>> {
    let header = columns.iter().map(|(h, _)| (*h).to_owned()).collect();
    std::iter::once(header)
        .chain(
            scales
                .iter()
                .map(|s| columns.iter().map(|(_, cell)| cell(s)).collect()),
        )
        .collect()
}

fn print_tables(report: &Value) {
    let m = &report["machine"];
    println!(
        "\n{} build, {} cores ({}), period {}, noise ratio {}, median of {} runs",
        report["profile"].as_str().unwrap_or("?"),
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        PERIOD,
        report["noise_ratio"],
        report["runs"]
    );
    let scales = report["scales"].as_array().cloned().unwrap_or_default();
    println!("\nAllocation (ms unless noted)");
    print_table(&table(ALLOCATION_COLUMNS, &scales));
    if scales.iter().all(|s| s["scrape"].is_null()) {
        return; // --allocation-only
    }
    println!(
        "\nExposition and scrapes (ms unless noted; p50/p99 under {} clients)",
        report["clients"]
    );
    print_table(&table(SCRAPE_COLUMNS, &scales));
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        println!("| {} |", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("|-{}-|", rule.join("-|-"));
        }
    }
}
