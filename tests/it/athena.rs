//! The Athena source with the real AWS SDK against local emulators:
//! - ministack runs the production SQL for real (through DuckDB, bridged on the wire by
//!   [`crate::support::aws::duckdb_bridge`]) over a generated export uploaded to its S3, with the table
//!   made by the shipped DDL: parity with the local engine, several result pages, bytes scanned
//!   in /metrics, a FAILED query's reason;
//! - moto scripts the slow path (QUEUED/RUNNING past the timeout) and serves canned results
//!   for the unchanged-partition skip;
//! - the fault proxy throttles and fails calls, and the source retries or gives up clearly.
//!
//! Without the emulators these tests say they skip; under KIRO_EXPORTER_REQUIRE_EXTERNAL=1
//! they fail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kiro_cost_exporter::allocation::AllocationSettings;
use kiro_cost_exporter::config::Settings;
use kiro_cost_exporter::curgen::{self, GenSpec};
use kiro_cost_exporter::source::AthenaSettings;
use kiro_cost_exporter::source::{AthenaSource, Engine, Source, SourceError};
use serde_json::json;

use crate::support::aws::{self, Emulator, Kind, Proxy, REGION, SECRET_KEY, aws_env};
use crate::support::fixture::write_settings;
use crate::support::*;

const CUR_BUCKET: &str = "kiro-cur";
const CUR_PREFIX: &str = "exports/kiro-cur/data/";
const RESULTS: &str = "s3://athena-results/kiro/";

fn settings(endpoint: &str) -> AthenaSettings {
    AthenaSettings {
        region: REGION.into(),
        endpoint_url: endpoint.into(),
        database: "cur".into(),
        table: "kiro_data".into(),
        output_location: RESULTS.into(),
        query_timeout: Duration::from_secs(60),
        poll_interval: Duration::from_millis(50),
        poll_interval_max: Duration::from_millis(400),
        max_attempts: 3,
        retry_initial_backoff: Duration::from_millis(10),
        retry_max_backoff: Duration::from_millis(100),
        ..AthenaSettings::default()
    }
}

/// The source as the daemon builds it, with static test credentials.
async fn source(settings: AthenaSettings) -> AthenaSource {
    let (retry, timeouts) = AthenaSource::retry_and_timeouts(&settings);
    let shared = aws::sdk_config(&settings.endpoint_url)
        .await
        .into_builder()
        .retry_config(retry)
        .timeout_config(timeouts)
        .build();
    // Moto's Athena answers canned Kiro rows to whatever query comes: these tests are about
    // the calls, so they make one query an allocation. The Q Developer query runs against
    // real data on ministack (`athena_on_ministack_matches_the_local_engine_end_to_end`).
    let allocation = AllocationSettings {
        q_developer: false,
        ..AllocationSettings::default()
    };
    AthenaSource::from_sdk_config(&shared, settings, allocation).unwrap()
}

/// A config file for the binary's Athena source, written from the daemon's `Settings`.
fn write_config(dir: &Path, athena: AthenaSettings) -> PathBuf {
    let path = dir.join("athena.toml");
    let mut settings = Settings::default();
    settings.source.engine = Engine::Athena;
    settings.source.athena = athena;
    write_settings(&path, &settings);
    path
}

