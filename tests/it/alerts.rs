//! Threshold alerts delivered to a loopback Feishu receiver that checks signatures the way
//! Feishu does: fire once, no repeat before the interval, repeat after it, resolve once; the
//! state survives a restart; 500s and rate limits are retried and delivered; a corrupt state
//! file is moved aside; and every rule's scope and measure on generated data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiro_cost_exporter::allocation::savings::{self, SavingsSettings};
use kiro_cost_exporter::allocation::{Allocation, PlanTable};
use kiro_cost_exporter::curgen::{self, GenSpec};
use kiro_cost_exporter::notify::{Channel, ChannelConfig, ChannelKind, NotifyError};
use kiro_cost_exporter::sink::BudgetLimits;
use kiro_cost_exporter::sink::alerts::rules::{self, Measure, Rule, Scope};
use kiro_cost_exporter::sink::alerts::{AlertSettings, AlertsSink};
use kiro_cost_exporter::snapshot::{PeriodView, Snapshot};
use kiro_cost_exporter::source::Source as _;
use kiro_cost_exporter::state::StateFile;
use kiro_cost_exporter::telemetry::Telemetry;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;

use crate::support::feishu::{Fault, Receiver, blocks, title};
use crate::support::fixture::{Setup, start_with};
use crate::support::*;

const SECRET: &str = "kiro-test-signing-secret";

fn rule(name: &str, scope: Scope, measure: Measure, threshold: f64) -> Rule {
    Rule::new(name, scope, measure, threshold)
}

fn channel(name: &str) -> ChannelConfig {
    ChannelConfig {
        name: name.into(),
        kind: ChannelKind::Feishu,
        url_env: "TEST_FEISHU_URL".into(),
        secret_env: "TEST_FEISHU_SECRET".into(),
        min_interval: Duration::from_millis(20),
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        ..ChannelConfig::default()
    }
}

fn counter() -> prometheus::IntCounterVec {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new("kiro_exporter_notifications_total", "test"),
        &["channel", "result"],
    )
    .unwrap()
}

