//! One meaning, proven: the embedded engine's purpose-built scan against the SQL template
//! (the definition Athena runs), run by DataFusion over the same files, on every shape the
//! generator makes (both column sets, net cost, interleaved and block layouts, row-group
//! sizes, wide tag maps, several months, a month to date) and on a few hundred random bills;
//! the two allocations must be equal to the last digit (both reconciling), or both refused,
//! and so must the credits per day and what `inspect` shows.

use kiro_cost_exporter::allocation::sql::CostColumn;
use kiro_cost_exporter::allocation::{Allocation, AllocationSettings, QueryStats};
use kiro_cost_exporter::curgen::{self, CurLine, GenSpec, Layout, Shape};
use kiro_cost_exporter::source::{LocalSource, Source as _};
use proptest::prelude::*;

use crate::support::*;

/// The allocation without its run statistics, which differ by engine.
fn result(mut a: Allocation) -> Allocation {
    a.stats = QueryStats::default();
    a
}

/// Allocates `p` both ways and checks that they agree and reconcile; the allocation.
async fn agree(dir: &std::path::Path, p: &str, settings: AllocationSettings) -> Allocation {
    let scan = LocalSource::new(dir, settings.clone())
        .allocate(period(p))
        .await
        .unwrap();
    let sql = LocalSource::new(dir, settings.clone())
        .allocate_by_sql(period(p))
        .await
        .unwrap();
    assert_reconciles(&scan);
    assert_reconciles(&sql);
    daily_agrees(dir, p, &settings, &scan).await;
    inspect_agrees(dir, p, &settings).await;
    let (scan, sql) = (result(scan), result(sql));
    if scan != sql {
        let units = scan.units.len().max(sql.units.len());
        for i in 0..units {
            assert_eq!(scan.units.get(i), sql.units.get(i), "unit {i} of {p}");
        }
        assert_eq!(scan.seats, sql.seats, "{p}: seats");
        assert_eq!(scan, sql, "{p}");
    }
    scan
}

/// What `inspect` shows of `p`, by the scan and by the SQL template (`render_inspect`), is the
/// same: every facet, value, line count and cost, in the same order.
async fn inspect_agrees(dir: &std::path::Path, p: &str, settings: &AllocationSettings) {
    let s = LocalSource::new(dir, settings.clone());
    let scan = s.inspect(period(p)).await.unwrap();
    let sql = s.inspect_by_sql(period(p)).await.unwrap();
    for facet in ["line_type", "usage_type", "tag_key"] {
        assert!(!scan.facet(facet).is_empty(), "{p}: no {facet}");
    }
    assert_eq!(scan, sql, "{p}: inspect");
}

/// The credits per seat and usage day of `p`, by the scan and by the SQL template
/// (`render_daily`), are equal, and add up to the credits of the allocation's named seats
/// (every generated line has a start).
async fn daily_agrees(
    dir: &std::path::Path,
    p: &str,
    settings: &AllocationSettings,
    a: &Allocation,
) {
    let s = LocalSource::new(dir, settings.clone());
    let scan = s.daily_credits(period(p)).await.unwrap();
    let sql = s.daily_credits_by_sql(period(p)).await.unwrap();
    assert_eq!(*scan, sql, "{p}: credits per day");
    let named: rust_decimal::Decimal = a
        .units
        .iter()
        .filter(|u| !u.user_id.is_empty())
        .map(|u| u.credits_used)
        .sum();
    assert_eq!(
        scan.total(),
        named.normalize(),
        "{p}: days add up to the seats' credits"
    );
    for (seat, days) in &scan.seats {
        assert!(
            a.seats.contains_key(seat),
            "{p}: {seat:?} has days but no seat"
        );
        let in_month = |d: &chrono::NaiveDate| {
            let t = d.and_hms_opt(0, 0, 0).unwrap().and_utc();
            t >= period(p).start() && t < period(p).end()
        };
        assert!(
            days.iter().all(|(d, _)| in_month(d)),
            "{p}: {seat:?} {days:?}"
        );
    }
}

