//! Amazon Q Developer Pro seats beside Kiro's: read from the same bill by both engines, kept
//! apart from every Kiro figure, reconciled with the bill's Q Developer lines on their own, and
//! a user who holds both flagged with the Q Developer seat's fee as the saving.

use std::collections::{BTreeMap, BTreeSet};

use kiro_cost_exporter::allocation::savings::{self, Reason, SavingsSettings};
use kiro_cost_exporter::allocation::{Allocation, AllocationSettings, PlanTable};
use kiro_cost_exporter::curgen::{self, CurLine, GenSpec, Shape};
use kiro_cost_exporter::source::{LocalSource, Source as _};
use rust_decimal::Decimal;

use crate::support::*;

/// The user id in an ARN, as the bill names users.
fn user_of(arn: &str) -> String {
    arn.rsplit_once("user/").map_or(arn, |(_, u)| u).to_owned()
}

fn money(v: f64) -> Decimal {
    Decimal::try_from(v).unwrap().round_dp(8)
}

/// What the generated lines say, worked out from the lines alone: the Q Developer seat lines'
/// cost per user (tax apart) and in all, and the users billed a Kiro seat fee.
struct Ledger {
    q_fee: BTreeMap<String, Decimal>,
    q_total: Decimal,
    kiro_seat_users: BTreeSet<String>,
}

fn ledger(lines: &[CurLine], p: &str) -> Ledger {
    let mut l = Ledger {
        q_fee: BTreeMap::new(),
        q_total: Decimal::ZERO,
        kiro_seat_users: BTreeSet::new(),
    };
    for line in lines.iter().filter(|l| l.period.to_string() == p) {
        let user = user_of(if line.user_identifier.is_empty() {
            &line.resource_id
        } else {
            &line.user_identifier
        });
        match (line.product_code, line.operation) {
            ("AmazonQ", "number-q-dev-subscriptions") => {
                l.q_total += money(line.unblended_cost);
                if line.line_type != "Tax" {
                    *l.q_fee.entry(user).or_default() += money(line.unblended_cost);
                }
            }
            ("Kiro", "monthly-subscription") if line.line_type == "FlatRateSubscription" => {
                l.kiro_seat_users.insert(user);
            }
            _ => {}
        }
    }
    l
}

async fn allocate(dir: &std::path::Path, p: &str, settings: AllocationSettings) -> Allocation {
    let a = LocalSource::new(dir, settings.clone())
        .allocate(period(p))
        .await
        .unwrap();
    assert_reconciles(&a);
    a
}

#[tokio::test]
async fn a_user_with_both_seats_is_flagged_and_kiro_totals_do_not_move() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = GenSpec::new(150, period("2026-10"));
    spec.seed = 5;
    let mut lines = Vec::new();
    curgen::write_export(&spec, dir.path(), |l| lines.push(l.clone())).unwrap();
    let l = ledger(&lines, "2026-10");
    let both: BTreeSet<&String> = l
        .q_fee
        .keys()
        .filter(|u| l.kiro_seat_users.contains(*u))
        .collect();
    assert!(
        both.len() >= 3 && both.len() < l.q_fee.len(),
        "the generator writes users with both seats and users with Q Developer only: {} of {}",
        both.len(),
        l.q_fee.len()
    );
    // Amazon Q lines of other operations are in the export too, and never count.
    assert!(
        lines
            .iter()
            .any(|x| x.product_code == "AmazonQ" && x.operation != "number-q-dev-subscriptions")
    );

    let a = allocate(dir.path(), "2026-10", AllocationSettings::default()).await;
    let q = &a.q_developer;
    assert!(q.read);
    assert_eq!(
        q.total_usd,
        l.q_total.normalize(),
        "the bill's Q Developer lines"
    );
    let fees: BTreeMap<String, Decimal> = q
        .seats
        .iter()
        .map(|s| (s.user_id.clone(), s.fee_usd))
        .collect();
    let expected: BTreeMap<String, Decimal> = l
        .q_fee
        .iter()
        .map(|(u, f)| (u.clone(), f.normalize()))
        .collect();
    assert_eq!(fees, expected);
    let flagged: BTreeSet<&String> = q.duplicates().map(|s| &s.user_id).collect();
    assert_eq!(flagged, both);

    // The saving: each flagged user's Q Developer seat, cancelled, at its fee.
    let s = savings::recommend(
        &a,
        &PlanTable::default(),
        &SavingsSettings::default(),
        a.period.end(),
    );
    let q_recs: BTreeMap<&String, &savings::Recommendation> = s
        .recommendations
        .iter()
        .filter(|r| r.reason == Reason::QDeveloper)
        .map(|r| (&r.user_id, r))
        .collect();
    assert_eq!(q_recs.keys().copied().collect::<BTreeSet<_>>(), both);
    for (user, r) in &q_recs {
        assert_eq!(r.saving_usd, l.q_fee[*user].normalize(), "{user}");
        assert_eq!(r.recommended_plan, "", "cancel");
        assert_eq!(r.plan, "Q Developer Pro");
    }

    // Off, the Kiro allocation is the same to the last digit: Q Developer cost is not Kiro's.
    let off = AllocationSettings {
        q_developer: false,
        ..AllocationSettings::default()
    };
    let mut without = allocate(dir.path(), "2026-10", off).await;
    assert!(!without.q_developer.read && without.q_developer.seats.is_empty());
    without.q_developer = a.q_developer.clone();
    without.stats = a.stats.clone();
    assert_eq!(without, a);
}

