//! The embedded engine over an export in S3 (moto's S3, through the real object_store client
//! and the fault proxy): the same answer as the local copy in both delivery modes, a daemon
//! that refreshes over S3 with a file replaced mid-run and rides out throttling and 5xx, and
//! missing permissions named in one line with the key.

use crate::support::aws::{self, Emulator, Kind, Proxy};
use crate::support::*;

const BUCKET: &str = "kiro-cur";

/// `query --format json` of 2026-10 over `cur` (a folder or an s3:// prefix), with the AWS
/// environment pointed at `endpoint`.
fn query(cur: &str, endpoint: &str) -> std::process::Output {
    let mut env = aws::aws_env();
    env.push(("AWS_ENDPOINT_URL", endpoint));
    run_env(
        &[
            "query", "--cur", cur, "--period", "2026-10", "--format", "json",
        ],
        &env,
    )
}

/// Moves the October files of `root` into `data/…/exec-2/` and writes a manifest naming them,
/// with an older delivery `exec-1/` beside it ("create new" mode).
fn as_create_new(root: &std::path::Path) {
    let part = root.join("data/BILLING_PERIOD=2026-10");
    let (old, new) = (part.join("exec-1"), part.join("exec-2"));
    std::fs::create_dir_all(&old).unwrap();
    std::fs::create_dir_all(&new).unwrap();
    let mut uris = Vec::new();
    for f in std::fs::read_dir(&part).unwrap().map(|f| f.unwrap().path()) {
        if f.is_file() {
            let name = f.file_name().unwrap().to_owned();
            // The older delivery holds the same file: reading both would count it twice.
            std::fs::copy(&f, old.join(&name)).unwrap();
            std::fs::rename(&f, new.join(&name)).unwrap();
            uris.push(format!(
                "s3://elsewhere/copy/kiro/data/BILLING_PERIOD=2026-10/exec-2/{}",
                name.to_string_lossy()
            ));
        }
    }
    let meta = root.join("metadata/BILLING_PERIOD=2026-10");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("kiro-Manifest.json"),
        serde_json::json!({"executionId": "exec-2", "dataFiles": uris}).to_string(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_export_is_allocated_like_its_local_copy_in_both_delivery_modes() {
    let Some(moto) = Emulator::start(Kind::Moto) else {
        return;
    };
    let overwrite = tempfile::tempdir().unwrap();
    let mut spec = kiro_cost_exporter::curgen::GenSpec::new(150, period("2026-10"));
    spec.seed = 17;
    // Several files, so the footers and scans span objects.
    spec.rows_per_file = 2_000;
    kiro_cost_exporter::curgen::write_export(&spec, overwrite.path(), |_| {}).unwrap();
    let create_new = tempfile::tempdir().unwrap();
    kiro_cost_exporter::curgen::write_export(&spec, create_new.path(), |_| {}).unwrap();
    as_create_new(create_new.path());

    let s3 = aws::s3_client(&moto.url()).await;
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    let n = aws::upload_dir(&s3, overwrite.path(), BUCKET, "exports/overwrite/").await;
    assert!(n >= 3, "{n} files");
    aws::upload_dir(&s3, create_new.path(), BUCKET, "exports/create-new/").await;

    let local = query(overwrite.path().to_str().unwrap(), &moto.url());
    assert!(local.status.success(), "{}", stderr(&local));
    let json: serde_json::Value = serde_json::from_slice(&local.stdout).unwrap();
    assert_json_reconciles(&json);
    assert!(json["users"].as_array().unwrap().len() > 100);
    for (cur, copy) in [
        ("s3://kiro-cur/exports/overwrite", overwrite.path()),
        ("s3://kiro-cur/exports/create-new/", create_new.path()),
        // The data/ folder itself, as for local exports.
        ("s3://kiro-cur/exports/overwrite/data", overwrite.path()),
    ] {
        let remote = query(cur, &moto.url());
        assert!(remote.status.success(), "{cur}: {}", stderr(&remote));
        assert_eq!(
            String::from_utf8_lossy(&remote.stdout),
            String::from_utf8_lossy(&local.stdout),
            "{cur}"
        );
        let same = query(copy.to_str().unwrap(), &moto.url());
        assert_eq!(same.stdout, local.stdout, "{}", copy.display());
    }

    // Only the columns read are fetched: far fewer bytes than the export holds.
    let endpoint = moto.url();
    let mut env = aws::aws_env();
    env.push(("AWS_ENDPOINT_URL", &endpoint));
    let o = run_env(
        &[
            "query",
            "--cur",
            "s3://kiro-cur/exports/overwrite",
            "--period",
            "2026-10",
            "--stats",
            "--format",
            "csv",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: serde_json::Value = serde_json::from_str(
        stderr(&o)
            .lines()
            .find(|l| l.contains("fetched_bytes"))
            .unwrap(),
    )
    .unwrap();
    let fetched = stats["fetched_bytes"].as_u64().unwrap();
    assert!(
        stats["peak_rss_bytes"].as_u64().is_some_and(|b| b > 0),
        "the process's own peak resident size: {stats}"
    );
    let on_disk: u64 = walk(&overwrite.path().join("data"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    eprintln!("fetched {fetched} of {on_disk} bytes");
    assert!(fetched > 0);

    // A prefix with nothing under it, and a period that is not there, are named.
    let o = query("s3://kiro-cur/exports/nothing-here", &moto.url());
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("s3://kiro-cur/exports/nothing-here"),
        "{}",
        stderr(&o)
    );
    let o = run_env(
        &[
            "query",
            "--cur",
            "s3://kiro-cur/exports/overwrite",
            "--period",
            "2026-03",
        ],
        &env,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("BILLING_PERIOD=2026-03") && stderr(&o).contains("2026-10"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refreshes_over_s3_through_faults_and_names_a_denied_key() {
    let Some(moto) = Emulator::start(Kind::Moto) else {
        return;
    };
    let first = Export::write([
        seat("u1", Some("A"), "Pro", 1, 20.0),
        credits("u1", Some("A"), 3, 1_100.0, 100.0),
    ]);
    let second = Export::write([
        seat("u1", Some("A"), "Pro", 1, 20.0),
        credits("u1", Some("A"), 3, 1_100.0, 100.0),
        seat("u2", Some("B"), "Power", 2, 200.0),
    ]);
    let s3 = aws::s3_client(&moto.url()).await;
    s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    aws::upload_dir(&s3, first.path(), BUCKET, "kiro/").await;
    let proxy = Proxy::start(&moto.url(), false);
    let mut settings = kiro_cost_exporter::config::Settings::default();
    settings.source.cur = format!("s3://{BUCKET}/kiro").into();
    settings.aws.region = "us-east-1".into();
    settings.aws.endpoint_url = proxy.url();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("s3.toml");
    crate::support::fixture::write_settings(&config, &settings);
    let mut env = aws::aws_env();
    env.extend_from_slice(FAST);
    let d = Daemon::start(
        &["--config", config.to_str().unwrap(), "--period", "2026-10"],
        &env,
    );
    type Scrape = std::collections::BTreeMap<Series, f64>;
    let total = |m: &Scrape| value(m, "kiro_cost_usd", &[("billing_period", "2026-10")]);
    let refreshes = |m: &Scrape, result: &str| {
        value(m, "kiro_exporter_refresh_total", &[("result", result)]).unwrap_or(0.0)
    };
    let m = wait_for(&d, "the first allocation over S3", |m| {
        total(m) == Some(24.0)
    })
    .await;
    assert_scrape_reconciles(&m, "2026-10");
    let read = |m: &std::collections::BTreeMap<Series, f64>| {
        value(m, "kiro_exporter_source_read_bytes_total", &[]).unwrap_or(0.0)
    };
    assert!(read(&m) > 0.0, "bytes fetched are counted");
    assert!(
        value(&m, "kiro_exporter_source_cache_bytes", &[]).unwrap_or(0.0) > 0.0,
        "the cache's size is reported"
    );
    // Unchanged: later refreshes list the export and fetch nothing.
    let fetched = read(&m);
    let successes_now = refreshes(&m, "success");
    let m = wait_for(&d, "two more refreshes", |m| {
        refreshes(m, "success") >= successes_now + 2.0
    })
    .await;
    assert_eq!(read(&m), fetched, "an unchanged export is not read again");

    // Throttled (503 SlowDown) and failing (500) calls are retried within the refresh.
    let before = refreshes(&scrape(&d).await, "success");
    proxy.fail_next(Some(4));
    let m = wait_for(&d, "a refresh through the faults", |m| {
        refreshes(m, "success") >= before + 2.0
    })
    .await;
    assert_eq!(proxy.injected(), 4);
    assert_eq!(refreshes(&m, "failure"), 0.0, "{}", d.log());

    // The export's file replaced by a newer version mid-run: the next refresh reads it.
    aws::upload_dir(&s3, second.path(), BUCKET, "kiro/").await;
    let m = wait_for(&d, "the replaced file", |m| total(m) == Some(224.0)).await;
    assert_scrape_reconciles(&m, "2026-10");
    assert!(read(&m) > fetched, "the changed file is read");

    // Reading the file is denied (no s3:GetObject): the refresh fails with one line naming the
    // key, and the last good numbers stay served.
    proxy.deny(Some("test-export-00001"));
    // (An unchanged file is not read again: the denial shows once the file changes.)
    aws::upload_dir(&s3, first.path(), BUCKET, "kiro/").await;
    let key =
        format!("s3://{BUCKET}/kiro/data/BILLING_PERIOD=2026-10/test-export-00001.snappy.parquet");
    wait_for(&d, "a failed refresh", |m| refreshes(m, "failure") >= 1.0).await;
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains(&key))
        .unwrap_or_else(|| panic!("no line names {key}: {log}"));
    assert!(
        line.contains("access denied (403)") && line.contains("s3:GetObject"),
        "{line}"
    );
    assert!(!log.contains(aws::SECRET_KEY), "no credentials in the log");
    let m = scrape(&d).await;
    assert_eq!(total(&m), Some(224.0));
    // Listing denied (no s3:ListBucket): named with the prefix.
    proxy.deny(Some(&format!("/{BUCKET}")));
    let failures = refreshes(&m, "failure");
    wait_for(&d, "a failed listing", |m| {
        refreshes(m, "failure") > failures
    })
    .await;
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains(&format!("s3://{BUCKET}/kiro")) && l.contains("list")),
        "{}",
        d.log()
    );
    proxy.deny(None);
}
