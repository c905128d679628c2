//! One meaning of every derived number: the total cost (the whole bill, tax included), the
//! cost centers' costs and their month-end forecasts are the same in `query --format json`,
//! on /metrics of the real daemon, in the CloudWatch datums and in what the alert rules
//! measure, because each is read from the snapshot's views rather than computed by its sink.

use std::collections::BTreeMap;

use kiro_cost_exporter::allocation::savings::SavingsSettings;
use kiro_cost_exporter::allocation::{PlanTable, cost_center_label};
use kiro_cost_exporter::curgen::{self, GenSpec};
use kiro_cost_exporter::sink::BudgetLimits;
use kiro_cost_exporter::sink::alerts::rules::{self, Measure, Rule, Scope};
use kiro_cost_exporter::sink::cloudwatch;
use kiro_cost_exporter::snapshot::Snapshot;
use kiro_cost_exporter::source::{LocalSource, Source as _};
use rust_decimal::prelude::ToPrimitive;

use crate::support::*;

/// `query --format json` of `cur`'s October: the whole bill, and per cost center its cost
/// and forecast.
fn query_reference(cur: &str) -> (f64, BTreeMap<String, (f64, f64)>) {
    let o = run(&[
        "query", "--cur", cur, "--period", "2026-10", "--format", "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_json_reconciles(&json);
    let total = json["kiro_total_usd"].as_f64().unwrap();
    let tax = json["tax_usd"].as_f64().unwrap();
    assert!(
        tax > 0.0,
        "the generator bills tax, so a total without it would differ"
    );
    let mut centers: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for c in json["cost_centers"].as_array().unwrap() {
        centers.insert(
            c["cost_center"].as_str().unwrap().to_owned(),
            (
                c["total_usd"].as_f64().unwrap(),
                c["forecast_usd"].as_f64().unwrap(),
            ),
        );
    }
    assert!(centers.len() > 2, "{centers:?}");
    (total, centers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_cloudwatch_and_alerts_agree_with_query_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = GenSpec::new(60, period("2026-10"));
    spec.seed = 21;
    curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    let cur = dir.path().to_str().unwrap();

    // query --format json, from the binary.
    let (total, centers) = query_reference(cur);

    // /metrics of the real daemon.
    let d = Daemon::start(&["--cur", cur, "--period", "2026-10"], FAST);
    wait_status(&d.url("/readyz"), 200, 60).await;
    let m = scrape(&d).await;
    assert_scrape_reconciles(&m, "2026-10");
    let p = ("billing_period", "2026-10");
    let close = |a: f64, b: f64, what: &str| assert!((a - b).abs() < 1e-6, "{what}: {a} != {b}");
    close(
        value(&m, "kiro_cost_usd", &[p]).unwrap(),
        total,
        "kiro_cost_usd",
    );
    for (cc, (cost, forecast)) in &centers {
        let l = [p, ("cost_center", cost_center_label(cc))];
        close(
            value(&m, "kiro_cost_center_cost_usd", &l).unwrap(),
            *cost,
            cc,
        );
        close(
            value(&m, "kiro_cost_center_forecast_usd", &l).unwrap(),
            *forecast,
            cc,
        );
    }

    // CloudWatch datums and alert measures, from a snapshot built as the daemon builds it.
    let a = LocalSource::new(dir.path(), Default::default())
        .allocate(period("2026-10"))
        .await
        .unwrap();
    assert_reconciles(&a);
    let s = Snapshot::of_bill(
        chrono::Utc::now(),
        vec![a],
        &PlanTable::default(),
        &SavingsSettings::default(),
    );
    let datums = cloudwatch::datums(&s, false);
    let datum = |name: &str, dims: &[(&str, &str)]| {
        datums
            .iter()
            .find(|d| {
                d.name == name
                    && d.dimensions.len() == dims.len()
                    && dims
                        .iter()
                        .all(|(k, v)| d.dimensions.iter().any(|(dk, dv)| dk == k && dv == v))
            })
            .unwrap_or_else(|| panic!("no datum {name} {dims:?}"))
            .value
    };
    close(datum("CostUsd", &[]), total, "CloudWatch total CostUsd");
    let view = s.current().unwrap();
    // A closed month is its own forecast: the whole bill.
    close(
        datum("ForecastUsd", &[]),
        total,
        "CloudWatch total ForecastUsd",
    );
    for (cc, (cost, forecast)) in &centers {
        let name = cost_center_label(cc);
        assert_eq!(cc.is_empty(), name == cloudwatch::UNTAGGED);
        close(datum("CostUsd", &[("CostCenter", name)]), *cost, cc);
        close(datum("ForecastUsd", &[("CostCenter", name)]), *forecast, cc);
    }
    let measured = |scope, measure| {
        rules::evaluate(
            &[Rule::new("r", scope, measure, 0.0)],
            view,
            &BudgetLimits::default(),
        )
    };
    let t = measured(Scope::Total, Measure::CostUsd);
    close(t[0].value, total, "alert total cost");
    let t = measured(Scope::Total, Measure::ForecastUsd);
    close(t[0].value, total, "alert total forecast");
    for f in measured(Scope::CostCenter, Measure::ForecastUsd) {
        close(f.value, centers[&f.subject].1, &f.subject);
    }
    for f in measured(Scope::CostCenter, Measure::CostUsd) {
        close(f.value, centers[&f.subject].0, &f.subject);
    }
    close(
        view.total_cost_usd.to_f64().unwrap(),
        total,
        "the view's total",
    );
}
