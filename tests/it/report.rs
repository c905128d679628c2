//! The monthly report as `report` writes it: the CSV (every unit, the savings of each seat on
//! its main cost center's row, rows for cost without a user and for tax, summing to the bill),
//! its upload to S3 (moto) with a presigned link that works, and the summary card, signed, on a
//! loopback Feishu receiver.

use std::collections::BTreeSet;

use kiro_cost_exporter::allocation::cost_center_label;
use kiro_cost_exporter::curgen::GenSpec;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;

use kiro_cost_exporter::notify::ChannelConfig;

use crate::support::feishu::{Receiver, blocks, title};
use crate::support::fixture::{Setup, feishu_channel};
use crate::support::*;

const SECRET: &str = "kiro-test-signing-secret";

/// A JSON amount as people read it on the card: `$12,345.68` (cents rounded half away from
/// zero, thousands grouped).
fn grouped_usd(v: &Value) -> String {
    let d: Decimal = v.to_string().parse().unwrap();
    let cents = d
        .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        .to_string();
    let (int, frac) = cents.split_once('.').unwrap_or((&cents, "00"));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("${grouped}.{frac:0<2}")
}

/// The CSV's header, and its rows: the query's units in order with their amounts, then the
/// rows without a user and of tax, summing to the bill and to the query's savings.
fn check_csv(bytes: &[u8], v: &Value) {
    let mut r = csv::Reader::from_reader(&bytes[3..]);
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "billing_period",
            "account_id",
            "region",
            "user_id",
            "cost_center",
            "plan",
            "credits_used",
            "subscription_usd",
            "overage_usd",
            "other_usd",
            "total_usd",
            "recommended_plan",
            "savings_usd",
            "savings_reason",
            "user_name",
            "display_name",
            "email",
            "licence_since",
            "months_active",
            "months_idle",
            "idle_cost_usd"
        ]
    );
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let users = v["users"].as_array().unwrap();
    let q_recs = v["savings"]["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["reason"] == "q_developer")
        .count();
    assert_eq!(
        rows.len(),
        users.len() + q_recs + 2,
        "units, Q Developer seats to cancel, then no-user and tax rows"
    );
    for row in &rows[users.len()..users.len() + q_recs] {
        assert_eq!((&row[5], &row[13]), ("Q Developer Pro", "q_developer"));
        assert_eq!(&row[10], "", "no Kiro amount on a Q Developer row");
    }
    let num = |s: &str| s.parse::<Decimal>().unwrap_or_default();
    let mut total = Decimal::ZERO;
    let mut saving = Decimal::ZERO;
    for (row, u) in rows.iter().zip(users) {
        assert_eq!(&row[2], u["region"].as_str().unwrap());
        assert_eq!(&row[3], u["user_id"].as_str().unwrap());
        assert_eq!(
            &row[4],
            cost_center_label(u["cost_center"].as_str().unwrap()),
            "untagged is named as in every sink"
        );
        assert_eq!(&row[5], u["plan"].as_str().unwrap());
        assert!((num(&row[10]).to_f64().unwrap() - u["total_usd"].as_f64().unwrap()).abs() < 1e-6);
        assert_eq!(
            num(&row[10]),
            num(&row[7]) + num(&row[8]) + num(&row[9]),
            "subscription + overage + other = total"
        );
    }
    for row in &rows {
        total += num(&row[10]);
        saving += num(&row[12]);
    }
    assert_eq!(
        &rows[rows.len() - 2][3],
        kiro_cost_exporter::sink::report::UNATTRIBUTED_ROW
    );
    assert_eq!(
        &rows[rows.len() - 1][3],
        kiro_cost_exporter::sink::report::TAX_ROW
    );
    assert!((total.to_f64().unwrap() - v["kiro_total_usd"].as_f64().unwrap()).abs() < 1e-6);
    let json_saving = v["savings"]["total_usd"].as_f64().unwrap();
    assert!(
        (saving.to_f64().unwrap() - json_saving).abs() < 1e-6,
        "{saving} vs {json_saving}"
    );
    assert!(json_saving > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_writes_the_csv_uploads_it_and_sends_the_summary_card() {
    let Some(moto) = crate::support::aws::Emulator::start(crate::support::aws::Kind::Moto) else {
        return;
    };
    let s3 = crate::support::aws::s3_client(&moto.url()).await;
    s3.create_bucket()
        .bucket("finance-reports")
        .send()
        .await
        .unwrap();
    let rx = Receiver::start(Some(SECRET));
    let mut spec = GenSpec::new(60, period("2026-10"));
    spec.seed = 21;
    let mut setup = Setup::generated(&spec);
    let s = &mut setup.settings;
    s.alerts.channels = vec![ChannelConfig {
        secret_env: "TEST_FEISHU_SECRET".into(),
        ..feishu_channel("finance", "TEST_FEISHU_URL")
    }];
    s.report.s3 = "s3://finance-reports/kiro/".into();
    s.report.link_ttl = std::time::Duration::from_secs(3600);
    s.report.top = 3;
    s.aws.region = "us-east-1".into();
    s.aws.endpoint_url = moto.url();
    let config = setup.write_config("report.toml");
    let out = setup.path("out");
    let o = std::process::Command::new(bin())
        .args(["report", "--config", config.to_str().unwrap()])
        .args(["--period", "2026-10", "--out", out.to_str().unwrap()])
        .env("TEST_FEISHU_URL", rx.url())
        .env("TEST_FEISHU_SECRET", SECRET)
        .envs(crate::support::aws::aws_env())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    let path = out.join("kiro-cost-report-2026-10.csv");
    assert!(
        printed.contains(&format!("report: {}", path.display())),
        "{printed}"
    );
    let link = printed
        .lines()
        .find_map(|l| l.strip_prefix("download link: "))
        .expect("a download link")
        .to_owned();
    assert!(printed.contains("summary cards sent: 1"));

    // The CSV is the allocation: same units and amounts, reconciled to the Kiro total.
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with("\u{feff}".as_bytes()), "UTF-8 with BOM");
    let cur = setup.settings.source.cur.to_str().unwrap();
    let json = run(&[
        "query", "--cur", cur, "--period", "2026-10", "--format", "json",
    ]);
    let v: Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_json_reconciles(&v);
    check_csv(&bytes, &v);
    the_upload_and_its_link_serve_the_csv(&s3, &link, &bytes).await;
    let cards = rx.accepted();
    assert_eq!(cards.len(), 1);
    the_card_summarises_the_month(&cards[0], &v, &link);
}

/// Step: the CSV is uploaded, and the presigned link downloads the same bytes.
async fn the_upload_and_its_link_serve_the_csv(s3: &aws_sdk_s3::Client, link: &str, csv: &[u8]) {
    let object = s3
        .get_object()
        .bucket("finance-reports")
        .key("kiro/kiro-cost-report-2026-10.csv")
        .send()
        .await
        .unwrap();
    assert_eq!(object.body.collect().await.unwrap().into_bytes(), csv);
    assert!(
        link.contains("X-Amz-Signature=") && link.contains("X-Amz-Expires=3600"),
        "{link}"
    );
    let got = get(link, false).await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body, csv);
}

