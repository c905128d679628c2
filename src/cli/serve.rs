//! `serve`: refresh on a schedule, publish to every sink, and serve /metrics until SIGTERM or
//! SIGINT. The demo runs through here too.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use kiro_cost_exporter::config::Settings;
use kiro_cost_exporter::daemon::Refresher;
use kiro_cost_exporter::notify::{Channel, ChannelKind};
use kiro_cost_exporter::period::BillingPeriod;
use kiro_cost_exporter::server;
use kiro_cost_exporter::sink::alerts::AlertsSink;
use kiro_cost_exporter::sink::aws_budgets::{BudgetsSink, Reconciler};
use kiro_cost_exporter::sink::cloudwatch::CloudWatchSink;
use kiro_cost_exporter::sink::report::{ReportContext, ReportSink};
use kiro_cost_exporter::source::Engine;
use kiro_cost_exporter::state::StateFile;
use kiro_cost_exporter::telemetry::Telemetry;

use super::{ConfigArgs, load_settings, use_cur};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Listen address (overrides server.listen); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// CUR 2.0 export for the embedded engine, a folder or s3://BUCKET/PREFIX/EXPORT (overrides
    /// source.cur).
    #[arg(long, value_name = "DIR")]
    cur: Option<PathBuf>,
    /// Watch this billing period only (overrides refresh.period).
    #[arg(long, value_name = "YYYY-MM")]
    period: Option<BillingPeriod>,
    /// Web configuration file, exporter-toolkit format: TLS, basic auth, headers
    /// (overrides server.web_config_file).
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config_file: Option<PathBuf>,
    /// Folder or s3:// prefix holding the Kiro user activity report's `AWSLogs/` (overrides
    /// activity.path).
    #[arg(long, value_name = "PATH")]
    activity: Option<String>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        config,
        listen,
        cur,
        period,
        web_config_file,
        activity,
    } = args;
    let settings = load_settings(&config, |s| {
        if let Some(l) = listen {
            s.server.listen = l;
        }
        if let Some(w) = web_config_file {
            s.server.web_config_file = w;
        }
        use_cur(s, cur);
        if period.is_some() {
            s.refresh.period = period;
        }
        if let Some(a) = activity {
            s.activity.path = a;
        }
    })?;
    serve(settings).await
}

/// The S3 client for the report's upload, when `report.s3` is set.
pub async fn report_s3(settings: &Settings) -> Option<kiro_cost_exporter::sink::report::ReportS3> {
    if settings.report.s3.is_empty() {
        return None;
    }
    let shared = settings.aws.sdk_config().await;
    Some(kiro_cost_exporter::sink::report::ReportS3::new(
        &settings.aws,
        &shared,
    ))
}

async fn shutdown_signal() -> std::io::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT"),
    }
}

