//! The `query` and `generate-cur` commands as a user runs them: output formats, and bad input
//! answered with one clear line and exit status 2.

use std::collections::BTreeSet;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use std::sync::Arc;

use crate::support::*;

fn sample() -> Export {
    let mut tax = seat("u1", Some("CC, \"A\""), "Pro", 1, 2.0);
    tax.line_type = "Tax";
    let mut discount = seat("", None, "Pro", 1, -1.0);
    discount.line_type = "EdpDiscount";
    Export::write([
        seat("u1", Some("CC, \"A\""), "Pro", 1, 20.0),
        credits("u1", Some("CC, \"A\""), 3, 1_100.0, 100.0),
        seat("u2", None, "Power", 1, 200.0),
        tax,
        discount,
    ])
}

fn query(e: &Export, format: &str) -> std::process::Output {
    run(&[
        "query",
        "--cur",
        e.path().to_str().unwrap(),
        "--period",
        "2026-10",
        "--format",
        format,
    ])
}

#[test]
fn json_has_the_documented_shape() {
    let e = sample();
    let o = query(&e, "json");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = [
        "billing_period",
        "users",
        "tax_usd",
        "unattributed_usd",
        "kiro_total_usd",
        "untagged_users",
        "duplicate_subscriptions",
        "cost_centers",
        "savings",
        "q_developer",
    ]
    .into();
    assert_eq!(keys, want);
    let q: BTreeSet<&str> = v["q_developer"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let qwant: BTreeSet<&str> = [
        "end_of_support",
        "fee_usd",
        "tax_usd",
        "unattributed_usd",
        "total_usd",
        "duplicate_users",
        "cost_centers",
        "seats",
    ]
    .into();
    assert_eq!(q, qwant);
    assert_eq!(v["billing_period"], "2026-10");
    let u0 = v["users"][0].as_object().unwrap();
    let ukeys: BTreeSet<&str> = u0.keys().map(String::as_str).collect();
    let uwant: BTreeSet<&str> = [
        "account_id",
        "region",
        "user_id",
        "cost_center",
        "plan",
        "credits_used",
        "subscription_usd",
        "overage_usd",
        "other_usd",
        "total_usd",
    ]
    .into();
    assert_eq!(ukeys, uwant);
    assert_eq!(u0["user_id"], "u1");
    assert_eq!(u0["cost_center"], "CC, \"A\"");
    assert_eq!(u0["credits_used"].as_f64(), Some(1100.0));
    assert_eq!(u0["overage_usd"].as_f64(), Some(4.0));
    assert_eq!(u0["total_usd"].as_f64(), Some(24.0));
    assert_eq!(v["users"][1]["cost_center"], "");
    assert_eq!(v["users"][1]["plan"], "Power");
    assert_eq!(v["tax_usd"].as_f64(), Some(2.0));
    assert_eq!(v["unattributed_usd"].as_f64(), Some(-1.0));
    assert_eq!(v["kiro_total_usd"].as_f64(), Some(225.0));
    assert_eq!(v["untagged_users"], serde_json::json!(["u2"]));
    assert_eq!(v["duplicate_subscriptions"], serde_json::json!([]));
    assert_eq!(v["cost_centers"][0]["cost_center"], "");
    assert_eq!(v["cost_centers"][1]["users"], 1);
    assert_json_reconciles(&v);
}

#[test]
fn csv_has_bom_header_and_quoting() {
    let e = sample();
    let o = query(&e, "csv");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let body = text
        .strip_prefix('\u{feff}')
        .expect("UTF-8 byte-order mark");
    let mut r = csv::Reader::from_reader(body.as_bytes());
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "billing_period",
            "account_id",
            "region",
            "user_id",
            "cost_center",
            "plan",
            "credits_used",
            "subscription_usd",
            "overage_usd",
            "other_usd",
            "total_usd"
        ]
    );
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0][4], "CC, \"A\"");
    assert_eq!(&rows[0][10], "24");
    assert_eq!(&rows[1][4], "");
    let sum: f64 = rows.iter().map(|r| r[10].parse::<f64>().unwrap()).sum();
    assert!(
        (sum + -1.0 + 2.0 - 225.0).abs() < 1e-6,
        "reconciliation over the CSV"
    );
    assert!(body.contains("\"CC, \"\"A\"\"\""), "{body}");
}

