//! Savings on generated exports: the total is the sum over users, and re-pricing the month with
//! every recommendation applied lowers its cost by exactly that total.

use std::collections::BTreeMap;

use kiro_cost_exporter::allocation::savings::{self, Reason, SavingsSettings, plan_cost};
use kiro_cost_exporter::allocation::{Plan, PlanTable};
use kiro_cost_exporter::curgen::{self, GenSpec};
use kiro_cost_exporter::source::{LocalSource, Source};
use rust_decimal::Decimal;

use crate::support::*;

#[tokio::test]
async fn applying_every_recommendation_saves_exactly_the_total() {
    let plans = PlanTable::default();
    for seed in [1u64, 2, 3] {
        let a = generated_october(400, seed, Some(0.2)).await;
        // October is over: no projection, credits are what they were.
        let now = utc(2026, 11, 3);
        let s = savings::recommend(&a, &plans, &SavingsSettings::default(), now);
        let sum: Decimal = s.recommendations.iter().map(|r| r.saving_usd).sum();
        assert_eq!(s.total_usd, sum);
        assert!(
            s.recommendations
                .iter()
                .all(|r| r.saving_usd > Decimal::ZERO),
            "only changes that save money"
        );
        for reason in [Reason::Idle, Reason::Downgrade, Reason::Upgrade] {
            assert!(
                s.recommendations.iter().any(|r| r.reason == reason),
                "seed {seed}: no {reason:?} recommendation"
            );
        }
        assert_eq!(
            s.idle_seats,
            s.recommendations
                .iter()
                .filter(|r| r.reason == Reason::Idle)
                .count()
        );

        // Seats as billed: (user, account, region) → (plan, credits).
        type Seat = (String, String, String);
        let mut seats: BTreeMap<Seat, (&Plan, Decimal)> = BTreeMap::new();
        for u in &a.units {
            if let Some(p) = plans.by_name(&u.plan) {
                seats
                    .entry((u.user_id.clone(), u.account_id.clone(), u.region.clone()))
                    .or_insert((p, Decimal::ZERO))
                    .1 += u.credits_used;
            }
        }
        let before: Decimal = seats.values().map(|(p, c)| plan_cost(p, *c)).sum();
        // Apply: cancel idle and duplicate seats (a duplicate's credits go to the user's seat
        // that is kept and has the most credits), move right-sized seats to their new plan.
        let rec = |user: &str, account: &str, region: &str| {
            s.recommendations.iter().find(|r| {
                r.reason != Reason::QDeveloper
                    && r.user_id == user
                    && r.account_id == account
                    && r.region == region
            })
        };
        let mut after_seats: BTreeMap<Seat, (&Plan, Decimal)> = BTreeMap::new();
        let mut moved: BTreeMap<String, Decimal> = BTreeMap::new();
        for ((user, account, region), (plan, credits)) in &seats {
            let seat = (user.clone(), account.clone(), region.clone());
            match rec(user, account, region) {
                Some(r) if r.reason == Reason::Idle => {}
                Some(r) if r.reason == Reason::Duplicate => {
                    *moved.entry(user.clone()).or_default() += credits
                }
                Some(r) => {
                    after_seats.insert(
                        seat,
                        (plans.by_name(&r.recommended_plan).unwrap(), *credits),
                    );
                }
                None => {
                    after_seats.insert(seat, (plan, *credits));
                }
            }
        }
        for (user, credits) in moved {
            let target = after_seats
                .iter_mut()
                .filter(|((u, _, _), _)| *u == user)
                .max_by(|x, y| {
                    x.1.1
                        .cmp(&y.1.1)
                        .then(x.1.0.monthly_usd.cmp(&y.1.0.monthly_usd))
                        .then((&y.0.1, &y.0.2).cmp(&(&x.0.1, &x.0.2)))
                })
                .expect("a duplicate leaves one seat");
            target.1.1 += credits;
        }
        let after: Decimal = after_seats.values().map(|(p, c)| plan_cost(p, *c)).sum();
        // And the Q Developer Pro seats of users who hold a Kiro seat, cancelled at their fee.
        let q_saved: Decimal = a.q_developer.duplicates().map(|q| q.fee_usd).sum();
        assert!(
            q_saved > Decimal::ZERO,
            "seed {seed}: no Q Developer overlap"
        );
        assert_eq!(
            before - after + q_saved,
            s.total_usd,
            "seed {seed}: re-priced month"
        );
        assert!(s.total_usd > Decimal::ZERO);
    }
}

