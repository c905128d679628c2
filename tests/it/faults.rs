//! The fault matrix: faults injected into a running daemon (the real binary on loopback), each
//! with the same checks: /metrics keeps serving the last good snapshot byte for byte, the
//! failure shows in the exporter's own metrics and log, nothing is lost or sent twice, and the
//! daemon recovers by itself when the fault clears. The fault table of docs/daemon.md lists these cases.
//!
//! - the CUR export: the folder vanishing, truncated, empty and foreign Parquet files, a
//!   missing or retyped column;
//! - the alert state file on a full disk and on a read-only file system (a small tmpfs in a
//!   private mount namespace, so the test needs `unshare` and root);
//! - the wall clock jumping across a month boundary, forward and back (libfaketime);
//! - Athena and S3 throttled, failing and hanging, CloudWatch and Budgets failing (the real SDK
//!   through a fault-injecting proxy in front of the emulators).
//!
//! Athena's and S3's faults under the daemon are in `athena.rs` (with its canned results),
//! using [`fault_and_recover`]; Feishu's (500, rate limit, signature, timeouts) are tested on
//! the alert engine in `alerts.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use kiro_cost_exporter::curgen::{self, GenSpec};
use serde_json::Value;

use crate::support::feishu::Receiver;
use kiro_cost_exporter::config::Settings;
use kiro_cost_exporter::notify::ChannelConfig;

use crate::support::fixture::{feishu_channel, write_settings};
use crate::support::*;

