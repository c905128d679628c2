//! The CloudWatch sink with the real AWS SDK against ministack (the Rust CloudWatch client
//! speaks Smithy RPC v2 CBOR, which moto does not serve), the fault proxy in front of it, and
//! the shipped alarm definitions checked against the AWS API model (botocore) and created on
//! ministack.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_cloudwatch::primitives::DateTime as AwsDateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use kiro_cost_exporter::allocation::savings::SavingsSettings;
use kiro_cost_exporter::allocation::{Allocation, PlanTable};
use kiro_cost_exporter::curgen::{self, GenSpec};
use kiro_cost_exporter::sink::cloudwatch::{self, CloudWatchSettings, CloudWatchSink};
use kiro_cost_exporter::snapshot::Snapshot;
use kiro_cost_exporter::source::{LocalSource, Source as _};
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;

use crate::support::aws::{self, Emulator, Kind, Proxy};
use crate::support::fixture::Setup;
use crate::support::*;

const NS: &str = "Kiro/Cost";

fn counter() -> prometheus::IntCounterVec {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new("kiro_exporter_cloudwatch_datums_total", "test"),
        &["result"],
    )
    .unwrap()
}

fn settings(per_user: bool) -> CloudWatchSettings {
    CloudWatchSettings {
        enabled: true,
        per_user,
        max_attempts: 4,
        retry_initial_backoff: Duration::from_millis(10),
        retry_max_backoff: Duration::from_millis(50),
        ..CloudWatchSettings::default()
    }
}

/// Two months of a generated export, allocated by the local engine, as one snapshot.
async fn two_months(users: usize) -> (tempfile::TempDir, Snapshot) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = GenSpec::new(users, period("2026-09"));
    spec.months = 2;
    spec.seed = 3;
    curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    let source = LocalSource::new(dir.path(), Default::default());
    let mut allocations: Vec<Allocation> = Vec::new();
    for p in ["2026-09", "2026-10"] {
        let a = source.allocate(period(p)).await.unwrap();
        assert_reconciles(&a);
        allocations.push(a);
    }
    (
        dir,
        Snapshot::of_bill(
            chrono::Utc::now(),
            allocations,
            &PlanTable::default(),
            &SavingsSettings::default(),
        ),
    )
}

async fn list_metrics(
    client: &aws_sdk_cloudwatch::Client,
) -> BTreeSet<(String, Vec<(String, String)>)> {
    let mut out = BTreeSet::new();
    let mut token = None;
    loop {
        let page = client
            .list_metrics()
            .namespace(NS)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        for m in page.metrics() {
            let mut dims: Vec<(String, String)> = m
                .dimensions()
                .iter()
                .map(|d| (d.name().unwrap().to_owned(), d.value().unwrap().to_owned()))
                .collect();
            dims.sort();
            out.insert((m.metric_name().unwrap().to_owned(), dims));
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            return out;
        }
    }
}

fn expected_metrics(
    snapshot: &Snapshot,
    per_user: bool,
) -> BTreeSet<(String, Vec<(String, String)>)> {
    cloudwatch::datums(snapshot, per_user)
        .into_iter()
        .map(|d| {
            let mut dims: Vec<(String, String)> = d
                .dimensions
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            dims.sort();
            (d.name.to_owned(), dims)
        })
        .collect()
}

