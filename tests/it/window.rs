//! Which use decides a running month's seats: the activity report's trailing 30 days across
//! the month boundary, else the last closed month while the running one has too few days
//! (from the snapshot's own view of it, or from history's record once it is not watched).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{Duration, NaiveDate};
use kiro_cost_exporter::allocation::savings::{
    Prior, Reason, Recommendation, SavingsSettings, Window, cheapest,
};
use kiro_cost_exporter::allocation::user_id::join_key;
use kiro_cost_exporter::allocation::{Allocation, PlanTable};
use kiro_cost_exporter::curgen::{self, GenSpec};
use kiro_cost_exporter::history::Kept;
use kiro_cost_exporter::snapshot::history::record_of;
use kiro_cost_exporter::snapshot::{PeriodView, SnapshotBuilder};
use kiro_cost_exporter::source::activity::ActivityReader;
use kiro_cost_exporter::source::{LocalSource, Source};
use rust_decimal::Decimal;

use crate::support::*;

type Seat = (String, String, String);

/// October whole and November's first two days, with the activity report, as of 09:00 on
/// 3 November.
async fn two_months(dir: &Path) -> (Allocation, Allocation, chrono::DateTime<chrono::Utc>) {
    let mut spec = GenSpec::new(300, period("2026-10"));
    spec.months = 2;
    spec.seed = 17;
    spec.activity = true;
    let now = utc(2026, 11, 3) + Duration::hours(9);
    spec.until = Some(now);
    curgen::write_export(&spec, dir, |_| {}).unwrap();
    let source = LocalSource::new(dir, Default::default());
    let october = source.allocate(period("2026-10")).await.unwrap();
    let november = source.allocate(period("2026-11")).await.unwrap();
    assert_reconciles(&october);
    assert_reconciles(&november);
    (october, november, now)
}

/// Credits per seat in the report's rows from `from` to `to`, read straight from its files,
/// ids by their join key.
fn report_credits(root: &Path, from: NaiveDate, to: NaiveDate) -> BTreeMap<Seat, Decimal> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.join("AWSLogs")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let parts: Vec<&str> = rel.split('/').collect();
            let (account, region) = (parts[1].to_owned(), parts[4].to_owned());
            let mut r = csv::Reader::from_path(&path).unwrap();
            let h = r.headers().unwrap().clone();
            let col = |n: &str| h.iter().position(|c| c == n).unwrap();
            let (date, user, credits) = (col("Date"), col("UserId"), col("Credits_Used"));
            for row in r.records().map(Result::unwrap) {
                let day: NaiveDate = row[date].parse().unwrap();
                if day < from || day > to {
                    continue;
                }
                let key = (account.clone(), region.clone(), join_key(&row[user]));
                *out.entry(key).or_default() += row[credits].parse::<Decimal>().unwrap();
            }
        }
    }
    out
}

/// Each seat's credits in `view` (the larger of the bill's and the report's), by join key.
fn seat_credits(view: &PeriodView) -> BTreeMap<Seat, (String, Decimal)> {
    view.seats()
        .iter()
        .map(|s| {
            let id = &s.id;
            let key = (
                id.account_id.clone(),
                id.region.clone(),
                join_key(&id.user_id),
            );
            (key, (s.plan.clone(), s.credits_used))
        })
        .collect()
}

fn key(r: &Recommendation) -> Seat {
    (r.account_id.clone(), r.region.clone(), join_key(&r.user_id))
}

/// Users with one Kiro seat in `view` (their recommendations involve no credits moved).
fn single_seat_users(view: &PeriodView) -> BTreeSet<String> {
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for s in view.seats() {
        *n.entry(s.id.user_id.as_str()).or_default() += 1;
    }
    n.into_iter()
        .filter(|&(_, c)| c == 1)
        .map(|(u, _)| u.to_owned())
        .collect()
}

