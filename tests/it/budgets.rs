//! AWS Budgets reconciliation with the real SDK against ministack (moto lacks UpdateBudget),
//! through the recording proxy so that "no write call" can be checked call by call.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_budgets::types::{Budget, BudgetType, Spend, TimeUnit};
use kiro_cost_exporter::curgen::GenSpec;
use kiro_cost_exporter::sink::aws_budgets::{BudgetSettings, Change, Reconciler, Subscribers};
use rust_decimal::Decimal;

use crate::support::aws::{self, Emulator, Kind, Proxy};
use crate::support::fixture::Setup;
use crate::support::*;

const ACCOUNT_ID: &str = "123456789012";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:kiro-budgets";

fn settings() -> BudgetSettings {
    BudgetSettings {
        enabled: true,
        account_id: ACCOUNT_ID.into(),
        cost_centers: [
            ("platform".to_owned(), Decimal::from(5000)),
            ("mobile".to_owned(), Decimal::from(3000)),
        ]
        .into(),
        total_limit_usd: Some(Decimal::from(20000)),
        subscribers: Subscribers {
            sns: vec![TOPIC.into()],
            emails: vec!["finops@example.com".into()],
        },
        ..BudgetSettings::default()
    }
}

/// Calls other than Describe* since `from`.
fn writes(proxy: &Proxy, from: usize) -> Vec<String> {
    proxy.calls()[from..]
        .iter()
        .filter(|c| !c.contains(".Describe"))
        .cloned()
        .collect()
}

/// Dry run: the plan, and no write.
async fn dry_run_plans_and_writes_nothing(r: &Reconciler, proxy: &Proxy) {
    let start = proxy.calls().len();
    let plan = r.sync([], true).await.unwrap();
    let lines: Vec<String> = plan.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("+ create")).count(),
        3,
        "{lines:?}"
    );
    assert!(
        lines.contains(
            &"+ create kiro-cc-platform: 5000 USD a month, cost center platform".to_owned()
        ),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"+ create kiro-total: 20000 USD a month, all of Kiro".to_owned()),
        "{lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("+ notify")).count(),
        9
    );
    assert!(writes(proxy, start).is_empty(), "dry run writes nothing");
    assert!(r.current().await.unwrap().is_empty());
}

/// First sync: created as configured, with their filters and notifications.
async fn first_sync_creates_as_configured(r: &Reconciler) {
    let plan = r.sync([], false).await.unwrap();
    assert_eq!(plan.len(), 12);
    let current = r.current().await.unwrap();
    assert_eq!(current.len(), 3, "owned budgets only: {:?}", current.keys());
    let platform = &current["kiro-cc-platform"];
    let limit = platform.budget.budget_limit().unwrap();
    assert_eq!((limit.amount(), limit.unit()), ("5000", "USD"));
    let filter = platform.budget.filter_expression().expect("a filter");
    let parts = filter.and();
    assert_eq!(parts[0].dimensions().unwrap().values(), ["Kiro"]);
    let tags = parts[1].tags().unwrap();
    assert_eq!(
        (tags.key(), tags.values()),
        (
            Some("userAttribute/costCenter"),
            &["platform".to_owned()][..]
        )
    );
    assert_eq!(platform.notifications.len(), 3);
    for (_, subs) in platform.notifications.values() {
        assert_eq!(
            subs,
            &vec![
                ("EMAIL".to_owned(), "finops@example.com".to_owned()),
                ("SNS".to_owned(), TOPIC.to_owned())
            ]
        );
    }
}