/// Step: the card shows the period, users, credits, cost, top cost centers (biggest first),
/// overage and untagged users, savings, and the link, as `query` (`v`) has them.
fn the_card_summarises_the_month(card: &Value, v: &Value, link: &str) {
    assert_eq!(title(card), "Kiro cost report 2026-10");
    let text = blocks(card).join("\n");
    // People, not seats: a user subscribed in two accounts counts once.
    let distinct_users: BTreeSet<&str> = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    for needle in [
        "**Period**: 2026-10".to_owned(),
        format!("**Users**: {}", distinct_users.len()),
        format!("**Total cost**: {}", grouped_usd(&v["kiro_total_usd"])),
        format!(
            "**Untagged users**: {}",
            v["untagged_users"].as_array().unwrap().len()
        ),
        format!(
            "**Possible savings**: {}",
            grouped_usd(&v["savings"]["total_usd"])
        ),
        "**Top cost centers**".to_owned(),
        "**Users with overage**: ".to_owned(),
        // Static credentials do not expire: the link lives link_ttl (1 h).
        "The download link works until ".to_owned(),
    ] {
        assert!(text.contains(&needle), "{needle} in\n{text}");
    }
    let biggest = v["cost_centers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by(|a, b| {
            a["total_usd"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["total_usd"].as_f64().unwrap())
        })
        .unwrap()["cost_center"]
        .as_str()
        .unwrap();
    let biggest = if biggest.is_empty() {
        "untagged"
    } else {
        biggest
    };
    assert!(
        text.contains(&format!("- {biggest}: ")),
        "{biggest} first in\n{text}"
    );
    let buttons: Vec<&Value> = card["card"]["body"]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["tag"] == "button")
        .collect();
    assert_eq!(buttons[0]["behaviors"][0]["default_url"], link);
}

