//! One truth per number: one export with an activity report and a people directory (two ids
//! that share an e-mail, one seat used only inside its plan) through `query --format json`,
//! `/metrics`, the landing page, the monthly report's CSV and the alert and report cards. They
//! agree on the duplicate subscriptions, the idle seats, the savings and the names, and so does
//! the report sent after the month left the snapshot.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::Utc;
use kiro_cost_exporter::curgen::CurLine;
use kiro_cost_exporter::period::BillingPeriod;
use rust_decimal::Decimal;
use serde_json::Value;

use kiro_cost_exporter::notify::ChannelConfig;
use kiro_cost_exporter::sink::alerts::rules::{Measure, Rule, Scope};

use crate::support::feishu::{Receiver, blocks, title};
use crate::support::fixture::{Setup, start_with};
use crate::support::*;

const SECRET: &str = "kiro-consistency-secret";
const HEADER: &str = "Date,UserId,Client_Type,Chat_Conversations,Credits_Used,Overage_Cap,Overage_Credits_Used,Overage_Enabled,ProfileId,Subscription_Tier,Total_Messages,New_User,User_Email";

/// `l` (a line of the fixtures' October 2026) moved to the same days of `to`.
fn moved(l: CurLine, to: BillingPeriod) -> CurLine {
    let from = period("2026-10");
    let shift = to.start() - from.start();
    CurLine {
        period: to,
        usage_start: l.usage_start + shift,
        usage_end: if l.usage_end == from.end() {
            to.end()
        } else {
            l.usage_end + shift
        },
        ..l
    }
}

/// The month the report covers: alice uses Kiro and the bill shows it; bob-a and bob-b are one
/// person (one e-mail) with two ids; carol uses Kiro only inside her plan, which the bill does
/// not show; dave does not use his seat at all.
fn month(p: BillingPeriod) -> Vec<CurLine> {
    [
        seat("alice", Some("platform"), "Pro", 1, 20.0),
        credits("alice", Some("platform"), 3, 1500.0, 500.0),
        seat("bob-a", Some("platform"), "Pro", 1, 20.0),
        credits("bob-a", Some("platform"), 4, 200.0, 0.0),
        seat("bob-b", Some("data"), "Pro", 1, 20.0),
        credits("bob-b", Some("data"), 5, 300.0, 0.0),
        seat("carol", Some("data"), "Pro", 1, 20.0),
        seat("dave", Some("data"), "Pro", 1, 20.0),
    ]
    .into_iter()
    .map(|l| moved(l, p))
    .collect()
}

/// The activity report of `p`: what everyone but dave used, carol's only here.
fn write_activity(root: &Path, p: BillingPeriod) {
    let (y, m) = (p.start().format("%Y"), p.start().format("%m"));
    let rows = [
        (3, "alice", "1500", "alice@example.com"),
        (4, "bob-a", "200", "bob@example.com"),
        (5, "bob-b", "300", "BOB@example.com"),
        (6, "carol", "30", "carol@example.com"),
    ];
    for (day, user, credits, email) in rows {
        let dir = root.join(format!(
            "AWSLogs/{ACCOUNT}/KiroLogs/user_report/us-east-1/{y}/{m}/{day:02}/00"
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!(
                "KIRO_IDE_{ACCOUNT}_user_report_{y}{m}{day:02}0000.csv"
            )),
            format!(
                "{HEADER}\n{y}-{m}-{day:02},{user},KIRO_IDE,1,{credits},,0,true,p1,PRO,3,false,{email}\n"
            ),
        )
        .unwrap();
    }
}

const PEOPLE: &str = "user_id,user_name,display_name,email\n\
alice,alice,Alice Liddell,alice@example.com\n\
bob-a,bob,Bob Marley,bob@example.com\n\
bob-b,bob.m,Bob Marley,bob@example.com\n\
carol,carol,Carol Danvers,carol@example.com\n\
dave,dave,Dave Bowman,dave@example.com\n\
erin,erin,Erin Brockovich,erin@example.com\n";