/// Checks every single-seat Kiro recommendation of `view` against the credits it should have
/// been decided from (`window_credits`, the month's own at least) and returns how many.
fn check_decisions(
    view: &PeriodView,
    window: Window,
    window_credits: impl Fn(&Seat) -> Option<Decimal>,
) -> usize {
    let plans = &view.plans;
    let settings = SavingsSettings::default();
    let so_far = seat_credits(view);
    let single = single_seat_users(view);
    let mut checked = 0;
    for r in &view.savings.recommendations {
        if r.reason == Reason::QDeveloper || !single.contains(&r.user_id) {
            continue;
        }
        let k = key(r);
        let (plan, month) = so_far[&k].clone();
        let w = window_credits(&k).expect("only seats of the window are decided");
        let credits = w.max(month);
        assert_eq!(r.window, window, "{r:?}");
        assert_eq!(r.projected_credits, credits.round_dp(6), "{r:?}");
        let plan = plans.by_name(&plan).unwrap();
        match r.reason {
            Reason::Idle => assert!(credits < settings.idle_below_credits, "{r:?}"),
            _ => assert_eq!(cheapest(plans, credits, plan).name, r.recommended_plan),
        }
        checked += 1;
    }
    checked
}

/// Checks that the seats billed in `oct` (the month before) are decided in `nov` from
/// `window`'s credits (none where `credits` has no entry) and that more than ten were.
fn check_window_decisions(
    oct: &PeriodView,
    nov: &PeriodView,
    window: Window,
    credits: &BTreeMap<Seat, Decimal>,
) {
    let billed_before: BTreeSet<Seat> = seat_credits(oct)
        .into_iter()
        .filter(|(_, (plan, _))| !plan.is_empty())
        .map(|(k, _)| k)
        .collect();
    let n = check_decisions(nov, window, |k| {
        billed_before
            .contains(k)
            .then(|| credits.get(k).copied().unwrap_or_default())
    });
    assert!(n > 10, "{n} decisions checked");
}

#[tokio::test]
async fn the_trailing_window_crosses_the_month_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let (october, november, now) = two_months(dir.path()).await;
    let root = dir.path().join("activity");
    let builder = SnapshotBuilder::new(PlanTable::default(), SavingsSettings::default())
        .with_activity(Some(ActivityReader::new(&root)));
    let built = builder.build(now, vec![october, november]).await;
    let [oct, nov] = &built.snapshot.periods[..] else {
        panic!("two periods")
    };
    // The report's newest day is 2 November: the window is the 30 days to it.
    let (from, to) = (
        NaiveDate::from_ymd_opt(2026, 10, 4).unwrap(),
        NaiveDate::from_ymd_opt(2026, 11, 2).unwrap(),
    );
    let window = Window::Trailing { from, to };
    let b = &nov.savings.basis;
    assert_eq!((b.window, b.withheld, b.days), (window, false, 2), "{b:?}");
    assert_eq!(
        oct.savings.basis.window,
        Window::Month,
        "a closed month is itself"
    );
    // Seats billed in October are decided from what the report shows for the 30 days (and
    // never from fewer credits than November shows already); seats new in November are not.
    let report = report_credits(&root, from, to);
    check_window_decisions(oct, nov, window, &report);
    let reasons: BTreeSet<Reason> = nov
        .savings
        .recommendations
        .iter()
        .map(|r| r.reason)
        .collect();
    assert!(reasons.contains(&Reason::Idle), "{reasons:?}");
    assert!(
        reasons.contains(&Reason::Downgrade) || reasons.contains(&Reason::Upgrade),
        "{reasons:?}"
    );
    // No advice comes from November's two days projected to a month.
    let projected = kiro_cost_exporter::allocation::savings::recommend(
        &nov.allocation,
        &nov.plans,
        &SavingsSettings {
            min_days: 0,
            ..SavingsSettings::default()
        },
        now,
    );
    let trailing: BTreeSet<(Seat, Reason)> = nov
        .savings
        .recommendations
        .iter()
        .map(|r| (key(r), r.reason))
        .collect();
    assert!(
        projected
            .recommendations
            .iter()
            .any(|r| !trailing.contains(&(key(r), r.reason))),
        "two days projected would have advised otherwise"
    );
    // `query --format json`'s shape: the basis and each recommendation name the window.
    let v = kiro_cost_exporter::output::to_json(nov);
    assert_json_reconciles(&v);
    let w = serde_json::json!({"kind": "trailing_days", "from": "2026-10-04", "to": "2026-11-02"});
    assert_eq!(v["savings"]["basis"]["window"], w);
    assert!(
        v["savings"]["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["window"] == w)
    );
    // A report that stopped is no window of now.
    let reader = ActivityReader::new(&root);
    assert!(reader.read_trailing(now).await.is_some());
    assert!(reader.read_trailing(utc(2026, 11, 20)).await.is_none());
}