#[test]
fn query_json_names_the_seats_apart_from_kiro_and_reconciles_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = GenSpec::new(60, period("2026-10"));
    spec.seed = 9;
    curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    let cur = dir.path().to_str().unwrap();
    let v = query_json_with(&["--cur", cur], &[]);
    assert_json_reconciles(&v);
    let q = &v["q_developer"];
    assert_eq!(q["end_of_support"], "2027-04-30");
    let flagged = q["seats"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["also_kiro"] == true)
        .count();
    assert_eq!(q["duplicate_users"], flagged);
    assert!(flagged > 0);
    let recs = v["savings"]["recommendations"].as_array().unwrap();
    assert_eq!(
        recs.iter().filter(|r| r["reason"] == "q_developer").count(),
        flagged
    );
    // No Kiro user row is a Q Developer seat's.
    let users = v["users"].as_array().unwrap();
    assert!(
        users
            .iter()
            .all(|u| !u["plan"].as_str().unwrap().contains("Q Developer"))
    );

    // AWS's CID export names users in the resource id only: the same seats.
    let cid = tempfile::tempdir().unwrap();
    spec.shape = Shape::Cid;
    curgen::write_export(&spec, cid.path(), |_| {}).unwrap();
    let c = query_json_with(&["--cur", cid.path().to_str().unwrap()], &[]);
    assert_json_reconciles(&c);
    assert_eq!(c["q_developer"], v["q_developer"]);
}

#[tokio::test]
async fn without_the_operation_column_q_developer_seats_are_not_read() {
    // Seat lines cannot be told from Amazon Q's others there: none is read, and Kiro's
    // allocation is what it is with them off.
    let mut spec = GenSpec::new(40, period("2026-10"));
    spec.seed = 3;
    let mut lines = Vec::new();
    curgen::write_export(&spec, tempfile::tempdir().unwrap().path(), |l| {
        lines.push(l.clone())
    })
    .unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.operation == "number-q-dev-subscriptions")
    );
    let narrow = Export::write_omitting(lines, &["line_item_operation"]);
    let a = narrow.allocate("2026-10").await.unwrap();
    assert_reconciles(&a);
    assert!(!a.q_developer.read && a.q_developer.seats.is_empty());
    let sql = LocalSource::new(narrow.path(), AllocationSettings::default())
        .allocate_by_sql(period("2026-10"))
        .await
        .unwrap();
    assert_eq!(sql.q_developer, a.q_developer);
}

/// The landing page and the report's summary card name the users who pay for both and the
/// end-of-support date, with the figures of the allocation.
#[tokio::test]
async fn the_landing_page_and_the_card_name_the_overlap_and_the_end_of_support() {
    use kiro_cost_exporter::sink::{landing, report};
    use kiro_cost_exporter::snapshot::Snapshot;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = GenSpec::new(120, period("2026-10"));
    spec.seed = 5;
    curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    let a = allocate(dir.path(), "2026-10", AllocationSettings::default()).await;
    let both: Vec<_> = a.q_developer.duplicates().cloned().collect();
    assert!(!both.is_empty());
    let cost: Decimal = both.iter().map(|q| q.fee_usd).sum();
    let s = Snapshot::of_bill(
        utc(2026, 11, 20),
        vec![a],
        &PlanTable::default(),
        &SavingsSettings::default(),
    );
    let page = landing::render(
        Some(&s),
        &landing::LandingSettings::default(),
        &landing::Health::default(),
    );
    let page = String::from_utf8(page.to_vec()).unwrap();
    assert!(
        page.contains(&format!(
            "<span id=\"q-both-2026-10\">{}</span> users pay for both",
            both.len()
        )),
        "{page}"
    );
    assert!(page.contains("id=\"q-eos-2026-10\" data-date=\"2027-04-30\""));
    let listed = page.split("id=\"q-list-2026-10\"").nth(1).unwrap();
    let listed = listed.split("</table>").next().unwrap();
    for q in both.iter().take(10) {
        assert!(
            listed.contains(&format!("data-user=\"{}\"", q.user_id)),
            "{}",
            q.user_id
        );
    }

    let view = s.period(period("2026-10")).unwrap();
    let card = report::summary_card(view, None, &report::ReportSettings::default(), "");
    let text = card.to_string();
    let money = kiro_cost_exporter::locale::money(cost);
    assert!(
        text.contains(&format!(
            "**Q Developer Pro**: {} users also hold a Kiro seat ({money} a month); Amazon Q Developer reaches end of support on 2027-04-30.",
            both.len()
        )),
        "{text}"
    );
    // Their recommendations are among the card's savings, at the seats' fees.
    assert!(view.savings.total_usd >= cost);
}