/// The alerts sink as `serve` builds it: channels read their secrets through `env`, the state
/// file is opened (moved aside when corrupt).
fn alert_engine(
    settings: AlertSettings,
    budgets: BudgetLimits,
    env: &dyn Fn(&str) -> Option<String>,
    counter: prometheus::IntCounterVec,
) -> Result<AlertsSink, NotifyError> {
    let channels = settings
        .channels
        .iter()
        .map(|c| Channel::new(c.clone(), env, counter.clone()).map(std::sync::Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let file = StateFile::open(&settings.state_file).unwrap().state;
    let telemetry = Telemetry::new("local", Duration::from_secs(3600)).unwrap();
    Ok(AlertsSink::new(
        settings,
        budgets,
        channels,
        file,
        std::sync::Arc::new(telemetry),
    ))
}

fn engine(
    state: &Path,
    rules: Vec<Rule>,
    url: &str,
    secret: &str,
    counter: &prometheus::IntCounterVec,
) -> AlertsSink {
    engine_on(channel("feishu"), state, rules, url, secret, counter)
}

/// [`engine`] with a channel of its own.
fn engine_on(
    channel: ChannelConfig,
    state: &Path,
    rules: Vec<Rule>,
    url: &str,
    secret: &str,
    counter: &prometheus::IntCounterVec,
) -> AlertsSink {
    let settings = AlertSettings {
        state_file: state.to_owned(),
        repeat_interval: Duration::from_secs(3600),
        dashboard_url: "https://grafana.example.com/d/kiro-cost".into(),
        rules,
        channels: vec![channel],
    };
    let (url, secret) = (url.to_owned(), secret.to_owned());
    let env = move |k: &str| match k {
        "TEST_FEISHU_URL" => Some(url.clone()),
        "TEST_FEISHU_SECRET" => Some(secret.clone()),
        _ => None,
    };
    alert_engine(settings, BudgetLimits::default(), &env, counter.clone()).unwrap()
}

/// The period's views as a refresh at `now` derives them.
fn view(a: &Allocation, now: DateTime<Utc>) -> PeriodView {
    PeriodView::build(
        a.clone(),
        &PlanTable::default(),
        &SavingsSettings::default(),
        now,
    )
}

fn snapshot(a: &Allocation, at: DateTime<Utc>) -> Snapshot {
    Snapshot::of_bill(
        at,
        vec![a.clone()],
        &PlanTable::default(),
        &SavingsSettings::default(),
    )
}

/// Two Pro users over their included credits (alice, bob), one within them (carol).
async fn over_budget() -> Allocation {
    let e = Export::write([
        seat("alice", Some("platform"), "Pro", 1, 20.0),
        credits("alice", Some("platform"), 3, 1300.0, 300.0),
        seat("bob", Some("mobile"), "Pro", 1, 20.0),
        credits("bob", Some("mobile"), 4, 1100.0, 100.0),
        seat("carol", Some("mobile"), "Pro", 1, 20.0),
        credits("carol", Some("mobile"), 4, 200.0, 0.0),
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    assert_reconciles(&a);
    a
}

/// The same month after the overage was refunded: nobody over.
async fn all_clear() -> Allocation {
    let e = Export::write([
        seat("alice", Some("platform"), "Pro", 1, 20.0),
        credits("alice", Some("platform"), 3, 900.0, 0.0),
        seat("bob", Some("mobile"), "Pro", 1, 20.0),
        credits("bob", Some("mobile"), 4, 900.0, 0.0),
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    assert_reconciles(&a);
    a
}

#[tokio::test]
async fn an_alert_fires_once_repeats_after_the_interval_and_resolves_once() {
    let rx = Receiver::start(Some(SECRET));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let rules = vec![rule("user-overage", Scope::User, Measure::OverageUsd, 0.01)];
    let c = counter();
    let t0 = utc(2026, 10, 20);
    let over = over_budget().await;
    assert_eq!(over.units[0].overage_usd, dec("12"));

    let mut e = engine(&state, rules.clone(), &rx.url(), SECRET, &c);
    let round = e.evaluate(&snapshot(&over, t0), t0).await.unwrap();
    assert_eq!((round.firing, round.delivered, round.messages), (2, 2, 1));
    let cards = rx.accepted();
    assert_eq!(cards.len(), 1, "one grouped message for both users");
    assert_eq!(cards[0]["card"]["header"]["template"], "orange");
    assert_eq!(title(&cards[0]), "Kiro cost alerts 2026-10: 2 firing");
    let b = blocks(&cards[0]);
    assert!(
        b[0].contains("alice (platform, Pro, account 111122223333)"),
        "{}",
        b[0]
    );
    assert!(
        b[0].contains("overage_usd = **$12.00**, threshold $0.01"),
        "{}",
        b[0]
    );
    assert!(b[0].contains("🔥 firing"));
    assert!(b[1].contains("bob (mobile, Pro"), "{}", b[1]);
    assert!(b[1].contains("**$4.00**"), "{}", b[1]);
    let button = &cards[0]["card"]["body"]["elements"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        button["behaviors"][0]["default_url"],
        "https://grafana.example.com/d/kiro-cost"
    );

    // Within the repeat interval: nothing, also after a restart.
    let t1 = t0 + chrono::Duration::minutes(10);
    assert_eq!(
        e.evaluate(&snapshot(&over, t1), t1)
            .await
            .unwrap()
            .delivered,
        0
    );
    drop(e);
    let mut e = engine(&state, rules.clone(), &rx.url(), SECRET, &c);
    let t2 = t0 + chrono::Duration::minutes(59);
    assert_eq!(e.evaluate(&snapshot(&over, t2), t2).await.unwrap().due, 0);
    assert_eq!(rx.accepted().len(), 1);

    // After it: one repeat for both.
    let t3 = t0 + chrono::Duration::minutes(61);
    assert_eq!(
        e.evaluate(&snapshot(&over, t3), t3)
            .await
            .unwrap()
            .delivered,
        2
    );
    let cards = rx.accepted();
    assert_eq!(cards.len(), 2);
    assert!(blocks(&cards[1])[0].contains("🔁 still firing"));

    // Resolved: once, green, and then never again (restart included).
    let clear = all_clear().await;
    let t4 = t3 + chrono::Duration::minutes(5);
    assert_eq!(
        e.evaluate(&snapshot(&clear, t4), t4)
            .await
            .unwrap()
            .delivered,
        2
    );
    let cards = rx.accepted();
    assert_eq!(cards.len(), 3);
    assert_eq!(cards[2]["card"]["header"]["template"], "green");
    assert_eq!(title(&cards[2]), "Kiro cost alerts 2026-10: 2 resolved");
    assert!(blocks(&cards[2])[0].contains("✅ resolved"));
    drop(e);
    let mut e = engine(&state, rules, &rx.url(), SECRET, &c);
    let t5 = t4 + chrono::Duration::hours(30);
    assert_eq!(e.evaluate(&snapshot(&clear, t5), t5).await.unwrap().due, 0);
    assert_eq!(rx.accepted().len(), 3);
    assert!(e.state().alerts.is_empty());
    assert_eq!(rx.bad_signatures(), 0);
    assert_eq!(c.with_label_values(&["feishu", "success"]).get(), 3);
}

#[tokio::test]
async fn a_500_and_a_rate_limit_are_retried_and_delivered() {
    let rx = Receiver::start(Some(SECRET));
    rx.fail_with(&[Fault::ServerError, Fault::RateLimited]);
    let dir = tempfile::tempdir().unwrap();
    let c = counter();
    let mut e = engine(
        &dir.path().join("s.json"),
        vec![rule("user-overage", Scope::User, Measure::OverageUsd, 0.01)],
        &rx.url(),
        SECRET,
        &c,
    );
    let a = over_budget().await;
    let t = utc(2026, 10, 20);
    let round = e.evaluate(&snapshot(&a, t), t).await.unwrap();
    assert_eq!((round.delivered, round.undelivered), (2, 0));
    assert_eq!(rx.requests(), 3);
    assert_eq!(rx.accepted().len(), 1);
    assert_eq!(c.with_label_values(&["feishu", "retry"]).get(), 2);
    assert_eq!(c.with_label_values(&["feishu", "success"]).get(), 1);
    assert_eq!(c.with_label_values(&["feishu", "failure"]).get(), 0);
}

#[tokio::test]
async fn a_webhook_that_does_not_answer_times_out_and_the_notice_stays_due() {
    let rx = Receiver::start(Some(SECRET));
    let hang = Fault::Hang(Duration::from_secs(2));
    rx.fail_with(&[hang, hang]);
    let dir = tempfile::tempdir().unwrap();
    let c = counter();
    let mut cfg = channel("feishu");
    cfg.timeout = Duration::from_millis(300);
    cfg.max_attempts = 2;
    let mut e = engine_on(
        cfg,
        &dir.path().join("s.json"),
        vec![rule("user-overage", Scope::User, Measure::OverageUsd, 0.01)],
        &rx.url(),
        SECRET,
        &c,
    );
    let a = over_budget().await;
    let t = utc(2026, 10, 20);
    let started = std::time::Instant::now();
    let round = e.evaluate(&snapshot(&a, t), t).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "each attempt timed out"
    );
    assert_eq!((round.delivered, round.undelivered), (0, 2));
    assert_eq!(rx.requests(), 2);
    assert!(rx.accepted().is_empty());
    assert_eq!(c.with_label_values(&["feishu", "retry"]).get(), 1);
    assert_eq!(c.with_label_values(&["feishu", "failure"]).get(), 1);
    // The webhook answers again: the same alerts go out once, as first notices.
    let t = t + chrono::Duration::minutes(1);
    assert_eq!(e.evaluate(&snapshot(&a, t), t).await.unwrap().delivered, 2);
    let t = t + chrono::Duration::minutes(1);
    assert_eq!(e.evaluate(&snapshot(&a, t), t).await.unwrap().due, 0);
    let cards = rx.accepted();
    assert_eq!(cards.len(), 1, "delivered once");
    assert!(blocks(&cards[0]).iter().all(|b| b.contains("🔥 firing")));
    assert_eq!(c.with_label_values(&["feishu", "success"]).get(), 1);
}

#[tokio::test]
async fn a_rejected_signature_fails_at_once_and_the_notice_stays_due() {
    let rx = Receiver::start(Some(SECRET));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.json");
    let rules = vec![rule("user-overage", Scope::User, Measure::OverageUsd, 0.01)];
    let c = counter();
    let a = over_budget().await;
    let t = utc(2026, 10, 20);
    let mut e = engine(&state, rules.clone(), &rx.url(), "not-the-secret", &c);
    let round = e.evaluate(&snapshot(&a, t), t).await.unwrap();
    assert_eq!((round.delivered, round.undelivered), (0, 2));
    assert_eq!(rx.requests(), 1, "code 19021 is not retried");
    assert_eq!(rx.bad_signatures(), 1);
    assert_eq!(c.with_label_values(&["feishu", "failure"]).get(), 1);
    // Fixed secret, restarted: the same alerts go out, as first notices.
    drop(e);
    let mut e = engine(&state, rules, &rx.url(), SECRET, &c);
    let t = t + chrono::Duration::minutes(1);
    assert_eq!(e.evaluate(&snapshot(&a, t), t).await.unwrap().delivered, 2);
    let cards = rx.accepted();
    assert_eq!(cards.len(), 1);
    assert!(blocks(&cards[0]).iter().all(|b| b.contains("🔥 firing")));
}

#[tokio::test]
async fn many_alerts_are_split_into_cards_that_fit() {
    let rx = Receiver::start(None);
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for i in 0..120 {
        let u = format!("user{i:03}");
        lines.push(seat(&u, Some("platform"), "Pro", 1, 20.0));
        lines.push(credits(&u, Some("platform"), 2, 1200.0, 200.0));
    }
    let a = Export::write(lines).allocate("2026-10").await.unwrap();
    assert_reconciles(&a);
    let c = counter();
    let mut e = engine(
        &dir.path().join("s.json"),
        vec![rule("user-overage", Scope::User, Measure::OverageUsd, 0.01)],
        &rx.url(),
        "",
        &c,
    );
    let t = utc(2026, 10, 20);
    let round = e.evaluate(&snapshot(&a, t), t).await.unwrap();
    assert_eq!(round.delivered, 120);
    let cards = rx.accepted();
    assert!(cards.len() >= 2, "split into several cards");
    assert_eq!(round.messages, cards.len());
    let shown: usize = cards.iter().map(|c| blocks(c).len()).sum();
    assert_eq!(shown, 120, "every alert on exactly one card");
    for (i, card) in cards.iter().enumerate() {
        assert!(card.to_string().len() <= 18_000);
        assert!(title(card).ends_with(&format!("({}/{})", i + 1, cards.len())));
    }
}

/// The measure of every subject, computed from the allocation's own roll-ups.
fn oracle(
    a: &Allocation,
    scope: Scope,
    measure: Measure,
    now: DateTime<Utc>,
) -> BTreeMap<String, f64> {
    let plans = PlanTable::default();
    let rec = savings::recommend(a, &plans, &SavingsSettings::default(), now);
    let f = |d: Decimal| d.to_f64().unwrap();
    let mut out = BTreeMap::new();
    match scope {
        Scope::User => {
            // Per seat (account, region, user); the region is in the subject only for a user
            // with seats in two regions of one account.
            let mut regions: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
            for u in &a.units {
                regions
                    .entry((&u.account_id, &u.user_id))
                    .or_default()
                    .insert(&u.region);
            }
            let subject = |account: &str, region: &str, user: &str| {
                if regions[&(account, user)].len() > 1 {
                    format!("{account}/{region}/{user}")
                } else {
                    format!("{account}/{user}")
                }
            };
            let mut per: BTreeMap<String, (Decimal, Decimal, Decimal, String)> = BTreeMap::new();
            for u in a.units.iter().filter(|u| !u.user_id.is_empty()) {
                let e = per
                    .entry(subject(&u.account_id, &u.region, &u.user_id))
                    .or_default();
                e.0 += u.total_usd;
                e.1 += u.overage_usd;
                e.2 += u.credits_used;
                if !u.plan.is_empty() {
                    e.3 = u.plan.clone();
                }
            }
            for (k, (cost, overage, credits, plan)) in per {
                let v = match measure {
                    Measure::CostUsd => Some(cost),
                    Measure::OverageUsd => Some(overage),
                    Measure::CreditsUsed => Some(credits),
                    Measure::CreditsUsedRatio => {
                        plans.by_name(&plan).map(|p| credits / p.included_credits)
                    }
                    // A user's rule is about their Kiro seat: a Q Developer seat's saving
                    // counts in its cost center and the total, not here.
                    Measure::SavingsUsd => Some(
                        rec.recommendations
                            .iter()
                            .filter(|r| r.reason != savings::Reason::QDeveloper)
                            .filter(|r| subject(&r.account_id, &r.region, &r.user_id) == k)
                            .map(|r| r.saving_usd)
                            .sum(),
                    ),
                    _ => None,
                };
                if let Some(v) = v {
                    out.insert(k, f(v));
                }
            }
        }
        Scope::CostCenter => {
            // Month-end forecast of a month that is over: what it cost.
            let factor = a.extrapolation_factor(now);
            let mut forecast: BTreeMap<&str, Decimal> = BTreeMap::new();
            for u in &a.units {
                *forecast.entry(&u.cost_center).or_default() +=
                    u.subscription_usd + u.other_usd + u.overage_usd * factor;
            }
            for (cc, r) in a.cost_centers() {
                let v = match measure {
                    Measure::CostUsd => r.total_usd,
                    Measure::OverageUsd => r.overage_usd,
                    Measure::CreditsUsed => r.credits_used,
                    Measure::ForecastUsd => forecast[cc],
                    _ => continue,
                };
                out.insert(cc.to_owned(), f(v));
            }
        }
        Scope::Account => {
            for (acc, r) in a.accounts() {
                let v = match measure {
                    Measure::CostUsd => r.total_usd,
                    Measure::OverageUsd => r.overage_usd,
                    Measure::CreditsUsed => r.credits_used,
                    _ => continue,
                };
                out.insert(acc.to_owned(), f(v));
            }
        }
        Scope::Total => {
            let t = a.totals();
            let v = match measure {
                // The whole bill, tax included: the one meaning of total cost.
                Measure::CostUsd => a.kiro_total_usd,
                Measure::OverageUsd => t.overage_usd,
                Measure::CreditsUsed => t.credits_used,
                Measure::UntaggedUsers => Decimal::from(a.untagged_users().len()),
                Measure::DuplicateSubscriptions => Decimal::from(a.duplicate_subscriptions().len()),
                Measure::SavingsUsd => rec.total_usd,
                _ => return out,
            };
            out.insert("total".into(), f(v));
        }
    }
    out
}

#[tokio::test]
async fn every_scope_and_measure_fires_exactly_at_its_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = GenSpec::new(80, period("2026-10"));
    spec.seed = 11;
    curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    let a = kiro_cost_exporter::source::LocalSource::new(dir.path(), Default::default())
        .allocate(period("2026-10"))
        .await
        .unwrap();
    assert_reconciles(&a);
    let now = utc(2026, 11, 3);
    let cases = [
        (Scope::User, Measure::CostUsd),
        (Scope::User, Measure::OverageUsd),
        (Scope::User, Measure::CreditsUsed),
        (Scope::User, Measure::CreditsUsedRatio),
        (Scope::User, Measure::SavingsUsd),
        (Scope::CostCenter, Measure::CostUsd),
        (Scope::CostCenter, Measure::OverageUsd),
        (Scope::CostCenter, Measure::CreditsUsed),
        (Scope::CostCenter, Measure::ForecastUsd),
        (Scope::Account, Measure::CostUsd),
        (Scope::Account, Measure::OverageUsd),
        (Scope::Account, Measure::CreditsUsed),
        (Scope::Total, Measure::CostUsd),
        (Scope::Total, Measure::OverageUsd),
        (Scope::Total, Measure::CreditsUsed),
        (Scope::Total, Measure::UntaggedUsers),
        (Scope::Total, Measure::DuplicateSubscriptions),
        (Scope::Total, Measure::SavingsUsd),
    ];
    for (scope, measure) in cases {
        let expected = oracle(&a, scope, measure, now);
        assert!(!expected.is_empty(), "{scope:?} {measure:?}");
        let mut values: Vec<f64> = expected.values().copied().collect();
        values.sort_by(f64::total_cmp);
        // A threshold equal to a subject's value (fires) sits next to one just above it
        // (does not): both sides of the boundary.
        let at = values[values.len() / 2];
        for threshold in [at, at + 1e-6, 0.0] {
            let r = rule("r", scope, measure, threshold);
            let fired: BTreeSet<String> =
                rules::evaluate(&[r], &view(&a, now), &BudgetLimits::default())
                    .into_iter()
                    .map(|f| {
                        assert!(
                            (f.value - expected[&f.subject]).abs() < 1e-6,
                            "{scope:?} {measure:?} {}",
                            f.subject
                        );
                        f.subject
                    })
                    .collect();
            let want: BTreeSet<String> = expected
                .iter()
                .filter(|(_, v)| **v >= threshold - 1e-9)
                .map(|(k, _)| k.clone())
                .collect();
            assert_eq!(fired, want, "{scope:?} {measure:?} at {threshold}");
        }
        assert!(
            rules::evaluate(
                &[rule("r", scope, measure, at + 1e-6)],
                &view(&a, now),
                &BudgetLimits::default()
            )
            .len()
                < expected.len()
                || at + 1e-6 > values[values.len() - 1],
            "{scope:?} {measure:?}: the threshold above the median leaves some out"
        );
    }
}

#[tokio::test]
async fn filters_and_budget_relative_thresholds() {
    let a = over_budget().await;
    let now = utc(2026, 11, 3);
    let eval = |r: Rule, budgets: &BudgetLimits| {
        rules::evaluate(&[r], &view(&a, now), budgets)
            .into_iter()
            .map(|f| f.subject)
            .collect::<Vec<_>>()
    };
    let mut r = rule("cc", Scope::User, Measure::CreditsUsedRatio, 1.0);
    assert_eq!(eval(r.clone(), &BudgetLimits::default()).len(), 2);
    r.cost_centers = vec!["mobile".into()];
    assert_eq!(
        eval(r.clone(), &BudgetLimits::default()),
        [format!("{ACCOUNT}/bob")]
    );
    r.plans = vec!["Power".into()];
    assert!(eval(r, &BudgetLimits::default()).is_empty());
    // mobile costs 40 + 4 = 44: over a 40 budget, under a 50 one; platform has no budget.
    let budget = |mobile: i64| BudgetLimits {
        default_limit_usd: None,
        cost_centers: [("mobile".to_owned(), Decimal::from(mobile))].into(),
    };
    let forecast = Rule {
        relative_to_budget: true,
        ..rule("f", Scope::CostCenter, Measure::ForecastUsd, 1.0)
    };
    assert_eq!(eval(forecast.clone(), &budget(40)), ["mobile"]);
    assert!(eval(forecast.clone(), &budget(50)).is_empty());
    let fallback = BudgetLimits {
        default_limit_usd: Some(Decimal::from(10)),
        cost_centers: BTreeMap::new(),
    };
    assert_eq!(eval(forecast, &fallback), ["mobile", "platform"]);
}

#[test]
fn the_default_rules_are_valid_and_shipped() {
    let defaults = rules::default_rules();
    for r in &defaults {
        r.validate().unwrap();
    }
    let names: BTreeSet<&str> = defaults.iter().map(|r| r.name.as_str()).collect();
    for n in [
        "user-credits-80pct",
        "user-credits-100pct",
        "user-overage",
        "cost-center-forecast-over-budget",
        "untagged-users",
        "duplicate-subscriptions",
    ] {
        assert!(names.contains(n), "{n}");
    }
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/alerts.toml"))
            .unwrap();
    for n in names {
        assert!(
            shipped.contains(&format!("name = \"{n}\"")),
            "{n} in config/alerts.toml"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_notifies_feishu_sends_the_monthly_report_and_survives_a_corrupt_state_file() {
    let rx = Receiver::start(Some(SECRET));
    let now = Utc::now();
    let current = kiro_cost_exporter::period::BillingPeriod::containing(now);
    let mut spec = GenSpec::new(40, current.previous());
    spec.months = 2;
    spec.seed = 5;
    spec.until = Some(now - chrono::Duration::hours(24));
    let mut setup = Setup::generated(&spec);
    let dir = &setup.dir;
    let state = setup.settings.alerts.state_file.clone();
    let garbage = b"{\"version\": 1, \"alerts\": {\"x\": tru";
    std::fs::write(&state, garbage).unwrap();
    let reports = setup.settings.report.out_dir.clone();
    setup.settings.alerts.dashboard_url = "https://grafana.example.com/d/kiro".into();
    setup.settings.alerts.channels = vec![ChannelConfig {
        min_interval: Duration::from_millis(10),
        ..channel("feishu")
    }];
    setup.settings.report.schedule_day = 1;
    let config = setup.write_config("alerts.toml");
    let config = config.to_str().unwrap();
    let url = rx.url();
    let env = [
        ("TEST_FEISHU_URL", url.as_str()),
        ("TEST_FEISHU_SECRET", SECRET),
    ];
    let d = start_with(Path::new(config), &env).await;
    let log = wait_log(&d, "monthly report sent", 60);
    assert!(log.contains("moved aside"), "{log}");
    // The corrupt file is kept, byte for byte, beside the new state.
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage);
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["reports"][0], current.previous().to_string());
    assert!(!saved["alerts"].as_object().unwrap().is_empty());

    let cards = rx.accepted();
    assert!(cards.len() >= 2, "alerts and the report: {cards:?}");
    let report_card = cards
        .iter()
        .find(|c| title(c).starts_with("Kiro cost report"))
        .expect("a report card");
    assert_eq!(
        title(report_card),
        format!("Kiro cost report {}", current.previous())
    );
    let alert_text: String = cards
        .iter()
        .filter(|c| title(c).starts_with("Kiro cost alerts"))
        .flat_map(blocks)
        .collect();
    for rule in ["untagged-users", "duplicate-subscriptions"] {
        assert!(alert_text.contains(rule), "{rule} in {alert_text}");
    }
    assert!(
        reports
            .join(format!("kiro-cost-report-{}.csv", current.previous()))
            .is_file()
    );
    // Counted, once the round has re-published the exposition (just after the log line).
    let sent = |m: &std::collections::BTreeMap<Series, f64>| {
        let l = [("channel", "feishu"), ("result", "success")];
        value(m, "kiro_exporter_notifications_total", &l)
    };
    let m = wait_for(&d, "every card counted", |m| {
        sent(m) == Some(cards.len() as f64)
    })
    .await;
    assert_scrape_reconciles(&m, &current.to_string());
    // Secrets: nowhere in the log, the metrics or check-config.
    let metrics = get(&d.url("/metrics"), false).await.unwrap();
    let check = run(&["check-config", "--config", config]);
    for text in [
        d.log(),
        String::from_utf8_lossy(&metrics.body).into_owned(),
        stdout(&check),
        stderr(&check),
    ] {
        assert!(
            !text.contains(crate::support::feishu::TOKEN),
            "webhook token leaked"
        );
        assert!(!text.contains(SECRET), "signing secret leaked");
    }
    drop(d);

    // A restart: nothing is sent again (alerts within their repeat interval, report done).
    let before = rx.accepted().len();
    let d = Daemon::start(&["--config", config], &env);
    wait_status(&d.url("/readyz"), 200, 60).await;
    wait_log(&d, "alerts evaluated", 30);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rx.accepted().len(), before, "{}", d.log());
    assert!(!d.log().contains("moved aside"));
    assert!(!d.log().contains("monthly report sent"));
}

#[tokio::test]
async fn a_webhook_channel_gets_alertmanagers_payload() {
    let rx = Receiver::start(None);
    let dir = tempfile::tempdir().unwrap();
    let settings = AlertSettings {
        state_file: dir.path().join("s.json"),
        rules: vec![rule("user-overage", Scope::User, Measure::OverageUsd, 0.01)],
        channels: vec![ChannelConfig {
            kind: ChannelKind::Webhook,
            name: "ops".into(),
            url_env: "HOOK".into(),
            ..channel("ops")
        }],
        ..AlertSettings::default()
    };
    let url = rx.url();
    let env = move |k: &str| (k == "HOOK").then(|| url.clone());
    let mut e = alert_engine(settings, BudgetLimits::default(), &env, counter()).unwrap();
    let a = over_budget().await;
    let t = utc(2026, 10, 20);
    assert_eq!(e.evaluate(&snapshot(&a, t), t).await.unwrap().delivered, 2);
    let t2 = t + chrono::Duration::minutes(5);
    assert_eq!(
        e.evaluate(&snapshot(&all_clear().await, t2), t2)
            .await
            .unwrap()
            .delivered,
        2
    );
    let bodies = rx.bodies();
    assert_eq!(bodies.len(), 2);
    let (fired, resolved) = (&bodies[0], &bodies[1]);
    assert_eq!(fired["version"], "4");
    assert_eq!(fired["status"], "firing");
    assert_eq!(fired["receiver"], "ops");
    let alert = &fired["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "user-overage");
    assert_eq!(alert["labels"]["subject"], format!("{ACCOUNT}/alice"));
    assert_eq!(alert["labels"]["billing_period"], "2026-10");
    assert_eq!(alert["annotations"]["value"], "12");
    assert_eq!(alert["startsAt"], t.to_rfc3339());
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["alerts"][0]["endsAt"], t2.to_rfc3339());
    assert_eq!(
        resolved["alerts"][0]["fingerprint"], alert["fingerprint"],
        "the same alert"
    );
    assert!(fired.get("sign").is_none(), "webhooks are not signed");
}

#[tokio::test]
async fn url_and_secret_can_come_from_files_and_a_missing_one_is_named() {
    let rx = Receiver::start(Some(SECRET));
    let dir = tempfile::tempdir().unwrap();
    let (url_file, secret_file) = (dir.path().join("url"), dir.path().join("secret"));
    std::fs::write(&url_file, format!("{}\n", rx.url())).unwrap();
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let with = |cfg: ChannelConfig| AlertSettings {
        state_file: dir.path().join("s.json"),
        rules: vec![rule("user-overage", Scope::User, Measure::OverageUsd, 0.01)],
        channels: vec![cfg],
        ..AlertSettings::default()
    };
    let files = ChannelConfig {
        url_file: Some(url_file),
        secret_file: Some(secret_file),
        ..channel("feishu")
    };
    let nothing = |_: &str| None;
    let mut e = alert_engine(with(files), BudgetLimits::default(), &nothing, counter()).unwrap();
    let a = over_budget().await;
    let t = utc(2026, 10, 20);
    assert_eq!(e.evaluate(&snapshot(&a, t), t).await.unwrap().delivered, 2);
    assert_eq!(rx.accepted().len(), 1);
    assert_eq!(rx.bad_signatures(), 0);
    assert!(!format!("{:?}", e.channels()[0]).contains(crate::support::feishu::TOKEN));

    // Unset: the error names the variable, never a value.
    let err = alert_engine(
        with(channel("feishu")),
        BudgetLimits::default(),
        &nothing,
        counter(),
    )
    .err()
    .unwrap()
    .to_string();
    assert_eq!(
        err,
        "channel feishu: the webhook URL is not set (environment variable TEST_FEISHU_URL is empty or unset)"
    );
    let missing = ChannelConfig {
        url_file: Some(dir.path().join("nope")),
        ..channel("feishu")
    };
    let err = alert_engine(with(missing), BudgetLimits::default(), &nothing, counter())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("channel feishu: cannot read the webhook URL from "),
        "{err}"
    );
}