/// Runs one statement through Athena and waits for it to succeed.
async fn run_statement(client: &aws_sdk_athena::Client, sql: &str) {
    use aws_sdk_athena::types::{QueryExecutionState, ResultConfiguration};
    let id = client
        .start_query_execution()
        .query_string(sql)
        .work_group("primary")
        .result_configuration(
            ResultConfiguration::builder()
                .output_location(RESULTS)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .query_execution_id
        .unwrap();
    for _ in 0..200 {
        let out = client
            .get_query_execution()
            .query_execution_id(&id)
            .send()
            .await
            .unwrap();
        let status = out.query_execution.unwrap().status.unwrap();
        match status.state.unwrap() {
            QueryExecutionState::Succeeded => return,
            QueryExecutionState::Failed | QueryExecutionState::Cancelled => {
                panic!("{sql:.80}: {:?}", status.state_change_reason)
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("statement did not finish: {sql:.80}");
}

/// ministack with a generated export in its S3 and the shipped DDL's table over it, reached
/// through a bridging proxy.
struct Lake {
    proxy: Proxy,
    emulator: Emulator,
    export: tempfile::TempDir,
    period: &'static str,
}

async fn lake(users: usize) -> Option<Lake> {
    let emulator = Emulator::start(Kind::Ministack)?;
    let proxy = Proxy::start(&emulator.url(), true);
    let period = "2026-10";
    let export = tempfile::tempdir().unwrap();
    let mut spec = GenSpec::new(users, period.parse().unwrap());
    spec.seed = 7;
    curgen::write_export(&spec, export.path(), |_| {}).unwrap();

    let s3 = aws::s3_client(&emulator.url()).await;
    for bucket in [CUR_BUCKET, "athena-results"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let uploaded = aws::upload_dir(&s3, &export.path().join("data"), CUR_BUCKET, CUR_PREFIX).await;
    assert!(uploaded >= 1);
    assert_eq!(
        emulator.aws_json(
            "glue",
            "AWSGlue.CreateDatabase",
            &json!({"DatabaseInput": {"Name": "cur"}})
        ),
        200
    );
    let ddl = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/athena/cur2-table.sql"),
    )
    .unwrap()
    .replace("<DATABASE>", "cur")
    .replace("<TABLE>", "kiro_data")
    .replace("<BUCKET>", CUR_BUCKET)
    .replace("<PREFIX>/<EXPORT_NAME>/data/", CUR_PREFIX);
    let client = aws_sdk_athena::Client::new(&aws::sdk_config(&proxy.url()).await);
    run_statement(&client, &ddl).await;
    Some(Lake {
        proxy,
        emulator,
        export,
        period,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn athena_on_ministack_matches_the_local_engine_end_to_end() {
    // More (account, user, cost center) groups than one result page holds.
    let Some(lake) = lake(1100).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&lake.proxy.url());
    let config = write_config(dir.path(), s.clone());
    let config = config.to_str().unwrap();

    let local = run(&[
        "query",
        "--cur",
        lake.export.path().to_str().unwrap(),
        "--period",
        lake.period,
        "--format",
        "json",
    ]);
    assert!(local.status.success(), "{}", stderr(&local));
    let athena = run_env(
        &[
            "query",
            "--config",
            config,
            "--period",
            lake.period,
            "--format",
            "json",
        ],
        &aws_env(),
    );
    assert!(
        athena.status.success(),
        "{}\n{}",
        stderr(&athena),
        lake.emulator.log()
    );
    let pages = lake.proxy.count("GetQueryResults");
    assert!(pages >= 2, "the result should span pages, got {pages}");
    assert_eq!(
        stdout(&athena),
        stdout(&local),
        "Athena and local engine differ"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&athena)).unwrap();
    assert!(v["users"].as_array().unwrap().len() >= 1000);
    assert_json_reconciles(&v);
    // The Q Developer seats came from their own query, the same as the local engine's.
    assert!(
        !v["q_developer"]["seats"].as_array().unwrap().is_empty(),
        "{}",
        v["q_developer"]
    );
    assert!(
        lake.proxy
            .calls()
            .iter()
            .all(|c| !c.contains("StopQueryExecution")),
        "nothing to stop"
    );

    // Credits per seat and usage day by the daily query, as the local engine's scan sums them,
    // adding up to the named seats' credits.
    let by_athena = source(s.clone())
        .await
        .daily_credits(period(lake.period))
        .await
        .unwrap();
    let local =
        kiro_cost_exporter::source::LocalSource::new(lake.export.path(), Default::default());
    let by_scan = local.daily_credits(period(lake.period)).await.unwrap();
    assert_eq!(by_athena, by_scan, "credits per day differ");
    let named: f64 = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["user_id"].as_str().is_some_and(|id| !id.is_empty()))
        .map(|u| u["credits_used"].as_f64().unwrap())
        .sum();
    let days: f64 = by_athena.total().try_into().unwrap();
    assert!(
        days > 0.0 && (days - named).abs() < 1e-6,
        "{days} / {named}"
    );

    // The daemon on the same table: bytes scanned and the allocation in /metrics.
    let d = Daemon::start(&["--config", config, "--period", lake.period], &aws_env());
    wait_status(&d.url("/readyz"), 200, 60).await;
    let m = scrape(&d).await;
    let scanned = value(
        &m,
        "kiro_exporter_query_scanned_bytes",
        &[("billing_period", lake.period)],
    );
    assert!(
        scanned.is_some_and(|b| b > 0.0),
        "scanned bytes: {scanned:?}"
    );
    assert_scrape_reconciles(&m, lake.period);
    let tax = value(&m, "kiro_tax_usd", &[("billing_period", lake.period)]).unwrap();
    assert!((tax - v["tax_usd"].as_f64().unwrap()).abs() < 1e-6);
    assert!(d.log().contains("Athena query done"), "{}", d.log());
    let metrics = get(&d.url("/metrics"), false).await.unwrap();
    for text in [d.log(), String::from_utf8_lossy(&metrics.body).into_owned()] {
        assert!(!text.contains(SECRET_KEY), "the secret key leaked");
    }
    assert!(!stderr(&athena).contains(SECRET_KEY));
}

#[tokio::test]
async fn a_failed_query_reports_athenas_reason() {
    let Some(lake) = lake(5).await else { return };
    let mut s = settings(&lake.proxy.url());
    s.table = "no_such_table".into();
    let err = source(s)
        .await
        .allocate(period(lake.period))
        .await
        .unwrap_err();
    let text = err.to_string();
    eprintln!("{text}");
    assert!(matches!(err, SourceError::QueryFailed { .. }), "{text}");
    assert_eq!(err.kind().as_str(), "engine");
    assert!(text.contains("ended FAILED"), "{text}");
    assert!(text.contains("no_such_table"), "{text}");
    assert!(text.contains("2026-10"), "{text}");
}

/// Header and rows as Athena returns them (all strings; NULL has no value).
fn canned(rows: &[Vec<Option<String>>]) -> serde_json::Value {
    let header: Vec<_> = kiro_cost_exporter::allocation::sql::RESULT_COLUMNS
        .iter()
        .map(|c| json!({ "VarCharValue": c }))
        .collect();
    let mut out = vec![json!({ "Data": header })];
    for r in rows {
        let data: Vec<_> = r
            .iter()
            .map(|v| {
                v.as_ref()
                    .map_or(json!({}), |v| json!({ "VarCharValue": v }))
            })
            .collect();
        out.push(json!({ "Data": data }));
    }
    let info: Vec<_> = kiro_cost_exporter::allocation::sql::RESULT_COLUMNS
        .iter()
        .map(|c| json!({ "Name": c, "Type": "varchar" }))
        .collect();
    json!({ "rows": out, "column_info": info })
}

/// One group row: alice on Pro in `ACCOUNT`, with `credits` used and `overage` charged.
fn alice(credits: &str, overage: &str) -> Vec<Option<String>> {
    let total = (dec("20") + dec(overage)).to_string();
    // In the order of the result columns (`RESULT_COLUMNS`); a full-month seat line of Pro.
    [
        Some(ACCOUNT),
        Some("us-east-1"),
        Some("alice"),
        Some("platform"),
        Some("USE1-KiroEnterprise-Pro"),
        Some(credits),
        Some("20.0000000000"),
        Some(overage),
        Some("0E-10"),
        Some(&total),
        Some("0E-10"),
        Some(&total),
        Some("3"),
        Some("2026-10-20 00:00:00.000"),
        Some("20.0000000000"),
        Some("2026-10-01 00:00:00.000"),
        Some("1"),
    ]
    .iter()
    .map(|v| v.map(str::to_owned))
    .collect()
}

#[tokio::test]
async fn an_unchanged_partition_is_not_queried_again() {
    let Some(moto) = Emulator::start(Kind::Moto) else {
        return;
    };
    let proxy = Proxy::start(&moto.url(), false);
    let s3 = aws::s3_client(&moto.url()).await;
    for bucket in [CUR_BUCKET, "athena-results"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let put = |key: &'static str| {
        let s3 = s3.clone();
        async move {
            s3.put_object()
                .bucket(CUR_BUCKET)
                .key(format!("{CUR_PREFIX}BILLING_PERIOD=2026-10/{key}"))
                .body(b"PAR1".to_vec().into())
                .send()
                .await
                .unwrap();
        }
    };
    put("kiro-cur-00001.snappy.parquet").await;
    // Another month's object must not count.
    s3.put_object()
        .bucket(CUR_BUCKET)
        .key(format!("{CUR_PREFIX}BILLING_PERIOD=2026-11/x.parquet"))
        .body(b"PAR1".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(
        moto.post_json(
            "/moto-api/static/athena/query-results",
            &json!({ "region": REGION, "results": [
                canned(&[alice("900.0000000000", "0E-10")]),
                canned(&[alice("1100.0000000000", "4.0000000000")]),
            ]})
        ),
        201
    );
    let mut s = settings(&proxy.url());
    s.skip_unchanged = format!("s3://{CUR_BUCKET}/{CUR_PREFIX}");
    let src = source(s).await;
    let p = period("2026-10");

    let first = src.allocate(p).await.unwrap();
    assert_reconciles(&first);
    assert_eq!(first.units.len(), 1);
    assert_eq!(first.units[0].credits_used, dec("900"));
    assert_eq!(first.units[0].plan, "Pro");
    assert_eq!(first.kiro_total_usd, dec("20"));
    assert_eq!(proxy.count("StartQueryExecution"), 1);

    let again = src.allocate(p).await.unwrap();
    assert_eq!(proxy.count("StartQueryExecution"), 1, "unchanged: no query");
    assert_eq!(again.units, first.units);
    assert_eq!(again.stats.scanned_bytes, Some(0));
    assert_reconciles(&again);

    // A new object in the partition: queried again, and the new result is used.
    put("kiro-cur-00002.snappy.parquet").await;
    let changed = src.allocate(p).await.unwrap();
    assert_eq!(proxy.count("StartQueryExecution"), 2);
    assert_eq!(changed.units[0].credits_used, dec("1100"));
    assert_eq!(changed.units[0].overage_usd, dec("4"));
    assert_eq!(changed.kiro_total_usd, dec("24"));
    assert_reconciles(&changed);

    // A month with no objects is named, not queried.
    let err = src.allocate(period("2026-09")).await.unwrap_err();
    assert_eq!(err.kind().as_str(), "no_data");
    assert!(
        err.to_string()
            .contains("s3://kiro-cur/exports/kiro-cur/data/BILLING_PERIOD=2026-09/"),
        "{err}"
    );
    assert_eq!(proxy.count("StartQueryExecution"), 2);
}

#[tokio::test]
async fn a_query_past_its_timeout_is_stopped() {
    let Some(moto) = Emulator::start(Kind::Moto) else {
        return;
    };
    let proxy = Proxy::start(&moto.url(), false);
    // QUEUED, then RUNNING, far longer than the timeout.
    assert_eq!(
        moto.post_json(
            "/moto-api/state-manager/set-transition",
            &json!({"model_name": "athena::execution",
                    "transition": {"progression": "manual", "times": 10_000}})
        ),
        201
    );
    let mut s = settings(&proxy.url());
    s.query_timeout = Duration::from_millis(800);
    let src = source(s).await;
    let started = std::time::Instant::now();
    let err = src.allocate(period("2026-10")).await.unwrap_err();
    let text = err.to_string();
    let SourceError::QueryTimeout {
        query_id, stopped, ..
    } = &err
    else {
        panic!("expected a timeout, got {text}");
    };
    assert!(*stopped, "{text}");
    assert!(text.contains("source.athena.query_timeout"), "{text}");
    assert!(text.contains("800ms"), "{text}");
    assert_eq!(err.kind().as_str(), "timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(proxy.count("StopQueryExecution"), 1);
    assert!(proxy.count("GetQueryExecution") >= 2, "polled");
    let state = src
        .athena_client()
        .get_query_execution()
        .query_execution_id(query_id)
        .send()
        .await
        .unwrap()
        .query_execution
        .unwrap()
        .status
        .unwrap()
        .state
        .unwrap();
    assert_eq!(state.as_str(), "CANCELLED");
}

/// Puts a file (only its Parquet magic: a change to the listing) numbered `n` in the export.
async fn put_marker(s3: aws_sdk_s3::Client, n: u32) {
    s3.put_object()
        .bucket(CUR_BUCKET)
        .key(format!(
            "{CUR_PREFIX}BILLING_PERIOD=2026-10/kiro-cur-{n:05}.snappy.parquet"
        ))
        .body(b"PAR1".to_vec().into())
        .send()
        .await
        .unwrap();
}

/// Moto's Athena answers the same rows to the next 40 queries.
fn answer_every_query(moto: &Emulator) {
    let results: Vec<_> = (0..40)
        .map(|_| canned(&[alice("1100.0000000000", "4.0000000000")]))
        .collect();
    assert_eq!(
        moto.post_json(
            "/moto-api/static/athena/query-results",
            &json!({ "region": REGION, "results": results })
        ),
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_rides_out_athena_and_s3_faults() {
    use crate::faults::{data, fault_and_recover, successes};
    let Some(moto) = Emulator::start(Kind::Moto) else {
        return;
    };
    let proxy = Proxy::start(&moto.url(), false);
    let s3 = aws::s3_client(&moto.url()).await;
    for bucket in [CUR_BUCKET, "athena-results"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let put = |n: u32| put_marker(s3.clone(), n);
    put(1).await;
    answer_every_query(&moto);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        AthenaSettings {
            query_timeout: Duration::from_secs(1),
            skip_unchanged: format!("s3://{CUR_BUCKET}/{CUR_PREFIX}"),
            ..settings(&proxy.url())
        },
    );
    // One query an allocation against moto's canned rows, as in `source`.
    let env: Vec<(&str, &str)> = FAST
        .iter()
        .copied()
        .chain(aws_env())
        .chain([("KIRO_EXPORTER__ALLOCATION__Q_DEVELOPER", "false")])
        .collect();
    let d = Daemon::start(
        &["--config", config.to_str().unwrap(), "--period", "2026-10"],
        &env,
    );
    let first = wait_for(&d, "the first snapshot", |m| successes(m) >= 1.0).await;
    assert_scrape_reconciles(&first, "2026-10");
    let good = data(&first);
    assert_eq!(
        value(&good, "kiro_cost_usd", &[("billing_period", "2026-10")]),
        Some(24.0)
    );
    assert_eq!(proxy.count("StartQueryExecution"), 1);

    // Every call throttled or failing: the partition listing in S3 is the first to fail.
    fault_and_recover(
        &d,
        "S3 and Athena throttled and failing",
        "aws",
        &["ListObjectsV2"],
        &good,
        || proxy.fail_next(None),
        || proxy.fail_next(Some(0)),
    )
    .await;
    assert_eq!(proxy.count("StartQueryExecution"), 1, "unchanged: no query");

    // A new file makes a query due, and Athena keeps it queued past the query timeout.
    let transition = |progression: &str| {
        json!({"model_name": "athena::execution",
               "transition": {"progression": progression, "times": 10_000}})
    };
    assert_eq!(
        moto.post_json(
            "/moto-api/state-manager/set-transition",
            &transition("manual")
        ),
        201
    );
    put(2).await;
    fault_and_recover(
        &d,
        "Athena hangs",
        "timeout",
        &["source.athena.query_timeout"],
        &good,
        || {},
        || {
            let unset = json!({"model_name": "athena::execution"});
            assert_eq!(
                moto.post_json("/moto-api/state-manager/unset-transition", &unset),
                201
            );
        },
    )
    .await;
    assert!(
        proxy.count("StopQueryExecution") >= 1,
        "the hung query is stopped"
    );

    // Athena alone throttled and failing, S3 answering.
    proxy.fail_matching("StartQueryExecution", None);
    put(3).await;
    let after = fault_and_recover(
        &d,
        "Athena throttled and failing",
        "aws",
        &["athena:StartQueryExecution failed"],
        &good,
        || {},
        || proxy.fail_next(Some(0)),
    )
    .await;
    assert_scrape_reconciles(&after, "2026-10");
    assert!(!d.log().contains(SECRET_KEY), "no credentials in the log");
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let Some(moto) = Emulator::start(Kind::Moto) else {
        return;
    };
    let proxy = Proxy::start(&moto.url(), false);
    assert_eq!(
        moto.post_json(
            "/moto-api/static/athena/query-results",
            &json!({ "region": REGION, "results": [canned(&[alice("1000.0000000000", "0E-10")])]})
        ),
        201
    );
    let mut s = settings(&proxy.url());
    s.max_attempts = 4;
    s.result_reuse_max_age = Duration::from_secs(90 * 60);
    s.workgroup = "finops".into();
    let src = source(s).await;
    src.athena_client()
        .create_work_group()
        .name("finops")
        .send()
        .await
        .unwrap();
    // Throttled, 500, throttled: the fourth attempt goes through. (The table's columns are
    // learned first, by GetTableMetadata, which goes through.)
    proxy.fail_matching("StartQueryExecution", Some(3));
    let a = src.allocate(period("2026-10")).await.unwrap();
    assert_eq!(proxy.injected(), 3);
    assert_eq!(proxy.count("StartQueryExecution"), 4);
    assert_eq!(a.units[0].credits_used, dec("1000"));
    assert_reconciles(&a);
    // The retried start made one query, not four (the SDK's idempotency token).
    let executions = src
        .athena_client()
        .list_query_executions()
        .send()
        .await
        .unwrap();
    assert_eq!(executions.query_execution_ids().len(), 1);
    // What the source asked Athena for.
    let start = &proxy.bodies("StartQueryExecution")[0];
    assert_eq!(start["WorkGroup"], "finops");
    assert_eq!(start["QueryExecutionContext"]["Database"], "cur");
    assert_eq!(start["QueryExecutionContext"]["Catalog"], "AwsDataCatalog");
    assert_eq!(start["ResultConfiguration"]["OutputLocation"], RESULTS);
    assert_eq!(
        start["ResultReuseConfiguration"]["ResultReuseByAgeConfiguration"],
        json!({"Enabled": true, "MaxAgeInMinutes": 90})
    );
    // The tag key, the period, and the ignored operations (allocation.ignored_operations).
    assert_eq!(
        start["ExecutionParameters"],
        json!([
            "'userAttribute/costCenter'",
            "'2026-10'",
            "'q-developer-snapshot'"
        ])
    );
    let sql = start["QueryString"].as_str().unwrap();
    assert!(sql.contains("FROM cur.kiro_data"), "{sql}");
    assert!(sql.contains("element_at(tags, ?)") && sql.contains("billing_period = ?"));
    assert!(
        !sql.contains("2026-10") && !sql.contains("costCenter"),
        "values only as parameters"
    );
    assert!(
        start["ClientRequestToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let pages = proxy.bodies("GetQueryResults");
    assert_eq!(pages[0]["MaxResults"], 1000);
}

#[tokio::test]
async fn persistent_faults_give_up_with_a_clear_error() {
    let Some(moto) = Emulator::start(Kind::Moto) else {
        return;
    };
    let proxy = Proxy::start(&moto.url(), false);
    let src = source(settings(&proxy.url())).await;
    proxy.fail_next(None);
    let err = src.allocate(period("2026-10")).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind().as_str(), "aws", "{text}");
    assert!(
        text.starts_with("athena:StartQueryExecution failed: workgroup primary: "),
        "{text}"
    );
    assert!(
        text.contains("TooManyRequestsException") || text.contains("InternalServerException"),
        "{text}"
    );
    // max_attempts = 3, then it stops asking.
    assert_eq!(proxy.count("StartQueryExecution"), 3);
    eprintln!("{text}");
    assert!(
        !text.contains("testing"),
        "no credentials in errors: {text}"
    );
}

#[test]
fn without_a_region_the_error_says_where_to_set_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings("");
    s.region = String::new();
    let config = write_config(dir.path(), s.clone());
    let o = std::process::Command::new(bin())
        .args([
            "query",
            "--config",
            config.to_str().unwrap(),
            "--period",
            "2026-10",
        ])
        .envs(aws_env().into_iter().filter(|(k, _)| *k != "AWS_REGION"))
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("no AWS region: set source.athena.region"), "{e}");
    assert!(!e.contains(SECRET_KEY));
}

#[test]
fn the_shipped_ddl_declares_the_exports_columns() {
    use arrow::datatypes::DataType;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ddl = std::fs::read_to_string(root.join("config/athena/cur2-table.sql")).unwrap();
    let body = &ddl[ddl.find("<TABLE> (").unwrap() + 9..ddl.find("\n)\nPARTITIONED BY").unwrap()];
    let declared: Vec<(String, String)> = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.trim().trim_end_matches(',').split_whitespace();
            (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
            )
        })
        .collect();
    let schema = curgen::cur_schema();
    assert_eq!(declared.len(), schema.fields().len());
    for ((name, ty), field) in declared.iter().zip(schema.fields()) {
        assert_eq!(name, field.name());
        let expected = match field.data_type() {
            DataType::Utf8 => "string",
            DataType::Float64 => "double",
            DataType::Timestamp(_, _) => "timestamp",
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(kv) if kv[1].data_type() == &DataType::Float64 => {
                    "map<string,double>"
                }
                _ => "map<string,string>",
            },
            other => panic!("{name}: unexpected type {other}"),
        };
        assert_eq!(ty, expected, "{name}");
    }
    // Partition projection over the export's folder layout.
    assert!(ddl.contains("PARTITIONED BY (billing_period string)"));
    assert!(ddl.contains("'storage.location.template' = 's3://<BUCKET>/<PREFIX>/<EXPORT_NAME>/data/BILLING_PERIOD=${billing_period}/'"));
    assert!(ddl.contains("'projection.billing_period.format' = 'yyyy-MM'"));
}