#[tokio::test]
async fn the_scan_equals_the_sql_template_on_every_generated_shape() {
    let base = || {
        let mut s = GenSpec::new(60, period("2026-09"));
        s.months = 2;
        s.noise_ratio = 3.0;
        s.seed = 11;
        s
    };
    type Edit = fn(&mut GenSpec);
    let shapes: Vec<(&str, Edit)> = vec![
        ("defaults", |_| {}),
        ("CID columns", |s| s.shape = Shape::Cid),
        ("blocks, small row groups", |s| {
            s.layout = Layout::Blocks;
            s.row_group_rows = 700;
        }),
        ("one file, large row groups", |s| {
            s.rows_per_file = 10_000_000;
            s.row_group_rows = 1_000_000;
        }),
        ("24 extra tag keys", |s| s.extra_tags = 24),
        ("many small files", |s| s.rows_per_file = 1_500),
        ("month to date", |s| {
            s.until = Some(utc(2026, 10, 17));
        }),
    ];
    for (name, edit) in shapes {
        let mut spec = base();
        edit(&mut spec);
        let dir = tempfile::tempdir().unwrap();
        curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
        for p in ["2026-09", "2026-10"] {
            let a = agree(dir.path(), p, AllocationSettings::default()).await;
            assert!(!a.units.is_empty(), "{name} {p}: no units");
            let net = AllocationSettings {
                cost_column: CostColumn::NetUnblended,
                ..AllocationSettings::default()
            };
            agree(dir.path(), p, net).await;
        }
        // Other settings: another tag key, no ignored operation.
        let other = AllocationSettings {
            cost_center_tag: "resourceTags/user:team".to_owned(),
            ignored_operations: Vec::new(),
            ..AllocationSettings::default()
        };
        agree(dir.path(), "2026-10", other).await;
    }
}

#[tokio::test]
async fn the_scan_equals_the_sql_template_without_dictionary_pages() {
    let mut spec = GenSpec::new(60, period("2026-10"));
    spec.noise_ratio = 3.0;
    spec.extra_tags = 6;
    spec.seed = 5;
    let dir = tempfile::tempdir().unwrap();
    curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    let before = agree(dir.path(), "2026-10", AllocationSettings::default()).await;
    rewrite_without_dictionaries(dir.path());
    let after = agree(dir.path(), "2026-10", AllocationSettings::default()).await;
    assert!(!after.units.is_empty());
    assert_eq!(after.units, before.units);
    assert_eq!(after.kiro_total_usd, before.kiro_total_usd);
}

/// The page reader (the flat string columns on local disk) against the SQL template on the
/// same rows written as writers write them: small pages whose dictionaries overflow into
/// plain pages mid-chunk, data pages v2 (whose overflow is DELTA_BYTE_ARRAY, left to the Arrow
/// reader), plain pages v2, no compression, a dictionary for some columns only.
#[tokio::test]
async fn the_scan_equals_the_sql_template_however_the_pages_are_written() {
    use parquet::basic::{Compression, Encoding};
    use parquet::file::properties::{WriterProperties, WriterVersion};
    let mut spec = GenSpec::new(60, period("2026-10"));
    spec.noise_ratio = 3.0;
    spec.extra_tags = 3;
    spec.seed = 17;
    let dir = tempfile::tempdir().unwrap();
    curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    let before = agree(dir.path(), "2026-10", AllocationSettings::default()).await;
    assert!(!before.units.is_empty());
    let small = || {
        WriterProperties::builder()
            .set_data_page_row_count_limit(64)
            .set_write_batch_size(64)
            .set_dictionary_page_size_limit(512)
    };
    let writers: Vec<(&str, WriterProperties)> = vec![
        ("small v1 pages, dictionaries overflowing", small().build()),
        (
            "small v2 pages, dictionaries overflowing",
            small()
                .set_writer_version(WriterVersion::PARQUET_2_0)
                .build(),
        ),
        (
            "plain v2 pages, uncompressed",
            WriterProperties::builder()
                .set_writer_version(WriterVersion::PARQUET_2_0)
                .set_dictionary_enabled(false)
                .set_encoding(Encoding::PLAIN)
                .set_compression(Compression::UNCOMPRESSED)
                .set_data_page_row_count_limit(100)
                .set_write_batch_size(100)
                .build(),
        ),
        (
            "a dictionary for some columns only",
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_column_dictionary_enabled("line_item_user_identifier".into(), false)
                .set_column_dictionary_enabled("line_item_usage_type".into(), false)
                .set_column_dictionary_enabled("line_item_product_code".into(), false)
                .build(),
        ),
    ];
    for (name, props) in writers {
        rewrite_with(dir.path(), props);
        let after = agree(dir.path(), "2026-10", AllocationSettings::default()).await;
        assert_eq!(after.units, before.units, "{name}");
        assert_eq!(after.seats, before.seats, "{name}");
        assert_eq!(after.kiro_total_usd, before.kiro_total_usd, "{name}");
    }
}

