//! The Kiro user activity report next to the bill: read as Kiro writes it (quoted ids, parts,
//! missing e-mails, extra columns; a truncated file skipped, named and counted; a changed file
//! read again), exported, and used where the bill cannot tell: a seat whose use the bill does
//! not show is not idle.

use std::collections::BTreeSet;
use std::path::Path;

use kiro_cost_exporter::allocation::PlanTable;
use kiro_cost_exporter::allocation::savings::{Reason, SavingsSettings};
use kiro_cost_exporter::config::Settings;
use kiro_cost_exporter::sink::BudgetLimits;
use kiro_cost_exporter::sink::alerts::rules::{self, Measure, Rule, Scope};
use kiro_cost_exporter::snapshot::PeriodView;
use kiro_cost_exporter::source::activity::{Activity, ActivityReader};

use crate::support::aws::{self, Emulator, Kind};
use crate::support::fixture::write_settings;
use crate::support::*;

const HEADER: &str = "Date,UserId,Client_Type,Chat_Conversations,Credits_Used,Overage_Cap,Overage_Credits_Used,Overage_Enabled,ProfileId,Subscription_Tier,Total_Messages,New_User,User_Email";

/// Writes one activity file of `day` (2026-10-DD) for `ACCOUNT` in us-east-1.
fn write_day(root: &Path, day: u32, name: &str, body: &str) -> std::path::PathBuf {
    let dir = root.join(format!(
        "AWSLogs/{ACCOUNT}/KiroLogs/user_report/us-east-1/2026/10/{day:02}/00"
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, body).unwrap();
    file
}

/// October's 3rd to 5th as Kiro writes them: quoted ids, a missing e-mail, an extra column,
/// a day split in two parts, the CLI client, and a truncated file (returned).
fn write_first_days(root: &Path) -> std::path::PathBuf {
    // Quoted ids, a missing e-mail, an extra column Kiro may add.
    write_day(
        root,
        3,
        "KIRO_IDE_111122223333_user_report_202610030000.csv",
        &format!(
            "{HEADER},claude_messages,Future_Column\n\
             2026-10-03,\"u1\",KIRO_IDE,2,30.5,1000,0,true,p1,PRO,9,false,,9,x\n\
             2026-10-03,\"u3\",KIRO_IDE,1,150,,0,true,p1,PRO,4,false,u3@example.com,4,x\n"
        ),
    );
    // A split day: two parts, and the CLI client.
    write_day(
        root,
        4,
        "KIRO_IDE_111122223333_user_report_202610040000.csv",
        &format!("{HEADER}\n2026-10-04,u1,KIRO_IDE,1,10,,0,true,p1,PRO,3,false,u1@example.com\n"),
    );
    write_day(
        root,
        4,
        "KIRO_IDE_111122223333_user_report_202610040000_part2.csv",
        &format!("{HEADER}\n2026-10-04,u3,KIRO_IDE,1,5,,0,true,p1,PRO,1,false,\n"),
    );
    write_day(
        root,
        4,
        "KIRO_CLI_111122223333_user_report_202610040000.csv",
        &format!("{HEADER}\n2026-10-04,u1,KIRO_CLI,1,2,,0,true,p1,PRO,2,false,\n"),
    );
    // A truncated file: skipped, named, counted.
    write_day(
        root,
        5,
        "KIRO_IDE_111122223333_user_report_202610050000.csv",
        &format!("{HEADER}\n2026-10-05,u2,KIRO_IDE,1,9"),
    )
}

#[tokio::test]
async fn activity_is_read_as_kiro_writes_it_and_a_seat_in_use_is_never_idle() {
    let e = Export::write([
        // Both seats show no credits in the bill.
        seat("u1", Some("A"), "Pro", 1, 20.0),
        seat("u2", Some("A"), "Pro", 1, 20.0),
        seat("u3", Some("B"), "Pro", 1, 20.0),
        credits("u3", Some("B"), 3, 100.0, 0.0),
    ]);
    let act = tempfile::tempdir().unwrap();
    let broken = write_first_days(act.path());

    let reader = ActivityReader::new(act.path());
    let activity = reader.read(period("2026-10")).await;
    the_report_is_read_as_written(&activity, &broken);
    a_seat_used_inside_its_plan_is_not_idle(&e, activity).await;
    a_repaired_file_is_read_again(&reader, &broken).await;
    the_daemon_exports_activity_and_counts_broken_files(&e, act.path()).await;
}

/// The seat key of `u` in `ACCOUNT`, us-east-1.
fn seat_key(u: &str) -> (String, String, String) {
    (ACCOUNT.to_owned(), "us-east-1".to_owned(), u.to_owned())
}

/// Step: quoted ids, split days, missing e-mails and a truncated file, read as Kiro writes them.
fn the_report_is_read_as_written(activity: &Activity, broken: &Path) {
    assert_eq!(activity.malformed, vec![broken.to_path_buf()]);
    let u1 = &activity.users[&seat_key("u1")];
    assert_eq!(u1.credits_used, dec("42.5"));
    assert_eq!(u1.messages["KIRO_IDE"], 12);
    assert_eq!(u1.messages["KIRO_CLI"], 2);
    assert_eq!(
        u1.email, "u1@example.com",
        "the e-mail from the day that has one"
    );
    assert_eq!(u1.last_active, Some(utc(2026, 10, 4)));
    assert_eq!(activity.users[&seat_key("u3")].credits_used, dec("155"));
    assert!(
        !activity.users.contains_key(&seat_key("u2")),
        "u2's only row was in the broken file"
    );
    assert_eq!(activity.as_of, Some(utc(2026, 10, 5)));
}

/// The users `view` recommends cancelling as idle.
fn idle_users(view: &PeriodView) -> Vec<&str> {
    view.savings
        .recommendations
        .iter()
        .filter(|r| r.reason == Reason::Idle)
        .map(|r| r.user_id.as_str())
        .collect()
}

/// Step: u1 uses Kiro inside the plan though the bill shows no credits: not idle, and the
/// credit-ratio alerts and the unbilled credits count what the report shows.
async fn a_seat_used_inside_its_plan_is_not_idle(e: &Export, activity: Activity) {
    let a = e.allocate("2026-10").await.unwrap();
    assert_reconciles(&a);
    let now = utc(2026, 11, 3);
    let view = PeriodView::derive(
        a.clone(),
        Some(activity),
        &Default::default(),
        &PlanTable::default(),
        &SavingsSettings::default(),
        now,
    );
    assert_eq!(idle_users(&view), ["u2"]);
    let bill_only = PeriodView::build(a, &PlanTable::default(), &SavingsSettings::default(), now);
    assert_eq!(
        idle_users(&bill_only),
        ["u1", "u2"],
        "the bill alone would cancel a seat in use"
    );
    // Credit-ratio alerts count the larger of the two: u1 is at 4.25% of Pro by the report.
    let ratio = |v: &PeriodView| {
        rules::evaluate(
            &[Rule::new("r", Scope::User, Measure::CreditsUsedRatio, 0.04)],
            v,
            &BudgetLimits::default(),
        )
        .into_iter()
        .map(|f| f.subject)
        .collect::<Vec<_>>()
    };
    assert_eq!(
        ratio(&view),
        [format!("{ACCOUNT}/u1"), format!("{ACCOUNT}/u3")]
    );
    assert_eq!(ratio(&bill_only), [format!("{ACCOUNT}/u3")]);
    // How far the bill lags: A has 42.5 credits unbilled, B 155 - 100.
    assert_eq!(view.unbilled_credits["A"], dec("42.5"));
    assert_eq!(view.unbilled_credits["B"], dec("55"));
}

/// Step: unchanged files come from memory; a repaired file is read again.
async fn a_repaired_file_is_read_again(reader: &ActivityReader, broken: &Path) {
    std::fs::write(
        broken,
        format!("{HEADER}\n2026-10-05,u2,KIRO_IDE,1,9,,0,true,p1,PRO,1,false,\n"),
    )
    .unwrap();
    let again = reader.read(period("2026-10")).await;
    assert!(again.malformed.is_empty());
    assert_eq!(again.users[&seat_key("u2")].credits_used, dec("9"));
}

/// Step: u2 turns out to be u1 under an id of another Identity Center instance (one e-mail).
/// The daemon exports the activity, names the broken file, counts it, and calls nobody idle.
async fn the_daemon_exports_activity_and_counts_broken_files(e: &Export, act: &Path) {
    write_day(
        act,
        7,
        "KIRO_IDE_111122223333_user_report_202610070000.csv",
        &format!("{HEADER}\n2026-10-07,u2,KIRO_IDE,0,0,,0,true,p1,PRO,0,false,U1@example.com\n"),
    );
    write_day(
        act,
        6,
        "KIRO_IDE_111122223333_user_report_202610060000.csv",
        "Date,UserId\nnot,enough",
    );
    let d = Daemon::start(
        &[
            "--cur",
            e.path().to_str().unwrap(),
            "--period",
            "2026-10",
            "--activity",
            act.to_str().unwrap(),
        ],
        &[],
    );
    wait_status(&d.url("/readyz"), 200, 60).await;
    let m = scrape(&d).await;
    assert_scrape_reconciles(&m, "2026-10");
    the_activity_gauges_are_exported(&m);
    assert_eq!(
        value(&m, "kiro_exporter_activity_malformed_files", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "kiro_duplicate_subscriptions",
            &[("billing_period", "2026-10")]
        ),
        Some(2.0),
        "one person behind two ids holds two seats"
    );
    assert_eq!(
        value(
            &m,
            "kiro_cost_center_unbilled_credits",
            &[("billing_period", "2026-10"), ("cost_center", "A")]
        ),
        Some(42.5 + 9.0)
    );
    let idle: Vec<&str> = m
        .iter()
        .filter(|((n, labels), _)| {
            n == "kiro_user_recommended_plan_info" && labels["reason"] == "idle"
        })
        .map(|((_, labels), _)| labels["user_id"].as_str())
        .collect();
    assert!(
        idle.is_empty(),
        "u2 used 9 credits on the 5th now: {idle:?}"
    );
    let log = wait_log(&d, "activity report file skipped", 10);
    assert!(log.contains("202610060000.csv"), "{log}");
}

/// u1's activity gauges: credits, last activity, messages per client, overage cap.
fn the_activity_gauges_are_exported(m: &Scrape) {
    fn l(u: &str) -> [(&str, &str); 4] {
        [
            ("account_id", ACCOUNT),
            ("billing_period", "2026-10"),
            ("region", "us-east-1"),
            ("user_id", u),
        ]
    }
    assert_eq!(
        value(m, "kiro_user_activity_credits_used", &l("u1")),
        Some(42.5)
    );
    assert_eq!(
        value(m, "kiro_user_last_active_timestamp_seconds", &l("u1")),
        Some(utc(2026, 10, 4).timestamp() as f64)
    );
    assert_eq!(
        value(
            m,
            "kiro_user_messages",
            &[
                ("account_id", ACCOUNT),
                ("billing_period", "2026-10"),
                ("client_type", "KIRO_CLI"),
                ("region", "us-east-1"),
                ("user_id", "u1"),
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(m, "kiro_user_overage_cap_credits", &l("u1")),
        Some(1000.0)
    );
}

#[tokio::test]
async fn the_generator_writes_an_activity_report_the_reader_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = kiro_cost_exporter::curgen::GenSpec::new(60, period("2026-10"));
    spec.activity = true;
    spec.seed = 3;
    // A month to date: the report stops before the 20th (Kiro writes a day after it ends).
    let until = utc(2026, 10, 20) + chrono::Duration::hours(9);
    spec.until = Some(until);
    kiro_cost_exporter::curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    let a = ActivityReader::new(dir.path().join("activity"))
        .read(period("2026-10"))
        .await;
    assert!(a.malformed.is_empty(), "{:?}", a.malformed);
    assert!(a.users.len() > 20, "{}", a.users.len());
    assert!(
        a.users.values().any(|u| u.email.is_empty()),
        "some e-mails missing"
    );
    assert!(a.users.values().any(|u| !u.email.is_empty()));
    assert_eq!(
        a.as_of,
        Some(utc(2026, 10, 20)),
        "no day that has not ended"
    );
    assert!(
        a.users
            .values()
            .all(|u| u.last_active < Some(utc(2026, 10, 20)))
    );
    // As Kiro writes it: its client types, tiers and profile ARNs, and ids with the identity
    // store's prefix in one region's files (which the reader takes off).
    let clients: BTreeSet<&str> = a
        .users
        .values()
        .flat_map(|u| u.messages.keys().map(String::as_str))
        .collect();
    assert_eq!(clients, BTreeSet::from(["KIRO_CLI", "KIRO_IDE", "PLUGIN"]));
    assert!(
        a.users
            .values()
            .any(|u| u.tier == "PRO_PLUS" || u.tier == "PRO_MAX")
    );
    assert!(a.users.keys().all(|(_, _, u)| !u.starts_with("d-")));
    // Newer files carry the plan's allowance, older ones do not; it agrees with the plans.
    assert!(a.users.values().any(|u| u.usage_limit.is_some()));
    assert!(a.users.values().any(|u| u.usage_limit.is_none()));
    let (_, differ) = PlanTable::default().with_allowances(&a.allowances());
    assert!(
        !a.allowances().is_empty() && differ.is_empty(),
        "{differ:?}"
    );
    let text = read_tree(&dir.path().join("activity/AWSLogs"));
    let prefix = format!("{}.", kiro_cost_exporter::curgen::activity::STORE);
    assert!(text.contains(&prefix), "no prefixed id");
    assert!(
        text.contains(",arn:aws:codewhisperer:"),
        "profile ids are ARNs"
    );
    assert!(!text.contains(",IDE,") && !text.contains(",CLI,"));
    // Overage on where the bill charges it (the day's overage credits, no cap), off in the
    // account without overage (a preset cap that caps nothing, so none is kept).
    let on: Vec<_> = a
        .users
        .values()
        .filter(|u| u.overage_enabled == Some(true))
        .collect();
    let off: Vec<_> = a
        .users
        .values()
        .filter(|u| u.overage_enabled == Some(false))
        .collect();
    assert!(!on.is_empty() && !off.is_empty());
    assert!(
        on.iter()
            .any(|u| u.overage_credits_used > rust_decimal::Decimal::ZERO)
    );
    assert!(
        off.iter()
            .all(|u| u.overage_credits_used == rust_decimal::Decimal::ZERO)
    );
    assert!(
        text.contains(",1000.0,0,false,"),
        "a preset cap where overage is off"
    );
    // A user on the free tier in each profile, whom the bill never names.
    assert!(text.contains(",FREE,"));
    assert!(a.users.values().any(|u| u.tier == "FREE"));
}

/// Every file under `dir`, concatenated.
fn read_tree(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    out
}

/// Puts `body` at `key` of the activity bucket.
async fn put(s3: &aws_sdk_s3::Client, key: &str, body: Vec<u8>) {
    s3.put_object()
        .bucket("kiro-activity")
        .key(key)
        .body(body.into())
        .send()
        .await
        .unwrap();
}

/// The report read straight from S3 (moto) is the report read from a copy on disk: same users,
/// same savings; a file replaced by a broken one is named by its key and skipped, and a fixed
/// one is read again.
#[tokio::test]
async fn activity_is_read_straight_from_s3() {
    let Some(moto) = Emulator::start(Kind::Moto) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = kiro_cost_exporter::curgen::GenSpec::new(60, period("2026-10"));
    spec.activity = true;
    spec.seed = 5;
    kiro_cost_exporter::curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    let s3 = aws::s3_client(&moto.url()).await;
    s3.create_bucket()
        .bucket("kiro-activity")
        .send()
        .await
        .unwrap();
    let uploaded = aws::upload_dir(
        &s3,
        &dir.path().join("activity"),
        "kiro-activity",
        "reports/",
    )
    .await;
    assert!(uploaded >= 2, "{uploaded}");

    let location =
        kiro_cost_exporter::aws::S3Location::parse("s3://kiro-activity/reports").unwrap();
    let remote = ActivityReader::s3(s3.clone(), location);
    let from_s3 = remote.read(period("2026-10")).await;
    let local = ActivityReader::new(dir.path().join("activity"))
        .read(period("2026-10"))
        .await;
    assert!(!from_s3.users.is_empty());
    assert_eq!(from_s3.users, local.users);
    assert_eq!(from_s3.as_of, local.as_of);

    // One day's file replaced by a truncated one: named by its key, skipped, the rest kept.
    let listed = s3
        .list_objects_v2()
        .bucket("kiro-activity")
        .prefix("reports/AWSLogs/")
        .send()
        .await
        .unwrap();
    let key = listed.contents()[0].key().unwrap().to_owned();
    let truncated = format!("{HEADER}\n2026-10-05,u2,IDE,1,9");
    put(&s3, &key, truncated.into_bytes()).await;
    let broken = remote.read(period("2026-10")).await;
    assert_eq!(broken.malformed, vec![std::path::PathBuf::from(&key)]);
    assert!(!broken.users.is_empty());
    assert_ne!(broken.users, local.users);

    // The same thing through the command line: `query --activity s3://...` gives the answer
    // of `query --activity <folder>`, savings included.
    let on_disk = dir
        .path()
        .join("activity")
        .join(key.trim_start_matches("reports/"));
    put(&s3, &key, std::fs::read(on_disk).unwrap()).await;
    assert_eq!(remote.read(period("2026-10")).await.users, local.users);
    let config = dir.path().join("aws.toml");
    let mut settings = Settings::default();
    settings.aws.region = "us-east-1".into();
    settings.aws.endpoint_url = moto.url();
    write_settings(&config, &settings);
    let cur = dir.path();
    let query = |activity: &str| {
        let out = run_env(
            &[
                "query",
                "--config",
                config.to_str().unwrap(),
                "--cur",
                cur.to_str().unwrap(),
                "--period",
                "2026-10",
                "--format",
                "json",
                "--activity",
                activity,
            ],
            &aws::aws_env(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let via_s3 = query("s3://kiro-activity/reports/");
    let via_disk = query(dir.path().join("activity").to_str().unwrap());
    assert_eq!(via_s3, via_disk);
    let json: serde_json::Value = serde_json::from_str(&via_s3).unwrap();
    assert!(json["savings"].is_object(), "{json}");
}

/// Report ids as Kiro writes them meet the bill's: `d-<store>.<id>` and the store's own
/// `<store>-<id>` prefix are one user with the bill's bare id. A seat used only inside its plan
/// under such an id is never idle; a report user with no seat (a free tier) is not bill lag;
/// the overage cap is exported only while overage is on.
#[tokio::test]
async fn report_ids_in_any_spelling_meet_their_seats() {
    const ANA: &str = "94482488-3041-7026-18f3-be45837cd0e4";
    const BEN: &str = "9067640ef1-1b2c3d4e-aaaa-4bbb-8ccc-0123456789ab";
    const FREE: &str = "c0ffee00-0000-4000-8000-000000000001";
    let e = Export::write([
        seat(ANA, Some("A"), "Pro", 1, 20.0),
        seat(BEN, Some("A"), "Pro", 1, 20.0),
        seat("u9", Some("B"), "Pro", 1, 20.0),
    ]);
    let act = tempfile::tempdir().unwrap();
    write_day(
        act.path(),
        3,
        "KIRO_IDE_111122223333_user_report_202610030000.csv",
        &format!(
            "{HEADER}\n\
             2026-10-03,\"d-9067640ef1.{ANA}\",KIRO_IDE,2,30,2500.0,0,false,p1,PRO,9,false,ana@example.com\n\
             2026-10-03,d-9067640ef1.1b2c3d4e-aaaa-4bbb-8ccc-0123456789ab,KIRO_CLI,1,12,1000,0,true,p1,PRO,4,false,\n\
             2026-10-03,{FREE},KIRO_IDE,1,7,,0,false,p1,FREE,2,false,\n"
        ),
    );
    let activity = ActivityReader::new(act.path())
        .read(period("2026-10"))
        .await;
    assert!(activity.malformed.is_empty());
    assert!(
        activity.users.contains_key(&seat_key(ANA)),
        "the d-<store>. prefix is not part of the id: {:?}",
        activity.users.keys().collect::<Vec<_>>()
    );
    let a = e.allocate("2026-10").await.unwrap();
    assert_reconciles(&a);
    let view = PeriodView::derive(
        a,
        Some(activity),
        &Default::default(),
        &PlanTable::default(),
        &SavingsSettings::default(),
        utc(2026, 11, 3),
    );
    // Ana's and Ben's use meet their seats: only u9, who used nothing, is idle.
    assert_eq!(idle_users(&view), ["u9"]);
    let ben = view
        .activity
        .as_ref()
        .unwrap()
        .users
        .get(&seat_key(BEN))
        .expect("Ben's use under the bill's spelling of his id");
    assert_eq!(ben.credits_used, dec("12"));
    // In-plan use the bill does not show yet: 30 + 12 credits in A. The free user's 7 credits
    // are never billed: not bill lag.
    assert_eq!(view.unbilled_credits["A"], dec("42"));
    assert_eq!(view.unbilled_credits.get(""), None);
    assert_eq!(view.without_seat.users, 1);
    assert_eq!(view.without_seat.credits, dec("7"));

    let d = Daemon::start(
        &[
            "--cur",
            e.path().to_str().unwrap(),
            "--period",
            "2026-10",
            "--activity",
            act.path().to_str().unwrap(),
        ],
        &[],
    );
    wait_status(&d.url("/readyz"), 200, 60).await;
    let m = scrape(&d).await;
    assert_scrape_reconciles(&m, "2026-10");
    let p = [("billing_period", "2026-10")];
    assert_eq!(value(&m, "kiro_activity_users_without_seat", &p), Some(1.0));
    assert_eq!(
        value(&m, "kiro_activity_credits_without_seat", &p),
        Some(7.0)
    );
    let seat_labels = |u: &'static str| {
        [
            ("account_id", ACCOUNT),
            ("billing_period", "2026-10"),
            ("region", "us-east-1"),
            ("user_id", u),
        ]
    };
    // Ana's overage is off: Kiro's preset cap of 2500 caps nothing and is not exported.
    assert_eq!(
        value(&m, "kiro_user_overage_cap_credits", &seat_labels(ANA)),
        None
    );
    assert_eq!(
        value(&m, "kiro_user_overage_cap_credits", &seat_labels(BEN)),
        Some(1000.0)
    );
    assert_eq!(
        value(&m, "kiro_user_activity_credits_used", &seat_labels(ANA)),
        Some(30.0)
    );
}

/// `Usage_Limit`, the plan's allowance in newer report files, replaces the plan table's
/// included credits for its tier: right-sizing and the seats' included credits follow it, and
/// a report without the column leaves the table as configured.
#[tokio::test]
async fn the_reports_usage_limit_is_the_plans_allowance() {
    let e = Export::write([
        seat("u1", Some("A"), "ProMax", 1, 100.0),
        credits("u1", Some("A"), 2, 1800.0, 0.0),
        seat("u2", Some("A"), "ProPlus", 1, 40.0),
    ]);
    // A table that has Pro+ wrong: 1,000 included credits instead of 2,000.
    let mut plans = PlanTable::default().plans().to_vec();
    plans[1].included_credits = dec("1000");
    let plans = PlanTable::new(plans);
    let body = |limit: bool| {
        let (h, l5, l2) = if limit {
            (",Usage_Limit", ",5000", ",2000")
        } else {
            ("", "", "")
        };
        format!(
            "{HEADER}{h}\n\
             2026-10-02,u1,KIRO_IDE,2,1800,,0,false,p1,PRO_MAX,9,false,{l5}\n\
             2026-10-02,u2,KIRO_IDE,1,10,,0,false,p1,PRO_PLUS,4,false,{l2}\n"
        )
    };
    let view = |limit: bool| {
        let e = &e;
        let plans = &plans;
        async move {
            let act = tempfile::tempdir().unwrap();
            let name = "KIRO_IDE_111122223333_user_report_202610020000.csv";
            write_day(act.path(), 2, name, &body(limit));
            let activity = ActivityReader::new(act.path())
                .read(period("2026-10"))
                .await;
            assert!(activity.malformed.is_empty());
            let a = e.allocate("2026-10").await.unwrap();
            assert_reconciles(&a);
            PeriodView::derive(
                a,
                Some(activity),
                &Default::default(),
                plans,
                &SavingsSettings::default(),
                utc(2026, 11, 3),
            )
        }
    };
    let advice = |v: &PeriodView, user: &str| {
        let r = v.savings.recommendations.iter().find(|r| r.user_id == user);
        r.map(|r| (r.recommended_plan.clone(), r.saving_usd))
    };
    let included = |v: &PeriodView, user: &str| {
        let s = v.seats().iter().find(|s| s.id.user_id == user).unwrap();
        s.included_credits
    };
    // Without the column the table decides: 1,800 credits are cheapest on Pro (20 + 800 × 0.04).
    let table = view(false).await;
    assert_eq!(advice(&table, "u1"), Some(("Pro".to_owned(), dec("48"))));
    assert_eq!(included(&table, "u2"), Some(dec("1000")));
    // With it, Pro+ includes 2,000 credits: $40 for the same use, $60 saved.
    let report = view(true).await;
    assert_eq!(advice(&report, "u1"), Some(("Pro+".to_owned(), dec("60"))));
    assert_eq!(included(&report, "u2"), Some(dec("2000")));
    assert_eq!(included(&report, "u1"), Some(dec("5000")));
    assert_eq!(report.included_by_plan["Pro+"], dec("2000"));
    assert_eq!(report.savings.total_usd, dec("80"));
}