/// AWS may update a month for two weeks after it ends: a month whose total changes after its
/// report went out is logged and counted once per change, and its new total remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_that_changes_after_its_report_is_counted() {
    let rx = Receiver::start(Some(SECRET));
    let last = kiro_cost_exporter::period::BillingPeriod::containing(chrono::Utc::now()).previous();
    let mut spec = GenSpec::new(20, last);
    spec.seed = 9;
    let mut setup = Setup::generated(&spec);
    let s = &mut setup.settings;
    s.alerts.rules = vec![];
    s.alerts.channels = vec![ChannelConfig {
        secret_env: "TEST_FEISHU_SECRET".into(),
        ..feishu_channel("feishu", "TEST_FEISHU_URL")
    }];
    s.report.schedule_day = 1;
    let config = setup.write_config("report.toml");
    let export = setup.settings.source.cur.clone();
    let state = setup.settings.alerts.state_file.clone();
    let url = rx.url();
    let mut env: Vec<(&str, &str)> =
        vec![("TEST_FEISHU_URL", &url), ("TEST_FEISHU_SECRET", SECRET)];
    env.extend_from_slice(FAST);
    let last_s = last.to_string();
    let d = Daemon::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--cur",
            export.to_str().unwrap(),
            "--period",
            &last_s,
        ],
        &env,
    );
    wait_log(&d, "monthly report sent", 60);
    let before = scrape(&d).await;
    assert_eq!(
        value(&before, "kiro_exporter_closed_period_revisions_total", &[]),
        Some(0.0)
    );
    // AWS adds a late line to the month (written aside, then renamed in).
    let late = setup.path("late");
    let mut w =
        kiro_cost_exporter::curgen::ExportWriter::new(&late, "late", 1_000, |_| {}).unwrap();
    kiro_cost_exporter::curgen::LineSink::line(
        &mut w,
        kiro_cost_exporter::curgen::CurLine {
            period: last,
            usage_start: last.start() + chrono::Duration::days(2),
            usage_end: last.start() + chrono::Duration::days(2) + chrono::Duration::hours(1),
            unblended_cost: 7.5,
            ..line("late-user", Some("CC-LATE"))
        },
    )
    .unwrap();
    w.finish().unwrap();
    let partition = export.join("data").join(format!("BILLING_PERIOD={last}"));
    let from = late
        .join("data")
        .join(format!("BILLING_PERIOD={last}"))
        .join("late-00001.snappy.parquet");
    std::fs::rename(from, partition.join("late-00001.snappy.parquet")).unwrap();
    let m = wait_for(&d, "the revision counted", |m| {
        value(m, "kiro_exporter_closed_period_revisions_total", &[]) == Some(1.0)
    })
    .await;
    assert_scrape_reconciles(&m, &last_s);
    let log = wait_log(&d, "changed after its monthly report was sent", 10);
    assert!(log.contains("report --period"), "{log}");
    // Counted once per change: later refreshes of the same bill add nothing.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let again = scrape(&d).await;
    assert_eq!(
        value(&again, "kiro_exporter_closed_period_revisions_total", &[]),
        Some(1.0)
    );
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let total = value(&again, "kiro_cost_usd", &[("billing_period", &last_s)]).unwrap();
    let remembered: f64 = saved["report_totals"][&last_s]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((remembered - total).abs() < 1e-6, "{saved}");
    // The report card went out once.
    assert_eq!(
        rx.accepted()
            .iter()
            .filter(|c| title(c).starts_with("Kiro cost report"))
            .count(),
        1
    );
}

#[test]
fn the_report_speaks_chinese_when_asked() {
    let e = Export::write([
        seat("u1", Some("A"), "Pro", 1, 20.0),
        credits("u1", Some("A"), 3, 1_100.0, 100.0),
        seat("u2", None, "Pro", 1, 20.0),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zh.toml");
    let mut settings = kiro_cost_exporter::config::Settings::default();
    settings.report.locale = kiro_cost_exporter::locale::Locale::ZhCn;
    crate::support::fixture::write_settings(&config, &settings);
    let out = dir.path().join("reports");
    let o = run(&[
        "report",
        "--config",
        config.to_str().unwrap(),
        "--cur",
        e.path().to_str().unwrap(),
        "--period",
        "2026-10",
        "--out",
        out.to_str().unwrap(),
        "--no-upload",
        "--no-notify",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(out.join("kiro-cost-report-2026-10.csv")).unwrap();
    let header = csv.trim_start_matches('\u{feff}').lines().next().unwrap();
    assert!(
        header.starts_with("计费周期,账户ID,区域,用户ID,成本中心,套餐"),
        "{header}"
    );
    assert!(csv.contains(",u2,未设置,"), "{csv}");
    // The rows still sum to the month's total (24 + 20).
    let total: f64 = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(10).unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((total - 44.0).abs() < 1e-9, "{total}");
    // An unknown locale is named.
    std::fs::write(&config, "[report]\nlocale = \"fr\"\n").unwrap();
    let o = run(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("report.locale"), "{}", stderr(&o));
}