#[test]
fn the_scan_equals_the_sql_template_on_random_bills() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let (same, refused) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let bills = (
        proptest::collection::vec(crate::fuzz::cur_line(), 1..24),
        proptest::option::weighted(0.1, (any::<prop::sample::Index>(), crate::fuzz::insane())),
        any::<bool>(),
    );
    let result_of = |r: Result<Allocation, _>| r.map(result);
    let outcome = runner.run(&bills, |(mut lines, spoil, net)| {
        if let Some((i, v)) = spoil {
            let n = i.index(lines.len());
            lines[n].unblended_cost = v;
        }
        let e = Export::write(lines.clone());
        let settings = AllocationSettings {
            cost_column: if net {
                CostColumn::NetUnblended
            } else {
                CostColumn::Unblended
            },
            ..AllocationSettings::default()
        };
        let (scan, sql) = rt.block_on(async {
            let s = LocalSource::new(e.path(), settings.clone());
            (
                s.allocate(period("2026-10")).await,
                s.allocate_by_sql(period("2026-10")).await,
            )
        });
        match (result_of(scan), result_of(sql)) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(&a, &b, "{:?}", lines);
                let (scan, sql) = rt.block_on(async {
                    let s = LocalSource::new(e.path(), settings.clone());
                    (
                        s.daily_credits(period("2026-10")).await.unwrap(),
                        s.daily_credits_by_sql(period("2026-10")).await.unwrap(),
                    )
                });
                prop_assert_eq!(&*scan, &sql, "credits per day: {:?}", lines);
                let (scan, sql) = rt.block_on(async {
                    let s = LocalSource::new(e.path(), settings.clone());
                    (
                        s.inspect(period("2026-10")).await.unwrap(),
                        s.inspect_by_sql(period("2026-10")).await.unwrap(),
                    )
                });
                prop_assert_eq!(&scan, &sql, "inspect: {:?}", lines);
                assert_reconciles(&a);
                same.set(same.get() + 1);
            }
            (Err(a), Err(b)) => {
                prop_assert!(a.kind() == b.kind(), "{a} / {b}");
                refused.set(refused.get() + 1);
            }
            // DataFusion's CAST makes an amount of NaN; the scan refuses it, as Athena does
            // (see the test below).
            (Err(a), Ok(_)) if spoil.is_some_and(|(_, v)| v.is_nan()) => {
                prop_assert!(a.to_string().contains("NaN"), "{a}");
                refused.set(refused.get() + 1);
            }
            (a, b) => prop_assert!(false, "scan {a:?}, SQL {b:?}: {lines:?}"),
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    assert!(
        same.get() > 200,
        "{} equal, {} refused",
        same.get(),
        refused.get()
    );
}

/// A cost no bill holds (NaN, infinite, beyond DECIMAL(38, 10)) is refused by the scan with
/// the file and column named, as Athena's CAST refuses it. DataFusion refuses all but NaN,
/// which its CAST turns into an amount: there the template run by DataFusion is no reference.
#[tokio::test]
async fn a_cost_no_bill_holds_is_refused_naming_file_and_column() {
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e30] {
        let e = Export::write([
            CurLine {
                unblended_cost: v,
                ..line("0", None)
            },
            CurLine {
                unblended_cost: 0.0001,
                ..line("1", None)
            },
        ]);
        let s = LocalSource::new(e.path(), AllocationSettings::default());
        let scan = s.allocate(period("2026-10")).await;
        let sql = s.allocate_by_sql(period("2026-10")).await;
        if !v.is_nan() {
            assert!(sql.is_err(), "{v}: {sql:?}");
        }
        let err = scan.expect_err("refused").to_string();
        assert!(err.contains("line_item_unblended_cost"), "{err}");
        assert!(err.contains(".parquet"), "{err}");
    }
}
