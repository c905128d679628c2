//! History: closed months allocated once, kept in `history.dir`, exported per month and per
//! cost center, read back after a restart without a scan; and each seat's tenure (licence
//! since, months active, months idle in a row and what the idle stretch cost) from them.

use std::collections::BTreeMap;

use kiro_cost_exporter::allocation::PlanTable;
use kiro_cost_exporter::allocation::savings::SavingsSettings;
use kiro_cost_exporter::curgen::{CurLine, GenSpec};
use kiro_cost_exporter::history::Kept;
use kiro_cost_exporter::snapshot::Snapshot;
use kiro_cost_exporter::snapshot::history::{record_of, view_of};

use crate::support::*;

/// Every series of `name` by its `billing_period`.
fn by_period(m: &Scrape, name: &str) -> BTreeMap<String, f64> {
    m.iter()
        .filter(|((n, _), _)| n == name)
        .map(|((_, l), v)| (l["billing_period"].clone(), *v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_months_are_kept_exported_and_read_back_without_a_scan() {
    // Four months; the daemon watches the newest and keeps the three before it.
    let mut spec = GenSpec::new(40, period("2026-08"));
    spec.months = 4;
    spec.seed = 21;
    let mut setup = fixture::Setup::generated(&spec);
    setup.settings.refresh.period = Some(period("2026-11"));
    setup.settings.history.months = 3;
    setup.settings.history.dir = setup.path("history");
    let cur = setup.settings.source.cur.to_str().unwrap().to_owned();
    let d = setup.start("config.toml", FAST).await;
    let m = wait_for(&d, "three months of history", |m| {
        value(m, "kiro_exporter_history_months", &[]) == Some(3.0)
            && by_period(m, "kiro_history_cost_usd").len() == 4
    })
    .await;
    assert_eq!(
        value(&m, "kiro_exporter_history_allocations_total", &[]),
        Some(3.0),
        "each closed month allocated once"
    );
    // Each month's total is what `query` says of it, and its cost centers add up to its users.
    let months = by_period(&m, "kiro_history_cost_usd");
    for p in ["2026-08", "2026-09", "2026-10", "2026-11"] {
        let o = run(&["query", "--cur", &cur, "--period", p, "--format", "json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_json_reconciles(&v);
        let total = v["kiro_total_usd"].as_f64().unwrap();
        assert!(
            (months[p] - total).abs() < 1e-6,
            "{p}: {} vs {total}",
            months[p]
        );
        let centers: f64 = m
            .iter()
            .filter(|((n, l), _)| {
                n == "kiro_history_cost_center_cost_usd" && l["billing_period"] == p
            })
            .map(|(_, v)| v)
            .sum();
        let users: f64 = v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["total_usd"].as_f64().unwrap())
            .sum();
        assert!((centers - users).abs() < 1e-6, "{p}: {centers} vs {users}");
    }
    for p in ["2026-08", "2026-09", "2026-10"] {
        assert!(setup.path("history").join(format!("{p}.json")).is_file());
    }
    check_landing(&d, &months).await;
    drop(d);

    // Restarted: the kept months are read back; nothing closed is allocated again, and only
    // the watched month is scanned.
    let d = setup.start("config.toml", FAST).await;
    let again = wait_for(&d, "history read back", |m| {
        value(m, "kiro_exporter_history_months", &[]) == Some(3.0)
            && by_period(m, "kiro_history_cost_usd").len() == 4
    })
    .await;
    assert_eq!(
        value(&again, "kiro_exporter_history_allocations_total", &[]),
        Some(0.0),
        "{}",
        d.log()
    );
    assert_eq!(by_period(&again, "kiro_history_cost_usd"), months);
    assert_eq!(
        by_period(&again, "kiro_exporter_query_scanned_bytes")
            .keys()
            .collect::<Vec<_>>(),
        ["2026-11"]
    );
    drop(d);

    // A record that cannot be read is moved aside and its month allocated again.
    std::fs::write(setup.path("history").join("2026-09.json"), b"{not json").unwrap();
    let d = setup.start("config.toml", FAST).await;
    let healed = wait_for(&d, "the month allocated again", |m| {
        value(m, "kiro_exporter_history_allocations_total", &[]) == Some(1.0)
            && value(m, "kiro_exporter_history_months", &[]) == Some(3.0)
    })
    .await;
    assert_eq!(by_period(&healed, "kiro_history_cost_usd"), months);
    assert!(d.log().contains("moved aside"), "{}", d.log());
    let aside = std::fs::read_dir(setup.path("history"))
        .unwrap()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("2026-09.json.corrupt-")
        });
    assert!(aside, "the unreadable record is kept aside");
}

/// The landing page draws the months: the whole bill's row has a bar per month, at its total.
async fn check_landing(d: &Daemon, months: &BTreeMap<String, f64>) {
    let page = get(&d.url("/"), false).await.unwrap();
    let page = String::from_utf8(page.body.to_vec()).unwrap();
    let row = page
        .split("<g data-row=\"total\">")
        .nth(1)
        .expect("the cost-by-month chart")
        .split("</g>")
        .next()
        .unwrap()
        .to_owned();
    for (p, total) in months {
        let usd = row
            .split(&format!("data-period=\"{p}\" data-usd=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("{p} in {row}"));
        assert!((usd.parse::<f64>().unwrap() - total).abs() < 1e-6, "{p}");
    }
}

/// One user's seat line and credits in `p`: a Pro seat with `credits` used.
fn seat_month(user: &str, p: &str, credits: f64) -> Vec<CurLine> {
    let mut out = Vec::new();
    let mut s = seat(user, Some("CC-1"), "Pro", 1, 20.0);
    s.period = period(p);
    s.usage_start = at(period(p), 1, 0);
    s.usage_end = period(p).end();
    out.push(s);
    if credits > 0.0 {
        let mut c = credits_line(user, p, credits);
        c.period = period(p);
        out.push(c);
    }
    out
}

fn credits_line(user: &str, p: &str, credits: f64) -> CurLine {
    let mut c = crate::support::credits(user, Some("CC-1"), 10, credits, 0.0);
    c.usage_start = at(period(p), 10, 3);
    c.usage_end = at(period(p), 10, 4);
    c
}

#[tokio::test]
async fn tenure_counts_idle_stretches_of_zero_one_and_three_months() {
    // Four closed months and a running one; three seats:
    // busy: used every month; lapsed: idle in the last closed month only; dormant: used in
    // July, idle from August on (three closed months).
    let months = ["2026-07", "2026-08", "2026-09", "2026-10"];
    let use_of = |user: &str, i: usize| -> f64 {
        match user {
            "busy" => 300.0,
            "lapsed" if i < 3 => 250.0,
            "dormant" if i == 0 => 120.0,
            _ => 0.0,
        }
    };
    let mut lines = Vec::new();
    for (i, p) in months.iter().enumerate() {
        for u in ["busy", "lapsed", "dormant"] {
            lines.extend(seat_month(u, p, use_of(u, i)));
        }
    }
    let e = Export::write(lines);
    let plans = PlanTable::default();
    let settings = SavingsSettings::default();
    let mut records = BTreeMap::new();
    let taken_at = utc(2026, 11, 3);
    for p in &months[..3] {
        let a = e.allocate(p).await.unwrap();
        assert_reconciles(&a);
        let s = Snapshot::of_bill(taken_at, vec![a], &plans, &settings);
        records.insert(period(p), record_of(&s.periods[0], taken_at));
    }
    // The snapshot watches October (closed) as the daemon does early in November.
    let october = e.allocate("2026-10").await.unwrap();
    assert_reconciles(&october);
    let s = Snapshot::of_bill(taken_at, vec![october], &plans, &settings);
    let mut kept = Kept::default();
    for r in records.values() {
        kept.insert(r);
    }
    let window: Vec<_> = records.keys().copied().collect();
    let h = view_of(
        &kept,
        &window,
        &s,
        settings.idle_below_credits,
        settings.idle_grace_days,
    );
    let t = |u: &str| {
        h.tenure
            .get(&(ACCOUNT.to_owned(), "us-east-1".to_owned(), u.to_owned()))
            .unwrap_or_else(|| panic!("{u}: {:?}", h.tenure.keys().collect::<Vec<_>>()))
    };
    let (busy, lapsed, dormant) = (t("busy"), t("lapsed"), t("dormant"));
    for x in [busy, lapsed, dormant] {
        assert_eq!(x.licence_since, period("2026-07"));
    }
    assert_eq!((busy.months_active, busy.months_idle), (4, 0));
    assert_eq!(busy.idle_since, None);
    assert_eq!((lapsed.months_active, lapsed.months_idle), (3, 1));
    assert_eq!(lapsed.idle_since, Some(period("2026-10")));
    assert_eq!(lapsed.idle_cost_usd, dec("20"));
    assert_eq!((dormant.months_active, dormant.months_idle), (1, 3));
    assert_eq!(dormant.idle_since, Some(period("2026-08")));
    assert_eq!(
        dormant.idle_cost_usd,
        dec("60"),
        "three months of a Pro seat"
    );
    let en = kiro_cost_exporter::locale::Locale::En;
    assert_eq!(
        en.idle_stretch(dormant).unwrap(),
        "idle 3 months, $60.00 since 2026-08"
    );
    assert_eq!(en.idle_stretch(busy), None);
    // The monthly report of October: the tenure as of its end, on each seat's rows.
    let (closed, report_tenure) = h.closed_tenure.as_ref().unwrap();
    assert_eq!((*closed, report_tenure), (period("2026-10"), &h.tenure));
    let csv = kiro_cost_exporter::sink::report::csv_with(
        &s.periods[0],
        &BTreeMap::new(),
        en,
        Some(report_tenure),
    )
    .unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let dormant_row = csv.lines().find(|l| l.contains(",dormant,")).unwrap();
    assert!(dormant_row.ends_with(",2026-07,1,3,60"), "{dormant_row}");
    let header = csv.lines().next().unwrap();
    assert!(
        header.ends_with("licence_since,months_active,months_idle,idle_cost_usd"),
        "{header}"
    );
    // The months' totals: the three records and October, oldest first.
    let periods: Vec<String> = h.months.iter().map(|m| m.period.to_string()).collect();
    assert_eq!(periods, months);
    assert_eq!(h.months[3].total_usd, s.periods[0].total_cost_usd);
}

/// A seat's months in the bill as `query` prints them: (billed, credits, cost) per month.
type SeatMonths = BTreeMap<(String, String, String), BTreeMap<String, (bool, f64, f64)>>;

fn seat_months(cur: &str, months: &[String]) -> SeatMonths {
    let mut out = SeatMonths::new();
    for p in months {
        let o = run(&["query", "--cur", cur, "--period", p, "--format", "json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_json_reconciles(&v);
        for u in v["users"].as_array().unwrap() {
            let s = |k: &str| u[k].as_str().unwrap().to_owned();
            if s("user_id").is_empty() {
                continue;
            }
            let m = out
                .entry((s("account_id"), s("region"), s("user_id")))
                .or_default()
                .entry(p.clone())
                .or_default();
            m.0 |= !s("plan").is_empty();
            m.1 += u["credits_used"].as_f64().unwrap();
            m.2 += u["total_usd"].as_f64().unwrap();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monthly_report_carries_tenure_once_history_has_its_months() {
    // Four months to the last closed one, which the daemon watches; history keeps the three
    // before it, one after another, and the report waits for them.
    let now = chrono::Utc::now();
    let last = kiro_cost_exporter::period::BillingPeriod::containing(now).previous();
    let first = last.previous().previous().previous();
    let mut spec = GenSpec::new(60, first);
    spec.months = 4;
    spec.seed = 29;
    let mut setup = fixture::Setup::generated(&spec);
    setup.settings.refresh.period = Some(last);
    setup.settings.history.months = 3;
    setup.settings.report.schedule_day = 1;
    // The report goes out with a card: to a Feishu receiver on loopback.
    setup.settings.alerts.channels = vec![kiro_cost_exporter::notify::ChannelConfig {
        name: "feishu".into(),
        url_env: "TEST_FEISHU_URL".into(),
        min_interval: std::time::Duration::from_millis(10),
        ..Default::default()
    }];
    let rx = crate::support::feishu::Receiver::start(None);
    let url = rx.url();
    let env: Vec<(&str, &str)> = FAST
        .iter()
        .copied()
        .chain([("TEST_FEISHU_URL", url.as_str())])
        .collect();
    let cur = setup.settings.source.cur.to_str().unwrap().to_owned();
    let d = setup.start("config.toml", &env).await;
    wait_log(&d, "monthly report sent", 90);
    assert!(
        d.log().contains("monthly report waits for history"),
        "{}",
        d.log()
    );
    let report = setup.path(&format!("reports/kiro-cost-report-{last}.csv"));
    let csv = std::fs::read_to_string(report).unwrap();
    drop(d);
    // Each seat's tenure as of the last month, from the months as `query` prints them.
    let months: Vec<String> = (0..4)
        .scan(first, |p, _| {
            let this = *p;
            *p = p.next();
            Some(this.to_string())
        })
        .collect();
    let seats = seat_months(&cur, &months);
    let mut r = csv::Reader::from_reader(csv.trim_start_matches('\u{feff}').as_bytes());
    let h = r.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|c| c == n).unwrap();
    let mut checked = 0;
    let mut idle_seen = 0;
    for row in r.records().map(Result::unwrap) {
        let key = (
            row[col("account_id")].to_owned(),
            row[col("region")].to_owned(),
            row[col("user_id")].to_owned(),
        );
        let Some(ms) = seats.get(&key) else { continue };
        let Some(since) = months.iter().find(|p| ms.get(*p).is_some_and(|m| m.0)) else {
            assert_eq!(
                &row[col("licence_since")],
                "",
                "{key:?}: no seat fee, no tenure"
            );
            continue;
        };
        let active = ms.values().filter(|m| m.0 && m.1 >= 1.0).count();
        let (mut idle, mut cost) = (0, 0.0);
        for p in months.iter().rev() {
            match ms.get(p) {
                Some(&(true, credits, c)) if credits < 1.0 => {
                    idle += 1;
                    cost += c;
                }
                _ => break,
            }
        }
        assert_eq!(&row[col("licence_since")], since, "{key:?}");
        assert_eq!(
            row[col("months_active")].parse::<usize>().unwrap(),
            active,
            "{key:?}"
        );
        assert_eq!(
            row[col("months_idle")].parse::<usize>().unwrap(),
            idle,
            "{key:?}"
        );
        let billed: f64 = row[col("idle_cost_usd")].parse().unwrap();
        assert!((billed - cost).abs() < 1e-6, "{key:?}: {billed} vs {cost}");
        checked += 1;
        idle_seen += usize::from(idle > 0);
    }
    assert!(checked > 40, "{checked} seats checked");
    assert!(idle_seen > 0, "an idle stretch among them");
}
