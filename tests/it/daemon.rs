//! The daemon as Prometheus sees it: the real binary on a free loopback port, scraped over HTTP,
//! its exposition parsed by a grammar-based parser and compared with `query --format json`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;

use kiro_cost_exporter::allocation::{PlanTable, cost_center_label};
use kiro_cost_exporter::curgen::{self, GenSpec};

use crate::support::*;

fn generated(users: usize, seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = GenSpec::new(users, period("2026-10"));
    spec.seed = seed;
    spec.noise_ratio = 1.0;
    curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    dir
}

fn query_json(cur: &std::path::Path) -> serde_json::Value {
    query_json_with(&["--cur", cur.to_str().unwrap()], &[])
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-6, "{what}: /metrics {a} vs query {b}");
}

/// Each user's series equal the query's unit, and included credits are the plan table's.
fn check_user_series(m: &BTreeMap<Series, f64>, json: &serde_json::Value) {
    let plans = PlanTable::default();
    let users = json["users"].as_array().unwrap();
    assert_eq!(
        m.keys().filter(|(n, _)| n == "kiro_user_cost_usd").count(),
        users.len()
    );
    for u in users {
        let s = |k: &str| u[k].as_str().unwrap();
        let labels = [
            ("account_id", s("account_id")),
            ("region", s("region")),
            ("user_id", s("user_id")),
            ("cost_center", cost_center_label(s("cost_center"))),
            ("plan", s("plan")),
            ("billing_period", "2026-10"),
        ];
        for (metric, key) in [
            ("kiro_user_cost_usd", "total_usd"),
            ("kiro_user_subscription_usd", "subscription_usd"),
            ("kiro_user_overage_usd", "overage_usd"),
            ("kiro_user_credits_used", "credits_used"),
        ] {
            let got = value(m, metric, &labels)
                .unwrap_or_else(|| panic!("{metric} missing for {labels:?}"));
            close(got, u[key].as_f64().unwrap(), metric);
        }
        let included = value(m, "kiro_user_credits_included", &labels);
        match plans.by_name(s("plan")) {
            Some(plan) => close(
                included.unwrap(),
                plan.included_credits.try_into().unwrap(),
                "included credits",
            ),
            None => assert_eq!(included, None),
        }
    }
}

/// The cost centers' series equal the query's roll-ups, and the users' series add up to them;
/// the users' cost per cost center.
fn check_cost_centers(
    m: &BTreeMap<Series, f64>,
    json: &serde_json::Value,
) -> BTreeMap<String, f64> {
    let mut by_cc: BTreeMap<String, f64> = BTreeMap::new();
    for ((name, labels), v) in m {
        if name == "kiro_user_cost_usd" {
            *by_cc.entry(labels["cost_center"].clone()).or_default() += v;
        }
    }
    for cc in json["cost_centers"].as_array().unwrap() {
        let name = cost_center_label(cc["cost_center"].as_str().unwrap());
        let l = [("billing_period", "2026-10"), ("cost_center", name)];
        close(
            value(m, "kiro_cost_center_cost_usd", &l).unwrap(),
            cc["total_usd"].as_f64().unwrap(),
            "cost center cost",
        );
        close(
            by_cc[name],
            cc["total_usd"].as_f64().unwrap(),
            "sum of users by cost center",
        );
        close(
            value(m, "kiro_cost_center_overage_usd", &l).unwrap(),
            cc["overage_usd"].as_f64().unwrap(),
            "cost center overage",
        );
        close(
            value(m, "kiro_cost_center_credits_used", &l).unwrap(),
            cc["credits_used"].as_f64().unwrap(),
            "cost center credits",
        );
        close(
            value(m, "kiro_cost_center_users", &l).unwrap(),
            cc["users"].as_f64().unwrap(),
            "cost center users",
        );
        // October is over: the forecast is the actual cost.
        close(
            value(m, "kiro_cost_center_forecast_usd", &l).unwrap(),
            cc["total_usd"].as_f64().unwrap(),
            "forecast of a past month",
        );
    }
    assert_eq!(by_cc.len(), json["cost_centers"].as_array().unwrap().len());
    by_cc
}