#[test]
fn table_shows_totals() {
    let e = sample();
    let o = query(&e, "table");
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    assert!(t.lines().next().unwrap().starts_with("ACCOUNT"), "{t}");
    assert!(t.contains("untagged"), "{t}");
    let total = t.lines().find(|l| l.starts_with("TOTAL")).unwrap();
    assert!(
        total.contains("2 users") && total.trim_end().ends_with("224.00"),
        "{total}"
    );
    assert!(t.contains("Kiro total          225.00"), "{t}");
    assert!(t.contains("Tax                 2.00"), "{t}");
    // Reconciliation, read off the table: users' total + unattributed + tax = Kiro total.
    let field = |name: &str| -> f64 {
        t.lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .last()
            .unwrap()
            .parse()
            .unwrap()
    };
    let lhs = field("Users' total") + field("Unattributed") + field("Tax ");
    assert!((lhs - field("Kiro total")).abs() < 1e-6, "{t}");
}

fn fails_with(args: &[&str], want: &[&str]) {
    let o = run(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: expected {w:?} in {err}");
    }
}

#[test]
fn missing_directory() {
    fails_with(
        &["query", "--cur", "/nonexistent/cur", "--period", "2026-10"],
        &["/nonexistent/cur", "does not exist"],
    );
}

#[test]
fn period_without_partition() {
    let e = sample();
    fails_with(
        &[
            "query",
            "--cur",
            e.path().to_str().unwrap(),
            "--period",
            "2026-07",
        ],
        &["BILLING_PERIOD=2026-07", "periods present: 2026-10"],
    );
}

#[test]
fn malformed_period() {
    let o = run(&["query", "--cur", "/tmp", "--period", "2026-13"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("2026-13") && stderr(&o).contains("YYYY-MM"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn file_that_is_not_parquet() {
    let e = sample();
    let bad = e.partition("2026-10").join("broken.parquet");
    std::fs::write(&bad, b"PAR1 this is not a parquet file at all").unwrap();
    fails_with(
        &[
            "query",
            "--cur",
            e.path().to_str().unwrap(),
            "--period",
            "2026-10",
        ],
        &["broken.parquet", "not a readable Parquet file"],
    );
    // A truncated real file too.
    let good = std::fs::read(
        e.partition("2026-10")
            .join("test-export-00001.snappy.parquet"),
    )
    .unwrap();
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    fails_with(
        &[
            "query",
            "--cur",
            e.path().to_str().unwrap(),
            "--period",
            "2026-10",
        ],
        &["broken.parquet"],
    );
}

fn write_parquet(path: &std::path::Path, fields: Vec<Field>) {
    let schema = Arc::new(Schema::new(fields.clone()));
    let cols = fields
        .iter()
        .map(|_| Arc::new(StringArray::from(vec!["x"])) as _)
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn schema_missing_a_column() {
    let e = sample();
    let p = e.partition("2026-10").join("foreign.parquet");
    write_parquet(
        &p,
        vec![Field::new("line_item_product_code", DataType::Utf8, true)],
    );
    fails_with(
        &[
            "query",
            "--cur",
            e.path().to_str().unwrap(),
            "--period",
            "2026-10",
        ],
        &[
            "foreign.parquet",
            "has no column line_item_usage_account_id",
        ],
    );
}

#[test]
fn column_with_wrong_type() {
    let e = sample();
    let good = e
        .partition("2026-10")
        .join("test-export-00001.snappy.parquet");
    let p = e.partition("2026-10").join("retyped.parquet");
    retyped(&good, "line_item_unblended_cost", &p);
    fails_with(
        &[
            "query",
            "--cur",
            e.path().to_str().unwrap(),
            "--period",
            "2026-10",
        ],
        &[
            "retyped.parquet",
            "column line_item_unblended_cost has type Utf8, expected DOUBLE",
        ],
    );
}

#[test]
fn generated_thousand_users_query_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let g = run(&[
        "generate-cur",
        "--out",
        out,
        "--users",
        "1000",
        "--start",
        "2026-10",
        "--seed",
        "3",
        "--noise-ratio",
        "3",
    ]);
    assert!(g.status.success(), "{}", stderr(&g));
    assert!(stdout(&g).contains("2026-10:"), "{}", stdout(&g));
    let o = run(&[
        "query", "--cur", out, "--period", "2026-10", "--format", "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let users: BTreeSet<&str> = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert!(users.len() >= 1000, "{} users", users.len());
    assert_json_reconciles(&v);
}

#[test]
fn month_to_date_export_stops_at_until() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let g = run(&[
        "generate-cur",
        "--out",
        out,
        "--users",
        "30",
        "--start",
        "2026-10",
        "--until",
        "2026-10-15T00:00:00Z",
    ]);
    assert!(g.status.success(), "{}", stderr(&g));
    let e = Export { dir };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let a = rt.block_on(e.allocate("2026-10")).unwrap();
    assert_reconciles(&a);
    let as_of = a.data_as_of.unwrap();
    assert!(as_of <= utc(2026, 10, 15), "{as_of}");
    assert!(as_of > utc(2026, 10, 10), "{as_of}");
}
