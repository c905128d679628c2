//! The monthly report as `serve` delivers it: due from `report.schedule_day`, sent once to
//! each channel, a month without data told once with a no-data card, and the written file
//! served at `/reports/` behind the same authentication as `/metrics` (also after a restart).

use std::time::Duration;

use chrono::Utc;
use kiro_cost_exporter::curgen::GenSpec;
use kiro_cost_exporter::notify::{ChannelConfig, ChannelKind};
use kiro_cost_exporter::period::BillingPeriod;
use serde_json::Value;

use crate::support::feishu::{Receiver, blocks, title};
use crate::support::fixture::Setup;
use crate::support::*;

const SECRET: &str = "kiro-test-report-secret";

/// The report on, due from the 1st, to one Feishu channel; no alert rules.
fn reporting(setup: &mut Setup) {
    let s = &mut setup.settings;
    s.alerts.rules = vec![];
    s.alerts.channels = vec![ChannelConfig {
        name: "feishu".into(),
        kind: ChannelKind::Feishu,
        url_env: "TEST_FEISHU_URL".into(),
        secret_env: "TEST_FEISHU_SECRET".into(),
        min_interval: Duration::from_millis(10),
        ..ChannelConfig::default()
    }];
    s.report.schedule_day = 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_without_kiro_data_gets_a_no_data_card_once() {
    let rx = Receiver::start(Some(SECRET));
    let now = Utc::now();
    let current = BillingPeriod::containing(now);
    // The export starts this month: last month has no data at all.
    let mut spec = GenSpec::new(10, current);
    spec.seed = 9;
    spec.until = Some(now);
    let mut setup = Setup::generated(&spec);
    reporting(&mut setup);
    let state = setup.settings.alerts.state_file.clone();
    let url = rx.url();
    let mut env = vec![
        ("TEST_FEISHU_URL", url.as_str()),
        ("TEST_FEISHU_SECRET", SECRET),
    ];
    env.extend_from_slice(FAST);
    let d = setup.start("report.toml", &env).await;
    wait_log(&d, "a no-data card was sent", 60);
    // Later refreshes do not send it again.
    let m = scrape(&d).await;
    let before = value(&m, "kiro_exporter_refresh_total", &[("result", "success")]).unwrap();
    wait_for(&d, "two more refreshes", |m| {
        value(m, "kiro_exporter_refresh_total", &[("result", "success")]).unwrap() >= before + 2.0
    })
    .await;
    let cards = rx.accepted();
    let previous = current.previous();
    let no_data: Vec<_> = cards
        .iter()
        .filter(|c| title(c) == format!("Kiro cost report {previous}: no data"))
        .collect();
    assert_eq!(no_data.len(), 1, "{cards:?}");
    let text = blocks(no_data[0]).join("\n");
    assert!(
        text.contains(&format!("No Kiro data for **{previous}**"))
            && text.contains("BILLING_PERIOD"),
        "{text}"
    );
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["reports"][0], previous.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_is_served_behind_the_same_authentication_as_metrics() {
    let rx = Receiver::start(Some(SECRET));
    let now = Utc::now();
    let current = BillingPeriod::containing(now);
    let mut spec = GenSpec::new(20, current.previous());
    spec.months = 2;
    spec.seed = 11;
    spec.until = Some(now - chrono::Duration::hours(24));
    let mut setup = Setup::generated(&spec);
    reporting(&mut setup);
    std::fs::write(setup.path("token"), "s3cr3t-token\n").unwrap();
    setup.settings.server.bearer_token_file = setup.path("token");
    setup.settings.server.unauthenticated_paths = vec!["/readyz".into()];
    setup.settings.report.exporter_url = "https://kiro-exporter.example.com:19877".into();
    let reports = setup.settings.report.out_dir.clone();
    let config = setup.write_config("report.toml");
    let url = rx.url();
    let env = [
        ("TEST_FEISHU_URL", url.as_str()),
        ("TEST_FEISHU_SECRET", SECRET),
    ];
    let d = Daemon::start(&["--config", config.to_str().unwrap()], &env);
    wait_log(&d, "monthly report sent", 60);
    let name = format!("kiro-cost-report-{}.csv", current.previous());
    let on_disk = std::fs::read(reports.join(&name)).unwrap();
    let fetch = |auth: Option<&'static str>, path: String| {
        let url = d.url(&path);
        async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Empty<bytes::Bytes>>();
            let mut req = hyper::Request::get(url);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = client
                .request(req.body(http_body_util::Empty::new()).unwrap())
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, body)
        }
    };
    // Without credentials: refused, like /metrics.
    let (status, _) = fetch(None, format!("/reports/{name}")).await;
    assert_eq!(status, 401);
    // With them: the file's bytes.
    let (status, body) = fetch(Some("Bearer s3cr3t-token"), format!("/reports/{name}")).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), on_disk.as_slice());
    let (status, _) = fetch(
        Some("Bearer s3cr3t-token"),
        "/reports/kiro-cost-report-1999-01.csv".into(),
    )
    .await;
    assert_eq!(status, 404);
    // The card links it.
    let cards = rx.accepted();
    let card = cards
        .iter()
        .find(|c| title(c).starts_with("Kiro cost report"))
        .expect("a report card");
    assert!(
        card.to_string().contains(&format!(
            "https://kiro-exporter.example.com:19877/reports/{name}"
        )),
        "{card}"
    );
    drop(d);
    // A restart serves the reports already written.
    let d = Daemon::start(&["--config", config.to_str().unwrap()], &env);
    wait_status(&d.url("/readyz"), 200, 60).await;
    let url = d.url(&format!("/reports/{name}"));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client
        .request(
            hyper::Request::get(url)
                .header("authorization", "Bearer s3cr3t-token")
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}
