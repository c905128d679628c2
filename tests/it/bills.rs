//! Real Kiro bills, one rule each, over Parquet on disk: what AWS writes (and what AWS's own
//! Kiro dashboard learned from real bills), not what the generator assumes. Every test checks
//! every field of every unit and the reconciliation invariant.

use std::path::Path;

use kiro_cost_exporter::allocation::savings::SavingsSettings;
use kiro_cost_exporter::allocation::{Allocation, AllocationSettings, PlanTable, UserCost};
use kiro_cost_exporter::curgen::CurLine;
use kiro_cost_exporter::snapshot::PeriodView;
use kiro_cost_exporter::source::{LocalSource, Source as _};
use rust_decimal::Decimal;

use crate::support::*;

/// A unit of `ACCOUNT` in `region`.
#[allow(clippy::too_many_arguments)]
fn unit(
    region: &str,
    user: &str,
    cc: &str,
    plan: &str,
    credits: &str,
    sub: &str,
    over: &str,
    other: &str,
) -> UserCost {
    expected_unit(ACCOUNT, region, user, cc, plan, credits, sub, over, other)
}

use check_allocation as check;

const E1: &str = "us-east-1";

#[tokio::test]
async fn credits_are_consumption_by_operation_whatever_the_pricing_unit() {
    let e = Export::write([
        seat("u1", Some("A"), "Pro", 1, 20.0),
        // The second variant AWS bills consumption under: another pricing unit, real usage.
        CurLine {
            pricing_unit: "Units",
            ..credits("u1", Some("A"), 2, 600.0, 0.0)
        },
        credits("u1", Some("A"), 3, 500.0, 100.0),
        // A flat-rate line that is consumption by its operation; not a seat, and not the plan.
        CurLine {
            line_type: "FlatRateSubscription",
            usage_type: "USE1-KiroEnterprise-Power".into(),
            pricing_unit: "Count",
            ..credits("u1", Some("A"), 4, 50.0, 50.0)
        },
        // Operation in any case, and a usage type ending in -credits without the operation.
        CurLine {
            operation: "CREDITS",
            pricing_unit: "Requests",
            ..credits("u1", Some("A"), 5, 10.0, 0.0)
        },
        CurLine {
            operation: "",
            pricing_unit: "",
            usage_type: "USE1-KiroEnterprise-credits".into(),
            ..credits("u1", Some("A"), 6, 5.0, 0.0)
        },
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    // 600 + 500 + 50 + 10 + 5 credits; overage 100 × 0.04 + 50 × 0.04; the plan stays Pro.
    check(
        &a,
        vec![unit(E1, "u1", "A", "Pro", "1165", "20", "6", "0")],
        "0",
        "0",
        "26",
    );
}

#[tokio::test]
async fn ignored_operations_are_never_credits_or_seats_and_their_cost_stays() {
    let snapshot = CurLine {
        operation: "q-developer-snapshot",
        ..credits("u1", Some("A"), 7, 12.5, 25.0)
    };
    let e = Export::write([
        seat("u1", Some("A"), "Pro", 1, 20.0),
        credits("u1", Some("A"), 3, 100.0, 0.0),
        snapshot.clone(),
        CurLine {
            line_type: "FlatRateSubscription",
            operation: "Q-Developer-Snapshot",
            usage_type: "USE1-KiroEnterprise-Power".into(),
            ..snapshot
        },
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    // Both snapshot lines cost $1 each (25 × 0.04) and land in other; no credits, no Power plan.
    check(
        &a,
        vec![unit(E1, "u1", "A", "Pro", "100", "20", "0", "2")],
        "0",
        "0",
        "22",
    );
    // With the list emptied, both snapshot lines' unit (Credits) makes them consumption.
    let none = AllocationSettings {
        ignored_operations: Vec::new(),
        ..AllocationSettings::default()
    };
    let b = e.allocate_with("2026-10", none).await.unwrap();
    assert_eq!(b.units.len(), 1);
    assert_eq!(b.units[0].credits_used, dec("125"));
    assert_eq!(b.units[0].plan, "Pro");
    assert_reconciles(&b);
}

#[tokio::test]
async fn tiers_in_every_spelling_unknown_tiers_and_learned_fees() {
    let e = Export::write([
        // Pro Max billed at $110 on a full-month line: the fee is learned from the bill.
        seat("u1", Some("A"), "ProMax", 1, 110.0),
        credits("u1", Some("A"), 3, 4_800.0, 0.0),
        seat("u2", Some("A"), "PRO_MAX", 1, 110.0),
        seat("u3", Some("A"), "Ultra", 1, 300.0),
        credits("u3", Some("A"), 3, 10.0, 0.0),
    ]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![
            unit(E1, "u1", "A", "Pro Max", "4800", "110", "0", "0"),
            unit(E1, "u2", "A", "Pro Max", "0", "110", "0", "0"),
            unit(E1, "u3", "A", "Ultra", "10", "300", "0", "0"),
        ],
        "0",
        "0",
        "520",
    );
    assert_eq!(a.learned_fees.get("Pro Max"), Some(&dec("110")));
    assert_eq!(a.unknown_plans.iter().collect::<Vec<_>>(), ["Ultra"]);
    let now = utc(2026, 11, 3);
    let v = PeriodView::build(a, &PlanTable::default(), &SavingsSettings::default(), now);
    assert_eq!(v.plans.by_name("Pro Max").unwrap().monthly_usd, dec("110"));
    assert_eq!(
        v.plans.by_name("Pro Max").unwrap().included_credits,
        dec("5000")
    );
    // u1 at 96% of Pro Max is not a downgrade candidate; the unknown tier is never right-sized.
    assert!(
        v.savings
            .recommendations
            .iter()
            .all(|r| r.user_id != "u3" && !(r.user_id == "u1" && r.recommended_plan == "Pro+")),
        "{:?}",
        v.savings.recommendations
    );
    // u2 used nothing: idle, cancel it.
    assert!(
        v.savings
            .recommendations
            .iter()
            .any(|r| r.user_id == "u2" && r.recommended_plan.is_empty())
    );
}

#[tokio::test]
async fn a_user_with_seats_in_two_regions_of_one_account_is_billed_twice() {
    let frankfurt = |l: CurLine| CurLine {
        region: "eu-central-1",
        usage_type: l.usage_type.replace("USE1-", "EUC1-"),
        ..l
    };
    let lines = vec![
        seat("u1", Some("A"), "Pro", 1, 20.0),
        credits("u1", Some("A"), 3, 100.0, 0.0),
        frankfurt(seat("u1", Some("A"), "Pro", 1, 20.0)),
        // No region on the line: the usage type's prefix names it.
        CurLine {
            region: "",
            ..frankfurt(credits("u1", Some("A"), 4, 30.0, 0.0))
        },
        // An unknown prefix is kept as written.
        CurLine {
            region: "",
            usage_type: "XYZ9-KiroEnterprise-Pro".into(),
            ..seat("u2", Some("B"), "Pro", 1, 20.0)
        },
    ];
    let want = || {
        vec![
            unit("XYZ9", "u2", "B", "Pro", "0", "20", "0", "0"),
            unit("eu-central-1", "u1", "A", "Pro", "30", "20", "0", "0"),
            unit(E1, "u1", "A", "Pro", "100", "20", "0", "0"),
        ]
    };
    // Without product_region_code the region comes from product['region']: the same seats.
    let by_map = Export::write_omitting(lines.clone(), &["product_region_code"]);
    check(
        &by_map.allocate("2026-10").await.unwrap(),
        want(),
        "0",
        "0",
        "60",
    );
    let e = Export::write(lines);
    let a = e.allocate("2026-10").await.unwrap();
    check(&a, want(), "0", "0", "60");
    assert_eq!(a.duplicate_subscriptions(), vec!["u1"]);
    assert_eq!(a.seats.len(), 3);
    // Savings: one of the two seats is a duplicate to cancel.
    let v = PeriodView::build(
        a,
        &PlanTable::default(),
        &SavingsSettings::default(),
        utc(2026, 11, 3),
    );
    assert!(
        v.savings
            .recommendations
            .iter()
            .any(|r| r.user_id == "u1" && r.recommended_plan.is_empty()),
        "{:?}",
        v.savings.recommendations
    );
}

#[tokio::test]
async fn optional_columns_may_be_missing_and_a_null_net_cost_falls_back() {
    // A CID-shaped export: users in line_item_resource_id only, no operation, no product.
    let named = |l: CurLine| CurLine {
        resource_id: format!("arn:aws:identitystore:::user/{}", user_of(&l)),
        ..l
    };
    let lines = [
        named(seat("u1", Some("A"), "Pro", 1, 20.0)),
        named(credits("u1", Some("A"), 3, 1_100.0, 100.0)),
    ];
    let e = Export::write_omitting(
        lines.clone(),
        &[
            "line_item_user_identifier",
            "line_item_operation",
            "product_region_code",
            "product",
            "line_item_net_unblended_cost",
        ],
    );
    let a = e.allocate("2026-10").await.unwrap();
    // Region from the usage type's prefix, credits from the usage type and the unit.
    check(
        &a,
        vec![unit(E1, "u1", "A", "Pro", "1100", "20", "4", "0")],
        "0",
        "0",
        "24",
    );
    let out = run(&[
        "query",
        "--cur",
        e.path().to_str().unwrap(),
        "--period",
        "2026-10",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Neither user column: exit 2, naming both.
    let none = Export::write_omitting(
        lines,
        &["line_item_user_identifier", "line_item_resource_id"],
    );
    let out = run(&[
        "query",
        "--cur",
        none.path().to_str().unwrap(),
        "--period",
        "2026-10",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("line_item_user_identifier") && err.contains("line_item_resource_id"),
        "{err}"
    );
    // Net cost: null where the account has no discount, so the unblended cost stands in.
    let e = Export::write([
        CurLine {
            net_unblended_cost: Some(18.0),
            ..seat("u1", Some("A"), "Pro", 1, 20.0)
        },
        CurLine {
            net_unblended_cost: None,
            ..credits("u1", Some("A"), 3, 1_100.0, 100.0)
        },
    ]);
    let net = AllocationSettings {
        cost_column: kiro_cost_exporter::allocation::sql::CostColumn::NetUnblended,
        ..AllocationSettings::default()
    };
    let a = e.allocate_with("2026-10", net).await.unwrap();
    check(
        &a,
        vec![unit(E1, "u1", "A", "Pro", "1100", "18", "4", "0")],
        "0",
        "0",
        "22",
    );
}

fn user_of(l: &CurLine) -> String {
    l.user_identifier
        .rsplit_once("user/")
        .map(|(_, u)| u.to_owned())
        .unwrap_or_default()
}

/// Moves the period's files into `folder` (a delivery of a "create new" export).
fn into_delivery(e: &Export, folder: &str) -> std::path::PathBuf {
    let part = e.partition("2026-10");
    let dir = part.join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(&part).unwrap().map(|f| f.unwrap().path()) {
        if f.is_file() {
            std::fs::rename(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn manifest(root: &Path, files: &[&Path]) {
    let dir = root.join("metadata/BILLING_PERIOD=2026-10");
    std::fs::create_dir_all(&dir).unwrap();
    let uris: Vec<String> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(root).unwrap().display().to_string();
            format!("s3://bucket/prefix/kiro/{rel}")
        })
        .collect();
    std::fs::write(
        dir.join("kiro-Manifest.json"),
        serde_json::json!({"executionId": "exec-2", "dataFiles": uris}).to_string(),
    )
    .unwrap();
}

#[tokio::test]
async fn one_delivery_is_read_never_two_versions() {
    // "Create new" mode: every refresh keeps its files in a folder of its own.
    let old = Export::write([seat("u1", Some("A"), "Pro", 1, 20.0)]);
    let e = Export::write([
        seat("u1", Some("A"), "Pro", 1, 20.0),
        credits("u1", Some("A"), 3, 1_100.0, 100.0),
    ]);
    let newer = into_delivery(&e, "exec-2");
    let older = e.partition("2026-10").join("exec-1");
    std::fs::create_dir_all(&older).unwrap();
    let old_file = older.join("old-00001.snappy.parquet");
    copy_first_file(&old, &old_file);
    // The older delivery is older on disk too.
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&old_file)
        .unwrap()
        .set_modified(past)
        .unwrap();
    let want = vec![unit(E1, "u1", "A", "Pro", "1100", "20", "4", "0")];
    let a = e.allocate("2026-10").await.unwrap();
    check(&a, want.clone(), "0", "0", "24");
    // The manifest decides when there is one: here it names the older delivery.
    manifest(e.path(), &[&old_file]);
    let a = e.allocate("2026-10").await.unwrap();
    check(
        &a,
        vec![unit(E1, "u1", "A", "Pro", "0", "20", "0", "0")],
        "0",
        "0",
        "20",
    );
    // A manifest naming a file the local copy lacks is an error naming it, not a guess.
    manifest(e.path(), &[&newer.join("missing.snappy.parquet")]);
    let err = e.allocate("2026-10").await.unwrap_err();
    assert_eq!(err.kind().as_str(), "bad_input");
    assert!(err.to_string().contains("missing.snappy.parquet"), "{err}");
}

#[tokio::test]
async fn the_forecast_extrapolates_credits_and_carries_daily_fees() {
    // Day 15 of 31: u1 is at 900 of Pro's 1,000 credits, no overage billed yet; u2's $20 seat
    // fee is billed daily, 15 days so far.
    let mut lines = vec![
        seat("u1", Some("A"), "Pro", 1, 20.0),
        credits("u1", Some("A"), 15, 900.0, 0.0),
    ];
    let p = period("2026-10");
    for day in 1..=15 {
        lines.push(CurLine {
            usage_start: at(p, day, 0),
            usage_end: at(p, day + 1, 0),
            usage_amount: 1.0 / 31.0,
            unblended_cost: 20.0 / 31.0,
            ..seat("u2", Some("B"), "Pro", day, 0.0)
        });
    }
    let e = Export::write(lines);
    let a = e.allocate("2026-10").await.unwrap();
    assert_reconciles(&a);
    let as_of = a.data_as_of.unwrap();
    assert_eq!(as_of, at(p, 15, 11));
    let v = PeriodView::build(
        a.clone(),
        &PlanTable::default(),
        &SavingsSettings::default(),
        as_of + chrono::Duration::hours(1),
    );
    let f = v.forecast.factor;
    let projected = dec("900") * f;
    let overage = (projected - dec("1000")) * dec("0.04");
    assert!(
        overage > Decimal::ZERO,
        "90% on day 15 ends the month beyond the plan"
    );
    let close = |a: Decimal, b: Decimal, what: &str| {
        assert!((a - b).abs() < dec("0.000001"), "{what}: {a} vs {b}")
    };
    close(
        v.forecast.cost_centers["A"],
        dec("20") + overage,
        "u1's cost center",
    );
    // u2: 15 daily fees billed, 16 days to go at the same rate: the whole month.
    close(
        v.forecast.cost_centers["B"],
        dec("20"),
        "u2's daily fees to month end",
    );
    close(
        v.forecast.total,
        v.forecast.cost_centers.values().copied().sum::<Decimal>(),
        "total",
    );
    // A month that is over is its own forecast.
    let later = PeriodView::build(
        a,
        &PlanTable::default(),
        &SavingsSettings::default(),
        utc(2026, 11, 20),
    );
    assert_eq!(later.forecast.total, later.total_cost_usd);
}

#[test]
fn inspect_shows_what_the_lines_carry_and_the_rules() {
    let e = Export::write([
        seat("u1", Some("A"), "ProMax", 1, 100.0),
        seat("u2", Some("A"), "Ultra", 1, 100.0),
        CurLine {
            pricing_unit: "Units",
            ..credits("u1", Some("A"), 2, 600.0, 0.0)
        },
        CurLine {
            operation: "q-developer-snapshot",
            ..credits("u1", None, 3, 1.0, 0.0)
        },
    ]);
    let out = run(&[
        "inspect",
        "--cur",
        e.path().to_str().unwrap(),
        "--period",
        "2026-10",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "FlatRateSubscription",
        "monthly-subscription",
        "q-developer-snapshot",
        "units",
        "USE1-KiroEnterprise-Credits",
        "userAttribute/costCenter",
        "ProMax = Pro Max (5000 credits",
        "Ultra = UNKNOWN",
        "Optional columns: all present",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    // The snapshot line is the one classified as other.
    let other = text.split("Lines classified as other").nth(1).unwrap();
    assert!(other.contains("q-developer-snapshot"), "{text}");
    let help = stdout(&run(&["inspect", "--help"]));
    for rule in [
        "ignored_operations",
        "ProMax = PRO_MAX",
        "product['region']",
        "manifest",
        "Forecast",
    ] {
        assert!(help.contains(rule), "{rule} not in inspect --help");
    }
}

#[tokio::test]
async fn a_tiny_export_of_the_cid_shape_allocates_like_the_full_one() {
    // The generator's CID shape against its full shape, same seed: the same allocation.
    let (full, cid) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (dir, shape) in [
        (full.path(), kiro_cost_exporter::curgen::Shape::Full),
        (cid.path(), kiro_cost_exporter::curgen::Shape::Cid),
    ] {
        let mut spec = kiro_cost_exporter::curgen::GenSpec::new(60, period("2026-10"));
        spec.seed = 5;
        spec.shape = shape;
        kiro_cost_exporter::curgen::write_export(&spec, dir, |_| {}).unwrap();
    }
    let a = LocalSource::new(full.path(), Default::default())
        .allocate(period("2026-10"))
        .await
        .unwrap();
    let b = LocalSource::new(cid.path(), Default::default())
        .allocate(period("2026-10"))
        .await
        .unwrap();
    assert_reconciles(&b);
    assert_eq!(a.units, b.units);
    assert_eq!(a.kiro_total_usd, b.kiro_total_usd);
}

/// The allocation without its run's statistics.
fn books(a: &Allocation) -> Allocation {
    Allocation {
        stats: Default::default(),
        ..a.clone()
    }
}

/// Copies the first file of `from`'s October partition to `to`.
fn copy_first_file(from: &Export, to: &Path) {
    let file = from
        .partition("2026-10")
        .join("test-export-00001.snappy.parquet");
    std::fs::copy(file, to).unwrap();
}

#[tokio::test]
async fn an_unchanged_export_is_not_scanned_again_and_changes_are_seen_exactly() {
    let e = Export::write([
        seat("u1", Some("A"), "Pro", 1, 20.0),
        credits("u1", Some("A"), 3, 1_100.0, 100.0),
    ]);
    let source = LocalSource::new(e.path(), Default::default());
    let fresh = || async {
        LocalSource::new(e.path(), Default::default())
            .allocate(period("2026-10"))
            .await
            .unwrap()
    };
    let first = source.allocate(period("2026-10")).await.unwrap();
    assert!(first.stats.scanned_rows.unwrap() > 0);
    let again = source.allocate(period("2026-10")).await.unwrap();
    assert_eq!(again.stats.scanned_rows, Some(0), "not scanned");
    assert_eq!(again.stats.fetched_bytes, Some(0), "nothing read");
    assert_eq!(books(&again), books(&first));

    // A file replaced: read again, equal to a fresh full scan.
    let newer = Export::write([
        seat("u1", Some("A"), "Pro", 1, 20.0),
        credits("u1", Some("A"), 3, 1_200.0, 200.0),
    ]);
    let file = e
        .partition("2026-10")
        .join("test-export-00001.snappy.parquet");
    copy_first_file(&newer, &file);
    let replaced = source.allocate(period("2026-10")).await.unwrap();
    assert!(replaced.stats.scanned_rows.unwrap() > 0);
    assert_eq!(books(&replaced), books(&fresh().await));
    assert_reconciles(&replaced);
    assert_eq!(replaced.kiro_total_usd, dec("28"));

    // A file added, then removed.
    let more = Export::write([seat("u2", Some("B"), "Power", 2, 200.0)]);
    let added = e
        .partition("2026-10")
        .join("test-export-00002.snappy.parquet");
    copy_first_file(&more, &added);
    let with = source.allocate(period("2026-10")).await.unwrap();
    assert_eq!(books(&with), books(&fresh().await));
    assert_eq!(with.kiro_total_usd, dec("228"));
    assert_eq!(
        with.stats.scanned_rows,
        Some(rows_in(&added)),
        "only the added file is scanned"
    );
    assert_eq!(with.stats.files, Some(2));
    // The other file replaced: only it is scanned.
    let third = Export::write([
        seat("u1", Some("A"), "Pro", 1, 20.0),
        credits("u1", Some("A"), 3, 1_300.0, 300.0),
    ]);
    copy_first_file(&third, &file);
    filetime_later(&file);
    let one = source.allocate(period("2026-10")).await.unwrap();
    assert_eq!(one.stats.scanned_rows, Some(rows_in(&file)));
    assert_eq!(books(&one), books(&fresh().await));
    assert_eq!(one.kiro_total_usd, dec("232"));
    assert_reconciles(&one);
    copy_first_file(&newer, &file);
    std::fs::remove_file(&added).unwrap();
    let without = source.allocate(period("2026-10")).await.unwrap();
    assert_eq!(books(&without), books(&replaced));

    // A manifest switching versions: "create new" deliveries, the manifest naming one, then
    // the other.
    let older = into_delivery(&e, "exec-1");
    let old_file = older.join("test-export-00001.snappy.parquet");
    let newest = e.partition("2026-10").join("exec-2");
    std::fs::create_dir_all(&newest).unwrap();
    let new_file = newest.join("test-export-00001.snappy.parquet");
    copy_first_file(&more, &new_file);
    manifest(e.path(), &[&old_file]);
    let v1 = source.allocate(period("2026-10")).await.unwrap();
    assert_eq!(books(&v1), books(&fresh().await));
    assert_eq!(v1.kiro_total_usd, dec("28"));
    manifest(e.path(), &[&new_file]);
    let v2 = source.allocate(period("2026-10")).await.unwrap();
    assert_eq!(books(&v2), books(&fresh().await));
    assert_eq!(v2.kiro_total_usd, dec("200"));
    assert_reconciles(&v2);
}

/// Rows in a Parquet file, from its footer.
/// What the engine keeps of a file between refreshes holds amounts of any size exactly: one
/// beyond what 64 bits hold at 10 decimals (about $922M) as well as ordinary ones.
#[tokio::test]
async fn a_file_kept_between_refreshes_keeps_amounts_of_any_size() {
    let huge = CurLine {
        // 2^31 dollars: exact as a double at 10 decimals too.
        unblended_cost: 2_147_483_648.0,
        ..credits("u1", Some("A"), 3, 10.0, 0.0)
    };
    let e = Export::write([
        seat("u1", Some("A"), "Pro", 1, 20.0),
        huge,
        credits("u2", Some("B"), 4, 1_100.0, 100.0),
        seat("u2", Some("B"), "Pro", 1, 20.0),
    ]);
    let source = LocalSource::new(e.path(), Default::default());
    let first = source.allocate(period("2026-10")).await.unwrap();
    assert_reconciles(&first);
    assert_eq!(first.kiro_total_usd, dec("2147483692"));
    // A file added: the first one's groups come from what was kept.
    let more = Export::write([seat("u3", Some("B"), "Power", 2, 200.0)]);
    let added = e
        .partition("2026-10")
        .join("test-export-00002.snappy.parquet");
    copy_first_file(&more, &added);
    let kept = source.allocate(period("2026-10")).await.unwrap();
    assert_eq!(
        kept.stats.scanned_rows,
        Some(rows_in(&added)),
        "only the new file read"
    );
    let fresh = LocalSource::new(e.path(), Default::default())
        .allocate(period("2026-10"))
        .await
        .unwrap();
    assert_eq!(books(&kept), books(&fresh));
    assert_reconciles(&kept);
    assert_eq!(kept.kiro_total_usd, dec("2147483892"));
    let u1: Decimal = kept
        .units
        .iter()
        .filter(|u| u.user_id == "u1")
        .map(|u| u.total_usd)
        .sum();
    assert_eq!(u1, dec("2147483668"));
}

fn rows_in(file: &std::path::Path) -> u64 {
    use parquet::file::reader::FileReader as _;
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(file).unwrap())
            .unwrap();
    reader.metadata().file_metadata().num_rows() as u64
}

/// Moves a file's modification time a minute on, so a copy of the same size is a new
/// version even on a file system with coarse timestamps.
fn filetime_later(file: &std::path::Path) {
    let f = std::fs::File::options().write(true).open(file).unwrap();
    let t = f.metadata().unwrap().modified().unwrap() + std::time::Duration::from_secs(60);
    f.set_modified(t).unwrap();
}
