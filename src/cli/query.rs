//! `query`: allocate one billing period and print it (table, JSON or CSV).

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;

use kiro_cost_exporter::output::{self, Format};
use kiro_cost_exporter::period::BillingPeriod;

use super::{ConfigArgs, load_settings, use_cur};

#[derive(Args)]
pub struct QueryArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// CUR 2.0 export: the folder or s3://BUCKET/PREFIX/EXPORT holding data/BILLING_PERIOD=…
    /// (overrides source.cur and the engine).
    #[arg(long, value_name = "DIR")]
    cur: Option<PathBuf>,
    /// Billing period, YYYY-MM.
    #[arg(long, value_name = "YYYY-MM")]
    period: BillingPeriod,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Also print the engine's statistics (time, rows and bytes read, files, and the
    /// process's peak resident size so far) as one JSON line on standard error.
    #[arg(long)]
    stats: bool,
    /// Folder or s3:// prefix holding the Kiro user activity report's `AWSLogs/` (overrides
    /// activity.path): savings then count use the bill does not show.
    #[arg(long, value_name = "PATH")]
    activity: Option<String>,
}

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let QueryArgs {
        config,
        cur,
        period,
        format,
        stats,
        activity,
    } = args;
    let settings = load_settings(&config, |s| {
        use_cur(s, cur);
        if let Some(a) = activity {
            s.activity.path = a;
        }
    })?;
    let aws = kiro_cost_exporter::aws::AwsContext::new(settings.aws.clone());
    let source = settings
        .source
        .build_once(settings.allocation_settings(), &aws)
        .await?;
    let allocation = source.allocate(period).await?;
    // Printed once the output is written, with the process's peak resident size by then.
    let stats = stats.then(|| {
        let s = &allocation.stats;
        serde_json::json!({
            "engine": source.engine(),
            "billing_period": period.to_string(),
            "elapsed_seconds": s.elapsed.as_secs_f64(),
            "scanned_rows": s.scanned_rows,
            "scanned_bytes": s.scanned_bytes,
            "fetched_bytes": s.fetched_bytes,
            "files": s.files,
            "result_rows": allocation.units.len(),
        })
    });
    let now = chrono::Utc::now();
    let before = month_before(source.as_ref(), period, now).await;
    let (view, people) = super::period_view_after(&settings, &aws, before, allocation, now).await?;
    tracing::debug!(%period, "view built");
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Json => {
            let mut extra = serde_json::Map::new();
            if !people.is_empty() {
                extra.insert("people".into(), serde_json::to_value(&people)?);
            }
            output::write_json(&view, extra, &mut stdout)?
        }
        Format::Csv => stdout.write_all(&output::to_csv(&view.allocation)?)?,
        Format::Table => stdout.write_all(output::to_table(&view).as_bytes())?,
    }
    stdout.flush()?;
    tracing::debug!(%period, "written");
    if let Some(mut line) = stats {
        line["peak_rss_bytes"] = peak_rss_bytes().into();
        // One write: standard error is not buffered.
        let line = line.to_string();
        eprintln!("{line}");
    }
    // The process ends here: what it holds goes with it, not freed piece by piece.
    std::mem::forget((view, source));
    Ok(())
}

/// The month before `period` when `period` is still running at `now`: its seats' use decides
/// the running month's advice until the month has enough days. Without it (no data, or an
/// error, logged) the running month is decided from itself alone.
async fn month_before(
    source: &dyn kiro_cost_exporter::source::Source,
    period: BillingPeriod,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<kiro_cost_exporter::allocation::Allocation> {
    if now >= period.end() {
        return None;
    }
    let before = period.previous();
    match source.allocate(before).await {
        Ok(mut a) => {
            match source.daily_credits(before).await {
                Ok(d) => a.daily_credits = Some(d),
                Err(e) => {
                    tracing::info!(period = %before, "credits per day not read ({e}); the running month is decided without the bill's trailing window")
                }
            }
            Some(a)
        }
        Err(e) => {
            tracing::info!(period = %before, "the month before is not allocated ({e}); the running month is decided from itself alone");
            None
        }
    }
}

/// The process's peak resident size so far (`VmHWM`), where `/proc` tells it. Only the process
/// itself can: a parent's `wait4` also counts, for a child it spawned with `vfork`, the parent's
/// own peak up to the child's `exec`.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}