/// The latest value of each (name, dimensions), through GetMetricData.
async fn values(
    client: &aws_sdk_cloudwatch::Client,
    at: chrono::DateTime<chrono::Utc>,
    wanted: &[(&str, Vec<(&str, String)>)],
) -> Vec<Option<f64>> {
    let queries: Vec<MetricDataQuery> = wanted
        .iter()
        .enumerate()
        .map(|(i, (name, dims))| {
            let metric = Metric::builder()
                .namespace(NS)
                .metric_name(*name)
                .set_dimensions(Some(
                    dims.iter()
                        .map(|(k, v)| Dimension::builder().name(*k).value(v).build())
                        .collect(),
                ))
                .build();
            MetricDataQuery::builder()
                .id(format!("m{i}"))
                .metric_stat(
                    MetricStat::builder()
                        .metric(metric)
                        .period(60)
                        .stat("Maximum")
                        .build(),
                )
                .build()
        })
        .collect();
    let out = client
        .get_metric_data()
        .set_metric_data_queries(Some(queries))
        .start_time(AwsDateTime::from_secs(at.timestamp() - 600))
        .end_time(AwsDateTime::from_secs(at.timestamp() + 600))
        .send()
        .await
        .unwrap();
    let by_id: BTreeMap<String, Option<f64>> = out
        .metric_data_results()
        .iter()
        .map(|r| (r.id().unwrap().to_owned(), r.values().first().copied()))
        .collect();
    (0..wanted.len())
        .map(|i| by_id.get(&format!("m{i}")).copied().flatten())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_metrics_are_the_snapshots_rollups() {
    let Some(ms) = Emulator::start(Kind::Ministack) else {
        return;
    };
    let (_dir, snapshot) = two_months(400).await;
    let c = counter();
    let sink = CloudWatchSink::new(&aws::sdk_config(&ms.url()).await, settings(true), c.clone());
    let expected = expected_metrics(&snapshot, true);
    assert!(
        expected.len() > cloudwatch::MAX_DATUMS_PER_CALL,
        "more than one call holds"
    );
    let pushed = sink.push(&snapshot).await.unwrap();
    assert_eq!(
        pushed.datums,
        expected.len(),
        "one datum per distinct metric"
    );
    assert_eq!(
        pushed.calls,
        expected.len().div_ceil(cloudwatch::MAX_DATUMS_PER_CALL)
    );
    assert_eq!(
        c.with_label_values(&["success"]).get(),
        expected.len() as u64
    );
    assert_eq!(
        list_metrics(sink.client()).await,
        expected,
        "every datum delivered"
    );

    // Values, read back with GetMetricData. ministack resolves a query without dimensions
    // against every dimension set of the name (CloudWatch matches the empty set exactly), so
    // the current month's dimensionless totals are checked as pushed (ListMetrics above proves
    // they arrived as distinct metrics) and everything with dimensions is read back.
    let (sep, oct) = (
        &snapshot.periods[0].allocation,
        &snapshot.periods[1].allocation,
    );
    let f = |d: rust_decimal::Decimal| d.to_f64().unwrap();
    let centers = oct.cost_centers();
    let accounts = oct.accounts();
    let mut wanted: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("CostUsd", vec![("BillingPeriod", "2026-09".into())]),
        ("UntaggedUsers", vec![("BillingPeriod", "2026-09".into())]),
    ];
    for cc in centers.keys() {
        let name = if cc.is_empty() {
            cloudwatch::UNTAGGED
        } else {
            cc
        };
        wanted.push(("CostUsd", vec![("CostCenter", name.to_owned())]));
    }
    for acc in accounts.keys() {
        wanted.push(("CostUsd", vec![("AccountId", (*acc).to_owned())]));
    }
    let got = values(sink.client(), snapshot.taken_at, &wanted).await;
    let sep_total = got[0].expect("last month's total");
    // The whole bill, tax included: the one meaning of total cost.
    assert!((sep_total - f(sep.kiro_total_usd)).abs() < 1e-6);
    assert_eq!(got[1], Some(sep.untagged_users().len() as f64));
    assert!(centers.contains_key(""), "the generator has untagged users");
    let mut by_center = 0.0;
    for ((_, r), v) in centers.iter().zip(&got[2..2 + centers.len()]) {
        let v = v.expect("every cost center, untagged included");
        assert!((v - f(r.total_usd)).abs() < 1e-6);
        by_center += v;
    }
    let mut by_account = 0.0;
    for ((_, r), v) in accounts.iter().zip(&got[2 + centers.len()..]) {
        let v = v.expect("every account");
        assert!((v - f(r.total_usd)).abs() < 1e-6);
        by_account += v;
    }
    let pushed_total = cloudwatch::datums(&snapshot, true)
        .into_iter()
        .find(|d| d.name == "CostUsd" && d.dimensions.is_empty())
        .unwrap()
        .value;
    // Reconciliation, as CloudWatch holds it: cost centers (or accounts) + cost without a user
    // + tax = the total, which is every Kiro line (the whole bill, as kiro_cost_usd).
    assert!((by_center + f(oct.unattributed_usd) + f(oct.tax_usd) - pushed_total).abs() < 1e-4);
    assert!((by_account - by_center).abs() < 1e-4);
    assert!((pushed_total - f(oct.kiro_total_usd)).abs() < 1e-4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_500s_are_retried_and_a_persistent_failure_is_reported() {
    let Some(ms) = Emulator::start(Kind::Ministack) else {
        return;
    };
    let proxy = Proxy::start(&ms.url(), false);
    let (_dir, snapshot) = two_months(30).await;
    let c = counter();
    let sink = CloudWatchSink::new(
        &aws::sdk_config(&proxy.url()).await,
        settings(false),
        c.clone(),
    );
    let n = cloudwatch::datums(&snapshot, false).len();
    // Throttled, 500, throttled: the fourth attempt goes through.
    proxy.fail_next(Some(3));
    let pushed = sink.push(&snapshot).await.unwrap();
    assert_eq!(proxy.injected(), 3);
    assert_eq!(pushed.datums, n);
    assert_eq!(c.with_label_values(&["success"]).get(), n as u64);
    assert_eq!(
        list_metrics(sink.client()).await,
        expected_metrics(&snapshot, false)
    );

    proxy.fail_next(None);
    let err = sink.push(&snapshot).await.unwrap_err();
    assert_eq!((err.failed, err.total), (n, n));
    let text = err.to_string();
    assert!(
        text.contains("Throttling") || text.contains("InternalServerException"),
        "{text}"
    );
    assert_eq!(c.with_label_values(&["failure"]).get(), n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_serving_when_cloudwatch_is_down() {
    let mut spec = GenSpec::new(20, period("2026-10"));
    spec.seed = 9;
    let mut setup = Setup::generated(&spec);
    let s = &mut setup.settings;
    s.refresh.period = Some(period("2026-10"));
    s.cloudwatch.enabled = true;
    s.cloudwatch.max_attempts = 2;
    s.cloudwatch.retry_initial_backoff = Duration::from_millis(10);
    s.aws.region = "us-east-1".into();
    // Nothing listens there.
    s.aws.endpoint_url = format!("http://127.0.0.1:{}", free_port());
    let d = setup
        .start("cw.toml", &crate::support::aws::aws_env())
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let m = loop {
        let m = scrape(&d).await;
        let failed = value(
            &m,
            "kiro_exporter_cloudwatch_datums_total",
            &[("result", "failure")],
        );
        if failed.is_some_and(|f| f > 0.0) {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_scrape_reconciles(&m, "2026-10");
    assert_eq!(
        value(
            &m,
            "kiro_exporter_cloudwatch_datums_total",
            &[("result", "success")]
        ),
        Some(0.0)
    );
    assert!(d.log().contains("not delivered"), "{}", d.log());
    // Counted as every sink is: by sink and kind, and no success yet.
    assert!(
        value(
            &m,
            "kiro_exporter_sink_errors_total",
            &[("sink", "cloudwatch"), ("kind", "aws")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert_eq!(
        value(
            &m,
            "kiro_exporter_sink_last_success_timestamp_seconds",
            &[("sink", "cloudwatch")]
        ),
        Some(0.0)
    );
    assert!(!d.log().contains(crate::support::aws::SECRET_KEY));
    assert_eq!(get(&d.url("/healthz"), false).await.unwrap().status, 200);
}

fn shipped() -> (Vec<PathBuf>, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/cloudwatch");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("put-metric-alarm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    (files, root.join("kiro-cost-alarms.cfn.json"))
}

/// Creates the alarm of a put-metric-alarm file through the Rust SDK.
async fn put_alarm(client: &aws_sdk_cloudwatch::Client, a: &Value) {
    let s = |k: &str| a[k].as_str().unwrap().to_owned();
    let actions = |k: &str| -> Vec<String> {
        a[k].as_array()
            .map(|v| v.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    client
        .put_metric_alarm()
        .alarm_name(s("AlarmName"))
        .alarm_description(s("AlarmDescription"))
        .actions_enabled(a["ActionsEnabled"].as_bool().unwrap())
        .set_alarm_actions(Some(actions("AlarmActions")))
        .set_ok_actions(Some(actions("OKActions")))
        .metric_name(s("MetricName"))
        .namespace(s("Namespace"))
        .set_dimensions(Some(
            a["Dimensions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    Dimension::builder()
                        .name(d["Name"].as_str().unwrap())
                        .value(d["Value"].as_str().unwrap())
                        .build()
                })
                .collect(),
        ))
        .statistic(s("Statistic").as_str().into())
        .period(a["Period"].as_i64().unwrap() as i32)
        .evaluation_periods(a["EvaluationPeriods"].as_i64().unwrap() as i32)
        .set_datapoints_to_alarm(a["DatapointsToAlarm"].as_i64().map(|v| v as i32))
        .threshold(a["Threshold"].as_f64().unwrap())
        .comparison_operator(s("ComparisonOperator").as_str().into())
        .treat_missing_data(s("TreatMissingData"))
        .send()
        .await
        .unwrap();
}

/// The alarms of `files` and the template `cfn` name metrics, a namespace and dimensions the
/// sink pushes, and the template holds every alarm; the alarms, parsed.
async fn alarms_watch_pushed_metrics(files: &[std::path::PathBuf], cfn: &Path) -> Vec<Value> {
    let (_dir, snapshot) = two_months(30).await;
    let pushed = cloudwatch::shapes(&cloudwatch::datums(&snapshot, false));
    let check = |name: &str, metric: &str, dims: Vec<String>| {
        let mut dims: Vec<&str> = dims.iter().map(String::as_str).collect();
        dims.sort_unstable();
        assert!(
            pushed.keys().any(|(m, d)| *m == metric && *d == dims),
            "{name}: {metric} {dims:?} is not pushed"
        );
    };
    let dim_names = |v: &Value| -> Vec<String> {
        v["Dimensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["Name"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut alarms = Vec::new();
    for f in files {
        let a: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        assert_eq!(a["Namespace"], CloudWatchSettings::default().namespace);
        check(
            a["AlarmName"].as_str().unwrap(),
            a["MetricName"].as_str().unwrap(),
            dim_names(&a),
        );
        alarms.push(a);
    }
    let template: Value = serde_json::from_str(&std::fs::read_to_string(cfn).unwrap()).unwrap();
    assert_eq!(
        template["Parameters"]["Namespace"]["Default"],
        CloudWatchSettings::default().namespace
    );
    let resources = template["Resources"].as_object().unwrap();
    assert_eq!(resources.len(), files.len(), "the template has every alarm");
    for (name, r) in resources {
        assert_eq!(r["Type"], "AWS::CloudWatch::Alarm");
        let p = &r["Properties"];
        assert_eq!(p["Namespace"]["Ref"], "Namespace");
        check(name, p["MetricName"].as_str().unwrap(), dim_names(p));
        assert!(
            alarms.iter().any(|a| a["MetricName"] == p["MetricName"]
                && a["Statistic"] == p["Statistic"]
                && a["ComparisonOperator"] == p["ComparisonOperator"]),
            "{name} matches a put-metric-alarm file"
        );
    }
    alarms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_alarms_are_valid_for_aws_and_watch_pushed_metrics() {
    let (files, cfn) = shipped();
    assert!(files.len() >= 5, "{files:?}");

    // 1. The metric, namespace and dimension names are ones the sink pushes.
    let alarms = alarms_watch_pushed_metrics(&files, &cfn).await;

    // 2. Valid against the AWS API model (botocore), which the emulators do not check.
    let Some(python) = external(
        "python with botocore (the moto virtualenv)",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venvs/moto/bin/python"),
    ) else {
        return;
    };
    let validator =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/validate_put_metric_alarm.py");
    let o = std::process::Command::new(&python)
        .arg(&validator)
        .args(&files)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o).lines().filter(|l| l.starts_with("OK ")).count(),
        files.len()
    );
    let o = std::process::Command::new(&python)
        .arg(&validator)
        .args(["--cfn".as_ref(), cfn.as_os_str()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o).lines().filter(|l| l.starts_with("OK ")).count(),
        files.len(),
        "the template holds one alarm per file"
    );
    // The validator does reject what AWS rejects.
    let bad = tempfile::NamedTempFile::new().unwrap();
    let mut broken = alarms[0].clone();
    broken["Period"] = 45.into();
    broken["ComparisonOperator"] = "Above".into();
    broken["ExtendedStatistic"] = "p99".into();
    std::fs::write(bad.path(), broken.to_string()).unwrap();
    let o = std::process::Command::new(&python)
        .arg(&validator)
        .arg(bad.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    for why in [
        "Period 45",
        "'Above' is not one of",
        "exactly one of Statistic",
    ] {
        assert!(out.contains(why), "{out}");
    }

    // 3. Created through the Rust SDK on ministack, and read back.
    let Some(ms) = Emulator::start(Kind::Ministack) else {
        return;
    };
    let client = aws_sdk_cloudwatch::Client::new(&aws::sdk_config(&ms.url()).await);
    for a in &alarms {
        put_alarm(&client, a).await;
    }
    let described = client.describe_alarms().send().await.unwrap();
    let got: BTreeMap<String, (String, String)> = described
        .metric_alarms()
        .iter()
        .map(|m| {
            (
                m.alarm_name().unwrap().to_owned(),
                (
                    m.metric_name().unwrap_or_default().to_owned(),
                    m.treat_missing_data().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect();
    for a in &alarms {
        let name = a["AlarmName"].as_str().unwrap();
        assert_eq!(
            got.get(name),
            Some(&(
                a["MetricName"].as_str().unwrap().to_owned(),
                a["TreatMissingData"].as_str().unwrap().to_owned()
            )),
            "{name}"
        );
    }
}

#[test]
fn check_config_warns_what_per_user_metrics_cost() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cloudwatch.toml");
    let quiet = run(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(quiet.status.success());
    assert!(!stderr(&quiet).contains("per_user"));
    let o = std::process::Command::new(bin())
        .args(["check-config", "--config", config.to_str().unwrap()])
        .env("KIRO_EXPORTER__CLOUDWATCH__PER_USER", "true")
        .output()
        .unwrap();
    assert!(o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("warning: cloudwatch.per_user = true: each user adds 3 custom metrics"),
        "{e}"
    );
    assert!(e.contains("$0.90 per user per month"), "{e}");
    let bad = std::process::Command::new(bin())
        .args(["check-config", "--config", config.to_str().unwrap()])
        .env("KIRO_EXPORTER__CLOUDWATCH__NAMESPACE", "AWS/Kiro")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("config key cloudwatch.namespace"),
        "{}",
        stderr(&bad)
    );
}

/// CloudWatch's evaluation of one alarm over a series of periods, as its documentation
/// describes it: the last `EvaluationPeriods` periods, a period without a datapoint treated as
/// `TreatMissingData` says (`ignore` keeps the state when every period is missing and leaves
/// the missing ones out otherwise), ALARM when `DatapointsToAlarm` of them breach.
fn alarm_states(
    breaching: &[Option<bool>],
    periods: usize,
    to_alarm: usize,
    treat_missing: &str,
) -> Vec<&'static str> {
    let mut state = "INSUFFICIENT_DATA";
    let mut out = Vec::new();
    for end in 1..=breaching.len() {
        let window = &breaching[end.saturating_sub(periods)..end];
        let present: Vec<bool> = window.iter().filter_map(|b| *b).collect();
        state = if present.is_empty() {
            match treat_missing {
                "breaching" => "ALARM",
                "notBreaching" => "OK",
                "ignore" => state,
                _ => "INSUFFICIENT_DATA",
            }
        } else {
            let missing = window.len() - present.len();
            let extra = if treat_missing == "breaching" {
                missing
            } else {
                0
            };
            let hits = present.iter().filter(|b| **b).count() + extra;
            if hits >= to_alarm.min(window.len()) {
                "ALARM"
            } else {
                "OK"
            }
        };
        out.push(state);
    }
    out
}

/// When the daemon pushes over `until` seconds: each refresh takes up to `took_max`, the next
/// starts `interval` plus up to `jitter_max` after it ends, and 3% of refreshes fail (no push)
/// and are retried 30 s later.
fn push_schedule(seed: u64, interval: f64, jitter_max: f64, took_max: f64, until: f64) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut pushes = Vec::new();
    let mut t = 0.0f64;
    while t < until {
        let took = rng.random_range(5.0..took_max);
        if rng.random_bool(0.03) {
            t += took + 30.0;
            continue;
        }
        pushes.push(t + took);
        t += took + interval + rng.random_range(0.0..jitter_max);
    }
    pushes
}

/// One value per period: whether a push landed in it (`Some(true)`) or not (`None`).
fn per_period(pushes: &[f64], period: f64, until: f64) -> Vec<Option<bool>> {
    (0..(until / period) as usize)
        .map(|i| {
            let (from, to) = (i as f64 * period, (i + 1) as f64 * period);
            pushes.iter().any(|&t| t >= from && t < to).then_some(true)
        })
        .collect()
}

/// The silence alarm, with its window set from the refresh interval (the template's
/// parameters): quiet for a month of a healthy daemon's pushes at a short and the default
/// interval, and in ALARM soon after the pushes stop.
#[test]
fn the_silence_alarm_follows_the_refresh_interval() {
    let (_, template) = shipped();
    let cfn: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&template).unwrap()).unwrap();
    let a = &cfn["Resources"]["ExporterSilent"]["Properties"];
    assert_eq!(a["Period"]["Ref"], "RefreshIntervalSeconds");
    assert_eq!(a["EvaluationPeriods"]["Ref"], "SilentAfterRefreshes");
    assert_eq!(a["TreatMissingData"], "breaching");
    let params = &cfn["Parameters"];
    let n = params["SilentAfterRefreshes"]["Default"].as_u64().unwrap() as usize;
    let allowed: Vec<u64> = params["RefreshIntervalSeconds"]["AllowedValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(
        allowed.contains(
            &params["RefreshIntervalSeconds"]["Default"]
                .as_u64()
                .unwrap()
        )
    );
    // (refresh.interval, the longest refresh: under half an interval), with the default jitter
    // (up to 2 minutes) and a failed refresh now and then.
    for (interval, took_max) in [(300u64, 120.0), (3_600, 600.0), (21_600, 1_800.0)] {
        assert!(allowed.contains(&interval), "{interval} s is a choice");
        let period = interval as f64;
        let until = 28.0 * 86_400.0;
        let stop = 20.0 * 86_400.0;
        let pushes: Vec<f64> = push_schedule(interval, period, 120.0, took_max, until)
            .into_iter()
            .filter(|&t| t < stop)
            .collect();
        // SampleCount < 1: a period with a push is a datapoint that does not breach.
        let datapoints: Vec<Option<bool>> = per_period(&pushes, period, until)
            .into_iter()
            .map(|p| p.map(|_| false))
            .collect();
        let states = alarm_states(&datapoints, n, n, "breaching");
        let stopped_at = (stop / period) as usize;
        let healthy = &states[n..stopped_at];
        assert!(
            healthy.iter().all(|s| *s == "OK"),
            "refresh.interval {interval} s: the silence alarm fires on a healthy daemon"
        );
        let fired = states[stopped_at..].iter().position(|s| *s == "ALARM");
        assert!(
            fired.is_some_and(|p| p <= n + 1),
            "refresh.interval {interval} s: silent from day 20, alarm after {fired:?} periods"
        );
    }
}

#[test]
fn the_cost_alarms_do_not_flap_on_the_push_schedule() {
    let (_, template) = shipped();
    let cfn: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&template).unwrap()).unwrap();
    // A month of pushes as the daemon makes them: a refresh takes up to 10 minutes, the next
    // one starts an interval (1 h) plus up to 2 minutes of jitter after it ends, and now and
    // then a refresh fails and is retried 30 s later.
    let pushes = push_schedule(7, 3_600.0, 120.0, 600.0, 31.0 * 86_400.0);
    let mut checked = 0;
    for (name, alarm) in cfn["Resources"].as_object().unwrap() {
        let p = &alarm["Properties"];
        let treat = p["TreatMissingData"].as_str().unwrap();
        if treat == "breaching" {
            continue; // the silence alarm: missing data is what it is for
        }
        let period = p["Period"].as_f64().unwrap();
        let n = p["EvaluationPeriods"].as_u64().unwrap() as usize;
        let m = p["DatapointsToAlarm"].as_u64().map_or(n, |m| m as usize);
        // The data stays over the threshold all month: the alarm must fire once and stay.
        let breaching = per_period(&pushes, period, 31.0 * 86_400.0);
        let gaps = breaching.iter().filter(|b| b.is_none()).count();
        assert!(gaps > 0, "the schedule leaves some periods without a push");
        let states = alarm_states(&breaching, n, m, treat);
        let first = states.iter().position(|s| *s == "ALARM").unwrap();
        let flips = states[first..].windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(
            flips, 0,
            "{name} flaps {flips} times over a month ({gaps} empty periods)"
        );
        // What notBreaching would have done: an OK and an ALARM notice per empty period.
        let naive = alarm_states(&breaching, n, m, "notBreaching");
        let naive_flips = naive[first..].windows(2).filter(|w| w[0] != w[1]).count();
        assert!(
            naive_flips > 0,
            "{name}: the simulation finds the flapping it guards against"
        );
        checked += 1;
    }
    assert!(checked >= 4, "{checked} data alarms");
}
