//! One test per allocation rule in DESIGN.md, each on a small export written to Parquet and
//! allocated by DataFusion, checking every field of the result and the reconciliation invariant.

use kiro_cost_exporter::allocation::sql::CostColumn;
use kiro_cost_exporter::allocation::{AllocationSettings, UserCost};
use kiro_cost_exporter::curgen::CurLine;
use rust_decimal::Decimal;

use crate::support::*;

/// A unit of `ACCOUNT` in us-east-1, where every line of the fixtures is.
#[allow(clippy::too_many_arguments)]
fn unit(
    account: &str,
    user: &str,
    cc: &str,
    plan: &str,
    credits: &str,
    sub: &str,
    over: &str,
    other: &str,
) -> UserCost {
    expected_unit(
        account,
        "us-east-1",
        user,
        cc,
        plan,
        credits,
        sub,
        over,
        other,
    )
}

use check_allocation as check;

#[tokio::test]
async fn untagged_user_has_empty_cost_center() {
    let e = Export::write([
        seat("u1", None, "Pro", 1, 20.0),
        credits("u1", None, 3, 1_200.0, 200.0),
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![unit(ACCOUNT, "u1", "", "Pro", "1200", "20", "8", "0")],
        "0",
        "0",
        "28",
    );
    assert_eq!(a.untagged_users(), vec!["u1"]);
    assert_eq!(a.cost_centers()[""].total_usd, dec("28"));
}

#[tokio::test]
async fn empty_string_tag_is_untagged() {
    let e = Export::write([
        seat("u1", Some(""), "Pro", 1, 20.0),
        seat("u2", Some("CC-1"), "Pro", 1, 20.0),
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![
            unit(ACCOUNT, "u1", "", "Pro", "0", "20", "0", "0"),
            unit(ACCOUNT, "u2", "CC-1", "Pro", "0", "20", "0", "0"),
        ],
        "0",
        "0",
        "40",
    );
    assert_eq!(a.untagged_users(), vec!["u1"]);
}

#[tokio::test]
async fn user_moving_mid_month_is_split_by_line_tag() {
    let e = Export::write([
        seat("u1", Some("CC-A"), "ProPlus", 1, 40.0),
        credits("u1", Some("CC-A"), 5, 1_500.0, 0.0),
        credits("u1", Some("CC-B"), 20, 700.0, 200.0),
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![
            unit(ACCOUNT, "u1", "CC-A", "Pro+", "1500", "40", "0", "0"),
            unit(ACCOUNT, "u1", "CC-B", "Pro+", "700", "0", "8", "0"),
        ],
        "0",
        "0",
        "48",
    );
    let cc = a.cost_centers();
    assert_eq!((cc["CC-A"].users, cc["CC-B"].users), (1, 1));
    assert_eq!(a.totals().users, 1);
}

#[tokio::test]
async fn an_upgrade_takes_the_higher_plan_and_keeps_the_refund() {
    let mut refund = seat("u1", Some("CC-A"), "Pro", 1, -20.0);
    refund.line_type = "Refund";
    refund.usage_start = at(period("2026-10"), 12, 0);
    let e = Export::write([
        seat("u1", Some("CC-A"), "Pro", 1, 20.0),
        refund,
        seat("u1", Some("CC-A"), "Power", 12, 200.0),
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![unit(ACCOUNT, "u1", "CC-A", "Power", "0", "220", "0", "-20")],
        "0",
        "0",
        "200",
    );
}

/// An upgrade re-rates the whole month at the higher tier, and a downgrade starts next month
/// (shared/facts, "Mid-month changes"): the month's plan is the highest tier billed in it, even
/// when a cheaper seat line comes later. u1: the higher tier's fee dated on the 1st (the month
/// re-rated) and the lower tier's refund written as a negative seat line on the 12th; u2: a
/// downgrade whose lower tier appears at no cost on the 20th. The scan and the SQL template
/// (what Athena runs) agree on both.
#[tokio::test]
async fn the_months_plan_is_the_highest_tier_billed_even_before_a_later_cheaper_line() {
    let mut refund = seat("u1", Some("CC-A"), "Pro", 12, -20.0);
    refund.usage_amount = -1.0;
    let e = Export::write([
        seat("u1", Some("CC-A"), "Pro", 1, 20.0),
        seat("u1", Some("CC-A"), "Power", 1, 200.0),
        refund,
        seat("u2", Some("CC-A"), "Power", 1, 200.0),
        seat("u2", Some("CC-A"), "Pro", 20, 0.0),
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![
            unit(ACCOUNT, "u1", "CC-A", "Power", "0", "200", "0", "0"),
            unit(ACCOUNT, "u2", "CC-A", "Power", "0", "200", "0", "0"),
        ],
        "0",
        "0",
        "400",
    );
    let by_sql = kiro_cost_exporter::source::local::LocalSource::new(
        e.path(),
        AllocationSettings::default(),
    )
    .allocate_by_sql(period("2026-10"))
    .await
    .unwrap();
    assert_reconciles(&by_sql);
    assert_eq!(
        by_sql.units, a.units,
        "the SQL template picks the same plans"
    );
}

/// A user subscribed twice in one Kiro profile (e.g. through two groups) holds one seat, at the
/// highest tier (shared/facts: only the highest tier is paid): one unit, no duplicate.
#[tokio::test]
async fn two_seat_lines_in_one_profile_are_one_seat_at_the_highest_tier() {
    let e = Export::write([
        seat("u1", Some("CC-A"), "Pro", 1, 20.0),
        seat("u1", Some("CC-A"), "Power", 1, 200.0),
        seat("u2", Some("CC-A"), "Pro", 1, 20.0),
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![
            unit(ACCOUNT, "u1", "CC-A", "Power", "0", "220", "0", "0"),
            unit(ACCOUNT, "u2", "CC-A", "Pro", "0", "20", "0", "0"),
        ],
        "0",
        "0",
        "240",
    );
    assert!(a.duplicate_subscriptions().is_empty());
}

#[tokio::test]
async fn duplicate_subscription_across_accounts_shows_twice() {
    let other = |mut l: CurLine| {
        l.account_id = ACCOUNT_2.into();
        l
    };
    let e = Export::write([
        seat("u1", Some("CC-A"), "Pro", 1, 20.0),
        other(seat("u1", Some("CC-A"), "ProPlus", 1, 40.0)),
        other(credits("u1", Some("CC-A"), 4, 10.0, 0.0)),
        seat("u2", Some("CC-A"), "Pro", 1, 20.0),
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![
            unit(ACCOUNT, "u1", "CC-A", "Pro", "0", "20", "0", "0"),
            unit(ACCOUNT, "u2", "CC-A", "Pro", "0", "20", "0", "0"),
            unit(ACCOUNT_2, "u1", "CC-A", "Pro+", "10", "40", "0", "0"),
        ],
        "0",
        "0",
        "80",
    );
    assert_eq!(a.duplicate_subscriptions(), vec!["u1"]);
    assert_eq!(
        a.cost_centers()["CC-A"].users,
        2,
        "a user counts once per cost center"
    );
    assert_eq!(a.accounts()[ACCOUNT_2].total_usd, dec("40"));
}

#[tokio::test]
async fn refund_and_credit_lines_are_other() {
    let mut refund = credits("u1", Some("CC-A"), 27, 0.0, 0.0);
    refund.line_type = "Refund";
    refund.unblended_cost = -4.0;
    let mut promo = credits("u1", Some("CC-A"), 26, 0.0, 0.0);
    promo.line_type = "Credit";
    promo.unblended_cost = -5.0;
    let e = Export::write([
        seat("u1", Some("CC-A"), "Pro", 1, 20.0),
        credits("u1", Some("CC-A"), 3, 1_250.0, 250.0),
        refund,
        promo,
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![unit(ACCOUNT, "u1", "CC-A", "Pro", "1250", "20", "10", "-9")],
        "0",
        "0",
        "21",
    );
}

#[tokio::test]
async fn tax_goes_to_tax_not_users_and_tax_only_user_has_no_unit() {
    let mut tax1 = seat("u1", Some("CC-A"), "Pro", 1, 3.8);
    tax1.line_type = "Tax";
    tax1.usage_type = "Tax".into();
    let mut tax_only = tax1.clone();
    tax_only.user_identifier = arn("u9");
    tax_only.unblended_cost = 1.25;
    let e = Export::write([seat("u1", Some("CC-A"), "Pro", 1, 20.0), tax1, tax_only]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![unit(ACCOUNT, "u1", "CC-A", "Pro", "0", "20", "0", "0")],
        "5.05",
        "0",
        "25.05",
    );
    assert!(a.units.iter().all(|u| u.user_id != "u9"));
}

#[tokio::test]
async fn line_without_user_is_unattributed() {
    let mut discount = seat("", None, "Pro", 1, -1.5);
    discount.line_type = "EdpDiscount";
    let e = Export::write([seat("u1", Some("CC-A"), "Pro", 1, 20.0), discount]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![unit(ACCOUNT, "u1", "CC-A", "Pro", "0", "20", "0", "0")],
        "0",
        "-1.5",
        "18.5",
    );
}

#[tokio::test]
async fn user_taken_from_resource_id_when_identifier_is_empty() {
    let mut l = seat("u1", Some("CC-A"), "Pro", 1, 20.0);
    l.user_identifier = String::new();
    l.resource_id = "arn:aws:identitystore:::user/u1".into();
    // A resource id that names no user does not make a user.
    let mut profile = credits("", Some("CC-A"), 4, 5.0, 5.0);
    profile.resource_id = "arn:aws:codewhisperer:us-east-1:111122223333:profile/ABC".into();
    let e = Export::write([l, credits("u1", Some("CC-A"), 3, 10.0, 0.0), profile]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![unit(ACCOUNT, "u1", "CC-A", "Pro", "10", "20", "0", "0")],
        "0",
        "0.2",
        "20.2",
    );
}

#[tokio::test]
async fn other_services_are_ignored() {
    let mut q = seat("u1", Some("CC-A"), "Pro", 1, 19.0);
    q.product_code = "AmazonQ";
    let mut ec2 = credits("u1", Some("CC-A"), 3, 100.0, 100.0);
    ec2.product_code = "AmazonEC2";
    let e = Export::write([seat("u1", Some("CC-A"), "Pro", 1, 20.0), q, ec2]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![unit(ACCOUNT, "u1", "CC-A", "Pro", "0", "20", "0", "0")],
        "0",
        "0",
        "20",
    );
}

#[tokio::test]
async fn other_month_is_ignored() {
    let sept = period("2026-09");
    let mut old = seat("u1", Some("CC-A"), "Power", 1, 200.0);
    old.period = sept;
    old.usage_start = sept.start();
    old.usage_end = sept.end();
    let e = Export::write([old, seat("u1", Some("CC-A"), "Pro", 1, 20.0)]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![unit(ACCOUNT, "u1", "CC-A", "Pro", "0", "20", "0", "0")],
        "0",
        "0",
        "20",
    );
    let s = e.allocate("2026-09").await.unwrap();
    check(
        &s,
        vec![unit(ACCOUNT, "u1", "CC-A", "Power", "0", "200", "0", "0")],
        "0",
        "0",
        "200",
    );
}

#[tokio::test]
async fn region_prefix_other_than_use1() {
    let mut s = seat("u1", Some("CC-A"), "ProPlus", 1, 40.0);
    s.usage_type = "EUC1-KiroEnterprise-ProPlus".into();
    let mut c = credits("u1", Some("CC-A"), 3, 2_100.0, 100.0);
    c.usage_type = "EUC1-KiroEnterprise-Credits".into();
    c.pricing_unit = "";
    let e = Export::write([s, c]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![unit(ACCOUNT, "u1", "CC-A", "Pro+", "2100", "40", "4", "0")],
        "0",
        "0",
        "44",
    );
}

#[tokio::test]
async fn cost_center_with_comma_quotes_and_non_ascii() {
    let cc = "研发, \"Kern\" Ü-Team";
    let e = Export::write([seat("u1", Some(cc), "Pro", 1, 20.0)]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![unit(ACCOUNT, "u1", cc, "Pro", "0", "20", "0", "0")],
        "0",
        "0",
        "20",
    );
    let csv = kiro_cost_exporter::output::to_csv(&a).unwrap();
    let text = String::from_utf8(csv).unwrap();
    assert!(text.starts_with('\u{feff}'));
    assert!(text.contains("\"研发, \"\"Kern\"\" Ü-Team\""), "{text}");
}

#[tokio::test]
async fn unknown_plan_suffix_passes_through_and_no_seat_means_no_plan() {
    let e = Export::write([
        seat("u1", Some("CC-A"), "Ultra", 1, 100.0),
        credits("u2", Some("CC-A"), 3, 5.0, 0.0),
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    assert_eq!(
        a.unknown_plans.iter().collect::<Vec<_>>(),
        ["Ultra"],
        "a tier the plan table does not know is reported"
    );
    check(
        &a,
        vec![
            unit(ACCOUNT, "u1", "CC-A", "Ultra", "0", "100", "0", "0"),
            unit(ACCOUNT, "u2", "CC-A", "", "5", "0", "0", "0"),
        ],
        "0",
        "0",
        "100",
    );
}

#[tokio::test]
async fn configured_tag_key_and_net_cost_column() {
    let mut l = seat("u1", None, "Pro", 1, 20.0);
    l.tags = vec![
        ("userAttribute/Department".into(), "Eng".into()),
        (TAG.into(), "CC-A".into()),
    ];
    l.net_unblended_cost = Some(18.0);
    let e = Export::write([l]);
    let settings = AllocationSettings {
        cost_center_tag: "userAttribute/Department".into(),
        cost_column: CostColumn::NetUnblended,
        ..Default::default()
    };
    let a = e.allocate_with("2026-10", settings).await.unwrap();
    check(
        &a,
        vec![unit(ACCOUNT, "u1", "Eng", "Pro", "0", "18", "0", "0")],
        "0",
        "0",
        "18",
    );
}

#[tokio::test]
async fn fractional_money_is_exact() {
    // 0.01-credit steps at $0.04: amounts that binary floating point cannot hold exactly.
    let lines: Vec<CurLine> = (1..=30)
        .map(|d| credits("u1", Some("CC-A"), d.min(31), 0.07, 0.07))
        .collect();
    let e = Export::write(lines);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![unit(ACCOUNT, "u1", "CC-A", "", "2.1", "0", "0.084", "0")],
        "0",
        "0",
        "0.084",
    );
    assert_eq!(a.units[0].overage_usd, Decimal::new(84, 3));
}