/// Rules that show what the test compares: the duplicates, the savings, every seat by name.
fn rules() -> Vec<Rule> {
    vec![
        Rule::new(
            "duplicates",
            Scope::Total,
            Measure::DuplicateSubscriptions,
            1.0,
        ),
        Rule::new("savings", Scope::Total, Measure::SavingsUsd, 0.01),
        Rule::new("every-seat", Scope::User, Measure::CostUsd, 0.0),
    ]
}

/// Settings watching `watched`, with the activity report, the directory, alerts and the
/// monthly report (due from the 1st), their state and reports under `name`.
fn watching(setup: &mut Setup, name: &str, watched: BillingPeriod) -> std::path::PathBuf {
    let s = &mut setup.settings;
    s.refresh.period = Some(watched);
    s.activity.path = setup.dir.path().join("activity").display().to_string();
    s.identity.directory = setup.dir.path().join("people.csv").display().to_string();
    s.alerts.state_file = setup.dir.path().join(format!("{name}-state.json"));
    s.alerts.rules = rules();
    s.alerts.channels = vec![ChannelConfig {
        name: "feishu".into(),
        url_env: "TEST_FEISHU_URL".into(),
        secret_env: "TEST_FEISHU_SECRET".into(),
        min_interval: std::time::Duration::from_millis(10),
        ..ChannelConfig::default()
    }];
    s.report.out_dir = setup.dir.path().join(name);
    s.report.schedule_day = 1;
    setup.write_config(&format!("{name}.toml"))
}

/// Runs the daemon on `config` until its report and alerts went out: the cards it sent, the
/// scrape, the landing page and the report CSV.
async fn run_daemon(
    config: &Path,
    report: &Path,
) -> (
    Vec<Value>,
    std::collections::BTreeMap<Series, f64>,
    String,
    Vec<u8>,
) {
    let rx = Receiver::start(Some(SECRET));
    let url = rx.url();
    let env = [
        ("TEST_FEISHU_URL", url.as_str()),
        ("TEST_FEISHU_SECRET", SECRET),
    ];
    let d = start_with(config, &env).await;
    wait_log(&d, "monthly report sent", 60);
    wait_log(&d, "alerts evaluated", 30);
    let m = scrape(&d).await;
    let landing = get(&d.url("/"), false).await.unwrap();
    let landing = String::from_utf8(landing.body.to_vec()).unwrap();
    let csv = std::fs::read(report).unwrap();
    let cards = rx.accepted();
    drop(d);
    (cards, m, landing, csv)
}

/// The report CSV without its four tenure columns, and those columns per row (joined by
/// commas).
fn without_tenure(bytes: &[u8]) -> (String, Vec<String>) {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let (mut rest, mut tenure) = (String::new(), Vec::new());
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let (head, tail) = fields.split_at(fields.len() - 4);
        rest.push_str(&head.join(","));
        rest.push('\n');
        tenure.push(tail.join(","));
    }
    (rest, tenure)
}

/// The report CSV's rows as (user, column) lookups.
fn csv_rows(bytes: &[u8]) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut r = csv::Reader::from_reader(bytes.strip_prefix("\u{feff}".as_bytes()).unwrap());
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    r.records()
        .map(|rec| {
            header
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(str::to_owned))
                .collect()
        })
        .collect()
}

/// The value of the attribute `attr` of the element with `id` on the landing page.
fn attribute(page: &str, id: &str, attr: &str) -> String {
    let at = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("{id} on the page"));
    let tag_end = at + page[at..].find('>').unwrap();
    let tag = &page[at..tag_end];
    let start = tag
        .find(&format!("{attr}=\""))
        .unwrap_or_else(|| panic!("{attr} in {tag}"))
        + attr.len()
        + 2;
    tag[start..start + tag[start..].find('"').unwrap()].to_owned()
}