#[tokio::test]
async fn without_the_report_the_last_closed_month_decides_until_min_days() {
    let dir = tempfile::tempdir().unwrap();
    let (october, november, now) = two_months(dir.path()).await;
    let builder = SnapshotBuilder::new(PlanTable::default(), SavingsSettings::default());
    let built = builder
        .build(now, vec![october.clone(), november.clone()])
        .await;
    let [oct, nov] = &built.snapshot.periods[..] else {
        panic!("two periods")
    };
    let window = Window::LastClosed(period("2026-10"));
    assert_eq!(nov.savings.basis.window, window);
    assert!(!nov.savings.basis.withheld);
    let before = seat_credits(oct);
    let n = check_decisions(nov, window, |k| {
        before
            .get(k)
            .filter(|(plan, _)| !plan.is_empty())
            .map(|(_, c)| *c)
    });
    assert!(n > 10, "{n} decisions checked");

    // Once October is no longer watched, history's record of it decides the same.
    let mut kept = Kept::default();
    kept.insert(&record_of(oct, now));
    let last = Prior {
        window,
        credits: kept.billed_credits(period("2026-10")).unwrap(),
    };
    let alone = builder
        .build_with(now, vec![november.clone()], Some(last))
        .await;
    assert_eq!(alone.snapshot.periods[0].savings, nov.savings);
    // Without either, two days decide nothing.
    let nothing = builder.build(now, vec![november]).await;
    let s = &nothing.snapshot.periods[0].savings;
    assert!(s.basis.withheld && s.recommendations.is_empty(), "{s:?}");
}

/// Each seat's credits from `from` on in `before` by the SQL template's daily query, plus its
/// credits in `running` so far: the bill's trailing window, derived apart from the scan.
async fn bill_window_credits(
    dir: &Path,
    before: &str,
    running: &Allocation,
    from: NaiveDate,
) -> BTreeMap<Seat, Decimal> {
    let sql = LocalSource::new(dir, Default::default())
        .daily_credits_by_sql(period(before))
        .await
        .unwrap();
    let mut out: BTreeMap<Seat, Decimal> = BTreeMap::new();
    for ((a, r, u), days) in &sql.seats {
        let c: Decimal = days
            .iter()
            .filter(|(d, _)| *d >= from)
            .map(|(_, c)| *c)
            .sum();
        *out.entry((a.clone(), r.clone(), join_key(u))).or_default() += c;
    }
    for u in &running.units {
        let k = (u.account_id.clone(), u.region.clone(), join_key(&u.user_id));
        *out.entry(k).or_default() += u.credits_used;
    }
    out
}

