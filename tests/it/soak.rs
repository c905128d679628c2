//! Soak: the real daemon under a bounded scrape load on loopback, refreshing every two seconds
//! over an export that keeps changing (new files land in the month's partition, written aside
//! and renamed in, as an export writer does), for `KIRO_EXPORTER_SOAK_SECS` seconds (20 by
//! default, which `.ci/run` uses; the full soak is 300: see docs/quality.md). Every scrape must be
//! complete, parse, reconcile and show one of the export's states; the daemon logs no warning
//! or error; and its resident memory and open file descriptors stay flat once the export stops
//! changing (the least of each in the last quarter against the quarter before it).

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use kiro_cost_exporter::curgen::{self, GenSpec};

use crate::support::*;

fn soak_secs() -> u64 {
    std::env::var("KIRO_EXPORTER_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(10)
}

/// Resident set size (KiB) and open file descriptors of process `pid`.
fn sample(pid: u32) -> (u64, usize) {
    let u = usage(pid).unwrap();
    (u.rss_bytes / 1024, u.fds)
}

/// Generates another month's worth of lines for the same users and moves its files into
/// `partition` under new names: written aside, then renamed in, so a refresh sees whole files.
fn add_files(root: &Path, partition: &Path, k: u64) {
    let staging = root.join(format!("staging-{k}"));
    let mut spec = GenSpec::new(60, period("2026-10"));
    spec.seed = 100 + k;
    spec.noise_ratio = 1.0;
    curgen::write_export(&spec, &staging, |_| {}).unwrap();
    let from = staging.join("data/BILLING_PERIOD=2026-10");
    for (i, e) in std::fs::read_dir(&from).unwrap().enumerate() {
        let src = e.unwrap().path();
        std::fs::rename(
            &src,
            partition.join(format!("soak-{k:03}-{i}.snappy.parquet")),
        )
        .unwrap();
    }
    std::fs::remove_dir_all(&staging).unwrap();
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    scrapes: usize,
    resent: usize,
    totals: BTreeSet<u64>,
}

/// Scrapes `/metrics` over one keep-alive connection until `stop`, alternately plain and gzip,
/// checking every body.
async fn client(url: String, stop: Arc<AtomicBool>, max: usize) -> Result<Seen, String> {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) && seen.scrapes < max {
        let gzip = seen.scrapes % 2 == 0;
        let request = || {
            let mut req = hyper::Request::get(&url);
            if gzip {
                req = req.header("accept-encoding", "gzip");
            }
            req.body(http_body_util::Empty::new()).unwrap()
        };
        // As Prometheus's HTTP client does, a GET that met a kept-alive connection closed under
        // it (the server closes one idle past server.header_read_timeout) is sent again on a
        // new connection, once, and counted; a second failure fails the soak.
        let resp = match http.request(request()).await {
            Ok(r) => r,
            Err(e) if !e.is_connect() => {
                seen.resent += 1;
                eprintln!("scrape {} sent again: {e:?}", seen.scrapes);
                http.request(request())
                    .await
                    .map_err(|e2| format!("scrape {}: {e:?}, then {e2:?}", seen.scrapes))?
            }
            Err(e) => return Err(format!("scrape {}: {e:?}", seen.scrapes)),
        };
        if resp.status() != 200 {
            return Err(format!("scrape {}: status {}", seen.scrapes, resp.status()));
        }
        let length: Option<usize> = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("scrape {}: body: {e}", seen.scrapes))?
            .to_bytes();
        if length != Some(body.len()) {
            return Err(format!("incomplete body: {} of {length:?}", body.len()));
        }
        let text = if gzip {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_string(&mut s)
                .map_err(|e| format!("gzip: {e}"))?;
            s
        } else {
            String::from_utf8(body.to_vec()).map_err(|e| e.to_string())?
        };
        if !text.ends_with('\n') || !text.contains("kiro_exporter_build_info") {
            return Err("a truncated exposition".into());
        }
        let m = parse_exposition(&text);
        assert_scrape_reconciles(&m, "2026-10");
        let total = value(&m, "kiro_cost_usd", &[("billing_period", "2026-10")])
            .ok_or("no kiro_cost_usd")?;
        seen.totals.insert((total * 10_000.0).round() as u64);
        seen.scrapes += 1;
    }
    Ok(seen)
}

/// Adds files to `partition` `additions` times over the first 60% of `length`.
fn changing(
    root: PathBuf,
    partition: PathBuf,
    length: Duration,
    additions: u64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for k in 1..=additions {
            std::thread::sleep(length * 6 / 10 / (additions as u32 + 1));
            add_files(&root, &partition, k);
        }
    })
}