/// The data families of a scrape (everything but the exporter's own health and the budgets
/// AWS reports), which a failed refresh must leave exactly as they were.
pub fn data(m: &BTreeMap<Series, f64>) -> BTreeMap<Series, f64> {
    m.iter()
        .filter(|((n, _), _)| !n.starts_with("kiro_exporter_") && !n.starts_with("kiro_budget_"))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// A counter's value, 0 when the series is not there yet.
pub fn count(m: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(m, name, labels).unwrap_or(0.0)
}

pub fn successes(m: &BTreeMap<Series, f64>) -> f64 {
    count(m, "kiro_exporter_refresh_total", &[("result", "success")])
}

pub fn failures(m: &BTreeMap<Series, f64>, kind: &str) -> f64 {
    count(m, "kiro_exporter_refresh_failures_total", &[("kind", kind)])
}

/// The partition folder of `period` under an export written by `curgen`.
fn partition(export: &Path, period: &str) -> PathBuf {
    export.join("data").join(format!("BILLING_PERIOD={period}"))
}

fn first_parquet(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    files.remove(0)
}

/// A valid Parquet file of something else entirely.
fn foreign(out: &Path) {
    let schema = Schema::new(vec![Field::new("order_id", DataType::Int64, false)]);
    let batch = RecordBatch::try_new(
        std::sync::Arc::new(schema),
        vec![std::sync::Arc::new(Int64Array::from(vec![1, 2, 3]))],
    )
    .unwrap();
    write_batch(out, &batch);
}

/// Waits for the failure, checks what a failure must leave and show, clears the fault and
/// waits for the recovery. Returns the scrape after the recovery.
pub async fn fault_and_recover(
    d: &Daemon,
    name: &str,
    kind: &str,
    mentions: &[&str],
    good: &BTreeMap<Series, f64>,
    inject: impl FnOnce(),
    clear: impl FnOnce(),
) -> BTreeMap<Series, f64> {
    let before = scrape(d).await;
    let log_before = d.log().len();
    inject();
    let bad = wait_for(d, &format!("{name}: a {kind} failure"), |m| {
        failures(m, kind) > failures(&before, kind)
    })
    .await;
    assert_eq!(
        data(&bad),
        *good,
        "{name}: the last good snapshot is served"
    );
    assert_eq!(
        value(&bad, "kiro_exporter_last_success_timestamp_seconds", &[]),
        value(&before, "kiro_exporter_last_success_timestamp_seconds", &[]),
        "{name}"
    );
    assert_eq!(get(&d.url("/readyz"), false).await.unwrap().status, 200);
    // The daemon logs before it publishes, but its stderr reaches the test through a pipe and
    // a reader thread: give the line a moment.
    let logged = std::time::Instant::now() + Duration::from_secs(10);
    while !d.log()[log_before..].contains("refresh failed, keeping the last good snapshot")
        && std::time::Instant::now() < logged
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = d.log()[log_before..].to_owned();
    assert!(
        log.contains("refresh failed, keeping the last good snapshot"),
        "{name}: {log}"
    );
    for m in mentions {
        assert!(log.contains(m), "{name}: {m:?} not in the log: {log}");
    }
    let landing = String::from_utf8(get(&d.url("/"), false).await.unwrap().body.to_vec()).unwrap();
    assert!(landing.contains("Last refresh failed"), "{name}: {landing}");

    clear();
    let after = wait_for(d, &format!("{name}: recovery"), |m| {
        successes(m) > successes(&bad)
    })
    .await;
    assert_eq!(data(&after), *good, "{name}: the same data after recovery");
    after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_faults_keep_the_last_good_snapshot_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("cur");
    let mut spec = GenSpec::new(30, period("2026-10"));
    spec.seed = 31;
    spec.noise_ratio = 1.0;
    curgen::write_export(&spec, &export, |_| {}).unwrap();
    let part = partition(&export, "2026-10");
    let real = first_parquet(&part);
    let cur = export.to_str().unwrap();
    let d = Daemon::start(&["--cur", cur, "--period", "2026-10"], FAST);
    let first = wait_for(&d, "the first snapshot", |m| successes(m) >= 1.0).await;
    assert_scrape_reconciles(&first, "2026-10");
    let good = data(&first);
    assert!(value(&good, "kiro_cost_usd", &[("billing_period", "2026-10")]).unwrap() > 0.0);

    let moved = dir.path().join("cur.moved");
    fault_and_recover(
        &d,
        "the export folder vanishes",
        "no_data",
        &[cur, "does not exist"],
        &good,
        || std::fs::rename(&export, &moved).unwrap(),
        || std::fs::rename(&moved, &export).unwrap(),
    )
    .await;

    let extra = part.join("zz-extra.snappy.parquet");
    let bytes = std::fs::read(&real).unwrap();
    let remove = || std::fs::remove_file(&extra).unwrap();
    fault_and_recover(
        &d,
        "a truncated Parquet file",
        "bad_input",
        &["zz-extra.snappy.parquet", "not a readable Parquet file"],
        &good,
        || std::fs::write(&extra, &bytes[..bytes.len() / 2]).unwrap(),
        remove,
    )
    .await;
    fault_and_recover(
        &d,
        "an empty file, as while a copy is under way",
        "bad_input",
        &["zz-extra.snappy.parquet"],
        &good,
        || std::fs::write(&extra, b"").unwrap(),
        remove,
    )
    .await;
    fault_and_recover(
        &d,
        "a foreign Parquet file",
        "bad_input",
        &["zz-extra.snappy.parquet", "has no column"],
        &good,
        || foreign(&extra),
        remove,
    )
    .await;
    fault_and_recover(
        &d,
        "a retyped column",
        "bad_input",
        &["zz-extra.snappy.parquet", "line_item_unblended_cost"],
        &good,
        || retyped(&real, "line_item_unblended_cost", &extra),
        remove,
    )
    .await;
    let m = fault_and_recover(
        &d,
        "the month's partition vanishes",
        "no_data",
        &["2026-10"],
        &good,
        || std::fs::rename(&part, part.with_extension("moved")).unwrap(),
        || std::fs::rename(part.with_extension("moved"), &part).unwrap(),
    )
    .await;
    assert_scrape_reconciles(&m, "2026-10");
    assert!(failures(&m, "bad_input") >= 4.0);
    // The landing page no longer shows an error once a refresh succeeded.
    let landing = String::from_utf8(get(&d.url("/"), false).await.unwrap().body.to_vec()).unwrap();
    assert!(!landing.contains("Last refresh failed"), "{landing}");
}

/// Runs `args` in the mount namespace of process `pid`.
fn in_namespace(pid: u32, args: &[&str]) {
    let o = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "--"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "nsenter {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Whether this process may make a private mount namespace with a tmpfs in it (root, and a
/// sandbox that allows it); required under KIRO_EXPORTER_REQUIRE_EXTERNAL=1.
fn private_tmpfs_possible(dir: &Path) -> bool {
    let ok = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs \"$0\""])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
        && which("nsenter");
    if !ok {
        let required = std::env::var("KIRO_EXPORTER_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "a private mount namespace with a tmpfs is required (KIRO_EXPORTER_REQUIRE_EXTERNAL=1): run as root with util-linux's unshare and nsenter"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs in a private mount namespace here");
    }
    ok
}

fn which(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Alerts to one Feishu channel (URL in TEST_FEISHU_URL), and the monthly report into
/// `dir/reports` on `report_day` (0: never).
fn alerts_config(dir: &Path, export: &Path, state: &Path, report_day: u32) -> PathBuf {
    let config = dir.join("alerts.toml");
    let mut s = Settings::default();
    s.source.cur = export.to_owned();
    s.alerts.state_file = state.to_owned();
    s.alerts.channels = vec![feishu_channel("feishu", "TEST_FEISHU_URL")];
    s.report.out_dir = dir.join("reports");
    s.report.schedule_day = report_day;
    write_settings(&config, &s);
    config
}

fn state_saves(m: &BTreeMap<Series, f64>, result: &str) -> f64 {
    count(m, "kiro_exporter_state_saves_total", &[("result", result)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_state_disk_loses_nothing_and_sends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    if !private_tmpfs_possible(&state_dir) {
        return;
    }
    let export = dir.path().join("cur");
    let mut spec = GenSpec::new(40, period("2026-10"));
    spec.seed = 5;
    curgen::write_export(&spec, &export, |_| {}).unwrap();
    let state = state_dir.join("state.json");
    let config = alerts_config(dir.path(), &export, &state, 0);
    let rx = Receiver::start(None);
    let url = rx.url();
    let env: Vec<(&str, &str)> = FAST
        .iter()
        .copied()
        .chain([("TEST_FEISHU_URL", url.as_str())])
        .collect();
    // The state folder is a 256 KiB tmpfs of the daemon's own, full before it starts.
    let sd = state_dir.to_str().unwrap();
    let d = Daemon::start_wrapped(
        &[
            "unshare",
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs -o size=256k tmpfs \"$0\" && { dd if=/dev/zero of=\"$0/fill\" bs=4k 2>/dev/null; exec \"$@\"; }",
            sd,
        ],
        &["--config", config.to_str().unwrap(), "--period", "2026-10"],
        &env,
    );
    let pid = d.child.id();
    let seen = |p: &Path| PathBuf::from(format!("/proc/{pid}/root{}", p.display()));

    // Full disk: the alerts go out once, the save fails, and later rounds send nothing again.
    let full = wait_for(&d, "a failed state save", |m| {
        state_saves(m, "failure") >= 2.0
            && count(
                m,
                "kiro_exporter_notifications_total",
                &[("channel", "feishu"), ("result", "success")],
            ) >= 1.0
    })
    .await;
    assert_scrape_reconciles(&full, "2026-10");
    let sent = rx.accepted().len();
    assert!(sent >= 1);
    assert_eq!(state_saves(&full, "success"), 0.0);
    let log = d.log();
    assert!(log.contains("No space left on device"), "{log}");
    assert!(log.contains(&state.display().to_string()), "{log}");
    assert!(!seen(&state).exists(), "nothing half-written");
    // No stray temp files either (a save under way has one for a moment: look again then).
    let only = |expected: &str| {
        let mut names = Vec::new();
        for _ in 0..20 {
            names = std::fs::read_dir(seen(&state_dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            if names == [expected] {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{names:?} in the state folder, expected only {expected}");
    };
    only("fill");

    // Space again: the next save writes what was delivered, still nothing is sent twice.
    std::fs::remove_file(seen(&state_dir.join("fill"))).unwrap();
    let freed = wait_for(&d, "a state save", |m| state_saves(m, "success") >= 1.0).await;
    let saved: Value = serde_json::from_slice(&std::fs::read(seen(&state)).unwrap()).unwrap();
    let alerts = saved["alerts"].as_object().unwrap();
    assert!(!alerts.is_empty(), "{saved}");
    assert!(
        alerts.values().all(|a| a["told"].get("feishu").is_some()),
        "every alert recorded as delivered: {saved}"
    );
    assert_eq!(rx.accepted().len(), sent);

    // Read-only: saves fail again, and succeed once it is writable.
    in_namespace(pid, &["mount", "-o", "remount,ro", sd]);
    let ro = wait_for(&d, "a failed save on a read-only disk", |m| {
        state_saves(m, "failure") > state_saves(&freed, "failure")
    })
    .await;
    assert!(d.log().contains("Read-only file system"), "{}", d.log());
    in_namespace(pid, &["mount", "-o", "remount,rw", sd]);
    wait_for(&d, "a save after remounting", |m| {
        state_saves(m, "success") > state_saves(&ro, "success")
    })
    .await;
    assert_eq!(rx.accepted().len(), sent, "nothing sent twice");
    let again: Value = serde_json::from_slice(&std::fs::read(seen(&state)).unwrap()).unwrap();
    assert_eq!(again["alerts"], saved["alerts"]);
    only("state.json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jumping_across_the_month_boundary() {
    let Some(lib) = external(
        "libfaketime",
        Path::new("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("cur");
    // September and October whole, November's first hours.
    let mut spec = GenSpec::new(25, period("2026-09"));
    spec.months = 3;
    spec.seed = 17;
    spec.until = Some(utc(2026, 11, 1) + chrono::Duration::hours(12));
    curgen::write_export(&spec, &export, |_| {}).unwrap();
    let state = dir.path().join("state.json");
    let reports = dir.path().join("reports");
    let config = alerts_config(dir.path(), &export, &state, 1);
    let clock = dir.path().join("clock");
    let set_clock = |t: &str| std::fs::write(&clock, format!("@{t}\n")).unwrap();
    set_clock("2026-10-31 23:00:00");
    // Feishu refuses signatures an hour off its own clock, so this bot has no secret.
    let rx = Receiver::start(None);
    let url = rx.url();
    let lib = lib.to_str().unwrap().to_owned();
    let clock_file = clock.to_str().unwrap().to_owned();
    let env: Vec<(&str, &str)> = FAST
        .iter()
        .copied()
        .chain([
            ("TEST_FEISHU_URL", url.as_str()),
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME_TIMESTAMP_FILE", clock_file.as_str()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("TZ", "UTC"),
        ])
        .collect();
    let d = Daemon::start(&["--config", config.to_str().unwrap()], &env);
    let report_titles = || -> Vec<String> {
        rx.accepted()
            .iter()
            .filter_map(|c| c["card"]["header"]["title"]["content"].as_str())
            .filter(|t| t.starts_with("Kiro cost report"))
            .map(str::to_owned)
            .collect()
    };
    let cost =
        |m: &BTreeMap<Series, f64>, p: &str| value(m, "kiro_cost_usd", &[("billing_period", p)]);

    // October 31st: October only; September's report, which was due, is sent.
    let oct = wait_for(&d, "October", |m| cost(m, "2026-10").is_some()).await;
    assert_eq!(cost(&oct, "2026-11"), None);
    assert_scrape_reconciles(&oct, "2026-10");
    wait_log(&d, "monthly report sent", 30);
    assert_eq!(report_titles(), ["Kiro cost report 2026-09"]);

    // Midnight: November is watched, October too until its bill is final, and October's
    // report goes out once.
    set_clock("2026-11-01 00:00:05");
    let nov = wait_for(&d, "November", |m| cost(m, "2026-11").is_some()).await;
    assert_scrape_reconciles(&nov, "2026-11");
    assert_scrape_reconciles(&nov, "2026-10");
    assert_eq!(cost(&nov, "2026-10"), cost(&oct, "2026-10"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while report_titles().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A few more refreshes: no report twice.
    let later = wait_for(&d, "more refreshes", |m| {
        successes(m) >= successes(&nov) + 3.0
    })
    .await;
    assert_eq!(
        report_titles(),
        ["Kiro cost report 2026-09", "Kiro cost report 2026-10"]
    );
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["reports"], serde_json::json!(["2026-09", "2026-10"]));

    // The clock is set back (a wrong NTP step corrected): November goes away again, and no
    // report is sent twice.
    set_clock("2026-10-31 23:30:00");
    let back = wait_for(&d, "October alone", |m| cost(m, "2026-11").is_none()).await;
    assert_scrape_reconciles(&back, "2026-10");
    assert_eq!(cost(&back, "2026-10"), cost(&oct, "2026-10"));
    wait_for(&d, "more refreshes", |m| {
        successes(m) >= successes(&back) + 2.0
    })
    .await;
    assert_eq!(report_titles().len(), 2, "{}", d.log());
    assert!(successes(&later) > 0.0);
    for p in ["2026-09", "2026-10"] {
        assert!(
            reports.join(format!("kiro-cost-report-{p}.csv")).is_file(),
            "{p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_for_two_channels_reaches_each_once_when_one_is_down() {
    use crate::support::feishu::Fault;
    let dir = tempfile::tempdir().unwrap();
    // The report is for last month: the export has it, whatever today is.
    let last = kiro_cost_exporter::period::BillingPeriod::containing(chrono::Utc::now()).previous();
    let export = dir.path().join("cur");
    let mut spec = GenSpec::new(30, last);
    spec.seed = 23;
    curgen::write_export(&spec, &export, |_| {}).unwrap();
    let state = dir.path().join("state.json");
    let reports = dir.path().join("reports");
    let config = dir.path().join("report.toml");
    let mut s = Settings::default();
    s.source.cur = export.clone();
    s.alerts.state_file = state.clone();
    s.alerts.channels = [
        ("finance", "TEST_FEISHU_URL_A"),
        ("platform", "TEST_FEISHU_URL_B"),
    ]
    .map(|(name, url)| ChannelConfig {
        max_attempts: 1,
        ..feishu_channel(name, url)
    })
    .to_vec();
    s.report.out_dir = reports.clone();
    s.report.schedule_day = 1;
    write_settings(&config, &s);
    let (a, b) = (Receiver::start(None), Receiver::start(None));
    // The second channel's webhook is down until the test says otherwise.
    b.fail_with(&[Fault::ServerError; 10_000]);
    let (url_a, url_b) = (a.url(), b.url());
    let env: Vec<(&str, &str)> = FAST
        .iter()
        .copied()
        .chain([
            ("TEST_FEISHU_URL_A", url_a.as_str()),
            ("TEST_FEISHU_URL_B", url_b.as_str()),
        ])
        .collect();
    let last_s = last.to_string();
    let d = Daemon::start(
        &["--config", config.to_str().unwrap(), "--period", &last_s],
        &env,
    );
    let report_cards = |rx: &Receiver| {
        rx.accepted()
            .iter()
            .filter(|c| {
                c["card"]["header"]["title"]["content"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Kiro cost report"))
            })
            .count()
    };
    // Several attempts while the second channel is down: the first channel has the card once.
    let failing = wait_for(&d, "failed report attempts", |m| {
        count(
            m,
            "kiro_exporter_notifications_total",
            &[("channel", "platform"), ("result", "failure")],
        ) >= 3.0
    })
    .await;
    assert_scrape_reconciles(&failing, &last_s);
    assert_eq!(report_cards(&a), 1, "{}", d.log());
    assert_eq!(report_cards(&b), 0);
    let log = d.log();
    assert!(
        log.contains("report card not delivered to channel platform"),
        "{log}"
    );
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        saved["report_channels"][&last_s],
        serde_json::json!(["finance"])
    );
    assert!(saved["reports"].as_array().unwrap().is_empty());

    // Back up: the second channel gets it, once, and the first nothing more.
    b.clear_faults();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while report_cards(&b) < 1 {
        assert!(std::time::Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = scrape(&d).await;
    wait_for(&d, "more refreshes", |n| {
        successes(n) >= successes(&m) + 2.0
    })
    .await;
    assert_eq!((report_cards(&a), report_cards(&b)), (1, 1), "{}", d.log());
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["reports"], serde_json::json!([last_s]));
    assert!(saved.get("report_channels").is_none(), "{saved}");
}