#[tokio::test]
async fn without_the_report_the_bills_trailing_window_decides() {
    let dir = tempfile::tempdir().unwrap();
    let (mut october, november, now) = two_months(dir.path()).await;
    let source = LocalSource::new(dir.path(), Default::default());
    let daily = source.daily_credits(period("2026-10")).await.unwrap();
    assert_eq!(daily.period, period("2026-10"));
    october.daily_credits = Some(daily.clone());
    let builder = SnapshotBuilder::new(PlanTable::default(), SavingsSettings::default());
    let built = builder
        .build(now, vec![october.clone(), november.clone()])
        .await;
    let [oct, nov] = &built.snapshot.periods[..] else {
        panic!("two periods")
    };
    // The window ends on November's newest day in the bill and reaches 29 days back, into
    // October.
    let to = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
    assert_eq!(nov.savings.basis.to, Some(to), "the last whole day");
    let from = to - chrono::Days::new(29);
    assert_eq!(from.format("%Y-%m").to_string(), "2026-10");
    let window = Window::BillTrailing { from, to };
    let b = &nov.savings.basis;
    assert_eq!((b.window, b.withheld), (window, false), "{b:?}");
    // Seats billed in October are decided from their credits in the 30 days (October's by
    // usage day, as the SQL template sums them, and November's so far); seats new in November
    // are not decided at all.
    let by_bill = bill_window_credits(dir.path(), "2026-10", &november, from).await;
    check_window_decisions(oct, nov, window, &by_bill);
    let idle = nov
        .savings
        .recommendations
        .iter()
        .filter(|r| r.reason == Reason::Idle)
        .count();
    assert!(idle > 0, "{:?}", nov.savings.recommendations);
    // It differs from what October alone would decide: the window is another month of use.
    let last_month = builder
        .build(
            now,
            vec![october.clone(), november.clone()]
                .into_iter()
                .map(|mut a| {
                    a.daily_credits = None;
                    a
                })
                .collect(),
        )
        .await;
    assert_eq!(
        last_month.snapshot.periods[1].savings.basis.window,
        Window::LastClosed(period("2026-10"))
    );
    let v = kiro_cost_exporter::output::to_json(nov);
    assert_json_reconciles(&v);
    let w = serde_json::json!({"kind": "bill_trailing_days", "from": from.to_string(), "to": to.to_string()});
    assert_eq!(v["savings"]["basis"]["window"], w);
    assert!(
        v["savings"]["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["window"] == w || r["reason"] == "q_developer"),
        "{}",
        v["savings"]
    );
    // A bill that has not passed October's end (no November credits yet, none on 31 October):
    // October's last days may be missing, and seats would look idle for them, so there is no
    // bill window and October decides.
    let mut early = november.clone();
    early.data_as_of = None;
    let mut lagging = october.clone();
    lagging.data_as_of = Some(utc(2026, 10, 30));
    let built = builder.build(now, vec![lagging, early]).await;
    assert_eq!(
        built.snapshot.periods[1].savings.basis.window,
        Window::LastClosed(period("2026-10"))
    );
    // A closed month is decided from itself, whatever the month before carries.
    let later = builder
        .build(utc(2026, 12, 5), vec![october, november])
        .await;
    assert_eq!(
        later.snapshot.periods[1].savings.basis.window,
        Window::Month
    );
}

/// 120 users' last month and this one to now (with the activity report when `activity`): the
/// export's folder, this month and now.
fn to_now(
    seed: u64,
    activity: bool,
) -> (
    tempfile::TempDir,
    kiro_cost_exporter::period::BillingPeriod,
    chrono::DateTime<chrono::Utc>,
) {
    let now = chrono::Utc::now();
    let current = kiro_cost_exporter::period::BillingPeriod::containing(now);
    let dir = tempfile::tempdir().unwrap();
    let mut spec = GenSpec::new(120, current.previous());
    spec.months = 2;
    spec.seed = seed;
    spec.activity = activity;
    spec.until = Some(now);
    curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    (dir, current, now)
}

/// `query` of the running month and the daemon watching it and the month before, without an
/// activity report: the bill's trailing window decides, from the month before's credits by
/// usage day. Today's date decides what can be checked: the window needs a running month of
/// fewer than 30 whole days, and the daemon watches the month before until the 15th.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_the_daemon_decide_a_running_month_from_the_bill() {
    use chrono::Datelike as _;
    let (dir, current, now) = to_now(29, false);
    let (cur, p) = (dir.path().to_str().unwrap(), current.to_string());
    let out = run(&["query", "--cur", cur, "--period", &p, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_json_reconciles(&v);
    let window = &v["savings"]["basis"]["window"];
    if now.day() > 30 {
        eprintln!("the 31st: the running month covers the window itself ({window})");
        return;
    }
    assert_eq!(window["kind"], "bill_trailing_days", "{window}");
    let from: NaiveDate = window["from"].as_str().unwrap().parse().unwrap();
    let to: NaiveDate = window["to"].as_str().unwrap().parse().unwrap();
    assert_eq!(to - from, Duration::days(29));
    assert!(
        from < current.start().date_naive() && to < now.date_naive(),
        "{window}"
    );
    assert!(
        v["savings"]["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["window"] == *window),
        "{}",
        v["savings"]
    );
    if now.day() > 15 {
        eprintln!("the month before is no longer watched: the daemon is not checked");
        return;
    }
    let d = Daemon::start(&["--cur", cur], FAST);
    let l = [("billing_period", p.as_str())];
    let m = wait_for(&d, "the running month's advice", |m| {
        value(m, "kiro_savings_withheld", &l) == Some(0.0)
    })
    .await;
    assert_scrape_reconciles(&m, &p);
    let page = get(&d.url("/"), false).await.unwrap();
    let page = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(
        page.contains("data-window=\"bill_trailing_days\"")
            && page.contains(&format!(
                "Decided from 30 days of use, {from} to {to} (the bill"
            ))
            && !d.log().contains("credits per day not read"),
        "{page}"
    );
}

/// The daemon watching only the running month: its first refreshes have nothing to decide
/// two days from; once history holds the month before, the report's trailing window decides,
/// and the landing page and `/metrics` say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_decides_the_running_month_from_history_and_the_report() {
    let (dir, current, _) = to_now(23, true);
    let p = current.to_string();
    let activity = dir.path().join("activity");
    let d = Daemon::start(
        &[
            "--cur",
            dir.path().to_str().unwrap(),
            "--period",
            &p,
            "--activity",
            activity.to_str().unwrap(),
        ],
        FAST,
    );
    let l = [("billing_period", p.as_str())];
    let m = wait_for(&d, "advice from the trailing window", |m| {
        value(m, "kiro_exporter_history_months", &[]) == Some(1.0)
            && value(m, "kiro_savings_withheld", &l) == Some(0.0)
    })
    .await;
    assert_scrape_reconciles(&m, &p);
    assert!(value(&m, "kiro_savings_usd", &l).unwrap() > 0.0);
    // The refresh after history took the month before decides from the window.
    let mut page = String::new();
    for _ in 0..30 {
        let got = get(&d.url("/"), false).await.unwrap();
        page = String::from_utf8(got.body.to_vec()).unwrap();
        if page.contains("data-window=\"trailing_days\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert!(
        page.contains(&format!("id=\"savings-basis-{p}\""))
            && page.contains("data-window=\"trailing_days\"")
            && page.contains("Decided from 30 days of use, "),
        "{page}"
    );
}

/// A seat subscribed late in the month before (billed pro rata) has days, not a month, of use
/// there: it is not decided from that month, by the snapshot or by history.
#[tokio::test]
async fn a_seat_subscribed_late_last_month_is_not_decided_from_it() {
    let (oct, nov) = (period("2026-10"), period("2026-11"));
    let in_month = |mut l: kiro_cost_exporter::curgen::CurLine, p| {
        l.period = p;
        l.usage_start = at(p, 1, 0);
        l.usage_end = p.end();
        l
    };
    let mut lines = Vec::new();
    // `whole` held Pro all October, `late` from the 25th (a quarter of the fee); neither used
    // anything, in October or in November's first two days.
    lines.push(in_month(seat("whole", Some("CC"), "Pro", 1, 20.0), oct));
    let mut late = in_month(seat("late", Some("CC"), "Pro", 25, 5.0), oct);
    late.usage_start = at(oct, 25, 0);
    late.usage_amount = 0.25;
    lines.push(late);
    for u in ["whole", "late"] {
        lines.push(in_month(seat(u, Some("CC"), "Pro", 1, 20.0), nov));
    }
    let e = Export::write(lines);
    let (a_oct, a_nov) = (
        e.allocate("2026-10").await.unwrap(),
        e.allocate("2026-11").await.unwrap(),
    );
    assert_reconciles(&a_oct);
    assert_reconciles(&a_nov);
    let now = utc(2026, 11, 3);
    let builder = SnapshotBuilder::new(PlanTable::default(), SavingsSettings::default());
    let built = builder.build(now, vec![a_oct, a_nov.clone()]).await;
    let [october, november] = &built.snapshot.periods[..] else {
        panic!("two periods")
    };
    let late_key = (
        ACCOUNT.to_owned(),
        "us-east-1".to_owned(),
        "late".to_owned(),
    );
    assert_eq!(
        october.part_month_seats(),
        BTreeSet::from([late_key.clone()]).into_iter().collect()
    );
    let decided = |s: &kiro_cost_exporter::allocation::savings::Savings| {
        s.recommendations
            .iter()
            .map(|r| (r.user_id.clone(), r.reason, r.window))
            .collect::<Vec<_>>()
    };
    let window = Window::LastClosed(oct);
    let expected = vec![("whole".to_owned(), Reason::Idle, window)];
    assert_eq!(decided(&november.savings), expected);
    // History's record says the same once October is no longer watched.
    let mut kept = Kept::default();
    let record = record_of(october, now);
    assert!(record.seats.iter().any(|s| s.part_month));
    kept.insert(&record);
    let credits = kept.billed_credits(oct).unwrap();
    assert!(!credits.contains_key(&late_key));
    let last = Prior { window, credits };
    let alone = builder.build_with(now, vec![a_nov], Some(last)).await;
    assert_eq!(decided(&alone.snapshot.periods[0].savings), expected);
}