/// What `query --format json` says: the reference every sink is held to.
struct Reference {
    period: BillingPeriod,
    json: Value,
    duplicates: Vec<String>,
    idle: Vec<String>,
    savings: Decimal,
}

/// Step 1: `query`, with the same config as the daemon.
fn query(config: &Path, p: BillingPeriod) -> Reference {
    let o = run(&[
        "query",
        "--config",
        config.to_str().unwrap(),
        "--period",
        &p.to_string(),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_json_reconciles(&json);
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let duplicates = strings(&json["duplicate_subscriptions"]);
    assert_eq!(duplicates, ["bob-a", "bob-b"], "one e-mail, two ids");
    let idle: Vec<String> = json["savings"]["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["reason"] == "idle")
        .map(|r| r["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(idle, ["dave"], "carol uses her seat inside the plan");
    assert_eq!(json["savings"]["idle_seats"], 1);
    let savings: Decimal = json["savings"]["total_usd"].to_string().parse().unwrap();
    assert!(savings > Decimal::ZERO);
    assert_eq!(json["people"]["alice"]["display_name"], "Alice Liddell");
    assert_eq!(json["people"]["bob-b"]["user_name"], "bob.m");
    Reference {
        period: p,
        json,
        duplicates,
        idle,
        savings,
    }
}

/// Step 2: `/metrics` counts the same duplicates, idle seats and savings, and names people.
fn check_metrics(r: &Reference, m: &std::collections::BTreeMap<Series, f64>) {
    let ps = r.period.to_string();
    assert_scrape_reconciles(m, &ps);
    let bp = [("billing_period", ps.as_str())];
    assert_eq!(
        value(m, "kiro_duplicate_subscriptions", &bp),
        Some(r.duplicates.len() as f64)
    );
    assert_eq!(value(m, "kiro_idle_seats", &bp), Some(1.0));
    assert_eq!(
        value(m, "kiro_savings_usd", &bp),
        Some(r.json["savings"]["total_usd"].as_f64().unwrap())
    );
    let idle: Vec<&str> = m
        .iter()
        .filter(|((n, l), _)| n == "kiro_user_recommended_plan_info" && l["reason"] == "idle")
        .map(|((_, l), _)| l["user_id"].as_str())
        .collect();
    assert_eq!(idle, r.idle);
    let named: BTreeSet<(&str, &str)> = m
        .keys()
        .filter(|(n, _)| n == "kiro_user_info")
        .map(|(_, l)| (l["user_id"].as_str(), l["display_name"].as_str()))
        .collect();
    assert!(named.contains(&("alice", "Alice Liddell")), "{named:?}");
    assert!(named.contains(&("carol", "Carol Danvers")), "{named:?}");
}

/// Step 3: the landing page shows the same duplicates, savings and idle seat, by name.
fn check_landing(r: &Reference, page: &str) {
    let p = r.period;
    assert_eq!(
        attribute(page, &format!("duplicates-{p}"), "data-users"),
        r.duplicates.join(" ")
    );
    assert_eq!(
        attribute(page, &format!("savings-{p}"), "data-usd")
            .parse::<Decimal>()
            .unwrap(),
        r.savings
    );
    assert!(page.contains("<span title=\"alice\">Alice Liddell</span>"));
    let listed = page
        .split(&format!("id=\"savings-list-{p}\""))
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    assert!(listed.contains("<tr data-user=\"dave\">"), "{listed}");
    assert!(!listed.contains("<tr data-user=\"carol\">"), "{listed}");
}

/// Step 4: the report's CSV: the same idle seat, savings and names, summing to the bill.
fn check_report(r: &Reference, csv: &[u8]) {
    let rows = csv_rows(csv);
    let idle: Vec<&str> = rows
        .iter()
        .filter(|row| row["savings_reason"] == "idle")
        .map(|row| row["user_id"].as_str())
        .collect();
    assert_eq!(idle, r.idle);
    let sum = |column: &str| -> Decimal {
        rows.iter()
            .map(|row| row[column].parse::<Decimal>().unwrap_or_default())
            .sum()
    };
    assert_eq!(sum("savings_usd"), r.savings);
    let bill: Decimal = r.json["kiro_total_usd"].to_string().parse().unwrap();
    assert_eq!(sum("total_usd"), bill, "the report sums to the bill");
    let carol = rows.iter().find(|row| row["user_id"] == "carol").unwrap();
    assert_eq!(carol["display_name"], "Carol Danvers");
    assert_eq!(carol["savings_reason"], "");
}

/// The report card of the period, as text.
fn report_card(r: &Reference, cards: &[Value]) -> String {
    cards
        .iter()
        .find(|c| title(c) == format!("Kiro cost report {}", r.period))
        .map(|c| blocks(c).join("\n"))
        .expect("a report card")
}

/// Step 5: the alert cards count the same duplicates and savings and name people; the report
/// card lists the same idle seat.
fn check_cards(r: &Reference, cards: &[Value]) {
    let alerts: String = cards
        .iter()
        .filter(|c| title(c).starts_with("Kiro cost alerts"))
        .flat_map(blocks)
        .collect::<Vec<_>>()
        .join("\n");
    let duplicates = format!("duplicate_subscriptions = **{}**", r.duplicates.len());
    assert!(alerts.contains(&duplicates), "{alerts}");
    let savings = format!("savings_usd = **${:.2}**", r.savings);
    assert!(alerts.contains(&savings), "{alerts}");
    assert!(alerts.contains("Alice Liddell · alice ("), "{alerts}");
    let card = report_card(r, cards);
    assert!(card.contains("- dave (idle)"), "{card}");
    assert!(!card.contains("carol"), "{card}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sink_agrees_on_duplicates_idle_seats_savings_and_names() {
    let p = BillingPeriod::containing(Utc::now()).previous();
    let earlier = p.previous();
    // The month before holds one seat, for a daemon that watches only that month.
    let mut lines = month(p);
    lines.push(moved(seat("erin", Some("data"), "Pro", 1, 20.0), earlier));
    lines.push(moved(credits("erin", Some("data"), 2, 50.0, 0.0), earlier));
    let mut setup = Setup::with_lines(lines);
    write_activity(&setup.path("activity"), p);
    std::fs::write(setup.path("people.csv"), PEOPLE).unwrap();

    let config = watching(&mut setup, "watching", p);
    let reference = query(&config, p);
    // The daemon watching the month.
    let report = setup.path(&format!("watching/kiro-cost-report-{p}.csv"));
    let (cards, m, page, csv) = run_daemon(&config, &report).await;
    check_metrics(&reference, &m);
    check_landing(&reference, &page);
    check_report(&reference, &csv);
    check_cards(&reference, &cards);

    // Step 6: a daemon watching only the month before. The report of the month is built as
    // the snapshot would be (activity and names), and says the same, byte for byte, but for
    // the seats' tenure: that daemon's history ends before the month, so it leaves the tenure
    // columns empty rather than count from the month alone.
    let later = watching(&mut setup, "after", earlier);
    let report = setup.path(&format!("after/kiro-cost-report-{p}.csv"));
    let (later_cards, _, _, later_csv) = run_daemon(&later, &report).await;
    let (later_csv, later_tenure) = without_tenure(&later_csv);
    let (csv, tenure) = without_tenure(&csv);
    assert_eq!(later_csv, csv);
    assert!(later_tenure.iter().all(|t| t == ",,,"), "{later_tenure:?}");
    assert!(
        tenure.contains(&format!("{p},0,1,20")),
        "dave, idle this month: {tenure:?}"
    );
    assert_eq!(
        report_card(&reference, &later_cards),
        report_card(&reference, &cards)
    );
}