#[tokio::test]
async fn sync_creates_then_changes_nothing_updates_prunes_and_leaves_others_alone() {
    let Some(ms) = Emulator::start(Kind::Ministack) else {
        return;
    };
    let proxy = Proxy::start(&ms.url(), false);
    let shared = aws::sdk_config(&proxy.url()).await;
    let client = aws_sdk_budgets::Client::new(&shared);
    // Someone else's budget.
    client
        .create_budget()
        .account_id(ACCOUNT_ID)
        .budget(
            Budget::builder()
                .budget_name("team-budget")
                .budget_type(BudgetType::Cost)
                .time_unit(TimeUnit::Monthly)
                .budget_limit(Spend::builder().amount("100").unit("USD").build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let r = Reconciler::new(&shared, settings());
    dry_run_plans_and_writes_nothing(&r, &proxy).await;
    first_sync_creates_as_configured(&r).await;

    // Second sync, nothing changed: no write call at all.
    let start = proxy.calls().len();
    assert!(r.sync([], false).await.unwrap().is_empty());
    assert!(
        writes(&proxy, start).is_empty(),
        "{:?}",
        writes(&proxy, start)
    );

    // A changed limit: one update.
    let mut s = settings();
    s.cost_centers.insert("mobile".into(), Decimal::from(3500));
    let r = Reconciler::new(&shared, s.clone());
    let start = proxy.calls().len();
    let plan = r.sync([], false).await.unwrap();
    assert_eq!(
        plan.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["~ update kiro-cc-mobile: limit 3000 -> 3500 USD"]
    );
    assert_eq!(
        writes(&proxy, start),
        ["AWSBudgetServiceGateway.UpdateBudget"]
    );
    let mobile = &r.current().await.unwrap()["kiro-cc-mobile"];
    assert_eq!(mobile.budget.budget_limit().unwrap().amount(), "3500");

    // A cost center leaves the config: kept without prune, deleted with it; never others.
    s.cost_centers.remove("platform");
    let r = Reconciler::new(&shared, s.clone());
    assert!(r.sync([], false).await.unwrap().is_empty());
    s.prune = true;
    let r = Reconciler::new(&shared, s.clone());
    let plan = r.sync([], false).await.unwrap();
    assert!(matches!(&plan[..], [Change::Delete { budget }] if budget == "kiro-cc-platform"));
    let all = client
        .describe_budgets()
        .account_id(ACCOUNT_ID)
        .send()
        .await
        .unwrap();
    let mut names: Vec<&str> = all.budgets().iter().map(|b| b.budget_name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["kiro-cc-mobile", "kiro-total", "team-budget"]);

    // Cost centers seen in the data get the default limit when asked.
    s.auto_cost_centers = true;
    s.default_limit_usd = Some(Decimal::from(1000));
    let r = Reconciler::new(&shared, s);
    let plan = r.sync(["research", "", "mobile"], false).await.unwrap();
    assert!(
        plan.iter().any(|c| c.to_string()
            == "+ create kiro-cc-research: 1000 USD a month, cost center research")
    );
    assert!(!plan.iter().any(|c| c.to_string().contains("mobile")));

    // Readings are what the API returns.
    let readings = r.readings().await.unwrap();
    let by_name: BTreeMap<&str, (&str, f64, Option<f64>)> = readings
        .iter()
        .map(|b| {
            (
                b.budget.as_str(),
                (b.cost_center.as_str(), b.limit_usd, b.actual_usd),
            )
        })
        .collect();
    assert_eq!(by_name["kiro-cc-mobile"], ("mobile", 3500.0, Some(0.0)));
    assert_eq!(by_name["kiro-total"], ("(all)", 20000.0, Some(0.0)));
    assert_eq!(by_name["kiro-cc-research"].1, 1000.0);
    assert!(!by_name.contains_key("team-budget"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_dry_run_and_the_daemons_budget_gauges() {
    let Some(ms) = Emulator::start(Kind::Ministack) else {
        return;
    };
    let mut spec = GenSpec::new(20, period("2026-10"));
    spec.seed = 4;
    let mut setup = Setup::generated(&spec);
    setup.settings.budgets = BudgetSettings {
        cost_centers: [("platform".to_owned(), Decimal::from(5000))].into(),
        subscribers: Subscribers {
            sns: vec![],
            emails: vec!["finops@example.com".into()],
        },
        ..settings()
    };
    setup.settings.aws.region = "us-east-1".into();
    setup.settings.aws.endpoint_url = ms.url();
    let config = setup.write_config("budgets.toml");
    let config = config.to_str().unwrap();
    let env = aws::aws_env();
    let o = std::process::Command::new(bin())
        .args(["budgets", "sync", "--dry-run", "--config", config])
        .envs(env.clone())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("+ create kiro-cc-platform: 5000 USD a month, cost center platform"),
        "{out}"
    );
    assert!(
        out.contains("+ notify kiro-total: FORECASTED > 100%"),
        "{out}"
    );
    assert!(out.ends_with("8 change(s) to apply\n"), "{out}");
    let r = Reconciler::new(&aws::sdk_config(&ms.url()).await, {
        let mut s = settings();
        s.cost_centers.clear();
        s
    });
    assert!(
        r.current().await.unwrap().is_empty(),
        "the dry run wrote nothing"
    );

    // serve syncs after its refresh and exports what the API reports.
    let d = Daemon::start(&["--config", config, "--period", "2026-10"], &env);
    wait_status(&d.url("/readyz"), 200, 60).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let m = loop {
        let m = scrape(&d).await;
        if value(
            &m,
            "kiro_budget_limit_usd",
            &[("budget", "kiro-cc-platform"), ("cost_center", "platform")],
        )
        .is_some()
        {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_scrape_reconciles(&m, "2026-10");
    let readings = r.readings().await.unwrap();
    assert_eq!(readings.len(), 2);
    for b in &readings {
        let l = [
            ("budget", b.budget.as_str()),
            ("cost_center", b.cost_center.as_str()),
        ];
        assert_eq!(value(&m, "kiro_budget_limit_usd", &l), Some(b.limit_usd));
        assert_eq!(value(&m, "kiro_budget_actual_usd", &l), b.actual_usd);
    }
    assert!(
        d.log().contains("budgets: + create kiro-total"),
        "{}",
        d.log()
    );
}

/// Each sink's health, counted the same way: errors of kind `aws` and no success while
/// `down`; a success `later`.
fn assert_sink_health(down: &BTreeMap<Series, f64>, later: &BTreeMap<Series, f64>) {
    use crate::faults::count;
    for sink in ["cloudwatch", "aws_budgets"] {
        assert!(
            count(
                down,
                "kiro_exporter_sink_errors_total",
                &[("sink", sink), ("kind", "aws")]
            ) >= 1.0,
            "{sink}"
        );
        assert_eq!(
            value(
                down,
                "kiro_exporter_sink_last_success_timestamp_seconds",
                &[("sink", sink)]
            ),
            Some(0.0),
            "{sink}"
        );
        assert!(
            value(
                later,
                "kiro_exporter_sink_last_success_timestamp_seconds",
                &[("sink", sink)]
            )
            .is_some_and(|t| t > 0.0),
            "{sink}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_and_budgets_outages_are_counted_and_recovered_from() {
    use crate::faults::{count, data};
    let Some(ms) = Emulator::start(Kind::Ministack) else {
        return;
    };
    let proxy = Proxy::start(&ms.url(), false);
    let mut spec = GenSpec::new(20, period("2026-10"));
    spec.seed = 8;
    let mut setup = Setup::generated(&spec);
    let st = &mut setup.settings;
    st.cloudwatch.enabled = true;
    st.cloudwatch.max_attempts = 2;
    st.cloudwatch.retry_initial_backoff = std::time::Duration::from_millis(10);
    st.budgets = BudgetSettings {
        cost_centers: [("platform".to_owned(), Decimal::from(5000))].into(),
        subscribers: Subscribers {
            sns: vec![],
            emails: vec!["finops@example.com".into()],
        },
        ..settings()
    };
    st.aws.region = "us-east-1".into();
    st.aws.endpoint_url = proxy.url();
    let config = setup.write_config("aws.toml");
    // Both services down from the start.
    proxy.fail_next(None);
    let env: Vec<(&str, &str)> = FAST.iter().copied().chain(aws::aws_env()).collect();
    let d = Daemon::start(
        &["--config", config.to_str().unwrap(), "--period", "2026-10"],
        &env,
    );
    let cw = |m: &BTreeMap<Series, f64>, r: &str| {
        count(m, "kiro_exporter_cloudwatch_datums_total", &[("result", r)])
    };
    let syncs = |m: &BTreeMap<Series, f64>, r: &str| {
        count(m, "kiro_exporter_budget_syncs_total", &[("result", r)])
    };
    let down = wait_for(&d, "failed pushes and syncs", |m| {
        cw(m, "failure") > 0.0 && syncs(m, "failure") >= 2.0
    })
    .await;
    assert_scrape_reconciles(&down, "2026-10");
    let served = data(&down);
    assert_eq!((cw(&down, "success"), syncs(&down, "success")), (0.0, 0.0));
    let log = d.log();
    assert!(log.contains("not delivered"), "{log}");
    assert!(
        log.contains("budgets sync failed; retried after the next refresh"),
        "{log}"
    );
    assert!(!log.contains(aws::SECRET_KEY));
    let r = Reconciler::new(&aws::sdk_config(&ms.url()).await, settings());
    assert!(r.current().await.unwrap().is_empty(), "nothing half-made");

    // Back up: pushed and reconciled, each budget made once, and the data unchanged.
    proxy.fail_next(Some(0));
    let up = wait_for(&d, "a push and a sync", |m| {
        cw(m, "success") > 0.0 && syncs(m, "success") >= 1.0
    })
    .await;
    assert_eq!(data(&up), served);
    let later = wait_for(&d, "another refresh", |m| {
        cw(m, "success") > cw(&up, "success")
    })
    .await;
    let client = aws_sdk_budgets::Client::new(&aws::sdk_config(&ms.url()).await);
    let all = client
        .describe_budgets()
        .account_id(ACCOUNT_ID)
        .send()
        .await
        .unwrap();
    let mut names: Vec<&str> = all.budgets().iter().map(|b| b.budget_name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["kiro-cc-platform", "kiro-total"]);
    // Each sink's health, counted the same way: errors by kind while down, then a success.
    assert_sink_health(&down, &later);
    assert_eq!(
        value(
            &later,
            "kiro_budget_limit_usd",
            &[("budget", "kiro-cc-platform"), ("cost_center", "platform")]
        ),
        Some(5000.0)
    );
    let creates = proxy
        .calls()
        .iter()
        .filter(|c| c.ends_with(".CreateBudget"))
        .count();
    assert_eq!(creates, 2, "each budget created once: {:?}", proxy.calls());
}

#[test]
fn bad_budget_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("b.toml");
    let cases = [
        (
            "[budgets.cost_centers]\nplatform = -5\n",
            "budgets.cost_centers.platform",
        ),
        (
            "[[budgets.notifications]]\ntype = \"ACTUAL\"\nthreshold_percent = 1500\n",
            "budgets.notifications[0].threshold_percent",
        ),
        (
            "[budgets.subscribers]\nsns = [\"arn:aws:sqs:us-east-1:123456789012:q\"]\n",
            "budgets.subscribers.sns[0]",
        ),
        (
            "[budgets.subscribers]\nemails = [\"finops at example.com\"]\n",
            "budgets.subscribers.emails[0]",
        ),
        (
            "[budgets]\nenabled = true\naccount_id = \"12345\"\n",
            "budgets.account_id",
        ),
    ];
    for (text, key) in cases {
        std::fs::write(&config, text).unwrap();
        let o = run(&["check-config", "--config", config.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{text}");
        assert!(
            stderr(&o).contains(&format!("config key {key}: ")),
            "{key}: {}",
            stderr(&o)
        );
    }
}
