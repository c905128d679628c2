//! `generate-cur`: write a synthetic CUR 2.0 export (Kiro bills among other services' lines)
//! for demos, tests and benchmarks.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use kiro_cost_exporter::curgen::{self, GenSpec, Layout, Shape};
use kiro_cost_exporter::period::BillingPeriod;

#[derive(Args)]
pub struct GenerateArgs {
    /// Export root to write (data/BILLING_PERIOD=YYYY-MM/*.snappy.parquet below it).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[arg(long, default_value_t = 200)]
    users: usize,
    #[arg(long, default_value_t = 1)]
    months: u32,
    /// First month; default: so that the last month generated is the current one.
    #[arg(long, value_name = "YYYY-MM")]
    start: Option<BillingPeriod>,
    /// Lines of other services per Kiro line.
    #[arg(long, default_value_t = 3.0)]
    noise_ratio: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rows per Parquet file before another file is started.
    #[arg(long, default_value_t = 500_000)]
    rows_per_file: usize,
    /// Leave out lines that start at or after this instant (RFC 3339), as a month-to-date export would.
    #[arg(long, value_name = "RFC3339")]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Column set: `full` (every CUR 2.0 column) or `cid` (as AWS's Cloud Intelligence
    /// Dashboards export: no line_item_user_identifier, users in line_item_resource_id).
    #[arg(long, value_enum, default_value_t = Shape::Full)]
    shape: Shape,
    /// Also write a Kiro user activity report for the users under OUT/activity/ (the folder to
    /// give `--activity`).
    #[arg(long)]
    activity: bool,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = curgen::ROW_GROUP_ROWS)]
    row_group_rows: usize,
    /// Further `resourceTags/user:*` keys on every line (a larger `tags` map).
    #[arg(long, default_value_t = 0)]
    extra_tags: usize,
    /// `interleaved` (other services' lines among Kiro's) or `blocks` (Kiro's first).
    #[arg(long, value_enum, default_value_t = Layout::Interleaved)]
    layout: Layout,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let GenerateArgs {
        out,
        users,
        months,
        start,
        noise_ratio,
        seed,
        rows_per_file,
        until,
        shape,
        activity,
        row_group_rows,
        extra_tags,
        layout,
    } = args;
    anyhow::ensure!(months >= 1, "--months must be at least 1");
    anyhow::ensure!(
        noise_ratio.is_finite() && noise_ratio >= 0.0,
        "--noise-ratio must be a number >= 0"
    );
    let start = start.unwrap_or_else(|| {
        let mut p = BillingPeriod::containing(chrono::Utc::now());
        for _ in 1..months {
            p = p.previous();
        }
        p
    });
    let spec = GenSpec {
        users,
        months,
        start,
        noise_ratio,
        seed,
        export_name: "kiro-cur".to_owned(),
        rows_per_file,
        until,
        shape,
        activity,
        row_group_rows,
        extra_tags,
        layout,
    };
    let summary = curgen::write_export(&spec, &out, |_| {})
        .with_context(|| format!("writing the export to {}", out.display()))?;
    for (period, (files, rows)) in &summary.periods {
        println!("{period}: {rows} lines in {files} file(s)");
    }
    println!(
        "{} Kiro lines, {} lines in all, under {}",
        summary.kiro_lines,
        summary.total_lines,
        out.join("data").display()
    );
    Ok(())
}