/// What the clients saw, together; each must have scraped.
async fn joined(clients: Vec<tokio::task::JoinHandle<Result<Seen, String>>>, d: &Daemon) -> Seen {
    let mut seen = Seen::default();
    for c in clients {
        let s = c
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\nlog: {}", d.log()));
        assert!(s.scrapes > 0);
        seen.scrapes += s.scrapes;
        seen.resent += s.resent;
        seen.totals.extend(s.totals);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_stays_flat_under_load_over_a_changing_export() {
    let secs = soak_secs();
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("cur");
    let mut spec = GenSpec::new(300, period("2026-10"));
    spec.seed = 3;
    spec.noise_ratio = 1.0;
    curgen::write_export(&spec, &export, |_| {}).unwrap();
    let partition: PathBuf = export.join("data/BILLING_PERIOD=2026-10");
    let d = Daemon::start(
        &["--cur", export.to_str().unwrap(), "--period", "2026-10"],
        &[
            ("KIRO_EXPORTER__REFRESH__INTERVAL", "2s"),
            ("KIRO_EXPORTER__REFRESH__JITTER", "0s"),
        ],
    );
    wait_status(&d.url("/readyz"), 200, 60).await;
    let pid = d.child.id();
    let (_, idle_fds) = sample(pid);
    let started = Instant::now();
    let length = Duration::from_secs(secs);

    // The export changes during the first 60% of the soak, then stays as it is.
    const ADDITIONS: u64 = 6;
    let changer = changing(dir.path().to_owned(), partition.clone(), length, ADDITIONS);

    // The load: three clients, bounded in time and count.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| tokio::spawn(client(d.url("/metrics"), stop.clone(), 200_000)))
        .collect();

    // RSS and fds, four times a second.
    let mut samples = Vec::new();
    while started.elapsed() < length {
        samples.push((started.elapsed(), sample(pid)));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    changer.join().unwrap();
    let seen = joined(clients, &d).await;
    let m = scrape(&d).await;
    let refreshes = value(&m, "kiro_exporter_refresh_total", &[("result", "success")]).unwrap();

    // The daemon followed the export, and nothing went wrong.
    let log = d.log();
    assert!(
        seen.totals.len() >= 2,
        "the totals followed the export: {:?}",
        seen.totals
    );
    assert!(
        seen.totals.len() as u64 <= ADDITIONS + 1,
        "only whole states of the export: {:?}",
        seen.totals
    );
    assert_eq!(
        value(&m, "kiro_exporter_refresh_total", &[("result", "failure")]),
        Some(0.0),
        "{log}"
    );
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");

    // Flat once the export is still: the last quarter against the quarter before it.
    let quarter = |q: u32| -> Vec<(u64, usize)> {
        samples
            .iter()
            .filter(|(t, _)| *t >= length * (q - 1) / 4 && *t < length * q / 4)
            .map(|(_, s)| *s)
            .collect()
    };
    let (q3, q4) = (quarter(3), quarter(4));
    // A refresh holds query memory (returned after it) and files for a moment, which a
    // sample may or may not catch: the least a quarter saw is its baseline, which a leak
    // raises; the most is reported, and bounded below for descriptors.
    let min_rss = |q: &[(u64, usize)]| q.iter().map(|s| s.0).min().unwrap();
    let max_rss = |q: &[(u64, usize)]| q.iter().map(|s| s.0).max().unwrap();
    let min_fds = |q: &[(u64, usize)]| q.iter().map(|s| s.1).min().unwrap();
    let max_fds = |q: &[(u64, usize)]| q.iter().map(|s| s.1).max().unwrap();
    eprintln!(
        "soak {secs}s: {} scrapes ({} sent again on a new connection), {} refreshes, {} export states; RSS {}..{} KiB then {}..{} KiB; fds {idle_fds} idle, {}..{} then {}..{}",
        seen.scrapes,
        seen.resent,
        refreshes,
        seen.totals.len(),
        min_rss(&q3),
        max_rss(&q3),
        min_rss(&q4),
        max_rss(&q4),
        min_fds(&q3),
        max_fds(&q3),
        min_fds(&q4),
        max_fds(&q4)
    );
    assert!(
        min_rss(&q4) <= min_rss(&q3) + min_rss(&q3) / 10 + 4 * 1024,
        "RSS grew: at least {} KiB, then at least {} KiB",
        min_rss(&q3),
        min_rss(&q4)
    );
    assert!(
        min_fds(&q4) <= min_fds(&q3) + 1,
        "fds grew: at least {} then at least {}",
        min_fds(&q3),
        min_fds(&q4)
    );
    // Beyond what it holds idle: a connection per client, and the files a refresh has open.
    let files = std::fs::read_dir(&partition).unwrap().count();
    assert!(
        max_fds(&q4) <= idle_fds + 3 + files + 2,
        "more fds than the idle {idle_fds}, 3 connections and {files} files: {}",
        max_fds(&q4)
    );
}