#[tokio::test]
async fn metrics_equal_query_output() {
    let cur = generated(60, 11);
    let json = query_json(cur.path());
    assert_json_reconciles(&json);
    let d = Daemon::start(
        &["--cur", cur.path().to_str().unwrap(), "--period", "2026-10"],
        &[],
    );
    wait_status(&d.url("/readyz"), 200, 60).await;
    let plain = get(&d.url("/metrics"), false).await.unwrap();
    let gz = get(&d.url("/metrics"), true).await.unwrap();
    assert_eq!(
        plain.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(gz.headers["content-encoding"], "gzip");
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    let m = parse_exposition(std::str::from_utf8(&plain.body).unwrap());
    assert_eq!(
        parse_exposition(&unzipped),
        m,
        "gzip and plain scrapes carry the same samples"
    );

    let p = [("billing_period", "2026-10")];
    let users = json["users"].as_array().unwrap();
    check_user_series(&m, &json);
    let by_cc = check_cost_centers(&m, &json);
    let count = |key: &str| json[key].as_array().unwrap().len() as f64;
    for (metric, expected) in [
        ("kiro_cost_usd", json["kiro_total_usd"].as_f64().unwrap()),
        ("kiro_tax_usd", json["tax_usd"].as_f64().unwrap()),
        (
            "kiro_unattributed_usd",
            json["unattributed_usd"].as_f64().unwrap(),
        ),
        ("kiro_untagged_users", count("untagged_users")),
        (
            "kiro_duplicate_subscriptions",
            count("duplicate_subscriptions"),
        ),
    ] {
        close(value(&m, metric, &p).unwrap(), expected, metric);
    }
    // The reconciliation invariant, on the scraped values.
    let users_total: f64 = by_cc.values().sum();
    close(
        users_total
            + value(&m, "kiro_unattributed_usd", &p).unwrap()
            + value(&m, "kiro_tax_usd", &p).unwrap(),
        value(&m, "kiro_cost_usd", &p).unwrap(),
        "reconciliation",
    );
    let accounts: f64 = m
        .iter()
        .filter(|((n, _), _)| n == "kiro_account_cost_usd")
        .map(|(_, v)| v)
        .sum();
    close(accounts, users_total, "accounts add up");
    let plan_users: f64 = m
        .iter()
        .filter(|((n, _), _)| n == "kiro_users")
        .map(|(_, v)| v)
        .sum();
    // kiro_users counts seats: (account, region, user).
    let seats: BTreeSet<(&str, &str, &str)> = users
        .iter()
        .map(|u| {
            (
                u["account_id"].as_str().unwrap(),
                u["region"].as_str().unwrap(),
                u["user_id"].as_str().unwrap(),
            )
        })
        .collect();
    close(plan_users, seats.len() as f64, "kiro_users");
    assert!(
        value(&m, "kiro_data_as_of_timestamp_seconds", &p).unwrap()
            > utc(2026, 10, 20).timestamp() as f64
    );
    assert!(value(&m, "kiro_exporter_last_success_timestamp_seconds", &[]).unwrap() > 0.0);
    assert!(value(&m, "kiro_exporter_query_scanned_bytes", &p).unwrap() > 0.0);
    assert_eq!(
        value(&m, "kiro_exporter_refresh_total", &[("result", "failure")]),
        Some(0.0)
    );
    the_build_is_named(&m);
    // Every family has HELP and TYPE.
    let text = std::str::from_utf8(&plain.body).unwrap();
    let families: BTreeSet<&str> = m.keys().map(|(n, _)| n.as_str()).collect();
    for f in families {
        assert!(
            text.contains(&format!("# HELP {f} ")) && text.contains(&format!("# TYPE {f} ")),
            "{f}"
        );
    }
    let landing = get(&d.url("/"), false).await.unwrap();
    let html = String::from_utf8(landing.body.to_vec()).unwrap();
    assert!(
        html.contains("2026-10") && html.contains("/metrics"),
        "{html}"
    );
}

fn replace_export(cur: &std::path::Path, with: &std::path::Path) {
    let data = cur.join("data");
    let old = cur.join("data.old");
    std::fs::rename(&data, &old).unwrap();
    std::fs::rename(with.join("data"), &data).unwrap();
    std::fs::remove_dir_all(&old).unwrap();
}

fn user_series(m: &BTreeMap<Series, f64>) -> BTreeSet<String> {
    m.keys()
        .filter(|(n, _)| n == "kiro_user_cost_usd")
        .map(|(_, l)| l["user_id"].clone())
        .collect()
}

#[tokio::test]
async fn series_follow_the_export() {
    let before = Export::write([
        seat("alice", Some("CC-A"), "Pro", 1, 20.0),
        seat("bob", Some("CC-B"), "Power", 1, 200.0),
    ]);
    let after = Export::write([
        seat("bob", Some("CC-B"), "Power", 1, 200.0),
        seat("carol", Some("CC-A"), "ProPlus", 1, 40.0),
    ]);
    let d = Daemon::start(
        &[
            "--cur",
            before.path().to_str().unwrap(),
            "--period",
            "2026-10",
        ],
        FAST,
    );
    let m = wait_for(&d, "first snapshot", |m| !user_series(m).is_empty()).await;
    assert_eq!(
        user_series(&m),
        BTreeSet::from(["alice".to_owned(), "bob".to_owned()])
    );
    replace_export(before.path(), after.path());
    let m = wait_for(&d, "the new export", |m| user_series(m).contains("carol")).await;
    assert_eq!(
        user_series(&m),
        BTreeSet::from(["bob".to_owned(), "carol".to_owned()]),
        "alice's series are gone"
    );
    let p = [("billing_period", "2026-10")];
    assert_eq!(value(&m, "kiro_cost_usd", &p), Some(240.0));
    assert_eq!(
        value(
            &m,
            "kiro_cost_center_cost_usd",
            &[("billing_period", "2026-10"), ("cost_center", "CC-A")]
        ),
        Some(40.0)
    );
    assert_eq!(value(&m, "kiro_tax_usd", &p), Some(0.0));
    assert_eq!(value(&m, "kiro_unattributed_usd", &p), Some(0.0));
    assert_scrape_reconciles(&m, "2026-10");
}

#[tokio::test]
async fn failing_source_keeps_last_good_values() {
    let e = Export::write([
        seat("alice", Some("CC-A"), "Pro", 1, 20.0),
        credits("alice", Some("CC-A"), 3, 1_100.0, 100.0),
    ]);
    let d = Daemon::start(
        &["--cur", e.path().to_str().unwrap(), "--period", "2026-10"],
        FAST,
    );
    let good = wait_for(&d, "first snapshot", |m| !user_series(m).is_empty()).await;
    let labels = [
        ("account_id", ACCOUNT),
        ("region", "us-east-1"),
        ("user_id", "alice"),
        ("cost_center", "CC-A"),
        ("plan", "Pro"),
        ("billing_period", "2026-10"),
    ];
    assert_eq!(value(&good, "kiro_user_cost_usd", &labels), Some(24.0));
    assert_scrape_reconciles(&good, "2026-10");
    let part = e.partition("2026-10");
    let file = part.join("test-export-00001.snappy.parquet");
    let saved = std::fs::read(&file).unwrap();

    // Corrupt the file: refreshes fail, the last good values stay.
    std::fs::write(&file, &saved[..saved.len() / 3]).unwrap();
    let bad = wait_for(&d, "refresh errors", |m| {
        value(m, "kiro_exporter_refresh_total", &[("result", "failure")]).unwrap_or(0.0) >= 2.0
    })
    .await;
    assert_eq!(value(&bad, "kiro_user_cost_usd", &labels), Some(24.0));
    assert_eq!(
        value(&bad, "kiro_cost_usd", &[("billing_period", "2026-10")]),
        Some(24.0)
    );
    assert!(
        value(
            &bad,
            "kiro_exporter_refresh_failures_total",
            &[("kind", "bad_input")]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(get(&d.url("/healthz"), false).await.unwrap().status, 200);
    assert_eq!(get(&d.url("/readyz"), false).await.unwrap().status, 200);
    let landing = String::from_utf8(get(&d.url("/"), false).await.unwrap().body.to_vec()).unwrap();
    assert!(
        landing.contains("Last refresh failed") && landing.contains("not a readable Parquet file"),
        "{landing}"
    );

    // Remove the files altogether: still the last good values.
    std::fs::remove_file(&file).unwrap();
    let gone = wait_for(&d, "no_data failures", |m| {
        value(
            m,
            "kiro_exporter_refresh_failures_total",
            &[("kind", "no_data")],
        )
        .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    assert_eq!(value(&gone, "kiro_user_cost_usd", &labels), Some(24.0));
    assert_scrape_reconciles(&gone, "2026-10");

    // The fault clears: the daemon recovers.
    let successes = value(
        &gone,
        "kiro_exporter_refresh_total",
        &[("result", "success")],
    )
    .unwrap();
    std::fs::write(&file, &saved).unwrap();
    wait_for(&d, "recovery", |m| {
        value(m, "kiro_exporter_refresh_total", &[("result", "success")]).unwrap() > successes
    })
    .await;
    assert!(
        d.log()
            .contains("refresh failed, keeping the last good snapshot"),
        "{}",
        d.log()
    );
}

#[tokio::test]
async fn not_ready_until_the_first_snapshot() {
    let e = Export::write([seat("alice", Some("CC-A"), "Pro", 1, 20.0)]);
    let d = Daemon::start(
        &["--cur", e.path().to_str().unwrap(), "--period", "2026-07"],
        FAST,
    );
    let m = wait_for(&d, "a failed refresh", |m| {
        value(m, "kiro_exporter_refresh_total", &[("result", "failure")]).unwrap_or(0.0) >= 1.0
    })
    .await;
    assert_eq!(get(&d.url("/readyz"), false).await.unwrap().status, 503);
    assert_eq!(get(&d.url("/healthz"), false).await.unwrap().status, 200);
    assert!(user_series(&m).is_empty());
    assert_eq!(
        value(&m, "kiro_exporter_last_success_timestamp_seconds", &[]),
        Some(0.0)
    );
    assert!(d.log().contains("BILLING_PERIOD=2026-07"), "{}", d.log());
}

#[tokio::test]
async fn sigterm_during_scrapes_exits_cleanly() {
    let cur = generated(200, 5);
    let mut d = Daemon::start(
        &["--cur", cur.path().to_str().unwrap(), "--period", "2026-10"],
        &[],
    );
    wait_status(&d.url("/readyz"), 200, 60).await;
    let expected = scrape(&d).await;
    let url = d.url("/metrics");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (url, stop) = (url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut complete = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match get(&url, i % 2 == 0).await {
                    Ok(r) => {
                        assert_eq!(r.status, 200);
                        let text = if i % 2 == 0 {
                            let mut s = String::new();
                            flate2::read::GzDecoder::new(&r.body[..])
                                .read_to_string(&mut s)
                                .expect("complete gzip body");
                            s
                        } else {
                            String::from_utf8(r.body.to_vec()).unwrap()
                        };
                        assert!(text.ends_with('\n'), "a response was cut off");
                        complete += 1;
                    }
                    // After shutdown the listener is closed: refused connections are expected.
                    Err(_) => break,
                }
            }
            complete
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    d.terminate();
    let status = tokio::task::spawn_blocking(move || {
        let s = d.wait_exit(15);
        (s, d)
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert!(
        status.0.success(),
        "exit status {:?}; log: {}",
        status.0,
        status.1.log()
    );
    assert!(total > 0, "no scrape completed");
    assert!(!expected.is_empty());
    assert!(
        status.1.log().contains("shutting down"),
        "{}",
        status.1.log()
    );
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[refresh]\ninterval = \"0s\"\n").unwrap();
    let o = run(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("refresh.interval"), "{}", stderr(&o));
    std::fs::write(&cfg, "[server]\nlisten = \"not-an-address\"\n").unwrap();
    let o = run(&["serve", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("server.listen"), "{}", stderr(&o));
    let o = run(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("server.listen"), "{}", stderr(&o));
    // A setting that no longer exists is refused by name, not ignored.
    std::fs::write(
        &cfg,
        "[source.datafusion]\n\"execution.batch_size\" = \"8192\"\n",
    )
    .unwrap();
    let o = run(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("source.datafusion: unknown field `datafusion`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn busy_port_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = run(&["serve", "--listen", &addr, "--cur", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("cannot listen on {addr}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn shipped_configs_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let p = entry.unwrap().path();
        if !matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("toml" | "yaml" | "yml")
        ) {
            continue;
        }
        let o = run(&["check-config", "--config", p.to_str().unwrap()]);
        assert!(o.status.success(), "{}: {}", p.display(), stderr(&o));
        n += 1;
    }
    assert!(n >= 2, "example configs in config/");
}

#[tokio::test]
async fn counters_exist_at_zero_from_the_start_and_the_period_is_marked() {
    let e = Export::write([seat("alice", Some("CC-A"), "Pro", 1, 20.0)]);
    let d = Daemon::start(
        &["--cur", e.path().to_str().unwrap(), "--period", "2026-10"],
        FAST,
    );
    let p = [("billing_period", "2026-10")];
    let m = wait_for(&d, "first snapshot", |m| {
        value(m, "kiro_cost_usd", &p).is_some()
    })
    .await;
    // Every failure kind reads 0 before its first failure, so that increase() sees the first.
    for kind in kiro_cost_exporter::failure::FailureKind::REFRESH.map(|k| k.as_str()) {
        assert_eq!(
            value(
                &m,
                "kiro_exporter_refresh_failures_total",
                &[("kind", kind)]
            ),
            Some(0.0),
            "{kind}"
        );
    }
    for name in [
        "kiro_exporter_state_saves_total",
        "kiro_exporter_budget_syncs_total",
        "kiro_exporter_cloudwatch_datums_total",
    ] {
        assert_eq!(
            value(&m, name, &[("result", "failure")]),
            Some(0.0),
            "{name}"
        );
        assert!(
            value(&m, name, &[("result", "success")]).is_some(),
            "{name}"
        );
    }
    // The period served is marked current or closing, for the rules to join on.
    let now = kiro_cost_exporter::period::BillingPeriod::containing(chrono::Utc::now());
    let state = if now == period("2026-10") {
        "current"
    } else {
        "closing"
    };
    assert_eq!(
        value(
            &m,
            "kiro_billing_period_info",
            &[("billing_period", "2026-10"), ("state", state)]
        ),
        Some(1.0)
    );
    assert_scrape_reconciles(&m, "2026-10");
}

#[tokio::test]
async fn per_user_series_can_be_switched_off_leaving_the_roll_ups() {
    let e = Export::write([
        seat("alice", Some("CC-A"), "Pro", 1, 20.0),
        credits("alice", Some("CC-A"), 3, 1_100.0, 100.0),
        seat("bob", None, "Power", 1, 200.0),
    ]);
    let env: Vec<(&str, &str)> = FAST
        .iter()
        .copied()
        .chain([("KIRO_EXPORTER__PROMETHEUS__PER_USER", "false")])
        .collect();
    let d = Daemon::start(
        &["--cur", e.path().to_str().unwrap(), "--period", "2026-10"],
        &env,
    );
    let p = [("billing_period", "2026-10")];
    let m = wait_for(&d, "first snapshot", |m| {
        value(m, "kiro_cost_usd", &p).is_some()
    })
    .await;
    let per_user: Vec<&String> = m
        .keys()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("kiro_user_"))
        .collect();
    assert!(per_user.is_empty(), "{per_user:?}");
    // The roll-ups are all there, and they reconcile: Σ cost centers + unattributed + tax.
    let cc: f64 = m
        .iter()
        .filter(|((n, l), _)| n == "kiro_cost_center_cost_usd" && l["billing_period"] == "2026-10")
        .map(|(_, v)| v)
        .sum();
    let total = value(&m, "kiro_cost_usd", &p).unwrap();
    let rest =
        value(&m, "kiro_unattributed_usd", &p).unwrap() + value(&m, "kiro_tax_usd", &p).unwrap();
    assert!((cc + rest - total).abs() < 1e-9, "{cc} + {rest} != {total}");
    assert_eq!(total, 224.0);
    assert_eq!(
        value(
            &m,
            "kiro_cost_center_cost_usd",
            &[("billing_period", "2026-10"), ("cost_center", "CC-A")]
        ),
        Some(24.0)
    );
    assert_eq!(value(&m, "kiro_untagged_users", &p), Some(1.0));
}

/// `kiro_exporter_build_info` names the version, the commit the binary was built from and the
/// compiler, as `--version` does.
fn the_build_is_named(m: &std::collections::BTreeMap<Series, f64>) {
    let (revision, rustc) = build_provenance();
    let info: Vec<_> = m
        .iter()
        .filter(|((n, _), _)| n == "kiro_exporter_build_info")
        .collect();
    let [((_, labels), 1.0)] = info[..] else {
        panic!("one kiro_exporter_build_info of 1: {info:?}");
    };
    assert_eq!(labels["revision"], revision);
    assert_eq!(labels["rustc"], rustc);
    assert_eq!(labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(!labels["engine"].is_empty());
    let version = stdout(&run(&["--version"]));
    assert_eq!(
        version.trim(),
        format!(
            "kiro-cost-exporter {} (revision {revision}, rustc {rustc})",
            env!("CARGO_PKG_VERSION")
        )
    );
}
