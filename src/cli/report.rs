//! `report`: write the monthly per-user CSV for a period, upload it and send its summary card.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use kiro_cost_exporter::notify::{Channel, ChannelKind};
use kiro_cost_exporter::period::BillingPeriod;
use kiro_cost_exporter::sink::report;
use kiro_cost_exporter::telemetry::Telemetry;

use super::{ConfigArgs, load_settings, use_cur};

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// CUR 2.0 export for the embedded engine, a folder or s3://BUCKET/PREFIX/EXPORT (overrides
    /// source.cur and the engine).
    #[arg(long, value_name = "DIR")]
    cur: Option<PathBuf>,
    /// Billing period (YYYY-MM); default: the previous month.
    #[arg(long)]
    period: Option<BillingPeriod>,
    /// Folder for the CSV (overrides report.out_dir).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Do not upload to report.s3.
    #[arg(long)]
    no_upload: bool,
    /// Do not send the summary card.
    #[arg(long)]
    no_notify: bool,
    /// Folder or s3:// prefix holding the Kiro user activity report's `AWSLogs/` (overrides
    /// activity.path).
    #[arg(long, value_name = "PATH")]
    activity: Option<String>,
}

pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let ReportArgs {
        config,
        cur,
        period,
        out,
        no_upload,
        no_notify,
        activity,
    } = args;
    let settings = load_settings(&config, |s| {
        use_cur(s, cur);
        if let Some(out) = out {
            s.report.out_dir = out;
        }
        if no_upload {
            s.report.s3.clear();
        }
        if let Some(a) = activity {
            s.activity.path = a;
        }
    })?;
    let now = chrono::Utc::now();
    let period = period.unwrap_or_else(|| BillingPeriod::containing(now).previous());
    let aws = kiro_cost_exporter::aws::AwsContext::new(settings.aws.clone());
    let allocation = settings
        .source
        .build(settings.allocation_settings(), &aws)
        .await?
        .allocate(period)
        .await?;
    let (view, people) = super::period_view(&settings, &aws, allocation, now).await?;
    let s3 = kiro_cost_exporter::sink::report::ReportS3::of(&settings.report, &aws).await;
    let channels = if no_notify {
        Vec::new()
    } else {
        // Counted nowhere: this process ends after one report.
        let telemetry = Telemetry::new("report", settings.refresh.interval)?;
        feishu_channels(&settings, &telemetry)?
    };
    let refs: Vec<&Channel> = channels.iter().map(Arc::as_ref).collect();
    let out = report::run(
        &view,
        &people,
        &settings.report,
        s3.as_ref(),
        &refs,
        &settings.alerts.dashboard_url,
        None,
    )
    .await?;
    println!("report: {}", out.path.display());
    if let Some(link) = &out.link {
        let link = &link.url;
        println!("download link: {link}");
    }
    println!("summary cards sent: {}", out.cards_sent);
    Ok(())
}

/// The Feishu channels the report's card goes to (`report.channels`, or every one).
pub fn feishu_channels(
    settings: &kiro_cost_exporter::config::Settings,
    telemetry: &Telemetry,
) -> anyhow::Result<Vec<Arc<Channel>>> {
    let env = |k: &str| std::env::var(k).ok();
    let wanted = &settings.report.channels;
    let mut out = Vec::new();
    for c in &settings.alerts.channels {
        if c.kind == ChannelKind::Feishu && (wanted.is_empty() || wanted.contains(&c.name)) {
            out.push(Arc::new(Channel::new(
                c.clone(),
                &env,
                telemetry.notifications(),
            )?));
        }
    }
    Ok(out)
}