/// `query --format json` is written straight from the view, without a value per user: the
/// same bytes as the view's JSON value printed pretty, on a month with recommendations,
/// several cost centers and an extra member, with the users written in more than one chunk.
#[tokio::test]
async fn the_json_written_is_the_json_value_printed() {
    use kiro_cost_exporter::output;
    use kiro_cost_exporter::snapshot::PeriodView;
    let a = generated_october(300, 5, None).await;
    let now = utc(2026, 11, 3);
    let mut view = PeriodView::build(a, &PlanTable::default(), &SavingsSettings::default(), now);
    assert!(!view.savings.recommendations.is_empty());
    assert!(view.cost_centers.len() > 1);
    let people =
        serde_json::json!({"u1": {"display_name": "Zoë \"Z\" Ñ", "email": "z@example.com"}});
    for extra in [None, Some(people)] {
        let mut value = output::to_json(&view);
        let mut members = serde_json::Map::new();
        if let Some(p) = extra {
            value["people"] = p.clone();
            members.insert("people".into(), p);
        }
        let mut written = Vec::new();
        output::write_json(&view, members, &mut written).unwrap();
        let expected = serde_json::to_string_pretty(&value).unwrap() + "\n";
        // The users are written in chunks of about 64 KiB: here more than one.
        assert!(written.len() > 2 * (64 << 10), "{} bytes", written.len());
        assert_eq!(String::from_utf8(written).unwrap(), expected);
    }
    // Values holding characters JSON escapes, in a unit and in a recommendation.
    let odd = "Zoë \"Z\" \\ \n\t\u{1} \u{7f}";
    view.allocation.units[1].cost_center = odd.into();
    view.savings.recommendations[0].user_id = odd.into();
    let mut written = Vec::new();
    output::write_json(&view, serde_json::Map::new(), &mut written).unwrap();
    let expected = serde_json::to_string_pretty(&output::to_json(&view)).unwrap() + "\n";
    assert_eq!(String::from_utf8(written).unwrap(), expected);
    let escaped = "\"Zoë \\\"Z\\\" \\\\ \\n\\t\\u0001 \u{7f}\"";
    assert_eq!(expected.matches(escaped).count(), 2, "{escaped}");
    // Many recommendations (more than 128 KiB of them), then none.
    let recommendations = view.savings.recommendations.clone();
    for copies in [12, 0] {
        view.savings.recommendations = recommendations
            .iter()
            .cycle()
            .take(recommendations.len() * copies)
            .cloned()
            .collect();
        let mut written = Vec::new();
        output::write_json(&view, serde_json::Map::new(), &mut written).unwrap();
        let value = output::to_json(&view);
        let savings = serde_json::to_string_pretty(&value["savings"]).unwrap();
        assert!(
            copies == 0 || savings.len() > 2 * (64 << 10),
            "{} bytes of savings",
            savings.len()
        );
        let expected = serde_json::to_string_pretty(&value).unwrap() + "\n";
        assert_eq!(
            String::from_utf8(written).unwrap(),
            expected,
            "{copies} copies"
        );
    }
    // The users are written in two halves: an odd and an even number of them, one, and none.
    for n in [3, 2, 1, 0] {
        view.allocation.units.truncate(n);
        let mut written = Vec::new();
        output::write_json(&view, serde_json::Map::new(), &mut written).unwrap();
        let expected = serde_json::to_string_pretty(&output::to_json(&view)).unwrap() + "\n";
        assert_eq!(String::from_utf8(written).unwrap(), expected, "{n} users");
    }
}

/// The allocation of a generated October of `users` users (seed, and noise ratio if not the
/// generator's default), checked to reconcile.
async fn generated_october(
    users: usize,
    seed: u64,
    noise_ratio: Option<f64>,
) -> kiro_cost_exporter::allocation::Allocation {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = GenSpec::new(users, period("2026-10"));
    spec.seed = seed;
    if let Some(n) = noise_ratio {
        spec.noise_ratio = n;
    }
    curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    let a = LocalSource::new(dir.path(), Default::default())
        .allocate(spec.start)
        .await
        .unwrap();
    assert_reconciles(&a);
    a
}

/// The first days of the month running now: every surface says no advice yet and why, and
/// the same bill once its month is closed is decided from all of it.
#[tokio::test]
async fn a_running_month_with_few_days_gives_no_advice_and_says_why() {
    let current = kiro_cost_exporter::period::BillingPeriod::containing(chrono::Utc::now());
    let dir = tempfile::tempdir().unwrap();
    let mut spec = GenSpec::new(200, current);
    spec.seed = 5;
    spec.until = Some(current.start() + chrono::Duration::days(2));
    curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    let cur = dir.path().to_str().unwrap();
    let p = current.to_string();
    let o = run(&["query", "--cur", cur, "--period", &p, "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_json_reconciles(&v);
    let s = &v["savings"];
    assert_eq!(s["recommendations"], serde_json::json!([]), "{s}");
    assert_eq!(s["total_usd"].as_f64(), Some(0.0));
    let b = &s["basis"];
    assert_eq!(
        (&b["withheld"], &b["projected"], &b["min_days"]),
        (&true.into(), &true.into(), &14.into()),
        "{b}"
    );
    assert!(b["days"].as_u64().unwrap() <= 2, "{b}");
    assert_eq!(b["from"], current.start().date_naive().to_string());

    // The daemon: withheld per period, and the landing page says so.
    let d = Daemon::start(&["--cur", cur, "--period", &p], &[]);
    wait_status(&d.url("/readyz"), 200, 60).await;
    let m = scrape(&d).await;
    assert_scrape_reconciles(&m, &p);
    let l = [("billing_period", p.as_str())];
    assert_eq!(value(&m, "kiro_savings_withheld", &l), Some(1.0));
    assert_eq!(value(&m, "kiro_savings_usd", &l), Some(0.0));
    assert!(
        !m.keys()
            .any(|(n, _)| n == "kiro_user_recommended_plan_info"),
        "no recommendation"
    );
    let page = get(&d.url("/"), false).await.unwrap();
    let page = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(
        page.contains(&format!("id=\"savings-basis-{p}\""))
            && page.contains("No advice yet: the data covers"),
        "{page}"
    );
}