/// Builds the refresher with every configured sink.
async fn refresher(settings: &Settings) -> anyhow::Result<Refresher> {
    let source = settings
        .source
        .build(settings.allocation_settings(), &settings.aws)
        .await?;
    let engine = match settings.source.engine {
        Engine::Local => "local",
        Engine::Athena => "athena",
    };
    let telemetry = Arc::new(Telemetry::new(engine, settings.refresh.interval)?);
    if !settings.activity.path.is_empty() {
        tracing::info!(path = %settings.activity.path, "reading the Kiro user activity report");
    }
    let builder = Arc::new(super::snapshot_builder(settings).await?);
    let mut refresher = Refresher::new(
        source.clone(),
        settings.refresh.clone(),
        builder.clone(),
        telemetry.clone(),
    )?
    .after_refresh(release_free_memory);
    refresher = refresher
        .with_prometheus(settings.prometheus.clone())
        .with_landing(kiro_cost_exporter::sink::landing::LandingSettings {
            locale: settings.report.locale,
            dashboard_url: Some(settings.alerts.dashboard_url.clone()).filter(|u| !u.is_empty()),
            budgets: settings.budgets.limits(),
        });
    if settings.cloudwatch.enabled {
        let shared = settings.aws.sdk_config().await;
        anyhow::ensure!(
            shared.region().is_some(),
            "cloudwatch.enabled needs an AWS region: set aws.region, AWS_REGION or a profile's region"
        );
        if let Some(note) = settings.cloudwatch.per_user_cost_note() {
            tracing::warn!("{note}");
        }
        refresher = refresher.with_sink(Box::new(CloudWatchSink::new(
            &shared,
            settings.cloudwatch.clone(),
            telemetry.cloudwatch_datums(),
        )));
    }
    if settings.budgets.enabled {
        let shared = settings.aws.sdk_config().await;
        let reconciler = Reconciler::new(&shared, settings.budgets.clone());
        refresher = refresher.with_sink(Box::new(BudgetsSink::new(reconciler, telemetry.clone())));
    }
    let alerts_on = !settings.alerts.channels.is_empty();
    // The scheduled report needs somewhere to deliver to.
    let report_on =
        settings.report.schedule_day != 0 && (alerts_on || !settings.report.s3.is_empty());
    if alerts_on || report_on {
        let opened = StateFile::open(&settings.alerts.state_file)?;
        if let Some((aside, reason)) = &opened.moved_aside {
            tracing::error!(
                file = %settings.alerts.state_file.display(),
                moved_to = %aside.display(),
                "state file unreadable ({reason}); moved aside, starting with no alerts and no reports recorded"
            );
        }
        let env = |k: &str| std::env::var(k).ok();
        let channels = settings
            .alerts
            .channels
            .iter()
            .map(|c| Channel::new(c.clone(), &env, telemetry.notifications()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        if alerts_on {
            tracing::info!(
                channels = channels.len(),
                rules = settings.alerts.rules.len(),
                state_file = %settings.alerts.state_file.display(),
                "alerts enabled"
            );
            refresher = refresher.with_sink(Box::new(AlertsSink::new(
                settings.alerts.clone(),
                settings.budgets.limits(),
                channels.clone(),
                opened.state.clone(),
                telemetry.clone(),
            )));
        }
        if report_on {
            // Reports written before this start are served too.
            let served = refresher.state();
            for (name, bytes) in
                kiro_cost_exporter::sink::report::load_written(&settings.report.out_dir).await
            {
                served.put_report(&name, bytes);
            }
            let wanted = &settings.report.channels;
            let feishu = channels
                .iter()
                .filter(|c| {
                    c.config.kind == ChannelKind::Feishu
                        && (wanted.is_empty() || wanted.iter().any(|w| w == c.name()))
                })
                .cloned()
                .collect();
            tracing::info!(
                report_day = settings.report.schedule_day,
                "monthly report enabled"
            );
            refresher = refresher.with_sink(Box::new(ReportSink::new(
                settings.report.clone(),
                ReportContext {
                    served: Some(served.clone()),
                    s3: report_s3(settings).await,
                    channels: feishu,
                    dashboard_url: settings.alerts.dashboard_url.clone(),
                    source,
                    builder,
                    file: opened.state,
                    telemetry: telemetry.clone(),
                },
            )));
        }
    }
    Ok(refresher)
}

/// Runs the refresh loop and the HTTP server until SIGTERM or SIGINT.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let serve_options = settings.server.serve_options()?;
    let scheme = if serve_options.security.current().tls.is_some() {
        "https"
    } else {
        "http"
    };
    let listen = settings.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
    let addr = listener.local_addr()?;
    let refresher = refresher(&settings).await?;
    let state = refresher.state();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (telemetry, republish) = (refresher.telemetry(), refresher.republisher());
    let mut watch_stop = stopped.clone();
    let web_config_watch = tokio::spawn(serve_options.security.clone().watch(
        move |ok| {
            telemetry.record_web_config_reload(ok);
            republish.notify_one();
        },
        async move {
            let _ = watch_stop.wait_for(|s| *s).await;
        },
    ));
    let refresh_loop = tokio::spawn(refresher.run(stopped.clone()));
    let mut server_stop = stopped.clone();
    let server = tokio::spawn(server::serve(
        listener,
        state,
        async move {
            let _ = server_stop.wait_for(|s| *s).await;
        },
        serve_options,
    ));
    println!(
        "kiro-cost-exporter listening on {scheme}://{addr}/ (metrics: {scheme}://{addr}/metrics)"
    );
    std::io::stdout().flush()?;
    match settings.source.engine {
        Engine::Local => {
            tracing::info!(%addr, engine = "local", cur = %settings.source.cur.display(), interval = ?settings.refresh.interval, "serving")
        }
        Engine::Athena => {
            let a = &settings.source.athena;
            tracing::info!(%addr, engine = "athena", database = %a.database, table = %a.table, workgroup = %a.workgroup, interval = ?settings.refresh.interval, "serving")
        }
    }
    let signal = shutdown_signal()
        .await
        .context("cannot install signal handlers")?;
    tracing::info!(signal, "shutting down");
    let _ = stop.send(true);
    let _ = refresh_loop.await;
    let _ = server.await;
    let _ = web_config_watch.await;
    tracing::info!("stopped");
    Ok(())
}

/// Returns the allocator's free memory to the OS. A refresh's query holds several hundred MB at
/// 50,000 users for a few seconds; glibc keeps such memory mapped after it is freed, so without
/// this the daemon's resident size would stay at the query's peak between refreshes.
#[allow(unsafe_code)]
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}
